//! Where training rows come from: the [`ActivationSource`] trait and an in-memory implementation.
//!
//! A source hands out rows of `d_in` float32 values in a deterministic order and can report and restore its
//! position (its *cursor*), which is what makes `--resume` reproduce an uninterrupted run bit-for-bit.

use super::Cursor;
use crate::SaeError;

/// A stream of activation rows `[n, d_in]` (row-major float32) for the trainer.
///
/// Implementations must be deterministic: after `seek(c)` with a cursor `c` previously returned by
/// [`cursor`](ActivationSource::cursor), `next_rows` yields exactly the rows it yielded after that point.
pub trait ActivationSource: Send {
    /// Width of each row.
    fn d_in(&self) -> usize;
    /// Rows in one pass over the data, when known: a reader that skips twice this many unusable rows in a
    /// row has seen a whole pass without a usable one and stops ([`SaeError::NoUsableRows`]) instead of
    /// looping over a repeating source forever. `None` (the default): unknown, no such bound.
    fn rows_per_pass(&self) -> Option<u64> {
        None
    }

    /// Fills `out` (a multiple of `d_in` long) with whole rows and returns how many were written;
    /// `0` means the source is exhausted.
    fn next_rows(&mut self, out: &mut [f32]) -> Result<usize, SaeError>;
    /// The current position, stored in checkpoints.
    fn cursor(&self) -> Cursor;
    /// Returns to a position previously reported by [`cursor`](ActivationSource::cursor) (a cursor of
    /// another kind of source, or one that does not fit this source's data, is an error).
    fn seek(&mut self, cursor: &Cursor) -> Result<(), SaeError>;
}

/// Rows held in memory (tests, benchmarks, hold-out sets), read in order or shuffled per pass
/// ([`MemorySource::shuffled`]), and optionally repeated.
///
/// The rows are any `AsRef<[f32]>`: an owned `Vec<f32>` (the default) or a borrowed slice (the Python
/// package trains on a numpy array without copying it).
#[derive(Debug, Clone)]
pub struct MemorySource<R = Vec<f32>> {
    rows: R,
    d_in: usize,
    pos: usize,
    epoch: u64,
    repeat: bool,
    /// Seed of the per-pass permutations when shuffled.
    shuffle: Option<u64>,
    /// This pass's order (empty when not shuffled).
    perm: Vec<u32>,
}

impl<R: AsRef<[f32]>> MemorySource<R> {
    /// Wraps `rows` (`n × d_in`, row-major). With `repeat`, the rows are served again from the start when
    /// the end is reached (epochs), otherwise the source is exhausted after one pass.
    pub fn new(rows: R, d_in: usize, repeat: bool) -> Result<Self, SaeError> {
        let n_values = rows.as_ref().len();
        if d_in == 0 || n_values % d_in != 0 {
            return Err(SaeError::Source(
                format!(
                "in-memory activations: {n_values} values is not a whole number of rows of width {d_in}"
            )
                .into(),
            ));
        }
        Ok(Self {
            rows,
            d_in,
            pos: 0,
            epoch: 0,
            repeat,
            shuffle: None,
            perm: Vec::new(),
        })
    }

    /// Serves each pass in its own shuffled order, drawn from `seed` and the pass number as
    /// [`NpySource`](crate::npy::NpySource) draws it (the same rows in memory and in a `.npy` file are read
    /// alike). Fails when there are more rows than a permutation can index (`u32`).
    pub fn shuffled(mut self, seed: u64) -> Result<Self, SaeError> {
        if u32::try_from(self.n_rows()).is_err() {
            return Err(SaeError::Source(
                format!(
                    "in-memory activations: {} rows are too many to shuffle (at most {}); read them in order",
                    self.n_rows(),
                    u32::MAX
                )
                .into(),
            ));
        }
        self.shuffle = Some(seed);
        self.make_perm();
        Ok(self)
    }

    fn make_perm(&mut self) {
        if let Some(seed) = self.shuffle {
            crate::npy::epoch_permutation(self.n_rows(), seed, self.epoch, &mut self.perm);
        }
    }

    /// Number of rows held.
    pub fn n_rows(&self) -> usize {
        self.rows.as_ref().len() / self.d_in
    }
}

impl<R: AsRef<[f32]> + Send> ActivationSource for MemorySource<R> {
    fn d_in(&self) -> usize {
        self.d_in
    }

    fn rows_per_pass(&self) -> Option<u64> {
        Some(self.n_rows() as u64)
    }

    fn next_rows(&mut self, out: &mut [f32]) -> Result<usize, SaeError> {
        let want = out.len() / self.d_in;
        let n = self.n_rows();
        let mut written = 0;
        while written < want {
            if self.pos == n {
                if !self.repeat || n == 0 {
                    break;
                }
                self.pos = 0;
                self.epoch += 1;
                self.make_perm();
            }
            let d = self.d_in;
            let rows = self.rows.as_ref();
            let take = if self.perm.is_empty() {
                let take = (want - written).min(n - self.pos);
                out[written * d..(written + take) * d]
                    .copy_from_slice(&rows[self.pos * d..(self.pos + take) * d]);
                take
            } else {
                let row = self.perm[self.pos] as usize;
                out[written * d..(written + 1) * d].copy_from_slice(&rows[row * d..(row + 1) * d]);
                1
            };
            written += take;
            self.pos += take;
        }
        Ok(written)
    }

    fn cursor(&self) -> Cursor {
        Cursor::Memory {
            pos: self.pos as u64,
            epoch: self.epoch,
        }
    }

    fn seek(&mut self, cursor: &Cursor) -> Result<(), SaeError> {
        match *cursor {
            Cursor::Memory { pos, epoch } if pos <= self.n_rows() as u64 => {
                self.pos = pos as usize;
                self.epoch = epoch;
                self.make_perm();
                Ok(())
            }
            _ => Err(SaeError::Source(
                format!(
                    "cursor {cursor} does not fit this in-memory source of {} rows",
                    self.n_rows()
                )
                .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_source_repeats_and_seeks() {
        let rows: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let mut src = MemorySource::new(rows, 2, true).unwrap();
        let mut out = vec![0.0; 6];
        assert_eq!(src.next_rows(&mut out).unwrap(), 3);
        assert_eq!(out, [0., 1., 2., 3., 4., 5.]);
        let c = src.cursor();
        assert_eq!(src.next_rows(&mut out).unwrap(), 3);
        assert_eq!(out, [6., 7., 8., 9., 0., 1.]);
        src.seek(&c).unwrap();
        let mut again = vec![0.0; 6];
        src.next_rows(&mut again).unwrap();
        assert_eq!(again, out);
        let mut once = MemorySource::new(vec![1.0; 4], 2, false).unwrap();
        assert_eq!(once.next_rows(&mut out).unwrap(), 2);
        assert_eq!(once.next_rows(&mut out).unwrap(), 0);
    }

    #[test]
    fn memory_source_reads_a_borrowed_slice_like_an_owned_one() {
        let rows: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut owned = MemorySource::new(rows.clone(), 3, true).unwrap();
        let mut borrowed = MemorySource::new(rows.as_slice(), 3, true).unwrap();
        let (mut a, mut b) = (vec![0.0; 15], vec![0.0; 15]);
        assert_eq!(owned.next_rows(&mut a).unwrap(), 5);
        assert_eq!(borrowed.next_rows(&mut b).unwrap(), 5);
        assert_eq!(a, b);
        assert_eq!(&b[9..], &[9., 10., 11., 0., 1., 2.]);
        assert_eq!(borrowed.cursor(), Cursor::Memory { pos: 1, epoch: 1 });
        assert!(MemorySource::new(&rows[..11], 3, false).is_err());
    }

    /// Reads `n` rows of `src`, one value per row (rows of width 1).
    fn drain(src: &mut impl ActivationSource, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n];
        assert_eq!(src.next_rows(&mut out).unwrap(), n);
        out
    }

    #[test]
    fn a_shuffled_memory_source_permutes_each_pass_and_seeks_into_it() {
        let rows: Vec<f32> = (0..50).map(|v| v as f32).collect();
        let mut src = MemorySource::new(rows.as_slice(), 1, true)
            .unwrap()
            .shuffled(7)
            .unwrap();
        let first = drain(&mut src, 50);
        let mut sorted = first.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, rows, "a pass serves every row once");
        assert_ne!(first, rows, "the pass is shuffled");
        let c = src.cursor();
        let second = drain(&mut src, 30);
        assert_ne!(&second[..], &first[..30], "each pass has its own order");
        src.seek(&c).unwrap();
        assert_eq!(drain(&mut src, 30), second);
        let mut same_seed = MemorySource::new(rows.clone(), 1, true)
            .unwrap()
            .shuffled(7)
            .unwrap();
        assert_eq!(drain(&mut same_seed, 50), first);
        let mut other_seed = MemorySource::new(rows.clone(), 1, true)
            .unwrap()
            .shuffled(8)
            .unwrap();
        assert_ne!(drain(&mut other_seed, 50), first);
    }
}
