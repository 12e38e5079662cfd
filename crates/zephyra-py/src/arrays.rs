//! numpy arrays in and out: float32 rows borrowed without a copy, results handed over as owned arrays.

use numpy::ndarray::Array2;
use numpy::{
    dtype, IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray2,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A C-contiguous float32 `[n, width]` array, borrowed read-only (numpy's borrow checker stops Python
/// from writing to it while Rust reads it).
pub struct Rows<'py> {
    array: PyReadonlyArray2<'py, f32>,
    /// Rows.
    pub n: usize,
    /// Values per row.
    pub width: usize,
}

impl Rows<'_> {
    /// The values, row-major, without a copy.
    pub fn as_slice(&self) -> PyResult<&[f32]> {
        self.array
            .as_slice()
            .map_err(|e| PyValueError::new_err(format!("the array is not contiguous: {e}")))
    }
}

/// Checks that `obj` is a float32 numpy array of shape `[n, width]` (`width` = `None`: any) laid out in
/// C order, and borrows it. `what` names the argument in the messages ("x", "acts").
pub fn rows<'py>(obj: &Bound<'py, PyAny>, what: &str, width: Option<usize>) -> PyResult<Rows<'py>> {
    let py = obj.py();
    let expected_shape = match width {
        Some(w) => format!("[n, {w}]"),
        None => "[n, d]".to_string(),
    };
    let untyped = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a numpy float32 array of shape {expected_shape}, not {}",
            type_name(obj)
        ))
    })?;
    if !untyped.dtype().is_equiv_to(&dtype::<f32>(py)) {
        return Err(PyTypeError::new_err(format!(
            "{what} must hold float32 values, not {}: pass {what}.astype(numpy.float32)",
            untyped.dtype()
        )));
    }
    let shape = untyped.shape().to_vec();
    if shape.len() != 2 || width.is_some_and(|w| shape[1] != w) {
        return Err(PyValueError::new_err(format!(
            "{what} must have shape {expected_shape}, not {shape:?}"
        )));
    }
    if !untyped.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} is not C-contiguous (a transposed or strided view): pass numpy.ascontiguousarray({what})"
        )));
    }
    let typed = obj
        .cast::<PyArray2<f32>>()
        .map_err(|e| PyTypeError::new_err(format!("{what}: {e}")))?;
    let array = typed.try_readonly().map_err(|e| {
        PyValueError::new_err(format!(
            "{what} is being written elsewhere and cannot be read: {e}"
        ))
    })?;
    Ok(Rows {
        array,
        n: shape[0],
        width: shape[1],
    })
}

/// A float32 vector `[width]` (a steering direction): any 1-D float array of that length, copied.
pub fn vector(obj: &Bound<'_, PyAny>, what: &str, width: usize) -> PyResult<Vec<f32>> {
    let values: Vec<f32> = obj.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a 1-D array or sequence of {width} floats, not {}",
            type_name(obj)
        ))
    })?;
    if values.len() != width {
        return Err(PyValueError::new_err(format!(
            "{what} must hold {width} values (the model's d_model), not {}",
            values.len()
        )));
    }
    Ok(values)
}

/// An owned `[n, width]` array made from `values` without a copy.
pub fn owned_rows(
    py: Python<'_>,
    values: Vec<f32>,
    width: usize,
) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let n = values.len().checked_div(width).unwrap_or(0);
    let array = Array2::from_shape_vec((n, width), values)
        .map_err(|e| PyValueError::new_err(format!("result of {n} × {width} values: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// An owned 1-D array.
pub fn owned_vector<T: numpy::Element>(py: Python<'_>, values: Vec<T>) -> Bound<'_, PyArray1<T>> {
    values.into_pyarray(py)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown type".into())
}
