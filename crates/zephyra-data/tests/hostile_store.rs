//! Hostile activation stores (issue 12, defects 2 and 6): manifests whose shard `file` points outside the
//! store, manifests of an unknown version, and shard headers that lie about their sizes. Each is refused
//! by `ActivationStore::open` with a corrupt-store error, before anything outside the store is opened and
//! before any allocation the header asks for.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use zephyra_data::store::manifest::Manifest;
use zephyra_data::{ActivationStore, DataError};
use zephyra_lm::HookPoint;

/// A complete store of 4 shards harvested by the tiny model into `root/good`.
fn good_store(root: &Path) -> PathBuf {
    let out = tiny_store(root, "good", vec![HookPoint::ResidPre(1)], 16);
    ActivationStore::open(&out).unwrap().verify().unwrap();
    out
}

/// A copy of `store` named `name` beside it.
fn copy(store: &Path, name: &str) -> PathBuf {
    let dir = store.with_file_name(name);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(store).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

fn open_err(dir: &Path) -> String {
    match ActivationStore::open(dir) {
        Ok(_) => panic!("{} was opened", dir.display()),
        Err(e) => {
            assert!(matches!(e, DataError::BadStore { .. }), "{e}");
            e.to_string()
        }
    }
}

#[test]
fn shard_files_outside_the_store_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let good = good_store(root.path());
    // A faithful copy of shard 0 outside the store: reading it would succeed, so only the name is wrong.
    let outside = root.path().join("outside.safetensors");
    std::fs::copy(good.join("shard-00000.safetensors"), &outside).unwrap();
    let passwd_len = std::fs::metadata("/etc/passwd").map(|m| m.len()).ok();
    let names = [
        "../outside.safetensors".to_string(),
        outside.display().to_string(),
        "/etc/passwd".to_string(),
        "./shard-00000.safetensors".to_string(),
        "sub/shard-00000.safetensors".to_string(),
        "..".to_string(),
        String::new(),
    ];
    for (i, name) in names.iter().enumerate() {
        let dir = copy(&good, &format!("bad-{i}"));
        let mut m = Manifest::read(&dir).unwrap();
        m.shards[0].file = name.clone();
        m.write(&dir).unwrap();
        let e = open_err(&dir);
        assert!(
            e.contains("not a plain file name") && e.contains("shard 0"),
            "{name:?}: {e}"
        );
        if let Some(len) = passwd_len {
            assert!(!e.contains(&format!("{len} bytes")), "{name:?}: {e}");
        }
    }
}

#[test]
fn an_unknown_manifest_version_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let good = good_store(root.path());
    let dir = copy(&good, "v2");
    let mut m = Manifest::read(&dir).unwrap();
    m.version = 2;
    m.write(&dir).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("manifest version 2"), "{e}");
}

/// Rewrites the `activations` shape in the header of shard 0 and makes the manifest agree with it (rows,
/// file size), as a hostile store would.
fn lie_about_rows(dir: &Path, n_rows: u64) {
    let path = dir.join("shard-00000.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let d = header["activations"]["shape"][1].clone();
    header["activations"]["shape"] = serde_json::json!([n_rows, d]);
    let text = serde_json::to_vec(&header).unwrap();
    let mut lied = (text.len() as u64).to_le_bytes().to_vec();
    lied.extend_from_slice(&text);
    lied.extend_from_slice(&bytes[8 + len..]);
    std::fs::write(&path, &lied).unwrap();
    let mut m = Manifest::read(dir).unwrap();
    m.n_rows = m.n_rows - m.shards[0].n_rows + n_rows;
    m.shards[0].n_rows = n_rows;
    m.shards[0].bytes = lied.len() as u64;
    m.write(dir).unwrap();
}

#[test]
fn shard_headers_that_lie_about_sizes_are_refused_at_open() {
    let root = tempfile::tempdir().unwrap();
    let good = good_store(root.path());
    // n × d × 4 overflows 64 bits.
    let overflow = copy(&good, "overflow");
    lie_about_rows(&overflow, 1 << 62);
    let e = open_err(&overflow);
    assert!(e.contains("cannot hold"), "{e}");
    // n × d × 4 fits in 64 bits but not in the file.
    let big = copy(&good, "big");
    lie_about_rows(&big, 1 << 40);
    let e = open_err(&big);
    assert!(e.contains("cannot hold"), "{e}");
    // Row counts whose sum overflows.
    let sums = copy(&good, "sums");
    let mut m = Manifest::read(&sums).unwrap();
    m.shards[0].n_rows = u64::MAX;
    m.write(&sums).unwrap();
    let e = open_err(&sums);
    assert!(e.contains("beyond 2^64"), "{e}");
}

/// Overwrites every activation of every shard of `dir` with NaN (the header and the manifest stay true).
fn poison_with_nan(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        let acts = &header["activations"];
        assert_eq!(acts["dtype"], "F32", "the tiny store is float32");
        let start = 8 + len + acts["data_offsets"][0].as_u64().unwrap() as usize;
        let end = 8 + len + acts["data_offsets"][1].as_u64().unwrap() as usize;
        for value in bytes[start..end].chunks_exact_mut(4) {
            value.copy_from_slice(&f32::NAN.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
    }
}

/// Issue 12 defect 3 on a store: under `--non-finite skip` a repeating reader over an all-NaN store stops
/// with `NoUsableRows` after two passes instead of looping forever.
#[test]
fn an_all_nan_store_stops_with_no_usable_rows() {
    use zephyra_sae::train::{fill_batch, NonFinitePolicy};
    use zephyra_sae::SaeError;
    let root = tempfile::tempdir().unwrap();
    let nan = copy(&good_store(root.path()), "nan");
    poison_with_nan(&nan);
    let store = ActivationStore::open(&nan).unwrap();
    let (n_rows, d) = (store.n_rows(), store.d());
    let mut source = zephyra_data::source::BufferedSource::store(store, 64, 1, true);
    let mut buf = vec![0.0f32; 32 * d];
    let err = fill_batch(&mut source, &mut buf, d, NonFinitePolicy::Skip, 0).unwrap_err();
    assert!(
        matches!(err, SaeError::NoUsableRows { rows_per_pass } if rows_per_pass == n_rows),
        "{err}"
    );
}
