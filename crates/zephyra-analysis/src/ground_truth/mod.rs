//! Scoring an SAE against the known features of synthetic data ([`zephyra_sae::synth`]), as
//! SynthSAEBench does (SAELens 6.54 `sae_lens.synthetic.evals`) plus absorption:
//!
//! - **MCC**: the mean `|cos|` between true directions and decoder rows over the pairs of the minimum-cost
//!   one-to-one matching (Hungarian, as SAELens; over `min(n_features, d_sae)` pairs). `mcc_best_match` is
//!   the looser mean over true features of the best `|cos|` with any decoder row (latents may repeat).
//! - **recall / precision / F1** of the matched latents as detectors of their feature's firing, on held-out
//!   rows, averaged over true features that fire there (precision counts 0 for a silent latent).
//! - **uniqueness**: distinct true features among the latents' best matches, over `d_sae` (SAELens).
//! - **absorption**: per hierarchy parent, the fraction of rows where a child fires (so the parent does too)
//!   but the parent's matched latent is silent; averaged over parents with such rows. Chanin et al. 2024,
//!   "A is for Absorption", measured against the truth instead of probes.
//! - **L0, FVE, dead** on the same rows, with the accumulators `zephyra eval` uses.

pub mod assign;
pub mod report;

use serde::{Deserialize, Serialize};
use zephyra_sae::synth::{SynthModel, BLOCK_ROWS, EVAL_STREAM};
use zephyra_sae::Sae;

use crate::error::{AnalysisError, Result};
use crate::{ReconAccumulator, SparsityAccumulator};

pub use crate::seeds::{aggregate, Interval};
pub use assign::{abs_cosines, min_cost_assignment};
pub use report::{SaeFigures, SynthEvalReport};

/// The |cos| between a true feature and its matched latent above which the SAE counts as having learned it.
pub const LEARNED_COS: f32 = 0.5;

/// Every ground-truth figure of one SAE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruthFigures {
    /// Mean `|cos|` over the Hungarian-matched pairs.
    pub mcc: f64,
    /// Mean over true features of the best `|cos|` with any decoder row.
    pub mcc_best_match: f64,
    /// Mean recall of the matched latents.
    pub recall: f64,
    /// Mean precision of the matched latents.
    pub precision: f64,
    /// Mean F1 of the matched latents.
    pub f1: f64,
    /// Distinct best-matched true features over `d_sae`.
    pub uniqueness: f64,
    /// Mean over parents of P(parent's latent silent | a child fires); `None` without a hierarchy.
    pub absorption: Option<f64>,
    /// Parents behind `absorption`.
    pub absorption_parents: usize,
    /// The same over the parents the SAE learned: matched latent |cos| ≥ [`LEARNED_COS`].
    pub absorption_learned: Option<f64>,
    /// Parents behind `absorption_learned`.
    pub learned_parents: usize,
    /// Mean active latents per row.
    pub l0: f64,
    /// Mean true features per row.
    pub true_l0: f64,
    /// Fraction of variance explained.
    pub fve: f64,
    /// Latents that never fired on the rows.
    pub n_dead: u64,
    /// `n_dead / d_sae`.
    pub dead_fraction: f64,
    /// Held-out rows scored.
    pub n_rows: u64,
}

impl GroundTruthFigures {
    /// The figures as (name, value) in a fixed order (for tables and [`aggregate`]); an absent absorption
    /// is NaN.
    pub fn named(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("mcc", self.mcc),
            ("mcc_best_match", self.mcc_best_match),
            ("recall", self.recall),
            ("precision", self.precision),
            ("f1", self.f1),
            ("uniqueness", self.uniqueness),
            ("absorption", self.absorption.unwrap_or(f64::NAN)),
            (
                "absorption_learned",
                self.absorption_learned.unwrap_or(f64::NAN),
            ),
            ("l0", self.l0),
            ("true_l0", self.true_l0),
            ("fve", self.fve),
            ("dead_fraction", self.dead_fraction),
        ]
    }
}

/// Progress of [`evaluate_synth`].
#[derive(Debug, Clone, Copy)]
pub struct SynthProgress {
    /// Rows scored so far.
    pub rows_done: u64,
    /// Rows to score.
    pub rows_total: u64,
}

/// Scores `sae` against `truth` on `n_blocks` held-out blocks ([`EVAL_STREAM`]) of [`BLOCK_ROWS`] rows.
pub fn evaluate_synth(
    sae: &Sae,
    truth: &SynthModel,
    n_blocks: u64,
    on_progress: &mut dyn FnMut(SynthProgress),
) -> Result<GroundTruthFigures> {
    let (n_true, d) = (truth.cfg.n_features, truth.cfg.d);
    let d_sae = sae.cfg.d_sae;
    if sae.cfg.d_in != d {
        return Err(AnalysisError::InvalidArgument(format!(
            "the SAE reads vectors of width {} but the synthetic data has width {d}: train it on this data (`zephyra train --acts DIR`)",
            sae.cfg.d_in
        )));
    }
    if n_blocks == 0 {
        return Err(AnalysisError::InvalidArgument(
            "no rows to score: use at least one block (--synth-rows ≥ 1024)".into(),
        ));
    }
    let cos = abs_cosines(&truth.directions, n_true, &sae.w_dec, d_sae, d)?;
    let matching = Matching::new(&cos, n_true, d_sae);
    let parents = &truth.hierarchy.parents;

    let mut recon = ReconAccumulator::new(d);
    let mut sparsity = SparsityAccumulator::new(d_sae);
    let (mut tp, mut fp, mut fired) = (vec![0u64; n_true], vec![0u64; n_true], vec![0u64; n_true]);
    let (mut child_rows, mut absorbed) = (vec![0u64; parents.len()], vec![0u64; parents.len()]);
    let mut true_on = vec![false; n_true];
    let mut n_true_active = 0u64;
    let rows_total = n_blocks * BLOCK_ROWS as u64;
    for b in 0..n_blocks {
        let block = truth.block(EVAL_STREAM, b);
        let n = block.n_rows();
        let codes = sae.encode(&block.acts, n)?;
        let x_hat = sae.decode(&codes, n)?;
        recon.add(&block.acts, &x_hat)?;
        sparsity.add(&codes)?;
        for r in 0..n {
            let (feats, _) = block.row(r);
            let z = &codes[r * d_sae..(r + 1) * d_sae];
            n_true_active += feats.len() as u64;
            for &f in feats {
                true_on[f as usize] = true;
                fired[f as usize] += 1;
                if let Some(l) = matching.latent_of[f as usize] {
                    tp[f as usize] += u64::from(z[l] != 0.0);
                }
            }
            for (f, l) in matching.latent_of.iter().enumerate() {
                if let Some(l) = *l {
                    fp[f] += u64::from(z[l] != 0.0 && !true_on[f]);
                }
            }
            for (k, p) in parents.iter().enumerate() {
                if p.children.iter().any(|&c| true_on[c as usize]) {
                    child_rows[k] += 1;
                    let silent = matching.latent_of[p.feature as usize].is_none_or(|l| z[l] == 0.0);
                    absorbed[k] += u64::from(silent);
                }
            }
            for &f in feats {
                true_on[f as usize] = false;
            }
        }
        on_progress(SynthProgress {
            rows_done: (b + 1) * BLOCK_ROWS as u64,
            rows_total,
        });
    }
    let (mut recall, mut precision, mut f1, mut counted) = (0.0, 0.0, 0.0, 0usize);
    for f in 0..n_true {
        if fired[f] == 0 {
            continue;
        }
        let rc = tp[f] as f64 / fired[f] as f64;
        let pr = if tp[f] + fp[f] > 0 {
            tp[f] as f64 / (tp[f] + fp[f]) as f64
        } else {
            0.0
        };
        recall += rc;
        precision += pr;
        f1 += if rc + pr > 0.0 {
            2.0 * rc * pr / (rc + pr)
        } else {
            0.0
        };
        counted += 1;
    }
    let c = counted.max(1) as f64;
    // Mean over the parents `keep` admits (and whose children fired) of P(parent's latent silent | child).
    let absorption_over = |keep: &dyn Fn(usize) -> bool| {
        let rates: Vec<f64> = (0..parents.len())
            .filter(|&k| child_rows[k] > 0 && keep(k))
            .map(|k| absorbed[k] as f64 / child_rows[k] as f64)
            .collect();
        let mean = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
        (mean, rates.len())
    };
    let (absorption, absorption_parents) = absorption_over(&|_| true);
    let (absorption_learned, learned_parents) = absorption_over(&|k| {
        let f = parents[k].feature as usize;
        matching.latent_of[f].is_some_and(|l| cos[f * d_sae + l] >= LEARNED_COS)
    });
    let recon = recon.finish()?;
    let sparsity = sparsity.finish()?;
    Ok(GroundTruthFigures {
        mcc: matching.mcc,
        mcc_best_match: matching.mcc_best_match,
        recall: recall / c,
        precision: precision / c,
        f1: f1 / c,
        uniqueness: matching.uniqueness,
        absorption,
        absorption_parents,
        absorption_learned,
        learned_parents,
        l0: sparsity.l0,
        true_l0: n_true_active as f64 / rows_total as f64,
        fve: recon.fve,
        n_dead: sparsity.n_dead,
        dead_fraction: sparsity.dead_fraction,
        n_rows: rows_total,
    })
}

/// The decoder-only figures and the matched latent of each true feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Matching {
    /// Hungarian MCC.
    pub mcc: f64,
    /// Best-match MCC.
    pub mcc_best_match: f64,
    /// SAELens' uniqueness.
    pub uniqueness: f64,
    /// The latent matched to each true feature (`None` when there are fewer latents than features).
    pub latent_of: Vec<Option<usize>>,
}

impl Matching {
    /// From `|cos|` `[n_true, d_sae]`.
    pub fn new(cos: &[f32], n_true: usize, d_sae: usize) -> Self {
        let best_match = cos
            .chunks_exact(d_sae)
            .map(|row| f64::from(row.iter().copied().fold(0.0, f32::max)))
            .sum::<f64>()
            / n_true.max(1) as f64;
        let mut best_of_latent = vec![(0f32, 0usize); d_sae];
        for (f, row) in cos.chunks_exact(d_sae).enumerate() {
            for (l, &c) in row.iter().enumerate() {
                if f == 0 || c > best_of_latent[l].0 {
                    best_of_latent[l] = (c, f);
                }
            }
        }
        let mut distinct: Vec<usize> = best_of_latent.iter().map(|b| b.1).collect();
        distinct.sort_unstable();
        distinct.dedup();
        // Hungarian on cost 1 − |cos|, rows the smaller side.
        let mut latent_of = vec![None; n_true];
        let pairs: Vec<(usize, usize)> = if n_true <= d_sae {
            let cost: Vec<f64> = cos.iter().map(|&c| 1.0 - f64::from(c)).collect();
            min_cost_assignment(&cost, n_true, d_sae)
                .into_iter()
                .enumerate()
                .collect()
        } else {
            let mut cost = vec![0f64; n_true * d_sae];
            for f in 0..n_true {
                for l in 0..d_sae {
                    cost[l * n_true + f] = 1.0 - f64::from(cos[f * d_sae + l]);
                }
            }
            min_cost_assignment(&cost, d_sae, n_true)
                .into_iter()
                .enumerate()
                .map(|(l, f)| (f, l))
                .collect()
        };
        let mut total = 0.0;
        for &(f, l) in &pairs {
            latent_of[f] = Some(l);
            total += f64::from(cos[f * d_sae + l]);
        }
        Self {
            mcc: total / pairs.len().max(1) as f64,
            mcc_best_match: best_match,
            uniqueness: distinct.len() as f64 / d_sae.max(1) as f64,
            latent_of,
        }
    }
}
