//! Synthetic activations with a known ground truth, for measuring whether an SAE learns the true features.
//!
//! The design is SynthSAEBench's (Chanin et al. 2025; SAELens 6.54 `sae_lens.synthetic`, MIT), written
//! anew: `n_features` unit directions in `d` dimensions (in superposition when `n_features > d`, exactly
//! orthonormal with `orthogonal`), Zipfian firing probabilities, an optional [`Hierarchy`] (children fire
//! only with their parent, an exclusive parent's children one at a time), optional low-rank correlated
//! firing (a Gaussian copula: each feature keeps its marginal probability), magnitudes
//! `relu(mean + std·N(0,1))`, a fixed bias and isotropic Gaussian noise:
//!
//! `x = Σ_i a_i·f_i + b + σ·ε`.
//!
//! Everything is a function of the [`SynthConfig`]: rows come in blocks of [`BLOCK_ROWS`], each drawn from
//! its own ChaCha8 stream keyed by (seed, stream, block), so any block can be regenerated alone and the
//! output does not depend on threads or chunking. [`TRAIN_STREAM`] makes the training rows,
//! [`EVAL_STREAM`] held-out rows.

pub mod files;
pub mod hierarchy;
pub mod random;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use hierarchy::{Hierarchy, HierarchyConfig, Parent};

use crate::error::{Result, SaeError};

/// Rows per independently seeded block.
pub const BLOCK_ROWS: usize = 1024;
/// The stream of the training rows.
pub const TRAIN_STREAM: u64 = 0;
/// The stream of held-out evaluation rows.
pub const EVAL_STREAM: u64 = 1;

/// Everything that defines a synthetic data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// True features.
    pub n_features: usize,
    /// Row width.
    pub d: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Zipf exponent of the firing probabilities.
    pub zipf_exponent: f64,
    /// Firing probability of the most frequent feature.
    pub max_prob: f64,
    /// Firing probability of the least frequent feature.
    pub min_prob: f64,
    /// Mean magnitude of a firing feature.
    pub magnitude_mean: f64,
    /// Standard deviation of the magnitude.
    pub magnitude_std: f64,
    /// The hierarchy, if any.
    pub hierarchy: Option<HierarchyConfig>,
    /// Raise a child's conditional firing probability to `p_child / p_parent` so that its marginal stays
    /// near its Zipf value (exclusivity still lowers it).
    pub compensate: bool,
    /// Rank of the correlation factors (0: features fire independently).
    pub correlation_rank: usize,
    /// Share of each feature's latent variance carried by the shared factors, in [0, 1).
    pub correlation_strength: f64,
    /// Standard deviation of the per-dimension Gaussian noise.
    pub noise_std: f64,
    /// Norm of the fixed bias added to every row.
    pub bias_norm: f64,
    /// Exactly orthonormal directions (needs `n_features ≤ d`).
    pub orthogonal: bool,
}

impl Default for SynthConfig {
    /// The SynthSAEBench-style set of issue 17: 4,096 features in 256 dimensions, Zipfian, no hierarchy.
    fn default() -> Self {
        Self {
            n_features: 4096,
            d: 256,
            seed: 0,
            zipf_exponent: 1.0,
            max_prob: 0.3,
            min_prob: 0.01,
            magnitude_mean: 1.0,
            magnitude_std: 0.1,
            hierarchy: None,
            compensate: true,
            correlation_rank: 0,
            correlation_strength: 0.0,
            noise_std: 0.01,
            bias_norm: 1.0,
            orthogonal: false,
        }
    }
}

impl SynthConfig {
    /// Checks every range.
    pub fn validate(&self) -> Result<()> {
        if self.n_features == 0 || self.d == 0 {
            return Err(SaeError::invalid(
                "--features/--d",
                format!("{}/{}", self.n_features, self.d),
                "both must be at least 1",
            ));
        }
        if self.orthogonal && self.n_features > self.d {
            return Err(SaeError::invalid(
                "--orthogonal",
                format!("{} features in {} dimensions", self.n_features, self.d),
                "orthonormal directions need --features ≤ --d",
            ));
        }
        let ok_prob = |p: f64| p > 0.0 && p <= 1.0;
        if !(ok_prob(self.min_prob) && ok_prob(self.max_prob) && self.min_prob <= self.max_prob) {
            return Err(SaeError::invalid(
                "--min-prob/--max-prob",
                format!("{}/{}", self.min_prob, self.max_prob),
                "need 0 < min ≤ max ≤ 1",
            ));
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent > 0.0) {
            return Err(SaeError::invalid(
                "--zipf-exponent",
                self.zipf_exponent,
                "must be > 0",
            ));
        }
        for (flag, v) in [
            ("--magnitude-mean", self.magnitude_mean),
            ("--magnitude-std", self.magnitude_std),
            ("--noise", self.noise_std),
            ("--bias-norm", self.bias_norm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SaeError::invalid(flag, v, "must be finite and ≥ 0"));
            }
        }
        if self.magnitude_mean <= 0.0 {
            return Err(SaeError::invalid("--magnitude-mean", 0, "must be > 0"));
        }
        if !(0.0..1.0).contains(&self.correlation_strength) {
            return Err(SaeError::invalid(
                "--correlation",
                self.correlation_strength,
                "must lie in [0, 1)",
            ));
        }
        if let Some(h) = &self.hierarchy {
            h.validate()?;
        }
        Ok(())
    }
}

/// One block of rows and the true feature values behind them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    /// `[n, d]` row-major activations.
    pub acts: Vec<f32>,
    /// Row `r`'s firing features are `feature[row_start[r]..row_start[r + 1]]` (ascending).
    pub row_start: Vec<u32>,
    /// Firing feature indices.
    pub feature: Vec<u32>,
    /// Their magnitudes.
    pub value: Vec<f32>,
}

impl Block {
    /// Rows held.
    pub fn n_rows(&self) -> usize {
        self.row_start.len().saturating_sub(1)
    }

    /// The features firing in row `r` and their values.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_start[r] as usize, self.row_start[r + 1] as usize);
        (&self.feature[a..b], &self.value[a..b])
    }
}

/// The generator: directions, probabilities, hierarchy, correlation factors and bias made from a config.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthModel {
    /// The configuration.
    pub cfg: SynthConfig,
    /// `[n_features, d]` unit rows: the true features.
    pub directions: Vec<f32>,
    /// Marginal firing probability each feature was given (before the hierarchy).
    pub probabilities: Vec<f64>,
    /// The hierarchy (empty without one).
    pub hierarchy: Hierarchy,
    /// `[d]` bias.
    pub bias: Vec<f32>,
    /// Per feature: the probability it fires when its parent does (or at all, for a root).
    fire_prob: Vec<f64>,
    /// `[n_features, rank]` factor loadings.
    loadings: Vec<f64>,
}

fn stream_rng(seed: u64, stream: u64, block: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    key[16..24].copy_from_slice(&block.to_le_bytes());
    key[24..].copy_from_slice(b"zsynth01");
    ChaCha8Rng::from_seed(key)
}

/// Streams of the model's own parameters (far from any block index).
const PARAM_STREAM: u64 = u64::MAX;

impl SynthModel {
    /// Builds the generator.
    pub fn new(cfg: SynthConfig) -> Result<Self> {
        cfg.validate()?;
        let (n, d) = (cfg.n_features, cfg.d);
        let mut rng = stream_rng(cfg.seed, PARAM_STREAM, 0);
        let directions = unit_directions(n, d, cfg.orthogonal, &mut rng);
        let hierarchy = match &cfg.hierarchy {
            Some(h) => Hierarchy::generate(h, n, &mut stream_rng(cfg.seed, PARAM_STREAM, 1)),
            None => Hierarchy::default(),
        };
        let probabilities =
            random::zipf_probabilities(n, cfg.zipf_exponent, cfg.min_prob, cfg.max_prob);
        let mut fire_prob = probabilities.clone();
        if cfg.compensate {
            for (c, parent) in hierarchy.parent_of(n).into_iter().enumerate() {
                if let Some(p) = parent {
                    fire_prob[c] = (probabilities[c] / probabilities[p as usize]).min(1.0);
                }
            }
        }
        let mut rng = stream_rng(cfg.seed, PARAM_STREAM, 2);
        let rank = cfg.correlation_rank;
        let loadings: Vec<f64> = if rank == 0 || cfg.correlation_strength == 0.0 {
            Vec::new()
        } else {
            // Each feature's loading vector: a random direction of squared norm `strength`.
            let mut l: Vec<f64> = (0..n * rank).map(|_| random::normal(&mut rng)).collect();
            for row in l.chunks_exact_mut(rank) {
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                let s = cfg.correlation_strength.sqrt() / norm;
                row.iter_mut().for_each(|v| *v *= s);
            }
            l
        };
        let mut rng = stream_rng(cfg.seed, PARAM_STREAM, 3);
        let mut bias: Vec<f32> = (0..d).map(|_| random::normal(&mut rng) as f32).collect();
        normalize(&mut bias, cfg.bias_norm as f32);
        Ok(Self {
            cfg,
            directions,
            probabilities,
            hierarchy,
            bias,
            fire_prob,
            loadings,
        })
    }

    /// Generates block `block` of `stream`: [`BLOCK_ROWS`] rows.
    pub fn block(&self, stream: u64, block: u64) -> Block {
        let (n, d) = (self.cfg.n_features, self.cfg.d);
        let mut rng = stream_rng(self.cfg.seed, stream, block);
        let mut out = Block {
            acts: Vec::with_capacity(BLOCK_ROWS * d),
            row_start: vec![0],
            ..Block::default()
        };
        let mut values = vec![0f32; n];
        let mut scratch = Vec::new();
        let rank = self.cfg.correlation_rank;
        let mut factors = vec![0f64; rank];
        // Independent firing compares a u32 draw with p·2³².
        let thresholds: Vec<u64> = self
            .fire_prob
            .iter()
            .map(|&p| (p * 4_294_967_296.0) as u64)
            .collect();
        let quantiles: Vec<f64> = if self.loadings.is_empty() {
            Vec::new()
        } else {
            self.fire_prob
                .iter()
                .map(|&p| random::normal_quantile(p))
                .collect()
        };
        let residual = (1.0 - self.cfg.correlation_strength).sqrt();
        let (mean, std) = (self.cfg.magnitude_mean, self.cfg.magnitude_std);
        for _ in 0..BLOCK_ROWS {
            if quantiles.is_empty() {
                for (v, &t) in values.iter_mut().zip(&thresholds) {
                    *v = if u64::from(rng.next_u32()) < t {
                        1.0
                    } else {
                        0.0
                    };
                }
            } else {
                factors
                    .iter_mut()
                    .for_each(|f| *f = random::normal(&mut rng));
                for (i, v) in values.iter_mut().enumerate() {
                    let l = &self.loadings[i * rank..(i + 1) * rank];
                    let z = l.iter().zip(&factors).map(|(a, b)| a * b).sum::<f64>()
                        + residual * random::normal(&mut rng);
                    *v = if z < quantiles[i] { 1.0 } else { 0.0 };
                }
            }
            for v in values.iter_mut().filter(|v| **v > 0.0) {
                let m = if std > 0.0 {
                    mean + std * random::normal(&mut rng)
                } else {
                    mean
                };
                *v = m.max(0.0) as f32;
            }
            self.hierarchy.apply(&mut values, &mut rng, &mut scratch);
            let start = out.acts.len();
            out.acts.extend_from_slice(&self.bias);
            let row = &mut out.acts[start..];
            for (i, &v) in values.iter().enumerate().filter(|(_, v)| **v > 0.0) {
                let dir = &self.directions[i * d..(i + 1) * d];
                row.iter_mut().zip(dir).for_each(|(x, &f)| *x += v * f);
                out.feature.push(i as u32);
                out.value.push(v);
            }
            if self.cfg.noise_std > 0.0 {
                for x in row.iter_mut() {
                    *x += (self.cfg.noise_std * random::normal(&mut rng)) as f32;
                }
            }
            out.row_start.push(out.feature.len() as u32);
        }
        out
    }
}

fn normalize(v: &mut [f32], to: f32) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x *= to / norm);
    }
}

/// `n` unit rows of width `d`: Gaussian directions, or (modified Gram–Schmidt, in f64) orthonormal ones.
fn unit_directions<R: Rng + ?Sized>(n: usize, d: usize, orthogonal: bool, rng: &mut R) -> Vec<f32> {
    let mut m: Vec<f64> = (0..n * d).map(|_| random::normal(rng)).collect();
    for i in 0..n {
        if orthogonal {
            let (done, rest) = m.split_at_mut(i * d);
            let row = &mut rest[..d];
            for prev in done.chunks_exact(d) {
                let dot: f64 = prev.iter().zip(row.iter()).map(|(a, b)| a * b).sum();
                row.iter_mut().zip(prev).for_each(|(r, p)| *r -= dot * p);
            }
        }
        let row = &mut m[i * d..(i + 1) * d];
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    m.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests;
