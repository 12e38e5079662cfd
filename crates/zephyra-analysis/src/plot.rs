//! Plots (PNG for people, SVG for the web app) drawn with `plotters`.
//!
//! - [`plot_training_curves`]: loss, MSE, L0, FVE and dead-latent % against tokens trained, one line per
//!   run, read from each run's `metrics.jsonl` (schema: `zephyra_sae::metrics`);
//! - [`plot_density_histogram`]: the log10 feature-density histogram of an eval;
//! - [`plot_l0_vs_fve`]: one point per run, the sparsity / fidelity trade-off.
//!
//! Text is drawn with an embedded font (a 12 KB ASCII subset of DejaVu Sans, licence in
//! `assets/LICENSE-DejaVu.txt`): no system fonts and no network are needed. Every figure is written as
//! `BASE.png` and `BASE.svg`, each through a temporary file in the same directory and a rename.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use crate::error::{AnalysisError, Result};
use crate::file_io::parent_dir;
use crate::sparsity::DensityHistogram;
use zephyra_io::write_atomic;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
static FONT_INIT: Once = Once::new();

const PANEL_SIZE: (u32, u32) = (1500, 900);
const SINGLE_SIZE: (u32, u32) = (900, 600);

/// One line of a training `metrics.jsonl`, the fields the plots use.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct TrainingPoint {
    /// Tokens (rows) trained on so far.
    pub tokens: f64,
    /// Total loss.
    pub loss: f64,
    /// Reconstruction MSE (per row, normalised space).
    pub mse: f64,
    /// Mean active latents per row.
    pub l0: f64,
    /// Centred FVE over the batch.
    pub fve: f64,
    /// Share of latents dead over the trainer's window (0–1).
    pub dead_fraction: f64,
}

/// A run's name and its training curve.
#[derive(Debug, Clone)]
pub struct RunCurve {
    /// Label in the legend (the run directory's name).
    pub name: String,
    /// Points in file order.
    pub points: Vec<TrainingPoint>,
}

/// A run's place in the L0-vs-FVE plane.
#[derive(Debug, Clone)]
pub struct RunPoint {
    /// Label (the run directory's name).
    pub name: String,
    /// Mean active latents per token.
    pub l0: f64,
    /// Fraction of variance explained.
    pub fve: f64,
}

/// Reads a `metrics.jsonl` file; blank lines are skipped, any other unparsable line is an error.
pub fn read_metrics(path: &Path) -> Result<Vec<TrainingPoint>> {
    let text = std::fs::read_to_string(path).map_err(|source| AnalysisError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: TrainingPoint =
            serde_json::from_str(line).map_err(|e| AnalysisError::BadMetrics {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })?;
        points.push(p);
    }
    Ok(points)
}

fn register_font() -> Result<()> {
    let mut failed = false;
    FONT_INIT.call_once(|| {
        failed = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err();
    });
    if failed {
        return Err(AnalysisError::Plot {
            path: PathBuf::from("assets/DejaVuSans-subset.ttf"),
            reason: "the embedded font could not be parsed".into(),
        });
    }
    Ok(())
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> AnalysisError {
    AnalysisError::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The drawing code, written once for both backends.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

fn render_both(base: &Path, size: (u32, u32), fig: &impl Figure) -> Result<Vec<PathBuf>> {
    register_font()?;
    let dir = parent_dir(base);
    std::fs::create_dir_all(dir).map_err(|source| AnalysisError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let stem = base
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".into());
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));

    // PNG: the encoder picks the format from the extension, so the temp name ends in .png.
    let tmp_png = dir.join(format!(".{stem}.{}.tmp.png", std::process::id()));
    {
        let area = BitMapBackend::new(&tmp_png, size).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_err(&png, e))?;
        fig.draw(&area).map_err(|e| plot_err(&png, e))?;
        area.present().map_err(|e| plot_err(&png, e))?;
    }
    std::fs::rename(&tmp_png, &png).map_err(|source| AnalysisError::Io {
        path: png.clone(),
        source,
    })?;

    let mut text = String::new();
    {
        let area = SVGBackend::with_string(&mut text, size).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_err(&svg, e))?;
        fig.draw(&area).map_err(|e| plot_err(&svg, e))?;
        area.present().map_err(|e| plot_err(&svg, e))?;
    }
    write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// `(min, max)` of finite values, widened when flat; `None` when there are none.
fn range_of(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        lo.abs().max(1.0) * 0.05
    };
    Some((lo - pad, hi + pad))
}

fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLOURS[i % COLOURS.len()]
}

/// Which quantity a training panel shows.
#[derive(Clone, Copy)]
struct Panel {
    title: &'static str,
    y_label: &'static str,
    value: fn(&TrainingPoint) -> f64,
}

const PANELS: [Panel; 5] = [
    Panel {
        title: "Training loss",
        y_label: "log10(loss)",
        value: |p| p.loss.log10(),
    },
    Panel {
        title: "Reconstruction MSE",
        y_label: "log10(MSE per token, normalised units^2)",
        value: |p| p.mse.log10(),
    },
    Panel {
        title: "Sparsity",
        y_label: "L0 (active latents per token)",
        value: |p| p.l0,
    },
    Panel {
        title: "Fraction of variance explained",
        y_label: "FVE (centred, per batch)",
        value: |p| p.fve,
    },
    Panel {
        title: "Dead latents",
        y_label: "dead latents (%)",
        value: |p| 100.0 * p.dead_fraction,
    },
];

struct TrainingFigure<'a> {
    runs: &'a [RunCurve],
}

impl Figure for TrainingFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let cells = area.split_evenly((2, 3));
        for (panel, cell) in PANELS.iter().zip(&cells) {
            let x_range = range_of(
                self.runs
                    .iter()
                    .flat_map(|r| r.points.iter().map(|p| p.tokens)),
            )
            .unwrap_or((0.0, 1.0));
            let y_range = range_of(
                self.runs
                    .iter()
                    .flat_map(|r| r.points.iter().map(panel.value)),
            )
            .unwrap_or((0.0, 1.0));
            let mut chart = ChartBuilder::on(cell)
                .caption(panel.title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(x_range.0.max(0.0)..x_range.1, y_range.0..y_range.1)
                .map_err(s)?;
            chart
                .configure_mesh()
                .x_desc("tokens trained")
                .y_desc(panel.y_label)
                .x_labels(5)
                .y_labels(6)
                .x_label_formatter(&|v| format_count(*v))
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 16))
                .draw()
                .map_err(s)?;
            for (i, run) in self.runs.iter().enumerate() {
                let c = colour(i);
                let pts = run
                    .points
                    .iter()
                    .map(|p| (p.tokens, (panel.value)(p)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite());
                let series = chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(s)?;
                if self.runs.len() > 1 {
                    series.label(run.name.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                }
            }
            if self.runs.len() > 1 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 13))
                    .draw()
                    .map_err(s)?;
            }
        }
        // Sixth cell: what is plotted.
        if let Some(cell) = cells.get(5) {
            let names: Vec<&str> = self.runs.iter().map(|r| r.name.as_str()).collect();
            let lines = [
                format!("runs: {}", names.join(", ")),
                "x axis: tokens (activation rows) trained on".to_string(),
                "source: metrics.jsonl written by zephyra train".to_string(),
                "loss and MSE on a log10 scale".to_string(),
            ];
            for (i, line) in lines.iter().enumerate() {
                cell.draw(&Text::new(
                    line.clone(),
                    (20, 40 + 28 * i as i32),
                    ("sans-serif", 16),
                ))
                .map_err(s)?;
            }
        }
        Ok(())
    }
}

/// `12345678` → `12.3M`: short tick labels.
fn format_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Writes `OUT_DIR/training.{png,svg}`: the five training curves, one line per run.
pub fn plot_training_curves(runs: &[RunCurve], out_dir: &Path) -> Result<Vec<PathBuf>> {
    if runs.iter().all(|r| r.points.is_empty()) {
        return Err(AnalysisError::NothingToPlot(
            "the metrics files hold no records yet: train for longer (records are written every \
             few hundred steps)"
                .into(),
        ));
    }
    render_both(
        &out_dir.join("training"),
        PANEL_SIZE,
        &TrainingFigure { runs },
    )
}

/// The chart of a one-panel figure: `title` over the `x` × `y` ranges, its mesh drawn with the axes
/// described as `x_desc` and `y_desc`.
fn single_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    (x_desc, y_desc): (&str, &str),
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(s)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(s)?;
    Ok(chart)
}

struct HistogramFigure<'a> {
    hist: &'a DensityHistogram,
    title: &'a str,
}

impl Figure for HistogramFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let h = self.hist;
        let x_lo = h.edges.first().copied().unwrap_or(-1.0);
        let y_hi = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
        let mut chart = single_chart(
            area,
            self.title,
            (x_lo..0.0, 0.0..y_hi),
            (
                "log10(feature density)  (density = share of eval tokens on which the latent fires)",
                "latents",
            ),
        )?;
        let bars = h.counts.iter().enumerate().map(|(i, &c)| {
            Rectangle::new(
                [(h.edges[i], 0.0), (h.edges[i + 1], c as f64)],
                colour(0).mix(0.8).filled(),
            )
        });
        chart.draw_series(bars).map_err(s)?;
        let alive: u64 = h.counts.iter().sum();
        let note = format!(
            "{alive} latents fired; {} dead (never fired, not shown)",
            h.n_dead
        );
        area.draw(&Text::new(note, (100, 60), ("sans-serif", 15)))
            .map_err(s)?;
        Ok(())
    }
}

/// Writes `BASE.{png,svg}`: the log10 feature-density histogram of an eval.
pub fn plot_density_histogram(
    hist: &DensityHistogram,
    title: &str,
    base: &Path,
) -> Result<Vec<PathBuf>> {
    if hist.counts.is_empty() && hist.n_dead == 0 {
        return Err(AnalysisError::NothingToPlot(
            "the density histogram is empty".into(),
        ));
    }
    render_both(base, SINGLE_SIZE, &HistogramFigure { hist, title })
}

struct ScatterFigure<'a> {
    points: &'a [RunPoint],
}

impl Figure for ScatterFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (x0, x1) = range_of(self.points.iter().map(|p| p.l0)).unwrap_or((0.0, 1.0));
        let (y0, y1) = range_of(self.points.iter().map(|p| p.fve)).unwrap_or((0.0, 1.0));
        let mut chart = single_chart(
            area,
            "Sparsity vs fidelity",
            (x0.min(0.0)..x1 * 1.1, y0..y1),
            (
                "L0 (active latents per token)",
                "FVE (fraction of variance explained)",
            ),
        )?;
        for (i, p) in self.points.iter().enumerate() {
            if !(p.l0.is_finite() && p.fve.is_finite()) {
                continue;
            }
            let c = colour(i);
            chart
                .draw_series(std::iter::once(Circle::new((p.l0, p.fve), 6, c.filled())))
                .map_err(s)?
                .label(format!("{} (L0 {:.1}, FVE {:.3})", p.name, p.l0, p.fve))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(s)?;
        Ok(())
    }
}

/// Writes `BASE.{png,svg}`: one point per run in the L0-vs-FVE plane.
pub fn plot_l0_vs_fve(points: &[RunPoint], base: &Path) -> Result<Vec<PathBuf>> {
    if points.is_empty() {
        return Err(AnalysisError::NothingToPlot(
            "no run has an L0 and an FVE".into(),
        ));
    }
    render_both(base, SINGLE_SIZE, &ScatterFigure { points })
}
