//! A damaged features store is refused when it is opened (truncated, overwritten with random bytes, offsets
//! that do not add up) and a record damaged while the server runs is a clear JSON error, never a 500
//! without a reason or garbage served as `application/json`. A store written before the records hash
//! existed still opens.

mod common;

use std::path::Path;

use axum::http::StatusCode;
use common::{fixture, get, json_of, Fixture};
use serde_json::Value;
use zephyra_analysis::features::store::{INDEX_FILE, RECORDS_FILE};
use zephyra_analysis::features::FeatureStore;
use zephyra_analysis::AnalysisError;
use zephyra_web::{router, AppState};

/// A copy of the fixture's store that a test may damage.
fn copy_store(f: &Fixture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [INDEX_FILE, RECORDS_FILE] {
        std::fs::copy(f.store.dir().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

fn records(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(RECORDS_FILE)).unwrap()
}

/// Deterministic bytes that are not JSON (xorshift).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn refused(dir: &Path, what: &str) -> String {
    match FeatureStore::open(dir) {
        Err(e @ AnalysisError::DamagedStore { .. }) => e.to_string(),
        Err(other) => panic!("{what}: not reported as a damaged store: {other}"),
        Ok(_) => panic!("{what}: the damaged store opened"),
    }
}

#[test]
fn a_damaged_store_is_refused_at_open() {
    let f = fixture();
    let intact = copy_store(&f);
    FeatureStore::open(intact.path()).unwrap();
    let index: Value =
        serde_json::from_slice(&std::fs::read(intact.path().join(INDEX_FILE)).unwrap()).unwrap();
    assert_eq!(
        index["records_sha256"].as_str().map(str::len),
        Some(64),
        "the index records the hash"
    );
    let bytes = records(intact.path());

    let truncated = copy_store(&f);
    std::fs::write(
        truncated.path().join(RECORDS_FILE),
        &bytes[..bytes.len() - 10],
    )
    .unwrap();
    let m = refused(truncated.path(), "truncated");
    assert!(
        m.contains(&format!("{} bytes", bytes.len() - 10)) && m.contains("zephyra features"),
        "{m}"
    );

    let random = copy_store(&f);
    std::fs::write(random.path().join(RECORDS_FILE), random_bytes(bytes.len())).unwrap();
    let m = refused(random.path(), "random bytes");
    assert!(m.contains("SHA-256"), "{m}");

    // One byte changed inside a record, the size intact.
    let flipped = copy_store(&f);
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] = if b[mid] == b'7' { b'8' } else { b'7' };
    std::fs::write(flipped.path().join(RECORDS_FILE), &b).unwrap();
    refused(flipped.path(), "one byte changed");

    // An index whose offsets do not add up.
    let shifted = copy_store(&f);
    let mut ix = index.clone();
    ix["features"][1]["offset"] = (ix["features"][1]["offset"].as_u64().unwrap() + 1).into();
    std::fs::write(shifted.path().join(INDEX_FILE), ix.to_string()).unwrap();
    let m = refused(shifted.path(), "shifted offset");
    assert!(m.contains("summary 1"), "{m}");
}

#[tokio::test]
async fn a_store_without_the_hash_opens_and_a_damaged_record_is_a_json_error() {
    let f = fixture();
    let old = copy_store(&f);
    let mut ix: Value =
        serde_json::from_slice(&std::fs::read(old.path().join(INDEX_FILE)).unwrap()).unwrap();
    ix.as_object_mut().unwrap().remove("records_sha256");
    std::fs::write(old.path().join(INDEX_FILE), ix.to_string()).unwrap();
    // Written before the hash: opens (with a warning), sizes and offsets still checked.
    let store = FeatureStore::open(old.path()).unwrap();
    let app = router(AppState::new(store.clone(), None));
    let j = json_of(&app, get("/api/feature/0"), StatusCode::OK).await;
    assert_eq!(j["id"], 0);

    // Damaged while the server runs: record 0 overwritten with random bytes, the last record cut off.
    let bytes = records(old.path());
    let s0 = &store.index().features[0];
    let mut damaged = bytes.clone();
    damaged[..s0.len as usize].copy_from_slice(&random_bytes(s0.len as usize));
    let last = store.index().features.len() - 1;
    let cut = store.index().features[last].offset as usize + 5;
    std::fs::write(old.path().join(RECORDS_FILE), &damaged[..cut]).unwrap();
    for (uri, what) in [
        ("/api/feature/0", "not valid JSON"),
        (&*format!("/api/feature/{last}"), "incomplete"),
    ] {
        let j = json_of(&app, get(uri), StatusCode::INTERNAL_SERVER_ERROR).await;
        let m = j["error"].as_str().unwrap();
        assert!(
            m.contains("damaged") && m.contains(what) && m.contains("zephyra features"),
            "{uri}: {m}"
        );
        assert!(
            !m.contains(&old.path().display().to_string()),
            "no server path: {m}"
        );
    }
    // The records between still read.
    if last > 1 {
        json_of(&app, get("/api/feature/1"), StatusCode::OK).await;
    }
    assert!(matches!(
        FeatureStore::open(old.path()),
        Err(AnalysisError::DamagedStore { .. })
    ));
}
