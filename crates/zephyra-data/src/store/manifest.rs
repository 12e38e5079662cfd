//! `manifest.json`: what a store holds and how it was made.
//!
//! Schema (version 1, [`VERSION`]; all fields always present unless marked optional; a manifest of
//! another version, or whose shard `file` is not a plain file name inside the store, is refused):
//! ```text
//! {
//!   "format": "zephyra-activation-store", "version": 1,
//!   "complete": bool,                 // false while a harvest is running or was interrupted
//!   "model": {"path": str, "sha256": str, "n_layers": int, "d_model": int, "context_length": int,
//!             "precision": "f32" | "bf16"},   // the forward's linear layers; absent (old stores) = f32
//!   "hook": "blocks.15.hook_resid_pre", "d": 576, "ctx": 128, "dtype": "float32" | "bfloat16",
//!   "seed": int, "shuffle_contexts": int, "contexts_per_shard": int,
//!   "target_contexts": int,           // contexts the harvest was asked for (ceil(--tokens / ctx))
//!   "corpus": {"description": str, "text_field": str, "n_inputs": int,
//!              "read": {n_files, n_documents, n_bytes, n_lossy, n_malformed_lines, n_empty} | null},
//!   "tokenizer": {"eos_token_id": int, "vocab_size": int},
//!   "exclusion": {"rule": {"exclude_position_zero": bool, "exclude_special": bool,
//!                          "max_norm_multiple": float | null},
//!                 "description": str,
//!                 "counts": {"total", "kept", "position_zero", "special", "high_norm"}},
//!   "n_contexts": int, "n_rows": int, // contexts harvested, rows kept (= sum of shard rows)
//!   "stats": {"mean": [d floats], "mean_norm": float, "max_norm": float,
//!             "total_variance": float  // mean over rows of ||x - mean||^2 (FVE denominator per row)
//!            },
//!   "accumulator": {"sum": [d], "sum_sq": float, "sum_norm": float, "max_norm": float},  // exact f64 sums
//!   "shards": [{"file": "shard-00000.safetensors", "n_rows": int, "n_contexts": int,
//!               "first_context": int, "bytes": int, "sha256": str, "median_norm": float,
//!               "norm_threshold": float | null, "counts": {...}}]
//! }
//! ```
//! Statistics are computed in f64 from the float32 activations of the kept rows (before any bfloat16
//! rounding), in shard order, so an interrupted-and-resumed harvest writes the same manifest.

use std::path::Path;

use serde::{Deserialize, Serialize};

use zephyra_lm::Precision;

use crate::corpus::ReadStats;
use crate::error::{DataError, Result};
use crate::exclude::{ExclusionCounts, ExclusionRule};

/// The `format` field.
pub const FORMAT: &str = "zephyra-activation-store";
/// The manifest file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The schema version this crate reads and writes.
pub const VERSION: u32 = 1;

/// Element type of the stored activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// IEEE float32 (exact).
    #[default]
    Float32,
    /// bfloat16 (half the disk, ~3 significant digits).
    Bfloat16,
}

impl std::fmt::Display for StoreDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreDtype::Float32 => "float32",
            StoreDtype::Bfloat16 => "bfloat16",
        })
    }
}

impl std::str::FromStr for StoreDtype {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "float32" | "f32" => Ok(Self::Float32),
            "bfloat16" | "bf16" => Ok(Self::Bfloat16),
            _ => Err(DataError::InvalidOption {
                name: "--dtype",
                value: s.into(),
                reason: "use float32 or bfloat16".into(),
            }),
        }
    }
}

/// The model an activation store was harvested from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Path of the GGUF file.
    pub path: String,
    /// sha256 of the GGUF file (hex).
    pub sha256: String,
    /// Blocks.
    pub n_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Maximum context length.
    pub context_length: usize,
    /// Number format of the model's linear layers during the harvest (`--precision`).
    #[serde(default)]
    pub precision: Precision,
}

/// The corpus an activation store was harvested from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusInfo {
    /// The `--data` arguments (or the default corpus's description).
    pub description: String,
    /// JSONL field / parquet column.
    pub text_field: String,
    /// Files (and stdin) in the corpus.
    pub n_inputs: usize,
    /// Reader counters at the point the harvest had all its contexts (set when complete).
    pub read: Option<ReadStats>,
}

/// Tokenizer facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// End-of-sequence token put between documents.
    pub eos_token_id: u32,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The token every context starts with (BOS for Gemma), if any; absent in stores of earlier versions,
    /// whose contexts had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_prefix: Option<u32>,
}

/// The exclusion rule and what it dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExclusionInfo {
    /// The rule.
    pub rule: ExclusionRule,
    /// The rule in words.
    pub description: String,
    /// Totals over all shards.
    pub counts: ExclusionCounts,
}

impl ExclusionInfo {
    /// A store's `rule` before any row was dropped.
    pub fn fresh(rule: ExclusionRule) -> Self {
        Self {
            rule,
            description: rule.describe(),
            counts: ExclusionCounts::default(),
        }
    }
}

/// Summary statistics of the kept rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Mean row.
    pub mean: Vec<f64>,
    /// Mean L2 norm.
    pub mean_norm: f64,
    /// Largest L2 norm.
    pub max_norm: f64,
    /// Mean squared distance to the mean row.
    pub total_variance: f64,
}

/// Exact running sums behind [`Stats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Accumulator {
    /// Σ x.
    pub sum: Vec<f64>,
    /// Σ ‖x‖².
    pub sum_sq: f64,
    /// Σ ‖x‖.
    pub sum_norm: f64,
    /// max ‖x‖.
    pub max_norm: f64,
}

impl Accumulator {
    /// Adds the rows of `acts` (`n × d`) whose norms are `norms`.
    pub fn add_rows(&mut self, acts: &[f32], d: usize, norms: &[f32]) {
        if self.sum.len() != d {
            self.sum = vec![0.0; d];
        }
        for (row, &norm) in acts.chunks_exact(d).zip(norms) {
            for (s, &v) in self.sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
            self.sum_sq += row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>();
            self.sum_norm += f64::from(norm);
            self.max_norm = self.max_norm.max(f64::from(norm));
        }
    }

    /// Statistics over `n_rows` rows.
    pub fn stats(&self, n_rows: u64) -> Stats {
        if n_rows == 0 {
            return Stats {
                mean: vec![0.0; self.sum.len()],
                ..Default::default()
            };
        }
        let n = n_rows as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let mean_sq: f64 = mean.iter().map(|m| m * m).sum();
        Stats {
            total_variance: (self.sum_sq / n - mean_sq).max(0.0),
            mean,
            mean_norm: self.sum_norm / n,
            max_norm: self.max_norm,
        }
    }
}

/// One shard's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the store directory.
    pub file: String,
    /// Rows (kept tokens) in the shard.
    pub n_rows: u64,
    /// Contexts in the shard.
    pub n_contexts: u64,
    /// Global index of its first context.
    pub first_context: u64,
    /// File size.
    pub bytes: u64,
    /// sha256 of the file (hex).
    pub sha256: String,
    /// Median norm used by the norm clause.
    pub median_norm: f32,
    /// The norm threshold applied (`None` without a norm clause).
    pub norm_threshold: Option<f32>,
    /// What the rule dropped in this shard.
    pub counts: ExclusionCounts,
}

/// The whole manifest; see the module docs for the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Schema version (1).
    pub version: u32,
    /// Whether the harvest finished.
    pub complete: bool,
    /// The model.
    pub model: ModelInfo,
    /// Hook name (TransformerLens style).
    pub hook: String,
    /// Row width.
    pub d: usize,
    /// Tokens per context.
    pub ctx: usize,
    /// Stored element type.
    pub dtype: StoreDtype,
    /// Shuffle seed.
    pub seed: u64,
    /// Context shuffle buffer size.
    pub shuffle_contexts: usize,
    /// Contexts per shard.
    pub contexts_per_shard: usize,
    /// Contexts asked for.
    pub target_contexts: u64,
    /// The corpus.
    pub corpus: CorpusInfo,
    /// The tokenizer.
    pub tokenizer: TokenizerInfo,
    /// The exclusion rule and counts.
    pub exclusion: ExclusionInfo,
    /// Contexts harvested so far.
    pub n_contexts: u64,
    /// Rows stored so far.
    pub n_rows: u64,
    /// Statistics of the stored rows.
    pub stats: Stats,
    /// Exact running sums (for resuming).
    pub accumulator: Accumulator,
    /// Complete shards, in order.
    pub shards: Vec<ShardInfo>,
}

/// Whether `name` names a file directly inside a directory: one normal path component (no separator, no
/// `.`/`..`, not absolute, no NUL).
pub fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(std::path::Component::Normal(c)), None) if c == name
    ) && !name.contains(['/', '\\', '\0'])
}

/// A setting two manifests can be compared on: its name in messages and its value as text.
pub type ManifestField = (&'static str, fn(&Manifest) -> String);

/// The settings that make the rows of two stores the same tokens in the same order (the stores of one
/// harvest): model, corpus, packing and exclusion rule.
pub const SAME_ROWS: [ManifestField; 7] = [
    ("model sha256", |m| m.model.sha256.clone()),
    ("corpus", |m| m.corpus.description.clone()),
    ("ctx", |m| m.ctx.to_string()),
    ("seed", |m| m.seed.to_string()),
    ("shuffle contexts", |m| m.shuffle_contexts.to_string()),
    ("contexts per shard", |m| m.contexts_per_shard.to_string()),
    ("exclusion rule", |m| m.exclusion.description.clone()),
];

impl Manifest {
    /// The first of `fields` on which `self` and `other` differ: its name, `self`'s value, `other`'s.
    pub fn first_difference(
        &self,
        other: &Manifest,
        fields: &[ManifestField],
    ) -> Option<(&'static str, String, String)> {
        fields.iter().find_map(|(name, value)| {
            let (mine, theirs) = (value(self), value(other));
            (mine != theirs).then_some((*name, mine, theirs))
        })
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::bad_store(
                dir,
                "no manifest.json: not an activation store (make one with `zephyra harvest`)",
            ),
            _ => DataError::io("reading", &path, e),
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            DataError::bad_store(dir, format!("manifest.json is not a valid manifest: {e}"))
        })?;
        if m.format != FORMAT {
            return Err(DataError::bad_store(
                dir,
                format!("manifest format is `{}`, expected `{FORMAT}`", m.format),
            ));
        }
        if m.version != VERSION {
            return Err(DataError::bad_store(
                dir,
                format!(
                    "manifest version {} is not one this zephyra reads (version {VERSION}); harvest again with this version, or use the zephyra that wrote it",
                    m.version
                ),
            ));
        }
        for (i, shard) in m.shards.iter().enumerate() {
            if !is_plain_file_name(&shard.file) {
                return Err(DataError::bad_store(
                    dir,
                    format!(
                        "corrupt manifest: shard {i} names the file {:?}, which is not a plain file name inside the store directory; harvest again",
                        shard.file
                    ),
                ));
            }
        }
        Ok(m)
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| DataError::bad_store(dir, e.to_string()))?;
        Ok(zephyra_io::write_atomic(
            &dir.join(MANIFEST_FILE),
            text.as_bytes(),
        )?)
    }

    /// Recomputes `stats` from the accumulator.
    pub fn refresh_stats(&mut self) {
        self.stats = self.accumulator.stats(self.n_rows);
    }
}
