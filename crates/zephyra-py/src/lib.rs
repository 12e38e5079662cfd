//! Zephyra from Python: the native half (`zephyra._zephyra`) of the `zephyra` package.
//!
//! The Python names are SAELens's and TransformerLens's; every call goes to the same library functions
//! the `zephyra` CLI calls, nothing is reimplemented. Arrays cross as numpy float32: C-contiguous inputs
//! are read in place, results are handed over as owned arrays. Long calls release the GIL, draw an
//! indicatif bar on stderr with `progress=True`, and stop cleanly on Ctrl-C.
//!
//! # Crate map
//! | module | responsibility | Python names |
//! |---|---|---|
//! | [`model`] | load a GGUF, tokenize, forward with a cache, generate | `Model` |
//! | [`hooks`] | capture / add / replace-with-a-callable hooks | `names=`, `add=`, `fwd_hooks=` |
//! | [`sae`] | SAELens folders, encode / decode | `SAE` |
//! | [`train`], [`train_options`] | training on arrays, `.npy` files and stores, resume | `train` |
//! | [`harvest`] | activations into memory or stores | `harvest` |
//! | [`analysis`] | eval figures, feature statistics, steering | `evaluate`, `features`, `steer` |
//! | [`arrays`] | numpy checks and conversions | |
//! | [`interrupt`] | GIL-free worker thread, Ctrl-C, progress bars | |
//! | [`errors`] | Rust errors → `zephyra.errors` classes | `ZephyraError`, … |
//!
//! The Rust library is only built for Python (maturin, with `pyo3/extension-module`); `cargo build` checks
//! that it compiles. Its tests are the pytest suite in `tests/`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use zephyra_analysis::steer::{SteerMode, SteerRequest};

pub mod analysis;
pub mod arrays;
pub mod errors;
pub mod harvest;
pub mod hooks;
pub mod interrupt;
mod json;
pub mod model;
pub mod sae;
pub mod train;
pub mod train_options;

use model::PyModel;
use sae::PySae;

/// Rows of the shuffle buffer of store and on-the-fly sources (the CLI's `--shuffle-buffer` default).
pub(crate) const SHUFFLE_BUFFER: usize = 1 << 18;

/// Trains a sparse autoencoder and returns it as an ``SAE``.
///
/// ``acts``: a float32 array ``[n, d_in]`` (read in place), a ``.npy`` file, or an activation store folder
/// made by ``harvest(out=…)``. The last ``holdout`` rows of an array or ``.npy`` (a count, or a fraction
/// below 1; default min(8192, n/5)) are kept for the final FVE / L0 in ``sae.training_summary``; the others
/// are read in a new shuffled order each pass, drawn from ``seed`` as ``zephyra train`` reads a ``.npy``
/// (``shuffle=False`` keeps the given order).
///
/// Options are ``zephyra train``'s flags (``None`` = its default, or the saved value on ``resume``):
/// ``arch`` (``"topk"``, ``"batchtopk"``, ``"relu"``, ``"relu-unit"``, ``"jumprelu"``, ``"gated"``), ``k``,
/// ``expansion``, ``batch_rows``, ``tokens`` (rows to train on, default 2,000,000), ``lr``, ``l1``,
/// ``l0_coeff``, ``l1_warmup``, ``lr_warmup``, ``lr_decay`` (``"constant"``, ``"linear"``, ``"cosine"``),
/// ``max_grad_norm`` (0 = off), ``normalize``, ``b_dec_init`` (``"geometric-median"``, ``"mean"``,
/// ``"zeros"``), ``dead_after``, ``decoder_init_norm`` (topk, batchtopk: SAELens' parametrisation, decoder
/// rows free and started at this norm, pre-activations rescaled by the row norms, folded into the saved
/// SAE; 0 = unit-norm rows; default 0.1 for topk and batchtopk SAEs, 0 otherwise), ``non_finite`` (``"skip"``, ``"error"``), ``seed``, ``threads``,
/// ``checkpoint_every``, ``metrics_every``, ``shuffle`` (arrays, ``.npy``), ``shuffle_buffer`` (stores).
///
/// ``out``: a run folder for checkpoints, metrics and the final SAE; ``resume``: continue the run in that
/// folder (after Ctrl-C or a kill), with the same ``acts``. ``hook``, ``model_name``, ``context_size`` are
/// recorded in the SAE's ``cfg.json`` (``evaluate`` and ``steer`` then need no ``hook=``).
/// Ctrl-C raises ``KeyboardInterrupt``; the run folder then holds nothing new or its last complete
/// checkpoint. (``_step_delay_ms`` sleeps after each step, as the CLI's hidden ``--step-delay-ms``: tests
/// use it to interrupt a run mid-way; no effect on the weights.)
#[pyfunction]
#[pyo3(signature = (acts, *, out=None, resume=None, arch=None, k=None, expansion=None, batch_rows=None,
    tokens=None, lr=None, l1=None, l0_coeff=None, l1_warmup=None, lr_warmup=None, lr_decay=None,
    max_grad_norm=None, normalize=None, b_dec_init=None, dead_after=None, decoder_init_norm=None, non_finite=None, seed=None,
    threads=None, checkpoint_every=None, metrics_every=None, holdout=None, shuffle=true,
    shuffle_buffer=SHUFFLE_BUFFER, hook=None, model_name=None, context_size=None, progress=false, _step_delay_ms=0))]
#[pyo3(name = "train")]
#[allow(clippy::too_many_arguments)]
fn train_py(
    py: Python<'_>,
    acts: &Bound<'_, PyAny>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    arch: Option<String>,
    k: Option<usize>,
    expansion: Option<usize>,
    batch_rows: Option<usize>,
    tokens: Option<u64>,
    lr: Option<f32>,
    l1: Option<f64>,
    l0_coeff: Option<f64>,
    l1_warmup: Option<u64>,
    lr_warmup: Option<u64>,
    lr_decay: Option<String>,
    max_grad_norm: Option<f64>,
    normalize: Option<bool>,
    b_dec_init: Option<String>,
    dead_after: Option<u64>,
    decoder_init_norm: Option<f32>,
    non_finite: Option<String>,
    seed: Option<u64>,
    threads: Option<usize>,
    checkpoint_every: Option<u64>,
    metrics_every: Option<u64>,
    holdout: Option<f64>,
    shuffle: bool,
    shuffle_buffer: usize,
    hook: Option<String>,
    model_name: Option<String>,
    context_size: Option<usize>,
    progress: bool,
    _step_delay_ms: u64,
) -> PyResult<PySae> {
    let opts = train_options::TrainOptions {
        arch,
        k,
        expansion,
        batch_rows,
        tokens,
        lr,
        l1,
        l0_coeff,
        l1_warmup,
        lr_warmup,
        lr_decay,
        max_grad_norm,
        normalize,
        b_dec_init,
        dead_after,
        decoder_init_norm,
        non_finite,
        seed,
        threads,
        checkpoint_every,
        metrics_every,
    };
    let job = train::Job {
        folder: train::Folder::new(out, resume)?,
        reading: train::Reading {
            holdout,
            shuffle,
            shuffle_buffer,
        },
        provenance: train::Provenance {
            hook,
            model_name,
            context_size,
        },
        progress,
        step_delay_ms: _step_delay_ms,
    };
    train::train(py, acts, opts, job)
}

/// Generates from ``prompt`` with latent ``feature``'s decoder direction added (``mode="add"``: strength ×
/// the direction at every position) or the latent clamped (``mode="clamp"``), next to the unsteered
/// continuation with the same seed, as ``zephyra steer --json``. Returns ``{"steered", "unsteered",
/// "steered_ids", "unsteered_ids"}``.
#[pyfunction]
#[pyo3(signature = (model, sae, prompt, feature, strength, *, mode="add", max_tokens=32, seed=0,
    temperature=0.7, hook=None))]
#[allow(clippy::too_many_arguments)]
fn steer<'py>(
    py: Python<'py>,
    model: &PyModel,
    sae: &PySae,
    prompt: String,
    feature: u32,
    strength: f32,
    mode: &str,
    max_tokens: usize,
    seed: u64,
    temperature: f32,
    hook: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let req = SteerRequest {
        prompt,
        feature,
        strength,
        mode: SteerMode::Add,
        max_tokens,
        seed,
        temperature,
    };
    analysis::steer(py, model, sae, hook, mode, req)
}

/// The native module.
#[pymodule]
fn _zephyra(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<PySae>()?;
    m.add_function(wrap_pyfunction!(train_py, m)?)?;
    m.add_function(wrap_pyfunction!(harvest::harvest, m)?)?;
    m.add_function(wrap_pyfunction!(analysis::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(analysis::features, m)?)?;
    m.add_function(wrap_pyfunction!(steer, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
