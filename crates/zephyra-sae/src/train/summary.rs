//! `summary.json`: how a training run ended, written by `zephyra train` into the run directory and read by
//! the web app. One type for both sides; the field names are the file's keys.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{EvalStats, RunOutcome, Trainer};
use crate::SaeError;

/// File name of the summary inside a run directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// The summary of a training run (fields in the order of the file's keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Architecture name (`topk`, `relu`, …).
    pub arch: String,
    /// Input dimension.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Fraction of latents that had not fired for the dead window at the end.
    pub dead_fraction: f64,
    /// Whether every step was done.
    pub finished: bool,
    /// Held-out figures (`.npy` runs with a hold-out), else `None`.
    #[serde(default)]
    pub holdout: Option<EvalStats>,
    /// The input scale folded into the saved weights (an f32, kept as f64 so the file shows the value
    /// as it always has).
    pub input_scale: f64,
    /// `k` of topk/batchtopk.
    #[serde(default)]
    pub k: Option<usize>,
    /// Peak resident memory of the training process, MB, where the platform reports it.
    #[serde(default)]
    pub peak_rss_mb: Option<f64>,
    /// The run directory.
    pub run: PathBuf,
    /// Non-finite rows dropped.
    pub skipped_rows: u64,
    /// Steps done in total.
    pub steps: u64,
    /// Worker threads.
    pub threads: usize,
    /// Rows trained on in total.
    pub tokens: u64,
    /// Rows per second in the last call of [`Trainer::run`].
    pub tokens_per_s: f64,
    /// Matryoshka: the FVE of each nested prefix over the steps of the last metrics line (training
    /// batches), smallest width first; absent for other architectures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_fve: Vec<PrefixFve>,
}

/// The FVE of one nested prefix of a Matryoshka SAE.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrefixFve {
    /// The prefix width `w_j` (latents `0..w_j`).
    pub width: usize,
    /// `1 − Σ‖x − x̂⁽ʲ⁾‖² / Σ‖x − mean(x)‖²`.
    pub fve: f64,
}

impl TrainSummary {
    /// Reads `dir/summary.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>, SaeError> {
        let path = dir.join(SUMMARY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SaeError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| SaeError::Json { path, source })
    }

    /// Writes `dir/summary.json` (pretty-printed, atomically).
    pub fn write(&self, dir: &Path) -> Result<(), SaeError> {
        let path = dir.join(SUMMARY_FILE);
        let mut text = serde_json::to_string_pretty(self).map_err(|source| SaeError::Json {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        Ok(zephyra_io::write_atomic(&path, text.as_bytes())?)
    }
}

impl Trainer {
    /// Matryoshka: `(width, FVE)` of each prefix on the last metrics line's steps (empty otherwise, and
    /// before the first line of this process).
    pub fn prefix_fve(&self) -> Vec<PrefixFve> {
        match self.config().sae.architecture {
            crate::Architecture::Matryoshka { groups, .. } => groups
                .as_slice()
                .iter()
                .zip(&self.last_prefix_fve)
                .map(|(&w, &fve)| PrefixFve {
                    width: w as usize,
                    fve,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The summary of a run that ended with `outcome`, with its held-out figures (`peak_rss_mb` is left
    /// for the caller, which knows its process).
    pub fn summary(&self, outcome: &RunOutcome, holdout: Option<EvalStats>) -> TrainSummary {
        let cfg = self.config();
        TrainSummary {
            arch: cfg.sae.architecture.name().to_string(),
            d_in: cfg.sae.d_in,
            d_sae: cfg.sae.d_sae,
            dead_fraction: outcome.dead_fraction,
            finished: outcome.finished,
            holdout,
            input_scale: self.scale() as f64,
            k: cfg.sae.architecture.k(),
            peak_rss_mb: None,
            run: self.out_dir().map(Path::to_path_buf).unwrap_or_default(),
            skipped_rows: outcome.skipped_rows,
            steps: outcome.steps,
            threads: cfg.threads,
            tokens: outcome.tokens,
            tokens_per_s: outcome.tokens_per_s,
            prefix_fve: self.prefix_fve(),
        }
    }
}
