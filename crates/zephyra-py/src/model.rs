//! `zephyra.Model`: a language model (GGUF) with its tokenizer, TransformerLens-style hooks and generation.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use zephyra_analysis::steer::{Engine, SteerMode, SteerRequest};
use zephyra_lm::{GenerateConfig, Hooks, Llama, Logits, Sampling, Tokenizer};

use crate::arrays;
use crate::errors::{Raise, ToPy};
use crate::hooks::{hook_point, take_error, HookError, PyHooks};
use crate::interrupt;
use crate::sae::PySae;

/// A language model loaded from a llama.cpp GGUF file (every tensor dequantized to float32), with the
/// tokenizer stored in the same file.
///
/// ``Model.load("smollm2")`` fetches SmolLM2-135M-Instruct into the cache on first use, as the CLI does;
/// ``Model.load(path)`` reads any supported ``.gguf``. Hook names are TransformerLens's
/// (``blocks.15.hook_resid_pre``, ``blocks.3.hook_mlp_out``, ``ln_final.hook_normalized``, …; see
/// ``model.hook_names``).
#[pyclass(name = "Model", module = "zephyra", frozen)]
pub struct PyModel {
    pub(crate) llama: Arc<Llama>,
    pub(crate) tokenizer: Arc<Tokenizer>,
    pub(crate) path: PathBuf,
}

/// A text or a list of token ids.
#[derive(FromPyObject)]
pub enum TextOrTokens {
    Text(String),
    Tokens(Vec<u32>),
}

impl PyModel {
    /// The token ids of `input` (a text is tokenized as `to_tokens` does).
    fn ids(&self, input: TextOrTokens) -> PyResult<Vec<u32>> {
        let ids = match input {
            TextOrTokens::Text(text) => self
                .tokenizer
                .encode(&text)
                .py_context(|| "tokenizing the text".into())?,
            TextOrTokens::Tokens(ids) => ids,
        };
        if ids.is_empty() {
            return Err(PyValueError::new_err(
                "the input has no tokens: give a non-empty text or token list",
            ));
        }
        Ok(ids)
    }

    /// The stop tokens of generation: EOS, and `<|endoftext|>` (the end of a document in SmolLM2's
    /// pre-training data), as `zephyra generate` stops.
    fn stop_tokens(&self) -> Vec<u32> {
        let t = &self.tokenizer;
        let end_of_text =
            (0..64.min(t.vocab_size() as u32)).find(|&id| t.token_str(id) == Some("<|endoftext|>"));
        let mut stop: Vec<u32> = t.eos_token_id().into_iter().chain(end_of_text).collect();
        stop.dedup(); // at most two ids: EOS may be `<|endoftext|>` itself
        stop
    }

    /// One forward pass with `hooks`: (logits or None, cache dict).
    fn forward<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        hooks: PyHooks,
        logits: Option<&str>,
    ) -> PyResult<(Option<Bound<'py, PyAny>>, Bound<'py, PyDict>)> {
        let which = match logits {
            None => Logits::None,
            Some("last") => Logits::Last,
            Some("all") => Logits::All,
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "logits={other:?}: use \"last\" (the next-token logits [vocab]), \"all\" ([seq, vocab]) or None"
                )))
            }
        };
        let errors = HookError::default();
        let llama = &self.llama;
        let result = py.detach(|| {
            let mut built = hooks.build(&errors);
            llama.forward(&[ids.as_slice()], &mut built, which)
        });
        let out = match result {
            Ok(out) => out,
            Err(e) => return Err(take_error(&errors, e.raise("running the model"))),
        };
        let vocab = llama.config().vocab_size;
        let d_model = llama.config().d_model;
        let logits = match out.logits {
            None => None,
            Some(t) => {
                let values = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(zephyra_lm::LmError::from)
                    .py_context(|| "reading the logits".into())?;
                Some(match which {
                    Logits::All => arrays::owned_rows(py, values, vocab)?.into_any(),
                    _ => values.into_pyarray(py).into_any(),
                })
            }
        };
        let cache = PyDict::new(py);
        for hook in &hooks.capture {
            let t = out.activations.get(*hook).ok_or_else(|| {
                PyValueError::new_err(format!("the forward pass did not capture {hook}"))
            })?;
            let values = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(zephyra_lm::LmError::from)
                .py_context(|| format!("reading {hook}"))?;
            cache.set_item(hook.to_string(), arrays::owned_rows(py, values, d_model)?)?;
        }
        Ok((logits, cache))
    }
}

#[pymethods]
impl PyModel {
    /// Loads ``spec``: ``"smollm2"`` or ``"gemma3-270m"`` (fetched into the cache on first use, like the
    /// CLI's ``--model``) or the path of a ``.gguf`` file.
    #[staticmethod]
    fn load(py: Python<'_>, spec: &Bound<'_, PyAny>) -> PyResult<Self> {
        let spec: String = match spec.cast::<PyString>() {
            Ok(s) => s.to_string(),
            Err(_) => spec.extract::<PathBuf>()?.display().to_string(),
        };
        let path = py
            .detach(|| zephyra_lm::fetch::resolve_model(&spec))
            .py_context(|| format!("resolving the model {spec:?}"))?;
        let llama = py
            .detach(|| Llama::load_gguf(&path))
            .py_context(|| format!("loading {}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf(&path)
            .py_context(|| format!("loading the tokenizer of {}", path.display()))?;
        Ok(Self {
            llama: Arc::new(llama),
            tokenizer: Arc::new(tokenizer),
            path,
        })
    }

    /// The GGUF file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The hyper-parameters: ``n_layers``, ``d_model``, ``d_mlp``, ``n_heads``, ``d_vocab``, ``n_ctx``,
    /// ``name``, ``architecture``.
    #[getter]
    fn cfg<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.llama.config();
        let d = PyDict::new(py);
        d.set_item("n_layers", c.n_layers)?;
        d.set_item("d_model", c.d_model)?;
        d.set_item("d_mlp", c.d_mlp)?;
        d.set_item("n_heads", c.n_heads)?;
        d.set_item("d_vocab", c.vocab_size)?;
        d.set_item("n_ctx", c.context_length)?;
        d.set_item("name", c.name.clone())?;
        d.set_item("architecture", c.architecture.clone())?;
        Ok(d)
    }

    /// Every hook name of this model, in forward-pass order.
    #[getter]
    fn hook_names(&self) -> Vec<String> {
        self.llama
            .hook_points()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Token ids (int64 ``[seq]``) of ``text``, with the BOS token when the model's tokenizer adds one.
    fn to_tokens<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids = self
            .tokenizer
            .encode(text)
            .py_context(|| "tokenizing the text".into())?;
        Ok(arrays::owned_vector(
            py,
            ids.into_iter().map(i64::from).collect(),
        ))
    }

    /// The text of the token ids ``tokens``.
    #[pyo3(name = "to_string")]
    fn to_text(&self, tokens: Vec<u32>) -> PyResult<String> {
        self.tokenizer
            .decode(&tokens)
            .py_context(|| "decoding the tokens".into())
    }

    /// Runs ``input`` (a text or token ids) and returns ``(logits, cache)``.
    ///
    /// ``cache`` maps each of ``names`` to its activations, float32 ``[seq, d_model]``. ``logits="last"``
    /// (the default) gives the next-token logits ``[d_vocab]``, ``"all"`` every position's ``[seq, d_vocab]``
    /// (large: 262144 columns for Gemma 3), ``None`` none (the pass then stops after the deepest hook).
    #[pyo3(signature = (input, names=None, logits=Some("last")),
        text_signature = "(self, input, names=None, logits='last')")]
    fn run_with_cache<'py>(
        &self,
        py: Python<'py>,
        input: TextOrTokens,
        names: Option<Vec<String>>,
        logits: Option<&str>,
    ) -> PyResult<(Option<Bound<'py, PyAny>>, Bound<'py, PyDict>)> {
        self.run_with_hooks(py, input, None, None, names, logits)
    }

    /// Runs ``input`` with hooks and returns ``(logits, cache)`` as ``run_with_cache`` does.
    ///
    /// ``fwd_hooks``: ``[(name, fn)]``; ``fn(activation, hook_name)`` gets float32 ``[1, seq, d_model]`` and
    /// returns ``None`` (keep it) or an array of the same shape (replace it). ``add``: ``{name: vector}``
    /// adds a ``[d_model]`` vector at every position. ``names``: hooks to capture, after the others run.
    #[pyo3(signature = (input, fwd_hooks=None, add=None, names=None, logits=Some("last")),
        text_signature = "(self, input, fwd_hooks=None, add=None, names=None, logits='last')")]
    fn run_with_hooks<'py>(
        &self,
        py: Python<'py>,
        input: TextOrTokens,
        fwd_hooks: Option<&Bound<'py, PyAny>>,
        add: Option<&Bound<'py, PyDict>>,
        names: Option<Vec<String>>,
        logits: Option<&str>,
    ) -> PyResult<(Option<Bound<'py, PyAny>>, Bound<'py, PyDict>)> {
        let hooks = PyHooks::parse(&self.llama, names, fwd_hooks, add)?;
        let ids = self.ids(input)?;
        self.forward(py, ids, hooks, logits)
    }

    /// Continues ``prompt`` and returns the new text (the prompt not included). Ctrl-C stops it before the
    /// next token (``KeyboardInterrupt``).
    ///
    /// Greedy at ``temperature=0`` (the default), else top-p sampling seeded by ``seed``. ``fwd_hooks`` and
    /// ``add`` apply at every step as in ``run_with_hooks``. ``steer={"sae": sae, "feature": 1704,
    /// "strength": 8.0, "mode": "add" | "clamp", "hook": name}`` steers with an SAE latent as
    /// ``zephyra steer`` does (the hook defaults to the SAE's own).
    #[pyo3(signature = (prompt, max_tokens=64, temperature=0.0, top_p=0.9, seed=0, fwd_hooks=None, add=None, steer=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_p: f32,
        seed: u64,
        fwd_hooks: Option<&Bound<'_, PyAny>>,
        add: Option<&Bound<'_, PyDict>>,
        steer: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        if let Some(steer) = steer {
            if fwd_hooks.is_some() || add.is_some() {
                return Err(PyValueError::new_err(
                    "steer= runs its own hook: give fwd_hooks/add or steer, not both",
                ));
            }
            let (engine, mut req) = steer_request(self, steer, prompt)?;
            req.max_tokens = max_tokens;
            req.temperature = temperature;
            req.seed = seed;
            let out = interrupt::run(py, |cancel| {
                engine.steer_streaming(&req, cancel.flag(), |_, _| {})
            })?
            .py_context(|| "steering".into())?;
            return out
                .map(|o| o.steered)
                .ok_or_else(|| PyValueError::new_err(interrupt::INTERRUPTED));
        }
        let hooks = PyHooks::parse(&self.llama, None, fwd_hooks, add)?;
        let ids = self.ids(TextOrTokens::Text(prompt.to_string()))?;
        let cfg = GenerateConfig {
            max_new_tokens: max_tokens,
            sampling: Sampling::from_temperature(temperature, top_p),
            seed,
            stop_tokens: self.stop_tokens(),
        };
        let errors = HookError::default();
        let llama = &self.llama;
        let result = interrupt::run(py, |cancel| {
            let mut built: Hooks<'_> = hooks.build(&errors);
            cancel.guard(&mut built);
            llama.generate(&ids, &cfg, &mut built, |_| {})
        })?;
        let out = match result {
            Ok(out) => out,
            Err(e) => return Err(take_error(&errors, e.raise("generating"))),
        };
        self.tokenizer
            .decode(&out.tokens)
            .py_context(|| "decoding the generated tokens".into())
    }

    fn __repr__(&self) -> String {
        let c = self.llama.config();
        format!(
            "Model({}, n_layers={}, d_model={})",
            self.path.display(),
            c.n_layers,
            c.d_model
        )
    }
}

/// The steering engine and request of a `steer` dict (`sae`, `feature`, `strength`, `mode`, `hook`).
pub fn steer_request(
    model: &PyModel,
    steer: &Bound<'_, PyDict>,
    prompt: &str,
) -> PyResult<(Engine, SteerRequest)> {
    let get = |key: &str| steer.get_item(key);
    let missing = |key: &str| {
        PyValueError::new_err(format!(
            "steer needs \"{key}\": steer={{\"sae\": sae, \"feature\": 1704, \"strength\": 8.0}}"
        ))
    };
    let sae = get("sae")?.ok_or_else(|| missing("sae"))?;
    let sae = sae.cast::<PySae>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err("steer[\"sae\"] must be a zephyra.SAE")
    })?;
    let feature: u32 = get("feature")?
        .ok_or_else(|| missing("feature"))?
        .extract()?;
    let strength: f32 = get("strength")?
        .ok_or_else(|| missing("strength"))?
        .extract()?;
    let mode = match get("mode")?
        .map(|m| m.extract::<String>())
        .transpose()?
        .as_deref()
    {
        None | Some("add") => SteerMode::Add,
        Some("clamp") => SteerMode::Clamp,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "steer mode {other:?}: use \"add\" or \"clamp\""
            )))
        }
    };
    let hook: Option<String> = get("hook")?.map(|h| h.extract()).transpose()?;
    let engine = engine(model, sae.get(), hook)?;
    let req = SteerRequest {
        prompt: prompt.to_string(),
        feature,
        strength,
        mode,
        max_tokens: 32,
        seed: 0,
        temperature: 0.0,
    };
    Ok((engine, req))
}

/// The steering engine of `model` and `sae` at `hook` (default: the SAE's recorded hook).
pub fn engine(model: &PyModel, sae: &PySae, hook: Option<String>) -> PyResult<Engine> {
    let name = match hook.or_else(|| sae.inner.cfg.metadata.hook_name.clone()) {
        Some(name) => name,
        None => return Err(PyValueError::new_err(
            "the SAE records no hook (metadata.hook_name): pass hook=\"blocks.N.hook_resid_pre\"",
        )),
    };
    let hook = hook_point(&model.llama, &name)?;
    Engine::new(
        model.llama.clone(),
        model.tokenizer.clone(),
        sae.inner.clone(),
        hook,
    )
    .py_context(|| "preparing the model and SAE".into())
}
