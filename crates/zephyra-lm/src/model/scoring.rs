//! Logits a block of rows at a time: per-position scores of a sequence without ever holding a
//! `[seq, vocab]` matrix (Gemma 3's vocabulary has 262,144 entries: 1 MB of logits per position).

use gemm::Parallelism;

use super::kernels::bf16::{matmul_nt_bf16, Bf16Kernel};
use super::kernels::matmul_nt;
use super::{Llama, Logits};
use crate::error::{LmError, Result};
use crate::hooks::{HookPoint, Hooks};

/// Positions whose logits are computed together (32 × 262,144 × 4 B = 32 MB for Gemma 3): callers of
/// [`Llama::unembed_rows`] that stream many rows take them this many at a time.
pub const LOGIT_ROWS: usize = 32;

impl Llama {
    /// Runs `ids` through the model and calls `f(position, logits)` for every position in order,
    /// computing the logits [`LOGIT_ROWS`] rows at a time (never a `[seq, vocab]` matrix).
    pub fn for_each_logit_row(&self, ids: &[u32], mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        let mut hooks = Hooks::capturing([HookPoint::LnFinal]);
        let mut out = self.forward(&[ids], &mut hooks, Logits::None)?;
        let normed = out
            .activations
            .take(HookPoint::LnFinal)
            .ok_or_else(|| LmError::InvalidInput("the final norm was not captured".into()))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let d = self.config.d_model;
        let mut logits = Vec::new();
        for (c, chunk) in normed.chunks(LOGIT_ROWS * d).enumerate() {
            self.unembed_rows(chunk, &mut logits)?;
            for (r, row) in logits.chunks_exact(self.config.vocab_size).enumerate() {
                f(c * LOGIT_ROWS + r, row);
            }
        }
        Ok(())
    }

    /// The logits of final-norm rows (`ln_final.hook_normalized`, `[rows, d_model]` row-major) into
    /// `out`, resized to `[rows, vocab]`: `f32` products, or with [`super::Precision::Bf16`] bf16
    /// products of the unembedding packed once at load (`f32` accumulation). `out` grows with `rows`: stream long inputs
    /// [`LOGIT_ROWS`] rows at a time.
    ///
    /// Errors: `normed` is not a whole number of `d_model` rows.
    pub fn unembed_rows(&self, normed: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let (d, vocab) = (self.config.d_model, self.config.vocab_size);
        if !normed.len().is_multiple_of(d) {
            return Err(LmError::InvalidInput(format!(
                "{} final-norm values are not whole rows of d_model {d}",
                normed.len()
            )));
        }
        let rows = normed.len() / d;
        let n = rows * vocab;
        if out.capacity() < n {
            // A fresh zeroed allocation arrives as untouched zero pages: the product's threads fault them
            // in as they write, instead of one thread first writing zeros over up to gigabytes of logits.
            *out = vec![0.0; n];
        } else {
            out.clear();
            out.resize(n, 0.0);
        }
        match &self.unembed_bf16 {
            Some(w) => matmul_nt_bf16(out, normed, d, w, rows, Bf16Kernel::active()),
            None => matmul_nt(
                out,
                normed,
                d,
                self.unembedding(),
                rows,
                vocab,
                d,
                Parallelism::Rayon(0),
            ),
        }
        Ok(())
    }

    /// `log p(ids[i + 1] | ids[..=i])` for every `i < ids.len() - 1` (natural log); the mean of the
    /// negated values is the next-token cross-entropy.
    pub fn next_token_logprobs(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(ids.len().saturating_sub(1));
        self.for_each_logit_row(ids, |i, row| {
            if let Some(&next) = ids.get(i + 1) {
                out.push(log_softmax_at(row, next as usize));
            }
        })?;
        Ok(out)
    }
}

/// `log softmax(row)[i]`, accumulated in `f64`.
pub fn log_softmax_at(row: &[f32], i: usize) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
    (f64::from(row[i] - max) - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_hand_value() {
        // softmax([0, ln 3]) = [0.25, 0.75]
        let row = [0.0, 3f32.ln()];
        assert!((log_softmax_at(&row, 0) - 0.25f32.ln()).abs() < 1e-6);
        assert!((log_softmax_at(&row, 1) - 0.75f32.ln()).abs() < 1e-6);
    }
}
