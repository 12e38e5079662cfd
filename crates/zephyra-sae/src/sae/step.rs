//! What one training step is told ([`StepConfig`]) and what it reports ([`StepStats`]).

use crate::{Result, SaeError};

/// How per-row losses are combined over a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over rows (training).
    #[default]
    Mean,
    /// Sum over rows (the by-hand worksheet).
    Sum,
}

/// Settings for one training step.
#[derive(Debug, Clone, Copy)]
pub struct StepConfig<'a> {
    /// Sparsity coefficient λ for this step (after warm-up): L1 weight for relu/relu-unit/gated, L0 weight
    /// for jumprelu; unused by topk/batchtopk.
    pub sparsity_coeff: f64,
    /// Mean or sum over rows.
    pub reduction: Reduction,
    /// Dead latents (from the trainer's tokens-since-fired counters), length `d_sae`; `None` = none dead.
    /// Used by the AuxK loss of topk/batchtopk.
    pub dead: Option<&'a [bool]>,
    /// AuxK: number of dead latents used per row (`None` = `d_in / 2`).
    pub k_aux: Option<usize>,
    /// AuxK coefficient α (default 1/32).
    pub aux_coeff: f64,
    /// JumpReLU straight-through bandwidth ε (default 0.001).
    pub bandwidth: f64,
    /// Codes denser than this fraction of `n × d_sae` use the dense GEMM paths (relu, relu-unit, jumprelu).
    /// Default: [`crate::kernels::sparse::dense_cutover`].
    pub dense_above: f64,
    /// JumpReLU's sparsity penalty, weighted by `sparsity_coeff` (default: L0).
    pub jumprelu_sparsity: crate::JumpReluSparsity,
    /// JumpReLU: coefficient λ_p of Anthropic's pre-activation loss `λ_p Σ ReLU(θ_i − z_i)‖W_dec[i]‖`
    /// (0 = off, the default).
    pub pre_act_coeff: f64,
    /// TopK family: SAELens' free-decoder parametrisation, pre-activations multiplied by `‖W_dec[i]‖` and
    /// decoding with `W_dec[i]/‖W_dec[i]‖` (see `arch/codes/rescale.rs`; default off).
    pub rescale_acts_by_decoder_norm: bool,
    /// Matryoshka: which residual AuxK's dead latents reconstruct (default: the whole dictionary's).
    pub matryoshka_aux: crate::MatryoshkaAux,
}

impl StepConfig<'_> {
    /// Checks the JumpReLU recipe's values (positive tanh scale and target L0, λ_p ≥ 0, all finite).
    pub fn check_jumprelu(&self) -> Result<()> {
        let (name, v) = match self.jumprelu_sparsity {
            crate::JumpReluSparsity::Tanh { scale } => ("--tanh-scale", scale),
            crate::JumpReluSparsity::QuadraticL0 { target } => ("--target-l0", target),
            crate::JumpReluSparsity::L0 => ("", 1.0),
        };
        if !(v.is_finite() && v > 0.0) {
            return Err(SaeError::invalid(name, v, "it must be a finite number > 0"));
        }
        if !(self.pre_act_coeff.is_finite() && self.pre_act_coeff >= 0.0) {
            return Err(SaeError::invalid(
                "--pre-act-coeff",
                self.pre_act_coeff,
                "it must be a finite number ≥ 0 (0 turns the loss off)",
            ));
        }
        Ok(())
    }
}

impl Default for StepConfig<'_> {
    fn default() -> Self {
        Self {
            sparsity_coeff: 0.0,
            reduction: Reduction::Mean,
            dead: None,
            k_aux: None,
            aux_coeff: 1.0 / 32.0,
            bandwidth: 0.001,
            dense_above: crate::kernels::sparse::dense_cutover(),
            jumprelu_sparsity: crate::JumpReluSparsity::L0,
            pre_act_coeff: 0.0,
            rescale_acts_by_decoder_norm: false,
            matryoshka_aux: crate::MatryoshkaAux::Whole,
        }
    }
}

/// Loss terms and statistics of one forward/backward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// Rows in the batch.
    pub n_rows: usize,
    /// Total loss (what the gradients are of).
    pub loss: f64,
    /// Reconstruction term `‖x̂−x‖²` (mean or sum over rows, per [`Reduction`]).
    pub mse_loss: f64,
    /// Sparsity term (L1, decoder-norm-weighted L1, or L0), with λ applied.
    pub sparsity_loss: f64,
    /// Auxiliary term (AuxK for topk/batchtopk/matryoshka, gate reconstruction for gated, the
    /// pre-activation loss for jumprelu), with its coefficient.
    pub aux_loss: f64,
    /// Mean number of active latents per row.
    pub l0: f64,
    /// `Σ_rows ‖x̂−x‖²` (unscaled).
    pub sse: f64,
    /// `Σ_rows ‖x − mean_batch(x)‖²` (unscaled): FVE = 1 − sse/sst.
    pub sst: f64,
    /// Smallest positive kept activation (batchtopk threshold estimate; `+∞` when none).
    pub min_active: f64,
    /// Whether the dense paths were used.
    pub dense: bool,
    /// Matryoshka: `Σ_rows ‖x̂⁽ʲ⁾−x‖²` (unscaled) of each nested prefix `j`, the last = `sse`; zeros past the
    /// last level and for the other architectures.
    pub prefix_sse: [f64; crate::arch::MAX_LEVELS],
}
