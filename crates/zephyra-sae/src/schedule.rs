//! Learning-rate and sparsity-coefficient schedules, as pure functions of the step number.
//!
//! Learning rate: linear warm-up from 0 over `warmup_steps`, then constant until `decay_start` (a fraction
//! of the run), then linear or cosine decay to `lr × final_fraction` at the last step. The sparsity
//! coefficient (L1 λ, L0 penalty) ramps linearly from 0 to its value over `sparsity_warmup_steps`.

/// How the learning rate decays after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Keep the peak learning rate to the end.
    Constant,
    /// Decrease linearly.
    Linear,
    /// Follow half a cosine.
    Cosine,
}

/// A learning-rate schedule over `total_steps` steps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f32,
    /// Steps of linear warm-up (0 = start at the peak).
    pub warmup_steps: u64,
    /// Decay shape.
    pub decay: Decay,
    /// Fraction of the run (0..=1) after which decay starts.
    pub decay_start: f32,
    /// Learning rate at the last step, as a fraction of the peak.
    pub final_fraction: f32,
    /// Length of the run in steps.
    pub total_steps: u64,
}

impl LrSchedule {
    /// Learning rate for step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let start = ((self.total_steps as f64) * self.decay_start as f64).round() as u64;
        let start = start.max(self.warmup_steps);
        if self.decay == Decay::Constant || step < start || self.total_steps <= start + 1 {
            return self.lr;
        }
        let progress = ((step - start) as f64 / (self.total_steps - 1 - start) as f64).min(1.0);
        let shape = match self.decay {
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Constant => 1.0,
        };
        let fin = self.final_fraction as f64;
        (self.lr as f64 * (fin + (1.0 - fin) * shape)) as f32
    }
}

/// The sparsity coefficient at `step`: `coeff × min(1, (step+1)/warmup_steps)`.
pub fn sparsity_at(coeff: f32, warmup_steps: u64, step: u64) -> f32 {
    if warmup_steps == 0 || step + 1 >= warmup_steps {
        coeff
    } else {
        coeff * (step + 1) as f32 / warmup_steps as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay_hits_the_end_points() {
        let s = LrSchedule {
            lr: 1.0,
            warmup_steps: 4,
            decay: Decay::Linear,
            decay_start: 0.5,
            final_fraction: 0.1,
            total_steps: 21,
        };
        assert_eq!(s.lr_at(0), 0.25);
        assert_eq!(s.lr_at(3), 1.0);
        assert_eq!(s.lr_at(10), 1.0);
        assert!((s.lr_at(20) - 0.1).abs() < 1e-6);
        // Decay starts at round(0.5 × 21) = 11 and ends at step 20: at 15, 4/9 of the way down,
        // 0.1 + 0.9 × 5/9 = 0.6.
        assert!((s.lr_at(15) - 0.6).abs() < 1e-6);
    }

    #[test]
    fn cosine_is_half_way_at_the_middle() {
        let s = LrSchedule {
            lr: 2.0,
            warmup_steps: 0,
            decay: Decay::Cosine,
            decay_start: 0.0,
            final_fraction: 0.0,
            total_steps: 11,
        };
        assert_eq!(s.lr_at(0), 2.0);
        assert!((s.lr_at(5) - 1.0).abs() < 1e-6);
        assert!(s.lr_at(10).abs() < 1e-6);
    }

    #[test]
    fn sparsity_ramps_linearly() {
        assert_eq!(sparsity_at(5.0, 10, 0), 0.5);
        assert_eq!(sparsity_at(5.0, 10, 9), 5.0);
        assert_eq!(sparsity_at(5.0, 0, 0), 5.0);
    }
}
