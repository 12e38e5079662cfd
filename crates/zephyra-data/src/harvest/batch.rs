//! One batch through the model: contexts → forward to the deepest hook → hook activations → exclusion rule
//! → kept rows. The capture of a hook's rows as `Vec<f32>` lives here, once; the feature pass and
//! `explain` consume [`HookBatch`], the harvest threads [`HookModel::capture`](super::HookModel::capture).

use zephyra_lm::{HookPoint, Hooks, Llama};

use super::HookModel;
use crate::error::{DataError, Result};
use crate::exclude::{self, ExclusionRule, ShardExclusion};

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

/// A batch of contexts with its activations at one hook and the exclusion rule's verdict on each row.
#[derive(Debug, Clone, PartialEq)]
pub struct HookBatch {
    /// The contexts' tokens, concatenated (`n_contexts × ctx`).
    pub tokens: Vec<u32>,
    /// Tokens per context.
    pub ctx: usize,
    /// Activations, `[tokens.len() × d]` row-major.
    pub acts: Vec<f32>,
    /// L2 norm of each row.
    pub norms: Vec<f32>,
    /// Which rows the rule keeps, with its counts.
    pub exclusion: ShardExclusion,
}

impl HookBatch {
    /// Runs `contexts` (non-empty, all the same length) through `model` to `hook` and applies `rule`
    /// (the norm clause over this batch's rows).
    pub fn run(
        model: &dyn HookModel,
        contexts: &[Vec<u32>],
        hook: HookPoint,
        rule: &ExclusionRule,
        is_special: &dyn Fn(u32) -> bool,
    ) -> Result<Self> {
        let ctx = contexts.first().map_or(0, Vec::len);
        let acts = model
            .capture(contexts, &[hook])?
            .pop()
            .ok_or(DataError::NotCaptured { hook })?;
        let tokens = contexts.concat();
        let norms = exclude::row_norms(&acts, model.d_model());
        let exclusion = exclude::apply(rule, &tokens, ctx, &norms, is_special);
        Ok(Self {
            tokens,
            ctx,
            acts,
            norms,
            exclusion,
        })
    }

    /// `keep[i]` for row `i`.
    pub fn keep(&self) -> &[bool] {
        &self.exclusion.keep
    }

    /// Rows in the batch (kept or not).
    pub fn n_rows(&self) -> usize {
        self.tokens.len()
    }
}
