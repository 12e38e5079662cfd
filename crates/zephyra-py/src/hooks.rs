//! Hooks given from Python: capture (`names`), add a vector (`add`), or replace an activation with what a
//! Python callable returns (`fwd_hooks`, TransformerLens's `(name, fn)` pairs), turned into the runtime's
//! [`Hooks`].

use std::sync::Mutex;

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zephyra_lm::{HookPoint, Hooks, Llama, LmError, Tensor};

use crate::arrays;
use crate::errors::ToPy;

/// The hooks of one call, checked against the model.
#[derive(Default)]
pub struct PyHooks {
    /// Captured, in the order asked for.
    pub capture: Vec<HookPoint>,
    add: Vec<(HookPoint, Vec<f32>)>,
    replace: Vec<(HookPoint, Py<PyAny>)>,
}

/// The first exception a Python hook raised during a forward pass (re-raised once the pass has stopped).
pub type HookError = Mutex<Option<PyErr>>;

/// `name` as a hook point of `llama` (a `ZephyraValueError` listing the valid names otherwise).
pub fn hook_point(llama: &Llama, name: &str) -> PyResult<HookPoint> {
    llama
        .hook_point(name)
        .py_context(|| format!("hook `{name}`"))
}

impl PyHooks {
    /// Reads `names` (hooks to capture), `fwd_hooks` (a list of `(name, callable)`) and `add` (a dict
    /// `name → vector [d_model]`).
    pub fn parse(
        llama: &Llama,
        names: Option<Vec<String>>,
        fwd_hooks: Option<&Bound<'_, PyAny>>,
        add: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut hooks = Self::default();
        for name in names.unwrap_or_default() {
            let point = hook_point(llama, &name)?;
            if !hooks.capture.contains(&point) {
                hooks.capture.push(point);
            }
        }
        if let Some(add) = add {
            let d_model = llama.config().d_model;
            for (name, vector) in add.iter() {
                let name: String = name.extract()?;
                let point = hook_point(llama, &name)?;
                hooks.add.push((
                    point,
                    arrays::vector(&vector, &format!("add[{name:?}]"), d_model)?,
                ));
            }
        }
        if let Some(list) = fwd_hooks {
            for item in list.try_iter()? {
                let item = item?;
                let (name, f): (String, Bound<'_, PyAny>) = item.extract().map_err(|_| {
                    PyTypeError::new_err(
                        "fwd_hooks must be a list of (hook name, callable) pairs, e.g. [(\"blocks.3.hook_resid_post\", fn)]",
                    )
                })?;
                if !f.is_callable() {
                    return Err(PyTypeError::new_err(format!(
                        "the hook for `{name}` is not callable: give fn(activation, hook_name) -> array | None"
                    )));
                }
                hooks.replace.push((hook_point(llama, &name)?, f.unbind()));
            }
        }
        Ok(hooks)
    }

    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.capture.is_empty() && self.add.is_empty() && self.replace.is_empty()
    }

    /// The runtime hooks: at each point the vectors are added first, then the callables run, then the
    /// activation is captured (so the cache shows what the rest of the model sees).
    pub fn build<'a>(&'a self, errors: &'a HookError) -> Hooks<'a> {
        let mut hooks = Hooks::new();
        for (point, vector) in &self.add {
            hooks.add_vector(*point, vector.clone());
        }
        for (point, f) in &self.replace {
            hooks.replace(*point, move |hook, x: &Tensor| {
                call_hook(f, hook, x, errors)
            });
        }
        for point in &self.capture {
            hooks.capture(*point);
        }
        hooks
    }
}

/// Runs the Python hook `f` on `x`: `None` keeps `x`, an array of the same shape replaces it.
fn call_hook(
    f: &Py<PyAny>,
    hook: HookPoint,
    x: &Tensor,
    errors: &HookError,
) -> Result<Tensor, LmError> {
    let dims = x.dims().to_vec();
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    let result = Python::attach(|py| -> PyResult<Option<Vec<f32>>> {
        let array = ArrayD::from_shape_vec(IxDyn(&dims), values)
            .map_err(|e| PyValueError::new_err(format!("activation {dims:?}: {e}")))?
            .into_pyarray(py);
        let out = f.call1(py, (array, hook.to_string()))?;
        let out = out.bind(py);
        if out.is_none() {
            return Ok(None);
        }
        let wrong = || {
            PyTypeError::new_err(format!(
                "the hook for `{hook}` must return None or a float32 array of shape {dims:?}"
            ))
        };
        let array = out.cast::<PyArrayDyn<f32>>().map_err(|_| wrong())?;
        if array.shape() != dims.as_slice() {
            return Err(PyValueError::new_err(format!(
                "the hook for `{hook}` returned shape {:?}; it must return the activation's shape {dims:?}",
                array.shape()
            )));
        }
        // Copied in logical order (any layout): the runtime keeps its own tensor.
        let values: Vec<f32> = array.readonly().as_array().iter().copied().collect();
        Ok(Some(values))
    });
    match result {
        Ok(None) => Ok(x.clone()),
        Ok(Some(v)) => Ok(Tensor::from_vec(v, dims, x.device())?),
        Err(e) => {
            if let Ok(mut slot) = errors.lock() {
                slot.get_or_insert(e);
            }
            Err(LmError::InvalidInput(format!(
                "the Python hook at `{hook}` raised"
            )))
        }
    }
}

/// The Python exception a hook raised, if any, else `fallback`.
pub fn take_error(errors: &HookError, fallback: PyErr) -> PyErr {
    errors
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
        .unwrap_or(fallback)
}
