//! The training-state file that makes `--resume` exact (written atomically with `zephyra_io::write_atomic`).
//!
//! `runs/NAME/training_state.safetensors` sits beside the SAELens files (`cfg.json`,
//! `sae_weights.safetensors`). It is a safetensors file of float32 tensors — the training-space weights
//! `param.<name>` (before the input scale is folded in), Adam moments `adam_m.<name>` / `adam_v.<name>`, and
//! per-latent bookkeeping such as `tokens_since_fired` (stored as f32 pairs, see [`u64s_to_f32_pairs`]) —
//! plus one metadata entry, `zephyra_training_state`, a JSON object with the step, token count, RNG state,
//! data cursor, the full training configuration and the format version ([`StateMeta`]).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::cause;
use crate::train::{StateMeta, STATE_FORMAT};
use crate::SaeError;

/// File name of the training state inside a run directory.
pub const STATE_FILE: &str = "training_state.safetensors";
const META_KEY: &str = "zephyra_training_state";

/// Everything needed to continue a run: named tensors and their typed description.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingState {
    /// Step, tokens, RNG, cursor, configuration.
    pub meta: StateMeta,
    /// Named float32 tensors, flat.
    pub tensors: Vec<(String, Vec<f32>)>,
}

impl TrainingState {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_slice())
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SaeError> {
        let bytes: Vec<(String, Vec<u8>, usize)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    t.len(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, b, len)| {
                TensorView::new(Dtype::F32, vec![*len], b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| SaeError::checkpoint(Path::new(""), "tensor layout", cause(e)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let text = serde_json::to_string(&self.meta)
            .map_err(|e| SaeError::checkpoint(Path::new(""), "its description", cause(e)))?;
        let meta = HashMap::from([(META_KEY.to_string(), text)]);
        safetensors::serialize(views, Some(meta))
            .map_err(|e| SaeError::checkpoint(Path::new(""), "serialising", cause(e)))
    }

    /// Writes the state to `dir/training_state.safetensors`, atomically.
    pub fn save(&self, dir: &Path) -> Result<(), SaeError> {
        Ok(zephyra_io::write_atomic(
            &dir.join(STATE_FILE),
            &self.to_bytes()?,
        )?)
    }

    /// Reads `dir/training_state.safetensors`; a missing, truncated or foreign file is a clear error.
    pub fn load(dir: &Path) -> Result<Self, SaeError> {
        let path = dir.join(STATE_FILE);
        let bad = |reason: String| SaeError::checkpoint(&path, reason, None);
        let bytes = std::fs::read(&path).map_err(|e| {
            let reason = format!(
                "cannot read it; is {} a run directory written by `zephyra train`?",
                dir.display()
            );
            SaeError::checkpoint(&path, reason, cause(e))
        })?;
        let damaged = |e| {
            let reason = "not a valid safetensors file: the checkpoint is damaged or truncated";
            SaeError::checkpoint(&path, reason, cause(e))
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(damaged)?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(damaged)?;
        let meta_text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| {
                bad(format!(
                    "the file has no `{META_KEY}` metadata: not a Zephyra training state"
                ))
            })?;
        // The format first, so that a file of another version is named as such rather than as unreadable.
        #[derive(serde::Deserialize)]
        struct Version {
            format: Option<u64>,
        }
        let version: Version = serde_json::from_str(meta_text)
            .map_err(|e| SaeError::checkpoint(&path, "its metadata is not valid JSON", cause(e)))?;
        if version.format != Some(STATE_FORMAT) {
            return Err(bad(format!(
                "unsupported training-state format {:?} (expected {STATE_FORMAT})",
                version.format
            )));
        }
        let meta: StateMeta = serde_json::from_str(meta_text)
            .map_err(|e| SaeError::checkpoint(&path, "its metadata cannot be read", cause(e)))?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {:?}, expected F32",
                    view.dtype()
                )));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push((name, data));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { meta, tensors })
    }
}

/// Stores u64 counters exactly in an f32 tensor: each value becomes two f32 holding its low and high 32-bit
/// halves as raw bits.
pub fn u64s_to_f32_pairs(values: &[u64]) -> Vec<f32> {
    values
        .iter()
        .flat_map(|&v| [f32::from_bits(v as u32), f32::from_bits((v >> 32) as u32)])
        .collect()
}

/// Inverse of [`u64s_to_f32_pairs`].
pub fn f32_pairs_to_u64s(values: &[f32]) -> Vec<u64> {
    values
        .chunks_exact(2)
        .map(|p| p[0].to_bits() as u64 | ((p[1].to_bits() as u64) << 32))
        .collect()
}
