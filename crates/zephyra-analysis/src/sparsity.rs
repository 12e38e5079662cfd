//! Sparsity and latent health, from the SAE's codes `f` (`[tokens, d_sae]`).
//!
//! - `l0 = (1/n) Σ_t #{i : f_ti ≠ 0}` (mean active latents per token), `l1 = (1/n) Σ_t Σ_i |f_ti|`;
//! - density of latent `i` = (tokens on which it fired) / n;
//! - dead fraction = share of latents with density 0 over the eval tokens; dense fraction = share with
//!   density > [`DENSE_THRESHOLD`] (10 %);
//! - the histogram bins `log10(density)` of the latents that fired, in bins of [`HIST_BIN_WIDTH`] decades
//!   from `floor(log10(1/n))` up to 0; dead latents are counted apart (`log10 0 = −∞`).

use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// A latent firing on more than this share of tokens is "dense".
pub const DENSE_THRESHOLD: f64 = 0.10;
/// Width of a feature-density histogram bin, in decades.
pub const HIST_BIN_WIDTH: f64 = 0.25;

/// Histogram of `log10(feature density)` over the latents that fired at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityHistogram {
    /// Bin edges in `log10(density)`, `counts.len() + 1` of them, increasing; the last is 0.
    pub edges: Vec<f64>,
    /// Latents per bin (`[edges[i], edges[i+1])`, the last bin closed on the right).
    pub counts: Vec<u64>,
    /// Latents that never fired (not in any bin).
    pub n_dead: u64,
}

/// Sparsity and latent-health figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsityStats {
    /// Tokens accumulated.
    pub n_tokens: u64,
    /// Number of latents.
    pub d_sae: usize,
    /// Mean active latents per token.
    pub l0: f64,
    /// Mean L1 norm of the codes per token.
    pub l1: f64,
    /// Latents that never fired.
    pub n_dead: u64,
    /// `n_dead / d_sae`.
    pub dead_fraction: f64,
    /// Latents with density > 10 %.
    pub n_dense: u64,
    /// `n_dense / d_sae`.
    pub dense_fraction: f64,
    /// Histogram of `log10(density)`.
    pub density_histogram: DensityHistogram,
}

/// Streams code batches into [`SparsityStats`], keeping a fire count per latent.
#[derive(Debug, Clone)]
pub struct SparsityAccumulator {
    d_sae: usize,
    n: u64,
    sum_l0: u64,
    sum_l1: f64,
    fire_counts: Vec<u64>,
}

impl SparsityAccumulator {
    /// An empty accumulator for `d_sae` latents.
    pub fn new(d_sae: usize) -> Self {
        Self {
            d_sae,
            n: 0,
            sum_l0: 0,
            sum_l1: 0.0,
            fire_counts: vec![0; d_sae],
        }
    }

    /// Per-latent fire counts so far.
    pub fn fire_counts(&self) -> &[u64] {
        &self.fire_counts
    }

    /// Adds a batch of codes, row-major `[rows, d_sae]`.
    pub fn add(&mut self, codes: &[f32]) -> Result<()> {
        let d = self.d_sae;
        crate::recon::check_rows(codes, d, "d_sae", "codes (a multiple of d_sae)")?;
        for row in codes.chunks_exact(d) {
            let mut l1 = 0.0f64;
            for (count, &f) in self.fire_counts.iter_mut().zip(row) {
                if f != 0.0 {
                    *count += 1;
                    self.sum_l0 += 1;
                    l1 += f64::from(f.abs());
                }
            }
            self.sum_l1 += l1;
        }
        self.n += (codes.len() / d) as u64;
        Ok(())
    }

    /// The figures so far; [`AnalysisError::NoTokens`] when nothing was added.
    pub fn finish(&self) -> Result<SparsityStats> {
        if self.n == 0 {
            return Err(AnalysisError::NoTokens { seen: 0 });
        }
        let n = self.n as f64;
        let d = self.d_sae as f64;
        let n_dead = self.fire_counts.iter().filter(|&&c| c == 0).count() as u64;
        let n_dense = self
            .fire_counts
            .iter()
            .filter(|&&c| c as f64 / n > DENSE_THRESHOLD)
            .count() as u64;
        Ok(SparsityStats {
            n_tokens: self.n,
            d_sae: self.d_sae,
            l0: self.sum_l0 as f64 / n,
            l1: self.sum_l1 / n,
            n_dead,
            dead_fraction: n_dead as f64 / d,
            n_dense,
            dense_fraction: n_dense as f64 / d,
            density_histogram: density_histogram(&self.fire_counts, self.n),
        })
    }
}

/// Bins `log10(count / n_tokens)` of the latents with a non-zero count (see the module docs).
pub fn density_histogram(fire_counts: &[u64], n_tokens: u64) -> DensityHistogram {
    let n_dead = fire_counts.iter().filter(|&&c| c == 0).count() as u64;
    if n_tokens == 0 {
        return DensityHistogram {
            edges: vec![0.0],
            counts: Vec::new(),
            n_dead,
        };
    }
    let lowest = (1.0 / n_tokens as f64).log10();
    // Number of bins so that the first edge is at or below log10(1/n); a hair of slack against rounding.
    let n_bins = ((-lowest) / HIST_BIN_WIDTH - 1e-9).ceil().max(1.0) as usize;
    let edges: Vec<f64> = (0..=n_bins)
        .map(|i| -((n_bins - i) as f64) * HIST_BIN_WIDTH)
        .collect();
    let mut counts = vec![0u64; n_bins];
    for &c in fire_counts.iter().filter(|&&c| c > 0) {
        let v = (c as f64 / n_tokens as f64).log10();
        let bin = ((v - edges[0]) / HIST_BIN_WIDTH).floor();
        let bin = (bin.max(0.0) as usize).min(n_bins - 1);
        counts[bin] += 1;
    }
    DensityHistogram {
        edges,
        counts,
        n_dead,
    }
}
