//! The logit effect of decoder directions: `W_U · (g ⊙ d_i)`, with `W_U` the unembedding (the token
//! embedding when tied) and `g` the final RMSNorm's scale. This is the direct effect on the logits of adding
//! the direction to the residual stream, up to the norm's positive `1/rms` factor, so its ranking of tokens
//! is exact.

use std::path::Path;

use candle_core::Device;
use zephyra_sae::kernels::{matmul, MatRef};

use crate::error::{AnalysisError, Result};

/// The final norm's scale and the unembedding matrix of a model.
#[derive(Debug, Clone)]
pub struct Unembedding {
    /// Residual width.
    pub d_model: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// `output_norm.weight`, `[d_model]`.
    pub norm_scale: Vec<f32>,
    /// `[vocab, d_model]`, row-major.
    pub w_u: Vec<f32>,
}

/// Promoted (largest first) and suppressed (most negative first) tokens of one direction.
pub type LogitEffect = (Vec<(u32, f32)>, Vec<(u32, f32)>);

impl Unembedding {
    /// Reads `output_norm.weight` and `output.weight` (or `token_embd.weight` when the embeddings are tied)
    /// from a GGUF file, dequantized to `f32`.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let model = |e: String| AnalysisError::Model(format!("{}: {e}", path.display()).into());
        let (content, mut file) =
            zephyra_lm::gguf::read_content(path).map_err(|e| model(e.to_string()))?;
        let mut read = |name: &str| -> Result<Option<(Vec<usize>, Vec<f32>)>> {
            let Some(info) = content.tensor_infos.get(name) else {
                return Ok(None);
            };
            let q = info
                .read(&mut file, content.tensor_data_offset, &Device::Cpu)
                .map_err(|e| model(e.to_string()))?;
            let t = q
                .dequantize(&Device::Cpu)
                .map_err(|e| model(e.to_string()))?;
            let dims = t.dims().to_vec();
            let data = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| model(e.to_string()))?;
            Ok(Some((dims, data)))
        };
        let missing = |name: &str| {
            model(format!(
                "tensor `{name}` is missing; is this a Llama-family GGUF?"
            ))
        };
        let (_, norm_scale) =
            read("output_norm.weight")?.ok_or_else(|| missing("output_norm.weight"))?;
        let (dims, w_u) = match read("output.weight")? {
            Some(t) => t,
            None => read("token_embd.weight")?.ok_or_else(|| missing("token_embd.weight"))?,
        };
        let d_model = norm_scale.len();
        if dims.len() != 2 || dims[1] != d_model {
            return Err(AnalysisError::ShapeMismatch {
                what: "unembedding columns",
                expected: d_model,
                got: dims.get(1).copied().unwrap_or(0),
            });
        }
        Ok(Self {
            d_model,
            vocab: dims[0],
            norm_scale,
            w_u,
        })
    }

    /// The `n` most promoted and `n` most suppressed tokens of each row of `w_dec` (`[d_sae, d_model]`).
    pub fn logit_effects(&self, w_dec: &[f32], d_sae: usize, n: usize) -> Result<Vec<LogitEffect>> {
        let d = self.d_model;
        if w_dec.len() != d_sae * d {
            return Err(AnalysisError::WidthMismatch {
                hook: "the unembedding".into(),
                hook_width: d,
                sae_d_in: w_dec.len() / d_sae.max(1),
            });
        }
        let n = n.min(self.vocab);
        const CHUNK: usize = 64;
        let mut out = Vec::with_capacity(d_sae);
        let mut scaled = vec![0f32; CHUNK * d];
        let mut logits = vec![0f32; CHUNK * self.vocab];
        for start in (0..d_sae).step_by(CHUNK) {
            let rows = CHUNK.min(d_sae - start);
            for r in 0..rows {
                let src = &w_dec[(start + r) * d..(start + r + 1) * d];
                for ((s, &w), &g) in scaled[r * d..(r + 1) * d]
                    .iter_mut()
                    .zip(src)
                    .zip(&self.norm_scale)
                {
                    *s = w * g;
                }
            }
            let dst = &mut logits[..rows * self.vocab];
            matmul(
                dst,
                MatRef::row_major(&scaled[..rows * d], rows, d),
                MatRef::row_major(&self.w_u, self.vocab, d).t(),
                false,
                1.0,
            );
            for row in dst.chunks_exact(self.vocab) {
                out.push((extremes(row, n, true), extremes(row, n, false)));
            }
        }
        Ok(out)
    }
}

/// The `n` largest (or smallest) values of `row` with their indices, in order.
fn extremes(row: &[f32], n: usize, largest: bool) -> Vec<(u32, f32)> {
    let mut idx: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let cmp = |a: &(u32, f32), b: &(u32, f32)| {
        let o = if largest {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        };
        o.then(a.0.cmp(&b.0))
    };
    if n == 0 {
        return Vec::new();
    }
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    // A fresh vector of `n` entries: the scratch one holds the whole vocabulary, and one is kept per
    // latent and sign (2 × 9216 × 49152 entries were 7 GB).
    idx.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_match_a_hand_computation() {
        // d = 2, vocab = 3: W_U rows (1,0), (0,1), (1,1); g = (2, 1).
        let u = Unembedding {
            d_model: 2,
            vocab: 3,
            norm_scale: vec![2.0, 1.0],
            w_u: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        };
        // direction (1, -3): g⊙d = (2, -3) → logits (2, -3, -1).
        let e = u.logit_effects(&[1.0, -3.0], 1, 2).unwrap();
        assert_eq!(e[0].0, vec![(0, 2.0), (2, -1.0)]);
        assert_eq!(e[0].1, vec![(1, -3.0), (2, -1.0)]);
        assert!(u.logit_effects(&[1.0], 1, 2).is_err());
    }

    #[test]
    fn extremes_keep_only_their_entries() {
        let row: Vec<f32> = (0..49_152).map(|i| ((i * 7919) % 49_152) as f32).collect();
        let top = extremes(&row, 10, true);
        assert_eq!(
            top[0],
            (
                row.iter().position(|&v| v == 49_151.0).unwrap() as u32,
                49_151.0
            )
        );
        assert_eq!(top.len(), 10);
        // Kept once per latent and sign: a vocabulary-sized allocation behind each was 7 GB at d_sae 9216.
        assert!(top.capacity() < 64, "capacity {}", top.capacity());
        assert!(extremes(&row, 10, false).capacity() < 64);
    }
}
