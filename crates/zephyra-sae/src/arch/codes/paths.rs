//! The two code paths: sparse (per-row active lists) and dense (GEMM over `f`), decode and backward.
//! `x` is the input (`n × d_in`), `y` the target (`n × d_out`; `y = x` for an SAE).

use super::*;

/// Sparse decode and backward. Leaves `Σ_r f_ri` in `ws.latent_tmp`.
#[allow(clippy::too_many_arguments)]
pub(in crate::arch) fn sparse_path<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    y: &[T],
    n_rows: usize,
    add: Option<&[T]>,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
    stats: &mut StepStats,
    s: T,
) {
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    let xhat = sized(&mut ws.xhat, n_rows * d_out);
    ws.codes
        .decode(&sae.w_dec, d_out, Some(&sae.b_dec), xhat, false);
    sae.add_skip(x, n_rows, xhat);
    let (sse, sst) = output_grad(y, n_rows, d_out, s, ws);
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
    codes.set_grad_from_output(&ws.d[..n_rows * d_out], &sae.w_dec, d_out, add);
    codes.index_columns();
    codes.grad_w_dec(&ws.d[..n_rows * d_out], d_out, &mut grads.w_dec, false);
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
pub(in crate::arch) fn dense_path<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    y: &[T],
    n_rows: usize,
    theta: &[T],
    add: Option<&[T]>,
    s: T,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
    stats: &mut StepStats,
) {
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
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
        sized(&mut ws.xhat, n_rows * d_out),
    );
    sae.add_skip(x, n_rows, &mut ws.xhat[..n_rows * d_out]);
    let (sse, sst) = output_grad(y, n_rows, d_out, s, ws);
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
    let d = &ws.d[..n_rows * d_out];
    // dL/dW_dec = Fᵀ D.
    matmul_at_b(&mut grads.w_dec, f, d_sae, d, d_out, n_rows);
    // G = (D W_decᵀ + add) ⊙ 1[F > 0], written over F, by blocks of rows.
    let z = &mut ws.z[..n_rows * d_sae];
    for (c, zc) in z.chunks_mut(DENSE_CHUNK_ROWS * d_sae).enumerate() {
        let rows = zc.len() / d_sae;
        let r0 = c * DENSE_CHUNK_ROWS;
        let tmp = sized(&mut ws.chunk, rows * d_sae);
        matmul(
            tmp,
            MatRef::row_major(&d[r0 * d_out..(r0 + rows) * d_out], rows, d_out),
            MatRef::row_major(&sae.w_dec, d_sae, d_out).t(),
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
    matmul_at_b(&mut grads.w_enc, &ws.xc, d_in, g, d_sae, n_rows);
}
