//! Training transcoders with the SAE trainer: rows are `[x | y]`, the loss is on `y`.
//!
//! - Proof that the two code paths agree: a transcoder whose target is its own input (`[x | x]` rows)
//!   trains to the same weights, bit for bit, as an SAE on `x` with the same seed — once the SAE, like every
//!   transcoder, does not subtract `b_dec` from its input. With SAELens' default `apply_b_dec_to_input =
//!   true` the SAE differs (its encoder sees `x − b_dec`, and `b_dec` gets the extra gradient
//!   `−W_enc Σ_r G_r`), which is the one expected difference.
//! - A planted map `x → y` (sparse features with separate input and output directions, plus a linear part
//!   that only a skip path represents exactly) is learned; the skip path helps as it should.

use std::ops::ControlFlow;

use rand::{Rng, SeedableRng};
use zephyra_sae::schedule::Decay;
use zephyra_sae::train::{evaluate, MemorySource, TrainConfig, Trainer};
use zephyra_sae::{Architecture, SaeConfig};

const D_IN: usize = 12;
const D_OUT: usize = 6;
const N_FEATURES: usize = 24;

fn unit_rows(rng: &mut impl Rng, n: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n * d];
    for row in out.chunks_mut(d) {
        row.iter_mut().for_each(|v| *v = rng.random::<f32>() - 0.5);
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

/// The input half of [`planted`] rows (no linear part): data for an SAE on the transcoder's inputs.
fn planted_inputs(n: usize, seed: u64) -> Vec<f32> {
    planted(n, seed, 0.0)
        .chunks(D_IN + D_OUT)
        .flat_map(|r| &r[..D_IN])
        .copied()
        .collect()
}

/// `n` planted rows `[x | y]`: 3 of `N_FEATURES` features active per row with amplitude `a ∈ [0.5, 2]`,
/// `x = 5 Σ a e_f + 0.3 + noise`, `y = 3 Σ a u_f + linear · A x` (`A` random `[D_OUT, D_IN]`). The
/// dictionary is fixed; `seed` picks the rows.
fn planted(n: usize, seed: u64, linear: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(77);
    let enc_dirs = unit_rows(&mut rng, N_FEATURES, D_IN);
    let dec_dirs = unit_rows(&mut rng, N_FEATURES, D_OUT);
    let a_mat: Vec<f32> = (0..D_OUT * D_IN)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * (D_IN + D_OUT));
    for _ in 0..n {
        let mut x = vec![0.3f32; D_IN];
        let mut y = vec![0.0f32; D_OUT];
        for _ in 0..3 {
            let f = rng.random_range(0..N_FEATURES);
            let a = 0.5 + 1.5 * rng.random::<f32>();
            for (v, e) in x.iter_mut().zip(&enc_dirs[f * D_IN..(f + 1) * D_IN]) {
                *v += 5.0 * a * e;
            }
            for (v, u) in y.iter_mut().zip(&dec_dirs[f * D_OUT..(f + 1) * D_OUT]) {
                *v += 3.0 * a * u;
            }
        }
        x.iter_mut()
            .for_each(|v| *v += 0.01 * (rng.random::<f32>() - 0.5));
        for (v, a_row) in y.iter_mut().zip(a_mat.chunks(D_IN)) {
            *v += linear * a_row.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
        }
        out.extend_from_slice(&x);
        out.extend_from_slice(&y);
    }
    out
}

fn settings(sae: SaeConfig, steps: u64) -> TrainConfig {
    let mut cfg = TrainConfig::for_sae(sae, 64, 64 * steps);
    cfg.lr = 3e-3;
    cfg.init_rows = 500;
    cfg.threads = 1;
    cfg.dead_after_tokens = 64 * 10; // AuxK and resampling take part
    cfg.resample_every_steps = if cfg.resample_every_steps > 0 { 30 } else { 0 };
    // One recipe for both code paths: topk SAEs default to SAELens' parametrisation, transcoders do not.
    cfg.decoder_init_norm = None;
    cfg.lr_warmup_steps = steps / 100;
    cfg.lr_decay = Decay::Linear;
    cfg.aux_coeff = 1.0 / 32.0;
    cfg
}

fn train(cfg: TrainConfig, rows: Vec<f32>, width: usize) -> Trainer {
    let mut src = MemorySource::new(rows, width, true).unwrap();
    let mut t = Trainer::new(cfg, &mut src, None).unwrap();
    let out = t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    assert!(out.finished);
    t
}

#[test]
fn transcoder_with_target_equal_to_input_reproduces_the_sae() {
    let x = planted_inputs(3000, 1);
    let xx: Vec<f32> = x.chunks(D_IN).flat_map(|r| [r, r].concat()).collect();
    for arch in [
        Architecture::Relu,
        Architecture::ReluUnit,
        Architecture::TopK { k: 3 },
        Architecture::BatchTopK { k: 3 },
        Architecture::JumpRelu,
    ] {
        let mut sae_cfg = SaeConfig::new(D_IN, 48, arch).unwrap();
        sae_cfg.apply_b_dec_to_input = false;
        let tc_cfg = SaeConfig::transcoder(D_IN, D_IN, 48, arch, false).unwrap();
        let sae = train(settings(sae_cfg, 120), x.clone(), D_IN);
        let tc = train(settings(tc_cfg, 120), xx.clone(), 2 * D_IN);
        assert_eq!(sae.scale(), tc.scale(), "{arch}");
        let (a, b) = (sae.training_sae(), tc.training_sae());
        for ((name, u), (_, v)) in a.params().into_iter().zip(b.params()) {
            assert!(
                u == v,
                "{arch}: {name} differs between the SAE and the transcoder"
            );
        }
        assert_eq!(a.threshold, b.threshold, "{arch}");
        // Moved away from the initialisation (the comparison is not of two untouched models).
        let init = zephyra_sae::Sae::init(
            a.cfg.clone(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
        assert!(a.w_dec != init.w_dec, "{arch}: no training happened");

        // The expected difference: an SAE that subtracts b_dec from its input trains differently.
        let default_sae = SaeConfig::new(D_IN, 48, arch).unwrap();
        let mut cfg = settings(default_sae, 120);
        cfg.b_dec_init = zephyra_sae::train::BDecInit::GeometricMedian;
        let mut tc_cfg = settings(
            SaeConfig::transcoder(D_IN, D_IN, 48, arch, false).unwrap(),
            120,
        );
        tc_cfg.b_dec_init = zephyra_sae::train::BDecInit::GeometricMedian;
        let (c, d) = (
            train(cfg, x.clone(), D_IN),
            train(tc_cfg, xx.clone(), 2 * D_IN),
        );
        assert!(
            c.training_sae().w_enc != d.training_sae().w_enc,
            "{arch}: apply_b_dec_to_input made no difference"
        );
    }
}

/// Quadratic-L0 JumpReLU with its thresholds started at the target rate: the transcoder (which keeps its
/// inputs apart from its targets for this) and the SAE start from the same thresholds and train to the same
/// weights; at the start each latent fires on about target/d_sae of the first rows, so L0 is at the target.
#[test]
fn target_rate_thresholds_agree_between_transcoder_and_sae_and_start_at_the_target() {
    use zephyra_sae::train::ThresholdInit;
    use zephyra_sae::JumpReluSparsity;
    let x = planted_inputs(3000, 2);
    let xx: Vec<f32> = x.chunks(D_IN).flat_map(|r| [r, r].concat()).collect();
    let recipe = |sae: SaeConfig, steps: u64| {
        let mut cfg = settings(sae, steps);
        cfg.jumprelu_sparsity = JumpReluSparsity::QuadraticL0 { target: 4.0 };
        cfg.sparsity_coeff = 1.0;
        cfg.jumprelu_init_threshold = ThresholdInit::TargetRate;
        cfg
    };
    let mut sae_cfg = SaeConfig::new(D_IN, 48, Architecture::JumpRelu).unwrap();
    sae_cfg.apply_b_dec_to_input = false;
    let tc_cfg = SaeConfig::transcoder(D_IN, D_IN, 48, Architecture::JumpRelu, false).unwrap();
    // Zero steps' worth of training is refused, so one step at lr ≈ 0 shows the starting thresholds.
    let start = |cfg: SaeConfig, rows: &[f32], width: usize| {
        let mut c = recipe(cfg, 1);
        c.lr = 1e-30;
        train(c, rows.to_vec(), width)
    };
    let (a, b) = (
        start(sae_cfg.clone(), &x, D_IN),
        start(tc_cfg.clone(), &xx, 2 * D_IN),
    );
    assert_eq!(a.training_sae().threshold, b.training_sae().threshold);
    let theta = &a.training_sae().threshold;
    assert!(theta.iter().all(|&t| t >= 0.001), "{theta:?}");
    assert!(
        theta.iter().any(|&t| t > 0.01),
        "thresholds moved off the floor: {theta:?}"
    );
    // L0 on the first 500 rows (the ones the thresholds came from), scaled as in training.
    let sae = a.training_sae();
    let scaled: Vec<f32> = x[..500 * D_IN].iter().map(|v| v * a.scale()).collect();
    let codes = sae.encode(&scaled, 500).unwrap();
    let l0 = codes.iter().filter(|&&c| c != 0.0).count() as f64 / 500.0;
    assert!((l0 - 4.0).abs() < 0.5, "L0 at the start {l0}, target 4");

    // A value start is that value on every latent.
    let mut fixed = recipe(sae_cfg.clone(), 1);
    fixed.jumprelu_init_threshold = ThresholdInit::Value(0.25);
    fixed.lr = 1e-30;
    let fixed = train(fixed, x.clone(), D_IN);
    assert!(fixed.training_sae().threshold.iter().all(|&t| t == 0.25));

    // Trained on, the two paths stay bit-identical.
    let (c, d) = (
        train(recipe(sae_cfg, 60), x.clone(), D_IN),
        train(recipe(tc_cfg, 60), xx, 2 * D_IN),
    );
    for ((name, u), (_, v)) in c
        .training_sae()
        .params()
        .into_iter()
        .zip(d.training_sae().params())
    {
        assert!(u == v, "{name} differs between the SAE and the transcoder");
    }
}

/// `threshold_lr_scale` multiplies the thresholds' step and nothing else. Adam's first step moves every
/// parameter by about lr·sign(g), so after one step at scale 4 each threshold that had a gradient has moved
/// 4× as far as at scale 1 (in the same direction), and every other parameter is bit-identical.
#[test]
fn threshold_lr_scale_multiplies_the_thresholds_first_step_and_nothing_else() {
    use zephyra_sae::train::ThresholdInit;
    use zephyra_sae::JumpReluSparsity;
    let x = planted_inputs(3000, 3);
    let mut sae_cfg = SaeConfig::new(D_IN, 48, Architecture::JumpRelu).unwrap();
    sae_cfg.apply_b_dec_to_input = false;
    let one_step = |lr: f32, scale: f64| {
        let mut c = settings(sae_cfg.clone(), 1);
        c.jumprelu_sparsity = JumpReluSparsity::QuadraticL0 { target: 4.0 };
        c.sparsity_coeff = 1.0;
        c.jumprelu_init_threshold = ThresholdInit::TargetRate;
        // A wide window, so that most thresholds see pre-activations near them in the first batch.
        c.bandwidth = 0.5;
        c.lr = lr;
        c.threshold_lr_scale = scale;
        train(c, x.clone(), D_IN)
    };
    let lr = 1e-4;
    let start = one_step(1e-30, 1.0);
    let (plain, scaled) = (one_step(lr, 1.0), one_step(lr, 4.0));
    let theta0 = &start.training_sae().threshold;
    let (t1, t4) = (
        &plain.training_sae().threshold,
        &scaled.training_sae().threshold,
    );
    let mut moved = 0;
    for i in 0..theta0.len() {
        let (d1, d4) = (t1[i] - theta0[i], t4[i] - theta0[i]);
        if d1 == 0.0 {
            assert_eq!(d4, 0.0, "latent {i}: no gradient at scale 1, a step at 4");
            continue;
        }
        // Far enough from 0 that the projection θ ≥ 0 leaves the step alone.
        if theta0[i] > 8.0 * lr {
            moved += 1;
            let ratio = d4 / d1;
            assert!(
                (ratio - 4.0).abs() < 0.01,
                "latent {i}: steps {d1} and {d4}"
            );
            assert!(
                d1.abs() > 0.5 * lr && d1.abs() < 1.5 * lr,
                "latent {i}: step {d1}, lr {lr}"
            );
        }
    }
    assert!(moved >= 24, "only {moved} of 48 thresholds had a gradient");
    for ((name, u), (_, v)) in plain
        .training_sae()
        .params()
        .into_iter()
        .zip(scaled.training_sae().params())
    {
        if name != "threshold" {
            assert!(u == v, "{name} differs with the threshold's scale");
        }
    }
}

/// Held-out FVE of `y` and L0 of the folded (raw-activation) transcoder.
fn holdout(t: &Trainer, linear: f32) -> (f64, f64) {
    let mut held = MemorySource::new(planted(2000, 99, linear), D_IN + D_OUT, false).unwrap();
    let e = evaluate(&t.inference_sae(), &mut held, 256, u64::MAX).unwrap();
    assert_eq!(e.n_rows, 2000);
    (e.fve, e.l0)
}

#[test]
fn topk_transcoder_learns_a_planted_map_and_the_skip_path_takes_the_linear_part() {
    let arch = Architecture::TopK { k: 3 };
    let mut fves = Vec::new();
    for (linear, skip) in [(0.0, false), (0.6, false), (0.6, true)] {
        let rows = planted(20_000, 2, linear);
        let cfg = SaeConfig::transcoder(D_IN, D_OUT, 64, arch, skip).unwrap();
        let t = train(settings(cfg, 1500), rows, D_IN + D_OUT);
        let (fve, l0) = holdout(&t, linear);
        assert!(l0 <= 3.0 + 1e-9 && l0 > 2.0, "skip {skip}: L0 {l0}");
        let sae = t.inference_sae();
        assert_eq!(sae.w_skip.iter().any(|&w| w != 0.0), skip);
        eprintln!("linear part {linear}, skip {skip}: held-out FVE of y {fve:.4}");
        fves.push(fve);
    }
    assert!(
        fves[0] > 0.8,
        "sparse map without a linear part: FVE {}",
        fves[0]
    );
    assert!(fves[2] > 0.85, "skip transcoder: FVE {}", fves[2]);
    assert!(
        fves[2] > fves[1] + 0.03,
        "the skip path did not help: {fves:?}"
    );
}
