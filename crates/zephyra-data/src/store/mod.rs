//! The activation store: a directory of safetensors shards plus `manifest.json`.
//!
//! Each shard `shard-NNNNN.safetensors` holds, for the kept rows of `n_contexts` consecutive contexts:
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `activations` | F32 or BF16 | `[n, d]` | the hook's activations |
//! | `token_ids` | U32 | `[n]` | the token at that row |
//! | `context_index` | U32 | `[n]` | global index of the row's context (harvest order) |
//! | `position` | U32 | `[n]` | position of the row inside its context |
//! | `context_tokens` | U32 | `[n_contexts, ctx]` | every token of the shard's contexts (excluded ones too) |
//!
//! Rows are ordered by context, then position. Files are written to a temporary name in the same
//! directory and renamed, and the manifest (see [`manifest`]) is rewritten after every shard, so a killed
//! harvest leaves only complete shards listed.

pub mod manifest;
pub mod merge;
pub mod reader;
pub mod rows;
mod shard;

use std::path::{Path, PathBuf};

use zephyra_lm::HookPoint;

use safetensors::tensor::Dtype;

pub use manifest::{Manifest, ShardInfo, StoreDtype};
pub use merge::{merge_rank_stores, MergedStores};
pub use reader::{shards_per_window, ReaderCursor, ShuffleReader, WindowFeed};
pub use rows::{RowSource, RowStoreWriter};
use shard::{activations_entry, extend_f32, read_header};
pub use shard::{encode_shard, shard_file_name, ShardData};

use crate::error::{DataError, Result};

/// The store directory of each hook of a harvest into `out`: `out` itself for one hook, `out/<hook>` for
/// several.
pub fn store_dirs(out: &Path, hooks: &[HookPoint]) -> Vec<PathBuf> {
    if hooks.len() == 1 {
        vec![out.to_path_buf()]
    } else {
        hooks.iter().map(|h| out.join(h.to_string())).collect()
    }
}

/// An activation store opened for reading.
#[derive(Debug, Clone)]
pub struct ActivationStore {
    dir: PathBuf,
    manifest: Manifest,
}

impl ActivationStore {
    /// Opens the store at `dir`, checking that it is complete and that every shard listed exists with the
    /// shape, dtype and size the manifest says (headers only; see [`verify`](Self::verify) for checksums).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            return Err(DataError::MissingPath { path: dir });
        }
        let manifest = Manifest::read(&dir)?;
        if !manifest.complete {
            return Err(DataError::bad_store(
                &dir,
                format!(
                    "the harvest that writes it did not finish ({} of {} contexts); rerun the same `zephyra harvest` command to resume it",
                    manifest.n_contexts, manifest.target_contexts
                ),
            ));
        }
        let store = Self { dir, manifest };
        store.check_shards()?;
        Ok(store)
    }

    /// Opens a store without requiring it to be complete (used to resume).
    pub(crate) fn open_partial(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let store = Self {
            dir: dir.to_path_buf(),
            manifest,
        };
        store.check_shards()?;
        Ok(store)
    }

    fn check_shards(&self) -> Result<()> {
        let m = &self.manifest;
        // The shards' `count`s must add up to the manifest's `total` (`what`: "rows", "contexts").
        let check_total = |what: &str, total: u64, count: fn(&ShardInfo) -> u64| -> Result<()> {
            let sum = m
                .shards
                .iter()
                .try_fold(0u64, |n, s| n.checked_add(count(s)))
                .ok_or_else(|| {
                    DataError::bad_store(
                        &self.dir,
                        format!("corrupt manifest: its shards' {what} add up beyond 2^64; harvest again"),
                    )
                })?;
            if sum != total {
                return Err(DataError::bad_store(
                    &self.dir,
                    format!("manifest says {total} {what} but its shards list {sum}; the manifest was edited or is corrupt: harvest again"),
                ));
            }
            Ok(())
        };
        check_total("rows", m.n_rows, |s| s.n_rows)?;
        check_total("contexts", m.n_contexts, |s| s.n_contexts)?;
        for shard in &m.shards {
            self.check_shard_header(shard)?;
        }
        Ok(())
    }

    fn check_shard_header(&self, shard: &ShardInfo) -> Result<()> {
        let path = self.dir.join(&shard.file);
        let bad = |reason: String| {
            DataError::bad_store(
                &self.dir,
                format!("shard `{}` {reason}; harvest again", shard.file),
            )
        };
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad("is missing".into()),
            _ => DataError::io("reading", &path, e),
        })?;
        if meta.len() != shard.bytes {
            return Err(bad(format!(
                "is {} bytes but the manifest says {}",
                meta.len(),
                shard.bytes
            )));
        }
        let header = read_header(&path)?;
        let act = activations_entry(&header).map_err(bad)?;
        let want = [shard.n_rows, self.manifest.d as u64];
        if act.shape != want {
            return Err(bad(format!(
                "holds activations of shape {:?} but the manifest says {want:?}",
                act.shape
            )));
        }
        let want_dtype = match self.manifest.dtype {
            StoreDtype::Float32 => "F32",
            StoreDtype::Bfloat16 => "BF16",
        };
        if act.dtype != want_dtype {
            return Err(bad(format!(
                "holds {} activations but the manifest says {}",
                act.dtype, self.manifest.dtype
            )));
        }
        // The sizes the header claims must fit in the file, computed without overflow.
        let fits = act
            .n_bytes()
            .filter(|&n| n == act.end - act.start)
            .and_then(|_| act.header_bytes.checked_add(8))
            .and_then(|start| start.checked_add(act.end))
            .is_some_and(|end| end <= meta.len());
        if !fits {
            return Err(bad(format!(
                "has a header claiming activations of shape {:?} at bytes {}..{}, which a {}-byte file cannot hold",
                act.shape,
                act.start,
                act.end,
                meta.len()
            )));
        }
        Ok(())
    }

    /// Recomputes every shard's sha256 and compares it with the manifest.
    pub fn verify(&self) -> Result<()> {
        for shard in &self.manifest.shards {
            let got = zephyra_io::sha256_file(&self.dir.join(&shard.file))?;
            if got != shard.sha256 {
                return Err(DataError::bad_store(
                    &self.dir,
                    format!("shard `{}` has sha256 {got} but the manifest says {}; it was modified or is corrupt", shard.file, shard.sha256),
                ));
            }
        }
        Ok(())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Row width.
    pub fn d(&self) -> usize {
        self.manifest.d
    }

    /// Rows stored.
    pub fn n_rows(&self) -> u64 {
        self.manifest.n_rows
    }

    /// Shards stored.
    pub fn n_shards(&self) -> usize {
        self.manifest.shards.len()
    }

    /// Reads shard `index` entirely.
    pub fn read_shard(&self, index: usize) -> Result<ShardData> {
        let (info, bytes) = self.shard_bytes(index)?;
        let st = self.parse_shard(info, &bytes)?;
        let n = info.n_rows as usize;
        let mut activations = Vec::new();
        self.append_activations(info, &st, &mut activations)?;
        let u32s = |name: &str, len: usize| -> Result<Vec<u32>> {
            let t = st
                .tensor(name)
                .map_err(|e| self.bad_shard(info, format!("tensor `{name}`: {e}")))?;
            if t.dtype() != Dtype::U32 || Some(t.data().len()) != len.checked_mul(4) {
                return Err(self.bad_shard(
                    info,
                    format!(
                        "`{name}` is {:?} {:?}, expected U32 with {len} elements",
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        Ok(ShardData {
            activations,
            token_ids: u32s("token_ids", n)?,
            context_index: u32s("context_index", n)?,
            position: u32s("position", n)?,
            context_tokens: u32s(
                "context_tokens",
                usize::try_from(info.n_contexts)
                    .ok()
                    .and_then(|c| c.checked_mul(self.manifest.ctx))
                    .ok_or_else(|| {
                        self.bad_shard(
                            info,
                            format!("{} contexts do not fit in memory", info.n_contexts),
                        )
                    })?,
            )?,
        })
    }

    /// Appends the activations of shard `index` (as float32, row-major) to `out` and returns the rows
    /// appended. Only the `activations` tensor is read, in 1 MiB pieces decoded straight into `out`, so
    /// the memory used is `out` alone, not the shard file (the reader's path; [`read_shard`](Self::read_shard)
    /// reads everything).
    pub fn read_activations_into(&self, index: usize, out: &mut Vec<f32>) -> Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        let info = self.shard_info(index)?;
        let path = self.dir.join(&info.file);
        let (n, d) = (info.n_rows as usize, self.manifest.d);
        let header = read_header(&path)?;
        let act = activations_entry(&header).map_err(|r| self.bad_shard(info, r))?;
        if act.shape != [n as u64, d as u64] {
            return Err(self.bad_shard(
                info,
                format!(
                    "activations have shape {:?}, the manifest says [{n}, {d}]",
                    act.shape
                ),
            ));
        }
        let width = match act.width() {
            Some(w) => w,
            None => {
                return Err(self.bad_shard(
                    info,
                    format!("activations are {}, expected F32 or BF16", act.dtype),
                ))
            }
        };
        let (start, end) = (act.start, act.end);
        if act.n_bytes() != Some(end - start) {
            return Err(self.bad_shard(
                info,
                format!("activation offsets {start}..{end} do not hold [{n}, {d}] values"),
            ));
        }
        let mut file =
            std::fs::File::open(&path).map_err(|e| DataError::io("opening", &path, e))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| DataError::io("reading", &path, e))?;
        let data_start = 8u64.saturating_add(u64::from_le_bytes(len));
        let file_len = file
            .metadata()
            .map_err(|e| DataError::io("reading", &path, e))?
            .len();
        if data_start.saturating_add(end) > file_len {
            return Err(self.bad_shard(info, "is truncated".into()));
        }
        file.seek(SeekFrom::Start(data_start.saturating_add(start)))
            .map_err(|e| DataError::io("reading", &path, e))?;
        let mut left = end - start;
        let mut chunk = vec![0u8; (1 << 20).min(left as usize)];
        // n × d × width bytes were checked against the file's size above.
        out.reserve(n * d);
        while left > 0 {
            let take = (chunk.len() as u64).min(left) as usize;
            file.read_exact(&mut chunk[..take])
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        self.bad_shard(info, "is truncated".into())
                    }
                    _ => DataError::io("reading", &path, e),
                })?;
            extend_f32(out, &chunk[..take], width == 2);
            left -= take as u64;
        }
        Ok(n)
    }

    fn shard_info(&self, index: usize) -> Result<&ShardInfo> {
        self.manifest.shards.get(index).ok_or_else(|| {
            DataError::bad_store(
                &self.dir,
                format!(
                    "shard {index} requested but the store has {}",
                    self.manifest.shards.len()
                ),
            )
        })
    }

    fn shard_bytes(&self, index: usize) -> Result<(&ShardInfo, Vec<u8>)> {
        let info = self.shard_info(index)?;
        let path = self.dir.join(&info.file);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io("reading", &path, e))?;
        Ok((info, bytes))
    }

    fn bad_shard(&self, info: &ShardInfo, reason: String) -> DataError {
        DataError::bad_store(
            &self.dir,
            format!("shard `{}`: {reason}; harvest again", info.file),
        )
    }

    fn parse_shard<'a>(
        &self,
        info: &ShardInfo,
        bytes: &'a [u8],
    ) -> Result<safetensors::SafeTensors<'a>> {
        safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| self.bad_shard(info, e.to_string()))
    }

    /// Checks the `activations` tensor against the manifest and appends it to `out` as float32.
    fn append_activations(
        &self,
        info: &ShardInfo,
        st: &safetensors::SafeTensors<'_>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (n, d) = (info.n_rows as usize, self.manifest.d);
        let act = st
            .tensor("activations")
            .map_err(|e| self.bad_shard(info, format!("tensor `activations`: {e}")))?;
        if act.shape() != [n, d] {
            return Err(self.bad_shard(
                info,
                format!(
                    "activations have shape {:?}, the manifest says [{n}, {d}]",
                    act.shape()
                ),
            ));
        }
        match act.dtype() {
            Dtype::F32 => extend_f32(out, act.data(), false),
            Dtype::BF16 => extend_f32(out, act.data(), true),
            other => {
                return Err(self.bad_shard(
                    info,
                    format!("activations are {other:?}, expected F32 or BF16"),
                ))
            }
        }
        Ok(())
    }
}
