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
    let out = stdout(&zephyra(&["fetch-model", "--model", "gemma3-270m"]));
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
    let out = stdout(&zephyra(&[
        "tokenize",
        "--model",
        "gemma3-270m",
        "--text",
        text["text"].as_str().expect("text"),
    ]));
    let got: Value = serde_json::from_str(out.trim()).expect("tokenize prints JSON");
    assert_eq!(got["ids"], text["ids"]);

    let greedy = &reference["greedy"];
    let out = stdout(&zephyra(&[
        "generate",
        "--model",
        "gemma3-270m",
        "--prompt",
        greedy["prompt"].as_str().expect("prompt"),
        "--max-tokens",
        "16",
    ]));
    assert_eq!(
        out.trim_end_matches('\n'),
        greedy["text"].as_str().expect("text")
    );
}
