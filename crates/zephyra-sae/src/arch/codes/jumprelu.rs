//! jumprelu: the entries near the threshold and the straight-through gradient of `θ` (see [`super`]).

use super::jumprelu_recipes::{step_weight, tanh_slope};
use super::*;

/// Entries with `|max(z,0) − θ_i| < ε/2` as `(row, latent, z)`.
pub(in crate::arch) fn collect_band<T: Real>(
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

/// JumpReLU's `dL/dθ` from the band entries (straight-through estimators), for every sparsity
/// recipe (`row_l0`: each row's L0, for quadratic-L0; see `jumprelu_recipes.rs`).
pub(in crate::arch) fn jumprelu_threshold_grad<T: Real>(
    sae: &SaeOf<T>,
    theta: &[T],
    step: &StepConfig<'_>,
    s: T,
    row_l0: &[f64],
    ws: &WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) {
    let d_out = sae.cfg.d_out();
    let inv_eps = T::from_f64(1.0 / step.bandwidth);
    let lambda_s = T::from_f64(step.sparsity_coeff) * s;
    grads.threshold.fill(T::ZERO);
    for &(r, i, z) in &ws.band {
        let (r, i) = (r as usize, i as usize);
        let f = if z > T::ZERO && z > theta[i] {
            z
        } else {
            T::ZERO
        };
        let slope = tanh_slope(step, f.to_f64(), ws.dec_norms[i].to_f64());
        let dl_df = dot(
            &ws.d[r * d_out..(r + 1) * d_out],
            &sae.w_dec[i * d_out..(i + 1) * d_out],
        ) + lambda_s * T::from_f64(slope);
        let step_w = T::from_f64(step_weight(step, row_l0, r));
        let d_theta = -(theta[i] * inv_eps) * dl_df - lambda_s * step_w * inv_eps;
        grads.threshold[i] += d_theta;
    }
}
