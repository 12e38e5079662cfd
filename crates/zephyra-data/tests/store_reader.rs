//! The shuffle-buffer reader: every row once per epoch, bounded memory, resumable cursor, and the same rows
//! in the same order from a store as from on-the-fly harvesting.

mod common;

use std::collections::HashMap;

use common::*;
use zephyra_data::harvest::{harvest, model_info, StreamFeed};
use zephyra_data::store::StoreDtype;
use zephyra_data::{ActivationStore, ShuffleReader};
use zephyra_lm::HookPoint;

fn key(row: &[f32]) -> Vec<u32> {
    row.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn store_and_stream_readers() {
    let (t, model, tok, data) = tiny_with_corpus(5);
    let out = tempfile::tempdir().unwrap();
    let (ctx, per_shard) = (16, 4);
    let cfg = config(vec![HookPoint::ResidPost(1)], ctx, 44 * 16, per_shard, 3);
    let info = model_info(&t.path, model.as_ref()).unwrap();
    harvest(
        pipeline(
            model.clone(),
            tok.clone(),
            corpus_of(data.path()),
            cfg.clone(),
        ),
        info,
        1,
        out.path(),
        &mut |_| {},
    )
    .unwrap();
    let store = ActivationStore::open(out.path()).unwrap();
    let (d, n) = (store.d(), store.n_rows() as usize);
    assert_eq!(store.n_shards(), 11);
    // Every stored row, counted (the tiny model gives distinct rows except for repeated prefixes).
    let mut expected: HashMap<Vec<u32>, usize> = HashMap::new();
    for s in 0..store.n_shards() {
        for row in store.read_shard(s).unwrap().activations.chunks(d) {
            *expected.entry(key(row)).or_default() += 1;
        }
    }
    // Buffer of 2 shards' worth of rows: the store is > 5x larger than the buffer.
    let buffer_rows = 2 * per_shard * ctx;
    assert!(n > 5 * buffer_rows);
    let mut reader = ShuffleReader::from_store(store.clone(), buffer_rows, 11, Some(2));
    let mut out_rows = vec![0f32; 7 * d];
    let mut seen: Vec<Vec<u32>> = Vec::new();
    let mut max_resident = 0;
    let mut cursor_at_100 = None;
    loop {
        let got = reader.next_rows(&mut out_rows).unwrap();
        max_resident = max_resident.max(reader.resident_rows());
        if got == 0 {
            break;
        }
        for row in out_rows[..got * d].chunks(d) {
            seen.push(key(row));
        }
        if cursor_at_100.is_none() && seen.len() >= 100 {
            cursor_at_100 = Some((reader.cursor(), seen.len()));
        }
    }
    assert!(
        max_resident <= buffer_rows,
        "{max_resident} rows resident > buffer {buffer_rows}"
    );
    assert_eq!(seen.len(), 2 * n, "two epochs");
    for epoch in seen.chunks(n) {
        let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
        for k in epoch {
            *counts.entry(k.clone()).or_default() += 1;
        }
        assert_eq!(counts, expected, "each row exactly once per epoch");
    }
    assert_ne!(seen[..n], seen[n..], "epochs are shuffled differently");
    // Not the store order: the rows are shuffled within windows.
    let first_shard = store.read_shard(0).unwrap();
    let in_order: Vec<Vec<u32>> = first_shard.activations.chunks(d).map(key).collect();
    assert_ne!(seen[..in_order.len()], in_order[..]);

    // Seeking to a saved cursor continues exactly.
    let (cursor, at) = cursor_at_100.unwrap();
    let mut again = ShuffleReader::from_store(store.clone(), buffer_rows, 11, Some(2));
    again.seek(cursor).unwrap();
    let mut rest = Vec::new();
    while let Ok(got) = again.next_rows(&mut out_rows) {
        if got == 0 {
            break;
        }
        rest.extend(out_rows[..got * d].chunks(d).map(key));
    }
    assert_eq!(rest, seen[at..]);

    // On the fly: the same rows in the same order as reading the store (epoch 0), without any disk.
    let feed = StreamFeed::new(
        pipeline(model.clone(), tok.clone(), corpus_of(data.path()), cfg),
        buffer_rows,
        2,
    )
    .unwrap();
    let mut stream = ShuffleReader::new(Box::new(feed), 11, Some(1));
    let mut streamed = Vec::new();
    loop {
        let got = stream.next_rows(&mut out_rows).unwrap();
        if got == 0 {
            break;
        }
        streamed.extend(out_rows[..got * d].chunks(d).map(key));
        assert!(stream.resident_rows() <= buffer_rows);
    }
    assert_eq!(streamed.len(), n);
    assert!(
        streamed == seen[..n],
        "on-the-fly rows differ from the store's"
    );
}

/// The reader's path (`read_activations_into`: only the activations tensor, read in pieces) gives exactly
/// the activations of `read_shard` (the whole file parsed), for float32 and bfloat16 stores.
#[test]
fn streamed_activations_equal_the_parsed_shard() {
    let (t, model, tok, data) = tiny_with_corpus(5);
    let info = model_info(&t.path, model.as_ref()).unwrap();
    for dtype in [StoreDtype::Float32, StoreDtype::Bfloat16] {
        let out = tempfile::tempdir().unwrap();
        let mut cfg = config(vec![HookPoint::ResidPost(1)], 16, 12 * 16, 4, 3);
        cfg.dtype = dtype;
        harvest(
            pipeline(model.clone(), tok.clone(), corpus_of(data.path()), cfg),
            info.clone(),
            1,
            out.path(),
            &mut |_| {},
        )
        .unwrap();
        let store = ActivationStore::open(out.path()).unwrap();
        assert_eq!(store.n_shards(), 3);
        let mut window = vec![1.5f32; 3]; // appended to, not overwritten
        for s in 0..store.n_shards() {
            let parsed = store.read_shard(s).unwrap().activations;
            let before = window.len();
            let rows = store.read_activations_into(s, &mut window).unwrap();
            assert_eq!(rows * store.d(), parsed.len());
            assert!(window[before..] == parsed[..], "{dtype:?} shard {s}");
        }
        assert_eq!(window[..3], [1.5; 3]);
        // A shard cut short is an error, not a panic or short rows.
        let file = out.path().join(&store.manifest().shards[1].file);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 4]).unwrap();
        let err = store.read_activations_into(1, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
