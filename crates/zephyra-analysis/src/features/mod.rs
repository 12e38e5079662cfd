//! Per-latent feature statistics: what makes each latent fire, and what it does to the output.
//!
//! One pass over a corpus ([`compute_features`]) runs the model to the SAE's hook, drops the rows the data
//! crate's [`ExclusionRule`] drops (position 0, special tokens, attention sinks), encodes the rest and
//! accumulates, per latent, in memory bounded by the options (not by the corpus):
//!
//! - the top-N activating contexts (one per context: a token window around the maximum, with that latent's
//!   activation at every token of the window);
//! - a uniform reservoir of firing examples, reported grouped by activation quantile;
//! - a histogram of the activations over fixed log10 bins ([`HIST_LOG10_MIN`]..[`HIST_LOG10_MAX`]);
//! - firing density, mean and max activation;
//! - the latents that fire together with it most often (space-saving heavy hitters, Metwally et al. 2005,
//!   "Efficient Computation of Frequent and Top-k Elements in Data Streams");
//! - the latents whose activations correlate most with it over the kept tokens (Pearson correlation and
//!   cosine similarity, as sae-dashboard's feature tables define them), from exact per-latent sums `Σx`,
//!   `Σx²` and per-pair sums `Σxy` kept for the co-firing candidates ([`Correlation`]);
//!
//! and, from the weights alone, the decoder direction's logit effect ([`logits`]): the tokens it promotes and
//! suppresses through the unembedding after the final norm's scale (the "direct logit attribution" of the
//! direction, as in Bricken et al. 2023, "Towards Monosemanticity").
//!
//! The pass checkpoints its accumulators every few batches and resumes from them ([`FeatureOptions::resume`]).
//! Results are written in an indexed layout ([`store`]) that a reader opens without loading every record.

mod accum;
pub mod export;
pub mod logits;
#[cfg(feature = "test-util")]
pub mod planted;
mod run;
pub mod store;

use serde::{Deserialize, Serialize};
use zephyra_data::ExclusionRule;

pub use run::{compute_features, compute_features_until, FeatureJob, FeatureProgress};
pub use store::{FeatureIndex, FeatureStore, FeatureSummary, Provenance};

/// Lower edge of the activation histogram, as log10 of the activation.
pub const HIST_LOG10_MIN: f32 = -3.0;
/// Upper edge of the activation histogram, as log10 of the activation.
pub const HIST_LOG10_MAX: f32 = 4.0;
/// Number of histogram bins (0.1 decade each); activations outside the range fall into the end bins.
pub const HIST_BINS: usize = 70;

/// Settings of a feature-statistics pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureOptions {
    /// Tokens per context.
    pub ctx: usize,
    /// Contexts per forward pass.
    pub batch_contexts: usize,
    /// Stop after this many tokens have been read (kept or not).
    pub max_tokens: u64,
    /// Top activating contexts kept per latent.
    pub n_top: usize,
    /// Size of each latent's reservoir of random firing examples (grouped into quantiles when written).
    pub n_samples: usize,
    /// Tokens shown before the maximum in each example window.
    pub window_before: usize,
    /// Tokens shown after the maximum in each example window.
    pub window_after: usize,
    /// Promoted and suppressed tokens kept per latent.
    pub n_logits: usize,
    /// Co-firing latents reported per latent.
    pub n_cofire: usize,
    /// Only the `cofire_active` strongest latents of each token count towards co-firing (bounds the work on
    /// dense SAEs).
    pub cofire_active: usize,
    /// Seed of the context shuffle and of the reservoirs.
    pub seed: u64,
    /// Which rows are dropped before encoding.
    pub exclusion: ExclusionRule,
    /// Write a checkpoint every this many batches (0: never).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint in the output directory when there is one.
    pub resume: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        Self {
            ctx: 128,
            batch_contexts: 8,
            max_tokens: 1_000_000,
            n_top: 20,
            n_samples: 24,
            window_before: 12,
            window_after: 4,
            n_logits: 10,
            n_cofire: 8,
            cofire_active: 16,
            seed: 0,
            exclusion: ExclusionRule::default(),
            checkpoint_every: 64,
            resume: true,
        }
    }
}

/// One example of a latent firing: a window of tokens around a position, with the latent's activation at
/// each token of the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The latent's activation at the example's position.
    pub act: f32,
    /// Index of the context in the pass (reading order after shuffling).
    pub context: u64,
    /// Position of the example inside its context.
    pub pos: u32,
    /// Index inside `token_ids` of the example's position.
    pub center: u32,
    /// The window's token ids.
    pub token_ids: Vec<u32>,
    /// The window's tokens as text.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The latent's activation at each token of the window (0 where it did not fire or the row was excluded).
    pub acts: Vec<f32>,
}

/// A token and a value attached to it (a logit effect, a count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenValue {
    /// Token id.
    pub id: u32,
    /// The token as text.
    pub token: String,
    /// The value.
    pub value: f32,
}

/// A latent that fires together with another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cofire {
    /// The other latent.
    pub id: u32,
    /// Tokens on which both fired (an estimate from above: space-saving counts over-estimate by at most the
    /// smallest count kept).
    pub count: u64,
    /// `count / fires of this latent`.
    pub fraction: f32,
}

/// A latent whose activations correlate with another's, over every kept token of the pass.
///
/// With `n` kept tokens and the two activation vectors `x`, `y` (0 where a latent did not fire):
/// `pearson = (n Σxy − Σx Σy) / √((n Σx² − (Σx)²)(n Σy² − (Σy)²))` and `cosine = Σxy / √(Σx² Σy²)`
/// (0 where a denominator is 0). `Σx`, `Σx²` are exact; `Σxy` is kept only for the co-firing candidates
/// (pairs among each token's [`FeatureOptions::cofire_active`] strongest latents, in the bounded co-firing
/// counters), so a pair's values are exact when it never co-fired outside those and its counter was never
/// evicted, and an underestimate otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    /// The other latent.
    pub id: u32,
    /// Pearson correlation of the two activation vectors, in [−1, 1].
    pub pearson: f32,
    /// Cosine similarity of the two activation vectors, in [0, 1] (activations are non-negative).
    pub cosine: f32,
}

/// Pearson correlation and cosine similarity `(pearson, cosine)` of two activation vectors over `n`
/// tokens, from their sums (see [`Correlation`]); 0 where a denominator is 0, clamped to [−1, 1].
pub fn correlation(n: f64, sx: f64, sy: f64, sxx: f64, syy: f64, sxy: f64) -> (f32, f32) {
    let ratio = |num: f64, den2: f64| {
        if den2 > 0.0 {
            (num / den2.sqrt()).clamp(-1.0, 1.0) as f32
        } else {
            0.0
        }
    };
    let var_x = (n * sxx - sx * sx).max(0.0);
    let var_y = (n * syy - sy * sy).max(0.0);
    (
        ratio(n * sxy - sx * sy, var_x * var_y),
        ratio(sxy, sxx * syy),
    )
}

/// A group of examples from one activation quantile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileGroup {
    /// Lower activation of the group's examples.
    pub min_act: f32,
    /// Upper activation of the group's examples.
    pub max_act: f32,
    /// Examples, strongest first.
    pub examples: Vec<Example>,
}

/// A latent's headline figures: the first keys of its record, of its summary in the index and of its row
/// in the web app's list (each flattens them, so the keys keep their names and order).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatentStats {
    /// Latent index.
    pub id: u32,
    /// Tokens (kept rows) on which it fired.
    pub n_fires: u64,
    /// `n_fires / kept tokens`.
    pub density: f64,
    /// Mean activation over the tokens where it fired.
    pub mean_act: f32,
    /// Largest activation seen.
    pub max_act: f32,
}

/// Everything known about one latent (one line of `features.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRecord {
    /// Id, firing count, density, mean and max activation.
    #[serde(flatten)]
    pub stats: LatentStats,
    /// Top activating contexts, strongest first.
    pub top: Vec<Example>,
    /// Random firing examples grouped by activation quantile, strongest group first.
    pub quantiles: Vec<QuantileGroup>,
    /// Counts over the log10 bins (see [`HIST_LOG10_MIN`], [`HIST_BINS`]).
    pub histogram: Vec<u32>,
    /// Tokens the decoder direction promotes most, largest first.
    pub logits_pos: Vec<TokenValue>,
    /// Tokens the decoder direction suppresses most, most negative first.
    pub logits_neg: Vec<TokenValue>,
    /// Latents firing together with this one most often.
    pub cofire: Vec<Cofire>,
    /// Latents whose activations correlate most with this one's, largest Pearson correlation first
    /// (absent from stores written before it was computed).
    #[serde(default)]
    pub correlated: Vec<Correlation>,
}

/// Histogram bin of a positive activation.
pub fn hist_bin(act: f32) -> usize {
    let width = (HIST_LOG10_MAX - HIST_LOG10_MIN) / HIST_BINS as f32;
    let b = ((act.log10() - HIST_LOG10_MIN) / width).floor();
    if b.is_nan() || b < 0.0 {
        0
    } else {
        (b as usize).min(HIST_BINS - 1)
    }
}

/// Lower edge (as an activation) of histogram bin `b`.
pub fn hist_bin_lower(b: usize) -> f32 {
    let width = (HIST_LOG10_MAX - HIST_LOG10_MIN) / HIST_BINS as f32;
    10f32.powf(HIST_LOG10_MIN + b as f32 * width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_are_log10_tenths() {
        assert_eq!(hist_bin(1e-3), 0);
        assert_eq!(hist_bin(1e-9), 0);
        assert_eq!(hist_bin(1.0), 30);
        assert_eq!(hist_bin(1.3), 31); // log10 1.3 = 0.114
        assert_eq!(hist_bin(1e9), HIST_BINS - 1);
        assert!((hist_bin_lower(30) - 1.0).abs() < 1e-5);
    }

    /// The keys of a record and of an index summary, in order, as the web app and older stores expect
    /// them: the flattened [`LatentStats`] first.
    #[test]
    fn record_and_summary_keep_their_keys_in_order() {
        let stats = LatentStats {
            id: 7,
            n_fires: 3,
            density: 0.25,
            mean_act: 1.5,
            max_act: 2.0,
        };
        let record = FeatureRecord {
            stats,
            top: Vec::new(),
            quantiles: Vec::new(),
            histogram: vec![1, 2],
            logits_pos: vec![TokenValue {
                id: 4,
                token: "a".into(),
                value: 0.5,
            }],
            logits_neg: Vec::new(),
            cofire: Vec::new(),
            correlated: Vec::new(),
        };
        let json = r#"{"id":7,"n_fires":3,"density":0.25,"mean_act":1.5,"max_act":2.0,"top":[],"quantiles":[],"histogram":[1,2],"logits_pos":[{"id":4,"token":"a","value":0.5}],"logits_neg":[],"cofire":[],"correlated":[]}"#;
        assert_eq!(serde_json::to_string(&record).unwrap(), json);
        assert_eq!(serde_json::from_str::<FeatureRecord>(json).unwrap(), record);
        // A record written before `correlated` existed still reads.
        let old = json.replace(r#","correlated":[]"#, "");
        assert_eq!(serde_json::from_str::<FeatureRecord>(&old).unwrap(), record);

        let summary = FeatureSummary {
            stats,
            top_tokens: vec!["x".into()],
            top_logits: Vec::new(),
            offset: 10,
            len: 20,
        };
        let json = r#"{"id":7,"n_fires":3,"density":0.25,"mean_act":1.5,"max_act":2.0,"top_tokens":["x"],"top_logits":[],"offset":10,"len":20}"#;
        assert_eq!(serde_json::to_string(&summary).unwrap(), json);
        assert_eq!(
            serde_json::from_str::<FeatureSummary>(json).unwrap(),
            summary
        );
    }

    #[test]
    fn correlation_matches_the_definitions_by_hand() {
        // x = [1, 2, 0, 3], y = [2, 0, 0, 1]: Σx 6, Σy 3, Σx² 14, Σy² 5, Σxy 5, n 4.
        // Pearson = (4·5 − 6·3) / √((4·14 − 36)(4·5 − 9)) = 2 / √220; cosine = 5 / √70.
        let (p, c) = correlation(4.0, 6.0, 3.0, 14.0, 5.0, 5.0);
        assert!((f64::from(p) - 2.0 / 220f64.sqrt()).abs() < 1e-6, "{p}");
        assert!((f64::from(c) - 5.0 / 70f64.sqrt()).abs() < 1e-6, "{c}");
        // A constant vector has no variance: Pearson 0, never NaN; a dead latent gives 0 for both.
        assert_eq!(correlation(4.0, 4.0, 6.0, 4.0, 14.0, 6.0).0, 0.0);
        assert_eq!(correlation(4.0, 6.0, 0.0, 14.0, 0.0, 0.0), (0.0, 0.0));
        // Perfectly anti-correlated: x = [1, 0], y = [0, 1].
        assert_eq!(correlation(2.0, 1.0, 1.0, 1.0, 1.0, 0.0), (-1.0, 0.0));
    }
}
