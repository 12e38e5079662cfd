//! `mpirun -np N zephyra harvest`: sharded harvesting. Every rank packs the same context stream (cheap),
//! but runs the model only for the shards it owns (shard `i` belongs to rank `i mod N`); the other shards'
//! batches get zero activations without a forward pass. Each rank harvests into its own store
//! `OUT.rank-R-of-N` (a sibling of `OUT`); after a barrier rank 0 merges them
//! ([`zephyra_data::store::merge_rank_stores`]: every owned shard moved into `OUT`, its manifest entry
//! taken from the owner, the running sums rebuilt from the shards in order), so `OUT` is the store a 1-process harvest writes (same contexts, same activations, same
//! manifest for `--dtype f32`). Each rank store is an ordinary store, so rerunning an interrupted parallel
//! harvest with the same `-np` continues each rank where it stopped (not covered by a test yet).
//! In one process every function here is the identity.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use zephyra_data::harvest::{HarvestSummary, HookModel, WithCapture};
use zephyra_data::store::merge_rank_stores;
use zephyra_lm::HookPoint;

/// The model this rank harvests with: the model itself in one process; under mpirun, the model run only
/// for the batches of this rank's shards (zero activations for the others).
pub fn partition_model(model: Arc<dyn HookModel>, contexts_per_shard: usize) -> Arc<dyn HookModel> {
    let (rank, world) = crate::dist::rank_and_size();
    if world <= 1 {
        return model;
    }
    let (rank, world) = (rank as u64, world as u64);
    let per_shard = contexts_per_shard.max(1) as u64;
    let seen = AtomicU64::new(0);
    Arc::new(WithCapture::new(model, move |inner, contexts, hooks| {
        // Batches never straddle a shard: the first context's shard is the batch's shard.
        let first = seen.fetch_add(contexts.len() as u64, Ordering::SeqCst);
        if (first / per_shard) % world == rank {
            return inner.capture(contexts, hooks);
        }
        let rows: usize = contexts.iter().map(Vec::len).sum();
        Ok(vec![vec![0.0; rows * inner.d_model()]; hooks.len()])
    }))
}

/// Where this rank harvests: `out` in one process, `out.rank-R-of-N` under mpirun.
pub fn rank_out(out: &Path) -> PathBuf {
    let (rank, world) = crate::dist::rank_and_size();
    if world <= 1 {
        return out.to_path_buf();
    }
    rank_dir(out, rank, world)
}

/// `OUT.rank-R-of-W`: the world size is in the name, so a rerun with another `-np` never reuses a rank
/// store whose shard ownership differs.
fn rank_dir(out: &Path, rank: usize, world: usize) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".rank-{rank}-of-{world}"));
    out.with_file_name(name)
}

/// After every rank's harvest: rank 0 merges the rank stores into `out` and returns the merged summary;
/// other ranks return `None` (they print nothing). In one process: `Some(summary)` unchanged.
pub fn finish(
    summary: HarvestSummary,
    out: &Path,
    hooks: &[HookPoint],
) -> anyhow::Result<Option<HarvestSummary>> {
    let (rank, world) = crate::dist::rank_and_size();
    if world <= 1 {
        return Ok(Some(summary));
    }
    crate::dist::barrier();
    if rank != 0 {
        return Ok(None);
    }
    let ranks: Vec<PathBuf> = (0..world).map(|r| rank_dir(out, r, world)).collect();
    let merged = merge_rank_stores(out, &ranks, hooks).context("merging the rank stores")?;
    Ok(Some(HarvestSummary {
        stores: merged.stores,
        n_contexts: merged.n_contexts,
        n_rows: merged.n_rows,
        ..summary
    }))
}
