//! `zephyra harvest`: run a model over a corpus and store the activations at hook points.
//!
//! `--json` prints one JSON object on stdout when done:
//! `{"stores": [dir…], "hooks": [name…], "n_contexts": int, "n_rows": [int…], "tokens_run": int,
//!   "resumed_shards": int, "corpus_exhausted": bool, "seconds": float, "tokens_per_s": float,
//!   "peak_rss_mb": float|null}` (`peak_rss_mb`: the process's peak resident memory, Linux only).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use zephyra_data::harvest::{self, HarvestConfig, Pipeline};
use zephyra_data::store::StoreDtype;
use zephyra_lm::HookPoint;

use super::source::{load_corpus, load_model};
use super::Global;
use crate::args::renamed::OldBatchContexts;
use crate::args::{CorpusArgs, HarvestArgs, ModelArgs};
use crate::output::OutputDir;

/// `--dtype` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit float (exact).
    Float32,
    /// bfloat16 (half the disk).
    Bfloat16,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Hook point(s) to store, e.g. blocks.15.hook_resid_pre (repeat for several stores from one pass).
    #[arg(long, required = true, value_name = "HOOK")]
    pub hook: Vec<HookPoint>,
    /// Tokens to run through the model (ceil(tokens / ctx) contexts; fewer if the corpus runs out).
    #[arg(long, default_value_t = 2_000_000)]
    pub tokens: u64,
    #[command(flatten)]
    pub harvest: HarvestArgs,
    /// Output store directory (one hook) or parent of one store per hook (several).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the file order and context shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Element type of the stored activations.
    #[arg(long, value_enum, default_value_t = DtypeArg::Float32)]
    pub dtype: DtypeArg,
    /// Threads for the forward pass [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    old_batch: OldBatchContexts,
}

impl Args {
    /// A hook given more than once.
    fn repeated_hook(&self) -> Option<HookPoint> {
        let hooks = &self.hook;
        (1..hooks.len()).find_map(|i| hooks[..i].contains(&hooks[i]).then_some(hooks[i]))
    }
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    OutputDir::claim("--out", &args.out)?;
    if let Some(hook) = args.repeated_hook() {
        anyhow::bail!("--hook {hook} is given twice: give each hook once (one store per hook)");
    }
    let (model, tokenizer, model_path) = load_model(
        &args.model.model.to_string(),
        args.model.precision.precision,
    )?;
    let config = HarvestConfig {
        seed: args.seed,
        contexts_per_shard: args.harvest.shard_contexts,
        batch_contexts: args.harvest.batch.batch_contexts,
        dtype: match args.dtype {
            DtypeArg::Float32 => StoreDtype::Float32,
            DtypeArg::Bfloat16 => StoreDtype::Bfloat16,
        },
        rule: args.harvest.exclusion.rule(),
        ..HarvestConfig::new(args.hook.clone(), args.harvest.ctx, args.tokens)
    };
    if args.harvest.ctx > model.config().context_length {
        return Err(zephyra_data::DataError::CtxTooLarge {
            ctx: args.harvest.ctx,
            max_ctx: model.config().context_length,
        }
        .into());
    }
    let corpus = load_corpus(&args.corpus.data, &args.corpus.text_field)?;
    let info =
        harvest::model_info(&model_path, model.as_ref()).context("hashing the model file")?;
    let vocab_size = tokenizer.vocab_size();
    let pipeline = Pipeline {
        // Under mpirun: the model runs only for this rank's shards.
        model: crate::dist_harvest::partition_model(model, args.harvest.shard_contexts),
        encoder: tokenizer,
        corpus,
        config,
    };

    let bar = if global.show_progress() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} tokens  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut on_progress = |p: &harvest::Progress| {
        bar.set_length(p.tokens_total);
        bar.set_position(p.tokens_done);
        bar.set_message(format!("{} shards", p.shards_written));
    };
    let threads = args.threads.unwrap_or(0);
    let rank_out = crate::dist_harvest::rank_out(&args.out);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the worker threads")?;
    let summary = pool
        .install(|| harvest::harvest(pipeline, info, vocab_size, &rank_out, &mut on_progress))
        .with_context(|| format!("harvesting into {}", rank_out.display()))?;
    bar.finish_and_clear();
    let Some(summary) = crate::dist_harvest::finish(summary, &args.out, &args.hook)? else {
        return Ok(ExitCode::SUCCESS); // a rank other than 0 under mpirun
    };
    let tokens_per_s = summary.tokens_run as f64 / summary.seconds.max(1e-9);
    if args.json {
        let json = serde_json::json!({
            "stores": summary.stores,
            "hooks": args.hook.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "n_contexts": summary.n_contexts,
            "n_rows": summary.n_rows,
            "tokens_run": summary.tokens_run,
            "resumed_shards": summary.resumed_shards,
            "corpus_exhausted": summary.corpus_exhausted,
            "seconds": summary.seconds,
            "tokens_per_s": tokens_per_s,
            "peak_rss_mb": crate::rss::peak_rss_mb(),
        });
        println!("{json}");
    } else {
        println!(
            "harvested {} contexts ({} tokens run in {:.1} s, {:.0} tok/s{})",
            summary.n_contexts,
            summary.tokens_run,
            summary.seconds,
            tokens_per_s,
            if summary.resumed_shards > 0 {
                format!(", resumed after {} shards", summary.resumed_shards)
            } else {
                String::new()
            }
        );
        if summary.corpus_exhausted {
            println!("the corpus ran out before --tokens {}", args.tokens);
        }
        for ((dir, hook), rows) in summary.stores.iter().zip(&args.hook).zip(&summary.n_rows) {
            println!("{hook}: {rows} rows → {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
