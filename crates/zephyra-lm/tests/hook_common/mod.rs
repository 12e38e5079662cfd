//! Shared helpers of the hook-point tests: the four models (tiny Llama, tiny Gemma, SmolLM2,
//! Gemma 3 270M) with a prompt each, captures by hook, and f64 reference arithmetic. A test
//! binary using it declares `mod common; mod gemma_common; mod hook_common;`.
#![allow(dead_code)] // each test binary uses part of this module

use std::collections::HashMap;

use zephyra_lm::testing::{tiny_gemma, tiny_llama};
use zephyra_lm::{HookPoint, Hooks, Llama, Logits};

use crate::{common, gemma_common};

pub use crate::common::flat;

/// A model under test and the tokens to run it on.
pub struct Case {
    pub name: &'static str,
    pub model: &'static Llama,
    pub ids: Vec<u32>,
}

fn leak(model: Llama) -> &'static Llama {
    Box::leak(Box::new(model))
}

/// The tiny random models (fast, every layer checked) and the two real ones (a short prompt).
pub fn cases() -> Vec<Case> {
    let tiny_l = tiny_llama(3).expect("tiny llama");
    let tiny_g = tiny_gemma(5).expect("tiny gemma");
    let mut smol_ids = common::prompts()[0].ids.clone();
    smol_ids.truncate(16);
    let mut gemma_ids = gemma_common::reference().prompts[0].ids.clone();
    gemma_ids.truncate(16);
    vec![
        Case {
            name: "tiny llama",
            model: leak(Llama::load_gguf(&tiny_l.path).expect("load tiny llama")),
            ids: vec![1, 5, 9, 13, 2, 7, 30, 11, 4, 8],
        },
        Case {
            name: "tiny gemma",
            model: leak(Llama::load_gguf(&tiny_g.path).expect("load tiny gemma")),
            ids: vec![2, 265, 272, 7, 274, 270, 6, 265, 272, 264, 273, 203],
        },
        Case {
            name: "SmolLM2",
            model: common::smollm2(),
            ids: smol_ids,
        },
        Case {
            name: "Gemma 3",
            model: gemma_common::gemma(),
            ids: gemma_ids,
        },
    ]
}

/// Runs `ids` (one sequence) capturing `points`; returns each capture flattened.
pub fn capture(model: &Llama, ids: &[u32], points: &[HookPoint]) -> HashMap<HookPoint, Vec<f32>> {
    let mut hooks = Hooks::capturing(points.iter().copied());
    let out = model
        .forward(&[ids], &mut hooks, Logits::None)
        .expect("forward");
    points
        .iter()
        .map(|&p| {
            let t = out.activations.get(p).expect("captured");
            (p, flat(t))
        })
        .collect()
}

/// `x[rows, n_in] · wᵀ` with `w` `[n_out, n_in]`, in f64.
pub fn matmul_t(x: &[f32], w: &[f32], n_in: usize) -> Vec<f64> {
    let n_out = w.len() / n_in;
    let mut out = Vec::with_capacity(x.len() / n_in * n_out);
    for row in x.chunks_exact(n_in) {
        for wr in w.chunks_exact(n_in) {
            out.push(row.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum());
        }
    }
    out
}

/// `sqrt(mean(x²) + eps)` of every `d`-wide row, in f64.
pub fn rms(x: &[f64], d: usize, eps: f32) -> Vec<f64> {
    x.chunks_exact(d)
        .map(|r| (r.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps as f64).sqrt())
        .collect()
}

/// `x[r] / scale[r] · w`, in f64.
pub fn normalize(x: &[f64], scale: &[f64], w: &[f32]) -> Vec<f64> {
    let d = w.len();
    x.chunks_exact(d)
        .zip(scale)
        .flat_map(|(r, s)| r.iter().zip(w).map(move |(v, w)| v / s * *w as f64))
        .collect()
}

/// f32 → f64.
pub fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// ‖a − b‖ / ‖b‖ with `b` in f64.
pub fn rel64(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}
