//! The replacement model: a transcoder per MLP, evaluated one layer at a time and all at once.
//!
//! Per layer: FVE of `hook_mlp_out` (centred, as [`crate::recon`]), the error norm, and the next-token CE /
//! KL with that layer's MLP output replaced by its transcoder's prediction. All at once: every MLP
//! replaced (each transcoder reading the input of the *replaced* model), against every MLP
//! mean-ablated (the mean `hook_mlp_out` of the reconstruction pass): CE, KL, CE loss recovered
//! `(CE_mean − CE_replaced) / (CE_mean − CE_clean)`. Splicing uses the runtime's replace hooks. Rows go
//! through the data crate's pipeline with the exclusion rule the transcoders were trained under (position 0,
//! special tokens, and attention sinks: a norm above 10× the batch's median at *any* transcoder's input or
//! output, one verdict per row): the figures are taken on the kept rows, and excluded rows keep their clean
//! MLP output in every run, as [`crate::eval`] keeps them. Logits are computed [`LOGIT_ROWS`] positions at a
//! time.

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use zephyra_data::harvest::{Activations, RowPlan, ShardRows};
use zephyra_data::ExclusionRule;
use zephyra_lm::model::{Logits, LOGIT_ROWS};
use zephyra_lm::{HookPoint, Hooks, Llama, LmError};

use crate::downstream::{ce_recovered, cross_entropy, kl_divergence};
use crate::error::{AnalysisError, Result};
use crate::eval::splice;
use crate::recon::{ReconAccumulator, ReconStats};

/// Maps an MLP's input to a prediction of its output.
pub trait Transcoder: Send + Sync {
    /// Input width.
    fn d_in(&self) -> usize;
    /// Output width.
    fn d_out(&self) -> usize;
    /// Predictions `[n_rows, d_out]` of `x` (`[n_rows, d_in]`).
    fn transcode(&self, x: &[f32], n_rows: usize) -> Result<Vec<f32>>;
}

impl Transcoder for zephyra_sae::Sae {
    fn d_in(&self) -> usize {
        self.cfg.d_in
    }
    fn d_out(&self) -> usize {
        self.cfg.d_out()
    }
    fn transcode(&self, x: &[f32], n_rows: usize) -> Result<Vec<f32>> {
        Ok(zephyra_sae::SaeOf::transcode(self, x, n_rows)?)
    }
}

/// One layer's transcoder and where it reads and writes.
#[derive(Clone, Copy)]
pub struct LayerTranscoder<'a> {
    /// The block.
    pub layer: usize,
    /// Input hook (`blocks.{l}.ln2.hook_normalized`).
    pub input: HookPoint,
    /// Output hook (`blocks.{l}.hook_mlp_out`).
    pub output: HookPoint,
    /// The transcoder.
    pub transcoder: &'a dyn Transcoder,
}

/// Settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplacementConfig {
    /// Contexts per forward pass.
    pub batch_contexts: usize,
    /// Contexts of the downstream pass (the first ones); 0 skips it.
    pub downstream_contexts: usize,
    /// Which rows are excluded (the data crate's rule; [`ExclusionRule::default`] as in training).
    pub rule: ExclusionRule,
}

/// Figures of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerFigures {
    /// The block.
    pub layer: usize,
    /// Reconstruction of `hook_mlp_out` (FVE, MSE, cosine, …).
    pub reconstruction: ReconStats,
    /// Mean L2 norm of the error `mlp_out − prediction`.
    pub error_norm: f64,
    /// Mean of `‖error‖ / ‖mlp_out‖`.
    pub relative_error_norm: f64,
    /// CE with only this layer's MLP replaced (`None` without a downstream pass).
    pub ce_replaced: Option<f64>,
    /// KL(clean ‖ this layer replaced).
    pub kl_replaced: Option<f64>,
}

/// Figures of the model with every MLP replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllReplaced {
    /// Positions scored.
    pub n_positions: u64,
    /// Clean CE.
    pub ce_clean: f64,
    /// CE with every MLP replaced.
    pub ce_replaced: f64,
    /// CE with every MLP mean-ablated.
    pub ce_mean_ablated: f64,
    /// KL(clean ‖ replaced).
    pub kl_replaced: f64,
    /// KL(clean ‖ mean-ablated).
    pub kl_mean_ablated: f64,
    /// `(CE_mean − CE_replaced) / (CE_mean − CE_clean)`.
    pub ce_recovered: Option<f64>,
    /// `CE_replaced − CE_clean`.
    pub delta_lm_loss: f64,
}

/// Everything [`evaluate_replacement`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacementFigures {
    /// Rows of the reconstruction pass the exclusion rule kept.
    pub n_tokens: u64,
    /// Per layer, in the order given.
    pub layers: Vec<LayerFigures>,
    /// Every MLP replaced (`None` without a downstream pass).
    pub all: Option<AllReplaced>,
}

fn to_vec(t: &Tensor) -> std::result::Result<Vec<f32>, LmError> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// `new` (`[rows, d]`) with the rows the rule excluded (`keep[r]` false) taken from `clean`.
fn keep_excluded(mut new: Vec<f32>, clean: &[f32], keep: &[bool], d: usize) -> Vec<f32> {
    for (r, row) in new.chunks_exact_mut(d).enumerate() {
        if !keep[r] {
            row.copy_from_slice(&clean[r * d..(r + 1) * d]);
        }
    }
    new
}

/// Evaluates `transcoders` on `contexts` (all of one length ≥ 2); `is_special` tells the rule's special
/// tokens. `progress(done, total)` counts contexts over both passes.
pub fn evaluate_replacement(
    model: &Llama,
    transcoders: &[LayerTranscoder<'_>],
    is_special: &dyn Fn(u32) -> bool,
    contexts: &[Vec<u32>],
    cfg: &ReplacementConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ReplacementFigures> {
    let d = model.config().d_model;
    if transcoders.is_empty() || contexts.is_empty() || cfg.batch_contexts == 0 {
        return Err(AnalysisError::InvalidArgument(
            "replacement eval needs at least one transcoder, one context and batch_contexts ≥ 1"
                .into(),
        ));
    }
    let seq = contexts[0].len();
    if seq < 2 || contexts.iter().any(|c| c.len() != seq) {
        return Err(AnalysisError::InvalidArgument(format!(
            "replacement eval needs contexts of one length ≥ 2 (the first has {seq} tokens)"
        )));
    }
    for t in transcoders {
        if t.transcoder.d_in() != d || t.transcoder.d_out() != d {
            return Err(AnalysisError::WidthMismatch {
                hook: t.input.to_string(),
                hook_width: d,
                sae_d_in: t.transcoder.d_in(),
            });
        }
    }
    let n_down = cfg.downstream_contexts.min(contexts.len());
    let total = contexts.len() + n_down;
    // Pass 1: reconstruction and the mean MLP outputs.
    let n = transcoders.len();
    let mut recon: Vec<ReconAccumulator> = (0..n).map(|_| ReconAccumulator::new(d)).collect();
    let mut err = vec![(0.0f64, 0.0f64); n];
    let mut means = vec![vec![0.0f64; d]; n];
    let mut n_rows = 0u64;
    let hooks: Vec<HookPoint> = transcoders
        .iter()
        .flat_map(|t| [t.input, t.output])
        .collect();
    let plan = RowPlan::per_batch(hooks.clone(), cfg.batch_contexts, cfg.rule);
    let mut done = 0;
    for shard in Activations::over(
        Arc::new(model),
        is_special,
        contexts.iter().cloned().map(Ok),
        plan,
    ) {
        let shard = shard?;
        let kept = shard.keep().iter().filter(|&&k| k).count();
        for (i, t) in transcoders.iter().enumerate() {
            let (x, y) = (shard.kept_rows(&[2 * i]), shard.kept_rows(&[2 * i + 1]));
            let pred = t.transcoder.transcode(&x, kept)?;
            recon[i].add(&y, &pred)?;
            for (yr, pr) in y.chunks_exact(d).zip(pred.chunks_exact(d)) {
                let e: f64 = yr
                    .iter()
                    .zip(pr)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum();
                let ny: f64 = yr.iter().map(|a| f64::from(*a).powi(2)).sum();
                err[i].0 += e.sqrt();
                err[i].1 += e.sqrt() / ny.sqrt().max(1e-12);
                means[i]
                    .iter_mut()
                    .zip(yr)
                    .for_each(|(m, &v)| *m += f64::from(v));
            }
        }
        n_rows += kept as u64;
        done += shard.n_contexts();
        progress(done, total);
    }
    if n_rows == 0 {
        return Err(AnalysisError::NoTokens {
            seen: contexts.len() * seq,
        });
    }
    let means: Vec<Vec<f32>> = means
        .iter()
        .map(|m| m.iter().map(|&v| (v / n_rows as f64) as f32).collect())
        .collect();
    let mut layers = Vec::with_capacity(n);
    for (i, t) in transcoders.iter().enumerate() {
        layers.push(LayerFigures {
            layer: t.layer,
            reconstruction: recon[i].finish()?,
            error_norm: err[i].0 / n_rows as f64,
            relative_error_norm: err[i].1 / n_rows as f64,
            ce_replaced: None,
            kl_replaced: None,
        });
    }
    if n_down == 0 {
        return Ok(ReplacementFigures {
            n_tokens: n_rows,
            layers,
            all: None,
        });
    }
    // Pass 2: downstream. Sums: per layer (ce, kl); all (ce clean, ce all, ce mean, kl all, kl mean).
    let mut per_layer = vec![(0.0f64, 0.0f64); n];
    let mut all = [0.0f64; 5];
    let mut n_pos = 0u64;
    // The transcoders' hooks vote (the same verdict as pass 1); the final-norm rows ride along.
    let mut down_hooks = hooks;
    down_hooks.push(HookPoint::LnFinal);
    let plan = RowPlan {
        voting: 2 * n,
        ..RowPlan::per_batch(down_hooks, cfg.batch_contexts, cfg.rule)
    };
    let mut done = 0;
    for shard in Activations::over(
        Arc::new(model),
        is_special,
        contexts[..n_down].iter().cloned().map(Ok),
        plan,
    ) {
        let shard: ShardRows = shard?;
        let (batch, clean, keep) = (shard.contexts(), &shard.acts, shard.keep());
        let clean_final = &clean[2 * n];
        let mut runs: Vec<Vec<f32>> = Vec::with_capacity(n + 2);
        for (i, t) in transcoders.iter().enumerate() {
            let pred = t.transcoder.transcode(&clean[2 * i], batch.len() * seq)?;
            let spliced = keep_excluded(pred, &clean[2 * i + 1], keep, d);
            runs.push(forward_spliced(model, &batch, &[(t.output, spliced)])?);
        }
        runs.push(forward_all_replaced(
            model,
            &batch,
            transcoders,
            clean,
            keep,
        )?);
        let ablated: Vec<(HookPoint, Vec<f32>)> = (transcoders.iter().enumerate())
            .map(|(i, t)| {
                (
                    t.output,
                    splice(&clean[2 * i + 1], keep, d, &means[i], true),
                )
            })
            .collect();
        runs.push(forward_spliced(model, &batch, &ablated)?);
        // Score positions 0..seq-1 (each predicts the next token).
        let positions: Vec<(usize, u32)> = (0..batch.len())
            .flat_map(|b| (0..seq - 1).map(move |p| (b, p)))
            .map(|(b, p)| (b * seq + p, batch[b][p + 1]))
            .collect();
        let mut buf = Vec::new();
        let mut logits = |rows_src: &[f32], chunk: &[(usize, u32)]| -> Result<Vec<f32>> {
            buf.clear();
            for &(r, _) in chunk {
                buf.extend_from_slice(&rows_src[r * d..(r + 1) * d]);
            }
            let mut out = Vec::new();
            model
                .unembed_rows(&buf, &mut out)
                .map_err(AnalysisError::model)?;
            Ok(out)
        };
        let vocab = model.config().vocab_size;
        for chunk in positions.chunks(LOGIT_ROWS) {
            let lc = logits(clean_final, chunk)?;
            let lr: Vec<Vec<f32>> = runs
                .iter()
                .map(|r| logits(r, chunk))
                .collect::<Result<_>>()?;
            for (j, &(_, next)) in chunk.iter().enumerate() {
                let span = j * vocab..(j + 1) * vocab;
                let c = &lc[span.clone()];
                let next = next as usize;
                all[0] += cross_entropy(c, next)?;
                for (i, acc) in per_layer.iter_mut().enumerate() {
                    acc.0 += cross_entropy(&lr[i][span.clone()], next)?;
                    acc.1 += kl_divergence(c, &lr[i][span.clone()])?;
                }
                let (ra, rm) = (&lr[n][span.clone()], &lr[n + 1][span.clone()]);
                all[1] += cross_entropy(ra, next)?;
                all[2] += cross_entropy(rm, next)?;
                all[3] += kl_divergence(c, ra)?;
                all[4] += kl_divergence(c, rm)?;
                n_pos += 1;
            }
        }
        done += shard.n_contexts();
        progress(contexts.len() + done, total);
    }
    let np = n_pos as f64;
    for (f, (ce, kl)) in layers.iter_mut().zip(&per_layer) {
        f.ce_replaced = Some(ce / np);
        f.kl_replaced = Some(kl / np);
    }
    let [ce_clean, ce_all, ce_mean, kl_all, kl_mean] = all.map(|v| v / np);
    if let Some(bad) = [ce_clean, ce_all, ce_mean, kl_all, kl_mean]
        .iter()
        .find(|v| !v.is_finite())
    {
        return Err(AnalysisError::NotFinite {
            what: "CE or KL of the replacement model",
            value: *bad,
        });
    }
    Ok(ReplacementFigures {
        n_tokens: n_rows,
        layers,
        all: Some(AllReplaced {
            n_positions: n_pos,
            ce_clean,
            ce_replaced: ce_all,
            ce_mean_ablated: ce_mean,
            kl_replaced: kl_all,
            kl_mean_ablated: kl_mean,
            ce_recovered: ce_recovered(ce_clean, ce_all, ce_mean),
            delta_lm_loss: ce_all - ce_clean,
        }),
    })
}

/// Final-norm rows of a pass with each `(hook, rows)` replaced by the prepared rows.
fn forward_spliced(
    model: &Llama,
    batch: &[Vec<u32>],
    splices: &[(HookPoint, Vec<f32>)],
) -> Result<Vec<f32>> {
    let (d, seq) = (model.config().d_model, batch[0].len());
    let mut hooks = Hooks::new();
    for (hook, rows) in splices {
        let t = Tensor::from_vec(rows.clone(), (batch.len(), seq, d), &Device::Cpu)
            .map_err(AnalysisError::model)?;
        hooks.replace(*hook, move |_, _| Ok(t.clone()));
    }
    final_rows(model, batch, hooks)
}

/// Final-norm rows of a pass with every MLP output replaced by its transcoder's prediction from the
/// replaced model's own input (excluded rows keep `clean`'s output: `clean[2i + 1]`).
fn forward_all_replaced(
    model: &Llama,
    batch: &[Vec<u32>],
    transcoders: &[LayerTranscoder<'_>],
    clean: &[Vec<f32>],
    keep: &[bool],
) -> Result<Vec<f32>> {
    let d = model.config().d_model;
    let failure: Arc<Mutex<Option<AnalysisError>>> = Arc::default();
    let mut hooks = Hooks::new();
    for (i, t) in transcoders.iter().enumerate() {
        let stash: Arc<Mutex<Vec<f32>>> = Arc::default();
        let put = Arc::clone(&stash);
        hooks.replace(t.input, move |_, x| {
            let v = to_vec(x)?;
            if let Ok(mut s) = put.lock() {
                *s = v;
            }
            Ok(x.clone())
        });
        let (tc, clean_out, fail) = (t.transcoder, &clean[2 * i + 1], Arc::clone(&failure));
        hooks.replace(t.output, move |hook, y| {
            let x = stash.lock().map(|s| s.clone()).unwrap_or_default();
            let pred = tc.transcode(&x, x.len() / d).map_err(|e| {
                let msg = format!("transcoder at `{hook}`: {e}");
                if let Ok(mut f) = fail.lock() {
                    *f = Some(e);
                }
                LmError::InvalidInput(msg)
            })?;
            let out = keep_excluded(pred, clean_out, keep, d);
            Ok(Tensor::from_vec(out, y.dims(), &Device::Cpu)?)
        });
    }
    final_rows(model, batch, hooks).map_err(|e| {
        match failure.lock().ok().and_then(|mut f| f.take()) {
            Some(inner) => inner,
            None => e,
        }
    })
}

fn final_rows(model: &Llama, batch: &[Vec<u32>], mut hooks: Hooks<'_>) -> Result<Vec<f32>> {
    hooks.capture(HookPoint::LnFinal);
    let mut out = model
        .forward(batch, &mut hooks, Logits::None)
        .map_err(AnalysisError::model)?;
    let t = out.activations.take(HookPoint::LnFinal).ok_or_else(|| {
        AnalysisError::Model("the forward pass did not capture `ln_final.hook_normalized`".into())
    })?;
    to_vec(&t).map_err(AnalysisError::model)
}
