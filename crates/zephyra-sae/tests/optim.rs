//! Adam, clipping and schedules against values worked out by hand.

use zephyra_sae::optim::{clip_global_norm, global_norm, Adam, AdamConfig};

#[test]
fn two_adam_steps_match_the_formula_in_f64() {
    let cfg = AdamConfig {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut adam = Adam::new(cfg, &[("w".into(), 2)]);
    let mut p = vec![1.0f32, -2.0];
    let (g1, g2) = ([0.5f32, -4.0], [0.1f32, 2.0]);
    let lr = 0.01;
    adam.begin_step();
    adam.update(0, &mut p, &g1, lr).unwrap();
    // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g|+ε) = ±lr.
    assert!(
        (p[0] - 0.99).abs() < 1e-6 && (p[1] + 1.99).abs() < 1e-6,
        "{p:?}"
    );
    adam.begin_step();
    adam.update(0, &mut p, &g2, lr).unwrap();
    for i in 0..2 {
        let (a, b) = (g1[i] as f64, g2[i] as f64);
        let m = 0.9 * (0.1 * a) + 0.1 * b;
        let v = 0.99 * (0.01 * a * a) + 0.01 * b * b;
        let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.9801));
        let start = [1.0, -2.0][i] - 0.01 * a.signum();
        let want = start - 0.01 * mh / (vh.sqrt() + 1e-8);
        assert!(
            (p[i] as f64 - want).abs() < 1e-6,
            "element {i}: {} vs {want}",
            p[i]
        );
    }
}

#[test]
fn weight_decay_is_decoupled_from_the_gradient() {
    let cfg = AdamConfig {
        weight_decay: 0.5,
        ..AdamConfig::default()
    };
    let mut adam = Adam::new(cfg, &[("w".into(), 1)]);
    let mut p = vec![2.0f32];
    adam.begin_step();
    adam.update(0, &mut p, &[0.0], 0.1).unwrap();
    // Zero gradient: only the decay acts, p ← p (1 − lr·wd) = 2 × 0.95.
    assert!((p[0] - 1.9).abs() < 1e-6, "{p:?}");
}

#[test]
fn adam_minimises_a_quadratic_and_checks_lengths() {
    let mut adam = Adam::new(AdamConfig::default(), &[("w".into(), 3)]);
    let target = [3.0f32, -1.0, 0.5];
    let mut p = vec![0.0f32; 3];
    for _ in 0..2000 {
        let g: Vec<f32> = p.iter().zip(&target).map(|(a, b)| 2.0 * (a - b)).collect();
        adam.begin_step();
        adam.update(0, &mut p, &g, 0.01).unwrap();
    }
    for (a, b) in p.iter().zip(&target) {
        assert!((a - b).abs() < 1e-2, "{p:?}");
    }
    assert!(adam.update(0, &mut [0.0; 2], &[0.0; 2], 0.1).is_err());
    assert!(adam.update(1, &mut [0.0; 3], &[0.0; 3], 0.1).is_err());
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let mut a = vec![3.0f32, 4.0];
    let mut b = vec![12.0f32];
    assert!((global_norm(&[&a, &b]) - 13.0).abs() < 1e-9);
    let before = clip_global_norm(&mut [&mut a, &mut b], 6.5);
    assert!((before - 13.0).abs() < 1e-9);
    assert_eq!((a.clone(), b.clone()), (vec![1.5, 2.0], vec![6.0]));
    let before = clip_global_norm(&mut [&mut a, &mut b], 100.0);
    assert!((before - 6.5).abs() < 1e-6);
    assert_eq!(a, vec![1.5, 2.0], "below the limit nothing changes");
}
