//! `zephyra.evaluate`, `zephyra.features`, `zephyra.steer`: the CLI's `eval`, `features` and `steer` on an
//! SAE and model already loaded in Python.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zephyra_analysis::eval::{self, check_model_file, check_store, check_width, EvalConfig};
use zephyra_analysis::eval_data::held_out_tail;
use zephyra_analysis::features::{self as stats, FeatureOptions, Provenance};
use zephyra_analysis::report::{EvalData, EvalReport, EvaluatedSae};
use zephyra_analysis::steer::{SteerMode, SteerRequest};
use zephyra_analysis::AnalysisError;
use zephyra_data::harvest::DEFAULT_BATCH_CONTEXTS;
use zephyra_data::pack::{ContextStream, PackOptions, TextEncoder, DEFAULT_SHUFFLE_CONTEXTS};
use zephyra_data::ExclusionRule;
use zephyra_lm::HookPoint;

use crate::errors::ToPy;
use crate::harvest::corpus;
use crate::hooks::hook_point;
use crate::interrupt::{self, INTERRUPTED};
use crate::json;
use crate::model::{engine, PyModel};
use crate::sae::PySae;

/// `hook`, else the SAE's recorded hook, checked against the model.
fn hook_of(model: &PyModel, sae: &PySae, hook: Option<String>) -> PyResult<HookPoint> {
    match hook.or_else(|| sae.inner.cfg.metadata.hook_name.clone()) {
        Some(name) => hook_point(&model.llama, &name),
        None => Err(PyValueError::new_err(
            "the SAE records no hook (metadata.hook_name): pass hook=\"blocks.N.hook_resid_pre\"",
        )),
    }
}

/// Every standard SAE figure (reconstruction, sparsity, CE / KL with the SAE spliced in) on held-out text,
/// as ``zephyra eval``; returns its report as a dict (``out=path`` also writes it as JSON).
///
/// ``hook`` defaults to the SAE's recorded one, ``ctx`` to its context size (else 128). Without ``data``
/// the default corpus's held-out tail is read (the reverse of harvest seed ``train_seed``'s file order).
#[pyfunction]
#[pyo3(signature = (sae, model, *, tokens=200_000, ce_tokens=16_384, batch_contexts=DEFAULT_BATCH_CONTEXTS,
    ctx=None, seed=1, train_seed=0, data=None, text_field="text", hook=None, out=None, progress=false))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate<'py>(
    py: Python<'py>,
    sae: &PySae,
    model: &PyModel,
    tokens: u64,
    ce_tokens: u64,
    batch_contexts: usize,
    ctx: Option<usize>,
    seed: u64,
    train_seed: u64,
    data: Option<Vec<String>>,
    text_field: &str,
    hook: Option<String>,
    out: Option<PathBuf>,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let data = data.unwrap_or_default();
    let hook = hook_of(model, sae, hook)?;
    let (llama, meta) = (&model.llama, &sae.inner.cfg.metadata);
    let origin = sae.origin();
    check_model_file(
        &format!("the SAE in {origin}"),
        meta.model_name.as_deref(),
        &model.path,
        llama.config().name.as_deref(),
    )
    .py_context(|| "checking the model".into())?;
    check_width(llama, hook, sae.inner.as_ref())
        .py_context(|| "checking the SAE's width".into())?;
    if let Some(acts) = meta.extra.get("acts").and_then(|v| v.as_str()) {
        check_store(Path::new(acts), &model.path, hook)
            .py_context(|| "checking the SAE's data".into())?;
    }
    if tokens == 0 {
        return Err(PyValueError::new_err(
            "tokens=0 leaves nothing to evaluate: use e.g. tokens=200_000",
        ));
    }
    let ctx = ctx.or(meta.context_size).unwrap_or(128);
    if ctx < 2 || ctx > llama.config().context_length {
        return Err(PyValueError::new_err(format!(
            "ctx={ctx} must be between 2 and the model's context length {}",
            llama.config().context_length
        )));
    }
    let base = corpus(&data, text_field)?;
    let (corpus, selection, train_seed) = if data.is_empty() {
        let tail =
            held_out_tail(&base, train_seed).py_context(|| "choosing the held-out files".into())?;
        let sel = format!(
            "held-out tail: files in reverse of the training order (harvest seed {})",
            train_seed
        );
        (tail, sel, Some(train_seed))
    } else {
        (base, "the given corpus, read as is".to_string(), None)
    };
    let description = if data.is_empty() {
        format!("default corpus ({} files)", corpus.inputs().len())
    } else {
        corpus.description().to_string()
    };
    let data = EvalData {
        corpus: description,
        selection,
        seed,
        train_seed,
        ctx,
    };
    let encoder: Arc<dyn TextEncoder> = model.tokenizer.clone();
    let opts = PackOptions {
        ctx,
        seed,
        shuffle_contexts: DEFAULT_SHUFFLE_CONTEXTS.min((tokens as usize / ctx).max(1)),
    };
    let stream = ContextStream::new(corpus.documents(), encoder, opts)
        .py_context(|| "packing the corpus".into())?;
    let cfg = EvalConfig {
        hook,
        batch_contexts,
        max_tokens: tokens,
        downstream_tokens: ce_tokens.min(tokens),
        rule: ExclusionRule::default(),
    };
    let bar = interrupt::bar(
        progress,
        0,
        "{msg:>20} [{bar:40}] {pos}/{len} tokens ({per_sec}, eta {eta})",
    );
    let tokenizer = model.tokenizer.clone();
    let dict = sae.inner.clone();
    let figures = interrupt::run(py, |cancel| {
        // Stops at the next batch once interrupted.
        let mut contexts = stream.map(|c| {
            if cancel.is_set() {
                Err(AnalysisError::InvalidArgument(INTERRUPTED.into()))
            } else {
                c.map_err(AnalysisError::Data)
            }
        });
        let mut on_progress = |p: zephyra_analysis::eval::EvalProgress| {
            bar.set_length(p.tokens_total);
            bar.set_message(p.stage());
            bar.set_position(p.tokens_done);
        };
        let is_special = move |id: u32| tokenizer.is_special(id);
        eval::evaluate(
            llama,
            dict.as_ref(),
            &is_special,
            &mut contexts,
            &cfg,
            &mut on_progress,
        )
        .py_context(|| "evaluating".into())
    });
    bar.finish_and_clear();
    let figures = figures??;
    let report = EvalReport {
        evaluated: EvaluatedSae::new(
            origin,
            &sae.inner.cfg,
            sae.inner.cfg.architecture.name().to_string(),
            &model.path,
            llama.config().name.clone(),
            hook,
        ),
        data,
        tokens,
        ce_tokens: cfg.downstream_tokens,
        batch_contexts,
        figures,
    };
    if let Some(out) = &out {
        report
            .write(out)
            .py_context(|| format!("writing {}", out.display()))?;
    }
    json::to_py(py, &report)
}

/// Per-feature statistics (top contexts, activation histograms, logit effects, co-firing) into the feature
/// store ``out`` that ``zephyra serve`` reads, as ``zephyra features``. Resumes an interrupted pass unless
/// ``restart``; Ctrl-C stops it between batches with a checkpoint there. Returns ``{"out", "d_sae",
/// "n_tokens_read", "n_tokens_kept", "n_alive", "features"}``. (``_batch_delay_ms`` sleeps after each
/// batch: tests interrupt a pass mid-way with it.)
#[pyfunction]
#[pyo3(signature = (sae, model, out, *, tokens=1_000_000, ctx=128, batch_contexts=DEFAULT_BATCH_CONTEXTS,
    top=20, seed=0, data=None, text_field="text", keep_sinks=false, restart=false, hook=None, progress=false,
    _batch_delay_ms=0))]
#[allow(clippy::too_many_arguments)]
pub fn features<'py>(
    py: Python<'py>,
    sae: &PySae,
    model: &PyModel,
    out: PathBuf,
    tokens: u64,
    ctx: usize,
    batch_contexts: usize,
    top: usize,
    seed: u64,
    data: Option<Vec<String>>,
    text_field: &str,
    keep_sinks: bool,
    restart: bool,
    hook: Option<String>,
    progress: bool,
    _batch_delay_ms: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let hook = hook_of(model, sae, hook)?;
    check_width(&model.llama, hook, sae.inner.as_ref())
        .py_context(|| "checking the SAE's width".into())?;
    let mut corpus = corpus(&data.unwrap_or_default(), text_field)?;
    corpus.shuffle_inputs(seed);
    let options = FeatureOptions {
        ctx,
        batch_contexts,
        max_tokens: tokens,
        n_top: top,
        seed,
        exclusion: if keep_sinks {
            ExclusionRule::keep_all()
        } else {
            ExclusionRule::default()
        },
        resume: !restart,
        ..FeatureOptions::default()
    };
    let job = stats::FeatureJob {
        llama: &model.llama,
        tokenizer: model.tokenizer.clone(),
        sae: &sae.inner,
        hook,
        corpus: &corpus,
        options,
        out_dir: &out,
        provenance: Provenance {
            model: model.path.display().to_string(),
            hook: hook.to_string(),
            sae: sae.origin(),
            corpus: corpus.description().to_string(),
        },
    };
    let bar = interrupt::bar(
        progress,
        tokens,
        "features {bar:40} {pos}/{len} tokens {per_sec} eta {eta}",
    );
    let index = interrupt::run(py, |cancel| {
        stats::compute_features_until(&job, cancel.flag(), &mut |p| {
            bar.set_position(p.n_tokens_read.min(p.max_tokens));
            std::thread::sleep(std::time::Duration::from_millis(_batch_delay_ms));
        })
        .py_context(|| format!("computing feature statistics into {}", out.display()))
    });
    bar.finish_and_clear();
    let index = index??;
    let d = PyDict::new(py);
    d.set_item("out", &out)?;
    d.set_item("d_sae", index.d_sae)?;
    d.set_item("n_tokens_read", index.n_tokens_read)?;
    d.set_item("n_tokens_kept", index.n_tokens_kept)?;
    d.set_item(
        "n_alive",
        index
            .features
            .iter()
            .filter(|f| f.stats.n_fires > 0)
            .count(),
    )?;
    d.set_item("features", json::to_py(py, &index.features)?)?;
    Ok(d)
}

/// The steered and unsteered continuations of `req.prompt`, as `zephyra steer --json`.
pub fn steer<'py>(
    py: Python<'py>,
    model: &PyModel,
    sae: &PySae,
    hook: Option<String>,
    mode: &str,
    mut req: SteerRequest,
) -> PyResult<Bound<'py, PyDict>> {
    req.mode = match mode {
        "add" => SteerMode::Add,
        "clamp" => SteerMode::Clamp,
        other => {
            return Err(PyValueError::new_err(format!(
                "mode={other:?}: use \"add\" or \"clamp\""
            )))
        }
    };
    let engine = engine(model, sae, hook)?;
    let out = interrupt::run(py, |cancel| {
        engine
            .steer_streaming(&req, cancel.flag(), |_, _| {})
            .py_context(|| "steering".into())
    });
    let out = out??;
    let d = PyDict::new(py);
    match out {
        Some(out) => {
            d.set_item("steered", out.steered)?;
            d.set_item("unsteered", out.unsteered)?;
            d.set_item("steered_ids", out.steered_ids)?;
            d.set_item("unsteered_ids", out.unsteered_ids)?;
        }
        None => return Err(PyValueError::new_err(INTERRUPTED)),
    }
    Ok(d)
}
