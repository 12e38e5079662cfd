//! The Zephyra web app: browse an SAE's features, explain a text, steer generation.
//!
//! [`router`] builds an axum [`Router`](axum::Router) over an [`AppState`]; the caller binds it (the CLI
//! binds `127.0.0.1` by default, see [`DEFAULT_ADDR`]). Every page, script and style sheet is compiled into
//! the binary: nothing is read from disk but the features store and, with [`AppState::with_run_dir`], the run
//! directory's `cfg.json`, `summary.json`, `metrics.jsonl`, `eval.json` and the plot files named in
//! [`run::PLOT_FILES`] (a fixed list: no URL maps to any other path).
//!
//! # Crate map
//! | module | responsibility | main types |
//! |---|---|---|
//! | [`api`] | the JSON routes: feature list and records, explain, steer | [`api::ListQuery`], [`api::ExplainBody`], [`api::SteerBody`] |
//! | [`stream`] | streamed steering: both sides token by token as NDJSON | [`stream::STREAM_CONTENT_TYPE`] |
//! | [`run`] | the run page: config, training summary, eval table, plot files | [`run::PLOT_FILES`] |
//! | [`pages`] | the HTML pages and embedded assets | — |
//! | [`error`] | errors as HTTP responses (4xx with a message, 5xx logged and generic) | [`ApiError`] |
//! | [`jobs`] | steering jobs: work bound, model queue, cancellation when the client leaves, counters | [`jobs::DEFAULT_STEER_WORK`] |
//! | [`graph`] | attribution graphs: files, per-layer feature stores, interventions, graph jobs | [`graph::GraphSite`] |
//! | [`limits`] | limits checked from the request head (413, 414); JSON bodies for axum's own errors | [`limits::MAX_URI_BYTES`] |
//!
//! # Routes (stable)
//! | route | answer |
//! |---|---|
//! | `GET /` | feature browser (HTML) |
//! | `GET /feature/{id}` | feature page (HTML); 404 for an unknown id |
//! | `GET /explain`, `GET /steer` | explain-a-text and steering playground (HTML) |
//! | `GET /run` | the run page (HTML): config, training, eval table and plots |
//! | `GET /run/plots/{name}` | a plot file of the run (`name` in [`run::PLOT_FILES`], else 404) |
//! | `GET /api/run` | the run as JSON (404 when the server has no run directory) |
//! | `GET /api/info` | provenance and counters of the features store |
//! | `GET /api/features?sort=&order=&q=&offset=&limit=` | a page of feature summaries |
//! | `GET /api/feature/{id}` | one feature's record |
//! | `POST /api/explain` `{"text", "top_k"?}` | tokens with their top features |
//! | `POST /api/steer` `{"prompt", "feature", "strength", "mode", "max_tokens", "seed", "temperature"?}` | steered and unsteered text |
//! | `POST /api/steer/stream` (same body) | NDJSON: `{"side", "token"}` lines, then `{"done": true, …}` or `{"error"}` |
//! | `GET /graphs`, `GET /graph/{name}` | the graph list and form; one graph drawn (HTML) |
//! | `GET /layer/{layer}/feature/{id}` | a transcoder feature's page (HTML) |
//! | `GET /api/graphs` | `{"graphs": [{"name", "bytes"}], "can_make"}` |
//! | `POST /api/graphs` `{"name", "prompt", "node_threshold"?, "edge_threshold"?, "max_feature_nodes"?}` | 202 `{"job"}`: a graph job |
//! | `GET /api/graph-jobs/{id}` | `{"state": "queued"\|"running"\|"done"\|"failed", "done", "total", "name", "error"?}` |
//! | `GET /api/graph/{name}` | the graph file (circuit-tracer's JSON) |
//! | `POST /api/graph/{name}/intervene` `{"edits": [{"node_id", "scale"}], "top_k"?}` | the real model's top tokens before and after |
//! | `GET /api/layer/{layer}/info`, `GET /api/layer/{layer}/feature/{id}` | a layer's features store, as `/api/info` and `/api/feature/{id}` |
//!
//! ```
//! assert_eq!(zephyra_web::DEFAULT_ADDR, "127.0.0.1:7878");
//! assert_eq!(zephyra_web::MAX_BODY_BYTES, 1 << 20);
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod error;
pub mod graph;
mod graph_jobs;
pub mod jobs;
pub mod limits;
pub mod pages;
pub mod run;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
    run_dir: Option<Arc<PathBuf>>,
    steer_work: u64,
    graphs: Option<Arc<graph::GraphSite>>,
}

struct Inner {
    store: Option<FeatureStore>,
    engine: Option<Engine>,
    rule: ExclusionRule,
    /// Serialises model access: one forward pass or generation at a time.
    model_lock: Mutex<()>,
    steer_stats: jobs::SteerStats,
}

impl AppState {
    /// A state serving `store`; with an `engine`, explain and steer work too (otherwise they answer 503).
    pub fn new(store: FeatureStore, engine: Option<Engine>) -> Self {
        Self::with_store(Some(store), engine)
    }

    /// A state serving only attribution graphs (no SAE features store: the feature browser, explain and
    /// steer answer 404/503 saying so).
    pub fn graphs_only(site: graph::GraphSite) -> Self {
        Self::with_store(None, None).with_graphs(site)
    }

    fn with_store(store: Option<FeatureStore>, engine: Option<Engine>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                engine,
                rule: ExclusionRule::default(),
                model_lock: Mutex::new(()),
                steer_stats: jobs::SteerStats::default(),
            }),
            run_dir: None,
            steer_work: jobs::DEFAULT_STEER_WORK,
            graphs: None,
        }
    }

    /// Also serves the attribution graphs of `site` (`/graphs`, `/graph/{name}`, per-layer feature pages).
    pub fn with_graphs(mut self, site: graph::GraphSite) -> Self {
        self.graphs = Some(Arc::new(site));
        self
    }

    /// The graphs, or 404 when the server has none.
    pub(crate) fn graphs(&self) -> Result<&Arc<graph::GraphSite>, ApiError> {
        self.graphs.as_ref().ok_or_else(|| {
            ApiError::NotFound(
                "this server has no attribution graphs: start it with `zephyra serve --transcoders DIR`".into(),
            )
        })
    }

    /// Bounds the work of one steering request to `max_work` token steps
    /// (`max_tokens × (prompt tokens + max_tokens)`, see [`jobs`]); larger requests are a 400.
    pub fn with_steer_work_limit(mut self, max_work: u64) -> Self {
        self.steer_work = max_work;
        self
    }

    /// The work bound of one steering request (token steps).
    pub fn steer_work_limit(&self) -> u64 {
        self.steer_work
    }

    /// The steering counters since the server started.
    pub fn steer_counts(&self) -> jobs::SteerCounts {
        self.inner.steer_stats.snapshot(self.steer_work)
    }

    pub(crate) fn steer_stats(&self) -> &jobs::SteerStats {
        &self.inner.steer_stats
    }

    /// Also serves the run page of `dir` (the SAE's directory: `cfg.json`, `metrics.jsonl`, `eval.json`,
    /// `plots/`). The files are read on each request, so an eval made while the server runs shows up.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(Arc::new(dir.into()));
        self
    }

    /// The run directory, if any.
    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_deref().map(PathBuf::as_path)
    }

    /// The engine, or 503 when the server runs without a model.
    pub(crate) fn engine(&self) -> Result<&Engine, ApiError> {
        self.inner.engine.as_ref().ok_or_else(|| {
            ApiError::Unavailable(
                "no model is loaded: start the server with --model to explain and steer".into(),
            )
        })
    }

    /// Holds the model for one forward pass or generation.
    pub(crate) fn lock_model(&self) -> MutexGuard<'_, ()> {
        self.inner
            .model_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The features store (`None`: a server of graphs only).
    pub fn store(&self) -> Option<&FeatureStore> {
        self.inner.store.as_ref()
    }

    /// The features store, or 404 when the server has none.
    pub(crate) fn features(&self) -> Result<&FeatureStore, ApiError> {
        self.store().ok_or_else(|| {
            ApiError::NotFound(
                "this server has no SAE features (it serves graphs): start it with `zephyra serve --sae DIR`, \
                 or open a layer's features from a graph"
                    .into(),
            )
        })
    }

    /// Runs `f` on the engine on a blocking thread, one call at a time.
    pub(crate) async fn with_engine<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, &ExclusionRule) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.engine()?;
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = state.lock_model();
            match &state.inner.engine {
                Some(engine) => f(engine, &state.inner.rule),
                None => Err(ApiError::Internal("the engine disappeared".into())),
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("model task failed: {e}")))?
    }
}

/// Serves `app` on `listener` (bound by the caller, who knows its address) from a new multi-threaded
/// runtime, until serving fails. Small responses go out at once (`TCP_NODELAY`: no Nagle delay).
pub fn serve_blocking(listener: std::net::TcpListener, app: Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY");
            }
        });
        axum::serve(listener, app).await
    })
}

/// The app's routes over `state`.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", get(pages::browser))
        .route("/feature/{id}", get(pages::feature))
        .route("/explain", get(pages::explain))
        .route("/steer", get(pages::steer))
        .route("/run", get(pages::run))
        .route("/run/plots/{name}", get(run::plot_file))
        .route("/assets/app.css", get(pages::css))
        .route("/assets/app.js", get(pages::js))
        .route("/api/info", get(api::info))
        .route("/api/features", get(api::features))
        .route("/api/feature/{id}", get(api::feature))
        .route("/api/explain", post(api::explain))
        .route("/api/steer", post(api::steer))
        .route("/api/steer/stream", post(stream::steer_stream))
        .route("/api/run", get(run::run_json))
        .route("/graphs", get(pages::graphs))
        .route("/graph/{name}", get(pages::graph))
        .route("/layer/{layer}/feature/{id}", get(pages::layer_feature))
        .route("/api/graphs", get(graph::list).post(graph_jobs::make))
        .route("/api/graph-jobs/{id}", get(graph_jobs::status))
        .route("/api/graph/{name}", get(graph::file))
        .route("/api/graph/{name}/intervene", post(graph::intervene))
        .route("/api/layer/{layer}/info", get(graph::layer_info))
        .route("/api/layer/{layer}/feature/{id}", get(graph::layer_feature))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    // Around the whole router (not each route), so that axum's own answers (405 with its `Allow` header)
    // are complete when they get their JSON body.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_response(limits::json_errors))
        .layer(axum::middleware::from_fn(limits::check_head))
}
