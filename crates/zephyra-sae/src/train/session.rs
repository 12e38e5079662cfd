//! The one way to set up training: a [`Trainer`] with its own pool of `TrainConfig::threads` worker threads,
//! so that every caller (the `train` command, the benchmarks, tests) starts, resumes and runs a run the
//! same way, and a run reproduces bit for bit for its thread count.

use std::ops::ControlFlow;
use std::path::Path;

use super::{
    ActivationSource, Collective, Progress, RunOutcome, SingleProcess, TrainConfig, Trainer,
};
use crate::SaeError;

/// A training run and the worker threads it runs on.
#[derive(Debug)]
pub struct TrainSession {
    pool: rayon::ThreadPool,
    trainer: Trainer,
}

pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool, SaeError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|source| SaeError::Threads { threads, source })
}

impl TrainSession {
    /// Validates `cfg` (before any thread starts), starts its threads and initialises a new run there
    /// ([`Trainer::new_with`]; one process unless `comm` says otherwise).
    pub fn start(
        cfg: TrainConfig,
        source: &mut dyn ActivationSource,
        out_dir: Option<&Path>,
        comm: Option<Box<dyn Collective + Send>>,
    ) -> Result<Self, SaeError> {
        cfg.validate()?;
        let pool = pool(cfg.threads)?;
        let comm = comm.unwrap_or_else(|| Box::new(SingleProcess));
        let trainer = pool.install(|| Trainer::new_with(cfg, source, out_dir, comm))?;
        Ok(Self { pool, trainer })
    }

    /// Continues the run saved in `dir` ([`Trainer::resume_with`]) on the threads its configuration
    /// records.
    pub fn resume(
        dir: &Path,
        expected: Option<&TrainConfig>,
        source: &mut dyn ActivationSource,
        comm: Option<Box<dyn Collective + Send>>,
    ) -> Result<Self, SaeError> {
        let comm = comm.unwrap_or_else(|| Box::new(SingleProcess));
        let trainer = Trainer::resume_with(dir, expected, source, comm)?;
        let pool = pool(trainer.config().threads)?;
        Ok(Self { pool, trainer })
    }

    /// Trains on the session's threads ([`Trainer::run`]).
    pub fn run(
        &mut self,
        source: &mut dyn ActivationSource,
        progress: &mut (dyn FnMut(&Progress) -> ControlFlow<()> + Send),
    ) -> Result<RunOutcome, SaeError> {
        let trainer = &mut self.trainer;
        self.pool.install(|| trainer.run(source, progress))
    }

    /// Runs `f` on the session's threads (e.g. [`super::evaluate`] of the trained SAE).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// The trainer.
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }
}
