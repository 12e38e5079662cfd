//! One shard of the activation store: its file name, its rows in memory ([`ShardData`]), its encoding as
//! safetensors bytes ([`encode_shard`]), and the reading of its header without loading the file.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::StoreDtype;
use crate::error::{DataError, Result};

/// The file name of shard `index`.
pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:05}.safetensors")
}

/// The rows of one shard, in memory (activations as f32 whatever the stored dtype).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShardData {
    /// `[n, d]` row-major.
    pub activations: Vec<f32>,
    /// `[n]`.
    pub token_ids: Vec<u32>,
    /// `[n]`.
    pub context_index: Vec<u32>,
    /// `[n]`.
    pub position: Vec<u32>,
    /// `[n_contexts, ctx]`.
    pub context_tokens: Vec<u32>,
}

impl ShardData {
    /// Rows held.
    pub fn n_rows(&self) -> usize {
        self.token_ids.len()
    }
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serializes a shard to safetensors bytes.
pub fn encode_shard(
    data: &ShardData,
    d: usize,
    ctx: usize,
    dtype: StoreDtype,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let n = data.n_rows();
    let n_contexts = data.context_tokens.len() / ctx.max(1);
    let (act_dtype, act_bytes): (Dtype, Vec<u8>) = match dtype {
        StoreDtype::Float32 => (
            Dtype::F32,
            data.activations
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        StoreDtype::Bfloat16 => (
            Dtype::BF16,
            data.activations
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
        ),
    };
    let tok = u32_bytes(&data.token_ids);
    let ci = u32_bytes(&data.context_index);
    let pos = u32_bytes(&data.position);
    let ct = u32_bytes(&data.context_tokens);
    let err = DataError::EncodeShard;
    let tensors = vec![
        (
            "activations",
            TensorView::new(act_dtype, vec![n, d], &act_bytes).map_err(err)?,
        ),
        (
            "token_ids",
            TensorView::new(Dtype::U32, vec![n], &tok).map_err(err)?,
        ),
        (
            "context_index",
            TensorView::new(Dtype::U32, vec![n], &ci).map_err(err)?,
        ),
        (
            "position",
            TensorView::new(Dtype::U32, vec![n], &pos).map_err(err)?,
        ),
        (
            "context_tokens",
            TensorView::new(Dtype::U32, vec![n_contexts, ctx], &ct).map_err(err)?,
        ),
    ];
    safetensors::tensor::serialize(tensors, Some(metadata)).map_err(err)
}

/// Appends little-endian activations (`bf16`, else f32) to `out` as float32.
pub(super) fn extend_f32(out: &mut Vec<f32>, bytes: &[u8], bf16: bool) {
    if bf16 {
        out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        );
    } else {
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
}

/// The `activations` entry of a safetensors header.
pub(super) struct ActivationsEntry {
    pub(super) shape: Vec<u64>,
    pub(super) dtype: String,
    pub(super) start: u64,
    pub(super) end: u64,
    /// Length of the JSON header (the data starts at `8 + header_bytes`).
    pub(super) header_bytes: u64,
}

impl ActivationsEntry {
    /// Bytes per element: 4 for F32, 2 for BF16.
    pub(super) fn width(&self) -> Option<u64> {
        match self.dtype.as_str() {
            "F32" => Some(4),
            "BF16" => Some(2),
            _ => None,
        }
    }

    /// Bytes the shape holds (`None` on overflow or an unknown dtype).
    pub(super) fn n_bytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.width()?, |n, &dim| n.checked_mul(dim))
    }
}

/// Reads the `activations` entry of a parsed header; the error is the reason, for the caller to wrap.
pub(super) fn activations_entry(header: &Header) -> std::result::Result<ActivationsEntry, String> {
    let act = header
        .map
        .get("activations")
        .ok_or_else(|| "has no `activations` tensor".to_string())?;
    let u64s = |key: &str| -> Vec<u64> {
        act.get(key)
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default()
    };
    let offsets = u64s("data_offsets");
    let [start, end] = offsets[..] else {
        return Err(format!(
            "has activation offsets {offsets:?}, expected [start, end]"
        ));
    };
    if end < start {
        return Err(format!(
            "has activation offsets {start}..{end} that end before they start"
        ));
    }
    Ok(ActivationsEntry {
        shape: u64s("shape"),
        dtype: act
            .get("dtype")
            .and_then(|d| d.as_str())
            .unwrap_or("?")
            .to_string(),
        start,
        end,
        header_bytes: header.len,
    })
}

/// A safetensors JSON header and its length in bytes.
pub(super) struct Header {
    map: serde_json::Map<String, serde_json::Value>,
    len: u64,
}

/// Parses the JSON header of a safetensors file.
pub(super) fn read_header(path: &Path) -> Result<Header> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io("opening", path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| DataError::io("reading the header of", path, e))?;
    let len = u64::from_le_bytes(len);
    let file_len = file
        .metadata()
        .map_err(|e| DataError::io("reading the header of", path, e))?
        .len();
    if len > 100 << 20 || len.saturating_add(8) > file_len {
        return Err(DataError::io(
            "reading the header of",
            path,
            std::io::Error::other(format!(
                "the header claims {len} bytes in a {file_len}-byte file"
            )),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)
        .map_err(|e| DataError::io("reading the header of", path, e))?;
    let map = serde_json::from_slice(&buf)
        .map_err(|e| DataError::io("parsing the header of", path, std::io::Error::other(e)))?;
    Ok(Header { map, len })
}
