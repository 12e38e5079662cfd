//! `zephyra.harvest`: run a model over a corpus and keep the activations at a hook — in memory (a numpy
//! array, through the same on-the-fly source `zephyra train --model` reads) or as activation stores on
//! disk (the `zephyra harvest` pipeline, resumable).

use std::path::PathBuf;
use std::sync::Arc;

use numpy::PyArray2;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zephyra_data::corpus::CorpusOptions;
use zephyra_data::harvest::{
    self as pipeline, HarvestConfig, HookModel, Pipeline, WithCapture, DEFAULT_BATCH_CONTEXTS,
    DEFAULT_CONTEXTS_PER_SHARD,
};
use zephyra_data::source::BufferedSource;
use zephyra_data::store::StoreDtype;
use zephyra_data::{Corpus, DataError, ExclusionRule};
use zephyra_lm::{HookPoint, Llama, LmError};
use zephyra_sae::train::ActivationSource;

use crate::arrays;
use crate::errors::ToPy;
use crate::hooks::hook_point;
use crate::interrupt::{self, Cancel, INTERRUPTED};
use crate::model::PyModel;
use crate::SHUFFLE_BUFFER;

/// The model, refusing the next batch once the caller was interrupted (the harvest then stops the way it
/// stops on any error: complete shards kept, nothing half-written).
fn interruptible(llama: Arc<Llama>, cancel: Cancel) -> impl HookModel {
    WithCapture::new(
        llama,
        move |llama: &Llama, contexts: &[Vec<u32>], hooks: &[HookPoint]| {
            if cancel.is_set() {
                return Err(DataError::Lm(LmError::InvalidInput(INTERRUPTED.into())));
            }
            llama.capture(contexts, hooks)
        },
    )
}

/// The corpus of `data` (files, folders, globs; default: the Rust documentation), as the CLI's `--data`.
pub fn corpus(data: &[String], text_field: &str) -> PyResult<Corpus> {
    let options = CorpusOptions {
        text_field: text_field.to_string(),
    };
    Corpus::from_specs_or_default(data, options).py_context(|| "reading the corpus (data=)".into())
}

/// Runs ``model`` over a corpus and keeps the activations at ``hook``.
///
/// ``out=None``: returns float32 ``[n_rows, d_model]`` (rows shuffled through a buffer of
/// ``shuffle_buffer`` rows, as a store read back by ``train`` would be). ``out=folder``: writes activation
/// stores there (``hook`` may then be a list: one store per hook) and returns the summary dict of
/// ``zephyra harvest --json``; an interrupted harvest resumes when called again.
///
/// ``tokens`` run through the model (``ceil(tokens / ctx)`` contexts), ``data`` (files, folders, globs;
/// default: the Rust documentation), ``text_field``, ``ctx``, ``batch_contexts``, ``shard_contexts``,
/// ``keep_sinks``, ``max_norm_multiple``, ``seed`` and ``dtype`` (``"float32"``, ``"bfloat16"``, stores
/// only) are ``zephyra harvest``'s options. Position 0, special tokens and attention-sink rows are dropped
/// unless ``keep_sinks``.
#[pyfunction]
#[pyo3(signature = (model, hook, tokens=2_000_000, out=None, *, data=None, text_field="text", ctx=128,
    batch_contexts=DEFAULT_BATCH_CONTEXTS, shard_contexts=DEFAULT_CONTEXTS_PER_SHARD, keep_sinks=false,
    max_norm_multiple=zephyra_data::exclude::DEFAULT_MAX_NORM_MULTIPLE, seed=0, dtype="float32",
    shuffle_buffer=SHUFFLE_BUFFER, progress=false))]
#[allow(clippy::too_many_arguments)]
pub fn harvest<'py>(
    py: Python<'py>,
    model: &PyModel,
    hook: &Bound<'py, PyAny>,
    tokens: u64,
    out: Option<PathBuf>,
    data: Option<Vec<String>>,
    text_field: &str,
    ctx: usize,
    batch_contexts: usize,
    shard_contexts: usize,
    keep_sinks: bool,
    max_norm_multiple: f32,
    seed: u64,
    dtype: &str,
    shuffle_buffer: usize,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let names: Vec<String> = match hook.extract::<String>() {
        Ok(one) => vec![one],
        Err(_) => hook.extract()?,
    };
    let hooks = names
        .iter()
        .map(|h| hook_point(&model.llama, h))
        .collect::<PyResult<Vec<_>>>()?;
    let dtype = match dtype {
        "float32" => StoreDtype::Float32,
        "bfloat16" => StoreDtype::Bfloat16,
        other => {
            return Err(PyValueError::new_err(format!(
                "dtype={other:?}: use \"float32\" or \"bfloat16\""
            )))
        }
    };
    let cfg = HarvestConfig {
        seed,
        contexts_per_shard: shard_contexts,
        batch_contexts,
        dtype,
        rule: ExclusionRule::from_flags(keep_sinks, max_norm_multiple),
        ..HarvestConfig::new(hooks, ctx, tokens)
    };
    let corpus = corpus(&data.unwrap_or_default(), text_field)?;
    match out {
        None => Ok(to_array(py, model, cfg, corpus, shuffle_buffer, progress)?.into_any()),
        Some(dir) => Ok(to_store(py, model, cfg, corpus, dir, progress)?.into_any()),
    }
}

/// Harvests into memory: float32 `[n_rows, d_model]`, rows shuffled through the buffer as a store read
/// back with the same `shuffle_buffer` would be.
fn to_array<'py>(
    py: Python<'py>,
    model: &PyModel,
    cfg: HarvestConfig,
    corpus: Corpus,
    shuffle_buffer: usize,
    progress: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    if cfg.hooks.len() != 1 {
        return Err(PyValueError::new_err(format!(
            "an in-memory harvest keeps one hook, not {}: give one hook, or out= for a store per hook",
            cfg.hooks.len()
        )));
    }
    let d = model.llama.config().d_model;
    let tokens = cfg.n_tokens;
    let buffer = shuffle_buffer
        .min(usize::try_from(tokens).unwrap_or(usize::MAX))
        .max(1);
    let bar = interrupt::bar(
        progress,
        tokens,
        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}",
    );
    let (llama, tokenizer) = (model.llama.clone(), model.tokenizer.clone());
    let result = interrupt::run(py, |cancel| -> PyResult<Vec<f32>> {
        let hooked: Arc<dyn HookModel> = Arc::new(interruptible(llama, cancel.clone()));
        let mut source = BufferedSource::harvesting(hooked, tokenizer, corpus, cfg, buffer)
            .py_context(|| "starting the harvest".into())?;
        let mut rows = Vec::new();
        let mut chunk = vec![0.0f32; 1024 * d];
        loop {
            let n = source
                .next_rows(&mut chunk)
                .py_context(|| "harvesting".into())?;
            if n == 0 || cancel.is_set() {
                break;
            }
            rows.extend_from_slice(&chunk[..n * d]);
            bar.inc(n as u64);
        }
        Ok(rows)
    });
    bar.finish_and_clear();
    let rows = result??;
    if rows.is_empty() {
        return Err(PyValueError::new_err(
            "the harvest kept no rows: the corpus is empty or every row was excluded; give more tokens or other data",
        ));
    }
    arrays::owned_rows(py, rows, d)
}

/// Harvests into activation stores under `out` (one store per hook; resumes an interrupted harvest there)
/// and returns the summary `zephyra harvest --json` prints (less `peak_rss_mb`).
fn to_store<'py>(
    py: Python<'py>,
    model: &PyModel,
    cfg: HarvestConfig,
    corpus: Corpus,
    out: PathBuf,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let hooks: Vec<String> = cfg.hooks.iter().map(ToString::to_string).collect();
    let (llama, tokenizer, path) = (
        model.llama.clone(),
        model.tokenizer.clone(),
        model.path.clone(),
    );
    let info = py
        .detach(|| pipeline::model_info(&path, llama.as_ref()))
        .py_context(|| "hashing the model file".into())?;
    let vocab_size = tokenizer.vocab_size();
    let bar = interrupt::bar(
        progress,
        0,
        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} tokens  {per_sec}  ETA {eta}  {msg}",
    );
    let result = interrupt::run(py, |cancel| {
        let pipeline = Pipeline {
            model: Arc::new(interruptible(llama, cancel.clone())),
            encoder: tokenizer,
            corpus,
            config: cfg,
        };
        let mut on_progress = |p: &pipeline::Progress| {
            bar.set_length(p.tokens_total);
            bar.set_position(p.tokens_done);
            bar.set_message(format!("{} shards", p.shards_written));
        };
        pipeline::harvest(pipeline, info, vocab_size, &out, &mut on_progress)
            .py_context(|| format!("harvesting into {}", out.display()))
    });
    bar.finish_and_clear();
    let summary = result??;
    let d = PyDict::new(py);
    d.set_item("stores", summary.stores.clone())?;
    d.set_item("hooks", hooks)?;
    d.set_item("n_contexts", summary.n_contexts)?;
    d.set_item("n_rows", summary.n_rows.clone())?;
    d.set_item("tokens_run", summary.tokens_run)?;
    d.set_item("resumed_shards", summary.resumed_shards)?;
    d.set_item("corpus_exhausted", summary.corpus_exhausted)?;
    d.set_item("seconds", summary.seconds)?;
    d.set_item(
        "tokens_per_s",
        summary.tokens_run as f64 / summary.seconds.max(1e-9),
    )?;
    Ok(d)
}
