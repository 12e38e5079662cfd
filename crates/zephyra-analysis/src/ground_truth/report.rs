//! The `eval --synth` report: every SAE's figures and, for several seeds, the mean ± 95 % interval.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{aggregate, GroundTruthFigures, Interval};
use crate::error::{AnalysisError, Result};
use crate::seeds::figure_table;

/// One SAE's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeFigures {
    /// The SAE directory.
    pub sae: String,
    /// Its architecture.
    pub architecture: String,
    /// Latents.
    pub d_sae: usize,
    /// The figures.
    pub figures: GroundTruthFigures,
}

/// What `zephyra eval --synth` prints and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthEvalReport {
    /// The synth directory.
    pub synth: String,
    /// True features.
    pub n_features: usize,
    /// Row width.
    pub d: usize,
    /// Hierarchy parents.
    pub n_parents: usize,
    /// How MCC matches latents to features.
    pub matching: String,
    /// One entry per `--sae` / `--seed-runs` directory.
    pub saes: Vec<SaeFigures>,
    /// Mean ± 95 % interval (Student's t) of every figure over the SAEs; empty for one SAE.
    pub intervals: Vec<Interval>,
}

impl SynthEvalReport {
    /// The report over `saes` (intervals when there are at least two).
    pub fn new(
        synth: String,
        n_features: usize,
        d: usize,
        n_parents: usize,
        saes: Vec<SaeFigures>,
    ) -> Self {
        let intervals = if saes.len() >= 2 {
            let runs: Vec<_> = saes.iter().map(|s| s.figures.named()).collect();
            aggregate(&runs)
        } else {
            Vec::new()
        };
        Self {
            synth,
            n_features,
            d,
            n_parents,
            matching: "Hungarian (one-to-one, as SAELens' mean_correlation_coefficient); mcc_best_match: best |cos| per true feature".into(),
            saes,
            intervals,
        }
    }

    /// Writes the report as pretty JSON (atomically).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| AnalysisError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(zephyra_io::write_atomic(path, text.as_bytes())?)
    }

    /// The text table: one row per figure, one column per SAE, then the interval.
    pub fn table(&self) -> String {
        let mut out = format!(
            "ground truth {}: {} features in {} dimensions, {} hierarchy parents; MCC by Hungarian matching\n",
            self.synth, self.n_features, self.d, self.n_parents
        );
        let runs: Vec<_> = self.saes.iter().map(|s| s.figures.named()).collect();
        let labels: Vec<String> = self
            .saes
            .iter()
            .map(|s| format!("{} ({}, {} latents)", s.sae, s.architecture, s.d_sae))
            .collect();
        out.push_str(&figure_table(&labels, &runs, &self.intervals));
        out
    }
}
