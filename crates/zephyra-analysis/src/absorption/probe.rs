//! Logistic-regression probes, written out by hand.
//!
//! - [`train_probe`]: one-vs-rest probes for many classes at once (SAEBench's `train_multi_probe`): binary
//!   cross-entropy with logits, each class's positives weighted by its negatives/positives ratio, averaged
//!   over rows and classes; mini-batch Adam (β = 0.9, 0.999) with an exponential learning-rate decay from
//!   `lr` to `end_lr` over the epochs; L2 weight decay added to the gradient (PyTorch's `Adam`
//!   `weight_decay`) and an optional L1 penalty `l1 · mean_c Σ_j |w_cj|` (the k-sparse probe's). Rows may be
//!   dense (activations) or sparse (SAE codes). Weights start at zero; the row order of each epoch comes from
//!   a seeded ChaCha stream, so a seed gives the same probe.
//! - [`fit_logistic`]: a small binary probe solved to convergence by Newton's method (the k-sparse probes:
//!   `k ≤ 10` features), with balanced class weights and the penalty `½‖w‖²` on the weights (not the bias) —
//!   scikit-learn's `LogisticRegression(class_weight="balanced")` at `C = 1`.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{AnalysisError, Result};

/// Rows of features: dense `[n, d]` or sparse `(index, value)` lists.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows<'a> {
    /// Row-major `[n, d]`.
    Dense {
        /// The values.
        x: &'a [f32],
        /// Row width.
        d: usize,
    },
    /// Each row's non-zero `(feature, value)` pairs; `d` features in all.
    Sparse {
        /// The rows.
        rows: &'a [Vec<(u32, f32)>],
        /// Number of features.
        d: usize,
    },
}

impl Rows<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Dense { x, d } => x.len() / (*d).max(1),
            Rows::Sparse { rows, .. } => rows.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of features.
    pub fn width(&self) -> usize {
        match self {
            Rows::Dense { d, .. } | Rows::Sparse { d, .. } => *d,
        }
    }

    /// Calls `f(feature, value)` for each (non-zero) feature of row `i`.
    fn for_each(&self, i: usize, mut f: impl FnMut(usize, f64)) {
        match self {
            Rows::Dense { x, d } => {
                for (j, &v) in x[i * d..(i + 1) * d].iter().enumerate() {
                    f(j, f64::from(v));
                }
            }
            Rows::Sparse { rows, .. } => {
                for &(j, v) in &rows[i] {
                    f(j as usize, f64::from(v));
                }
            }
        }
    }
}

/// Settings of [`train_probe`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeTraining {
    /// Passes over the rows.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// First learning rate.
    pub lr: f64,
    /// Learning rate of the last epoch (exponential decay in between).
    pub end_lr: f64,
    /// L2 weight decay (added to the gradient).
    pub weight_decay: f64,
    /// L1 coefficient on the weights (0: none).
    pub l1: f64,
    /// Seed of the row order.
    pub seed: u64,
}

impl ProbeTraining {
    /// SAEBench's letter probe on activations: 50 epochs of 64 rows, lr 1e-2 → 1e-5, weight decay 1e-4.
    pub fn letter_probe(seed: u64) -> Self {
        Self {
            epochs: 50,
            batch_size: 64,
            lr: 1e-2,
            end_lr: 1e-5,
            weight_decay: 1e-4,
            l1: 0.0,
            seed,
        }
    }

    /// SAEBench's L1 probe on SAE codes that ranks latents: 50 epochs of 4096 rows, L1 0.01, decay 1e-6.
    pub fn sparse_latent_probe(seed: u64) -> Self {
        Self {
            epochs: 50,
            batch_size: 4096,
            lr: 1e-2,
            end_lr: 1e-5,
            weight_decay: 1e-6,
            l1: 0.01,
            seed,
        }
    }
}

/// One-vs-rest linear probes: class `c` scores `w_c · x + b_c` (positive: predicted).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe {
    /// Input width.
    pub d: usize,
    /// Weights `[n_classes, d]`.
    pub weights: Vec<f64>,
    /// Biases `[n_classes]`.
    pub bias: Vec<f64>,
}

impl LinearProbe {
    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.bias.len()
    }

    /// Class `c`'s weight vector.
    pub fn weight(&self, c: usize) -> &[f64] {
        &self.weights[c * self.d..(c + 1) * self.d]
    }

    /// Every class's score of row `i` of `rows`.
    pub fn scores(&self, rows: &Rows<'_>, i: usize) -> Vec<f64> {
        let mut z = self.bias.clone();
        rows.for_each(i, |j, v| {
            for (c, zc) in z.iter_mut().enumerate() {
                *zc += self.weights[c * self.d + j] * v;
            }
        });
        z
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Trains one probe per class on `rows` labelled `labels` (each `< n_classes`).
pub fn train_probe(
    rows: &Rows<'_>,
    labels: &[usize],
    n_classes: usize,
    opts: &ProbeTraining,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LinearProbe> {
    let (n, d) = (rows.len(), rows.width());
    if n == 0 || n_classes == 0 || opts.epochs == 0 || opts.batch_size == 0 {
        return Err(AnalysisError::InvalidArgument(format!(
            "a probe needs rows, classes, epochs and a batch size (got {n} rows, {n_classes} classes, {} \
             epochs, batch {})",
            opts.epochs, opts.batch_size
        )));
    }
    if labels.len() != n {
        return Err(AnalysisError::ShapeMismatch {
            what: "probe labels",
            expected: n,
            got: labels.len(),
        });
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= n_classes) {
        return Err(AnalysisError::InvalidArgument(format!(
            "probe label {bad} is not below the {n_classes} classes"
        )));
    }
    // Positives of class c weigh (negatives / positives) of c, as PyTorch's `pos_weight`.
    let mut n_pos = vec![0usize; n_classes];
    for &l in labels {
        n_pos[l] += 1;
    }
    let pos_weight: Vec<f64> = n_pos
        .iter()
        .map(|&p| {
            if p == 0 {
                1.0
            } else {
                (n - p) as f64 / p as f64
            }
        })
        .collect();
    let n_params = n_classes * (d + 1);
    let mut probe = LinearProbe {
        d,
        weights: vec![0.0; n_classes * d],
        bias: vec![0.0; n_classes],
    };
    let (mut m, mut v) = (vec![0.0; n_params], vec![0.0; n_params]);
    let mut grad = vec![0.0; n_params];
    let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8);
    let gamma = (opts.end_lr / opts.lr).ln() / opts.epochs as f64;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut step = 0i32;
    for epoch in 0..opts.epochs {
        let lr = opts.lr * (gamma * epoch as f64).exp();
        order.shuffle(&mut rng);
        for batch in order.chunks(opts.batch_size) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            let scale = 1.0 / (batch.len() * n_classes) as f64;
            for &i in batch {
                let z = probe.scores(rows, i);
                let dz: Vec<f64> = z
                    .iter()
                    .enumerate()
                    .map(|(c, &zc)| {
                        let p = sigmoid(zc);
                        let g = if labels[i] == c {
                            pos_weight[c] * (p - 1.0)
                        } else {
                            p
                        };
                        g * scale
                    })
                    .collect();
                rows.for_each(i, |j, x| {
                    for (c, g) in dz.iter().enumerate() {
                        grad[c * d + j] += g * x;
                    }
                });
                for (c, g) in dz.iter().enumerate() {
                    grad[n_classes * d + c] += g;
                }
            }
            step += 1;
            let (bc1, bc2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
            for k in 0..n_params {
                let w = if k < n_classes * d {
                    probe.weights[k]
                } else {
                    probe.bias[k - n_classes * d]
                };
                let mut g = grad[k] + opts.weight_decay * w;
                if k < n_classes * d && opts.l1 > 0.0 {
                    g += opts.l1 * w.signum() * f64::from(u8::from(w != 0.0)) / n_classes as f64;
                }
                m[k] = beta1 * m[k] + (1.0 - beta1) * g;
                v[k] = beta2 * v[k] + (1.0 - beta2) * g * g;
                let delta = lr * (m[k] / bc1) / ((v[k] / bc2).sqrt() + eps);
                if k < n_classes * d {
                    probe.weights[k] -= delta;
                } else {
                    probe.bias[k - n_classes * d] -= delta;
                }
            }
        }
        progress(epoch + 1, opts.epochs);
    }
    if probe
        .weights
        .iter()
        .chain(&probe.bias)
        .any(|w| !w.is_finite())
    {
        return Err(AnalysisError::NotFinite {
            what: "probe weight",
            value: f64::NAN,
        });
    }
    Ok(probe)
}

/// A binary probe `w · x + b` on a few dense features.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryProbe {
    /// Weights, one per feature.
    pub weights: Vec<f64>,
    /// Bias.
    pub bias: f64,
}

impl BinaryProbe {
    /// The score of one row (`> 0`: positive).
    pub fn score(&self, x: &[f64]) -> f64 {
        self.bias + self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }
}

/// Objective of [`fit_logistic`] at `(w, b)`.
fn objective(x: &[f64], k: usize, y: &[bool], s: &[f64; 2], w: &[f64], b: f64) -> f64 {
    let mut f = 0.5 * w.iter().map(|v| v * v).sum::<f64>();
    for (row, &yi) in x.chunks_exact(k.max(1)).zip(y) {
        let z = b + w.iter().zip(row).map(|(a, v)| a * v).sum::<f64>();
        // log(1 + e^{-z}) for positives, log(1 + e^{z}) for negatives, computed stably.
        let t = if yi { -z } else { z };
        let loss = t.max(0.0) + (-t.abs()).exp().ln_1p();
        f += s[usize::from(yi)] * loss;
    }
    f
}

/// Fits a binary logistic regression on `x` (`[n, k]`, row-major) by Newton's method: balanced class
/// weights (`n / (2·n_class)`), penalty `½‖w‖²`, bias unpenalised, backtracking on the objective.
pub fn fit_logistic(x: &[f64], k: usize, y: &[bool]) -> Result<BinaryProbe> {
    let n = y.len();
    if x.len() != n * k {
        return Err(AnalysisError::ShapeMismatch {
            what: "logistic-regression features [n, k]",
            expected: n * k,
            got: x.len(),
        });
    }
    let n_pos = y.iter().filter(|&&v| v).count();
    if n_pos == 0 || n_pos == n {
        return Err(AnalysisError::InvalidArgument(format!(
            "a binary probe needs both classes ({n_pos} positives of {n} rows)"
        )));
    }
    let s = [
        n as f64 / (2.0 * (n - n_pos) as f64),
        n as f64 / (2.0 * n_pos as f64),
    ];
    let p = k + 1;
    let (mut w, mut b) = (vec![0.0; k], 0.0);
    let mut f = objective(x, k, y, &s, &w, b);
    for _ in 0..100 {
        let mut g = vec![0.0; p];
        let mut h = vec![0.0; p * p];
        for (j, gj) in g.iter_mut().take(k).enumerate() {
            *gj = w[j];
            h[j * p + j] = 1.0;
        }
        for i in 0..n {
            let row = &x[i * k..(i + 1) * k];
            let z = b + w.iter().zip(row).map(|(a, v)| a * v).sum::<f64>();
            let si = s[usize::from(y[i])];
            let pr = sigmoid(z);
            let r = si * (pr - f64::from(u8::from(y[i])));
            let c = si * pr * (1.0 - pr);
            for a in 0..p {
                let xa = if a < k { row[a] } else { 1.0 };
                g[a] += r * xa;
                for bb in 0..p {
                    let xb = if bb < k { row[bb] } else { 1.0 };
                    h[a * p + bb] += c * xa * xb;
                }
            }
        }
        h[p * p - 1] += 1e-9;
        let step = solve(&mut h, &mut g, p)?;
        let mut t = 1.0;
        let mut improved = false;
        for _ in 0..40 {
            let w_new: Vec<f64> = w.iter().zip(&step).map(|(a, d)| a - t * d).collect();
            let b_new = b - t * step[k];
            let f_new = objective(x, k, y, &s, &w_new, b_new);
            if f_new <= f {
                improved = f - f_new > 1e-12 * f.abs().max(1.0);
                w = w_new;
                b = b_new;
                f = f_new;
                break;
            }
            t *= 0.5;
        }
        if !improved {
            break;
        }
    }
    Ok(BinaryProbe {
        weights: w,
        bias: b,
    })
}

/// Solves `h · s = g` (`h` symmetric positive definite, `p × p`) by Gaussian elimination with pivoting.
fn solve(h: &mut [f64], g: &mut [f64], p: usize) -> Result<Vec<f64>> {
    for col in 0..p {
        let piv = (col..p)
            .max_by(|&a, &b| h[a * p + col].abs().total_cmp(&h[b * p + col].abs()))
            .unwrap_or(col);
        if h[piv * p + col].abs() < 1e-300 {
            return Err(AnalysisError::NotFinite {
                what: "Newton step of a logistic probe (singular Hessian)",
                value: h[piv * p + col],
            });
        }
        if piv != col {
            for j in 0..p {
                h.swap(col * p + j, piv * p + j);
            }
            g.swap(col, piv);
        }
        for r in col + 1..p {
            let factor = h[r * p + col] / h[col * p + col];
            for j in col..p {
                h[r * p + j] -= factor * h[col * p + j];
            }
            g[r] -= factor * g[col];
        }
    }
    let mut out = vec![0.0; p];
    for r in (0..p).rev() {
        let tail: f64 = (r + 1..p).map(|j| h[r * p + j] * out[j]).sum();
        out[r] = (g[r] - tail) / h[r * p + r];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes, each along its own axis of 4 dimensions, with a little offset: linearly separable.
    fn three_blobs() -> (Vec<f32>, Vec<usize>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..60 {
            let c = i % 3;
            let mut row = [0.1 * (i % 7) as f32 - 0.3, 0.0, 0.0, 0.05 * (i % 5) as f32];
            row[c] += 2.0;
            x.extend_from_slice(&row);
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn a_probe_separates_separable_classes() {
        let (x, y) = three_blobs();
        let rows = Rows::Dense { x: &x, d: 4 };
        let opts = ProbeTraining {
            batch_size: 8,
            ..ProbeTraining::letter_probe(3)
        };
        let probe = train_probe(&rows, &y, 3, &opts, &mut |_, _| {}).unwrap();
        for (i, &label) in y.iter().enumerate() {
            let z = probe.scores(&rows, i);
            for (c, zc) in z.iter().enumerate() {
                assert_eq!(*zc > 0.0, c == label, "row {i} class {c}: score {zc}");
            }
        }
        // Same seed, same probe; sparse rows give the same probe as their dense form.
        let again = train_probe(&rows, &y, 3, &opts, &mut |_, _| {}).unwrap();
        assert_eq!(probe, again);
        let sparse = crate::absorption::sparse::sparse_codes(&x, 4);
        let sp = train_probe(
            &Rows::Sparse {
                rows: &sparse,
                d: 4,
            },
            &y,
            3,
            &opts,
            &mut |_, _| {},
        )
        .unwrap();
        for (a, b) in sp.weights.iter().zip(&probe.weights) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn the_l1_penalty_leaves_useless_features_at_zero() {
        let (x, y) = three_blobs();
        // Feature 4 is never non-zero: its weight must stay exactly 0 under L1 + decay.
        let wide: Vec<f32> = x
            .chunks(4)
            .flat_map(|r| [r[0], r[1], r[2], r[3], 0.0])
            .collect();
        let rows = Rows::Dense { x: &wide, d: 5 };
        let probe = train_probe(
            &rows,
            &y,
            3,
            &ProbeTraining::sparse_latent_probe(1),
            &mut |_, _| {},
        )
        .unwrap();
        for c in 0..3 {
            assert_eq!(probe.weight(c)[4], 0.0);
            // Its own axis carries the largest weight.
            let best = (0..5)
                .max_by(|&a, &b| probe.weight(c)[a].total_cmp(&probe.weight(c)[b]))
                .unwrap();
            assert_eq!(best, c);
        }
    }

    #[test]
    fn newton_fit_matches_the_hand_solved_optimum() {
        // One feature, x = ±1 with labels = sign: by symmetry b = 0, and the optimum of
        // ½w² + n·log(1 + e^{-w}) (balanced weights 1) satisfies w = n·σ(-w).
        let n = 10;
        let x: Vec<f64> = (0..n)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let y: Vec<bool> = x.iter().map(|&v| v > 0.0).collect();
        let p = fit_logistic(&x, 1, &y).unwrap();
        let w = p.weights[0];
        assert!(p.bias.abs() < 1e-9, "bias {}", p.bias);
        assert!((w - n as f64 * sigmoid(-w)).abs() < 1e-9, "w {w}");
        // Separable data are classified without error.
        assert!(x.iter().zip(&y).all(|(&v, &t)| (p.score(&[v]) > 0.0) == t));
        assert!(fit_logistic(&x, 1, &[true; 10]).is_err());
    }
}
