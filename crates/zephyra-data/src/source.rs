//! The trainer's activation sources over this crate's data: an activation store, or the model on the fly.
//!
//! [`BufferedSource`] serves rows through a [`ShuffleReader`] and implements zephyra-sae's
//! [`ActivationSource`], so `zephyra_sae::train::Trainer` reads a store, or a harvest running on a
//! background thread, like any other source. For the same options and seed the on-the-fly source serves
//! exactly the rows, in exactly the order, that a store harvested with the same options (and at least
//! [`stream_tokens`](crate::harvest::stream_tokens) tokens) read with the same buffer would.

use std::path::PathBuf;
use std::sync::Arc;

use zephyra_sae::train::ActivationSource;
use zephyra_sae::SaeError;

use crate::corpus::Corpus;
use crate::error::Result;
use crate::harvest::{HarvestConfig, HookModel, Pipeline, StreamFeed};
use crate::pack::TextEncoder;
use crate::store::{ActivationStore, ReaderCursor, ShuffleReader};

/// Shards harvested ahead of the reader by the on-the-fly source.
const PREFETCH_SHARDS: usize = 2;

fn source_err(e: crate::DataError) -> SaeError {
    SaeError::Source(e.to_string())
}

fn parse_cursor(cursor: &serde_json::Value, kind: &str) -> Result<ReaderCursor, SaeError> {
    if cursor.get("kind").and_then(|k| k.as_str()) != Some(kind) {
        return Err(SaeError::Source(format!("checkpoint cursor {cursor} was not written by a `{kind}` source: resume with the same activations")));
    }
    serde_json::from_value(cursor.clone())
        .map_err(|e| SaeError::Source(format!("bad {kind} cursor {cursor}: {e}")))
}

/// Rows served through a shuffle buffer: from an activation store, or harvested on the fly by a background
/// thread. Checkpoint cursors name the kind (`store`, with the store's path, or `stream`) and the reader's
/// `(epoch, window, offset)`.
pub struct BufferedSource {
    reader: ShuffleReader,
    kind: &'static str,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for BufferedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedSource")
            .field("kind", &self.kind)
            .field("dir", &self.dir)
            .field("reader", &self.reader)
            .finish()
    }
}

impl BufferedSource {
    /// Reads `store` with a buffer of `buffer_rows` rows shuffled from `seed`: one pass, or forever with
    /// `repeat`.
    pub fn store(store: ActivationStore, buffer_rows: usize, seed: u64, repeat: bool) -> Self {
        let dir = store.dir().to_path_buf();
        let epochs = if repeat { None } else { Some(1) };
        Self {
            reader: ShuffleReader::from_store(store, buffer_rows, seed, epochs),
            kind: "store",
            dir: Some(dir),
        }
    }

    /// Starts harvesting `pipeline` (one hook) on a background thread, two shards ahead of a shuffle
    /// buffer of `buffer_rows` rows shuffled from `seed` (a single pass).
    pub fn stream(pipeline: Pipeline, buffer_rows: usize, seed: u64) -> Result<Self> {
        let feed = StreamFeed::new(pipeline, buffer_rows, PREFETCH_SHARDS)?;
        Ok(Self {
            reader: ShuffleReader::new(Box::new(feed), seed, Some(1)),
            kind: "stream",
            dir: None,
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
        let seed = config.seed;
        let pipeline = Pipeline {
            model,
            encoder,
            corpus,
            config,
        };
        Self::stream(pipeline, buffer_rows, seed)
    }
}

impl ActivationSource for BufferedSource {
    fn d_in(&self) -> usize {
        self.reader.d()
    }

    fn next_rows(&mut self, out: &mut [f32]) -> Result<usize, SaeError> {
        self.reader.next_rows(out).map_err(source_err)
    }

    fn cursor(&self) -> serde_json::Value {
        let c = self.reader.cursor();
        let mut cursor = serde_json::json!({ "kind": self.kind, "epoch": c.epoch, "window": c.window, "offset": c.offset });
        if let Some(dir) = &self.dir {
            cursor["path"] = serde_json::json!(dir);
        }
        cursor
    }

    fn seek(&mut self, cursor: &serde_json::Value) -> Result<(), SaeError> {
        let c = parse_cursor(cursor, self.kind)?;
        self.reader.seek(c).map_err(source_err)
    }
}
