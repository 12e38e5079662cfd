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

//!
//! Files: this one (the sheet types, [`worksheet`], small matrix helpers), `autoencoder.rs` (part a),
//! `sae_sheet.rs` (part b).

use crate::kernels::{matmul, MatRef};
use crate::Result;

mod autoencoder;
mod sae_sheet;

use autoencoder::autoencoder_sheet;
use sae_sheet::sae_sheet;

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
