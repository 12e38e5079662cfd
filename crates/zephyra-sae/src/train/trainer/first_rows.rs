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
use crate::train::config::{BDecInit, NonFinitePolicy, TrainConfig};
use crate::train::source::ActivationSource;
use crate::SaeError;

/// The targets of the first rows read so far, and a reusable buffer to read into.
#[derive(Debug)]
pub(crate) struct InitRows {
    width: usize,
    d_out: usize,
    want: usize,
    n: usize,
    chunk: Vec<f32>,
    target: Vec<f32>,
}

impl InitRows {
    /// Nothing read yet, for `cfg`'s row width and `init_rows`.
    pub(crate) fn new(cfg: &TrainConfig) -> Self {
        let want = cfg.init_rows.max(1);
        let d_out = cfg.sae.d_out();
        Self {
            width: cfg.sae.row_width(),
            d_out,
            want,
            n: 0,
            chunk: Vec::new(),
            target: Vec::new(),
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
        }
        self.n += got;
        Ok(got == take && self.n < self.want)
    }

    /// Rows read.
    pub(crate) fn n_rows(&self) -> usize {
        self.n
    }

    /// The input scale and `b_dec` (in the scaled space) of `cfg` from the rows read.
    pub(crate) fn finish(self, cfg: &TrainConfig) -> Result<(f32, Vec<f32>), SaeError> {
        if self.n == 0 {
            return Err(SaeError::Training(
                "the activation source has no finite rows".into(),
            ));
        }
        let Self {
            mut target, d_out, ..
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
        Ok((scale, b_dec))
    }
}
