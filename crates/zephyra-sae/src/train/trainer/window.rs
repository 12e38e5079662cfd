//! The metrics window: sums over the steps since the last `metrics.jsonl` line.

use super::Trainer;
use crate::metrics::MetricsRecord;

/// Sums over the steps between two metrics lines (saved in checkpoints, so a resumed run logs the same
/// lines).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    steps: u64,
    loss: f64,
    mse: f64,
    sparsity: f64,
    aux: f64,
    l0: f64,
    sse: f64,
    sst: f64,
    grad_norm: f64,
    /// Matryoshka: Σ sse of each nested prefix (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    prefix_sse: Vec<f64>,
}

impl Window {
    pub(super) fn add(&mut self, s: &crate::StepStats, grad_norm: f64) {
        self.steps += 1;
        self.loss += s.loss;
        self.mse += s.mse_loss;
        self.sparsity += s.sparsity_loss;
        self.aux += s.aux_loss;
        self.l0 += s.l0;
        self.sse += s.sse;
        self.sst += s.sst;
        self.grad_norm = grad_norm;
        if s.prefix_sse.iter().any(|&v| v != 0.0) {
            self.prefix_sse.resize(s.prefix_sse.len(), 0.0);
            for (a, &b) in self.prefix_sse.iter_mut().zip(&s.prefix_sse) {
                *a += b;
            }
        }
    }

    /// FVE of each nested prefix (matryoshka with `levels` levels; empty otherwise).
    pub(super) fn prefix_fve(&self, levels: usize) -> Vec<f64> {
        let sst = self.sst.max(f64::MIN_POSITIVE);
        self.prefix_sse
            .iter()
            .take(levels)
            .map(|sse| 1.0 - sse / sst)
            .collect()
    }

    pub(super) fn record(
        &self,
        t: &Trainer,
        lr: f64,
        coeff: f64,
        tokens_per_s: f64,
    ) -> MetricsRecord {
        let n = self.steps.max(1) as f64;
        MetricsRecord {
            step: t.step,
            tokens: t.tokens,
            loss: self.loss / n,
            mse: self.mse / n,
            sparsity_loss: self.sparsity / n,
            aux_loss: self.aux / n,
            l0: self.l0 / n,
            fve: 1.0 - self.sse / self.sst.max(f64::MIN_POSITIVE),
            dead_fraction: t.dead_fraction(),
            lr,
            sparsity_coeff: coeff,
            grad_norm: self.grad_norm,
            skipped_rows: t.skipped_rows,
            tokens_per_s,
            fve_prefixes: self.prefix_fve(match t.cfg.sae.architecture {
                crate::Architecture::Matryoshka { groups, .. } => groups.levels(),
                _ => 0,
            }),
        }
    }
}
