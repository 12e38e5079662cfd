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

use super::AbsorptionFigures;
use crate::error::Result;
use crate::file_io::write_json_pretty;
use crate::report::EvaluatedSae;

/// One absorption evaluation, as written to JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorptionReport {
    /// What was evaluated.
    #[serde(flatten)]
    pub evaluated: EvaluatedSae,
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
        write_json_pretty(path, self)
    }

    /// The summary and one line per letter.
    pub fn table(&self) -> String {
        let a = &self.absorption;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "SAE {} at {}",
            self.evaluated.describe(),
            self.evaluated.hook
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

impl crate::seeds::NamedFigures for AbsorptionReport {
    fn named(&self) -> Vec<(&'static str, f64)> {
        let a = &self.absorption;
        vec![
            ("mean_absorption_fraction", a.mean_absorption_fraction),
            ("mean_full_absorption_rate", a.mean_full_absorption_rate),
            ("mean_num_split_features", a.mean_num_split_features),
            ("n_letters_scored", a.n_letters_scored as f64),
        ]
    }

    fn label(&self) -> String {
        self.evaluated.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::absorption::AbsorptionConfig;
    use zephyra_lm::HookPoint;
    use zephyra_sae::{Architecture, SaeConfig};

    #[test]
    fn the_head_is_flat_in_the_json_and_the_table() {
        let cfg = SaeConfig::new(4, 16, Architecture::TopK { k: 2 }).unwrap();
        let report = AbsorptionReport {
            evaluated: EvaluatedSae::new(
                "runs/a".into(),
                &cfg,
                cfg.architecture.to_string(),
                Path::new("m.gguf"),
                Some("Tiny".into()),
                HookPoint::ResidPost(1),
            ),
            prompt_template: "{word} has the first letter:".into(),
            icl_examples: 10,
            seed: 42,
            absorption: AbsorptionFigures {
                config: AbsorptionConfig::default(),
                n_train_words: 8,
                n_test_words: 2,
                n_letters_scored: 0,
                mean_absorption_fraction: 0.0,
                mean_full_absorption_rate: 0.0,
                mean_num_split_features: 0.0,
                letters: Vec::new(),
            },
        };
        let v = serde_json::to_value(&report).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want: Vec<&str> = crate::report::EVALUATED_SAE_KEYS
            .into_iter()
            .chain(["prompt_template", "icl_examples", "seed", "absorption"])
            .collect();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["architecture"], "topk(k=2)");
        assert_eq!(v["hook"], "blocks.1.hook_resid_post");
        assert!(report
            .table()
            .starts_with("SAE runs/a (topk(k=2), 4 -> 16) at blocks.1.hook_resid_post\n"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval_absorption.json");
        report.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // The file keeps the head first, in the order the fields are declared.
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        assert!(
            at("sae") < at("model")
                && at("hook") < at("d_sae")
                && at("d_sae") < at("prompt_template")
        );
        let back: AbsorptionReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }
}
