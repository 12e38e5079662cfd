//! Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders"),
//! with SAELens' parameterisation and loss:
//!
//! `pre = x_c W_enc`, `π_gate = pre + b_gate`, `π_mag = pre ⊙ exp(r_mag) + b_mag`,
//! `f = H(π_gate) ⊙ ReLU(π_mag)`, `x̂ = f W_dec + b_dec`,
//! `L = s Σ_r ‖x̂_r − x_r‖² + λ s Σ_r Σ_i ReLU(π_gate)_ri ‖W_dec[i]‖ + s Σ_r ‖ReLU(π_gate)_r sg(W_dec) + sg(b_dec) − x_r‖²`
//! (`sg` = stop-gradient). Backward (away from the kinks, `H' = 0`): with `D = 2s(x̂ − x)`,
//! `D_g = 2s(x̂_gate − x)`, on entries with `π_gate > 0`: `dπ_mag = 1[π_mag > 0] D·W_dec[i]`,
//! `dπ_gate = λ s ‖W_dec[i]‖ + D_g·W_dec[i]`; `dr_mag = Σ dπ_mag·pre·exp(r_mag)`, `db_mag = Σ dπ_mag`,
//! `db_gate = Σ dπ_gate`, `dpre = dπ_gate + dπ_mag·exp(r_mag)`, `dW_enc = x_cᵀ dpre`,
//! `dW_dec[i] = Σ_r f_ri D_r + λ s (Σ_r ReLU(π_gate)_ri) W_dec[i]/‖W_dec[i]‖`,
//! `db_dec = Σ_r D_r − W_enc Σ_r dpre_r`.
//!
//! Gated runs dense (three `n × d_sae` buffers); it is the one architecture not on the sparse kernels.

use rayon::prelude::*;

use super::codes::{
    b_dec_grad, decode_dense, decoder_norms, encoder_preact, output_grad, scale_of, total_variance,
};
use super::{sized, WorkspaceOf};
use crate::kernels::sparse::axpy;
use crate::kernels::{matmul, matmul_at_b, MatRef, Real};
use crate::sae::{GradientsOf, SaeOf, StepConfig, StepStats};
use crate::Result;

const CHUNK_ROWS: usize = 256;

pub(super) fn forward_backward<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n_rows: usize,
    step: &StepConfig<'_>,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) -> Result<StepStats> {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let s: T = scale_of(step, n_rows);
    let lambda = T::from_f64(step.sparsity_coeff);
    encoder_preact(sae, x, n_rows, &[], ws);
    decoder_norms(sae, ws);
    let scale_mag: Vec<T> = sae.r_mag.iter().map(|r| r.exp()).collect();
    let pre = &ws.z[..n_rows * d_sae];
    let gate = sized(&mut ws.gate, n_rows * d_sae);
    let mag = sized(&mut ws.mag, n_rows * d_sae);
    // gate ← ReLU(π_gate), mag ← f.
    pre.par_chunks_exact(d_sae)
        .zip(gate.par_chunks_exact_mut(d_sae))
        .zip(mag.par_chunks_exact_mut(d_sae))
        .with_min_len(16)
        .for_each(|((p, g), m)| {
            for i in 0..d_sae {
                let pg = p[i] + sae.b_gate[i];
                let pm = p[i] * scale_mag[i] + sae.b_mag[i];
                g[i] = pg.max(T::ZERO);
                m[i] = if pg > T::ZERO && pm > T::ZERO {
                    pm
                } else {
                    T::ZERO
                };
            }
        });
    let mut stats = StepStats {
        n_rows,
        min_active: f64::INFINITY,
        dense: true,
        ..StepStats::default()
    };
    ws.fire_counts.clear();
    ws.fire_counts.resize(d_sae, 0);
    let gate_sums = sized(&mut ws.latent_tmp, d_sae);
    gate_sums.fill(T::ZERO);
    let mut nnz = 0usize;
    for (g, m) in ws.gate[..n_rows * d_sae]
        .chunks_exact(d_sae)
        .zip(ws.mag[..n_rows * d_sae].chunks_exact(d_sae))
    {
        for i in 0..d_sae {
            gate_sums[i] += g[i];
            if m[i] > T::ZERO {
                ws.fire_counts[i] += 1;
                nnz += 1;
                stats.min_active = stats.min_active.min(m[i].to_f64());
            }
        }
    }
    stats.l0 = nnz as f64 / n_rows as f64;
    // x̂ and D.
    decode_dense(
        sae,
        &ws.mag[..n_rows * d_sae],
        n_rows,
        sized(&mut ws.xhat, n_rows * d_in),
    );
    let (sse, _) = output_grad(x, n_rows, d_in, s, ws);
    stats.sse = sse;
    stats.sst = total_variance(x, n_rows, d_in);
    // Gate reconstruction and D_g (in aux_out).
    let xg = sized(&mut ws.aux_out, n_rows * d_in);
    decode_dense(sae, &ws.gate[..n_rows * d_sae], n_rows, xg);
    let mut aux = 0.0f64;
    for (v, &xv) in xg.iter_mut().zip(x) {
        let diff = *v - xv;
        aux += diff.to_f64() * diff.to_f64();
        *v = (s + s) * diff;
    }
    stats.aux_loss = s.to_f64() * aux;
    let norms = &ws.dec_norms[..d_sae];
    stats.sparsity_loss = step.sparsity_coeff
        * s.to_f64()
        * ws.latent_tmp[..d_sae]
            .iter()
            .zip(norms)
            .map(|(a, b)| a.to_f64() * b.to_f64())
            .sum::<f64>();
    // dW_dec.
    let d = &ws.d[..n_rows * d_in];
    matmul_at_b(&mut grads.w_dec, &ws.mag, d_sae, d, d_in, n_rows);
    for i in 0..d_sae {
        let (gs, n) = (ws.latent_tmp[i], norms[i]);
        if gs != T::ZERO && n > T::ZERO {
            axpy(
                &mut grads.w_dec[i * d_in..(i + 1) * d_in],
                lambda * s * gs / n,
                &sae.w_dec[i * d_in..(i + 1) * d_in],
            );
        }
    }
    // dpre (into mag), with the per-latent sums.
    grads.b_gate.fill(T::ZERO);
    grads.r_mag.fill(T::ZERO);
    grads.b_mag.fill(T::ZERO);
    let dg = &ws.aux_out[..n_rows * d_in];
    let mut t1 = Vec::new();
    let mut t2 = Vec::new();
    for r0 in (0..n_rows).step_by(CHUNK_ROWS) {
        let rows = CHUNK_ROWS.min(n_rows - r0);
        let t1 = sized(&mut t1, rows * d_sae);
        let t2 = sized(&mut t2, rows * d_sae);
        let wd_t = MatRef::row_major(&sae.w_dec, d_sae, d_in).t();
        matmul(
            t1,
            MatRef::row_major(&d[r0 * d_in..(r0 + rows) * d_in], rows, d_in),
            wd_t,
            false,
            T::ONE,
        );
        matmul(
            t2,
            MatRef::row_major(&dg[r0 * d_in..(r0 + rows) * d_in], rows, d_in),
            wd_t,
            false,
            T::ONE,
        );
        for rr in 0..rows {
            let r = r0 + rr;
            for i in 0..d_sae {
                let p = ws.z[r * d_sae + i];
                let pg = p + sae.b_gate[i];
                let pm = p * scale_mag[i] + sae.b_mag[i];
                let (mut d_gate, mut d_mag) = (T::ZERO, T::ZERO);
                if pg > T::ZERO {
                    d_gate = lambda * s * norms[i] + t2[rr * d_sae + i];
                    if pm > T::ZERO {
                        d_mag = t1[rr * d_sae + i];
                    }
                }
                grads.b_gate[i] += d_gate;
                grads.b_mag[i] += d_mag;
                grads.r_mag[i] += d_mag * p * scale_mag[i];
                ws.mag[r * d_sae + i] = d_gate + d_mag * scale_mag[i];
            }
        }
    }
    let dpre = &ws.mag[..n_rows * d_sae];
    matmul_at_b(&mut grads.w_enc, &ws.xc, d_in, dpre, d_sae, n_rows);
    let dpre_sum = sized(&mut ws.chunk, d_sae);
    dpre_sum.fill(T::ZERO);
    for row in dpre.chunks_exact(d_sae) {
        for (o, &v) in dpre_sum.iter_mut().zip(row) {
            *o += v;
        }
    }
    b_dec_grad(sae, d, &ws.chunk[..d_sae], &mut grads.b_dec);
    stats.mse_loss = s.to_f64() * stats.sse;
    stats.loss = stats.mse_loss + stats.sparsity_loss + stats.aux_loss;
    Ok(stats)
}
