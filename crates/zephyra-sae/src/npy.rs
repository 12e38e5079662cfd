//! NumPy `.npy` files of float32 activations `[n, d_in]`: a header parser, a writer, and [`NpySource`], a
//! memory-mapped [`ActivationSource`] that can shuffle rows per epoch without copying the file.
//!
//! Format (NEP 1, <https://numpy.org/neps/nep-0001-npy-format.html>): the magic `\x93NUMPY`, a version
//! byte pair, a little-endian header length (u16 for version 1, u32 for 2 and 3), then a Python dict
//! literal `{'descr': '<f4', 'fortran_order': False, 'shape': (n, d), }` padded with spaces to a multiple
//! of 64 bytes, then the data. Only `<f4` (or `float32` on a little-endian machine: `<f4`), C order,
//! rank 2 is accepted; everything else is refused with a message naming what was found.

use std::fs::File;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::train::source::ActivationSource;
use crate::train::Cursor;
use crate::SaeError;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// What an `.npy` header says about its array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The dtype string, e.g. `<f4`.
    pub descr: String,
    /// Whether the data is stored column-major.
    pub fortran_order: bool,
    /// The array shape.
    pub shape: Vec<usize>,
    /// Byte offset of the first data byte.
    pub data_offset: usize,
}

fn bad(path: &Path, reason: impl Into<String>) -> SaeError {
    SaeError::Npy {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses the header at the start of `bytes` (the whole file or at least its header).
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<NpyHeader, SaeError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(
            path,
            "not a NumPy .npy file (the magic string \\x93NUMPY is missing)",
        ));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad(path, "file ends inside the header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(path, format!("unsupported .npy format version {v}"))),
    };
    let end = start + len;
    if bytes.len() < end {
        return Err(bad(
            path,
            format!(
                "file ends inside the header ({} of {end} bytes)",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| bad(path, "the header is not valid text"))?;
    let descr = dict_value(text, "descr")
        .and_then(|v| v.strip_prefix('\'').and_then(|v| v.split('\'').next()))
        .ok_or_else(|| bad(path, format!("header has no 'descr': {text}")))?
        .to_string();
    let fortran_order = match dict_value(text, "fortran_order") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err(bad(path, format!("header has no 'fortran_order': {text}"))),
    };
    let shape_text = dict_value(text, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| bad(path, format!("header has no 'shape': {text}")))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(path, format!("cannot read the shape ({shape_text})")))?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
        data_offset: end,
    })
}

/// The text after `'key':` in a header dict, with leading spaces removed.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(&format!("'{key}'"))?;
    let rest = &text[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

/// Checks that a header describes a float32, C-order, rank-2 array and returns `(n, d_in)`.
fn check_f32_matrix(path: &Path, h: &NpyHeader) -> Result<(usize, usize), SaeError> {
    if h.descr != "<f4" {
        let hint = match h.descr.as_str() {
            "<f8" => " (float64: convert with `np.save(p, a.astype(np.float32))`)",
            "<f2" => " (float16: convert with `a.astype(np.float32)`)",
            ">f4" => " (big-endian: convert with `a.astype('<f4')`)",
            _ => "",
        };
        return Err(bad(
            path,
            format!(
                "dtype is '{}', expected little-endian float32 '<f4'{hint}",
                h.descr
            ),
        ));
    }
    if h.fortran_order {
        return Err(bad(
            path,
            "array is in Fortran (column-major) order; save it with `np.ascontiguousarray(a)`",
        ));
    }
    match h.shape.as_slice() {
        [n, d] if *d > 0 => Ok((*n, *d)),
        [_, _] => Err(bad(path, "rows have width 0")),
        s => Err(bad(
            path,
            format!("array has shape {s:?}, expected 2 dimensions [n_tokens, d_in]"),
        )),
    }
}

/// Reads a whole float32 `[n, d_in]` file into memory; returns `(rows, n, d_in)`.
pub fn read_f32_matrix(path: &Path) -> Result<(Vec<f32>, usize, usize), SaeError> {
    let file = NpyFile::open(path)?;
    let mut rows = vec![0.0; file.n_rows * file.d_in];
    file.copy_rows(0, file.n_rows, &mut rows);
    Ok((rows, file.n_rows, file.d_in))
}

/// The bytes before the data of a version-1.0 float32 C-order `.npy` file of `shape`: magic, version,
/// header length and the header dict padded with spaces so that the data starts at a multiple of 64.
pub fn f32_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// Writes `rows` (`n × d_in`, row-major) as a float32 `.npy` file, atomically (temp file + rename).
pub fn write_f32_matrix(path: &Path, rows: &[f32], d_in: usize) -> Result<(), SaeError> {
    if d_in == 0 || rows.len() % d_in != 0 {
        return Err(bad(
            path,
            format!(
                "{} values is not a whole number of rows of width {d_in}",
                rows.len()
            ),
        ));
    }
    let mut bytes = f32_header(&[rows.len() / d_in, d_in]);
    bytes.reserve(rows.len() * 4);
    for v in rows {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(zephyra_io::write_atomic(path, &bytes)?)
}

/// An opened, validated, memory-mapped float32 `[n, d_in]` file.
#[derive(Debug)]
pub struct NpyFile {
    path: PathBuf,
    map: memmap2::Mmap,
    data_offset: usize,
    n_rows: usize,
    d_in: usize,
}

impl NpyFile {
    /// Opens and validates `path` (dtype, order, rank, and that the data is all there).
    pub fn open(path: &Path) -> Result<Self, SaeError> {
        let file = File::open(path).map_err(|source| SaeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only and only read through bounds-checked slices; a file truncated by
        // another process while mapped would fault, which is the usual caveat of memory-mapped input and
        // the reason the length is validated below before any row is read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| SaeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let header = parse_header(path, &map)?;
        let (n_rows, d_in) = check_f32_matrix(path, &header)?;
        // Checked: a lying header (`(2^62, 576)`) must not wrap to a small size and pass.
        let need = n_rows
            .checked_mul(d_in)
            .and_then(|v| v.checked_mul(4))
            .and_then(|v| v.checked_add(header.data_offset));
        let Some(need) = need else {
            return Err(bad(
                path,
                format!(
                    "the header's shape ({n_rows}, {d_in}) is impossibly large (its byte size overflows) \
                     while the file has {} bytes: the header is corrupt",
                    map.len()
                ),
            ));
        };
        if map.len() < need {
            return Err(bad(
                path,
                format!(
                    "file is truncated: the header promises {n_rows} x {d_in} float32 values ({need} bytes) \
                     but the file has {} bytes",
                    map.len()
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_offset: header.data_offset,
            n_rows,
            d_in,
        })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Row width.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies rows `start..start + count` into `out` (at least `count × d_in` long).
    pub fn copy_rows(&self, start: usize, count: usize, out: &mut [f32]) {
        let bytes = &self.map[self.data_offset + start * self.d_in * 4..][..count * self.d_in * 4];
        for (dst, src) in out[..count * self.d_in]
            .iter_mut()
            .zip(bytes.chunks_exact(4))
        {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
    }
}

/// Fills `perm` with the order of pass `epoch` over `n` shuffled rows (`n` must fit a `u32`): a permutation
/// drawn from `seed` and the pass number. Every shuffling source uses it, so a `.npy` file and the same rows
/// in memory are read in the same order.
pub(crate) fn epoch_permutation(n: usize, seed: u64, epoch: u64, perm: &mut Vec<u32>) {
    perm.clear();
    perm.extend(0..n as u32);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    perm.shuffle(&mut rng);
}

/// How an [`NpySource`] walks its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NpyOrder {
    /// Shuffle the rows of each epoch (a permutation drawn from `seed` and the epoch number).
    pub shuffle: bool,
    /// Start another epoch when the rows run out (otherwise the source is exhausted after one pass).
    pub repeat: bool,
    /// Seed of the per-epoch permutations.
    pub seed: u64,
}

/// An [`ActivationSource`] over a row range of a memory-mapped `.npy` file.
#[derive(Debug)]
pub struct NpySource {
    file: NpyFile,
    start: usize,
    end: usize,
    order: NpyOrder,
    epoch: u64,
    pos: usize,
    perm: Vec<u32>,
}

impl NpySource {
    /// Serves rows `range` of `file` in the given order.
    pub fn new(
        file: NpyFile,
        range: std::ops::Range<usize>,
        order: NpyOrder,
    ) -> Result<Self, SaeError> {
        if range.start > range.end || range.end > file.n_rows {
            return Err(bad(
                &file.path,
                format!(
                    "row range {range:?} is outside the file's {} rows",
                    file.n_rows
                ),
            ));
        }
        if order.shuffle && u32::try_from(range.len()).is_err() {
            return Err(bad(
                &file.path,
                format!(
                    "{} rows are too many to shuffle (at most {}): split the file or read it in order",
                    range.len(),
                    u32::MAX
                ),
            ));
        }
        let mut src = Self {
            file,
            start: range.start,
            end: range.end,
            order,
            epoch: 0,
            pos: 0,
            perm: Vec::new(),
        };
        src.make_perm();
        Ok(src)
    }

    /// Opens `path` and serves all its rows.
    pub fn open(path: &Path, order: NpyOrder) -> Result<Self, SaeError> {
        let file = NpyFile::open(path)?;
        let n = file.n_rows;
        Self::new(file, 0..n, order)
    }

    /// Number of rows in the range served.
    pub fn n_rows(&self) -> usize {
        self.end - self.start
    }

    fn make_perm(&mut self) {
        self.perm.clear();
        if self.order.shuffle {
            epoch_permutation(
                self.end - self.start,
                self.order.seed,
                self.epoch,
                &mut self.perm,
            );
        }
    }
}

impl ActivationSource for NpySource {
    fn d_in(&self) -> usize {
        self.file.d_in
    }

    fn rows_per_pass(&self) -> Option<u64> {
        Some(self.n_rows() as u64)
    }

    fn next_rows(&mut self, out: &mut [f32]) -> Result<usize, SaeError> {
        let d = self.file.d_in;
        let want = out.len() / d;
        let n = self.n_rows();
        let mut written = 0;
        while written < want {
            if self.pos == n {
                if !self.order.repeat || n == 0 {
                    break;
                }
                self.pos = 0;
                self.epoch += 1;
                self.make_perm();
            }
            if self.order.shuffle {
                let row = self.start + self.perm[self.pos] as usize;
                self.file.copy_rows(row, 1, &mut out[written * d..]);
                written += 1;
                self.pos += 1;
            } else {
                let take = (want - written).min(n - self.pos);
                self.file
                    .copy_rows(self.start + self.pos, take, &mut out[written * d..]);
                written += take;
                self.pos += take;
            }
        }
        Ok(written)
    }

    fn cursor(&self) -> Cursor {
        Cursor::Npy {
            path: self.file.path.clone(),
            n_rows: self.file.n_rows as u64,
            d_in: self.file.d_in as u64,
            start: self.start as u64,
            end: self.end as u64,
            order: self.order,
            epoch: self.epoch,
            pos: self.pos as u64,
        }
    }

    fn seek(&mut self, cursor: &Cursor) -> Result<(), SaeError> {
        match *cursor {
            Cursor::Npy {
                n_rows,
                d_in,
                start,
                end,
                order,
                epoch,
                pos,
                ..
            } if n_rows == self.file.n_rows as u64
                && d_in == self.file.d_in as u64
                && start == self.start as u64
                && end == self.end as u64
                && order == self.order
                && pos <= self.n_rows() as u64 =>
            {
                self.epoch = epoch;
                self.pos = pos as usize;
                self.make_perm();
                Ok(())
            }
            _ => Err(SaeError::Source(format!(
                "the checkpoint's data cursor {cursor} does not match {} ({} rows x {}, rows {}..{}): \
                 resume with the same --acts file and the same data options",
                self.file.path.display(),
                self.file.n_rows,
                self.file.d_in,
                self.start,
                self.end
            ).into())),
        }
    }
}
