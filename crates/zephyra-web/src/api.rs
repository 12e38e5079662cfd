//! The JSON routes.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zephyra_analysis::features::{FeatureStore, FeatureSummary, LatentStats};

use zephyra_analysis::steer::{SteerMode, SteerRequest, MAX_STEER_TOKENS};

use crate::jobs::{checked_request, run_steer, CancelOnDrop};
use crate::{ApiError, AppState};

/// Largest page of `/api/features`.
pub const MAX_LIMIT: usize = 500;

/// Sort keys of `/api/features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    /// Firing density.
    #[default]
    Density,
    /// Largest activation.
    Max,
    /// Mean activation when firing.
    Mean,
    /// Latent index.
    Id,
}

/// Sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Largest first.
    #[default]
    Desc,
    /// Smallest first.
    Asc,
}

/// Query of `GET /api/features`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `density` (default), `max`, `mean` or `id`.
    #[serde(default)]
    pub sort: SortKey,
    /// `desc` (default) or `asc`.
    #[serde(default)]
    pub order: Order,
    /// Case-insensitive text matched against the top tokens and top logits, or a latent index.
    #[serde(default)]
    pub q: Option<String>,
    /// Also list latents that never fired (default: no).
    #[serde(default)]
    pub dead: bool,
    /// First result.
    #[serde(default)]
    pub offset: usize,
    /// Results per page (default 50, at most [`MAX_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One row of `/api/features`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow<'a> {
    /// Id, firing count, density, mean and max activation.
    #[serde(flatten)]
    pub stats: LatentStats,
    /// Tokens at its maxima.
    pub top_tokens: &'a [String],
    /// Tokens it promotes.
    pub top_logits: &'a [String],
}

impl<'a> From<&'a FeatureSummary> for SummaryRow<'a> {
    fn from(s: &'a FeatureSummary) -> Self {
        Self {
            stats: s.stats,
            top_tokens: &s.top_tokens,
            top_logits: &s.top_logits,
        }
    }
}

/// `GET /api/info`.
pub async fn info(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(info_of(state.features()?, &state)))
}

/// The `/api/info` object of `store`.
pub(crate) fn info_of(store: &FeatureStore, state: &AppState) -> Value {
    let ix = store.index();
    json!({
        "model": ix.model, "hook": ix.hook, "sae": ix.sae, "corpus": ix.corpus, "d_sae": ix.d_sae,
        "n_contexts": ix.n_contexts, "n_tokens_read": ix.n_tokens_read, "n_tokens_kept": ix.n_tokens_kept,
        "n_alive": ix.features.iter().filter(|f| f.stats.n_fires > 0).count(),
        "hist_log10_min": ix.hist_log10_min, "hist_log10_max": ix.hist_log10_max, "hist_bins": ix.hist_bins,
        "steer": state.steer_counts(),
    })
}

/// `GET /api/features`.
pub async fn features(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} must be in 1..={MAX_LIMIT}"
        )));
    }
    let all = &state.features()?.index().features;
    let needle =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
    let id_match = needle.as_deref().and_then(|n| n.parse::<u32>().ok());
    let mut rows: Vec<&FeatureSummary> = all
        .iter()
        .filter(|f| match &needle {
            None => q.dead || f.stats.n_fires > 0,
            Some(n) => {
                Some(f.stats.id) == id_match
                    || f.top_tokens
                        .iter()
                        .chain(&f.top_logits)
                        .any(|t| t.to_lowercase().contains(n.as_str()))
            }
        })
        .collect();
    let key = |f: &FeatureSummary| match q.sort {
        SortKey::Density => f.stats.density,
        SortKey::Max => f64::from(f.stats.max_act),
        SortKey::Mean => f64::from(f.stats.mean_act),
        SortKey::Id => f64::from(f.stats.id),
    };
    rows.sort_by(|a, b| {
        let o = key(a).total_cmp(&key(b)).then(a.stats.id.cmp(&b.stats.id));
        match q.order {
            Order::Asc => o,
            Order::Desc => o.reverse(),
        }
    });
    let total = rows.len();
    let page: Vec<SummaryRow<'_>> = rows
        .into_iter()
        .skip(q.offset)
        .take(limit)
        .map(SummaryRow::from)
        .collect();
    Ok(Json(
        json!({ "total": total, "offset": q.offset, "limit": limit, "features": page }),
    ))
}

/// Parses a latent index from a path segment; anything else is a 404.
pub(crate) fn parse_id(state: &AppState, raw: &str) -> Result<u32, ApiError> {
    parse_id_in(state.features()?, raw)
}

/// Parses a latent index of `store` from a path segment; anything else is a 404.
pub(crate) fn parse_id_in(store: &FeatureStore, raw: &str) -> Result<u32, ApiError> {
    let d_sae = store.index().features.len();
    match raw.parse::<u32>() {
        Ok(id) if (id as usize) < d_sae => Ok(id),
        _ => Err(ApiError::NotFound(format!(
            "no feature `{raw}`: the SAE has {d_sae} latents (0..{d_sae})"
        ))),
    }
}

/// `GET /api/feature/{id}`: the stored record, sent as it is (no re-serialisation).
pub async fn feature(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    record(state.features()?.clone(), &raw).await
}

/// Feature `raw`'s stored record in `store`, as a JSON response.
pub(crate) async fn record(store: FeatureStore, raw: &str) -> Result<Response, ApiError> {
    let id = parse_id_in(&store, raw)?;
    let bytes = tokio::task::spawn_blocking(move || store.record_bytes(id))
        .await
        .map_err(|e| ApiError::Internal(format!("reading feature {id}: {e}")))??;
    let bytes = bytes.ok_or_else(|| ApiError::NotFound(format!("no feature {id}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// `top_k`, else `default`, checked to be in 1..=50.
pub(crate) fn top_k_or(top_k: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match top_k.unwrap_or(default) {
        k @ 1..=50 => Ok(k),
        k => Err(ApiError::BadRequest(format!("top_k {k} must be in 1..=50"))),
    }
}

/// Body of `POST /api/explain`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    /// The text.
    pub text: String,
    /// Latents reported per token (default 5, at most 50).
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// `POST /api/explain`.
pub async fn explain(
    State(state): State<AppState>,
    body: Result<Json<ExplainBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let top_k = top_k_or(body.top_k, 5)?;
    let tokens = state
        .with_engine(move |engine, rule| Ok(engine.explain(&body.text, top_k, rule)?))
        .await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// Body of `POST /api/steer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteerBody {
    /// Prompt text.
    pub prompt: String,
    /// Latent index.
    pub feature: u32,
    /// Strength (add) or target activation (clamp).
    pub strength: f32,
    /// `add` (default) or `clamp`.
    #[serde(default)]
    pub mode: SteerMode,
    /// Tokens to generate (default 32).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Sampling seed (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Sampling temperature (default 0.7; 0 is greedy).
    #[serde(default)]
    pub temperature: Option<f32>,
}

/// Checks a steering body (the same rules for `/api/steer` and `/api/steer/stream`).
pub(crate) fn steer_request(
    state: &AppState,
    body: Result<Json<SteerBody>, JsonRejection>,
) -> Result<SteerRequest, ApiError> {
    let Json(b) = body?;
    let d_sae = state.features()?.index().d_sae;
    if b.feature as usize >= d_sae {
        return Err(ApiError::BadRequest(format!(
            "feature {} does not exist: the SAE has {d_sae} latents",
            b.feature
        )));
    }
    let max_tokens = b.max_tokens.unwrap_or(32);
    if max_tokens == 0 || max_tokens > MAX_STEER_TOKENS {
        return Err(ApiError::BadRequest(format!(
            "max_tokens {max_tokens} must be in 1..={MAX_STEER_TOKENS}"
        )));
    }
    Ok(SteerRequest {
        prompt: b.prompt,
        feature: b.feature,
        strength: b.strength,
        mode: b.mode,
        max_tokens,
        seed: b.seed,
        temperature: b.temperature.unwrap_or(0.7),
    })
}

/// `POST /api/steer`. When the connection closes before the answer, the job is skipped or stopped.
pub async fn steer(
    State(state): State<AppState>,
    body: Result<Json<SteerBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let req = checked_request(&state, body).await?;
    let cancel = Arc::new(AtomicBool::new(false));
    let mut on_drop = CancelOnDrop::new(&state, Arc::clone(&cancel));
    let echo = req.clone();
    let task_state = state.clone();
    let out = tokio::task::spawn_blocking(move || {
        let gone = || cancel.load(Ordering::Relaxed);
        run_steer(&task_state, &req, &cancel, gone, |_, _| {})
    })
    .await
    .map_err(|e| ApiError::Internal(format!("model task failed: {e}")))?;
    on_drop.disarm();
    let out = out?.ok_or_else(|| ApiError::Internal("steering was cancelled".into()))?;
    Ok(Json(
        json!({ "request": echo, "steered": out.steered, "unsteered": out.unsteered,
        "steered_ids": out.steered_ids, "unsteered_ids": out.unsteered_ids }),
    ))
}
