//! Sparse kernels and selections against naive scalar references, at odd sizes and at sizes that take
//! the parallel paths.

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use rand::{Rng, SeedableRng};
use zephyra_sae::kernels::select::top_k;
use zephyra_sae::kernels::Codes;
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

#[test]
fn sparse_kernels_match_dense_references() {
    for &(n, d_in, d_sae) in &[(1, 1, 1), (3, 7, 5), (65, 13, 33), (130, 37, 70)] {
        let z = random(n * d_sae, 1, 0.7);
        let w_dec = random(d_sae * d_in, 2, 0.0);
        let xc = random(n * d_in, 3, 0.0);
        let d = random(n * d_in, 4, 0.0);
        let b = random(d_in, 5, 0.0);
        let add = random(d_sae, 6, 0.0);
        let mut codes = Codes::default();
        codes.build_from_dense(&z, n, d_sae, |_, v| (v > 0.0).then_some(v));
        let f: Vec<f64> = z.iter().map(|v| v.max(0.0)).collect();
        assert_eq!(codes.nnz(), f.iter().filter(|v| **v > 0.0).count());
        // decode
        let mut out = vec![0.0; n * d_in];
        codes.decode(&w_dec, d_in, Some(&b), &mut out, false);
        for r in 0..n {
            for j in 0..d_in {
                let want = b[j]
                    + (0..d_sae)
                        .map(|i| f[r * d_sae + i] * w_dec[i * d_in + j])
                        .sum::<f64>();
                assert!(
                    (out[r * d_in + j] - want).abs() < 1e-12,
                    "decode {n}×{d_in}×{d_sae}"
                );
            }
        }
        // grad at entries
        codes.set_grad_from_output(&d, &w_dec, d_in, Some(&add));
        for r in 0..n {
            for p in codes.row_ptr[r]..codes.row_ptr[r + 1] {
                let i = codes.idx[p] as usize;
                let want = (0..d_in)
                    .map(|j| d[r * d_in + j] * w_dec[i * d_in + j])
                    .sum::<f64>()
                    + add[i];
                assert!((codes.grad[p] - want).abs() < 1e-12);
            }
        }
        codes.index_columns();
        // W_dec gradient, accumulate on top of ones
        let mut gw_dec = vec![1.0; d_sae * d_in];
        codes.grad_w_dec(&d, d_in, &mut gw_dec, true);
        for i in 0..d_sae {
            for j in 0..d_in {
                let want = 1.0
                    + (0..n)
                        .map(|r| f[r * d_sae + i] * d[r * d_in + j])
                        .sum::<f64>();
                assert!(
                    (gw_dec[i * d_in + j] - want).abs() < 1e-12,
                    "grad_w_dec {n}×{d_in}×{d_sae}"
                );
            }
        }
        // W_enc gradient from the entry gradients
        let mut g_dense = vec![0.0; n * d_sae];
        for r in 0..n {
            for p in codes.row_ptr[r]..codes.row_ptr[r + 1] {
                g_dense[r * d_sae + codes.idx[p] as usize] = codes.grad[p];
            }
        }
        let mut gw_enc = vec![7.0; d_in * d_sae];
        codes.grad_w_enc(&xc, d_in, &mut gw_enc, false);
        for j in 0..d_in {
            for i in 0..d_sae {
                let want = (0..n)
                    .map(|r| g_dense[r * d_sae + i] * xc[r * d_in + j])
                    .sum::<f64>();
                assert!(
                    (gw_enc[j * d_sae + i] - want).abs() < 1e-12,
                    "grad_w_enc {n}×{d_in}×{d_sae}"
                );
            }
        }
        let mut sums = vec![0.0; d_sae];
        codes.column_sums(true, &mut sums, false);
        for i in 0..d_sae {
            let want: f64 = (0..n).map(|r| g_dense[r * d_sae + i]).sum();
            assert!((sums[i] - want).abs() < 1e-12);
        }
    }
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
