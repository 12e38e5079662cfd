//! Merging the stores of a sharded harvest (`mpirun -np N zephyra harvest`): rank `r` of `N` harvested
//! every shard `i` with `i mod N == r` into its own store; the merge moves each owned shard into the final
//! store, takes its manifest entry from its owner, and rebuilds the running sums from the shards in order,
//! so the merged store is the one a one-process harvest writes.

use std::path::{Path, PathBuf};

use zephyra_lm::HookPoint;

use super::manifest::{Accumulator, Manifest};
use super::{store_dirs, ActivationStore};
use crate::error::{DataError, Result};
use crate::exclude::{row_norms, ExclusionCounts};

/// The stores a merge wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedStores {
    /// One store directory per hook, in `hooks` order.
    pub stores: Vec<PathBuf>,
    /// Contexts in each store.
    pub n_contexts: u64,
    /// Rows in each store.
    pub n_rows: Vec<u64>,
}

/// Merges the harvests of `ranks` (rank `r` harvested `hooks` into `ranks[r]`, owning the shards
/// `i mod ranks.len() == r`) into `out` (see [`store_dirs`]), then removes the rank directories.
pub fn merge_rank_stores(
    out: &Path,
    ranks: &[PathBuf],
    hooks: &[HookPoint],
) -> Result<MergedStores> {
    let world = ranks.len();
    if world == 0 {
        return Err(DataError::InvalidOption {
            name: "ranks",
            value: "0".into(),
            reason: "merging needs at least one rank store".into(),
        });
    }
    let finals = store_dirs(out, hooks);
    let rank_stores: Vec<Vec<PathBuf>> = ranks.iter().map(|r| store_dirs(r, hooks)).collect();
    let mut n_rows = Vec::with_capacity(finals.len());
    let mut n_contexts = 0;
    for (h, dir) in finals.iter().enumerate() {
        let manifests: Vec<Manifest> = rank_stores
            .iter()
            .map(|dirs| Manifest::read(&dirs[h]))
            .collect::<Result<_>>()?;
        std::fs::create_dir_all(dir).map_err(|e| DataError::io("creating", dir, e))?;
        let mut m = manifests[0].clone();
        let mut counts = ExclusionCounts::default();
        (m.n_rows, m.n_contexts) = (0, 0);
        for (i, info) in m.shards.iter_mut().enumerate() {
            let owner = i % world;
            *info = manifests[owner].shards.get(i).cloned().ok_or_else(|| {
                DataError::bad_store(
                    &rank_stores[owner][h],
                    format!(
                        "rank {owner} did not write shard {i}; rerun the same harvest to finish it"
                    ),
                )
            })?;
            let from = rank_stores[owner][h].join(&info.file);
            std::fs::rename(&from, dir.join(&info.file))
                .map_err(|e| DataError::io("moving", &from, e))?;
            counts.add(&info.counts);
            m.n_rows += info.n_rows;
            m.n_contexts += info.n_contexts;
        }
        m.exclusion.counts = counts;
        m.write(dir)?;
        // The running sums, rebuilt in shard order exactly as one writer adds them.
        let store = ActivationStore::open(dir)?;
        let mut acc = Accumulator::default();
        for i in 0..store.n_shards() {
            let shard = store.read_shard(i)?;
            let norms = row_norms(&shard.activations, m.d);
            acc.add_rows(&shard.activations, m.d, &norms);
        }
        m.accumulator = acc;
        m.refresh_stats();
        m.write(dir)?;
        n_rows.push(m.n_rows);
        n_contexts = m.n_contexts;
    }
    for dir in ranks {
        std::fs::remove_dir_all(dir).map_err(|e| DataError::io("removing", dir, e))?;
    }
    Ok(MergedStores {
        stores: finals,
        n_contexts,
        n_rows,
    })
}
