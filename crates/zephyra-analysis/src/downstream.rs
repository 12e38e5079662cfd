//! Downstream figures: the model's own next-token loss with the SAE spliced in.
//!
//! At each counted position `t` (see [`crate::eval`] for which positions count) with next token `y`:
//! - `CE = logsumexp(z_t) − z_t[y]` for the logits `z` of each run (clean, SAE spliced, zero-ablated,
//!   mean-ablated), averaged over positions;
//! - `KL(clean ‖ run) = Σ_v p_clean(v) (log p_clean(v) − log p_run(v))`, averaged over positions;
//! - CE loss recovered `= (CE_abl − CE_sae) / (CE_abl − CE_clean)` for both ablations;
//! - delta LM loss `= CE_sae − CE_clean`;
//! - KL score `= (KL_abl − KL_sae) / KL_abl` for both ablations;
//! - the SAELens / SAEBench convention of zero ablation as a second figure: the activation zeroed at
//!   *every* position (attention sinks and excluded tokens too; ours keeps them clean), averaged over the
//!   same positions: `CE_zero_all` and `(CE_zero_all − CE_sae) / (CE_zero_all − CE_clean)`. On a bias-free
//!   Llama zeroed at a residual hook, every later layer sees zeros, the logits are all 0 and
//!   `CE_zero_all = ln(vocab)`.
//!
//! A ratio whose denominator is 0 is reported as `null` (None).

use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// `log p(target)` under `softmax(logits)`, computed in `f64` with the max subtracted.
pub fn cross_entropy(logits: &[f32], target: usize) -> Result<f64> {
    if target >= logits.len() {
        return Err(AnalysisError::InvalidArgument(format!(
            "target token {target} is outside the vocabulary of {} logits",
            logits.len()
        )));
    }
    Ok(log_sum_exp(logits) - f64::from(logits[target]))
}

/// `log Σ exp(z)` in `f64`.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max = f64::from(max);
    let sum: f64 = logits.iter().map(|&z| (f64::from(z) - max).exp()).sum();
    max + sum.ln()
}

/// `KL(softmax(p) ‖ softmax(q))` in `f64`.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> Result<f64> {
    if p_logits.len() != q_logits.len() {
        return Err(AnalysisError::ShapeMismatch {
            what: "logits of the patched run",
            expected: p_logits.len(),
            got: q_logits.len(),
        });
    }
    let lse_p = log_sum_exp(p_logits);
    let lse_q = log_sum_exp(q_logits);
    let kl: f64 = p_logits
        .iter()
        .zip(q_logits)
        .map(|(&a, &b)| {
            let lp = f64::from(a) - lse_p;
            let lq = f64::from(b) - lse_q;
            lp.exp() * (lp - lq)
        })
        .sum();
    // Rounding can make an exactly-zero KL come out as -1e-17.
    Ok(kl.max(0.0))
}

/// Downstream figures (see the module docs for the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DownstreamStats {
    /// Positions averaged over.
    pub n_positions: u64,
    /// Mean next-token CE of the clean model (nats).
    pub ce_clean: f64,
    /// … with the SAE reconstruction spliced in.
    pub ce_sae: f64,
    /// … with the activation replaced by zeros.
    pub ce_zero_abl: f64,
    /// … with the activation replaced by its mean over the eval tokens.
    pub ce_mean_abl: f64,
    /// `(CE_zero − CE_sae) / (CE_zero − CE_clean)`.
    pub ce_recovered_zero: Option<f64>,
    /// `(CE_mean − CE_sae) / (CE_mean − CE_clean)`.
    pub ce_recovered_mean: Option<f64>,
    /// `CE_sae − CE_clean` (nats).
    pub delta_lm_loss: f64,
    /// Mean `KL(clean ‖ SAE spliced)` (nats).
    pub kl_sae: f64,
    /// Mean `KL(clean ‖ zero-ablated)` (nats).
    pub kl_zero_abl: f64,
    /// Mean `KL(clean ‖ mean-ablated)` (nats).
    pub kl_mean_abl: f64,
    /// `(KL_zero − KL_sae) / KL_zero`.
    pub kl_score_zero: Option<f64>,
    /// `(KL_mean − KL_sae) / KL_mean`.
    pub kl_score_mean: Option<f64>,
    /// Mean CE with the activation zeroed at every position, sinks included (the SAELens / SAEBench
    /// convention); absent from reports written before it.
    #[serde(default)]
    pub ce_zero_abl_all_positions: Option<f64>,
    /// `(CE_zero_all − CE_sae) / (CE_zero_all − CE_clean)`: CE loss recovered as SAELens and SAEBench
    /// compute it (zero ablation at every position).
    #[serde(default)]
    pub ce_recovered_zero_all_positions: Option<f64>,
}

/// Streams positions (the logits of the four runs and the next token) into [`DownstreamStats`].
#[derive(Debug, Clone, Default)]
pub struct LossAccumulator {
    n: u64,
    ce: [f64; 4],
    kl: [f64; 3],
    /// Positions and CE sum of the all-positions zero ablation ([`LossAccumulator::add_zero_all`]).
    n_zero_all: u64,
    ce_zero_all: f64,
}

/// The logits of the four runs at one position, each of length `vocab`.
#[derive(Debug, Clone, Copy)]
pub struct PositionLogits<'a> {
    /// Clean model.
    pub clean: &'a [f32],
    /// SAE reconstruction spliced in.
    pub sae: &'a [f32],
    /// Activation zero-ablated.
    pub zero: &'a [f32],
    /// Activation mean-ablated.
    pub mean: &'a [f32],
}

impl LossAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one position whose next token is `target`.
    pub fn add(&mut self, logits: PositionLogits<'_>, target: usize) -> Result<()> {
        let runs = [logits.clean, logits.sae, logits.zero, logits.mean];
        let mut ce = [0.0; 4];
        for (slot, run) in ce.iter_mut().zip(runs) {
            *slot = cross_entropy(run, target)?;
        }
        let mut kl = [0.0; 3];
        for (slot, run) in kl.iter_mut().zip(&runs[1..]) {
            *slot = kl_divergence(logits.clean, run)?;
        }
        if let Some(bad) = ce.iter().chain(&kl).find(|v| !v.is_finite()) {
            return Err(AnalysisError::NotFinite {
                what: "cross-entropy or KL at a position",
                value: *bad,
            });
        }
        for (acc, v) in self.ce.iter_mut().zip(ce) {
            *acc += v;
        }
        for (acc, v) in self.kl.iter_mut().zip(kl) {
            *acc += v;
        }
        self.n += 1;
        Ok(())
    }

    /// Adds the logits, at the same position as the last [`LossAccumulator::add`], of the run with the
    /// activation zeroed at every position (the SAELens / SAEBench convention).
    pub fn add_zero_all(&mut self, zero_all: &[f32], target: usize) -> Result<()> {
        let ce = cross_entropy(zero_all, target)?;
        if !ce.is_finite() {
            return Err(AnalysisError::NotFinite {
                what: "cross-entropy of the all-positions zero ablation",
                value: ce,
            });
        }
        self.ce_zero_all += ce;
        self.n_zero_all += 1;
        Ok(())
    }

    /// Positions added so far.
    pub fn n_positions(&self) -> u64 {
        self.n
    }

    /// The figures; [`AnalysisError::NoTokens`] when no position was added.
    pub fn finish(&self) -> Result<DownstreamStats> {
        if self.n == 0 {
            return Err(AnalysisError::NoTokens { seen: 0 });
        }
        let n = self.n as f64;
        let [ce_clean, ce_sae, ce_zero, ce_mean] = self.ce.map(|v| v / n);
        let [kl_sae, kl_zero, kl_mean] = self.kl.map(|v| v / n);
        if self.n_zero_all != 0 && self.n_zero_all != self.n {
            return Err(AnalysisError::ShapeMismatch {
                what: "positions of the all-positions zero ablation",
                expected: self.n as usize,
                got: self.n_zero_all as usize,
            });
        }
        let ce_zero_all = (self.n_zero_all == self.n).then(|| self.ce_zero_all / n);
        Ok(DownstreamStats {
            n_positions: self.n,
            ce_clean,
            ce_sae,
            ce_zero_abl: ce_zero,
            ce_mean_abl: ce_mean,
            ce_recovered_zero: ce_recovered(ce_clean, ce_sae, ce_zero),
            ce_recovered_mean: ce_recovered(ce_clean, ce_sae, ce_mean),
            delta_lm_loss: ce_sae - ce_clean,
            kl_sae,
            kl_zero_abl: kl_zero,
            kl_mean_abl: kl_mean,
            kl_score_zero: kl_score(kl_sae, kl_zero),
            kl_score_mean: kl_score(kl_sae, kl_mean),
            ce_zero_abl_all_positions: ce_zero_all,
            ce_recovered_zero_all_positions: ce_zero_all
                .and_then(|z| ce_recovered(ce_clean, ce_sae, z)),
        })
    }
}

/// `(ce_abl − ce_sae) / (ce_abl − ce_clean)`, None when the ablation does not change the loss.
pub fn ce_recovered(ce_clean: f64, ce_sae: f64, ce_abl: f64) -> Option<f64> {
    let denom = ce_abl - ce_clean;
    (denom != 0.0).then(|| (ce_abl - ce_sae) / denom)
}

/// `(kl_abl − kl_sae) / kl_abl`, None when `kl_abl` is 0.
pub fn kl_score(kl_sae: f64, kl_abl: f64) -> Option<f64> {
    (kl_abl != 0.0).then(|| (kl_abl - kl_sae) / kl_abl)
}
