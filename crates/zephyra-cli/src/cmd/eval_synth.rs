//! `zephyra eval --synth DIR`: scores SAEs against the ground truth `zephyra synth` wrote, on held-out
//! rows of the same generator; several SAEs (other seeds, `--seed-runs`) give mean ± 95 % intervals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use zephyra_analysis::ground_truth::{evaluate_synth, SaeFigures, SynthEvalReport};
use zephyra_sae::synth::{files, BLOCK_ROWS};

use super::Global;

/// The `eval` flags of this path.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Score against the ground truth in a `zephyra synth` directory (no model is loaded).
    #[arg(long, value_name = "DIR")]
    pub synth: Option<PathBuf>,
    /// With --synth: held-out rows to score (rounded up to a multiple of 1024).
    #[arg(long, default_value_t = 16_384)]
    pub synth_rows: u64,
}

/// Runs the ground-truth evaluation of `sae` (and `seed_runs`) against `dir`.
pub fn run(
    sae: &Path,
    seed_runs: &[PathBuf],
    synth: &SynthArgs,
    dir: &Path,
    out: Option<&Path>,
    json: bool,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    if synth.synth_rows == 0 {
        bail!("--synth-rows 0 scores nothing: use e.g. --synth-rows 16384");
    }
    let (truth, _) = files::read(dir).with_context(|| {
        format!(
            "reading the ground truth in {} (made by `zephyra synth`)",
            dir.display()
        )
    })?;
    let n_blocks = synth.synth_rows.div_ceil(BLOCK_ROWS as u64);
    let mut saes = Vec::new();
    for path in std::iter::once(sae).chain(seed_runs.iter().map(PathBuf::as_path)) {
        let loaded = zephyra_sae::saelens::load(path)
            .with_context(|| format!("loading the SAE from {}", path.display()))?;
        let bar = progress_bar(global, path);
        let figures = evaluate_synth(&loaded, &truth, n_blocks, &mut |p| {
            bar.set_length(p.rows_total);
            bar.set_position(p.rows_done);
        })
        .with_context(|| format!("scoring {} against {}", path.display(), dir.display()))?;
        bar.finish_and_clear();
        saes.push(SaeFigures {
            sae: path.display().to_string(),
            architecture: loaded.cfg.architecture.name().to_string(),
            d_sae: loaded.cfg.d_sae,
            figures,
        });
    }
    let report = SynthEvalReport::new(
        dir.display().to_string(),
        truth.cfg.n_features,
        truth.cfg.d,
        truth.hierarchy.parents.len(),
        saes,
    );
    let out = out.map_or_else(|| sae.join("eval_synth.json"), Path::to_path_buf);
    report
        .write(&out)
        .with_context(|| format!("writing --out {}", out.display()))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    eprintln!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(global: &Global, sae: &Path) -> ProgressBar {
    if !global.show_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(sae.display().to_string());
    bar
}
