//! The harvest's threads: a *packer* thread reads and tokenizes the corpus into shuffled contexts (a
//! bounded channel ahead of the model), the calling thread runs the forward pass over batches of contexts
//! ([`ShardProducer`]), and a *writer* thread applies the exclusion rule, converts, checksums and writes
//! each shard and rewrites the manifests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{HarvestConfig, Pipeline};
use crate::corpus::ReadStats;
use crate::error::{DataError, Result};
use crate::exclude::{self, ExclusionRule};
use crate::pack::{ContextStream, PackOptions, TextEncoder};
use crate::store::manifest::{Manifest, ShardInfo};
use crate::store::{encode_shard, shard_file_name, ShardData};
use zephyra_io::{sha256_hex, write_atomic};

pub(super) enum ContextMsg {
    Context(Vec<u32>),
    End(ReadStats),
    Err(DataError),
}

/// A raw shard: the tokens of its contexts and the activations at each hook.
pub(super) struct RawShard {
    pub(super) index: usize,
    pub(super) first_context: u64,
    pub(super) tokens: Vec<u32>,
    pub(super) acts: Vec<Vec<f32>>,
}

/// Runs the packer thread and the forward pass, shard by shard.
pub(super) struct ShardProducer {
    pub(super) pipeline: Pipeline,
    rx: Receiver<ContextMsg>,
    _packer: JoinHandle<()>,
    next_index: usize,
    next_context: u64,
    pub(super) read_stats: Option<ReadStats>,
    exhausted: bool,
}

impl ShardProducer {
    /// Starts the packer; the first shard produced is `start_shard` (earlier contexts are packed and dropped).
    pub(super) fn start(pipeline: Pipeline, start_shard: usize) -> Result<Self> {
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
        let mut producer = Self {
            pipeline,
            rx,
            _packer: packer,
            next_index: 0,
            next_context: 0,
            read_stats: None,
            exhausted: false,
        };
        let skip = start_shard as u64 * producer.pipeline.config.contexts_per_shard as u64;
        while producer.next_context < skip {
            if producer.recv_context()?.is_none() {
                break;
            }
        }
        producer.next_index = start_shard;
        Ok(producer)
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
    pub(super) fn next_shard(&mut self, on_batch: &mut dyn FnMut(u64)) -> Result<Option<RawShard>> {
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
        Ok(Some(RawShard {
            index,
            first_context,
            tokens,
            acts,
        }))
    }
}

fn pack_thread(stream: ContextStream, target: u64, tx: SyncSender<ContextMsg>) {
    let mut stream = stream;
    let mut sent = 0u64;
    while sent < target {
        match stream.next() {
            Some(Ok(c)) => {
                if tx.send(ContextMsg::Context(c)).is_err() {
                    return;
                }
                sent += 1;
            }
            Some(Err(e)) => {
                let _ = tx.send(ContextMsg::Err(e));
                return;
            }
            None => break,
        }
    }
    let _ = tx.send(ContextMsg::End(stream.read_stats().clone()));
}

/// The kept rows of a raw shard at one hook, with their exclusion record.
pub(super) fn select_rows(
    raw: &RawShard,
    hook: usize,
    d: usize,
    ctx: usize,
    rule: &ExclusionRule,
    encoder: &dyn TextEncoder,
) -> (ShardData, Vec<f32>, exclude::ShardExclusion) {
    let acts = &raw.acts[hook];
    let norms = exclude::row_norms(acts, d);
    let ex = exclude::apply(rule, &raw.tokens, ctx, &norms, &|t| encoder.is_special(t));
    let n_kept = ex.counts.kept as usize;
    let mut data = ShardData {
        activations: Vec::with_capacity(n_kept * d),
        token_ids: Vec::with_capacity(n_kept),
        context_index: Vec::with_capacity(n_kept),
        position: Vec::with_capacity(n_kept),
        context_tokens: raw.tokens.clone(),
    };
    let mut kept_norms = Vec::with_capacity(n_kept);
    for (i, &keep) in ex.keep.iter().enumerate() {
        if keep {
            data.activations
                .extend_from_slice(&acts[i * d..(i + 1) * d]);
            data.token_ids.push(raw.tokens[i]);
            data.context_index
                .push((raw.first_context + (i / ctx) as u64) as u32);
            data.position.push((i % ctx) as u32);
            kept_norms.push(norms[i]);
        }
    }
    (data, kept_norms, ex)
}

pub(super) fn writer_thread(
    rx: Receiver<RawShard>,
    dirs: Vec<PathBuf>,
    mut manifests: Vec<Manifest>,
    cfg: HarvestConfig,
    d: usize,
    encoder: Arc<dyn TextEncoder>,
    shards_written: Arc<AtomicUsize>,
) -> Result<Vec<Manifest>> {
    for raw in rx {
        for (h, (dir, m)) in dirs.iter().zip(manifests.iter_mut()).enumerate() {
            if m.shards.len() > raw.index {
                continue; // written before the interruption
            }
            let (data, kept_norms, ex) =
                select_rows(&raw, h, d, cfg.ctx, &cfg.rule, encoder.as_ref());
            let file = shard_file_name(raw.index);
            // One metadata key: safetensors writes a map's keys in hash order, which would make identical
            // shards differ byte-wise between runs.
            let mut meta = HashMap::new();
            meta.insert(
                "zephyra".to_string(),
                serde_json::json!({ "hook": m.hook, "first_context": raw.first_context })
                    .to_string(),
            );
            let bytes = encode_shard(&data, d, cfg.ctx, cfg.dtype, meta)?;
            write_atomic(&dir.join(&file), &bytes)?;
            m.accumulator.add_rows(&data.activations, d, &kept_norms);
            m.exclusion.counts.add(&ex.counts);
            let n_contexts = (raw.tokens.len() / cfg.ctx) as u64;
            m.n_contexts += n_contexts;
            m.n_rows += data.n_rows() as u64;
            m.shards.push(ShardInfo {
                file,
                n_rows: data.n_rows() as u64,
                n_contexts,
                first_context: raw.first_context,
                bytes: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
                median_norm: ex.median_norm,
                norm_threshold: ex.norm_threshold,
                counts: ex.counts,
            });
            m.refresh_stats();
            m.write(dir)?;
        }
        shards_written.store(raw.index + 1, Ordering::Relaxed);
    }
    Ok(manifests)
}
