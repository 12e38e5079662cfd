//! `zephyra train --model M --hook A --hook B … --out DIR`: one SAE per hook from one forward pass per
//! batch; `--transcoder --layers L [--skip]`: one transcoder per layer (rows `[ln2.hook_normalized |
//! hook_mlp_out]`). `DIR/multi.json` lists the hooks harvested and the runs; `DIR/<hook>/` (or
//! `DIR/layer-{l}/`) is each dictionary's normal run directory (checkpoint, metrics, weights, summary).
//! `--resume DIR` continues them all. The stepping lives in
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

/// `multi.json`: the hooks harvested (TransformerLens names) and the dictionaries trained on them.
#[derive(Debug, Serialize, Deserialize)]
struct MultiRecord {
    hooks: Vec<String>,
    runs: Vec<RunRecord>,
}

/// One dictionary: its run directory (inside the multi run's) and the hooks (indices into
/// [`MultiRecord::hooks`]) whose rows it reads side by side (`[input, target]` for a transcoder).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    dir: String,
    hooks: Vec<usize>,
}

/// Whether this `train` trains several dictionaries: several `--hook`, or resuming such a run.
pub(super) fn is_multi(args: &Args) -> bool {
    args.source.hook.len() > 1
        || args.transcoder.per_layer
        || args
            .resume
            .as_ref()
            .is_some_and(|dir| dir.join(MULTI_FILE).is_file())
}

/// Whether the multi-dictionary run in `dir` has a checkpoint to resume (then a failure keeps it).
pub(super) fn has_checkpoint(dir: &Path) -> bool {
    read_record(dir).is_ok_and(|r| {
        r.runs
            .iter()
            .any(|run| dir.join(&run.dir).join(STATE_FILE).exists())
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
    let n = record.hooks.len();
    if record.runs.is_empty() || record.runs.iter().any(|r| r.hooks.iter().any(|&h| h >= n)) {
        bail!(
            "{} is damaged: its runs do not name its hooks",
            path.display()
        );
    }
    Ok(record)
}

/// The model of `source` (`--model`), loaded.
fn model_of(source: &SourceArgs) -> anyhow::Result<Loaded> {
    if source.acts.is_some() {
        bail!("several dictionaries train from the model on the fly: drop --acts (a store holds one hook)");
    }
    let Some(model) = &source.model else {
        bail!("several --hook (or --transcoder) need --model MODEL to harvest on the fly")
    };
    let (llama, tokenizer, _) = load_model(model, source.precision.precision)?;
    Ok((llama, tokenizer))
}

/// The dictionaries to start or resume and their sources, in the same order.
type Opened = (Vec<Member>, Vec<Box<dyn ActivationSource>>);

type Loaded = (
    std::sync::Arc<zephyra_lm::Llama>,
    std::sync::Arc<zephyra_lm::Tokenizer>,
);

/// One source per run from one forward pass over `hooks`, for `tokens` training rows.
fn open_sources(
    (llama, tokenizer): Loaded,
    source: &SourceArgs,
    hooks: Vec<HookPoint>,
    runs: &[RunRecord],
    seed: u64,
    tokens: u64,
) -> anyhow::Result<Vec<Box<dyn ActivationSource>>> {
    let corpus = load_corpus(&source.corpus.data, &source.corpus.text_field)?;
    let h = &source.harvest;
    let config = HarvestConfig {
        seed,
        contexts_per_shard: h.shard_contexts,
        batch_contexts: h.batch.batch_contexts,
        rule: h.exclusion.rule(),
        ..HarvestConfig::new(
            hooks,
            h.ctx,
            stream_tokens(tokens, h.ctx, h.shard_contexts, source.shuffle_buffer),
        )
    };
    let dictionaries = runs.iter().map(|r| r.hooks.clone()).collect();
    let sources = BufferedSource::harvesting_many(
        llama,
        tokenizer,
        corpus,
        config,
        dictionaries,
        source.shuffle_buffer,
    )
    .context("starting on-the-fly harvesting")?;
    // A corpus smaller than --tokens is read again rather than ending the run early.
    Ok(sources
        .into_iter()
        .map(|s| Box::new(s.repeat_corpus()) as Box<dyn ActivationSource>)
        .collect())
}

/// The hooks to harvest and the runs: one SAE per `--hook`, or one transcoder per layer of `--layers`.
fn plan(args: &Args, n_layers: usize) -> anyhow::Result<(Vec<HookPoint>, Vec<RunRecord>)> {
    if let (true, Some(layers)) = (args.transcoder.per_layer, &args.transcoder.layers) {
        let layers = layers.resolve(n_layers)?;
        let hooks = layers
            .iter()
            .flat_map(|&l| [HookPoint::Ln2Normalized(l), HookPoint::MlpOut(l)])
            .collect();
        let runs = layers
            .iter()
            .enumerate()
            .map(|(i, l)| RunRecord {
                dir: format!("layer-{l}"),
                hooks: vec![2 * i, 2 * i + 1],
            })
            .collect();
        return Ok((hooks, runs));
    }
    let runs = args
        .source
        .hook
        .iter()
        .enumerate()
        .map(|(i, h)| RunRecord {
            dir: h.to_string(),
            hooks: vec![i],
        })
        .collect();
    Ok((args.source.hook.clone(), runs))
}

/// A new run: one configuration per dictionary, `DIR/multi.json` written.
fn start(args: &Args, out: &Path) -> anyhow::Result<Opened> {
    let seed = args.seed.unwrap_or(0);
    let tokens = args.tokens.unwrap_or(2_000_000);
    let batch = args.batch.unwrap_or(4096);
    let loaded = model_of(&args.source)?;
    let (n_layers, d_model) = (loaded.0.config().n_layers, loaded.0.config().d_model);
    let (hooks, runs) = plan(args, n_layers)?;
    // What decides the rows, recorded in every checkpoint: the source flags, the hooks harvested.
    let mut data = stream_options(&args.source);
    for (flag, value) in data.iter_mut() {
        if *flag == "--hook" {
            *value = hooks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
        }
    }
    // On the fly, the rows of the scale and b_dec estimate must exist too (as in a large enough store).
    let init_rows = TrainConfig::new(1, 2, zephyra_sae::Architecture::Relu, 1, 1)?.init_rows;
    let sources = open_sources(
        loaded,
        &args.source,
        hooks.clone(),
        &runs,
        seed,
        tokens.max(init_rows as u64),
    )?;
    let model_name = args.source.model.as_deref().and_then(|m| {
        zephyra_lm::fetch::resolve_model(m)
            .ok()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    let d_sae = args.arch.expansion() * d_model;
    let arch = args.arch.architecture(d_sae)?;
    let mut members = Vec::with_capacity(runs.len());
    for run in &runs {
        let sae = if args.transcoder.per_layer {
            SaeConfig::transcoder(d_model, d_model, d_sae, arch, args.transcoder.skip)
        } else {
            SaeConfig::new(d_model, d_sae, arch)
        }
        .context("--arch/--k/--expansion")?;
        let mut cfg = TrainConfig::for_sae(sae, batch, tokens);
        cfg.checkpoint_every_tokens = (tokens / 10).max(1);
        args.apply(&mut cfg)?;
        for (flag, value) in &data {
            cfg.data.set(flag, value);
        }
        let meta = &mut cfg.sae.metadata;
        meta.hook_name = Some(hooks[run.hooks[0]].to_string());
        meta.hook_name_out = run.hooks.get(1).map(|&h| hooks[h].to_string());
        meta.context_size = Some(args.source.harvest.ctx);
        meta.model_name.clone_from(&model_name);
        members.push(Member::Start(cfg, out.join(&run.dir)));
    }
    let record = MultiRecord {
        hooks: hooks.iter().map(ToString::to_string).collect(),
        runs,
    };
    zephyra_io::write_atomic(
        &out.join(MULTI_FILE),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    Ok((members, sources))
}

/// A resumed run: each dictionary's flags compared with its checkpoint, the recorded source reopened.
fn resume(args: &Args, dir: &Path) -> anyhow::Result<Opened> {
    let record = read_record(dir)?;
    let mut members = Vec::with_capacity(record.runs.len());
    let mut recorded = None;
    for r in &record.runs {
        let (run, name) = (dir.join(&r.dir), &r.dir);
        let state = TrainingState::load(&run)
            .with_context(|| format!("the checkpoint of `{name}` in {}", run.display()))?;
        let saved = state.meta.config.clone();
        let mut expected = saved.clone();
        args.apply_shape(&mut expected);
        args.apply(&mut expected)?;
        for (flag, value) in given_source_options(&args.source) {
            expected.data.set(flag, value);
        }
        zephyra_sae::train::check_resume(&saved, &expected)
            .with_context(|| format!("resuming `{name}`"))?;
        if recorded.is_none() {
            recorded = Some(recorded_source_args(&args.source.args, &saved.data)?);
        }
        members.push(Member::Resume(run, Some(expected)));
    }
    let Some((recorded, Member::Resume(_, Some(cfg)))) = recorded.zip(members.first()) else {
        bail!(
            "{} lists no runs: nothing to resume",
            dir.join(MULTI_FILE).display()
        );
    };
    let hooks = record
        .hooks
        .iter()
        .map(|h| h.parse::<HookPoint>())
        .collect::<Result<Vec<_>, _>>()?;
    let sources = open_sources(
        model_of(&recorded)?,
        &recorded,
        hooks,
        &record.runs,
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
    let t = session.times();
    let n = outcomes.len();
    tracing::info!(
        dictionaries = n,
        steps = t.steps,
        init_s = t.init_s,
        rows_s = t.rows_s,
        forward_backward_s = t.forward_backward_s,
        reduce_s = t.reduce_s,
        update_s = t.update_s,
        checkpoint_s = t.checkpoint_s,
        train_step_ms_per_dictionary = 1e3 * t.train_step_s(n),
        "where the time went (seconds; rows: waiting for the model and the shuffle copies)"
    );
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
