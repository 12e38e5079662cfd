//! `zephyra.SAE`: a trained sparse autoencoder in the SAELens folder format.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zephyra_sae::{Sae, SaeError};

use crate::arrays;
use crate::errors::ToPy;
use crate::json;

/// A sparse autoencoder: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, biases, and its ``cfg.json``.
///
/// ``SAE.load(dir)`` reads a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), ``sae.save(dir)``
/// writes one that ``sae_lens.SAE.load_from_disk`` reads. ``encode``/``decode`` take and return float32
/// numpy arrays; a C-contiguous input is read in place, without a copy.
#[pyclass(name = "SAE", module = "zephyra", frozen)]
pub struct PySae {
    pub(crate) inner: Arc<Sae>,
    /// The folder it was loaded from or last saved to.
    pub(crate) dir: Mutex<Option<PathBuf>>,
    /// What training reported (`summary.json`), for an SAE trained in this process.
    summary: Mutex<Option<serde_json::Value>>,
}

impl PySae {
    pub(crate) fn new(sae: Sae, dir: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(sae),
            dir: Mutex::new(dir),
            summary: Mutex::new(None),
        }
    }

    /// `f(sae, rows, n)` without the GIL on the rows of the array `x` (`name`, `width` values each, read in
    /// place), as a float32 array of rows of `width_out` values.
    fn map_rows<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        (name, width, width_out): (&str, usize, usize),
        doing: &str,
        f: impl Fn(&Sae, &[f32], usize) -> Result<Vec<f32>, SaeError> + Sync,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let rows = arrays::rows(x, name, Some(width))?;
        let (values, n) = (rows.as_slice()?, rows.n);
        let sae: &Sae = &self.inner;
        let out = x
            .py()
            .detach(|| f(sae, values, n))
            .py_context(|| doing.into())?;
        arrays::owned_rows(x.py(), out, width_out)
    }

    pub(crate) fn set_summary(&self, summary: serde_json::Value) {
        if let Ok(mut slot) = self.summary.lock() {
            *slot = Some(summary);
        }
    }

    /// The folder the SAE came from, or a placeholder for one trained in memory.
    pub(crate) fn origin(&self) -> String {
        match self.dir.lock().ok().and_then(|d| d.clone()) {
            Some(d) => d.display().to_string(),
            None => "<in memory>".to_string(),
        }
    }
}

#[pymethods]
impl PySae {
    /// Loads the SAELens folder ``path`` (``cfg.json`` + ``sae_weights.safetensors``).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let sae = py
            .detach(|| zephyra_sae::saelens::load(&path))
            .py_context(|| format!("loading the SAE from {}", path.display()))?;
        Ok(Self::new(sae, Some(path)))
    }

    /// Writes the SAE into the folder ``path`` (created if needed) in the SAELens format.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let sae = self.inner.clone();
        py.detach(|| zephyra_sae::saelens::save(&sae, &path))
            .py_context(|| format!("saving the SAE into {}", path.display()))?;
        if let Ok(mut dir) = self.dir.lock() {
            *dir = Some(path);
        }
        Ok(())
    }

    /// Codes ``[n, d_sae]`` (float32) of the activations ``x`` (float32 ``[n, d_in]``).
    fn encode<'py>(&self, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let d = &self.inner.cfg;
        self.map_rows(x, ("x", d.d_in, d.d_sae), "encoding", Sae::encode)
    }

    /// Reconstructions ``[n, d_in]`` (float32) of the codes ``codes`` (float32 ``[n, d_sae]``).
    fn decode<'py>(&self, codes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let d = &self.inner.cfg;
        self.map_rows(codes, ("codes", d.d_sae, d.d_in), "decoding", Sae::decode)
    }

    /// Width of the activations it reads.
    #[getter]
    fn d_in(&self) -> usize {
        self.inner.cfg.d_in
    }

    /// Number of latents.
    #[getter]
    fn d_sae(&self) -> usize {
        self.inner.cfg.d_sae
    }

    /// ``"topk"``, ``"batchtopk"``, ``"relu"``, ``"relu-unit"``, ``"jumprelu"`` or ``"gated"``.
    #[getter]
    fn architecture(&self) -> &'static str {
        self.inner.cfg.architecture.name()
    }

    /// Active latents per row (topk, batchtopk), else ``None``.
    #[getter]
    fn k(&self) -> Option<usize> {
        self.inner.cfg.architecture.k()
    }

    /// The hook it was trained on (``metadata.hook_name``), if recorded.
    #[getter]
    fn hook_name(&self) -> Option<String> {
        self.inner.cfg.metadata.hook_name.clone()
    }

    /// The SAELens ``cfg.json`` as a dict.
    #[getter]
    fn cfg<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json::to_py(py, &zephyra_sae::saelens::cfg_json(&self.inner.cfg))
    }

    /// What training reported (``summary.json``: tokens/s, held-out FVE and L0, …) for an SAE trained by
    /// ``zephyra.train`` in this process, else ``None``.
    #[getter]
    fn training_summary<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let summary = self.summary.lock().ok().and_then(|s| s.clone());
        summary.map(|s| json::to_py(py, &s)).transpose()
    }

    /// The parameters by their SAELens names (``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, …), copied into
    /// float32 arrays: matrices 2-D, vectors 1-D.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let sae = &self.inner;
        let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
        let out = PyDict::new(py);
        out.set_item("W_enc", arrays::owned_rows(py, sae.w_enc.clone(), d_sae)?)?;
        out.set_item("W_dec", arrays::owned_rows(py, sae.w_dec.clone(), d_in)?)?;
        for (name, v) in [
            ("b_enc", &sae.b_enc),
            ("b_dec", &sae.b_dec),
            ("threshold", &sae.threshold),
            ("b_gate", &sae.b_gate),
            ("r_mag", &sae.r_mag),
            ("b_mag", &sae.b_mag),
        ] {
            if !v.is_empty() {
                out.set_item(name, arrays::owned_vector(py, v.clone()))?;
            }
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "SAE({}, d_in={}, d_sae={}, hook={})",
            self.inner.cfg.architecture,
            self.inner.cfg.d_in,
            self.inner.cfg.d_sae,
            self.inner.cfg.metadata.hook_name.as_deref().unwrap_or("?")
        )
    }
}
