//! `zephyra train`: train a sparse autoencoder on activations, resumably.
//!
//! Defaults per architecture (peak learning rate, sparsity coefficient λ; see the README's trainer table):
//! topk/batchtopk lr 5e-4 (no λ), relu lr 5e-5 λ 5 (Anthropic April 2024), relu-unit lr 1e-4 λ 1e-3 with
//! resampling every 1000 steps, jumprelu lr 2e-4 λ(L0) 1e-3, gated lr 1e-4 λ 1. For every architecture:
//! Adam (0.9, 0.999, 1e-8), warm-up over 1 % of the steps (≤ 1000), linear decay to 0 over the last 20 %,
//! λ warm-up over 5 % of the steps, gradient clipping at norm 1, inputs normalised to E‖x‖ = √d_in,
//! b_dec from the geometric median of the first 8192 rows (zeros for relu), latents dead after 2M rows
//! without firing.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::ValueEnum;
use zephyra_sae::npy::{NpyFile, NpyOrder, NpySource};
use zephyra_sae::schedule::Decay;
use zephyra_sae::train::{
    evaluate, ActivationSource, BDecInit, EvalStats, NonFinitePolicy, Progress, TrainConfig,
    Trainer,
};
use zephyra_sae::{Architecture, SaeConfig};

use super::Global;

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
}

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

/// `--non-finite` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NonFiniteArg {
    /// Skip rows with NaN/Inf and count them.
    Skip,
    /// Stop with an error.
    Error,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the activations come from (`--acts FILE.npy | STORE_DIR`, or `--model … --hook …` on the fly).
    /// With a `.npy` file the last --holdout rows are kept out of training for the final FVE/L0.
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Run directory for cfg.json, sae_weights.safetensors, training_state.safetensors, metrics.jsonl,
    /// summary.json.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR (after a kill, exactly). Training flags, if given, must match the run's.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Architecture.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Active latents per row (topk, batchtopk) [default: 32].
    #[arg(long)]
    pub k: Option<usize>,
    /// d_sae = expansion × d_in [default: 16].
    #[arg(long)]
    pub expansion: Option<usize>,
    /// Rows per step [default: 4096].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Rows to train on [default: 2000000].
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Peak learning rate [default: per architecture].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Sparsity coefficient λ (L1 for relu/relu-unit/gated, L0 for jumprelu) [default: per architecture].
    #[arg(long, alias = "sparsity")]
    pub l1: Option<f64>,
    /// Sparsity-coefficient warm-up steps: λ ramps linearly from 0 [default: 5 % of the steps].
    #[arg(long, alias = "sparsity-warmup")]
    pub l1_warmup: Option<u64>,
    /// Learning-rate warm-up steps [default: 1 % of the steps, at most 1000].
    #[arg(long)]
    pub lr_warmup: Option<u64>,
    /// Learning-rate decay over the last 20 % of the run [default: linear].
    #[arg(long, value_enum)]
    pub lr_decay: Option<DecayArg>,
    /// Clip gradients to this global norm; 0 = off [default: 1].
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Do not scale inputs to E‖x‖ = √d_in.
    #[arg(long)]
    pub no_normalize: bool,
    /// How b_dec starts [default: zeros for relu, geometric-median for the others].
    #[arg(long, value_enum)]
    pub b_dec_init: Option<BDecArg>,
    /// Rows without firing after which a latent counts as dead [default: 2000000].
    #[arg(long)]
    pub dead_after: Option<u64>,
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
    #[arg(long)]
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
}

impl Args {
    /// Applies every flag the user gave on top of `cfg` (defaults for a new run, the saved config on resume).
    fn apply(&self, cfg: &mut TrainConfig) {
        if let Some(v) = self.lr {
            cfg.lr = v;
        }
        if let Some(v) = self.l1 {
            cfg.sparsity_coeff = v;
        }
        if let Some(v) = self.l1_warmup {
            cfg.sparsity_warmup_steps = v;
        }
        if let Some(v) = self.lr_warmup {
            cfg.lr_warmup_steps = v;
        }
        if let Some(v) = self.lr_decay {
            cfg.lr_decay = match v {
                DecayArg::Constant => Decay::Constant,
                DecayArg::Linear => Decay::Linear,
                DecayArg::Cosine => Decay::Cosine,
            };
        }
        if let Some(v) = self.max_grad_norm {
            cfg.max_grad_norm = (v > 0.0).then_some(v);
        }
        if self.no_normalize {
            cfg.normalize_activations = false;
        }
        if let Some(v) = self.b_dec_init {
            cfg.b_dec_init = match v {
                BDecArg::GeometricMedian => BDecInit::GeometricMedian,
                BDecArg::Mean => BDecInit::Mean,
                BDecArg::Zeros => BDecInit::Zeros,
            };
        }
        if let Some(v) = self.dead_after {
            cfg.dead_after_tokens = v;
        }
        if let Some(v) = self.non_finite {
            cfg.non_finite = match v {
                NonFiniteArg::Skip => NonFinitePolicy::Skip,
                NonFiniteArg::Error => NonFinitePolicy::Error,
            };
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(v) = self.threads {
            cfg.threads = v;
        }
        if let Some(v) = self.checkpoint_every {
            cfg.checkpoint_every_tokens = v;
        }
        if let Some(v) = self.metrics_every {
            cfg.metrics_every_steps = v;
        }
    }

    /// The SAE-shaping flags given on a resume, compared with the saved config.
    fn check_shape_flags(&self, cfg: &TrainConfig) -> Vec<String> {
        let mut diffs = Vec::new();
        let arch = cfg.sae.architecture;
        if let Some(a) = self.arch {
            let name = arch_of(a, arch.k().unwrap_or(32)).name();
            if name != arch.name() {
                diffs.push(format!("arch: {} → {name}", arch.name()));
            }
        }
        if let (Some(k), Some(saved)) = (self.k, arch.k()) {
            if k != saved {
                diffs.push(format!("k: {saved} → {k}"));
            }
        }
        if let Some(e) = self.expansion {
            if e * cfg.sae.d_in != cfg.sae.d_sae {
                diffs.push(format!("d_sae: {} → {}", cfg.sae.d_sae, e * cfg.sae.d_in));
            }
        }
        for (name, given, saved) in [
            ("batch", self.batch.map(|b| b as u64), cfg.batch_size as u64),
            ("tokens", self.tokens, cfg.total_tokens),
        ] {
            if let Some(g) = given {
                if g != saved {
                    diffs.push(format!("{name}: {saved} → {g}"));
                }
            }
        }
        diffs
    }
}

/// The SAE architecture of `--arch` (with `--k` for topk/batchtopk).
pub(crate) fn arch_of(a: Arch, k: usize) -> Architecture {
    match a {
        Arch::Relu => Architecture::Relu,
        Arch::ReluUnit => Architecture::ReluUnit,
        Arch::Topk => Architecture::TopK { k },
        Arch::Batchtopk => Architecture::BatchTopK { k },
        Arch::Jumprelu => Architecture::JumpRelu,
        Arch::Gated => Architecture::Gated,
    }
}

/// Opens the training rows and the held-out rows of a `.npy` file.
/// (The data helper's `source.rs` will add activation stores and on-the-fly harvesting here.)
fn open_npy(
    path: &Path,
    holdout: Option<f64>,
    order: NpyOrder,
) -> anyhow::Result<(NpySource, Option<NpySource>)> {
    let file =
        NpyFile::open(path).with_context(|| format!("opening activations {}", path.display()))?;
    let n = file.n_rows();
    let held = match holdout {
        Some(h) if h < 0.0 || !h.is_finite() => bail!("--holdout {h} must be ≥ 0"),
        Some(h) if h < 1.0 => (n as f64 * h).round() as usize,
        Some(h) => h as usize,
        None => 8192.min(n / 5),
    };
    if held >= n {
        bail!(
            "--holdout {held} rows leaves no training rows: {} has only {n}",
            path.display()
        );
    }
    let train = NpySource::new(file, 0..n - held, order)?;
    let eval = if held > 0 {
        let file = NpyFile::open(path)?;
        Some(NpySource::new(
            file,
            n - held..n,
            NpyOrder {
                shuffle: false,
                repeat: false,
                seed: 0,
            },
        )?)
    } else {
        None
    };
    Ok((train, eval))
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let (dir, mut trainer, mut source, eval) = match &args.resume {
        Some(dir) => resume(&args, dir)?,
        None => start(&args)?,
    };
    let threads = trainer.config().threads;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the worker threads")?;
    let total = trainer.config().total_steps();
    // Under `mpirun` only rank 0 draws progress, evaluates, writes summary.json and prints.
    let root = trainer.collective().is_root();
    let bar = if global.show_progress() && root {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(trainer.step());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut on_step = |p: &Progress| {
        bar.set_position(p.step);
        bar.set_message(format!(
            "{:.0} tok/s  loss {:.4}  L0 {:.1}  FVE {:.3}  dead {:.1}%",
            p.tokens_per_s,
            p.loss,
            p.l0,
            p.fve,
            100.0 * p.dead_fraction
        ));
        if args.step_delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.step_delay_ms));
        }
        ControlFlow::Continue(())
    };
    let outcome = pool
        .install(|| trainer.run(source.as_mut(), &mut on_step))
        .context("training")?;
    bar.finish_and_clear();
    if !root {
        return Ok(ExitCode::SUCCESS);
    }

    let sae = trainer.inference_sae();
    let held: Option<EvalStats> = match eval {
        Some(mut e) => Some(
            pool.install(|| evaluate(&sae, &mut e, 1024, u64::MAX))
                .context("evaluating on the held-out rows")?,
        ),
        None => None,
    };
    let cfg = trainer.config();
    let summary = serde_json::json!({
        "run": dir,
        "arch": cfg.sae.architecture.name(),
        "k": cfg.sae.architecture.k(),
        "d_in": cfg.sae.d_in,
        "d_sae": cfg.sae.d_sae,
        "steps": outcome.steps,
        "tokens": outcome.tokens,
        "finished": outcome.finished,
        "tokens_per_s": outcome.tokens_per_s,
        "threads": threads,
        "skipped_rows": outcome.skipped_rows,
        "dead_fraction": outcome.dead_fraction,
        "input_scale": trainer.scale(),
        "holdout": held,
        "peak_rss_mb": super::bench::peak_rss_mb(),
    });
    zephyra_io::write_atomic(
        &dir.join("summary.json"),
        format!("{summary:#}\n").as_bytes(),
    )?;
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "trained {} (d_sae {}) for {} steps, {} tokens at {:.0} tok/s → {}",
            cfg.sae.architecture,
            cfg.sae.d_sae,
            outcome.steps,
            outcome.tokens,
            outcome.tokens_per_s,
            dir.display()
        );
        if outcome.skipped_rows > 0 {
            println!("skipped {} rows with NaN/Inf", outcome.skipped_rows);
        }
        match held {
            Some(h) => println!(
                "held-out ({} rows): FVE {:.4}  L0 {:.2}  dead {:.1}%",
                h.n_rows,
                h.fve,
                h.l0,
                100.0 * outcome.dead_fraction
            ),
            None => println!("no held-out rows (--holdout 0)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

type Opened = (
    PathBuf,
    Trainer,
    Box<dyn ActivationSource>,
    Option<NpySource>,
);

/// A `.npy` file is split into training rows and a held-out tail here; stores and on-the-fly harvesting
/// are opened by `source.rs` (no hold-out: evaluate with `zephyra eval`).
fn is_npy(args: &Args) -> Option<&Path> {
    args.source.acts.as_deref().filter(|p| p.is_file())
}

fn open_other(args: &Args, cfg: &TrainConfig) -> anyhow::Result<Box<dyn ActivationSource>> {
    let opts = super::source::OpenOptions {
        seed: cfg.seed,
        // On the fly, the rows of the scale and b_dec estimate must exist too (as in a large enough store).
        tokens: cfg.total_tokens.max(cfg.init_rows as u64),
        repeat: true,
        shuffle: !args.no_shuffle,
    };
    super::source::open(&args.source, &opts)
}

fn start(args: &Args) -> anyhow::Result<Opened> {
    let Some(out) = &args.out else {
        bail!("--out DIR is required (where the SAE and its checkpoints go)")
    };
    let arch = arch_of(args.arch.unwrap_or(Arch::Topk), args.k.unwrap_or(32));
    let seed = args.seed.unwrap_or(0);
    let order = NpyOrder {
        shuffle: !args.no_shuffle,
        repeat: true,
        seed: seed ^ 0x5EED_DA7A,
    };
    let (mut source, eval): (Box<dyn ActivationSource>, Option<NpySource>) = match is_npy(args) {
        Some(acts) => {
            let (train, eval) = open_npy(acts, args.holdout, order)?;
            (Box::new(train), eval)
        }
        None => {
            // The row width is only known once the source is open; the seed and token budget it needs
            // do not depend on the SAE shape.
            let mut cfg = TrainConfig::for_sae(SaeConfig::new(1, 2, Architecture::Relu)?, 1, 1);
            cfg.seed = seed;
            cfg.total_tokens = args.tokens.unwrap_or(2_000_000);
            (open_other(args, &cfg)?, None)
        }
    };
    let d_in = source.d_in();
    let expansion = args.expansion.unwrap_or(16);
    let sae = SaeConfig::new(d_in, expansion * d_in, arch).context("--arch/--k/--expansion")?;
    let tokens = args.tokens.unwrap_or(2_000_000);
    let mut cfg = TrainConfig::for_sae(sae, args.batch.unwrap_or(4096), tokens);
    cfg.checkpoint_every_tokens = (tokens / 10).max(1);
    args.apply(&mut cfg);
    if let Some(acts) = &args.source.acts {
        cfg.sae
            .metadata
            .extra
            .insert("acts".into(), serde_json::json!(acts));
        // A store knows its model, hook and context size: record them so `eval`, `features` and `serve`
        // need no `--hook` and can refuse a mismatched model.
        if acts.is_dir() {
            let store = zephyra_data::store::ActivationStore::open(acts)
                .with_context(|| format!("opening the activation store {}", acts.display()))?;
            let manifest = store.manifest();
            let meta = &mut cfg.sae.metadata;
            meta.hook_name.get_or_insert_with(|| manifest.hook.clone());
            meta.context_size.get_or_insert(manifest.ctx);
            if meta.model_name.is_none() {
                meta.model_name = Path::new(&manifest.model.path)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned());
            }
        }
    }
    if let Some(hook) = args.source.hook {
        cfg.sae.metadata.hook_name = Some(hook.to_string());
    }
    // Harvesting on the fly: the same record a store gives (model file name, context size).
    if let (None, Some(model)) = (&args.source.acts, &args.source.model) {
        let meta = &mut cfg.sae.metadata;
        meta.context_size.get_or_insert(args.source.ctx);
        if meta.model_name.is_none() {
            let path = zephyra_lm::fetch::resolve_model(model)
                .with_context(|| format!("resolving --model {model}"))?;
            meta.model_name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned());
        }
    }
    let comm = crate::dist::collective()?;
    let trainer = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .context("starting the worker threads")?
        .install(|| Trainer::new_with(cfg, source.as_mut(), Some(out), comm))?;
    Ok((out.clone(), trainer, source, eval))
}

fn resume(args: &Args, dir: &Path) -> anyhow::Result<Opened> {
    let state = zephyra_sae::checkpoint::TrainingState::load(dir)?;
    let saved: TrainConfig = serde_json::from_value(state.meta["config"].clone())
        .with_context(|| format!("reading the configuration saved in {}", dir.display()))?;
    let diffs = args.check_shape_flags(&saved);
    if !diffs.is_empty() {
        return Err(zephyra_sae::SaeError::ConfigMismatch {
            differences: diffs.join("; "),
        }
        .into());
    }
    let mut expected = saved.clone();
    args.apply(&mut expected);
    let cursor = &state.meta["cursor"];
    let (mut source, eval): (Box<dyn ActivationSource>, Option<NpySource>) =
        if cursor["kind"] == "npy" {
            let acts =
                match &args.source.acts {
                    Some(p) => p.clone(),
                    None => PathBuf::from(cursor["path"].as_str().context(
                        "the checkpoint does not name its activation file: pass --acts",
                    )?),
                };
            let order: NpyOrder = serde_json::from_value(cursor["order"].clone())
                .context("the checkpoint's data cursor has no order")?;
            let n = cursor["n_rows"].as_u64().unwrap_or(0);
            let end = cursor["end"].as_u64().unwrap_or(0);
            let (train, eval) = open_npy(&acts, Some((n - end.min(n)) as f64), order)?;
            (Box::new(train), eval)
        } else {
            (open_other(args, &expected)?, None)
        };
    let trainer = Trainer::resume_with(
        dir,
        Some(&expected),
        source.as_mut(),
        crate::dist::collective()?,
    )?;
    Ok((dir.to_path_buf(), trainer, source, eval))
}
