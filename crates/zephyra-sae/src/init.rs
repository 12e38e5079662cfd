//! Data-dependent initialisation: the input scale (activation normalisation) and the decoder bias.
//!
//! **Normalisation.** Training runs on `x' = s·x` with `s = √d_in / E‖x‖`, estimated once from the first
//! rows of the source (so every input has norm ≈ √d_in and hyper-parameters such as the learning rate and λ
//! transfer across models and layers). The saved SAE must work on raw activations, so the factor is folded
//! into the weights when saving ([`fold_input_scale`]): with every pre-activation written in terms of
//! `s·x`, `W_encᵀ(s·x − b_dec) + b_enc = (s·W_enc)ᵀ(x − b_dec/s) + b_enc` and `x̂ = (W_dec f + b_dec)/s`,
//! hence `W_enc ← s·W_enc`, `W_dec ← W_dec/s`, `b_dec ← b_dec/s`, while `b_enc`, `threshold`, `b_gate`,
//! `r_mag` and `b_mag` are unchanged (pre-activations and feature activations are identical). Decoder
//! norms in the saved file are therefore `1/s` times those seen in training (as in SAELens'
//! `fold_activation_norm_scaling_factor`).
//!
//! **Decoder bias.** `b_dec` starts at the geometric median of a sample of rows (Weiszfeld's algorithm,
//! E. Weiszfeld 1937; as recommended in Bricken et al. 2023, "Towards Monosemanticity") or at their mean.

use crate::SaeError;

/// `√d_in / mean‖x‖` over `rows` (`n × d_in`); non-finite rows are ignored.
pub fn input_scale(rows: &[f32], d_in: usize) -> Result<f32, SaeError> {
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for row in rows.chunks_exact(d_in) {
        let sq: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
        if sq.is_finite() {
            sum += sq.sqrt();
            n += 1;
        }
    }
    if n == 0 || sum <= 0.0 {
        return Err(SaeError::Source(format!(
            "cannot estimate the activation scale: {n} finite rows with total norm {sum}; the activations are all zero or empty"
        ).into()));
    }
    Ok(((d_in as f64).sqrt() / (sum / n as f64)) as f32)
}

/// Mean of the rows (`n × d_in`), accumulated in f64.
pub fn mean(rows: &[f32], d_in: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; d_in];
    let mut n = 0usize;
    for row in rows.chunks_exact(d_in) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as f64;
        }
        n += 1;
    }
    acc.iter().map(|a| (a / n.max(1) as f64) as f32).collect()
}

/// Geometric median of the rows (the point minimising the sum of Euclidean distances) by Weiszfeld's
/// iteration from the mean: `y ← Σ wᵢ xᵢ / Σ wᵢ` with `wᵢ = 1 / max(‖xᵢ − y‖, 1e-8)`, stopping after
/// `max_iter` iterations or when `y` moves less than `1e-6 ‖y‖`.
pub fn geometric_median(rows: &[f32], d_in: usize, max_iter: usize) -> Vec<f32> {
    let mut y: Vec<f64> = mean(rows, d_in).iter().map(|&v| v as f64).collect();
    let mut num = vec![0.0f64; d_in];
    for _ in 0..max_iter {
        num.fill(0.0);
        let mut den = 0.0f64;
        for row in rows.chunks_exact(d_in) {
            let dist: f64 = row
                .iter()
                .zip(&y)
                .map(|(&x, &c)| (x as f64 - c).powi(2))
                .sum::<f64>()
                .sqrt();
            let w = 1.0 / dist.max(1e-8);
            den += w;
            for (a, &x) in num.iter_mut().zip(row) {
                *a += w * x as f64;
            }
        }
        if den == 0.0 {
            break;
        }
        let mut moved = 0.0f64;
        let mut size = 0.0f64;
        for (c, a) in y.iter_mut().zip(&num) {
            let next = a / den;
            moved += (next - *c).powi(2);
            size += next * next;
            *c = next;
        }
        if moved.sqrt() <= 1e-6 * size.sqrt() {
            break;
        }
    }
    y.iter().map(|&v| v as f32).collect()
}

/// Folds the input scale `s` into the weights of `sae` so that it works on raw activations (see the
/// module docs for the algebra).
pub fn fold_input_scale(sae: &mut crate::Sae, s: f32) {
    let inv = 1.0 / s;
    sae.w_enc.iter_mut().for_each(|w| *w *= s);
    sae.w_dec.iter_mut().for_each(|w| *w *= inv);
    sae.b_dec.iter_mut().for_each(|b| *b *= inv);
}

/// Folds SAELens' decoder-norm rescaling into the weights (`arch/codes/rescale.rs`): with
/// `n_i = max(‖W_dec[i]‖, 1e-8)`, `W_enc[:, i] ← n_i W_enc[:, i]`, `b_enc[i] ← n_i b_enc[i]`,
/// `W_dec[i] ← W_dec[i]/n_i`. The folded SAE's pre-activations equal the rescaled ones
/// (`(x_c W_enc + b_enc)_i n_i`), so its codes are unchanged and its decoder rows have unit norm (as
/// SAELens' `_fold_norm_topk` when saving). Thresholds are already in units of the rescaled codes.
pub fn fold_decoder_norms(sae: &mut crate::Sae) {
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    for (i, row) in sae.w_dec.chunks_exact_mut(d_out).enumerate() {
        let n = row
            .iter()
            .map(|&v| v as f64 * v as f64)
            .sum::<f64>()
            .sqrt()
            .max(1e-8);
        row.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
        for j in 0..d_in {
            let w = &mut sae.w_enc[j * d_sae + i];
            *w = (*w as f64 * n) as f32;
        }
        if let Some(b) = sae.b_enc.get_mut(i) {
            *b = (*b as f64 * n) as f32;
        }
    }
}

/// SAELens' `decoder_init_norm`: scales the freshly initialised (unit-norm) decoder rows and, as
/// `W_enc = W_decᵀ` at initialisation, the encoder columns to `norm`.
pub fn scale_initial_directions(sae: &mut crate::Sae, norm: f32) {
    sae.w_dec.iter_mut().for_each(|w| *w *= norm);
    sae.w_enc.iter_mut().for_each(|w| *w *= norm);
}

/// JumpReLU thresholds that make each latent fire on a fraction `rate` of the rows `x` (`[n, d_in]`, the
/// scaled inputs of the first rows): `θ_i` = the largest value that `⌈rate·n⌉` of latent `i`'s
/// pre-activations exceed (fires where `z > θ`), at least the standard
/// [`ThresholdInit::STANDARD`](crate::train::ThresholdInit::STANDARD), so that no threshold is negative
/// and a latent whose pre-activations are mostly ≤ 0 starts as it would have.
///
/// Why: the quadratic-L0 recipe pulls L0 towards its target by moving `θ`, but Adam moves a parameter by
/// about the lr per step, so from 0.001 a short run cannot reach thresholds of order 1 on inputs scaled to
/// `E‖x‖ = √d` (README, "SAELens' other three architectures"). Started here, the run is at its target L0
/// from the first step and training refines the thresholds instead of travelling to them.
pub fn thresholds_at_rate(sae: &mut crate::Sae, x: &[f32], rate: f64) -> Result<(), SaeError> {
    use rayon::prelude::*;
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let n = x.len() / d_in.max(1);
    if n == 0 || !(rate > 0.0 && rate <= 1.0) {
        return Err(SaeError::Training(format!(
            "the thresholds' starting rate needs rows and a rate in (0, 1]: {n} rows, rate {rate}"
        )));
    }
    let z = sae.pre_activations(&x[..n * d_in], n)?;
    let firing = ((rate * n as f64).ceil() as usize).clamp(1, n);
    let floor = crate::train::ThresholdInit::STANDARD as f32;
    let thresholds: Vec<f32> = (0..d_sae)
        .into_par_iter()
        .map_init(Vec::new, |column: &mut Vec<f32>, i| {
            column.clear();
            column.extend((0..n).map(|r| z[r * d_sae + i]));
            if firing == n {
                return floor;
            }
            // Ascending order: the `firing` values above index n − firing − 1 exceed it.
            let (_, at, _) = column.select_nth_unstable_by(n - firing - 1, f32::total_cmp);
            if at.is_finite() {
                at.max(floor)
            } else {
                floor
            }
        })
        .collect();
    sae.threshold.copy_from_slice(&thresholds);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_at_rate_fire_each_latent_on_that_share_of_the_rows() {
        use crate::{Architecture, Sae, SaeConfig};
        let mut cfg = SaeConfig::new(3, 4, Architecture::JumpRelu).unwrap();
        cfg.apply_b_dec_to_input = false;
        let mut sae = Sae::zeros(cfg).unwrap();
        // W_enc [3, 4]: latent 0 reads x0, latent 1 reads x1, latent 2 reads −x0, latent 3 reads x2 + 1.
        sae.w_enc = vec![1., 0., -1., 0., 0., 1., 0., 0., 0., 0., 0., 1.];
        sae.b_enc = vec![0., 0., 0., 1.];
        // 10 rows: x0 = 0..9, x1 = 0.5·(9 − r), x2 = −1 (latent 3 sees 0 everywhere).
        let x: Vec<f32> = (0..10)
            .flat_map(|r| [r as f32, 0.5 * (9 - r) as f32, -1.0])
            .collect();
        thresholds_at_rate(&mut sae, &x, 0.3).unwrap();
        // 3 of 10 rows must exceed θ: x0 ∈ {7, 8, 9} → θ0 = 6; x1 ∈ {3.5, 4, 4.5} → θ1 = 3; latent 2's
        // pre-activations are ≤ 0 and latent 3's all 0: the floor 0.001.
        assert_eq!(sae.threshold, vec![6.0, 3.0, 0.001, 0.001]);
        let codes = sae.encode(&x, 10).unwrap();
        for (i, want) in [3usize, 3, 0, 0].into_iter().enumerate() {
            let fired = (0..10).filter(|r| codes[r * 4 + i] != 0.0).count();
            assert_eq!(fired, want, "latent {i}");
        }
        // Rates outside (0, 1] and no rows are refused.
        assert!(thresholds_at_rate(&mut sae, &x, 0.0).is_err());
        assert!(thresholds_at_rate(&mut sae, &[], 0.5).is_err());
    }

    #[test]
    fn scale_makes_mean_norm_sqrt_d() {
        let rows = [3.0, 4.0, 0.0, 6.0, 8.0, 0.0]; // norms 5 and 10, d = 3
        let s = input_scale(&rows, 3).unwrap();
        assert!((s - 3f32.sqrt() / 7.5).abs() < 1e-6);
    }

    #[test]
    fn geometric_median_resists_an_outlier() {
        // Four corners of a square around (1, 1) and one far outlier. By symmetry the median is (1+t, 1+t);
        // balancing unit vectors along the diagonal gives 2t/√(1+t²) = 1, so t = 1/√3 (worked by hand),
        // whatever the outlier's distance. The mean is dragged to ≈ 200.
        let rows = [0.0, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0, 1000.0, 1000.0];
        let m = geometric_median(&rows, 2, 500);
        let mu = mean(&rows, 2);
        assert!((m[0] - m[1]).abs() < 1e-3, "{m:?}");
        assert!((m[0] - (1.0 + 1.0 / 3f32.sqrt())).abs() < 1e-3, "{m:?}");
        assert!(mu[0] > 200.0);
        // Optimality: the sum of unit vectors from the median to the points has norm ≤ 1 (one point's weight).
        let g: Vec<f64> = (0..2)
            .map(|j| {
                rows.chunks_exact(2)
                    .map(|r| {
                        let d = ((r[0] - m[0]) as f64).hypot((r[1] - m[1]) as f64);
                        (m[j] - r[j]) as f64 / d
                    })
                    .sum()
            })
            .collect();
        assert!(g[0].hypot(g[1]) < 1e-3, "{g:?}");
    }
}
