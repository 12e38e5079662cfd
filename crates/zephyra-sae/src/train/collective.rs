//! Collective operations for data-parallel training: one trait, [`Collective`], so the training loop has
//! a single code path for one process and for many.
//!
//! Data parallelism (the scheme of Horovod / PyTorch DDP): every rank holds the same SAE and optimizer
//! state; each reads the same global batch and keeps its own contiguous slice of rows
//! (`rows_of(rank, world, n)`); the per-rank gradients of the *local mean* loss are weighted by
//! `n_local / n_global` and summed with an allreduce, which gives the gradient of the mean over the global
//! batch; every rank then applies the same clipping and Adam step. Fire counts, loss terms and the
//! batchtopk threshold estimate are reduced too, so all ranks keep identical state.
//!
//! [`SingleProcess`] is rank 0 of 1 and does nothing; an MPI implementation lives in the `zephyra` binary
//! behind its `mpi` feature (this crate does not link MPI).

use crate::SaeError;

/// Reductions across the ranks of a data-parallel job. Every rank must call the same operations in the
/// same order with the same lengths (as with MPI).
pub trait Collective: std::fmt::Debug {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Element-wise sum of `buf` over all ranks, result on every rank.
    fn sum_f32(&self, buf: &mut [f32]) -> Result<(), SaeError>;
    /// Element-wise sum of `buf` over all ranks, result on every rank.
    fn sum_f64(&self, buf: &mut [f64]) -> Result<(), SaeError>;
    /// Element-wise sum of `buf` over all ranks, result on every rank.
    fn sum_u64(&self, buf: &mut [u64]) -> Result<(), SaeError>;
    /// Element-wise minimum of `buf` over all ranks, result on every rank.
    fn min_f64(&self, buf: &mut [f64]) -> Result<(), SaeError>;
    /// Waits until every rank has reached this call.
    fn barrier(&self) -> Result<(), SaeError>;

    /// Whether this rank writes files (checkpoints, metrics, the final SAE): rank 0.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: rank 0 of 1; every reduction is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) -> Result<(), SaeError> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<(), SaeError> {
        Ok(())
    }
    fn sum_u64(&self, _: &mut [u64]) -> Result<(), SaeError> {
        Ok(())
    }
    fn min_f64(&self, _: &mut [f64]) -> Result<(), SaeError> {
        Ok(())
    }
    fn barrier(&self) -> Result<(), SaeError> {
        Ok(())
    }
}

/// The rows `[r·n/w, (r+1)·n/w)` of an `n`-row global batch that rank `r` of `w` trains on (contiguous,
/// disjoint, covering `0..n`; sizes differ by at most one).
pub fn rows_of(rank: usize, world: usize, n: usize) -> std::ops::Range<usize> {
    let w = world.max(1);
    (rank * n / w)..((rank + 1) * n / w)
}

/// Bytes one rank sends (and receives) per step in a ring allreduce of `n_floats` f32 values over `world`
/// ranks: `2·(w−1)/w · 4·n_floats`.
pub fn ring_allreduce_bytes(n_floats: u64, world: u64) -> f64 {
    if world <= 1 {
        return 0.0;
    }
    2.0 * (world - 1) as f64 / world as f64 * 4.0 * n_floats as f64
}

/// Refuses a job with more ranks than rows per batch (a rank would get no rows).
pub(crate) fn check_world(cfg: &super::TrainConfig, comm: &dyn Collective) -> Result<(), SaeError> {
    if comm.world_size() > cfg.batch_size {
        return Err(SaeError::invalid(
            "--batch-rows",
            cfg.batch_size,
            format!(
                "{} ranks need a batch of at least {} rows: raise --batch or use fewer ranks",
                comm.world_size(),
                comm.world_size()
            ),
        ));
    }
    Ok(())
}

/// One dictionary's part of a step's reduction: this rank's rows `x` (of `width` values, the target its
/// last `d_out`: all of it for an SAE, `y` of a transcoder's `[x | y]`) of an `n_global`-row batch, the
/// stats, gradients and fire counts of its local step.
pub(crate) struct StepReduce<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) width: usize,
    pub(crate) d_out: usize,
    /// Matryoshka's levels (their squared errors ride in the stats sum), 0 for other architectures.
    pub(crate) prefix_levels: usize,
    pub(crate) n_global: usize,
    pub(crate) stats: &'a mut crate::StepStats,
    pub(crate) grads: &'a mut crate::Gradients,
    pub(crate) fired: &'a mut [u64],
}

/// Turns each rank's step of every dictionary in `steps` (gradients and stats of the mean over its `x`
/// rows) into the step of the whole `n_global`-row batch, for all the dictionaries at once: the
/// gradients of every dictionary weighted by `n_local / n_global` and summed in **one** allreduce; loss
/// terms and L0 averaged the same way; `sse` (and Matryoshka's per-prefix squared errors) summed; the centred `sst` rebuilt from each rank's row sums
/// (`Σ‖x−μ‖² = Σ_r (sst_r + n_r‖μ_r‖²) − ‖Σx‖²/n`, over the target) — one f64 sum for all; the batchtopk threshold
/// estimates their minimum (one call); the fire counts summed (one call). Nothing happens in one process.
pub(crate) fn reduce_steps(
    comm: &dyn Collective,
    steps: &mut [StepReduce<'_>],
) -> Result<(), SaeError> {
    if comm.world_size() <= 1 {
        return Ok(());
    }
    let mut flat = Vec::new();
    for s in steps.iter() {
        let weight = (s.x.len() / s.width.max(1)) as f32 / s.n_global as f32;
        for (_, g) in s.grads.slices() {
            flat.extend(g.iter().map(|v| v * weight));
        }
    }
    comm.sum_f32(&mut flat)?;
    let mut at = 0;
    for s in steps.iter_mut() {
        for p in s.grads.slices_mut() {
            let len = p.value.len();
            p.value.copy_from_slice(&flat[at..at + len]);
            at += len;
        }
    }

    let mut sums = Vec::new();
    for s in steps.iter() {
        let (width, stats) = (s.width.max(1), &s.stats);
        let n_local = s.x.len() / width;
        let nl = n_local as f64;
        let mut row_sums = vec![0.0f64; s.d_out];
        for row in s.x.chunks_exact(width) {
            for (t, &v) in row_sums.iter_mut().zip(&row[width - s.d_out..]) {
                *t += v as f64;
            }
        }
        let sq = if n_local > 0 {
            row_sums.iter().map(|t| t * t).sum::<f64>() / nl
        } else {
            0.0
        };
        sums.extend_from_slice(&[
            stats.loss * nl,
            stats.mse_loss * nl,
            stats.sparsity_loss * nl,
            stats.aux_loss * nl,
            stats.l0 * nl,
            stats.sse,
            stats.sst + sq,
            0.0,
        ]);
        sums.extend_from_slice(&row_sums);
        sums.extend_from_slice(&stats.prefix_sse[..s.prefix_levels]);
    }
    comm.sum_f64(&mut sums)?;
    let mut at = 0;
    for s in steps.iter_mut() {
        let part = &sums[at..at + 8 + s.d_out + s.prefix_levels];
        at += 8 + s.d_out + s.prefix_levels;
        let ng = s.n_global as f64;
        let (row_sums, prefix) = part[8..].split_at(s.d_out);
        let total_sq = row_sums.iter().map(|t| t * t).sum::<f64>() / ng;
        let stats = &mut *s.stats;
        stats.loss = part[0] / ng;
        stats.mse_loss = part[1] / ng;
        stats.sparsity_loss = part[2] / ng;
        stats.aux_loss = part[3] / ng;
        stats.l0 = part[4] / ng;
        stats.sse = part[5];
        stats.sst = (part[6] - total_sq).max(0.0);
        stats.n_rows = s.n_global;
        stats.prefix_sse[..prefix.len()].copy_from_slice(prefix);
    }
    let mut mins: Vec<f64> = steps.iter().map(|s| s.stats.min_active).collect();
    comm.min_f64(&mut mins)?;
    for (s, m) in steps.iter_mut().zip(mins) {
        s.stats.min_active = m;
    }
    let mut fired: Vec<u64> = steps.iter().flat_map(|s| s.fired.iter().copied()).collect();
    comm.sum_u64(&mut fired)?;
    let mut at = 0;
    for s in steps.iter_mut() {
        let len = s.fired.len();
        s.fired.copy_from_slice(&fired[at..at + len]);
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_partition_the_batch() {
        for n in [0usize, 1, 7, 8, 4096] {
            for w in 1..=5 {
                let mut next = 0;
                for r in 0..w {
                    let rows = rows_of(r, w, n);
                    assert_eq!(rows.start, next, "n {n} w {w} r {r}");
                    assert!(rows.len() <= n / w + 1);
                    next = rows.end;
                }
                assert_eq!(next, n);
            }
        }
        assert_eq!(rows_of(1, 2, 7), 3..7);
    }

    #[test]
    fn single_process_is_the_identity() {
        let c = SingleProcess;
        let mut a = [1.5f32, -2.0];
        let mut b = [3u64];
        let mut m = [f64::INFINITY, 0.25];
        c.sum_f32(&mut a).unwrap();
        c.sum_u64(&mut b).unwrap();
        c.min_f64(&mut m).unwrap();
        assert_eq!((a, b, m), ([1.5, -2.0], [3], [f64::INFINITY, 0.25]));
        assert!(c.is_root() && c.world_size() == 1);
    }

    #[test]
    fn ring_volume_for_a_million_latents() {
        // d_in 576, d_sae 2^20: 2·576·2^20 + 2^20 + 576 floats ≈ 1.209e9 floats ≈ 4.84 GB of f32;
        // a ring over 2 ranks moves 2·(1/2) × that per rank.
        let n = 2 * 576 * (1u64 << 20) + (1 << 20) + 576;
        assert_eq!(n, 1_209_008_704);
        assert_eq!(ring_allreduce_bytes(n, 2), 4.0 * n as f64);
        assert_eq!(ring_allreduce_bytes(n, 1), 0.0);
    }
}
