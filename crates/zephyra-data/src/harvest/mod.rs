//! Harvesting: contexts → model forward (stopping at the deepest hook) → exclusion → shards.
//!
//! Three threads overlap: a *packer* thread reads and tokenizes the corpus into shuffled contexts (a
//! bounded channel ahead of the model), the calling thread runs the forward pass over batches of contexts,
//! and a *writer* thread applies the exclusion rule, converts, checksums and writes each shard and rewrites
//! the manifests. At most two shards of activations are in memory at once (one being filled, one being
//! written).
//!
//! Resuming: the context order is a pure function of the corpus, the tokenizer and the options, so a rerun
//! with the same options skips (re-packs without running the model) the contexts of the shards already
//! listed in the manifests and continues with the next one.
//!
//! Files: `rows.rs` ([`Activations`], the pipeline iterator every consumer runs on, and its [`ShardRows`]),
//! `threads.rs` (packer, writer), `resume.rs` (reopening a store, undoing a harvest that failed before its
//! first shard), `batch.rs` ([`capture_rows`]), `stream.rs` ([`StreamFeed`]).
//!
//! [`StreamFeed`] runs the same iterator on a background thread without writing anything and hands the
//! rows of each shard to a [`ShuffleReader`](crate::store::ShuffleReader) — one per dictionary when several
//! are trained from one forward pass: training straight from the model.
//!
//! Several hooks read together share one exclusion verdict per row ([`crate::exclude::apply_joint`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

use zephyra_lm::{HookPoint, Llama, Precision};

use crate::corpus::Corpus;
use crate::error::{DataError, Result};
use crate::exclude::ExclusionRule;
use crate::pack::{TextEncoder, DEFAULT_SHUFFLE_CONTEXTS};
use crate::store::manifest::{
    Accumulator, CorpusInfo, ExclusionInfo, Manifest, ModelInfo, Stats, TokenizerInfo, FORMAT,
};
use crate::store::StoreDtype;

mod batch;
mod resume;
mod rows;
mod stream;
mod threads;

pub(crate) use resume::prepare_store;
use threads::writer_thread;

pub use crate::store::{shards_per_window, store_dirs};
pub use batch::capture_rows;
pub use rows::{Activations, RowPlan, ShardRows, SpecialTokens};
pub use stream::{stream_tokens, StreamFeed};
pub use threads::Packer;

/// Default contexts per shard (32,768 rows at ctx 128: 75 MB of float32 at d = 576).
pub const DEFAULT_CONTEXTS_PER_SHARD: usize = 256;
/// Default contexts per forward pass.
pub const DEFAULT_BATCH_CONTEXTS: usize = 8;

/// What the harvester needs from a model.
pub trait HookModel: Send + Sync {
    /// Residual width.
    fn d_model(&self) -> usize;
    /// Blocks.
    fn n_layers(&self) -> usize;
    /// Maximum context length.
    fn context_length(&self) -> usize;
    /// Number format of the linear layers (recorded in the manifest).
    fn precision(&self) -> Precision {
        Precision::F32
    }
    /// Runs `contexts` (all the same length) and returns, for each of `hooks` in order, the activations
    /// `[batch × seq × d_model]` row-major. Stops after the deepest hook.
    fn capture(&self, contexts: &[Vec<u32>], hooks: &[HookPoint]) -> Result<Vec<Vec<f32>>>;
}

impl<T: HookModel + ?Sized> HookModel for &T {
    fn d_model(&self) -> usize {
        (**self).d_model()
    }

    fn n_layers(&self) -> usize {
        (**self).n_layers()
    }

    fn context_length(&self) -> usize {
        (**self).context_length()
    }

    fn precision(&self) -> Precision {
        (**self).precision()
    }

    fn capture(&self, contexts: &[Vec<u32>], hooks: &[HookPoint]) -> Result<Vec<Vec<f32>>> {
        (**self).capture(contexts, hooks)
    }
}

/// `inner` with its [`HookModel::capture`] replaced by `capture(&inner, contexts, hooks)`, its shape (width,
/// blocks, context length, precision) unchanged: a model that runs only some batches (sharded harvesting),
/// stops when its caller is interrupted, or fails on cue (tests).
pub struct WithCapture<M: ?Sized, F> {
    inner: Arc<M>,
    capture: F,
}

impl<M, F> WithCapture<M, F>
where
    M: HookModel + ?Sized,
    F: Fn(&M, &[Vec<u32>], &[HookPoint]) -> Result<Vec<Vec<f32>>> + Send + Sync,
{
    /// Wraps `inner`.
    pub fn new(inner: Arc<M>, capture: F) -> Self {
        Self { inner, capture }
    }
}

impl<M, F> HookModel for WithCapture<M, F>
where
    M: HookModel + ?Sized,
    F: Fn(&M, &[Vec<u32>], &[HookPoint]) -> Result<Vec<Vec<f32>>> + Send + Sync,
{
    fn d_model(&self) -> usize {
        self.inner.d_model()
    }
    fn n_layers(&self) -> usize {
        self.inner.n_layers()
    }
    fn context_length(&self) -> usize {
        self.inner.context_length()
    }
    fn precision(&self) -> Precision {
        self.inner.precision()
    }
    fn capture(&self, contexts: &[Vec<u32>], hooks: &[HookPoint]) -> Result<Vec<Vec<f32>>> {
        (self.capture)(&self.inner, contexts, hooks)
    }
}

impl HookModel for Llama {
    fn d_model(&self) -> usize {
        self.config().d_model
    }

    fn n_layers(&self) -> usize {
        self.config().n_layers
    }

    fn context_length(&self) -> usize {
        self.config().context_length
    }

    fn precision(&self) -> Precision {
        Llama::precision(self)
    }

    fn capture(&self, contexts: &[Vec<u32>], hooks: &[HookPoint]) -> Result<Vec<Vec<f32>>> {
        capture_rows(self, contexts, hooks)
    }
}

/// Describes `model_path` for manifests: path and sha256 of the file, plus the model's shape.
pub fn model_info(model_path: &Path, model: &dyn HookModel) -> Result<ModelInfo> {
    Ok(ModelInfo {
        path: model_path.display().to_string(),
        sha256: zephyra_io::sha256_file(model_path)?,
        n_layers: model.n_layers(),
        d_model: model.d_model(),
        context_length: model.context_length(),
        precision: model.precision(),
    })
}

/// Everything that determines a harvest's output.
#[derive(Debug, Clone, PartialEq)]
pub struct HarvestConfig {
    /// Hook points (one store each).
    pub hooks: Vec<HookPoint>,
    /// Tokens per context.
    pub ctx: usize,
    /// Tokens to run through the model: `ceil(n_tokens / ctx)` contexts (fewer if the corpus runs out).
    pub n_tokens: u64,
    /// Shuffle seed (file order and context order).
    pub seed: u64,
    /// Context shuffle buffer.
    pub shuffle_contexts: usize,
    /// Contexts per shard.
    pub contexts_per_shard: usize,
    /// Contexts per forward pass.
    pub batch_contexts: usize,
    /// Stored element type.
    pub dtype: StoreDtype,
    /// Exclusion rule.
    pub rule: ExclusionRule,
}

impl HarvestConfig {
    /// A harvest of `n_tokens` tokens in contexts of `ctx` at `hooks`, with the defaults: seed 0, a
    /// context shuffle of [`DEFAULT_SHUFFLE_CONTEXTS`], [`DEFAULT_CONTEXTS_PER_SHARD`] contexts per shard,
    /// [`DEFAULT_BATCH_CONTEXTS`] per forward pass, float32, the default [`ExclusionRule`]. Change them
    /// with struct update syntax: `HarvestConfig { seed: 3, ..HarvestConfig::new(hooks, 128, 1 << 20) }`.
    pub fn new(hooks: Vec<HookPoint>, ctx: usize, n_tokens: u64) -> Self {
        Self {
            hooks,
            ctx,
            n_tokens,
            seed: 0,
            shuffle_contexts: DEFAULT_SHUFFLE_CONTEXTS,
            contexts_per_shard: DEFAULT_CONTEXTS_PER_SHARD,
            batch_contexts: DEFAULT_BATCH_CONTEXTS,
            dtype: StoreDtype::Float32,
            rule: ExclusionRule::default(),
        }
    }

    /// Contexts asked for.
    pub fn target_contexts(&self) -> u64 {
        self.n_tokens.div_ceil(self.ctx.max(1) as u64)
    }

    fn validate(&self, model: &dyn HookModel) -> Result<()> {
        if self.ctx > model.context_length() {
            return Err(DataError::CtxTooLarge {
                ctx: self.ctx,
                max_ctx: model.context_length(),
            });
        }
        if self.ctx < 2 {
            return Err(DataError::InvalidOption {
                name: "--ctx",
                value: self.ctx.to_string(),
                reason: "use at least 2".into(),
            });
        }
        if self.hooks.is_empty() {
            return Err(DataError::InvalidOption {
                name: "--hook",
                value: String::new(),
                reason: "give at least one hook point".into(),
            });
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if self.hooks[..i].contains(h) {
                return Err(DataError::InvalidOption {
                    name: "--hook",
                    value: h.to_string(),
                    reason: "it is given twice; name each hook point once".into(),
                });
            }
            if h.layer().is_some_and(|l| l >= model.n_layers()) {
                return Err(DataError::InvalidOption {
                    name: "--hook",
                    value: h.to_string(),
                    reason: format!(
                        "the model has {} blocks (0..={})",
                        model.n_layers(),
                        model.n_layers().saturating_sub(1)
                    ),
                });
            }
        }
        if self.n_tokens == 0 {
            return Err(DataError::InvalidOption {
                name: "--tokens",
                value: "0".into(),
                reason: "ask for at least one context".into(),
            });
        }
        if self.contexts_per_shard == 0 || self.batch_contexts == 0 {
            return Err(DataError::InvalidOption {
                name: "--shard-contexts/--batch",
                value: format!("{}/{}", self.contexts_per_shard, self.batch_contexts),
                reason: "both must be at least 1".into(),
            });
        }
        if let Some(m) = self.rule.max_norm_multiple {
            if !(m.is_finite() && m > 0.0) {
                return Err(DataError::InvalidOption {
                    name: "--max-norm-multiple",
                    value: m.to_string(),
                    reason: "use a positive number".into(),
                });
            }
        }
        Ok(())
    }
}

/// Progress of a harvest, reported after every forward batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Tokens run through the model in this session (resumed shards not counted).
    pub tokens_done: u64,
    /// Tokens this session will run at most.
    pub tokens_total: u64,
    /// Shards completely written (all hooks), resumed ones included.
    pub shards_written: usize,
}

/// What a finished harvest did.
#[derive(Debug, Clone, PartialEq)]
pub struct HarvestSummary {
    /// One store directory per hook, in `hooks` order.
    pub stores: Vec<PathBuf>,
    /// Contexts in the stores.
    pub n_contexts: u64,
    /// Rows kept in each store.
    pub n_rows: Vec<u64>,
    /// Tokens run through the model by this session.
    pub tokens_run: u64,
    /// Shards found complete and skipped.
    pub resumed_shards: usize,
    /// The corpus ran out before the token budget.
    pub corpus_exhausted: bool,
    /// Wall time of this session.
    pub seconds: f64,
}

/// Inputs shared by [`harvest`] and [`StreamFeed`].
#[derive(Clone)]
pub struct Pipeline {
    /// The model.
    pub model: Arc<dyn HookModel>,
    /// The tokenizer.
    pub encoder: Arc<dyn TextEncoder>,
    /// The corpus (inputs in reading order; [`Pipeline::contexts`] shuffles them by the seed).
    pub corpus: Corpus,
    /// Options.
    pub config: HarvestConfig,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("corpus", &self.corpus.description())
            .field("config", &self.config)
            .finish()
    }
}

/// Harvests `pipeline` into stores under `out` (see [`store_dirs`]), resuming an interrupted harvest there.
///
/// A harvest that fails before its first shard is written removes the directories and manifests it
/// created, leaving `out` as it found it; one that fails later keeps its complete shards, and the same
/// command resumes it.
pub fn harvest(
    pipeline: Pipeline,
    model: ModelInfo,
    vocab_size: usize,
    out: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<HarvestSummary> {
    let started = Instant::now();
    let cfg = pipeline.config.clone();
    let dirs = store_dirs(out, &cfg.hooks);
    let before = resume::Before::record(out, &dirs);
    cfg.validate(pipeline.model.as_ref())?;
    let d = pipeline.model.d_model();
    let template = |hook: HookPoint| Manifest {
        format: FORMAT.to_string(),
        version: 1,
        complete: false,
        model: model.clone(),
        hook: hook.to_string(),
        d,
        ctx: cfg.ctx,
        dtype: cfg.dtype,
        seed: cfg.seed,
        shuffle_contexts: cfg.shuffle_contexts,
        contexts_per_shard: cfg.contexts_per_shard,
        target_contexts: cfg.target_contexts(),
        corpus: CorpusInfo {
            description: pipeline.corpus.description().to_string(),
            text_field: pipeline.corpus.text_field().to_string(),
            n_inputs: pipeline.corpus.inputs().len(),
            read: None,
        },
        tokenizer: TokenizerInfo {
            eos_token_id: pipeline.encoder.eos_token_id(),
            vocab_size,
            context_prefix: pipeline.encoder.context_prefix(),
        },
        exclusion: ExclusionInfo::fresh(cfg.rule),
        n_contexts: 0,
        n_rows: 0,
        stats: Stats::default(),
        accumulator: Accumulator::default(),
        shards: Vec::new(),
    };
    // Open or create each store, checking that a store being resumed was made with the same settings.
    let mut manifests = Vec::with_capacity(dirs.len());
    for (dir, &hook) in dirs.iter().zip(&cfg.hooks) {
        manifests.push(prepare_store(dir, template(hook))?);
    }
    if manifests.iter().all(|m| m.complete) {
        return Err(DataError::StoreComplete {
            dir: out.to_path_buf(),
            n_tokens: manifests[0].n_contexts.saturating_mul(cfg.ctx as u64),
        });
    }
    let start_shard = manifests.iter().map(|m| m.shards.len()).min().unwrap_or(0);
    if start_shard > 0 {
        tracing::info!(start_shard, "resuming an interrupted harvest");
    }
    let target = cfg.target_contexts();
    let tokens_total =
        target.saturating_sub((start_shard * cfg.contexts_per_shard) as u64) * cfg.ctx as u64;
    let shards_written = Arc::new(AtomicUsize::new(start_shard));

    let corpus_description = pipeline.corpus.description().to_string();
    let mut producer = Activations::start(pipeline, start_shard)?;
    let (job_tx, job_rx) = sync_channel::<ShardRows>(1);
    let writer = {
        let dirs = dirs.clone();
        let shards_written = shards_written.clone();
        let cfg = cfg.clone();
        threads::spawn("writer", "writer", move || {
            writer_thread(job_rx, dirs, manifests, cfg, d, shards_written)
        })?
    };
    let mut tokens_done = 0u64;
    let produced: Result<()> = (|| {
        loop {
            let shard = producer.next_shard(&mut |n| {
                tokens_done += n;
                progress(&Progress {
                    tokens_done,
                    tokens_total,
                    shards_written: shards_written.load(Ordering::Relaxed),
                });
            })?;
            match shard {
                Some(s) => {
                    if job_tx.send(s).is_err() {
                        return Ok(()); // the writer failed: its error is reported below
                    }
                }
                None => return Ok(()),
            }
        }
    })();
    drop(job_tx);
    let written = writer
        .join()
        .map_err(|_| DataError::ThreadStopped { thread: "writer" })?;
    produced?;
    let mut manifests = written?;
    let n_contexts = manifests[0].n_contexts;
    if n_contexts == 0 {
        return Err(DataError::EmptyCorpus {
            corpus: corpus_description,
            n_documents: producer.read_stats().map_or(0, |s| s.n_documents),
        });
    }
    let corpus_exhausted = n_contexts < target;
    if corpus_exhausted {
        tracing::warn!(
            n_contexts,
            target,
            "the corpus ran out before --tokens was reached"
        );
    }
    for (m, dir) in manifests.iter_mut().zip(&dirs) {
        m.complete = true;
        m.corpus.read = producer.read_stats().cloned();
        m.write(dir)?;
    }
    progress(&Progress {
        tokens_done,
        tokens_total,
        shards_written: shards_written.load(Ordering::Relaxed),
    });
    before.keep();
    Ok(HarvestSummary {
        stores: dirs,
        n_contexts,
        n_rows: manifests.iter().map(|m| m.n_rows).collect(),
        tokens_run: tokens_done,
        resumed_shards: start_shard,
        corpus_exhausted,
        seconds: started.elapsed().as_secs_f64(),
    })
}
