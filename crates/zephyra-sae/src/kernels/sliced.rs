//! The sparse kernels for `f32` on AVX2 + FMA, walked one column slice at a time.
//!
//! Each active entry `(r, i)` needs a whole row of a dense matrix (`W_dec[i]`, `dL/dx̂_r` or `x_c[r]`,
//! 2.3 KB at `d_in` 576). Walked row by row, those rows come from L3 or memory, and the kernels run at
//! memory speed, a tenth of the GEMM's. Walked by slices of [`SLICE`] columns instead, the slice of the
//! gathered matrix (`d_sae × 32` floats of `W_dec`: 1.2 MB at `d_sae` 9216) stays in the core's L2 while
//! every entry streams past, and the codes — 8 bytes an entry — are what is read again, once per slice.
//!
//! Work is split across threads by slice where outputs are disjoint by column (decode, both weight
//! gradients) and by rows where every slice adds into the same value (the gradient at the entries).
//! Columns past the last whole slice run through the portable loops of [`super::simd`].

use std::arch::x86_64::*;

use rayon::prelude::*;

/// Columns per slice: four registers of eight `f32`.
pub const SLICE: usize = 32;
const W: usize = 8;

/// A pointer for writes from several threads to disjoint elements.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every user writes elements no other thread writes (see each kernel's SAFETY note).
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

impl Out {
    #[inline(always)]
    fn at(self, i: usize) -> *mut f32 {
        // SAFETY of callers: i is within the buffer the pointer was taken from.
        self.0.wrapping_add(i)
    }
}

/// Whether these kernels can run here.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// The sparse matrix the kernels read: CSR by rows, optionally indexed by column.
#[derive(Clone, Copy)]
pub struct Csr<'a> {
    /// Row offsets (`n_rows + 1`).
    pub row_ptr: &'a [usize],
    /// Column (latent) of each entry.
    pub idx: &'a [u32],
}

/// `out[r] = (accumulate ? out[r] : bias) + Σ_p val[p]·w[idx[p]]` for every row; `out` is `n × d`.
///
/// # Panics
/// If a buffer is shorter than the shapes say (a caller bug).
pub fn decode(
    csr: Csr<'_>,
    val: &[f32],
    w: &[f32],
    d: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    accumulate: bool,
) {
    let n_rows = csr.row_ptr.len() - 1;
    assert!(out.len() >= n_rows * d && val.len() >= csr.idx.len());
    assert!(csr.idx.iter().all(|&i| (i as usize + 1) * d <= w.len()));
    let slices = d / SLICE;
    let o = Out(out.as_mut_ptr());
    (0..slices).into_par_iter().for_each(|s| {
        // SAFETY: the CPU has AVX2 + FMA (callers check `available`); slice s writes only columns
        // s·SLICE..(s+1)·SLICE of each row, so threads write disjoint elements; indices were checked above.
        unsafe { decode_slice(csr, val, w, d, bias, o, accumulate, s * SLICE) }
    });
    for r in 0..n_rows {
        let row = &mut out[r * d + slices * SLICE..(r + 1) * d];
        if !accumulate {
            match bias {
                Some(b) => row.copy_from_slice(&b[slices * SLICE..d]),
                None => row.fill(0.0),
            }
        }
        let (a, b) = (csr.row_ptr[r], csr.row_ptr[r + 1]);
        super::simd::portable::weighted_row_sum(
            row,
            b - a,
            |t| (val[a + t], csr.idx[a + t] as usize * d + slices * SLICE),
            w,
            1,
        );
    }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_slice(
    csr: Csr<'_>,
    val: &[f32],
    w: &[f32],
    d: usize,
    bias: Option<&[f32]>,
    out: Out,
    accumulate: bool,
    j0: usize,
) {
    let n_rows = csr.row_ptr.len() - 1;
    for r in 0..n_rows {
        let o = out.at(r * d + j0);
        let mut even = [_mm256_setzero_ps(); 4];
        if accumulate {
            for (k, a) in even.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(k * W));
            }
        } else if let Some(b) = bias {
            for (k, a) in even.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(b.as_ptr().add(j0 + k * W));
            }
        }
        let (a, b) = (csr.row_ptr[r], csr.row_ptr[r + 1]);
        let sum = gather_fma(
            even,
            b - a,
            |t| {
                let p = a + t;
                (val[p], *csr.idx.get_unchecked(p) as usize * d + j0)
            },
            w,
        );
        for (k, v) in sum.iter().enumerate() {
            _mm256_storeu_ps(o.add(k * W), *v);
        }
    }
}

/// `start + Σ_t c_t · src[offset_t .. offset_t + SLICE]` with `(c_t, offset_t) = term(t)`, as four
/// registers. Even and odd terms go to two accumulator sets: eight independent FMA chains.
///
/// # Safety
/// The CPU must support AVX2 and FMA; every `offset_t + SLICE ≤ src.len()`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn gather_fma(
    start: [__m256; 4],
    n_terms: usize,
    term: impl Fn(usize) -> (f32, usize),
    src: &[f32],
) -> [__m256; 4] {
    let mut even = start;
    let mut odd = [_mm256_setzero_ps(); 4];
    let base = src.as_ptr();
    let mut t = 0;
    while t + 2 <= n_terms {
        let ((c0, o0), (c1, o1)) = (term(t), term(t + 1));
        let (s0, s1) = (base.add(o0), base.add(o1));
        let (c0, c1) = (_mm256_set1_ps(c0), _mm256_set1_ps(c1));
        for k in 0..4 {
            even[k] = _mm256_fmadd_ps(c0, _mm256_loadu_ps(s0.add(k * W)), even[k]);
            odd[k] = _mm256_fmadd_ps(c1, _mm256_loadu_ps(s1.add(k * W)), odd[k]);
        }
        t += 2;
    }
    if t < n_terms {
        let (c0, o0) = term(t);
        let (s0, c0) = (base.add(o0), _mm256_set1_ps(c0));
        for (k, a) in even.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(c0, _mm256_loadu_ps(s0.add(k * W)), *a);
        }
    }
    [
        _mm256_add_ps(even[0], odd[0]),
        _mm256_add_ps(even[1], odd[1]),
        _mm256_add_ps(even[2], odd[2]),
        _mm256_add_ps(even[3], odd[3]),
    ]
}

/// The gradient at every entry: `grad[p] = d_out[r]·w[idx[p]] + add[idx[p]]` (`d_out`: `n × d`).
///
/// # Panics
/// If a buffer is shorter than the shapes say (a caller bug).
pub fn sampled_dot(
    csr: Csr<'_>,
    d_out: &[f32],
    w: &[f32],
    d: usize,
    add: Option<&[f32]>,
    grad: &mut [f32],
) {
    let n_rows = csr.row_ptr.len() - 1;
    let nnz = csr.idx.len();
    assert!(d_out.len() >= n_rows * d && grad.len() >= nnz);
    assert!(csr.idx.iter().all(|&i| (i as usize + 1) * d <= w.len()));
    for (g, &i) in grad.iter_mut().zip(csr.idx) {
        *g = add.map_or(0.0, |a| a[i as usize]);
    }
    let slices = d / SLICE;
    // Rows in chunks (each chunk's entries are contiguous in `grad`); each chunk walks every slice.
    let chunk_rows = n_rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let g = Out(grad.as_mut_ptr());
    (0..n_rows.div_ceil(chunk_rows))
        .into_par_iter()
        .for_each(|c| {
            let rows = c * chunk_rows..((c + 1) * chunk_rows).min(n_rows);
            for s in 0..slices {
                // SAFETY: AVX2 + FMA checked by callers; the chunk's rows own entries
                // row_ptr[start]..row_ptr[end], written by this task only; indices checked above.
                unsafe { sampled_dot_slice(csr, d_out, w, d, g, rows.clone(), s * SLICE) };
            }
            for r in rows {
                let tail = slices * SLICE..d;
                for p in csr.row_ptr[r]..csr.row_ptr[r + 1] {
                    let i = csr.idx[p] as usize;
                    let part = super::simd::portable::dot(
                        &d_out[r * d + tail.start..r * d + tail.end],
                        &w[i * d + tail.start..i * d + tail.end],
                    );
                    // SAFETY: entry p belongs to this task's rows.
                    unsafe { *g.at(p) += part };
                }
            }
        });
}

/// Sums of eight vectors: lane `e` of the result is the sum of the lanes of `v[e]`.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_sum(v: &[__m256; 8]) -> __m256 {
    let t0 = _mm256_hadd_ps(v[0], v[1]);
    let t1 = _mm256_hadd_ps(v[2], v[3]);
    let t2 = _mm256_hadd_ps(v[4], v[5]);
    let t3 = _mm256_hadd_ps(v[6], v[7]);
    let u0 = _mm256_hadd_ps(t0, t1);
    let u1 = _mm256_hadd_ps(t2, t3);
    _mm256_add_ps(
        _mm256_permute2f128_ps(u0, u1, 0x20),
        _mm256_permute2f128_ps(u0, u1, 0x31),
    )
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn sampled_dot_slice(
    csr: Csr<'_>,
    d_out: &[f32],
    w: &[f32],
    d: usize,
    grad: Out,
    rows: std::ops::Range<usize>,
    j0: usize,
) {
    for r in rows {
        let dr = d_out.as_ptr().add(r * d + j0);
        let x = [
            _mm256_loadu_ps(dr),
            _mm256_loadu_ps(dr.add(W)),
            _mm256_loadu_ps(dr.add(2 * W)),
            _mm256_loadu_ps(dr.add(3 * W)),
        ];
        let dot_one = |i: u32| {
            let wi = w.as_ptr().add(i as usize * d + j0);
            let a = _mm256_fmadd_ps(
                x[0],
                _mm256_loadu_ps(wi),
                _mm256_mul_ps(x[1], _mm256_loadu_ps(wi.add(W))),
            );
            let b = _mm256_fmadd_ps(
                x[2],
                _mm256_loadu_ps(wi.add(2 * W)),
                _mm256_mul_ps(x[3], _mm256_loadu_ps(wi.add(3 * W))),
            );
            _mm256_add_ps(a, b)
        };
        let (a, b) = (csr.row_ptr[r], csr.row_ptr[r + 1]);
        let mut p = a;
        while p + 8 <= b {
            let mut v = [_mm256_setzero_ps(); 8];
            for (e, ve) in v.iter_mut().enumerate() {
                *ve = dot_one(*csr.idx.get_unchecked(p + e));
            }
            let sums = transpose_sum(&v);
            let gp = grad.at(p);
            _mm256_storeu_ps(gp, _mm256_add_ps(_mm256_loadu_ps(gp), sums));
            p += 8;
        }
        while p < b {
            let v = dot_one(*csr.idx.get_unchecked(p));
            let mut lanes = [0.0f32; W];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            *grad.at(p) += ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
            p += 1;
        }
    }
}

/// The entries in column order: `q` in `col_ptr[i]..col_ptr[i+1]` are latent `i`'s, in row `rows[q]`.
/// Values go with it in the same order, so the kernels read everything sequentially.
#[derive(Clone, Copy)]
pub struct Csc<'a> {
    /// Column offsets (`d_sae + 1`).
    pub col_ptr: &'a [usize],
    /// Row of each entry, in column order.
    pub rows: &'a [u32],
}

/// Where a weight gradient goes: `[d_sae, d]` row-major (`W_dec`) or `[d, d_sae]` (`W_enc`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Latent-major: `out[i·d + j]`.
    LatentMajor,
    /// Column-major in latents: `out[j·d_sae + i]`.
    Transposed,
}

/// `out[i, :] (+)= Σ_{q of latent i} coef[q]·src[rows[q]]` for every latent (`src`: `n × d`; `coef` in
/// column order).
/// Latents without entries get zero (or keep their value when accumulating).
///
/// # Panics
/// If a buffer is shorter than the shapes say (a caller bug).
pub fn weight_grad(
    csc: Csc<'_>,
    coef: &[f32],
    src: &[f32],
    d: usize,
    out: &mut [f32],
    layout: Layout,
    accumulate: bool,
) {
    let d_sae = csc.col_ptr.len() - 1;
    assert!(out.len() >= d_sae * d && coef.len() >= csc.rows.len());
    assert!(csc.rows.iter().all(|&r| (r as usize + 1) * d <= src.len()));
    assert!(csc.col_ptr[d_sae] <= csc.rows.len());
    let slices = d / SLICE;
    let o = Out(out.as_mut_ptr());
    (0..slices).into_par_iter().for_each(|s| {
        // SAFETY: AVX2 + FMA checked by callers; slice s writes only columns j ∈ s·SLICE..(s+1)·SLICE of
        // every latent's gradient, disjoint across tasks; indices checked above.
        unsafe { weight_grad_slice(csc, coef, src, d, o, layout, accumulate, s * SLICE) }
    });
    let at = |i: usize, j: usize| match layout {
        Layout::LatentMajor => i * d + j,
        Layout::Transposed => j * d_sae + i,
    };
    for i in 0..d_sae {
        for j in slices * SLICE..d {
            let mut acc = if accumulate { out[at(i, j)] } else { 0.0 };
            for q in csc.col_ptr[i]..csc.col_ptr[i + 1] {
                acc += coef[q] * src[csc.rows[q] as usize * d + j];
            }
            out[at(i, j)] = acc;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_slice(
    csc: Csc<'_>,
    coef: &[f32],
    src: &[f32],
    d: usize,
    out: Out,
    layout: Layout,
    accumulate: bool,
    j0: usize,
) {
    let d_sae = csc.col_ptr.len() - 1;
    let mut lanes = [0.0f32; SLICE];
    for i in 0..d_sae {
        let first = csc.col_ptr[i];
        let sum = gather_fma(
            [_mm256_setzero_ps(); 4],
            csc.col_ptr[i + 1] - first,
            |t| {
                let q = first + t;
                (coef[q], *csc.rows.get_unchecked(q) as usize * d + j0)
            },
            src,
        );
        match layout {
            Layout::LatentMajor => {
                let o = out.at(i * d + j0);
                for (k, v) in sum.iter().enumerate() {
                    let v = if accumulate {
                        _mm256_add_ps(_mm256_loadu_ps(o.add(k * W)), *v)
                    } else {
                        *v
                    };
                    _mm256_storeu_ps(o.add(k * W), v);
                }
            }
            Layout::Transposed => {
                for (k, v) in sum.iter().enumerate() {
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(k * W), *v);
                }
                for (jj, &v) in lanes.iter().enumerate() {
                    let o = out.at((j0 + jj) * d_sae + i);
                    *o = if accumulate { *o + v } else { v };
                }
            }
        }
    }
}
