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
use zephyra_data::harvest::{self, HarvestConfig, HookModel, Pipeline};
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

/// The model, refusing the next batch once the caller was interrupted (the harvest then stops the way it
/// stops on any error: complete shards kept, nothing half-written).
struct Interruptible {
    llama: Arc<Llama>,
    cancel: Cancel,
}

impl HookModel for Interruptible {
    fn d_model(&self) -> usize {
        self.llama.d_model()
    }

    fn n_layers(&self) -> usize {
        self.llama.n_layers()
    }

    fn context_length(&self) -> usize {
        self.llama.context_length()
    }

    fn capture(
        &self,
        contexts: &[Vec<u32>],
        hooks: &[HookPoint],
    ) -> zephyra_data::Result<Vec<Vec<f32>>> {
        if self.cancel.is_set() {
            return Err(DataError::Lm(LmError::InvalidInput(INTERRUPTED.into())));
        }
        self.llama.capture(contexts, hooks)
    }
}

/// The corpus and context options of a harvest.
pub struct HarvestOptions {
    pub hooks: Vec<String>,
    pub tokens: u64,
    pub data: Vec<String>,
    pub text_field: String,
    pub ctx: usize,
    pub batch_contexts: usize,
    pub shard_contexts: usize,
    pub keep_sinks: bool,
    pub max_norm_multiple: f32,
    pub seed: u64,
    pub dtype: String,
    pub shuffle_buffer: usize,
    pub progress: bool,
}

/// The corpus of `data` (files, folders, globs; default: the Rust documentation), as the CLI's `--data`.
pub fn corpus(data: &[String], text_field: &str) -> PyResult<Corpus> {
    let options = CorpusOptions {
        text_field: text_field.to_string(),
    };
    Corpus::from_specs_or_default(data, options).py_context(|| "reading the corpus (data=)".into())
}

fn config(model: &PyModel, o: &HarvestOptions) -> PyResult<HarvestConfig> {
    let hooks = o
        .hooks
        .iter()
        .map(|h| hook_point(&model.llama, h))
        .collect::<PyResult<Vec<_>>>()?;
    let dtype = match o.dtype.as_str() {
        "float32" => StoreDtype::Float32,
        "bfloat16" => StoreDtype::Bfloat16,
        other => {
            return Err(PyValueError::new_err(format!(
                "dtype={other:?}: use \"float32\" or \"bfloat16\""
            )))
        }
    };
    Ok(HarvestConfig {
        seed: o.seed,
        contexts_per_shard: o.shard_contexts,
        batch_contexts: o.batch_contexts,
        dtype,
        rule: ExclusionRule::from_flags(o.keep_sinks, o.max_norm_multiple),
        ..HarvestConfig::new(hooks, o.ctx, o.tokens)
    })
}

/// Harvests into memory: float32 `[n_rows, d_model]`, rows shuffled through the buffer as a store read
/// back with the same `shuffle_buffer` would be.
pub fn to_array<'py>(
    py: Python<'py>,
    model: &PyModel,
    o: &HarvestOptions,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    if o.hooks.len() != 1 {
        return Err(PyValueError::new_err(format!(
            "an in-memory harvest keeps one hook, not {}: give one hook, or out= for a store per hook",
            o.hooks.len()
        )));
    }
    let cfg = config(model, o)?;
    let corpus = corpus(&o.data, &o.text_field)?;
    let d = model.llama.config().d_model;
    let buffer = o
        .shuffle_buffer
        .min(usize::try_from(o.tokens).unwrap_or(usize::MAX))
        .max(1);
    let bar = interrupt::bar(
        o.progress,
        o.tokens,
        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}",
    );
    let (llama, tokenizer) = (model.llama.clone(), model.tokenizer.clone());
    let result = interrupt::run(py, |cancel| -> PyResult<Vec<f32>> {
        let hooked: Arc<dyn HookModel> = Arc::new(Interruptible {
            llama,
            cancel: cancel.clone(),
        });
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
pub fn to_store<'py>(
    py: Python<'py>,
    model: &PyModel,
    o: &HarvestOptions,
    out: PathBuf,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = config(model, o)?;
    let hooks: Vec<String> = cfg.hooks.iter().map(ToString::to_string).collect();
    let corpus = corpus(&o.data, &o.text_field)?;
    let (llama, tokenizer, path) = (
        model.llama.clone(),
        model.tokenizer.clone(),
        model.path.clone(),
    );
    let info = py
        .detach(|| harvest::model_info(&path, llama.as_ref()))
        .py_context(|| "hashing the model file".into())?;
    let vocab_size = tokenizer.vocab_size();
    let bar = interrupt::bar(
        o.progress,
        0,
        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} tokens  {per_sec}  ETA {eta}  {msg}",
    );
    let result = interrupt::run(py, |cancel| {
        let pipeline = Pipeline {
            model: Arc::new(Interruptible {
                llama,
                cancel: cancel.clone(),
            }),
            encoder: tokenizer,
            corpus,
            config: cfg,
        };
        let mut on_progress = |p: &harvest::Progress| {
            bar.set_length(p.tokens_total);
            bar.set_position(p.tokens_done);
            bar.set_message(format!("{} shards", p.shards_written));
        };
        harvest::harvest(pipeline, info, vocab_size, &out, &mut on_progress)
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
