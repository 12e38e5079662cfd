//! `zephyra plot`: training curves, feature-density histograms and the L0-vs-FVE scatter, as PNG and SVG.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use zephyra_analysis::plot::{
    plot_density_histogram, plot_l0_vs_fve, plot_training_curves, read_metrics, RunCurve, RunPoint,
};
use zephyra_analysis::report::EvalReport;

use super::Global;
use crate::output::OutputDir;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["run", "runs"])))]
pub struct Args {
    /// One run directory (holding metrics.jsonl and, after `zephyra eval`, eval.json).
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Several run directories (e.g. `--runs runs/*`): curves overlaid, plus the L0-vs-FVE scatter.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Output directory [default: RUN/plots with --run].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

struct Run {
    name: String,
    metrics: Option<Vec<zephyra_analysis::plot::TrainingPoint>>,
    eval: Option<EvalReport>,
}

fn load_run(dir: &Path) -> anyhow::Result<Run> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: pass a run directory written by `zephyra train`",
            dir.display()
        );
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let m = dir.join("metrics.jsonl");
    let metrics = if m.is_file() {
        Some(read_metrics(&m)?)
    } else {
        None
    };
    let e = dir.join("eval.json");
    let eval = if e.is_file() {
        Some(
            EvalReport::read(&e)
                .with_context(|| format!("reading {} (written by `zephyra eval`)", e.display()))?,
        )
    } else {
        None
    };
    Ok(Run {
        name,
        metrics,
        eval,
    })
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let dirs: Vec<PathBuf> = match &args.run {
        Some(r) => vec![r.clone()],
        None => args.runs.clone(),
    };
    let out = match (&args.out, &args.run) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.join("plots"),
        (None, None) => bail!("--out DIR is required with --runs"),
    };
    let runs: Vec<Run> = dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<anyhow::Result<_>>()?;
    // A plot that fails (a full disk) leaves no partial or temporary files behind.
    let out_dir = OutputDir::claim("--out", &out)?;
    let written = draw(&runs, &out).inspect_err(|_| out_dir.discard_new())?;
    if written.is_empty() {
        bail!(
            "nothing to plot in {}: no run holds a non-empty metrics.jsonl (from `zephyra train`) or an eval.json (from `zephyra eval`)",
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws every figure the runs have data for into `out`; returns the files written.
fn draw(runs: &[Run], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();

    let curves: Vec<RunCurve> = runs
        .iter()
        .filter_map(|r| {
            r.metrics.as_ref().map(|m| RunCurve {
                name: r.name.clone(),
                points: m.clone(),
            })
        })
        .filter(|c| !c.points.is_empty())
        .collect();
    if !curves.is_empty() {
        written.extend(plot_training_curves(&curves, out)?);
    }
    let with_eval: Vec<&Run> = runs.iter().filter(|r| r.eval.is_some()).collect();
    for r in &with_eval {
        let Some(report) = &r.eval else { continue };
        let base = if with_eval.len() == 1 {
            out.join("density")
        } else {
            out.join(format!("density-{}", r.name))
        };
        let title = format!(
            "Feature density: {} ({} eval tokens)",
            r.name, report.figures.sparsity.n_tokens
        );
        written.extend(plot_density_histogram(
            &report.figures.sparsity.density_histogram,
            &title,
            &base,
        )?);
    }
    if runs.len() > 1 {
        // Eval figures when the run has them, else the last training batch's.
        let points: Vec<RunPoint> = runs
            .iter()
            .filter_map(
                |r| match (&r.eval, r.metrics.as_ref().and_then(|m| m.last())) {
                    (Some(e), _) => Some(RunPoint {
                        name: r.name.clone(),
                        l0: e.figures.sparsity.l0,
                        fve: e.figures.reconstruction.fve,
                    }),
                    (None, Some(p)) => Some(RunPoint {
                        name: format!("{} (train batch)", r.name),
                        l0: p.l0,
                        fve: p.fve,
                    }),
                    (None, None) => None,
                },
            )
            .collect();
        if !points.is_empty() {
            written.extend(plot_l0_vs_fve(&points, &out.join("l0_vs_fve"))?);
        }
    }
    Ok(written)
}
