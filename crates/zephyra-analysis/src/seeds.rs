//! Figures over several SAEs trained with different seeds: the mean and its two-sided 95 % confidence
//! interval from Student's t (`mean ± t₀.₉₇₅(n−1)·s/√n`, `s` the sample standard deviation), for any
//! evaluation whose report can name its figures ([`NamedFigures`]): `eval --seed-runs` with `--synth`,
//! `--absorption` or the standard figures.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::file_io::write_json_pretty;

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

/// A report whose figures can be set side by side with other seeds' and averaged.
pub trait NamedFigures {
    /// The figures as (name, value), the same names in the same order for every report of a kind; an
    /// absent figure is NaN.
    fn named(&self) -> Vec<(&'static str, f64)>;
    /// What was evaluated, in a few words (the SAE directory).
    fn label(&self) -> String;
}

/// Several SAEs of one recipe evaluated alike: each run's report and every figure's mean ± 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRuns<R> {
    /// One report per SAE, in the order given (`--sae`, then `--seed-runs`).
    pub runs: Vec<R>,
    /// Mean ± 95 % interval (Student's t) of every figure over the runs.
    pub intervals: Vec<Interval>,
}

impl<R: NamedFigures + Serialize> SeedRuns<R> {
    /// The intervals of `runs` (at least one).
    pub fn new(runs: Vec<R>) -> Self {
        let named: Vec<_> = runs.iter().map(NamedFigures::named).collect();
        let intervals = aggregate(&named);
        Self { runs, intervals }
    }

    /// Writes the runs and intervals as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json_pretty(path, self)
    }

    /// One row per figure, one column per run, then the interval; the runs' labels below.
    pub fn table(&self) -> String {
        let named: Vec<_> = self.runs.iter().map(NamedFigures::named).collect();
        let labels: Vec<String> = self.runs.iter().map(NamedFigures::label).collect();
        figure_table(&labels, &named, &self.intervals)
    }
}

/// The side-by-side table of several runs' figures (`runs[i]` = run `i`'s named figures) and their
/// intervals (empty: no interval column); NaN prints as `n/a`.
pub fn figure_table(
    labels: &[String],
    runs: &[Vec<(&'static str, f64)>],
    intervals: &[Interval],
) -> String {
    let cell = |v: f64| {
        if v.is_nan() {
            "n/a".to_string()
        } else {
            format!("{v:.4}")
        }
    };
    let width = runs
        .first()
        .map_or(6, |r| r.iter().map(|(n, _)| n.len()).max().unwrap_or(6))
        .max(6);
    let mut out = format!("{:<width$}", "figure");
    for i in 0..runs.len() {
        let _ = write!(out, " {:>10}", format!("sae{}", i + 1));
    }
    if !intervals.is_empty() {
        let _ = write!(out, "  mean ± 95 % (t, n={})", runs.len());
    }
    out.push('\n');
    if let Some(first) = runs.first() {
        for (k, (name, _)) in first.iter().enumerate() {
            let _ = write!(out, "{name:<width$}");
            for r in runs {
                let _ = write!(out, " {:>10}", r.get(k).map_or("n/a".into(), |x| cell(x.1)));
            }
            if let Some(i) = intervals.get(k) {
                let shown = if i.mean.is_nan() {
                    "n/a".into()
                } else {
                    i.display()
                };
                let _ = write!(out, "  {shown}");
            }
            out.push('\n');
        }
    }
    for (i, label) in labels.iter().enumerate() {
        let _ = writeln!(out, "sae{}: {label}", i + 1);
    }
    out
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

    struct Run(f64, f64);
    impl NamedFigures for Run {
        fn named(&self) -> Vec<(&'static str, f64)> {
            vec![("fve", self.0), ("absorption", self.1)]
        }
        fn label(&self) -> String {
            format!("run {}", self.0)
        }
    }
    impl Serialize for Run {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            (self.0, self.1).serialize(s)
        }
    }

    #[test]
    fn seed_runs_average_each_figure_and_print_every_run() {
        // fve 0.7, 0.8, 0.9: mean 0.8, s 0.1, half-width 4.302653·0.1/√3 = 0.248414; absorption NaN in
        // one run: its mean is n/a, the other runs still print.
        let runs = SeedRuns::new(vec![Run(0.7, 0.1), Run(0.8, f64::NAN), Run(0.9, 0.3)]);
        assert!((runs.intervals[0].mean - 0.8).abs() < 1e-12);
        assert!((runs.intervals[0].half_width.unwrap() - 0.248_414).abs() < 1e-6);
        assert!(runs.intervals[1].mean.is_nan());
        let table = runs.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "figure           sae1       sae2       sae3  mean ± 95 % (t, n=3)"
        );
        assert_eq!(
            lines[1],
            "fve            0.7000     0.8000     0.9000  0.8000 ± 0.2484"
        );
        assert_eq!(lines[2], "absorption     0.1000        n/a     0.3000  n/a");
        assert_eq!(lines[3], "sae1: run 0.7");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seeds.json");
        runs.write(&path).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["runs"][2][1], 0.3);
        assert_eq!(v["intervals"][0]["name"], "fve");
    }

    #[test]
    fn aggregate_keeps_names_and_order() {
        let runs = vec![vec![("a", 1.0), ("b", 10.0)], vec![("a", 3.0), ("b", 20.0)]];
        let out = aggregate(&runs);
        assert_eq!(out[0].name, "a");
        assert!((out[0].mean - 2.0).abs() < 1e-12 && (out[1].mean - 15.0).abs() < 1e-12);
    }
}
