//! Paths into the repository's `testdata/` (the committed oracle files: see `testdata/README.md`).
//!
//! Included by each test crate's common module with `#[path = …] mod testdata;`, so the tests of every
//! crate find the data the same way. A missing or unreadable file fails the test with its path: the data
//! ships with the repository, so a test never passes without it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `testdata/<rel>` at the repository root, which must exist (file or folder).
pub fn path(rel: &str) -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata")).join(rel);
    assert!(
        path.exists(),
        "test data {} is missing: it ships with the repository (see testdata/README.md)",
        path.display()
    );
    path
}

/// The bytes of `testdata/<rel>`.
pub fn read(rel: &str) -> Vec<u8> {
    let path = path(rel);
    std::fs::read(&path)
        .unwrap_or_else(|err| panic!("cannot read test data {}: {err}", path.display()))
}

/// `testdata/<rel>` parsed as JSON.
pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel))
        .unwrap_or_else(|err| panic!("test data testdata/{rel} is not valid JSON: {err}"))
}

/// Every file directly in `dir` as (name, bytes), sorted by name: compares directories byte for byte
/// (a resumed run against an uninterrupted one, a store before and after a refused write).
pub fn dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|e| {
            let e = e.unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
            let bytes = std::fs::read(e.path())
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", e.path().display()));
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}
