//! The Gemma 3 270M oracle: Hugging Face transformers' tokens, activations and greedy continuation,
//! trimmed into `testdata/gemma3/` (see its README). Tests fail when a file is missing.
#![allow(dead_code)] // each test binary uses part of this module

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use zephyra_lm::{ForwardOutput, HookPoint, Hooks, Llama, Logits, Tensor};

/// `testdata/gemma3` at the repository root.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/gemma3")
}

/// The real model file, fetched into the cache on first use.
pub fn gemma_path() -> PathBuf {
    zephyra_lm::fetch::resolve_model("gemma3-270m").expect("fetching Gemma 3 270M")
}

/// The model, loaded once per test binary.
pub fn gemma() -> &'static Llama {
    static MODEL: OnceLock<Llama> = OnceLock::new();
    MODEL.get_or_init(|| Llama::load_gguf(gemma_path()).expect("loading Gemma 3 270M"))
}

#[derive(Debug, Deserialize)]
pub struct Text {
    pub text: String,
    pub ids: Vec<u32>,
    pub decoded: String,
}

#[derive(Debug, Deserialize)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
    pub mean_ce: f64,
    pub hooks: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Greedy {
    pub prompt: String,
    pub ids: Vec<u32>,
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub texts: Vec<Text>,
    pub prompts: Vec<Prompt>,
    pub greedy: Greedy,
}

/// `tokens.json`.
pub fn reference() -> Reference {
    let path = testdata().join("tokens.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); it is committed", path.display()));
    serde_json::from_str(&text).expect("tokens.json parses")
}

/// Every tensor of the trimmed `activations.safetensors`.
pub fn tensors() -> HashMap<String, Tensor> {
    let path = testdata().join("activations.safetensors");
    assert!(
        path.is_file(),
        "{} is missing; it is committed",
        path.display()
    );
    candle_core::safetensors::load(&path, &candle_core::Device::Cpu).expect("reading the oracle")
}

pub fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 tensor")
}

pub fn i64s(t: &Tensor) -> Vec<i64> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<i64>())
        .expect("i64 tensor")
}

/// Relative error ‖a − b‖ / ‖b‖ of the whole slices and the worst of their `width`-wide rows.
pub fn rel_errs(a: &[f32], b: &[f32], width: usize) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let sq = |a: &[f32], b: &[f32]| {
        a.iter().zip(b).fold((0.0f64, 0.0f64), |(n, d), (&x, &y)| {
            let (x, y) = (f64::from(x), f64::from(y));
            (n + (x - y) * (x - y), d + y * y)
        })
    };
    let (num, den) = sq(a, b);
    let worst = a
        .chunks(width)
        .zip(b.chunks(width))
        .map(|(a, b)| {
            let (n, d) = sq(a, b);
            (n / d).sqrt()
        })
        .fold(0.0, f64::max);
    ((num / den).sqrt(), worst)
}

/// One kept hook of an oracle prompt: our activations at the oracle's positions and the oracle's.
pub struct HookRows {
    pub name: String,
    pub got: Vec<f32>,
    pub want: Vec<f32>,
}

/// Runs `model` on oracle prompt `p` (`ids`) capturing every hook the oracle kept for it (at least 5),
/// and pairs our rows at the oracle's positions with the oracle's; also returns the forward's output.
pub fn kept_hook_rows(
    model: &Llama,
    oracle: &HashMap<String, Tensor>,
    p: usize,
    ids: &[u32],
    logits: Logits,
) -> (Vec<HookRows>, ForwardOutput) {
    let d = model.config().d_model;
    let prefix = format!("prompt{p}.");
    let positions: Vec<usize> = i64s(&oracle[&format!("{prefix}positions")])
        .iter()
        .map(|&i| i as usize)
        .collect();
    let hooks: Vec<(String, HookPoint)> = oracle
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .filter(|k| k.starts_with("blocks."))
        .map(|k| (k.to_string(), model.hook_point(k).expect("known hook")))
        .collect();
    assert!(hooks.len() >= 5, "prompt {p}: {} hooks", hooks.len());
    let mut capture = Hooks::capturing(hooks.iter().map(|h| h.1));
    let out = model
        .forward(&[ids], &mut capture, logits)
        .expect("forward");
    let rows = hooks
        .into_iter()
        .map(|(name, hook)| {
            let all = f32s(out.activations.get(hook).expect("captured"));
            let got = positions
                .iter()
                .flat_map(|&s| all[s * d..(s + 1) * d].iter().copied())
                .collect();
            let want = f32s(&oracle[&format!("{prefix}{name}")]);
            HookRows { name, got, want }
        })
        .collect();
    (rows, out)
}
