//! Hostile corpora under an explicit memory cap (issue 12, defect 1): a 16 MB text file without a line
//! break, a `*.txt` link to `/dev/zero` and a FIFO inside `--data DIR`.
//!
//! Each run is the release binary under `prlimit --as` (a runaway reader is stopped by the kernel instead
//! of taking the machine) and `timeout --signal=KILL` (a reader blocked on a FIFO is killed, and the test
//! fails saying so). The peak is the binary's own report (`peak_rss_mb`, its `VmHWM`). The bound is
//! relative: the same harvest over a small corpus, plus [`SLACK`] for one bounded piece of text being
//! tokenized.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{stderr, stdout};

const MIB: u64 = 1 << 20;
/// Address-space cap of every run: far above what a bounded harvest of the tiny model maps, far below
/// what today's whole-file tokenization of 16 MB took (7.3 GB).
const AS_CAP: u64 = 3 << 30;
/// One text piece (256–512 KiB) being tokenized, on top of the small corpus' peak.
const SLACK: u64 = 160 * MIB;
/// Seconds after which a run has hung (it takes a few seconds).
const TIMEOUT_S: u64 = 600;

/// `zephyra harvest --json` over `data` with the tiny model under the caps; returns its summary, the
/// peak resident memory it reports (its own `VmHWM`) and its stderr.
fn capped_harvest(model: &Path, data: &Path, out: &Path) -> (serde_json::Value, u64, String) {
    let output = Command::new("timeout")
        .args(["--signal=KILL", &TIMEOUT_S.to_string(), "prlimit"])
        .arg(format!("--as={AS_CAP}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_zephyra"))
        .args([
            "harvest",
            "--hook",
            "blocks.1.hook_resid_pre",
            "--tokens",
            "512",
        ])
        .args(["--ctx", "64", "--threads", "1", "--json", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "zephyra=warn")
        .stdin(Stdio::null())
        .output()
        .expect("timeout, prlimit and zephyra run");
    let err = stderr(&output);
    assert_ne!(
        output.status.code(),
        None,
        "killed by a signal: it hung for {TIMEOUT_S} s or ran past the {} GiB cap ({}); stderr {err}",
        AS_CAP >> 30,
        output.status
    );
    assert!(
        output.status.success(),
        "failed ({}): stdout {}\nstderr {err}",
        output.status,
        stdout(&output)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&output).trim()).expect("one JSON summary");
    let peak = summary["peak_rss_mb"]
        .as_f64()
        .expect("the summary reports peak_rss_mb");
    (summary, (peak * MIB as f64) as u64, err)
}

#[cfg(unix)]
#[test]
fn text_without_line_breaks_and_special_files_stay_bounded() {
    let tiny = zephyra_lm::testing::tiny_llama(6).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let phrase = "the cat sat on the mat and ";

    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    std::fs::write(
        small.join("a.txt"),
        format!("{}\n", phrase.repeat(4)).repeat(200),
    )
    .unwrap();
    let (_, baseline, _) = capped_harvest(&tiny.path, &small, &tmp.path().join("s-out"));

    let hostile = tmp.path().join("hostile");
    std::fs::create_dir(&hostile).unwrap();
    let big = phrase.repeat(16_000_000 / phrase.len());
    assert!(!big.contains('\n') && big.len() >= 15_000_000);
    std::fs::write(hostile.join("a.txt"), &big).unwrap();
    std::os::unix::fs::symlink("/dev/zero", hostile.join("zero.txt")).unwrap();
    let made = Command::new("mkfifo")
        .arg(hostile.join("pipe.txt"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let (summary, peak, err) = capped_harvest(&tiny.path, &hostile, &tmp.path().join("h-out"));
    assert_eq!(summary["n_contexts"], 8, "{summary}");
    for name in ["zero.txt", "pipe.txt"] {
        assert!(
            err.contains(name) && err.contains("not a regular file"),
            "a warning names the skipped {name}: {err}"
        );
    }
    assert!(
        peak <= baseline + SLACK,
        "16 MB without a line break peaked at {} MiB; the small corpus at {} MiB (+{} MiB allowed)",
        peak / MIB,
        baseline / MIB,
        SLACK / MIB
    );
    eprintln!(
        "peak RSS: small corpus {} MiB, 16 MB without line breaks + /dev/zero + FIFO {} MiB",
        baseline / MIB,
        peak / MIB
    );
}
