//! Transcoders as dictionaries: the configuration that makes an SAE a transcoder (output width `d_out`,
//! optional skip path) and inference (`transcode`). The training math is shared with the SAE
//! ([`crate::arch`]): a transcoder's training rows are `[x | y]` and its loss is on `y`.
//!
//! A transcoder (Dunefsky, Chlenski & Nanda 2024, "Transcoders Find Interpretable LLM Feature Circuits")
//! reads an activation `x` (`d_in`, e.g. an MLP's normalised input) and predicts another, `y` (`d_out`,
//! the MLP's output): `ŷ = W_dec f(x) + b_dec (+ W_skip x)`, `f` any sparse activation of the SAE
//! trainer. The skip path is that of the "skip transcoders" (Paulo, Shabalin & Belrose 2025,
//! "Transcoders Beat Sparse Autoencoders for Interpretability"; Gemma Scope 2). Weights use SAELens 6.54's
//! names and orientation: `W_dec` `[d_sae, d_out]`, `b_dec` `[d_out]`, `W_skip` `[d_out, d_in]`.

use serde::{Deserialize, Serialize};

use crate::kernels::{matmul, MatRef, Real};
use crate::sae::{Architecture, SaeConfig, SaeOf};
use crate::{Result, SaeError};

/// What makes a dictionary a transcoder: it predicts another activation of width `d_out` from its
/// input, optionally with an affine skip path `W_skip x` (see [`SaeConfig::transcoder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscoderShape {
    /// Output dimension (SAELens' `d_out`).
    pub d_out: usize,
    /// Whether the output has the skip term `W_skip x` (`W_skip` `[d_out, d_in]`).
    pub skip: bool,
}

impl SaeConfig {
    /// A transcoder reading `d_in`-wide inputs and predicting `d_out`-wide outputs through `d_sae` latents,
    /// with the skip path `W_skip x` when `skip`. `apply_b_dec_to_input` is false: `b_dec` lives in the
    /// output space. Gated and matryoshka transcoders are refused.
    pub fn transcoder(
        d_in: usize,
        d_out: usize,
        d_sae: usize,
        architecture: Architecture,
        skip: bool,
    ) -> Result<Self> {
        let cfg = Self {
            apply_b_dec_to_input: false,
            transcoder: Some(TranscoderShape { d_out, skip }),
            ..Self::new(d_in, d_sae, architecture)?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Output dimension: `d_out` for a transcoder, `d_in` for an SAE.
    pub fn d_out(&self) -> usize {
        self.transcoder.map_or(self.d_in, |t| t.d_out)
    }

    /// Whether this is a transcoder (output read from another activation than the input).
    pub fn is_transcoder(&self) -> bool {
        self.transcoder.is_some()
    }

    /// Whether the output has the skip term `W_skip x`.
    pub fn has_skip(&self) -> bool {
        self.transcoder.is_some_and(|t| t.skip)
    }

    /// Width of one training row: `d_in` for an SAE, `d_in + d_out` for a transcoder (its rows are
    /// `[x | y]`, the input followed by the target).
    pub fn row_width(&self) -> usize {
        match self.transcoder {
            Some(t) => self.d_in + t.d_out,
            None => self.d_in,
        }
    }

    pub(crate) fn validate_transcoder(&self, t: TranscoderShape) -> Result<()> {
        let bytes = self
            .d_sae
            .checked_mul(t.d_out)
            .and_then(|n| n.checked_mul(4))
            .filter(|&b| b <= isize::MAX as usize);
        if t.d_out == 0 || bytes.is_none() {
            return Err(SaeError::invalid(
                "d_out",
                t.d_out,
                "a transcoder's output width must be positive and its decoder fit in memory",
            ));
        }
        if self.apply_b_dec_to_input {
            return Err(SaeError::invalid(
                "apply_b_dec_to_input",
                true,
                "a transcoder's b_dec lives in the output space and cannot be subtracted from its \
                 input; set it to false",
            ));
        }
        if self.architecture == Architecture::Gated {
            return Err(SaeError::invalid(
                "--arch",
                "gated",
                "gated transcoders are not supported; use relu, relu-unit, topk, batchtopk or jumprelu",
            ));
        }
        if let Architecture::Matryoshka { .. } = self.architecture {
            // The nested-prefix losses (`arch/codes/matryoshka.rs`) reconstruct the input, not a target.
            return Err(SaeError::invalid(
                "--arch",
                "matryoshka",
                "matryoshka transcoders are not supported; use batchtopk (the same codes without the \
                 nested prefixes), relu, relu-unit, topk or jumprelu",
            ));
        }
        Ok(())
    }
}

impl<T: Real> SaeOf<T> {
    /// The transcoder's prediction `ŷ = decode(encode(x)) + W_skip x` (`[n_rows, d_out]`) of inputs `x`
    /// (`[n_rows, d_in]`); for an SAE, the reconstruction `decode(encode(x))`.
    pub fn transcode(&self, x: &[T], n_rows: usize) -> Result<Vec<T>> {
        let codes = self.encode(x, n_rows)?;
        let mut out = self.decode(&codes, n_rows)?;
        self.add_skip(x, n_rows, &mut out);
        Ok(out)
    }

    /// `out += x W_skipᵀ` (`x` `[n_rows, d_in]`, `out` `[n_rows, d_out]`); nothing without a skip path.
    pub(crate) fn add_skip(&self, x: &[T], n_rows: usize, out: &mut [T]) {
        if self.w_skip.is_empty() {
            return;
        }
        let (d_in, d_out) = (self.cfg.d_in, self.cfg.d_out());
        matmul(
            out,
            MatRef::row_major(x, n_rows, d_in),
            MatRef::row_major(&self.w_skip, d_out, d_in).t(),
            true,
            T::ONE,
        );
    }
}
