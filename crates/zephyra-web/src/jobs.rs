//! Steering jobs: the work bound checked before a request is accepted, the model queue, cancellation when
//! the client goes away, and the counters `/api/info` reports.
//!
//! A steering request costs about `max_tokens × (prompt tokens + max_tokens)` token steps (each generated
//! token attends over the prompt and what came before it). A request over the server's bound
//! ([`DEFAULT_STEER_WORK`], `zephyra serve --max-steer-work`) is a 400 that says so, before it waits for the
//! model. Requests queue for the model one at a time; a request whose client left (the connection closed,
//! or the stream's reader dropped) is skipped when its turn comes, or stopped before its next token.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::Json;
use serde::Serialize;
use zephyra_analysis::steer::{Side, SteerOutput, SteerRequest};
use zephyra_analysis::AnalysisError;

use crate::api::{steer_request, SteerBody};
use crate::{ApiError, AppState};

/// Default bound on the token steps of one steering request (`max_tokens × (prompt + max_tokens)`):
/// 262,144, about 20 s of SmolLM2-135M on two cores (a 768-token prompt with 256 tokens, or 8,160 with 32).
pub const DEFAULT_STEER_WORK: u64 = 1 << 18;

/// Token steps of a request: `max_tokens × (prompt_tokens + max_tokens)`.
pub fn steer_work(prompt_tokens: usize, max_tokens: usize) -> u64 {
    (max_tokens as u64).saturating_mul((prompt_tokens as u64).saturating_add(max_tokens as u64))
}

/// Counters of the steering requests since the server started (`/api/info`'s `steer`).
#[derive(Debug, Default)]
pub(crate) struct SteerStats {
    queued: AtomicU64,
    running: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    abandoned: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SteerCounts {
    /// Requests waiting for the model.
    pub queued: u64,
    /// Requests generating.
    pub running: u64,
    /// Requests answered.
    pub completed: u64,
    /// Requests stopped (or skipped) because their client went away.
    pub cancelled: u64,
    /// `/api/steer` connections closed before their answer.
    pub abandoned: u64,
    /// The work bound of one request (token steps).
    pub max_work: u64,
}

impl SteerStats {
    pub(crate) fn snapshot(&self, max_work: u64) -> SteerCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SteerCounts {
            queued: get(&self.queued),
            running: get(&self.running),
            completed: get(&self.completed),
            cancelled: get(&self.cancelled),
            abandoned: get(&self.abandoned),
            max_work,
        }
    }
}

/// A checked steering body: the request is valid for the engine and within the work bound.
pub(crate) async fn checked_request(
    state: &AppState,
    body: Result<Json<SteerBody>, JsonRejection>,
) -> Result<SteerRequest, ApiError> {
    let req = steer_request(state, body)?;
    state.engine()?;
    // Tokenising a long prompt is CPU work too: off the async threads, and without the model lock.
    let (checked, req) = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let r = state.engine().and_then(|e| Ok(e.check(&req)?));
            (r, req)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("checking the request failed: {e}")))?
    };
    let prompt_tokens = checked?.len();
    let work = steer_work(prompt_tokens, req.max_tokens);
    let limit = state.steer_work_limit();
    if work > limit {
        return Err(ApiError::BadRequest(format!(
            "this request needs {work} token steps (max_tokens {} × ({prompt_tokens} prompt tokens + {})); \
             the server allows {limit} per request (`zephyra serve --max-steer-work`): shorten the prompt or \
             lower max_tokens",
            req.max_tokens, req.max_tokens
        )));
    }
    Ok(req)
}

/// Runs one steering job on the calling (blocking) thread: waits for the model, skips the job if
/// `cancel` is set or `client_gone()` by then, and stops it before its next token once `cancel` is set.
/// `Ok(None)`: the job was cancelled.
pub(crate) fn run_steer(
    state: &AppState,
    req: &SteerRequest,
    cancel: &AtomicBool,
    client_gone: impl Fn() -> bool,
    on_text: impl Fn(Side, &str) + Sync,
) -> Result<Option<SteerOutput>, AnalysisError> {
    let stats = state.steer_stats();
    let engine = state.engine().map_err(AnalysisError::model)?;
    stats.queued.fetch_add(1, Ordering::Relaxed);
    let guard = state.lock_model();
    stats.queued.fetch_sub(1, Ordering::Relaxed);
    if cancel.load(Ordering::Relaxed) || client_gone() {
        drop(guard);
        stats.cancelled.fetch_add(1, Ordering::Relaxed);
        tracing::info!("the client left while queued: steering skipped");
        return Ok(None);
    }
    stats.running.fetch_add(1, Ordering::Relaxed);
    let result = engine.steer_streaming(req, cancel, on_text);
    stats.running.fetch_sub(1, Ordering::Relaxed);
    drop(guard);
    match &result {
        Ok(Some(_)) => stats.completed.fetch_add(1, Ordering::Relaxed),
        Ok(None) => {
            tracing::info!("the client went away: steering stopped");
            stats.cancelled.fetch_add(1, Ordering::Relaxed)
        }
        Err(_) => 0,
    };
    result
}

/// Sets the job's cancel flag when dropped armed: the handler's future was dropped because the connection
/// closed before the answer.
pub(crate) struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    state: AppState,
    armed: bool,
}

impl CancelOnDrop {
    pub(crate) fn new(state: &AppState, flag: Arc<AtomicBool>) -> Self {
        Self {
            flag,
            state: state.clone(),
            armed: true,
        }
    }

    /// The answer is ready: dropping no longer cancels.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
            self.state
                .steer_stats()
                .abandoned
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
