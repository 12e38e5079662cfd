//! `zephyra features`: per-feature statistics over a corpus (top contexts, histograms, logit effects,
//! co-firing), written to an indexed store the web app reads; optional Neuronpedia export.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use zephyra_analysis::features::{self, export, FeatureOptions, FeatureStore, Provenance};
use zephyra_data::exclude::DEFAULT_MAX_NORM_MULTIPLE;
use zephyra_data::{Corpus, ExclusionRule};

use super::Global;
use crate::args::renamed::OldBatchContexts;
use crate::args::{BatchContextsArg, CorpusArgs, SaeArgs, Stack};
use crate::output::OutputDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub stack: SaeArgs,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Tokens to read.
    #[arg(long, default_value_t = 1_000_000)]
    pub tokens: u64,
    /// Tokens per context.
    #[arg(long, default_value_t = 128)]
    pub ctx: usize,
    #[command(flatten)]
    pub batch: BatchContextsArg,
    /// Top contexts kept per feature.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Seed of the context shuffle and the quantile samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep attention sinks, position 0 and special tokens (not recommended).
    #[arg(long)]
    pub keep_sinks: bool,
    /// Ignore a checkpoint left by an interrupted run and start over.
    #[arg(long)]
    pub restart: bool,
    /// Output directory [default: SAE/features].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write the Neuronpedia / SAEDashboard batch JSON files into DIR.
    #[arg(long, value_name = "DIR")]
    pub export_neuronpedia: Option<PathBuf>,
    /// Only export an existing features directory (with --export-neuronpedia); do not recompute.
    #[arg(long, requires = "export_neuronpedia")]
    pub export_only: bool,
    #[command(flatten)]
    old_batch: OldBatchContexts,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let sae_dir = &args.stack.sae;
    let out = args.out.clone().unwrap_or_else(|| sae_dir.join("features"));
    OutputDir::claim("--out", &out)?;
    // The model's name for the export (the SAE is read twice: once here for its recorded model).
    let model = args.stack.model_for(&args.stack.load_sae()?).to_string();
    if args.export_only {
        let dir = args
            .export_neuronpedia
            .as_deref()
            .unwrap_or(Path::new("neuronpedia"));
        return export_to(&out, dir, &model);
    }
    let stack = args.stack.load(global)?;
    let mut corpus = args.corpus.open()?;
    corpus.shuffle_inputs(args.seed);
    let options = FeatureOptions {
        ctx: args.ctx,
        batch_contexts: args.batch.batch_contexts,
        max_tokens: args.tokens,
        n_top: args.top,
        seed: args.seed,
        exclusion: ExclusionRule::from_flags(args.keep_sinks, DEFAULT_MAX_NORM_MULTIPLE),
        resume: !args.restart,
        ..FeatureOptions::default()
    };
    let index = compute(&stack, &corpus, options, &out, sae_dir, global)?;
    println!(
        "{}: {} features over {} tokens ({} kept), {} alive",
        out.display(),
        index.d_sae,
        index.n_tokens_read,
        index.n_tokens_kept,
        index
            .features
            .iter()
            .filter(|f| f.stats.n_fires > 0)
            .count()
    );
    if let Some(dir) = &args.export_neuronpedia {
        export_to(&out, dir, &model)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the pass with a progress bar.
pub fn compute(
    stack: &Stack,
    corpus: &Corpus,
    options: FeatureOptions,
    out: &Path,
    sae_dir: &Path,
    global: &Global,
) -> anyhow::Result<features::FeatureIndex> {
    let bar = if global.show_progress() {
        indicatif::ProgressBar::new(options.max_tokens)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "features {bar:40} {pos}/{len} tokens {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let job = features::FeatureJob {
        llama: &stack.llama,
        tokenizer: stack.tokenizer.clone(),
        sae: &stack.sae,
        hook: stack.hook,
        corpus,
        options,
        out_dir: out,
        provenance: Provenance {
            model: stack.model_path.display().to_string(),
            hook: stack.hook.to_string(),
            sae: sae_dir.display().to_string(),
            corpus: corpus.description().to_string(),
        },
    };
    let index = features::compute_features(&job, &mut |p| {
        bar.set_position(p.n_tokens_read.min(p.max_tokens));
        if p.resumed {
            bar.println(format!(
                "resuming from a checkpoint at {} tokens",
                p.n_tokens_read
            ));
        }
    })
    .with_context(|| format!("computing feature statistics into {}", out.display()))?;
    bar.finish_and_clear();
    Ok(index)
}

fn export_to(features_dir: &Path, dir: &Path, model: &str) -> anyhow::Result<ExitCode> {
    let store = FeatureStore::open(features_dir).with_context(|| {
        format!(
            "opening {} (run `zephyra features` first)",
            features_dir.display()
        )
    })?;
    // Neuronpedia's model ids for the known models.
    let model_id = match model {
        "smollm2" => "smollm2-135m-instruct",
        "gemma3-270m" => "gemma-3-270m",
        other => other,
    };
    let set = format!("zephyra-{}", store.index().hook.replace('.', "-"));
    let model_path = zephyra_lm::fetch::resolve_model(model)
        .with_context(|| format!("finding the model `{model}` for the export's token strings"))?;
    let tokenizer = zephyra_lm::Tokenizer::from_gguf(&model_path)
        .with_context(|| format!("reading the tokenizer of {}", model_path.display()))?;
    let n = export::export_neuronpedia(&store, &tokenizer, dir, model_id, &set)
        .with_context(|| format!("exporting into {}", dir.display()))?;
    println!("{}: {n} Neuronpedia batch files", dir.display());
    Ok(ExitCode::SUCCESS)
}
