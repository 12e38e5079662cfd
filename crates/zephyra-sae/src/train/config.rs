//! The training configuration: everything that determines the weights a run produces.

use serde::{Deserialize, Serialize};

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
    /// Scale inputs so that E‖x‖ = √d_in during training (folded into the saved weights).
    pub normalize_activations: bool,
    /// How `b_dec` starts.
    pub b_dec_init: BDecInit,
    /// Rows read at the start to estimate the input scale and `b_dec` (the source is then rewound).
    pub init_rows: usize,
    /// A latent that has not fired for this many rows is dead (AuxK mask, resampling, `dead_fraction`).
    pub dead_after_tokens: u64,
    /// relu-unit: resample dead latents every this many steps (0 = never).
    pub resample_every_steps: u64,
    /// AuxK latents per row (`None` = d_in / 2).
    pub k_aux: Option<usize>,
    /// AuxK coefficient α.
    pub aux_coeff: f64,
    /// JumpReLU straight-through bandwidth ε.
    pub bandwidth: f64,
    /// BatchTopK: rate of the running estimate of the inference threshold.
    pub threshold_rate: f64,
    /// Rows with NaN/Inf.
    pub non_finite: NonFinitePolicy,
    /// Seed of the initialisation and of every random choice during training.
    pub seed: u64,
    /// Worker threads (recorded: results are reproducible for a given thread count).
    pub threads: usize,
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
        let (lr, sparsity_coeff, resample) = match arch {
            Architecture::Relu => (5e-5, 5.0, 0),
            Architecture::ReluUnit => (1e-4, 1e-3, 1000),
            Architecture::TopK { .. } | Architecture::BatchTopK { .. } => (5e-4, 0.0, 0),
            Architecture::JumpRelu => (2e-4, 1e-3, 0),
            Architecture::Gated => (1e-4, 1.0, 0),
        };
        Self {
            sae,
            batch_size,
            total_tokens,
            lr,
            lr_warmup_steps: (steps / 100).min(1000),
            lr_decay: Decay::Linear,
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
            dead_after_tokens: 2_000_000,
            resample_every_steps: resample,
            k_aux: None,
            aux_coeff: 1.0 / 32.0,
            bandwidth: 0.001,
            threshold_rate: 0.01,
            non_finite: NonFinitePolicy::Skip,
            seed: 0,
            threads: rayon::current_num_threads(),
            checkpoint_every_tokens: 0,
            metrics_every_steps: 10,
        }
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

    /// Checks the values a user can get wrong.
    pub fn validate(&self) -> Result<(), SaeError> {
        self.sae.validate()?;
        let bad = |m: String| Err(SaeError::InvalidConfig(m));
        if self.batch_size == 0 {
            return bad("batch size must be positive".into());
        }
        if self.total_tokens < self.batch_size as u64 {
            return bad(format!(
                "--tokens {} is less than one batch of {} rows; raise --tokens or lower --batch",
                self.total_tokens, self.batch_size
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if !(self.sparsity_coeff >= 0.0 && self.sparsity_coeff.is_finite()) {
            return bad(format!(
                "sparsity coefficient {} must be ≥ 0",
                self.sparsity_coeff
            ));
        }
        let a = &self.adam;
        if !(0.0..1.0).contains(&a.beta1)
            || !(0.0..1.0).contains(&a.beta2)
            || a.eps.is_nan()
            || a.eps <= 0.0
        {
            return bad(format!(
                "Adam settings β1 = {}, β2 = {}, ε = {} are out of range",
                a.beta1, a.beta2, a.eps
            ));
        }
        if !(0.0..=1.0).contains(&self.lr_decay_start)
            || !(0.0..=1.0).contains(&self.lr_final_fraction)
        {
            return bad("lr decay start and final fraction must lie in [0, 1]".into());
        }
        if let Some(k_aux) = self.k_aux {
            if k_aux == 0 || k_aux > self.sae.d_sae {
                return bad(format!(
                    "k_aux = {k_aux} must lie in 1..={}",
                    self.sae.d_sae
                ));
            }
        }
        if self.metrics_every_steps == 0 {
            return bad("metrics interval must be at least 1 step".into());
        }
        Ok(())
    }

    /// `key: ours → theirs` for every setting that differs (ignoring the checkpoint and metrics intervals,
    /// which may change on resume); empty when the runs are the same.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        let mut a = serde_json::to_value(self).unwrap_or_default();
        let mut b = serde_json::to_value(other).unwrap_or_default();
        for v in [&mut a, &mut b] {
            if let Some(o) = v.as_object_mut() {
                o.remove("checkpoint_every_tokens");
                o.remove("metrics_every_steps");
            }
        }
        let mut out = Vec::new();
        diff_json("", &a, &b, &mut out);
        out
    }
}

fn diff_json(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let null = serde_json::Value::Null;
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff_json(
                    &p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{prefix}: {a} → {b}")),
        _ => {}
    }
}
