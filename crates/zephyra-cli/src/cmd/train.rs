//! `zephyra train`: train a sparse autoencoder on activations, resumably (or, with `--target-acts`, a
//! transcoder: `transcoder_source.rs`).
//!
//! Defaults per architecture (peak learning rate, sparsity coefficient λ; see the README's trainer table):
//! topk and batchtopk SAEs SAELens' parametrisation (decoder rows free from norm 0.1) at lr 3e-3 constant, no
//! warm-up, AuxK (weight 1; batchtopk 4) on latents silent for 40,960 rows; matryoshka the same with unit-norm
//! rows (weight 1); topk-family transcoders lr 5e-4 (no λ),
//! relu lr 5e-5 λ 5 (Anthropic April 2024), relu-unit lr 1e-4 λ 1e-3 with
//! resampling every 1000 steps, jumprelu lr 2e-4 λ(L0) 1e-3, gated lr 1e-4 λ 1. For every other architecture:
//! Adam (0.9, 0.999, 1e-8), warm-up over 1 % of the steps (≤ 1000), linear decay to 0 over the last 20 %,
//! λ warm-up over 5 % of the steps, gradient clipping at norm 1, inputs normalised to E‖x‖ = √d_in,
//! b_dec from the geometric median of the first 8192 rows (zeros for relu), latents dead after 2M rows
//! without firing.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use zephyra_sae::npy::{NpyFile, NpyOrder, NpySource};
use zephyra_sae::train::{
    evaluate, ActivationSource, Cursor, DataOptions, EvalStats, Progress, TrainConfig, TrainSession,
};
use zephyra_sae::{Architecture, SaeConfig};

use super::Global;
pub use crate::args::train::TrainArgs as Args;
use crate::output::OutputDir;

mod multi;

/// Rows held out of `n` for `--holdout` (a count, or a fraction below 1) [default: min(8192, n/5)].
fn held_rows(holdout: Option<f64>, n: usize) -> anyhow::Result<usize> {
    Ok(match holdout {
        Some(h) if h < 0.0 || !h.is_finite() => bail!("--holdout {h} must be ≥ 0"),
        Some(h) if h < 1.0 => (n as f64 * h).round() as usize,
        Some(h) => h as usize,
        None => 8192.min(n / 5),
    })
}

/// The flags of `.npy` runs that decide the rows, beyond `TrainConfig` (recorded in `TrainConfig::data`).
const NPY_OPTIONS: [&str; 2] = ["--no-shuffle", "--holdout"];
/// The same for activation-store runs.
const STORE_OPTIONS: [&str; 1] = ["--shuffle-buffer"];

/// The source flags that decide the rows of an on-the-fly run, with their values in `s`.
fn stream_options(s: &super::source::SourceArgs) -> Vec<(&'static str, String)> {
    vec![
        ("--model", s.model.clone().unwrap_or_default()),
        ("--hook", hook_list(&s.hook)),
        (
            "--data",
            serde_json::to_string(&s.corpus.data).unwrap_or_default(),
        ),
        ("--ctx", s.harvest.ctx.to_string()),
        ("--text-field", s.corpus.text_field.clone()),
        ("--keep-sinks", s.harvest.exclusion.keep_sinks.to_string()),
        (
            "--max-norm-multiple",
            s.harvest.exclusion.max_norm_multiple.to_string(),
        ),
        ("--shuffle-buffer", s.shuffle_buffer.to_string()),
        ("--shard-contexts", s.harvest.shard_contexts.to_string()),
        (
            "--batch-contexts",
            s.harvest.batch.batch_contexts.to_string(),
        ),
    ]
}

/// Hooks as recorded: `a,b` (one hook: its name, as runs of one SAE always recorded it).
fn hook_list(hooks: &[zephyra_lm::HookPoint]) -> String {
    let names: Vec<String> = hooks.iter().map(ToString::to_string).collect();
    names.join(",")
}

/// The source flags given on the command line (typed, even with their default value).
fn given_source_options(
    s: &crate::args::train::Given<super::source::SourceArgs>,
) -> Vec<(&'static str, String)> {
    stream_options(s)
        .into_iter()
        .filter(|(flag, _)| s.was_given(flag))
        .collect()
}

/// `args.source` with the recorded on-the-fly options of `saved` (a resumed run reads what it read).
fn recorded_source_args(
    args: &super::source::SourceArgs,
    saved: &DataOptions,
) -> anyhow::Result<super::source::SourceArgs> {
    use clap::{Args as _, FromArgMatches as _};
    let mut argv = vec!["train".to_string()];
    for (flag, given) in stream_options(args) {
        let value = saved.get(flag).unwrap_or(&given);
        match flag {
            "--data" => {
                let data: Vec<String> = serde_json::from_str(value)
                    .with_context(|| format!("the checkpoint's --data {value}"))?;
                for d in data {
                    argv.extend([flag.to_string(), d]);
                }
            }
            "--keep-sinks" if value == "true" => argv.push(flag.into()),
            "--keep-sinks" => {}
            "--model" | "--hook" if value.is_empty() => {}
            "--hook" => {
                for hook in value.split(',') {
                    argv.extend([flag.to_string(), hook.to_string()]);
                }
            }
            _ => argv.extend([flag.to_string(), value.to_string()]),
        }
    }
    let cmd = super::source::SourceArgs::augment_args(clap::Command::new("train"));
    let matches = cmd
        .try_get_matches_from(&argv)
        .context("the checkpoint's data options")?;
    let mut out = super::source::SourceArgs::from_arg_matches(&matches)?;
    out.acts = args.acts.clone();
    Ok(out)
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
    if n == 0 {
        bail!(
            "{} holds no rows (shape [0, {}]): nothing to train on",
            path.display(),
            file.d_in()
        );
    }
    let held = held_rows(holdout, n)?;
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
    // A new run that fails before its first checkpoint leaves `--out` as it was (a run with a checkpoint
    // is kept: `--resume` continues it).
    let out = match (&args.out, &args.resume) {
        (Some(dir), None) => Some(OutputDir::claim("--out", dir)?),
        _ => None,
    };
    let result = if multi::is_multi(&args) {
        multi::run(&args, global)
    } else {
        train(args, global)
    };
    if let (Err(_), Some(out)) = (&result, &out) {
        if !out
            .path()
            .join(zephyra_sae::checkpoint::STATE_FILE)
            .exists()
            && !multi::has_checkpoint(out.path())
        {
            out.discard_new();
        }
    }
    result
}

fn train(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let (dir, mut session, mut source, eval) = match &args.resume {
        Some(dir) => resume(&args, dir)?,
        None => start(&args)?,
    };
    let trainer = session.trainer();
    let total = trainer.config().total_steps();
    // Under `mpirun` only rank 0 draws progress, evaluates, writes summary.json and prints.
    let root = trainer.collective().is_root();
    let bar = progress_bar(global, root, total, trainer.step());
    let mut on_step = |p: &Progress| {
        show_progress(&bar, p);
        if args.step_delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.step_delay_ms));
        }
        ControlFlow::Continue(())
    };
    let outcome = session
        .run(source.as_mut(), &mut on_step)
        .context("training")?;
    let trainer = session.trainer();
    bar.finish_and_clear();
    if !root {
        return Ok(ExitCode::SUCCESS);
    }

    let sae = trainer.inference_sae();
    let held: Option<EvalStats> = match eval {
        Some(mut e) => Some(
            session
                .install(|| evaluate(&sae, &mut e, 1024, u64::MAX))
                .context("evaluating on the held-out rows")?,
        ),
        None => None,
    };
    let cfg = trainer.config();
    let mut summary = trainer.summary(&outcome, held);
    summary.peak_rss_mb = crate::rss::peak_rss_mb();
    summary.write(&dir)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
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

/// The step bar (drawn by rank 0 only, when progress is shown), at `step` of `total`.
fn progress_bar(global: &Global, root: bool, total: u64, step: u64) -> indicatif::ProgressBar {
    if !(global.show_progress() && root) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(step);
    bar
}

/// Shows a step's progress on `bar`.
fn show_progress(bar: &indicatif::ProgressBar, p: &Progress) {
    bar.set_position(p.step);
    bar.set_message(format!(
        "{:.0} tok/s  loss {:.4}  L0 {:.1}  FVE {:.3}  dead {:.1}%",
        p.tokens_per_s,
        p.loss,
        p.l0,
        p.fve,
        100.0 * p.dead_fraction
    ));
}

pub(super) type Opened = (
    PathBuf,
    TrainSession,
    Box<dyn ActivationSource>,
    Option<NpySource>,
);

/// A `.npy` file is split into training rows and a held-out tail here; stores and on-the-fly harvesting
/// are opened by `source.rs` (no hold-out: evaluate with `zephyra eval`).
fn is_npy(args: &Args) -> Option<&Path> {
    args.source.acts.as_deref().filter(|p| p.is_file())
}

fn open_other(
    source: &super::source::SourceArgs,
    no_shuffle: bool,
    cfg: &TrainConfig,
) -> anyhow::Result<Box<dyn ActivationSource>> {
    let opts = super::source::OpenOptions {
        seed: cfg.seed,
        // On the fly, the rows of the scale and b_dec estimate must exist too (as in a large enough store).
        tokens: cfg.total_tokens.max(cfg.init_rows as u64),
        repeat: true,
        shuffle: !no_shuffle,
    };
    super::source::open(source, &opts)
}

fn start(args: &Args) -> anyhow::Result<Opened> {
    if let Some(target) = &args.transcoder.target_acts {
        return super::transcoder_source::start(args, target);
    }
    let Some(out) = &args.out else {
        bail!("--out DIR is required (where the SAE and its checkpoints go)")
    };
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
            let mut cfg = TrainConfig::new(1, 2, Architecture::Relu, 1, 1)?;
            cfg.seed = seed;
            cfg.total_tokens = args.tokens.unwrap_or(2_000_000);
            (open_other(&args.source.args, args.no_shuffle, &cfg)?, None)
        }
    };
    let d_in = source.d_in();
    let expansion = args.arch.expansion();
    let arch = args.arch.architecture(expansion * d_in)?;
    let sae = SaeConfig::new(d_in, expansion * d_in, arch).context("--arch/--k/--expansion")?;
    let tokens = args.tokens.unwrap_or(2_000_000);
    let mut cfg = TrainConfig::for_sae(sae, args.batch.unwrap_or(4096), tokens);
    cfg.checkpoint_every_tokens = (tokens / 10).max(1);
    args.apply(&mut cfg)?;
    // What decides the rows beyond the configuration, compared on `--resume`.
    if is_npy(args).is_some() {
        cfg.data.set(NPY_OPTIONS[0], args.no_shuffle);
        cfg.data
            .set(NPY_OPTIONS[1], eval.as_ref().map_or(0, NpySource::n_rows));
    } else if args.source.acts.is_some() {
        cfg.data.set(STORE_OPTIONS[0], args.source.shuffle_buffer);
    } else {
        for (flag, value) in stream_options(&args.source) {
            cfg.data.set(flag, value);
        }
    }
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
            record_precision(meta, manifest.model.precision);
            if meta.model_name.is_none() {
                meta.model_name = Path::new(&manifest.model.path)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned());
            }
        }
    }
    if let [hook] = args.source.hook[..] {
        cfg.sae.metadata.hook_name = Some(hook.to_string());
    }
    // Harvesting on the fly: the same record a store gives (model file name, context size).
    if let (None, Some(model)) = (&args.source.acts, &args.source.model) {
        let meta = &mut cfg.sae.metadata;
        meta.context_size.get_or_insert(args.source.harvest.ctx);
        record_precision(meta, args.source.precision.precision);
        if meta.model_name.is_none() {
            let path = zephyra_lm::fetch::resolve_model(model)
                .with_context(|| format!("resolving --model {model}"))?;
            meta.model_name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned());
        }
    }
    // Validated before any thread starts: `--threads 100000` spawns nothing.
    let comm = crate::dist::collective()?;
    let session = TrainSession::start(cfg, source.as_mut(), Some(out), Some(comm))?;
    Ok((out.clone(), session, source, eval))
}

/// Records the number format of the model's linear layers that made the activations
/// (`metadata.model_precision`: `"f32"` or `"bf16"`).
fn record_precision(meta: &mut zephyra_sae::SaeMetadata, precision: zephyra_lm::Precision) {
    meta.extra
        .insert(MODEL_PRECISION_KEY.into(), serde_json::json!(precision));
}

/// The SAE metadata key [`record_precision`] writes.
pub const MODEL_PRECISION_KEY: &str = "model_precision";

fn resume(args: &Args, dir: &Path) -> anyhow::Result<Opened> {
    let state = zephyra_sae::checkpoint::TrainingState::load(dir)?;
    let mut saved = state.meta.config.clone();
    let mut expected = saved.clone();
    args.apply_shape(&mut expected);
    args.apply(&mut expected)?;
    let cursor = &state.meta.cursor;
    let npy_cursor = match cursor {
        Cursor::Npy {
            path,
            order,
            n_rows,
            end,
            ..
        } => Some((path.clone(), *order, *n_rows as usize, *end as usize)),
        _ => None,
    };
    let npy = npy_cursor.is_some();
    // Each data flag given is compared with the checkpoint's record; one that does not apply to this
    // kind of source is refused the same way ("not recorded").
    if let Some((_, order, n, end)) = &npy_cursor {
        let (n, end) = (*n, *end);
        // Runs saved before the data options were recorded: their cursor holds the same facts.
        let data = &mut saved.data.0;
        data.entry(NPY_OPTIONS[0].into())
            .or_insert_with(|| (!order.shuffle).to_string());
        data.entry(NPY_OPTIONS[1].into())
            .or_insert_with(|| (n - end.min(n)).to_string());
        expected.data = saved.data.clone();
        if args.no_shuffle {
            expected.data.set(NPY_OPTIONS[0], true);
        }
        if args.holdout.is_some() {
            expected
                .data
                .set(NPY_OPTIONS[1], held_rows(args.holdout, n)?);
        }
    } else {
        if args.no_shuffle {
            expected.data.set(NPY_OPTIONS[0], true);
        }
        if let Some(h) = args.holdout {
            expected.data.set(NPY_OPTIONS[1], h);
        }
    }
    for (flag, value) in given_source_options(&args.source) {
        let checked_by_the_store = !npy && matches!(flag, "--model" | "--hook");
        if !checked_by_the_store {
            expected.data.set(flag, value);
        }
    }
    super::transcoder_source::apply_resume_flags(args, &mut expected);
    // The one comparison (zephyra-sae): every differing option by name, both values; nothing touched.
    zephyra_sae::train::check_resume(&saved, &expected)?;

    let (mut source, eval): (Box<dyn ActivationSource>, Option<NpySource>) =
        if let Some((path, order, _, _)) = npy_cursor {
            let acts = args.source.acts.clone().unwrap_or(path);
            let held = saved.data.get(NPY_OPTIONS[1]).unwrap_or("0");
            let held: f64 = held
                .parse()
                .with_context(|| format!("the checkpoint's --holdout {held}"))?;
            let (train, eval) = open_npy(&acts, Some(held), order)?;
            (Box::new(train), eval)
        } else if let Cursor::Zip { input, target } = cursor {
            let zip = super::transcoder_source::reopen(args, input, target, &expected)?;
            (Box::new(zip), None)
        } else {
            let recorded = recorded_source_args(&args.source.args, &saved.data)?;
            (open_other(&recorded, args.no_shuffle, &expected)?, None)
        };
    let session = TrainSession::resume(
        dir,
        Some(&expected),
        source.as_mut(),
        Some(crate::dist::collective()?),
    )?;
    Ok((dir.to_path_buf(), session, source, eval))
}
