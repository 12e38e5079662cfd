//! Many dictionaries at once: one [`Trainer`] per dictionary (each with its own run directory, checkpoint
//! and source), stepped together on one thread pool, one step of every dictionary per global step.
//!
//! The sources are meant to come from one forward pass (zephyra-data's `BufferedSource::harvesting_many`:
//! one shuffle buffer per dictionary, fed from the same shards), so the model runs once per batch for all
//! of them. Each dictionary's step is exactly the step its trainer would take alone (the same code, the
//! same threads, the same rows): a dictionary trained here has bit for bit the weights it would have
//! trained alone with the same seed and rows (`tests/multi.rs`). Under data parallelism the dictionaries'
//! gradients travel in **one** allreduce per step ([`reduce_steps`](super::collective::reduce_steps)).
//!
//! Memory: the dictionaries step one after another, so they share **one** step workspace (the
//! `batch × d_sae` pre-activations, codes and chunk buffers, sized for the largest of them) instead of each
//! keeping its own between steps; what a dictionary needs of its forward pass until the end of its step
//! travels with it (`Trainer::begin_step_in`). Each keeps its weights, gradients, Adam moments and batch.
//!
//! `--resume` restores each dictionary from its own checkpoint; the sources resume from their own cursors
//! (equal, as every dictionary reads the same number of rows per step).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::collective::reduce_steps;
use super::session::pool;
use super::trainer::{Clock, InitRows};
use super::{ActivationSource, Collective, Progress, RunOutcome, TrainConfig, Trainer};
use crate::checkpoint::TrainingState;
use crate::{SaeError, Workspace};

/// Several training runs advanced together; see the module docs.
#[derive(Debug)]
pub struct MultiTrainer {
    trainers: Vec<Trainer>,
    /// The one step workspace every dictionary's forward/backward uses in turn.
    scratch: Workspace,
    times: StepTimes,
}

/// Where a [`MultiTrainer`]'s wall time went, in seconds: the breakdown of a step of every dictionary.
/// Rows include waiting for the model (on the fly, the forward pass runs on its own thread, ahead of the
/// trainers) and copying them out of each dictionary's shuffle buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StepTimes {
    /// Starting: each new run's first rows read (in lockstep), its scale and `b_dec`, its state allocated.
    pub init_s: f64,
    /// Steps taken (of every dictionary).
    pub steps: u64,
    /// Filling every dictionary's batch.
    pub rows_s: f64,
    /// Forward/backward of every dictionary.
    pub forward_backward_s: f64,
    /// The reduction over ranks (one for all dictionaries).
    pub reduce_s: f64,
    /// Clipping, Adam, post-step, dead latents and metrics of every dictionary.
    pub update_s: f64,
    /// Writing checkpoints (every dictionary's, and the last).
    pub checkpoint_s: f64,
}

impl StepTimes {
    /// The training time per step of one dictionary (forward/backward, reduction and update over the
    /// dictionaries and steps), in seconds.
    pub fn train_step_s(&self, dictionaries: usize) -> f64 {
        (self.forward_backward_s + self.reduce_s + self.update_s)
            / (self.steps.max(1) as f64 * dictionaries.max(1) as f64)
    }
}

/// A new or resumed run of one dictionary inside a [`MultiTrainer`].
#[derive(Debug, Clone)]
pub enum Member {
    /// Start a new run with this configuration in this directory.
    Start(TrainConfig, PathBuf),
    /// Continue the run saved in this directory; the configuration it must match, if given.
    Resume(PathBuf, Option<TrainConfig>),
}

impl MultiTrainer {
    /// Starts (or resumes) one trainer per member, each on its own source (`sources[i]` for
    /// `members[i]`), with a collective from `comm` each (all of the same job). Every member must take the
    /// same number of rows per step and steps ([`TrainConfig::batch_size`], [`TrainConfig::total_tokens`]):
    /// they advance together.
    pub fn new(
        members: Vec<Member>,
        sources: &mut [Box<dyn ActivationSource>],
        comm: &dyn Fn() -> Box<dyn Collective + Send>,
    ) -> Result<Self, SaeError> {
        if members.is_empty() || members.len() != sources.len() {
            return Err(SaeError::invalid(
                "--hook",
                format!("{} dictionaries, {} sources", members.len(), sources.len()),
                "give one source per dictionary, at least one",
            ));
        }
        // New runs read their first rows (the scale and b_dec estimate) in lockstep, one batch each in
        // turn, then rewind together: from one forward pass, each window is harvested once for all of
        // them (read one after the other, every dictionary would harvest the first windows again).
        let started = Instant::now();
        let mut inits = Vec::with_capacity(members.len());
        for (member, source) in members.iter().zip(sources.iter_mut()) {
            let comm = comm();
            let rows = match member {
                Member::Start(cfg, dir) => {
                    Trainer::prepare(cfg, source.as_ref(), Some(dir), comm.as_ref())?;
                    Some((InitRows::new(cfg), source.cursor(), cfg.batch_size))
                }
                Member::Resume(..) => None,
            };
            inits.push((comm, rows));
        }
        let mut reading = true;
        while reading {
            reading = false;
            for ((_, init), source) in inits.iter_mut().zip(sources.iter_mut()) {
                if let Some((rows, _, batch)) = init {
                    reading |= rows.read(source.as_mut(), *batch)?;
                }
            }
        }
        let mut trainers = Vec::with_capacity(members.len());
        for ((member, source), (comm, init)) in
            members.into_iter().zip(sources.iter_mut()).zip(inits)
        {
            let trainer = match (member, init) {
                (Member::Start(cfg, dir), Some((rows, start, _))) => {
                    source.seek(&start)?;
                    Trainer::from_init(cfg, rows, Some(&dir), comm)?
                }
                // Not reached: every new run has read its rows above.
                (Member::Start(cfg, dir), None) => {
                    Trainer::new_with(cfg, source.as_mut(), Some(&dir), comm)?
                }
                (Member::Resume(dir, expected), _) => {
                    Trainer::resume_with(&dir, expected.as_ref(), source.as_mut(), comm)?
                }
            };
            trainers.push(trainer);
        }
        let first = trainers[0].config();
        let (batch, steps, step) = (first.batch_size, first.total_steps(), trainers[0].step());
        for t in &trainers[1..] {
            let c = t.config();
            if c.batch_size != batch || c.total_steps() != steps || t.step() != step {
                return Err(SaeError::invalid(
                    "--batch-rows/--tokens",
                    format!(
                        "{} rows × {} steps (at step {}) and {} × {} (at step {})",
                        batch,
                        steps,
                        step,
                        c.batch_size,
                        c.total_steps(),
                        t.step()
                    ),
                    "dictionaries trained together take the same rows per step and steps; resume \
                     every dictionary of the run together",
                ));
            }
        }
        Ok(Self {
            trainers,
            scratch: Workspace::default(),
            times: StepTimes {
                init_s: started.elapsed().as_secs_f64(),
                ..StepTimes::default()
            },
        })
    }

    /// Where the time went so far ([`run`](Self::run) adds to it).
    pub fn times(&self) -> StepTimes {
        self.times
    }

    /// The trainers, in member order.
    pub fn trainers(&self) -> &[Trainer] {
        &self.trainers
    }

    /// The run directories, in member order.
    pub fn out_dirs(&self) -> Vec<Option<&Path>> {
        self.trainers.iter().map(Trainer::out_dir).collect()
    }

    /// Trains every dictionary until its steps are done or its source runs out (all together), or
    /// `progress` returns `Break` for one of them (the step is finished for all, then the run stops
    /// without writing more: resume from the last checkpoints, as after a kill). `progress` gets the
    /// member index with each dictionary's progress. Returns each dictionary's outcome.
    pub fn run(
        &mut self,
        sources: &mut [Box<dyn ActivationSource>],
        progress: &mut dyn FnMut(usize, &Progress) -> ControlFlow<()>,
    ) -> Result<Vec<RunOutcome>, SaeError> {
        let mut clocks: Vec<Clock> = self
            .trainers
            .iter()
            .map(|t| Clock::start(t.tokens_done()))
            .collect();
        let total = self.trainers[0].config().total_steps();
        let mut finished = true;
        let mut stop = false;
        let checkpoints_before: Duration = self.trainers.iter().map(|t| t.checkpoint_time).sum();
        let mut fb = Duration::ZERO;
        let mut read = Duration::ZERO;
        let mut reduce = Duration::ZERO;
        let mut update = Duration::ZERO;
        while self.trainers[0].step() < total && !stop {
            let started = Instant::now();
            let mut begun = Vec::with_capacity(self.trainers.len());
            for (t, s) in self.trainers.iter_mut().zip(sources.iter_mut()) {
                begun.push(t.begin_step_in(s.as_mut(), &mut self.scratch)?);
            }
            let Some(mut begun) = begun.into_iter().collect::<Option<Vec<_>>>() else {
                finished = false;
                break;
            };
            let read_now: Duration = begun.iter().map(|b| b.read_time).sum();
            read += read_now;
            fb += started.elapsed() - read_now;
            let started = Instant::now();
            // The first trainer's collective carries every dictionary's reduction.
            let comm = self.trainers[0].take_collective();
            let mut parts: Vec<_> = self
                .trainers
                .iter_mut()
                .zip(begun.iter_mut())
                .map(|(t, b)| t.reduction(b))
                .collect();
            let reduced = reduce_steps(comm.as_ref(), &mut parts);
            drop(parts);
            self.trainers[0].put_collective(comm);
            reduced?;
            reduce += started.elapsed();
            let started = Instant::now();
            for (i, ((t, b), (s, clock))) in self
                .trainers
                .iter_mut()
                .zip(begun)
                .zip(sources.iter().zip(clocks.iter_mut()))
                .enumerate()
            {
                let flow =
                    t.finish_step(b, s.as_ref(), clock, &mut |p: &Progress| progress(i, p))?;
                stop |= flow.is_break();
            }
            update += started.elapsed();
            self.times.steps += 1;
        }
        let mut checkpoints: Duration = self.trainers.iter().map(|t| t.checkpoint_time).sum();
        checkpoints -= checkpoints_before;
        let times = &mut self.times;
        times.rows_s += read.as_secs_f64();
        times.forward_backward_s += fb.as_secs_f64();
        times.reduce_s += reduce.as_secs_f64();
        times.update_s += update.saturating_sub(checkpoints).as_secs_f64();
        times.checkpoint_s += checkpoints.as_secs_f64();
        if stop {
            return Ok(self.outcomes(false, &clocks));
        }
        let started = Instant::now();
        for (t, s) in self.trainers.iter().zip(sources.iter()) {
            t.checkpoint(s.cursor())?;
        }
        self.times.checkpoint_s += started.elapsed().as_secs_f64();
        Ok(self.outcomes(finished, &clocks))
    }

    fn outcomes(&self, finished: bool, clocks: &[Clock]) -> Vec<RunOutcome> {
        self.trainers
            .iter()
            .zip(clocks)
            .map(|(t, c)| t.outcome(finished, c))
            .collect()
    }
}

/// A [`MultiTrainer`] and the one pool of worker threads every dictionary steps on (the first member's
/// `TrainConfig::threads`), as [`TrainSession`](super::TrainSession) is for one dictionary.
#[derive(Debug)]
pub struct MultiSession {
    pool: rayon::ThreadPool,
    multi: MultiTrainer,
}

impl MultiSession {
    /// Starts or resumes every member ([`MultiTrainer::new`]) on the pool's threads.
    pub fn new(
        members: Vec<Member>,
        sources: &mut [Box<dyn ActivationSource>],
        comm: &(dyn Fn() -> Box<dyn Collective + Send> + Sync),
    ) -> Result<Self, SaeError> {
        let threads = match members.first() {
            Some(Member::Start(cfg, _)) | Some(Member::Resume(_, Some(cfg))) => {
                cfg.validate()?;
                cfg.threads
            }
            Some(Member::Resume(dir, None)) => TrainingState::load(dir)?.meta.config.threads,
            None => 1,
        };
        let pool = pool(threads)?;
        let multi = pool.install(|| MultiTrainer::new(members, sources, comm))?;
        Ok(Self { pool, multi })
    }

    /// Trains on the session's threads ([`MultiTrainer::run`]).
    pub fn run(
        &mut self,
        sources: &mut [Box<dyn ActivationSource>],
        progress: &mut (dyn FnMut(usize, &Progress) -> ControlFlow<()> + Send),
    ) -> Result<Vec<RunOutcome>, SaeError> {
        let multi = &mut self.multi;
        self.pool.install(|| multi.run(sources, progress))
    }

    /// Runs `f` on the session's threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// The trainers, in member order.
    pub fn trainers(&self) -> &[Trainer] {
        self.multi.trainers()
    }

    /// Where the time went ([`MultiTrainer::times`]).
    pub fn times(&self) -> StepTimes {
        self.multi.times()
    }
}
