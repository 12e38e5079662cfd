//! One batch through the model: contexts → forward to the deepest hook → each hook's rows as `Vec<f32>`.
//! The capture lives here, once; [`Activations`](super::Activations) runs it through
//! [`HookModel::capture`](super::HookModel::capture).

use zephyra_lm::{HookPoint, Hooks, Llama};

use crate::error::{DataError, Result};

/// Runs `contexts` (all the same length) through `llama` up to the deepest of `hooks` and returns each
/// hook's activations `[batch × seq × d_model]`, row-major, in `hooks` order.
pub fn capture_rows(
    llama: &Llama,
    contexts: &[Vec<u32>],
    hooks: &[HookPoint],
) -> Result<Vec<Vec<f32>>> {
    let mut h = Hooks::capturing(hooks.iter().copied());
    let mut out = llama.forward(contexts, &mut h, zephyra_lm::model::Logits::None)?;
    hooks
        .iter()
        .map(|&p| {
            let t = out
                .activations
                .take(p)
                .ok_or(DataError::NotCaptured { hook: p })?;
            Ok(t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(zephyra_lm::LmError::from)?)
        })
        .collect()
}
