//! Linear layers and the number format of their weights and products ([`Precision`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::kernels::bf16::{matmul_nt_bf16, Bf16Kernel, Bf16Matrix};
use super::kernels::{matmul_nt_par, MatRef};
use crate::error::LmError;
use crate::gguf::F32Tensor;

/// The number format of the linear layers (attention Q/K/V/O and the MLP) and of the unembedding:
/// weights are stored and multiplied in it, with `f32` accumulation (the unembedding in bf16 is a
/// packed copy; the `f32` matrix stays for the embedding lookup and the weight accessors).
/// Embeddings, norms, RoPE, attention scores, softmax and residual sums stay `f32` in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// `f32` weights and products (the GGUF tensors dequantized).
    #[default]
    F32,
    /// bfloat16 weights (re-quantized from the dequantized `f32`) and bf16 activations at the
    /// products' inputs, accumulated in `f32`.
    Bf16,
}

impl Precision {
    /// Every precision, in the order of their names in messages.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// The name: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = LmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                LmError::InvalidInput(format!("unknown precision `{s}`; use `f32` or `bf16`"))
            })
    }
}

/// Weights of a linear layer, `[n_out, n_in]`.
#[derive(Debug)]
enum Weights {
    F32(Vec<f32>),
    Bf16(Bf16Matrix),
}

/// A linear layer `y = x · wᵀ` with `w` stored `[n_out, n_in]`.
#[derive(Debug)]
pub(crate) struct Linear {
    w: Weights,
    pub(crate) n_in: usize,
    pub(crate) n_out: usize,
}

impl Linear {
    /// `dst[rows, n_out] = x[rows, n_in] · wᵀ`, with `x` rows `x_stride` apart.
    pub(crate) fn forward(&self, dst: &mut [f32], x: &[f32], x_stride: usize, rows: usize) {
        match &self.w {
            Weights::F32(w) => {
                let dims = (rows, self.n_out, self.n_in);
                matmul_nt_par(dst, MatRef::rows(x, x_stride), w, dims);
            }
            Weights::Bf16(w) => matmul_nt_bf16(dst, x, x_stride, w, rows, Bf16Kernel::active()),
        }
    }

    /// Stacks the rows of several `[n_out_i, n_in]` tensors into one layer stored in `precision`.
    pub(crate) fn stack(parts: &[&F32Tensor], precision: Precision) -> Linear {
        let n_in = parts[0].shape[1];
        let n_out = parts.iter().map(|t| t.shape[0]).sum();
        let mut w = Vec::with_capacity(n_in * n_out);
        for t in parts {
            w.extend_from_slice(&t.data);
        }
        let w = match precision {
            Precision::F32 => Weights::F32(w),
            Precision::Bf16 => Weights::Bf16(Bf16Matrix::from_f32(&w, n_out, n_in)),
        };
        Linear { w, n_in, n_out }
    }

    /// The f32 weights `[n_out, n_in]`, or `None` when they are stored in bf16.
    pub(crate) fn f32_weights(&self) -> Option<&[f32]> {
        match &self.w {
            Weights::F32(w) => Some(w),
            Weights::Bf16(_) => None,
        }
    }

    /// The format the weights are stored in.
    pub(crate) fn precision(&self) -> Precision {
        match &self.w {
            Weights::F32(_) => Precision::F32,
            Weights::Bf16(m) => {
                debug_assert_eq!((m.n(), m.k()), (self.n_out, self.n_in));
                Precision::Bf16
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
        }
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("`fp16`") && err.contains("bf16"), "{err}");
    }
}
