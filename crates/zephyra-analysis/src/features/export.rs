//! Export to the Neuronpedia / SAEDashboard batch layout, as sae-dashboard 0.8.0 writes it (its
//! `NeuronpediaDashboardBatch` / `Feature` / `Activation` classes) and Neuronpedia's importer reads it.
//!
//! `batch-{n}.json`: `{"model_id", "layer", "sae_set", "sae_id_suffix": null, "features": [...]}`, one
//! dashboard object per latent:
//! - `activations`: example windows with `tokens` (vocabulary strings with sae-dashboard's byte-level
//!   mapping, `Ġ` → space, `Ċ` → newline, …; not per-token decoding, which breaks characters spanning
//!   tokens), `values`, `qualifying_token_index` (the example's own token), `bin_min`, `bin_max`,
//!   `bin_contains`. Top contexts carry `bin_min = -1`, `bin_contains = -1` (the "top activations" group);
//!   quantile samples carry their group's range and the fraction of firings it holds;
//! - `freq_hist_data_bar_values` / `_heights`: 50 equal-width bins over [smallest, largest] non-zero
//!   activation, at their centres, empty bins kept. The store keeps a 0.1-decade log10 histogram, so the
//!   counts are spread over the linear bins in proportion to overlap (uniform within a log bin); the total
//!   is exact, and the smallest activation is the lower edge of the lowest occupied log bin;
//! - `pos_str`/`pos_values`, `neg_str`/`neg_values`: the logit effect, tokens as vocabulary strings;
//! - `correlated_features_*`: as sae-dashboard's `RollingCorrCoef.topk_pearson` fills them, the
//!   [`CORRELATED_ROWS`] latents of largest Pearson correlation of the activations over the tokens
//!   (`_indices`, `_pearson`), with the cosine similarity of the same pairs under `_l1`, from the record's
//!   [`Correlation`](super::Correlation)s (so among the co-firing candidates only: sae-dashboard ranks every
//!   other latent of its batch; fewer rows when there are fewer candidates). The neuron tables
//!   (`correlated_neurons_*`, `neuron_alignment_*`) stay empty;
//! - `n_tokens_in_prompt`: the tokens of one example window; `dataset`: the corpus description with every
//!   path reduced to its file name.
//!
//! Values are rounded to 3 decimals (`frac_nonzero` to 5, the precision sae-dashboard's density title
//! carries). `layer` comes from the hook (`blocks.N.…`); another hook is an error.

use std::path::Path;

use serde_json::{json, Value};
use zephyra_lm::Tokenizer;

use super::store::FeatureStore;
use super::{hist_bin_lower, FeatureRecord, HIST_BINS};
use crate::error::{AnalysisError, Result};
use zephyra_io::write_atomic;

/// Latents per batch file.
pub const FEATURES_PER_BATCH: usize = 128;

/// Bins of the activation histogram (sae-dashboard's default).
pub const FREQ_HIST_BINS: usize = 50;

/// Rows of the correlated-features table (sae-dashboard's `FeatureTablesConfig.n_rows`, as its
/// Neuronpedia runner sets it).
pub const CORRELATED_ROWS: usize = 3;

/// sae-dashboard's replacements of byte-level vocabulary pieces, applied in this order.
const VOCAB_REPLACEMENTS: [(&str, &str); 10] = [
    ("âĢĶ", "—"),
    ("âĢĵ", "–"),
    ("âĢľ", "“"),
    ("âĢĿ", "”"),
    ("âĢĺ", "‘"),
    ("âĢĻ", "’"),
    ("âĢĭ", " "),
    ("Ġ", " "),
    ("Ċ", "\n"),
    ("ĉ", "\t"),
];

/// What sae-dashboard shows for an id outside the vocabulary.
const OUT_OF_RANGE_TOKEN: &str = "<|outofrange|>";

/// `v` rounded to `digits` decimals.
fn round_to(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

fn round3(v: f32) -> f64 {
    round_to(f64::from(v), 3)
}

/// The vocabulary string of `id` as sae-dashboard shows it.
pub fn vocab_string(tokenizer: &Tokenizer, id: u32) -> String {
    match tokenizer.token_str(id) {
        Some(piece) => VOCAB_REPLACEMENTS
            .iter()
            .fold(piece.to_string(), |s, (from, to)| s.replace(from, to)),
        None => OUT_OF_RANGE_TOKEN.to_string(),
    }
}

/// The layer of a TransformerLens hook name (`blocks.N.…`).
pub fn hook_layer(hook: &str) -> Result<usize> {
    hook.strip_prefix("blocks.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<usize>().ok())
        .ok_or_else(|| {
            AnalysisError::InvalidArgument(format!(
                "hook `{hook}` is not `blocks.N.…`: a Neuronpedia batch needs the layer number"
            ))
        })
}

/// `description` with every path (a word holding `/` or `\`) reduced to its file name.
pub fn without_paths(description: &str) -> String {
    description
        .split(' ')
        .map(|word| match word.rfind(['/', '\\']) {
            Some(i) => &word[i + 1..],
            None => word,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The log10 histogram of a latent redistributed over [`FREQ_HIST_BINS`] equal-width bins from the lower
/// edge of its lowest occupied bin to `max_act`: `(centres, heights)`, empty bins kept, heights summing
/// to the log histogram's total (largest remainders). Empty input: two empty lists.
pub fn linear_histogram(log_hist: &[u32], max_act: f32) -> (Vec<f64>, Vec<u64>) {
    let Some(first) = log_hist.iter().position(|&c| c > 0) else {
        return (Vec::new(), Vec::new());
    };
    let lo = f64::from(hist_bin_lower(first));
    let hi = f64::from(max_act).max(lo);
    let width = (hi - lo) / FREQ_HIST_BINS as f64;
    let bin_of = |x: f64| {
        if width > 0.0 {
            (((x - lo) / width).floor().max(0.0) as usize).min(FREQ_HIST_BINS - 1)
        } else {
            0
        }
    };
    let mut shares = vec![0f64; FREQ_HIST_BINS];
    for (b, &count) in log_hist.iter().enumerate().filter(|(_, &c)| c > 0) {
        let upper = if b + 1 < HIST_BINS {
            f64::from(hist_bin_lower(b + 1))
        } else {
            f64::INFINITY
        };
        let (l, u) = (f64::from(hist_bin_lower(b)).max(lo), upper.min(hi));
        if u <= l || width == 0.0 {
            shares[bin_of(l.min(hi))] += f64::from(count);
            continue;
        }
        for (k, share) in shares
            .iter_mut()
            .enumerate()
            .take(bin_of(u) + 1)
            .skip(bin_of(l))
        {
            let (bl, bu) = (lo + k as f64 * width, lo + (k + 1) as f64 * width);
            let overlap = (u.min(bu) - l.max(bl)).max(0.0);
            *share += f64::from(count) * overlap / (u - l);
        }
    }
    let total: u64 = log_hist.iter().map(|&c| u64::from(c)).sum();
    let mut heights: Vec<u64> = shares.iter().map(|s| s.floor() as u64).collect();
    let mut order: Vec<usize> = (0..FREQ_HIST_BINS).collect();
    order.sort_by(|&a, &b| {
        let frac = |i: usize| shares[i] - shares[i].floor();
        frac(b).total_cmp(&frac(a)).then(a.cmp(&b))
    });
    let missing = total.saturating_sub(heights.iter().sum());
    for &i in order.iter().cycle().take(missing as usize) {
        heights[i] += 1;
    }
    let centres = (0..FREQ_HIST_BINS)
        .map(|k| round_to(lo + (k as f64 + 0.5) * width, 3))
        .collect();
    (centres, heights)
}

/// One latent's dashboard object.
pub fn feature_json(
    rec: &FeatureRecord,
    tokenizer: &Tokenizer,
    n_prompts: u64,
    dataset: &str,
) -> Value {
    let strings = |ids: &[u32]| -> Vec<String> {
        ids.iter().map(|&id| vocab_string(tokenizer, id)).collect()
    };
    let example = |e: &super::Example, bin_min: f64, bin_max: f64, bin_contains: f64| {
        json!({
            "bin_min": bin_min, "bin_max": bin_max, "bin_contains": bin_contains,
            "tokens": strings(&e.token_ids),
            "values": e.acts.iter().map(|&a| round3(a)).collect::<Vec<_>>(),
            "qualifying_token_index": e.center,
        })
    };
    let mut activations: Vec<Value> = rec
        .top
        .iter()
        .map(|e| example(e, -1.0, round3(rec.stats.max_act), -1.0))
        .collect();
    let n_groups = rec.quantiles.len().max(1) as f64;
    for g in &rec.quantiles {
        for e in &g.examples {
            let contains = round_to(1.0 / n_groups, 3);
            activations.push(example(e, round3(g.min_act), round3(g.max_act), contains));
        }
    }
    let window = rec
        .top
        .iter()
        .chain(rec.quantiles.iter().flat_map(|g| &g.examples))
        .map(|e| e.token_ids.len())
        .max()
        .unwrap_or(0);
    let (bar_values, bar_heights) = linear_histogram(&rec.histogram, rec.stats.max_act);
    let logit_ids = |v: &[super::TokenValue]| v.iter().map(|t| t.id).collect::<Vec<_>>();
    let logit_values =
        |v: &[super::TokenValue]| v.iter().map(|t| round3(t.value)).collect::<Vec<_>>();
    let correlated = &rec.correlated[..rec.correlated.len().min(CORRELATED_ROWS)];
    json!({
        "feature_index": rec.stats.id,
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": correlated.iter().map(|c| c.id).collect::<Vec<_>>(),
        "correlated_features_l1": correlated.iter().map(|c| round3(c.cosine)).collect::<Vec<_>>(),
        "correlated_features_pearson": correlated.iter().map(|c| round3(c.pearson)).collect::<Vec<_>>(),
        "neg_str": strings(&logit_ids(&rec.logits_neg)),
        "neg_values": logit_values(&rec.logits_neg),
        "pos_str": strings(&logit_ids(&rec.logits_pos)),
        "pos_values": logit_values(&rec.logits_pos),
        "frac_nonzero": round_to(rec.stats.density, 5),
        "freq_hist_data_bar_values": bar_values,
        "freq_hist_data_bar_heights": bar_heights,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "n_prompts_total": n_prompts,
        "n_tokens_in_prompt": window,
        "dataset": dataset,
        "decoder_weights_dist": [],
        "vector": [],
        "activations": activations,
    })
}

/// Writes every latent of `store` into `out_dir/batch-{n}.json`; returns the number of files. Token
/// strings come from `tokenizer`'s vocabulary (the model the features were computed on).
pub fn export_neuronpedia(
    store: &FeatureStore,
    tokenizer: &Tokenizer,
    out_dir: &Path,
    model_id: &str,
    sae_set: &str,
) -> Result<usize> {
    let index = store.index();
    let layer = hook_layer(&index.hook)?;
    std::fs::create_dir_all(out_dir).map_err(|source| AnalysisError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let dataset = without_paths(&index.corpus);
    let mut n_files = 0;
    let ids: Vec<u32> = index.features.iter().map(|f| f.stats.id).collect();
    for (n, chunk) in ids.chunks(FEATURES_PER_BATCH).enumerate() {
        let mut features = Vec::with_capacity(chunk.len());
        for &id in chunk {
            if let Some(rec) = store.record(id)? {
                features.push(feature_json(&rec, tokenizer, index.n_contexts, &dataset));
            }
        }
        let batch = json!({"model_id": model_id, "layer": layer, "sae_set": sae_set,
            "sae_id_suffix": Value::Null, "features": features});
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::hist_bin;

    #[test]
    fn layers_come_from_block_hooks_only() {
        assert_eq!(hook_layer("blocks.15.hook_resid_pre").unwrap(), 15);
        assert_eq!(hook_layer("blocks.0.hook_mlp_out").unwrap(), 0);
        for bad in [
            "hook_embed",
            "ln_final.hook_normalized",
            "blocks.x.hook_resid_pre",
            "",
        ] {
            assert!(hook_layer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_reduced_to_file_names() {
        assert_eq!(
            without_paths("/home/me/data/shard-0.txt, ./c/x.parquet (2 files)"),
            "shard-0.txt, x.parquet (2 files)"
        );
        assert_eq!(
            without_paths("default corpus (12 files)"),
            "default corpus (12 files)"
        );
    }

    #[test]
    fn the_histogram_has_50_equal_bins_at_centres_and_keeps_every_count() {
        // Hand-made: 10 activations in the log bin of 1.0 and 30 in that of 2.0; max 2.5.
        let mut log_hist = vec![0u32; HIST_BINS];
        log_hist[hist_bin(1.0)] += 10;
        log_hist[hist_bin(2.0)] += 30;
        let (centres, heights) = linear_histogram(&log_hist, 2.5);
        assert_eq!(
            (centres.len(), heights.len()),
            (FREQ_HIST_BINS, FREQ_HIST_BINS)
        );
        assert_eq!(heights.iter().sum::<u64>(), 40);
        let lo = f64::from(hist_bin_lower(hist_bin(1.0)));
        let width = (2.5 - lo) / 50.0;
        assert!((centres[0] - round_to(lo + width / 2.0, 3)).abs() < 1e-12);
        assert!((centres[49] - round_to(2.5 - width / 2.0, 3)).abs() < 1e-12);
        // Nothing lies between the two log bins: [10^0.1, 10^0.3) holds no activation.
        let gap = |x: f64| ((x - lo) / width) as usize;
        let (gap_lo, gap_hi) = (gap(10f64.powf(0.1)) + 1, gap(10f64.powf(0.3)));
        assert!(gap_hi > gap_lo);
        assert!(
            heights[gap_lo..gap_hi].iter().all(|&h| h == 0),
            "{heights:?}"
        );
        assert!(linear_histogram(&vec![0; HIST_BINS], 0.0).0.is_empty());
    }
}
