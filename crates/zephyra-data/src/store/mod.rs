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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zephyra_lm::HookPoint;

use safetensors::tensor::{Dtype, TensorView};

pub use manifest::{Manifest, ShardInfo, StoreDtype};
pub use merge::{merge_rank_stores, MergedStores};
pub use reader::{shards_per_window, ReaderCursor, ShuffleReader, WindowFeed};
pub use rows::{RowSource, RowStoreWriter};

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

/// The file name of shard `index`.
pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:05}.safetensors")
}

/// The rows of one shard, in memory (activations as f32 whatever the stored dtype).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShardData {
    /// `[n, d]` row-major.
    pub activations: Vec<f32>,
    /// `[n]`.
    pub token_ids: Vec<u32>,
    /// `[n]`.
    pub context_index: Vec<u32>,
    /// `[n]`.
    pub position: Vec<u32>,
    /// `[n_contexts, ctx]`.
    pub context_tokens: Vec<u32>,
}

impl ShardData {
    /// Rows held.
    pub fn n_rows(&self) -> usize {
        self.token_ids.len()
    }
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serializes a shard to safetensors bytes.
pub fn encode_shard(
    data: &ShardData,
    d: usize,
    ctx: usize,
    dtype: StoreDtype,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let n = data.n_rows();
    let n_contexts = data.context_tokens.len() / ctx.max(1);
    let (act_dtype, act_bytes): (Dtype, Vec<u8>) = match dtype {
        StoreDtype::Float32 => (
            Dtype::F32,
            data.activations
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        StoreDtype::Bfloat16 => (
            Dtype::BF16,
            data.activations
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
        ),
    };
    let tok = u32_bytes(&data.token_ids);
    let ci = u32_bytes(&data.context_index);
    let pos = u32_bytes(&data.position);
    let ct = u32_bytes(&data.context_tokens);
    let err = DataError::EncodeShard;
    let tensors = vec![
        (
            "activations",
            TensorView::new(act_dtype, vec![n, d], &act_bytes).map_err(err)?,
        ),
        (
            "token_ids",
            TensorView::new(Dtype::U32, vec![n], &tok).map_err(err)?,
        ),
        (
            "context_index",
            TensorView::new(Dtype::U32, vec![n], &ci).map_err(err)?,
        ),
        (
            "position",
            TensorView::new(Dtype::U32, vec![n], &pos).map_err(err)?,
        ),
        (
            "context_tokens",
            TensorView::new(Dtype::U32, vec![n_contexts, ctx], &ct).map_err(err)?,
        ),
    ];
    safetensors::tensor::serialize(tensors, Some(metadata)).map_err(err)
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
        let overflow = |what: &str| {
            DataError::bad_store(
                &self.dir,
                format!("corrupt manifest: its shards' {what} add up beyond 2^64; harvest again"),
            )
        };
        let rows = m
            .shards
            .iter()
            .try_fold(0u64, |n, s| n.checked_add(s.n_rows))
            .ok_or_else(|| overflow("row counts"))?;
        if rows != m.n_rows {
            return Err(DataError::bad_store(
                &self.dir,
                format!("manifest says {} rows but its shards list {rows}; the manifest was edited or is corrupt: harvest again", m.n_rows),
            ));
        }
        let contexts = m
            .shards
            .iter()
            .try_fold(0u64, |n, s| n.checked_add(s.n_contexts))
            .ok_or_else(|| overflow("context counts"))?;
        if contexts != m.n_contexts {
            return Err(DataError::bad_store(
                &self.dir,
                format!(
                    "manifest says {} contexts but its shards list {contexts}; harvest again",
                    m.n_contexts
                ),
            ));
        }
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
            if width == 4 {
                out.extend(
                    chunk[..take]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            } else {
                out.extend(
                    chunk[..take]
                        .chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                );
            }
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
            Dtype::F32 => out.extend(
                act.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Dtype::BF16 => out.extend(
                act.data()
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
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

/// The `activations` entry of a safetensors header.
struct ActivationsEntry {
    shape: Vec<u64>,
    dtype: String,
    start: u64,
    end: u64,
    /// Length of the JSON header (the data starts at `8 + header_bytes`).
    header_bytes: u64,
}

impl ActivationsEntry {
    /// Bytes per element: 4 for F32, 2 for BF16.
    fn width(&self) -> Option<u64> {
        match self.dtype.as_str() {
            "F32" => Some(4),
            "BF16" => Some(2),
            _ => None,
        }
    }

    /// Bytes the shape holds (`None` on overflow or an unknown dtype).
    fn n_bytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.width()?, |n, &dim| n.checked_mul(dim))
    }
}

/// Reads the `activations` entry of a parsed header; the error is the reason, for the caller to wrap.
fn activations_entry(header: &Header) -> std::result::Result<ActivationsEntry, String> {
    let act = header
        .map
        .get("activations")
        .ok_or_else(|| "has no `activations` tensor".to_string())?;
    let u64s = |key: &str| -> Vec<u64> {
        act.get(key)
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default()
    };
    let offsets = u64s("data_offsets");
    let [start, end] = offsets[..] else {
        return Err(format!(
            "has activation offsets {offsets:?}, expected [start, end]"
        ));
    };
    if end < start {
        return Err(format!(
            "has activation offsets {start}..{end} that end before they start"
        ));
    }
    Ok(ActivationsEntry {
        shape: u64s("shape"),
        dtype: act
            .get("dtype")
            .and_then(|d| d.as_str())
            .unwrap_or("?")
            .to_string(),
        start,
        end,
        header_bytes: header.len,
    })
}

/// A safetensors JSON header and its length in bytes.
struct Header {
    map: serde_json::Map<String, serde_json::Value>,
    len: u64,
}

/// Parses the JSON header of a safetensors file.
fn read_header(path: &Path) -> Result<Header> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io("opening", path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| DataError::io("reading the header of", path, e))?;
    let len = u64::from_le_bytes(len);
    let file_len = file
        .metadata()
        .map_err(|e| DataError::io("reading the header of", path, e))?
        .len();
    if len > 100 << 20 || len.saturating_add(8) > file_len {
        return Err(DataError::io(
            "reading the header of",
            path,
            std::io::Error::other(format!(
                "the header claims {len} bytes in a {file_len}-byte file"
            )),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)
        .map_err(|e| DataError::io("reading the header of", path, e))?;
    let map = serde_json::from_slice(&buf)
        .map_err(|e| DataError::io("parsing the header of", path, std::io::Error::other(e)))?;
    Ok(Header { map, len })
}
