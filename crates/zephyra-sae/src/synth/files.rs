//! The ground truth beside a synthetic store: `synth.json` (the [`SynthConfig`] and the rows written),
//! `truth.safetensors` (`directions [n_features, d]`, `probabilities [n_features]`, `bias [d]`, f32) and
//! `hierarchy.json` (the [`Hierarchy`]). Reading rebuilds the generator from `synth.json` and checks it
//! against `truth.safetensors`, so a file edited by hand or made by another version is refused.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::{SynthConfig, SynthModel};
use crate::error::{cause, Result, SaeError};

/// `synth.json`.
pub const CONFIG_FILE: &str = "synth.json";
/// `truth.safetensors`.
pub const TRUTH_FILE: &str = "truth.safetensors";
/// `hierarchy.json`.
pub const HIERARCHY_FILE: &str = "hierarchy.json";

/// The contents of `synth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthRecord {
    /// Always `zephyra-synth`.
    pub format: String,
    /// The generator's configuration.
    pub config: SynthConfig,
    /// Training rows written (blocks `0..rows/1024` of the training stream).
    pub rows: u64,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the three files into `dir` (atomically each).
pub fn write(dir: &Path, model: &SynthModel, rows: u64) -> Result<()> {
    let record = SynthRecord {
        format: "zephyra-synth".into(),
        config: model.cfg.clone(),
        rows,
    };
    write_json(&dir.join(CONFIG_FILE), &record)?;
    write_json(&dir.join(HIERARCHY_FILE), &model.hierarchy)?;
    let (n, d) = (model.cfg.n_features, model.cfg.d);
    let probs: Vec<f32> = model.probabilities.iter().map(|&p| p as f32).collect();
    let (dirs, probs, bias) = (
        f32_bytes(&model.directions),
        f32_bytes(&probs),
        f32_bytes(&model.bias),
    );
    let path = dir.join(TRUTH_FILE);
    let bad = |e: safetensors::SafeTensorError| {
        SaeError::format(&path, "cannot encode the truth tensors", cause(e))
    };
    let tensors = vec![
        (
            "directions",
            TensorView::new(Dtype::F32, vec![n, d], &dirs).map_err(bad)?,
        ),
        (
            "probabilities",
            TensorView::new(Dtype::F32, vec![n], &probs).map_err(bad)?,
        ),
        (
            "bias",
            TensorView::new(Dtype::F32, vec![d], &bias).map_err(bad)?,
        ),
    ];
    let bytes =
        safetensors::tensor::serialize(tensors, None::<HashMap<String, String>>).map_err(bad)?;
    Ok(zephyra_io::write_atomic(&path, &bytes)?)
}

/// Reads `dir/synth.json`, rebuilds the generator and checks it against `dir/truth.safetensors`.
pub fn read(dir: &Path) -> Result<(SynthModel, SynthRecord)> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| SaeError::Io {
        path: path.clone(),
        source: e,
    })?;
    let record: SynthRecord = serde_json::from_str(&text).map_err(|e| {
        SaeError::format(
            &path,
            "not a synth.json written by `zephyra synth`",
            cause(e),
        )
    })?;
    let model = SynthModel::new(record.config.clone())?;
    let path = dir.join(TRUTH_FILE);
    let bytes = std::fs::read(&path).map_err(|e| SaeError::Io {
        path: path.clone(),
        source: e,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| SaeError::format(&path, "not a safetensors file", cause(e)))?;
    let stored: Vec<f32> = st
        .tensor("directions")
        .map_err(|e| SaeError::format(&path, "no `directions` tensor", cause(e)))?
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if stored != model.directions {
        return Err(SaeError::format(
            &path,
            "the true directions differ from the ones synth.json generates (edited, or written by another version): run `zephyra synth` again",
            None,
        ));
    }
    Ok((model, record))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| SaeError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(zephyra_io::write_atomic(path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            n_features: 10,
            d: 4,
            hierarchy: Some(super::super::HierarchyConfig {
                roots: 2,
                branching: 2,
                depth: 1,
                exclusive_portion: 1.0,
            }),
            ..SynthConfig::default()
        };
        let model = SynthModel::new(cfg).unwrap();
        write(tmp.path(), &model, 2048).unwrap();
        let (back, record) = read(tmp.path()).unwrap();
        assert_eq!((back, record.rows), (model.clone(), 2048));
        let h: super::super::Hierarchy = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join(HIERARCHY_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(h, model.hierarchy);
        // Another seed in synth.json no longer matches the stored directions.
        let path = tmp.path().join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"seed\": 0", "\"seed\": 1");
        std::fs::write(&path, text).unwrap();
        let e = read(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("differ"), "{e}");
    }
}
