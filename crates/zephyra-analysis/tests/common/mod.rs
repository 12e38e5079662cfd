//! Helpers shared by the integration tests: a plain forward pass read back as flat vectors, and the
//! data crate's default exclusion rule applied to it.
#![allow(dead_code)]

use zephyra_data::{exclude, ExclusionRule};
use zephyra_lm::{HookPoint, Hooks, Llama, Logits, Tensor};

/// The values of `t` in row-major order.
pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Runs `batch` through `model` capturing `hook`: the activations `[n_tokens * d_model]`, and the logits
/// `[n_tokens * vocab]` when `logits` asks for them.
pub fn forward_flat(
    model: &Llama,
    batch: &[Vec<u32>],
    hook: HookPoint,
    logits: Logits,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut hooks = Hooks::capturing([hook]);
    let out = model.forward(batch, &mut hooks, logits).unwrap();
    let x = flat(out.activations.get(hook).unwrap());
    (x, out.logits.as_ref().map(flat))
}

/// Which rows of `x` (`d` wide, one per token of `tokens`, contexts of `ctx`) the default exclusion rule
/// keeps.
pub fn kept_rows(
    x: &[f32],
    d: usize,
    tokens: &[u32],
    ctx: usize,
    is_special: &dyn Fn(u32) -> bool,
) -> Vec<bool> {
    exclude::apply(
        &ExclusionRule::default(),
        tokens,
        ctx,
        &exclude::row_norms(x, d),
        is_special,
    )
    .keep
}
