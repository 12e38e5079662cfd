//! The Zephyra web app: browse an SAE's features, explain a text, steer generation.
//!
//! [`router`] builds an axum [`Router`](axum::Router) over an [`AppState`]; the caller binds it (the CLI
//! binds `127.0.0.1` by default, see [`DEFAULT_ADDR`]). Every page, script and style sheet is compiled into
//! the binary: nothing is read from disk but the features store, and no URL maps to a file path.
//!
//! # Crate map
//! | module | responsibility | main types |
//! |---|---|---|
//! | [`api`] | the JSON routes: feature list and records, explain, steer | [`api::ListQuery`], [`api::ExplainBody`], [`api::SteerBody`] |
//! | [`pages`] | the HTML pages and embedded assets | — |
//! | [`error`] | errors as HTTP responses (4xx with a message, 5xx logged and generic) | [`ApiError`] |
//!
//! # Routes (stable)
//! | route | answer |
//! |---|---|
//! | `GET /` | feature browser (HTML) |
//! | `GET /feature/{id}` | feature page (HTML); 404 for an unknown id |
//! | `GET /explain`, `GET /steer` | explain-a-text and steering playground (HTML) |
//! | `GET /api/info` | provenance and counters of the features store |
//! | `GET /api/features?sort=&order=&q=&offset=&limit=` | a page of feature summaries |
//! | `GET /api/feature/{id}` | one feature's record |
//! | `POST /api/explain` `{"text", "top_k"?}` | tokens with their top features |
//! | `POST /api/steer` `{"prompt", "feature", "strength", "mode", "max_tokens", "seed", "temperature"?}` | steered and unsteered text |
//!
//! ```
//! assert_eq!(zephyra_web::DEFAULT_ADDR, "127.0.0.1:7878");
//! assert_eq!(zephyra_web::MAX_BODY_BYTES, 1 << 20);
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod error;
pub mod pages;

use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use zephyra_analysis::features::FeatureStore;
use zephyra_analysis::steer::Engine;
use zephyra_data::ExclusionRule;

pub use error::ApiError;

/// The address `zephyra serve` binds by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";
/// Largest request body accepted (larger: 413).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the app serves.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: FeatureStore,
    engine: Option<Engine>,
    rule: ExclusionRule,
    /// Serialises model access: one forward pass or generation at a time.
    model_lock: Mutex<()>,
}

impl AppState {
    /// A state serving `store`; with an `engine`, explain and steer work too (otherwise they answer 503).
    pub fn new(store: FeatureStore, engine: Option<Engine>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                engine,
                rule: ExclusionRule::default(),
                model_lock: Mutex::new(()),
            }),
        }
    }

    /// The features store.
    pub fn store(&self) -> &FeatureStore {
        &self.inner.store
    }

    /// Runs `f` on the engine on a blocking thread, one call at a time.
    pub(crate) async fn with_engine<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, &ExclusionRule) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        if self.inner.engine.is_none() {
            return Err(ApiError::Unavailable(
                "no model is loaded: start the server with --model to explain and steer".into(),
            ));
        }
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = state
                .inner
                .model_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &state.inner.engine {
                Some(engine) => f(engine, &state.inner.rule),
                None => Err(ApiError::Internal("the engine disappeared".into())),
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("model task failed: {e}")))?
    }
}

/// The app's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::browser))
        .route("/feature/{id}", get(pages::feature))
        .route("/explain", get(pages::explain))
        .route("/steer", get(pages::steer))
        .route("/assets/app.css", get(pages::css))
        .route("/assets/app.js", get(pages::js))
        .route("/api/info", get(api::info))
        .route("/api/features", get(api::features))
        .route("/api/feature/{id}", get(api::feature))
        .route("/api/explain", post(api::explain))
        .route("/api/steer", post(api::steer))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
