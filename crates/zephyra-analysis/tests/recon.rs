//! Reconstruction figures against hand-computed values and a plain two-pass recomputation.

use zephyra_analysis::{AnalysisError, ReconAccumulator, ReconStats};

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
}

// x = (1,2),(3,4),(5,0); x̂ = (1,1),(3,3),(4,0).
const X: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 0.0];
const XH: [f32; 6] = [1.0, 1.0, 3.0, 3.0, 4.0, 0.0];

/// The statistics of one batch of 2-dimensional rows `x` reconstructed as `xh`.
fn two_dim(x: &[f32], xh: &[f32]) -> ReconStats {
    let mut acc = ReconAccumulator::new(2);
    acc.add(x, xh).unwrap();
    acc.finish().unwrap()
}

#[test]
fn hand_computed_three_tokens() {
    let s = two_dim(&X, &XH);
    // Errors (0,1),(0,1),(1,0): SSE = 3 over 3 tokens x 2 dims.
    close(s.mse, 0.5, 1e-12);
    close(s.mse_per_token, 1.0, 1e-12);
    // mean(x) = (3,2); deviations (-2,0),(0,2),(2,-2): Σ = 16; FVE = 1 - 3/16.
    close(s.fve, 0.8125, 1e-12);
    close(s.variance_per_token, 16.0 / 3.0, 1e-12);
    // Σ‖x̂‖² = 2 + 18 + 16 = 36, Σ⟨x,x̂⟩ = 3 + 21 + 20 = 44.
    close(s.rel_bias, 36.0 / 44.0, 1e-12);
    // cosines 3/√10, 21/(5√18), 20/20.
    let cos = (3.0 / 10f64.sqrt() + 21.0 / (5.0 * 18f64.sqrt()) + 1.0) / 3.0;
    close(s.cosine, cos, 1e-12);
    close(s.mean_norm, (5f64.sqrt() + 5.0 + 5.0) / 3.0, 1e-12);
    assert_eq!(s.n_tokens, 3);
}

#[test]
fn streaming_equals_one_batch() {
    let mut one = ReconAccumulator::new(2);
    one.add(&X, &XH).unwrap();
    let mut split = ReconAccumulator::new(2);
    split.add(&X[..2], &XH[..2]).unwrap();
    split.add(&X[2..], &XH[2..]).unwrap();
    let (a, b) = (one.finish().unwrap(), split.finish().unwrap());
    close(a.fve, b.fve, 1e-12);
    close(a.mse, b.mse, 1e-12);
    close(a.cosine, b.cosine, 1e-12);
    close(a.rel_bias, b.rel_bias, 1e-12);
    for (m, want) in split.mean().iter().zip([3.0, 2.0]) {
        close(*m, want, 1e-12);
    }
}

/// Large common offset (like a residual stream's mean direction): the centred variance is tiny compared
/// with Σ‖x‖², so a `Σx² − n·mean²` shortcut would cancel catastrophically. Compare with a plain two-pass
/// recomputation over the dumped activations, over uneven batches.
#[test]
fn large_offset_matches_two_pass_recomputation() {
    let d = 7;
    let n = 1000;
    let mut x = Vec::with_capacity(n * d);
    let mut xh = Vec::with_capacity(n * d);
    let mut state = 12345u64;
    let mut rnd = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    for _ in 0..n {
        for j in 0..d {
            let v = 3000.0 + j as f32 + rnd();
            x.push(v);
            xh.push(v + 0.1 * rnd());
        }
    }
    let mut acc = ReconAccumulator::new(d);
    let mut start = 0;
    for rows in [1usize, 2, 333, 64, 600] {
        let end = (start + rows * d).min(x.len());
        acc.add(&x[start..end], &xh[start..end]).unwrap();
        start = end;
    }
    assert_eq!(start, x.len());
    let s = acc.finish().unwrap();

    // Plain recomputation.
    let mut mean = vec![0f64; d];
    for r in x.chunks(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += f64::from(v) / n as f64;
        }
    }
    let mut var = 0f64;
    let mut sse = 0f64;
    for (r, h) in x.chunks(d).zip(xh.chunks(d)) {
        for j in 0..d {
            var += (f64::from(r[j]) - mean[j]).powi(2);
            sse += (f64::from(r[j]) - f64::from(h[j])).powi(2);
        }
    }
    let fve = 1.0 - sse / var;
    close(s.fve, fve, 1e-9);
    close(s.mse, sse / (n * d) as f64, 1e-12);
    assert!(s.fve > 0.9 && s.fve < 1.0, "fve {}", s.fve);
}

#[test]
fn perfect_and_zero_reconstruction() {
    let s = two_dim(&X, &X);
    close(s.fve, 1.0, 1e-12);
    close(s.cosine, 1.0, 1e-12);
    close(s.rel_bias, 1.0, 1e-12);
    let s = two_dim(&X, &[0.0; 6]);
    // SSE = Σ‖x‖² = 5 + 25 + 25 = 55 against centred variance 16.
    close(s.fve, 1.0 - 55.0 / 16.0, 1e-12);
    close(s.cosine, 0.0, 1e-12);
}

#[test]
fn empty_is_a_clear_error() {
    let acc = ReconAccumulator::new(4);
    let err = acc.finish().unwrap_err();
    assert!(matches!(err, AnalysisError::NoTokens { .. }));
    assert!(err.to_string().contains("no usable tokens"), "{err}");
}
