//! On-the-fly harvesting: the shards [`harvest`](super::harvest) would write, kept in memory and served as
//! windows to a [`ShuffleReader`](crate::store::ShuffleReader).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::threads::{select_rows, ShardProducer};
use super::{HarvestConfig, Pipeline};
use crate::error::{DataError, Result};
use crate::pack::TextEncoder;
use crate::store::{shards_per_window, WindowFeed};

/// Windows of rows harvested on the fly (single hook), for a [`ShuffleReader`](crate::store::ShuffleReader).
///
/// Shards are produced exactly as [`harvest`] would write them (same contexts, same exclusion), and grouped
/// into windows of `max(1, buffer_rows / (contexts_per_shard × ctx))` shards — the grouping a
/// [`StoreFeed`](crate::store::reader::StoreFeed) uses for a store made with the same options — so training
/// on the fly and training from the store see the same rows in the same order for the same seed.
/// A background thread harvests up to `prefetch_shards` shards ahead of the reader (bounded memory),
/// overlapping the model forward with the consumer. Only epoch 0 exists.
pub struct StreamFeed {
    pipeline: Pipeline,
    shards_per_window: usize,
    prefetch_shards: usize,
    rx: Option<Receiver<Result<Option<Vec<f32>>>>>,
    next_window: u64,
    _thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StreamFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFeed")
            .field("pipeline", &self.pipeline)
            .field("shards_per_window", &self.shards_per_window)
            .finish()
    }
}

/// Tokens to harvest on the fly for `rows` training rows: kept rows are fewer than tokens (position 0,
/// special tokens, sinks), so one shard more than `rows / (ctx − 1)` contexts, rounded up to whole windows
/// of the shuffle buffer. The reader shuffles a window as a whole, so a last window cut short would be
/// permuted differently from the same window of a store: with whole windows, training on the fly reads
/// exactly the rows, in the same order, as training from any store harvested with the same options and at
/// least this many tokens.
pub fn stream_tokens(rows: u64, ctx: usize, shard_contexts: usize, shuffle_buffer: usize) -> u64 {
    let ctx = ctx.max(2) as u64;
    let shard_contexts = shard_contexts.max(1) as u64;
    let contexts = rows.div_ceil(ctx - 1) + shard_contexts;
    let window_contexts = shards_per_window(shuffle_buffer, shard_contexts as usize, ctx as usize)
        as u64
        * shard_contexts;
    contexts.next_multiple_of(window_contexts) * ctx
}

impl StreamFeed {
    /// A feed over `pipeline` (its config must name exactly one hook).
    pub fn new(pipeline: Pipeline, buffer_rows: usize, prefetch_shards: usize) -> Result<Self> {
        pipeline.config.validate(pipeline.model.as_ref())?;
        if pipeline.config.hooks.len() != 1 {
            return Err(DataError::InvalidOption {
                name: "--hook",
                value: format!("{} hooks", pipeline.config.hooks.len()),
                reason: "training on the fly reads one hook".into(),
            });
        }
        let spw = shards_per_window(
            buffer_rows,
            pipeline.config.contexts_per_shard,
            pipeline.config.ctx,
        );
        Ok(Self {
            pipeline,
            shards_per_window: spw,
            prefetch_shards: prefetch_shards.max(1),
            rx: None,
            next_window: 0,
            _thread: None,
        })
    }

    fn start_at(&mut self, window: u64) -> Result<()> {
        self.rx = None; // the old thread sees its channel closed and stops
        let start_shard = window as usize * self.shards_per_window;
        let producer = ShardProducer::start(self.pipeline.clone(), start_shard)?;
        let (tx, rx) = sync_channel(self.prefetch_shards);
        let cfg = self.pipeline.config.clone();
        let encoder = self.pipeline.encoder.clone();
        let d = self.pipeline.model.d_model();
        let thread = std::thread::Builder::new()
            .name("zephyra-harvest".into())
            .spawn(move || stream_thread(producer, cfg, d, encoder, tx))
            .map_err(|source| DataError::ThreadSpawn {
                thread: "harvesting",
                source,
            })?;
        self.rx = Some(rx);
        self._thread = Some(thread);
        self.next_window = window;
        Ok(())
    }
}

fn stream_thread(
    mut producer: ShardProducer,
    cfg: HarvestConfig,
    d: usize,
    encoder: Arc<dyn TextEncoder>,
    tx: SyncSender<Result<Option<Vec<f32>>>>,
) {
    loop {
        let msg = match producer.next_shard(&mut |_| {}) {
            Ok(Some(raw)) => {
                let (data, _, _) = select_rows(&raw, 0, d, cfg.ctx, &cfg.rule, encoder.as_ref());
                Ok(Some(data.activations))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let stop = !matches!(msg, Ok(Some(_)));
        if tx.send(msg).is_err() || stop {
            return;
        }
    }
}

impl WindowFeed for StreamFeed {
    fn d(&self) -> usize {
        self.pipeline.model.d_model()
    }

    fn load_window(&mut self, epoch: u64, window: u64, rows: &mut Vec<f32>) -> Result<bool> {
        if epoch > 0 {
            return Ok(false);
        }
        if self.rx.is_none() || self.next_window != window {
            self.start_at(window)?;
        }
        let rx = self.rx.as_ref().ok_or(DataError::ThreadStopped {
            thread: "harvesting",
        })?;
        let mut got_any = false;
        for _ in 0..self.shards_per_window {
            match rx.recv() {
                Ok(Ok(Some(shard))) => {
                    got_any = true;
                    rows.extend_from_slice(&shard);
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        self.next_window = window + 1;
        if !got_any {
            self.rx = None;
        }
        Ok(got_any)
    }
}
