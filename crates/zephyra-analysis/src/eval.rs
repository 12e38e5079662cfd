//! The evaluation driver: runs the model over eval contexts, splices a dictionary's reconstruction in at the
//! hook, and accumulates every figure of [`crate::recon`], [`crate::sparsity`] and [`crate::downstream`].
//!
//! Two passes over the same contexts, `batch_contexts` at a time, each a consumer of the data crate's
//! pipeline iterator ([`Activations`], one shard per forward batch):
//! 1. **reconstruction** (up to `max_tokens` tokens): one forward that stops at the hook; the rows kept by the
//!    data crate's [`ExclusionRule`] (position 0, special tokens, norm > 10x the batch's median — the same
//!    rule as harvesting, with the batch as the group whose median is taken) are encoded and decoded, and go
//!    into the reconstruction and sparsity figures and the mean activation;
//! 2. **downstream** (the first `downstream_tokens` of those tokens): four forwards — clean, SAE spliced,
//!    zero-ablated, mean-ablated (the mean of pass 1) — that keep only the final-norm rows; the logits are
//!    computed from them [`LOGIT_ROWS`] positions at a time (never a `[batch, seq, vocab]` tensor: Gemma 3's
//!    vocabulary is 262,144 tokens). Only kept positions are replaced; excluded
//!    positions (attention sinks, specials) keep their clean activation in every run, so the comparison
//!    measures the SAE on the tokens it was trained for. CE and KL are averaged over the kept positions that
//!    have a next token (position `t` predicts token `t+1`). A fifth forward zeroes the activation at every
//!    position, sinks included, for the SAELens / SAEBench zero-ablation figure (see [`crate::downstream`]).

use std::cell::Cell;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use zephyra_data::exclude::ExclusionCounts;
use zephyra_data::harvest::{Activations, RowPlan, ShardRows};
use zephyra_data::ExclusionRule;
use zephyra_lm::model::{ForwardOutput, Logits, LOGIT_ROWS};
use zephyra_lm::{HookPoint, Hooks, Llama};
use zephyra_sae::Sae;

use crate::downstream::{DownstreamStats, LossAccumulator, PositionLogits};
use crate::error::{AnalysisError, Result};
pub use crate::provenance::{check_model, check_model_file, check_store};
use crate::recon::{ReconAccumulator, ReconStats};
use crate::sparsity::{SparsityAccumulator, SparsityStats};

/// What is spliced in: anything that maps activations to codes and a reconstruction.
pub trait Dictionary: Send + Sync {
    /// Input width.
    fn d_in(&self) -> usize;
    /// Number of latents (width of the codes).
    fn d_sae(&self) -> usize;
    /// Codes `[n_rows, d_sae]` and reconstruction `[n_rows, d_in]` of `x` (`[n_rows, d_in]`).
    fn encode_decode(&self, x: &[f32], n_rows: usize) -> Result<(Vec<f32>, Vec<f32>)>;
}

impl Dictionary for Sae {
    fn d_in(&self) -> usize {
        self.cfg.d_in
    }
    fn d_sae(&self) -> usize {
        self.cfg.d_sae
    }
    fn encode_decode(&self, x: &[f32], n_rows: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let codes = self.encode(x, n_rows).map_err(AnalysisError::Sae)?;
        let x_hat = self.decode(&codes, n_rows).map_err(AnalysisError::Sae)?;
        Ok((codes, x_hat))
    }
}

/// The two reference dictionaries of width `d_in`, the ends of the CE-loss-recovered scale: splicing
/// `Identity` must leave the model unchanged; splicing `Zero` is zero ablation.
#[derive(Debug, Clone, Copy)]
pub enum ReferenceDictionary {
    /// `x̂ = x` (codes = `x`).
    Identity(usize),
    /// `x̂ = 0` (one latent that never fires).
    Zero(usize),
}

impl Dictionary for ReferenceDictionary {
    fn d_in(&self) -> usize {
        match *self {
            Self::Identity(d) | Self::Zero(d) => d,
        }
    }
    fn d_sae(&self) -> usize {
        match *self {
            Self::Identity(d) => d,
            Self::Zero(_) => 1,
        }
    }
    fn encode_decode(&self, x: &[f32], n_rows: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(match self {
            Self::Identity(_) => (x.to_vec(), x.to_vec()),
            Self::Zero(_) => (vec![0.0; n_rows], vec![0.0; x.len()]),
        })
    }
}

/// Settings of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalConfig {
    /// Where the dictionary reads and is spliced in.
    pub hook: HookPoint,
    /// Contexts per forward pass.
    pub batch_contexts: usize,
    /// Tokens for the reconstruction / sparsity figures (before exclusion).
    pub max_tokens: u64,
    /// Tokens (the first ones of the same contexts) for the downstream figures; 0 skips them.
    pub downstream_tokens: u64,
    /// Which rows are excluded (the data crate's rule).
    pub rule: ExclusionRule,
}

/// Progress, reported after every forward batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalProgress {
    /// 1 = reconstruction pass, 2 = downstream pass.
    pub pass: u8,
    /// Tokens done in this pass.
    pub tokens_done: u64,
    /// Tokens this pass will do at most.
    pub tokens_total: u64,
}

impl EvalProgress {
    /// The pass in words, for a progress bar.
    pub fn stage(&self) -> &'static str {
        if self.pass == 1 {
            "reconstruction"
        } else {
            "CE/KL (4 forwards)"
        }
    }
}

/// Everything one evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalFigures {
    /// Tokens run through the model in the reconstruction pass.
    pub n_tokens_seen: u64,
    /// What the exclusion rule dropped in the reconstruction pass.
    pub exclusion: ExclusionCounts,
    /// The rule in words.
    pub exclusion_rule: String,
    /// Reconstruction figures.
    pub reconstruction: ReconStats,
    /// Sparsity and latent health.
    pub sparsity: SparsityStats,
    /// Downstream figures (`None` when `downstream_tokens` is 0).
    pub downstream: Option<DownstreamStats>,
}

/// Takes the activation captured at `hook` out of a forward pass's output, as `[batch × seq × d]` rows.
fn take_rows(out: &mut ForwardOutput, hook: HookPoint) -> Result<Vec<f32>> {
    let t = out.activations.take(hook).ok_or_else(|| {
        AnalysisError::Model(format!("the forward pass did not capture hook `{hook}`").into())
    })?;
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(AnalysisError::model)
}

/// The eval contexts as the pipeline reads them: empty ones skipped, none after `max_tokens` tokens
/// have been read; an error of the caller's iterator ends it and waits in `failed`.
struct TokenBudget<'c> {
    contexts: &'c mut dyn Iterator<Item = Result<Vec<u32>>>,
    read: u64,
    max_tokens: u64,
    failed: &'c Cell<Option<AnalysisError>>,
}

impl Iterator for TokenBudget<'_> {
    type Item = zephyra_data::Result<Vec<u32>>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.read < self.max_tokens {
            match self.contexts.next()? {
                Ok(c) if c.is_empty() => {}
                Ok(c) => {
                    self.read += c.len() as u64;
                    return Some(Ok(c));
                }
                Err(e) => {
                    self.failed.set(Some(e));
                    return None;
                }
            }
        }
        None
    }
}

/// `x` with the kept rows replaced by consecutive rows of `replacement` (`[n_kept, d]`, or one row for all).
pub(crate) fn splice(
    x: &[f32],
    keep: &[bool],
    d: usize,
    replacement: &[f32],
    broadcast: bool,
) -> Vec<f32> {
    let mut out = x.to_vec();
    let mut j = 0;
    for (r, &k) in keep.iter().enumerate() {
        if k {
            let src = if broadcast {
                replacement
            } else {
                &replacement[j * d..(j + 1) * d]
            };
            out[r * d..(r + 1) * d].copy_from_slice(src);
            j += 1;
        }
    }
    out
}

fn forward_replaced(
    model: &Llama,
    contexts: &[Vec<u32>],
    hook: HookPoint,
    x: Vec<f32>,
    seq: usize,
) -> Result<Vec<f32>> {
    let d = model.config().d_model;
    let shape = (contexts.len(), seq, d);
    let t = Arc::new(Tensor::from_vec(x, shape, &Device::Cpu).map_err(AnalysisError::model)?);
    let mut hooks = Hooks::new();
    hooks.replace(hook, move |_, seen: &Tensor| {
        if seen.dims() != t.dims() {
            return Err(zephyra_lm::LmError::InvalidInput(format!(
                "splice: activation shape {:?} differs from the prepared {:?}",
                seen.dims(),
                t.dims()
            )));
        }
        Ok((*t).clone())
    });
    hooks.capture(HookPoint::LnFinal);
    let mut out = model
        .forward(contexts, &mut hooks, Logits::None)
        .map_err(AnalysisError::model)?;
    take_rows(&mut out, HookPoint::LnFinal)
}

/// Final-norm rows (`[batch × seq × d]`) of the five runs of one batch, in [`score_positions`]'s order.
struct FinalNorms {
    clean: Vec<f32>,
    sae: Vec<f32>,
    zero: Vec<f32>,
    zero_all: Vec<f32>,
    mean: Vec<f32>,
}

/// Adds the CE and KL of the five runs at `positions` (`(row, next token)`, in order) to `loss`, computing
/// the logits [`LOGIT_ROWS`] positions at a time: memory stays `5 × LOGIT_ROWS × vocab` whatever the batch.
fn score_positions(
    model: &Llama,
    runs: &FinalNorms,
    positions: &[(usize, usize)],
    loss: &mut LossAccumulator,
) -> Result<()> {
    let (d, vocab) = (model.config().d_model, model.config().vocab_size);
    let runs = [
        &runs.clean,
        &runs.sae,
        &runs.zero,
        &runs.zero_all,
        &runs.mean,
    ];
    let mut rows = Vec::with_capacity(LOGIT_ROWS * d);
    let mut logits: [Vec<f32>; 5] = Default::default();
    for chunk in positions.chunks(LOGIT_ROWS) {
        for (run, out) in runs.iter().zip(logits.iter_mut()) {
            rows.clear();
            for &(r, _) in chunk {
                let row = run
                    .get(r * d..(r + 1) * d)
                    .ok_or(AnalysisError::ShapeMismatch {
                        what: "final-norm rows of a run",
                        expected: (r + 1) * d,
                        got: run.len(),
                    })?;
                rows.extend_from_slice(row);
            }
            model
                .unembed_rows(&rows, out)
                .map_err(AnalysisError::model)?;
        }
        let [clean, sae, zero, zero_all, mean] = &logits;
        for (j, &(_, target)) in chunk.iter().enumerate() {
            let span = j * vocab..(j + 1) * vocab;
            let at_position = PositionLogits {
                clean: &clean[span.clone()],
                sae: &sae[span.clone()],
                zero: &zero[span.clone()],
                mean: &mean[span.clone()],
            };
            loss.add(at_position, target)?;
            loss.add_zero_all(&zero_all[span], target)?;
        }
    }
    Ok(())
}

/// Checks that `dict` can read `hook` of `model`.
pub fn check_width(model: &Llama, hook: HookPoint, dict: &dyn Dictionary) -> Result<()> {
    let width = model.config().d_model;
    if dict.d_in() != width {
        return Err(AnalysisError::WidthMismatch {
            hook: hook.to_string(),
            hook_width: width,
            sae_d_in: dict.d_in(),
        });
    }
    hook.validate(model.config().n_layers)
        .map_err(AnalysisError::model)?;
    Ok(())
}

/// Runs the evaluation over `contexts` (token-id sequences, read lazily).
pub fn evaluate(
    model: &Llama,
    dict: &dyn Dictionary,
    is_special: &dyn Fn(u32) -> bool,
    contexts: &mut dyn Iterator<Item = Result<Vec<u32>>>,
    cfg: &EvalConfig,
    progress: &mut dyn FnMut(EvalProgress),
) -> Result<EvalFigures> {
    check_width(model, cfg.hook, dict)?;
    if cfg.batch_contexts == 0 {
        return Err(AnalysisError::InvalidArgument(
            "--batch must be at least 1".into(),
        ));
    }
    let d = dict.d_in();
    let mut recon = ReconAccumulator::new(d);
    let mut sparsity = SparsityAccumulator::new(dict.d_sae());
    let mut counts = ExclusionCounts::default();
    let mut seen = 0u64;
    let mut kept_for_downstream: Vec<Vec<u32>> = Vec::new();
    let mut down_tokens = 0u64;

    // Pass 1: reconstruction and sparsity.
    let failed = Cell::new(None);
    let budget = TokenBudget {
        contexts,
        read: 0,
        max_tokens: cfg.max_tokens,
        failed: &failed,
    };
    let plan = RowPlan::per_batch(vec![cfg.hook], cfg.batch_contexts, cfg.rule);
    let mut pass = Activations::over(Arc::new(model), is_special, budget, plan);
    loop {
        let shard = pass.next_shard(&mut |_| {});
        if let Some(e) = failed.take() {
            return Err(e);
        }
        let Some(shard) = shard? else { break };
        counts.add(&shard.exclusion[0].counts);
        let rows = shard.kept_rows(&[0]);
        let n = rows.len() / d;
        if n > 0 {
            let (codes, x_hat) = dict.encode_decode(&rows, n)?;
            recon.add(&rows, &x_hat)?;
            sparsity.add(&codes)?;
        }
        seen += shard.n_tokens();
        for c in shard.contexts() {
            if down_tokens < cfg.downstream_tokens {
                down_tokens += c.len() as u64;
                kept_for_downstream.push(c);
            }
        }
        progress(EvalProgress {
            pass: 1,
            tokens_done: seen,
            tokens_total: cfg.max_tokens,
        });
        tracing::debug!(seen, kept = recon.n_tokens(), "eval batch");
    }
    if recon.n_tokens() == 0 {
        return Err(AnalysisError::NoTokens {
            seen: seen as usize,
        });
    }
    let reconstruction = recon.finish()?;
    let sparsity_stats = sparsity.finish()?;
    let mean: Vec<f32> = recon.mean().iter().map(|&m| m as f32).collect();

    // Pass 2: downstream.
    let downstream = if cfg.downstream_tokens == 0 || kept_for_downstream.is_empty() {
        None
    } else {
        let mut loss = LossAccumulator::new();
        let mut done = 0u64;
        // The hook's rows decide the verdict; the final-norm rows (the clean run) ride along.
        let mut hooks = vec![cfg.hook];
        if cfg.hook != HookPoint::LnFinal {
            hooks.push(HookPoint::LnFinal);
        }
        let plan = RowPlan {
            voting: 1,
            ..RowPlan::per_batch(hooks, cfg.batch_contexts, cfg.rule)
        };
        let contexts = kept_for_downstream.into_iter().map(Ok);
        for shard in Activations::over(Arc::new(model), is_special, contexts, plan) {
            let shard = shard?;
            let runs = spliced_runs(model, dict, cfg.hook, &shard, &mean)?;
            let mut positions = Vec::new();
            for (i, &len) in shard.lengths.iter().enumerate() {
                for t in 0..len.saturating_sub(1) {
                    let r = i * shard.ctx + t;
                    if shard.keep()[r] {
                        positions.push((r, shard.tokens[r + 1] as usize));
                    }
                }
            }
            done += shard.n_tokens();
            score_positions(model, &runs, &positions, &mut loss)?;
            progress(EvalProgress {
                pass: 2,
                tokens_done: done,
                tokens_total: down_tokens,
            });
        }
        if loss.n_positions() == 0 {
            None
        } else {
            Some(loss.finish()?)
        }
    };
    Ok(EvalFigures {
        n_tokens_seen: seen,
        exclusion: counts,
        exclusion_rule: cfg.rule.describe(),
        reconstruction,
        sparsity: sparsity_stats,
        downstream,
    })
}

/// The five runs of one shard of pass 2: clean (captured with the shard), the dictionary's reconstruction,
/// zero and mean ablation spliced in at the kept rows, and zero at every row.
fn spliced_runs(
    model: &Llama,
    dict: &dyn Dictionary,
    hook: HookPoint,
    shard: &ShardRows,
    mean: &[f32],
) -> Result<FinalNorms> {
    let d = dict.d_in();
    let (x, keep, seq) = (&shard.acts[0], shard.keep(), shard.ctx);
    let rows = shard.kept_rows(&[0]);
    let n = rows.len() / d;
    let x_sae = if n > 0 {
        let (_, x_hat) = dict.encode_decode(&rows, n)?;
        if x_hat.len() != rows.len() {
            return Err(AnalysisError::ShapeMismatch {
                what: "reconstruction",
                expected: rows.len(),
                got: x_hat.len(),
            });
        }
        splice(x, keep, d, &x_hat, false)
    } else {
        x.clone()
    };
    let zeros = vec![0.0f32; d];
    let x_zero = splice(x, keep, d, &zeros, true);
    let x_mean = splice(x, keep, d, mean, true);
    // SAELens / SAEBench zero ablation: every position, sinks included.
    let x_zero_all = vec![0.0f32; x.len()];
    let contexts = shard.contexts();
    let clean = shard.acts.last().cloned().unwrap_or_default();
    Ok(FinalNorms {
        clean,
        sae: forward_replaced(model, &contexts, hook, x_sae, seq)?,
        zero: forward_replaced(model, &contexts, hook, x_zero, seq)?,
        zero_all: forward_replaced(model, &contexts, hook, x_zero_all, seq)?,
        mean: forward_replaced(model, &contexts, hook, x_mean, seq)?,
    })
}
