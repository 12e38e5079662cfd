//! The sparse kernels for `f32` on AVX2 + FMA, walked one column slice at a time.
//!
//! Each active entry `(r, i)` needs a whole row of a dense matrix (`W_dec[i]`, `dL/dx̂_r` or `x_c[r]`,
//! 2.3 KB at `d_in` 576). Walked row by row, those rows come from L3 or memory, and the kernels run at
//! memory speed, a tenth of the GEMM's. Walked by slices of 8, 16 or 32 columns instead (one to four
//! AVX2 registers, the widest whose slice fits [`L2_BUDGET`]), the slice stays in the core's L2 while
//! every entry streams past, and the codes — 8 bytes an entry — are what is read again, once per slice.
//! The gathered matrix is first copied slice by slice into one contiguous block each ([`pack`]): read in
//! place, its rows sit 2,304 bytes apart at `d` 576, which maps them onto a quarter of the L2's sets, so
//! the slice was evicted long before it was reused (12 GFLOP/s; packed, the same loops run at 30–40).
//!
//! Work is split across threads by slice where outputs are disjoint by column (decode, both weight
//! gradients) and by rows where every slice adds into the same value (the gradient at the entries).
//! Columns past the last whole slice run through the portable loops of [`super::simd`].

use std::arch::x86_64::*;
use std::sync::Mutex;

use rayon::prelude::*;

/// Columns per AVX2 register.
const W: usize = 8;
/// Fewest columns the kernels take (narrower matrices go to the portable loops).
pub const MIN_COLS: usize = W;
/// Bytes of a gathered slice meant to stay (mostly) in L2: 1 MB per core on the machine measured, where a
/// 1.2 MB slice of 32 columns still ran as fast as one of 16 (the index, value and broadcast of an entry
/// are paid once per slice, so wider slices cost fewer of them) and 8 columns ran at half the speed.
const L2_BUDGET: usize = 1280 << 10;

/// The packed copy of the gathered matrix, kept between calls (tens of MB: allocating it each step costs
/// page faults). One for the process: a call that finds it taken (a concurrent call) packs into its own.
static PACKED: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// Runs `body` with `src` (`rows × d`, row-major) copied into `d / width` contiguous blocks of
/// `rows × width`: block `s` holds columns `s·width..(s+1)·width`, row after row.
fn with_packed<R>(
    src: &[f32],
    rows: usize,
    d: usize,
    width: usize,
    body: impl FnOnce(&[f32]) -> R,
) -> R {
    let slices = d / width;
    // A poisoned lock only means a panic elsewhere while it was held; the buffer is scratch either way.
    let mut packed = std::mem::take(&mut *PACKED.lock().unwrap_or_else(|e| e.into_inner()));
    packed.resize(slices * rows * width, 0.0);
    packed
        .par_chunks_exact_mut(rows * width)
        .enumerate()
        .for_each(|(s, block)| {
            for (r, dst) in block.chunks_exact_mut(width).enumerate() {
                dst.copy_from_slice(&src[r * d + s * width..r * d + (s + 1) * width]);
            }
        });
    let result = body(&packed);
    let mut kept = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    if kept.capacity() < packed.capacity() {
        *kept = packed;
    }
    result
}

/// Registers per slice (1, 2 or 4) for a gathered matrix of `rows × d`: the widest slice within
/// [`L2_BUDGET`] and `d`, at least one register.
fn registers(rows: usize, d: usize) -> usize {
    [4, 2]
        .into_iter()
        .find(|&r| rows * r * W * 4 <= L2_BUDGET && r * W <= d)
        .unwrap_or(1)
}

/// Packs `src` (`rows × d`) by slices of the widest width [`registers`] allows and runs
/// `slice(j0, block, registers)` for every slice in parallel (`block`: columns `j0..j0 + width` of every
/// row, contiguous). Returns the first column no slice covered (the tail for the portable loops).
fn par_slices(src: &[f32], d: usize, slice: impl Fn(usize, &[f32], usize) + Sync) -> usize {
    let rows = src.len() / d;
    let registers = registers(rows, d);
    let width = W * registers;
    with_packed(src, rows, d, width, |packed| {
        packed
            .par_chunks_exact(rows * width)
            .enumerate()
            .for_each(|(s, block)| slice(s * width, block, registers))
    });
    d / width * width
}

/// Calls `$f::<R>` with the register count `$r` made a constant.
macro_rules! with_registers {
    ($r:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $r {
            4 => $f::<4>($($arg),*),
            2 => $f::<2>($($arg),*),
            _ => $f::<1>($($arg),*),
        }
    };
}

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
    let o = Out(out.as_mut_ptr());
    let tail = par_slices(w, d, |j0, block, registers| {
        // SAFETY: the CPU has AVX2 + FMA (callers check `available`); the slice writes only columns
        // j0..j0 + 8·registers of each row, so threads write disjoint elements; indices were checked
        // above against `w`, whose rows the block holds.
        unsafe {
            with_registers!(
                registers,
                decode_slice(csr, val, block, d, bias, o, accumulate, j0)
            )
        }
    });
    for r in 0..n_rows {
        let row = &mut out[r * d + tail..(r + 1) * d];
        if !accumulate {
            match bias {
                Some(b) => row.copy_from_slice(&b[tail..d]),
                None => row.fill(0.0),
            }
        }
        let (a, b) = (csr.row_ptr[r], csr.row_ptr[r + 1]);
        super::simd::portable::weighted_row_sum(
            row,
            b - a,
            |t| (val[a + t], csr.idx[a + t] as usize * d + tail),
            w,
            1,
        );
    }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_slice<const R: usize>(
    csr: Csr<'_>,
    val: &[f32],
    block: &[f32],
    d: usize,
    bias: Option<&[f32]>,
    out: Out,
    accumulate: bool,
    j0: usize,
) {
    let n_rows = csr.row_ptr.len() - 1;
    for r in 0..n_rows {
        let o = out.at(r * d + j0);
        let mut even = [_mm256_setzero_ps(); R];
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
                (val[p], *csr.idx.get_unchecked(p) as usize * R * W)
            },
            block,
        );
        for (k, v) in sum.iter().enumerate() {
            _mm256_storeu_ps(o.add(k * W), *v);
        }
    }
}

/// `start + Σ_t c_t · src[offset_t .. offset_t + 8R]` with `(c_t, offset_t) = term(t)`, as `R`
/// registers. Even and odd terms go to two accumulator sets: `2R` independent FMA chains.
///
/// # Safety
/// The CPU must support AVX2 and FMA; every `offset_t + 8R ≤ src.len()`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn gather_fma<const R: usize>(
    start: [__m256; R],
    n_terms: usize,
    term: impl Fn(usize) -> (f32, usize),
    src: &[f32],
) -> [__m256; R] {
    let mut even = start;
    let mut odd = [_mm256_setzero_ps(); R];
    let base = src.as_ptr();
    let mut t = 0;
    while t + 2 <= n_terms {
        let ((c0, o0), (c1, o1)) = (term(t), term(t + 1));
        let (s0, s1) = (base.add(o0), base.add(o1));
        let (c0, c1) = (_mm256_set1_ps(c0), _mm256_set1_ps(c1));
        for k in 0..R {
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
    for (e, o) in even.iter_mut().zip(odd) {
        *e = _mm256_add_ps(*e, o);
    }
    even
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
    let d_sae = w.len() / d;
    let width = W * registers(d_sae, d);
    let slices = d / width;
    // Rows in chunks (each chunk's entries are contiguous in `grad`); each chunk walks every slice.
    let chunk_rows = n_rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let g = Out(grad.as_mut_ptr());
    with_packed(w, d_sae, d, width, |packed| {
        (0..n_rows.div_ceil(chunk_rows))
            .into_par_iter()
            .for_each(|c| {
                let rows = c * chunk_rows..((c + 1) * chunk_rows).min(n_rows);
                for (s, block) in packed.chunks_exact(d_sae * width).enumerate() {
                    // SAFETY: AVX2 + FMA checked by callers; the chunk's rows own entries
                    // row_ptr[start]..row_ptr[end], written by this task only; indices checked above.
                    unsafe {
                        with_registers!(
                            width / W,
                            sampled_dot_slice(csr, d_out, block, d, g, rows.clone(), s * width)
                        )
                    };
                }
                for r in rows {
                    let tail = slices * width..d;
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
            })
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
unsafe fn sampled_dot_slice<const R: usize>(
    csr: Csr<'_>,
    d_out: &[f32],
    block: &[f32],
    d: usize,
    grad: Out,
    rows: std::ops::Range<usize>,
    j0: usize,
) {
    for r in rows {
        let dr = d_out.as_ptr().add(r * d + j0);
        let x: [__m256; R] = std::array::from_fn(|k| _mm256_loadu_ps(dr.add(k * W)));
        let dot_one = |i: u32| {
            let wi = block.as_ptr().add(i as usize * R * W);
            let mut acc = _mm256_mul_ps(x[0], _mm256_loadu_ps(wi));
            for (k, xk) in x.iter().enumerate().skip(1) {
                acc = _mm256_fmadd_ps(*xk, _mm256_loadu_ps(wi.add(k * W)), acc);
            }
            acc
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
    let o = Out(out.as_mut_ptr());
    let tail = par_slices(src, d, |j0, block, registers| {
        // SAFETY: AVX2 + FMA checked by callers; the slice writes only columns j0..j0 + 8·registers of
        // every latent's gradient, disjoint across tasks; indices checked above against `src`, whose
        // rows the block holds.
        unsafe {
            with_registers!(
                registers,
                weight_grad_slice(csc, coef, block, d, o, layout, accumulate, j0)
            )
        }
    });
    let at = |i: usize, j: usize| match layout {
        Layout::LatentMajor => i * d + j,
        Layout::Transposed => j * d_sae + i,
    };
    for i in 0..d_sae {
        for j in tail..d {
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
unsafe fn weight_grad_slice<const R: usize>(
    csc: Csc<'_>,
    coef: &[f32],
    block: &[f32],
    d: usize,
    out: Out,
    layout: Layout,
    accumulate: bool,
    j0: usize,
) {
    let d_sae = csc.col_ptr.len() - 1;
    let mut lanes = [0.0f32; 32];
    for i in 0..d_sae {
        let first = csc.col_ptr[i];
        let sum = gather_fma::<R>(
            [_mm256_setzero_ps(); R],
            csc.col_ptr[i + 1] - first,
            |t| {
                let q = first + t;
                (coef[q], *csc.rows.get_unchecked(q) as usize * R * W)
            },
            block,
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
                for (jj, &v) in lanes[..R * W].iter().enumerate() {
                    let o = out.at((j0 + jj) * d_sae + i);
                    *o = if accumulate { *o + v } else { v };
                }
            }
        }
    }
}
