//! SAELens' parametrisation of the TopK family (issue 17): decoder rows free, pre-activations rescaled by
//! the decoder norms (`StepConfig::rescale_acts_by_decoder_norm`, `TrainConfig::decoder_init_norm`).
//!
//! - The hand-derived backward (`arch/codes/rescale.rs`) against central finite differences of an
//!   independent naive f64 loss written here from the rescaled forward (`z = p ⊙ ‖W_dec‖`, decoding with
//!   `W_dec[i]/‖W_dec[i]‖`), for topk, batchtopk and matryoshka, with and without AuxK (its residual
//!   frozen, as documented), away from kinks (the selection is asserted unchanged).
//! - The fold: the saved SAE (norms folded in) gives the rescaled codes exactly, with unit decoder rows.
//! - The trainer: rows start at the init norm and stay free; the saved SAE is the folded one.

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use std::ops::ControlFlow;

use rand::{Rng, SeedableRng};
use zephyra_sae::train::{MemorySource, TrainConfig, Trainer};
use zephyra_sae::{
    init, saelens, Architecture, GradientsOf, MatryoshkaWidths, Reduction, Sae, SaeConfig, SaeOf,
    StepConfig, WorkspaceOf,
};

type S64 = SaeOf<f64>;

const N: usize = 6;
const D_IN: usize = 5;
const D_SAE: usize = 10;

fn random_sae(arch: Architecture, seed: u64) -> (S64, Vec<f64>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut sae = S64::zeros(SaeConfig::new(D_IN, D_SAE, arch).unwrap()).unwrap();
    sae.w_enc
        .iter_mut()
        .for_each(|v| *v = rng.random_range(-1.0..1.0));
    // Decoder rows of very different norms (0.05 … 2), as free rows become.
    for i in 0..D_SAE {
        let scale = 0.05 + 0.2 * i as f64;
        for j in 0..D_IN {
            sae.w_dec[i * D_IN + j] = scale * rng.random_range(-1.0..1.0);
        }
    }
    sae.b_enc
        .iter_mut()
        .for_each(|v| *v = rng.random_range(-0.3..0.3));
    sae.b_dec
        .iter_mut()
        .for_each(|v| *v = rng.random_range(-0.3..0.3));
    let x = (0..N * D_IN).map(|_| rng.random_range(-1.5..1.5)).collect();
    (sae, x)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// Rescaled pre-activations `z_ri = (x_c W_enc + b_enc)_i ‖W_dec[i]‖`, row-major `N × D_SAE`.
fn naive_z(sae: &S64, x: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; N * D_SAE];
    for r in 0..N {
        for i in 0..D_SAE {
            let mut p = sae.b_enc[i];
            for j in 0..D_IN {
                p += (x[r * D_IN + j] - sae.b_dec[j]) * sae.w_enc[j * D_SAE + i];
            }
            z[r * D_SAE + i] = p * norm(&sae.w_dec[i * D_IN..(i + 1) * D_IN]);
        }
    }
    z
}

/// `keep[r·D_SAE + i]`: the selected entries (positive, per row top `k` or the batch's top `k·N`).
fn select(z: &[f64], k: usize, batch: bool, allowed: &[bool]) -> Vec<bool> {
    let mut keep = vec![false; z.len()];
    let rank = |idx: &mut Vec<usize>| idx.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap());
    if batch {
        let mut idx: Vec<usize> = (0..z.len()).filter(|&e| allowed[e % D_SAE]).collect();
        rank(&mut idx);
        idx.iter().take(k * N).for_each(|&e| keep[e] = z[e] > 0.0);
    } else {
        for r in 0..N {
            let mut idx: Vec<usize> = (0..D_SAE)
                .filter(|&i| allowed[i])
                .map(|i| r * D_SAE + i)
                .collect();
            rank(&mut idx);
            idx.iter().take(k).for_each(|&e| keep[e] = z[e] > 0.0);
        }
    }
    keep
}

/// `Σ_{i<width} f_ri W_dec[i]/‖W_dec[i]‖` (+ `b_dec` when `bias`).
fn decode(sae: &S64, z: &[f64], keep: &[bool], r: usize, width: usize, bias: bool) -> Vec<f64> {
    let mut out = if bias {
        sae.b_dec.clone()
    } else {
        vec![0.0; D_IN]
    };
    for i in 0..width {
        if keep[r * D_SAE + i] {
            let row = &sae.w_dec[i * D_IN..(i + 1) * D_IN];
            let n = norm(row);
            for j in 0..D_IN {
                out[j] += z[r * D_SAE + i] * row[j] / n;
            }
        }
    }
    out
}

struct Aux<'a> {
    dead: &'a [bool],
    k_aux: usize,
    coeff: f64,
}

/// The loss (mean over rows), the selections (main and AuxK) and the residuals `e = x − x̂`. With
/// `frozen`, AuxK's residual is that one (stop-gradient).
fn naive_loss(
    sae: &S64,
    x: &[f64],
    aux: Option<&Aux<'_>>,
    frozen: Option<&[f64]>,
) -> (f64, Vec<bool>, Vec<f64>) {
    let (k, batch, widths): (usize, bool, Vec<usize>) = match sae.cfg.architecture {
        Architecture::TopK { k } => (k, false, vec![D_SAE]),
        Architecture::BatchTopK { k } => (k, true, vec![D_SAE]),
        Architecture::Matryoshka { k, groups } => (
            k,
            true,
            groups.as_slice().iter().map(|&w| w as usize).collect(),
        ),
        other => panic!("{other} is not in the TopK family"),
    };
    let s = 1.0 / N as f64;
    let z = naive_z(sae, x);
    let mut keep = select(&z, k, batch, &[true; D_SAE]);
    let mut loss = 0.0;
    let mut resid = vec![0.0; N * D_IN];
    for r in 0..N {
        for &w in &widths {
            let xh = decode(sae, &z, &keep, r, w, true);
            for j in 0..D_IN {
                let d = xh[j] - x[r * D_IN + j];
                loss += s * d * d;
                if w == D_SAE {
                    resid[r * D_IN + j] = -d;
                }
            }
        }
    }
    if let Some(a) = aux {
        let e = frozen.unwrap_or(&resid);
        let n_dead = a.dead.iter().filter(|&&d| d).count();
        let m = (n_dead as f64 / a.k_aux as f64).min(1.0);
        let aux_keep = select(&z, a.k_aux.min(n_dead), false, a.dead);
        for r in 0..N {
            let eh = decode(sae, &z, &aux_keep, r, D_SAE, false);
            for j in 0..D_IN {
                loss += a.coeff * m * s * (eh[j] - e[r * D_IN + j]).powi(2);
            }
        }
        keep.extend(aux_keep);
    }
    (loss, keep, resid)
}

/// `sae` with entry `e` of parameter `name` moved by `delta`.
fn nudged(sae: &S64, name: &str, e: usize, delta: f64) -> S64 {
    let mut out = sae.clone();
    let mut params = out.params_mut();
    let p = params
        .iter_mut()
        .find(|p| p.name == name)
        .expect("a parameter");
    p.value[e] += delta;
    drop(params);
    out
}

fn check(arch: Architecture, seed: u64, aux: Option<Aux<'_>>) {
    let (sae, x) = random_sae(arch, seed);
    let step = StepConfig {
        rescale_acts_by_decoder_norm: true,
        reduction: Reduction::Mean,
        dead: aux.as_ref().map(|a| a.dead),
        k_aux: aux.as_ref().map(|a| a.k_aux),
        aux_coeff: aux.as_ref().map_or(0.0, |a| a.coeff),
        ..StepConfig::default()
    };
    let mut grads = GradientsOf::zeros_like(&sae);
    let stats = sae
        .forward_backward(&x, N, &step, &mut WorkspaceOf::default(), &mut grads)
        .unwrap();
    let (loss, keep, resid) = naive_loss(&sae, &x, aux.as_ref(), None);
    assert!(
        (stats.loss - loss).abs() < 1e-9 * (1.0 + loss),
        "{arch}: loss {} vs naive {loss}",
        stats.loss
    );
    assert!(keep.iter().any(|&k| k), "{arch}: nothing selected");
    let eps = 1e-6;
    let mut checked = 0;
    for name in ["W_enc", "b_enc", "W_dec", "b_dec"] {
        let want = grads.get(name).unwrap().to_vec();
        for e in 0..want.len() {
            let (plus, minus) = (nudged(&sae, name, e, eps), nudged(&sae, name, e, -eps));
            let (lp, kp, _) = naive_loss(&plus, &x, aux.as_ref(), Some(&resid));
            let (lm, km, _) = naive_loss(&minus, &x, aux.as_ref(), Some(&resid));
            assert!(
                kp == keep && km == keep,
                "{arch}: {name}[{e}] crosses a kink"
            );
            let fd = (lp - lm) / (2.0 * eps);
            assert!(
                (want[e] - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "{arch}: d{name}[{e}] = {} by hand, {fd} by finite differences",
                want[e]
            );
            checked += (fd.abs() > 1e-6) as usize;
        }
    }
    assert!(checked > 20, "{arch}: only {checked} non-zero gradients");
}

#[test]
fn rescaled_topk_family_gradients_match_finite_differences() {
    let dead: Vec<bool> = (0..D_SAE).map(|i| i % 3 == 1).collect();
    let groups = MatryoshkaWidths::new(&[3, 6, D_SAE]).unwrap();
    for arch in [
        Architecture::TopK { k: 3 },
        Architecture::BatchTopK { k: 2 },
        Architecture::Matryoshka { k: 2, groups },
    ] {
        check(arch, 1, None);
        for k_aux in [2, 5] {
            let aux = Aux {
                dead: &dead,
                k_aux,
                coeff: 0.5,
            };
            check(arch, 2, Some(aux));
        }
    }
}

#[test]
fn rescaling_outside_the_topk_family_is_refused() {
    let (sae, x) = random_sae(Architecture::TopK { k: 3 }, 1);
    let mut relu = S64::zeros(SaeConfig::new(D_IN, D_SAE, Architecture::Relu).unwrap()).unwrap();
    relu.w_enc.clone_from(&sae.w_enc);
    let step = StepConfig {
        rescale_acts_by_decoder_norm: true,
        ..StepConfig::default()
    };
    let mut grads = GradientsOf::zeros_like(&relu);
    let err = relu
        .forward_backward(&x, N, &step, &mut WorkspaceOf::default(), &mut grads)
        .unwrap_err();
    assert!(err.to_string().contains("topk"), "{err}");
}

/// The f32 SAE of `sae`.
fn to_f32(sae: &S64) -> Sae {
    let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let mut out = Sae::zeros(sae.cfg.clone()).unwrap();
    out.w_enc = f(&sae.w_enc);
    out.b_enc = f(&sae.b_enc);
    out.w_dec = f(&sae.w_dec);
    out.b_dec = f(&sae.b_dec);
    out.threshold = f(&sae.threshold);
    out
}

#[test]
fn folding_the_norms_keeps_the_codes_and_makes_the_decoder_unit_norm() {
    // TopK (per-row selection) and BatchTopK (inference by its threshold, in units of the rescaled codes).
    for arch in [
        Architecture::TopK { k: 3 },
        Architecture::BatchTopK { k: 3 },
    ] {
        let (mut sae, x) = random_sae(arch, 5);
        let z = naive_z(&sae, &x);
        let keep = if arch.name() == "topk" {
            select(&z, 3, false, &[true; D_SAE])
        } else {
            sae.threshold.fill(0.4);
            z.iter().map(|&v| v > 0.4).collect()
        };
        let want: Vec<f64> = z
            .iter()
            .zip(&keep)
            .map(|(&v, &k)| if k { v } else { 0.0 })
            .collect();
        assert!(want.iter().any(|&v| v != 0.0) && want.contains(&0.0));
        let mut folded = to_f32(&sae);
        init::fold_decoder_norms(&mut folded);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let codes = folded.encode(&xf, N).unwrap();
        for (e, (&got, &w)) in codes.iter().zip(&want).enumerate() {
            assert!(
                (got as f64 - w).abs() < 1e-5 * (1.0 + w.abs()),
                "{arch}: code {e}: folded {got}, rescaled {w}"
            );
        }
        for row in folded.w_dec.chunks_exact(D_IN) {
            let n = row.iter().map(|&v| v * v).sum::<f32>().sqrt();
            assert!(
                (n - 1.0).abs() < 1e-5,
                "{arch}: folded decoder row norm {n}"
            );
        }
        // The reconstruction is the rescaled one too.
        let xhat = folded.decode(&codes, N).unwrap();
        for r in 0..N {
            let want = decode(&sae, &z, &keep, r, D_SAE, true);
            for j in 0..D_IN {
                assert!((xhat[r * D_IN + j] as f64 - want[j]).abs() < 1e-4);
            }
        }
    }
}

#[test]
fn the_trainer_starts_rows_at_the_init_norm_keeps_them_free_and_saves_the_fold() {
    let (d, d_sae, batch) = (8, 32, 64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let rows: Vec<f32> = (0..batch * 20 * d)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let sae_cfg = SaeConfig::new(d, d_sae, Architecture::TopK { k: 4 }).unwrap();
    let mut cfg = TrainConfig::for_sae(sae_cfg, batch, (batch * 20) as u64);
    cfg.threads = 1;
    cfg.decoder_init_norm = Some(0.1);
    let mut src = MemorySource::new(&rows, d, true).unwrap();
    let mut t = Trainer::new(cfg.clone(), &mut src, None).unwrap();
    let norms = |w: &[f32]| -> Vec<f32> {
        w.chunks_exact(d)
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect()
    };
    assert!(norms(&t.training_sae().w_dec)
        .iter()
        .all(|n| (n - 0.1).abs() < 1e-6));
    t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    let trained = norms(&t.training_sae().w_dec);
    let spread = trained.iter().cloned().fold(0.0f32, f32::max)
        - trained.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!(
        spread > 1e-3,
        "decoder rows stayed at one norm: {trained:?}"
    );
    // The saved SAE: the norms, then the input scale folded in (rows of norm 1/s).
    let saved = t.inference_sae();
    let s = t.scale();
    for n in norms(&saved.w_dec) {
        assert!(
            (n * s - 1.0).abs() < 1e-4,
            "saved row norm {n}, 1/s = {}",
            1.0 / s
        );
    }
    let mut by_hand = t.training_sae().clone();
    init::fold_decoder_norms(&mut by_hand);
    init::fold_input_scale(&mut by_hand, s);
    assert_eq!(saved.w_enc, by_hand.w_enc);
    assert_eq!(saved.w_dec, by_hand.w_dec);
}

#[test]
fn a_saelens_topk_with_rescaling_on_loads_with_the_norms_folded_in() {
    // SAELens' TopK saved unfolded (`rescale_acts_by_decoder_norm: true`, rows of norms 0.05 … 1.85).
    let (sae, x) = random_sae(Architecture::TopK { k: 3 }, 7);
    let dir = tempfile::tempdir().unwrap();
    saelens::save(&to_f32(&sae), dir.path()).unwrap();
    let cfg_path = dir.path().join("cfg.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["rescale_acts_by_decoder_norm"] = serde_json::Value::Bool(true);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let loaded = saelens::load(dir.path()).unwrap();
    let z = naive_z(&sae, &x);
    let keep = select(&z, 3, false, &[true; D_SAE]);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let codes = loaded.encode(&xf, N).unwrap();
    for (e, &got) in codes.iter().enumerate() {
        let want = if keep[e] { z[e] } else { 0.0 };
        assert!(
            (got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
            "code {e}: loaded {got}, rescaled {want}"
        );
    }
}
