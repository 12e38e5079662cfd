//! The data-dependent initialisation of a new run: the input scale and `b_dec` from the first
//! `TrainConfig::init_rows` finite rows of the source (their targets: `y` of a transcoder's `[x | y]` rows,
//! the rows themselves for an SAE).
//!
//! The rows are read in chunks ([`InitRows::read`]) so that several dictionaries fed by one forward pass
//! read them in lockstep ([`MultiTrainer`](crate::train::MultiTrainer)): each harvested window then serves
//! every dictionary once, instead of every dictionary harvesting the first windows again. Chunked or not,
//! the rows are the same (the source is read in order), so the scale and `b_dec` are too.

use super::fill_batch;
use crate::init;
use crate::train::config::{BDecInit, NonFinitePolicy, ThresholdInit, TrainConfig};
use crate::train::source::ActivationSource;
use crate::SaeError;

/// The targets of the first rows read so far (and a transcoder's inputs when the thresholds start from
/// them), and a reusable buffer to read into.
#[derive(Debug)]
pub(crate) struct InitRows {
    width: usize,
    d_out: usize,
    want: usize,
    n: usize,
    chunk: Vec<f32>,
    target: Vec<f32>,
    /// A transcoder's inputs, kept only for [`ThresholdInit::TargetRate`] (an SAE's are its targets).
    inputs: Option<Vec<f32>>,
}

/// What the first rows give a new run.
#[derive(Debug)]
pub(crate) struct FirstRowsFit {
    /// The input scale.
    pub scale: f32,
    /// `b_dec` in the scaled space.
    pub b_dec: Vec<f32>,
    /// The scaled input rows, when the thresholds start from them ([`ThresholdInit::TargetRate`]).
    pub inputs: Option<Vec<f32>>,
}

impl InitRows {
    /// Nothing read yet, for `cfg`'s row width and `init_rows`.
    pub(crate) fn new(cfg: &TrainConfig) -> Self {
        let want = cfg.init_rows.max(1);
        let d_out = cfg.sae.d_out();
        let width = cfg.sae.row_width();
        let keeps_inputs = width != d_out && needs_inputs(cfg);
        Self {
            width,
            d_out,
            want,
            n: 0,
            chunk: Vec::new(),
            target: Vec::new(),
            inputs: keeps_inputs.then(Vec::new),
        }
    }

    /// Reads up to `rows` more finite rows (fewer when the source runs out); returns whether more are
    /// wanted (false once `init_rows` are read or the source is exhausted).
    pub(crate) fn read(
        &mut self,
        source: &mut dyn ActivationSource,
        rows: usize,
    ) -> Result<bool, SaeError> {
        let take = rows.max(1).min(self.want - self.n);
        if take == 0 {
            return Ok(false);
        }
        self.chunk.resize(take * self.width, 0.0);
        let (got, _) = fill_batch(
            source,
            &mut self.chunk,
            self.width,
            NonFinitePolicy::Skip,
            0,
        )?;
        let skip = self.width - self.d_out;
        for row in self.chunk[..got * self.width].chunks_exact(self.width) {
            self.target.extend_from_slice(&row[skip..]);
            if let Some(inputs) = &mut self.inputs {
                inputs.extend_from_slice(&row[..skip]);
            }
        }
        self.n += got;
        Ok(got == take && self.n < self.want)
    }

    /// Rows read.
    pub(crate) fn n_rows(&self) -> usize {
        self.n
    }

    /// The input scale, `b_dec` (in the scaled space) and, when `cfg` needs them, the scaled inputs.
    pub(crate) fn finish(self, cfg: &TrainConfig) -> Result<FirstRowsFit, SaeError> {
        if self.n == 0 {
            return Err(SaeError::Training(
                "the activation source has no finite rows".into(),
            ));
        }
        let Self {
            mut target,
            d_out,
            inputs,
            ..
        } = self;
        // One scale multiplies inputs and targets alike.
        let scale = if cfg.normalize_activations {
            init::input_scale(&target, d_out)?
        } else {
            1.0
        };
        target.iter_mut().for_each(|v| *v *= scale);
        let b_dec = match cfg.b_dec_init {
            BDecInit::GeometricMedian => init::geometric_median(&target, d_out, 100),
            BDecInit::Mean => init::mean(&target, d_out),
            BDecInit::Zeros => vec![0.0; d_out],
        };
        let inputs = match inputs {
            Some(mut x) => {
                x.iter_mut().for_each(|v| *v *= scale);
                Some(x)
            }
            None if needs_inputs(cfg) => Some(target),
            None => None,
        };
        Ok(FirstRowsFit {
            scale,
            b_dec,
            inputs,
        })
    }
}

/// Whether the run's initialisation reads the first rows' inputs (JumpReLU thresholds at a target rate).
fn needs_inputs(cfg: &TrainConfig) -> bool {
    cfg.sae.architecture == crate::Architecture::JumpRelu
        && cfg.jumprelu_init_threshold == ThresholdInit::TargetRate
}
