//! `zephyra bench train`: tokens/s of SAE training steps (topk k=32 and relu by default) at the README's
//! configuration (d_in 576, expansion 16, batch 4096, 2 threads), on random or real activations.
//!
//! `--json` prints one line per architecture:
//! `{"bench": "train", "arch", "k", "d_in", "d_sae", "batch", "threads", "steps", "tokens_per_s",
//!   "step_ms", "l0", "fve", "peak_rss_mb", "data"}` (`data` is `random` or the `.npy` path).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use zephyra_sae::npy::{NpyOrder, NpySource};
use zephyra_sae::train::{ActivationSource, MemorySource, Progress, TrainConfig, TrainSession};

use super::super::Global;
use crate::args::renamed::OldBatchRows;
use crate::args::Arch;
use crate::rss::peak_rss_mb;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architectures to time.
    #[arg(long, value_enum, num_args = 1.., default_values_t = [Arch::Topk, Arch::Relu])]
    arch: Vec<Arch>,
    /// Real activations (float32 .npy [n, d_in]); random Gaussian rows when absent.
    #[arg(long)]
    acts: Option<PathBuf>,
    /// Row width for random activations.
    #[arg(long, default_value_t = 576)]
    d_in: usize,
    /// d_sae = expansion × d_in.
    #[arg(long, default_value_t = 16)]
    expansion: usize,
    /// k for topk/batchtopk.
    #[arg(long, default_value_t = 32)]
    k: usize,
    /// Rows per step.
    #[arg(long = "batch-rows", default_value_t = 4096, value_name = "ROWS")]
    batch: usize,
    #[command(flatten)]
    old_batch: OldBatchRows,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: u64,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print JSON Lines.
    #[arg(long)]
    json: bool,
}

fn source(args: &Args) -> anyhow::Result<Box<dyn ActivationSource>> {
    match &args.acts {
        Some(p) => Ok(Box::new(
            NpySource::open(
                p,
                NpyOrder {
                    shuffle: true,
                    repeat: true,
                    seed: 0,
                },
            )
            .with_context(|| format!("opening {}", p.display()))?,
        )),
        None => {
            // Gaussian rows with a random mean direction, 8 batches' worth (recycled).
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let n = args.batch * 8;
            let mean: Vec<f32> = (0..args.d_in).map(|_| rng.random::<f32>() - 0.5).collect();
            let mut rows = Vec::with_capacity(n * args.d_in);
            for _ in 0..n {
                for m in &mean {
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                    rows.push(
                        m + ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32,
                    );
                }
            }
            Ok(Box::new(MemorySource::new(rows, args.d_in, true)?))
        }
    }
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    for &arch in &args.arch {
        let mut src = source(&args)?;
        let d_in = src.d_in();
        let architecture = arch.with_k(args.k, args.expansion * d_in);
        let total = (args.warmup + args.steps) * args.batch as u64;
        let mut cfg =
            TrainConfig::new(d_in, args.expansion * d_in, architecture, args.batch, total)?;
        cfg.threads = args.threads;
        cfg.init_rows = args.batch.min(4096);
        cfg.sparsity_warmup_steps = 0;
        let mut timer: Option<Instant> = None;
        let mut last = (0.0, 0.0);
        let warmup = args.warmup;
        let mut session = TrainSession::start(cfg, src.as_mut(), None, None)?;
        if warmup == 0 {
            timer = Some(Instant::now());
        }
        let mut on_step = |p: &Progress| {
            if p.step == warmup {
                timer = Some(Instant::now());
            }
            last = (p.l0, p.fve);
            ControlFlow::Continue(())
        };
        let outcome = session.run(src.as_mut(), &mut on_step)?;
        let secs = timer.map(|t| t.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
        let tokens_per_s = (args.steps * args.batch as u64) as f64 / secs;
        let line = serde_json::json!({
            "bench": "train", "arch": architecture.name(), "k": architecture.k(), "d_in": d_in,
            "d_sae": args.expansion * d_in, "batch": args.batch, "threads": args.threads, "steps": args.steps,
            "tokens_per_s": tokens_per_s, "step_ms": 1000.0 * secs / args.steps as f64, "l0": last.0, "fve": last.1,
            "peak_rss_mb": peak_rss_mb(),
            "data": args.acts.as_ref().map_or("random".to_string(), |p| p.display().to_string()),
        });
        debug_assert!(outcome.finished);
        super::print_result(args.json, &line, || {
            format!(
                "{:<10} d_in {d_in} d_sae {} batch {} threads {}: {:>8.0} tok/s ({:.0} ms/step), L0 {:.1}, peak RSS {:.0} MB",
                architecture.to_string(),
                args.expansion * d_in,
                args.batch,
                args.threads,
                tokens_per_s,
                1000.0 * secs / args.steps as f64,
                last.0,
                peak_rss_mb().unwrap_or(f64::NAN)
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}
