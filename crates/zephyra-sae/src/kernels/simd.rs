//! The two inner loops of every sparse kernel, compiled twice: for the baseline target and, chosen at run
//! time, for AVX2 + FMA. The build uses no machine-specific flags, so without this dispatch the loops
//! would run on 128-bit SSE2 without fused multiply-add; with it they run 256 bits wide with FMA.
//!
//! - [`weighted_row_sum`]: `out += Σ_t c_t · src[row_t]` — decoding (rows of `W_dec`), the decoder
//!   gradient (rows of `dL/dx̂`) and the encoder gradient (rows of the centred input).
//! - [`dot`]: `x·y` — the gradient at each active entry, `dL/dx̂_r · W_dec[i]`.
//!
//! The AVX2 build keeps a tile of the output in registers while every term streams past, so each term
//! costs one load and one FMA per value instead of two loads, a multiply, an add and a store. The
//! portable build multiplies then adds (two roundings), the FMA build rounds once: the two differ in the
//! last bits, and a machine always takes the same path, so runs stay reproducible. `f64` (the gradient
//! checks) always runs the portable loops.

use super::Real;

/// `out[j] += Σ_{t < n_terms} c · src[row·d + j]` where `(c, row) = term(t)`, for every `j < out.len()`.
///
/// # Panics
/// If a row does not fit in `src` (a caller bug).
#[inline]
pub fn weighted_row_sum<T: Real>(
    out: &mut [T],
    n_terms: usize,
    term: impl Fn(usize) -> (T, usize),
    src: &[T],
    d: usize,
) {
    T::weighted_row_sum(out, n_terms, term, src, d);
}

/// `x·y` over the common length.
#[inline]
pub fn dot<T: Real>(x: &[T], y: &[T]) -> T {
    T::dot(x, y)
}

/// `y += a·x` over the common length.
#[inline]
pub fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    let d = y.len().min(x.len());
    weighted_row_sum(&mut y[..d], 1, |_| (a, 0), &x[..d], d);
}

/// The portable loops (every `f64` call, and `f32` on CPUs without AVX2 + FMA): multiply, then add.
pub(super) mod portable {
    use super::Real;

    /// See [`super::weighted_row_sum`].
    pub fn weighted_row_sum<T: Real>(
        out: &mut [T],
        n_terms: usize,
        term: impl Fn(usize) -> (T, usize),
        src: &[T],
        d: usize,
    ) {
        let width = out.len();
        for t in 0..n_terms {
            let (c, row) = term(t);
            for (o, &v) in out.iter_mut().zip(&src[row * d..row * d + width]) {
                *o += c * v;
            }
        }
    }

    /// See [`super::dot`]: eight interleaved partial sums, added pairwise.
    pub fn dot<T: Real>(x: &[T], y: &[T]) -> T {
        let n = x.len().min(y.len());
        let whole = n / 8 * 8;
        let mut acc = [T::ZERO; 8];
        for (xc, yc) in x[..whole].chunks_exact(8).zip(y[..whole].chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += xc[l] * yc[l];
            }
        }
        let mut s =
            ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        for (&a, &b) in x[whole..n].iter().zip(&y[whole..n]) {
            s += a * b;
        }
        s
    }
}

/// `f32` on x86-64: AVX2 + FMA when the CPU has them (checked once per call; std caches CPUID).
pub(super) mod f32_dispatch {
    use super::portable;

    /// See [`super::weighted_row_sum`].
    #[inline]
    pub fn weighted_row_sum(
        out: &mut [f32],
        n_terms: usize,
        term: impl Fn(usize) -> (f32, usize),
        src: &[f32],
        d: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { avx2::weighted_row_sum(out, n_terms, term, src, d) };
            return;
        }
        portable::weighted_row_sum(out, n_terms, term, src, d);
    }

    /// See [`super::dot`].
    #[inline]
    pub fn dot(x: &[f32], y: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { avx2::dot(x, y) };
        }
        portable::dot(x, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn has_avx2_fma() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use std::arch::x86_64::*;

        /// Values per register.
        const W: usize = 8;
        /// Registers per output tile: eight independent FMA chains hide the FMA latency.
        const R: usize = 8;
        /// Output values per tile, held in registers while every term streams past: one load and one
        /// FMA per value and term.
        const TILE: usize = W * R;

        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn weighted_row_sum(
            out: &mut [f32],
            n_terms: usize,
            term: impl Fn(usize) -> (f32, usize),
            src: &[f32],
            d: usize,
        ) {
            let width = out.len();
            let mut j0 = 0;
            while j0 + TILE <= width {
                let o = out[j0..j0 + TILE].as_mut_ptr();
                let mut acc = [_mm256_setzero_ps(); R];
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: o points at TILE = R·W values of `out`.
                    *a = unsafe { _mm256_loadu_ps(o.add(r * W)) };
                }
                for t in 0..n_terms {
                    let (c, row) = term(t);
                    let s = src[row * d + j0..row * d + j0 + TILE].as_ptr();
                    let cv = _mm256_set1_ps(c);
                    for (r, a) in acc.iter_mut().enumerate() {
                        // SAFETY: s points at TILE values of `src` (sliced just above).
                        *a = _mm256_fmadd_ps(cv, unsafe { _mm256_loadu_ps(s.add(r * W)) }, *a);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    // SAFETY: as for the loads.
                    unsafe { _mm256_storeu_ps(o.add(r * W), *a) };
                }
                j0 += TILE;
            }
            while j0 + W <= width {
                let o = out[j0..j0 + W].as_mut_ptr();
                // SAFETY: o points at W values of `out`.
                let mut a = unsafe { _mm256_loadu_ps(o) };
                for t in 0..n_terms {
                    let (c, row) = term(t);
                    let s = src[row * d + j0..row * d + j0 + W].as_ptr();
                    // SAFETY: s points at W values of `src`.
                    a = _mm256_fmadd_ps(_mm256_set1_ps(c), unsafe { _mm256_loadu_ps(s) }, a);
                }
                // SAFETY: as for the load.
                unsafe { _mm256_storeu_ps(o, a) };
                j0 += W;
            }
            if j0 < width {
                for t in 0..n_terms {
                    let (c, row) = term(t);
                    for (o, &v) in out[j0..]
                        .iter_mut()
                        .zip(&src[row * d + j0..row * d + width])
                    {
                        *o = c.mul_add(v, *o);
                    }
                }
            }
        }

        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dot(x: &[f32], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let (x, y) = (&x[..n], &y[..n]);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j + 4 * W <= n {
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: j + (r+1)·W ≤ n.
                    let (xv, yv) = unsafe {
                        (
                            _mm256_loadu_ps(x.as_ptr().add(j + r * W)),
                            _mm256_loadu_ps(y.as_ptr().add(j + r * W)),
                        )
                    };
                    *a = _mm256_fmadd_ps(xv, yv, *a);
                }
                j += 4 * W;
            }
            while j + W <= n {
                // SAFETY: j + W ≤ n.
                let (xv, yv) = unsafe {
                    (
                        _mm256_loadu_ps(x.as_ptr().add(j)),
                        _mm256_loadu_ps(y.as_ptr().add(j)),
                    )
                };
                acc[0] = _mm256_fmadd_ps(xv, yv, acc[0]);
                j += W;
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut lanes = [0.0f32; W];
            // SAFETY: lanes holds W values.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            let mut s = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
            for (&a, &b) in x[j..].iter().zip(&y[j..]) {
                s = a.mul_add(b, s);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quarter-integers: every product and sum below is exact in `f32` too, so any path must agree
    /// exactly with the plain loops.
    fn check<T: Real>() {
        for &d in &[1usize, 7, 8, 63, 64, 65, 130, 576] {
            let src: Vec<T> = (0..5 * d)
                .map(|i| T::from_f64(((i * 7 % 19) as f64 - 9.0) * 0.25))
                .collect();
            let terms = [(0.5, 3usize), (-2.0, 0), (1.25, 4), (3.0, 3)];
            let mut out: Vec<T> = (0..d).map(|j| T::from_f64(j as f64)).collect();
            let mut want: Vec<f64> = (0..d).map(|j| j as f64).collect();
            for &(c, r) in &terms {
                for j in 0..d {
                    want[j] += c * src[r * d + j].to_f64();
                }
            }
            weighted_row_sum(
                &mut out,
                terms.len(),
                |t| (T::from_f64(terms[t].0), terms[t].1),
                &src,
                d,
            );
            for (g, w) in out.iter().zip(&want) {
                assert_eq!(g.to_f64(), *w, "weighted_row_sum, d {d}");
            }
            let want_dot: f64 = (0..d).map(|j| src[j].to_f64() * src[d + j].to_f64()).sum();
            assert_eq!(
                dot(&src[..d], &src[d..2 * d]).to_f64(),
                want_dot,
                "dot, d {d}"
            );
        }
    }

    #[test]
    fn kernels_match_plain_loops_at_ragged_sizes_in_f32_and_f64() {
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn portable_and_dispatched_f32_agree_to_rounding() {
        let d = 576;
        let src: Vec<f32> = (0..3 * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let (mut a, mut b) = (vec![0.1f32; d], vec![0.1f32; d]);
        let term = |t: usize| (0.3f32 + t as f32, t);
        weighted_row_sum(&mut a, 3, term, &src, d);
        portable::weighted_row_sum(&mut b, 3, term, &src, d);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
        let (x, y) = (&src[..d], &src[d..2 * d]);
        let (p, q) = (dot(x, y), portable::dot(x, y));
        assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
    }
}
