//! Dense matrix products on the `gemm` crate.

use gemm::Parallelism;

use super::Real;

/// A read-only strided matrix view: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows × cols` matrix.
    ///
    /// # Panics
    /// If `data.len() != rows·cols` (a caller bug: shapes are validated before the kernels run).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "MatRef::row_major: {rows}×{cols} needs {} values",
            rows * cols
        );
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// `dst = aᵀ·b` over the first `n_rows` rows of the row-major `a` (`a_cols` wide) and `b` (`b_cols` wide):
/// a weight gradient summed over a batch, `dst` row-major `a_cols × b_cols`.
///
/// # Panics
/// When `a` or `b` hold fewer than `n_rows` rows, or `dst` is not `a_cols × b_cols` (caller bug).
pub fn matmul_at_b<T: Real>(
    dst: &mut [T],
    a: &[T],
    a_cols: usize,
    b: &[T],
    b_cols: usize,
    n_rows: usize,
) {
    matmul(
        dst,
        MatRef::row_major(&a[..n_rows * a_cols], n_rows, a_cols).t(),
        MatRef::row_major(&b[..n_rows * b_cols], n_rows, b_cols),
        false,
        T::ONE,
    );
}

/// `dst = (accumulate ? dst : 0) + scale · a·b`, with `dst` row-major `a.rows × b.cols`.
///
/// # Panics
/// On inconsistent shapes (caller bug).
pub fn matmul<T: Real>(
    dst: &mut [T],
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    scale: T,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions {k} and {}", b.rows);
    assert_eq!(
        dst.len(),
        m * n,
        "matmul: destination holds {} values, expected {m}×{n}",
        dst.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::ZERO);
        }
        return;
    }
    let par = if m * n * k >= PARALLEL_MIN_FLOPS {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let alpha = if accumulate { T::ONE } else { T::ZERO };
    // SAFETY: `a` and `b` views were built from slices covering `(rows-1)·rs + (cols-1)·cs + 1` values
    // (row_major checks the length, `t` only swaps strides), `dst` holds exactly `m·n` values with row
    // stride `n`; `T` is `f32` or `f64` (the only `Real` impls), both supported by `gemm`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            alpha,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matmul_matches_naive_at_odd_sizes_and_transposes() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (130, 67, 129)] {
            let a: Vec<f64> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f64 - 6.0) * 0.1)
                .collect();
            let b: Vec<f64> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f64 - 5.0) * 0.2)
                .collect();
            let want = naive(&a, &b, m, k, n);
            let mut got = vec![1.0; m * n];
            matmul(
                &mut got,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                false,
                1.0,
            );
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "{m}×{k}×{n}: {g} vs {w}");
            }
            // Accumulate with scale, through transposed views: dst += 2·(bᵀ)ᵀ... i.e. a·b again.
            let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect(); // aᵀ row-major [k, m]
            matmul(
                &mut got,
                MatRef::row_major(&at, k, m).t(),
                MatRef::row_major(&b, k, n),
                true,
                2.0,
            );
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - 3.0 * w).abs() < 1e-9,
                    "{m}×{k}×{n} accumulate: {g} vs {}",
                    3.0 * w
                );
            }
        }
    }
}
