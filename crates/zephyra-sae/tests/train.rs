//! The training loop on synthetic data built from a known sparse dictionary: it learns, it is
//! deterministic, its metrics are honest, the folded SAE works on raw activations, and bad input is refused.

use std::ops::ControlFlow;

use rand::{Rng, SeedableRng};
use zephyra_sae::metrics::MetricsRecord;
use zephyra_sae::train::{evaluate, MemorySource, NonFinitePolicy, TrainConfig, Trainer};
use zephyra_sae::{Architecture, SaeConfig, SaeError};

const D_IN: usize = 16;

/// Rows `x = 7 · Σ_{3 features} a_j d_j + noise` from 48 random unit directions, `a_j ∈ [0.5, 2]`: a
/// dictionary (fixed; `seed` only picks the rows) a TopK(3) SAE with 64 latents can represent almost exactly. The scale 7 makes the input
/// normalisation do real work.
fn synthetic(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1234); // the same dictionary for every data set
    let mut dict = vec![0.0f32; 48 * D_IN];
    for row in dict.chunks_mut(D_IN) {
        row.iter_mut().for_each(|v| *v = rng.random::<f32>() - 0.5);
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1);
    let mut out = vec![0.0f32; n * D_IN];
    for row in out.chunks_mut(D_IN) {
        for _ in 0..3 {
            let f = rng.random_range(0..48);
            let a = 0.5 + 1.5 * rng.random::<f32>();
            for (o, d) in row.iter_mut().zip(&dict[f * D_IN..(f + 1) * D_IN]) {
                *o += 7.0 * a * d;
            }
        }
        row.iter_mut()
            .for_each(|v| *v += 0.01 * (rng.random::<f32>() - 0.5) + 0.3);
    }
    out
}

fn config(arch: Architecture, steps: u64) -> TrainConfig {
    let sae = SaeConfig::new(D_IN, 64, arch).unwrap();
    let mut cfg = TrainConfig::for_sae(sae, 128, 128 * steps);
    cfg.lr = 3e-3;
    cfg.init_rows = 1024;
    cfg.threads = 1;
    cfg.dead_after_tokens = 128 * 50;
    cfg.metrics_every_steps = 5;
    cfg
}

fn train(cfg: TrainConfig, rows: Vec<f32>, dir: Option<&std::path::Path>) -> Trainer {
    let mut src = MemorySource::new(rows, D_IN, true).unwrap();
    let mut t = Trainer::new(cfg, &mut src, dir).unwrap();
    let out = t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    assert!(out.finished);
    t
}

fn holdout_fve(t: &Trainer) -> (f64, f64) {
    let mut held = MemorySource::new(synthetic(2000, 99), D_IN, false).unwrap();
    let e = evaluate(&t.inference_sae(), &mut held, 256, u64::MAX).unwrap();
    assert_eq!(e.n_rows, 2000);
    (e.fve, e.l0)
}

#[test]
fn topk_learns_a_sparse_dictionary_and_logs_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let t = train(
        config(Architecture::TopK { k: 3 }, 1000),
        synthetic(20_000, 1),
        Some(dir.path()),
    );
    let (fve, l0) = holdout_fve(&t);
    assert!(fve > 0.85, "held-out FVE {fve}");
    assert!(l0 <= 3.0 + 1e-9 && l0 > 2.0, "L0 {l0}");

    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let recs: Vec<MetricsRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 200);
    assert_eq!((recs[0].step, recs[0].tokens), (5, 640));
    assert_eq!(recs.last().map(|r| r.step), Some(1000));
    assert!(
        recs.last().unwrap().mse < recs[0].mse / 3.0,
        "{:?} → {:?}",
        recs[0],
        recs.last()
    );
    assert!(recs
        .iter()
        .all(|r| r.l0 <= 3.0 + 1e-9 && r.lr >= 0.0 && r.tokens_per_s > 0.0));
    // The saved SAELens files hold the folded (raw-space) SAE.
    let loaded = zephyra_sae::saelens::load(dir.path()).unwrap();
    assert_eq!(loaded.w_enc, t.inference_sae().w_enc);
    assert!(dir.path().join("training_state.safetensors").exists());
}

#[test]
fn relu_and_relu_unit_reduce_the_loss() {
    for arch in [Architecture::Relu, Architecture::ReluUnit] {
        let mut cfg = config(arch, 200);
        cfg.sparsity_coeff = if arch == Architecture::Relu {
            0.5
        } else {
            0.05
        };
        cfg.resample_every_steps = 50;
        let t = train(cfg, synthetic(10_000, 2), None);
        let (fve, l0) = holdout_fve(&t);
        assert!(fve > 0.6, "{arch}: held-out FVE {fve}");
        assert!(l0 < 40.0, "{arch}: L0 {l0} of 64");
    }
}

#[test]
fn folding_the_input_scale_keeps_codes_and_scales_reconstructions() {
    // Unit-norm rows: the training SAE's codes are then its own (with the topk default's rescaled rows
    // they need the row norms; their folding is `decoder_norm_rescaling.rs`'s test).
    let mut cfg = config(Architecture::TopK { k: 3 }, 20);
    cfg.decoder_init_norm = None;
    let t = train(cfg, synthetic(4000, 3), None);
    let s = t.scale();
    assert!(
        (s - 1.0).abs() > 0.1,
        "the synthetic data should need scaling, s = {s}"
    );
    let raw = synthetic(50, 4);
    let scaled: Vec<f32> = raw.iter().map(|v| v * s).collect();
    let (train_sae, infer_sae) = (t.training_sae(), t.inference_sae());
    assert_eq!(infer_sae.cfg.normalization_factor, Some(s));
    let f_train = train_sae.encode(&scaled, 50).unwrap();
    let f_raw = infer_sae.encode(&raw, 50).unwrap();
    for (a, b) in f_train.iter().zip(&f_raw) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    let x_train = train_sae.decode(&f_train, 50).unwrap();
    let x_raw = infer_sae.decode(&f_raw, 50).unwrap();
    for (a, b) in x_train.iter().zip(&x_raw) {
        assert!((a / s - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a}/s vs {b}");
    }
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let rows = synthetic(3000, 5);
    let a = train(config(Architecture::TopK { k: 3 }, 30), rows.clone(), None);
    let b = train(config(Architecture::TopK { k: 3 }, 30), rows.clone(), None);
    assert_eq!(a.training_sae(), b.training_sae());
    let mut cfg = config(Architecture::TopK { k: 3 }, 30);
    cfg.seed = 1;
    let c = train(cfg, rows, None);
    assert_ne!(a.training_sae().w_enc, c.training_sae().w_enc);
}

#[test]
fn nan_rows_are_skipped_and_counted_never_trained_on() {
    let mut rows = synthetic(3000, 6);
    for r in [5usize, 77, 1500] {
        rows[r * D_IN + 3] = if r == 77 { f32::INFINITY } else { f32::NAN };
    }
    let mut cfg = config(Architecture::TopK { k: 3 }, 30);
    cfg.init_rows = 100;
    let mut src = MemorySource::new(rows.clone(), D_IN, false).unwrap();
    let mut t = Trainer::new(cfg.clone(), &mut src, None).unwrap();
    let out = t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    assert!(
        !out.finished,
        "3000 rows, one pass: fewer than 30 × 128 rows"
    );
    assert_eq!(out.skipped_rows, 3);
    assert_eq!(out.tokens, 2997);
    assert!(t
        .training_sae()
        .params()
        .iter()
        .all(|(_, v)| v.iter().all(|x| x.is_finite())));

    cfg.non_finite = NonFinitePolicy::Error;
    let mut src = MemorySource::new(rows, D_IN, false).unwrap();
    let mut t = Trainer::new(cfg, &mut src, None).unwrap();
    let err = t
        .run(&mut src, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(matches!(err, SaeError::NonFinite { row: 5, .. }), "{err}");
}

#[test]
fn bad_configurations_are_refused() {
    assert!(matches!(
        SaeConfig::new(D_IN, 64, Architecture::TopK { k: 64 }),
        Err(SaeError::InvalidConfig { .. })
    ));
    assert!(matches!(
        SaeConfig::new(D_IN, 0, Architecture::Relu),
        Err(SaeError::InvalidConfig { .. })
    ));
    let mut src = MemorySource::new(synthetic(500, 7), D_IN, true).unwrap();
    let mut cfg = config(Architecture::TopK { k: 3 }, 10);
    cfg.total_tokens = 10;
    assert!(Trainer::new(cfg, &mut src, None)
        .unwrap_err()
        .to_string()
        .contains("--tokens"));
    let mut cfg = config(Architecture::TopK { k: 3 }, 10);
    cfg.lr = f32::NAN;
    assert!(Trainer::new(cfg, &mut src, None).is_err());
    let mut narrow = MemorySource::new(vec![0.0; 40], 8, true).unwrap();
    let err = Trainer::new(config(Architecture::TopK { k: 3 }, 10), &mut narrow, None).unwrap_err();
    assert!(matches!(err, SaeError::ShapeMismatch { .. }), "{err}");
    let mut zeros = MemorySource::new(vec![0.0; 16 * 200], 16, true).unwrap();
    let err = Trainer::new(config(Architecture::TopK { k: 3 }, 10), &mut zeros, None).unwrap_err();
    assert!(err.to_string().contains("all zero"), "{err}");
}

#[test]
fn a_new_run_never_overwrites_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    train(
        config(Architecture::TopK { k: 3 }, 10),
        synthetic(2000, 8),
        Some(dir.path()),
    );
    let before = std::fs::read(dir.path().join("sae_weights.safetensors")).unwrap();
    let mut src = MemorySource::new(synthetic(2000, 9), D_IN, true).unwrap();
    let err = Trainer::new(
        config(Architecture::TopK { k: 3 }, 10),
        &mut src,
        Some(dir.path()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("sae_weights.safetensors")).unwrap(),
        before
    );
}
