//! `zephyra train --model M --hook A --hook B … --out DIR`: one SAE per hook from one forward pass per
//! batch. `DIR/multi.json` lists the hooks; `DIR/<hook>/` is each SAE's normal run directory (checkpoint,
//! metrics, weights, summary). `--resume DIR` continues them all. The stepping lives in
//! `zephyra_sae::train::MultiSession`, the rows in `zephyra_data::source::BufferedSource::harvesting_many`;
//! this module maps the flags.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use zephyra_data::harvest::HarvestConfig;
use zephyra_data::source::BufferedSource;
use zephyra_data::ExclusionRule;
use zephyra_lm::HookPoint;
use zephyra_sae::checkpoint::{TrainingState, STATE_FILE};
use zephyra_sae::train::{
    ActivationSource, Collective, Member, MultiSession, Progress, SingleProcess, TrainConfig,
};
use zephyra_sae::SaeConfig;

use super::super::source::{load_corpus, load_model, stream_tokens, SourceArgs};
use super::super::Global;
use super::{given_source_options, recorded_source_args, stream_options, Args};

/// The file in a multi-dictionary run's directory that lists its dictionaries.
pub(super) const MULTI_FILE: &str = "multi.json";

/// `multi.json`: the hooks trained together (TransformerLens names), one run directory each, named by
/// the hook.
#[derive(Debug, Serialize, Deserialize)]
struct MultiRecord {
    hooks: Vec<String>,
}

/// Whether this `train` trains several dictionaries: several `--hook`, or resuming such a run.
pub(super) fn is_multi(args: &Args) -> bool {
    args.source.hook.len() > 1
        || args
            .resume
            .as_ref()
            .is_some_and(|dir| dir.join(MULTI_FILE).is_file())
}

/// Whether the multi-dictionary run in `dir` has a checkpoint to resume (then a failure keeps it).
pub(super) fn has_checkpoint(dir: &Path) -> bool {
    read_record(dir).is_ok_and(|r| {
        r.hooks
            .iter()
            .any(|h| dir.join(h).join(STATE_FILE).exists())
    })
}

fn read_record(dir: &Path) -> anyhow::Result<MultiRecord> {
    let path = dir.join(MULTI_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let record: MultiRecord =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for hook in &record.hooks {
        hook.parse::<HookPoint>()
            .with_context(|| format!("{} names hook `{hook}`", path.display()))?;
    }
    Ok(record)
}

/// One source per hook from one forward pass, for `tokens` training rows.
fn open_sources(
    source: &SourceArgs,
    seed: u64,
    tokens: u64,
) -> anyhow::Result<Vec<Box<dyn ActivationSource>>> {
    if source.acts.is_some() {
        bail!(
            "several --hook train from the model on the fly: drop --acts (a store holds one hook)"
        );
    }
    let Some(model) = &source.model else {
        bail!("several --hook need --model MODEL to harvest them on the fly")
    };
    let (llama, tokenizer, _) = load_model(model)?;
    let corpus = load_corpus(&source.corpus.data, &source.corpus.text_field)?;
    let h = &source.harvest;
    let config = HarvestConfig {
        seed,
        contexts_per_shard: h.shard_contexts,
        batch_contexts: h.batch.batch_contexts,
        rule: ExclusionRule::from_flags(h.keep_sinks, h.max_norm_multiple),
        ..HarvestConfig::new(
            source.hook.clone(),
            h.ctx,
            stream_tokens(tokens, h.ctx, h.shard_contexts, source.shuffle_buffer),
        )
    };
    let dictionaries = (0..source.hook.len()).map(|i| vec![i]).collect();
    let sources = BufferedSource::harvesting_many(
        llama,
        tokenizer,
        corpus,
        config,
        dictionaries,
        source.shuffle_buffer,
    )
    .context("starting on-the-fly harvesting")?;
    Ok(sources
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn ActivationSource>)
        .collect())
}

/// A new run: one configuration per hook, `DIR/multi.json` written.
fn start(args: &Args, out: &Path) -> anyhow::Result<(Vec<Member>, Vec<Box<dyn ActivationSource>>)> {
    let seed = args.seed.unwrap_or(0);
    let tokens = args.tokens.unwrap_or(2_000_000);
    let batch = args.batch.unwrap_or(4096);
    // On the fly, the rows of the scale and b_dec estimate must exist too (as in a large enough store).
    let init_rows = TrainConfig::new(1, 2, zephyra_sae::Architecture::Relu, 1, 1)?.init_rows;
    let sources = open_sources(&args.source, seed, tokens.max(init_rows as u64))?;
    let model_name = args.source.model.as_deref().and_then(|m| {
        zephyra_lm::fetch::resolve_model(m)
            .ok()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    let mut members = Vec::with_capacity(sources.len());
    for (hook, source) in args.source.hook.iter().zip(&sources) {
        let d_in = source.d_in();
        let sae = SaeConfig::new(d_in, args.arch.expansion() * d_in, args.arch.architecture())
            .context("--arch/--k/--expansion")?;
        let mut cfg = TrainConfig::for_sae(sae, batch, tokens);
        cfg.checkpoint_every_tokens = (tokens / 10).max(1);
        args.apply(&mut cfg)?;
        for (flag, value) in stream_options(&args.source) {
            cfg.data.set(flag, value);
        }
        let meta = &mut cfg.sae.metadata;
        meta.hook_name = Some(hook.to_string());
        meta.context_size = Some(args.source.harvest.ctx);
        meta.model_name.clone_from(&model_name);
        members.push(Member::Start(cfg, out.join(hook.to_string())));
    }
    let record = MultiRecord {
        hooks: args.source.hook.iter().map(ToString::to_string).collect(),
    };
    zephyra_io::write_atomic(
        &out.join(MULTI_FILE),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    Ok((members, sources))
}

/// A resumed run: each dictionary's flags compared with its checkpoint, the recorded source reopened.
fn resume(
    args: &Args,
    dir: &Path,
) -> anyhow::Result<(Vec<Member>, Vec<Box<dyn ActivationSource>>)> {
    let record = read_record(dir)?;
    let mut members = Vec::with_capacity(record.hooks.len());
    let mut recorded = None;
    for hook in &record.hooks {
        let run = dir.join(hook);
        let state = TrainingState::load(&run)
            .with_context(|| format!("the checkpoint of `{hook}` in {}", run.display()))?;
        let saved = state.meta.config.clone();
        let mut expected = saved.clone();
        args.apply_shape(&mut expected);
        args.apply(&mut expected)?;
        for (flag, value) in given_source_options(&args.source) {
            expected.data.set(flag, value);
        }
        zephyra_sae::train::check_resume(&saved, &expected)
            .with_context(|| format!("resuming `{hook}`"))?;
        if recorded.is_none() {
            recorded = Some(recorded_source_args(&args.source.args, &saved.data)?);
        }
        members.push(Member::Resume(run, Some(expected)));
    }
    let Some((recorded, Member::Resume(_, Some(cfg)))) = recorded.zip(members.first()) else {
        bail!(
            "{} lists no hooks: nothing to resume",
            dir.join(MULTI_FILE).display()
        );
    };
    let sources = open_sources(
        &recorded,
        cfg.seed,
        cfg.total_tokens.max(cfg.init_rows as u64),
    )?;
    Ok((members, sources))
}

/// Trains every dictionary; prints one line (or JSON object) per dictionary.
pub(super) fn run(args: &Args, global: &Global) -> anyhow::Result<ExitCode> {
    let (root, (members, mut sources)) = match (&args.resume, &args.out) {
        (Some(dir), _) => (dir.clone(), resume(args, dir)?),
        (None, Some(out)) => (out.clone(), start(args, out)?),
        (None, None) => bail!("--out DIR is required (where the SAEs and their checkpoints go)"),
    };
    let comms = (0..members.len())
        .map(|_| crate::dist::collective())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let comms = Mutex::new(comms);
    let comm = || -> Box<dyn Collective + Send> {
        comms
            .lock()
            .ok()
            .and_then(|mut c| c.pop())
            .unwrap_or_else(|| Box::new(SingleProcess))
    };
    let mut session = MultiSession::new(members, &mut sources, &comm)?;
    let first = &session.trainers()[0];
    let root_rank = first.collective().is_root();
    let bar = super::progress_bar(
        global,
        root_rank,
        first.config().total_steps(),
        first.step(),
    );
    let mut on_step = |i: usize, p: &Progress| {
        if i == 0 {
            super::show_progress(&bar, p);
        }
        if args.step_delay_ms > 0 && i == 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.step_delay_ms));
        }
        ControlFlow::Continue(())
    };
    let outcomes = session
        .run(&mut sources, &mut on_step)
        .context("training")?;
    bar.finish_and_clear();
    if !root_rank {
        return Ok(ExitCode::SUCCESS);
    }
    for (trainer, outcome) in session.trainers().iter().zip(&outcomes) {
        let dir: PathBuf = trainer.out_dir().unwrap_or(&root).to_path_buf();
        let mut summary = trainer.summary(outcome, None);
        summary.peak_rss_mb = crate::rss::peak_rss_mb();
        summary.write(&dir)?;
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            let cfg = trainer.config();
            println!(
                "trained {} (d_sae {}) on {} for {} steps, {} tokens at {:.0} tok/s → {}",
                cfg.sae.architecture,
                cfg.sae.d_sae,
                cfg.sae.metadata.hook_name.as_deref().unwrap_or("?"),
                outcome.steps,
                outcome.tokens,
                outcome.tokens_per_s,
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
