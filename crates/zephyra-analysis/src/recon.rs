//! Reconstruction figures, accumulated in `f64` while streaming over batches.
//!
//! With `x` the activation, `x̂` the SAE's reconstruction, `n` tokens of width `d`:
//! - `mse = Σ‖x−x̂‖² / (n·d)` (per element), `mse_per_token = Σ‖x−x̂‖² / n`;
//! - `fve = 1 − Σ‖x−x̂‖² / Σ‖x−mean(x)‖²` (centred: `mean(x)` is the per-dimension mean over the eval tokens);
//! - `cosine = (1/n) Σ ⟨x,x̂⟩ / (‖x‖‖x̂‖)` (a token whose `x` or `x̂` is zero counts as 0);
//! - `rel_bias = Σ‖x̂‖² / Σ⟨x,x̂⟩`: the γ minimising `E‖x̂/γ − x‖²` (1 = unbiased, < 1 = shrinkage).
//!
//! The centred denominator is accumulated with Chan et al.'s pairwise update: each batch's own mean and sum of
//! squared deviations (two passes over the batch) are merged into the running ones, so no `Σx²−n·mean²`
//! cancellation ever happens.

use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// Reconstruction figures over a set of tokens (see the module docs for the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReconStats {
    /// Tokens accumulated.
    pub n_tokens: u64,
    /// Mean squared error per element.
    pub mse: f64,
    /// Summed squared error per token, `Σ‖x−x̂‖² / n`.
    pub mse_per_token: f64,
    /// Fraction of (centred) variance explained.
    pub fve: f64,
    /// Mean cosine similarity between `x` and `x̂`.
    pub cosine: f64,
    /// Relative reconstruction bias `Σ‖x̂‖² / Σ⟨x,x̂⟩`.
    pub rel_bias: f64,
    /// Total centred variance per token, `Σ‖x−mean(x)‖² / n`.
    pub variance_per_token: f64,
    /// Mean activation norm `(1/n) Σ‖x‖`.
    pub mean_norm: f64,
}

/// Streams `(x, x̂)` batches into [`ReconStats`].
#[derive(Debug, Clone)]
pub struct ReconAccumulator {
    d_in: usize,
    n: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    sse: f64,
    sum_cos: f64,
    sum_xhat_sq: f64,
    sum_dot: f64,
    sum_norm: f64,
    batch_mean: Vec<f64>,
    batch_m2: Vec<f64>,
}

impl ReconAccumulator {
    /// An empty accumulator for vectors of width `d_in`.
    pub fn new(d_in: usize) -> Self {
        Self {
            d_in,
            n: 0,
            mean: vec![0.0; d_in],
            m2: vec![0.0; d_in],
            sse: 0.0,
            sum_cos: 0.0,
            sum_xhat_sq: 0.0,
            sum_dot: 0.0,
            sum_norm: 0.0,
            batch_mean: vec![0.0; d_in],
            batch_m2: vec![0.0; d_in],
        }
    }

    /// Width of the vectors.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Tokens accumulated so far.
    pub fn n_tokens(&self) -> u64 {
        self.n
    }

    /// The running per-dimension mean of `x` (what mean ablation splices in).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Adds a batch: `x` and `x_hat` are row-major `[rows, d_in]` with the same length.
    pub fn add(&mut self, x: &[f32], x_hat: &[f32]) -> Result<()> {
        let d = self.d_in;
        let rows = check_rows(x, d, "d_in", "activations (a multiple of d_in)")?;
        if x_hat.len() != x.len() {
            return Err(AnalysisError::ShapeMismatch {
                what: "reconstruction",
                expected: x.len(),
                got: x_hat.len(),
            });
        }
        if rows == 0 {
            return Ok(());
        }
        // Per-token terms.
        for (xr, hr) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
            let (mut err, mut dot, mut xx, mut hh) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            for (&a, &b) in xr.iter().zip(hr) {
                let (a, b) = (f64::from(a), f64::from(b));
                err += (a - b) * (a - b);
                dot += a * b;
                xx += a * a;
                hh += b * b;
            }
            self.sse += err;
            self.sum_dot += dot;
            self.sum_xhat_sq += hh;
            self.sum_norm += xx.sqrt();
            if xx > 0.0 && hh > 0.0 {
                self.sum_cos += dot / (xx.sqrt() * hh.sqrt());
            }
        }
        // Batch mean and M2 (two passes), then Chan's merge.
        self.batch_mean.iter_mut().for_each(|m| *m = 0.0);
        self.batch_m2.iter_mut().for_each(|m| *m = 0.0);
        for xr in x.chunks_exact(d) {
            for (m, &a) in self.batch_mean.iter_mut().zip(xr) {
                *m += f64::from(a);
            }
        }
        let nb = rows as f64;
        self.batch_mean.iter_mut().for_each(|m| *m /= nb);
        for xr in x.chunks_exact(d) {
            for ((m2, &m), &a) in self.batch_m2.iter_mut().zip(&self.batch_mean).zip(xr) {
                let dev = f64::from(a) - m;
                *m2 += dev * dev;
            }
        }
        let na = self.n as f64;
        let n = na + nb;
        for j in 0..d {
            let delta = self.batch_mean[j] - self.mean[j];
            self.mean[j] += delta * nb / n;
            self.m2[j] += self.batch_m2[j] + delta * delta * na * nb / n;
        }
        self.n += rows as u64;
        Ok(())
    }

    /// The figures so far; [`AnalysisError::NoTokens`] when nothing was added.
    pub fn finish(&self) -> Result<ReconStats> {
        if self.n == 0 {
            return Err(AnalysisError::NoTokens { seen: 0 });
        }
        let n = self.n as f64;
        let total_var: f64 = self.m2.iter().sum();
        let fve = if total_var > 0.0 {
            1.0 - self.sse / total_var
        } else {
            f64::NAN
        };
        let rel_bias = if self.sum_dot != 0.0 {
            self.sum_xhat_sq / self.sum_dot
        } else {
            f64::NAN
        };
        let stats = ReconStats {
            n_tokens: self.n,
            mse: self.sse / (n * self.d_in as f64),
            mse_per_token: self.sse / n,
            fve,
            cosine: self.sum_cos / n,
            rel_bias,
            variance_per_token: total_var / n,
            mean_norm: self.sum_norm / n,
        };
        if !stats.mse.is_finite() {
            return Err(AnalysisError::NotFinite {
                what: "reconstruction MSE",
                value: stats.mse,
            });
        }
        Ok(stats)
    }
}

/// Checks that `values` is whole rows of `width` (named `width_name`, non-zero) and returns their number.
pub(crate) fn check_rows(
    values: &[f32],
    width: usize,
    width_name: &str,
    what: &'static str,
) -> Result<usize> {
    if width == 0 {
        return Err(AnalysisError::InvalidArgument(format!("{width_name} is 0")));
    }
    if values.len() % width != 0 {
        return Err(AnalysisError::ShapeMismatch {
            what,
            expected: values.len() / width * width,
            got: values.len(),
        });
    }
    Ok(values.len() / width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_ragged_input() {
        let mut acc = ReconAccumulator::new(3);
        assert!(matches!(
            acc.add(&[1.0; 4], &[1.0; 4]),
            Err(AnalysisError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            acc.add(&[1.0; 3], &[1.0; 6]),
            Err(AnalysisError::ShapeMismatch { .. })
        ));
        assert!(matches!(acc.finish(), Err(AnalysisError::NoTokens { .. })));
    }
}
