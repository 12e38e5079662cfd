//! safetensors files of named tensors: written atomically, read as f32 with errors that name the file.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use zephyra_io::write_atomic;

use super::{format_err, io_err};
use crate::error::cause;
use crate::{Result, SaeError};

/// Writes named f32 tensors `(name, shape, values)` as a safetensors file, atomically.
pub fn write_f32_tensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<()> {
    let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(SaeError::shape(*name, shape, &[values.len()]));
        }
        bytes.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), b)
            .map_err(|e| SaeError::format(path, format!("tensor {name}"), cause(e)))?;
        views.push((name.to_string(), view));
    }
    let out = safetensors::serialize(views, None)
        .map_err(|e| SaeError::format(path, "serialising", cause(e)))?;
    Ok(write_atomic(path, &out)?)
}

/// Tensors by name: `(shape, values)`.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Removes tensor `name` from `tensors` (read from `path`, a file of an `architecture` SAE), checking its
/// shape.
pub(crate) fn take_tensor(
    tensors: &mut NamedTensors,
    path: &Path,
    architecture: &str,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let (got, values) = tensors
        .remove(name)
        .ok_or_else(|| SaeError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            architecture: architecture.to_string(),
        })?;
    if got != shape {
        return Err(SaeError::shape(
            format!("{} tensor {name}", path.display()),
            shape,
            &got,
        ));
    }
    Ok(values)
}

/// Writes tensors of any dtype `(name, dtype, shape, little-endian bytes)` plus optional string metadata as
/// a safetensors file, atomically.
pub fn write_raw_tensors(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, bytes) in tensors {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| SaeError::format(path, format!("tensor {name}"), cause(e)))?;
        views.push((name.to_string(), view));
    }
    let out = safetensors::serialize(views, metadata)
        .map_err(|e| SaeError::format(path, "serialising", cause(e)))?;
    Ok(write_atomic(path, &out)?)
}

/// Reads every tensor of a safetensors file as f32 (`F32` as is, `F64` rounded): name → (shape, values).
pub fn read_f32_tensors(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        let message = "not a valid safetensors file; is it truncated? re-save or re-download it";
        SaeError::format(path, message, cause(e))
    })?;
    let mut out = BTreeMap::new();
    for name in st.names() {
        let t = st
            .tensor(name)
            .map_err(|e| SaeError::format(path, format!("tensor {name}"), cause(e)))?;
        let data = t.data();
        let values: Vec<f32> = match t.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            other => {
                return Err(format_err(path, format!("tensor {name} has dtype {other:?}; only F32 and F64 are supported: convert it to float32")))
            }
        };
        out.insert(name.to_string(), (t.shape().to_vec(), values));
    }
    Ok(out)
}
