//! The four sparse kernels of a ReLU/TopK step, one by one, at the benchmark size (d_in 576,
//! d_sae 9216, batch 4096) and several code densities, beside the dense GEMM that does the same product:
//! `cargo bench -p zephyra-sae --bench kernels` (threads: `RAYON_NUM_THREADS`, default 2). Random codes
//! with latents drawn uniformly; GFLOP/s counts the useful `2·nnz·d_in` flops.

mod common;

use std::time::Instant;

use rand::{Rng, SeedableRng};
use zephyra_sae::kernels::{matmul, Codes, MatRef};

/// Median of `reps` timings of `f`, in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[reps / 2]
}

fn main() {
    common::init_threads();
    let (d_in, d_sae, n) = (576, 9216, 4096);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut random =
        |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let x = random(n * d_in);
    let w_dec = random(d_sae * d_in);
    let d_out = random(n * d_in);
    let mut out = vec![0.0f32; n * d_in];
    let mut gw = vec![0.0f32; d_sae * d_in];
    let mut z = vec![0.0f32; n * d_sae];
    let gemm = time(3, || {
        matmul(
            &mut z,
            MatRef::row_major(&x, n, d_in),
            MatRef::row_major(&w_dec, d_in, d_sae),
            false,
            1.0,
        )
    });
    let dense_flops = 2.0 * (n * d_in * d_sae) as f64;
    println!(
        "dense GEMM (any of the five)   {:>7.1} ms  {:>6.1} GFLOP/s",
        gemm * 1e3,
        dense_flops / gemm / 1e9
    );
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for l0 in [32usize, 128, 550, 1400, 2800] {
        if filter.as_deref().is_some_and(|f| f.parse() != Ok(l0)) {
            continue;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(l0 as u64);
        let lists: Vec<Vec<(u32, f32)>> = (0..n)
            .map(|_| {
                let mut row: Vec<u32> = rand::seq::index::sample(&mut rng, d_sae, l0)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                row.sort_unstable();
                row.into_iter()
                    .map(|i| (i, rng.random_range(0.0f32..1.0)))
                    .collect()
            })
            .collect();
        let mut codes = Codes::default();
        codes.build_from_lists(&lists, d_sae);
        codes.set_grad_from_output(&d_out, &w_dec, d_in, None);
        codes.index_columns();
        let flops = 2.0 * (codes.nnz() * d_in) as f64;
        let report = |name: &str, t: f64| {
            println!(
                "L0 {l0:>5}  {name:<18} {:>7.1} ms  {:>6.1} GFLOP/s  ({:.2} of the GEMM's time)",
                t * 1e3,
                flops / t / 1e9,
                t / gemm
            )
        };
        report(
            "decode",
            time(5, || codes.decode(&w_dec, d_in, None, &mut out, false)),
        );
        report(
            "grad at entries",
            time(5, || codes.set_grad_from_output(&d_out, &w_dec, d_in, None)),
        );
        report(
            "grad W_dec",
            time(5, || codes.grad_w_dec(&d_out, d_in, &mut gw, false)),
        );
        report(
            "grad W_enc",
            time(5, || codes.grad_w_enc(&x, d_in, &mut gw, false)),
        );
    }
}
