//! Training metrics: one JSON object per line in `runs/NAME/metrics.jsonl`.
//!
//! Schema (every line): `step` (steps done), `tokens` (rows trained on), `loss` (total), `mse` (mean over
//! rows of ‖x−x̂‖², in the normalised space), `sparsity_loss`, `aux_loss` (0 when the architecture has
//! none), `l0` (mean active latents per row), `fve` (centred, over the batch:
//! 1 − Σ‖x−x̂‖²/Σ‖x−mean(x)‖²), `dead_fraction` (latents that have not fired for the dead window),
//! `lr`, `sparsity_coeff`, `grad_norm` (before clipping), `skipped_rows` (non-finite rows dropped so
//! far), `tokens_per_s` (since the previous line), and for matryoshka only `fve_prefixes` (the FVE of each
//! nested prefix `0..w_j`, decoded with its own latents, in `--groups` order; the last is `fve`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::SaeError;

/// One line of `metrics.jsonl` (see the module docs for the meaning of each field).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub struct MetricsRecord {
    pub step: u64,
    pub tokens: u64,
    pub loss: f64,
    pub mse: f64,
    pub sparsity_loss: f64,
    pub aux_loss: f64,
    pub l0: f64,
    pub fve: f64,
    pub dead_fraction: f64,
    pub lr: f64,
    pub sparsity_coeff: f64,
    pub grad_norm: f64,
    pub skipped_rows: u64,
    pub tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fve_prefixes: Vec<f64>,
}

/// Appends records to a JSONL file.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens `path` for appending. When `keep_up_to_step` is given (a resume), lines for later steps (written
    /// after the checkpoint by the interrupted run) are first dropped, so the file reads as one run.
    pub fn open(path: &Path, keep_up_to_step: Option<u64>) -> Result<Self, SaeError> {
        let io = |source| SaeError::Io {
            path: path.to_path_buf(),
            source,
        };
        match keep_up_to_step {
            Some(step) if path.exists() => {
                let reader = BufReader::new(File::open(path).map_err(io)?);
                let mut kept = String::new();
                for line in reader.lines() {
                    let line = line.map_err(io)?;
                    let rec: Result<MetricsRecord, _> = serde_json::from_str(&line);
                    if matches!(rec, Ok(r) if r.step <= step) {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
                zephyra_io::write_atomic(path, kept.as_bytes())?;
            }
            Some(_) => {}
            None => zephyra_io::write_atomic(path, b"")?,
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record and flushes it.
    pub fn write(&mut self, rec: &MetricsRecord) -> Result<(), SaeError> {
        let mut line = serde_json::to_string(rec).map_err(|source| SaeError::Json {
            path: self.path.clone(),
            source,
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| SaeError::Io {
                path: self.path.clone(),
                source,
            })
    }
}
