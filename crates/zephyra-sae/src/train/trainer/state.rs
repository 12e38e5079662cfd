//! The training state of a [`Trainer`]: what a checkpoint records ([`StateMeta`], typed) and how a run
//! continues from it ([`Trainer::resume`]).

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::window::Window;
use super::{shapes, Trainer, METRICS_FILE};
use crate::checkpoint::{f32_pairs_to_u64s, u64s_to_f32_pairs, TrainingState, STATE_FILE};
use crate::metrics::MetricsWriter;
use crate::optim::Adam;
use crate::train::collective::{check_world, Collective, SingleProcess};
use crate::train::resume::{check_resume, Difference};
use crate::train::source::ActivationSource;
use crate::train::TrainConfig;
use crate::{Gradients, Sae, SaeError, Workspace};

/// Version of the training-state layout.
pub const STATE_FORMAT: u64 = 1;

/// The JSON description in a checkpoint (`zephyra_training_state` in `training_state.safetensors`):
/// everything but the tensors. Field names are the file's keys (in the order the file has them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    /// Adam's step counter.
    pub adam_t: u64,
    /// The run's whole configuration.
    pub config: TrainConfig,
    /// The activation source's position ([`ActivationSource::cursor`]).
    pub cursor: crate::train::Cursor,
    /// [`STATE_FORMAT`].
    pub format: u64,
    /// The training RNG.
    pub rng: RngState,
    /// The input scale `s` (training sees `s·x`).
    pub scale: f32,
    /// Non-finite rows dropped so far.
    pub skipped_rows: u64,
    /// Steps done.
    pub step: u64,
    /// Rows trained on.
    pub tokens: u64,
    /// Sums since the last metrics line.
    pub window: Window,
    /// Ranks of a data-parallel job (absent for one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<u64>,
}

/// A ChaCha8 generator's position: seed, stream and word position (a u128, as decimal text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed.
    pub seed: Vec<u8>,
    /// The stream number.
    pub stream: u64,
    /// The word position, in decimal (JSON numbers do not hold a u128).
    pub word_pos: String,
}

impl RngState {
    fn of(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed().to_vec(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    fn restore(&self) -> Option<ChaCha8Rng> {
        let seed: [u8; 32] = self.seed.clone().try_into().ok()?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().ok()?);
        Some(rng)
    }
}

impl Trainer {
    /// Continues the run saved in `dir`. With `expected`, its settings must equal the checkpoint's (except
    /// the checkpoint and metrics intervals, which are taken from `expected`); otherwise
    /// [`SaeError::ConfigMismatch`] and nothing is touched. The source is moved to the saved cursor.
    pub fn resume(
        dir: &Path,
        expected: Option<&TrainConfig>,
        source: &mut dyn ActivationSource,
    ) -> Result<Self, SaeError> {
        Self::resume_with(dir, expected, source, Box::new(SingleProcess))
    }

    /// [`Trainer::resume`] for one rank of a data-parallel job. The run must have been saved by a job with
    /// the same number of ranks (otherwise [`SaeError::ConfigMismatch`]).
    pub fn resume_with(
        dir: &Path,
        expected: Option<&TrainConfig>,
        source: &mut dyn ActivationSource,
        comm: Box<dyn Collective + Send>,
    ) -> Result<Self, SaeError> {
        let state = TrainingState::load(dir)?;
        let path = dir.join(STATE_FILE);
        let bad = |reason: String| SaeError::checkpoint(&path, reason, None);
        let meta = &state.meta;
        let mut cfg = meta.config.clone();
        if let Some(want) = expected {
            check_resume(&cfg, want)?;
            cfg.checkpoint_every_tokens = want.checkpoint_every_tokens;
            cfg.metrics_every_steps = want.metrics_every_steps;
        }
        cfg.validate()?;
        check_world(&cfg, comm.as_ref())?;
        let saved_world = meta.world_size.unwrap_or(1);
        if saved_world != comm.world_size() as u64 {
            return Err(SaeError::ConfigMismatch {
                differences: vec![Difference {
                    option: "world size".into(),
                    saved: saved_world.to_string(),
                    requested: format!(
                        "{} (resume with `mpirun -np {saved_world}`{})",
                        comm.world_size(),
                        if saved_world == 1 {
                            " or without mpirun"
                        } else {
                            ""
                        }
                    ),
                }],
            });
        }
        if source.d_in() != cfg.sae.row_width() {
            return Err(SaeError::shape(
                super::row_width_name(&cfg.sae),
                &[cfg.sae.row_width()],
                &[source.d_in()],
            ));
        }
        let (step, tokens, skipped_rows, adam_t, scale) = (
            meta.step,
            meta.tokens,
            meta.skipped_rows,
            meta.adam_t,
            meta.scale,
        );

        // The state file bounds the sizes: a configuration promising more weights than the file holds is
        // refused before anything of that size is allocated.
        let (d_in, d_sae) = (cfg.sae.d_in, cfg.sae.d_sae);
        for (name, need) in [
            ("param.W_enc", d_in.checked_mul(d_sae)),
            ("param.b_dec", Some(cfg.sae.d_out())),
        ] {
            let got = state.tensor(name).map(<[f32]>::len);
            if got.is_none() || got != need {
                return Err(bad(format!(
                    "tensor `{name}` has {} values where its configuration (d_in {d_in}, d_sae {d_sae}) \
                     needs {}: the file is corrupt",
                    got.map_or("no".into(), |n| n.to_string()),
                    need.map_or("more than memory holds".into(), |n| n.to_string()),
                )));
            }
        }
        let mut sae = Sae::zeros(cfg.sae.clone())?;
        let mut adam = Adam::new(cfg.adam, &shapes(&sae));
        adam.t = adam_t;
        for (i, p) in sae.params_mut().into_iter().enumerate() {
            let st = &mut adam.moments[i];
            if p.name == "threshold" && state.tensor("param.threshold").is_none() {
                from_log_threshold(&state, p.value, &mut st.m, &mut st.v).map_err(&bad)?;
                continue;
            }
            for (prefix, dst) in [
                ("param", &mut *p.value),
                ("adam_m", &mut st.m[..]),
                ("adam_v", &mut st.v[..]),
            ] {
                let name = format!("{prefix}.{}", p.name);
                let src = state
                    .tensor(&name)
                    .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
                if src.len() != dst.len() {
                    return Err(bad(format!(
                        "tensor `{name}` has {} values, expected {}",
                        src.len(),
                        dst.len()
                    )));
                }
                dst.copy_from_slice(src);
            }
        }
        if !sae.threshold.is_empty() {
            let t = state
                .tensor("threshold")
                .ok_or_else(|| bad("tensor `threshold` is missing".into()))?;
            if t.len() != sae.threshold.len() {
                return Err(bad(format!(
                    "tensor `threshold` has {} values, expected {}",
                    t.len(),
                    sae.threshold.len()
                )));
            }
            sae.threshold.copy_from_slice(t);
        }
        let tsf = f32_pairs_to_u64s(state.tensor("tokens_since_fired").unwrap_or_default());
        if tsf.len() != cfg.sae.d_sae {
            return Err(bad(format!(
                "`tokens_since_fired` has {} entries, expected {}",
                tsf.len(),
                cfg.sae.d_sae
            )));
        }
        let rng = meta
            .rng
            .restore()
            .ok_or_else(|| bad("the RNG state cannot be read".into()))?;
        source.seek(&meta.cursor)?;

        let window = meta.window.clone();
        let metrics = if comm.is_root() {
            Some(MetricsWriter::open(&dir.join(METRICS_FILE), Some(step))?)
        } else {
            None
        };
        let dead = tsf.iter().map(|&t| t >= cfg.dead_after_tokens).collect();
        tracing::info!(step, tokens, dir = %dir.display(), "resuming");
        Ok(Self {
            grads: Gradients::zeros_like(&sae),
            ws: Workspace::default(),
            adam,
            rng,
            step,
            tokens,
            skipped_rows,
            scale,
            tokens_since_fired: tsf,
            dead,
            batch: vec![0.0; cfg.batch_size * cfg.sae.row_width()],
            out_dir: Some(dir.to_path_buf()),
            metrics,
            window,
            sae,
            cfg,
            comm,
            last_prefix_fve: Vec::new(),
            checkpoint_time: std::time::Duration::ZERO,
        })
    }

    /// The complete state as a [`TrainingState`].
    pub fn state(&self, cursor: crate::train::Cursor) -> TrainingState {
        let mut tensors = Vec::new();
        for ((name, value), st) in self.sae.params().into_iter().zip(&self.adam.moments) {
            tensors.push((format!("param.{name}"), value.to_vec()));
            tensors.push((format!("adam_m.{name}"), st.m.clone()));
            tensors.push((format!("adam_v.{name}"), st.v.clone()));
        }
        if !self.sae.threshold.is_empty() {
            tensors.push(("threshold".into(), self.sae.threshold.clone()));
        }
        tensors.push((
            "tokens_since_fired".into(),
            u64s_to_f32_pairs(&self.tokens_since_fired),
        ));
        let meta = StateMeta {
            adam_t: self.adam.t,
            config: self.cfg.clone(),
            cursor,
            format: STATE_FORMAT,
            rng: RngState::of(&self.rng),
            scale: self.scale,
            skipped_rows: self.skipped_rows,
            step: self.step,
            tokens: self.tokens,
            window: self.window.clone(),
            world_size: (self.comm.world_size() > 1).then_some(self.comm.world_size() as u64),
        };
        TrainingState { meta, tensors }
    }

    /// Writes the training state and the SAELens files (for raw activations) into the run directory.
    pub(crate) fn checkpoint(&self, cursor: crate::train::Cursor) -> Result<(), SaeError> {
        let Some(dir) = &self.out_dir else {
            return Ok(());
        };
        if !self.comm.is_root() {
            return Ok(());
        }
        self.state(cursor).save(dir)?;
        crate::saelens::save(&self.inference_sae(), dir)?;
        tracing::debug!(step = self.step, tokens = self.tokens, dir = %dir.display(), "checkpoint written");
        Ok(())
    }
}

/// JumpReLU checkpoints written before the threshold was trained directly hold `log θ` and its Adam
/// moments. `θ` is the stored `threshold`; the moments carry over through `∂L/∂log θ = θ ∂L/∂θ`
/// (`m/θ`, `v/θ²`: exact for a threshold that stood still over Adam's averaging window, close otherwise).
fn from_log_threshold(
    state: &TrainingState,
    theta: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
) -> std::result::Result<(), String> {
    let tensor = |name: &str| {
        let t = state
            .tensor(name)
            .ok_or_else(|| format!("tensor `param.threshold` is missing (and `{name}` too)"))?;
        if t.len() != theta.len() {
            return Err(format!(
                "tensor `{name}` has {} values, expected {}",
                t.len(),
                theta.len()
            ));
        }
        Ok(t)
    };
    let (stored, m_log, v_log) = (
        tensor("threshold")?,
        tensor("adam_m.log_threshold")?,
        tensor("adam_v.log_threshold")?,
    );
    tracing::warn!(
        "the checkpoint trains log θ (written by an older zephyra): continuing with θ itself, \
         Adam's moments converted"
    );
    for i in 0..theta.len() {
        let t = stored[i];
        if !(t > 0.0 && t.is_finite()) {
            return Err(format!("threshold[{i}] = {t} is not a positive number"));
        }
        theta[i] = t;
        m[i] = m_log[i] / t;
        v[i] = v_log[i] / (t * t);
    }
    Ok(())
}
