//! `zephyra train --acts IN_STORE --target-acts OUT_STORE`: a transcoder from two stores of one harvest.
//!
//! The pairing is checked against an identity of the model, independent of the code under test: zipping
//! `hook_resid_mid` with `hook_mlp_out` the way `train` does gives rows whose sum is `hook_resid_post`
//! of the same token (read from a third store of the same harvest). Stores of different harvests are
//! refused naming what differs; the trained file is a SAELens skip transcoder recording both hooks.

mod common;

use std::path::{Path, PathBuf};

use common::{args_with, fails, ok, run, tiny_with_babble};
use zephyra_data::source::BufferedSource;
use zephyra_data::store::ActivationStore;
use zephyra_sae::train::{ActivationSource, ZipSource};

const HARVEST: &str = "harvest --tokens 8448 --ctx 32 --shard-contexts 8 --batch-contexts 8 \
                       --keep-sinks --json";

/// Harvests `hooks` in one run into `out`; returns the store directories.
fn harvest(model: &Path, corpus: &Path, hooks: &[&str], out: &Path, extra: &str) -> Vec<PathBuf> {
    let mut args = args_with(
        &format!("{HARVEST} {extra}"),
        &[("--model", model), ("--data", corpus), ("--out", out)],
    );
    for h in hooks {
        args.extend(["--hook".to_string(), h.to_string()]);
    }
    let summary: serde_json::Value = serde_json::from_str(ok(run(&args)).trim()).unwrap();
    let stores = summary["stores"].as_array().unwrap();
    stores
        .iter()
        .map(|s| PathBuf::from(s.as_str().unwrap()))
        .collect()
}

fn store(dir: &Path, seed: u64) -> Box<dyn ActivationSource> {
    Box::new(BufferedSource::store(
        ActivationStore::open(dir).unwrap(),
        512,
        seed,
        false,
    ))
}

#[test]
fn zipped_stores_pair_the_same_tokens_and_train_a_skip_transcoder() {
    let (tiny, tmp, corpus) = tiny_with_babble();
    let hooks = [
        "blocks.1.hook_resid_mid",
        "blocks.1.hook_mlp_out",
        "blocks.1.hook_resid_post",
    ];
    let dirs = harvest(&tiny.path, &corpus, &hooks, &tmp.path().join("h"), "");
    let (mid, mlp, post) = (&dirs[0], &dirs[1], &dirs[2]);

    // resid_mid + mlp_out = resid_post, row by row, when read as `train` reads them (same seed).
    let mut zip = ZipSource::new(store(mid, 7), store(mlp, 7)).unwrap();
    let mut truth = store(post, 7);
    let d = truth.d_in();
    let (mut rows, mut want) = (vec![0.0f32; 64 * 2 * d], vec![0.0f32; 64 * d]);
    let mut checked = 0;
    loop {
        let n = zip.next_rows(&mut rows).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(truth.next_rows(&mut want[..n * d]).unwrap(), n);
        for (row, post_row) in rows.chunks(2 * d).zip(want.chunks(d)).take(n) {
            for j in 0..d {
                let sum = row[j] + row[d + j];
                assert!(
                    (sum - post_row[j]).abs() <= 1e-4 * (1.0 + post_row[j].abs()),
                    "row {checked}: resid_mid + mlp_out = {sum}, resid_post = {}",
                    post_row[j]
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} rows");
    // A different read order breaks the identity: the check above is sensitive to the pairing.
    let mut shifted = ZipSource::new(store(mid, 7), store(mlp, 8)).unwrap();
    shifted.next_rows(&mut rows).unwrap();
    let mut truth = store(post, 7);
    truth.next_rows(&mut want).unwrap();
    let off = (0..d).any(|j| (rows[j] + rows[d + j] - want[j]).abs() > 1e-3);
    assert!(off, "another seed gave the same pairing");

    // The CLI trains a skip transcoder on the pair and records both hooks.
    let out = tmp.path().join("tc");
    let train = "train --arch topk --k 4 --expansion 2 --batch-rows 32 --tokens 640 --threads 1 \
                 --shuffle-buffer 512 --skip --json";
    ok(run(args_with(
        train,
        &[("--acts", mid), ("--target-acts", mlp), ("--out", &out)],
    )));
    let tc = zephyra_sae::saelens::load(&out).unwrap();
    assert!(tc.cfg.is_transcoder() && tc.cfg.has_skip());
    assert_eq!((tc.cfg.d_in, tc.cfg.d_out()), (d, d));
    assert_eq!(tc.cfg.metadata.hook_name.as_deref(), Some(hooks[0]));
    assert_eq!(tc.cfg.metadata.hook_name_out.as_deref(), Some(hooks[1]));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["architecture"], "topk_skip_transcoder");

    // Resuming with another target store, or adding --skip to the recorded shape, is refused.
    let err = fails(run(args_with(
        "train",
        &[("--resume", &out), ("--target-acts", post)],
    )));
    assert!(err.contains("--target-acts"), "{err}");
    // The finished run resumes with its own stores (nothing left to do).
    ok(run(args_with(
        "train",
        &[("--resume", &out), ("--acts", mid), ("--target-acts", mlp)],
    )));
}

#[test]
fn stores_of_different_harvests_or_the_same_hook_are_refused() {
    let (tiny, tmp, corpus) = tiny_with_babble();
    let a = harvest(
        &tiny.path,
        &corpus,
        &["blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"],
        &tmp.path().join("a"),
        "",
    );
    let b = harvest(
        &tiny.path,
        &corpus,
        &["blocks.0.hook_mlp_out"],
        &tmp.path().join("b"),
        "--seed 3",
    );
    let train = "train --arch topk --k 4 --expansion 2 --batch-rows 32 --tokens 320 --threads 1";
    let out = tmp.path().join("run");
    let err = fails(run(args_with(
        train,
        &[("--acts", &a[0]), ("--target-acts", &b[0]), ("--out", &out)],
    )));
    assert!(err.contains("seed (0 vs 3)"), "{err}");
    assert!(!out.join("cfg.json").exists());
    let err = fails(run(args_with(
        train,
        &[("--acts", &a[1]), ("--target-acts", &b[0]), ("--out", &out)],
    )));
    assert!(err.contains("seed"), "{err}");
    let err = fails(run(args_with(
        train,
        &[("--acts", &a[1]), ("--target-acts", &a[1]), ("--out", &out)],
    )));
    assert!(err.contains("both `blocks.0.hook_mlp_out`"), "{err}");
}
