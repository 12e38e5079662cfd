//! Training straight from the model (`zephyra train --model … --data … --hook …`, harvesting on a
//! background thread into the shuffle buffer) trains the same SAE, byte for byte, as `zephyra harvest`
//! followed by `zephyra train --acts STORE`, for the same seed and options: the same contexts, the same
//! exclusion of attention sinks, the same rows for the input-scale and `b_dec` estimate, and the same
//! shuffle, window by window.

mod common;

use std::path::Path;

use common::{args_with, ok, run, tiny_with_babble, write_babble};

const HOOK: &str = "blocks.1.hook_resid_pre";
/// Harvest options both routes share (the seed is `train`'s): shards of 8 contexts of 32 tokens.
const SHAPE: &str = "--ctx 32 --shard-contexts 8";

/// `train` with `tokens` rows of 128 per step and a buffer of `shuffle_buffer` rows, `source` flags last.
fn train(out: &Path, tokens: u64, shuffle_buffer: u64, source: Vec<String>) -> serde_json::Value {
    let mut args = args_with(
        &format!(
            "train --arch topk --k 8 --expansion 4 --batch-rows 128 --tokens {tokens} --threads 1 \
             --seed 11 --shuffle-buffer {shuffle_buffer} --quiet --json"
        ),
        &[("--out", out)],
    );
    args.extend(source);
    serde_json::from_str(ok(run(args)).trim()).unwrap()
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("sae_weights.safetensors")).unwrap()
}

fn cfg(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap()
}

#[test]
fn streaming_from_the_model_trains_the_sae_training_from_the_store_does() {
    let (tiny, tmp, corpus) = tiny_with_babble();

    // The store: more contexts (528) than either training below reads.
    let store = tmp.path().join("store");
    let text = ok(run(args_with(
        &format!("harvest --hook {HOOK} --tokens 16896 --batch-contexts 8 --seed 11 {SHAPE} --quiet --json"),
        &[
            ("--model", &tiny.path),
            ("--data", &corpus),
            ("--out", &store),
        ],
    )));
    let harvest: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        harvest["corpus_exhausted"], false,
        "the corpus is too small for the test"
    );
    assert_eq!(harvest["n_contexts"], 528);
    let from_store = || args_with("", &[("--acts", &store)]);
    let streamed = || {
        args_with(
            &format!("--hook {HOOK} --batch-contexts 8 {SHAPE}"),
            &[("--model", &tiny.path), ("--data", &corpus)],
        )
    };

    // Windows of the 1024-row buffer hold 4 shards. 12,160 rows (95 steps) end inside window 12, so the
    // streamed harvest has to produce that window whole, as the store has it (a last window cut short is
    // shuffled differently). 2,048 rows (16 steps) are fewer than the 8,192 rows of the input-scale and
    // b_dec estimate, which the streamed harvest must produce as well.
    for tokens in [12_160, 2_048] {
        let (a_dir, b_dir) = (
            tmp.path().join(format!("from-store-{tokens}")),
            tmp.path().join(format!("streamed-{tokens}")),
        );
        let a = train(&a_dir, tokens, 1024, from_store());
        let b = train(&b_dir, tokens, 1024, streamed());
        for s in [&a, &b] {
            assert_eq!(s["tokens"], tokens, "{s}");
            assert_eq!(s["finished"], true, "{s}");
        }
        assert_eq!(
            a["input_scale"], b["input_scale"],
            "{tokens} rows: the normalisation estimate differs"
        );
        assert!(
            weights(&a_dir) == weights(&b_dir),
            "{tokens} rows: sae_weights.safetensors differs between training from the store and \
             streaming from the model"
        );
        // The configuration too, but for the store's path: both record model, hook and context size.
        let (mut ca, cb) = (cfg(&a_dir), cfg(&b_dir));
        let acts = ca["metadata"].as_object_mut().unwrap().remove("acts");
        assert_eq!(acts, Some(serde_json::json!(store)));
        assert_eq!(ca, cb);
        assert_eq!(cb["metadata"]["hook_name"], HOOK);
        assert_eq!(cb["metadata"]["context_size"], 32);
        assert_eq!(cb["metadata"]["model_name"], "tiny-llama.gguf");
    }

    // The comparison can fail: another shuffle buffer (so another row order) gives other weights.
    let other = tmp.path().join("other-buffer");
    train(&other, 12_160, 512, from_store());
    assert!(weights(&other) != weights(&tmp.path().join("from-store-12160")));
}

/// A corpus smaller than `--tokens` is read again (a new shuffle of the same rows each pass): the run trains
/// on all the rows it was asked for, on one dictionary and on several from one forward pass, and says so.
#[test]
fn a_corpus_smaller_than_tokens_is_read_again() {
    let (tiny, tmp, _) = tiny_with_babble();
    let small = tmp.path().join("small");
    write_babble(&small, 1, 3000, 5);
    let harvest: serde_json::Value = serde_json::from_str(
        ok(run(args_with(
            &format!("harvest --hook {HOOK} --tokens 100000 {SHAPE} --quiet --json"),
            &[
                ("--model", &tiny.path),
                ("--data", &small),
                ("--out", &tmp.path().join("all-of-it")),
            ],
        )))
        .trim(),
    )
    .unwrap();
    assert_eq!(harvest["corpus_exhausted"], true, "{harvest}");
    let rows = harvest["n_rows"][0].as_u64().unwrap();
    let tokens = (3 * rows).next_multiple_of(128);
    for (name, hooks) in [
        ("one", format!("--hook {HOOK}")),
        ("two", format!("--hook {HOOK} --hook blocks.0.hook_mlp_out")),
    ] {
        let out = tmp.path().join(name);
        let args = args_with(
            &format!(
                "train --arch topk --k 8 --expansion 4 --batch-rows 128 --tokens {tokens} --threads 1 \
                 --seed 3 --shuffle-buffer 512 {hooks} {SHAPE} --quiet --json"
            ),
            &[("--model", &tiny.path), ("--data", &small), ("--out", &out)],
        );
        let text = ok(run(args));
        let summaries: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(!summaries.is_empty(), "{name}: no summary");
        for s in summaries {
            assert_eq!(s["finished"], true, "{name}: {s}");
            assert_eq!(s["tokens"], tokens, "{name}: {s}");
        }
    }
}
