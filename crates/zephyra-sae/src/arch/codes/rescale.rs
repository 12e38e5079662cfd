//! SAELens' parametrisation of the TopK family (`rescale_acts_by_decoder_norm = True`, SAELens 6.54's
//! `TopKTrainingSAE`; decoder rows free, started at norm 0.1 by `decoder_init_norm`): the code of latent
//! `i` is measured along the unit direction `u_i = W_dec[i]/n_i`, `n_i = ‖W_dec[i]‖`.
//!
//! Forward (per row): `p = x_c W_enc + b_enc`, `z_i = p_i n_i`, `f` = the TopK/BatchTopK selection of `z`
//! (`f_i = z_i` on the selected set `S`, 0 elsewhere), `x̂ = b_dec + Σ_i f_i u_i`.
//!
//! Gradient, derived by hand. Write `g_i = f_i / n_i`; on `S`, `g_i = p_i`, so
//! `x̂ = b_dec + Σ_{i∈S} p_i W_dec[i]`: an ordinary SAE whose codes are `p` on the set `S` that `z`
//! selects. `S` is piecewise constant in the weights, so away from ties:
//! - `dL/dp_i = D·W_dec[i]` on `S`, feeding `W_enc`, `b_enc`, `b_dec` as usual;
//! - `dL/dW_dec[i] = Σ_r g_ri D_r = (1/n_i) Σ_r f_ri D_r`.
//!
//! Check through the chain rule on the rescaled form: the decoder path gives
//! `(1/n_i)(I − u_i u_iᵀ) Σ_r f_ri D_r` (the derivative of `u_i`), the encoder path (`z_i = p_i n_i`,
//! `∂n_i/∂W_dec[i] = u_i`, `dL/dz_i = D·u_i`) gives `Σ_r (D_r·u_i) p_ri u_i = (1/n_i) u_i u_iᵀ Σ_r f_ri D_r`;
//! the projections cancel and the sum is the line above. The shared sparse path therefore runs unchanged
//! on codes `g = f/n` ([`unscale_codes`]); AuxK likewise selects on `z` and decodes `g`.
//!
//! The saved SAE folds the norms in ([`crate::init::fold_decoder_norms`]): `W_enc[:, i] ← n_i W_enc[:, i]`,
//! `b_enc[i] ← n_i b_enc[i]`, `W_dec[i] ← u_i`, which makes `p` of the folded SAE equal to `z`: the
//! same codes, with an ordinary unit-norm decoder any loader (SAELens included) reads.

use super::*;
use crate::SaeError;

/// Refuses the rescaled parametrisation outside the TopK family.
pub(super) fn check(arch: Architecture, step: &StepConfig<'_>) -> Result<()> {
    if step.rescale_acts_by_decoder_norm && arch.k().is_none() {
        return Err(SaeError::invalid(
            "--decoder-init-norm",
            arch.name(),
            "decoder-norm rescaling applies to topk, batchtopk and matryoshka only",
        ));
    }
    Ok(())
}

/// `z = p ⊙ n` in place, row by row (`z` is `n_rows × d_sae`).
pub(super) fn scale_preacts<T: Real>(z: &mut [T], norms: &[T]) {
    z.par_chunks_exact_mut(norms.len())
        .with_min_len(16)
        .for_each(|row| {
            for (v, &n) in row.iter_mut().zip(norms) {
                *v *= n;
            }
        });
}

/// When rescaling, turns the selected codes `f = z` into `g = f / n` (what the decoder multiplies the raw
/// `W_dec` rows by) and returns the smallest positive `f` (the BatchTopK threshold is in units of `f`);
/// `None` (codes untouched) otherwise.
pub(super) fn unscale_codes<T: Real>(
    step: &StepConfig<'_>,
    norms: &[T],
    codes: &mut crate::kernels::Codes<T>,
) -> Option<f64> {
    if !step.rescale_acts_by_decoder_norm {
        return None;
    }
    let min = codes
        .val
        .iter()
        .map(|v| v.to_f64())
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    for (v, &i) in codes.val.iter_mut().zip(&codes.idx) {
        *v = *v / norms[i as usize];
    }
    Some(min)
}
