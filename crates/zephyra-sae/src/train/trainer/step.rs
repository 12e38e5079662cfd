//! One training step in three parts, so that several dictionaries can share one reduction
//! ([`MultiTrainer`](crate::train::MultiTrainer)): [`Trainer::begin_step`] (fill the batch,
//! forward/backward on this rank's rows), the reduction over ranks
//! ([`reduce_steps`](crate::train::collective::reduce_steps), one call for every dictionary), and
//! [`Trainer::finish_step`] (clip, Adam, post-step, dead latents, metrics, checkpoint).
//!
//! Only forward/backward uses the step workspace ([`Workspace`]: the `batch × d_sae` pre-activations, the
//! codes, the chunk buffers); what the rest of the step needs of it (fire counts, and relu-unit's row
//! errors before a resampling) is copied into [`Begun`]. So dictionaries stepped one after another can
//! share one workspace ([`Trainer::begin_step_in`]): every buffer is written before it is read, whatever
//! the dictionary that used it last, and the results are bit for bit those of a workspace of one's own.

use std::ops::{ControlFlow, Range};
use std::time::Instant;

use super::{fill_batch, rows_of, Collective, Progress, SingleProcess, Trainer, Window};
use crate::optim::{clip_global_norm, global_norm};
use crate::schedule::sparsity_at;
use crate::train::collective::StepReduce;
use crate::train::source::ActivationSource;
use crate::{Architecture, SaeError, StepConfig, StepStats, Workspace};

/// Wall-clock bookkeeping of one call to `run`: rows per second overall and per metrics window.
#[derive(Debug)]
pub(crate) struct Clock {
    started: Instant,
    start_tokens: u64,
    window_start: (Instant, u64),
}

impl Clock {
    /// Starts counting at `tokens` rows.
    pub(crate) fn start(tokens: u64) -> Self {
        Self {
            started: Instant::now(),
            start_tokens: tokens,
            window_start: (Instant::now(), tokens),
        }
    }

    /// Rows per second since the start, at `tokens` rows.
    pub(crate) fn rate(&self, tokens: u64) -> f64 {
        (tokens - self.start_tokens) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// A step after forward/backward on this rank's rows, before the reduction over ranks.
#[derive(Debug)]
pub(crate) struct Begun {
    /// Rows in the global batch.
    n: usize,
    /// This rank's rows of it.
    rows: Range<usize>,
    lr: f32,
    coeff: f64,
    stats: StepStats,
    /// Fire counts of this rank's rows (summed over ranks by the reduction).
    fired: Vec<u64>,
    /// `‖x̂_r − x_r‖²` of this rank's rows when a resampling follows the step (relu-unit), else empty.
    row_sq_err: Vec<f32>,
    /// Wall time spent filling the batch (reading the source).
    pub(crate) read_time: std::time::Duration,
}

impl Trainer {
    /// Rows trained on so far.
    pub(crate) fn tokens_done(&self) -> u64 {
        self.tokens
    }

    /// Takes the collective out (leaving one process in its place) so it can reduce this trainer's step
    /// while the trainer lends out its gradients; put it back with [`put_collective`](Self::put_collective).
    pub(crate) fn take_collective(&mut self) -> Box<dyn Collective + Send> {
        std::mem::replace(&mut self.comm, Box::new(SingleProcess))
    }

    /// Puts back the collective taken by [`take_collective`](Self::take_collective).
    pub(crate) fn put_collective(&mut self, comm: Box<dyn Collective + Send>) {
        self.comm = comm;
    }

    /// [`begin_step`](Self::begin_step) with `scratch` as the step workspace (this trainer's own is set
    /// aside meanwhile): several trainers stepped one after another share one, instead of each keeping its
    /// `batch × d_sae` buffers between steps. The results are the same bit for bit.
    pub(crate) fn begin_step_in(
        &mut self,
        source: &mut dyn ActivationSource,
        scratch: &mut Workspace,
    ) -> Result<Option<Begun>, SaeError> {
        std::mem::swap(&mut self.ws, scratch);
        let begun = self.begin_step(source);
        std::mem::swap(&mut self.ws, scratch);
        begun
    }

    /// Whether the step that brings the run to `step` steps ends with a resampling of dead latents.
    fn resamples_at(&self, step: u64) -> bool {
        self.cfg.sae.architecture == Architecture::ReluUnit
            && self.cfg.resample_every_steps > 0
            && step % self.cfg.resample_every_steps == 0
            && step < self.cfg.total_steps()
    }

    /// Fills the batch and runs forward/backward on this rank's rows; `None` when the source ran out
    /// before the step (fewer rows than ranks).
    pub(crate) fn begin_step(
        &mut self,
        source: &mut dyn ActivationSource,
    ) -> Result<Option<Begun>, SaeError> {
        let width = self.cfg.sae.row_width();
        let started = Instant::now();
        let (n, skipped) = fill_batch(
            source,
            &mut self.batch,
            width,
            self.cfg.non_finite,
            self.tokens + self.skipped_rows,
        )?;
        self.skipped_rows += skipped;
        let read_time = started.elapsed();
        let world = self.comm.world_size();
        if n < world.max(1) {
            tracing::warn!(
                step = self.step,
                rows = n,
                "the activation source ran out before the last step"
            );
            return Ok(None);
        }
        if self.scale != 1.0 {
            let s = self.scale;
            self.batch[..n * width].iter_mut().for_each(|v| *v *= s);
        }
        // This rank's rows of the global batch (all of it in one process).
        let rows = rows_of(self.comm.rank(), world, n);
        let n_local = rows.len();
        let x = &mut self.batch[rows.start * width..rows.end * width];
        let lr = self.cfg.lr_schedule().lr_at(self.step);
        let coeff = sparsity_at(
            self.cfg.sparsity_coeff as f32,
            self.cfg.sparsity_warmup_steps,
            self.step,
        ) as f64;
        let any_dead = self.dead.iter().any(|&d| d);
        let step_cfg = StepConfig {
            sparsity_coeff: coeff,
            dead: if any_dead { Some(&self.dead) } else { None },
            k_aux: self.cfg.k_aux,
            aux_coeff: self.cfg.aux_coeff,
            bandwidth: self.cfg.bandwidth,
            jumprelu_sparsity: self.cfg.jumprelu_sparsity,
            pre_act_coeff: self.cfg.pre_act_coeff,
            rescale_acts_by_decoder_norm: self.cfg.decoder_init_norm.is_some(),
            matryoshka_aux: self.cfg.matryoshka_aux,
            ..StepConfig::default()
        };
        let stats =
            self.sae
                .forward_backward(x, n_local, &step_cfg, &mut self.ws, &mut self.grads)?;
        let fired = self.ws.fire_counts().iter().map(|&c| c as u64).collect();
        let row_sq_err = if self.resamples_at(self.step + 1) {
            self.ws.row_sq_err()[..n_local].to_vec()
        } else {
            Vec::new()
        };
        Ok(Some(Begun {
            n,
            rows,
            lr,
            coeff,
            stats,
            fired,
            row_sq_err,
            read_time,
        }))
    }

    /// What the reduction over ranks needs of `begun`: this rank's rows, its stats, gradients and fire
    /// counts (fire counts over the global batch: the dead mask must agree on every rank).
    pub(crate) fn reduction<'a>(&'a mut self, begun: &'a mut Begun) -> StepReduce<'a> {
        let width = self.cfg.sae.row_width();
        StepReduce {
            x: &self.batch[begun.rows.start * width..begun.rows.end * width],
            width,
            d_out: self.cfg.sae.d_out(),
            prefix_levels: match &self.cfg.sae.architecture {
                Architecture::Matryoshka { groups, .. } => groups.levels(),
                _ => 0,
            },
            n_global: begun.n,
            stats: &mut begun.stats,
            grads: &mut self.grads,
            fired: &mut begun.fired,
        }
    }

    /// The rest of the step, after the reduction: clipping, Adam, post-step, dead latents, metrics,
    /// checkpoint; then `progress` (whose `Break` ends the run here).
    pub(crate) fn finish_step(
        &mut self,
        begun: Begun,
        source: &dyn ActivationSource,
        clock: &mut Clock,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, SaeError> {
        let Begun {
            n,
            rows,
            lr,
            coeff,
            stats,
            fired,
            row_sq_err,
            ..
        } = begun;
        let total_steps = self.cfg.total_steps();
        if !stats.loss.is_finite() {
            return Err(SaeError::Training(format!(
                "the loss became {} at step {}; lower --lr (now {}) and resume from the last checkpoint \
                 or start again (no non-finite weights were saved)",
                stats.loss, self.step, self.cfg.lr
            )));
        }
        // SAELens' parametrisation keeps the decoder rows free (no projection, no renormalisation).
        let free_decoder = self.cfg.decoder_init_norm.is_some();
        if !free_decoder {
            self.sae.project_decoder_grad(&mut self.grads);
        }
        let grad_norm = match self.cfg.max_grad_norm {
            Some(max) => {
                let mut gs: Vec<&mut [f32]> = self
                    .grads
                    .slices_mut()
                    .into_iter()
                    .map(|p| p.value)
                    .collect();
                clip_global_norm(&mut gs, max)
            }
            None => global_norm(
                &self
                    .grads
                    .slices()
                    .into_iter()
                    .map(|(_, g)| g)
                    .collect::<Vec<_>>(),
            ),
        };
        self.adam.begin_step();
        for (i, (p, (_, g))) in self
            .sae
            .params_mut()
            .into_iter()
            .zip(self.grads.slices())
            .enumerate()
        {
            // JumpReLU's thresholds move by about their learning rate per Adam step, while the encoder
            // shifts a pre-activation by about lr·‖x‖₁: a larger rate lets the L0 penalty keep up.
            let lr = if p.name == "threshold" {
                (f64::from(lr) * self.cfg.threshold_lr_scale) as f32
            } else {
                lr
            };
            self.adam.update(i, p.value, g, lr)?;
        }
        if free_decoder {
            self.sae.project_threshold();
        } else {
            self.sae.post_step();
        }
        self.sae
            .update_batchtopk_threshold(stats.min_active, self.cfg.threshold_rate);

        for ((t, &c), d) in self
            .tokens_since_fired
            .iter_mut()
            .zip(&fired)
            .zip(self.dead.iter_mut())
        {
            *t = if c > 0 { 0 } else { *t + n as u64 };
            *d = *t >= self.cfg.dead_after_tokens;
        }
        self.step += 1;
        self.tokens += n as u64;
        if self.resamples_at(self.step) {
            self.resample(n, rows.start, &row_sq_err)?;
        }

        self.window.add(&stats, grad_norm);
        let fve = 1.0 - stats.sse / stats.sst.max(f64::MIN_POSITIVE);
        let p = Progress {
            step: self.step,
            total_steps,
            tokens: self.tokens,
            loss: stats.loss,
            l0: stats.l0,
            fve,
            dead_fraction: self.dead_fraction(),
            lr: lr as f64,
            tokens_per_s: clock.rate(self.tokens),
        };
        if self.step % self.cfg.metrics_every_steps == 0 || self.step == total_steps {
            let secs = clock.window_start.0.elapsed().as_secs_f64().max(1e-9);
            let rec = self.window.record(
                self,
                lr as f64,
                coeff,
                (self.tokens - clock.window_start.1) as f64 / secs,
            );
            if let Some(m) = self.metrics.as_mut() {
                m.write(&rec)?;
            }
            self.last_prefix_fve = rec.fve_prefixes;
            self.window = Window::default();
            clock.window_start = (Instant::now(), self.tokens);
        }
        let every = self.cfg.checkpoint_every_tokens;
        if every > 0
            && self.step < total_steps
            && (self.tokens - n as u64) / every != self.tokens / every
        {
            let started = Instant::now();
            self.checkpoint(source.cursor())?;
            self.checkpoint_time += started.elapsed();
        }
        Ok(progress(&p))
    }
}
