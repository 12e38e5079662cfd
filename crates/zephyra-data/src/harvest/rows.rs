//! The pipeline, once: batches of contexts → the model, stopping at the deepest hook → activations at
//! every hook → one exclusion verdict per row → kept rows, one shard of contexts at a time.
//!
//! [`Activations`] is the iterator every consumer runs on: the harvest writer (shards to disk), training on
//! the fly ([`StreamFeed`](super::StreamFeed), one or many dictionaries). Its position —
//! [`Activations::position`], contexts consumed — is the one resume cursor: the context order is a pure
//! function of the corpus, the tokenizer and the options, so starting at shard `s` re-packs (without
//! running the model) the contexts before it and continues with exactly the rows an uninterrupted run
//! would have produced next.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use super::threads::{pack_thread, ContextMsg};
use super::Pipeline;
use crate::corpus::ReadStats;
use crate::error::{DataError, Result};
use crate::exclude::{self, ShardExclusion};
use crate::pack::{ContextStream, PackOptions};

/// One shard of contexts through the model: the activations of every row at every hook, and the rule's
/// verdict, shared by all hooks ([`exclude::apply_joint`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRows {
    /// Shard index (0-based, counting resumed shards).
    pub index: usize,
    /// Index of the shard's first context in the harvest.
    pub first_context: u64,
    /// Tokens per context.
    pub ctx: usize,
    /// The contexts' tokens, concatenated (`n_contexts × ctx`).
    pub tokens: Vec<u32>,
    /// Per hook (config order): activations of every row, `[tokens.len() × d]` row-major.
    pub acts: Vec<Vec<f32>>,
    /// Per hook: L2 norm of each row.
    pub norms: Vec<Vec<f32>>,
    /// Per hook: the verdict (the same `keep` and counts at every hook; each hook's own median/threshold).
    pub exclusion: Vec<ShardExclusion>,
}

impl ShardRows {
    /// `keep[i]` for row `i` (every hook).
    pub fn keep(&self) -> &[bool] {
        self.exclusion.first().map_or(&[], |e| &e.keep)
    }

    /// Contexts in the shard.
    pub fn n_contexts(&self) -> usize {
        self.tokens.len() / self.ctx.max(1)
    }

    /// The kept rows of the hooks `hooks` (indices into the config's hooks) side by side: each kept row is
    /// `[acts[hooks[0]] | acts[hooks[1]] | …]` (one hook: an SAE's rows; input and target: a transcoder's).
    pub fn kept_rows(&self, hooks: &[usize]) -> Vec<f32> {
        let n = self.tokens.len();
        let widths: Vec<usize> = hooks
            .iter()
            .map(|&h| self.acts[h].len() / n.max(1))
            .collect();
        let n_kept = self.keep().iter().filter(|&&k| k).count();
        let mut out = Vec::with_capacity(n_kept * widths.iter().sum::<usize>());
        for (i, _) in self.keep().iter().enumerate().filter(|(_, &k)| k) {
            for (&h, &w) in hooks.iter().zip(&widths) {
                out.extend_from_slice(&self.acts[h][i * w..(i + 1) * w]);
            }
        }
        out
    }
}

/// The pipeline as an iterator of [`ShardRows`]: a *packer* thread reads and tokenizes the corpus into
/// shuffled contexts (a bounded channel ahead of the model); `next` runs the forward passes of one shard
/// on the calling thread and applies the exclusion rule.
pub struct Activations {
    pub(super) pipeline: Pipeline,
    rx: Receiver<ContextMsg>,
    _packer: JoinHandle<()>,
    next_index: usize,
    next_context: u64,
    read_stats: Option<ReadStats>,
    exhausted: bool,
}

impl std::fmt::Debug for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activations")
            .field("pipeline", &self.pipeline)
            .field("next_index", &self.next_index)
            .field("position", &self.next_context)
            .finish()
    }
}

impl Activations {
    /// Starts the packer; the first shard produced is `start_shard` (earlier contexts are packed and
    /// dropped, without the model).
    pub fn start(pipeline: Pipeline, start_shard: usize) -> Result<Self> {
        let cfg = &pipeline.config;
        let mut corpus = pipeline.corpus.clone();
        corpus.shuffle_inputs(cfg.seed);
        let stream = ContextStream::new(
            corpus.documents(),
            pipeline.encoder.clone(),
            PackOptions {
                ctx: cfg.ctx,
                seed: cfg.seed,
                shuffle_contexts: cfg.shuffle_contexts,
            },
        )?;
        let target = cfg.target_contexts();
        let (tx, rx) = sync_channel(cfg.batch_contexts * 4 + 16);
        let packer = std::thread::Builder::new()
            .name("zephyra-packer".into())
            .spawn(move || pack_thread(stream, target, tx))
            .map_err(|source| DataError::ThreadSpawn {
                thread: "packer",
                source,
            })?;
        let mut rows = Self {
            pipeline,
            rx,
            _packer: packer,
            next_index: 0,
            next_context: 0,
            read_stats: None,
            exhausted: false,
        };
        let skip = start_shard as u64 * rows.pipeline.config.contexts_per_shard as u64;
        while rows.next_context < skip {
            if rows.recv_context()?.is_none() {
                break;
            }
        }
        rows.next_index = start_shard;
        Ok(rows)
    }

    /// Contexts consumed so far (skipped ones included): the resume cursor.
    pub fn position(&self) -> u64 {
        self.next_context
    }

    /// What the corpus reader saw, once the corpus has been read to its end or the target.
    pub fn read_stats(&self) -> Option<&ReadStats> {
        self.read_stats.as_ref()
    }

    fn recv_context(&mut self) -> Result<Option<Vec<u32>>> {
        if self.exhausted {
            return Ok(None);
        }
        match self.rx.recv() {
            Ok(ContextMsg::Context(c)) => {
                self.next_context += 1;
                Ok(Some(c))
            }
            Ok(ContextMsg::End(stats)) => {
                self.read_stats = Some(stats);
                self.exhausted = true;
                Ok(None)
            }
            Ok(ContextMsg::Err(e)) => Err(e),
            Err(_) => Err(DataError::ThreadStopped { thread: "packer" }),
        }
    }

    /// The next shard, running the model; `on_batch` gets the tokens of each forward batch.
    pub fn next_shard(&mut self, on_batch: &mut dyn FnMut(u64)) -> Result<Option<ShardRows>> {
        let cfg = self.pipeline.config.clone();
        let first_context = self.next_context;
        let mut tokens = Vec::with_capacity(cfg.contexts_per_shard * cfg.ctx);
        let mut acts: Vec<Vec<f32>> = vec![Vec::new(); cfg.hooks.len()];
        let mut n_contexts = 0;
        while n_contexts < cfg.contexts_per_shard {
            let mut batch = Vec::with_capacity(cfg.batch_contexts);
            while batch.len() < cfg.batch_contexts
                && n_contexts + batch.len() < cfg.contexts_per_shard
            {
                match self.recv_context()? {
                    Some(c) => batch.push(c),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let out = self.pipeline.model.capture(&batch, &cfg.hooks)?;
            for (all, got) in acts.iter_mut().zip(out) {
                all.extend_from_slice(&got);
            }
            for c in &batch {
                tokens.extend_from_slice(c);
            }
            n_contexts += batch.len();
            on_batch((batch.len() * cfg.ctx) as u64);
        }
        if n_contexts == 0 {
            return Ok(None);
        }
        let index = self.next_index;
        self.next_index += 1;
        let n = tokens.len();
        let norms: Vec<Vec<f32>> = acts
            .iter()
            .map(|a| exclude::row_norms(a, (a.len() / n).max(1)))
            .collect();
        let norm_refs: Vec<&[f32]> = norms.iter().map(Vec::as_slice).collect();
        let encoder = &self.pipeline.encoder;
        let exclusion = exclude::apply_joint(&cfg.rule, &tokens, cfg.ctx, &norm_refs, &|t| {
            encoder.is_special(t)
        });
        Ok(Some(ShardRows {
            index,
            first_context,
            ctx: cfg.ctx,
            tokens,
            acts,
            norms,
            exclusion,
        }))
    }
}

impl Iterator for Activations {
    type Item = Result<ShardRows>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_shard(&mut |_| {}).transpose()
    }
}
