//! The on-disk layout of feature statistics, and a reader that loads one record at a time.
//!
//! A features directory holds:
//!
//! | file | content |
//! |---|---|
//! | `index.json` | [`FeatureIndex`]: provenance, counters, options and one [`FeatureSummary`] per latent, each with the byte `offset` and `len` of its record |
//! | `features.jsonl` | one [`super::FeatureRecord`] per line, in latent order |
//! | `checkpoint.json` | the accumulators of an unfinished pass (removed when the pass completes) |
//!
//! Both files are written to temporary names and renamed, `index.json` last: a directory with an
//! `index.json` is complete.
//!
//! [`FeatureStore::open`] verifies the store before anything is served: one summary per latent, in order,
//! records laid end to end (each `offset` follows the previous record and its newline), the records file
//! exactly as long as they say, and the SHA-256 of the records file equal to the index's
//! `records_sha256`. A store written before the hash existed opens with a warning (sizes and offsets
//! checked only). Each record read afterwards is checked again (complete, valid JSON, the right latent,
//! ended by its newline), so a file damaged while the store is open is an error, never garbage.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    FeatureOptions, FeatureRecord, LatentStats, HIST_BINS, HIST_LOG10_MAX, HIST_LOG10_MIN,
};
use crate::error::{AnalysisError, Result};
use crate::file_io::read_json;
use zephyra_io::write_atomic;

/// Version of the layout written by this crate.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the index.
pub const INDEX_FILE: &str = "index.json";
/// File name of the records.
pub const RECORDS_FILE: &str = "features.jsonl";

/// The summary of one latent kept in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSummary {
    /// Id, firing count, density, mean and max activation, as in its record.
    #[serde(flatten)]
    pub stats: LatentStats,
    /// The tokens at the maxima of its top contexts, most frequent first (at most 5).
    pub top_tokens: Vec<String>,
    /// Its most promoted tokens (at most 5).
    pub top_logits: Vec<String>,
    /// Byte offset of its record in `features.jsonl`.
    pub offset: u64,
    /// Byte length of its record (without the newline).
    pub len: u64,
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureIndex {
    /// Layout version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The model (path or name).
    pub model: String,
    /// The hook the SAE reads.
    pub hook: String,
    /// The SAE (directory).
    pub sae: String,
    /// The corpus description.
    pub corpus: String,
    /// Number of latents.
    pub d_sae: usize,
    /// Contexts read.
    pub n_contexts: u64,
    /// Tokens read.
    pub n_tokens_read: u64,
    /// Tokens kept after the exclusion rule.
    pub n_tokens_kept: u64,
    /// Settings of the pass.
    pub options: FeatureOptions,
    /// Histogram layout: log10 of the lower edge.
    pub hist_log10_min: f32,
    /// Histogram layout: log10 of the upper edge.
    pub hist_log10_max: f32,
    /// Histogram layout: number of bins.
    pub hist_bins: usize,
    /// One summary per latent, in latent order.
    pub features: Vec<FeatureSummary>,
    /// SHA-256 of `features.jsonl` (lowercase hex), set by [`write`]; absent in stores written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_sha256: Option<String>,
}

/// Provenance written into the index.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The model.
    pub model: String,
    /// The hook.
    pub hook: String,
    /// The SAE.
    pub sae: String,
    /// The corpus.
    pub corpus: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AnalysisError + '_ {
    move |source| AnalysisError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `records` (in latent order) and the index into `dir`. `summary` fills the index fields that are
/// not derived from a record (counters and provenance); its `features` are replaced.
pub fn write(
    dir: &Path,
    mut index: FeatureIndex,
    records: impl IntoIterator<Item = FeatureRecord>,
) -> Result<FeatureIndex> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-features-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    let mut w = BufWriter::new(tmp);
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    index.features.clear();
    for rec in records {
        let line = serde_json::to_vec(&rec).map_err(|source| AnalysisError::Json {
            path: dir.join(RECORDS_FILE),
            source,
        })?;
        w.write_all(&line)
            .and_then(|_| w.write_all(b"\n"))
            .map_err(io(dir))?;
        hasher.update(&line);
        hasher.update(b"\n");
        index
            .features
            .push(summarise(&rec, offset, line.len() as u64));
        offset += line.len() as u64 + 1;
    }
    let tmp = w.into_inner().map_err(|e| AnalysisError::Io {
        path: dir.join(RECORDS_FILE),
        source: e.into_error(),
    })?;
    tmp.as_file().sync_all().map_err(io(dir))?;
    let records_path = dir.join(RECORDS_FILE);
    tmp.persist(&records_path).map_err(|e| AnalysisError::Io {
        path: records_path.clone(),
        source: e.error,
    })?;
    index.version = FORMAT_VERSION;
    index.records_sha256 = Some(hex(&hasher.finalize()));
    index.hist_log10_min = HIST_LOG10_MIN;
    index.hist_log10_max = HIST_LOG10_MAX;
    index.hist_bins = HIST_BINS;
    let bytes = serde_json::to_vec(&index).map_err(|source| AnalysisError::Json {
        path: dir.join(INDEX_FILE),
        source,
    })?;
    write_atomic(&dir.join(INDEX_FILE), &bytes)?;
    Ok(index)
}

fn summarise(rec: &FeatureRecord, offset: u64, len: u64) -> FeatureSummary {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for ex in &rec.top {
        let tok = ex
            .tokens
            .get(ex.center as usize)
            .cloned()
            .unwrap_or_default();
        match counts.iter_mut().find(|c| c.0 == tok) {
            Some(c) => c.1 += 1,
            None => counts.push((tok, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    FeatureSummary {
        stats: rec.stats,
        top_tokens: counts.into_iter().take(5).map(|c| c.0).collect(),
        top_logits: rec
            .logits_pos
            .iter()
            .take(5)
            .map(|t| t.token.clone())
            .collect(),
        offset,
        len,
    }
}

/// A features directory opened for reading: the index in memory, records read on demand.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    dir: PathBuf,
    index: FeatureIndex,
}

impl FeatureStore {
    /// Opens `dir`: reads `index.json` and verifies the records file against it (see the module docs).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX_FILE);
        let index: FeatureIndex = read_json(&path)?;
        if index.version != FORMAT_VERSION {
            return Err(AnalysisError::InvalidArgument(format!(
                "{}: layout version {} is not {FORMAT_VERSION}; recompute with `zephyra features`",
                path.display(),
                index.version
            )));
        }
        let store = Self {
            dir: dir.to_path_buf(),
            index,
        };
        store.verify()?;
        Ok(store)
    }

    fn damaged(&self, reason: String) -> AnalysisError {
        AnalysisError::DamagedStore {
            path: self.dir.join(RECORDS_FILE),
            reason,
        }
    }

    /// Checks the layout of the records against the index, then the records file's hash.
    fn verify(&self) -> Result<()> {
        let ix = &self.index;
        if ix.features.len() != ix.d_sae {
            return Err(self.damaged(format!(
                "the index lists {} latents, not d_sae = {}",
                ix.features.len(),
                ix.d_sae
            )));
        }
        let mut end = 0u64;
        for (i, f) in ix.features.iter().enumerate() {
            if f.stats.id as usize != i || f.offset != end {
                return Err(self.damaged(format!(
                    "summary {i} (latent {}) starts at byte {}, expected latent {i} at byte {end}",
                    f.stats.id, f.offset
                )));
            }
            end = f
                .offset
                .checked_add(f.len)
                .and_then(|e| e.checked_add(1))
                .ok_or_else(|| self.damaged(format!("latent {i}: length {} overflows", f.len)))?;
        }
        let path = self.dir.join(RECORDS_FILE);
        let size = std::fs::metadata(&path).map_err(io(&path))?.len();
        if size != end {
            return Err(self.damaged(format!(
                "the file has {size} bytes, the index describes {end} (truncated or overwritten)"
            )));
        }
        let Some(want) = &ix.records_sha256 else {
            tracing::warn!(
                path = %path.display(),
                "the features store has no records hash (written before it was recorded): only sizes and offsets are checked; recompute with `zephyra features` to verify its content"
            );
            return Ok(());
        };
        let mut hasher = Sha256::new();
        let mut f = File::open(&path).map_err(io(&path))?;
        std::io::copy(&mut f, &mut hasher).map_err(io(&path))?;
        let got = hex(&hasher.finalize());
        if &got != want {
            return Err(self.damaged(format!(
                "its SHA-256 is {got}, the index recorded {want} (the records changed after they were written)"
            )));
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index.
    pub fn index(&self) -> &FeatureIndex {
        &self.index
    }

    /// The stored JSON bytes of latent `id`'s record (`None` when there is no such latent); the web app
    /// sends them as they are. A record that is incomplete, not JSON, another latent's or not ended by its
    /// newline is a [`AnalysisError::DamagedStore`].
    pub fn record_bytes(&self, id: u32) -> Result<Option<Vec<u8>>> {
        let Some(s) = self.index.features.get(id as usize) else {
            return Ok(None);
        };
        let path = self.dir.join(RECORDS_FILE);
        let mut f = File::open(&path).map_err(io(&path))?;
        f.seek(SeekFrom::Start(s.offset)).map_err(io(&path))?;
        // `open` checked that offset + len + 1 is the file's size at most, so this fits in memory.
        let len = usize::try_from(s.len)
            .map_err(|_| self.damaged(format!("latent {id}: record length {} too large", s.len)))?;
        let mut buf = Vec::with_capacity(len + 1);
        f.take(s.len + 1).read_to_end(&mut buf).map_err(io(&path))?;
        if buf.len() != len + 1 || buf.pop() != Some(b'\n') {
            return Err(self.damaged(format!(
                "latent {id}'s record is incomplete or not ended by a newline"
            )));
        }
        #[derive(Deserialize)]
        struct IdOnly {
            id: u32,
        }
        match serde_json::from_slice::<IdOnly>(&buf) {
            Ok(r) if r.id == id => Ok(Some(buf)),
            Ok(r) => Err(self.damaged(format!(
                "the record at the offset of latent {id} is latent {}",
                r.id
            ))),
            Err(e) => Err(self.damaged(format!("latent {id}'s record is not valid JSON ({e})"))),
        }
    }

    /// The record of latent `id` (`None` when there is no such latent).
    pub fn record(&self, id: u32) -> Result<Option<FeatureRecord>> {
        let Some(buf) = self.record_bytes(id)? else {
            return Ok(None);
        };
        let rec: FeatureRecord = serde_json::from_slice(&buf).map_err(|e| {
            self.damaged(format!(
                "latent {id}'s record is not a feature record ({e})"
            ))
        })?;
        Ok(Some(rec))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
