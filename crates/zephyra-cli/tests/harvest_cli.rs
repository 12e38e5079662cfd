//! `zephyra harvest` end to end with the real model: kill and resume, bad input, store/model mismatch.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{args_with, fails, n_shards, ok, run, tree, wait_until, write_chapters, zephyra};

fn write_corpus(dir: &Path) {
    let para = "The borrow checker compares scopes to determine whether all borrows are valid. \
        A reference's scope starts from where it is introduced and continues through the last time it is used.\n";
    write_chapters(dir, "ch", "Chapter", para, 5, 8);
    std::fs::write(
        dir.join("notes.jsonl"),
        "{\"text\": \"Lifetimes ensure references stay valid.\"}\nnot json\n",
    )
    .unwrap();
}

fn harvest_args(data: &Path, out: &Path) -> Vec<String> {
    args_with(
        "harvest --model smollm2 --hook blocks.3.hook_resid_pre --tokens 1280 --ctx 32 \
         --shard-contexts 4 --batch-contexts 2",
        &[("--data", data), ("--out", out)],
    )
}

#[test]
fn killed_harvest_resumes_to_the_same_store() {
    zephyra_lm::fetch::resolve_model("smollm2").unwrap();
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    let work = tempfile::tempdir().unwrap();
    let whole = work.path().join("whole");
    let text = ok(zephyra()
        .args(harvest_args(data.path(), &whole))
        .arg("--json")
        .output()
        .unwrap());
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["n_contexts"], 40);
    assert!(summary["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(n_shards(&whole), 10);

    let part = work.path().join("part");
    let mut child = zephyra()
        .args(harvest_args(data.path(), &part))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("no shard appeared", Duration::from_secs(300), || {
        n_shards(&part) > 0
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(part.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["complete"], false,
        "the harvest finished before it could be killed"
    );
    // Training refuses the incomplete store with a hint to resume.
    let err = fails(
        zephyra()
            .args(["train", "--acts"])
            .arg(&part)
            .arg("--out")
            .arg(work.path().join("run"))
            .output()
            .unwrap(),
    );
    assert!(err.contains("resume"), "{err}");

    let text = ok(run(harvest_args(data.path(), &part)));
    assert!(text.contains("resumed after"), "{text}");
    assert_eq!(tree(&part), tree(&whole));

    // A store given to `train` with another hook (or model) is refused before anything is written.
    let run_dir = work.path().join("run2");
    let err = fails(
        zephyra()
            .args(["train", "--hook", "blocks.15.hook_resid_pre", "--acts"])
            .arg(&whole)
            .arg("--out")
            .arg(&run_dir)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("blocks.3.hook_resid_pre") && err.contains("blocks.15.hook_resid_pre"),
        "{err}"
    );
    assert!(!run_dir.exists());
}

#[test]
fn bad_input_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("o");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("a.txt"), "").unwrap();
    let cases = [
        (
            data.path().to_path_buf(),
            "--hook blocks.3.hook_resid_pre --ctx 100000",
            &["--ctx 100000 is too large", "8192"][..],
        ),
        (
            work.path().join("missing-dir"),
            "--hook blocks.3.hook_resid_pre",
            &["missing-dir", "does not exist"],
        ),
        (
            empty.path().to_path_buf(),
            "--hook blocks.3.hook_resid_pre",
            &["no usable text"],
        ),
        (
            data.path().to_path_buf(),
            "--hook blocks.30.hook_resid_pre",
            &["30 blocks"],
        ),
    ];
    for (corpus, flags, needles) in cases {
        let args = args_with(
            &format!("harvest {flags}"),
            &[("--out", &out), ("--data", &corpus)],
        );
        let err = fails(run(&args));
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
