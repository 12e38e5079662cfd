//! Where `train` gets its activations: a `.npy` file, an activation store, or the model on the fly.
//!
//! `train` flattens [`SourceArgs`] into its own arguments and calls [`open`]. Three kinds of source:
//! - `--acts FILE.npy`: float32 rows (`zephyra_sae::npy::NpySource`);
//! - `--acts DIR`: an activation store written by `zephyra harvest` (shuffle-buffer reader, resumable);
//! - `--model M --hook H [--data …]`: harvesting on a background thread straight into the shuffle buffer,
//!   no disk; the model forward and the SAE steps run on separate threads and overlap.
//!
//! The sources themselves live in `zephyra_data::source` (stores, on the fly) and `zephyra_sae::npy`; this
//! module maps the flags onto them. For the same options and seed, the on-the-fly source serves exactly
//! the rows, in exactly the order, that a store made by `zephyra harvest` with the same options (and at
//! least [`stream_tokens`] tokens) and read with the same `--shuffle-buffer` would: the same SAE comes out
//! (`tests/stream_cli.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use zephyra_data::corpus::CorpusOptions;
pub use zephyra_data::harvest::stream_tokens;
use zephyra_data::harvest::HarvestConfig;
pub use zephyra_data::source::BufferedSource;
use zephyra_data::{ActivationStore, Corpus};
use zephyra_lm::HookPoint;
use zephyra_sae::npy::{NpyOrder, NpySource};
use zephyra_sae::train::ActivationSource;

pub use crate::args::source::SourceArgs;

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
    let options = CorpusOptions {
        text_field: text_field.to_string(),
    };
    Ok(Corpus::from_specs_or_default(data, options)?)
}

/// Opens the source the arguments describe.
pub fn open(args: &SourceArgs, opts: &OpenOptions) -> anyhow::Result<Box<dyn ActivationSource>> {
    match (&args.acts, &args.model) {
        (Some(acts), model) => {
            if !args.corpus.data.is_empty() {
                bail!("--data is for harvesting on the fly with --model; it cannot be combined with --acts");
            }
            if !acts.exists() {
                bail!("--acts {}: no such file or directory", acts.display());
            }
            if acts.is_dir() {
                let store = ActivationStore::open(acts).with_context(|| format!("opening activation store {}", acts.display()))?;
                let hook = match args.hook[..] {
                    [] => None,
                    [hook] => Some(hook),
                    _ => bail!("several --hook train one SAE per hook from the model on the fly; a store holds one hook: drop --acts or give one --hook"),
                };
                check_store_matches(&store, model.as_deref(), hook)?;
                Ok(Box::new(BufferedSource::store(store, args.shuffle_buffer, opts.seed, opts.repeat)))
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

/// Loads the model (linear layers in `precision`) and tokenizer of `spec`; returns them with the GGUF
/// path.
pub fn load_model(
    spec: &str,
    precision: zephyra_lm::Precision,
) -> anyhow::Result<(Arc<zephyra_lm::Llama>, Arc<zephyra_lm::Tokenizer>, PathBuf)> {
    let path = zephyra_lm::fetch::resolve_model(spec)
        .with_context(|| format!("resolving --model {spec}"))?;
    let model = crate::args::model::load_llama(&path, precision)?;
    let tokenizer = zephyra_lm::Tokenizer::from_gguf(&path)
        .with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    Ok((Arc::new(model), Arc::new(tokenizer), path))
}

fn open_stream(
    args: &SourceArgs,
    model: &str,
    opts: &OpenOptions,
) -> anyhow::Result<BufferedSource> {
    let [hook] = args.hook[..] else {
        bail!(
            "one --hook HOOK is required to harvest on the fly (e.g. --hook blocks.15.hook_resid_pre)"
        )
    };
    let (llama, tokenizer, _path) = load_model(model, args.precision.precision)?;
    let corpus = load_corpus(&args.corpus.data, &args.corpus.text_field)?;
    let n_tokens = stream_tokens(
        opts.tokens,
        args.harvest.ctx,
        args.harvest.shard_contexts,
        args.shuffle_buffer,
    );
    let config = HarvestConfig {
        seed: opts.seed,
        contexts_per_shard: args.harvest.shard_contexts,
        batch_contexts: args.harvest.batch.batch_contexts,
        rule: args.harvest.exclusion.rule(),
        ..HarvestConfig::new(vec![hook], args.harvest.ctx, n_tokens)
    };
    // A corpus smaller than --tokens is read again rather than ending the run early.
    BufferedSource::harvesting(llama, tokenizer, corpus, config, args.shuffle_buffer)
        .map(BufferedSource::repeat_corpus)
        .context("starting on-the-fly harvesting")
}
