//! `zephyra train` end to end: a run killed with SIGKILL after a checkpoint and resumed writes the same
//! `sae_weights.safetensors` bytes as an uninterrupted run; bad input fails with exit code 2, a clear
//! message and nothing overwritten.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const D_IN: usize = 24;

fn zephyra() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zephyra"));
    c.env("RUST_LOG", "zephyra=warn");
    c
}

/// Writes a float32 .npy by hand (the format is 10 bytes + a padded header + the data) from a seeded LCG.
fn write_npy(path: &Path, n: usize, d: usize, nan_rows: &[usize]) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for r in 0..n {
        for j in 0..d {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let v = if nan_rows.contains(&r) && j == 1 {
                f32::NAN
            } else {
                u * (1 + j % 4) as f32 + 0.2
            };
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn train_args(acts: &Path, out: &Path) -> Vec<String> {
    train_args_with(acts, out, "4", "4")
}

fn train_args_with(acts: &Path, out: &Path, k: &str, expansion: &str) -> Vec<String> {
    [
        "train",
        "--acts",
        acts.to_str().unwrap(),
        "--arch",
        "topk",
        "--k",
        k,
        "--expansion",
        expansion,
        "--batch",
        "64",
        "--tokens",
        "9600",
        "--checkpoint-every",
        "1600",
        "--metrics-every",
        "5",
        "--threads",
        "1",
        "--seed",
        "3",
        "--holdout",
        "500",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit code 2, stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let acts = tmp.path().join("acts.npy");
    write_npy(&acts, 4000, D_IN, &[17, 2000]);
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
    let state = b.join("training_state.safetensors");
    let start = Instant::now();
    while !state.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !b.join("summary.json").exists(),
        "the run finished before it was killed: the test proves nothing"
    );

    ok(zephyra()
        .args(["train", "--resume", b.to_str().unwrap()])
        .output()
        .unwrap());
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
    let run = tmp.path().join("run");
    ok(zephyra().args(train_args(&acts, &run)).output().unwrap());
    let weights = std::fs::read(run.join("sae_weights.safetensors")).unwrap();

    // Resuming with another k or learning rate.
    let e = fails(
        zephyra()
            .args(["train", "--resume", run.to_str().unwrap(), "--k", "5"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("k: 4 → 5") && e.contains("cannot resume"), "{e}");
    let e = fails(
        zephyra()
            .args(["train", "--resume", run.to_str().unwrap(), "--lr", "0.1"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("lr"), "{e}");
    // Training into an existing run.
    let e = fails(zephyra().args(train_args(&acts, &run)).output().unwrap());
    assert!(e.contains("--resume"), "{e}");
    assert_eq!(
        std::fs::read(run.join("sae_weights.safetensors")).unwrap(),
        weights
    );

    // A truncated checkpoint.
    let state = run.join("training_state.safetensors");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() - 100]).unwrap();
    let e = fails(
        zephyra()
            .args(["train", "--resume", run.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(e.contains("truncated"), "{e}");
    assert_eq!(
        std::fs::read(run.join("sae_weights.safetensors")).unwrap(),
        weights
    );

    // k ≥ d_sae, expansion 0, wrong dtype.
    let other = tmp.path().join("other");
    let e = fails(
        zephyra()
            .args(train_args_with(&acts, &other, "96", "4"))
            .output()
            .unwrap(),
    );
    assert!(e.contains("k = 96") && e.contains("d_sae = 96"), "{e}");
    let e = fails(
        zephyra()
            .args(train_args_with(&acts, &other, "4", "0"))
            .output()
            .unwrap(),
    );
    assert!(e.contains("expansion factor 0"), "{e}");
    let f64_file = tmp.path().join("f64.npy");
    let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }".to_string();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 32]);
    std::fs::write(&f64_file, bytes).unwrap();
    let e = fails(
        zephyra()
            .args(train_args(&f64_file, &other))
            .output()
            .unwrap(),
    );
    assert!(e.contains("'<f8'") && e.contains("float32"), "{e}");
    assert!(!other.join("cfg.json").exists());
}
