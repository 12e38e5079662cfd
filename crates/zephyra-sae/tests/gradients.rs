//! Every architecture's hand-derived backward (SAEs, and transcoders with and without a skip path) against
//! central finite differences of an independent, naive float64 loss (written here from the formulas, sharing no code with the crate), run on the very
//! `forward_backward` the trainer calls (instantiated at f64). The f32 instantiation is then checked
//! against the f64 one, and the sparse and dense paths against each other.
//!
//! Piecewise parts: the checks run away from kinks (the activation pattern is asserted unchanged under
//! the perturbation). TopK/BatchTopK are exact gradients of the loss with the selected set fixed; the
//! AuxK residual `e = x − x̂` (a transcoder's `y − ŷ`) is a constant (stop-gradient), as documented. JumpReLU's `threshold`
//! gradient is checked against finite differences of its documented surrogate
//! `S(θ) = Σ_{r,i} [(D_r·W_dec[i])·θ⁰_i + λs]·R((max(z_ri,0) − θ_i)/ε)`, `R(u) = clamp(u + ½, 0, 1)`,
//! with `D` and `θ⁰` frozen at the current point (its derivative is the rectangle-kernel STE).

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use rand::{Rng, SeedableRng};
use zephyra_sae::kernels::Real;
use zephyra_sae::{
    Architecture, GradientsOf, JumpReluSparsity, MatryoshkaAux, Reduction, SaeConfig, SaeOf,
    StepConfig, StepStats, WorkspaceOf,
};

mod common;
use common::{every_architecture, matryoshka};

type S64 = SaeOf<f64>;

const N: usize = 7;
const D_IN: usize = 5;
const D_SAE: usize = 12;
/// A transcoder's output width (≠ `D_IN`, so a mixed-up dimension cannot pass).
const D_OUT: usize = 4;

/// One forward/backward on a fresh workspace: the step's statistics and gradients.
fn step_once<T: Real>(
    sae: &SaeOf<T>,
    x: &[T],
    n: usize,
    step: &StepConfig<'_>,
) -> (StepStats, GradientsOf<T>) {
    let mut grads = GradientsOf::zeros_like(sae);
    let stats = sae
        .forward_backward(x, n, step, &mut WorkspaceOf::default(), &mut grads)
        .unwrap();
    (stats, grads)
}

fn random_sae(arch: Architecture, seed: u64) -> (S64, Vec<f64>) {
    random_dict(SaeConfig::new(D_IN, D_SAE, arch).unwrap(), seed)
}

/// A dictionary with random weights and `N` random training rows (`x`, or a transcoder's `[x | y]`).
fn random_dict(cfg: SaeConfig, seed: u64) -> (S64, Vec<f64>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let width = cfg.row_width();
    let mut sae = S64::zeros(cfg).unwrap();
    let mut fill =
        |v: &mut Vec<f64>, a: f64, b: f64| v.iter_mut().for_each(|x| *x = rng.random_range(a..b));
    fill(&mut sae.w_enc, -1.0, 1.0);
    fill(&mut sae.w_dec, -1.0, 1.0);
    fill(&mut sae.b_enc, -0.3, 0.3);
    fill(&mut sae.b_dec, -0.3, 0.3);
    fill(&mut sae.b_gate, -0.3, 0.3);
    fill(&mut sae.r_mag, -0.3, 0.3);
    fill(&mut sae.b_mag, -0.3, 0.3);
    if sae.cfg.architecture == Architecture::JumpRelu {
        // Drawn as logarithms (the draws the checks were tuned on).
        fill(&mut sae.threshold, (0.2f64).ln(), (0.6f64).ln());
        sae.threshold.iter_mut().for_each(|t| *t = t.exp());
    }
    fill(&mut sae.w_skip, -0.5, 0.5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1000);
    let rows: Vec<f64> = (0..N * width)
        .map(|_| rng.random_range(-1.5..1.5))
        .collect();
    (sae, rows)
}

/// Splits training rows into inputs `x` (`n × d_in`) and targets `y` (`n × d_out`; `y = x` for an SAE).
fn split(sae: &S64, rows: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (d_in, width) = (sae.cfg.d_in, sae.cfg.row_width());
    let x: Vec<f64> = rows
        .chunks(width)
        .flat_map(|r| &r[..d_in])
        .copied()
        .collect();
    let y: Vec<f64> = rows
        .chunks(width)
        .flat_map(|r| &r[width - sae.cfg.d_out()..])
        .copied()
        .collect();
    (x, y)
}

/// `W_dec f + b_dec + W_skip x_r`: the full prediction of row `r`.
fn predict_row(sae: &S64, x: &[f64], r: usize, f: &[f64]) -> Vec<f64> {
    let (d_in, d_out) = (sae.cfg.d_in, sae.cfg.d_out());
    let mut out = decode_row(sae, f, true);
    if !sae.w_skip.is_empty() {
        for (o, w) in out.iter_mut().zip(sae.w_skip.chunks(d_in)) {
            *o += (0..d_in).map(|j| w[j] * x[r * d_in + j]).sum::<f64>();
        }
    }
    debug_assert_eq!(out.len(), d_out);
    out
}

/// What the naive loss needs besides the weights.
struct Ctx<'a> {
    lambda: f64,
    s: f64,
    dead: Option<&'a [bool]>,
    k_aux: usize,
    alpha: f64,
    /// JumpReLU's sparsity recipe and pre-activation coefficient.
    sparsity: JumpReluSparsity,
    pre_act: f64,
    /// Matryoshka: AuxK on each level's residual instead of the whole one.
    per_level_aux: bool,
    /// Frozen copy for stop-gradient terms (AuxK residual, gated aux decoder).
    frozen: &'a S64,
}

fn row_z(sae: &S64, x: &[f64], r: usize, bias: &[f64]) -> Vec<f64> {
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    (0..d_sae)
        .map(|i| {
            let mut acc = if bias.is_empty() { 0.0 } else { bias[i] };
            for j in 0..d_in {
                let xc = x[r * d_in + j]
                    - if sae.cfg.apply_b_dec_to_input {
                        sae.b_dec[j]
                    } else {
                        0.0
                    };
                acc += xc * sae.w_enc[j * d_sae + i];
            }
            acc
        })
        .collect()
}

fn decode_row(sae: &S64, f: &[f64], with_bias: bool) -> Vec<f64> {
    let d_out = sae.cfg.d_out();
    (0..d_out)
        .map(|j| {
            let mut acc = if with_bias { sae.b_dec[j] } else { 0.0 };
            for (i, &fi) in f.iter().enumerate() {
                acc += fi * sae.w_dec[i * d_out + j];
            }
            acc
        })
        .collect()
}

fn dec_norm(sae: &S64, i: usize) -> f64 {
    let d_out = sae.cfg.d_out();
    sae.w_dec[i * d_out..(i + 1) * d_out]
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Indices of the `k` largest of `v` (ties to the lower index).
fn top_indices(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].partial_cmp(&v[a]).unwrap().then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Codes per row, and the activation pattern (for the kink check).
fn naive_codes(sae: &S64, x: &[f64], n: usize) -> (Vec<Vec<f64>>, Vec<bool>) {
    let d_sae = sae.cfg.d_sae;
    let zs: Vec<Vec<f64>> = (0..n).map(|r| row_z(sae, x, r, &sae.b_enc)).collect();
    let mut codes = vec![vec![0.0; d_sae]; n];
    match sae.cfg.architecture {
        Architecture::Relu | Architecture::ReluUnit => {
            for r in 0..n {
                for i in 0..d_sae {
                    codes[r][i] = zs[r][i].max(0.0);
                }
            }
        }
        Architecture::TopK { k } => {
            for r in 0..n {
                for i in top_indices(&zs[r], k) {
                    codes[r][i] = zs[r][i].max(0.0);
                }
            }
        }
        Architecture::BatchTopK { k } | Architecture::Matryoshka { k, .. } => {
            let flat: Vec<f64> = zs.iter().flatten().map(|v| v.max(0.0)).collect();
            for p in top_indices(&flat, k * n) {
                codes[p / d_sae][p % d_sae] = flat[p];
            }
        }
        Architecture::JumpRelu => {
            for r in 0..n {
                for i in 0..d_sae {
                    let v = zs[r][i].max(0.0);
                    codes[r][i] = if v > sae.threshold[i] { v } else { 0.0 };
                }
            }
        }
        Architecture::Gated => {
            for r in 0..n {
                let pre = row_z(sae, x, r, &[]);
                for i in 0..d_sae {
                    let pg = pre[i] + sae.b_gate[i];
                    let pm = pre[i] * sae.r_mag[i].exp() + sae.b_mag[i];
                    codes[r][i] = if pg > 0.0 && pm > 0.0 { pm } else { 0.0 };
                }
            }
        }
    }
    let mut pattern: Vec<bool> = codes.iter().flatten().map(|&v| v > 0.0).collect();
    if sae.cfg.architecture == Architecture::Gated {
        for r in 0..n {
            let pre = row_z(sae, x, r, &[]);
            pattern.extend((0..d_sae).map(|i| pre[i] + sae.b_gate[i] > 0.0));
        }
    }
    (codes, pattern)
}

fn naive_loss(sae: &S64, rows: &[f64], n: usize, c: &Ctx<'_>) -> (f64, Vec<bool>) {
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    let (x, y) = split(sae, rows);
    let x = &x[..];
    let (codes, mut pattern) = naive_codes(sae, x, n);
    let mut loss = 0.0;
    for r in 0..n {
        let xr = &x[r * d_in..(r + 1) * d_in];
        let yr = &y[r * d_out..(r + 1) * d_out];
        let yhat = predict_row(sae, x, r, &codes[r]);
        loss += c.s * sq_dist(&yhat, yr);
        match sae.cfg.architecture {
            Architecture::Relu => {
                loss += c.lambda
                    * c.s
                    * (0..d_sae)
                        .map(|i| codes[r][i] * dec_norm(sae, i))
                        .sum::<f64>()
            }
            Architecture::ReluUnit => loss += c.lambda * c.s * codes[r].iter().sum::<f64>(),
            Architecture::JumpRelu => {
                let l0 = codes[r].iter().filter(|&&v| v > 0.0).count() as f64;
                loss += c.lambda
                    * c.s
                    * match c.sparsity {
                        JumpReluSparsity::L0 => l0,
                        JumpReluSparsity::Tanh { scale } => (0..d_sae)
                            .map(|i| (scale * codes[r][i] * dec_norm(sae, i)).tanh())
                            .sum(),
                        JumpReluSparsity::QuadraticL0 { target } => {
                            2.0 / target * (l0 - target).powi(2)
                        }
                    };
                // Anthropic's pre-activation loss on the raw pre-activations.
                let z = row_z(sae, x, r, &sae.b_enc);
                loss += c.pre_act
                    * c.s
                    * (0..d_sae)
                        .map(|i| (sae.threshold[i] - z[i]).max(0.0) * dec_norm(sae, i))
                        .sum::<f64>();
            }
            Architecture::Gated => {
                let pre = row_z(sae, x, r, &[]);
                let gate: Vec<f64> = (0..d_sae)
                    .map(|i| (pre[i] + sae.b_gate[i]).max(0.0))
                    .collect();
                loss +=
                    c.lambda * c.s * (0..d_sae).map(|i| gate[i] * dec_norm(sae, i)).sum::<f64>();
                let via_gate = decode_row(c.frozen, &gate, true);
                loss += c.s * sq_dist(&via_gate, xr);
            }
            Architecture::TopK { .. } | Architecture::BatchTopK { .. } => {}
            Architecture::Matryoshka { groups, .. } => {
                // Every inner prefix decodes with its own latents (and b_dec).
                for &w in &groups.as_slice()[..groups.levels() - 1] {
                    let mut f = codes[r].clone();
                    f[w as usize..].iter_mut().for_each(|v| *v = 0.0);
                    loss += c.s * sq_dist(&predict_row(sae, x, r, &f), yr);
                }
            }
        }
    }
    // AuxK with the residual frozen at the reference point.
    if let (
        Architecture::TopK { .. }
        | Architecture::BatchTopK { .. }
        | Architecture::Matryoshka { .. },
        Some(dead),
    ) = (sae.cfg.architecture, c.dead)
    {
        // Whole: one level spanning the dictionary. Per level: latents w_{j-1}..w_j against the residual
        // of prefix j (the frozen SAE's codes from w_j on zeroed).
        let levels: Vec<(usize, usize)> = match sae.cfg.architecture {
            Architecture::Matryoshka { groups, .. } if c.per_level_aux => {
                let w = groups.as_slice();
                (0..w.len())
                    .map(|j| (if j == 0 { 0 } else { w[j - 1] as usize }, w[j] as usize))
                    .collect()
            }
            _ => vec![(0, d_sae)],
        };
        let (frozen_codes, _) = naive_codes(c.frozen, x, n);
        for (start, end) in levels {
            let n_dead = (start..end).filter(|&i| dead[i]).count();
            if n_dead == 0 {
                continue;
            }
            let k_eff = c.k_aux.min(n_dead);
            let m = (n_dead as f64 / c.k_aux as f64).min(1.0);
            for r in 0..n {
                let yr = &y[r * d_out..(r + 1) * d_out];
                let mut f0 = frozen_codes[r].clone();
                f0[end..].iter_mut().for_each(|v| *v = 0.0);
                let yhat0 = predict_row(c.frozen, x, r, &f0);
                let e: Vec<f64> = yr.iter().zip(&yhat0).map(|(a, b)| a - b).collect();
                let z = row_z(sae, x, r, &sae.b_enc);
                let masked: Vec<f64> = (0..d_sae)
                    .map(|i| {
                        if dead[i] && (start..end).contains(&i) {
                            z[i]
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let mut f = vec![0.0; d_sae];
                for i in top_indices(&masked, k_eff) {
                    f[i] = z[i].max(0.0);
                    pattern.push(z[i] > 0.0);
                }
                let ehat = decode_row(sae, &f, false);
                loss += c.alpha * m * c.s * sq_dist(&ehat, &e);
            }
        }
    }
    (loss, pattern)
}

fn param_mut<'a>(sae: &'a mut S64, name: &str) -> &'a mut Vec<f64> {
    match name {
        "W_enc" => &mut sae.w_enc,
        "b_enc" => &mut sae.b_enc,
        "W_dec" => &mut sae.w_dec,
        "b_dec" => &mut sae.b_dec,
        "threshold" => &mut sae.threshold,
        "b_gate" => &mut sae.b_gate,
        "r_mag" => &mut sae.r_mag,
        "b_mag" => &mut sae.b_mag,
        "W_skip" => &mut sae.w_skip,
        other => panic!("unknown parameter {other}"),
    }
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * (1.0 + want.abs()),
        "{what}: analytic {got:.10}, finite differences {want:.10}"
    );
}

/// Runs the crate's backward and compares every parameter entry with central differences of the naive
/// loss (skipping only jumprelu's `threshold`, checked separately). Returns the gradients.
fn check(arch: Architecture, seed: u64, step: StepConfig<'_>) -> (S64, Vec<f64>, GradientsOf<f64>) {
    check_dict(SaeConfig::new(D_IN, D_SAE, arch).unwrap(), seed, step)
}

/// [`check`] for any configuration (SAE or transcoder).
fn check_dict(
    cfg: SaeConfig,
    seed: u64,
    step: StepConfig<'_>,
) -> (S64, Vec<f64>, GradientsOf<f64>) {
    let label = match cfg.transcoder {
        Some(t) => format!("{} transcoder (skip {})", cfg.architecture, t.skip),
        None => cfg.architecture.to_string(),
    };
    let (sae, x) = random_dict(cfg, seed);
    let (stats, grads) = step_once(&sae, &x, N, &step);
    let s = match step.reduction {
        Reduction::Mean => 1.0 / N as f64,
        Reduction::Sum => 1.0,
    };
    let ctx = Ctx {
        lambda: step.sparsity_coeff,
        s,
        dead: step.dead,
        k_aux: step.k_aux.unwrap_or(sae.cfg.d_out() / 2),
        alpha: step.aux_coeff,
        sparsity: step.jumprelu_sparsity,
        pre_act: step.pre_act_coeff,
        per_level_aux: step.matryoshka_aux == MatryoshkaAux::PerLevel,
        frozen: &sae,
    };
    let (l0, pattern0) = naive_loss(&sae, &x, N, &ctx);
    assert_close(&format!("{label}: loss"), stats.loss, l0, 1e-10);
    assert!(
        pattern0.iter().any(|&p| p) && pattern0.iter().any(|&p| !p),
        "{label}: degenerate activation pattern"
    );
    let h = 1e-6;
    let mut checked = 0;
    for (name, g) in grads.slices() {
        if name == "threshold" {
            continue;
        }
        for p in 0..g.len() {
            let mut plus = sae.clone();
            param_mut(&mut plus, name)[p] += h;
            let mut minus = sae.clone();
            param_mut(&mut minus, name)[p] -= h;
            let (lp, pp) = naive_loss(&plus, &x, N, &ctx);
            let (lm, pm) = naive_loss(&minus, &x, N, &ctx);
            assert!(
                pp == pattern0 && pm == pattern0,
                "{label}: {name}[{p}] sits on a kink; pick another seed"
            );
            assert_close(
                &format!("{label}: d{name}[{p}]"),
                g[p],
                (lp - lm) / (2.0 * h),
                1e-6,
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "{label}: only {checked} entries checked");
    (sae, x, grads)
}

#[test]
fn relu_decoder_norm_weighted_l1_sparse_and_dense_paths() {
    for dense_above in [1.0, 0.0] {
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let step = StepConfig {
                sparsity_coeff: 0.7,
                reduction,
                dense_above,
                ..StepConfig::default()
            };
            check(Architecture::Relu, 1, step);
        }
    }
}

#[test]
fn relu_unit_plain_l1() {
    for dense_above in [1.0, 0.0] {
        check(
            Architecture::ReluUnit,
            2,
            StepConfig {
                sparsity_coeff: 0.5,
                dense_above,
                ..StepConfig::default()
            },
        );
    }
}

#[test]
fn topk_with_and_without_auxk() {
    check(Architecture::TopK { k: 3 }, 3, StepConfig::default());
    let mut dead = vec![false; D_SAE];
    for i in [0, 4, 5, 9, 11] {
        dead[i] = true;
    }
    // k_aux larger and smaller than the number of dead latents.
    for k_aux in [2, 8] {
        check(
            Architecture::TopK { k: 3 },
            3,
            StepConfig {
                dead: Some(&dead),
                k_aux: Some(k_aux),
                aux_coeff: 0.5,
                ..StepConfig::default()
            },
        );
    }
}

#[test]
fn batchtopk_with_auxk() {
    check(Architecture::BatchTopK { k: 2 }, 4, StepConfig::default());
    let dead: Vec<bool> = (0..D_SAE).map(|i| i % 3 == 0).collect();
    check(
        Architecture::BatchTopK { k: 2 },
        4,
        StepConfig {
            dead: Some(&dead),
            k_aux: Some(3),
            ..StepConfig::default()
        },
    );
}

#[test]
fn gated_with_gate_l1_and_aux_reconstruction() {
    check(
        Architecture::Gated,
        5,
        StepConfig {
            sparsity_coeff: 0.4,
            ..StepConfig::default()
        },
    );
    let (_, _, grads) = check(
        Architecture::Gated,
        6,
        StepConfig {
            sparsity_coeff: 0.0,
            reduction: Reduction::Sum,
            ..StepConfig::default()
        },
    );
    assert!(grads.r_mag.iter().any(|&g| g != 0.0) && grads.b_gate.iter().any(|&g| g != 0.0));
}

#[test]
fn matryoshka_nested_prefix_losses_with_auxk() {
    // Three levels, two levels, and a single level (which is plain batchtopk).
    for (seed, widths) in [(4, &[3, 7, 12][..]), (8, &[5, 12][..]), (4, &[12][..])] {
        let arch = matryoshka(2, widths);
        check(arch, seed, StepConfig::default());
        let dead: Vec<bool> = (0..D_SAE).map(|i| i % 3 == 0).collect();
        check(
            arch,
            seed,
            StepConfig {
                dead: Some(&dead),
                k_aux: Some(3),
                reduction: Reduction::Sum,
                ..StepConfig::default()
            },
        );
    }
    // Per-level AuxK: each level's dead latents against its own prefix's residual; k_aux below and
    // above a level's dead count. One level reduces to the whole-dictionary AuxK.
    for (seed, widths, k_aux) in [
        (4, &[3, 7, 12][..], 2),
        (8, &[5, 12][..], 3),
        (4, &[12][..], 3),
    ] {
        let dead: Vec<bool> = (0..D_SAE).map(|i| i % 3 == 0).collect();
        check(
            matryoshka(2, widths),
            seed,
            StepConfig {
                dead: Some(&dead),
                k_aux: Some(k_aux),
                aux_coeff: 0.5,
                matryoshka_aux: MatryoshkaAux::PerLevel,
                ..StepConfig::default()
            },
        );
    }
    let dead: Vec<bool> = (0..D_SAE).map(|i| i % 3 == 0).collect();
    let aux = |matryoshka_aux| StepConfig {
        dead: Some(&dead),
        k_aux: Some(3),
        matryoshka_aux,
        ..StepConfig::default()
    };
    let (one, x) = random_sae(matryoshka(2, &[12]), 4);
    let (w, gw) = step_once(&one, &x, N, &aux(MatryoshkaAux::Whole));
    let (p, gp) = step_once(&one, &x, N, &aux(MatryoshkaAux::PerLevel));
    assert_eq!((w.aux_loss, gw.w_enc), (p.aux_loss, gp.w_enc));
    // With several levels the two differ (the inner residuals are larger).
    let (three, x) = random_sae(matryoshka(2, &[3, 7, 12]), 4);
    let (w, _) = step_once(&three, &x, N, &aux(MatryoshkaAux::Whole));
    let (p, _) = step_once(&three, &x, N, &aux(MatryoshkaAux::PerLevel));
    assert!(w.aux_loss > 0.0 && p.aux_loss > 0.0 && w.aux_loss != p.aux_loss);

    // One level reduces to batchtopk exactly.
    let step = StepConfig::default();
    let (one, x) = random_sae(matryoshka(2, &[12]), 4);
    let (bt, _) = random_sae(Architecture::BatchTopK { k: 2 }, 4);
    let (s1, g1) = step_once(&one, &x, N, &step);
    let (s2, g2) = step_once(&bt, &x, N, &step);
    assert_eq!((s1.loss, g1.w_dec), (s2.loss, g2.w_dec));
}

#[test]
fn jumprelu_weights_and_straight_through_threshold() {
    for dense_above in [1.0, 0.0] {
        let step = StepConfig {
            sparsity_coeff: 0.3,
            bandwidth: 0.4,
            dense_above,
            ..StepConfig::default()
        };
        check_jumprelu(7, step);
    }
}

/// Issue 17, part 2: Anthropic's tanh penalty with its pre-activation loss, and Gemma Scope 2's
/// quadratic L0 penalty (also with the pre-activation loss, and dense-path requests, which these
/// recipes turn down where they need the codes).
#[test]
fn jumprelu_tanh_quadratic_l0_and_pre_activation_recipes() {
    let recipes = [
        (JumpReluSparsity::Tanh { scale: 4.0 }, 0.0),
        (JumpReluSparsity::Tanh { scale: 1.5 }, 0.2),
        (JumpReluSparsity::QuadraticL0 { target: 3.0 }, 0.0),
        (JumpReluSparsity::QuadraticL0 { target: 8.0 }, 0.1),
        (JumpReluSparsity::L0, 0.3),
    ];
    for (sparsity, pre_act_coeff) in recipes {
        for dense_above in [1.0, 0.0] {
            let step = StepConfig {
                sparsity_coeff: 0.3,
                bandwidth: 0.4,
                dense_above,
                jumprelu_sparsity: sparsity,
                pre_act_coeff,
                ..StepConfig::default()
            };
            check_jumprelu(7, step);
        }
    }
    let bad = StepConfig {
        jumprelu_sparsity: JumpReluSparsity::QuadraticL0 { target: 0.0 },
        ..StepConfig::default()
    };
    let (sae, x) = random_sae(Architecture::JumpRelu, 7);
    let mut grads = GradientsOf::zeros_like(&sae);
    assert!(sae
        .forward_backward(&x, N, &bad, &mut WorkspaceOf::default(), &mut grads)
        .is_err());
}

/// [`check`] for jumprelu, then [`check_threshold`].
fn check_jumprelu(seed: u64, step: StepConfig<'_>) {
    let (sae, rows, grads) = check(Architecture::JumpRelu, seed, step);
    check_threshold(&sae, &rows, &grads, &step);
}

/// `dL/dθ` against finite differences of the documented surrogate: with `D = 2s(ŷ − y)`, θ⁰, the tanh
/// slopes `c n_i (1 − T²)` and the quadratic row weights `(4/T)(L0_r − T)` frozen at the current point,
/// `S(θ) = Σ_{r,i} coef_ri R((max(z,0) − θ)/ε)` with `coef = θ⁰(D·W_dec[i] + λs·slope) + λs·w_r`, plus
/// the pre-activation loss itself (θ enters it directly). `step` is the one the gradients were taken with.
fn check_threshold(sae: &S64, rows: &[f64], grads: &GradientsOf<f64>, step: &StepConfig<'_>) {
    let d_out = sae.cfg.d_out();
    let (x, y) = split(sae, rows);
    let bandwidth = step.bandwidth;
    let s = 1.0 / N as f64;
    let lambda_s = step.sparsity_coeff * s;
    let (codes, _) = naive_codes(sae, &x, N);
    let theta0: Vec<f64> = sae.threshold.clone();
    let mut coef = vec![vec![0.0; D_SAE]; N];
    let mut zs = vec![vec![0.0; D_SAE]; N];
    for r in 0..N {
        let yhat = predict_row(sae, &x, r, &codes[r]);
        let d: Vec<f64> = (0..d_out)
            .map(|j| 2.0 * s * (yhat[j] - y[r * d_out + j]))
            .collect();
        zs[r] = row_z(sae, &x, r, &sae.b_enc);
        let l0 = codes[r].iter().filter(|&&v| v > 0.0).count() as f64;
        let row_weight = match step.jumprelu_sparsity {
            JumpReluSparsity::L0 => 1.0,
            JumpReluSparsity::Tanh { .. } => 0.0,
            JumpReluSparsity::QuadraticL0 { target } => 4.0 / target * (l0 - target),
        };
        for i in 0..D_SAE {
            let dw: f64 = (0..d_out).map(|j| d[j] * sae.w_dec[i * d_out + j]).sum();
            let slope = match step.jumprelu_sparsity {
                JumpReluSparsity::Tanh { scale } => {
                    let t = (scale * codes[r][i] * dec_norm(sae, i)).tanh();
                    scale * dec_norm(sae, i) * (1.0 - t * t)
                }
                _ => 0.0,
            };
            coef[r][i] = theta0[i] * (dw + lambda_s * slope) + lambda_s * row_weight;
        }
    }
    let surrogate = |thetas: &[f64]| -> f64 {
        let mut acc = 0.0;
        for r in 0..N {
            for i in 0..D_SAE {
                let theta = thetas[i];
                let u = (zs[r][i].max(0.0) - theta) / bandwidth;
                acc += coef[r][i] * (u + 0.5).clamp(0.0, 1.0);
                acc += step.pre_act_coeff * s * (theta - zs[r][i]).max(0.0) * dec_norm(sae, i);
            }
        }
        acc
    };
    let mut in_band = 0;
    for r in 0..N {
        for i in 0..D_SAE {
            in_band += ((zs[r][i].max(0.0) - theta0[i]).abs() < bandwidth / 2.0) as usize;
        }
    }
    assert!(
        in_band >= 5,
        "only {in_band} entries inside the band: the check would be vacuous"
    );
    let h = 1e-6;
    for i in 0..D_SAE {
        let mut p = sae.threshold.clone();
        p[i] += h;
        let mut m = sae.threshold.clone();
        m[i] -= h;
        assert_close(
            &format!("{}: dthreshold[{i}]", step.jumprelu_sparsity.name()),
            grads.threshold[i],
            (surrogate(&p) - surrogate(&m)) / (2.0 * h),
            1e-6,
        );
    }
    assert!(grads.threshold.iter().filter(|&&g| g != 0.0).count() >= 3);
}

/// Transcoders (`d_in` 5 → `d_out` 4) with and without the skip path, every activation of the trainer, on
/// both code paths where there are two; AuxK on dead latents for topk/batchtopk; the skip gradient
/// `dL/dW_skip = Dᵀ x` is among the entries checked.
#[test]
fn transcoders_with_and_without_skip_every_activation() {
    let dead: Vec<bool> = (0..D_SAE).map(|i| i % 3 == 1).collect();
    for skip in [false, true] {
        let tc = |arch| SaeConfig::transcoder(D_IN, D_OUT, D_SAE, arch, skip).unwrap();
        for dense_above in [1.0, 0.0] {
            for (arch, seed) in [(Architecture::Relu, 11), (Architecture::ReluUnit, 12)] {
                let step = StepConfig {
                    sparsity_coeff: 0.6,
                    dense_above,
                    ..StepConfig::default()
                };
                check_dict(tc(arch), seed, step);
            }
            let step = StepConfig {
                sparsity_coeff: 0.3,
                bandwidth: 0.4,
                dense_above,
                ..StepConfig::default()
            };
            let (sae, rows, grads) = check_dict(tc(Architecture::JumpRelu), 13, step);
            check_threshold(&sae, &rows, &grads, &step);
        }
        for arch in [
            Architecture::TopK { k: 3 },
            Architecture::BatchTopK { k: 2 },
        ] {
            check_dict(tc(arch), 14, StepConfig::default());
            let (_, _, grads) = check_dict(
                tc(arch),
                14,
                StepConfig {
                    dead: Some(&dead),
                    k_aux: Some(3),
                    aux_coeff: 0.5,
                    ..StepConfig::default()
                },
            );
            assert_eq!(grads.w_skip.is_empty(), !skip);
            assert!(grads.w_skip.iter().all(|&g| g != 0.0));
        }
    }
}

/// The jumprelu recipes (tanh, quadratic L0, pre-activation loss) on transcoders: the tanh and
/// pre-activation terms reach `W_dec` through its `d_out`-wide row norms.
#[test]
fn jumprelu_recipes_on_transcoders() {
    for skip in [false, true] {
        let cfg = SaeConfig::transcoder(D_IN, D_OUT, D_SAE, Architecture::JumpRelu, skip).unwrap();
        for (sparsity, pre_act_coeff) in [
            (JumpReluSparsity::Tanh { scale: 1.5 }, 0.2),
            (JumpReluSparsity::QuadraticL0 { target: 3.0 }, 0.1),
        ] {
            let step = StepConfig {
                sparsity_coeff: 0.3,
                bandwidth: 0.4,
                jumprelu_sparsity: sparsity,
                pre_act_coeff,
                ..StepConfig::default()
            };
            let (sae, rows, grads) = check_dict(cfg.clone(), 13, step);
            check_threshold(&sae, &rows, &grads, &step);
        }
    }
}

/// The f32 instantiation (what the trainer runs) agrees with the f64 one on a batch big enough to take
/// the parallel code paths, for every architecture.
#[test]
fn f32_matches_f64_on_larger_batches() {
    let (n, d_in, d_sae) = (150, 37, 130);
    let dead: Vec<bool> = (0..d_sae).map(|i| i % 4 == 1).collect();
    for arch in every_architecture(9, &[10, 40, 130]) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let cfg = SaeConfig::new(d_in, d_sae, arch).unwrap();
        let mut s64 = S64::init(cfg, &mut rng).unwrap();
        for v in s64
            .b_dec
            .iter_mut()
            .chain(s64.b_enc.iter_mut())
            .chain(s64.b_gate.iter_mut())
            .chain(s64.b_mag.iter_mut())
        {
            *v = rng.random_range(-0.1..0.1);
        }
        if arch == Architecture::JumpRelu {
            for v in s64.threshold.iter_mut() {
                *v = rng.random_range(-1.5f64..-0.5).exp();
            }
        }
        let x64: Vec<f64> = (0..n * d_in).map(|_| rng.random_range(-1.0..1.0)).collect();
        let to32 = |v: &Vec<f64>| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        // Round the f64 model to f32 values so both see identical weights.
        let mut s32 = SaeOf::<f32>::zeros(s64.cfg.clone()).unwrap();
        for ((_, dst), (_, src)) in s32
            .params_mut()
            .into_iter()
            .map(|p| (p.name, p.value))
            .zip(s64.params())
        {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as f32;
            }
        }
        for ((_, src), p) in s32.params().into_iter().zip(s64.params_mut()) {
            for (d, &s) in p.value.iter_mut().zip(src) {
                *d = s as f64;
            }
        }
        let x32 = to32(&x64);
        let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        for dense_above in [1.0, 0.0] {
            let step = StepConfig {
                sparsity_coeff: 0.2,
                dead: Some(&dead),
                k_aux: Some(10),
                bandwidth: 0.05,
                dense_above,
                ..StepConfig::default()
            };
            let (st64, g64) = step_once(&s64, &x64, n, &step);
            let (st32, g32) = step_once(&s32, &x32, n, &step);
            assert!(
                (st64.loss - st32.loss).abs() <= 1e-4 * st64.loss.abs().max(1e-3),
                "{arch}: loss {} vs {}",
                st64.loss,
                st32.loss
            );
            assert_eq!(st64.l0, st32.l0, "{arch}");
            for ((name, a), (_, b)) in g64.slices().into_iter().zip(g32.slices()) {
                let scale = a.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-6);
                for (p, (&u, &v)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (u - v as f64).abs() <= 2e-4 * scale,
                        "{arch} dense_above={dense_above}: {name}[{p}] f64 {u} vs f32 {v}"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let (sae, x) = random_sae(Architecture::Relu, 1);
    let mut ws = WorkspaceOf::default();
    let mut grads = GradientsOf::zeros_like(&sae);
    assert!(sae
        .forward_backward(
            &x[..x.len() - 1],
            N,
            &StepConfig::default(),
            &mut ws,
            &mut grads
        )
        .is_err());
    assert!(sae
        .forward_backward(&x, 0, &StepConfig::default(), &mut ws, &mut grads)
        .is_err());
    let (other, _) = random_sae(Architecture::Gated, 1);
    let mut wrong = GradientsOf::zeros_like(&other);
    assert!(sae
        .forward_backward(&x, N, &StepConfig::default(), &mut ws, &mut wrong)
        .is_err());
    let short = vec![true; 3];
    assert!(sae
        .forward_backward(
            &x,
            N,
            &StepConfig {
                dead: Some(&short),
                ..StepConfig::default()
            },
            &mut ws,
            &mut grads
        )
        .is_err());
    assert!(SaeConfig::new(8, 8, Architecture::TopK { k: 8 }).is_err());
    assert!(SaeConfig::new(8, 0, Architecture::Relu).is_err());
}
