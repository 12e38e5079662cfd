//! The code-based architectures (relu, relu-unit, topk, batchtopk, jumprelu): one pipeline, with the
//! architecture deciding which entries of `z` are active and what the sparsity term is.
//!
//! Per-architecture pieces (see the module docs of [`crate::arch`] for the shared formulas):
//! - relu: `f = max(z, 0)`, sparsity `λ s Σ f_i ‖W_dec[i]‖` ⇒ `G_ri += λ s ‖W_dec[i]‖` on active entries and
//!   `dL/dW_dec[i] += λ s (Σ_r f_ri) W_dec[i]/‖W_dec[i]‖`.
//! - relu-unit: `f = max(z, 0)`, sparsity `λ s Σ f_i` ⇒ `G_ri += λ s`.
//! - topk: `f` = `max(z, 0)` on the `k` largest `z` of the row; AuxK: with `e = x − x̂` held constant, the
//!   top `k_aux` dead latents' `f_aux` reconstruct `ê = f_aux W_dec`, loss `α·m·s Σ_r ‖ê_r − e_r‖²` with
//!   `m = min(n_dead/k_aux, 1)`; its gradients flow into `W_dec`, `W_enc`, `b_enc`, `b_dec` (via `x_c`).
//! - batchtopk: the `k·n` largest `max(z,0)` of the whole batch; AuxK as topk.
//! - matryoshka: batchtopk's codes, the reconstruction loss summed over nested prefixes (`matryoshka.rs`).
//! - jumprelu: `f = z·H(z − θ)`, `θ` trained directly (≥ 0), sparsity `λ s Σ H(z − θ)` (L0). Straight-through
//!   (rectangle kernel `K(u) = 1[|u| < ½]`, bandwidth ε): `∂f/∂z = H(z−θ)`, `∂f/∂θ := −(θ/ε)K((z−θ)/ε)`,
//!   `∂H/∂z := 0`, `∂H/∂θ := −(1/ε)K((z−θ)/ε)`. So
//!   `dL/dθ_i = Σ_{r: |z_ri−θ_i|<ε/2} [−(θ_i/ε)·(D_r·W_dec[i]) − λ s/ε]`.
//!
//! Codes are sparse (per-row active lists) unless relu/relu-unit/jumprelu codes are denser than
//! `StepConfig::dense_above`, where the dense GEMM path is faster.
//!
//! | file | content |
//! |---|---|
//! | `mod.rs` | the shared pipeline ([`forward_backward`]), encoder/decoder helpers, relu's activity count |
//! | `paths.rs` | the sparse (per-row lists) and dense (GEMM) decode + backward paths |
//! | `topk.rs` | topk and batchtopk selection, AuxK |
//! | `jumprelu.rs` | jumprelu's threshold band and straight-through threshold gradient |
//! | `jumprelu_recipes.rs` | jumprelu's tanh and quadratic-L0 penalties, the pre-activation loss |
//! | `matryoshka.rs` | matryoshka's inner-prefix losses and gradients |
//! | `rescale.rs` | SAELens' free-decoder parametrisation of the TopK family (codes rescaled by ‖W_dec[i]‖) |

mod jumprelu;
mod jumprelu_recipes;
mod matryoshka;
mod paths;
mod rescale;
mod topk;

use rayon::prelude::*;

use super::{sized, WorkspaceOf};
use crate::arch::MatryoshkaAux;
use crate::kernels::select::top_k;
use crate::kernels::sparse::dot;
use crate::kernels::{matmul, matmul_at_b, MatRef, Real};
use crate::sae::{Architecture, GradientsOf, Reduction, SaeOf, StepConfig, StepStats};
use crate::Result;

/// Latents per task in the dense path's column sums (a block's slice of every row is read in turn).
const LATENT_BLOCK: usize = 512;
/// Rows per block in the dense `G = D W_decᵀ` product.
const DENSE_CHUNK_ROWS: usize = 256;

pub(super) fn scale_of<T: Real>(step: &StepConfig<'_>, n_rows: usize) -> T {
    match step.reduction {
        Reduction::Mean => T::from_f64(1.0 / n_rows as f64),
        Reduction::Sum => T::ONE,
    }
}

/// `x_c = x − b_dec` (or `x`) into `ws.xc`; `z = x_c W_enc + bias` into `ws.z`.
pub(super) fn encoder_preact<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n_rows: usize,
    bias: &[T],
    ws: &mut WorkspaceOf<T>,
) {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let xc = sized(&mut ws.xc, n_rows * d_in);
    xc.copy_from_slice(x);
    if sae.cfg.apply_b_dec_to_input {
        for row in xc.chunks_exact_mut(d_in) {
            for (v, &b) in row.iter_mut().zip(&sae.b_dec) {
                *v -= b;
            }
        }
    }
    let z = sized(&mut ws.z, n_rows * d_sae);
    matmul(
        z,
        MatRef::row_major(&ws.xc[..n_rows * d_in], n_rows, d_in),
        MatRef::row_major(&sae.w_enc, d_in, d_sae),
        false,
        T::ONE,
    );
    if !bias.is_empty() {
        z.par_chunks_exact_mut(d_sae)
            .with_min_len(16)
            .for_each(|row| {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            });
    }
}

/// `out = b_dec + F W_dec` for dense codes `F` (`n_rows × d_sae`); `out` is `n_rows × d_out`.
pub(super) fn decode_dense<T: Real>(sae: &SaeOf<T>, f: &[T], n_rows: usize, out: &mut [T]) {
    let (d_out, d_sae) = (sae.cfg.d_out(), sae.cfg.d_sae);
    for row in out.chunks_exact_mut(d_out) {
        row.copy_from_slice(&sae.b_dec);
    }
    matmul(
        out,
        MatRef::row_major(f, n_rows, d_sae),
        MatRef::row_major(&sae.w_dec, d_sae, d_out),
        true,
        T::ONE,
    );
}

/// `‖W_dec[i]‖` into `ws.dec_norms`.
pub(super) fn decoder_norms<T: Real>(sae: &SaeOf<T>, ws: &mut WorkspaceOf<T>) {
    let d_out = sae.cfg.d_out();
    let norms = sized(&mut ws.dec_norms, sae.cfg.d_sae);
    norms
        .par_iter_mut()
        .zip(sae.w_dec.par_chunks_exact(d_out))
        .with_min_len(256)
        .for_each(|(n, row)| {
            *n = dot(row, row).sqrt();
        });
}

/// Fills `ws.d = 2s(x̂ − x)`, `ws.row_sq_err`, and returns `(sse, sst)`.
pub(super) fn output_grad<T: Real>(
    x: &[T],
    n_rows: usize,
    d_in: usize,
    scale: T,
    ws: &mut WorkspaceOf<T>,
) -> (f64, f64) {
    let d = sized(&mut ws.d, n_rows * d_in);
    let rse = sized(&mut ws.row_sq_err, n_rows);
    let two_s = scale + scale;
    d.par_chunks_exact_mut(d_in)
        .zip(ws.xhat[..n_rows * d_in].par_chunks_exact(d_in))
        .zip(x.par_chunks_exact(d_in))
        .zip(rse.par_iter_mut())
        .with_min_len(16)
        .for_each(|(((dr, xh), xr), e)| {
            let mut acc = T::ZERO;
            for ((dv, &a), &b) in dr.iter_mut().zip(xh).zip(xr) {
                let diff = a - b;
                acc += diff * diff;
                *dv = two_s * diff;
            }
            *e = acc;
        });
    let sse: f64 = rse.iter().map(|v| v.to_f64()).sum();
    (sse, total_variance(x, n_rows, d_in))
}

/// `Σ_r ‖x_r − mean(x)‖²` in f64.
pub(super) fn total_variance<T: Real>(x: &[T], n_rows: usize, d_in: usize) -> f64 {
    let mut mean = vec![0.0f64; d_in];
    let mut sq = 0.0f64;
    for row in x.chunks_exact(d_in) {
        for (m, &v) in mean.iter_mut().zip(row) {
            let v = v.to_f64();
            *m += v;
            sq += v * v;
        }
    }
    let n = n_rows as f64;
    (sq - mean.iter().map(|m| m * m).sum::<f64>() / n).max(0.0)
}

/// `out = Σ_r D_r − (apply_b_dec ? W_enc·g_b_enc : 0)`: the decoder-bias gradient.
pub(super) fn b_dec_grad<T: Real>(sae: &SaeOf<T>, d: &[T], g_pre_sum: &[T], out: &mut [T]) {
    let (d_sae, d_out) = (sae.cfg.d_sae, sae.cfg.d_out());
    out.fill(T::ZERO);
    for row in d.chunks_exact(d_out) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    if sae.cfg.apply_b_dec_to_input {
        for (j, o) in out.iter_mut().enumerate() {
            *o -= dot(&sae.w_enc[j * d_sae..(j + 1) * d_sae], g_pre_sum);
        }
    }
}

/// The shared pipeline on inputs `x` (`n × d_in`) and targets `y` (`n × d_out`; the same slice as `x`
/// for an SAE).
pub(super) fn forward_backward<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    y: &[T],
    n_rows: usize,
    step: &StepConfig<'_>,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) -> Result<StepStats> {
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    let arch = sae.cfg.architecture;
    let s: T = scale_of(step, n_rows);
    let lambda = T::from_f64(step.sparsity_coeff);
    encoder_preact(sae, x, n_rows, &sae.b_enc, ws);
    decoder_norms(sae, ws);
    rescale::check(arch, step)?;

    // JumpReLU: thresholds and the entries inside the straight-through band.
    let theta: &[T] = if arch == Architecture::JumpRelu {
        &sae.threshold
    } else {
        &[]
    };
    let half_band = T::from_f64(step.bandwidth / 2.0);
    let mut row_l0 = Vec::new();
    if arch == Architecture::JumpRelu {
        row_l0 = jumprelu_recipes::row_l0(step, &ws.z[..n_rows * d_sae], d_sae, theta);
        collect_band(
            &ws.z[..n_rows * d_sae],
            d_sae,
            theta,
            half_band,
            &mut ws.band,
        );
    }

    // Which entries are active.
    let mut stats = StepStats {
        n_rows,
        min_active: f64::INFINITY,
        ..StepStats::default()
    };
    let z = &ws.z[..n_rows * d_sae];
    let dense = match arch {
        Architecture::Relu | Architecture::ReluUnit => {
            let nnz = count_par(z, |_, v| v > T::ZERO, d_sae);
            nnz as f64 > step.dense_above * (n_rows * d_sae) as f64
        }
        // The tanh penalty and the pre-activation loss need the codes and z: sparse path only.
        Architecture::JumpRelu
            if step.pre_act_coeff == 0.0
                && !matches!(step.jumprelu_sparsity, JumpReluSparsity::Tanh { .. }) =>
        {
            let nnz = count_par(z, |i, v| v > T::ZERO && v > theta[i], d_sae);
            nnz as f64 > step.dense_above * (n_rows * d_sae) as f64
        }
        _ => false,
    };
    stats.dense = dense;

    // Per-latent additive term of dL/dz on active entries (sparsity).
    let add: Option<Vec<T>> = match arch {
        Architecture::Relu => Some(
            ws.dec_norms[..d_sae]
                .iter()
                .map(|&n| lambda * s * n)
                .collect(),
        ),
        Architecture::ReluUnit => Some(vec![lambda * s; d_sae]),
        _ => None,
    };

    if dense {
        dense_path(
            sae,
            x,
            y,
            n_rows,
            theta,
            add.as_deref(),
            s,
            ws,
            grads,
            &mut stats,
        );
    } else {
        match arch {
            Architecture::Relu | Architecture::ReluUnit => {
                ws.codes
                    .build_from_dense(z, n_rows, d_sae, |_, v| (v > T::ZERO).then_some(v));
            }
            Architecture::JumpRelu => {
                ws.codes.build_from_dense(z, n_rows, d_sae, |i, v| {
                    (v > T::ZERO && v > theta[i]).then_some(v)
                });
            }
            Architecture::TopK { .. }
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. } => select_codes(arch, n_rows, d_sae, step, ws),
            Architecture::Gated => unreachable!("gated has its own path"),
        }
        let rescaled_min = rescale::unscale_codes(step, &ws.dec_norms, &mut ws.codes);
        sparse_path(sae, x, y, n_rows, add.as_deref(), ws, grads, &mut stats, s);
        if let Some(min) = rescaled_min {
            stats.min_active = min;
        }
        if let Architecture::Matryoshka { groups, .. } = arch {
            // Matryoshka transcoders are refused by the config: here the target y is the input x.
            inner_prefixes(sae, y, n_rows, groups, step, s, ws, grads, &mut stats);
        }
    }

    // Sparsity loss and the relu decoder-norm term of dL/dW_dec.
    let nnz_f64 = stats.l0 * n_rows as f64;
    match arch {
        Architecture::Relu => {
            let f_sums = &ws.latent_tmp[..d_sae];
            let mut l1 = 0.0f64;
            for i in 0..d_sae {
                let n = ws.dec_norms[i];
                l1 += f_sums[i].to_f64() * n.to_f64();
                if f_sums[i] != T::ZERO && n > T::ZERO {
                    let c = lambda * s * f_sums[i] / n;
                    crate::kernels::sparse::axpy(
                        &mut grads.w_dec[i * d_out..(i + 1) * d_out],
                        c,
                        &sae.w_dec[i * d_out..(i + 1) * d_out],
                    );
                }
            }
            stats.sparsity_loss = step.sparsity_coeff * s.to_f64() * l1;
        }
        Architecture::ReluUnit => {
            let l1: f64 = ws.latent_tmp[..d_sae].iter().map(|v| v.to_f64()).sum();
            stats.sparsity_loss = step.sparsity_coeff * s.to_f64() * l1;
        }
        Architecture::JumpRelu => {
            stats.sparsity_loss =
                jumprelu_recipes::sparsity_loss(step, s.to_f64(), nnz_f64, &row_l0, ws);
            jumprelu_threshold_grad(sae, theta, step, s, &row_l0, ws, grads);
            if let JumpReluSparsity::Tanh { .. } = step.jumprelu_sparsity {
                jumprelu_recipes::tanh_grads(sae, step, s, n_rows, ws, grads);
            }
            stats.aux_loss = jumprelu_recipes::pre_act_loss(sae, step, s, theta, n_rows, ws, grads);
        }
        _ => {}
    }

    // AuxK.
    match (arch, step.dead) {
        (Architecture::Matryoshka { groups, .. }, Some(dead))
            if step.matryoshka_aux == MatryoshkaAux::PerLevel =>
        {
            // The inner levels' terms are in already (inner_prefixes); the last level's residual is
            // the full one, in ws.xhat.
            let last = groups.level_range(groups.levels() - 1);
            stats.aux_loss += level_auxk(sae, y, n_rows, step, dead, last, s, ws, grads);
        }
        (
            Architecture::TopK { .. }
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. },
            Some(dead),
        ) => stats.aux_loss = auxk(sae, y, n_rows, step, dead, s, ws, grads),
        _ => {}
    }

    // Skip path: ŷ_r += W_skip x_r ⇒ dL/dW_skip = Σ_r D_r x_rᵀ = Dᵀ X (AuxK's residual is a constant).
    if !grads.w_skip.is_empty() {
        matmul_at_b(&mut grads.w_skip, &ws.d, d_out, x, d_in, n_rows);
    }
    // Decoder bias (after every contribution to dL/db_enc = Σ_r G_r is in).
    b_dec_grad(sae, &ws.d[..n_rows * d_out], &grads.b_enc, &mut grads.b_dec);
    let recon_sse = match arch {
        Architecture::Matryoshka { .. } => stats.prefix_sse.iter().sum(),
        _ => stats.sse,
    };
    stats.mse_loss = s.to_f64() * recon_sse;
    stats.loss = stats.mse_loss + stats.sparsity_loss + stats.aux_loss;
    Ok(stats)
}

/// TopK-family selection on `ws.z` into `ws.codes`; with `step.rescale_acts_by_decoder_norm` the
/// pre-activations are first multiplied by the decoder norms (`ws.z` keeps `z = p ⊙ ‖W_dec‖`, which AuxK
/// selects on too).
fn select_codes<T: Real>(
    arch: Architecture,
    n_rows: usize,
    d_sae: usize,
    step: &StepConfig<'_>,
    ws: &mut WorkspaceOf<T>,
) {
    if step.rescale_acts_by_decoder_norm {
        rescale::scale_preacts(&mut ws.z[..n_rows * d_sae], &ws.dec_norms[..d_sae]);
    }
    let z = &ws.z[..n_rows * d_sae];
    match arch {
        Architecture::TopK { k } => {
            select_topk(z, n_rows, d_sae, k, None, &mut ws.lists, &mut ws.codes)
        }
        Architecture::BatchTopK { k } | Architecture::Matryoshka { k, .. } => {
            select_batchtopk(z, n_rows, d_sae, k, &mut ws.lists, &mut ws.codes)
        }
        _ => unreachable!("select_codes is for the TopK family"),
    }
}

fn count_par<T: Real>(z: &[T], pred: impl Fn(usize, T) -> bool + Sync, d_sae: usize) -> usize {
    z.par_chunks_exact(d_sae)
        .with_min_len(16)
        .map(|row| row.iter().enumerate().filter(|&(i, &v)| pred(i, v)).count())
        .sum()
}

use jumprelu::{collect_band, jumprelu_threshold_grad};
pub use jumprelu_recipes::JumpReluSparsity;
use matryoshka::{inner_prefixes, level_auxk};
use paths::{dense_path, sparse_path};
pub(super) use topk::select_topk;
use topk::{auxk, select_batchtopk};
