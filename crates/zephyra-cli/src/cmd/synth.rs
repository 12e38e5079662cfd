//! `zephyra synth`: synthetic activations with known true features (SynthSAEBench design), written as an
//! activation store that `train --acts` reads, with the truth beside it for `eval --synth`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use zephyra_data::store::{ActivationStore, RowSource, RowStoreWriter};
use zephyra_sae::synth::{
    files, HierarchyConfig, SynthConfig, SynthModel, BLOCK_ROWS, TRAIN_STREAM,
};

use super::Global;

/// Blocks of 1,024 rows per shard.
const BLOCKS_PER_SHARD: usize = 64;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// True features.
    #[arg(long, default_value_t = 4096)]
    pub features: usize,
    /// Row width.
    #[arg(long, default_value_t = 256)]
    pub d: usize,
    /// Training rows to write (rounded up to a multiple of 1024).
    #[arg(long, default_value_t = 819_200)]
    pub rows: u64,
    /// Seed of the directions, probabilities, hierarchy and rows.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: the store (shards + manifest.json), synth.json, truth.safetensors, hierarchy.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Arrange the most frequent features in trees: children fire only with their parent.
    #[arg(long)]
    pub hierarchy: bool,
    /// Trees of the hierarchy.
    #[arg(long, default_value_t = 128, requires = "hierarchy")]
    pub roots: usize,
    /// Children per parent.
    #[arg(long, default_value_t = 4, requires = "hierarchy")]
    pub branching: usize,
    /// Levels below the roots.
    #[arg(long, default_value_t = 2, requires = "hierarchy")]
    pub depth: usize,
    /// Fraction of parents whose children are mutually exclusive.
    #[arg(long, default_value_t = 1.0, requires = "hierarchy")]
    pub exclusive_portion: f64,
    /// Keep the children's raw Zipf probabilities as conditional ones (they then fire far less often).
    #[arg(long, requires = "hierarchy")]
    pub no_compensate: bool,
    /// Zipf exponent of the firing probabilities.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
    /// Firing probability of the most frequent feature.
    #[arg(long, default_value_t = 0.3)]
    pub max_prob: f64,
    /// Firing probability of the least frequent feature.
    #[arg(long, default_value_t = 0.01)]
    pub min_prob: f64,
    /// Mean magnitude of a firing feature.
    #[arg(long, default_value_t = 1.0)]
    pub magnitude_mean: f64,
    /// Standard deviation of the magnitude.
    #[arg(long, default_value_t = 0.1)]
    pub magnitude_std: f64,
    /// Share of each feature's latent firing variance carried by shared factors (0: independent firing).
    #[arg(long, default_value_t = 0.0)]
    pub correlation: f64,
    /// Shared factors behind --correlation.
    #[arg(long, default_value_t = 16)]
    pub correlation_rank: usize,
    /// Standard deviation of the Gaussian noise per dimension.
    #[arg(long, default_value_t = 0.01)]
    pub noise: f64,
    /// Norm of the bias added to every row.
    #[arg(long, default_value_t = 1.0)]
    pub bias_norm: f64,
    /// Exactly orthonormal directions (no superposition; needs --features ≤ --d).
    #[arg(long)]
    pub orthogonal: bool,
    /// Also write DIR/acts.npy (float32 [rows, d]) for other toolkits (the SAELens side-by-side script).
    #[arg(long)]
    pub npy: bool,
}

impl Args {
    fn config(&self) -> SynthConfig {
        SynthConfig {
            n_features: self.features,
            d: self.d,
            seed: self.seed,
            zipf_exponent: self.zipf_exponent,
            max_prob: self.max_prob,
            min_prob: self.min_prob,
            magnitude_mean: self.magnitude_mean,
            magnitude_std: self.magnitude_std,
            hierarchy: self.hierarchy.then_some(HierarchyConfig {
                roots: self.roots,
                branching: self.branching,
                depth: self.depth,
                exclusive_portion: self.exclusive_portion,
            }),
            compensate: !self.no_compensate,
            correlation_rank: if self.correlation > 0.0 {
                self.correlation_rank
            } else {
                0
            },
            correlation_strength: self.correlation,
            noise_std: self.noise,
            bias_norm: self.bias_norm,
            orthogonal: self.orthogonal,
        }
    }
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if args.rows == 0 {
        bail!("--rows 0 writes nothing: use e.g. --rows 819200 (200 steps of 4096)");
    }
    let model = SynthModel::new(args.config()).context("checking the synthetic data settings")?;
    let n_blocks = args.rows.div_ceil(BLOCK_ROWS as u64);
    let rows = n_blocks * BLOCK_ROWS as u64;
    let description = format!(
        "zephyra synth {} rows {rows}",
        serde_json::to_string(&model.cfg)?
    );
    let source = RowSource {
        name: "synth".into(),
        description,
        hook: "synth".into(),
        d: model.cfg.d,
        seed: model.cfg.seed,
        target_rows: rows,
        rows_per_shard: BLOCKS_PER_SHARD * BLOCK_ROWS,
    };
    let mut writer = RowStoreWriter::create(&args.out, &source)
        .with_context(|| format!("creating the store {}", args.out.display()))?;
    files::write(&args.out, &model, rows)
        .with_context(|| format!("writing the truth into {}", args.out.display()))?;
    let n_shards = n_blocks.div_ceil(BLOCKS_PER_SHARD as u64) as usize;
    let bar = progress_bar(global, n_blocks, writer.n_shards() * BLOCKS_PER_SHARD);
    for shard in writer.n_shards()..n_shards {
        let first = (shard * BLOCKS_PER_SHARD) as u64;
        let last = (first + BLOCKS_PER_SHARD as u64).min(n_blocks);
        let blocks: Vec<Vec<f32>> = (first..last)
            .into_par_iter()
            .map(|b| model.block(TRAIN_STREAM, b).acts)
            .collect();
        writer
            .push(&blocks.concat())
            .with_context(|| format!("writing shard {shard} into {}", args.out.display()))?;
        bar.inc(last - first);
    }
    writer.finish()?;
    bar.finish_and_clear();
    if args.npy {
        write_npy(&args.out)?;
    }
    println!(
        "{}",
        serde_json::json!({
            "out": args.out,
            "rows": rows,
            "d": model.cfg.d,
            "features": model.cfg.n_features,
            "parents": model.hierarchy.parents.len(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies the store's rows, in order, into `dir/acts.npy` (via a temporary file and a rename).
fn write_npy(dir: &Path) -> anyhow::Result<()> {
    let store = ActivationStore::open(dir)?;
    let path = dir.join("acts.npy");
    let tmp = dir.join(".tmp-acts.npy");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let header = zephyra_sae::npy::f32_header(&[store.n_rows() as usize, store.d()]);
    out.write_all(&header)?;
    let mut rows = Vec::new();
    for s in 0..store.n_shards() {
        rows.clear();
        store.read_activations_into(s, &mut rows)?;
        let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write_all(&bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn progress_bar(global: &Global, total: u64, done: usize) -> ProgressBar {
    if !global.show_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("synth [{bar:40}] {pos}/{len} blocks of 1024 rows (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(done as u64);
    bar
}
