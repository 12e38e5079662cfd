//! Memory: training on an activation store more than 10x larger than the shuffle buffer holds one window
//! of the store at a time, and harvesting holds a couple of shards, whatever the store's size.
//!
//! Peak resident memory is measured on the release binary (its own `VmHWM`, reported in the `--json`
//! summary, and polled from `/proc/PID/status` while it runs). The bound is
//! `buffer + model + SAE (+ Adam + batch) + allowance`, where the allowance (binary, runtime, one shard
//! being decoded) is the peak of the same training on a 10x smaller store with a one-shard buffer, plus
//! [`SLACK`] for the allocator. Training from a store loads no model; the SAE, Adam and the batch are the
//! same in every run, so they are inside the allowance. A reader that loaded the whole store (≈ 210 MiB)
//! would break both bounds by far.

mod common;

use std::path::Path;

use common::{args_with, dir_bytes, ok, output_with_polled_peak, write_babble, zephyra};

const HOOK: &str = "blocks.1.hook_resid_pre";
const MIB: u64 = 1 << 20;
/// Allocator and measurement slack on top of the baseline.
const SLACK: u64 = 8 * MIB;
/// Harvesting's slack: its memory grows until the packer's context shuffle buffer (4096 contexts) and the
/// allocator's per-thread arenas are warm (measured: 57, 66, 67, 67 MiB for 10, 50, 100, 200 shards).
const HARVEST_SLACK: u64 = 16 * MIB;
/// Rows of the large shuffle buffer: 16 MiB of float32 at d = 64.
const BUFFER_ROWS: u64 = 65_536;

/// Runs `zephyra ARGS --quiet --json`; returns its summary and its peak resident bytes: the larger of its
/// own report and the polled high-water mark.
fn measured(args: Vec<String>) -> (serde_json::Value, u64) {
    let mut cmd = zephyra();
    cmd.args(args).args(["--quiet", "--json"]);
    let (out, polled) = output_with_polled_peak(cmd);
    let json: serde_json::Value = serde_json::from_str(ok(out).trim()).unwrap();
    let reported = (json["peak_rss_mb"]
        .as_f64()
        .expect("the summary reports peak_rss_mb")
        * MIB as f64) as u64;
    assert!(
        polled <= reported + MIB,
        "polled {polled} B above the reported peak {reported} B"
    );
    (json, reported.max(polled))
}

fn harvest(model: &Path, data: &Path, tokens: u64, out: &Path) -> (serde_json::Value, u64) {
    measured(args_with(
        &format!(
            "harvest --hook {HOOK} --tokens {tokens} --ctx 128 --shard-contexts 64 --batch-contexts 16 \
             --threads 2"
        ),
        &[("--model", model), ("--data", data), ("--out", out)],
    ))
}

fn train(store: &Path, buffer_rows: u64, tokens: u64, out: &Path) -> (serde_json::Value, u64) {
    measured(args_with(
        &format!(
            "train --shuffle-buffer {buffer_rows} --tokens {tokens} --arch topk --k 4 \
             --expansion 1 --batch-rows 4096 --threads 2"
        ),
        &[("--acts", store), ("--out", out)],
    ))
}

#[test]
fn peak_memory_is_one_window_not_the_store() {
    let tiny = zephyra_lm::testing::tiny_llama(6).unwrap();
    let d = tiny.config.d_model as u64;
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_babble(&corpus, 8, 140_000, 2);

    // Harvesting: a store of 100 shards costs no more memory than one of 10 (shards are written as they
    // fill; two are in memory at a time).
    let small = tmp.path().join("small");
    let (_, harvest_small) = harvest(&tiny.path, &corpus, 81_920, &small);
    let store = tmp.path().join("store");
    let (summary, harvest_big) = harvest(&tiny.path, &corpus, 819_200, &store);
    assert_eq!(
        summary["corpus_exhausted"], false,
        "the corpus is too small for the test"
    );
    let n_rows = summary["n_rows"][0].as_u64().unwrap();
    let store_bytes = dir_bytes(&store);
    let buffer_bytes = BUFFER_ROWS * d * 4;
    assert!(
        n_rows >= 10 * BUFFER_ROWS && store_bytes >= 10 * buffer_bytes,
        "the store ({n_rows} rows, {store_bytes} B) must be 10x the buffer"
    );
    assert!(
        harvest_big <= harvest_small + HARVEST_SLACK,
        "harvesting {} MiB peaked at {} MiB, a 10x smaller store at {} MiB",
        store_bytes / MIB,
        harvest_big / MIB,
        harvest_small / MIB
    );

    // Training over the whole store and into its second epoch. The allowance: the same training on the
    // 10x smaller store with a one-shard buffer.
    let one_shard = 64 * 128;
    let tokens = n_rows + n_rows / 4;
    let (_, base) = train(&small, one_shard, tokens, &tmp.path().join("base"));
    let (_, big_store) = train(&store, one_shard, tokens, &tmp.path().join("one-shard"));
    assert!(
        big_store <= base + SLACK,
        "a one-shard buffer over a {} MiB store peaked at {} MiB, over a 10x smaller store at {} MiB",
        store_bytes / MIB,
        big_store / MIB,
        base / MIB
    );
    let (summary, big) = train(&store, BUFFER_ROWS, tokens, &tmp.path().join("big"));
    assert_eq!(summary["finished"], true, "{summary}");
    assert_eq!(summary["tokens"].as_u64(), Some(tokens / 4096 * 4096));
    let bound = base + buffer_bytes + SLACK;
    assert!(
        big <= bound,
        "training with a {} MiB buffer on a {} MiB store peaked at {} MiB > allowance {} MiB + buffer + {} MiB",
        buffer_bytes / MIB,
        store_bytes / MIB,
        big / MIB,
        base / MIB,
        SLACK / MIB
    );
    // And the measurement sees the buffer: the larger window shows up in the peak.
    assert!(
        big >= base + buffer_bytes / 2,
        "a {} MiB buffer should raise the peak above the allowance ({} MiB vs {} MiB)",
        buffer_bytes / MIB,
        big / MIB,
        base / MIB
    );
    eprintln!(
        "peak RSS: harvest {} / {} MiB (10 / 100 shards, {} MiB); train: allowance {} MiB, one-shard \
         buffer {} MiB, {} MiB buffer {} MiB",
        harvest_small / MIB,
        harvest_big / MIB,
        store_bytes / MIB,
        base / MIB,
        big_store / MIB,
        buffer_bytes / MIB,
        big / MIB
    );
}
