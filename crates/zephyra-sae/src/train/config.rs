//! The training configuration: everything that determines the weights a run produces.

use serde::{Deserialize, Serialize};

use super::resume::DataOptions;
use crate::optim::AdamConfig;
use crate::schedule::{Decay, LrSchedule};
use crate::{Architecture, SaeConfig, SaeError};

/// How `b_dec` is initialised from the first rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BDecInit {
    /// Geometric median (Weiszfeld).
    GeometricMedian,
    /// Mean.
    Mean,
    /// Zero.
    Zeros,
}

/// How JumpReLU's thresholds start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdInit {
    /// Every `θ_i` starts at this value (the Jumping Ahead paper's and SAELens' 0.001).
    Value(f64),
    /// Each `θ_i` starts where its latent fires on a fraction `target_l0 / d_sae` of the first rows (the
    /// `1 − target/d_sae` quantile of its pre-activations there, at least 0.001): the run starts at its
    /// target L0 instead of travelling there by lr-sized steps (quadratic-L0 recipe only).
    TargetRate,
}

impl ThresholdInit {
    /// The standard initial threshold.
    pub const STANDARD: f64 = 0.001;
}

impl Default for ThresholdInit {
    fn default() -> Self {
        Self::Value(Self::STANDARD)
    }
}

impl std::fmt::Display for ThresholdInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(v) => write!(f, "{v}"),
            Self::TargetRate => f.write_str("target-rate"),
        }
    }
}

/// What to do with rows holding NaN or ±Inf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonFinitePolicy {
    /// Drop the row, count it (`skipped_rows` in the metrics) and read another.
    Skip,
    /// Stop with [`SaeError::NonFinite`].
    Error,
}

/// Settings of a training run. Two runs with equal configurations, the same data and the same number of
/// threads produce bit-identical weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The SAE to train (sizes, architecture, provenance).
    pub sae: SaeConfig,
    /// Rows per optimisation step.
    pub batch_size: usize,
    /// Rows to train on in total (the run has `total_tokens / batch_size` steps).
    pub total_tokens: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Learning-rate warm-up, in steps.
    pub lr_warmup_steps: u64,
    /// Learning-rate decay shape.
    pub lr_decay: Decay,
    /// Fraction of the run after which the learning rate decays.
    pub lr_decay_start: f32,
    /// Final learning rate as a fraction of the peak.
    pub lr_final_fraction: f32,
    /// Adam's β1, β2, ε and weight decay.
    pub adam: AdamConfig,
    /// Sparsity coefficient λ (L1 for relu/relu-unit/gated, L0 for jumprelu; ignored by topk/batchtopk).
    pub sparsity_coeff: f64,
    /// Steps over which λ ramps up from 0.
    pub sparsity_warmup_steps: u64,
    /// Clip gradients to this global L2 norm (`None` = no clipping).
    pub max_grad_norm: Option<f64>,
    /// Scale inputs so that E‖x‖ = √d_in during training (folded into the saved weights); a transcoder's
    /// inputs and targets are multiplied by the one scale that gives its targets E‖y‖ = √d_out.
    pub normalize_activations: bool,
    /// How `b_dec` starts.
    pub b_dec_init: BDecInit,
    /// Rows read at the start to estimate the input scale and `b_dec` (the source is then rewound).
    pub init_rows: usize,
    /// A latent that has not fired for this many rows is dead (AuxK mask, resampling, `dead_fraction`).
    pub dead_after_tokens: u64,
    /// relu-unit: resample dead latents every this many steps (0 = never).
    pub resample_every_steps: u64,
    /// AuxK latents per row (`None` = d_out / 2, i.e. d_in / 2 for an SAE).
    pub k_aux: Option<usize>,
    /// AuxK coefficient α.
    pub aux_coeff: f64,
    /// JumpReLU straight-through bandwidth ε.
    pub bandwidth: f64,
    /// BatchTopK: rate of the running estimate of the inference threshold.
    pub threshold_rate: f64,
    /// JumpReLU's sparsity penalty (weighted by `sparsity_coeff`).
    #[serde(default)]
    pub jumprelu_sparsity: crate::JumpReluSparsity,
    /// JumpReLU: Anthropic's pre-activation loss coefficient λ_p (0 = off).
    #[serde(default)]
    pub pre_act_coeff: f64,
    /// JumpReLU: how the thresholds start (runs saved before the option existed started at 0.001).
    #[serde(default)]
    pub jumprelu_init_threshold: ThresholdInit,
    /// JumpReLU: the thresholds' learning rate as a multiple of `lr` (runs saved before the option
    /// existed trained them at `lr`).
    #[serde(default = "unit_scale")]
    pub threshold_lr_scale: f64,
    /// TopK family: `Some(v)` = SAELens' parametrisation, decoder rows free and started at norm `v`,
    /// pre-activations rescaled by the decoder norms (folded in when saving); `None` = unit-norm decoder
    /// rows (renormalised each step). Runs saved before the option existed read as `None`.
    #[serde(default)]
    pub decoder_init_norm: Option<f32>,
    /// Matryoshka: which residual AuxK's dead latents reconstruct (runs saved before the option existed
    /// used the whole dictionary's).
    #[serde(default)]
    pub matryoshka_aux: crate::MatryoshkaAux,
    /// Rows with NaN/Inf.
    pub non_finite: NonFinitePolicy,
    /// Seed of the initialisation and of every random choice during training.
    pub seed: u64,
    /// Worker threads (recorded: results are reproducible for a given thread count).
    pub threads: usize,
    /// Options of the data source that decide which rows are read (recorded by whoever opens the
    /// source; empty for library runs and runs saved before they were recorded).
    #[serde(default, skip_serializing_if = "DataOptions::is_empty")]
    pub data: DataOptions,
    /// Write a checkpoint every this many rows (0 = only at the end). May change on resume.
    pub checkpoint_every_tokens: u64,
    /// Write a metrics line every this many steps. May change on resume.
    pub metrics_every_steps: u64,
}

impl TrainConfig {
    /// Defaults for `sae.architecture` (see the README's trainer section for the table and its sources).
    pub fn for_sae(sae: SaeConfig, batch_size: usize, total_tokens: u64) -> Self {
        let arch = sae.architecture;
        let steps = (total_tokens / batch_size.max(1) as u64).max(1);
        // TopK, BatchTopK and Matryoshka SAEs (not transcoders): lr 3e-3 constant, no warm-up, AuxK on
        // early; TopK and BatchTopK also in SAELens' parametrisation (decoder rows free from norm 0.1).
        // The recipes measured to learn the planted features (MCC topk 0.373 vs SAELens TopK's 0.370,
        // batchtopk 0.342, matryoshka 0.251; the former defaults 0.234–0.236, chance) AND keep SmolLM2's
        // latents alive (never firing in 200k tokens: topk 7 of 9,216, FVE 0.837 vs 0.730; batchtopk 10,
        // FVE 0.813 vs 0.709; matryoshka 5, FVE 0.799 vs 0.653) — README, "Ground truth". BatchTopK needs
        // AuxK at 4× SAELens' weight for that (at 1: 1.05 % never fire); Matryoshka keeps unit-norm rows
        // (rescaled, 38 % never fire, 33 % with per-level AuxK).
        let fast_constant = matches!(
            arch,
            Architecture::TopK { .. }
                | Architecture::BatchTopK { .. }
                | Architecture::Matryoshka { .. }
        ) && sae.transcoder.is_none();
        let rescaled = fast_constant && !matches!(arch, Architecture::Matryoshka { .. });
        let (lr, sparsity_coeff, resample) = match arch {
            Architecture::Relu => (5e-5, 5.0, 0),
            Architecture::ReluUnit => (1e-4, 1e-3, 1000),
            Architecture::TopK { .. }
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. }
                if fast_constant =>
            {
                (3e-3, 0.0, 0)
            }
            Architecture::TopK { .. }
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. } => (5e-4, 0.0, 0),
            Architecture::JumpRelu => (2e-4, 1e-3, 0),
            Architecture::Gated => (1e-4, 1.0, 0),
        };
        Self {
            sae,
            batch_size,
            total_tokens,
            lr,
            lr_warmup_steps: if fast_constant {
                0
            } else {
                (steps / 100).min(1000)
            },
            lr_decay: if fast_constant {
                Decay::Constant
            } else {
                Decay::Linear
            },
            lr_decay_start: 0.8,
            lr_final_fraction: 0.0,
            adam: AdamConfig::default(),
            sparsity_coeff,
            sparsity_warmup_steps: if sparsity_coeff > 0.0 { steps / 20 } else { 0 },
            max_grad_norm: Some(1.0),
            normalize_activations: true,
            // relu: zeros, as SAELens' standard SAE; with the geometric median it ended 240 steps of
            // the README's side-by-side run at L0 385 / FVE 0.593 instead of L0 576 / FVE 0.673.
            b_dec_init: if arch == Architecture::Relu {
                BDecInit::Zeros
            } else {
                BDecInit::GeometricMedian
            },
            init_rows: 8192,
            dead_after_tokens: if fast_constant { 40_960 } else { 2_000_000 },
            resample_every_steps: resample,
            k_aux: None,
            aux_coeff: match arch {
                Architecture::BatchTopK { .. } if fast_constant => 4.0,
                _ if fast_constant => 1.0,
                _ => 1.0 / 32.0,
            },
            bandwidth: 0.001,
            // 0.3, not SAELens' 0.01: the per-batch cutoff (the k·n-th largest code) is a precise statistic
            // at our batch sizes, while a slow average still remembers the first batches at the end of a
            // short run (tests/batchtopk_threshold.rs: inference L0 0.2 or 118 for k 8 after 50 steps).
            threshold_rate: 0.3,
            jumprelu_sparsity: crate::JumpReluSparsity::L0,
            pre_act_coeff: 0.0,
            jumprelu_init_threshold: ThresholdInit::default(),
            threshold_lr_scale: 1.0,
            decoder_init_norm: rescaled.then_some(0.1),
            matryoshka_aux: crate::MatryoshkaAux::Whole,
            non_finite: NonFinitePolicy::Skip,
            seed: 0,
            threads: rayon::current_num_threads(),
            data: DataOptions::default(),
            checkpoint_every_tokens: 0,
            metrics_every_steps: 10,
        }
    }

    /// The defaults of [`TrainConfig::for_sae`] for a new `d_in × d_sae` SAE of `architecture`.
    pub fn new(
        d_in: usize,
        d_sae: usize,
        architecture: Architecture,
        batch_size: usize,
        total_tokens: u64,
    ) -> Result<Self, SaeError> {
        let sae = SaeConfig::new(d_in, d_sae, architecture)?;
        Ok(Self::for_sae(sae, batch_size, total_tokens))
    }

    /// Number of optimisation steps.
    pub fn total_steps(&self) -> u64 {
        (self.total_tokens / self.batch_size.max(1) as u64).max(1)
    }

    /// The learning-rate schedule.
    pub fn lr_schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.lr,
            warmup_steps: self.lr_warmup_steps,
            decay: self.lr_decay,
            decay_start: self.lr_decay_start,
            final_fraction: self.lr_final_fraction,
            total_steps: self.total_steps(),
        }
    }

    /// Checks the values a user can get wrong: every float finite and in range, sizes that fit in memory
    /// arithmetic, a thread count within [`max_threads`]. Errors name the option as the command line
    /// spells it ([`SaeError::InvalidConfig`]).
    pub fn validate(&self) -> Result<(), SaeError> {
        self.sae.validate()?;
        if self.batch_size == 0 {
            return out_of_range("--batch-rows", self.batch_size, "it must be at least 1 row");
        }
        if self
            .batch_size
            .checked_mul(self.sae.row_width())
            .and_then(|n| n.checked_mul(4))
            .is_none()
        {
            return out_of_range(
                "--batch-rows",
                self.batch_size,
                format!(
                    "a batch of rows of width {} does not fit in memory",
                    self.sae.row_width()
                ),
            );
        }
        if self.total_tokens < self.batch_size as u64 {
            return out_of_range(
                "--tokens",
                self.total_tokens,
                format!(
                    "it is less than one batch of {} rows; raise --tokens or lower --batch",
                    self.batch_size
                ),
            );
        }
        check_f32("--lr", self.lr, Range::Positive)?;
        check_f64("--l1", self.sparsity_coeff, Range::NonNegative)?;
        if let Some(max) = self.max_grad_norm {
            if !(max.is_finite() && max > 0.0) {
                return out_of_range(
                    "--max-grad-norm",
                    max,
                    "it must be a finite number > 0 (0 turns clipping off)",
                );
            }
        }
        let a = &self.adam;
        check_f32("adam.beta1", a.beta1, Range::Fraction)?;
        check_f32("adam.beta2", a.beta2, Range::Fraction)?;
        check_f32("adam.eps", a.eps, Range::Positive)?;
        check_f32("adam.weight_decay", a.weight_decay, Range::NonNegative)?;
        check_f32("lr_decay_start", self.lr_decay_start, Range::Unit)?;
        check_f32("lr_final_fraction", self.lr_final_fraction, Range::Unit)?;
        check_f64("aux_coeff", self.aux_coeff, Range::NonNegative)?;
        check_f64("bandwidth", self.bandwidth, Range::Positive)?;
        check_f64("threshold_rate", self.threshold_rate, Range::Unit)?;
        check_f64(
            "--threshold-lr-scale",
            self.threshold_lr_scale,
            Range::Positive,
        )?;
        self.validate_jumprelu_recipe()?;
        if let Some(norm) = self.decoder_init_norm {
            check_f32("--decoder-init-norm", norm, Range::Positive)?;
            if self.sae.architecture.k().is_none() {
                return out_of_range(
                    "--decoder-init-norm",
                    norm,
                    format!(
                        "it applies to --arch topk, batchtopk and matryoshka, not {} (relu already \
                         starts its free decoder at norm 0.1)",
                        self.sae.architecture.name()
                    ),
                );
            }
        }
        if self.matryoshka_aux == crate::MatryoshkaAux::PerLevel
            && !matches!(self.sae.architecture, Architecture::Matryoshka { .. })
        {
            return out_of_range(
                "--matryoshka-aux",
                self.matryoshka_aux,
                format!(
                    "per-level AuxK needs the levels of --arch matryoshka, not {}: drop the flag",
                    self.sae.architecture.name()
                ),
            );
        }
        if let Some(k_aux) = self.k_aux {
            if k_aux == 0 || k_aux > self.sae.d_sae {
                return out_of_range(
                    "k_aux",
                    k_aux,
                    format!("it must lie in 1..={}", self.sae.d_sae),
                );
            }
        }
        let max = max_threads();
        if self.threads == 0 || self.threads > max {
            return out_of_range(
                "--threads",
                self.threads,
                format!(
                    "it must lie in 1..={max} (4 × the {} cores this machine has, at most {MAX_THREADS}); \
                     omit it to use every core",
                    max / 4
                ),
            );
        }
        if self.metrics_every_steps == 0 {
            return out_of_range("--metrics-every", 0, "it must be at least 1 step");
        }
        Ok(())
    }
}

impl TrainConfig {
    /// The JumpReLU recipe: only on jumprelu, with valid values and a target L0 within `d_sae`.
    fn validate_jumprelu_recipe(&self) -> Result<(), SaeError> {
        let recipe = self.jumprelu_sparsity;
        let init = self.jumprelu_init_threshold;
        if let ThresholdInit::Value(v) = init {
            if !v.is_finite() || v < 0.0 {
                return out_of_range(
                    "--jumprelu-init-threshold",
                    v,
                    "a threshold is a finite value ≥ 0 (or `target-rate`)",
                );
            }
        }
        if self.sae.architecture != Architecture::JumpRelu {
            if init != ThresholdInit::default() {
                return out_of_range(
                    "--jumprelu-init-threshold",
                    init,
                    format!(
                        "it applies to --arch jumprelu, not {}",
                        self.sae.architecture.name()
                    ),
                );
            }
            if self.threshold_lr_scale != 1.0 {
                return out_of_range(
                    "--threshold-lr-scale",
                    self.threshold_lr_scale,
                    format!(
                        "it scales the learning rate of jumprelu's thresholds; {} has none to train",
                        self.sae.architecture.name()
                    ),
                );
            }
            if recipe != crate::JumpReluSparsity::L0 || self.pre_act_coeff != 0.0 {
                return out_of_range(
                    "--jumprelu-sparsity/--pre-act-coeff",
                    recipe.name(),
                    format!(
                        "they apply to --arch jumprelu, not {}",
                        self.sae.architecture.name()
                    ),
                );
            }
            return Ok(());
        }
        let step = crate::StepConfig {
            jumprelu_sparsity: recipe,
            pre_act_coeff: self.pre_act_coeff,
            ..crate::StepConfig::default()
        };
        step.check_jumprelu()?;
        if init == ThresholdInit::TargetRate
            && !matches!(recipe, crate::JumpReluSparsity::QuadraticL0 { .. })
        {
            return out_of_range(
                "--jumprelu-init-threshold",
                init,
                format!(
                    "target-rate starts each latent at the firing rate --target-l0 asks for; this run \
                     uses --jumprelu-sparsity {}, which has no target",
                    recipe.name()
                ),
            );
        }
        if let crate::JumpReluSparsity::QuadraticL0 { target } = recipe {
            if target > self.sae.d_sae as f64 {
                return out_of_range(
                    "--target-l0",
                    target,
                    format!("it must be at most d_sae = {}", self.sae.d_sae),
                );
            }
        }
        Ok(())
    }
}

fn unit_scale() -> f64 {
    1.0
}

/// The most worker threads any run may ask for.
pub const MAX_THREADS: usize = 1024;

/// The most worker threads a run may ask for on this machine: 4 × its cores, at most [`MAX_THREADS`]
/// (more only adds scheduling overhead; 100,000 would exhaust the process's resources).
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (4 * cores).min(MAX_THREADS)
}

/// The valid ranges of the float settings.
#[derive(Debug, Clone, Copy)]
enum Range {
    /// Finite and > 0.
    Positive,
    /// Finite and ≥ 0.
    NonNegative,
    /// In [0, 1).
    Fraction,
    /// In [0, 1].
    Unit,
}

impl Range {
    fn holds(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Self::Positive => v > 0.0,
                Self::NonNegative => v >= 0.0,
                Self::Fraction => (0.0..1.0).contains(&v),
                Self::Unit => (0.0..=1.0).contains(&v),
            }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Positive => "it must be a finite number > 0",
            Self::NonNegative => "it must be a finite number ≥ 0",
            Self::Fraction => "it must lie in [0, 1)",
            Self::Unit => "it must lie in [0, 1]",
        }
    }
}

fn check_f64(option: &str, v: f64, range: Range) -> Result<(), SaeError> {
    if range.holds(v) {
        Ok(())
    } else {
        out_of_range(option, v, range.text())
    }
}

fn check_f32(option: &str, v: f32, range: Range) -> Result<(), SaeError> {
    if range.holds(v as f64) {
        Ok(())
    } else {
        out_of_range(option, v, range.text())
    }
}

fn out_of_range(
    option: &str,
    value: impl std::fmt::Display,
    valid: impl Into<String>,
) -> Result<(), SaeError> {
    Err(SaeError::invalid(option, value, valid))
}
