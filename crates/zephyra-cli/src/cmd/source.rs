//! Where `train` gets its activations: a `.npy` file, an activation store, or the model on the fly.
//!
//! `train` flattens [`SourceArgs`] into its own arguments and calls [`open`]. Three kinds of source:
//! - `--acts FILE.npy`: float32 rows (`zephyra_sae::npy::NpySource`);
//! - `--acts DIR`: an activation store written by `zephyra harvest` (shuffle-buffer reader, resumable);
//! - `--model M --hook H [--data …]`: harvesting on a background thread straight into the shuffle buffer,
//!   no disk; the model forward and the SAE steps run on separate threads and overlap.
//!
//! For the same options and seed, the on-the-fly source serves exactly the rows, in exactly the order, that
//! a store made by `zephyra harvest` with the same options (and at least [`stream_tokens`] tokens) and read
//! with the same `--shuffle-buffer` would: the same SAE comes out (`tests/stream_cli.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use zephyra_data::corpus::CorpusOptions;
use zephyra_data::harvest::{
    shards_per_window, HarvestConfig, Pipeline, StreamFeed, DEFAULT_BATCH_CONTEXTS,
    DEFAULT_CONTEXTS_PER_SHARD,
};
use zephyra_data::pack::DEFAULT_SHUFFLE_CONTEXTS;
use zephyra_data::store::{ReaderCursor, StoreDtype};
use zephyra_data::{ActivationStore, Corpus, ExclusionRule, ShuffleReader};
use zephyra_lm::HookPoint;
use zephyra_sae::npy::{NpyOrder, NpySource};
use zephyra_sae::train::ActivationSource;
use zephyra_sae::SaeError;

/// Default shuffle buffer (rows) of the store and on-the-fly readers.
pub const DEFAULT_SHUFFLE_BUFFER: usize = 1 << 18;

/// Options choosing and shaping the activations `train` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Activations: a float32 `.npy` [n, d_in] or an activation store directory made by `zephyra harvest`.
    #[arg(long, value_name = "PATH")]
    pub acts: Option<PathBuf>,
    /// Harvest on the fly from this model (`smollm2` or a .gguf path) instead of reading --acts. With --acts
    /// DIR it is checked against the store's model instead.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Corpus for on-the-fly harvesting: files, directories, globs, `-` for stdin (repeatable)
    /// [default: the Rust documentation shipped with the toolchain].
    #[arg(long, value_name = "PATH")]
    pub data: Vec<String>,
    /// Hook point to harvest on the fly (with --acts DIR: checked against the store's hook).
    #[arg(long, value_name = "HOOK")]
    pub hook: Option<HookPoint>,
    /// Tokens per context for on-the-fly harvesting.
    #[arg(long, default_value_t = 128)]
    pub ctx: usize,
    /// JSONL field / parquet column holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Keep every row (attention sinks, position 0, special tokens) when harvesting on the fly.
    #[arg(long)]
    pub keep_sinks: bool,
    /// Drop rows whose norm exceeds this multiple of their shard's median norm (on the fly).
    #[arg(long, default_value_t = zephyra_data::exclude::DEFAULT_MAX_NORM_MULTIPLE)]
    pub max_norm_multiple: f32,
    /// Rows held by the shuffle buffer of store and on-the-fly sources (bounds their memory).
    #[arg(long, default_value_t = DEFAULT_SHUFFLE_BUFFER, value_name = "ROWS")]
    pub shuffle_buffer: usize,
    /// Contexts per shard when harvesting on the fly (match the store's to reproduce it).
    #[arg(long, default_value_t = DEFAULT_CONTEXTS_PER_SHARD, value_name = "N")]
    pub shard_contexts: usize,
    /// Contexts per forward pass when harvesting on the fly.
    #[arg(long, default_value_t = DEFAULT_BATCH_CONTEXTS, value_name = "N")]
    pub harvest_batch: usize,
}

/// What `open` needs from the trainer's own options.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Seed of the row order (store and on-the-fly shuffles; `.npy` permutations).
    pub seed: u64,
    /// Rows the trainer will read: on the fly, enough tokens are harvested to produce them.
    pub tokens: u64,
    /// Serve the data again when it runs out (store and `.npy`; the on-the-fly source is single-pass).
    pub repeat: bool,
    /// Shuffle rows (`.npy`; stores and on-the-fly sources are always shuffled by their buffer).
    pub shuffle: bool,
}

/// The corpus of `--data` (or the default Rust documentation).
pub fn load_corpus(data: &[String], text_field: &str) -> anyhow::Result<Corpus> {
    if data.is_empty() {
        return Ok(Corpus::default_rust_docs()?);
    }
    Ok(Corpus::from_specs(
        data,
        CorpusOptions {
            text_field: text_field.to_string(),
        },
    )?)
}

/// Opens the source the arguments describe.
pub fn open(args: &SourceArgs, opts: &OpenOptions) -> anyhow::Result<Box<dyn ActivationSource>> {
    match (&args.acts, &args.model) {
        (Some(acts), model) => {
            if !args.data.is_empty() {
                bail!("--data is for harvesting on the fly with --model; it cannot be combined with --acts");
            }
            if !acts.exists() {
                bail!("--acts {}: no such file or directory", acts.display());
            }
            if acts.is_dir() {
                let store = ActivationStore::open(acts).with_context(|| format!("opening activation store {}", acts.display()))?;
                check_store_matches(&store, model.as_deref(), args.hook)?;
                Ok(Box::new(BufferedSource::store(store, args.shuffle_buffer, opts)))
            } else {
                let order = NpyOrder { shuffle: opts.shuffle, repeat: opts.repeat, seed: opts.seed };
                Ok(Box::new(NpySource::open(acts, order).with_context(|| format!("opening activations {}", acts.display()))?))
            }
        }
        (None, Some(model)) => Ok(Box::new(open_stream(args, model, opts)?)),
        (None, None) => bail!("give --acts PATH (a .npy file or a `zephyra harvest` store) or --model MODEL --hook HOOK [--data …] to harvest on the fly"),
    }
}

/// With `--acts DIR --model M [--hook H]`: the store must come from that model (by sha256) and hook.
fn check_store_matches(
    store: &ActivationStore,
    model: Option<&str>,
    hook: Option<HookPoint>,
) -> anyhow::Result<()> {
    let m = store.manifest();
    if let Some(h) = hook {
        if h.to_string() != m.hook {
            bail!(
                "the activation store {} holds `{}` activations, not `{h}`: harvest `{h}` first (`zephyra harvest --hook {h} …`) or drop --hook",
                store.dir().display(),
                m.hook
            );
        }
    }
    if let Some(spec) = model {
        let path = zephyra_lm::fetch::resolve_model(spec)
            .with_context(|| format!("resolving --model {spec}"))?;
        let sha = zephyra_io::sha256_file(&path)?;
        if sha != m.model.sha256 {
            bail!(
                "the activation store {} was harvested from {} (sha256 {}), not from --model {} (sha256 {sha}): harvest again with this model or drop --model",
                store.dir().display(),
                m.model.path,
                m.model.sha256,
                path.display()
            );
        }
    }
    Ok(())
}

fn source_err(e: zephyra_data::DataError) -> SaeError {
    SaeError::Source(e.to_string())
}

fn parse_cursor(cursor: &serde_json::Value, kind: &str) -> Result<ReaderCursor, SaeError> {
    if cursor.get("kind").and_then(|k| k.as_str()) != Some(kind) {
        return Err(SaeError::Source(format!("checkpoint cursor {cursor} was not written by a `{kind}` source: resume with the same activations")));
    }
    serde_json::from_value(cursor.clone())
        .map_err(|e| SaeError::Source(format!("bad {kind} cursor {cursor}: {e}")))
}

/// Rows served through a shuffle buffer: from an activation store, or harvested on the fly by a background
/// thread. Checkpoint cursors name the kind (`store`, with the store's path, or `stream`) and the reader's
/// `(epoch, window, offset)`.
pub struct BufferedSource {
    reader: ShuffleReader,
    kind: &'static str,
    dir: Option<PathBuf>,
}

impl BufferedSource {
    /// Reads `store` with a buffer of `buffer_rows` rows.
    pub fn store(store: ActivationStore, buffer_rows: usize, opts: &OpenOptions) -> Self {
        let dir = store.dir().to_path_buf();
        let epochs = if opts.repeat { None } else { Some(1) };
        Self {
            reader: ShuffleReader::from_store(store, buffer_rows, opts.seed, epochs),
            kind: "store",
            dir: Some(dir),
        }
    }

    /// Starts harvesting `pipeline` (one hook) on a background thread, two shards ahead of a shuffle
    /// buffer of `buffer_rows` rows shuffled from `seed` (a single pass).
    pub fn stream(pipeline: Pipeline, buffer_rows: usize, seed: u64) -> anyhow::Result<Self> {
        let feed =
            StreamFeed::new(pipeline, buffer_rows, 2).context("starting on-the-fly harvesting")?;
        Ok(Self {
            reader: ShuffleReader::new(Box::new(feed), seed, Some(1)),
            kind: "stream",
            dir: None,
        })
    }
}

impl ActivationSource for BufferedSource {
    fn d_in(&self) -> usize {
        self.reader.d()
    }

    fn next_rows(&mut self, out: &mut [f32]) -> Result<usize, SaeError> {
        self.reader.next_rows(out).map_err(source_err)
    }

    fn cursor(&self) -> serde_json::Value {
        let c = self.reader.cursor();
        let mut cursor = serde_json::json!({ "kind": self.kind, "epoch": c.epoch, "window": c.window, "offset": c.offset });
        if let Some(dir) = &self.dir {
            cursor["path"] = serde_json::json!(dir);
        }
        cursor
    }

    fn seek(&mut self, cursor: &serde_json::Value) -> Result<(), SaeError> {
        let c = parse_cursor(cursor, self.kind)?;
        self.reader.seek(c).map_err(source_err)
    }
}

/// The harvesting options shared by `harvest` and on-the-fly training.
#[allow(clippy::too_many_arguments)]
pub fn harvest_config(
    hooks: Vec<HookPoint>,
    ctx: usize,
    n_tokens: u64,
    seed: u64,
    contexts_per_shard: usize,
    batch_contexts: usize,
    dtype: StoreDtype,
    keep_sinks: bool,
    max_norm_multiple: f32,
) -> HarvestConfig {
    let rule = if keep_sinks {
        ExclusionRule::keep_all()
    } else {
        ExclusionRule {
            max_norm_multiple: Some(max_norm_multiple),
            ..ExclusionRule::default()
        }
    };
    HarvestConfig {
        hooks,
        ctx,
        n_tokens,
        seed,
        shuffle_contexts: DEFAULT_SHUFFLE_CONTEXTS,
        contexts_per_shard,
        batch_contexts,
        dtype,
        rule,
    }
}

/// Loads the model and tokenizer of `spec`; returns them with the GGUF path.
pub fn load_model(
    spec: &str,
) -> anyhow::Result<(Arc<zephyra_lm::Llama>, Arc<zephyra_lm::Tokenizer>, PathBuf)> {
    let path = zephyra_lm::fetch::resolve_model(spec)
        .with_context(|| format!("resolving --model {spec}"))?;
    let model = zephyra_lm::Llama::load_gguf(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = zephyra_lm::Tokenizer::from_gguf(&path)
        .with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    Ok((Arc::new(model), Arc::new(tokenizer), path))
}

/// Tokens to harvest on the fly for `rows` training rows: kept rows are fewer than tokens (position 0,
/// special tokens, sinks), so one shard more than `rows / (ctx − 1)` contexts, rounded up to whole windows
/// of the shuffle buffer. The reader shuffles a window as a whole, so a last window cut short would be
/// permuted differently from the same window of a store: with whole windows, training on the fly reads
/// exactly the rows, in the same order, as training from any store harvested with the same options and at
/// least this many tokens.
pub fn stream_tokens(rows: u64, ctx: usize, shard_contexts: usize, shuffle_buffer: usize) -> u64 {
    let ctx = ctx.max(2) as u64;
    let shard_contexts = shard_contexts.max(1) as u64;
    let contexts = rows.div_ceil(ctx - 1) + shard_contexts;
    let window_contexts = shards_per_window(shuffle_buffer, shard_contexts as usize, ctx as usize)
        as u64
        * shard_contexts;
    contexts.next_multiple_of(window_contexts) * ctx
}

fn open_stream(
    args: &SourceArgs,
    model: &str,
    opts: &OpenOptions,
) -> anyhow::Result<BufferedSource> {
    let Some(hook) = args.hook else {
        bail!(
            "--hook HOOK is required to harvest on the fly (e.g. --hook blocks.15.hook_resid_pre)"
        )
    };
    let (llama, tokenizer, _path) = load_model(model)?;
    let corpus = load_corpus(&args.data, &args.text_field)?;
    let n_tokens = stream_tokens(
        opts.tokens,
        args.ctx,
        args.shard_contexts,
        args.shuffle_buffer,
    );
    let config = harvest_config(
        vec![hook],
        args.ctx,
        n_tokens,
        opts.seed,
        args.shard_contexts,
        args.harvest_batch,
        StoreDtype::Float32,
        args.keep_sinks,
        args.max_norm_multiple,
    );
    let pipeline = Pipeline {
        model: llama,
        encoder: tokenizer,
        corpus,
        config,
    };
    BufferedSource::stream(pipeline, args.shuffle_buffer, opts.seed)
}
