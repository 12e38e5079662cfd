//! `zephyra harvest` end to end with the real model: kill and resume, bad input, store/model mismatch.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn zephyra() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zephyra"));
    c.env("RUST_LOG", "zephyra=warn");
    c
}

fn write_corpus(dir: &Path) {
    let para = "The borrow checker compares scopes to determine whether all borrows are valid. \
        A reference's scope starts from where it is introduced and continues through the last time it is used.\n";
    for i in 0..5 {
        std::fs::write(
            dir.join(format!("ch{i}.md")),
            format!("# Chapter {i}\n\n{}", para.repeat(8 + i)),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("notes.jsonl"),
        "{\"text\": \"Lifetimes ensure references stay valid.\"}\nnot json\n",
    )
    .unwrap();
}

fn harvest_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "harvest",
        "--model",
        "smollm2",
        "--data",
        &data.display().to_string(),
        "--hook",
        "blocks.3.hook_resid_pre",
        "--tokens",
        "1280",
        "--ctx",
        "32",
        "--shard-contexts",
        "4",
        "--batch",
        "2",
        "--out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn store_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn n_shards(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["shards"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn killed_harvest_resumes_to_the_same_store() {
    zephyra_lm::fetch::resolve_model("smollm2").unwrap();
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    let work = tempfile::tempdir().unwrap();
    let whole = work.path().join("whole");
    let out = zephyra()
        .args(harvest_args(data.path(), &whole))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
    let start = Instant::now();
    while n_shards(&part) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no shard appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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
    let out = zephyra()
        .args([
            "train",
            "--acts",
            &part.display().to_string(),
            "--out",
            &work.path().join("run").display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resume"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = zephyra()
        .args(harvest_args(data.path(), &part))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumed after"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(store_files(&part), store_files(&whole));

    // A store given to `train` with another hook (or model) is refused before anything is written.
    let run = work.path().join("run2");
    let out = zephyra()
        .args([
            "train",
            "--acts",
            &whole.display().to_string(),
            "--hook",
            "blocks.15.hook_resid_pre",
            "--out",
            &run.display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blocks.3.hook_resid_pre") && err.contains("blocks.15.hook_resid_pre"),
        "{err}"
    );
    assert!(!run.exists());
}

#[test]
fn bad_input_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = zephyra().args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let out = work.path().join("o").display().to_string();
    let d = data.path().display().to_string();
    let err = run(&[
        "harvest",
        "--data",
        &d,
        "--hook",
        "blocks.3.hook_resid_pre",
        "--ctx",
        "100000",
        "--out",
        &out,
    ]);
    assert!(
        err.contains("--ctx 100000 is too large") && err.contains("8192"),
        "{err}"
    );
    let missing = work.path().join("missing-dir").display().to_string();
    let err = run(&[
        "harvest",
        "--data",
        &missing,
        "--hook",
        "blocks.3.hook_resid_pre",
        "--out",
        &out,
    ]);
    assert!(
        err.contains("missing-dir") && err.contains("does not exist"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("a.txt"), "").unwrap();
    let err = run(&[
        "harvest",
        "--data",
        &empty.path().display().to_string(),
        "--hook",
        "blocks.3.hook_resid_pre",
        "--out",
        &out,
    ]);
    assert!(err.contains("no usable text"), "{err}");
    let err = run(&[
        "harvest",
        "--data",
        &d,
        "--hook",
        "blocks.30.hook_resid_pre",
        "--out",
        &out,
    ]);
    assert!(err.contains("30 blocks"), "{err}");
}
