//! Streaming, shuffled, resumable reading of activation rows.
//!
//! Rows are grouped into *windows*: a window is a run of consecutive shards (of a store, or of the chunks
//! an on-the-fly harvest produces) holding at most `buffer_rows` rows, or a single shard when one shard is
//! larger than that. The reader loads one window at a time, permutes its rows with a ChaCha8 generator
//! seeded from `(seed, epoch, window)`, and serves them in that order. So:
//! - memory is one window: at most `max(buffer_rows, rows of the largest shard)` rows of `d` floats, in
//!   one buffer reused from window to window (plus, while a store window loads, one shard file's bytes);
//! - every row is served exactly once per epoch;
//! - the position is `(epoch, window, offset)` ([`ReaderCursor`]), and seeking to it loads one window.
//!
//! Epoch 0 visits shards in store order (the order they were harvested, which is already a shuffle of the
//! corpus' contexts); later epochs visit them in a permutation drawn from `(seed, epoch)`.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ActivationStore;
use crate::error::{DataError, Result};

/// Supplies windows of rows to a [`ShuffleReader`].
pub trait WindowFeed: Send {
    /// Row width.
    fn d(&self) -> usize;
    /// Appends to `rows` (empty, its capacity kept from the previous window so that the reader's main
    /// memory is allocated once) the rows, row-major, of window `window` of epoch `epoch`; `false` when the
    /// epoch has fewer windows.
    fn load_window(&mut self, epoch: u64, window: u64, rows: &mut Vec<f32>) -> Result<bool>;
}

/// A position in a [`ShuffleReader`]'s stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReaderCursor {
    /// Epoch (0-based).
    pub epoch: u64,
    /// Window inside the epoch.
    pub window: u64,
    /// Rows of that window already served.
    pub offset: u64,
}

/// Shards per window for a shuffle buffer of `buffer_rows` rows: `max(1, buffer_rows / (contexts_per_shard
/// × ctx))`, the grouping shared by stores ([`StoreFeed`]) and on-the-fly harvests, so both serve the
/// same rows in the same order.
pub fn shards_per_window(buffer_rows: usize, contexts_per_shard: usize, ctx: usize) -> usize {
    (buffer_rows / contexts_per_shard.saturating_mul(ctx).max(1)).max(1)
}

/// Derives the generator for a window.
fn window_rng(seed: u64, epoch: u64, window: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ window);
    rng
}

/// Serves rows from a [`WindowFeed`] in shuffled order; see the module docs.
pub struct ShuffleReader {
    feed: Box<dyn WindowFeed>,
    d: usize,
    seed: u64,
    epochs: Option<u64>,
    cursor: ReaderCursor,
    rows: Vec<f32>,
    order: Vec<u32>,
    loaded: Option<(u64, u64)>,
    done: bool,
}

impl std::fmt::Debug for ShuffleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShuffleReader")
            .field("d", &self.d)
            .field("cursor", &self.cursor)
            .field("resident_rows", &self.resident_rows())
            .finish()
    }
}

impl ShuffleReader {
    /// A reader over `feed`, shuffled from `seed`, for `epochs` passes (`None`: forever).
    pub fn new(feed: Box<dyn WindowFeed>, seed: u64, epochs: Option<u64>) -> Self {
        let d = feed.d();
        Self {
            feed,
            d,
            seed,
            epochs,
            cursor: ReaderCursor::default(),
            rows: Vec::new(),
            order: Vec::new(),
            loaded: None,
            done: false,
        }
    }

    /// A reader over a store with windows of at most `buffer_rows` rows.
    pub fn from_store(
        store: ActivationStore,
        buffer_rows: usize,
        seed: u64,
        epochs: Option<u64>,
    ) -> Self {
        Self::new(
            Box::new(StoreFeed::new(store, buffer_rows, seed)),
            seed,
            epochs,
        )
    }

    /// Row width.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Sets how many passes the reader makes (`None`: forever), e.g. after [`new`](Self::new).
    pub fn set_epochs(&mut self, epochs: Option<u64>) {
        self.epochs = epochs;
        self.done = epochs.is_some_and(|e| self.cursor.epoch >= e);
    }

    /// Rows currently held in memory.
    pub fn resident_rows(&self) -> usize {
        self.rows.len() / self.d.max(1)
    }

    /// The current position.
    pub fn cursor(&self) -> ReaderCursor {
        self.cursor
    }

    /// Moves to `cursor` (as returned by [`cursor`](Self::cursor) on a reader over the same data and seed).
    pub fn seek(&mut self, cursor: ReaderCursor) -> Result<()> {
        self.done = false;
        self.cursor = cursor;
        if self.epochs.is_some_and(|e| cursor.epoch >= e) {
            self.done = true;
            return Ok(());
        }
        // The window is already in memory (the trainer reads its first rows, then rewinds): its rows and
        // their permutation are the same, so keep them rather than read (or, on the fly, harvest) it again.
        let resident = self.loaded == Some((cursor.epoch, cursor.window));
        if !resident && !self.load(cursor.epoch, cursor.window)? {
            if cursor.offset == 0 {
                // End of an epoch: next_rows moves on.
                self.order.clear();
                self.loaded = Some((cursor.epoch, cursor.window));
                return Ok(());
            }
            return Err(DataError::InvalidOption {
                name: "cursor",
                value: format!("{cursor:?}"),
                reason: "the data has no such window; resume with the same activations and seed"
                    .into(),
            });
        }
        if cursor.offset as usize > self.order.len() {
            return Err(DataError::InvalidOption {
                name: "cursor",
                value: format!("{cursor:?}"),
                reason: format!(
                    "the window holds only {} rows; resume with the same activations and seed",
                    self.order.len()
                ),
            });
        }
        Ok(())
    }

    /// Loads a window; `false` when the epoch has no such window.
    fn load(&mut self, epoch: u64, window: u64) -> Result<bool> {
        self.rows.clear();
        self.order.clear();
        self.loaded = None;
        if !self.feed.load_window(epoch, window, &mut self.rows)? {
            self.rows.clear();
            return Ok(false);
        }
        if self.rows.len() % self.d != 0 {
            let n_values = self.rows.len();
            self.rows.clear();
            return Err(DataError::RaggedWindow {
                n_values,
                d: self.d,
            });
        }
        let n = self.rows.len() / self.d;
        self.order.extend(0..n as u32);
        self.order
            .shuffle(&mut window_rng(self.seed, epoch, window));
        self.loaded = Some((epoch, window));
        Ok(true)
    }

    /// Fills `out` (a multiple of `d` long) with the next rows; returns how many (0 = exhausted).
    pub fn next_rows(&mut self, out: &mut [f32]) -> Result<usize> {
        let d = self.d;
        let want = out.len() / d;
        let mut written = 0;
        let mut empty_epoch_guard = 0;
        while written < want && !self.done {
            let c = self.cursor;
            if self.loaded != Some((c.epoch, c.window)) && !self.load(c.epoch, c.window)? {
                if c.window == 0 {
                    // An epoch with no windows: nothing to read at all.
                    self.done = true;
                    break;
                }
                self.cursor = ReaderCursor {
                    epoch: c.epoch + 1,
                    window: 0,
                    offset: 0,
                };
                if self.epochs.is_some_and(|e| self.cursor.epoch >= e) {
                    self.done = true;
                }
                continue;
            }
            let offset = self.cursor.offset as usize;
            if offset >= self.order.len() {
                empty_epoch_guard += 1;
                if empty_epoch_guard > 1_000_000 {
                    break;
                }
                self.cursor = ReaderCursor {
                    epoch: c.epoch,
                    window: c.window + 1,
                    offset: 0,
                };
                continue;
            }
            let take = (want - written).min(self.order.len() - offset);
            for (k, &row) in self.order[offset..offset + take].iter().enumerate() {
                let src = &self.rows[row as usize * d..(row as usize + 1) * d];
                out[(written + k) * d..(written + k + 1) * d].copy_from_slice(src);
            }
            written += take;
            self.cursor.offset += take as u64;
        }
        Ok(written)
    }
}

/// Windows of consecutive shards of a store.
pub struct StoreFeed {
    store: ActivationStore,
    shards_per_window: usize,
    seed: u64,
    order: Option<(u64, Vec<usize>)>,
}

impl StoreFeed {
    /// Windows of [`shards_per_window`] shards: at most `buffer_rows` rows (or one shard), the grouping
    /// an on-the-fly harvest uses too.
    pub fn new(store: ActivationStore, buffer_rows: usize, seed: u64) -> Self {
        let m = store.manifest();
        let shards_per_window = shards_per_window(buffer_rows, m.contexts_per_shard, m.ctx);
        Self {
            store,
            shards_per_window,
            seed,
            order: None,
        }
    }

    /// Shards per window.
    pub fn shards_per_window(&self) -> usize {
        self.shards_per_window
    }
}

impl WindowFeed for StoreFeed {
    fn d(&self) -> usize {
        self.store.d()
    }

    fn load_window(&mut self, epoch: u64, window: u64, rows: &mut Vec<f32>) -> Result<bool> {
        let n = self.store.n_shards();
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut order: Vec<usize> = (0..n).collect();
            if epoch > 0 {
                order.shuffle(&mut window_rng(self.seed, epoch, u64::MAX));
            }
            self.order = Some((epoch, order));
        }
        let order = self
            .order
            .as_ref()
            .map(|(_, o)| o.as_slice())
            .unwrap_or(&[]);
        // `window` may come from a checkpoint file: no overflow.
        let start = usize::try_from(window)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.shards_per_window);
        if start >= n {
            return Ok(false);
        }
        let end = (start + self.shards_per_window).min(n);
        // Sized up front from the manifest (each shard is checked against it when read): the window is the
        // reader's main memory, so no growth by doubling. A manifest asking for too much reserves nothing.
        let n_values = order[start..end]
            .iter()
            .filter_map(|&s| self.store.manifest().shards.get(s))
            .fold(0u64, |n, info| n.saturating_add(info.n_rows))
            .saturating_mul(self.store.d() as u64);
        let _ = rows.try_reserve_exact(usize::try_from(n_values).unwrap_or(0));
        for &shard in &order[start..end] {
            self.store.read_activations_into(shard, rows)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows of `rows_per_window` rows of width 2 holding `[window, row]`; counts the loads.
    struct CountingFeed {
        windows: u64,
        rows_per_window: usize,
        loads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl WindowFeed for CountingFeed {
        fn d(&self) -> usize {
            2
        }

        fn load_window(&mut self, _epoch: u64, window: u64, rows: &mut Vec<f32>) -> Result<bool> {
            if window >= self.windows {
                return Ok(false);
            }
            self.loads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for r in 0..self.rows_per_window {
                rows.extend_from_slice(&[window as f32, r as f32]);
            }
            Ok(true)
        }
    }

    /// Three values at width 2.
    struct RaggedFeed;

    impl WindowFeed for RaggedFeed {
        fn d(&self) -> usize {
            2
        }

        fn load_window(&mut self, _epoch: u64, _window: u64, rows: &mut Vec<f32>) -> Result<bool> {
            rows.extend_from_slice(&[1.0, 2.0, 3.0]);
            Ok(true)
        }
    }

    #[test]
    fn a_window_of_partial_rows_is_a_typed_error() {
        let mut reader = ShuffleReader::new(Box::new(RaggedFeed), 0, Some(1));
        let mut out = vec![0.0; 4];
        let e = reader.next_rows(&mut out).unwrap_err();
        assert!(
            matches!(e, DataError::RaggedWindow { n_values: 3, d: 2 }),
            "{e}"
        );
    }

    #[test]
    fn rewinding_into_the_resident_window_does_not_load_it_again() {
        let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let feed = CountingFeed {
            windows: 3,
            rows_per_window: 10,
            loads: loads.clone(),
        };
        let mut reader = ShuffleReader::new(Box::new(feed), 7, Some(1));
        let start = reader.cursor();
        let mut first = vec![0.0; 2 * 6];
        assert_eq!(reader.next_rows(&mut first).unwrap(), 6);
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 1);
        reader.seek(start).unwrap();
        let mut again = vec![0.0; 2 * 6];
        assert_eq!(reader.next_rows(&mut again).unwrap(), 6);
        assert_eq!(
            again, first,
            "the same rows in the same order after the rewind"
        );
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Past the resident window, rewinding loads window 0 again, and still serves the same rows.
        let mut rest = vec![0.0; 2 * 14];
        assert_eq!(reader.next_rows(&mut rest).unwrap(), 14);
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 2);
        reader.seek(start).unwrap();
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 3);
        reader.next_rows(&mut again).unwrap();
        assert_eq!(again, first);
        // All 30 rows once, each window's rows shuffled.
        let mut reader = ShuffleReader::new(
            Box::new(CountingFeed {
                windows: 3,
                rows_per_window: 10,
                loads,
            }),
            7,
            Some(1),
        );
        let mut all = vec![0.0; 2 * 40];
        assert_eq!(reader.next_rows(&mut all).unwrap(), 30);
        let mut seen: Vec<(u32, u32)> = all[..60]
            .chunks(2)
            .map(|r| (r[0] as u32, r[1] as u32))
            .collect();
        assert_ne!(seen[..10], (0..10).map(|r| (0, r)).collect::<Vec<_>>()[..]);
        seen.sort();
        let expected: Vec<(u32, u32)> = (0..3).flat_map(|w| (0..10).map(move |r| (w, r))).collect();
        assert_eq!(seen, expected);
    }
}
