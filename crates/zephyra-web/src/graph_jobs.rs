//! Graph jobs: `POST /api/graphs` starts the attribution of a prompt on a blocking thread (waiting for the
//! model like every other model request) and answers 202 with the job's id at once; `GET
//! /api/graph-jobs/{id}` reports its state and progress; a finished job's graph is written atomically to
//! the graphs directory as `NAME.json`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zephyra_analysis::attribution::{AttributionConfig, TraceOptions};

use crate::graph::GraphSite;
use crate::{ApiError, AppState};

/// Longest prompt of a graph job, in characters.
pub const MAX_PROMPT_CHARS: usize = 4096;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the model.
    Queued,
    /// Attributing.
    Running,
    /// The graph is written.
    Done,
    /// It failed (see `error`).
    Failed,
}

/// A job as `GET /api/graph-jobs/{id}` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The graph's name.
    pub name: String,
    /// Where it is.
    pub state: JobState,
    /// Feature rows attributed so far.
    pub done: usize,
    /// Feature rows to attribute.
    pub total: usize,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `POST /api/graphs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakeBody {
    /// The graph's name (its file is `NAME.json`).
    pub name: String,
    /// The prompt whose next token is explained.
    pub prompt: String,
    /// Share of the influence the kept nodes cover (default 0.8).
    #[serde(default)]
    pub node_threshold: Option<f64>,
    /// Share of the influence the kept edges cover (default 0.98).
    #[serde(default)]
    pub edge_threshold: Option<f64>,
    /// At most this many feature nodes (default 4096).
    #[serde(default)]
    pub max_feature_nodes: Option<usize>,
}

fn fraction(name: &str, v: Option<f64>, default: f64) -> Result<f64, ApiError> {
    let v = v.unwrap_or(default);
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(ApiError::BadRequest(format!(
            "{name} {v} must be a fraction in (0, 1]"
        )))
    }
}

fn update(site: &GraphSite, id: usize, f: impl FnOnce(&mut JobStatus)) {
    let mut jobs = site
        .jobs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(job) = jobs.get_mut(id) {
        f(job);
    }
}

/// `POST /api/graphs`: 202 `{"job": id}`.
pub async fn make(
    State(state): State<AppState>,
    body: Result<Json<MakeBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let site = Arc::clone(state.graphs()?);
    let tracer = Arc::clone(site.tracer()?);
    let path = site.path_of(&b.name)?;
    if b.prompt.trim().is_empty() || b.prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the prompt must hold 1 to {MAX_PROMPT_CHARS} characters"
        )));
    }
    let defaults = TraceOptions::default();
    let opts = TraceOptions {
        node_threshold: fraction("node_threshold", b.node_threshold, defaults.node_threshold)?,
        edge_threshold: fraction("edge_threshold", b.edge_threshold, defaults.edge_threshold)?,
        attribution: AttributionConfig {
            max_feature_nodes: Some(b.max_feature_nodes.unwrap_or(4096).max(1)),
            ..defaults.attribution
        },
        ..defaults
    };
    let id = {
        let mut jobs = site
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let busy = jobs
            .iter()
            .any(|j| j.name == b.name && matches!(j.state, JobState::Queued | JobState::Running));
        if busy || site.exists(&b.name) {
            return Err(ApiError::BadRequest(format!(
                "a graph named `{}` exists or is being made: choose another name",
                b.name
            )));
        }
        jobs.push(JobStatus {
            name: b.name.clone(),
            state: JobState::Queued,
            done: 0,
            total: 0,
            error: None,
        });
        jobs.len() - 1
    };
    let task_state = state.clone();
    tokio::task::spawn_blocking(move || {
        let guard = task_state.lock_model();
        update(&site, id, |j| j.state = JobState::Running);
        let result = tracer
            .trace(&b.prompt, &b.name, &opts, &mut |done, total| {
                update(&site, id, |j| (j.done, j.total) = (done, total));
            })
            .map_err(|e| ApiError::from(e).to_string())
            .and_then(|traced| {
                let bytes = serde_json::to_vec(&traced.file).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(site.dir()).map_err(|e| e.to_string())?;
                zephyra_io::write_atomic(&path, &bytes).map_err(|e| e.to_string())
            });
        drop(guard);
        if let Err(e) = &result {
            tracing::warn!(error = %e, name = %b.name, "graph job failed");
        }
        update(&site, id, |j| match result {
            Ok(()) => j.state = JobState::Done,
            Err(e) => (j.state, j.error) = (JobState::Failed, Some(e)),
        });
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": id }))))
}

/// `GET /api/graph-jobs/{id}`.
pub async fn status(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    let site = state.graphs()?;
    let jobs = site
        .jobs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    raw.parse::<usize>()
        .ok()
        .and_then(|id| jobs.get(id).cloned())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no graph job `{raw}`")))
}
