//! The SAE's configuration, weights (SAELens names and orientation), gradients, per-step settings and
//! statistics. The math lives in [`crate::arch`]; the file format in [`crate::saelens`].
//!
//! Orientation (row-major, as SAELens stores them): `w_enc` `[d_in, d_sae]`, `w_dec` `[d_sae, d_in]`, so
//! the decoder direction ("column" in the papers' `W_dec x` notation) of latent `i` is row `i` of `w_dec`.
//!
//! | module | holds |
//! | --- | --- |
//! | `config` | [`Architecture`], [`SaeConfig`] (validated), [`SaeMetadata`] |
//! | `step` | [`StepConfig`], [`Reduction`], [`StepStats`] |
//! | this file | the weights: [`SaeOf`] / [`Sae`], [`GradientsOf`] / [`Gradients`], [`Param`] |

use rand::Rng;

use crate::kernels::Real;
use crate::Result;

mod config;
mod step;

pub use crate::transcoder::TranscoderShape;
pub use config::{Architecture, SaeConfig, SaeMetadata};
pub use step::{Reduction, StepConfig, StepStats};

/// One named parameter tensor, mutable (for the optimizer).
#[derive(Debug)]
pub struct Param<'a, T = f32> {
    /// SAELens name (`W_enc`, `b_enc`, `W_dec`, `b_dec`, `threshold`, `b_gate`, `r_mag`, `b_mag`, `W_skip`).
    pub name: &'static str,
    /// The values.
    pub value: &'a mut [T],
}

/// An SAE's weights, generic over the float type (training uses [`Sae`] = `SaeOf<f32>`; the gradient checks
/// use `SaeOf<f64>`). Tensors an architecture does not use are empty.
#[derive(Debug, Clone, PartialEq)]
pub struct SaeOf<T> {
    /// Configuration.
    pub cfg: SaeConfig,
    /// Encoder `[d_in, d_sae]`.
    pub w_enc: Vec<T>,
    /// Encoder bias `[d_sae]` (empty for gated).
    pub b_enc: Vec<T>,
    /// Decoder `[d_sae, d_in]`: row `i` is latent `i`'s direction.
    pub w_dec: Vec<T>,
    /// Decoder bias `[d_in]`.
    pub b_dec: Vec<T>,
    /// Threshold `[d_sae]`: JumpReLU's trained parameter `θ ≥ 0` (trained directly, as SAELens 6.54 and
    /// dictionary_learning do: under Adam a logarithm moves `θ` by at most ≈ `θ · lr` per step, so from
    /// the 0.001 start it could not reach the pre-activations' scale in a run of realistic length);
    /// batchtopk/matryoshka: the running estimate used at inference (not trained).
    pub threshold: Vec<T>,
    /// Gated: gate bias `[d_sae]`.
    pub b_gate: Vec<T>,
    /// Gated: log-scale of the magnitude path `[d_sae]`.
    pub r_mag: Vec<T>,
    /// Gated: magnitude bias `[d_sae]`.
    pub b_mag: Vec<T>,
    /// Skip transcoder: `W_skip` `[d_out, d_in]` row-major (`ŷ += W_skip x`); empty without a skip path.
    pub w_skip: Vec<T>,
}

/// The `f32` SAE the trainer and the CLI use.
pub type Sae = SaeOf<f32>;

/// Gradients with the same names and lengths as [`SaeOf::params_mut`].
#[derive(Debug, Clone, PartialEq)]
pub struct GradientsOf<T> {
    /// dL/dW_enc.
    pub w_enc: Vec<T>,
    /// dL/db_enc.
    pub b_enc: Vec<T>,
    /// dL/dW_dec.
    pub w_dec: Vec<T>,
    /// dL/db_dec.
    pub b_dec: Vec<T>,
    /// dL/dθ (jumprelu's threshold; empty for the other architectures).
    pub threshold: Vec<T>,
    /// dL/db_gate (gated).
    pub b_gate: Vec<T>,
    /// dL/dr_mag (gated).
    pub r_mag: Vec<T>,
    /// dL/db_mag (gated).
    pub b_mag: Vec<T>,
    /// dL/dW_skip (skip transcoders).
    pub w_skip: Vec<T>,
}

/// `f32` gradients.
pub type Gradients = GradientsOf<f32>;

/// The trainable tensors of an SAE or its gradients (the field names are the same) with their SAELens
/// names, in the canonical order, borrowed with `&` or `&mut`: `named_params!(self, &mut)`.
macro_rules! named_params {
    ($s:ident, $($borrow:tt)+) => {
        [
            ("W_enc", $($borrow)+ $s.w_enc),
            ("b_enc", $($borrow)+ $s.b_enc),
            ("W_dec", $($borrow)+ $s.w_dec),
            ("b_dec", $($borrow)+ $s.b_dec),
            ("threshold", $($borrow)+ $s.threshold),
            ("b_gate", $($borrow)+ $s.b_gate),
            ("r_mag", $($borrow)+ $s.r_mag),
            ("b_mag", $($borrow)+ $s.b_mag),
            ("W_skip", $($borrow)+ $s.w_skip),
        ]
    };
}

impl<T: Real> GradientsOf<T> {
    /// Zero gradients shaped like `sae`'s parameters.
    pub fn zeros_like(sae: &SaeOf<T>) -> Self {
        let z = |v: &Vec<T>| vec![T::ZERO; v.len()];
        Self {
            w_enc: z(&sae.w_enc),
            b_enc: z(&sae.b_enc),
            w_dec: z(&sae.w_dec),
            b_dec: z(&sae.b_dec),
            threshold: if sae.cfg.architecture == Architecture::JumpRelu {
                z(&sae.threshold)
            } else {
                Vec::new()
            },
            b_gate: z(&sae.b_gate),
            r_mag: z(&sae.r_mag),
            b_mag: z(&sae.b_mag),
            w_skip: z(&sae.w_skip),
        }
    }

    /// `(name, values)` in the order of [`SaeOf::params_mut`].
    pub fn slices(&self) -> Vec<(&'static str, &[T])> {
        present(named_params!(self, &))
    }

    /// Mutable views, same order as [`GradientsOf::slices`] (e.g. for clipping).
    pub fn slices_mut(&mut self) -> Vec<Param<'_, T>> {
        present_params(named_params!(self, &mut))
    }

    /// The gradient with this SAELens name.
    pub fn get(&self, name: &str) -> Option<&[T]> {
        self.slices()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

impl<T: Real> SaeOf<T> {
    /// An SAE with every parameter zero (threshold zero) — the shapes for `cfg.architecture`.
    pub fn zeros(cfg: SaeConfig) -> Result<Self> {
        cfg.validate()?;
        let (d_in, d_sae, d_out) = (cfg.d_in, cfg.d_sae, cfg.d_out());
        let z = |n: usize| vec![T::ZERO; n];
        let arch = cfg.architecture;
        let gated = arch == Architecture::Gated;
        let has_threshold = arch.has_threshold();
        Ok(Self {
            w_enc: z(d_in * d_sae),
            b_enc: if gated { Vec::new() } else { z(d_sae) },
            w_dec: z(d_sae * d_out),
            b_dec: z(d_out),
            threshold: if has_threshold { z(d_sae) } else { Vec::new() },
            b_gate: if gated { z(d_sae) } else { Vec::new() },
            r_mag: if gated { z(d_sae) } else { Vec::new() },
            b_mag: if gated { z(d_sae) } else { Vec::new() },
            w_skip: if cfg.has_skip() {
                z(d_out * d_in)
            } else {
                Vec::new()
            },
            cfg,
        })
    }

    /// The standard initialisation: decoder directions uniformly random on the sphere with norm 0.1 (relu,
    /// the April-2024 recipe) or 1 (every other architecture), `W_enc = W_decᵀ`, biases 0, JumpReLU
    /// threshold 0.001. The trainer may then set `b_dec` from the data.
    ///
    /// A transcoder with `d_out = d_in` starts exactly like the SAE of the same seed; with `d_out ≠ d_in`
    /// the encoder columns are drawn as further random directions of the same norm (after the decoder). The
    /// skip matrix starts at zero, as in SAELens and sparsify: the initial transcoder is then exactly the
    /// one without a skip path, and a random `W_skip` would add an output of the input's size, uncorrelated
    /// with the target, that dominates the first steps' loss.
    pub fn init<R: Rng + ?Sized>(cfg: SaeConfig, rng: &mut R) -> Result<Self> {
        let mut sae = Self::zeros(cfg)?;
        let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
        let norm = if sae.cfg.architecture == Architecture::Relu {
            0.1
        } else {
            1.0
        };
        for row in sae.w_dec.chunks_exact_mut(d_out) {
            random_direction(row, norm, rng);
        }
        if d_out == d_in {
            for i in 0..d_sae {
                for j in 0..d_in {
                    sae.w_enc[j * d_sae + i] = sae.w_dec[i * d_in + j];
                }
            }
        } else {
            let mut col = vec![T::ZERO; d_in];
            for i in 0..d_sae {
                random_direction(&mut col, norm, rng);
                for (j, &v) in col.iter().enumerate() {
                    sae.w_enc[j * d_sae + i] = v;
                }
            }
        }
        if sae.cfg.architecture == Architecture::JumpRelu {
            sae.threshold.fill(T::from_f64(0.001));
        }
        Ok(sae)
    }

    /// Trainable parameters in a fixed order (`W_enc`, `b_enc`, `W_dec`, `b_dec`, `threshold`, `b_gate`,
    /// `r_mag`, `b_mag`, `W_skip`, skipping those the architecture does not have). Only JumpReLU trains its
    /// `threshold`; batchtopk's is a running estimate ([`SaeOf::update_batchtopk_threshold`]).
    pub fn params_mut(&mut self) -> Vec<Param<'_, T>> {
        let trained_threshold = self.trains_threshold();
        let mut params = present_params(named_params!(self, &mut));
        params.retain(|p| trained_threshold || p.name != "threshold");
        params
    }

    /// Read-only `(name, values)` of the trainable parameters, same order as [`SaeOf::params_mut`].
    pub fn params(&self) -> Vec<(&'static str, &[T])> {
        let trained_threshold = self.trains_threshold();
        let mut params = present(named_params!(self, &));
        params.retain(|(name, _)| trained_threshold || *name != "threshold");
        params
    }

    fn trains_threshold(&self) -> bool {
        self.cfg.architecture == Architecture::JumpRelu
    }

    /// Projects JumpReLU's threshold onto `θ ≥ 0` (call after each optimizer step; [`SaeOf::post_step`]
    /// does it). Below zero the gate would be a plain ReLU that the parameter can drift away from without
    /// any effect; projecting the value, not clamping inside the step, keeps its gradient alive at 0.
    pub fn project_threshold(&mut self) {
        if self.trains_threshold() {
            for t in self.threshold.iter_mut() {
                if *t < T::ZERO {
                    *t = T::ZERO;
                }
            }
        }
    }

    /// Batchtopk: `threshold ← (1−rate)·threshold + rate·min_active` (Bussmann et al.'s running estimate of
    /// the smallest kept activation; the same value for every latent). No-op for other architectures or
    /// when `min_active` is not finite. The first call (threshold still 0) sets it directly.
    pub fn update_batchtopk_threshold(&mut self, min_active: f64, rate: f64) {
        if !matches!(
            self.cfg.architecture,
            Architecture::BatchTopK { .. } | Architecture::Matryoshka { .. }
        ) || !min_active.is_finite()
        {
            return;
        }
        for t in self.threshold.iter_mut() {
            let old = t.to_f64();
            let new = if old <= 0.0 {
                min_active
            } else {
                (1.0 - rate) * old + rate * min_active
            };
            *t = T::from_f64(new);
        }
    }
}

/// Fills `row` with a Gaussian direction (Box–Muller) scaled to norm `norm`.
fn random_direction<T: Real, R: Rng + ?Sized>(row: &mut [T], norm: f64, rng: &mut R) {
    loop {
        for v in row.iter_mut() {
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random::<f64>();
            *v = T::from_f64((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos());
        }
        let n = row
            .iter()
            .map(|v| v.to_f64() * v.to_f64())
            .sum::<f64>()
            .sqrt();
        if n > 1e-12 {
            for v in row.iter_mut() {
                *v = T::from_f64(v.to_f64() * norm / n);
            }
            return;
        }
    }
}

/// The named buffers an architecture actually has (empty ones are absent), read-only, in the given order.
fn present<'a, T>(all: [(&'static str, &'a Vec<T>); 9]) -> Vec<(&'static str, &'a [T])> {
    all.into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, v)| (name, v.as_slice()))
        .collect()
}

/// The named buffers an architecture actually has (empty ones are absent), as [`Param`]s in the given order.
fn present_params<'a, T>(all: [(&'static str, &'a mut Vec<T>); 9]) -> Vec<Param<'a, T>> {
    all.into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, v)| Param {
            name,
            value: v.as_mut_slice(),
        })
        .collect()
}
