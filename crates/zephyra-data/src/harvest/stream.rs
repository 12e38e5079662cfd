//! On-the-fly harvesting: the shards [`harvest`](super::harvest) would write, kept in memory and served as
//! windows to one [`ShuffleReader`](crate::store::ShuffleReader) per dictionary.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Activations, Pipeline};
use crate::error::{DataError, Result};
use crate::store::{shards_per_window, WindowFeed};

/// Windows of rows harvested on the fly, for a [`ShuffleReader`](crate::store::ShuffleReader).
///
/// Shards are produced exactly as [`harvest`](super::harvest) would write them (same contexts, same
/// exclusion), and grouped into windows of `max(1, buffer_rows / (contexts_per_shard × ctx))` shards — the
/// grouping a [`StoreFeed`](crate::store::reader::StoreFeed) uses for a store made with the same options —
/// so training on the fly and training from the store see the same rows in the same order for the same
/// seed. A background thread runs the pipeline ([`Activations`]) up to `prefetch_shards` shards ahead of the
/// readers (bounded memory), overlapping the model forward with the consumers. Every epoch (a pass over the corpus, when a reader
/// repeats: [`BufferedSource::repeat_corpus`](crate::source::BufferedSource::repeat_corpus)) harvests the
/// same windows again; the reader permutes each one's rows afresh. (A store read again visits its shards
/// in a new order too; on the fly only epoch 0 matches a store.)
///
/// Several dictionaries from one forward pass ([`StreamFeed::many`]): each feed is one dictionary's view of
/// the same shards — the kept rows of its hooks side by side (one hook for an SAE, input and target for a
/// transcoder); the rows of every hook share one exclusion verdict, so all the feeds hold the same number of
/// rows per window. A window is harvested once, when the first feed asks for it, and handed (moved, not
/// copied) to each other feed when it asks for it: beyond the prefetched shards, the only copy of a
/// dictionary's rows is its own shuffle buffer, plus the windows waiting for a feed that is behind (one
/// while the feeds read in lockstep, as a `MultiTrainer` reads them: a batch each in turn). A feed that
/// asks for a window no longer waiting for it (after a seek back) restarts the harvest there.
pub struct StreamFeed {
    hub: Arc<Mutex<Hub>>,
    member: usize,
    d: usize,
}

impl std::fmt::Debug for StreamFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFeed")
            .field("member", &self.member)
            .field("d", &self.d)
            .finish()
    }
}

/// Per shard: each dictionary's kept rows.
type ShardMsg = Result<Option<Vec<Vec<f32>>>>;

/// What the feeds of one forward pass share.
struct Hub {
    pipeline: Pipeline,
    /// Per dictionary: the hooks (indices into the config's hooks) whose rows it reads side by side.
    dictionaries: Vec<Vec<usize>>,
    shards_per_window: usize,
    prefetch_shards: usize,
    rx: Option<Receiver<ShardMsg>>,
    /// The `(pass, window)` the running harvest thread delivers next.
    next_window: (u64, u64),
    /// The first window with no rows, once seen (the same in every pass: each harvests the same contexts).
    end_window: Option<u64>,
    /// Per dictionary: the harvested windows it has not asked for yet, by `(pass, window)`.
    waiting: Vec<BTreeMap<(u64, u64), Vec<f32>>>,
    _thread: Option<JoinHandle<()>>,
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
        if pipeline.config.hooks.len() != 1 {
            return Err(DataError::InvalidOption {
                name: "--hook",
                value: format!("{} hooks", pipeline.config.hooks.len()),
                reason: "a single feed reads one hook; use `StreamFeed::many` for several".into(),
            });
        }
        let mut feeds = Self::many(pipeline, vec![vec![0]], buffer_rows, prefetch_shards)?;
        feeds.pop().ok_or(DataError::ThreadStopped {
            thread: "harvesting",
        })
    }

    /// One feed per entry of `dictionaries` (each a list of indices into `pipeline.config.hooks` whose
    /// rows it reads side by side), all from one forward pass per batch.
    pub fn many(
        pipeline: Pipeline,
        dictionaries: Vec<Vec<usize>>,
        buffer_rows: usize,
        prefetch_shards: usize,
    ) -> Result<Vec<Self>> {
        pipeline.config.validate(pipeline.model.as_ref())?;
        let n_hooks = pipeline.config.hooks.len();
        if dictionaries.is_empty()
            || dictionaries
                .iter()
                .any(|d| d.is_empty() || d.iter().any(|&h| h >= n_hooks))
        {
            return Err(DataError::InvalidOption {
                name: "--hook",
                value: format!("{dictionaries:?}"),
                reason: format!(
                    "each dictionary reads one or more of the {n_hooks} hooks harvested"
                ),
            });
        }
        let spw = shards_per_window(
            buffer_rows,
            pipeline.config.contexts_per_shard,
            pipeline.config.ctx,
        );
        let d_model = pipeline.model.d_model();
        let widths: Vec<usize> = dictionaries.iter().map(|d| d.len() * d_model).collect();
        let hub = Arc::new(Mutex::new(Hub {
            pipeline,
            waiting: vec![BTreeMap::new(); dictionaries.len()],
            dictionaries,
            shards_per_window: spw,
            prefetch_shards: prefetch_shards.max(1),
            rx: None,
            next_window: (0, 0),
            end_window: None,
            _thread: None,
        }));
        Ok(widths
            .into_iter()
            .enumerate()
            .map(|(member, d)| Self {
                hub: hub.clone(),
                member,
                d,
            })
            .collect())
    }
}

impl Hub {
    /// Starts a harvest thread at `window` of pass `pass`. Every pass harvests the same contexts in the
    /// same order (the reader permutes each window's rows from `(seed, pass, window)`), so a later pass
    /// can start anywhere without the passes before it.
    fn start_at(&mut self, pass: u64, window: u64) -> Result<()> {
        if pass > 0 && window == 0 {
            tracing::info!(
                pass = pass + 1,
                windows = self.end_window,
                "the harvest reached the end of the corpus: reading it again"
            );
        }
        self.rx = None; // the old thread sees its channel closed and stops
        let start_shard = window as usize * self.shards_per_window;
        let rows = Activations::start(self.pipeline.clone(), start_shard)?;
        let (tx, rx) = sync_channel(self.prefetch_shards);
        let dictionaries = self.dictionaries.clone();
        let thread = super::threads::spawn("harvest", "harvesting", move || {
            stream_thread(rows, dictionaries, tx)
        })?;
        self.rx = Some(rx);
        self._thread = Some(thread);
        self.next_window = (pass, window);
        Ok(())
    }

    /// Window `window` of pass `pass` for dictionary `member`: waiting for it, or harvested now (the other
    /// dictionaries' rows of it then wait for them).
    fn load(&mut self, member: usize, pass: u64, window: u64, rows: &mut Vec<f32>) -> Result<bool> {
        let key = (pass, window);
        let waiting = &mut self.waiting[member];
        // Windows before this one will not be asked for (the reader moved past them or seeked ahead).
        *waiting = waiting.split_off(&key);
        if let Some(got) = waiting.remove(&key) {
            give(rows, got);
            return Ok(true);
        }
        if self.end_window.is_some_and(|end| window >= end) {
            return Ok(false);
        }
        if self.rx.is_none() || self.next_window != key {
            self.start_at(pass, window)?;
        }
        let rx = self.rx.as_ref().ok_or(DataError::ThreadStopped {
            thread: "harvesting",
        })?;
        let mut per_dict: Vec<Vec<f32>> = vec![Vec::new(); self.dictionaries.len()];
        // The asking reader's buffer is filled in place (its capacity is reused from window to window).
        per_dict[member] = std::mem::take(rows);
        let mut got_any = false;
        for _ in 0..self.shards_per_window {
            match rx.recv() {
                Ok(Ok(Some(shard))) => {
                    got_any = true;
                    for (all, got) in per_dict.iter_mut().zip(shard) {
                        all.extend_from_slice(&got);
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    self.rx = None;
                    *rows = std::mem::take(&mut per_dict[member]);
                    rows.clear();
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        self.next_window = (pass, window + 1);
        if !got_any {
            *rows = std::mem::take(&mut per_dict[member]);
            self.rx = None;
            self.end_window = Some(window);
            return Ok(false);
        }
        for (m, got) in per_dict.into_iter().enumerate() {
            if m == member {
                *rows = got;
            } else {
                self.waiting[m].entry(key).or_insert(got);
            }
        }
        Ok(true)
    }
}

/// Puts `got` into the reader's buffer `rows`: moved when the buffer is empty (as the reader hands it).
fn give(rows: &mut Vec<f32>, got: Vec<f32>) {
    if rows.is_empty() {
        *rows = got;
    } else {
        rows.extend_from_slice(&got);
    }
}

fn stream_thread(mut rows: Activations, dictionaries: Vec<Vec<usize>>, tx: SyncSender<ShardMsg>) {
    let (mut model, mut split, mut shards) = (Duration::ZERO, Duration::ZERO, 0u64);
    loop {
        let started = Instant::now();
        let shard = rows.next_shard(&mut |_| {});
        model += started.elapsed();
        let started = Instant::now();
        let msg = match shard {
            Ok(Some(shard)) => {
                shards += 1;
                Ok(Some(
                    dictionaries.iter().map(|d| shard.kept_rows(d)).collect(),
                ))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        split += started.elapsed();
        let stop = !matches!(msg, Ok(Some(_)));
        if tx.send(msg).is_err() || stop {
            // Where the harvest thread's time went: the model (tokens, forward, capture of every hook,
            // exclusion) and splitting each shard into the dictionaries' rows.
            tracing::info!(
                shards,
                model_s = model.as_secs_f64(),
                split_s = split.as_secs_f64(),
                "on-the-fly harvest stopped"
            );
            return;
        }
    }
}

impl WindowFeed for StreamFeed {
    fn d(&self) -> usize {
        self.d
    }

    fn load_window(&mut self, epoch: u64, window: u64, rows: &mut Vec<f32>) -> Result<bool> {
        let mut hub = self.hub.lock().map_err(|_| DataError::ThreadStopped {
            thread: "harvesting",
        })?;
        hub.load(self.member, epoch, window, rows)
    }
}
