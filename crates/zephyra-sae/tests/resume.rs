//! Exact resumption: a run stopped right after a checkpoint (as by `kill -9`: nothing more is written)
//! and resumed produces the same bytes as an uninterrupted run; wrong resumptions are refused untouched.

#[path = "../../../testdata/testdata.rs"]
mod testdata;

use std::ops::ControlFlow;
use std::path::Path;

use rand::{Rng, SeedableRng};
use testdata::dir_files;
use zephyra_sae::checkpoint::TrainingState;
use zephyra_sae::npy::{write_f32_matrix, NpyOrder, NpySource};
use zephyra_sae::train::{TrainConfig, Trainer};
use zephyra_sae::{Architecture, SaeConfig, SaeError};

const D_IN: usize = 12;

fn data(dir: &Path) -> std::path::PathBuf {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let rows: Vec<f32> = (0..3000 * D_IN)
        .map(|i| (rng.random::<f32>() - 0.5) * (1 + i % 5) as f32)
        .collect();
    let p = dir.join("acts.npy");
    write_f32_matrix(&p, &rows, D_IN).unwrap();
    p
}

fn source(p: &Path) -> NpySource {
    NpySource::open(
        p,
        NpyOrder {
            shuffle: true,
            repeat: true,
            seed: 11,
        },
    )
    .unwrap()
}

fn config(arch: Architecture) -> TrainConfig {
    config_for(SaeConfig::new(D_IN, 48, arch).unwrap())
}

/// The test's settings for any dictionary whose training rows are `D_IN` wide (a transcoder reads the
/// first 8 columns as `x` and predicts the last 4 as `y`).
fn config_for(sae: SaeConfig) -> TrainConfig {
    let mut cfg = TrainConfig::for_sae(sae, 64, 64 * 120);
    cfg.init_rows = 500;
    cfg.threads = 1;
    cfg.checkpoint_every_tokens = 64 * 25;
    cfg.dead_after_tokens = 64 * 10; // AuxK and resampling are active, so their state must resume too
    cfg.resample_every_steps = 30;
    cfg.metrics_every_steps = 7;
    cfg.lr = 3e-3;
    cfg
}

#[test]
fn stopped_and_resumed_runs_match_uninterrupted_ones_bit_for_bit() {
    let transcoder = |arch| SaeConfig::transcoder(8, D_IN - 8, 48, arch, true).unwrap();
    for sae in [
        SaeConfig::new(D_IN, 48, Architecture::TopK { k: 4 }).unwrap(),
        SaeConfig::new(D_IN, 48, Architecture::ReluUnit).unwrap(),
        SaeConfig::new(D_IN, 48, Architecture::BatchTopK { k: 4 }).unwrap(),
        SaeConfig::new(
            D_IN,
            48,
            Architecture::Matryoshka {
                k: 4,
                groups: zephyra_sae::MatryoshkaWidths::new(&[6, 20, 48]).unwrap(),
            },
        )
        .unwrap(),
        SaeConfig::new(D_IN, 48, Architecture::JumpRelu).unwrap(),
        transcoder(Architecture::TopK { k: 4 }),
        transcoder(Architecture::ReluUnit),
    ] {
        let arch = format!(
            "{}{}",
            sae.architecture,
            if sae.is_transcoder() {
                " transcoder"
            } else {
                ""
            }
        );
        let tmp = tempfile::tempdir().unwrap();
        let acts = data(tmp.path());
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));

        let mut src = source(&acts);
        let mut t = Trainer::new(config_for(sae.clone()), &mut src, Some(&a)).unwrap();
        assert!(
            t.run(&mut src, &mut |_| ControlFlow::Continue(()))
                .unwrap()
                .finished
        );

        // Stop at step 60: the last checkpoint is at 50 (every 25 steps), so 10 steps are lost and redone.
        let mut src = source(&acts);
        let mut t = Trainer::new(config_for(sae.clone()), &mut src, Some(&b)).unwrap();
        let out = t
            .run(&mut src, &mut |p| {
                if p.step == 60 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert!(!out.finished);
        drop(t);
        let mut src = source(&acts);
        let mut t = Trainer::resume(&b, Some(&config_for(sae.clone())), &mut src).unwrap();
        assert_eq!(t.step(), 50);
        assert!(
            t.run(&mut src, &mut |_| ControlFlow::Continue(()))
                .unwrap()
                .finished
        );

        let (fa, fb) = (dir_files(&a), dir_files(&b));
        assert_eq!(
            fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
            fb.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for ((name, x), (_, y)) in fa.iter().zip(&fb) {
            if name == "metrics.jsonl" {
                // Same lines, one per 7 steps, except the measured speed.
                let strip = |b: &[u8]| -> Vec<serde_json::Value> {
                    String::from_utf8_lossy(b)
                        .lines()
                        .map(|l| {
                            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                            v["tokens_per_s"] = 0.into();
                            v
                        })
                        .collect()
                };
                assert_eq!(strip(x).len(), 120 / 7 + 1);
                assert_eq!(strip(x), strip(y), "{arch}: metrics differ");
            } else {
                assert!(
                    x == y,
                    "{arch}: {name} differs between the uninterrupted and the resumed run"
                );
            }
        }
    }
}

#[test]
fn resuming_with_another_config_or_a_damaged_checkpoint_fails_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let acts = data(tmp.path());
    let run = tmp.path().join("run");
    let mut src = source(&acts);
    let mut t = Trainer::new(config(Architecture::TopK { k: 4 }), &mut src, Some(&run)).unwrap();
    t.run(&mut src, &mut |p| {
        if p.step == 30 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    let before = dir_files(&run);

    let mut other = config(Architecture::TopK { k: 5 });
    other.lr = 1e-3;
    let err = Trainer::resume(&run, Some(&other), &mut source(&acts)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SaeError::ConfigMismatch { .. }), "{msg}");
    assert!(msg.contains("lr") && msg.contains("k: 4 → 5"), "{msg}");
    // Interval changes are allowed.
    let mut ok = config(Architecture::TopK { k: 4 });
    ok.metrics_every_steps = 3;
    assert!(Trainer::resume(&run, Some(&ok), &mut source(&acts)).is_ok());
    // Another data order cannot continue the same run.
    let wrong = NpySource::open(
        &acts,
        NpyOrder {
            shuffle: false,
            repeat: true,
            seed: 11,
        },
    )
    .unwrap();
    assert!(Trainer::resume(&run, None, &mut { wrong }).is_err());
    assert_eq!(
        dir_files(&run)
            .iter()
            .filter(|f| f.0 != "metrics.jsonl")
            .collect::<Vec<_>>(),
        before
            .iter()
            .filter(|f| f.0 != "metrics.jsonl")
            .collect::<Vec<_>>()
    );

    let state = run.join("training_state.safetensors");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    let weights = std::fs::read(run.join("sae_weights.safetensors")).unwrap();
    let err = Trainer::resume(&run, None, &mut source(&acts)).unwrap_err();
    assert!(
        matches!(err, SaeError::Checkpoint { .. }) && err.to_string().contains("truncated"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), &bytes[..bytes.len() / 2]);
    assert_eq!(
        std::fs::read(run.join("sae_weights.safetensors")).unwrap(),
        weights
    );
    let err = Trainer::resume(&tmp.path().join("nothing"), None, &mut source(&acts)).unwrap_err();
    assert!(err.to_string().contains("run directory"), "{err}");
}

/// A JumpReLU checkpoint from before the threshold was trained directly holds `param.log_threshold` and
/// its Adam moments; it resumes with `θ` = the stored threshold and the moments carried over through
/// `∂L/∂log θ = θ ∂L/∂θ` (`m/θ`, `v/θ²`), and trains on.
#[test]
fn a_checkpoint_training_log_theta_resumes_with_its_moments_converted() {
    let tmp = tempfile::tempdir().unwrap();
    let acts = data(tmp.path());
    let dir = tmp.path().join("j");
    let cfg = config(Architecture::JumpRelu);
    let mut src = source(&acts);
    let mut t = Trainer::new(cfg.clone(), &mut src, Some(&dir)).unwrap();
    let stop_at_30 = |p: &zephyra_sae::train::Progress| {
        if p.step == 30 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    t.run(&mut src, &mut |p| stop_at_30(p)).unwrap();
    drop(t);

    // Rewrite the step-25 checkpoint in the old layout, with thresholds and moments of our choosing.
    let mut state = TrainingState::load(&dir).unwrap();
    let d_sae = 48;
    let theta: Vec<f32> = (0..d_sae).map(|i| 0.01 + 0.002 * i as f32).collect();
    let m: Vec<f32> = (0..d_sae).map(|i| (i as f32 - 20.0) * 1e-4).collect();
    let v: Vec<f32> = (0..d_sae).map(|i| (1 + i) as f32 * 1e-7).collect();
    state.tensors.retain(|(n, _)| !n.ends_with(".threshold"));
    state.tensors.retain(|(n, _)| n != "threshold");
    state.tensors.extend([
        (
            "param.log_threshold".to_string(),
            theta.iter().map(|t| t.ln()).collect(),
        ),
        (
            "adam_m.log_threshold".to_string(),
            m.iter().zip(&theta).map(|(m, t)| m * t).collect(),
        ),
        (
            "adam_v.log_threshold".to_string(),
            v.iter().zip(&theta).map(|(v, t)| v * t * t).collect(),
        ),
        ("threshold".to_string(), theta.clone()),
    ]);
    state.save(&dir).unwrap();

    let mut src = source(&acts);
    let t = Trainer::resume(&dir, Some(&cfg), &mut src).unwrap();
    assert_eq!(t.step(), 25);
    assert_eq!(t.training_sae().threshold, theta);
    let resumed = t.state(state.meta.cursor.clone());
    for (name, want) in [("adam_m.threshold", &m), ("adam_v.threshold", &v)] {
        let got = resumed.tensor(name).unwrap();
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() <= 1e-6 * w.abs(), "{name}: {g} vs {w}");
        }
    }
    assert!(resumed.tensor("param.log_threshold").is_none());

    // It trains on to the end, thresholds finite and ≥ 0.
    let mut src = source(&acts);
    let mut t = Trainer::resume(&dir, Some(&cfg), &mut src).unwrap();
    assert!(
        t.run(&mut src, &mut |_| ControlFlow::Continue(()))
            .unwrap()
            .finished
    );
    assert!(t
        .training_sae()
        .threshold
        .iter()
        .all(|&x| x.is_finite() && x >= 0.0));

    // A damaged old checkpoint (a log-threshold without its moments) is refused by name.
    let mut state = TrainingState::load(&dir).unwrap();
    state.tensors.retain(|(n, _)| !n.ends_with("threshold"));
    state
        .tensors
        .push(("param.log_threshold".to_string(), vec![0.0; d_sae]));
    state
        .tensors
        .push(("threshold".to_string(), vec![1.0; d_sae]));
    state.save(&dir).unwrap();
    let mut src = source(&acts);
    let err = Trainer::resume(&dir, Some(&cfg), &mut src)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("adam_m.log_threshold"), "{err}");
}
