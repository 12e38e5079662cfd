//! topk and batchtopk: which entries of `z` are active, and AuxK on the dead latents (see [`super`]).

use super::*;

/// Per-row top-k of `z` (optionally only over latents with `allowed[i]`), keeping positive values.
pub(in crate::arch) fn select_topk<T: Real>(
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
pub(in crate::arch) fn select_batchtopk<T: Real>(
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

/// AuxK (topk/batchtopk): adds its gradients and returns its loss. `y` is the target (`n × d_out`): the
/// dead latents predict the residual `y − ŷ` of the whole prediction (skip path included).
#[allow(clippy::too_many_arguments)]
pub(in crate::arch) fn auxk<T: Real>(
    sae: &SaeOf<T>,
    y: &[T],
    n_rows: usize,
    step: &StepConfig<'_>,
    dead: &[bool],
    s: T,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) -> f64 {
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    let n_dead = dead.iter().filter(|&&d| d).count();
    let k_aux = step.k_aux.unwrap_or(d_out / 2).min(d_sae);
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
    super::rescale::unscale_codes(step, &ws.dec_norms, &mut ws.aux_codes);
    let out = sized(&mut ws.aux_out, n_rows * d_out);
    ws.aux_codes.decode(&sae.w_dec, d_out, None, out, false);
    // out ← D_aux = 2·coeff·(ê − e), e = x − x̂ (constant).
    let mut loss = 0.0f64;
    for ((o, &xv), &xh) in out.iter_mut().zip(y).zip(&ws.xhat[..n_rows * d_out]) {
        let diff = *o - (xv - xh);
        loss += diff.to_f64() * diff.to_f64();
        *o = (coeff + coeff) * diff;
    }
    let codes = &mut ws.aux_codes;
    codes.set_grad_from_output(out, &sae.w_dec, d_out, None);
    codes.index_columns();
    codes.grad_w_dec(out, d_out, &mut grads.w_dec, true);
    codes.column_sums(true, &mut grads.b_enc, true);
    codes.grad_w_enc(&ws.xc[..n_rows * d_in], d_in, &mut grads.w_enc, true);
    coeff.to_f64() * loss
}
