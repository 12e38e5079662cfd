//! `zephyra encode --sae DIR --acts acts.npy --out codes.safetensors`: feature activations of a trained
//! (or SAELens) SAE on a float32 `.npy` `[n, d_in]`.
//!
//! Output (safetensors, float32 values):
//! - `--format sparse` (default), CSR: `values` f32 `[nnz]`, `indices` i64 `[nnz]` (latent of each value),
//!   `row_ptr` i64 `[n + 1]` (row `r`'s entries are `row_ptr[r]..row_ptr[r+1]`, latents ascending);
//!   metadata `format = "csr"`, `n_rows`, `d_sae`.
//! - `--format dense`: `codes` f32 `[n, d_sae]`; metadata `format = "dense"`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use safetensors::Dtype;
use zephyra_sae::npy::NpyFile;
use zephyra_sae::{saelens, Workspace};

use super::Global;
use crate::args::renamed::OldBatchRows;

/// Output layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// CSR: `values`, `indices`, `row_ptr`.
    Sparse,
    /// `codes` `[n, d_sae]`.
    Dense,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// SAE folder (`cfg.json` + `sae_weights.safetensors`, as written by `zephyra train` or SAELens).
    #[arg(long)]
    sae: PathBuf,
    /// Activations: float32 `.npy` `[n, d_in]`.
    #[arg(long)]
    acts: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Output layout.
    #[arg(long, value_enum, default_value_t = Format::Sparse)]
    format: Format,
    /// Rows encoded per batch.
    #[arg(long = "batch-rows", default_value_t = 4096, value_name = "ROWS")]
    batch: usize,
    #[command(flatten)]
    old_batch: OldBatchRows,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if args.batch == 0 {
        bail!("--batch-rows must be positive");
    }
    let sae = saelens::load(&args.sae)
        .with_context(|| format!("loading the SAE from {}", args.sae.display()))?;
    let acts = NpyFile::open(&args.acts)
        .with_context(|| format!("reading activations {}", args.acts.display()))?;
    let (n, d_in, d_sae) = (acts.n_rows(), acts.d_in(), sae.cfg.d_sae);
    if d_in != sae.cfg.d_in {
        bail!(
            "{} has rows of width {d_in} but the SAE in {} expects d_in = {}: use activations from the SAE's hook ({})",
            args.acts.display(),
            args.sae.display(),
            sae.cfg.d_in,
            sae.cfg.metadata.hook_name.as_deref().unwrap_or("unknown hook")
        );
    }
    if args.format == Format::Dense && n.saturating_mul(d_sae) > 1 << 30 {
        bail!("dense output would hold {n} × {d_sae} values; use --format sparse");
    }
    let bar = if global.show_progress() {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ws = Workspace::default();
    let mut rows = vec![0.0f32; args.batch * d_in];
    let mut dense: Vec<f32> = Vec::new();
    let (mut values, mut indices, mut row_ptr) = (Vec::<f32>::new(), Vec::<i64>::new(), vec![0i64]);
    let mut start = 0;
    while start < n {
        let count = args.batch.min(n - start);
        let x = &mut rows[..count * d_in];
        acts.copy_rows(start, count, x);
        if let Some(p) = x.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: row {} holds a non-finite value; clean the activations first",
                args.acts.display(),
                start + p / d_in
            );
        }
        let codes = sae.encode_with(x, count, &mut ws)?;
        match args.format {
            Format::Dense => dense.extend_from_slice(codes),
            Format::Sparse => {
                for row in codes.chunks_exact(d_sae) {
                    for (i, &v) in row.iter().enumerate() {
                        if v != 0.0 {
                            values.push(v);
                            indices.push(i as i64);
                        }
                    }
                    row_ptr.push(values.len() as i64);
                }
            }
        }
        start += count;
        bar.set_position(start as u64);
    }
    bar.finish_and_clear();
    let le_f32 = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let le_i64 = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut meta = HashMap::from([
        ("n_rows".to_string(), n.to_string()),
        ("d_sae".to_string(), d_sae.to_string()),
    ]);
    let nnz = match args.format {
        Format::Dense => {
            meta.insert("format".into(), "dense".into());
            let nnz = dense.iter().filter(|v| **v != 0.0).count();
            saelens::write_raw_tensors(
                &args.out,
                &[("codes", Dtype::F32, vec![n, d_sae], le_f32(&dense))],
                Some(meta),
            )?;
            nnz
        }
        Format::Sparse => {
            meta.insert("format".into(), "csr".into());
            saelens::write_raw_tensors(
                &args.out,
                &[
                    ("values", Dtype::F32, vec![values.len()], le_f32(&values)),
                    ("indices", Dtype::I64, vec![indices.len()], le_i64(&indices)),
                    ("row_ptr", Dtype::I64, vec![row_ptr.len()], le_i64(&row_ptr)),
                ],
                Some(meta),
            )?;
            values.len()
        }
    };
    let l0 = if n > 0 { nnz as f64 / n as f64 } else { 0.0 };
    println!(
        "{}",
        serde_json::json!({"out": args.out.display().to_string(), "n_rows": n, "d_sae": d_sae, "nnz": nnz, "mean_l0": l0, "format": format!("{:?}", args.format).to_lowercase()})
    );
    Ok(ExitCode::SUCCESS)
}
