//! L0 / L1 / latent health / density histogram against hand-computed values.

use zephyra_analysis::sparsity::density_histogram;
use zephyra_analysis::SparsityAccumulator;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[rustfmt::skip]
const CODES: [f32; 20] = [
    1.0, 0.0, 0.0, 2.0,
    0.0, 0.0, 0.0, -1.0,
    0.5, 0.0, 0.0, 1.0,
    0.0, 0.0, 0.0, 1.0,
    0.0, 0.0, 0.0, 1.0,
];

#[test]
fn hand_computed_five_tokens() {
    let mut acc = SparsityAccumulator::new(4);
    acc.add(&CODES[..8]).unwrap();
    acc.add(&CODES[8..]).unwrap();
    let s = acc.finish().unwrap();
    assert_eq!(s.n_tokens, 5);
    close(s.l0, 7.0 / 5.0); // 2 + 1 + 2 + 1 + 1 active
    close(s.l1, 7.5 / 5.0); // 3 + 1 + 1.5 + 1 + 1
    assert_eq!(acc.fire_counts(), &[2, 0, 0, 5]);
    assert_eq!(s.n_dead, 2);
    close(s.dead_fraction, 0.5);
    // Densities 0.4 and 1.0: both above 10 %.
    assert_eq!(s.n_dense, 2);
    close(s.dense_fraction, 0.5);
    // log10(1/5) = -0.699 -> 3 bins of 0.25 from -0.75; log10 0.4 = -0.398 in [-0.5,-0.25); log10 1 = 0 in
    // the last bin (closed on the right).
    let h = &s.density_histogram;
    assert_eq!(h.edges, vec![-0.75, -0.5, -0.25, 0.0]);
    assert_eq!(h.counts, vec![0, 1, 1]);
    assert_eq!(h.n_dead, 2);
}

#[test]
fn dense_threshold_is_strict() {
    // 10 tokens, latent 0 fires once (exactly 10 %: not dense), latent 1 twice (20 %: dense).
    let mut codes = vec![0f32; 20];
    codes[0] = 1.0;
    codes[1] = 1.0;
    codes[3] = 1.0;
    let mut acc = SparsityAccumulator::new(2);
    acc.add(&codes).unwrap();
    let s = acc.finish().unwrap();
    assert_eq!(s.n_dense, 1);
    assert_eq!(s.n_dead, 0);
    close(s.l0, 0.3);
}

#[test]
fn histogram_covers_the_lowest_density() {
    // n = 200000: lowest density 5e-6, log10 = -5.30 -> 22 bins from -5.5.
    let h = density_histogram(&[1, 10, 100_000, 0, 200_000], 200_000);
    assert_eq!(h.counts.len(), 22);
    assert!((h.edges[0] + 5.5).abs() < 1e-12);
    assert_eq!(h.counts.iter().sum::<u64>(), 4);
    assert_eq!(h.n_dead, 1);
    assert_eq!(h.counts[0], 1); // -5.30 in [-5.5, -5.25)
    assert_eq!(h.counts[4], 1); // -4.30 in [-4.5, -4.25)
    assert_eq!(h.counts[20], 1); // -0.301 in [-0.5, -0.25)
    assert_eq!(h.counts[21], 1); // 0
}

#[test]
fn ragged_codes_are_rejected() {
    let mut acc = SparsityAccumulator::new(3);
    assert!(acc.add(&[0.0; 4]).is_err());
    assert!(acc.finish().is_err());
}
