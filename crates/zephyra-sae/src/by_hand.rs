//! The seed article's worksheet, computed with the trainer's own code: (a) a small autoencoder
//! 4→3→2→3→4 with ReLU after every layer, trained one step on 4 examples; (b) a ReLU sparse autoencoder
//! (the `relu` architecture: Anthropic's April-2024 recipe) on 5 activations of dimension 3 with 6
//! features, whose forward pass, loss and gradients come from [`crate::SaeOf::forward_backward`] (at
//! `f64`, with [`Reduction::Sum`] and `apply_b_dec_to_input = false`), then one SGD update.
//!
//! Worksheet conventions: samples are rows of `X`; the worksheet's `W_enc` is `6×3` (a row per feature)
//! and its `W_dec` is `3×6` (a column per feature), i.e. the transposes of the SAELens tensors. The loss
//! is summed over samples: `L = Σ_samples ‖x′−x‖² + λ Σ_samples Σ_i f_i ‖W_dec[:,i]‖₂`, and the gradients
//! are of that `L`. The numbers are chosen so that no pre-activation is exactly 0 and every decoder
//! column is non-zero: inputs and weights are integers and the biases of layer `l` of the autoencoder are
//! odd multiples of `2^-l` (so layer `l`'s pre-activations are too), those of the SAE's encoder odd
//! multiples of ½.

use crate::kernels::{matmul, MatRef};
use crate::sae::{Architecture, GradientsOf, Reduction, SaeConfig, SaeOf, StepConfig};
use crate::{Result, SaeError, WorkspaceOf};

/// A row-major matrix for display.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values, row-major.
    pub data: Vec<f64>,
}

impl Matrix {
    /// From nested rows.
    pub fn from_rows(rows: &[&[f64]]) -> Self {
        let cols = rows.first().map_or(0, |r| r.len());
        Self {
            rows: rows.len(),
            cols,
            data: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        }
    }

    fn new(rows: usize, cols: usize, data: Vec<f64>) -> Self {
        Self { rows, cols, data }
    }

    /// The transpose.
    pub fn t(&self) -> Self {
        let mut data = vec![0.0; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                data[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        Self::new(self.cols, self.rows, data)
    }
}

/// A worksheet value: scalar, vector or matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A number.
    Scalar(f64),
    /// A vector.
    Vector(Vec<f64>),
    /// A matrix.
    Matrix(Matrix),
}

/// One worksheet step: its name, a one-line explanation and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Short name, e.g. `(1) encoder linear`.
    pub name: String,
    /// One line saying what is computed.
    pub explanation: String,
    /// The value.
    pub value: Cell,
}

fn step(name: &str, explanation: &str, value: Cell) -> Step {
    Step {
        name: name.into(),
        explanation: explanation.into(),
        value,
    }
}

/// Part (a): the plain autoencoder.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderSheet {
    /// Training examples (4×4, rows are samples); also the targets.
    pub x: Matrix,
    /// Layer weights `W_l` (`out × in`) and biases, layers 1..=4.
    pub layers: Vec<(Matrix, Vec<f64>)>,
    /// Learning rate of the update.
    pub lr: f64,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Summed squared error.
    pub loss: f64,
    /// dL/dW_l and dL/db_l, layers 1..=4.
    pub grads: Vec<(Matrix, Vec<f64>)>,
}

/// Part (b): the sparse autoencoder.
#[derive(Debug, Clone, PartialEq)]
pub struct SaeSheet {
    /// Activations (5×3, rows are samples).
    pub x: Matrix,
    /// Encoder, worksheet orientation (6×3).
    pub w_enc: Matrix,
    /// Encoder bias (6).
    pub b_enc: Vec<f64>,
    /// Decoder, worksheet orientation (3×6).
    pub w_dec: Matrix,
    /// Decoder bias (3).
    pub b_dec: Vec<f64>,
    /// Sparsity coefficient λ.
    pub lambda: f64,
    /// Learning rate of the update.
    pub lr: f64,
    /// Steps (1)…(10) then the update.
    pub steps: Vec<Step>,
    /// `L` (summed over samples).
    pub loss: f64,
    /// dL/dW_enc (6×3).
    pub grad_w_enc: Matrix,
    /// dL/db_enc (6).
    pub grad_b_enc: Vec<f64>,
    /// dL/dW_dec (3×6).
    pub grad_w_dec: Matrix,
    /// dL/db_dec (3).
    pub grad_b_dec: Vec<f64>,
}

/// Both parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Worksheet {
    /// Part (a).
    pub autoencoder: AutoencoderSheet,
    /// Part (b).
    pub sae: SaeSheet,
}

/// Computes the worksheet.
pub fn worksheet() -> Result<Worksheet> {
    Ok(Worksheet {
        autoencoder: autoencoder_sheet(),
        sae: sae_sheet()?,
    })
}

fn mm(a: &Matrix, b: &Matrix) -> Matrix {
    let mut out = vec![0.0; a.rows * b.cols];
    matmul(
        &mut out,
        MatRef::row_major(&a.data, a.rows, a.cols),
        MatRef::row_major(&b.data, b.rows, b.cols),
        false,
        1.0,
    );
    Matrix::new(a.rows, b.cols, out)
}

fn add_bias(m: &mut Matrix, b: &[f64]) {
    for row in m.data.chunks_mut(m.cols) {
        for (v, &bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

fn relu(m: &Matrix) -> Matrix {
    Matrix::new(m.rows, m.cols, m.data.iter().map(|v| v.max(0.0)).collect())
}

fn autoencoder_sheet() -> AutoencoderSheet {
    let x = Matrix::from_rows(&[
        &[1.0, 0.0, 2.0, 1.0],
        &[0.0, 1.0, 1.0, 2.0],
        &[2.0, 1.0, 0.0, 1.0],
        &[1.0, 2.0, 1.0, 0.0],
    ]);
    let layers = vec![
        (
            Matrix::from_rows(&[
                &[1.0, 0.0, 1.0, -1.0],
                &[0.0, 1.0, -1.0, 1.0],
                &[1.0, 1.0, 0.0, 0.0],
            ]),
            vec![0.5, 0.5, -0.5],
        ),
        (
            Matrix::from_rows(&[&[1.0, -1.0, 1.0], &[0.0, 1.0, 1.0]]),
            vec![-0.25, 0.25],
        ),
        (
            Matrix::from_rows(&[&[1.0, 0.0], &[0.0, 1.0], &[1.0, -1.0]]),
            vec![0.125, -0.125, 0.125],
        ),
        (
            Matrix::from_rows(&[
                &[1.0, 0.0, 0.0],
                &[0.0, 1.0, 0.0],
                &[0.0, 0.0, 1.0],
                &[1.0, 1.0, -1.0],
            ]),
            vec![-0.0625, 0.0625, 0.0625, -0.0625],
        ),
    ];
    let lr = 0.01;
    let names = [
        "encoder 4→3",
        "encoder 3→2 (the code)",
        "decoder 2→3",
        "decoder 3→4 (output Y)",
    ];
    let mut steps = vec![step(
        "X",
        "4 training examples (rows); the autoencoder's target is its input",
        Cell::Matrix(x.clone()),
    )];
    // Forward.
    let mut inputs = vec![x.clone()];
    let mut pres = Vec::new();
    for (l, (w, b)) in layers.iter().enumerate() {
        let mut pre = mm(inputs.last().unwrap_or(&x), &w.t());
        add_bias(&mut pre, b);
        let out = relu(&pre);
        steps.push(step(
            &format!("layer {} {}: W·h + b", l + 1, names[l]),
            "linear map of the previous layer's output (one row per example)",
            Cell::Matrix(pre.clone()),
        ));
        steps.push(step(
            &format!("layer {} ReLU", l + 1),
            "negative pre-activations become 0",
            Cell::Matrix(out.clone()),
        ));
        pres.push(pre);
        inputs.push(out);
    }
    let y = inputs.last().cloned().unwrap_or_else(|| x.clone());
    let loss: f64 = y
        .data
        .iter()
        .zip(&x.data)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    steps.push(step(
        "loss Σ(Y−Y′)²",
        "squared error between the output Y and the target Y′ = X, summed over examples",
        Cell::Scalar(loss),
    ));
    let mut d = Matrix::new(
        y.rows,
        y.cols,
        y.data
            .iter()
            .zip(&x.data)
            .map(|(a, b)| 2.0 * (a - b))
            .collect(),
    );
    steps.push(step(
        "gradient 2(Y−Y′)",
        "dL/dY: how the loss changes with each output",
        Cell::Matrix(d.clone()),
    ));
    // Backward.
    let mut grads = vec![(Matrix::new(0, 0, vec![]), vec![]); layers.len()];
    for l in (0..layers.len()).rev() {
        let dpre = Matrix::new(
            d.rows,
            d.cols,
            d.data
                .iter()
                .zip(&pres[l].data)
                .map(|(g, p)| if *p > 0.0 { *g } else { 0.0 })
                .collect(),
        );
        steps.push(step(
            &format!("layer {} backprop through ReLU", l + 1),
            "gradient passes where the pre-activation was positive, else 0",
            Cell::Matrix(dpre.clone()),
        ));
        let gw = mm(&dpre.t(), &inputs[l]);
        let gb: Vec<f64> = (0..dpre.cols)
            .map(|c| (0..dpre.rows).map(|r| dpre.data[r * dpre.cols + c]).sum())
            .collect();
        steps.push(step(&format!("layer {} dL/dW", l + 1), "outer products of the back-propagated gradient with the layer input, summed over examples", Cell::Matrix(gw.clone())));
        steps.push(step(
            &format!("layer {} dL/db", l + 1),
            "back-propagated gradient summed over examples",
            Cell::Vector(gb.clone()),
        ));
        d = mm(&dpre, &layers[l].0);
        grads[l] = (gw, gb);
    }
    for (l, ((w, b), (gw, gb))) in layers.iter().zip(&grads).enumerate() {
        let nw = Matrix::new(
            w.rows,
            w.cols,
            w.data
                .iter()
                .zip(&gw.data)
                .map(|(a, g)| a - lr * g)
                .collect(),
        );
        let nb: Vec<f64> = b.iter().zip(gb).map(|(a, g)| a - lr * g).collect();
        steps.push(step(
            &format!("update layer {} W ← W − lr·dL/dW", l + 1),
            &format!("one gradient-descent step with lr = {lr}"),
            Cell::Matrix(nw),
        ));
        steps.push(step(
            &format!("update layer {} b ← b − lr·dL/db", l + 1),
            &format!("one gradient-descent step with lr = {lr}"),
            Cell::Vector(nb),
        ));
    }
    AutoencoderSheet {
        x,
        layers,
        lr,
        steps,
        loss,
        grads,
    }
}

fn sae_sheet() -> Result<SaeSheet> {
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
