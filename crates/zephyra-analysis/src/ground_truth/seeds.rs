//! Figures over several SAEs trained with different seeds: the mean and its two-sided 95 % confidence
//! interval from Student's t (`mean ± t₀.₉₇₅(n−1)·s/√n`, `s` the sample standard deviation).

use serde::{Deserialize, Serialize};

/// The mean of one figure over seeds and its 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The figure's name.
    pub name: String,
    /// Seeds.
    pub n: usize,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation (`None` for one seed).
    pub std: Option<f64>,
    /// Half-width of the 95 % interval (`None` for one seed).
    pub half_width: Option<f64>,
}

/// t₀.₉₇₅ for 1..=30 degrees of freedom (standard tables).
const T_975: [f64; 30] = [
    12.706_205, 4.302_653, 3.182_446, 2.776_445, 2.570_582, 2.446_912, 2.364_624, 2.306_004,
    2.262_157, 2.228_139, 2.200_985, 2.178_813, 2.160_369, 2.144_787, 2.131_450, 2.119_905,
    2.109_816, 2.100_922, 2.093_024, 2.085_963, 2.079_614, 2.073_873, 2.068_658, 2.063_899,
    2.059_539, 2.055_529, 2.051_831, 2.048_407, 2.045_230, 2.042_272,
];

/// The 0.975 quantile of Student's t with `df ≥ 1` degrees of freedom: the table up to 30, then the
/// Cornish–Fisher expansion around the normal quantile (error < 1e-4 there).
pub fn t_975(df: usize) -> f64 {
    if (1..=30).contains(&df) {
        return T_975[df - 1];
    }
    let z: f64 = 1.959_963_985;
    let v = df.max(1) as f64;
    z + (z.powi(3) + z) / (4.0 * v)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * v.powi(3))
}

impl Interval {
    /// The interval of `values` (one per seed; at least one).
    pub fn of(name: &str, values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let (std, half_width) = if n >= 2 {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let s = var.sqrt();
            (Some(s), Some(t_975(n - 1) * s / (n as f64).sqrt()))
        } else {
            (None, None)
        };
        Self {
            name: name.to_string(),
            n,
            mean,
            std,
            half_width,
        }
    }

    /// `0.4123 ± 0.0100`, or the mean alone for one seed.
    pub fn display(&self) -> String {
        match self.half_width {
            Some(h) => format!("{:.4} ± {:.4}", self.mean, h),
            None => format!("{:.4}", self.mean),
        }
    }
}

/// Per figure name, the interval over the runs; every run lists the same names in the same order.
pub fn aggregate(runs: &[Vec<(&'static str, f64)>]) -> Vec<Interval> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.get(i).map(|x| x.1)).collect();
            Interval::of(name, &values)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_seeds_by_hand() {
        // 1, 2, 3: mean 2, s = 1, half-width 4.302653 / √3 = 2.484138.
        let i = Interval::of("mcc", &[1.0, 2.0, 3.0]);
        assert_eq!(i.n, 3);
        assert!((i.mean - 2.0).abs() < 1e-12);
        assert!((i.std.unwrap() - 1.0).abs() < 1e-12);
        assert!((i.half_width.unwrap() - 2.484_138).abs() < 1e-6);
        assert_eq!(i.display(), "2.0000 ± 2.4841");
    }

    #[test]
    fn two_and_one_seed() {
        // 0.40, 0.44: mean 0.42, s = 0.04/√2 = 0.028284, half-width 12.706205·0.028284/√2 = 0.254124.
        let i = Interval::of("x", &[0.40, 0.44]);
        assert!((i.half_width.unwrap() - 0.254_124).abs() < 1e-6);
        let one = Interval::of("x", &[0.5]);
        assert_eq!(
            (one.std, one.half_width, one.display().as_str()),
            (None, None, "0.5000")
        );
    }

    #[test]
    fn t_quantiles_join_smoothly() {
        // Tables: t(40) = 2.021075, t(60) = 2.000298, t(120) = 1.979930.
        for (df, t) in [(40, 2.021_075), (60, 2.000_298), (120, 1.979_930)] {
            assert!((t_975(df) - t).abs() < 1e-4, "{df}: {}", t_975(df));
        }
    }

    #[test]
    fn aggregate_keeps_names_and_order() {
        let runs = vec![vec![("a", 1.0), ("b", 10.0)], vec![("a", 3.0), ("b", 20.0)]];
        let out = aggregate(&runs);
        assert_eq!(out[0].name, "a");
        assert!((out[0].mean - 2.0).abs() < 1e-12 && (out[1].mean - 15.0).abs() < 1e-12);
    }
}
