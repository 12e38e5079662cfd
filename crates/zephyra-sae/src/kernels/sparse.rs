//! Sparse codes: per-row lists of active latents (CSR), with a per-latent index (CSC) for the weight
//! gradients. Every kernel touches only the active entries, so its cost is `nnz × d_in`.

use rayon::prelude::*;

use super::simd::weighted_row_sum;
pub use super::simd::{axpy, dot};
#[cfg(target_arch = "x86_64")]
use super::sliced;
use super::Real;

/// Rows below this count run the row loops on one thread.
const PAR_ROWS: usize = 64;
/// Latents per block in the encoder-gradient kernel (the block's `d_in × BLOCK` slice is written at once).
const BLOCK: usize = 16;

/// The code density above which the dense GEMMs beat the sparse kernels, measured with
/// `cargo bench -p zephyra-sae --bench step relu` (d_in 576, d_sae 9216, batch 4096, 2 threads; `DENSE_ABOVE`
/// forces one path): about 25 % with the sliced AVX2 kernels (their gathered matrix packed by slices),
/// 5 % with the portable loops.
pub fn dense_cutover() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if sliced::available() {
        return 0.25;
    }
    0.05
}

/// Sparse activations of a batch: row `r`'s active latents are `idx[row_ptr[r]..row_ptr[r+1]]` (sorted),
/// with values `val` (the feature activations `f`) and `grad` (dL/dz at those entries, once computed).
#[derive(Debug, Clone, Default)]
pub struct Codes<T> {
    /// Rows.
    pub n_rows: usize,
    /// Latents.
    pub d_sae: usize,
    /// Row offsets, length `n_rows + 1`.
    pub row_ptr: Vec<usize>,
    /// Latent of each entry.
    pub idx: Vec<u32>,
    /// Value of each entry.
    pub val: Vec<T>,
    /// Gradient at each entry.
    pub grad: Vec<T>,
    /// Column offsets (after [`Codes::index_columns`]), length `d_sae + 1`: latent `i`'s entries are
    /// `col_ptr[i]..col_ptr[i+1]` of the column-order arrays below, rows ascending.
    pub col_ptr: Vec<usize>,
    /// Row, value and gradient of each entry in column order (after [`Codes::index_columns`]), so the
    /// weight-gradient kernels read everything sequentially.
    col_row: Vec<u32>,
    col_val: Vec<T>,
    col_grad: Vec<T>,
}

/// A raw pointer that may cross threads; each user writes disjoint elements (see the `SAFETY` notes).
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: only used to write disjoint elements from different threads.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper rather than the raw field).
    #[inline]
    fn ptr(&self) -> *mut T {
        self.0
    }
}

impl<T: Real> Codes<T> {
    /// Number of active entries.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }

    /// Row `r`'s `(latents, values)`.
    pub fn row(&self, r: usize) -> (&[u32], &[T]) {
        let (a, b) = (self.row_ptr[r], self.row_ptr[r + 1]);
        (&self.idx[a..b], &self.val[a..b])
    }

    /// Builds the codes from rows of pre-activations `z` (`n × d_sae`): entry `(r, i)` is kept with value
    /// `v` when `keep(i, z[r, i]) = Some(v)`. Two parallel passes (count, fill); buffers are reused.
    pub fn build_from_dense<F>(&mut self, z: &[T], n_rows: usize, d_sae: usize, keep: F)
    where
        F: Fn(usize, T) -> Option<T> + Sync,
    {
        self.n_rows = n_rows;
        self.d_sae = d_sae;
        self.row_ptr.clear();
        self.row_ptr.resize(n_rows + 1, 0);
        let counts = &mut self.row_ptr[1..];
        let count_row = |(row, c): (&[T], &mut usize)| {
            *c = row
                .iter()
                .enumerate()
                .filter(|&(i, &v)| keep(i, v).is_some())
                .count();
        };
        if n_rows >= PAR_ROWS {
            z.par_chunks_exact(d_sae)
                .zip(counts.par_iter_mut())
                .for_each(count_row);
        } else {
            z.chunks_exact(d_sae)
                .zip(counts.iter_mut())
                .for_each(count_row);
        }
        for r in 0..n_rows {
            self.row_ptr[r + 1] += self.row_ptr[r];
        }
        let nnz = self.row_ptr[n_rows];
        self.idx.resize(nnz, 0);
        self.val.resize(nnz, T::ZERO);
        self.grad.clear();
        self.grad.resize(nnz, T::ZERO);
        let idx = SharedMut(self.idx.as_mut_ptr());
        let val = SharedMut(self.val.as_mut_ptr());
        let row_ptr = &self.row_ptr;
        let fill = |r: usize| {
            let mut p = row_ptr[r];
            for (i, &v) in z[r * d_sae..(r + 1) * d_sae].iter().enumerate() {
                if let Some(kept) = keep(i, v) {
                    // SAFETY: row r owns positions row_ptr[r]..row_ptr[r+1] (counted with the same
                    // predicate above), so rows write disjoint elements, all within nnz.
                    unsafe {
                        *idx.ptr().add(p) = i as u32;
                        *val.ptr().add(p) = kept;
                    }
                    p += 1;
                }
            }
        };
        if n_rows >= PAR_ROWS {
            (0..n_rows).into_par_iter().for_each(fill);
        } else {
            (0..n_rows).for_each(fill);
        }
    }

    /// Builds the codes from per-row lists of `(latent, value)` sorted by latent.
    pub fn build_from_lists(&mut self, lists: &[Vec<(u32, T)>], d_sae: usize) {
        self.n_rows = lists.len();
        self.d_sae = d_sae;
        self.row_ptr.clear();
        self.row_ptr.push(0);
        self.idx.clear();
        self.val.clear();
        for list in lists {
            for &(i, v) in list {
                self.idx.push(i);
                self.val.push(v);
            }
            self.row_ptr.push(self.idx.len());
        }
        self.grad.clear();
        self.grad.resize(self.idx.len(), T::ZERO);
    }

    /// The row index, for the sliced kernels.
    #[cfg(target_arch = "x86_64")]
    fn csr(&self) -> sliced::Csr<'_> {
        sliced::Csr {
            row_ptr: &self.row_ptr,
            idx: &self.idx,
        }
    }

    /// The per-latent index (after [`Codes::index_columns`]), for the sliced kernels.
    #[cfg(target_arch = "x86_64")]
    fn csc(&self) -> sliced::Csc<'_> {
        sliced::Csc {
            col_ptr: &self.col_ptr,
            rows: &self.col_row,
        }
    }

    /// The sliced AVX2 weight gradient `out (+)= Σ coef·src` over the per-latent index, `out` in `layout`,
    /// when it applies: `true` if it ran, `false`
    /// (nothing written) for a non-f32 `T`, a CPU without AVX2 + FMA or `d_in` below
    /// [`sliced::MIN_COLS`], where the portable loop must run instead.
    #[cfg(target_arch = "x86_64")]
    fn sliced_weight_grad(
        &self,
        coef: &[T],
        src: &[T],
        d_in: usize,
        out: &mut [T],
        layout: sliced::Layout,
        accumulate: bool,
    ) -> bool {
        let (Some(coef), Some(src), Some(out)) =
            (T::as_f32(coef), T::as_f32(src), T::as_f32_mut(out))
        else {
            return false;
        };
        if !(sliced::available() && d_in >= sliced::MIN_COLS) {
            return false;
        }
        sliced::weight_grad(self.csc(), coef, src, d_in, out, layout, accumulate);
        true
    }

    /// Builds the per-latent index (`col_ptr`) and the column-order copies of rows, values and gradients
    /// with a counting sort, one chunk of rows per thread (each chunk gets its own run of slots in every
    /// column, so rows stay ascending): call it after [`Codes::set_grad_from_output`].
    pub fn index_columns(&mut self) {
        let (d_sae, n_rows, nnz) = (self.d_sae, self.n_rows, self.idx.len());
        let chunks = rayon::current_num_threads()
            .min(n_rows.div_ceil(PAR_ROWS))
            .max(1);
        let chunk_rows = n_rows.div_ceil(chunks).max(1);
        let rows_of = |c: usize| c * chunk_rows..((c + 1) * chunk_rows).min(n_rows);
        let (row_ptr, idx) = (&self.row_ptr, &self.idx);
        // Per chunk: its entries per latent, then (below) its first slot in each latent's run.
        let mut slots: Vec<Vec<usize>> = (0..chunks)
            .into_par_iter()
            .map(|c| {
                let mut count = vec![0usize; d_sae];
                let rows = rows_of(c);
                if rows.start < rows.end {
                    for &i in &idx[row_ptr[rows.start]..row_ptr[rows.end]] {
                        count[i as usize] += 1;
                    }
                }
                count
            })
            .collect();
        self.col_ptr.clear();
        self.col_ptr.resize(d_sae + 1, 0);
        let mut next = 0;
        for i in 0..d_sae {
            self.col_ptr[i] = next;
            for chunk in slots.iter_mut() {
                let count = chunk[i];
                chunk[i] = next;
                next += count;
            }
        }
        self.col_ptr[d_sae] = next;
        self.col_row.resize(nnz, 0);
        self.col_val.resize(nnz, T::ZERO);
        self.col_grad.resize(nnz, T::ZERO);
        let rows_out = SharedMut(self.col_row.as_mut_ptr());
        let val_out = SharedMut(self.col_val.as_mut_ptr());
        let grad_out = SharedMut(self.col_grad.as_mut_ptr());
        let (val, grad) = (&self.val, &self.grad);
        slots.into_par_iter().enumerate().for_each(|(c, mut slot)| {
            for r in rows_of(c) {
                for p in row_ptr[r]..row_ptr[r + 1] {
                    let i = idx[p] as usize;
                    let q = slot[i];
                    slot[i] += 1;
                    // SAFETY: chunk c owns slots [its first slot, + its count) of every latent's run
                    // (disjoint across chunks, all below nnz), and fills each exactly once.
                    unsafe {
                        *rows_out.ptr().add(q) = r as u32;
                        *val_out.ptr().add(q) = val[p];
                        *grad_out.ptr().add(q) = grad[p];
                    }
                }
            }
        });
    }

    /// `out[r] = (accumulate ? out[r] : bias) + Σ_active val·w_dec[i]` for every row (`out`: `n × d_in`).
    pub fn decode(
        &self,
        w_dec: &[T],
        d_in: usize,
        bias: Option<&[T]>,
        out: &mut [T],
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(val), Some(w), Some(o)) =
            (T::as_f32(&self.val), T::as_f32(w_dec), T::as_f32_mut(out))
        {
            if sliced::available() && d_in >= sliced::MIN_COLS {
                let bias = bias.and_then(T::as_f32);
                sliced::decode(self.csr(), val, w, d_in, bias, o, accumulate);
                return;
            }
        }
        let body = |(r, o): (usize, &mut [T])| {
            if !accumulate {
                match bias {
                    Some(b) => o.copy_from_slice(b),
                    None => o.fill(T::ZERO),
                }
            }
            let (idx, val) = self.row(r);
            weighted_row_sum(o, idx.len(), |t| (val[t], idx[t] as usize), w_dec, d_in);
        };
        if self.n_rows >= PAR_ROWS {
            out.par_chunks_exact_mut(d_in).enumerate().for_each(body);
        } else {
            out.chunks_exact_mut(d_in).enumerate().for_each(body);
        }
    }

    /// `grad[p] = d[r]·w_dec[i] + add[i]` for every entry `p = (r, i)` (`d`: `n × d_in`, dL/dx̂).
    pub fn set_grad_from_output(&mut self, d: &[T], w_dec: &[T], d_in: usize, add: Option<&[T]>) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(d32), Some(w), Some(g)) = (
            T::as_f32(d),
            T::as_f32(w_dec),
            T::as_f32_mut(&mut self.grad),
        ) {
            if sliced::available() && d_in >= sliced::MIN_COLS {
                let csr = sliced::Csr {
                    row_ptr: &self.row_ptr,
                    idx: &self.idx,
                };
                sliced::sampled_dot(csr, d32, w, d_in, add.and_then(T::as_f32), g);
                return;
            }
        }
        let row_ptr = &self.row_ptr;
        let idx = &self.idx;
        let grad = SharedMut(self.grad.as_mut_ptr());
        #[allow(clippy::needless_range_loop)]
        let body = |r: usize| {
            let dr = &d[r * d_in..(r + 1) * d_in];
            for p in row_ptr[r]..row_ptr[r + 1] {
                let i = idx[p] as usize;
                let mut g = dot(dr, &w_dec[i * d_in..(i + 1) * d_in]);
                if let Some(a) = add {
                    g += a[i];
                }
                // SAFETY: entry p belongs to row r only; rows are processed by one thread each.
                unsafe { *grad.ptr().add(p) = g };
            }
        };
        if self.n_rows >= PAR_ROWS {
            (0..self.n_rows).into_par_iter().for_each(body);
        } else {
            (0..self.n_rows).for_each(body);
        }
    }

    /// Decoder gradient: `gw_dec[i] (+)= Σ_{r: i active} val[r,i]·d[r]` (`d`: `n × d_in`). Needs
    /// [`Codes::index_columns`]. Latents with no entry get zero (or are left alone when accumulating).
    pub fn grad_w_dec(&self, d: &[T], d_in: usize, gw_dec: &mut [T], accumulate: bool) {
        #[cfg(target_arch = "x86_64")]
        if self.sliced_weight_grad(
            &self.col_val,
            d,
            d_in,
            gw_dec,
            sliced::Layout::LatentMajor,
            accumulate,
        ) {
            return;
        }
        let body = |(i, g): (usize, &mut [T])| {
            if !accumulate {
                g.fill(T::ZERO);
            }
            let first = self.col_ptr[i];
            let term = |t: usize| (self.col_val[first + t], self.col_row[first + t] as usize);
            weighted_row_sum(g, self.col_ptr[i + 1] - first, term, d, d_in);
        };
        gw_dec
            .par_chunks_exact_mut(d_in)
            .enumerate()
            .with_min_len(64)
            .for_each(body);
    }

    /// Encoder gradient: `gw_enc[:, i] (+)= Σ_{r: i active} grad[r,i]·xc[r]` with `gw_enc` `[d_in, d_sae]`
    /// and `xc` `n × d_in`. Needs [`Codes::index_columns`]. Latents are processed in blocks of 16 whose
    /// sums are built contiguously, then written as one short run per encoder row.
    pub fn grad_w_enc(&self, xc: &[T], d_in: usize, gw_enc: &mut [T], accumulate: bool) {
        let d_sae = self.d_sae;
        assert_eq!(
            gw_enc.len(),
            d_in * d_sae,
            "grad_w_enc: gradient buffer length"
        );
        #[cfg(target_arch = "x86_64")]
        if self.sliced_weight_grad(
            &self.col_grad,
            xc,
            d_in,
            gw_enc,
            sliced::Layout::Transposed,
            accumulate,
        ) {
            return;
        }
        let out = SharedMut(gw_enc.as_mut_ptr());
        let n_blocks = d_sae.div_ceil(BLOCK);
        (0..n_blocks)
            .into_par_iter()
            .for_each_init(Vec::new, |tmp: &mut Vec<T>, b| {
                let i0 = b * BLOCK;
                let width = BLOCK.min(d_sae - i0);
                tmp.clear();
                tmp.resize(width * d_in, T::ZERO);
                for w in 0..width {
                    let i = i0 + w;
                    let acc = &mut tmp[w * d_in..(w + 1) * d_in];
                    let first = self.col_ptr[i];
                    let term =
                        |t: usize| (self.col_grad[first + t], self.col_row[first + t] as usize);
                    weighted_row_sum(acc, self.col_ptr[i + 1] - first, term, xc, d_in);
                }
                for j in 0..d_in {
                    for w in 0..width {
                        // SAFETY: block b owns columns i0..i0+width of every row of gw_enc; blocks are disjoint
                        // and j·d_sae + i0 + w < d_in·d_sae.
                        unsafe {
                            let slot = out.ptr().add(j * d_sae + i0 + w);
                            let v = tmp[w * d_in + j];
                            *slot = if accumulate { *slot + v } else { v };
                        }
                    }
                }
            });
    }

    /// `out[i] (+)= Σ_r values[r,i]` where `values` is `val` or `grad` (`use_grad`).
    pub fn column_sums(&self, use_grad: bool, out: &mut [T], accumulate: bool) {
        if !accumulate {
            out.fill(T::ZERO);
        }
        let values = if use_grad { &self.grad } else { &self.val };
        for (&i, &v) in self.idx.iter().zip(values) {
            out[i as usize] += v;
        }
    }
}
