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

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{FeatureOptions, FeatureRecord, HIST_BINS, HIST_LOG10_MAX, HIST_LOG10_MIN};
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
    /// Latent index.
    pub id: u32,
    /// Tokens on which it fired.
    pub n_fires: u64,
    /// Firing density (fraction of kept tokens).
    pub density: f64,
    /// Mean activation when firing.
    pub mean_act: f32,
    /// Largest activation.
    pub max_act: f32,
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
        id: rec.id,
        n_fires: rec.n_fires,
        density: rec.density,
        mean_act: rec.mean_act,
        max_act: rec.max_act,
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
    /// Opens `dir` (reads `index.json` only).
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
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
        })
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
    /// sends them as they are.
    pub fn record_bytes(&self, id: u32) -> Result<Option<Vec<u8>>> {
        let Some(s) = self.index.features.get(id as usize) else {
            return Ok(None);
        };
        let path = self.dir.join(RECORDS_FILE);
        let mut f = File::open(&path).map_err(io(&path))?;
        f.seek(SeekFrom::Start(s.offset)).map_err(io(&path))?;
        let len = usize::try_from(s.len).map_err(|_| {
            AnalysisError::InvalidArgument(format!("record length {} too large", s.len))
        })?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).map_err(io(&path))?;
        Ok(Some(buf))
    }

    /// The record of latent `id` (`None` when there is no such latent).
    pub fn record(&self, id: u32) -> Result<Option<FeatureRecord>> {
        let Some(buf) = self.record_bytes(id)? else {
            return Ok(None);
        };
        let path = self.dir.join(RECORDS_FILE);
        let rec: FeatureRecord =
            serde_json::from_slice(&buf).map_err(|source| AnalysisError::Json {
                path: path.clone(),
                source,
            })?;
        if rec.id != id {
            return Err(AnalysisError::InvalidArgument(format!(
                "{}: the record at the offset of latent {id} is latent {}; the index does not match the records, recompute",
                path.display(),
                rec.id
            )));
        }
        Ok(Some(rec))
    }
}
