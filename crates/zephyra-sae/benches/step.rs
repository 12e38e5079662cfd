//! Forward+backward step throughput at the benchmark size (d_in 576, d_sae 9216, batch 4096),
//! without the optimizer: `cargo bench -p zephyra-sae --bench step` (threads: `RAYON_NUM_THREADS`, default 2).
//! A plain timing harness (criterion is not available offline); prints tokens/s per architecture.

mod common;

use std::time::Instant;

use rand::{Rng, SeedableRng};
use zephyra_sae::kernels::MatRef;
use zephyra_sae::{Architecture, Gradients, Sae, SaeConfig, StepConfig, Workspace};

fn main() {
    let threads = common::init_threads();
    let (d_in, d_sae, n) = (576, 9216, 4096);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = (0..n * d_in)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    // DENSE_ABOVE=1 forces the sparse path, =0 the dense one (to find the cut-over).
    let dense_above: Option<f64> = std::env::var("DENSE_ABOVE")
        .ok()
        .and_then(|v| v.parse().ok());
    if filter.as_deref().is_none_or(|f| "gemm".contains(f)) {
        // The bound: the one dense encoder GEMM every step needs.
        let w: Vec<f32> = (0..d_in * d_sae)
            .map(|_| rng.random_range(-0.05f32..0.05))
            .collect();
        let mut z = vec![0.0f32; n * d_sae];
        let t = Instant::now();
        for _ in 0..3 {
            zephyra_sae::kernels::matmul(
                &mut z,
                MatRef::row_major(&x, n, d_in),
                MatRef::row_major(&w, d_in, d_sae),
                false,
                1.0,
            );
        }
        let dt = t.elapsed().as_secs_f64() / 3.0;
        println!(
            "{:<24} {:>7.1} ms  {:>8.0} tok/s bound",
            "encoder GEMM alone",
            dt * 1e3,
            n as f64 / dt
        );
    }
    for (label, arch, lambda, relu_bias) in [
        ("topk k=32", Architecture::TopK { k: 32 }, 0.0, 0.0),
        (
            "batchtopk k=32",
            Architecture::BatchTopK { k: 32 },
            0.0,
            0.0,
        ),
        ("relu (at init)", Architecture::Relu, 5.0, 0.0),
        ("relu (b_enc -0.03)", Architecture::Relu, 5.0, -0.3),
        ("relu (b_enc -0.06)", Architecture::Relu, 5.0, -0.6),
        ("relu (b_enc -0.09)", Architecture::Relu, 5.0, -0.9),
        ("relu (b_enc -0.15)", Architecture::Relu, 5.0, -1.5),
        ("jumprelu (b_enc<0)", Architecture::JumpRelu, 1.0, -0.9),
    ] {
        if filter.as_deref().is_some_and(|f| !label.contains(f)) {
            continue;
        }
        let mut sae = Sae::init(
            SaeConfig::new(d_in, d_sae, arch).expect("valid config"),
            &mut rng,
        )
        .expect("init");
        // A negative encoder bias stands in for a trained, sparse ReLU SAE.
        sae.b_enc
            .iter_mut()
            .for_each(|b| *b = relu_bias * if arch == Architecture::Relu { 0.1 } else { 1.0 });
        if arch == Architecture::JumpRelu {
            sae.threshold.iter_mut().for_each(|t| *t = 0.001);
        }
        let mut ws = Workspace::default();
        let mut grads = Gradients::zeros_like(&sae);
        let defaults = StepConfig::default();
        let step = StepConfig {
            sparsity_coeff: lambda,
            dense_above: dense_above.unwrap_or(defaults.dense_above),
            ..defaults
        };
        let stats = sae
            .forward_backward(&x, n, &step, &mut ws, &mut grads)
            .expect("step");
        let reps = 3;
        let t = Instant::now();
        for _ in 0..reps {
            sae.forward_backward(&x, n, &step, &mut ws, &mut grads)
                .expect("step");
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!("{label:<24} L0 {:>8.1}  dense {:<5}  {:>7.1} ms/step  {:>8.0} tok/s (forward+backward only, {threads} threads)", stats.l0, stats.dense, dt * 1e3, n as f64 / dt);
    }
}
