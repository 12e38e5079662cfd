//! Row-parallel `f32` kernels of the forward pass: matrix products (via the `gemm` crate),
//! RMSNorm, rotary embeddings, SwiGLU/GeGLU and softmax. Each works on row-major `&[f32]` buffers
//! and splits rows across rayon threads; none allocates in its inner loop. The elementwise loops run
//! through [`vectorized`] (AVX-512 or AVX2 code where the CPU has it, same results).

use gemm::Parallelism;
use rayon::prelude::*;

use super::simd::vectorized;

/// Rows per rayon task for the elementwise kernels (keeps tasks ≳ 10 µs).
const ROWS_PER_TASK: usize = 16;

/// A read-only matrix operand: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    /// Row stride.
    pub(crate) rs: usize,
    /// Column stride.
    pub(crate) cs: usize,
}

impl<'a> MatRef<'a> {
    /// A matrix whose rows are `rs` apart, columns adjacent.
    pub(crate) fn rows(data: &'a [f32], rs: usize) -> MatRef<'a> {
        MatRef { data, rs, cs: 1 }
    }

    /// The transpose of a matrix whose rows are `rs` apart: element `(i, j)` at `data[j * rs + i]`.
    pub(crate) fn transposed(data: &'a [f32], rs: usize) -> MatRef<'a> {
        MatRef {
            data,
            rs: 1,
            cs: rs,
        }
    }

    /// The first element's address and the row and column strides, as `gemm` takes them.
    fn raw(&self) -> (*const f32, isize, isize) {
        (self.data.as_ptr(), self.rs as isize, self.cs as isize)
    }

    /// Index of the last element of an `m × n` block (both at least 1).
    fn last(&self, m: usize, n: usize) -> usize {
        (m - 1) * self.rs + (n - 1) * self.cs
    }
}

/// `dst[m, n] = lhs[m, k] · w[n, k]ᵀ`: a linear layer with weights stored `[n_out, n_in]`
/// (the GGUF layout). `lhs` rows are `lhs_stride` apart; `dst` is contiguous.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_nt(
    dst: &mut [f32],
    lhs: &[f32],
    lhs_stride: usize,
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    threads: Parallelism,
) {
    let (a, b) = (MatRef::rows(lhs, lhs_stride), MatRef::transposed(w, k));
    matmul_strided(dst, n, a, b, (m, n, k), threads);
}

/// Strided product `dst = a · b` on `threads` (the attention kernels run it single-threaded inside
/// their own rayon tasks): `a` is `m×k`, `b` is `k×n`, `dst` is `m×n` row-major with rows `dst_rs`
/// apart (elements between rows are left alone). Panics when an operand is too small for the shapes.
pub(crate) fn matmul_strided(
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    (m, n, k): (usize, usize, usize),
    threads: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst_rs >= n
            && dst.len() >= (m - 1) * dst_rs + n
            && a.data.len() > a.last(m, k.max(1))
            && b.data.len() > b.last(k.max(1), n),
        "operand too small"
    );
    if k == 0 {
        dst.chunks_mut(dst_rs)
            .take(m)
            .for_each(|row| row[..n].fill(0.0));
        return;
    }
    // SAFETY: the assert bounds the largest index read from `a` and `b` and written to `dst`
    // (row stride `dst_rs` ≥ n, column stride 1); `dst` is borrowed mutably for the call.
    unsafe { gemm_raw(dst.as_mut_ptr(), dst_rs, a, b, (m, n, k), threads) }
}

/// Granularity of [`matmul_nt_par`]'s split, in weight rows: one AVX-512 vector of the transposed
/// product. Fine enough that the widths of both models split evenly over two threads (SmolLM2's
/// 576 = 36 panels; 64-row panels would give one thread 5/9 of it).
const PANEL: usize = 16;

/// [`matmul_nt`] on the rayon pool, split by output columns (weight rows): one task per thread,
/// each a single-threaded product of an equal share of whole panels of `w` against all of `lhs`.
/// Every weight is packed by one task only and no task waits for another until the end (the
/// `gemm` crate's own threading synchronises its threads after every block of the product).
pub(crate) fn matmul_nt_par(
    dst: &mut [f32],
    a: MatRef<'_>,
    w: &[f32],
    (m, n, k): (usize, usize, usize),
) {
    let panels = n.div_ceil(PANEL);
    let n_tasks = rayon::current_num_threads().min(panels);
    let b = MatRef::transposed(w, k);
    if n_tasks <= 1 || m == 0 || k == 0 {
        return matmul_strided(dst, n, a, b, (m, n, k), Parallelism::None);
    }
    assert!(
        dst.len() >= m * n && a.data.len() > a.last(m, k) && b.data.len() > b.last(k, n),
        "operand too small"
    );
    let out = SharedDst(dst.as_mut_ptr());
    (0..n_tasks).into_par_iter().for_each(|t| {
        // Task t: panels [t·panels/n_tasks, (t+1)·panels/n_tasks), the last one ragged.
        let j0 = t * panels / n_tasks * PANEL;
        let j1 = ((t + 1) * panels / n_tasks * PANEL).min(n);
        let b = MatRef {
            data: &w[j0 * k..],
            ..b
        };
        // SAFETY: `dst` holds `m × n` elements (asserted) and stays borrowed mutably until every
        // task has returned; task `t` writes only columns `j0..j1` of each row, which no other
        // task writes or reads. The operands are in bounds by the assert.
        unsafe { gemm_raw(out.column(j0), n, a, b, (m, j1 - j0, k), Parallelism::None) }
    });
}

/// The destination of [`matmul_nt_par`], shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedDst(*mut f32);

impl SharedDst {
    /// The first element of column `j`.
    ///
    /// # Safety
    /// `j` must be within the first row of the destination.
    unsafe fn column(&self, j: usize) -> *mut f32 {
        // SAFETY: in bounds by the caller's guarantee.
        unsafe { self.0.add(j) }
    }
}

// SAFETY: the tasks that share it write disjoint elements (see `matmul_nt_par`).
unsafe impl Send for SharedDst {}
// SAFETY: as above.
unsafe impl Sync for SharedDst {}

/// `dst = a · b` through the `gemm` crate, `dst` row-major with rows `dst_rs` apart.
///
/// # Safety
/// `a` and `b` must hold their `m × k` and `k × n` elements at their strides, `dst` must be
/// valid for writes at `i · dst_rs + j` for `i < m`, `j < n`, and no other thread may access
/// those elements during the call. `k` must be at least 1.
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    (m, n, k): (usize, usize, usize),
    threads: Parallelism,
) {
    let ((a, a_rs, a_cs), (b, b_rs, b_cs)) = (a.raw(), b.raw());
    let (alpha, beta, conj) = (0.0, 1.0, false);
    // SAFETY: the caller guarantees the bounds; `read_dst` is false so dst need not be initialised.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            alpha,
            beta,
            conj,
            conj,
            conj,
            threads,
        );
    }
}

/// RMSNorm: `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight` for every row, in one pass over
/// each row (the same arithmetic as [`rms_scales`] then [`rms_apply`], so the same bits).
pub(crate) fn rms_norm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            vectorized(
                #[inline(always)]
                || {
                    for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                        let inv = 1.0 / (sum_of_squares(x) / d as f32 + eps).sqrt();
                        for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
                            *o = x * inv * w;
                        }
                    }
                },
            )
        });
}

/// The RMSNorm divisor of every `d`-wide row (TransformerLens' `hook_scale`):
/// `scales[r] = sqrt(mean(x[r]²) + eps)`.
pub(crate) fn rms_scales(scales: &mut [f32], x: &[f32], d: usize, eps: f32) {
    scales
        .par_chunks_mut(ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(scales, x)| {
            vectorized(
                #[inline(always)]
                || {
                    for (s, x) in scales.iter_mut().zip(x.chunks_exact(d)) {
                        *s = (sum_of_squares(x) / d as f32 + eps).sqrt();
                    }
                },
            )
        });
}

/// `out[r] = x[r] · (1 / scales[r]) · weight` for every row: RMSNorm with given divisors.
pub(crate) fn rms_apply(out: &mut [f32], x: &[f32], scales: &[f32], weight: &[f32]) {
    let d = weight.len();
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .zip(scales.par_chunks(ROWS_PER_TASK))
        .for_each(|((out, x), scales)| {
            vectorized(
                #[inline(always)]
                || {
                    for ((o, x), s) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(scales) {
                        let inv = 1.0 / s;
                        for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
                            *o = x * inv * w;
                        }
                    }
                },
            )
        });
}

/// RMSNorm of each `d_head`-wide head of every row, in place: the first `n_a` heads of a row (row
/// width `row_stride`) with `weight_a`, the next `n_b` heads with `weight_b` (Gemma's q/k norms).
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_rms_norm(
    x: &mut [f32],
    row_stride: usize,
    n_a: usize,
    weight_a: &[f32],
    n_b: usize,
    weight_b: &[f32],
    eps: f32,
) {
    let d_head = weight_a.len();
    x.par_chunks_mut(row_stride * ROWS_PER_TASK)
        .for_each(|rows| {
            vectorized(
                #[inline(always)]
                || {
                    for row in rows.chunks_exact_mut(row_stride) {
                        for (h, head) in row[..(n_a + n_b) * d_head]
                            .chunks_exact_mut(d_head)
                            .enumerate()
                        {
                            let w = if h < n_a { weight_a } else { weight_b };
                            let inv = 1.0 / (sum_of_squares(head) / d_head as f32 + eps).sqrt();
                            head.iter_mut().zip(w).for_each(|(v, w)| *v = *v * inv * w);
                        }
                    }
                },
            )
        });
}

/// Number of independent accumulators in reductions: lets the compiler vectorize them.
const LANES: usize = 16;

/// `Σ x²` with [`LANES`] partial sums.
#[inline(always)]
fn sum_of_squares(x: &[f32]) -> f32 {
    lane_sum_by(
        x,
        #[inline(always)]
        |v| v * v,
    )
}

/// `Σ f(x)` with [`LANES`] partial sums (the tail summed apart and added last).
#[inline(always)]
fn lane_sum_by(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `eˣ` in plain `f32` arithmetic (no libm call) so loops over it vectorize.
///
/// Range reduction `x = n·ln 2 + r` with |r| ≤ ln2/2 (ln 2 split in two parts, Cody & Waite
/// 1980), a degree-7 Taylor polynomial for `eʳ`, and `2ⁿ` built from the exponent bits.
/// Relative error below 3e-7 on [-87, 88]; inputs are clamped there (so −∞ gives ≈ 1e-38, not 0;
/// callers that need exact zeros write them).
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with few mantissa bits so n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5·2²³ rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n ∈ [-126, 127] after the clamp, so the biased exponent stays in 1..=254.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `x += y`, elementwise.
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    const CHUNK: usize = 1 << 14;
    x.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(x, y)| {
            vectorized(
                #[inline(always)]
                || x.iter_mut().zip(y).for_each(|(x, y)| *x += y),
            )
        });
}

/// SwiGLU: `out[r, i] = silu(gu[r, i]) * gu[r, d_mlp + i]`, where each row of `gu` holds the gate
/// then the up projection.
pub(crate) fn swiglu(out: &mut [f32], gu: &[f32], d_mlp: usize) {
    gated_unit(
        out,
        gu,
        d_mlp,
        #[inline(always)]
        |g| g / (1.0 + fast_exp(-g)),
    );
}

/// GeGLU: `out[r, i] = gelu_tanh(gu[r, i]) * gu[r, d_mlp + i]` (Hendrycks & Gimpel 2016,
/// arXiv:1606.08415, tanh approximation; Shazeer 2020, arXiv:2002.05202).
pub(crate) fn geglu_tanh(out: &mut [f32], gu: &[f32], d_mlp: usize) {
    gated_unit(out, gu, d_mlp, gelu_tanh);
}

/// `out[r, i] = act(gu[r, i]) * gu[r, d_mlp + i]`: the gated MLP unit of both families (the
/// activation is inlined into the vectorised loop).
#[inline(always)]
fn gated_unit(out: &mut [f32], gu: &[f32], d_mlp: usize, act: impl Fn(f32) -> f32 + Sync) {
    out.par_chunks_mut(d_mlp * ROWS_PER_TASK)
        .zip(gu.par_chunks(2 * d_mlp * ROWS_PER_TASK))
        .for_each(|(out, gu)| {
            vectorized(
                #[inline(always)]
                || {
                    for (o, gu) in out.chunks_exact_mut(d_mlp).zip(gu.chunks_exact(2 * d_mlp)) {
                        let (gate, up) = gu.split_at(d_mlp);
                        for ((o, &g), u) in o.iter_mut().zip(gate).zip(up) {
                            *o = act(g) * u;
                        }
                    }
                },
            )
        });
}

/// `gelu_tanh(g) = ½ g (1 + tanh(u))`, `u = √(2/π) (g + 0.044715 g³)`, computed as the equal
/// `g / (1 + e^(−2u))` (since `½ (1 + tanh u) = 1 / (1 + e^(−2u))`) with [`fast_exp`], so loops over
/// it vectorize (libm's `tanhf` does not). Relative error below 1e-6 where the value is not tiny.
#[inline(always)]
fn gelu_tanh(g: f32) -> f32 {
    const TWO_SQRT_2_OVER_PI: f32 = 2.0 * 0.797_884_6;
    g / (1.0 + fast_exp(-TWO_SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g)))
}

/// Cosine/sine table for rotary embeddings at positions `pos0..pos0 + n_pos`:
/// `[n_pos, d_head / 2]` each, angle `pos * theta^(-2i / d_head)`.
pub(crate) fn rope_table(
    pos0: usize,
    n_pos: usize,
    d_head: usize,
    theta: f32,
) -> (Vec<f32>, Vec<f32>) {
    let half = d_head / 2;
    // Same rounding as the reference: inverse frequencies and angles in f32.
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / d_head as f32))
        .collect();
    let mut cos = Vec::with_capacity(n_pos * half);
    let mut sin = Vec::with_capacity(n_pos * half);
    for p in pos0..pos0 + n_pos {
        for f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Applies "rotate half" RoPE in place to the first `n_rot_heads` heads of every row of `x`
/// (row width `row_stride`, rows ordered `[batch, seq]`): for each head, `(x1, x2)` halves become
/// `(x1·cos − x2·sin, x2·cos + x1·sin)`. `cos`/`sin` come from [`rope_table`] for the `seq` positions.
pub(crate) fn rope(
    x: &mut [f32],
    row_stride: usize,
    seq: usize,
    n_rot_heads: usize,
    d_head: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let half = d_head / 2;
    x.par_chunks_mut(row_stride * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, rows)| {
            vectorized(
                #[inline(always)]
                || {
                    for (i, row) in rows.chunks_exact_mut(row_stride).enumerate() {
                        let s = (task * ROWS_PER_TASK + i) % seq;
                        let (c, sn) = (
                            &cos[s * half..(s + 1) * half],
                            &sin[s * half..(s + 1) * half],
                        );
                        for head in row[..n_rot_heads * d_head].chunks_exact_mut(d_head) {
                            let (x1, x2) = head.split_at_mut(half);
                            for (((a, b), c), sn) in x1.iter_mut().zip(x2).zip(c).zip(sn) {
                                let (x, y) = (*a, *b);
                                *a = x * c - y * sn;
                                *b = y * c + x * sn;
                            }
                        }
                    }
                },
            )
        });
}

/// In-place softmax of one row, after multiplying it by `scale`.
pub(crate) fn softmax_row(row: &mut [f32], scale: f32) {
    vectorized(
        #[inline(always)]
        || {
            let max = lane_max(row);
            // Three separate passes so each one vectorizes.
            row.iter_mut()
                .for_each(|v| *v = fast_exp((*v - max) * scale));
            let inv = 1.0 / lane_sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        },
    )
}

/// `max(x)` with [`LANES`] partial maxima (−∞ for an empty slice).
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = if *v > *a { *v } else { *a };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

/// `Σ x` with [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    lane_sum_by(
        x,
        #[inline(always)]
        |v| v,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_nt(lhs: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| lhs[i * k + t] * w[j * k + t]).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_matches_naive() {
        let (m, n, k) = (37, 19, 23);
        let lhs: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let mut out = vec![f32::NAN; m * n];
        matmul_nt(&mut out, &lhs, k, &w, m, n, k, Parallelism::Rayon(0));
        assert_eq!(out, naive_nt(&lhs, &w, m, n, k));
    }

    #[test]
    fn matmul_reads_strided_rows() {
        let (m, n, k, stride) = (5, 7, 6, 9);
        let lhs: Vec<f32> = (0..m * stride)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let packed: Vec<f32> = lhs.chunks(stride).flat_map(|r| r[..k].to_vec()).collect();
        let mut out = vec![f32::NAN; m * n];
        matmul_nt(&mut out, &lhs, stride, &w, m, n, k, Parallelism::None);
        assert_eq!(out, naive_nt(&packed, &w, m, n, k));
    }

    #[test]
    fn matmul_writes_strided_destination_rows_only() {
        let (m, n, k, dst_rs) = (4, 3, 5, 7);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
        // b given as the transpose of a [n, k] matrix.
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
        let mut dst = vec![f32::NAN; (m - 1) * dst_rs + n + 2];
        let (lhs, rhs) = (MatRef::rows(&a, k), MatRef::transposed(&w, k));
        matmul_strided(&mut dst, dst_rs, lhs, rhs, (m, n, k), Parallelism::None);
        let want = naive_nt(&a, &w, m, n, k);
        for (i, row) in dst.chunks(dst_rs).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if i < m && j < n {
                    assert_eq!(v, want[i * n + j], "({i}, {j})");
                } else {
                    assert!(v.is_nan(), "({i}, {j}) outside the product was written");
                }
            }
        }
    }

    #[test]
    fn split_matmul_matches_naive_on_ragged_panels() {
        // n = 300: panels of 64 split into tasks with a ragged last one; m and k odd.
        let (m, n, k) = (37, 300, 29);
        let lhs: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let mut out = vec![f32::NAN; m * n];
        pool.install(|| matmul_nt_par(&mut out, MatRef::rows(&lhs, k), &w, (m, n, k)));
        assert_eq!(out, naive_nt(&lhs, &w, m, n, k));
    }

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 3.7e-4;
            let want = (x as f64).exp();
            let err = ((fast_exp(x) as f64 - want) / want).abs();
            worst = worst.max(err);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert!(fast_exp(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn lane_reductions_handle_tails() {
        for n in [1, 15, 16, 17, 40] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
            assert_eq!(
                lane_max(&x),
                x.iter().copied().fold(f32::MIN, f32::max),
                "n = {n}"
            );
            assert_eq!(lane_sum(&x), x.iter().sum::<f32>(), "n = {n}");
        }
    }

    #[test]
    fn sum_of_squares_handles_tails() {
        for n in [0, 1, 15, 16, 17, 40] {
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let want: f32 = x.iter().map(|v| v * v).sum();
            assert_eq!(sum_of_squares(&x), want, "n = {n}");
        }
    }

    #[test]
    fn rms_norm_matches_hand_value() {
        let x = [3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let mut out = [0.0; 8];
        rms_norm(&mut out, &x, &[1.0, 2.0, 1.0, 1.0], 0.0);
        // rms of row 0 = sqrt(25/4) = 2.5
        assert_eq!(&out[..4], &[1.2, 3.2, 0.0, 0.0]);
        assert_eq!(&out[4..], &[1.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn geglu_matches_hand_values() {
        // gelu_tanh(1) = 0.5 (1 + tanh(√(2/π) · 1.044715)) = 0.841192; gelu_tanh(-1) = -0.158808.
        let gu = [1.0, -1.0, 0.0, 2.0, 3.0, 5.0];
        let mut out = [0.0; 3];
        geglu_tanh(&mut out, &gu, 3);
        assert!((out[0] - 2.0 * 0.841_192).abs() < 1e-5, "{out:?}");
        assert!((out[1] + 3.0 * 0.158_808).abs() < 1e-5, "{out:?}");
        assert_eq!(out[2], 0.0);
    }

    #[test]
    fn gelu_tanh_matches_the_tanh_form_in_f64() {
        let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
        let u = |x: f64| sqrt_2_over_pi * (x + 0.044_715 * x.powi(3));
        // The definition in f64, ½x(1 + tanh u): exact enough where 1 + tanh u does not cancel.
        let by_tanh = |x: f64| 0.5 * x * (1.0 + u(x).tanh());
        // The same function as x / (1 + e^(−2u)) in f64: no cancellation anywhere.
        let by_exp = |x: f64| x / (1.0 + (-2.0 * u(x)).exp());
        let mut worst = 0.0f64;
        for i in -20_000..20_000 {
            let g = i as f32 * 5e-4 + 1.3e-5;
            let x = f64::from(g);
            if x > -3.0 {
                let (a, b) = (by_tanh(x), by_exp(x));
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1e-3),
                    "{x}: {a} vs {b}"
                );
            }
            let want = by_exp(x);
            let err = (f64::from(gelu_tanh(g)) - want).abs() / want.abs();
            // Far left the f32 argument 2u (up to 88) carries its own rounding, ≈ |2u|·2⁻²⁴
            // relative in e^(−2u); there the value is below 1e-6 and the error is still < 2e-5.
            let bound = if x.abs() <= 2.0 { 1e-6 } else { 2e-5 };
            assert!(err < bound, "gelu_tanh({x}): relative error {err:e}");
            worst = worst.max(err);
        }
        assert!(worst > 0.0, "the grid reached no inexact value");
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!(gelu_tanh(-30.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(30.0), 30.0);
    }

    #[test]
    fn fused_rms_norm_equals_scales_then_apply() {
        for d in [1, 7, 16, 33, 640] {
            let x: Vec<f32> = (0..3 * d)
                .map(|i| ((i * 37) % 23) as f32 * 0.37 - 4.0)
                .collect();
            let w: Vec<f32> = (0..d).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
            let mut fused = vec![f32::NAN; 3 * d];
            rms_norm(&mut fused, &x, &w, 1e-6);
            let (mut scales, mut two) = (vec![0.0; 3], vec![f32::NAN; 3 * d]);
            rms_scales(&mut scales, &x, d, 1e-6);
            rms_apply(&mut two, &x, &scales, &w);
            assert_eq!(fused, two, "d = {d}");
        }
    }

    #[test]
    fn head_rms_norm_uses_each_heads_weight() {
        // Row: head a [3, 4], head b [1, 1], then one untouched column.
        let mut x = [3.0, 4.0, 1.0, 1.0, 9.0];
        head_rms_norm(&mut x, 5, 1, &[1.0, 2.0], 1, &[3.0, 1.0], 0.0);
        let inv = 1.0 / 12.5f32.sqrt();
        assert_eq!(x, [3.0 * inv, 4.0 * inv * 2.0, 3.0, 1.0, 9.0]);
    }

    #[test]
    fn rope_rotates_pairs_of_halves() {
        let (cos, sin) = rope_table(0, 2, 4, 10_000.0);
        let mut x = vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        rope(&mut x, 4, 2, 1, 4, &cos, &sin);
        assert_eq!(&x[..4], &[1.0, 0.0, 0.0, 1.0]); // position 0: identity
        let (c, s) = (1f32.cos(), 1f32.sin()); // position 1, frequency 1
        let want = [c, -(0.01f32.sin()), s, 0.01f32.cos()];
        for (a, b) in x[4..].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = [2.0, 4.0, 6.0, -300.0];
        softmax_row(&mut r, 0.5);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[3] < 1e-30);
        assert!((r[2] / r[1] - 1f32.exp()).abs() < 1e-5);
    }

    #[test]
    fn swiglu_matches_formula() {
        let gu = [1.0, -2.0, 3.0, 4.0];
        let mut out = [0.0; 2];
        swiglu(&mut out, &gu, 2);
        let silu = |g: f32| g / (1.0 + (-g).exp());
        for (o, w) in out.iter().zip([silu(1.0) * 3.0, silu(-2.0) * 4.0]) {
            assert!((o - w).abs() < 1e-6 * w.abs(), "{o} vs {w}");
        }
    }
}
