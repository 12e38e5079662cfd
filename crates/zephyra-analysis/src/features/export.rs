//! Export to the Neuronpedia / SAEDashboard batch layout: `batch-{n}.json` files, each
//! `{"model_id", "layer", "sae_set", "features": [...]}` with one dashboard object per latent
//! (`feature_index`, `pos_str`/`pos_values`, `neg_str`/`neg_values`, `frac_nonzero`, the activation
//! histogram as `freq_hist_data_bar_values`/`_heights`, `correlated_features_*`, and `activations`: example
//! windows with `tokens`, `values`, `bin_min`, `bin_max`, `bin_contains`). Top contexts carry `bin_min = -1`
//! (SAEDashboard's marker for the "top activations" group); quantile samples carry their group's range and
//! the fraction of firings it contains.

use std::path::Path;

use serde_json::{json, Value};

use super::store::FeatureStore;
use super::{hist_bin_lower, FeatureRecord};
use crate::error::{AnalysisError, Result};
use zephyra_io::write_atomic;

/// Latents per batch file.
pub const FEATURES_PER_BATCH: usize = 128;

/// One latent's dashboard object.
pub fn feature_json(rec: &FeatureRecord, n_prompts: u64, ctx: usize, dataset: &str) -> Value {
    let mut activations: Vec<Value> = rec
        .top
        .iter()
        .map(|e| json!({"bin_min": -1.0, "bin_max": rec.max_act, "bin_contains": -1.0, "tokens": e.tokens, "values": e.acts}))
        .collect();
    let n_groups = rec.quantiles.len().max(1) as f64;
    for g in &rec.quantiles {
        for e in &g.examples {
            activations.push(json!({
                "bin_min": g.min_act, "bin_max": g.max_act, "bin_contains": 1.0 / n_groups,
                "tokens": e.tokens, "values": e.acts,
            }));
        }
    }
    let (bar_values, bar_heights): (Vec<f32>, Vec<u32>) = rec
        .histogram
        .iter()
        .enumerate()
        .filter(|(_, &h)| h > 0)
        .map(|(b, &h)| (hist_bin_lower(b), h))
        .unzip();
    json!({
        "feature_index": rec.id,
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": rec.cofire.iter().map(|c| c.id).collect::<Vec<_>>(),
        "correlated_features_l1": rec.cofire.iter().map(|c| c.fraction).collect::<Vec<_>>(),
        "correlated_features_pearson": [],
        "neg_str": rec.logits_neg.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "neg_values": rec.logits_neg.iter().map(|t| t.value).collect::<Vec<_>>(),
        "pos_str": rec.logits_pos.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "pos_values": rec.logits_pos.iter().map(|t| t.value).collect::<Vec<_>>(),
        "frac_nonzero": rec.density,
        "freq_hist_data_bar_values": bar_values,
        "freq_hist_data_bar_heights": bar_heights,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "n_prompts_total": n_prompts,
        "n_tokens_in_prompt": ctx,
        "dataset": dataset,
        "decoder_weights_dist": [],
        "activations": activations,
    })
}

/// Writes every latent of `store` into `out_dir/batch-{n}.json`; returns the number of files.
pub fn export_neuronpedia(
    store: &FeatureStore,
    out_dir: &Path,
    model_id: &str,
    sae_set: &str,
) -> Result<usize> {
    std::fs::create_dir_all(out_dir).map_err(|source| AnalysisError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let index = store.index();
    let layer = index
        .hook
        .strip_prefix("blocks.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let mut n_files = 0;
    let ids: Vec<u32> = index.features.iter().map(|f| f.id).collect();
    for (n, chunk) in ids.chunks(FEATURES_PER_BATCH).enumerate() {
        let mut features = Vec::with_capacity(chunk.len());
        for &id in chunk {
            if let Some(rec) = store.record(id)? {
                features.push(feature_json(
                    &rec,
                    index.n_contexts,
                    index.options.ctx,
                    &index.corpus,
                ));
            }
        }
        let batch =
            json!({"model_id": model_id, "layer": layer, "sae_set": sae_set, "features": features});
        let path = out_dir.join(format!("batch-{n}.json"));
        let bytes = serde_json::to_vec(&batch).map_err(|source| AnalysisError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)?;
        n_files += 1;
    }
    Ok(n_files)
}
