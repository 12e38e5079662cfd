//! Part (b): the ReLU SAE on 5 activations, through the trainer's own forward/backward.

use super::*;
use crate::sae::{Architecture, GradientsOf, Reduction, SaeConfig, SaeOf, StepConfig};
use crate::{SaeError, WorkspaceOf};

pub(super) fn sae_sheet() -> Result<SaeSheet> {
    let x = Matrix::from_rows(&[
        &[1.0, 2.0, 0.0],
        &[0.0, 1.0, 2.0],
        &[2.0, 0.0, 1.0],
        &[1.0, 1.0, 1.0],
        &[3.0, 0.0, -1.0],
    ]);
    // Worksheet orientation: a row per feature (encoder), a column per feature (decoder).
    let w_enc = Matrix::from_rows(&[
        &[1.0, 0.0, -1.0],
        &[0.0, 1.0, 1.0],
        &[1.0, 1.0, 0.0],
        &[-1.0, 1.0, 0.0],
        &[0.0, -1.0, 1.0],
        &[1.0, -1.0, 1.0],
    ]);
    let b_enc = vec![0.5, -0.5, -1.5, -0.5, 0.5, -1.5];
    let w_dec = Matrix::from_rows(&[
        &[1.0, 0.0, 2.0, -1.0, 0.0, 1.0],
        &[0.0, 1.0, 1.0, 0.0, -1.0, 0.0],
        &[1.0, 1.0, 0.0, 1.0, 2.0, 0.0],
    ]);
    let b_dec = vec![0.5, 0.0, -0.5];
    let lambda = 0.5;
    let lr = 0.01;
    let (n, d_in, d_sae) = (x.rows, x.cols, w_enc.rows);

    let mut cfg = SaeConfig::new(d_in, d_sae, Architecture::Relu)?;
    cfg.apply_b_dec_to_input = false;
    let mut sae = SaeOf::<f64>::zeros(cfg)?;
    sae.w_enc = w_enc.t().data; // SAELens W_enc [d_in, d_sae]
    sae.w_dec = w_dec.t().data; // SAELens W_dec [d_sae, d_in]
    sae.b_enc = b_enc.clone();
    sae.b_dec = b_dec.clone();
    let mut ws = WorkspaceOf::default();
    let mut grads = GradientsOf::zeros_like(&sae);
    let step_cfg = StepConfig {
        sparsity_coeff: lambda,
        reduction: Reduction::Sum,
        dense_above: 1.0,
        ..StepConfig::default()
    };
    let stats = sae.forward_backward(&x.data, n, &step_cfg, &mut ws, &mut grads)?;

    // The intermediate matrices, for display (the loss and gradients above are what the trainer computes).
    let mut z = mm(&x, &w_enc.t());
    add_bias(&mut z, &b_enc);
    if z.data.contains(&0.0) {
        return Err(SaeError::invalid(
            "worksheet numbers",
            "(a pre-activation of exactly 0)",
            "they put a pre-activation exactly on the ReLU kink",
        ));
    }
    let f = relu(&z);
    let mut xr = mm(&f, &w_dec.t());
    add_bias(&mut xr, &b_dec);
    let norms: Vec<f64> = (0..d_sae)
        .map(|i| {
            (0..d_in)
                .map(|j| w_dec.data[j * d_sae + i].powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let l1_rows: Vec<f64> = (0..n)
        .map(|r| {
            lambda
                * (0..d_sae)
                    .map(|i| f.data[r * d_sae + i] * norms[i])
                    .sum::<f64>()
        })
        .collect();
    let sign = Matrix::new(
        n,
        d_sae,
        f.data
            .iter()
            .map(|v| if *v > 0.0 { 1.0 } else { 0.0 })
            .collect(),
    );
    let mask = Matrix::new(
        n,
        d_sae,
        z.data
            .iter()
            .map(|v| if *v > 0.0 { 1.0 } else { 0.0 })
            .collect(),
    );
    let sparse_grad = Matrix::new(
        n,
        d_sae,
        (0..n * d_sae)
            .map(|p| lambda * sign.data[p] * mask.data[p] * norms[p % d_sae])
            .collect(),
    );
    let mse_rows: Vec<f64> = (0..n)
        .map(|r| {
            (0..d_in)
                .map(|j| (xr.data[r * d_in + j] - x.data[r * d_in + j]).powi(2))
                .sum()
        })
        .collect();
    let dxr = Matrix::new(
        n,
        d_in,
        xr.data
            .iter()
            .zip(&x.data)
            .map(|(a, b)| 2.0 * (a - b))
            .collect(),
    );

    let grad_w_enc = Matrix::new(d_in, d_sae, grads.w_enc.clone()).t();
    let grad_w_dec = Matrix::new(d_sae, d_in, grads.w_dec.clone()).t();
    let grad_b_enc = grads.b_enc.clone();
    let grad_b_dec = grads.b_dec.clone();
    let upd =
        |w: &[f64], g: &[f64]| -> Vec<f64> { w.iter().zip(g).map(|(a, b)| a - lr * b).collect() };
    let l1_total: f64 = l1_rows.iter().sum();
    let mse_total: f64 = mse_rows.iter().sum();
    let steps = vec![
        step(
            "(1) encoder linear: Z = X·W_encᵀ + b_enc",
            "each feature's pre-activation for each sample (rows: samples, columns: 6 features)",
            Cell::Matrix(z),
        ),
        step(
            "(2) ReLU: F = max(Z, 0)",
            "negative pre-activations become 0: the sparse feature activations",
            Cell::Matrix(f),
        ),
        step(
            "(3) decoder reconstruction: X′ = F·W_decᵀ + b_dec",
            "each sample rebuilt as a weighted sum of decoder columns",
            Cell::Matrix(xr),
        ),
        step(
            "(4) decoder column L2 norms ‖W_dec[:,i]‖",
            "the length of each feature's decoder direction",
            Cell::Vector(norms),
        ),
        step(
            "(5) L1 loss λ Σ_i f_i ‖W_dec[:,i]‖ (per sample)",
            &format!("sparsity penalty per sample; total {l1_total:.4}"),
            Cell::Vector(l1_rows),
        ),
        step(
            "(6) its gradient: sign(F)",
            "the derivative of |f| is the sign of f (1 where active)",
            Cell::Matrix(sign),
        ),
        step(
            "(7) zeros stay zero: 1[Z > 0]",
            "the ReLU passes no gradient where the feature was off",
            Cell::Matrix(mask),
        ),
        step(
            "(8) sparsity gradient × decoder norms: λ·sign(F)·‖W_dec[:,i]‖",
            "dL_sparsity/dZ for every sample and feature",
            Cell::Matrix(sparse_grad),
        ),
        step(
            "(9) MSE loss ‖X′ − X‖² (per sample)",
            &format!("reconstruction error per sample; total {mse_total:.4}"),
            Cell::Vector(mse_rows),
        ),
        step(
            "(10) its gradient 2(X′ − X)",
            "dL_mse/dX′: how the loss changes with each reconstructed value",
            Cell::Matrix(dxr),
        ),
        step(
            "update W_enc ← W_enc − lr·dL/dW_enc",
            &format!("one gradient-descent step, lr = {lr}"),
            Cell::Matrix(Matrix::new(d_sae, d_in, upd(&w_enc.data, &grad_w_enc.data))),
        ),
        step(
            "update b_enc ← b_enc − lr·dL/db_enc",
            &format!("lr = {lr}"),
            Cell::Vector(upd(&b_enc, &grad_b_enc)),
        ),
        step(
            "update W_dec ← W_dec − lr·dL/dW_dec",
            &format!("lr = {lr}"),
            Cell::Matrix(Matrix::new(d_in, d_sae, upd(&w_dec.data, &grad_w_dec.data))),
        ),
        step(
            "update b_dec ← b_dec − lr·dL/db_dec",
            &format!("lr = {lr}"),
            Cell::Vector(upd(&b_dec, &grad_b_dec)),
        ),
    ];
    Ok(SaeSheet {
        x,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        lambda,
        lr,
        steps,
        loss: stats.loss,
        grad_w_enc,
        grad_b_enc,
        grad_w_dec,
        grad_b_dec,
    })
}
