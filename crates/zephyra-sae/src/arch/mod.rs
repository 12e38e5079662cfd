//! Forward passes and hand-derived backward passes of every architecture, plus inference (`encode`,
//! `decode`) and the hooks around an optimizer step (decoder-gradient projection, renormalisation,
//! dead-latent resampling).
//!
//! Papers:
//! - `relu`: Anthropic, "Circuits Updates — April 2024: Update on how we train SAEs" (decoder-norm-weighted
//!   L1, free decoder, norm-0.1 init with `W_enc = W_decᵀ`).
//! - `relu-unit`: Bricken et al. 2023, "Towards Monosemanticity" (unit-norm decoder, L1, resampling).
//! - `topk`: Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (TopK, AuxK with `k_aux`, α).
//! - `batchtopk`: Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders".
//! - `jumprelu`: Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
//!   Sparse Autoencoders" (rectangle-kernel straight-through estimators, L0 penalty).
//! - `matryoshka`: Bussmann, Nabeshima, Karvonen & Nanda 2025, "Learning Multi-Level Features with
//!   Matryoshka Sparse Autoencoders" (BatchTopK codes, reconstruction loss summed over nested prefixes).
//! - `gated`: Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders"
//!   (with SAELens' parameter names and its decoder-norm-weighted gate L1).
//!
//! Notation (per row): `x_c = x − b_dec` (if `apply_b_dec_to_input`, else `x`), `z = x_c W_enc + b_enc`,
//! codes `f`, `x̂ = f W_dec + b_dec`, `D = dL/dx̂ = 2s(x̂ − x)` with `s = 1/n` (mean) or `1` (sum), and
//! `G = dL/dz`. For every code-based architecture `dL/dW_dec[i] = Σ_r f_ri D_r`,
//! `dL/db_enc = Σ_r G_r`, `dL/dW_enc[:, i] = Σ_r G_ri x_c,r`, `dL/db_dec = Σ_r D_r − W_enc Σ_r G_r`.

#[allow(clippy::needless_range_loop)]
mod codes;
#[allow(clippy::needless_range_loop)]
mod gated;
#[allow(clippy::needless_range_loop)]
mod hooks;
mod infer;
mod widths;

use crate::kernels::{Codes, Real};
use crate::sae::{Architecture, GradientsOf, SaeOf, StepConfig, StepStats};
use crate::{Result, SaeError};

pub use codes::JumpReluSparsity;
pub use hooks::zero_latent;
pub use widths::{MatryoshkaAux, MatryoshkaWidths, MAX_LEVELS};

/// Buffers reused across steps (no allocation once warm). Sized by the first call; a later batch with
/// more rows grows them.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceOf<T> {
    pub(crate) xc: Vec<T>,
    pub(crate) z: Vec<T>,
    pub(crate) xhat: Vec<T>,
    pub(crate) d: Vec<T>,
    pub(crate) aux_out: Vec<T>,
    pub(crate) chunk: Vec<T>,
    pub(crate) gate: Vec<T>,
    pub(crate) mag: Vec<T>,
    pub(crate) dec_norms: Vec<T>,
    pub(crate) latent_tmp: Vec<T>,
    pub(crate) codes: Codes<T>,
    pub(crate) aux_codes: Codes<T>,
    pub(crate) lists: Vec<Vec<(u32, T)>>,
    pub(crate) band: Vec<(u32, u32, T)>,
    pub(crate) row_sq_err: Vec<T>,
    pub(crate) fire_counts: Vec<u32>,
    pub(crate) split_x: Vec<T>,
    pub(crate) split_y: Vec<T>,
    // Matryoshka: one prefix's codes, and the full dictionary's x̂, D, row errors set aside meanwhile.
    pub(crate) prefix: Codes<T>,
    pub(crate) prefix_xhat: Vec<T>,
    pub(crate) prefix_d: Vec<T>,
    pub(crate) prefix_row_err: Vec<T>,
}

/// `f32` workspace.
pub type Workspace = WorkspaceOf<f32>;

impl<T: Real> WorkspaceOf<T> {
    /// `‖x̂_r − x_r‖²` of each row of the last batch (for resampling ∝ loss²).
    pub fn row_sq_err(&self) -> &[T] {
        &self.row_sq_err
    }

    /// For each latent, the number of rows of the last batch in which it was active.
    pub fn fire_counts(&self) -> &[u32] {
        &self.fire_counts
    }

    /// The sparse codes of the last sparse step (empty after a dense step or for gated).
    pub fn codes(&self) -> &Codes<T> {
        &self.codes
    }
}

/// Resizes without shrinking capacity.
pub(crate) fn sized<T: Real>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.resize(n, T::ZERO);
    &mut v[..n]
}

impl<T: Real> SaeOf<T> {
    /// Lengths of every tensor for this configuration, in the order of [`SaeOf::params`] plus
    /// `threshold` (no allocation).
    fn expected_lengths(&self) -> [(&'static str, usize, usize, Vec<usize>); 9] {
        let (d_in, d_sae, d_out) = (self.cfg.d_in, self.cfg.d_sae, self.cfg.d_out());
        let skip = if self.cfg.has_skip() { d_out * d_in } else { 0 };
        let arch = self.cfg.architecture;
        let gated = arch == Architecture::Gated;
        let has_threshold = arch.has_threshold();
        let per_latent = |on: bool| if on { d_sae } else { 0 };
        [
            ("W_enc", self.w_enc.len(), d_in * d_sae, vec![d_in, d_sae]),
            ("b_enc", self.b_enc.len(), per_latent(!gated), vec![d_sae]),
            ("W_dec", self.w_dec.len(), d_sae * d_out, vec![d_sae, d_out]),
            ("b_dec", self.b_dec.len(), d_out, vec![d_out]),
            ("b_gate", self.b_gate.len(), per_latent(gated), vec![d_sae]),
            ("r_mag", self.r_mag.len(), per_latent(gated), vec![d_sae]),
            ("b_mag", self.b_mag.len(), per_latent(gated), vec![d_sae]),
            (
                "threshold",
                self.threshold.len(),
                per_latent(has_threshold),
                vec![d_sae],
            ),
            ("W_skip", self.w_skip.len(), skip, vec![d_out, d_in]),
        ]
    }

    /// Checks that the weights have the lengths the configuration implies.
    pub fn check_shapes(&self) -> Result<()> {
        self.cfg.validate()?;
        for (name, got, want, shape) in self.expected_lengths() {
            if got != want {
                let expected = if want == 0 { vec![0] } else { shape };
                return Err(SaeError::shape(name, &expected, &[got]));
            }
        }
        Ok(())
    }

    /// Checks that `x` holds `n_rows > 0` rows of `width` values.
    fn check_batch(&self, x: &[T], n_rows: usize, width: usize) -> Result<()> {
        if n_rows == 0 || x.len() != n_rows * width {
            return Err(SaeError::shape("input batch", &[n_rows, width], &[x.len()]));
        }
        Ok(())
    }

    /// One forward and backward pass on `rows` (`n_rows × row_width`, row-major: `x` for an SAE, `[x | y]`
    /// for a transcoder, see [`crate::SaeConfig::row_width`]): writes every gradient into `grads`
    /// (overwriting) and returns the loss terms, the reconstruction term being that of the target (`x` for
    /// an SAE, `y` for a transcoder). `&self`: the weights are not changed.
    pub fn forward_backward(
        &self,
        rows: &[T],
        n_rows: usize,
        step: &StepConfig<'_>,
        ws: &mut WorkspaceOf<T>,
        grads: &mut GradientsOf<T>,
    ) -> Result<StepStats> {
        self.check_batch(rows, n_rows, self.cfg.row_width())?;
        self.check_shapes()?;
        let want = GradientsOf::zeros_like(self);
        for ((name, g), (_, w)) in grads.slices().into_iter().zip(want.slices()) {
            if g.len() != w.len() {
                return Err(SaeError::shape(
                    format!("gradient {name}"),
                    &[w.len()],
                    &[g.len()],
                ));
            }
        }
        if grads.slices().len() != want.slices().len() {
            return Err(SaeError::invalid(
                "gradients",
                format!("of {} tensors", grads.slices().len()),
                "they were built for another architecture: use Gradients::zeros_like(&sae)",
            ));
        }
        if let Some(dead) = step.dead {
            if dead.len() != self.cfg.d_sae {
                return Err(SaeError::shape(
                    "dead-latent mask",
                    &[self.cfg.d_sae],
                    &[dead.len()],
                ));
            }
        }
        if self.cfg.architecture == Architecture::JumpRelu {
            step.check_jumprelu()?;
        }
        if (step.bandwidth.is_nan() || step.bandwidth <= 0.0)
            && self.cfg.architecture == Architecture::JumpRelu
        {
            return Err(SaeError::invalid(
                "JumpReLU bandwidth",
                step.bandwidth,
                "it must be positive",
            ));
        }
        let _span = tracing::trace_span!(
            "forward_backward",
            arch = self.cfg.architecture.name(),
            n_rows
        )
        .entered();
        if !self.cfg.is_transcoder() {
            return match self.cfg.architecture {
                Architecture::Gated => gated::forward_backward(self, rows, n_rows, step, ws, grads),
                _ => codes::forward_backward(self, rows, rows, n_rows, step, ws, grads),
            };
        }
        // Transcoder: split `[x | y]` into two contiguous matrices (buffers kept in `ws` across steps).
        let (d_in, d_out) = (self.cfg.d_in, self.cfg.d_out());
        let mut x = std::mem::take(&mut ws.split_x);
        let mut y = std::mem::take(&mut ws.split_y);
        x.clear();
        y.clear();
        for row in rows.chunks_exact(d_in + d_out) {
            x.extend_from_slice(&row[..d_in]);
            y.extend_from_slice(&row[d_in..]);
        }
        let out = codes::forward_backward(self, &x, &y, n_rows, step, ws, grads);
        ws.split_x = x;
        ws.split_y = y;
        out
    }
}
