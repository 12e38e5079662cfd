//! Attribution graphs in the app: the graph files of a directory (`zephyra attribute --out DIR/NAME.json`
//! or made by a graph job), each layer's features store (`TRANSCODERS/layer-L/features`, from `zephyra
//! features --sae TRANSCODERS/layer-L`) for the hover cards and feature pages, and interventions on the
//! real model from a graph's nodes.
//!
//! A graph name is 1–64 of `A-Z a-z 0-9 _ -` (so `NAME.json` never leaves the directory).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use zephyra_analysis::attribution::intervene::{demeaned, top_tokens, FeatureEdit};
use zephyra_analysis::attribution::{GraphFile, Tracer};
use zephyra_analysis::features::FeatureStore;

use crate::api::{info_of, record, top_k_or};
use crate::graph_jobs::JobStatus;
use crate::{ApiError, AppState};

/// Largest graph file served or read.
const MAX_GRAPH_BYTES: u64 = 256 << 20;
/// Most edits of one intervention.
pub const MAX_EDITS: usize = 64;
/// Largest |scale| of an edit.
pub const MAX_SCALE: f32 = 100.0;

/// What the graph pages serve.
pub struct GraphSite {
    dir: PathBuf,
    tracer: Option<Arc<Tracer>>,
    layers: Vec<Option<FeatureStore>>,
    pub(crate) jobs: Mutex<Vec<JobStatus>>,
}

impl GraphSite {
    /// Graphs read from (and made into) `dir`; with a `tracer`, interventions and graph jobs work (else
    /// 503); `layers[l]` is layer `l`'s features store, if it has one.
    pub fn new(
        dir: impl Into<PathBuf>,
        tracer: Option<Arc<Tracer>>,
        layers: Vec<Option<FeatureStore>>,
    ) -> Self {
        GraphSite {
            dir: dir.into(),
            tracer,
            layers,
            jobs: Mutex::new(Vec::new()),
        }
    }

    /// The graphs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tracer, or 503.
    pub(crate) fn tracer(&self) -> Result<&Arc<Tracer>, ApiError> {
        self.tracer.as_ref().ok_or_else(|| {
            ApiError::Unavailable(
                "no model is loaded: start the server with --model and --transcoders to run the model".into(),
            )
        })
    }

    /// Layer `raw`'s features store, or 404 saying how to make it.
    fn layer(&self, raw: &str) -> Result<&FeatureStore, ApiError> {
        let n = self.layers.len();
        let l = raw
            .parse::<usize>()
            .ok()
            .filter(|&l| l < n)
            .ok_or_else(|| {
                ApiError::NotFound(format!("no layer `{raw}`: the transcoders cover 0..{n}"))
            })?;
        self.layers[l].as_ref().ok_or_else(|| {
            ApiError::NotFound(format!(
                "layer {l} has no features store: run `zephyra features --sae TRANSCODERS/layer-{l}`"
            ))
        })
    }

    /// The file of graph `name` (checked), existing or not.
    pub(crate) fn path_of(&self, name: &str) -> Result<PathBuf, ApiError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "`{name}` is not a graph name: use 1 to 64 letters, digits, `_` or `-`"
            )));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// The bytes of graph `name` (404 when absent).
    fn read(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        let missing = || ApiError::NotFound(format!("no graph `{name}`"));
        // A name that is not a graph name is a bad request (it says which names are), not a missing file.
        let path = self.path_of(name)?;
        let meta = std::fs::metadata(&path).map_err(|_| missing())?;
        if !meta.is_file() || meta.len() > MAX_GRAPH_BYTES {
            return Err(missing());
        }
        std::fs::read(&path).map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))
    }

    /// Whether graph `name` exists.
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.path_of(name).is_ok_and(|p| p.is_file())
    }

    /// The graph names, sorted, with their sizes.
    fn names(&self) -> Vec<(String, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, u64)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                let len = e.metadata().ok().filter(|m| m.is_file())?.len();
                self.path_of(&name).ok().map(|_| (name, len))
            })
            .collect();
        out.sort();
        out
    }
}

fn site(state: &AppState) -> Result<Arc<GraphSite>, ApiError> {
    state.graphs().cloned()
}

/// `GET /api/graphs`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let site = site(&state)?;
    let graphs: Vec<Value> = site
        .names()
        .into_iter()
        .map(|(name, bytes)| json!({ "name": name, "bytes": bytes }))
        .collect();
    Ok(Json(
        json!({ "graphs": graphs, "can_make": site.tracer.is_some() }),
    ))
}

/// `GET /api/graph/{name}`: the file as it is.
pub async fn file(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    let site = site(&state)?;
    let bytes = tokio::task::spawn_blocking(move || site.read(&name))
        .await
        .map_err(|e| ApiError::Internal(format!("reading a graph: {e}")))??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /api/layer/{layer}/info`.
pub async fn layer_info(
    State(state): State<AppState>,
    UrlPath(layer): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let site = site(&state)?;
    Ok(Json(info_of(site.layer(&layer)?, &state)))
}

/// `GET /api/layer/{layer}/feature/{id}`.
pub async fn layer_feature(
    State(state): State<AppState>,
    UrlPath((layer, id)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let site = site(&state)?;
    record(site.layer(&layer)?.clone(), &id).await
}

/// Whether layer `raw`'s feature `id` has a page.
pub(crate) fn layer_feature_exists(state: &AppState, layer: &str, id: &str) -> bool {
    site(state)
        .ok()
        .and_then(|s| s.layer(layer).ok().cloned())
        .is_some_and(|store| crate::api::parse_id_in(&store, id).is_ok())
}

/// One edit of `POST /api/graph/{name}/intervene`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    /// A feature node's `node_id` in the graph (`{layer}_{feature}_{pos}`).
    pub node_id: String,
    /// Its activation is multiplied by this (0: ablate).
    pub scale: f32,
}

/// Body of `POST /api/graph/{name}/intervene`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterveneBody {
    /// The edits (1 to [`MAX_EDITS`]).
    pub edits: Vec<EditBody>,
    /// Tokens listed before and after (default 10, at most 50).
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// The edits of `body` on the feature nodes of `graph`.
fn edits_of(graph: &GraphFile, body: &InterveneBody) -> Result<Vec<FeatureEdit>, ApiError> {
    if body.edits.is_empty() || body.edits.len() > MAX_EDITS {
        return Err(ApiError::BadRequest(format!(
            "give 1 to {MAX_EDITS} edits, not {}",
            body.edits.len()
        )));
    }
    body.edits
        .iter()
        .map(|e| {
            if !(e.scale.is_finite() && e.scale.abs() <= MAX_SCALE) {
                return Err(ApiError::BadRequest(format!(
                    "scale {} must be a number in -{MAX_SCALE}..={MAX_SCALE}",
                    e.scale
                )));
            }
            let node = graph
                .nodes
                .iter()
                .find(|n| n.node_id == e.node_id)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("the graph has no node `{}`", e.node_id))
                })?;
            let (Ok(layer), Ok(feature), Some(activation)) = (
                node.layer.parse::<usize>(),
                usize::try_from(node.feature),
                node.activation,
            ) else {
                return Err(ApiError::BadRequest(format!(
                    "node `{}` is a {}, not a feature: only features can be ablated or steered",
                    e.node_id, node.feature_type
                )));
            };
            Ok(FeatureEdit {
                layer,
                pos: node.ctx_idx,
                feature,
                activation: activation as f32,
                scale: e.scale,
            })
        })
        .collect()
}

/// `POST /api/graph/{name}/intervene`: the real model (attention free) with the edits.
pub async fn intervene(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<InterveneBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let top_k = top_k_or(body.top_k, 10)?;
    let site = site(&state)?;
    let tracer = Arc::clone(site.tracer()?);
    let task_state = state.clone();
    tokio::task::spawn_blocking(move || {
        let graph: GraphFile = serde_json::from_slice(&site.read(&name)?).map_err(|e| {
            ApiError::BadRequest(format!("graph `{name}` is not a graph file: {e}"))
        })?;
        let edits = edits_of(&graph, &body)?;
        let tokens = tracer.tokens(&graph.metadata.prompt)?;
        if tokens.len() != graph.metadata.prompt_tokens.len() {
            return Err(ApiError::BadRequest(format!(
                "graph `{name}` was made with another tokenizer ({} prompt tokens, {} here): remake it with this model",
                graph.metadata.prompt_tokens.len(),
                tokens.len()
            )));
        }
        let out = {
            let _guard = task_state.lock_model();
            tracer.intervene(&tokens, &edits)?
        };
        let scored = |logits: &[f32]| -> Vec<Value> {
            top_tokens(logits, top_k)
                .into_iter()
                .map(|t| json!({ "id": t.id, "token": tracer.piece(t.id), "prob": t.prob, "logit": t.logit }))
                .collect()
        };
        let target = graph
            .nodes
            .iter()
            .find(|n| n.is_target_logit)
            .and_then(|n| u32::try_from(n.feature).ok())
            .map(|v| {
                json!({ "id": v, "token": tracer.piece(v), "before": demeaned(&out.before, v),
                        "after": demeaned(&out.after, v) })
            });
        Ok(Json(json!({
            "before": scored(&out.before), "after": scored(&out.after), "target": target,
        })))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("model task failed: {e}")))?
}
