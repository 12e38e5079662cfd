//! JSON values (the libraries' serde reports) as Python objects, through Python's own `json` module.

use pyo3::prelude::*;

/// `value` as the dict / list / scalar `json.loads` makes of it.
pub fn to_py<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| {
        pyo3::exceptions::PyRuntimeError::new_err(format!("serialising a report: {e}"))
    })?;
    py.import("json")?.call_method1("loads", (text,))
}
