//! `zephyra.evaluate`, `zephyra.features`, `zephyra.steer`: the CLI's `eval`, `features` and `steer` on an
//! SAE and model already loaded in Python.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zephyra_analysis::eval::{check_model, check_store, check_width, evaluate, EvalConfig};
use zephyra_analysis::eval_data::held_out_tail;
use zephyra_analysis::features::{self, FeatureOptions, Provenance};
use zephyra_analysis::report::{EvalData, EvalReport};
use zephyra_analysis::steer::{SteerMode, SteerRequest};
use zephyra_analysis::AnalysisError;
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

/// The options of `evaluate`.
pub struct EvalOptions {
    pub tokens: u64,
    pub ce_tokens: u64,
    pub batch_contexts: usize,
    pub ctx: Option<usize>,
    pub seed: u64,
    pub train_seed: u64,
    pub data: Vec<String>,
    pub text_field: String,
    pub hook: Option<String>,
    pub out: Option<PathBuf>,
    pub progress: bool,
}

/// Every standard SAE figure on held-out text, as `zephyra eval` computes them; the report as a dict.
pub fn eval<'py>(
    py: Python<'py>,
    sae: &PySae,
    model: &PyModel,
    o: EvalOptions,
) -> PyResult<Bound<'py, PyAny>> {
    let hook = hook_of(model, sae, o.hook.clone())?;
    let (llama, meta) = (&model.llama, &sae.inner.cfg.metadata);
    let file_name = model
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names: Vec<&str> = vec![&file_name];
    if let Some(n) = llama.config().name.as_deref() {
        names.insert(0, n);
    }
    let origin = sae.origin();
    check_model(
        &format!("the SAE in {origin}"),
        meta.model_name.as_deref(),
        &names,
    )
    .py_context(|| "checking the model".into())?;
    check_width(llama, hook, sae.inner.as_ref())
        .py_context(|| "checking the SAE's width".into())?;
    if let Some(acts) = meta.extra.get("acts").and_then(|v| v.as_str()) {
        check_store(Path::new(acts), &model.path, hook)
            .py_context(|| "checking the SAE's data".into())?;
    }
    if o.tokens == 0 {
        return Err(PyValueError::new_err(
            "tokens=0 leaves nothing to evaluate: use e.g. tokens=200_000",
        ));
    }
    let ctx = o.ctx.or(meta.context_size).unwrap_or(128);
    if ctx < 2 || ctx > llama.config().context_length {
        return Err(PyValueError::new_err(format!(
            "ctx={ctx} must be between 2 and the model's context length {}",
            llama.config().context_length
        )));
    }
    let base = corpus(&o.data, &o.text_field)?;
    let (corpus, selection, train_seed) = if o.data.is_empty() {
        let tail = held_out_tail(&base, o.train_seed)
            .py_context(|| "choosing the held-out files".into())?;
        let sel = format!(
            "held-out tail: files in reverse of the training order (harvest seed {})",
            o.train_seed
        );
        (tail, sel, Some(o.train_seed))
    } else {
        (base, "the given corpus, read as is".to_string(), None)
    };
    let description = if o.data.is_empty() {
        format!("default corpus ({} files)", corpus.inputs().len())
    } else {
        corpus.description().to_string()
    };
    let data = EvalData {
        corpus: description,
        selection,
        seed: o.seed,
        train_seed,
        ctx,
    };
    let encoder: Arc<dyn TextEncoder> = model.tokenizer.clone();
    let opts = PackOptions {
        ctx,
        seed: o.seed,
        shuffle_contexts: DEFAULT_SHUFFLE_CONTEXTS.min((o.tokens as usize / ctx).max(1)),
    };
    let stream = ContextStream::new(corpus.documents(), encoder, opts)
        .py_context(|| "packing the corpus".into())?;
    let cfg = EvalConfig {
        hook,
        batch_contexts: o.batch_contexts,
        max_tokens: o.tokens,
        downstream_tokens: o.ce_tokens.min(o.tokens),
        rule: ExclusionRule::default(),
    };
    let bar = interrupt::bar(
        o.progress,
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
            bar.set_message(if p.pass == 1 {
                "reconstruction"
            } else {
                "CE/KL (4 forwards)"
            });
            bar.set_position(p.tokens_done);
        };
        let is_special = move |id: u32| tokenizer.is_special(id);
        evaluate(
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
        sae: origin,
        model: model.path.display().to_string(),
        model_name: llama.config().name.clone(),
        hook: hook.to_string(),
        architecture: sae.inner.cfg.architecture.name().to_string(),
        d_in: sae.inner.cfg.d_in,
        d_sae: sae.inner.cfg.d_sae,
        data,
        tokens: o.tokens,
        ce_tokens: cfg.downstream_tokens,
        batch_contexts: o.batch_contexts,
        figures,
    };
    if let Some(out) = &o.out {
        report
            .write(out)
            .py_context(|| format!("writing {}", out.display()))?;
    }
    json::to_py(py, &report)
}

/// The options of `features`.
pub struct FeatureArgs {
    pub out: PathBuf,
    pub tokens: u64,
    pub ctx: usize,
    pub batch_contexts: usize,
    pub top: usize,
    pub seed: u64,
    pub data: Vec<String>,
    pub text_field: String,
    pub keep_sinks: bool,
    pub restart: bool,
    pub hook: Option<String>,
    pub progress: bool,
}

/// Per-feature statistics into the store at `out` (the one `zephyra serve` reads), as `zephyra features`;
/// resumes an interrupted pass unless `restart`. Returns the counts the CLI prints.
pub fn features<'py>(
    py: Python<'py>,
    sae: &PySae,
    model: &PyModel,
    a: FeatureArgs,
) -> PyResult<Bound<'py, PyDict>> {
    let hook = hook_of(model, sae, a.hook.clone())?;
    check_width(&model.llama, hook, sae.inner.as_ref())
        .py_context(|| "checking the SAE's width".into())?;
    let mut corpus = corpus(&a.data, &a.text_field)?;
    corpus.shuffle_inputs(a.seed);
    let options = FeatureOptions {
        ctx: a.ctx,
        batch_contexts: a.batch_contexts,
        max_tokens: a.tokens,
        n_top: a.top,
        seed: a.seed,
        exclusion: if a.keep_sinks {
            ExclusionRule::keep_all()
        } else {
            ExclusionRule::default()
        },
        resume: !a.restart,
        ..FeatureOptions::default()
    };
    let job = features::FeatureJob {
        llama: &model.llama,
        tokenizer: model.tokenizer.clone(),
        sae: &sae.inner,
        hook,
        corpus: &corpus,
        options,
        out_dir: &a.out,
        provenance: Provenance {
            model: model.path.display().to_string(),
            hook: hook.to_string(),
            sae: sae.origin(),
            corpus: corpus.description().to_string(),
        },
    };
    let bar = interrupt::bar(
        a.progress,
        a.tokens,
        "features {bar:40} {pos}/{len} tokens {per_sec} eta {eta}",
    );
    let index = py
        .detach(|| {
            features::compute_features(&job, &mut |p| {
                bar.set_position(p.n_tokens_read.min(p.max_tokens))
            })
        })
        .py_context(|| format!("computing feature statistics into {}", a.out.display()))?;
    bar.finish_and_clear();
    let d = PyDict::new(py);
    d.set_item("out", &a.out)?;
    d.set_item("d_sae", index.d_sae)?;
    d.set_item("n_tokens_read", index.n_tokens_read)?;
    d.set_item("n_tokens_kept", index.n_tokens_kept)?;
    d.set_item(
        "n_alive",
        index.features.iter().filter(|f| f.n_fires > 0).count(),
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
