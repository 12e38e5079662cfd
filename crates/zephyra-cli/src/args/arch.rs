//! `--arch`, `--k`, `--expansion`, `--groups`: the shape of the SAE to train; jumprelu's sparsity recipe
//! (`--jumprelu-sparsity`, `--target-l0`, `--tanh-coeff`, `--tanh-scale`, `--pre-act-coeff`,
//! `--jumprelu-bandwidth`).

use anyhow::bail;
use clap::ValueEnum;
use zephyra_sae::train::{ThresholdInit, TrainConfig};
use zephyra_sae::{Architecture, JumpReluSparsity, MatryoshkaWidths};

use super::values;

/// `--arch` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// ReLU, decoder-norm-weighted L1, free decoder (Anthropic April 2024; the seed's SAE).
    Relu,
    /// ReLU, unit-norm decoder, plain L1, resampling (Towards Monosemanticity).
    ReluUnit,
    /// TopK with AuxK (Gao et al. 2024).
    Topk,
    /// BatchTopK, saved as JumpReLU (Bussmann et al. 2024).
    Batchtopk,
    /// JumpReLU with an L0 penalty (Rajamanoharan et al. 2024).
    Jumprelu,
    /// Gated (Rajamanoharan et al. 2024).
    Gated,
    /// Matryoshka BatchTopK: nested prefixes (--groups), saved as JumpReLU (Bussmann et al. 2025).
    Matryoshka,
}

impl Arch {
    /// The SAE architecture (with `k` for topk/batchtopk/matryoshka; matryoshka gets
    /// [`default_groups`] of `d_sae`).
    pub fn with_k(self, k: usize, d_sae: usize) -> Architecture {
        match self {
            Arch::Relu => Architecture::Relu,
            Arch::ReluUnit => Architecture::ReluUnit,
            Arch::Topk => Architecture::TopK { k },
            Arch::Batchtopk => Architecture::BatchTopK { k },
            Arch::Jumprelu => Architecture::JumpRelu,
            Arch::Gated => Architecture::Gated,
            Arch::Matryoshka => Architecture::Matryoshka {
                k,
                groups: default_groups(d_sae),
            },
        }
    }
}

/// Default `--groups` for `d_sae` latents: `d_sae/64, d_sae/16, d_sae/4, d_sae` (the ×4 steps of Bussmann
/// et al. 2025's widths), dropping repeats and zeros for small dictionaries.
pub fn default_groups(d_sae: usize) -> MatryoshkaWidths {
    let mut widths: Vec<usize> = [64, 16, 4, 1].iter().map(|q| d_sae / q).collect();
    widths.retain(|&w| w > 0);
    widths.dedup();
    MatryoshkaWidths::new(&widths)
        .unwrap_or_else(|_| MatryoshkaWidths::new(&[d_sae.max(1)]).expect("one positive width"))
}

/// Default `--arch`.
pub const DEFAULT_ARCH: Arch = Arch::Topk;
/// Default `--k`.
pub const DEFAULT_K: usize = 32;
/// Default `--expansion`.
pub const DEFAULT_EXPANSION: usize = 16;

/// The SAE's architecture and size. Unset flags take the defaults on a new run and the saved values on a
/// resume.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchArgs {
    /// Architecture [default: topk].
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Active latents per row (topk, batchtopk) [default: 32].
    #[arg(long)]
    pub k: Option<usize>,
    /// d_sae = expansion × d_in [default: 16].
    #[arg(long)]
    pub expansion: Option<usize>,
    /// Matryoshka: cumulative prefix widths, the last = d_sae, e.g. 128,512,2048,9216 (SAELens'
    /// matryoshka_widths) [default: d_sae/64, d_sae/16, d_sae/4, d_sae].
    #[arg(long, value_name = "W1,W2,…")]
    pub groups: Option<MatryoshkaWidths>,
}

impl ArchArgs {
    /// The architecture of a `d_sae`-latent SAE, with the defaults for unset flags.
    pub fn architecture(&self, d_sae: usize) -> anyhow::Result<Architecture> {
        let arch = self
            .arch
            .unwrap_or(DEFAULT_ARCH)
            .with_k(self.k.unwrap_or(DEFAULT_K), d_sae);
        self.with_groups(arch)
    }

    /// `arch` with `--groups` applied (an error for an architecture without groups).
    pub fn with_groups(&self, arch: Architecture) -> anyhow::Result<Architecture> {
        match (arch, self.groups) {
            (Architecture::Matryoshka { k, .. }, Some(groups)) => {
                Ok(Architecture::Matryoshka { k, groups })
            }
            (_, Some(_)) => bail!(
                "--groups sets the nested prefixes of --arch matryoshka; {} has none: drop --groups",
                arch.name()
            ),
            (arch, None) => Ok(arch),
        }
    }

    /// `--expansion` or its default.
    pub fn expansion(&self) -> usize {
        self.expansion.unwrap_or(DEFAULT_EXPANSION)
    }
}

/// `--jumprelu-sparsity` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SparsityArg {
    /// λ Σ H(z − θ) (Rajamanoharan et al. 2024); coefficient --l0-coeff.
    L0,
    /// λ Σ tanh(c·f_i‖d_i‖) with the pre-activation loss (Anthropic, Jan 2025); --tanh-coeff, --tanh-scale.
    Tanh,
    /// λ (2/T)(L0 − T)² per row towards --target-l0 T (Gemma Scope 2); coefficient --l0-coeff.
    QuadraticL0,
}

/// JumpReLU's sparsity recipe and its coefficients (`zephyra train --arch jumprelu`).
#[derive(Debug, Clone, clap::Args)]
pub struct JumpReluArgs {
    /// JumpReLU's sparsity penalty [default: l0; quadratic-l0 when --target-l0 is given].
    #[arg(long, value_enum)]
    pub jumprelu_sparsity: Option<SparsityArg>,
    /// Target L0 of the quadratic-l0 penalty, > 0 and ≤ d_sae.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = values::positive::<f64>)]
    pub target_l0: Option<f64>,
    /// Coefficient λ of the tanh penalty, ≥ 0 [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f64>)]
    pub tanh_coeff: Option<f64>,
    /// Scale c inside the tanh penalty, > 0 [default: 4].
    #[arg(long, allow_negative_numbers = true, value_parser = values::positive::<f64>)]
    pub tanh_scale: Option<f64>,
    /// Coefficient λ_p of the pre-activation loss λ_p Σ ReLU(θ_i − z_i)‖d_i‖, ≥ 0; 0 = off [default: 3e-6
    /// with tanh, else 0].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f64>)]
    pub pre_act_coeff: Option<f64>,
    /// Width ε of the straight-through estimators' window around each threshold, > 0: only
    /// pre-activations within ε/2 of θ move it [default: 0.001, the Jumping Ahead paper's; SAELens 0.05].
    #[arg(long, value_name = "EPS", allow_negative_numbers = true, value_parser = values::positive::<f64>)]
    pub jumprelu_bandwidth: Option<f64>,
    /// Where the thresholds start: a value ≥ 0, or `target-rate` (quadratic-l0 only): each latent at the
    /// pre-activation it exceeds on a fraction --target-l0 / d_sae of the first rows, so the run starts at
    /// its target L0 [default: target-rate with --target-l0, else 0.001].
    #[arg(long, value_name = "VALUE|target-rate", allow_negative_numbers = true, value_parser = threshold_init)]
    pub jumprelu_init_threshold: Option<ThresholdInit>,
    /// The thresholds' learning rate as a multiple of --lr, > 0: each Adam step moves a threshold by about
    /// its rate, while the encoder moves a pre-activation by about --lr × ‖x‖₁, so at 1 the L0 penalty
    /// pulls the L0 back slowly after the encoder has pushed it off its target [default: 30 with
    /// --target-l0, else 1].
    #[arg(long, value_name = "F", allow_negative_numbers = true, value_parser = values::positive::<f64>)]
    pub threshold_lr_scale: Option<f64>,
}

/// `--jumprelu-init-threshold`: `target-rate` or a finite value ≥ 0.
fn threshold_init(text: &str) -> Result<ThresholdInit, String> {
    if text == "target-rate" {
        return Ok(ThresholdInit::TargetRate);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(ThresholdInit::Value(v)),
        _ => Err(format!(
            "`{text}` is neither `target-rate` nor a threshold ≥ 0 (e.g. 0.001)"
        )),
    }
}

impl JumpReluArgs {
    fn given(&self) -> bool {
        self.jumprelu_sparsity.is_some()
            || self.target_l0.is_some()
            || self.tanh_coeff.is_some()
            || self.tanh_scale.is_some()
            || self.pre_act_coeff.is_some()
            || self.jumprelu_bandwidth.is_some()
            || self.jumprelu_init_threshold.is_some()
            || self.threshold_lr_scale.is_some()
    }

    /// Sets the recipe of `cfg` (with its default coefficients when it changes) and `--tanh-coeff`,
    /// `--pre-act-coeff`; `l0_coeff_given`: whether `--l0-coeff` was given (it belongs to l0 and
    /// quadratic-l0, and is applied by the caller after this).
    pub fn apply(&self, cfg: &mut TrainConfig, l0_coeff_given: bool) -> anyhow::Result<()> {
        if cfg.sae.architecture != Architecture::JumpRelu {
            if self.given() {
                bail!(
                    "--jumprelu-sparsity, --target-l0, --tanh-coeff, --tanh-scale, --pre-act-coeff, \
                     --jumprelu-bandwidth, --jumprelu-init-threshold and --threshold-lr-scale set \
                     jumprelu's sparsity recipe; \
                     {} has none: use --arch jumprelu or drop them",
                    cfg.sae.architecture.name()
                );
            }
            return Ok(());
        }
        let saved = cfg.jumprelu_sparsity;
        let scale = |old: Option<f64>| self.tanh_scale.or(old).unwrap_or(4.0);
        let recipe = match (self.jumprelu_sparsity, self.target_l0) {
            (Some(SparsityArg::QuadraticL0) | None, Some(target)) => {
                JumpReluSparsity::QuadraticL0 { target }
            }
            (Some(SparsityArg::QuadraticL0), None) => match saved {
                JumpReluSparsity::QuadraticL0 { .. } => saved,
                _ => bail!(
                    "--jumprelu-sparsity quadratic-l0 needs --target-l0 N (the L0 to aim for)"
                ),
            },
            (Some(other), Some(_)) => bail!(
                "--target-l0 is the target of --jumprelu-sparsity quadratic-l0, not {}",
                SparsityArg::to_possible_value(&other)
                    .map_or("?".into(), |v| v.get_name().to_string())
            ),
            (Some(SparsityArg::Tanh), None) => JumpReluSparsity::Tanh {
                scale: scale(match saved {
                    JumpReluSparsity::Tanh { scale } => Some(scale),
                    _ => None,
                }),
            },
            (Some(SparsityArg::L0), None) => JumpReluSparsity::L0,
            (None, None) => match saved {
                JumpReluSparsity::Tanh { scale: old } => JumpReluSparsity::Tanh {
                    scale: scale(Some(old)),
                },
                _ => saved,
            },
        };
        let is_tanh = matches!(recipe, JumpReluSparsity::Tanh { .. });
        if self.tanh_scale.is_some() && !is_tanh {
            bail!(
                "--tanh-scale is the scale of --jumprelu-sparsity tanh; this run uses {}",
                recipe.name()
            );
        }
        if is_tanh && l0_coeff_given {
            bail!("--l0-coeff weighs the l0 and quadratic-l0 penalties; tanh's coefficient is --tanh-coeff");
        }
        if self.tanh_coeff.is_some() && !is_tanh {
            bail!(
                "--tanh-coeff weighs the tanh penalty; {} uses --l0-coeff",
                recipe.name()
            );
        }
        if recipe.name() != saved.name() {
            cfg.sparsity_coeff = recipe.default_coeff();
            cfg.pre_act_coeff = recipe.default_pre_act_coeff();
        }
        cfg.jumprelu_sparsity = recipe;
        if let Some(c) = self.tanh_coeff {
            cfg.sparsity_coeff = c;
        }
        if let Some(c) = self.pre_act_coeff {
            cfg.pre_act_coeff = c;
        }
        if let Some(eps) = self.jumprelu_bandwidth {
            cfg.bandwidth = eps;
        }
        if let Some(scale) = self.threshold_lr_scale {
            cfg.threshold_lr_scale = scale;
        } else if recipe.name() != saved.name() {
            cfg.threshold_lr_scale = recipe.default_threshold_lr_scale();
        }
        if let Some(init) = self.jumprelu_init_threshold {
            cfg.jumprelu_init_threshold = init;
        } else if recipe.name() != saved.name() {
            // A new recipe's default start: at the target rate when there is a target.
            cfg.jumprelu_init_threshold = match recipe {
                JumpReluSparsity::QuadraticL0 { .. } => ThresholdInit::TargetRate,
                _ => ThresholdInit::default(),
            };
        }
        Ok(())
    }
}
