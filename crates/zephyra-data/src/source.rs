//! The trainer's activation sources over this crate's data: an activation store, or the model on the fly.
//!
//! [`BufferedSource`] serves rows through a [`ShuffleReader`] and implements zephyra-sae's
//! [`ActivationSource`], so `zephyra_sae::train::Trainer` reads a store, or a harvest running on a
//! background thread, like any other source. For the same options and seed the on-the-fly source serves
//! exactly the rows, in exactly the order, that a store harvested with the same options (and at least
//! [`stream_tokens`](crate::harvest::stream_tokens) tokens) read with the same buffer would.

use std::path::PathBuf;
use std::sync::Arc;

use zephyra_sae::train::{ActivationSource, Cursor};
use zephyra_sae::SaeError;

use crate::corpus::Corpus;
use crate::error::Result;
use crate::harvest::{HarvestConfig, HookModel, Pipeline, StreamFeed};
use crate::pack::TextEncoder;
use crate::store::{ActivationStore, ReaderCursor, ShuffleReader};

/// Shards harvested ahead of the reader by the on-the-fly source.
const PREFETCH_SHARDS: usize = 2;

fn source_err(e: crate::DataError) -> SaeError {
    SaeError::Source(Box::new(e))
}

/// Rows served through a shuffle buffer: from an activation store, or harvested on the fly by a background
/// thread. Its cursors are [`Cursor::Store`] (with the store's path) and [`Cursor::Stream`], holding the
/// reader's `(epoch, window, offset)`.
pub struct BufferedSource {
    reader: ShuffleReader,
    /// The store read; `None` on the fly.
    dir: Option<PathBuf>,
    /// Rows of one pass over the store (`None` on the fly: the pass ends when the corpus or the harvest's
    /// token budget does).
    rows_per_pass: Option<u64>,
}

impl std::fmt::Debug for BufferedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedSource")
            .field("kind", &self.kind())
            .field("dir", &self.dir)
            .field("reader", &self.reader)
            .finish()
    }
}

impl BufferedSource {
    /// On the fly: read the corpus again each time the harvest ends (every pass harvests the same
    /// contexts; the rows of each window are shuffled afresh), so a training run's `--tokens` is honoured
    /// on a corpus smaller than it. Without it the source serves one pass and then ends.
    pub fn repeat_corpus(mut self) -> Self {
        if self.dir.is_none() {
            self.reader.set_epochs(None);
        }
        self
    }

    /// `store` or `stream`.
    pub fn kind(&self) -> &'static str {
        if self.dir.is_some() {
            "store"
        } else {
            "stream"
        }
    }

    /// Reads `store` with a buffer of `buffer_rows` rows shuffled from `seed`: one pass, or forever with
    /// `repeat`.
    pub fn store(store: ActivationStore, buffer_rows: usize, seed: u64, repeat: bool) -> Self {
        let dir = store.dir().to_path_buf();
        let rows_per_pass = Some(store.n_rows());
        let epochs = if repeat { None } else { Some(1) };
        Self {
            reader: ShuffleReader::from_store(store, buffer_rows, seed, epochs),
            dir: Some(dir),
            rows_per_pass,
        }
    }

    /// Starts harvesting `pipeline` (one hook) on a background thread, two shards ahead of a shuffle
    /// buffer of `buffer_rows` rows shuffled from `seed` (a single pass).
    pub fn stream(pipeline: Pipeline, buffer_rows: usize, seed: u64) -> Result<Self> {
        let feed = StreamFeed::new(pipeline, buffer_rows, PREFETCH_SHARDS)?;
        Ok(Self {
            reader: ShuffleReader::new(Box::new(feed), seed, Some(1)),
            dir: None,
            rows_per_pass: None,
        })
    }

    /// Harvests `corpus` through `model` on the fly as `config` says (one hook; its seed also shuffles
    /// the rows), through a buffer of `buffer_rows` rows.
    pub fn harvesting(
        model: Arc<dyn HookModel>,
        encoder: Arc<dyn TextEncoder>,
        corpus: Corpus,
        config: HarvestConfig,
        buffer_rows: usize,
    ) -> Result<Self> {
        if config.hooks.len() != 1 {
            return Err(crate::DataError::InvalidOption {
                name: "--hook",
                value: format!("{} hooks", config.hooks.len()),
                reason: "one source reads one hook; use `harvesting_many` for several".into(),
            });
        }
        let mut sources =
            Self::harvesting_many(model, encoder, corpus, config, vec![vec![0]], buffer_rows)?;
        sources.pop().ok_or(crate::DataError::ThreadStopped {
            thread: "harvesting",
        })
    }

    /// Several dictionaries from one forward pass per batch: one source per entry of `dictionaries` (the
    /// indices of `config.hooks` whose rows it reads side by side — `[h]` for an SAE, `[input, target]`
    /// for a transcoder), each with its own shuffle buffer of `buffer_rows` rows shuffled from the seed.
    /// Each source serves exactly what [`harvesting`](Self::harvesting) would for its hooks under the
    /// shared exclusion verdict ([`crate::exclude::apply_joint`]).
    pub fn harvesting_many(
        model: Arc<dyn HookModel>,
        encoder: Arc<dyn TextEncoder>,
        corpus: Corpus,
        config: HarvestConfig,
        dictionaries: Vec<Vec<usize>>,
        buffer_rows: usize,
    ) -> Result<Vec<Self>> {
        let seed = config.seed;
        let pipeline = Pipeline {
            model,
            encoder,
            corpus,
            config,
        };
        let feeds = StreamFeed::many(pipeline, dictionaries, buffer_rows, PREFETCH_SHARDS)?;
        Ok(feeds
            .into_iter()
            .map(|feed| Self {
                reader: ShuffleReader::new(Box::new(feed), seed, Some(1)),
                dir: None,
                rows_per_pass: None,
            })
            .collect())
    }
}

impl ActivationSource for BufferedSource {
    fn d_in(&self) -> usize {
        self.reader.d()
    }

    fn next_rows(&mut self, out: &mut [f32]) -> Result<usize, SaeError> {
        self.reader.next_rows(out).map_err(source_err)
    }

    fn rows_per_pass(&self) -> Option<u64> {
        self.rows_per_pass
    }

    fn cursor(&self) -> Cursor {
        let ReaderCursor {
            epoch,
            window,
            offset,
        } = self.reader.cursor();
        match &self.dir {
            Some(path) => Cursor::Store {
                path: path.clone(),
                epoch,
                window,
                offset,
            },
            None => Cursor::Stream {
                epoch,
                window,
                offset,
            },
        }
    }

    fn seek(&mut self, cursor: &Cursor) -> Result<(), SaeError> {
        let (epoch, window, offset) = match (cursor, &self.dir) {
            (
                Cursor::Store {
                    epoch,
                    window,
                    offset,
                    ..
                },
                Some(_),
            )
            | (
                Cursor::Stream {
                    epoch,
                    window,
                    offset,
                },
                None,
            ) => (*epoch, *window, *offset),
            _ => {
                return Err(SaeError::Source(format!(
                    "the checkpoint's data cursor {cursor} was not written by a `{}` source: resume with the same activations",
                    self.kind()
                ).into()))
            }
        };
        self.reader
            .seek(ReaderCursor {
                epoch,
                window,
                offset,
            })
            .map_err(source_err)
    }
}
