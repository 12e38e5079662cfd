//! The training loop: batches from a source, forward/backward, gradient projection, clipping, Adam,
//! post-step hooks, dead-latent tracking, metrics and exact checkpoints.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod first_rows;
mod state;
mod step;
mod window;

pub(crate) use first_rows::InitRows;
pub use state::{RngState, StateMeta, STATE_FORMAT};
pub(crate) use step::Clock;
use window::Window;

use super::batch::fill_batch;
use super::collective::{check_world, reduce_steps, rows_of, Collective, SingleProcess};
use super::config::{ThresholdInit, TrainConfig};
use super::source::ActivationSource;
use crate::checkpoint::STATE_FILE;
use crate::metrics::MetricsWriter;
use crate::optim::Adam;
use crate::{init, Gradients, Sae, SaeError, Workspace};

/// File name of the metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What the progress callback sees after each step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Steps in the run.
    pub total_steps: u64,
    /// Rows trained on.
    pub tokens: u64,
    /// Loss of the last step.
    pub loss: f64,
    /// L0 of the last step.
    pub l0: f64,
    /// FVE of the last step (centred).
    pub fve: f64,
    /// Fraction of dead latents.
    pub dead_fraction: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Rows per second since the run (or resume) started.
    pub tokens_per_s: f64,
}

/// How a call to [`Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunOutcome {
    /// Whether all steps were done (false when the callback stopped the run or the data ran out early).
    pub finished: bool,
    /// Steps done in total (including before a resume).
    pub steps: u64,
    /// Rows trained on in total.
    pub tokens: u64,
    /// Non-finite rows dropped in total.
    pub skipped_rows: u64,
    /// Fraction of dead latents at the end.
    pub dead_fraction: f64,
    /// Rows per second in this call.
    pub tokens_per_s: f64,
}

/// A training run in progress: the SAE in the normalised training space plus all optimizer state.
#[derive(Debug)]
pub struct Trainer {
    cfg: TrainConfig,
    sae: Sae,
    grads: Gradients,
    ws: Workspace,
    adam: Adam,
    rng: ChaCha8Rng,
    step: u64,
    tokens: u64,
    skipped_rows: u64,
    scale: f32,
    tokens_since_fired: Vec<u64>,
    dead: Vec<bool>,
    batch: Vec<f32>,
    out_dir: Option<PathBuf>,
    metrics: Option<MetricsWriter>,
    window: Window,
    comm: Box<dyn Collective + Send>,
    /// Matryoshka: the FVE of each prefix on the last metrics line's steps.
    pub(in crate::train) last_prefix_fve: Vec<f64>,
    /// Wall time spent writing checkpoints during steps, since the trainer was made.
    pub(in crate::train) checkpoint_time: std::time::Duration,
}

fn shapes(sae: &Sae) -> Vec<(String, usize)> {
    sae.params()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.len()))
        .collect()
}

impl Trainer {
    /// Starts a run: initialises the SAE from `cfg.seed`, estimates the input scale and `b_dec` from the first
    /// `cfg.init_rows` rows (then rewinds the source). With `out_dir`, checkpoints, metrics and the final SAE
    /// go there; a directory that already holds a run is refused (nothing is overwritten).
    pub fn new(
        cfg: TrainConfig,
        source: &mut dyn ActivationSource,
        out_dir: Option<&Path>,
    ) -> Result<Self, SaeError> {
        Self::new_with(cfg, source, out_dir, Box::new(SingleProcess))
    }

    /// [`Trainer::new`] for one rank of a data-parallel job: every rank must call it with the same
    /// configuration and an identical source; only the root rank writes files.
    pub fn new_with(
        cfg: TrainConfig,
        source: &mut dyn ActivationSource,
        out_dir: Option<&Path>,
        comm: Box<dyn Collective + Send>,
    ) -> Result<Self, SaeError> {
        Self::prepare(&cfg, source, out_dir, comm.as_ref())?;
        // Data-dependent initialisation on the first rows, then rewind so training sees them too.
        let start = source.cursor();
        let mut init = InitRows::new(&cfg);
        while init.read(source, cfg.batch_size)? {}
        source.seek(&start)?;
        Self::from_init(cfg, init, out_dir, comm)
    }

    /// What a new run checks before reading any row: the configuration, the world, the source's row
    /// width, and a run directory that holds no run yet (created).
    pub(crate) fn prepare(
        cfg: &TrainConfig,
        source: &dyn ActivationSource,
        out_dir: Option<&Path>,
        comm: &dyn Collective,
    ) -> Result<(), SaeError> {
        cfg.validate()?;
        check_world(cfg, comm)?;
        let width = cfg.sae.row_width();
        if source.d_in() != width {
            return Err(SaeError::shape(
                row_width_name(&cfg.sae),
                &[width],
                &[source.d_in()],
            ));
        }
        if let Some(dir) = out_dir {
            if dir.join(STATE_FILE).exists() || dir.join("cfg.json").exists() {
                return Err(SaeError::invalid(
                    "--out",
                    dir.display(),
                    format!(
                        "it already holds a training run; continue it with `--resume {}` or choose \
                         another --out",
                        dir.display()
                    ),
                ));
            }
            std::fs::create_dir_all(dir).map_err(|source| SaeError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// A new run ([`prepare`](Self::prepare)d) initialised from the first rows read into `init`.
    pub(crate) fn from_init(
        cfg: TrainConfig,
        init: InitRows,
        out_dir: Option<&Path>,
        comm: Box<dyn Collective + Send>,
    ) -> Result<Self, SaeError> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut sae = Sae::init(cfg.sae.clone(), &mut rng)?;
        if let Some(norm) = cfg.decoder_init_norm {
            init::scale_initial_directions(&mut sae, norm);
        }
        let n = init.n_rows();
        let fit = init.finish(&cfg)?;
        let scale = fit.scale;
        sae.b_dec.copy_from_slice(&fit.b_dec);
        if cfg.sae.architecture == crate::Architecture::JumpRelu {
            match (
                cfg.jumprelu_init_threshold,
                &fit.inputs,
                cfg.jumprelu_sparsity,
            ) {
                (ThresholdInit::Value(v), _, _) => sae.threshold.fill(v as f32),
                (
                    ThresholdInit::TargetRate,
                    Some(x),
                    crate::JumpReluSparsity::QuadraticL0 { target },
                ) => init::thresholds_at_rate(&mut sae, x, target / cfg.sae.d_sae as f64)?,
                // Refused by `TrainConfig::validate`; the first rows are kept whenever it is chosen.
                (ThresholdInit::TargetRate, _, _) => {
                    return Err(SaeError::Training(
                        "target-rate thresholds need the quadratic-L0 recipe's --target-l0".into(),
                    ))
                }
            }
        }
        let (d_in, width) = (cfg.sae.d_in, cfg.sae.row_width());
        tracing::info!(arch = %cfg.sae.architecture, d_in, d_sae = cfg.sae.d_sae, scale, init_rows = n, "initialised SAE");

        let window = Window::default();
        let metrics = match out_dir {
            Some(dir) if comm.is_root() => {
                Some(MetricsWriter::open(&dir.join(METRICS_FILE), None)?)
            }
            _ => None,
        };
        let d_sae = cfg.sae.d_sae;
        Ok(Self {
            grads: Gradients::zeros_like(&sae),
            adam: Adam::new(cfg.adam, &shapes(&sae)),
            ws: Workspace::default(),
            rng,
            step: 0,
            tokens: 0,
            skipped_rows: 0,
            scale,
            tokens_since_fired: vec![0; d_sae],
            dead: vec![false; d_sae],
            batch: vec![0.0; cfg.batch_size * width],
            out_dir: out_dir.map(Path::to_path_buf),
            metrics,
            window,
            sae,
            cfg,
            comm,
            last_prefix_fve: Vec::new(),
            checkpoint_time: std::time::Duration::ZERO,
        })
    }

    /// The run directory (checkpoints, metrics, the SAE), if any.
    pub fn out_dir(&self) -> Option<&Path> {
        self.out_dir.as_deref()
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The input scale `s` (training sees `s·x`).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The SAE in the training (normalised) space; with `decoder_init_norm`, its decoder norms not folded
    /// in (encode it with the rescaled parametrisation, or use [`Trainer::inference_sae`]).
    pub fn training_sae(&self) -> &Sae {
        &self.sae
    }

    /// The SAE for raw activations: the decoder norms (SAELens' parametrisation) and the input scale
    /// folded in, `normalization_factor` recorded.
    pub fn inference_sae(&self) -> Sae {
        let mut sae = self.sae.clone();
        if self.cfg.decoder_init_norm.is_some() {
            init::fold_decoder_norms(&mut sae);
        }
        if self.cfg.normalize_activations {
            init::fold_input_scale(&mut sae, self.scale);
            sae.cfg.normalization_factor = Some(self.scale);
        }
        sae
    }

    /// Fraction of latents that have not fired for `dead_after_tokens` rows.
    pub fn dead_fraction(&self) -> f64 {
        self.dead.iter().filter(|&&d| d).count() as f64 / self.dead.len().max(1) as f64
    }

    /// Trains until the configured number of steps is done, the source runs out, or `progress` returns
    /// `Break` (then nothing more is written: the run can be resumed from its last checkpoint, as after a
    /// kill). Writes checkpoints every `checkpoint_every_tokens` rows and the final SAE when done.
    pub fn run(
        &mut self,
        source: &mut dyn ActivationSource,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<RunOutcome, SaeError> {
        let mut clock = Clock::start(self.tokens);
        let mut finished = true;
        while self.step < self.cfg.total_steps() {
            let Some(mut begun) = self.begin_step(source)? else {
                finished = false;
                break;
            };
            let comm = self.take_collective();
            let reduced = reduce_steps(comm.as_ref(), &mut [self.reduction(&mut begun)]);
            self.put_collective(comm);
            reduced?;
            if self
                .finish_step(begun, source, &mut clock, progress)?
                .is_break()
            {
                return Ok(self.outcome(false, &clock));
            }
        }
        self.checkpoint(source.cursor())?;
        Ok(self.outcome(finished, &clock))
    }

    pub(crate) fn outcome(&self, finished: bool, clock: &Clock) -> RunOutcome {
        RunOutcome {
            finished,
            steps: self.step,
            tokens: self.tokens,
            skipped_rows: self.skipped_rows,
            dead_fraction: self.dead_fraction(),
            tokens_per_s: clock.rate(self.tokens),
        }
    }

    /// relu-unit: resamples the dead latents from the current batch (∝ loss²) and resets their Adam state.
    /// `n` rows in the global batch, this rank's starting at `offset`, with squared errors `local`.
    fn resample(&mut self, n: usize, offset: usize, local: &[f32]) -> Result<(), SaeError> {
        let dead: Vec<usize> = self
            .dead
            .iter()
            .enumerate()
            .filter(|(_, &d)| d)
            .map(|(i, _)| i)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        let width = self.cfg.sae.row_width();
        let (d_in, d_sae) = (self.cfg.sae.d_in, self.cfg.sae.d_sae);
        // Per-row losses of the whole global batch: each rank fills its rows, the sum gathers them
        // (adding zeros is exact), so every rank resamples identically from the same RNG.
        let mut row_loss = vec![0.0f32; n];
        row_loss[offset..offset + local.len()].copy_from_slice(local);
        self.comm.sum_f32(&mut row_loss)?;
        let done =
            self.sae
                .resample_dead(&self.batch[..n * width], n, &row_loss, &dead, &mut self.rng)?;
        for &i in &done {
            for st in self.adam.moments.iter_mut() {
                crate::arch::zero_latent(&st.name, &mut st.m, i, d_in, d_sae);
                crate::arch::zero_latent(&st.name, &mut st.v, i, d_in, d_sae);
            }
            self.tokens_since_fired[i] = 0;
            self.dead[i] = false;
        }
        tracing::info!(
            step = self.step,
            resampled = done.len(),
            "resampled dead latents"
        );
        Ok(())
    }

    /// The collective this trainer reduces over (rank 0 of 1 unless built with [`Trainer::new_with`]).
    pub fn collective(&self) -> &dyn Collective {
        self.comm.as_ref()
    }
}

/// How a source's row width is named in a mismatch message.
pub(crate) fn row_width_name(sae: &crate::SaeConfig) -> String {
    if sae.is_transcoder() {
        format!(
            "activation rows [x | y] of a transcoder (d_in {} + d_out {})",
            sae.d_in,
            sae.d_out()
        )
    } else {
        "activation rows (d_in)".to_string()
    }
}
