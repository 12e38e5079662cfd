//! Matryoshka BatchTopK: the nested-prefix reconstruction losses (Bussmann, Nabeshima, Karvonen & Nanda
//! 2025, "Learning Multi-Level Features with Matryoshka Sparse Autoencoders"; Nabeshima 2024,
//! "Matryoshka Sparse Autoencoders"; the loss as SAELens 6.54's `MatryoshkaBatchTopKTrainingSAE`).
//!
//! The codes `f` are BatchTopK's over the whole dictionary. With widths `w_1 < … < w_G = d_sae`, prefix
//! `j` decodes with its own latents only, bias included: `x̂⁽ʲ⁾ = b_dec + Σ_{i<w_j} f_i W_dec[i]`, and the
//! loss is `s Σ_r Σ_j ‖x̂⁽ʲ⁾_r − x_r‖²` (+ AuxK on the full residual `x − x̂⁽ᴳ⁾`, as SAELens' default;
//! or, with [`MatryoshkaAux::PerLevel`], one AuxK per level: level `j`'s dead latents `w_{j-1}..w_j`
//! reconstruct `x − x̂⁽ʲ⁾`, as SAELens' `use_matryoshka_aux_loss`).
//!
//! Gradients: each prefix is an ordinary sparse SAE restricted to latents `< w_j`, with
//! `D⁽ʲ⁾ = 2s(x̂⁽ʲ⁾ − x)`; its terms are `dL/dW_dec[i] += Σ_r f_ri D⁽ʲ⁾_r`, `G⁽ʲ⁾_ri = D⁽ʲ⁾_r·W_dec[i]`
//! (active `i < w_j`) feeding `W_enc`/`b_enc` as usual, and `dL/db_dec += Σ_r D⁽ʲ⁾_r` (plus the `x_c`
//! term through `Σ G`, added once at the end). The full prefix `j = G` is the shared sparse path; this
//! file adds the inner prefixes `j < G` with the same kernels, accumulating, and leaves `ws.d = Σ_j D⁽ʲ⁾`
//! for the decoder-bias gradient.

use super::*;
use crate::arch::{MatryoshkaAux, MatryoshkaWidths};
use crate::kernels::Codes;

/// `out` = the entries of `full` with latent `< width` (each row's list is sorted, so a prefix of it).
pub(in crate::arch) fn prefix_codes<T: Real>(full: &Codes<T>, width: usize, out: &mut Codes<T>) {
    out.n_rows = full.n_rows;
    out.d_sae = full.d_sae;
    out.row_ptr.clear();
    out.row_ptr.push(0);
    out.idx.clear();
    out.val.clear();
    for r in 0..full.n_rows {
        let (idx, val) = full.row(r);
        let m = idx.partition_point(|&i| (i as usize) < width);
        out.idx.extend_from_slice(&idx[..m]);
        out.val.extend_from_slice(&val[..m]);
        out.row_ptr.push(out.idx.len());
    }
    out.grad.clear();
    out.grad.resize(out.idx.len(), T::ZERO);
}

/// Adds the loss terms and gradients of the inner prefixes `j < G` (after the sparse path has done the
/// full dictionary): fills `stats.prefix_sse` and leaves `ws.d = Σ_j D⁽ʲ⁾`. With per-level AuxK, also
/// each inner level's AuxK (into `stats.aux_loss`) while its prefix's `x̂⁽ʲ⁾` is at hand.
#[allow(clippy::too_many_arguments)]
pub(in crate::arch) fn inner_prefixes<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n_rows: usize,
    groups: MatryoshkaWidths,
    step: &StepConfig<'_>,
    s: T,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
    stats: &mut StepStats,
) {
    let d_in = sae.cfg.d_in;
    let levels = groups.levels();
    stats.prefix_sse = [0.0; crate::arch::MAX_LEVELS];
    stats.prefix_sse[levels - 1] = stats.sse;
    // Keep the full dictionary's x̂, D and per-row errors (AuxK and resampling read them) aside while
    // each prefix borrows the buffers.
    std::mem::swap(&mut ws.xhat, &mut ws.prefix_xhat);
    std::mem::swap(&mut ws.d, &mut ws.prefix_d);
    std::mem::swap(&mut ws.row_sq_err, &mut ws.prefix_row_err);
    for (j, &width) in groups.as_slice()[..levels - 1].iter().enumerate() {
        let mut prefix = std::mem::take(&mut ws.prefix);
        prefix_codes(&ws.codes, width as usize, &mut prefix);
        let xhat = sized(&mut ws.xhat, n_rows * d_in);
        prefix.decode(&sae.w_dec, d_in, Some(&sae.b_dec), xhat, false);
        let (sse, _) = output_grad(x, n_rows, d_in, s, ws);
        stats.prefix_sse[j] = sse;
        let d = &ws.d[..n_rows * d_in];
        prefix.set_grad_from_output(d, &sae.w_dec, d_in, None);
        prefix.index_columns();
        prefix.grad_w_dec(d, d_in, &mut grads.w_dec, true);
        prefix.column_sums(true, &mut grads.b_enc, true);
        prefix.grad_w_enc(&ws.xc[..n_rows * d_in], d_in, &mut grads.w_enc, true);
        for (total, &dj) in ws.prefix_d[..n_rows * d_in].iter_mut().zip(d) {
            *total += dj;
        }
        ws.prefix = prefix;
        if let (MatryoshkaAux::PerLevel, Some(dead)) = (step.matryoshka_aux, step.dead) {
            // ws.xhat still holds x̂⁽ʲ⁾: the level's residual.
            stats.aux_loss += level_auxk(
                sae,
                x,
                n_rows,
                step,
                dead,
                groups.level_range(j),
                s,
                ws,
                grads,
            );
        }
    }
    std::mem::swap(&mut ws.xhat, &mut ws.prefix_xhat);
    std::mem::swap(&mut ws.d, &mut ws.prefix_d);
    std::mem::swap(&mut ws.row_sq_err, &mut ws.prefix_row_err);
}

/// AuxK restricted to the dead latents in `level` (one Matryoshka level), reconstructing the residual
/// `y − ws.xhat`: the caller leaves the level's prefix reconstruction in `ws.xhat`.
#[allow(clippy::too_many_arguments)]
pub(in crate::arch) fn level_auxk<T: Real>(
    sae: &SaeOf<T>,
    y: &[T],
    n_rows: usize,
    step: &StepConfig<'_>,
    dead: &[bool],
    level: std::ops::Range<usize>,
    s: T,
    ws: &mut WorkspaceOf<T>,
    grads: &mut GradientsOf<T>,
) -> f64 {
    let mask: Vec<bool> = dead
        .iter()
        .enumerate()
        .map(|(i, &d)| d && level.contains(&i))
        .collect();
    auxk(sae, y, n_rows, step, &mask, s, ws, grads)
}
