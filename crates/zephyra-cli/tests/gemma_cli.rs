//! `--model gemma3-270m` through the built binary: fetched by name, tokenized and generated exactly
//! as Hugging Face transformers does (`testdata/gemma3/tokens.json`).

#[path = "../../../testdata/testdata.rs"]
mod testdata;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn zephyra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zephyra"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("zephyra runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn reference() -> Value {
    testdata::json("gemma3/tokens.json")
}

#[test]
fn fetch_model_by_name_prints_the_cached_file() {
    let out = on_gemma("fetch-model", &[]);
    let path = PathBuf::from(out.trim());
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("gemma-3-270m-q4_k_m.gguf")
    );
    assert!(path.is_file());
}

#[test]
fn tokenize_and_greedy_generate_match_transformers() {
    let reference = reference();
    let text = &reference["texts"][12];
    let out = on_gemma(
        "tokenize",
        &["--text", text["text"].as_str().expect("text")],
    );
    let got: Value = serde_json::from_str(out.trim()).expect("tokenize prints JSON");
    assert_eq!(got["ids"], text["ids"]);

    let greedy = &reference["greedy"];
    let prompt = greedy["prompt"].as_str().expect("prompt");
    let out = on_gemma("generate", &["--prompt", prompt, "--max-tokens", "16"]);
    assert_eq!(
        out.trim_end_matches('\n'),
        greedy["text"].as_str().expect("text")
    );
}

/// Runs `zephyra ARGS… --quiet` and returns stdout, failing with stderr when it fails.
fn ok(args: &[&str]) -> String {
    stdout(&zephyra(args))
}

/// [`ok`] for `zephyra COMMAND --model gemma3-270m REST…`.
fn on_gemma(command: &str, rest: &[&str]) -> String {
    ok(&[&[command, "--model", "gemma3-270m"], rest].concat())
}

/// The whole pipeline on the real Gemma 3 270M, every step through the binary: harvest → train a small
/// TopK SAE → eval → features → explain. After the harvest no command is told the model: the SAE records
/// it, so eval, features and explain run on Gemma (not the default SmolLM2).
#[test]
fn whole_pipeline_harvest_train_eval_features_explain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (acts, sae) = (path("acts"), path("sae"));
    // Real English prose, in the repository: the README.
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let hook = "blocks.6.hook_resid_post";

    on_gemma(
        "harvest",
        &[
            "--hook", hook, "--tokens", "8192", "--ctx", "64", "--data", corpus, "--out", &acts,
        ],
    );
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("acts/manifest.json")).expect("manifest.json"),
    )
    .expect("manifest JSON");
    assert_eq!(manifest["d"], 640, "Gemma 3 270M's residual width");
    assert_eq!(manifest["hook"], hook);
    assert_eq!(manifest["tokenizer"]["vocab_size"], 262_144);
    // 128 contexts of 64: position 0 (BOS) of each context goes, and nothing else is lost silently.
    let counts = &manifest["exclusion"]["counts"];
    assert_eq!(counts["total"], 8192);
    assert_eq!(counts["position_zero"], 128);
    let kept = manifest["n_rows"].as_u64().expect("n_rows");
    assert_eq!(Some(kept), counts["kept"].as_u64());
    assert!(kept >= 8000, "kept {kept} of 8192 rows");

    let summary: Value = serde_json::from_str(
        ok(&[
            "train",
            "--acts",
            &acts,
            "--arch",
            "topk",
            "--k",
            "16",
            "--expansion",
            "2",
            "--tokens",
            "40000",
            "--batch-rows",
            "512",
            "--out",
            &sae,
            "--json",
        ])
        .trim(),
    )
    .expect("train --json prints one JSON object");
    assert_eq!(summary["d_in"], 640);
    assert_eq!(summary["d_sae"], 1280);
    assert_eq!(summary["finished"], true);

    let report: Value = serde_json::from_str(
        ok(&[
            "eval",
            "--sae",
            &sae,
            "--tokens",
            "4096",
            "--ce-tokens",
            "512",
            "--ctx",
            "64",
            "--data",
            corpus,
            "--json",
        ])
        .trim(),
    )
    .expect("eval --json prints one JSON object");
    let fig = |path: &[&str]| {
        let mut v = &report["figures"];
        for key in path {
            v = &v[*key];
        }
        v.as_f64()
            .unwrap_or_else(|| panic!("eval report lacks {path:?}: {report}"))
    };
    assert!(
        report.to_string().contains("gemma-3-270m"),
        "eval ran on Gemma: {report}"
    );
    // TopK keeps exactly k latents per row.
    assert!((fig(&["sparsity", "l0"]) - 16.0).abs() < 1e-6, "{report}");
    let fve = fig(&["reconstruction", "fve"]);
    assert!(fve > 0.4 && fve < 1.0, "FVE {fve}");
    // Gemma's next-token CE on this README is a few nats (4.7 at ctx 64 with BOS first in each context;
    // 7.5 without: the packing must give Gemma its BOS), far below a uniform guess over 262,144 tokens
    // (12.48 nats); splicing the SAE costs some of it, zero-ablating the hook much more.
    let clean = fig(&["downstream", "ce_clean"]);
    let spliced = fig(&["downstream", "ce_sae"]);
    let zero = fig(&["downstream", "ce_zero_abl"]);
    assert!(clean > 0.5 && clean < 6.0, "CE clean {clean}");
    assert!(
        spliced > clean - 0.05 && spliced < zero,
        "CE {clean} / {spliced} / {zero}"
    );

    ok(&[
        "features", "--sae", &sae, "--tokens", "4096", "--ctx", "64", "--data", corpus,
    ]);
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("sae/features/index.json")).expect("index.json"),
    )
    .expect("index JSON");
    assert_eq!(index["hook"], hook, "{index}");

    let text = "The capital of France is Paris.";
    let ids: Value = serde_json::from_str(on_gemma("tokenize", &["--text", text]).trim())
        .expect("tokenize prints JSON");
    let n_tokens = ids["ids"].as_array().expect("ids").len();
    let lines: Vec<Value> = ok(&["explain", "--sae", &sae, "--text", text, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), n_tokens, "one line per Gemma token");
    // Every token but the excluded BOS has its top features, each a valid latent.
    for line in lines.iter().filter(|l| l["excluded"] == false) {
        let features = line["features"].as_array().expect("features");
        assert!(!features.is_empty(), "{line}");
        assert!(features
            .iter()
            .all(|f| f["id"].as_u64().is_some_and(|id| id < 1280)));
    }
}
