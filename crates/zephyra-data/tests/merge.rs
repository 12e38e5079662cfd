//! Merging the rank stores of a sharded harvest: each rank's owned shards (shard `i` belongs to rank
//! `i mod N`) are moved into one store identical, byte for byte, to the one-process harvest.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use zephyra_data::store::merge_rank_stores;
use zephyra_data::ActivationStore;
use zephyra_lm::HookPoint;

fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rank_stores_merge_into_the_one_process_store() {
    let root = tempfile::tempdir().unwrap();
    let hooks = vec![HookPoint::ResidPre(0), HookPoint::ResidPre(1)];
    let whole = tiny_store(root.path(), "whole", hooks.clone(), 20);
    let n_shards = ActivationStore::open(whole.join("blocks.1.hook_resid_pre"))
        .unwrap()
        .n_shards();
    assert_eq!(n_shards, 5);

    // Three ranks, each holding only the shards it owns (its manifest lists them all, as a rank's does).
    let world = 3;
    let ranks: Vec<PathBuf> = (0..world)
        .map(|r| root.path().join(format!("out.rank-{r}-of-{world}")))
        .collect();
    for (r, dir) in ranks.iter().enumerate() {
        for (rel, bytes) in tree(&whole) {
            let owned = rel
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("shard-"))
                .and_then(|n| n.strip_suffix(".safetensors"))
                .map(|i| i.parse::<usize>().unwrap() % world == r);
            if owned != Some(false) {
                std::fs::create_dir_all(dir.join(&rel).parent().unwrap()).unwrap();
                std::fs::write(dir.join(&rel), bytes).unwrap();
            }
        }
    }
    let out = root.path().join("out");
    let merged = merge_rank_stores(&out, &ranks, &hooks).unwrap();
    assert_eq!(merged.n_contexts, 20);
    assert_eq!(
        merged.stores,
        vec![
            out.join("blocks.0.hook_resid_pre"),
            out.join("blocks.1.hook_resid_pre")
        ]
    );
    assert_eq!(tree(&out), tree(&whole));
    assert!(
        ranks.iter().all(|r| !r.exists()),
        "the rank stores are removed"
    );

    // A rank that did not write a shard it owns is an error naming it.
    let again: Vec<PathBuf> = (0..2)
        .map(|r| root.path().join(format!("again-{r}")))
        .collect();
    for dir in &again {
        for (rel, bytes) in tree(&whole) {
            std::fs::create_dir_all(dir.join(&rel).parent().unwrap()).unwrap();
            std::fs::write(dir.join(&rel), bytes).unwrap();
        }
    }
    let m1 = again[1].join("blocks.0.hook_resid_pre");
    let mut m = zephyra_data::store::Manifest::read(&m1).unwrap();
    m.shards.truncate(1);
    m.write(&m1).unwrap();
    let e = merge_rank_stores(&root.path().join("out2"), &again, &hooks).unwrap_err();
    assert!(
        e.to_string().contains("rank 1 did not write shard 1"),
        "{e}"
    );
}
