//! `zephyra bench stream`: does training straight from the model overlap the forward pass and the SAE steps?
//!
//! Three timings on the same model, hook, corpus, harvest options and SAE:
//! - (a) harvest only: the on-the-fly harvest (`StreamFeed` through the shuffle buffer, no SAE) of the `H`
//!   model tokens that (c) harvests, in `T_a`;
//! - (b) SAE steps only: `N` rows of training steps on activations already in memory (the first rows of
//!   (a)), in `T_b` (model initialisation excluded);
//! - (c) streaming: `train --model` as the CLI runs it (harvest thread + trainer), `N` rows, wall time
//!   `T_c` from starting the harvest to the last step.
//!
//! Streaming is limited by the slower side when the two overlap: predicted `T = max(T_a, T_b)`; run one
//! after the other it would take `T_a + T_b` (throughput the harmonic sum `1/(1/a + 1/b)` when both sides
//! process the same rows). Both predictions are printed as rows/s (`N / T`) beside the measured `N / T_c`.
//! Both sides use the same cores: on a machine where each alone saturates every core, the sequential
//! figure is also the ceiling.
//!
//! `--json` prints one object: `{"bench": "stream", "hook", "ctx", "threads", "arch", "d_sae", "batch",
//! "harvest_tokens", "harvest_rows", "harvest_s", "harvest_tokens_per_s", "sae_rows", "sae_s",
//! "sae_rows_per_s", "stream_rows", "stream_s", "stream_rows_per_s", "predicted_overlap_rows_per_s",
//! "predicted_sequential_rows_per_s", "peak_rss_mb", "model"}`.

use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use zephyra_data::harvest::{HarvestConfig, Pipeline, StreamFeed};
use zephyra_data::ShuffleReader;
use zephyra_lm::HookPoint;
use zephyra_sae::train::{MemorySource, TrainConfig, TrainSession};

use super::super::source::{load_model, stream_tokens, BufferedSource};
use super::super::Global;
use crate::args::renamed::{OldBatchRows, OldHarvestBatch};
use crate::args::{ArchArgs, CorpusArgs, ModelArgs};
use crate::rss::peak_rss_mb;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Hook point.
    #[arg(long, default_value = "blocks.15.hook_resid_pre")]
    hook: HookPoint,
    /// Tokens per context.
    #[arg(long, default_value_t = 128)]
    ctx: usize,
    /// Contexts per shard (small, so the shuffle buffer holds several and the run stays short).
    #[arg(long, default_value_t = 16)]
    shard_contexts: usize,
    /// Contexts per forward pass.
    #[arg(long, default_value_t = 8, value_name = "N")]
    batch_contexts: usize,
    #[command(flatten)]
    old_harvest_batch: OldHarvestBatch,
    /// Shuffle buffer rows (at least the trainer's 8192 initialisation rows, as the default of `train`).
    #[arg(long, default_value_t = 10_240)]
    shuffle_buffer: usize,
    #[command(flatten)]
    arch: ArchArgs,
    /// Rows per SAE step.
    #[arg(long = "batch-rows", default_value_t = 4096, value_name = "ROWS")]
    batch: usize,
    #[command(flatten)]
    old_batch: OldBatchRows,
    /// SAE steps of (b) and (c).
    #[arg(long, default_value_t = 8)]
    steps: u64,
    /// Worker threads of the model forward and of the SAE steps (each).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seed of the corpus order, the shuffle and the SAE.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(
        args.steps > 0 && args.batch > 0,
        "--steps and --batch-rows must be at least 1"
    );
    // candle sizes its thread use from the same variable as rayon's global pool (the harvest thread's).
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    let (model, tokenizer, path) = load_model(
        &args.model.model.to_string(),
        args.model.precision.precision,
    )?;
    let corpus = args.corpus.open()?;
    let d = model.config().d_model;
    let n_rows = args.steps * args.batch as u64;
    let mut cfg = TrainConfig::new(
        d,
        args.arch.expansion() * d,
        args.arch.architecture(args.arch.expansion() * d)?,
        args.batch,
        n_rows,
    )
    .context("--arch/--k/--expansion")?;
    cfg.threads = args.threads;
    cfg.seed = args.seed;
    // What `train --model` harvests for these rows (the initialisation rows included).
    let h_tokens = stream_tokens(
        n_rows.max(cfg.init_rows as u64),
        args.ctx,
        args.shard_contexts,
        args.shuffle_buffer,
    );
    let pipeline = Pipeline {
        model: model.clone(),
        encoder: tokenizer,
        corpus,
        config: HarvestConfig {
            seed: args.seed,
            contexts_per_shard: args.shard_contexts,
            batch_contexts: args.batch_contexts,
            ..HarvestConfig::new(vec![args.hook], args.ctx, h_tokens)
        },
    };

    // (a) Harvest only, keeping the first rows for (b).
    let keep_rows = (cfg.init_rows.max(args.batch) * 2) as u64;
    let started = Instant::now();
    let feed = StreamFeed::new(pipeline.clone(), args.shuffle_buffer, 2)
        .context("starting on-the-fly harvesting")?;
    let mut reader = ShuffleReader::new(Box::new(feed), args.seed, Some(1));
    let mut buf = vec![0.0f32; 4096 * d];
    let mut kept = Vec::new();
    let mut harvest_rows = 0u64;
    loop {
        let got = reader.next_rows(&mut buf).context("harvesting")?;
        if got == 0 {
            break;
        }
        if harvest_rows < keep_rows {
            let take = (keep_rows - harvest_rows).min(got as u64) as usize;
            kept.extend_from_slice(&buf[..take * d]);
        }
        harvest_rows += got as u64;
    }
    let harvest_s = started.elapsed().as_secs_f64();
    drop(reader);
    anyhow::ensure!(
        harvest_rows >= n_rows,
        "the corpus gave {harvest_rows} rows, fewer than the {n_rows} to train on: give a larger --data or fewer --steps"
    );

    // (b) SAE steps only, on rows in memory.
    let mut memory = MemorySource::new(kept, d, true)?;
    let mut b_cfg = cfg.clone();
    b_cfg.init_rows = b_cfg.init_rows.min(keep_rows.min(harvest_rows) as usize);
    let mut session = TrainSession::start(b_cfg, &mut memory, None, None)?;
    let started = Instant::now();
    session.run(&mut memory, &mut |_| ControlFlow::Continue(()))?;
    let sae_s = started.elapsed().as_secs_f64();

    // (c) Streaming, as `train --model` does it.
    let started = Instant::now();
    let mut source = BufferedSource::stream(pipeline, args.shuffle_buffer, args.seed)?;
    let mut session = TrainSession::start(cfg.clone(), &mut source, None, None)?;
    let outcome = session.run(&mut source, &mut |_| ControlFlow::Continue(()))?;
    let stream_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        outcome.tokens == n_rows,
        "streaming trained on {} rows, not {n_rows}",
        outcome.tokens
    );

    // Both sides' times for the rows of (c): all of the harvest (the trainer waits for whole windows),
    // and N rows of steps.
    let n = n_rows as f64;
    let overlap = n / harvest_s.max(sae_s);
    let sequential = n / (harvest_s + sae_s);
    let line = serde_json::json!({
        "bench": "stream",
        "hook": args.hook.to_string(),
        "ctx": args.ctx,
        "threads": args.threads,
        "arch": cfg.sae.architecture.name(),
        "d_sae": cfg.sae.d_sae,
        "batch": args.batch,
        "harvest_tokens": h_tokens,
        "harvest_rows": harvest_rows,
        "harvest_s": harvest_s,
        "harvest_tokens_per_s": h_tokens as f64 / harvest_s,
        "sae_rows": n_rows,
        "sae_s": sae_s,
        "sae_rows_per_s": n / sae_s,
        "stream_rows": n_rows,
        "stream_s": stream_s,
        "stream_rows_per_s": n / stream_s,
        "predicted_overlap_rows_per_s": overlap,
        "predicted_sequential_rows_per_s": sequential,
        "peak_rss_mb": peak_rss_mb(),
        "model": path.display().to_string(),
    });
    super::print_result(args.json, &line, || {
        [
            format!(
                "{} at {}, ctx {}, {} threads; SAE {} d_sae {} batch {}; {} rows trained",
                path.display(),
                args.hook,
                args.ctx,
                args.threads,
                cfg.sae.architecture,
                cfg.sae.d_sae,
                args.batch,
                n_rows
            ),
            format!(
                "(a) harvest only    {h_tokens:>8} tokens ({harvest_rows} rows) in {harvest_s:>6.1} s: {:>7.0} tok/s",
                h_tokens as f64 / harvest_s
            ),
            format!(
                "(b) SAE steps only  {n_rows:>8} rows in {sae_s:>6.1} s: {:>7.0} rows/s",
                n / sae_s
            ),
            format!(
                "(c) streaming       {n_rows:>8} rows in {stream_s:>6.1} s: {:>7.0} rows/s",
                n / stream_s
            ),
            format!(
                "predicted: overlapped (max of the times) {overlap:.0} rows/s, one after the other (sum) {sequential:.0} rows/s; measured {:.0} rows/s",
                n / stream_s
            ),
        ]
        .join("\n")
    })?;
    Ok(ExitCode::SUCCESS)
}
