//! The HTML pages and their script and style sheet, all compiled into the binary.
//!
//! Every page is one template with a `data-page` attribute; `app.js` renders it from the JSON API using
//! `textContent` only (no HTML is built from data), so a token or a text cannot inject markup.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

use crate::api::parse_id;
use crate::{ApiError, AppState};

const PAGE: &str = include_str!("../assets/page.html");
const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");

fn page(name: &str, title: &str) -> Html<String> {
    Html(PAGE.replace("{{page}}", name).replace("{{title}}", title))
}

/// `GET /`: the feature browser.
pub async fn browser() -> Html<String> {
    page("browser", "Features")
}

/// `GET /feature/{id}`: one feature (404 for an unknown id).
pub async fn feature(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    match parse_id(&state, &raw) {
        Ok(id) => page("feature", &format!("Feature {id}")).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, page("missing", "Not found")).into_response(),
    }
}

/// `GET /explain`: explain a text.
pub async fn explain() -> Html<String> {
    page("explain", "Explain a text")
}

/// `GET /steer`: the steering playground.
pub async fn steer() -> Html<String> {
    page("steer", "Steering")
}

/// `GET /run`: the run page (config, training, eval table, plots).
pub async fn run() -> Html<String> {
    page("run", "Run")
}

/// `GET /graphs`: the graph list and the form that makes one.
pub async fn graphs() -> Html<String> {
    page("graphs", "Attribution graphs")
}

/// `GET /graph/{name}`: one graph drawn (404 for an unknown graph).
pub async fn graph(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.graphs() {
        Ok(site) if site.exists(&name) => page("graph", "Attribution graph").into_response(),
        _ => (StatusCode::NOT_FOUND, page("missing", "Not found")).into_response(),
    }
}

/// `GET /layer/{layer}/feature/{id}`: a transcoder feature (404 without that layer's store or feature).
pub async fn layer_feature(
    State(state): State<AppState>,
    Path((layer, id)): Path<(String, String)>,
) -> Response {
    if crate::graph::layer_feature_exists(&state, &layer, &id) {
        page("feature", &format!("Layer {layer} feature {id}")).into_response()
    } else {
        (StatusCode::NOT_FOUND, page("missing", "Not found")).into_response()
    }
}

/// `GET /assets/app.css`.
pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
}

/// `GET /assets/app.js`.
pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
}

/// Anything else: 404, as JSON under `/api/` and as a page elsewhere.
pub async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        return ApiError::NotFound(format!(
            "no API route `{}`: the routes are listed in the README's HTTP API section",
            uri.path()
        ))
        .into_response();
    }
    (StatusCode::NOT_FOUND, page("missing", "Not found")).into_response()
}
