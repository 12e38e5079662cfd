//! `zephyra train` end to end: a run killed with SIGKILL after a checkpoint and resumed writes the same
//! `sae_weights.safetensors` bytes as an uninterrupted run; bad input fails with exit code 2, a clear
//! message and nothing overwritten.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{args_with, fails, npy_header, ok, run, wait_for_checkpoint, write_npy, zephyra, Lcg};

const D_IN: usize = 24;

/// Rows from a seeded LCG, column `j` scaled by `1 + j % 4`; `nan_rows` hold a NaN in column 1.
fn write_acts(path: &Path, n: usize, d: usize, nan_rows: &[usize]) {
    let mut rng = Lcg(0x2545_F491_4F6C_DD1D);
    write_npy(path, n, d, |r, row| {
        for (j, v) in row.iter_mut().enumerate() {
            let u = rng.centred();
            *v = if nan_rows.contains(&r) && j == 1 {
                f32::NAN
            } else {
                u * (1 + j % 4) as f32 + 0.2
            };
        }
    });
}

fn train_args(acts: &Path, out: &Path) -> Vec<String> {
    train_args_with(acts, out, "4", "4")
}

fn train_args_with(acts: &Path, out: &Path, k: &str, expansion: &str) -> Vec<String> {
    args_with(
        &format!(
            "train --arch topk --k {k} --expansion {expansion} --batch-rows 64 --tokens 9600 \
             --checkpoint-every 1600 --metrics-every 5 --threads 1 --seed 3 --holdout 500"
        ),
        &[("--acts", acts), ("--out", out)],
    )
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let acts = tmp.path().join("acts.npy");
    write_acts(&acts, 4000, D_IN, &[17, 2000]);
    (tmp, acts)
}

#[test]
fn kill_9_then_resume_reproduces_the_uninterrupted_weights() {
    let (tmp, acts) = setup();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let text = ok(zephyra()
        .args(train_args(&acts, &a))
        .arg("--json")
        .output()
        .unwrap());
    let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(summary["steps"], 150);
    assert_eq!(summary["holdout"]["n_rows"], 500);
    assert!(summary["holdout"]["fve"].as_f64().unwrap() > 0.0);
    // Rows 17 and 2000 (both among the 3500 training rows) hold a NaN: skipped once per epoch, and 9600
    // rows is 2 full shuffled epochs plus part of a third.
    let skipped = summary["skipped_rows"].as_u64().unwrap();
    assert!((4..=6).contains(&skipped), "skipped {skipped}");

    // The same run, slowed down, killed with SIGKILL once its first checkpoint (step 25) exists.
    let mut child = zephyra()
        .args(train_args(&acts, &b))
        .args(["--step-delay-ms", "20"])
        .spawn()
        .unwrap();
    wait_for_checkpoint(&b, Duration::from_secs(60), Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !b.join("summary.json").exists(),
        "the run finished before it was killed: the test proves nothing"
    );

    ok(run(["train", "--resume", b.to_str().unwrap()]));
    for f in [
        "sae_weights.safetensors",
        "cfg.json",
        "training_state.safetensors",
    ] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f} differs between the uninterrupted and the killed-and-resumed run"
        );
    }
}

#[test]
fn bad_input_fails_clearly_and_overwrites_nothing() {
    let (tmp, acts) = setup();
    let run_dir = tmp.path().join("run");
    ok(run(train_args(&acts, &run_dir)));
    let weights_file = run_dir.join("sae_weights.safetensors");
    let weights = std::fs::read(&weights_file).unwrap();
    let assert_weights_unchanged = || assert_eq!(std::fs::read(&weights_file).unwrap(), weights);

    // `zephyra train --resume RUN FLAGS…`, which must fail cleanly: its stderr.
    let resume_fails = |flags: &[&str]| {
        let mut args = vec!["train", "--resume", run_dir.to_str().unwrap()];
        args.extend_from_slice(flags);
        fails(run(args))
    };

    // Resuming with another k or learning rate.
    let e = resume_fails(&["--k", "5"]);
    assert!(e.contains("k: 4 → 5") && e.contains("cannot resume"), "{e}");
    let e = resume_fails(&["--lr", "0.1"]);
    assert!(e.contains("lr"), "{e}");
    // Training into an existing run.
    let e = fails(run(train_args(&acts, &run_dir)));
    assert!(e.contains("--resume"), "{e}");
    assert_weights_unchanged();

    // A truncated checkpoint.
    let state = run_dir.join("training_state.safetensors");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() - 100]).unwrap();
    let e = resume_fails(&[]);
    assert!(e.contains("truncated"), "{e}");
    assert_weights_unchanged();

    // k ≥ d_sae, expansion 0, wrong dtype.
    let other = tmp.path().join("other");
    let e = fails(run(train_args_with(&acts, &other, "96", "4")));
    assert!(e.contains("k = 96") && e.contains("d_sae = 96"), "{e}");
    let e = fails(run(train_args_with(&acts, &other, "4", "0")));
    assert!(e.contains("expansion factor 0"), "{e}");
    let f64_file = tmp.path().join("f64.npy");
    let mut bytes = npy_header("(2, 2)", "<f8");
    bytes.extend_from_slice(&[0u8; 32]);
    std::fs::write(&f64_file, bytes).unwrap();
    let e = fails(run(train_args(&f64_file, &other)));
    assert!(e.contains("'<f8'") && e.contains("float32"), "{e}");
    assert!(!other.join("cfg.json").exists());
}

/// `--l1-warmup`, `--lr-warmup` and `--lr-decay` set the schedules the metrics log, step by step, as
/// computed by hand: λ·min(1, s/8), lr·min(1, s/4) and a constant rate afterwards (s = steps done).
#[test]
fn schedule_flags_set_the_logged_coefficients() {
    let (tmp, acts) = setup();
    let out = tmp.path().join("relu");
    ok(zephyra()
        .args(args_with(
            "train --arch relu --l1 2 --l1-warmup 8 --lr 0.001 --lr-warmup 4 --lr-decay constant \
             --expansion 2 --batch-rows 64 --tokens 1280 --metrics-every 1 --threads 1 --holdout 500",
            &[("--acts", &acts), ("--out", &out)],
        ))
        .output()
        .unwrap());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 20);
    for r in &records {
        let s = r["step"].as_f64().unwrap();
        let (coeff, lr) = (
            r["sparsity_coeff"].as_f64().unwrap(),
            r["lr"].as_f64().unwrap(),
        );
        let want_coeff = 2.0 * (s / 8.0).min(1.0);
        let want_lr = 0.001 * (s / 4.0).min(1.0);
        assert!(
            (coeff - want_coeff).abs() < 1e-6,
            "step {s}: λ {coeff}, want {want_coeff}"
        );
        assert!(
            (lr - want_lr).abs() < 1e-9,
            "step {s}: lr {lr}, want {want_lr}"
        );
    }
}
