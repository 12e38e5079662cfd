//! Plots: files are written, are valid PNG/SVG, non-trivial size; bad metrics are clear errors.

use std::path::Path;

use zephyra_analysis::plot::{
    plot_density_histogram, plot_l0_vs_fve, plot_training_curves, read_metrics, RunCurve, RunPoint,
};
use zephyra_analysis::sparsity::density_histogram;
use zephyra_analysis::AnalysisError;

fn write_metrics(path: &Path, scale: f64) {
    let mut text = String::new();
    for step in 1..=40u64 {
        let t = step as f64;
        let line = serde_json::json!({
            "step": step, "tokens": step * 4096, "loss": 10.0 / t * scale, "mse": 8.0 / t * scale,
            "sparsity_loss": 0.0, "aux_loss": 0.1, "l0": 32.0, "fve": 1.0 - 0.5 / t.sqrt() * scale,
            "dead_fraction": 0.3 / t, "lr": 4e-4, "sparsity_coeff": 0.0, "grad_norm": 1.0,
            "skipped_rows": 0, "tokens_per_s": 30000.0
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// A plot file of `len` bytes must be over `min` bytes (an empty or stub plot is smaller).
fn assert_larger_than(path: &Path, len: usize, min: usize) {
    assert!(len > min, "{} is only {len} bytes", path.display());
}

fn check_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert_larger_than(path, bytes.len(), 10_000);
}

fn check_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
        "{}",
        path.display()
    );
    assert_larger_than(path, text.len(), 5_000);
    for needle in must_contain {
        assert!(
            text.contains(needle),
            "{} lacks the label {needle:?}",
            path.display()
        );
    }
}

#[test]
fn training_curves_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = dir.path().join("a.jsonl");
    let m2 = dir.path().join("b.jsonl");
    write_metrics(&m1, 1.0);
    write_metrics(&m2, 0.7);
    let runs = vec![
        RunCurve {
            name: "run-a".into(),
            points: read_metrics(&m1).unwrap(),
        },
        RunCurve {
            name: "run-b".into(),
            points: read_metrics(&m2).unwrap(),
        },
    ];
    assert_eq!(runs[0].points.len(), 40);
    assert_eq!(runs[0].points[1].tokens, 8192.0);
    let out = dir.path().join("plots");
    let files = plot_training_curves(&runs, &out).unwrap();
    assert_eq!(files.len(), 2);
    check_png(&out.join("training.png"));
    check_svg(
        &out.join("training.svg"),
        &["tokens trained", "dead latents (%)", "run-b"],
    );
    if let Ok(keep) = std::env::var("ZEPHYRA_KEEP_PLOTS") {
        std::fs::copy(
            out.join("training.png"),
            Path::new(&keep).join("training.png"),
        )
        .unwrap();
    }
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn histogram_and_scatter() {
    let dir = tempfile::tempdir().unwrap();
    let counts: Vec<u64> = (0..2000u64)
        .map(|i| if i % 50 == 0 { 0 } else { (i * 37) % 5000 + 1 })
        .collect();
    let hist = density_histogram(&counts, 200_000);
    let base = dir.path().join("density");
    plot_density_histogram(&hist, "Feature density", &base).unwrap();
    check_png(&dir.path().join("density.png"));
    check_svg(
        &dir.path().join("density.svg"),
        &["log10(feature density)", "latents"],
    );

    let pts = vec![
        RunPoint {
            name: "k16".into(),
            l0: 16.0,
            fve: 0.78,
        },
        RunPoint {
            name: "k32".into(),
            l0: 32.0,
            fve: 0.86,
        },
        RunPoint {
            name: "k64".into(),
            l0: 64.0,
            fve: 0.91,
        },
    ];
    plot_l0_vs_fve(&pts, &dir.path().join("l0_vs_fve")).unwrap();
    check_png(&dir.path().join("l0_vs_fve.png"));
    check_svg(
        &dir.path().join("l0_vs_fve.svg"),
        &["L0 (active latents per token)", "k64"],
    );
    if let Ok(keep) = std::env::var("ZEPHYRA_KEEP_PLOTS") {
        for f in ["density.png", "l0_vs_fve.png"] {
            std::fs::copy(dir.path().join(f), Path::new(&keep).join(f)).unwrap();
        }
    }
}

#[test]
fn bad_metrics_and_empty_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("metrics.jsonl");
    std::fs::write(&m, "{\"step\":1,\"tokens\":10,\"loss\":1,\"mse\":1,\"l0\":1,\"fve\":0.5,\"dead_fraction\":0}\n\nnot json\n").unwrap();
    let err = read_metrics(&m).unwrap_err();
    assert!(
        matches!(err, AnalysisError::BadMetrics { line: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("metrics.jsonl:3"), "{err}");
    let err = read_metrics(&dir.path().join("missing.jsonl")).unwrap_err();
    assert!(matches!(err, AnalysisError::Io { .. }), "{err}");
    let empty = vec![RunCurve {
        name: "x".into(),
        points: vec![],
    }];
    assert!(matches!(
        plot_training_curves(&empty, dir.path()),
        Err(AnalysisError::NothingToPlot(_))
    ));
    assert!(matches!(
        plot_l0_vs_fve(&[], &dir.path().join("s")),
        Err(AnalysisError::NothingToPlot(_))
    ));
}
