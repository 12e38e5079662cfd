//! Adam (Kingma & Ba 2015, <https://arxiv.org/abs/1412.6980>) with decoupled weight decay (Loshchilov &
//! Hutter 2019, "AdamW"), plus gradient clipping by global norm.
//!
//! Update for a parameter `p` with gradient `g` at step `t` (1-based), learning rate `lr`:
//! `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`, `p ← p − lr (m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + ε) − lr wd p`.
//! The update is element-wise, so splitting it across threads cannot change the result.

use rayon::prelude::*;

use crate::SaeError;

/// Adam's hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay per unit learning rate (0 = none).
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Moments of one parameter tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Parameter name (as in [`crate::Sae::params_mut`]).
    pub name: String,
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

/// Adam state for a list of parameter tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// Hyper-parameters.
    pub config: AdamConfig,
    /// Number of updates applied so far.
    pub t: u64,
    /// One entry per parameter tensor, in the order of the parameters.
    pub moments: Vec<Moments>,
}

const CHUNK: usize = 1 << 14;

impl Adam {
    /// Zeroed state for tensors with these names and lengths.
    pub fn new(config: AdamConfig, shapes: &[(String, usize)]) -> Self {
        let moments = shapes
            .iter()
            .map(|(name, len)| Moments {
                name: name.clone(),
                m: vec![0.0; *len],
                v: vec![0.0; *len],
            })
            .collect();
        Self {
            config,
            t: 0,
            moments,
        }
    }

    /// Advances the step counter; call once per optimisation step, before the [`update`](Self::update)s.
    pub fn begin_step(&mut self) {
        self.t += 1;
    }

    /// Applies one Adam update to tensor number `index` (`param` and `grad` of equal length).
    pub fn update(
        &mut self,
        index: usize,
        param: &mut [f32],
        grad: &[f32],
        lr: f32,
    ) -> Result<(), SaeError> {
        let cfg = self.config;
        let st = self
            .moments
            .get_mut(index)
            .ok_or_else(|| SaeError::Optimizer(format!("no Adam state for tensor #{index}")))?;
        if st.m.len() != param.len() || grad.len() != param.len() {
            return Err(SaeError::Optimizer(format!(
                "tensor `{}`: parameter has {} values, gradient {}, Adam state {}",
                st.name,
                param.len(),
                grad.len(),
                st.m.len()
            )));
        }
        let t = self.t.max(1) as i32;
        let bc1 = 1.0 - (cfg.beta1 as f64).powi(t);
        let bc2 = 1.0 - (cfg.beta2 as f64).powi(t);
        // Folded constants: p -= step * m / (sqrt(v) * inv_sqrt_bc2 + eps).
        let step = (lr as f64 / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        let decay = 1.0 - lr * cfg.weight_decay;
        let (b1, b2, eps) = (cfg.beta1, cfg.beta2, cfg.eps);
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(st.m.par_chunks_mut(CHUNK).zip(st.v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for i in 0..p.len() {
                    let gi = g[i];
                    let mi = b1 * m[i] + (1.0 - b1) * gi;
                    let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
                    m[i] = mi;
                    v[i] = vi;
                    p[i] = p[i] * decay - step * mi / (vi.sqrt() * inv_sqrt_bc2 + eps);
                }
            });
        Ok(())
    }

    /// Zeroes the moments of elements `range` of tensor `index` (used when dead latents are resampled).
    pub fn reset(&mut self, index: usize, range: std::ops::Range<usize>) {
        if let Some(st) = self.moments.get_mut(index) {
            let end = range.end.min(st.m.len());
            let start = range.start.min(end);
            st.m[start..end].fill(0.0);
            st.v[start..end].fill(0.0);
        }
    }
}

/// Global L2 norm of several gradient tensors, summed in a fixed order (deterministic for any thread count).
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    let mut total = 0.0f64;
    for g in grads {
        // Eight f32 lanes per chunk (vectorisable), chunks summed in f64 in order.
        let partial: Vec<f64> = g
            .par_chunks(CHUNK)
            .map(|c| {
                let mut lanes = [0.0f32; 8];
                let mut it = c.chunks_exact(8);
                for v in &mut it {
                    for (l, x) in lanes.iter_mut().zip(v) {
                        *l += x * x;
                    }
                }
                let rest: f64 = it
                    .remainder()
                    .iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum();
                lanes.iter().map(|&l| l as f64).sum::<f64>() + rest
            })
            .collect();
        total += partial.iter().sum::<f64>();
    }
    total.sqrt()
}

/// Scales all gradients so that their global norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [&mut [f32]], max_norm: f64) -> f64 {
    let norm = global_norm(&grads.iter().map(|g| &**g).collect::<Vec<_>>());
    if norm > max_norm && norm.is_finite() && max_norm > 0.0 {
        let s = (max_norm / norm) as f32;
        for g in grads.iter_mut() {
            g.par_chunks_mut(CHUNK)
                .for_each(|c| c.iter_mut().for_each(|x| *x *= s));
        }
    }
    norm
}
