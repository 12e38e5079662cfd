//! `zephyra train` on hostile input (issue 12): an all-NaN `.npy` under the default `--non-finite skip`
//! stops with an error instead of looping forever, `--threads 100000` is refused before any thread is
//! started, and a NaN or negative float flag is refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{arg, stderr, wait_until, write_npy, zephyra};

/// Runs `zephyra ARGS`, killing it if it has not ended after a generous `limit` (the defects under test
/// hang or spawn without bound; a normal run here takes well under a second).
fn run_bounded(args: &[String], limit: Duration) -> Output {
    let mut child = zephyra()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the zephyra binary starts");
    let mut ended = false;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("zephyra train never ended: it hangs", limit, || {
            ended = matches!(child.try_wait(), Ok(Some(_)));
            ended
        })
    }));
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("the zephyra output");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    out
}

fn train_line(acts: &Path, out: &Path, flags: &str) -> Vec<String> {
    let mut args: Vec<String> =
        "train --arch topk --k 4 --expansion 2 --batch-rows 32 --tokens 320 --threads 1"
            .split(' ')
            .map(str::to_string)
            .collect();
    args.extend(["--acts".into(), arg(acts), "--out".into(), arg(out)]);
    args.extend(flags.split_whitespace().map(str::to_string));
    args
}

fn clean_failure(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr should mention {needle:?}: {err}"
        );
    }
}

/// A temporary directory holding `acts.npy`: 200 × 8 finite rows; returns it and the file's path.
fn ramp() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let acts = tmp.path().join("acts.npy");
    write_npy(&acts, 200, 8, |r, row| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = ((r * 8 + j) % 13) as f32 - 6.0;
        }
    });
    (tmp, acts)
}

#[test]
fn all_nan_activations_stop_with_an_error_under_the_default_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let acts = tmp.path().join("nan.npy");
    write_npy(&acts, 200, 8, |_, row| row.fill(f32::NAN));
    let out = run_bounded(
        &train_line(&acts, &tmp.path().join("run"), ""),
        Duration::from_secs(120),
    );
    clean_failure(&out, &["no usable row", "NaN"]);
}

#[test]
fn a_hundred_thousand_threads_are_refused_before_any_is_started() {
    let (tmp, acts) = ramp();
    let mut args = train_line(&acts, &tmp.path().join("run"), "");
    let at = args.iter().position(|a| a == "--threads").unwrap();
    args[at + 1] = "100000".into();
    let out = run_bounded(&args, Duration::from_secs(120));
    clean_failure(&out, &["--threads 100000", "omit it to use every core"]);
}

#[test]
fn nan_or_negative_float_flags_are_refused_by_name() {
    let (tmp, acts) = ramp();
    // The flag's parser refuses the value (naming the flag, the value and the valid range) before the
    // library's own check (`TrainConfig::validate`, tested in zephyra-sae) is reached.
    for (i, (flag, name, value)) in [
        ("--max-grad-norm NaN", "--max-grad-norm", "NaN"),
        ("--max-grad-norm=-1", "--max-grad-norm", "-1"),
        ("--lr inf", "--lr", "inf"),
        ("--l1=-0.5", "--l1", "-0.5"),
    ]
    .into_iter()
    .enumerate()
    {
        let run = tmp.path().join(format!("run{i}"));
        let out = run_bounded(&train_line(&acts, &run, flag), Duration::from_secs(120));
        clean_failure(&out, &[name, value, "invalid", "must be a finite number"]);
        assert!(!run.join("cfg.json").exists(), "{flag}: nothing trained");
    }
}
