//! `zephyra eval`: every standard SAE figure on held-out data (see the README's eval section).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use zephyra_analysis::eval::{check_model_file, check_store, check_width, evaluate, EvalConfig};
use zephyra_analysis::eval_data::held_out_tail;
use zephyra_analysis::report::{EvalData, EvalReport, EvaluatedSae};
use zephyra_analysis::seeds::{NamedFigures, SeedRuns};
use zephyra_data::pack::{ContextStream, PackOptions, TextEncoder, DEFAULT_SHUFFLE_CONTEXTS};
use zephyra_data::{Corpus, ExclusionRule};

use super::source::load_model;
use super::Global;
use crate::args::renamed::{OldBatchContexts, Renamed};
use crate::args::{BatchContextsArg, CorpusArgs, SaeArgs};

/// `--sae` when only `--transcoders` is given (clap needs a value for the shared `SaeArgs`).
const NO_SAE: &str = "<no --sae>";

#[derive(Debug, clap::Args)]
#[command(mut_arg("sae", |a| a.required(false).default_value(NO_SAE).hide_default_value(true)))]
pub struct Args {
    #[command(flatten)]
    pub stack: SaeArgs,
    /// Evaluate a directory of per-layer transcoders (`layer-{l}/`) as a replacement model instead of one SAE:
    /// per layer FVE of hook_mlp_out, error norm and CE with that MLP replaced; every MLP replaced vs
    /// every MLP mean-ablated. --ce-tokens costs n_layers + 3 forwards per token.
    #[arg(long, value_name = "DIR", conflicts_with = "sae")]
    pub transcoders: Option<PathBuf>,
    // Eval corpus [default: the held-out tail of the default corpus: its files in the reverse of the
    // training order].
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Tokens for the reconstruction, sparsity and latent-health figures.
    #[arg(long, default_value_t = 200_000)]
    pub tokens: u64,
    /// Tokens (the first of the same contexts) for CE / KL; each costs four full forward passes. 0 skips them.
    #[arg(long, default_value_t = 16_384)]
    pub ce_tokens: u64,
    #[command(flatten)]
    pub batch: BatchContextsArg,
    /// Tokens per context [default: the SAE's `metadata.context_size`, else 128].
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Seed of the eval context shuffle.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The harvest seed of the training data, whose file order the default eval set reverses.
    #[arg(long, default_value_t = 0)]
    pub train_seed: u64,
    /// Where to write every figure as JSON [default: SAE_DIR/eval.json].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the report as one JSON object on stdout instead of the table (the file is written too).
    #[arg(long)]
    pub json: bool,
    /// A stray value: `--json FILE` is the old spelling of `--out FILE`.
    #[arg(hide = true)]
    stray: Option<String>,
    #[command(flatten)]
    old_batch: OldBatchContexts,
    /// More SAEs of the same recipe (other seeds; same hook and model), evaluated alike on the same data:
    /// every figure then gets its mean ± 95 % interval (Student's t). Works with the standard figures,
    /// --absorption (the prompts' activations are read once) and --synth. Each SAE's own report goes to
    /// its directory; the side-by-side one to --out [default: SAE_DIR/eval_seeds.json,
    /// eval_absorption_seeds.json, eval_synth.json].
    #[arg(long = "seed-runs", value_name = "DIR", num_args = 1.., conflicts_with = "transcoders")]
    pub seed_runs: Vec<PathBuf>,
    #[command(flatten)]
    pub synth: super::eval_synth::SynthArgs,
    #[command(flatten)]
    pub absorption: super::eval_absorption::AbsorptionArgs,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if let Some(value) = &args.stray {
        if args.json {
            bail!(
                "{}",
                Renamed::new(
                    "--json FILE",
                    "`--out FILE` (`--json` now prints the report on stdout)"
                )
                .message()
            );
        }
        bail!("unexpected argument `{value}`; see `zephyra eval --help`");
    }
    if let Some(dir) = args.transcoders.clone() {
        return super::eval_transcoders::run(&args, dir, global);
    }
    if args.stack.sae.as_os_str() == NO_SAE {
        bail!("give the SAE to evaluate with --sae DIR (or a directory of transcoders with --transcoders DIR)");
    }
    let sae_dir = &args.stack.sae;
    if let Some(dir) = &args.synth.synth {
        let out = args.out.as_deref();
        return super::eval_synth::run(
            sae_dir,
            &args.seed_runs,
            &args.synth,
            dir,
            out,
            args.json,
            global,
        );
    }
    if args.absorption.absorption {
        return super::eval_absorption::run(&args, global);
    }
    let sae = args.stack.load_sae()?;
    let hook = args.stack.hook_of(&sae)?;
    let others = load_seed_runs(&args.seed_runs, &sae, hook)?;
    let (model, tokenizer, model_path) = load_model_for(&args.stack, &sae, hook)?;
    for run in std::iter::once(&sae).chain(others.iter().map(|(_, s)| s)) {
        if let Some(acts) = run.cfg.metadata.extra.get("acts").and_then(|v| v.as_str()) {
            check_store(std::path::Path::new(acts), &model_path, hook)?;
        }
    }
    if args.tokens == 0 {
        bail!("--tokens 0 leaves nothing to evaluate: use e.g. --tokens 200000");
    }
    let ctx = args.ctx.or(sae.cfg.metadata.context_size).unwrap_or(128);
    if ctx < 2 || ctx > model.config().context_length {
        bail!(
            "--ctx {ctx} must be between 2 and the model's context length {}",
            model.config().context_length
        );
    }

    let base = args.corpus.open()?;
    let (corpus, selection, train_seed): (Corpus, String, Option<u64>) = if args.corpus.is_default()
    {
        let tail = held_out_tail(&base, args.train_seed)?;
        let sel = format!(
            "held-out tail: files in reverse of the training order (harvest seed {})",
            args.train_seed
        );
        (tail, sel, Some(args.train_seed))
    } else {
        (base, "the given corpus, read as is".to_string(), None)
    };
    let data = EvalData {
        corpus: corpus_description(&args.corpus.data, &corpus),
        selection,
        seed: args.seed,
        train_seed,
        ctx,
    };
    let cfg = EvalConfig {
        hook,
        batch_contexts: args.batch.batch_contexts,
        max_tokens: args.tokens,
        downstream_tokens: args.ce_tokens.min(args.tokens),
        rule: ExclusionRule::default(),
    };
    let opts = PackOptions {
        ctx,
        seed: args.seed,
        shuffle_contexts: DEFAULT_SHUFFLE_CONTEXTS.min((args.tokens as usize / ctx).max(1)),
    };
    let tok = tokenizer.clone();
    let is_special = move |id: u32| tok.is_special(id);
    let mut reports = Vec::new();
    for (dir, run) in std::iter::once((sae_dir.clone(), sae)).chain(others) {
        // Every SAE reads the same contexts: the stream is rebuilt from the same seed.
        let encoder: Arc<dyn TextEncoder> = tokenizer.clone();
        let mut stream = ContextStream::new(corpus.documents(), encoder, opts)?
            .map(|c| c.map_err(zephyra_analysis::AnalysisError::Data));
        let bar = progress_bar(global);
        let mut on_progress = |p: zephyra_analysis::eval::EvalProgress| {
            bar.set_length(p.tokens_total);
            bar.set_message(p.stage());
            bar.set_position(p.tokens_done);
        };
        let figures = evaluate(
            &model,
            &run,
            &is_special,
            &mut stream,
            &cfg,
            &mut on_progress,
        )
        .with_context(|| format!("evaluating the SAE in {}", dir.display()))?;
        bar.finish_and_clear();
        reports.push(EvalReport {
            evaluated: EvaluatedSae::new(
                dir.display().to_string(),
                &run.cfg,
                run.cfg.architecture.name().to_string(),
                &model_path,
                model.config().name.clone(),
                hook,
            ),
            data: data.clone(),
            tokens: args.tokens,
            ce_tokens: cfg.downstream_tokens,
            batch_contexts: args.batch.batch_contexts,
            figures,
        });
    }
    if reports.len() > 1 {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| sae_dir.join("eval_seeds.json"));
        let own = |r: &EvalReport| Path::new(&r.evaluated.sae).join("eval.json");
        return emit_seed_runs(reports, own, EvalReport::write, &out, args.json);
    }
    let Some(report) = reports.pop() else {
        bail!("no SAE was evaluated");
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| sae_dir.join("eval.json"));
    emit_report(
        &report,
        |p| report.write(p),
        report.table(),
        &out,
        args.json,
    )
}

/// Loads the `--seed-runs` SAEs and checks that each is of the first SAE's kind: the same hook, input
/// width and recorded model (other seeds of one recipe).
pub(super) fn load_seed_runs(
    dirs: &[PathBuf],
    first: &zephyra_sae::Sae,
    hook: zephyra_lm::HookPoint,
) -> anyhow::Result<Vec<(PathBuf, zephyra_sae::Sae)>> {
    dirs.iter()
        .map(|dir| {
            let sae = zephyra_sae::saelens::load(dir)
                .with_context(|| format!("loading the --seed-runs SAE from {}", dir.display()))?;
            let own_hook = sae.cfg.metadata.hook_name.as_deref();
            if own_hook.is_some_and(|h| h != hook.to_string()) {
                bail!(
                    "the --seed-runs SAE in {} was trained at hook `{}` but the one evaluated is at `{hook}`: \
                     --seed-runs takes other seeds of the same recipe",
                    dir.display(),
                    own_hook.unwrap_or_default()
                );
            }
            if sae.cfg.d_in != first.cfg.d_in {
                bail!(
                    "the --seed-runs SAE in {} reads vectors of width {} but the first SAE {}: --seed-runs \
                     takes other seeds of the same recipe",
                    dir.display(),
                    sae.cfg.d_in,
                    first.cfg.d_in
                );
            }
            let (a, b) = (
                sae.cfg.metadata.model_name.as_deref(),
                first.cfg.metadata.model_name.as_deref(),
            );
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    bail!(
                        "the --seed-runs SAE in {} was trained on `{a}` but the first SAE on `{b}`: \
                         --seed-runs takes other seeds of the same recipe",
                        dir.display()
                    );
                }
            }
            Ok((dir.clone(), sae))
        })
        .collect()
}

/// Several seeds' reports: each is written (`write`) to its own file (`own`, in its SAE directory), then
/// the side-by-side report with the intervals goes to `out` and is printed as [`emit_report`] does.
pub(super) fn emit_seed_runs<R: NamedFigures + serde::Serialize>(
    reports: Vec<R>,
    own: impl Fn(&R) -> PathBuf,
    write: impl Fn(&R, &Path) -> zephyra_analysis::Result<()>,
    out: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    for report in &reports {
        let path = own(report);
        write(report, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    let seeds = SeedRuns::new(reports);
    emit_report(&seeds, |p| seeds.write(p), seeds.table(), out, json)
}

/// Writes a report to `out` (`--out`), then prints it: JSON on one line with `--json`, else its `table`.
pub(super) fn emit_report<R: serde::Serialize>(
    report: &R,
    write: impl FnOnce(&Path) -> zephyra_analysis::Result<()>,
    table: String,
    out: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    write(out).with_context(|| format!("writing --out {}", out.display()))?;
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{table}");
    }
    eprintln!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn corpus_description(data: &[String], corpus: &Corpus) -> String {
    if data.is_empty() {
        format!("default corpus ({} files)", corpus.inputs().len())
    } else {
        corpus.description().to_string()
    }
}

pub(super) fn progress_bar(global: &Global) -> ProgressBar {
    if !global.show_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>20} [{bar:40}] {pos}/{len} tokens ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Loads the model an SAE is evaluated on (`--model`, else the one it records) and checks that it is the
/// SAE's model and that the hook's width is the SAE's input width.
pub(super) fn load_model_for(
    stack: &SaeArgs,
    sae: &zephyra_sae::Sae,
    hook: zephyra_lm::HookPoint,
) -> anyhow::Result<(Arc<zephyra_lm::Llama>, Arc<zephyra_lm::Tokenizer>, PathBuf)> {
    let (model, tokenizer, model_path) =
        load_model(&stack.model_for(sae).to_string(), stack.precision.precision)?;
    check_model_file(
        &format!("the SAE in {}", stack.sae.display()),
        sae.cfg.metadata.model_name.as_deref(),
        &model_path,
        model.config().name.as_deref(),
    )?;
    check_width(&model, hook, sae)?;
    Ok((model, tokenizer, model_path))
}
