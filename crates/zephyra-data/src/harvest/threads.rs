//! The harvest's threads: a *packer* thread reads and tokenizes the corpus into shuffled contexts (a
//! bounded channel ahead of the model), the calling thread runs the forward pass over batches of contexts
//! and the exclusion rule ([`Activations`](super::Activations)), and a *writer* thread keeps the rows of
//! the verdict, converts, checksums and writes each shard and rewrites the manifests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{HarvestConfig, ShardRows};
use crate::corpus::ReadStats;
use crate::error::{DataError, Result};
use crate::exclude;
use crate::pack::ContextStream;
use crate::store::manifest::{Manifest, ShardInfo};
use crate::store::{encode_shard, shard_file_name, ShardData};
use zephyra_io::{sha256_hex, write_atomic};

/// Starts the background thread `zephyra-{name}` running `work`; `what` names it in the error.
pub(super) fn spawn<T: Send + 'static>(
    name: &str,
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(format!("zephyra-{name}"))
        .spawn(work)
        .map_err(|source| DataError::ThreadSpawn {
            thread: what,
            source,
        })
}

pub(super) enum ContextMsg {
    Context(Vec<u32>),
    End(ReadStats),
    Err(DataError),
}

pub(super) fn pack_thread(stream: ContextStream, target: u64, tx: SyncSender<ContextMsg>) {
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

/// The contexts of a harvest, read from the [`pack_thread`] ahead of the model: the source of
/// [`Activations::start`](super::Activations::start).
pub struct Packer {
    pub(super) rx: Receiver<ContextMsg>,
    pub(super) _thread: JoinHandle<()>,
    pub(super) read_stats: Option<ReadStats>,
    pub(super) exhausted: bool,
}

impl Packer {
    /// What the corpus reader saw, once the corpus has been read to its end or the target.
    pub fn read_stats(&self) -> Option<&ReadStats> {
        self.read_stats.as_ref()
    }
}

impl Iterator for Packer {
    type Item = Result<Vec<u32>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.exhausted {
            return None;
        }
        match self.rx.recv() {
            Ok(ContextMsg::Context(c)) => Some(Ok(c)),
            Ok(ContextMsg::End(stats)) => {
                self.read_stats = Some(stats);
                self.exhausted = true;
                None
            }
            Ok(ContextMsg::Err(e)) => {
                self.exhausted = true;
                Some(Err(e))
            }
            Err(_) => {
                self.exhausted = true;
                Some(Err(DataError::ThreadStopped { thread: "packer" }))
            }
        }
    }
}

/// The kept rows of a shard at hook `hook`, with their norms and exclusion record.
fn select_rows(
    shard: &ShardRows,
    hook: usize,
    d: usize,
) -> (ShardData, Vec<f32>, &exclude::ShardExclusion) {
    let acts = &shard.acts[hook];
    let norms = &shard.norms[hook];
    let ex = &shard.exclusion[hook];
    let ctx = shard.ctx;
    let n_kept = ex.counts.kept as usize;
    let mut data = ShardData {
        activations: Vec::with_capacity(n_kept * d),
        token_ids: Vec::with_capacity(n_kept),
        context_index: Vec::with_capacity(n_kept),
        position: Vec::with_capacity(n_kept),
        context_tokens: shard.tokens.clone(),
    };
    let mut kept_norms = Vec::with_capacity(n_kept);
    for (i, &keep) in ex.keep.iter().enumerate() {
        if keep {
            data.activations
                .extend_from_slice(&acts[i * d..(i + 1) * d]);
            data.token_ids.push(shard.tokens[i]);
            data.context_index
                .push((shard.first_context + (i / ctx) as u64) as u32);
            data.position.push((i % ctx) as u32);
            kept_norms.push(norms[i]);
        }
    }
    (data, kept_norms, ex)
}

pub(super) fn writer_thread(
    rx: Receiver<ShardRows>,
    dirs: Vec<PathBuf>,
    mut manifests: Vec<Manifest>,
    cfg: HarvestConfig,
    d: usize,
    shards_written: Arc<AtomicUsize>,
) -> Result<Vec<Manifest>> {
    for raw in rx {
        for (h, (dir, m)) in dirs.iter().zip(manifests.iter_mut()).enumerate() {
            if m.shards.len() > raw.index {
                continue; // written before the interruption
            }
            let (data, kept_norms, ex) = select_rows(&raw, h, d);
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
