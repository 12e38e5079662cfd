//! `zephyra train --model … --hook A --hook B --out DIR`: one SAE per hook from one forward pass per batch.
//! Each SAE is byte for byte the SAE trained alone (`train --acts STORE/<hook>`) on the rows of a store
//! harvested at both hooks (one exclusion verdict per row); a killed multi-dictionary run resumes to the
//! uninterrupted one; `--resume` counts a flag typed with its default value as given.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{args_with, fails, ok, run, tiny_with_babble, wait_until, zephyra};

const HOOKS: [&str; 2] = ["blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"];
const SHAPE: &str = "--ctx 32 --shard-contexts 8 --batch-contexts 8";
const TRAIN: &str = "train --arch topk --k 8 --expansion 2 --batch-rows 128 --tokens 2048 \
                     --threads 1 --seed 11 --shuffle-buffer 1024 --checkpoint-every 512 --quiet";

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("sae_weights.safetensors")).unwrap()
}

fn multi_args(tiny: &Path, corpus: &Path, out: &Path) -> Vec<String> {
    args_with(
        &format!("{TRAIN} {SHAPE} --hook {} --hook {}", HOOKS[0], HOOKS[1]),
        &[("--model", tiny), ("--data", corpus), ("--out", out)],
    )
}

#[test]
fn several_hooks_train_the_saes_each_would_train_alone_and_resume_exactly() {
    let (tiny, tmp, corpus) = tiny_with_babble();
    let multi = tmp.path().join("multi");
    let text = ok(run(multi_args(&tiny.path, &corpus, &multi)));
    assert_eq!(text.lines().count(), 2, "{text}");

    // Alone: a store of both hooks (the same contexts, the same verdict), one SAE trained from each.
    let store = tmp.path().join("store");
    ok(run(args_with(
        &format!(
            "harvest --hook {} --hook {} --tokens 16896 --seed 11 {SHAPE} --quiet",
            HOOKS[0], HOOKS[1]
        ),
        &[
            ("--model", &tiny.path),
            ("--data", &corpus),
            ("--out", &store),
        ],
    )));
    for hook in HOOKS {
        let alone = tmp.path().join(format!("alone-{hook}"));
        ok(run(args_with(
            TRAIN,
            &[("--acts", &store.join(hook)), ("--out", &alone)],
        )));
        let together = multi.join(hook);
        assert!(
            weights(&together) == weights(&alone),
            "{hook}: trained together differs from trained alone"
        );
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(together.join("cfg.json")).unwrap()).unwrap();
        assert_eq!(cfg["metadata"]["hook_name"], hook);
        assert!(together.join("summary.json").is_file());
    }
    assert!(weights(&multi.join(HOOKS[0])) != weights(&multi.join(HOOKS[1])));

    // Killed after the first checkpoints, resumed: the same SAEs as the uninterrupted run.
    let part = tmp.path().join("part");
    let mut args = multi_args(&tiny.path, &corpus, &part);
    args.extend(["--step-delay-ms".to_string(), "150".to_string()]);
    let mut child = zephyra()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpointed = || {
        HOOKS
            .iter()
            .all(|h| part.join(h).join("training_state.safetensors").is_file())
    };
    wait_until(
        "the first checkpoints",
        Duration::from_secs(120),
        checkpointed,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !part.join(HOOKS[0]).join("summary.json").exists(),
        "killed before the end"
    );
    // A flag typed with its default value is given: refused, as it differs from the recorded 8.
    let e = fails(run(args_with(
        "train --shard-contexts 256",
        &[("--resume", &part)],
    )));
    assert!(e.contains("--shard-contexts: 8 → 256"), "{e}");
    ok(run(args_with("train --quiet", &[("--resume", &part)])));
    for hook in HOOKS {
        assert!(
            weights(&part.join(hook)) == weights(&multi.join(hook)),
            "{hook}: the resumed run differs from the uninterrupted one"
        );
    }
}

/// `--transcoder --layers all --skip`: one skip transcoder per layer of the tiny model (2 blocks), each
/// reading `ln2.hook_normalized` and predicting `hook_mlp_out` of its layer, saved in SAELens' layout.
#[test]
fn one_transcoder_per_layer_from_one_forward_pass() {
    let (tiny, tmp, corpus) = tiny_with_babble();
    let out = tmp.path().join("tc");
    let text = ok(run(args_with(
        &format!(
            "train --transcoder --layers all --skip --arch topk --k 4 --expansion 2 --batch-rows 64 \
             --tokens 640 --threads 1 --seed 3 --shuffle-buffer 1024 {SHAPE} --quiet --json"
        ),
        &[
            ("--model", &tiny.path),
            ("--data", &corpus),
            ("--out", &out),
        ],
    )));
    assert_eq!(text.lines().count(), 2, "one summary per layer: {text}");
    for l in 0..2 {
        let dir = out.join(format!("layer-{l}"));
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap();
        assert_eq!(cfg["architecture"], "topk_skip_transcoder", "{cfg}");
        assert_eq!(cfg["d_in"], cfg["d_out"]);
        assert_eq!(
            cfg["metadata"]["hook_name"],
            format!("blocks.{l}.ln2.hook_normalized")
        );
        assert_eq!(
            cfg["metadata"]["hook_name_out"],
            format!("blocks.{l}.hook_mlp_out")
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["finished"], true, "{summary}");
    }
    assert!(weights(&out.join("layer-0")) != weights(&out.join("layer-1")));
    // A layer the model does not have is refused before anything is written.
    let e = fails(run(args_with(
        "train --transcoder --layers 0,5 --tokens 640",
        &[
            ("--model", &tiny.path),
            ("--data", &corpus),
            ("--out", &tmp.path().join("bad")),
        ],
    )));
    assert!(e.contains("layer 5"), "{e}");
    assert!(!tmp.path().join("bad").exists());
}
