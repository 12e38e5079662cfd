//! Every flag of `zephyra train`, and how they become a [`TrainConfig`]: on a new run on top of the
//! defaults (`zephyra_sae::train::TrainConfig::for_sae`), on a resume on top of the saved configuration,
//! with the SAE-shaping flags compared instead.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::bail;
use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches, ValueEnum};
use zephyra_sae::schedule::Decay;
use zephyra_sae::train::{BDecInit, NonFinitePolicy, TrainConfig};
use zephyra_sae::Architecture;

use super::renamed::{OldBatchRows, Renamed};
use super::{values, ArchArgs};

/// `--lr-decay` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecayArg {
    /// No decay.
    Constant,
    /// Linear.
    Linear,
    /// Cosine.
    Cosine,
}

/// `--b-dec-init` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BDecArg {
    /// Geometric median (Weiszfeld).
    GeometricMedian,
    /// Mean.
    Mean,
    /// Zero.
    Zeros,
}

/// `--matryoshka-aux` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MatryoshkaAuxArg {
    /// The dead latents reconstruct the whole dictionary's residual.
    Whole,
    /// Each level's dead latents reconstruct the residual of the prefix that ends with them.
    PerLevel,
}

impl From<MatryoshkaAuxArg> for zephyra_sae::MatryoshkaAux {
    fn from(a: MatryoshkaAuxArg) -> Self {
        match a {
            MatryoshkaAuxArg::Whole => Self::Whole,
            MatryoshkaAuxArg::PerLevel => Self::PerLevel,
        }
    }
}

/// `--non-finite` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NonFiniteArg {
    /// Skip rows with NaN/Inf and count them.
    Skip,
    /// Stop with an error.
    Error,
}

impl From<DecayArg> for Decay {
    fn from(v: DecayArg) -> Self {
        match v {
            DecayArg::Constant => Decay::Constant,
            DecayArg::Linear => Decay::Linear,
            DecayArg::Cosine => Decay::Cosine,
        }
    }
}

impl From<BDecArg> for BDecInit {
    fn from(v: BDecArg) -> Self {
        match v {
            BDecArg::GeometricMedian => BDecInit::GeometricMedian,
            BDecArg::Mean => BDecInit::Mean,
            BDecArg::Zeros => BDecInit::Zeros,
        }
    }
}

impl From<NonFiniteArg> for NonFinitePolicy {
    fn from(v: NonFiniteArg) -> Self {
        match v {
            NonFiniteArg::Skip => NonFinitePolicy::Skip,
            NonFiniteArg::Error => NonFinitePolicy::Error,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Where the activations come from (`--acts FILE.npy | STORE_DIR`, or `--model … --hook …` on the fly).
    /// With a `.npy` file the last --holdout rows are kept out of training for the final FVE/L0.
    #[command(flatten)]
    pub source: Given<super::source::SourceArgs>,
    /// Transcoders: `--transcoder --layers L` (one per layer, from the model) or `--target-acts STORE`
    /// (one, from two stores), with `--skip`.
    #[command(flatten)]
    pub transcoder: super::transcoder::TranscoderArgs,
    /// Run directory for cfg.json, sae_weights.safetensors, training_state.safetensors, metrics.jsonl,
    /// summary.json.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR (after a kill, exactly). Training flags, if given, must match the run's.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub arch: ArchArgs,
    #[command(flatten)]
    pub jumprelu: super::arch::JumpReluArgs,
    /// Rows per optimizer step [default: 4096].
    #[arg(long = "batch-rows", value_name = "ROWS")]
    pub batch: Option<usize>,
    /// Rows to train on [default: 2000000].
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Peak learning rate, > 0 [default: per architecture].
    #[arg(long, allow_negative_numbers = true, value_parser = values::positive::<f32>)]
    pub lr: Option<f32>,
    /// L1 coefficient λ of relu, relu-unit and gated, ≥ 0 [default: per architecture].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f64>)]
    pub l1: Option<f64>,
    /// L0 coefficient λ of jumprelu's l0 and quadratic-l0 penalties, ≥ 0 [default: 1e-3 for l0, 1 for
    /// quadratic-l0].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f64>)]
    pub l0_coeff: Option<f64>,
    /// Sparsity-coefficient warm-up steps: λ ramps linearly from 0 [default: 5 % of the steps].
    #[arg(long, alias = "sparsity-warmup")]
    pub l1_warmup: Option<u64>,
    /// Learning-rate warm-up steps [default: 0 for topk, batchtopk and matryoshka SAEs; 1 % of the steps, at
    /// most 1000, otherwise].
    #[arg(long)]
    pub lr_warmup: Option<u64>,
    /// Learning-rate decay over the last 20 % of the run [default: constant for topk, batchtopk and
    /// matryoshka SAEs, linear otherwise].
    #[arg(long, value_enum)]
    pub lr_decay: Option<DecayArg>,
    /// Clip gradients to this global norm, ≥ 0; 0 = off [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f64>)]
    pub max_grad_norm: Option<f64>,
    /// Do not scale inputs to E‖x‖ = √d_in.
    #[arg(long)]
    pub no_normalize: bool,
    /// How b_dec starts [default: zeros for relu, geometric-median for the others].
    #[arg(long, value_enum)]
    pub b_dec_init: Option<BDecArg>,
    /// topk, batchtopk, matryoshka: SAELens' parametrisation, decoder rows free and started at this norm,
    /// pre-activations rescaled by the decoder norms (folded into the saved SAE); 0 = unit-norm decoder
    /// rows renormalised each step [default: 0.1 for topk and batchtopk SAEs, 0 otherwise (matryoshka and
    /// transcoders too)].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f32>)]
    pub decoder_init_norm: Option<f32>,
    /// Rows without firing after which a latent counts as dead (and AuxK trains it) [default: 40960 for topk,
    /// batchtopk and matryoshka SAEs, 2000000 otherwise].
    #[arg(long)]
    pub dead_after: Option<u64>,
    /// topk, batchtopk, matryoshka: weight of the AuxK loss on dead latents, ≥ 0 [default: 1, SAELens', for
    /// topk and matryoshka SAEs; 4 for batchtopk SAEs; 1/32, OpenAI's, for transcoders].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f64>)]
    pub aux_coeff: Option<f64>,
    /// matryoshka: the residual AuxK's dead latents learn to reconstruct: `whole` = the full dictionary's,
    /// `per-level` = each level's dead latents that of the prefix ending with them (SAELens'
    /// use_matryoshka_aux_loss) [default: whole].
    #[arg(long, value_enum)]
    pub matryoshka_aux: Option<MatryoshkaAuxArg>,
    /// Rows with NaN/Inf [default: skip].
    #[arg(long, value_enum)]
    pub non_finite: Option<NonFiniteArg>,
    /// Seed of initialisation, shuffling and resampling [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads [default: all cores]. Results are reproducible for a given thread count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Checkpoint every N rows [default: tokens / 10].
    #[arg(long, value_name = "TOKENS")]
    pub checkpoint_every: Option<u64>,
    /// Metrics line every N steps [default: 10].
    #[arg(long, value_name = "STEPS")]
    pub metrics_every: Option<u64>,
    /// Rows at the end of --acts held out for the final FVE/L0; a value below 1 is a fraction
    /// [default: min(8192, n/5)].
    #[arg(long, allow_negative_numbers = true, value_parser = values::non_negative::<f64>)]
    pub holdout: Option<f64>,
    /// Read rows in file order instead of a fresh permutation each epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Sleep this long after each step (tests use it to kill a run mid-way; no effect on the weights).
    #[arg(long, hide = true, default_value_t = 0)]
    pub step_delay_ms: u64,
    #[command(flatten)]
    old_batch: OldBatchRows,
    #[arg(long = "sparsity", hide = true, value_parser = Renamed::new("--sparsity", "`--l1` (relu, relu-unit, gated) or `--l0-coeff` (jumprelu)"))]
    renamed_sparsity: Option<String>,
}

impl TrainArgs {
    /// Applies every flag the user gave on top of `cfg` (defaults for a new run, the saved config on resume).
    pub fn apply(&self, cfg: &mut TrainConfig) -> anyhow::Result<()> {
        /// `field = flag` when the flag was given.
        fn set<T>(field: &mut T, flag: Option<T>) {
            if let Some(v) = flag {
                *field = v;
            }
        }
        set(&mut cfg.lr, self.lr);
        self.jumprelu.apply(cfg, self.l0_coeff.is_some())?;
        set(
            &mut cfg.sparsity_coeff,
            self.sparsity_coeff(cfg.sae.architecture)?,
        );
        set(&mut cfg.sparsity_warmup_steps, self.l1_warmup);
        set(&mut cfg.lr_warmup_steps, self.lr_warmup);
        set(&mut cfg.lr_decay, self.lr_decay.map(Decay::from));
        set(
            &mut cfg.max_grad_norm,
            self.max_grad_norm.map(|v| (v > 0.0).then_some(v)),
        );
        if self.no_normalize {
            cfg.normalize_activations = false;
        }
        set(&mut cfg.b_dec_init, self.b_dec_init.map(BDecInit::from));
        set(
            &mut cfg.decoder_init_norm,
            self.decoder_init_norm.map(|v| (v > 0.0).then_some(v)),
        );
        set(&mut cfg.dead_after_tokens, self.dead_after);
        set(&mut cfg.aux_coeff, self.aux_coeff);
        set(
            &mut cfg.matryoshka_aux,
            self.matryoshka_aux.map(zephyra_sae::MatryoshkaAux::from),
        );
        set(
            &mut cfg.non_finite,
            self.non_finite.map(NonFinitePolicy::from),
        );
        set(&mut cfg.seed, self.seed);
        set(&mut cfg.threads, self.threads);
        set(&mut cfg.checkpoint_every_tokens, self.checkpoint_every);
        set(&mut cfg.metrics_every_steps, self.metrics_every);
        Ok(())
    }

    /// `--l1` or `--l0-coeff`, whichever `arch` has; the other one is an error naming the right flag.
    fn sparsity_coeff(&self, arch: Architecture) -> anyhow::Result<Option<f64>> {
        let name = arch.name();
        match arch {
            Architecture::JumpRelu => {
                if self.l1.is_some() {
                    bail!("--l1 sets the L1 coefficient of relu, relu-unit and gated; {name} penalises L0: use --l0-coeff");
                }
                Ok(self.l0_coeff)
            }
            Architecture::TopK { .. }
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. } => {
                if self.l1.is_some() || self.l0_coeff.is_some() {
                    bail!("{name} has no sparsity coefficient (--k sets its sparsity): drop --l1/--l0-coeff");
                }
                Ok(None)
            }
            _ => {
                if self.l0_coeff.is_some() {
                    bail!("--l0-coeff is jumprelu's L0 coefficient; {name} penalises L1: use --l1");
                }
                Ok(self.l1)
            }
        }
    }

    /// The SAE-shaping flags given on a resume, applied to the saved config so that the library's
    /// comparison ([`zephyra_sae::train::check_resume`]) names each one that differs.
    pub fn apply_shape(&self, cfg: &mut TrainConfig) {
        let arch = cfg.sae.architecture;
        if let Some(e) = self.arch.expansion {
            cfg.sae.d_sae = e.saturating_mul(cfg.sae.d_in);
        }
        if let Some(a) = self.arch.arch {
            cfg.sae.architecture = a.with_k(self.arch.k.or(arch.k()).unwrap_or(32), cfg.sae.d_sae);
            // Still matryoshka: the saved groups unless --groups is given (below).
            if let (Architecture::Matryoshka { groups, .. }, Architecture::Matryoshka { k, .. }) =
                (arch, cfg.sae.architecture)
            {
                cfg.sae.architecture = Architecture::Matryoshka { k, groups };
            }
        } else if let (Some(k), Some(_)) = (self.arch.k, arch.k()) {
            cfg.sae.architecture = match arch {
                Architecture::BatchTopK { .. } => Architecture::BatchTopK { k },
                Architecture::Matryoshka { groups, .. } => Architecture::Matryoshka { k, groups },
                _ => Architecture::TopK { k },
            };
        }
        if let (Architecture::Matryoshka { k, .. }, Some(groups)) =
            (cfg.sae.architecture, self.arch.groups)
        {
            cfg.sae.architecture = Architecture::Matryoshka { k, groups };
        }
        if let Some(b) = self.batch {
            cfg.batch_size = b;
        }
        if let Some(t) = self.tokens {
            cfg.total_tokens = t;
        }
    }
}

/// `--layers`: every layer, or some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layers {
    /// `all`.
    All,
    /// The layers listed, in order, each once.
    Some(Vec<usize>),
}

impl std::str::FromStr for Layers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "all" {
            return Ok(Self::All);
        }
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{t}` is not a layer number: use `all` or e.g. `0,3,5-7`"))
        };
        let mut layers = Vec::new();
        for part in s.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(part)?, number(part)?),
            };
            if a > b {
                return Err(format!("the range `{part}` is empty: write it low-high"));
            }
            for l in a..=b {
                if !layers.contains(&l) {
                    layers.push(l);
                }
            }
        }
        Ok(Self::Some(layers))
    }
}

impl Layers {
    /// The layers of a model with `n_layers` blocks; a layer beyond them is an error.
    pub fn resolve(&self, n_layers: usize) -> anyhow::Result<Vec<usize>> {
        match self {
            Self::All => Ok((0..n_layers).collect()),
            Self::Some(layers) => {
                if let Some(l) = layers.iter().find(|&&l| l >= n_layers) {
                    bail!(
                        "--layers names layer {l}: the model has {n_layers} blocks (0..={})",
                        n_layers.saturating_sub(1)
                    );
                }
                Ok(layers.clone())
            }
        }
    }
}

/// A flattened group `T` that also remembers which of its flags the command line gave — given means
/// typed, even when the value typed equals clap's default (`ArgMatches::value_source`). `--resume`
/// compares exactly the flags given with the checkpoint's record.
#[derive(Debug, Clone)]
pub struct Given<T> {
    /// The parsed flags.
    pub args: T,
    /// Ids (field names: `shuffle_buffer`, `hook`) of the flags given on the command line.
    pub given: BTreeSet<String>,
}

impl<T> Given<T> {
    /// Whether `flag` (as spelled on the command line: `--shuffle-buffer`) was given.
    pub fn was_given(&self, flag: &str) -> bool {
        self.given
            .contains(&flag.trim_start_matches('-').replace('-', "_"))
    }
}

impl<T> std::ops::Deref for Given<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.args
    }
}

fn given_ids(m: &ArgMatches) -> impl Iterator<Item = String> + '_ {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
}

impl<T: FromArgMatches> FromArgMatches for Given<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            args: T::from_arg_matches(m)?,
            given: given_ids(m).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.args.update_from_arg_matches(m)?;
        self.given.extend(given_ids(m));
        Ok(())
    }
}

impl<T: clap::Args> clap::Args for Given<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        T::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        T::augment_args_for_update(cmd)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::TrainArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    #[test]
    fn layers_parse_lists_and_ranges() {
        use super::Layers;
        assert_eq!("all".parse(), Ok(Layers::All));
        assert_eq!("0,3,5-7,3".parse(), Ok(Layers::Some(vec![0, 3, 5, 6, 7])));
        assert!("7-5".parse::<Layers>().is_err() && "x".parse::<Layers>().is_err());
        assert_eq!(Layers::All.resolve(3).unwrap(), [0, 1, 2]);
        let e = Layers::Some(vec![1, 30])
            .resolve(30)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer 30") && e.contains("0..=29"), "{e}");
    }

    #[test]
    fn a_flag_given_with_its_default_value_counts_as_given() {
        let cli =
            Cli::try_parse_from(["train", "--shuffle-buffer", "262144", "--ctx", "128"]).unwrap();
        let s = &cli.train.source;
        // Both values equal clap's defaults, and both were typed.
        assert_eq!(
            s.shuffle_buffer,
            crate::args::source::DEFAULT_SHUFFLE_BUFFER
        );
        assert!(s.was_given("--shuffle-buffer") && s.was_given("--ctx"));
        assert!(!s.was_given("--shard-contexts") && !s.was_given("--keep-sinks"));
        let none = Cli::try_parse_from(["train"]).unwrap();
        assert!(none.train.source.given.is_empty());
    }
}
