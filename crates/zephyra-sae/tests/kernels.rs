//! Sparse kernels and selections against naive scalar references, at odd sizes and at sizes that take
//! the parallel paths.

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use rand::{Rng, SeedableRng};
use zephyra_sae::kernels::select::top_k;
use zephyra_sae::kernels::{Codes, Real};
use zephyra_sae::{Architecture, GradientsOf, SaeConfig, SaeOf, StepConfig, WorkspaceOf};

fn random(n: usize, seed: u64, sparsity: f64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            if rng.random::<f64>() < sparsity {
                0.0
            } else {
                rng.random_range(-1.0..1.0)
            }
        })
        .collect()
}

/// Every sparse kernel against a naive f64 loop over the dense matrices. The sizes cover the row-wise
/// loops (`d_in` < 8), the column-sliced `f32` kernels at each slice width (8 columns at `d_in` 13, 16 at
/// 21, 32 from 32 on: whole slices and a ragged tail) and both write modes (fresh and accumulating).
fn check_sparse_kernels<T: Real>(tol: f64) {
    let sizes = [
        (1, 1, 1),
        (3, 7, 5),
        (65, 13, 33),
        (40, 21, 50),
        (130, 37, 70),
        (97, 64, 41),
        (70, 70, 90),
    ];
    for &(n, d_in, d_sae) in &sizes {
        let cast = |v: Vec<f64>| -> Vec<T> { v.into_iter().map(T::from_f64).collect() };
        let z = cast(random(n * d_sae, 1, 0.7));
        let w_dec = cast(random(d_sae * d_in, 2, 0.0));
        let xc = cast(random(n * d_in, 3, 0.0));
        let d = cast(random(n * d_in, 4, 0.0));
        let b = cast(random(d_in, 5, 0.0));
        let add = cast(random(d_sae, 6, 0.0));
        let wide = |v: &[T]| -> Vec<f64> { v.iter().map(|x| x.to_f64()).collect() };
        let (w_dec64, xc64, d64, b64, add64) =
            (wide(&w_dec), wide(&xc), wide(&d), wide(&b), wide(&add));
        let mut codes = Codes::default();
        codes.build_from_dense(&z, n, d_sae, |_, v| (v > T::ZERO).then_some(v));
        let f: Vec<f64> = z.iter().map(|v| v.to_f64().max(0.0)).collect();
        assert_eq!(codes.nnz(), f.iter().filter(|v| **v > 0.0).count());
        let close = |got: T, want: f64, what: &str| {
            assert!(
                (got.to_f64() - want).abs() <= tol * (1.0 + want.abs()),
                "{what} {n}×{d_in}×{d_sae}: {} vs {want}",
                got.to_f64()
            );
        };
        for accumulate in [false, true] {
            let start = T::from_f64(0.5);
            // `got` `[a, b]` against `Σ_r left[r, a] · right[r, b]` over the `n` rows, plus 0.5 when
            // accumulating onto a buffer that started at 0.5.
            let check_at_b =
                |got: &[T], left: &[f64], a_dim: usize, right: &[f64], b_dim: usize, what: &str| {
                    for a in 0..a_dim {
                        for b in 0..b_dim {
                            let base = if accumulate { 0.5 } else { 0.0 };
                            let want = base
                                + (0..n)
                                    .map(|r| left[r * a_dim + a] * right[r * b_dim + b])
                                    .sum::<f64>();
                            close(got[a * b_dim + b], want, what);
                        }
                    }
                };
            // decode
            let mut out = vec![start; n * d_in];
            codes.decode(&w_dec, d_in, Some(&b), &mut out, accumulate);
            for r in 0..n {
                for j in 0..d_in {
                    let base = if accumulate { 0.5 } else { b64[j] };
                    let want = base
                        + (0..d_sae)
                            .map(|i| f[r * d_sae + i] * w_dec64[i * d_in + j])
                            .sum::<f64>();
                    close(out[r * d_in + j], want, "decode");
                }
            }
            // W_dec gradient
            codes.set_grad_from_output(&d, &w_dec, d_in, Some(&add));
            codes.index_columns();
            let mut gw_dec = vec![start; d_sae * d_in];
            codes.grad_w_dec(&d, d_in, &mut gw_dec, accumulate);
            // gw_dec = fᵀ·d (+ 0.5 when accumulating)
            check_at_b(&gw_dec, &f, d_sae, &d64, d_in, "grad_w_dec");
            // W_enc gradient from the entry gradients
            let mut gw_enc = vec![start; d_in * d_sae];
            codes.grad_w_enc(&xc, d_in, &mut gw_enc, accumulate);
            let g_dense = {
                let mut g = vec![0.0; n * d_sae];
                for r in 0..n {
                    for p in codes.row_ptr[r]..codes.row_ptr[r + 1] {
                        g[r * d_sae + codes.idx[p] as usize] = codes.grad[p].to_f64();
                    }
                }
                g
            };
            // gw_enc = xcᵀ·g (+ 0.5 when accumulating)
            check_at_b(&gw_enc, &xc64, d_in, &g_dense, d_sae, "grad_w_enc");
        }
        // grad at entries
        for r in 0..n {
            for p in codes.row_ptr[r]..codes.row_ptr[r + 1] {
                let i = codes.idx[p] as usize;
                let want = (0..d_in)
                    .map(|j| d64[r * d_in + j] * w_dec64[i * d_in + j])
                    .sum::<f64>()
                    + add64[i];
                close(codes.grad[p], want, "grad at entries");
            }
        }
        let mut sums = vec![T::ZERO; d_sae];
        codes.column_sums(true, &mut sums, false);
        for i in 0..d_sae {
            let want: f64 = (0..n)
                .map(|r| {
                    let (a, b) = (codes.row_ptr[r], codes.row_ptr[r + 1]);
                    codes.idx[a..b]
                        .iter()
                        .zip(&codes.grad[a..b])
                        .filter(|(&k, _)| k as usize == i)
                        .map(|(_, g)| g.to_f64())
                        .sum::<f64>()
                })
                .sum();
            close(sums[i], want, "column sums");
        }
    }
}

#[test]
fn sparse_kernels_match_dense_references_in_f64() {
    check_sparse_kernels::<f64>(1e-12);
}

#[test]
fn sparse_kernels_match_dense_references_in_f32() {
    check_sparse_kernels::<f32>(2e-5);
}

#[test]
fn top_k_selection_matches_sorting_on_random_rows() {
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    for (seed, len) in [(1u64, 9216usize), (2, 1001), (3, 63)] {
        let row: Vec<f32> = random(len, seed, 0.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        for k in [1, 7, 32, 60] {
            top_k(&row, k, &mut scratch, &mut out);
            let mut idx: Vec<usize> = (0..len).collect();
            idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
            let mut want: Vec<u32> = idx[..k.min(len)].iter().map(|&i| i as u32).collect();
            want.sort();
            assert_eq!(
                out.iter().map(|p| p.0).collect::<Vec<_>>(),
                want,
                "len {len} k {k}"
            );
        }
    }
}

/// TopK keeps exactly the k largest pre-activations of each row; BatchTopK the k·n largest of the batch
/// (including rows far above the rest, which hold more than 2k of them).
#[test]
fn topk_and_batchtopk_select_the_right_entries() {
    let (n, d_in, d_sae, k) = (80, 11, 96, 5);
    for arch in [Architecture::TopK { k }, Architecture::BatchTopK { k }] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut sae =
            SaeOf::<f64>::init(SaeConfig::new(d_in, d_sae, arch).unwrap(), &mut rng).unwrap();
        sae.cfg.apply_b_dec_to_input = false;
        let mut x: Vec<f64> = (0..n * d_in).map(|_| rng.random_range(-1.0..1.0)).collect();
        for v in &mut x[..3 * d_in] {
            *v *= 40.0; // three loud rows
        }
        let mut ws = WorkspaceOf::default();
        let mut grads = GradientsOf::zeros_like(&sae);
        sae.forward_backward(&x, n, &StepConfig::default(), &mut ws, &mut grads)
            .unwrap();
        // Reference pre-activations.
        let z: Vec<f64> = (0..n * d_sae)
            .map(|p| {
                let (r, i) = (p / d_sae, p % d_sae);
                (0..d_in)
                    .map(|j| x[r * d_in + j] * sae.w_enc[j * d_sae + i])
                    .sum::<f64>()
                    + sae.b_enc[i]
            })
            .collect();
        let mut want: Vec<(usize, usize)> = Vec::new();
        match arch {
            Architecture::TopK { .. } => {
                for r in 0..n {
                    let mut idx: Vec<usize> = (0..d_sae).collect();
                    idx.sort_by(|&a, &b| z[r * d_sae + b].partial_cmp(&z[r * d_sae + a]).unwrap());
                    want.extend(
                        idx[..k]
                            .iter()
                            .filter(|&&i| z[r * d_sae + i] > 0.0)
                            .map(|&i| (r, i)),
                    );
                }
            }
            _ => {
                let mut idx: Vec<usize> = (0..n * d_sae).filter(|&p| z[p] > 0.0).collect();
                idx.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap());
                want.extend(idx[..k * n].iter().map(|&p| (p / d_sae, p % d_sae)));
                let loud = want.iter().filter(|(r, _)| *r < 3).count();
                assert!(
                    loud > 3 * 2 * k,
                    "the loud rows should hold more than 2k entries each ({loud})"
                );
            }
        }
        want.sort();
        let codes = ws.codes();
        let mut got: Vec<(usize, usize)> = Vec::new();
        for r in 0..n {
            for p in codes.row_ptr[r]..codes.row_ptr[r + 1] {
                got.push((r, codes.idx[p] as usize));
                assert!((codes.val[p] - z[r * d_sae + codes.idx[p] as usize]).abs() < 1e-12);
            }
        }
        assert_eq!(got, want, "{arch}");
    }
}
