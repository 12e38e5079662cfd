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
//! - jumprelu: `f = z·H(z − θ)`, `θ = exp(log_threshold)`, sparsity `λ s Σ H(z − θ)` (L0). Straight-through
//!   (rectangle kernel `K(u) = 1[|u| < ½]`, bandwidth ε): `∂f/∂z = H(z−θ)`, `∂f/∂θ := −(θ/ε)K((z−θ)/ε)`,
//!   `∂H/∂z := 0`, `∂H/∂θ := −(1/ε)K((z−θ)/ε)`, and `∂/∂log θ = θ ∂/∂θ`. So
//!   `dL/dlog θ_i = θ_i Σ_{r: |z_ri−θ_i|<ε/2} [−(θ_i/ε)·(D_r·W_dec[i]) − λ s/ε]`.
//!
//! Codes are sparse (per-row active lists) unless relu/relu-unit/jumprelu codes are denser than
//! `StepConfig::dense_above`, where the dense GEMM path is faster.

use rayon::prelude::*;

use super::{sized, WorkspaceOf};
use crate::kernels::select::top_k;
use crate::kernels::sparse::dot;
use crate::kernels::{matmul, MatRef, Real};
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

/// `out = b_dec + F W_dec` for dense codes `F` (`n_rows × d_sae`); `out` is `n_rows × d_in`.
pub(super) fn decode_dense<T: Real>(sae: &SaeOf<T>, f: &[T], n_rows: usize, out: &mut [T]) {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    for row in out.chunks_exact_mut(d_in) {
        row.copy_from_slice(&sae.b_dec);
    }
    matmul(
        out,
        MatRef::row_major(f, n_rows, d_sae),
        MatRef::row_major(&sae.w_dec, d_sae, d_in),
        true,
        T::ONE,
    );
}

/// `‖W_dec[i]‖` into `ws.dec_norms`.
pub(super) fn decoder_norms<T: Real>(sae: &SaeOf<T>, ws: &mut WorkspaceOf<T>) {
    let d_in = sae.cfg.d_in;
    let norms = sized(&mut ws.dec_norms, sae.cfg.d_sae);
    norms
        .par_iter_mut()
        .zip(sae.w_dec.par_chunks_exact(d_in))
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
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    out.fill(T::ZERO);
    for row in d.chunks_exact(d_in) {
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

pub(super) fn forward_backward<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n_rows: usize,
    step: &StepConfig<'_>,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) -> Result<StepStats> {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let arch = sae.cfg.architecture;
    let s: T = scale_of(step, n_rows);
    let lambda = T::from_f64(step.sparsity_coeff);
    encoder_preact(sae, x, n_rows, &sae.b_enc, ws);
    decoder_norms(sae, ws);

    // JumpReLU: thresholds and the entries inside the straight-through band.
    let theta: Vec<T> = if arch == Architecture::JumpRelu {
        sae.log_threshold.iter().map(|l| l.exp()).collect()
    } else {
        Vec::new()
    };
    let half_band = T::from_f64(step.bandwidth / 2.0);
    if arch == Architecture::JumpRelu {
        collect_band(
            &ws.z[..n_rows * d_sae],
            d_sae,
            &theta,
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
        Architecture::JumpRelu => {
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
            n_rows,
            &theta,
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
                let th = &theta;
                ws.codes.build_from_dense(z, n_rows, d_sae, |i, v| {
                    (v > T::ZERO && v > th[i]).then_some(v)
                });
            }
            Architecture::TopK { k } => {
                select_topk(z, n_rows, d_sae, k, None, &mut ws.lists, &mut ws.codes)
            }
            Architecture::BatchTopK { k } => {
                select_batchtopk(z, n_rows, d_sae, k, &mut ws.lists, &mut ws.codes)
            }
            Architecture::Gated => unreachable!("gated has its own path"),
        }
        sparse_path(sae, x, n_rows, add.as_deref(), ws, grads, &mut stats, s);
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
                        &mut grads.w_dec[i * d_in..(i + 1) * d_in],
                        c,
                        &sae.w_dec[i * d_in..(i + 1) * d_in],
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
            stats.sparsity_loss = step.sparsity_coeff * s.to_f64() * nnz_f64;
            jumprelu_threshold_grad(sae, &theta, step, s, ws, grads);
        }
        _ => {}
    }

    // AuxK.
    if let (Architecture::TopK { .. } | Architecture::BatchTopK { .. }, Some(dead)) =
        (arch, step.dead)
    {
        stats.aux_loss = auxk(sae, x, n_rows, step, dead, s, ws, grads);
    }

    // Decoder bias (after every contribution to dL/db_enc = Σ_r G_r is in).
    b_dec_grad(sae, &ws.d[..n_rows * d_in], &grads.b_enc, &mut grads.b_dec);
    stats.mse_loss = s.to_f64() * stats.sse;
    stats.loss = stats.mse_loss + stats.sparsity_loss + stats.aux_loss;
    Ok(stats)
}

fn count_par<T: Real>(z: &[T], pred: impl Fn(usize, T) -> bool + Sync, d_sae: usize) -> usize {
    z.par_chunks_exact(d_sae)
        .with_min_len(16)
        .map(|row| row.iter().enumerate().filter(|&(i, &v)| pred(i, v)).count())
        .sum()
}

/// Entries with `|max(z,0) − θ_i| < ε/2` as `(row, latent, z)`.
fn collect_band<T: Real>(
    z: &[T],
    d_sae: usize,
    theta: &[T],
    half: T,
    out: &mut Vec<(u32, u32, T)>,
) {
    out.clear();
    let parts: Vec<Vec<(u32, u32, T)>> = z
        .par_chunks_exact(d_sae)
        .enumerate()
        .with_min_len(16)
        .map(|(r, row)| {
            row.iter()
                .enumerate()
                .filter(|&(i, &v)| (v.max(T::ZERO) - theta[i]).abs() < half)
                .map(|(i, &v)| (r as u32, i as u32, v))
                .collect()
        })
        .collect();
    for p in parts {
        out.extend(p);
    }
}

/// Per-row top-k of `z` (optionally only over latents with `allowed[i]`), keeping positive values.
pub(super) fn select_topk<T: Real>(
    z: &[T],
    n_rows: usize,
    d_sae: usize,
    k: usize,
    allowed: Option<&[bool]>,
    lists: &mut Vec<Vec<(u32, T)>>,
    codes: &mut crate::kernels::Codes<T>,
) {
    lists.resize_with(n_rows, Vec::new);
    z.par_chunks_exact(d_sae)
        .zip(lists[..n_rows].par_iter_mut())
        .with_min_len(8)
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(scratch, masked): &mut (Vec<(T, u32)>, Vec<T>), (row, out)| {
                match allowed {
                    None => top_k(row, k, scratch, out),
                    Some(mask) => {
                        masked.clear();
                        masked.extend(
                            row.iter()
                                .zip(mask)
                                .map(|(&v, &ok)| if ok { v } else { T::ZERO }),
                        );
                        top_k(masked, k, scratch, out);
                        out.retain(|&(i, _)| mask[i as usize]);
                    }
                }
                out.retain(|&(_, v)| v > T::ZERO);
            },
        );
    codes.build_from_lists(&lists[..n_rows], d_sae);
}

/// The `k·n` largest `max(z, 0)` of the whole batch (ties to the lower flat index).
///
/// Exact without sorting the batch: each row's top `2k` are taken first; `t` = the `k·n`-th largest of
/// their union is a lower bound of the batch's `k·n`-th value (the union holds `k·n` entries ≥ `t`). An
/// entry ≥ `t` outside its row's list can only exist in a row whose whole list is ≥ `t`; such rows are
/// rescanned. The final cut is taken among these candidates.
fn select_batchtopk<T: Real>(
    z: &[T],
    n_rows: usize,
    d_sae: usize,
    k: usize,
    lists: &mut Vec<Vec<(u32, T)>>,
    codes: &mut crate::kernels::Codes<T>,
) {
    let budget = k * n_rows;
    let per_row = (2 * k).min(d_sae);
    select_topk(z, n_rows, d_sae, per_row, None, lists, codes);
    let desc = |a: &T, b: &T| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal);
    let mut union: Vec<T> = lists[..n_rows]
        .iter()
        .flat_map(|l| l.iter().map(|p| p.1))
        .collect();
    // Entries must be > 0; `t = 0` means "every positive entry is a candidate".
    let t = if union.len() >= budget {
        union.select_nth_unstable_by(budget - 1, desc);
        union[budget - 1]
    } else {
        T::ZERO
    };
    let mut cands: Vec<(T, usize)> = Vec::with_capacity(budget + 64);
    for (r, l) in lists[..n_rows].iter().enumerate() {
        let full = l.len() == per_row && l.iter().all(|p| p.1 >= t);
        if full {
            let row = &z[r * d_sae..(r + 1) * d_sae];
            cands.extend(
                row.iter()
                    .enumerate()
                    .filter(|&(_, &v)| v > T::ZERO && v >= t)
                    .map(|(i, &v)| (v, r * d_sae + i)),
            );
        } else {
            cands.extend(
                l.iter()
                    .filter(|p| p.1 >= t)
                    .map(|&(i, v)| (v, r * d_sae + i as usize)),
            );
        }
    }
    let take = budget.min(cands.len());
    if take < cands.len() && take > 0 {
        cands.select_nth_unstable_by(take - 1, |a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.1.cmp(&b.1))
        });
    }
    cands.truncate(take);
    cands.sort_unstable_by_key(|c| c.1);
    for l in lists[..n_rows].iter_mut() {
        l.clear();
    }
    for &(v, flat) in &cands {
        lists[flat / d_sae].push(((flat % d_sae) as u32, v));
    }
    codes.build_from_lists(&lists[..n_rows], d_sae);
}

/// Sparse decode and backward. Leaves `Σ_r f_ri` in `ws.latent_tmp`.
#[allow(clippy::too_many_arguments)]
fn sparse_path<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n_rows: usize,
    add: Option<&[T]>,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
    stats: &mut StepStats,
    s: T,
) {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let xhat = sized(&mut ws.xhat, n_rows * d_in);
    ws.codes
        .decode(&sae.w_dec, d_in, Some(&sae.b_dec), xhat, false);
    let (sse, sst) = output_grad(x, n_rows, d_in, s, ws);
    stats.sse = sse;
    stats.sst = sst;
    let codes = &mut ws.codes;
    stats.l0 = codes.nnz() as f64 / n_rows as f64;
    stats.min_active = codes
        .val
        .iter()
        .map(|v| v.to_f64())
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    codes.set_grad_from_output(&ws.d[..n_rows * d_in], &sae.w_dec, d_in, add);
    codes.index_columns();
    codes.grad_w_dec(&ws.d[..n_rows * d_in], d_in, &mut grads.w_dec, false);
    codes.column_sums(true, &mut grads.b_enc, false);
    codes.grad_w_enc(&ws.xc[..n_rows * d_in], d_in, &mut grads.w_enc, false);
    let f_sums = sized(&mut ws.latent_tmp, d_sae);
    codes.column_sums(false, f_sums, false);
    ws.fire_counts.clear();
    ws.fire_counts.resize(d_sae, 0);
    for i in 0..d_sae {
        ws.fire_counts[i] = (codes.col_ptr[i + 1] - codes.col_ptr[i]) as u32;
    }
}

/// Dense decode and backward (relu, relu-unit, jumprelu at high density). Leaves `Σ_r f_ri` in
/// `ws.latent_tmp`.
#[allow(clippy::too_many_arguments)]
fn dense_path<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n_rows: usize,
    theta: &[T],
    add: Option<&[T]>,
    s: T,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
    stats: &mut StepStats,
) {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    ws.codes.build_from_lists(&[], d_sae);
    // F in place of z.
    let f = &mut ws.z[..n_rows * d_sae];
    // Branch-free selects (about half the entries are kept at initialisation, so branches mispredict).
    f.par_chunks_exact_mut(d_sae)
        .with_min_len(16)
        .for_each(|row| {
            if theta.is_empty() {
                for v in row.iter_mut() {
                    *v = if *v > T::ZERO { *v } else { T::ZERO };
                }
            } else {
                for (v, &t) in row.iter_mut().zip(theta) {
                    *v = if *v > T::ZERO && *v > t { *v } else { T::ZERO };
                }
            }
        });
    decode_dense(
        sae,
        &ws.z[..n_rows * d_sae],
        n_rows,
        sized(&mut ws.xhat, n_rows * d_in),
    );
    let (sse, sst) = output_grad(x, n_rows, d_in, s, ws);
    let f = &ws.z[..n_rows * d_sae];
    stats.sse = sse;
    stats.sst = sst;
    // Column statistics of F, by blocks of latents across threads.
    let f_sums = sized(&mut ws.latent_tmp, d_sae);
    ws.fire_counts.clear();
    ws.fire_counts.resize(d_sae, 0);
    let (nnz, min_active) = f_sums
        .par_chunks_mut(LATENT_BLOCK)
        .zip(ws.fire_counts.par_chunks_mut(LATENT_BLOCK))
        .enumerate()
        .map(|(b, (sums, counts))| {
            let i0 = b * LATENT_BLOCK;
            sums.fill(T::ZERO);
            // F is zero where inactive, so every entry is added; counts and minimum without branches.
            let never = T::from_f64(f64::INFINITY);
            let mut min_active = never;
            for row in f.chunks_exact(d_sae) {
                for ((s, c), &v) in sums.iter_mut().zip(counts.iter_mut()).zip(&row[i0..]) {
                    let active = v > T::ZERO;
                    *s += v;
                    *c += active as u32;
                    let candidate = if active { v } else { never };
                    min_active = if candidate < min_active {
                        candidate
                    } else {
                        min_active
                    };
                }
            }
            let nnz: usize = counts.iter().map(|&c| c as usize).sum();
            (nnz, min_active.to_f64())
        })
        .reduce(|| (0, f64::INFINITY), |a, b| (a.0 + b.0, a.1.min(b.1)));
    stats.l0 = nnz as f64 / n_rows as f64;
    stats.min_active = min_active;
    let d = &ws.d[..n_rows * d_in];
    // dL/dW_dec = Fᵀ D.
    matmul(
        &mut grads.w_dec,
        MatRef::row_major(f, n_rows, d_sae).t(),
        MatRef::row_major(d, n_rows, d_in),
        false,
        T::ONE,
    );
    // G = (D W_decᵀ + add) ⊙ 1[F > 0], written over F, by blocks of rows.
    let z = &mut ws.z[..n_rows * d_sae];
    for (c, zc) in z.chunks_mut(DENSE_CHUNK_ROWS * d_sae).enumerate() {
        let rows = zc.len() / d_sae;
        let r0 = c * DENSE_CHUNK_ROWS;
        let tmp = sized(&mut ws.chunk, rows * d_sae);
        matmul(
            tmp,
            MatRef::row_major(&d[r0 * d_in..(r0 + rows) * d_in], rows, d_in),
            MatRef::row_major(&sae.w_dec, d_sae, d_in).t(),
            false,
            T::ONE,
        );
        zc.par_chunks_exact_mut(d_sae)
            .zip(tmp.par_chunks_exact(d_sae))
            .with_min_len(8)
            .for_each(|(g, t)| match add {
                Some(a) => {
                    for ((gv, &tv), &av) in g.iter_mut().zip(t).zip(a) {
                        *gv = if *gv > T::ZERO { tv + av } else { T::ZERO };
                    }
                }
                None => {
                    for (gv, &tv) in g.iter_mut().zip(t) {
                        *gv = if *gv > T::ZERO { tv } else { T::ZERO };
                    }
                }
            });
    }
    let g = &ws.z[..n_rows * d_sae];
    grads
        .b_enc
        .par_chunks_mut(LATENT_BLOCK)
        .enumerate()
        .for_each(|(b, out)| {
            out.fill(T::ZERO);
            for row in g.chunks_exact(d_sae) {
                for (o, &v) in out.iter_mut().zip(&row[b * LATENT_BLOCK..]) {
                    *o += v;
                }
            }
        });
    matmul(
        &mut grads.w_enc,
        MatRef::row_major(&ws.xc[..n_rows * d_in], n_rows, d_in).t(),
        MatRef::row_major(g, n_rows, d_sae),
        false,
        T::ONE,
    );
}

/// JumpReLU's `dL/dlog θ` from the band entries (straight-through estimators).
fn jumprelu_threshold_grad<T: Real>(
    sae: &SaeOf<T>,
    theta: &[T],
    step: &StepConfig<'_>,
    s: T,
    ws: &WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) {
    let d_in = sae.cfg.d_in;
    let inv_eps = T::from_f64(1.0 / step.bandwidth);
    let lambda_s = T::from_f64(step.sparsity_coeff) * s;
    grads.log_threshold.fill(T::ZERO);
    for &(r, i, _) in &ws.band {
        let (r, i) = (r as usize, i as usize);
        let dl_df = dot(
            &ws.d[r * d_in..(r + 1) * d_in],
            &sae.w_dec[i * d_in..(i + 1) * d_in],
        );
        let d_theta = -(theta[i] * inv_eps) * dl_df - lambda_s * inv_eps;
        grads.log_threshold[i] += theta[i] * d_theta;
    }
}

/// AuxK (topk/batchtopk): adds its gradients and returns its loss.
#[allow(clippy::too_many_arguments)]
fn auxk<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n_rows: usize,
    step: &StepConfig<'_>,
    dead: &[bool],
    s: T,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) -> f64 {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let n_dead = dead.iter().filter(|&&d| d).count();
    let k_aux = step.k_aux.unwrap_or(d_in / 2).min(d_sae);
    if n_dead == 0 || k_aux == 0 || step.aux_coeff == 0.0 {
        return 0.0;
    }
    let k_eff = k_aux.min(n_dead);
    let m = (n_dead as f64 / k_aux as f64).min(1.0);
    let coeff = T::from_f64(step.aux_coeff * m) * s;
    // The pre-activations are still in ws.z (sparse path leaves them untouched).
    select_topk(
        &ws.z[..n_rows * d_sae],
        n_rows,
        d_sae,
        k_eff,
        Some(dead),
        &mut ws.lists,
        &mut ws.aux_codes,
    );
    let out = sized(&mut ws.aux_out, n_rows * d_in);
    ws.aux_codes.decode(&sae.w_dec, d_in, None, out, false);
    // out ← D_aux = 2·coeff·(ê − e), e = x − x̂ (constant).
    let mut loss = 0.0f64;
    for ((o, &xv), &xh) in out.iter_mut().zip(x).zip(&ws.xhat[..n_rows * d_in]) {
        let diff = *o - (xv - xh);
        loss += diff.to_f64() * diff.to_f64();
        *o = (coeff + coeff) * diff;
    }
    let codes = &mut ws.aux_codes;
    codes.set_grad_from_output(out, &sae.w_dec, d_in, None);
    codes.index_columns();
    codes.grad_w_dec(out, d_in, &mut grads.w_dec, true);
    codes.column_sums(true, &mut grads.b_enc, true);
    codes.grad_w_enc(&ws.xc[..n_rows * d_in], d_in, &mut grads.w_enc, true);
    coeff.to_f64() * loss
}
