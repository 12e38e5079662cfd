use super::*;

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        n_features: 24,
        d: 16,
        seed,
        max_prob: 0.4,
        min_prob: 0.05,
        ..SynthConfig::default()
    }
}

#[test]
fn deterministic_for_a_seed_and_independent_of_order() {
    let a = SynthModel::new(small(7)).unwrap();
    let b = SynthModel::new(small(7)).unwrap();
    assert_eq!(a, b);
    let late = b.block(TRAIN_STREAM, 3);
    let _ = a.block(TRAIN_STREAM, 0);
    assert_eq!(a.block(TRAIN_STREAM, 3), late);
    assert_ne!(a.block(TRAIN_STREAM, 2).acts, late.acts);
    assert_ne!(a.block(EVAL_STREAM, 3).acts, late.acts);
    let c = SynthModel::new(small(8)).unwrap();
    assert_ne!(c.directions, a.directions);
    assert_ne!(c.block(TRAIN_STREAM, 3).acts, late.acts);
}

#[test]
fn rows_are_the_sum_of_their_features_plus_bias() {
    let cfg = SynthConfig {
        noise_std: 0.0,
        ..small(1)
    };
    let m = SynthModel::new(cfg).unwrap();
    let b = m.block(TRAIN_STREAM, 0);
    let d = m.cfg.d;
    assert_eq!(b.n_rows(), BLOCK_ROWS);
    for r in 0..50 {
        let mut want: Vec<f64> = m.bias.iter().map(|&v| f64::from(v)).collect();
        let (f, v) = b.row(r);
        for (&i, &a) in f.iter().zip(v) {
            assert!(a > 0.0);
            for (w, &u) in want.iter_mut().zip(&m.directions[i as usize * d..][..d]) {
                *w += f64::from(a) * f64::from(u);
            }
        }
        for (x, w) in b.acts[r * d..(r + 1) * d].iter().zip(&want) {
            assert!((f64::from(*x) - w).abs() < 1e-5);
        }
    }
    let bias_norm: f32 = m.bias.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((bias_norm - 1.0).abs() < 1e-5);
    for row in m.directions.chunks_exact(d) {
        assert!((row.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

/// Firing frequency of each feature over `blocks` blocks.
fn rates(m: &SynthModel, blocks: u64) -> Vec<f64> {
    let mut counts = vec![0u64; m.cfg.n_features];
    for k in 0..blocks {
        for &f in &m.block(TRAIN_STREAM, k).feature {
            counts[f as usize] += 1;
        }
    }
    let n = (blocks as usize * BLOCK_ROWS) as f64;
    counts.iter().map(|&c| c as f64 / n).collect()
}

/// |rate − p| within 5 binomial standard errors for every feature.
fn assert_rates(got: &[f64], want: &[f64], n: f64) {
    for (i, (g, p)) in got.iter().zip(want).enumerate() {
        let se = (p * (1.0 - p) / n).sqrt();
        assert!((g - p).abs() < 5.0 * se, "feature {i}: rate {g}, p {p}");
    }
}

#[test]
fn independent_features_fire_at_their_zipf_probability() {
    let m = SynthModel::new(small(2)).unwrap();
    let got = rates(&m, 16);
    assert_rates(&got, &m.probabilities, (16 * BLOCK_ROWS) as f64);
    assert!(m.probabilities[0] > m.probabilities[1] && m.probabilities[1] > m.probabilities[23]);
}

#[test]
fn correlated_firing_keeps_the_marginals_and_correlates() {
    let cfg = SynthConfig {
        correlation_rank: 2,
        correlation_strength: 0.6,
        ..small(3)
    };
    let m = SynthModel::new(cfg.clone()).unwrap();
    let n_blocks = 16u64;
    let got = rates(&m, n_blocks);
    assert_rates(
        &got,
        &m.probabilities,
        (n_blocks as usize * BLOCK_ROWS) as f64,
    );
    // Mean |phi| over feature pairs: near 0 when independent, clearly above with shared factors.
    let phi = |m: &SynthModel| {
        let n = m.cfg.n_features;
        let mut both = vec![0f64; n * n];
        let mut one = vec![0f64; n];
        let mut rows = 0f64;
        for k in 0..n_blocks {
            let b = m.block(TRAIN_STREAM, k);
            for r in 0..b.n_rows() {
                let (f, _) = b.row(r);
                for &i in f {
                    one[i as usize] += 1.0;
                    for &j in f {
                        both[i as usize * n + j as usize] += 1.0;
                    }
                }
                rows += 1.0;
            }
        }
        let mut sum = 0.0;
        for i in 0..n {
            for j in (i + 1)..n {
                let (pi, pj) = (one[i] / rows, one[j] / rows);
                let cov = both[i * n + j] / rows - pi * pj;
                sum += (cov / (pi * (1.0 - pi) * pj * (1.0 - pj)).sqrt()).abs();
            }
        }
        sum / (n * (n - 1) / 2) as f64
    };
    let independent = phi(&SynthModel::new(small(3)).unwrap());
    let correlated = phi(&m);
    assert!(independent < 0.02, "{independent}");
    assert!(
        correlated > 3.0 * independent + 0.03,
        "{correlated} vs {independent}"
    );
}

#[test]
fn hierarchy_holds_in_every_row() {
    let cfg = SynthConfig {
        n_features: 64,
        hierarchy: Some(HierarchyConfig {
            roots: 4,
            branching: 3,
            depth: 2,
            exclusive_portion: 1.0,
        }),
        ..small(4)
    };
    let m = SynthModel::new(cfg).unwrap();
    assert_eq!(m.hierarchy.parents.len(), 4 + 12);
    let parent = m.hierarchy.parent_of(64);
    let mut child_fired = 0;
    for k in 0..4 {
        let b = m.block(TRAIN_STREAM, k);
        for r in 0..b.n_rows() {
            let (f, _) = b.row(r);
            for &i in f {
                if let Some(p) = parent[i as usize] {
                    assert!(f.contains(&p), "child {i} fired without parent {p}");
                    child_fired += 1;
                }
            }
            for p in &m.hierarchy.parents {
                let on = p.children.iter().filter(|c| f.contains(c)).count();
                assert!(
                    on <= 1,
                    "exclusive children of {} fired together",
                    p.feature
                );
            }
        }
    }
    assert!(
        child_fired > 100,
        "children too rare to test: {child_fired}"
    );
}

#[test]
fn orthogonal_directions_are_orthonormal() {
    let cfg = SynthConfig {
        n_features: 16,
        orthogonal: true,
        ..small(5)
    };
    let m = SynthModel::new(cfg).unwrap();
    let d = m.cfg.d;
    for i in 0..16 {
        for j in 0..16 {
            let dot: f32 = (0..d)
                .map(|k| m.directions[i * d + k] * m.directions[j * d + k])
                .sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-5, "{i} {j} {dot}");
        }
    }
}

#[test]
fn bad_configs_are_refused_with_the_flag() {
    let too_many = SynthConfig {
        orthogonal: true,
        n_features: 17,
        ..small(0)
    };
    let e = SynthModel::new(too_many).unwrap_err().to_string();
    assert!(e.contains("--orthogonal"), "{e}");
    let e = SynthModel::new(SynthConfig {
        min_prob: 0.5,
        max_prob: 0.2,
        ..small(0)
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--min-prob"), "{e}");
}
