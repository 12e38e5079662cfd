//! Writing a store from rows that no model made (synthetic data): the same shards and manifest a harvest
//! writes, with every row kept, token ids 0 and rows grouped into pseudo-contexts of [`ROWS_PER_CONTEXT`].
//! Interrupted writes resume: the store is reopened only if it was started with the same description.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zephyra_io::{sha256_hex, write_atomic};

use super::manifest::{
    Accumulator, CorpusInfo, ExclusionInfo, Manifest, ModelInfo, ShardInfo, Stats, StoreDtype,
    TokenizerInfo, FORMAT, VERSION,
};
use super::{encode_shard, shard_file_name, ShardData};
use crate::error::{DataError, Result};
use crate::exclude::{ExclusionCounts, ExclusionRule};

/// Rows per pseudo-context.
pub const ROWS_PER_CONTEXT: usize = 128;

/// What a row store says about where its rows came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSource {
    /// Stands in for the model path (e.g. `synth`).
    pub name: String,
    /// What made the rows, precise enough that a resumed write can check it (recorded as the corpus).
    pub description: String,
    /// Recorded as the hook name.
    pub hook: String,
    /// Row width.
    pub d: usize,
    /// Seed recorded in the manifest.
    pub seed: u64,
    /// Rows the finished store will hold.
    pub target_rows: u64,
    /// Rows per shard (a multiple of [`ROWS_PER_CONTEXT`]).
    pub rows_per_shard: usize,
}

/// A store being written shard by shard.
#[derive(Debug)]
pub struct RowStoreWriter {
    dir: PathBuf,
    manifest: Manifest,
}

impl RowStoreWriter {
    /// Creates `dir` (or reopens the interrupted store there, if it was started from the same source).
    pub fn create(dir: &Path, source: &RowSource) -> Result<Self> {
        if source.rows_per_shard == 0 || source.rows_per_shard % ROWS_PER_CONTEXT != 0 {
            return Err(DataError::bad_store(
                dir,
                format!(
                    "rows per shard {} must be a positive multiple of {ROWS_PER_CONTEXT}",
                    source.rows_per_shard
                ),
            ));
        }
        let rule = ExclusionRule::keep_all();
        let fresh = Manifest {
            format: FORMAT.to_string(),
            version: VERSION,
            complete: false,
            model: ModelInfo {
                path: source.name.clone(),
                sha256: String::new(),
                n_layers: 0,
                d_model: source.d,
                context_length: ROWS_PER_CONTEXT,
                precision: Default::default(),
            },
            hook: source.hook.clone(),
            d: source.d,
            ctx: ROWS_PER_CONTEXT,
            dtype: StoreDtype::Float32,
            seed: source.seed,
            shuffle_contexts: 0,
            contexts_per_shard: source.rows_per_shard / ROWS_PER_CONTEXT,
            target_contexts: source.target_rows.div_ceil(ROWS_PER_CONTEXT as u64),
            corpus: CorpusInfo {
                description: source.description.clone(),
                text_field: String::new(),
                n_inputs: 0,
                read: None,
            },
            tokenizer: TokenizerInfo {
                eos_token_id: 0,
                vocab_size: 1,
                context_prefix: None,
            },
            exclusion: ExclusionInfo::fresh(rule),
            n_contexts: 0,
            n_rows: 0,
            stats: Stats::default(),
            accumulator: Accumulator::default(),
            shards: Vec::new(),
        };
        let manifest = crate::harvest::prepare_store(dir, fresh)?;
        if manifest.complete {
            return Err(DataError::StoreComplete {
                dir: dir.to_path_buf(),
                n_tokens: manifest.n_rows,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Shards already written (by this writer or an interrupted one).
    pub fn n_shards(&self) -> usize {
        self.manifest.shards.len()
    }

    /// Appends `acts` (`[n, d]`) as the next shard and rewrites the manifest.
    pub fn push(&mut self, acts: &[f32]) -> Result<()> {
        let m = &mut self.manifest;
        let d = m.d;
        if acts.is_empty() || acts.len() % d != 0 {
            return Err(DataError::bad_store(
                &self.dir,
                format!(
                    "a shard of {} values is not whole rows of width {d}",
                    acts.len()
                ),
            ));
        }
        let n = acts.len() / d;
        let n_contexts = n.div_ceil(ROWS_PER_CONTEXT);
        let first_context = m.n_contexts;
        let data = ShardData {
            activations: acts.to_vec(),
            token_ids: vec![0; n],
            context_index: (0..n)
                .map(|r| (first_context + (r / ROWS_PER_CONTEXT) as u64) as u32)
                .collect(),
            position: (0..n).map(|r| (r % ROWS_PER_CONTEXT) as u32).collect(),
            context_tokens: vec![0; n_contexts * ROWS_PER_CONTEXT],
        };
        let file = shard_file_name(m.shards.len());
        let mut meta = HashMap::new();
        meta.insert(
            "zephyra".to_string(),
            serde_json::json!({ "source": m.model.path, "first_context": first_context })
                .to_string(),
        );
        let bytes = encode_shard(&data, d, ROWS_PER_CONTEXT, m.dtype, meta)?;
        write_atomic(&self.dir.join(&file), &bytes)?;
        let norms: Vec<f32> = acts
            .chunks_exact(d)
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        m.accumulator.add_rows(acts, d, &norms);
        let counts = ExclusionCounts {
            total: n as u64,
            kept: n as u64,
            ..ExclusionCounts::default()
        };
        m.exclusion.counts.add(&counts);
        m.n_contexts += n_contexts as u64;
        m.n_rows += n as u64;
        let mut sorted = norms;
        sorted.sort_by(f32::total_cmp);
        m.shards.push(ShardInfo {
            file,
            n_rows: n as u64,
            n_contexts: n_contexts as u64,
            first_context,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            median_norm: sorted[n / 2],
            norm_threshold: None,
            counts,
        });
        m.refresh_stats();
        m.write(&self.dir)
    }

    /// Marks the store complete.
    pub fn finish(mut self) -> Result<Manifest> {
        self.manifest.complete = true;
        self.manifest.write(&self.dir)?;
        Ok(self.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ActivationStore;

    fn source(description: &str) -> RowSource {
        RowSource {
            name: "synth".into(),
            description: description.into(),
            hook: "synth".into(),
            d: 3,
            seed: 9,
            target_rows: 384,
            rows_per_shard: 256,
        }
    }

    fn rows(n: usize, offset: f32) -> Vec<f32> {
        (0..n * 3).map(|i| i as f32 * 0.5 + offset).collect()
    }

    #[test]
    fn written_rows_read_back_and_resume_checks_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let mut w = RowStoreWriter::create(&dir, &source("cfg A")).unwrap();
        w.push(&rows(256, 0.0)).unwrap();
        drop(w); // interrupted after one shard
        let e = RowStoreWriter::create(&dir, &source("cfg B")).unwrap_err();
        assert!(e.to_string().contains("cfg A"), "{e}");
        let mut w = RowStoreWriter::create(&dir, &source("cfg A")).unwrap();
        assert_eq!(w.n_shards(), 1);
        w.push(&rows(128, 1000.0)).unwrap();
        let m = w.finish().unwrap();
        assert_eq!((m.n_rows, m.n_contexts, m.shards.len()), (384, 3, 2));
        let store = ActivationStore::open(&dir).unwrap();
        store.verify().unwrap();
        assert_eq!(store.read_shard(0).unwrap().activations, rows(256, 0.0));
        let s1 = store.read_shard(1).unwrap();
        assert_eq!(s1.activations, rows(128, 1000.0));
        assert_eq!(s1.context_index[127], 2);
        assert_eq!(s1.position[127], 127);
        // Mean of the first coordinate over all rows, by hand: rows i·1.5 (i < 256) and 1000 + j·1.5.
        let want = ((0..256).map(|i| i as f64 * 1.5).sum::<f64>()
            + (0..128).map(|j| 1000.0 + j as f64 * 1.5).sum::<f64>())
            / 384.0;
        assert!((store.manifest().stats.mean[0] - want).abs() < 1e-9);
        let e = RowStoreWriter::create(&dir, &source("cfg A")).unwrap_err();
        assert!(matches!(e, DataError::StoreComplete { .. }), "{e}");
    }
}
