//! The SAE's configuration, weights (SAELens names and orientation), gradients, per-step settings and
//! statistics. The math lives in [`crate::arch`]; the file format in [`crate::saelens`].
//!
//! Orientation (row-major, as SAELens stores them): `w_enc` `[d_in, d_sae]`, `w_dec` `[d_sae, d_in]`, so
//! the decoder direction ("column" in the papers' `W_dec x` notation) of latent `i` is row `i` of `w_dec`.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::kernels::Real;
pub use crate::transcoder::TranscoderShape;
use crate::{Result, SaeError};

/// The SAE architecture and its architecture-specific hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Architecture {
    /// Anthropic April-2024 recipe: `f = ReLU(W_enc x + b_enc)`, loss `‖x̂−x‖² + λ Σ f_i ‖d_i‖`, free decoder.
    Relu,
    /// Towards Monosemanticity: unit-norm decoder directions, plain L1, dead-latent resampling.
    ReluUnit,
    /// Keep the `k` largest pre-activations per row (Gao et al. 2024), AuxK on dead latents.
    #[serde(rename = "topk")]
    TopK {
        /// Active latents per row.
        k: usize,
    },
    /// Keep the `k × batch` largest pre-activations across the batch (Bussmann et al. 2024); inference
    /// uses the learned `threshold` (a JumpReLU).
    #[serde(rename = "batchtopk")]
    BatchTopK {
        /// Mean active latents per row.
        k: usize,
    },
    /// `f = z·H(z − θ)`, `θ = exp(log_threshold)`, L0 penalty with straight-through estimators.
    #[serde(rename = "jumprelu")]
    JumpRelu,
    /// Gated SAE (Rajamanoharan et al. 2024): gate and magnitude paths sharing `W_enc`.
    Gated,
    /// Matryoshka BatchTopK (Bussmann et al. 2025; Nabeshima 2024): BatchTopK over the whole dictionary,
    /// the reconstruction loss summed over the nested prefixes `0..w_j`; inference as batchtopk.
    #[serde(rename = "matryoshka")]
    Matryoshka {
        /// Mean active latents per row.
        k: usize,
        /// Cumulative prefix widths, the last = `d_sae`.
        groups: crate::arch::MatryoshkaWidths,
    },
}

impl Architecture {
    /// The name used on the command line (`--arch`) and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::ReluUnit => "relu-unit",
            Self::TopK { .. } => "topk",
            Self::BatchTopK { .. } => "batchtopk",
            Self::JumpRelu => "jumprelu",
            Self::Gated => "gated",
            Self::Matryoshka { .. } => "matryoshka",
        }
    }

    /// Whether the decoder directions are kept at unit norm (renormalised after each step, gradient
    /// component along each direction removed before it).
    pub fn unit_norm_decoder(&self) -> bool {
        matches!(
            self,
            Self::ReluUnit | Self::TopK { .. } | Self::BatchTopK { .. } | Self::Matryoshka { .. }
        )
    }

    /// Whether inference compares pre-activations against a per-latent `threshold` (JumpReLU's trained
    /// one, BatchTopK's and Matryoshka's learned estimate).
    pub fn has_threshold(&self) -> bool {
        matches!(
            self,
            Self::JumpRelu | Self::BatchTopK { .. } | Self::Matryoshka { .. }
        )
    }

    /// `k` for TopK / BatchTopK.
    pub fn k(&self) -> Option<usize> {
        match self {
            Self::TopK { k } | Self::BatchTopK { k } | Self::Matryoshka { k, .. } => Some(*k),
            _ => None,
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.k(), self) {
            (Some(k), Self::Matryoshka { groups, .. }) => {
                write!(f, "{}(k={k}, groups={groups})", self.name())
            }
            (Some(k), _) => write!(f, "{}(k={k})", self.name()),
            (None, _) => f.write_str(self.name()),
        }
    }
}

/// Where the SAE's inputs came from (SAELens' `metadata` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaeMetadata {
    /// Model the activations were taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Hook point (TransformerLens name, e.g. `blocks.3.hook_resid_post`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_name: Option<String>,
    /// Tokens per context during harvesting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<usize>,
    /// A transcoder's output hook (the activation it predicts, e.g. `blocks.3.hook_mlp_out`); SAELens 6.54
    /// keeps it under the same key in `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_name_out: Option<String>,
    /// Any other keys, kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An SAE's configuration (validated: build with [`SaeConfig::new`] or [`SaeConfig::transcoder`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    /// Input dimension.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Architecture.
    pub architecture: Architecture,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Input scaling applied during training, already folded into saved weights (`None` = no scaling).
    pub normalization_factor: Option<f32>,
    /// Provenance.
    pub metadata: SaeMetadata,
    /// `Some` for a transcoder (output width and skip path); `None` for an SAE (output = input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoder: Option<TranscoderShape>,
}

impl SaeConfig {
    /// A configuration with `apply_b_dec_to_input = true`, no normalisation and empty metadata.
    pub fn new(d_in: usize, d_sae: usize, architecture: Architecture) -> Result<Self> {
        let cfg = Self {
            d_in,
            d_sae,
            architecture,
            apply_b_dec_to_input: true,
            normalization_factor: None,
            metadata: SaeMetadata::default(),
            transcoder: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks sizes and hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        if self.d_in == 0 || self.d_sae == 0 {
            return Err(SaeError::invalid(
                "d_in × d_sae",
                format!("{} × {}", self.d_in, self.d_sae),
                "both must be positive (expansion factor 0?)",
            ));
        }
        if u32::try_from(self.d_sae).is_err() {
            return Err(SaeError::invalid(
                "d_sae",
                self.d_sae,
                format!("it is too large (max {})", u32::MAX),
            ));
        }
        let weight_bytes = self
            .d_in
            .checked_mul(self.d_sae)
            .and_then(|n| n.checked_mul(4))
            .filter(|&b| b <= isize::MAX as usize);
        if weight_bytes.is_none() {
            return Err(SaeError::invalid(
                "d_in × d_sae",
                format!("{} × {}", self.d_in, self.d_sae),
                "so many weights cannot be held in memory (the byte size overflows): a corrupt \
                 cfg.json or checkpoint?",
            ));
        }
        if let Some(t) = self.transcoder {
            self.validate_transcoder(t)?;
        }
        if let Some(k) = self.architecture.k() {
            if k == 0 || k >= self.d_sae {
                return Err(SaeError::invalid(
                    "--k",
                    k,
                    format!(
                        "k = {k} must satisfy 0 < k < d_sae = {}; lower --k or raise --expansion",
                        self.d_sae
                    ),
                ));
            }
        }
        if let Architecture::Matryoshka { groups, .. } = self.architecture {
            groups.check_d_sae(self.d_sae)?;
        }
        Ok(())
    }
}

/// How per-row losses are combined over a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over rows (training).
    #[default]
    Mean,
    /// Sum over rows (the by-hand worksheet).
    Sum,
}

/// Settings for one training step.
#[derive(Debug, Clone, Copy)]
pub struct StepConfig<'a> {
    /// Sparsity coefficient λ for this step (after warm-up): L1 weight for relu/relu-unit/gated, L0 weight
    /// for jumprelu; unused by topk/batchtopk.
    pub sparsity_coeff: f64,
    /// Mean or sum over rows.
    pub reduction: Reduction,
    /// Dead latents (from the trainer's tokens-since-fired counters), length `d_sae`; `None` = none dead.
    /// Used by the AuxK loss of topk/batchtopk.
    pub dead: Option<&'a [bool]>,
    /// AuxK: number of dead latents used per row (`None` = `d_in / 2`).
    pub k_aux: Option<usize>,
    /// AuxK coefficient α (default 1/32).
    pub aux_coeff: f64,
    /// JumpReLU straight-through bandwidth ε (default 0.001).
    pub bandwidth: f64,
    /// Codes denser than this fraction of `n × d_sae` use the dense GEMM paths (relu, relu-unit, jumprelu).
    /// Default: [`crate::kernels::sparse::dense_cutover`].
    pub dense_above: f64,
    /// JumpReLU's sparsity penalty, weighted by `sparsity_coeff` (default: L0).
    pub jumprelu_sparsity: crate::JumpReluSparsity,
    /// JumpReLU: coefficient λ_p of Anthropic's pre-activation loss `λ_p Σ ReLU(θ_i − z_i)‖W_dec[i]‖`
    /// (0 = off, the default).
    pub pre_act_coeff: f64,
    /// TopK family: SAELens' free-decoder parametrisation, pre-activations multiplied by `‖W_dec[i]‖` and
    /// decoding with `W_dec[i]/‖W_dec[i]‖` (see `arch/codes/rescale.rs`; default off).
    pub rescale_acts_by_decoder_norm: bool,
}

impl StepConfig<'_> {
    /// Checks the JumpReLU recipe's values (positive tanh scale and target L0, λ_p ≥ 0, all finite).
    pub fn check_jumprelu(&self) -> Result<()> {
        let (name, v) = match self.jumprelu_sparsity {
            crate::JumpReluSparsity::Tanh { scale } => ("--tanh-scale", scale),
            crate::JumpReluSparsity::QuadraticL0 { target } => ("--target-l0", target),
            crate::JumpReluSparsity::L0 => ("", 1.0),
        };
        if !(v.is_finite() && v > 0.0) {
            return Err(SaeError::invalid(name, v, "it must be a finite number > 0"));
        }
        if !(self.pre_act_coeff.is_finite() && self.pre_act_coeff >= 0.0) {
            return Err(SaeError::invalid(
                "--pre-act-coeff",
                self.pre_act_coeff,
                "it must be a finite number ≥ 0 (0 turns the loss off)",
            ));
        }
        Ok(())
    }
}

impl Default for StepConfig<'_> {
    fn default() -> Self {
        Self {
            sparsity_coeff: 0.0,
            reduction: Reduction::Mean,
            dead: None,
            k_aux: None,
            aux_coeff: 1.0 / 32.0,
            bandwidth: 0.001,
            dense_above: crate::kernels::sparse::dense_cutover(),
            jumprelu_sparsity: crate::JumpReluSparsity::L0,
            pre_act_coeff: 0.0,
            rescale_acts_by_decoder_norm: false,
        }
    }
}

/// Loss terms and statistics of one forward/backward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// Rows in the batch.
    pub n_rows: usize,
    /// Total loss (what the gradients are of).
    pub loss: f64,
    /// Reconstruction term `‖x̂−x‖²` (mean or sum over rows, per [`Reduction`]).
    pub mse_loss: f64,
    /// Sparsity term (L1, decoder-norm-weighted L1, or L0), with λ applied.
    pub sparsity_loss: f64,
    /// Auxiliary term (AuxK for topk/batchtopk/matryoshka, gate reconstruction for gated, the
    /// pre-activation loss for jumprelu), with its coefficient.
    pub aux_loss: f64,
    /// Mean number of active latents per row.
    pub l0: f64,
    /// `Σ_rows ‖x̂−x‖²` (unscaled).
    pub sse: f64,
    /// `Σ_rows ‖x − mean_batch(x)‖²` (unscaled): FVE = 1 − sse/sst.
    pub sst: f64,
    /// Smallest positive kept activation (batchtopk threshold estimate; `+∞` when none).
    pub min_active: f64,
    /// Whether the dense paths were used.
    pub dense: bool,
    /// Matryoshka: `Σ_rows ‖x̂⁽ʲ⁾−x‖²` (unscaled) of each nested prefix `j`, the last = `sse`; zeros past the
    /// last level and for the other architectures.
    pub prefix_sse: [f64; crate::arch::MAX_LEVELS],
}

/// One named parameter tensor, mutable (for the optimizer).
#[derive(Debug)]
pub struct Param<'a, T = f32> {
    /// SAELens name (`W_enc`, `b_enc`, `W_dec`, `b_dec`, `log_threshold`, `b_gate`, `r_mag`, `b_mag`).
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
    /// Inference threshold `[d_sae]` (jumprelu: `exp(log_threshold)`; batchtopk: the learned estimate).
    pub threshold: Vec<T>,
    /// JumpReLU's trained parameter `[d_sae]`.
    pub log_threshold: Vec<T>,
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
    /// dL/dlog_threshold (jumprelu).
    pub log_threshold: Vec<T>,
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
            ("log_threshold", $($borrow)+ $s.log_threshold),
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
            log_threshold: z(&sae.log_threshold),
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
            log_threshold: if arch == Architecture::JumpRelu {
                z(d_sae)
            } else {
                Vec::new()
            },
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
            sae.log_threshold.fill(T::from_f64(0.001f64.ln()));
        }
        sae.sync_threshold();
        Ok(sae)
    }

    /// Trainable parameters in a fixed order (`W_enc`, `b_enc`, `W_dec`, `b_dec`, `log_threshold`, `b_gate`,
    /// `r_mag`, `b_mag`, skipping those the architecture does not have). The batchtopk `threshold` is not a
    /// parameter: it is a running estimate ([`SaeOf::update_batchtopk_threshold`]).
    pub fn params_mut(&mut self) -> Vec<Param<'_, T>> {
        present_params(named_params!(self, &mut))
    }

    /// Read-only `(name, values)` of the trainable parameters, same order as [`SaeOf::params_mut`].
    pub fn params(&self) -> Vec<(&'static str, &[T])> {
        present(named_params!(self, &))
    }

    /// Sets `threshold = exp(log_threshold)` for jumprelu (call after each optimizer step, before encoding
    /// or saving; [`SaeOf::post_step`] does it).
    pub fn sync_threshold(&mut self) {
        if self.cfg.architecture == Architecture::JumpRelu {
            for (t, l) in self.threshold.iter_mut().zip(&self.log_threshold) {
                *t = l.exp();
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
