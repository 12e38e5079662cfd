//! The evaluation driver: runs the model over eval contexts, splices a dictionary's reconstruction in at the
//! hook, and accumulates every figure of [`crate::recon`], [`crate::sparsity`] and [`crate::downstream`].
//!
//! Two passes over the same contexts, `batch_contexts` at a time:
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

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use zephyra_data::exclude::{self, ExclusionCounts};
use zephyra_data::harvest::capture_rows;
use zephyra_data::ExclusionRule;
use zephyra_lm::model::{ForwardOutput, Logits, LOGIT_ROWS};
use zephyra_lm::{HookPoint, Hooks, Llama};
use zephyra_sae::Sae;

use crate::downstream::{DownstreamStats, LossAccumulator, PositionLogits};
use crate::error::{AnalysisError, Result};
pub use crate::provenance::{check_model, check_store};
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

/// Reference dictionary `x̂ = x` (codes = `x`): splicing it must leave the model unchanged.
#[derive(Debug, Clone, Copy)]
pub struct IdentityDictionary(pub usize);

impl Dictionary for IdentityDictionary {
    fn d_in(&self) -> usize {
        self.0
    }
    fn d_sae(&self) -> usize {
        self.0
    }
    fn encode_decode(&self, x: &[f32], _n_rows: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((x.to_vec(), x.to_vec()))
    }
}

/// Reference dictionary `x̂ = 0` (one latent that never fires): splicing it is zero ablation.
#[derive(Debug, Clone, Copy)]
pub struct ZeroDictionary(pub usize);

impl Dictionary for ZeroDictionary {
    fn d_in(&self) -> usize {
        self.0
    }
    fn d_sae(&self) -> usize {
        1
    }
    fn encode_decode(&self, x: &[f32], n_rows: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((vec![0.0; n_rows], vec![0.0; x.len()]))
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

/// One batch's hook activations and which rows are kept.
struct Batch {
    x: Vec<f32>,
    keep: Vec<bool>,
    counts: ExclusionCounts,
    seq: usize,
}

fn tensor_to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(AnalysisError::model)
}

/// Activation at the hook, padded positions marked as not kept, exclusion applied.
fn batch_rows(
    x: Vec<f32>,
    contexts: &[Vec<u32>],
    lengths: &[usize],
    d: usize,
    rule: &ExclusionRule,
    is_special: &dyn Fn(u32) -> bool,
) -> Result<Batch> {
    let b = contexts.len();
    let seq = x.len() / (b * d).max(1);
    if x.len() != b * seq * d {
        return Err(AnalysisError::ShapeMismatch {
            what: "hook activation [batch, seq, d]",
            expected: b * seq * d,
            got: x.len(),
        });
    }
    // Pad token ids to `seq` so the rule sees a rectangular shard; padded rows are dropped after.
    let mut tokens = Vec::with_capacity(b * seq);
    for c in contexts {
        tokens.extend_from_slice(c);
        tokens.extend(std::iter::repeat_n(
            c.last().copied().unwrap_or(0),
            seq - c.len(),
        ));
    }
    let norms = exclude::row_norms(&x, d);
    let ex = exclude::apply(rule, &tokens, seq, &norms, is_special);
    let mut keep = ex.keep;
    let mut counts = ex.counts;
    for (i, &len) in lengths.iter().enumerate() {
        for p in len..seq {
            let r = i * seq + p;
            if keep[r] {
                keep[r] = false;
                counts.kept -= 1;
            }
            counts.total -= 1;
        }
    }
    Ok(Batch {
        x,
        keep,
        counts,
        seq,
    })
}

/// Takes the activation captured at `hook` out of a forward pass's output, as `[batch × seq × d]` rows.
fn take_rows(out: &mut ForwardOutput, hook: HookPoint) -> Result<Vec<f32>> {
    let t = out.activations.take(hook).ok_or_else(|| {
        AnalysisError::Model(format!("the forward pass did not capture hook `{hook}`").into())
    })?;
    tensor_to_vec(&t)
}

/// The batch's activations at the hook and, with `final_norm`, its final-norm rows
/// (`ln_final.hook_normalized`, the input of the unembedding): no logits are computed here.
fn capture_batch(
    model: &Llama,
    contexts: &[Vec<u32>],
    cfg: &EvalConfig,
    is_special: &dyn Fn(u32) -> bool,
    final_norm: bool,
) -> Result<(Batch, Option<Vec<f32>>)> {
    let d = model.config().d_model;
    let mut hooks = vec![cfg.hook];
    if final_norm && cfg.hook != HookPoint::LnFinal {
        hooks.push(HookPoint::LnFinal);
    }
    let mut rows = capture_rows(model, contexts, &hooks)
        .map_err(AnalysisError::Data)?
        .into_iter();
    let x = rows.next().ok_or_else(|| {
        AnalysisError::Model(format!("the forward pass did not capture hook `{}`", cfg.hook).into())
    })?;
    let normed = match (final_norm, rows.next()) {
        (false, _) => None,
        (true, Some(normed)) => Some(normed),
        (true, None) => Some(x.clone()),
    };
    let lengths: Vec<usize> = contexts.iter().map(Vec::len).collect();
    let batch = batch_rows(x, contexts, &lengths, d, &cfg.rule, is_special)?;
    Ok((batch, normed))
}

/// Gathers the kept rows of `x` into a dense `[n_kept, d]` matrix.
fn kept_rows(batch: &Batch, d: usize) -> Vec<f32> {
    let mut rows = Vec::new();
    for (r, &k) in batch.keep.iter().enumerate() {
        if k {
            rows.extend_from_slice(&batch.x[r * d..(r + 1) * d]);
        }
    }
    rows
}

/// `x` with the kept rows replaced by consecutive rows of `replacement` (`[n_kept, d]`, or one row for all).
fn splice(batch: &Batch, d: usize, replacement: &[f32], broadcast: bool) -> Vec<f32> {
    let mut out = batch.x.clone();
    let mut j = 0;
    for (r, &k) in batch.keep.iter().enumerate() {
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
    'outer: while seen < cfg.max_tokens {
        let mut batch_ctx = Vec::with_capacity(cfg.batch_contexts);
        let mut batch_tokens = 0u64;
        while batch_ctx.len() < cfg.batch_contexts && seen + batch_tokens < cfg.max_tokens {
            match contexts.next() {
                Some(c) => {
                    let c = c?;
                    if c.is_empty() {
                        continue;
                    }
                    batch_tokens += c.len() as u64;
                    batch_ctx.push(c);
                }
                None => break,
            }
        }
        if batch_ctx.is_empty() {
            break 'outer;
        }
        let (batch, _) = capture_batch(model, &batch_ctx, cfg, is_special, false)?;
        counts.add(&batch.counts);
        let rows = kept_rows(&batch, d);
        let n = rows.len() / d;
        if n > 0 {
            let (codes, x_hat) = dict.encode_decode(&rows, n)?;
            recon.add(&rows, &x_hat)?;
            sparsity.add(&codes)?;
        }
        seen += batch_tokens;
        for c in batch_ctx {
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
        for batch_ctx in kept_for_downstream.chunks(cfg.batch_contexts) {
            let (batch, clean) = capture_batch(model, batch_ctx, cfg, is_special, true)?;
            let clean = clean.ok_or_else(|| {
                AnalysisError::Model("the final norm of the clean run was not captured".into())
            })?;
            let rows = kept_rows(&batch, d);
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
                splice(&batch, d, &x_hat, false)
            } else {
                batch.x.clone()
            };
            let zeros = vec![0.0f32; d];
            let x_zero = splice(&batch, d, &zeros, true);
            let x_mean = splice(&batch, d, &mean, true);
            // SAELens / SAEBench zero ablation: every position, sinks included.
            let x_zero_all = vec![0.0f32; batch.x.len()];
            let runs = FinalNorms {
                clean,
                sae: forward_replaced(model, batch_ctx, cfg.hook, x_sae, batch.seq)?,
                zero: forward_replaced(model, batch_ctx, cfg.hook, x_zero, batch.seq)?,
                zero_all: forward_replaced(model, batch_ctx, cfg.hook, x_zero_all, batch.seq)?,
                mean: forward_replaced(model, batch_ctx, cfg.hook, x_mean, batch.seq)?,
            };
            let mut positions = Vec::new();
            for (i, c) in batch_ctx.iter().enumerate() {
                for t in 0..c.len().saturating_sub(1) {
                    let r = i * batch.seq + t;
                    if batch.keep[r] {
                        positions.push((r, c[t + 1] as usize));
                    }
                }
                done += c.len() as u64;
            }
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
