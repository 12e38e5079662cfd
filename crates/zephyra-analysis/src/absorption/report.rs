//! The absorption report: what was evaluated and the figures; JSON and a text table.
//!
//! JSON schema (`zephyra eval --absorption`, default `eval_absorption.json` in the SAE's directory): `sae`,
//! `model`, `model_name`, `hook`, `architecture`, `d_in`, `d_sae`, `prompt_template`, `icl_examples`,
//! `seed`, and `absorption` ([`super::AbsorptionFigures`]: `config`, `n_train_words`, `n_test_words`,
//! `n_letters_scored`, `mean_absorption_fraction`, `mean_full_absorption_rate`, `mean_num_split_features`,
//! `letters` — per letter `letter`, `n_test_words`, `probe_f1`, `n_probe_true_positives`, `main_latents`,
//! `k_sparse` (`k`, `latents`, `f1`), `mean_absorption_fraction`, `n_full_absorption`,
//! `full_absorption_rate`, `scored`, `absorbed` (`word`, `latent`, `cos`, `share`, `fraction`, `full`)).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zephyra_io::write_atomic;

use super::AbsorptionFigures;
use crate::error::{AnalysisError, Result};

/// One absorption evaluation, as written to JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorptionReport {
    /// The SAE's directory.
    pub sae: String,
    /// The model file.
    pub model: String,
    /// The model's `general.name`, if any.
    pub model_name: Option<String>,
    /// Hook point.
    pub hook: String,
    /// SAE architecture (with k and groups).
    pub architecture: String,
    /// SAE input width.
    pub d_in: usize,
    /// SAE latents.
    pub d_sae: usize,
    /// The prompt template.
    pub prompt_template: String,
    /// In-context examples per prompt.
    pub icl_examples: usize,
    /// Seed of the words, split and examples.
    pub seed: u64,
    /// The figures.
    pub absorption: AbsorptionFigures,
}

impl AbsorptionReport {
    /// Writes the report as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text =
            serde_json::to_string_pretty(self).map_err(|source| AnalysisError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        text.push('\n');
        Ok(write_atomic(path, text.as_bytes())?)
    }

    /// The summary and one line per letter.
    pub fn table(&self) -> String {
        let a = &self.absorption;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "SAE {} ({}, {} -> {}) at {}",
            self.sae, self.architecture, self.d_in, self.d_sae, self.hook
        );
        let _ = writeln!(
            out,
            "words: {} train, {} test; letters scored: {} of 26 (probe F1 >= {}, >= {} recognised words)",
            a.n_train_words,
            a.n_test_words,
            a.n_letters_scored,
            a.config.min_probe_f1,
            a.config.min_words
        );
        let _ = writeln!(
            out,
            "mean absorption fraction {:.4}   mean full-absorption rate {:.4}   mean main latents {:.2}",
            a.mean_absorption_fraction, a.mean_full_absorption_rate, a.mean_num_split_features
        );
        let _ = writeln!(
            out,
            "letter  probe_f1  words  fraction  full_rate  main latents      top absorber (cos, share)"
        );
        for l in &a.letters {
            let main: Vec<String> = l.main_latents.iter().map(u32::to_string).collect();
            let top = l.absorbed.iter().max_by(|x, y| x.share.total_cmp(&y.share));
            let top = top.map_or_else(String::new, |w| {
                format!(
                    "{} on {:?} ({:.2}, {:.2})",
                    w.latent, w.word, w.cos, w.share
                )
            });
            let _ = writeln!(
                out,
                "{}{}      {:>8.3}  {:>5}  {:>8.4}  {:>9.4}  {:<16}  {}",
                l.letter,
                if l.scored { ' ' } else { '*' },
                l.probe_f1,
                l.n_probe_true_positives,
                l.mean_absorption_fraction,
                l.full_absorption_rate,
                main.join(","),
                top
            );
        }
        let _ = writeln!(out, "(* = not in the means)");
        out
    }
}
