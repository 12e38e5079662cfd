//! Inference: feature activations and reconstructions, as SAELens computes them.
//!
//! - standard (relu, relu-unit): `f = ReLU(z)`; topk: ReLU of the row's `k` largest `z`;
//! - jumprelu and batchtopk (saved as JumpReLU): `f = z·1[z > threshold]` (after ReLU);
//! - gated: `f = 1[π_gate > 0]·ReLU(π_mag)`.

use rayon::prelude::*;

use super::codes::encoder_preact;
use super::WorkspaceOf;
use crate::kernels::select::top_k;
use crate::kernels::{matmul, MatRef, Real};
use crate::sae::{Architecture, SaeOf};
use crate::Result;

type TopKScratch<T> = (Vec<(T, u32)>, Vec<(u32, T)>);

impl<T: Real> SaeOf<T> {
    /// Dense feature activations `[n_rows, d_sae]` of `x` (`n_rows × d_in`; a transcoder's input).
    pub fn encode(&self, x: &[T], n_rows: usize) -> Result<Vec<T>> {
        let mut ws = WorkspaceOf::default();
        self.encode_with(x, n_rows, &mut ws)?;
        ws.z.truncate(n_rows * self.cfg.d_sae);
        Ok(ws.z)
    }

    /// The encoder's pre-activations `[n_rows, d_sae]` of `x` (`(x − b_dec) W_enc + b_enc`, `b_dec`
    /// subtracted as the SAE's `apply_b_dec_to_input` says), before any activation function or threshold.
    pub fn pre_activations(&self, x: &[T], n_rows: usize) -> Result<Vec<T>> {
        self.check_batch(x, n_rows, self.cfg.d_in)?;
        self.check_shapes()?;
        let mut ws = WorkspaceOf::default();
        encoder_preact(self, x, n_rows, &self.b_enc, &mut ws);
        ws.z.truncate(n_rows * self.cfg.d_sae);
        Ok(ws.z)
    }

    /// Like [`SaeOf::encode`], reusing `ws`; the codes are left in the returned slice (inside `ws`).
    pub fn encode_with<'w>(
        &self,
        x: &[T],
        n_rows: usize,
        ws: &'w mut WorkspaceOf<T>,
    ) -> Result<&'w [T]> {
        self.check_batch(x, n_rows, self.cfg.d_in)?;
        self.check_shapes()?;
        let d_sae = self.cfg.d_sae;
        let arch = self.cfg.architecture;
        if arch == Architecture::Gated {
            encoder_preact(self, x, n_rows, &[], ws);
            let z = &mut ws.z[..n_rows * d_sae];
            z.par_chunks_exact_mut(d_sae)
                .with_min_len(16)
                .for_each(|row| {
                    for (i, v) in row.iter_mut().enumerate() {
                        let pg = *v + self.b_gate[i];
                        let pm = *v * self.r_mag[i].exp() + self.b_mag[i];
                        *v = if pg > T::ZERO && pm > T::ZERO {
                            pm
                        } else {
                            T::ZERO
                        };
                    }
                });
            return Ok(&ws.z[..n_rows * d_sae]);
        }
        encoder_preact(self, x, n_rows, &self.b_enc, ws);
        let z = &mut ws.z[..n_rows * d_sae];
        match arch {
            Architecture::Relu | Architecture::ReluUnit => z
                .par_iter_mut()
                .with_min_len(4096)
                .for_each(|v| *v = v.max(T::ZERO)),
            Architecture::JumpRelu
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. } => {
                let th = &self.threshold;
                z.par_chunks_exact_mut(d_sae)
                    .with_min_len(16)
                    .for_each(|row| {
                        for (v, &t) in row.iter_mut().zip(th) {
                            let r = v.max(T::ZERO);
                            *v = if r > t { r } else { T::ZERO };
                        }
                    });
            }
            Architecture::TopK { k } => {
                z.par_chunks_exact_mut(d_sae).with_min_len(8).for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(scratch, kept): &mut TopKScratch<T>, row| {
                        top_k(row, k, scratch, kept);
                        row.fill(T::ZERO);
                        for &(i, v) in kept.iter() {
                            row[i as usize] = v.max(T::ZERO);
                        }
                    },
                );
            }
            Architecture::Gated => unreachable!("handled above"),
        }
        Ok(&ws.z[..n_rows * d_sae])
    }

    /// Reconstruction `f W_dec + b_dec` (`[n_rows, d_out]`) of dense codes `[n_rows, d_sae]`; without a
    /// transcoder's skip term (see [`SaeOf::transcode`]).
    pub fn decode(&self, codes: &[T], n_rows: usize) -> Result<Vec<T>> {
        let (d_in, d_sae) = (self.cfg.d_out(), self.cfg.d_sae);
        if codes.len() != n_rows * d_sae {
            return Err(crate::SaeError::shape(
                "codes",
                &[n_rows, d_sae],
                &[codes.len()],
            ));
        }
        let mut out = Vec::with_capacity(n_rows * d_in);
        for _ in 0..n_rows {
            out.extend_from_slice(&self.b_dec);
        }
        matmul(
            &mut out,
            MatRef::row_major(codes, n_rows, d_sae),
            MatRef::row_major(&self.w_dec, d_sae, d_in),
            true,
            T::ONE,
        );
        Ok(out)
    }
}
