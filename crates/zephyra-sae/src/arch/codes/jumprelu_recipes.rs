//! JumpReLU's current sparsity recipes (issue 17, part 2), beside the L0 penalty of Rajamanoharan et al.
//! 2024 (`jumprelu.rs`):
//!
//! - `tanh` — Anthropic, "Circuits Updates — January 2025" (dictionary-learning section): sparsity
//!   `λ s Σ_{r,i} tanh(c · f_ri ‖W_dec[i]‖)`. With `T = tanh(c f n_i)`, `n_i = ‖W_dec[i]‖`:
//!   `∂/∂f = λ s c n_i (1 − T²)`, which flows into `z` on active entries (`∂f/∂z = 1`) and into `θ` through
//!   the JumpReLU straight-through estimator (`∂f/∂θ := −(θ/ε) K((z−θ)/ε)`), and
//!   `dL/dW_dec[i] += λ s c Σ_r f_ri (1 − T_ri²) · W_dec[i]/n_i`.
//! - pre-activation loss (same update): `λ_p s Σ_{r,i} ReLU(θ_i − z_ri) n_i`, on every latent (SAELens
//!   6.54 applies it to dead latents only). `∂/∂z_ri = −λ_p s n_i 1[z_ri < θ_i]` (dense: a GEMM into
//!   `W_enc`), `∂/∂θ_i = λ_p s n_i #{r: z_ri < θ_i}` (θ enters directly, no estimator),
//!   `dL/dW_dec[i] += λ_p s Σ_r ReLU(θ_i − z_ri) · W_dec[i]/n_i`.
//! - `quadratic-l0` — Gemma Scope 2 (McDougall et al. 2025): a quadratic penalty around a target L0 `T`,
//!   in the form SAELens 6.54 publishes for it: `λ s Σ_r (2/T)(L0_r − T)²`, `L0_r = Σ_i H(z_ri − θ_i)`.
//!   Only `θ` gets a gradient (the step function's estimator, `∂H/∂θ := −(1/ε) K`, `∂H/∂z := 0`):
//!   `dL/dθ_i = Σ_{r in band} λ s (4/T)(L0_r − T) · (−1/ε)`. Gemma Scope 2's additional frequency
//!   penalty is not published in a form we could find, so it is not implemented.

use serde::{Deserialize, Serialize};

use super::*;

/// JumpReLU's sparsity penalty.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum JumpReluSparsity {
    /// `λ Σ H(z − θ)` (Rajamanoharan et al. 2024, Gemma Scope).
    #[default]
    L0,
    /// `λ Σ tanh(c · f_i ‖W_dec[i]‖)` (Anthropic, January 2025).
    Tanh {
        /// The scale `c` (SAELens' `jumprelu_tanh_scale`, default 4).
        scale: f64,
    },
    /// `λ (2/T)(L0 − T)²` per row (Gemma Scope 2, as SAELens 6.54 writes it).
    QuadraticL0 {
        /// The target L0 `T`.
        target: f64,
    },
}

impl JumpReluSparsity {
    /// The name used on the command line (`--jumprelu-sparsity`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::L0 => "l0",
            Self::Tanh { .. } => "tanh",
            Self::QuadraticL0 { .. } => "quadratic-l0",
        }
    }

    /// The default λ of a new run with this recipe: 1e-3 for L0 (the trainer's default since it was
    /// added), 1 for tanh and quadratic-L0 (SAELens 6.54's `l0_coefficient` default, which both use).
    pub fn default_coeff(&self) -> f64 {
        match self {
            Self::L0 => 1e-3,
            Self::Tanh { .. } | Self::QuadraticL0 { .. } => 1.0,
        }
    }

    /// The default pre-activation coefficient λ_p: 3e-6 with tanh (Anthropic's setup, per SAELens),
    /// otherwise 0 (off).
    pub fn default_pre_act_coeff(&self) -> f64 {
        match self {
            Self::Tanh { .. } => 3e-6,
            _ => 0.0,
        }
    }

    /// The default learning rate of the thresholds as a multiple of the run's: 30 with a target L0, so
    /// the penalty, which reaches the L0 only through the thresholds, holds it near the target (SmolLM2
    /// layer 15, target 40, the default 2M rows at lr 2e-4: L0 42.6 held out, where at 1 it stayed at 18;
    /// README, "JumpReLU recipes"); 1 otherwise, as the paper and SAELens train them.
    pub fn default_threshold_lr_scale(&self) -> f64 {
        match self {
            Self::QuadraticL0 { .. } => 30.0,
            _ => 1.0,
        }
    }
}

/// Per row, `L0_r` (quadratic-L0 only; empty otherwise).
pub(in crate::arch) fn row_l0<T: Real>(
    step: &StepConfig<'_>,
    z: &[T],
    d_sae: usize,
    theta: &[T],
) -> Vec<f64> {
    if !matches!(step.jumprelu_sparsity, JumpReluSparsity::QuadraticL0 { .. }) {
        return Vec::new();
    }
    z.par_chunks_exact(d_sae)
        .map(|row| {
            let on = row
                .iter()
                .zip(theta)
                .filter(|&(&v, &t)| v > T::ZERO && v > t);
            on.count() as f64
        })
        .collect()
}

/// `∂(sparsity)/∂f` of one entry, without `λ s` (tanh only: `c n_i (1 − T²)`; 0 for the others).
pub(in crate::arch) fn tanh_slope(step: &StepConfig<'_>, f: f64, norm: f64) -> f64 {
    match step.jumprelu_sparsity {
        JumpReluSparsity::Tanh { scale } => {
            let t = (scale * f * norm).tanh();
            scale * norm * (1.0 - t * t)
        }
        _ => 0.0,
    }
}

/// The weight of the step-function estimator's `−λs/ε` in row `r`'s threshold gradient: 1 for L0,
/// `(4/T)(L0_r − T)` for quadratic-L0, 0 for tanh.
pub(in crate::arch) fn step_weight(step: &StepConfig<'_>, row_l0: &[f64], r: usize) -> f64 {
    match step.jumprelu_sparsity {
        JumpReluSparsity::L0 => 1.0,
        JumpReluSparsity::QuadraticL0 { target } => 4.0 / target * (row_l0[r] - target),
        JumpReluSparsity::Tanh { .. } => 0.0,
    }
}

/// The sparsity loss (with `λ s`) of the recipe; `nnz` = active entries of the batch.
pub(in crate::arch) fn sparsity_loss<T: Real>(
    step: &StepConfig<'_>,
    s: f64,
    nnz: f64,
    row_l0: &[f64],
    ws: &WorkspaceOf<T>,
) -> f64 {
    let lambda_s = step.sparsity_coeff * s;
    match step.jumprelu_sparsity {
        JumpReluSparsity::L0 => lambda_s * nnz,
        JumpReluSparsity::QuadraticL0 { target } => {
            let per_row = row_l0.iter().map(|&l| 2.0 / target * (l - target).powi(2));
            lambda_s * per_row.sum::<f64>()
        }
        JumpReluSparsity::Tanh { scale } => {
            let codes = &ws.codes;
            let sum: f64 = (0..codes.n_rows)
                .map(|r| {
                    let (idx, val) = codes.row(r);
                    let terms = idx.iter().zip(val).map(|(&i, &v)| {
                        (scale * v.to_f64() * ws.dec_norms[i as usize].to_f64()).tanh()
                    });
                    terms.sum::<f64>()
                })
                .sum();
            lambda_s * sum
        }
    }
}

/// tanh: adds the penalty's gradients into `z` (→ `W_enc`, `b_enc`) and `W_dec` (through the norms), from
/// the sparse codes the sparse path left in `ws.codes` (their `grad` is overwritten).
pub(in crate::arch) fn tanh_grads<T: Real>(
    sae: &SaeOf<T>,
    step: &StepConfig<'_>,
    s: T,
    n_rows: usize,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) {
    let d_in = sae.cfg.d_in;
    let lambda_s = T::from_f64(step.sparsity_coeff) * s;
    let codes = &mut ws.codes;
    let mut dec_scale = vec![T::ZERO; sae.cfg.d_sae];
    for p in 0..codes.idx.len() {
        let i = codes.idx[p] as usize;
        let (f, n) = (codes.val[p], ws.dec_norms[i]);
        let slope = T::from_f64(tanh_slope(step, f.to_f64(), n.to_f64()));
        codes.grad[p] = lambda_s * slope;
        // n · ∂/∂n = f · ∂/∂f.
        dec_scale[i] += lambda_s * slope * f;
    }
    codes.index_columns();
    codes.column_sums(true, &mut grads.b_enc, true);
    codes.grad_w_enc(&ws.xc[..n_rows * d_in], d_in, &mut grads.w_enc, true);
    add_norm_grad(sae, &dec_scale, &ws.dec_norms, grads);
}

/// `dL/dW_dec[i] += (c_i / n_i²) W_dec[i]` for `c_i = n_i ∂L/∂n_i` (the chain rule through `‖W_dec[i]‖`).
fn add_norm_grad<T: Real>(sae: &SaeOf<T>, n_dl_dn: &[T], norms: &[T], grads: &mut GradientsOf<T>) {
    let d_out = sae.cfg.d_out();
    for (i, &c) in n_dl_dn.iter().enumerate() {
        let n = norms[i];
        if c != T::ZERO && n > T::ZERO {
            let row = i * d_out..(i + 1) * d_out;
            crate::kernels::sparse::axpy(
                &mut grads.w_dec[row.clone()],
                c / (n * n),
                &sae.w_dec[row],
            );
        }
    }
}

/// Anthropic's pre-activation loss: returns it (with `λ_p s`) and adds its gradients. `z` (`ws.z`) must
/// still hold the pre-activations (sparse path) and `theta` the thresholds.
pub(in crate::arch) fn pre_act_loss<T: Real>(
    sae: &SaeOf<T>,
    step: &StepConfig<'_>,
    s: T,
    theta: &[T],
    n_rows: usize,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) -> f64 {
    if step.pre_act_coeff == 0.0 {
        return 0.0;
    }
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let coeff = T::from_f64(step.pre_act_coeff) * s;
    let g = sized(&mut ws.chunk, n_rows * d_sae);
    let mut gap_sums = vec![T::ZERO; d_sae];
    let mut below = vec![T::ZERO; d_sae];
    let mut loss = 0.0f64;
    for (grow, zrow) in g
        .chunks_exact_mut(d_sae)
        .zip(ws.z[..n_rows * d_sae].chunks_exact(d_sae))
    {
        for i in 0..d_sae {
            let gap = theta[i] - zrow[i];
            let on = gap > T::ZERO;
            grow[i] = if on {
                -coeff * ws.dec_norms[i]
            } else {
                T::ZERO
            };
            if on {
                gap_sums[i] += gap;
                below[i] += T::ONE;
                loss += (gap * ws.dec_norms[i]).to_f64();
            }
        }
    }
    // z: b_enc and W_enc (dense), and through x_c into b_dec at the end (via Σ G in b_enc).
    for row in g.chunks_exact(d_sae) {
        for (b, &v) in grads.b_enc.iter_mut().zip(row) {
            *b += v;
        }
    }
    matmul(
        &mut grads.w_enc,
        MatRef::row_major(&ws.xc[..n_rows * d_in], n_rows, d_in).t(),
        MatRef::row_major(&ws.chunk[..n_rows * d_sae], n_rows, d_sae),
        true,
        T::ONE,
    );
    // θ directly: dL/dθ = λ_p s n_i #below.
    for i in 0..d_sae {
        grads.threshold[i] += coeff * ws.dec_norms[i] * below[i];
    }
    let n_dl_dn: Vec<T> = (0..d_sae)
        .map(|i| coeff * gap_sums[i] * ws.dec_norms[i])
        .collect();
    add_norm_grad(sae, &n_dl_dn, &ws.dec_norms.clone(), grads);
    step.pre_act_coeff * s.to_f64() * loss
}
