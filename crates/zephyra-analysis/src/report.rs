//! The evaluation report: what was evaluated, on which data, and every figure; JSON and a text table.
//!
//! JSON schema (`zephyra eval --json`, also `eval.json` in the SAE's directory): `sae` (directory),
//! `model` (GGUF path), `model_name`, `hook`, `architecture`, `d_in`, `d_sae`, `data` ([`EvalData`]),
//! `tokens`, `ce_tokens`, `batch_contexts`, and `figures` ([`crate::eval::EvalFigures`]: `n_tokens_seen`,
//! `exclusion`, `exclusion_rule`, `reconstruction`, `sparsity` with `density_histogram`, `downstream`).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use zephyra_lm::HookPoint;
use zephyra_sae::SaeConfig;

use crate::error::Result;
use crate::eval::EvalFigures;
use crate::file_io::{read_json, write_json_pretty};

/// Which data an evaluation ran on, and how it is kept apart from the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalData {
    /// The corpus (the `--data` arguments or the default corpus's description).
    pub corpus: String,
    /// How the eval contexts were chosen (e.g. `held-out tail: files in reverse order of the seed-0 shuffle`).
    pub selection: String,
    /// Seed of the eval context shuffle.
    pub seed: u64,
    /// The training (harvest) seed whose file order was reversed, when the held-out tail was used.
    pub train_seed: Option<u64>,
    /// Tokens per context.
    pub ctx: usize,
}

/// The SAE evaluated and the model it was evaluated on: the head of every evaluation report (flattened into
/// its JSON: `sae`, `model`, `model_name`, `hook`, `architecture`, `d_in`, `d_sae`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedSae {
    /// The SAE's directory (or where it was loaded from).
    pub sae: String,
    /// The model file.
    pub model: String,
    /// The model's `general.name`, if any.
    pub model_name: Option<String>,
    /// Hook point.
    pub hook: String,
    /// SAE architecture: its name in `eval.json`, with k and groups in the absorption report.
    pub architecture: String,
    /// SAE input width.
    pub d_in: usize,
    /// SAE latents.
    pub d_sae: usize,
}

impl EvaluatedSae {
    /// The SAE `sae` (configured by `cfg`, its architecture written as `architecture`) evaluated at `hook`
    /// on the model file `model_path`, whose `general.name` is `model_name`.
    pub fn new(
        sae: String,
        cfg: &SaeConfig,
        architecture: String,
        model_path: &Path,
        model_name: Option<String>,
        hook: HookPoint,
    ) -> Self {
        Self {
            sae,
            model: model_path.display().to_string(),
            model_name,
            hook: hook.to_string(),
            architecture,
            d_in: cfg.d_in,
            d_sae: cfg.d_sae,
        }
    }

    /// `SAE_DIR (ARCHITECTURE, D_IN -> D_SAE)`, as the tables print it.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {} -> {})",
            self.sae, self.architecture, self.d_in, self.d_sae
        )
    }
}

/// The JSON keys [`EvaluatedSae`] adds to a report, in order.
#[cfg(test)]
pub(crate) const EVALUATED_SAE_KEYS: [&str; 7] = [
    "sae",
    "model",
    "model_name",
    "hook",
    "architecture",
    "d_in",
    "d_sae",
];

/// One evaluation, as written to JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// What was evaluated.
    #[serde(flatten)]
    pub evaluated: EvaluatedSae,
    /// The eval data.
    pub data: EvalData,
    /// Tokens asked for (reconstruction pass).
    pub tokens: u64,
    /// Tokens asked for (downstream pass).
    pub ce_tokens: u64,
    /// Contexts per forward pass.
    pub batch_contexts: usize,
    /// The figures.
    pub figures: EvalFigures,
}

/// A figure to four decimals, as the table prints most of them.
fn f4(v: f64) -> String {
    format!("{v:.4}")
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), f4)
}

impl EvalReport {
    /// Reads a report written by [`EvalReport::write`].
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json_pretty(path, self)
    }

    /// The figures as an aligned text table.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }

    /// The rows of [`EvalReport::table`]: (figure, formatted value), in table order.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let f = &self.figures;
        let r = &f.reconstruction;
        let s = &f.sparsity;
        let mut rows: Vec<(&'static str, String)> = vec![
            ("SAE", self.evaluated.describe()),
            ("hook", self.evaluated.hook.clone()),
            (
                "data",
                format!(
                    "{} [{}; seed {}]",
                    self.data.corpus, self.data.selection, self.data.seed
                ),
            ),
            (
                "tokens",
                format!(
                    "{} read, {} evaluated (excluded: {} position 0, {} special, {} high-norm)",
                    f.n_tokens_seen,
                    r.n_tokens,
                    f.exclusion.position_zero,
                    f.exclusion.special,
                    f.exclusion.high_norm
                ),
            ),
            ("L0 (active latents/token)", format!("{:.2}", s.l0)),
            ("L1 (per token)", format!("{:.3}", s.l1)),
            ("MSE (per element)", format!("{:.6}", r.mse)),
            ("MSE (per token, summed)", f4(r.mse_per_token)),
            ("FVE (centred)", f4(r.fve)),
            ("cosine similarity", f4(r.cosine)),
            ("relative reconstruction bias", f4(r.rel_bias)),
            (
                "dead latents",
                format!(
                    "{:.2} % ({} of {})",
                    100.0 * s.dead_fraction,
                    s.n_dead,
                    s.d_sae
                ),
            ),
            (
                "dense latents (>10 %)",
                format!("{:.2} % ({})", 100.0 * s.dense_fraction, s.n_dense),
            ),
        ];
        if let Some(d) = &f.downstream {
            rows.extend([
                ("CE positions", d.n_positions.to_string()),
                ("CE clean (nats)", f4(d.ce_clean)),
                ("CE with SAE", f4(d.ce_sae)),
                ("CE zero-ablated", f4(d.ce_zero_abl)),
                ("CE mean-ablated", f4(d.ce_mean_abl)),
                ("CE loss recovered (zero)", opt(d.ce_recovered_zero)),
                ("CE loss recovered (mean)", opt(d.ce_recovered_mean)),
                (
                    "CE zero-ablated, all positions (SAELens/SAEBench)",
                    opt(d.ce_zero_abl_all_positions),
                ),
                (
                    "CE loss recovered (zero, all positions; SAELens/SAEBench)",
                    opt(d.ce_recovered_zero_all_positions),
                ),
                ("delta LM loss (nats)", f4(d.delta_lm_loss)),
                ("KL(clean || SAE)", f4(d.kl_sae)),
                ("KL(clean || zero-abl)", f4(d.kl_zero_abl)),
                ("KL(clean || mean-abl)", f4(d.kl_mean_abl)),
                ("KL score (zero)", opt(d.kl_score_zero)),
                ("KL score (mean)", opt(d.kl_score_mean)),
            ]);
        }
        rows
    }
}

impl crate::seeds::NamedFigures for EvalReport {
    /// The headline figures; the downstream ones are NaN when `--ce-tokens 0` skipped them.
    fn named(&self) -> Vec<(&'static str, f64)> {
        let f = &self.figures;
        let d = f.downstream.as_ref();
        let down =
            |g: fn(&crate::DownstreamStats) -> Option<f64>| d.and_then(g).unwrap_or(f64::NAN);
        vec![
            ("fve", f.reconstruction.fve),
            ("mse_per_token", f.reconstruction.mse_per_token),
            ("cosine", f.reconstruction.cosine),
            ("l0", f.sparsity.l0),
            ("dead_fraction", f.sparsity.dead_fraction),
            ("dense_fraction", f.sparsity.dense_fraction),
            ("ce_sae", down(|s| Some(s.ce_sae))),
            ("ce_recovered_zero", down(|s| s.ce_recovered_zero)),
            ("ce_recovered_mean", down(|s| s.ce_recovered_mean)),
            ("delta_lm_loss", down(|s| Some(s.delta_lm_loss))),
            ("kl_sae", down(|s| Some(s.kl_sae))),
        ]
    }

    fn label(&self) -> String {
        self.evaluated.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The web app's fixture, an `eval.json` as `zephyra eval` writes it.
    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../zephyra-web/tests/fixtures/eval.json"
    );

    #[test]
    fn the_evaluated_sae_stays_flat_in_the_json() {
        let text = std::fs::read_to_string(FIXTURE).expect("the web fixture eval.json");
        let flat: serde_json::Value = serde_json::from_str(&text).unwrap();
        let report: EvalReport = serde_json::from_value(flat.clone()).unwrap();
        assert_eq!(report.evaluated.hook, flat["hook"].as_str().unwrap());
        assert_eq!(
            report.evaluated.d_sae as u64,
            flat["d_sae"].as_u64().unwrap()
        );
        assert!(flat.get("evaluated").is_none());
        // Written back, the head's keys are where they were, with their values.
        let back = serde_json::to_value(&report).unwrap();
        for key in EVALUATED_SAE_KEYS {
            assert!(!flat[key].is_null(), "{key} in the fixture");
            assert_eq!(back[key], flat[key], "{key}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.json");
        report.write(&path).unwrap();
        assert_eq!(EvalReport::read(&path).unwrap(), report);
    }
}
