//! The run page: what the SAE in the run directory is, how its training went and what `zephyra eval` and
//! `zephyra plot` found.
//!
//! Read on each request, from the run directory given to [`AppState::with_run_dir`]:
//! `cfg.json` (SAELens config), `summary.json` (written by `zephyra train`), `metrics.jsonl` (training
//! curve), `eval.json` (written by `zephyra eval`) and `plots/NAME` for `NAME` in [`PLOT_FILES`] (written by
//! `zephyra plot --run`). A missing file is reported on the page with the command that makes it; an
//! unreadable one is listed under `problems`. No other path is ever read.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use zephyra_analysis::plot::read_metrics;
use zephyra_analysis::report::EvalReport;
use zephyra_sae::train::TrainSummary;

use crate::{ApiError, AppState};

/// The plot files the app serves from `RUN/plots/`, in display order (SVG preferred over PNG).
pub const PLOT_FILES: [&str; 6] = [
    "training.svg",
    "density.svg",
    "l0_vs_fve.svg",
    "training.png",
    "density.png",
    "l0_vs_fve.png",
];

/// Largest plot file served.
const MAX_PLOT_BYTES: u64 = 32 << 20;

/// Most training-curve points sent to the page (evenly thinned, the last one kept).
const MAX_CURVE_POINTS: usize = 400;

/// A path for a shell command line: quoted when it holds anything but plain characters.
fn shell_arg(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=,:@".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not valid JSON ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `e` and its causes, `: `-separated (as the CLI prints an error).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The fields of `cfg.json` the page shows.
fn config(cfg: &Value) -> Value {
    let meta = &cfg["metadata"];
    let arch = meta["zephyra_architecture"]
        .as_str()
        .or(cfg["architecture"].as_str());
    json!({
        "architecture": arch,
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "k": cfg.get("k").cloned().unwrap_or(Value::Null),
        "hook": meta["hook_name"],
        "model": meta["model_name"],
        "context_size": meta["context_size"],
        "dtype": cfg["dtype"],
    })
}

fn training(dir: &Path, problems: &mut Vec<String>) -> Value {
    let path = dir.join("metrics.jsonl");
    if !path.is_file() {
        return Value::Null;
    }
    let points = match read_metrics(&path) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e.to_string());
            return Value::Null;
        }
    };
    let point = |p: &zephyra_analysis::plot::TrainingPoint| {
        json!({ "tokens": p.tokens, "loss": p.loss, "mse": p.mse, "l0": p.l0, "fve": p.fve,
                "dead_fraction": p.dead_fraction })
    };
    let stride = points.len().div_ceil(MAX_CURVE_POINTS).max(1);
    let mut curve: Vec<Value> = points.iter().step_by(stride).map(point).collect();
    if let Some(last) = points.last() {
        if (points.len() - 1) % stride != 0 {
            curve.push(point(last));
        }
    }
    json!({
        "n_records": points.len(),
        "last": points.last().map(point),
        "curve": curve,
    })
}

fn eval(dir: &Path, problems: &mut Vec<String>) -> Value {
    let path = dir.join("eval.json");
    if !path.is_file() {
        return Value::Null;
    }
    match EvalReport::read(&path) {
        Ok(report) => {
            let rows: Vec<Value> = report
                .rows()
                .into_iter()
                .map(|(name, value)| json!({ "name": name, "value": value }))
                .collect();
            json!({ "rows": rows, "report": report })
        }
        Err(e) => {
            problems.push(format!("{e} (rerun `zephyra eval`)"));
            Value::Null
        }
    }
}

/// Which allowed plot files exist, SVG preferred: `[{name, url}]`.
fn plots(dir: &Path) -> Vec<Value> {
    let mut stems_seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for name in PLOT_FILES {
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        if stems_seen.contains(&stem) || !dir.join("plots").join(name).is_file() {
            continue;
        }
        stems_seen.push(stem);
        out.push(json!({ "name": name, "url": format!("/run/plots/{name}") }));
    }
    out
}

/// Everything the run page shows (the body of `GET /api/run`).
pub fn describe(dir: &Path) -> Value {
    let mut problems = Vec::new();
    let cfg = match read_json(&dir.join("cfg.json")) {
        Ok(Some(c)) => config(&c),
        Ok(None) => {
            problems.push(format!(
                "{} has no cfg.json: is it an SAE directory written by `zephyra train`?",
                dir.display()
            ));
            Value::Null
        }
        Err(e) => {
            problems.push(e);
            Value::Null
        }
    };
    let summary = TrainSummary::read(dir).unwrap_or_else(|e| {
        problems.push(with_causes(&e));
        None
    });
    let training = training(dir, &mut problems);
    let eval = eval(dir, &mut problems);
    let mut out = Map::new();
    out.insert("dir".into(), json!(dir.display().to_string()));
    out.insert("cfg".into(), cfg);
    out.insert("summary".into(), json!(summary));
    out.insert("training".into(), training);
    out.insert("eval".into(), eval);
    out.insert(
        "eval_command".into(),
        json!(format!("zephyra eval --sae {}", shell_arg(dir))),
    );
    out.insert("plots".into(), json!(plots(dir)));
    out.insert(
        "plot_command".into(),
        json!(format!("zephyra plot --run {}", shell_arg(dir))),
    );
    out.insert("problems".into(), json!(problems));
    Value::Object(out)
}

fn run_dir(state: &AppState) -> Result<PathBuf, ApiError> {
    state.run_dir().map(Path::to_path_buf).ok_or_else(|| {
        ApiError::NotFound(
            "this server has no run directory: start it with `zephyra serve --sae RUN_DIR`".into(),
        )
    })
}

/// `GET /api/run`.
pub async fn run_json(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let dir = run_dir(&state)?;
    let v = tokio::task::spawn_blocking(move || describe(&dir))
        .await
        .map_err(|e| ApiError::Internal(format!("reading the run: {e}")))?;
    Ok(Json(v))
}

/// Reads `dir/plots/name` if `name` is allowed and the file really lies inside `dir` (no symlink out).
fn read_plot(dir: &Path, name: &str) -> Result<Vec<u8>, ApiError> {
    let missing = || ApiError::NotFound(format!("no plot `{name}` in this run"));
    if !PLOT_FILES.contains(&name) {
        return Err(ApiError::NotFound(format!(
            "no plot `{name}`: the run page serves only {}",
            PLOT_FILES.join(", ")
        )));
    }
    let root = dir.canonicalize().map_err(|_| missing())?;
    let path = dir
        .join("plots")
        .join(name)
        .canonicalize()
        .map_err(|_| missing())?;
    if !path.starts_with(&root) {
        tracing::warn!(path = %path.display(), "a plot file points outside the run directory");
        return Err(missing());
    }
    let meta = std::fs::metadata(&path).map_err(|_| missing())?;
    if !meta.is_file() || meta.len() > MAX_PLOT_BYTES {
        return Err(missing());
    }
    std::fs::read(&path).map_err(|_| missing())
}

/// `GET /run/plots/{name}`: one of [`PLOT_FILES`], else 404.
pub async fn plot_file(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    let dir = run_dir(&state)?;
    let ctype = if name.ends_with(".svg") {
        "image/svg+xml"
    } else {
        "image/png"
    };
    let bytes = tokio::task::spawn_blocking(move || read_plot(&dir, &name))
        .await
        .map_err(|e| ApiError::Internal(format!("reading a plot: {e}")))??;
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // An SVG opened on its own runs no script and loads nothing.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_args_are_quoted_when_needed() {
        assert_eq!(shell_arg(Path::new("runs/l15-topk32")), "runs/l15-topk32");
        assert_eq!(shell_arg(Path::new("my runs/a'b")), r"'my runs/a'\''b'");
    }
}
