//! bfloat16 linear layers: weights stored once in bf16, activations rounded to bf16 at the product's
//! input, products accumulated in `f32` (Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning
//! Training", arXiv:1905.12322). Everything around the products (norms, softmax, RoPE, residual sums,
//! the attention score/value products) stays `f32`.
//!
//! # Layout
//! bf16 values travel in pairs of adjacent `k` elements packed into one `u32` (element `2p` in the low
//! half, `2p + 1` in the high half), the operand format of `vdpbf16ps`. Weights `[n, k]` are packed once
//! into panels of [`LANES`] output columns: panel `q` holds `[k/2][16]` pairs, so one 512-bit load gives
//! a pair for each of 16 outputs. Activations are rounded and packed `[m][k/2]` per call. Both are
//! zero-padded (odd `k`, `n` to whole groups of [`NB`] panels, `m` to whole [`MR`]-row tiles).
//!
//! # Kernels
//! A microkernel computes an [`MR`] × [`NR`] output tile over all of `k`; rayon runs tasks of
//! [`MC`] rows × [`NC`] columns. The AVX-512 BF16 kernel (`_mm512_dpbf16_ps`) is chosen at run time when
//! the CPU has it; the portable kernel computes the same products in plain `f32`. Set
//! `ZEPHYRA_BF16_PORTABLE=1` to force the portable kernel.
//!
//! # Error bound
//! With `u_b = 2⁻⁸` (round-to-nearest-even to 8 significant bits) and `u = 2⁻²⁴`, each input is
//! `â = a(1 + α)`, `b̂ = b(1 + β)`, `|α|, |β| ≤ u_b` (no overflow or subnormals). The product of two bf16
//! values has at most 16 significant bits, so `â·b̂ = a·b·(1 + θ)`, `|θ| ≤ 2u_b + u_b²`, is exact in
//! `f32`. Summing the `k` products in `f32` in any order (a tree of `k − 1` additions) errs by at most
//! `γ_{k−1} Σ|â b̂|`, `γ_n = nu / (1 − nu)` (Higham 2002, *Accuracy and Stability of Numerical
//! Algorithms*, §4.2). Hence, per output,
//!
//! `|ŷ − Σ a b| ≤ (2u_b + u_b²) Σ|a b| + γ_{k−1} (1 + 2u_b + u_b²) Σ|a b|`,
//!
//! and two kernels that sum the same rounded products in different orders agree within
//! `2 γ_{k−1} Σ|â b̂|` (the tests assert both). Subnormal bf16 values (below 2⁻¹²⁶) are outside the
//! bound: `vdpbf16ps` flushes them to zero, the portable kernel does not.

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Output columns per panel: one 512-bit vector of `f32`.
const LANES: usize = 16;
/// Panels per microtile.
const NB: usize = 4;
/// Output columns per microtile.
const NR: usize = LANES * NB;
/// Output rows per microtile (MR × NB = 24 accumulators + 4 weight vectors + 1 broadcast ≤ 32 registers).
const MR: usize = 6;
/// Rows per rayon task.
const MC: usize = 8 * MR;
/// Columns per rayon task.
const NC: usize = 4 * NR;

/// Environment variable that forces the portable kernel when set to `1`.
pub const FORCE_PORTABLE_ENV: &str = "ZEPHYRA_BF16_PORTABLE";

/// Rounds to the nearest bfloat16, ties to even; NaN stays a (quiet) NaN.
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    // No overflow: the largest non-NaN pattern, 0xFF80_0000 (−∞), plus 0x8000 fits in u32.
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The pair at `(x[2p], x[2p + 1])` of a row, rounded and packed (zero past the end).
fn pair(x: &[f32], p: usize) -> u32 {
    let lo = x.get(2 * p).map_or(0, |&v| to_bf16(v));
    let hi = x.get(2 * p + 1).map_or(0, |&v| to_bf16(v));
    u32::from(lo) | (u32::from(hi) << 16)
}

/// Which microkernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AVX-512 BF16 (`vdpbf16ps`), x86-64 CPUs with `avx512bf16` (AMD Zen 4+, Intel Cooper Lake,
    /// Sapphire Rapids+).
    Avx512,
    /// Plain `f32` arithmetic on any CPU.
    Portable,
}

impl Bf16Kernel {
    /// The kernel this process uses: AVX-512 BF16 when the CPU has it and
    /// [`FORCE_PORTABLE_ENV`] is not `1`; decided once.
    pub fn active() -> Bf16Kernel {
        static ACTIVE: OnceLock<Bf16Kernel> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let forced = std::env::var(FORCE_PORTABLE_ENV).is_ok_and(|v| v == "1");
            if !forced && Bf16Kernel::Avx512.is_available() {
                Bf16Kernel::Avx512
            } else {
                Bf16Kernel::Portable
            }
        })
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Bf16Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512 => {
                is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Bf16Kernel::Avx512 => false,
        }
    }

    /// A short name for reports: `avx512bf16` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Avx512 => "avx512bf16",
            Bf16Kernel::Portable => "portable",
        }
    }
}

/// A `[n, k]` weight matrix in bf16, packed into panels (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Bf16Matrix {
    data: Vec<u32>,
    n: usize,
    k: usize,
}

impl Bf16Matrix {
    /// Rounds a row-major `[n, k]` `f32` matrix to bf16 and packs it.
    pub(crate) fn from_f32(w: &[f32], n: usize, k: usize) -> Bf16Matrix {
        assert_eq!(w.len(), n * k, "weight matrix is not [n, k]");
        let kp = k.div_ceil(2);
        let n_panels = n.div_ceil(NR) * NB;
        let mut data = vec![0u32; n_panels * kp * LANES];
        data.par_chunks_mut(kp * LANES)
            .enumerate()
            .for_each(|(q, panel)| {
                for c in 0..LANES {
                    let j = q * LANES + c;
                    if j >= n {
                        break;
                    }
                    let row = &w[j * k..(j + 1) * k];
                    for p in 0..kp {
                        panel[p * LANES + c] = pair(row, p);
                    }
                }
            });
        Bf16Matrix { data, n, k }
    }

    /// Output size `n`.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Input size `k`.
    pub(crate) fn k(&self) -> usize {
        self.k
    }
}

/// Raw output pointer shared by the rayon tasks, each of which writes a disjoint tile.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint `[rows, cols]` tiles of the output (see `matmul_nt_bf16`).
unsafe impl Send for OutPtr {}
// SAFETY: as above; no task reads through the pointer.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    /// Packed activations, reused between calls on the calling thread.
    static PACKED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `dst[m, n] = bf16(lhs[m, k]) · bf16(w)ᵀ` with `f32` accumulation; `lhs` rows are `lhs_stride` apart
/// and `dst` is contiguous `[m, n]`. Panics when an operand is too small for the shapes or `kernel`
/// is not available on this CPU.
pub(crate) fn matmul_nt_bf16(
    dst: &mut [f32],
    lhs: &[f32],
    lhs_stride: usize,
    w: &Bf16Matrix,
    m: usize,
    kernel: Bf16Kernel,
) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() >= m * n && lhs.len() >= (m - 1) * lhs_stride + k && lhs_stride >= k,
        "operand too small"
    );
    assert!(
        kernel.is_available(),
        "{} kernel not available",
        kernel.name()
    );
    let kp = k.div_ceil(2);
    let mut run = |packed: &mut Vec<u32>| {
        // Rows past `m` pad the last tile with zeros.
        packed.resize(m.div_ceil(MR) * MR * kp, 0);
        packed[m * kp..].fill(0);
        packed[..m * kp]
            .par_chunks_mut(kp)
            .zip(lhs.par_chunks(lhs_stride))
            .for_each(|(dst, row)| {
                let row = &row[..k];
                dst.iter_mut()
                    .enumerate()
                    .for_each(|(p, d)| *d = pair(row, p));
            });
        let packed: &[u32] = packed;
        let out = OutPtr(dst.as_mut_ptr());
        // Column blocks outermost: each slice of the weights is loaded once and reused by every
        // row block while it is in cache (the unembedding is far larger than the activations).
        let (row_blocks, col_blocks) = (m.div_ceil(MC), n.div_ceil(NC));
        (0..row_blocks * col_blocks).into_par_iter().for_each(|t| {
            let (r0, c0) = ((t % row_blocks) * MC, (t / row_blocks) * NC);
            let (r1, c1) = ((r0 + MC).min(m), (c0 + NC).min(n));
            let mut tile = [[0f32; NR]; MR];
            for g0 in (c0..c1).step_by(NR) {
                let b = &w.data[(g0 / LANES) * kp * LANES..][..NB * kp * LANES];
                for i0 in (r0..r1).step_by(MR) {
                    let a = &packed[i0 * kp..(i0 + MR) * kp];
                    match kernel {
                        // SAFETY: `is_available` was asserted above.
                        #[cfg(target_arch = "x86_64")]
                        Bf16Kernel::Avx512 => unsafe { tile_avx512(a, b, kp, &mut tile) },
                        _ => tile_portable(a, b, kp, &mut tile),
                    }
                    let cols = NR.min(c1 - g0);
                    for (r, acc) in tile.iter().enumerate().take(r1 - i0) {
                        // SAFETY: row i0 + r < m and columns g0..g0 + cols < n lie inside `dst`
                        // (asserted len ≥ m·n); this task alone owns rows r0..r1 × columns c0..c1.
                        unsafe {
                            let at = out.get().add((i0 + r) * n + g0);
                            std::ptr::copy_nonoverlapping(acc.as_ptr(), at, cols);
                        }
                    }
                }
            }
        });
    };
    // A rayon worker waiting inside one product may steal a task that starts another on the same
    // thread: that one packs into a fresh buffer.
    PACKED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut packed) => run(&mut packed),
        Err(_) => run(&mut Vec::new()),
    });
}

/// The portable microkernel: `tile[r][c] = Σ_p a[r][p] · b[c][p]` over packed pairs, each pair added
/// high half first, then low half (the order `vdpbf16ps` documents). `a` is `MR × kp`, `b` is `NB`
/// panels of `kp × LANES`.
fn tile_portable(a: &[u32], b: &[u32], kp: usize, tile: &mut [[f32; NR]; MR]) {
    let hi = |v: u32| f32::from_bits(v & 0xffff_0000);
    let lo = |v: u32| f32::from_bits(v << 16);
    *tile = [[0.0; NR]; MR];
    for p in 0..kp {
        for (r, acc) in tile.iter_mut().enumerate() {
            let x = a[r * kp + p];
            let (x_hi, x_lo) = (hi(x), lo(x));
            for (q, acc) in acc.chunks_exact_mut(LANES).enumerate() {
                let w = &b[(q * kp + p) * LANES..][..LANES];
                for (acc, &w) in acc.iter_mut().zip(w) {
                    let t = *acc + x_hi * hi(w);
                    *acc = t + x_lo * lo(w);
                }
            }
        }
    }
}

/// The AVX-512 BF16 microkernel: same contract as [`tile_portable`].
///
/// # Safety
/// The CPU must support `avx512bf16` and `avx512f` ([`Bf16Kernel::is_available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bf16,avx512f")]
unsafe fn tile_avx512(a: &[u32], b: &[u32], kp: usize, tile: &mut [[f32; NR]; MR]) {
    use std::arch::x86_64::*;
    assert!(a.len() >= MR * kp && b.len() >= NB * kp * LANES);
    let mut acc = [[_mm512_setzero_ps(); NB]; MR];
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for p in 0..kp {
        let mut w = [_mm512_setzero_si512(); NB];
        for (q, w) in w.iter_mut().enumerate() {
            // SAFETY: (q·kp + p)·16 + 16 ≤ NB·kp·16 ≤ b.len() (asserted).
            *w = unsafe { _mm512_loadu_si512(b.add((q * kp + p) * LANES).cast()) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r·kp + p < MR·kp ≤ a.len() (asserted).
            let x = _mm512_set1_epi32(unsafe { *a.add(r * kp + p) } as i32);
            let x: __m512bh = std::mem::transmute::<__m512i, __m512bh>(x);
            for (acc, &w) in acc.iter_mut().zip(&w) {
                let w = std::mem::transmute::<__m512i, __m512bh>(w);
                *acc = _mm512_dpbf16_ps(*acc, x, w);
            }
        }
    }
    for (out, acc) in tile.iter_mut().zip(&acc) {
        for (q, &v) in acc.iter().enumerate() {
            // SAFETY: q·16 + 16 ≤ NR = out.len().
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(q * LANES), v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The exact value of a bfloat16.
    fn from_bf16(h: u16) -> f64 {
        f64::from(f32::from_bits(u32::from(h) << 16))
    }

    /// `γ_n = n·u / (1 − n·u)` for `f32` (`u = 2⁻²⁴`).
    fn gamma_f32(n: usize) -> f64 {
        let nu = n as f64 * 2f64.powi(-24);
        nu / (1.0 - nu)
    }

    /// The bound on `|ŷ − Σ a b|` over `k` terms given `abs_sum = Σ|a b|` of the unrounded inputs.
    fn error_bound(k: usize, abs_sum: f64) -> f64 {
        let ub = 2f64.powi(-8);
        let theta = 2.0 * ub + ub * ub;
        theta * abs_sum + gamma_f32(k.saturating_sub(1)) * (1.0 + theta) * abs_sum
    }

    /// The bound on `|ŷ − Σ â b̂|` (rounded inputs, exact sum) given `abs_sum = Σ|â b̂|`.
    fn sum_bound(k: usize, abs_sum: f64) -> f64 {
        gamma_f32(k.saturating_sub(1)) * abs_sum
    }

    #[test]
    fn rounds_to_nearest_even() {
        let one = 1.0f32.to_bits();
        let ulp = 1 << 16; // one bf16 ulp at 1.0 (2⁻⁷) in f32 bits
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(-2.0), 0xc000);
        // 1 + 2⁻⁸: a tie, to the even 1.0; 1 + 3·2⁻⁸: a tie, to the even 1 + 2⁻⁶.
        assert_eq!(to_bf16(f32::from_bits(one + ulp / 2)), 0x3f80);
        assert_eq!(to_bf16(f32::from_bits(one + 3 * ulp / 2)), 0x3f82);
        // Just above and below a tie.
        assert_eq!(to_bf16(f32::from_bits(one + ulp / 2 + 1)), 0x3f81);
        assert_eq!(to_bf16(f32::from_bits(one + ulp / 2 - 1)), 0x3f80);
        assert_eq!(to_bf16(f32::MAX), 0x7f80); // rounds up to +∞
        assert_eq!(to_bf16(f32::NEG_INFINITY), 0xff80);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        // 0.1 = 0x3DCCCCCD → 0x3DCD (the dropped 0xCCCD is above half).
        assert_eq!(to_bf16(0.1), 0x3dcd);
    }

    /// Random values with exponents spread over 2⁻⁶ … 2⁶ and both signs.
    fn values(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(-6..=6)))
            .collect()
    }

    /// Ragged shapes: m, n, k not multiples of the tiles, k odd, several row and column tasks.
    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 1, 1),
        (7, 13, 5),
        (37, 70, 33),
        (50, 130, 301),
        (101, 300, 77),
        (6, 64, 1536),
    ];

    /// Runs `kernel` on shape (m, n, k) with strided rows; returns (a, w, out).
    fn run(
        kernel: Bf16Kernel,
        (m, n, k): (usize, usize, usize),
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let stride = k + 3;
        let a = values(&mut rng, m * stride);
        let w = values(&mut rng, n * k);
        let packed = Bf16Matrix::from_f32(&w, n, k);
        let mut out = vec![f32::NAN; m * n];
        matmul_nt_bf16(&mut out, &a, stride, &packed, m, kernel);
        (a, w, out)
    }

    /// Checks one kernel against f64 references on every shape: within [`error_bound`] of the exact
    /// product of the unrounded inputs, within [`sum_bound`] of the exact product of the rounded
    /// inputs (so the inputs really are rounded to bf16), and not within it of the unrounded ones.
    fn check_against_f64(kernel: Bf16Kernel) {
        for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
            let (a, w, out) = run(kernel, (m, n, k), s as u64);
            let stride = k + 3;
            let mut worst_rounded = 0.0f64; // |ŷ − Σ a b| / bound, worst over outputs
            for i in 0..m {
                for j in 0..n {
                    let (x, y) = (&a[i * stride..i * stride + k], &w[j * k..(j + 1) * k]);
                    let (mut exact, mut abs) = (0.0f64, 0.0f64);
                    let (mut exact_r, mut abs_r) = (0.0f64, 0.0f64);
                    for (&x, &y) in x.iter().zip(y) {
                        exact += f64::from(x) * f64::from(y);
                        abs += (f64::from(x) * f64::from(y)).abs();
                        let p = from_bf16(to_bf16(x)) * from_bf16(to_bf16(y));
                        exact_r += p;
                        abs_r += p.abs();
                    }
                    let got = f64::from(out[i * n + j]);
                    let (err, bound) = ((got - exact).abs(), error_bound(k, abs));
                    assert!(
                        err <= bound * (1.0 + 1e-9),
                        "{kernel:?} ({m}, {n}, {k}) [{i}, {j}]: error {err:e} > bound {bound:e}"
                    );
                    let (err_r, bound_r) = ((got - exact_r).abs(), sum_bound(k, abs_r));
                    assert!(
                        err_r <= bound_r * (1.0 + 1e-9),
                        "{kernel:?} ({m}, {n}, {k}) [{i}, {j}]: {err_r:e} from the rounded product > {bound_r:e}"
                    );
                    worst_rounded =
                        worst_rounded.max((got - exact).abs() / sum_bound(k, abs).max(1e-30));
                }
            }
            // Rounding the inputs costs ~2⁻⁹ relative, far more than f32 summation alone allows.
            if k >= 5 {
                assert!(
                    worst_rounded > 1.0,
                    "{kernel:?} ({m}, {n}, {k}): inputs do not look rounded to bf16"
                );
            }
        }
    }

    #[test]
    fn portable_kernel_within_bf16_bound() {
        check_against_f64(Bf16Kernel::Portable);
    }

    #[test]
    fn avx512_kernel_within_bf16_bound() {
        if !Bf16Kernel::Avx512.is_available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        check_against_f64(Bf16Kernel::Avx512);
    }

    #[test]
    fn kernels_agree_to_summation_order() {
        if !Bf16Kernel::Avx512.is_available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
            let (a, w, fast) = run(Bf16Kernel::Avx512, (m, n, k), s as u64);
            let (_, _, slow) = run(Bf16Kernel::Portable, (m, n, k), s as u64);
            let stride = k + 3;
            let mut identical = 0;
            for i in 0..m {
                for j in 0..n {
                    let abs_r: f64 = (0..k)
                        .map(|t| {
                            let x = from_bf16(to_bf16(a[i * stride + t]));
                            (x * from_bf16(to_bf16(w[j * k + t]))).abs()
                        })
                        .sum();
                    let (f, p) = (fast[i * n + j], slow[i * n + j]);
                    let diff = (f64::from(f) - f64::from(p)).abs();
                    let bound = 2.0 * sum_bound(k, abs_r);
                    assert!(
                        diff <= bound,
                        "({m}, {n}, {k}) [{i}, {j}]: {f} vs {p}, bound {bound:e}"
                    );
                    identical += usize::from(f.to_bits() == p.to_bits());
                }
            }
            eprintln!(
                "({m}, {n}, {k}): {identical}/{} outputs bit-identical",
                m * n
            );
        }
    }

    #[test]
    fn active_kernel_honours_the_cpu() {
        assert!(Bf16Kernel::active().is_available());
        assert!(Bf16Kernel::Portable.is_available());
    }
}
