//! Shared set-up of the web tests: the tiny model with a planted latent, its features store, a run
//! directory with an eval and plots, and helpers to call the router without a socket.
#![allow(dead_code)] // each test file uses its own part

pub mod graph;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use zephyra_analysis::features::planted::{planted, quick_options, Planted};
use zephyra_analysis::features::{FeatureStore, Provenance};
use zephyra_analysis::plot::{
    plot_density_histogram, plot_training_curves, read_metrics, RunCurve,
};
use zephyra_analysis::report::EvalReport;
use zephyra_analysis::steer::Engine;
use zephyra_web::{router, AppState};

/// The planted model, its features store and the temp dir holding the store.
pub struct Fixture {
    pub p: Planted,
    _dir: tempfile::TempDir,
    pub store: FeatureStore,
}

pub fn fixture() -> Fixture {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    p.compute_features(
        &p.sae,
        quick_options(),
        dir.path(),
        Provenance::default(),
        &mut |_| {},
    )
    .unwrap();
    let store = FeatureStore::open(dir.path()).unwrap();
    Fixture {
        p,
        _dir: dir,
        store,
    }
}

impl Fixture {
    /// The app state, with the model (explain and steer work) or without.
    pub fn state(&self, with_model: bool) -> AppState {
        let engine = with_model.then(|| {
            Engine::new(
                self.p.llama.clone(),
                self.p.tokenizer.clone(),
                Arc::clone(&self.p.sae),
                self.p.hook,
            )
            .unwrap()
        });
        AppState::new(self.store.clone(), engine)
    }
}

pub fn app(f: &Fixture, with_model: bool) -> axum::Router {
    router(f.state(with_model))
}

/// The eval report kept as a fixture (a real `zephyra eval` output).
pub fn eval_fixture() -> EvalReport {
    EvalReport::read(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/eval.json"
    )))
    .unwrap()
}

/// Training records: FVE of the last one is 0.75.
pub const METRICS: &str = concat!(
    r#"{"step":1,"tokens":4096,"loss":200.0,"mse":200.0,"l0":32.0,"fve":0.25,"dead_fraction":0.0}"#,
    "\n",
    r#"{"step":2,"tokens":8192,"loss":100.0,"mse":100.0,"l0":32.0,"fve":0.5,"dead_fraction":0.0}"#,
    "\n",
    r#"{"step":3,"tokens":12288,"loss":50.0,"mse":50.0,"l0":31.5,"fve":0.75,"dead_fraction":0.1}"#,
    "\n"
);

/// A run directory as `zephyra train` leaves it: the SAE (`cfg.json` + weights) and `metrics.jsonl`.
pub fn trained_run(f: &Fixture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    zephyra_sae::saelens::save(&f.p.sae, dir.path()).unwrap();
    std::fs::write(dir.path().join("metrics.jsonl"), METRICS).unwrap();
    dir
}

/// The run after `zephyra eval` and `zephyra plot --run`: `eval.json`, `plots/density.*` and
/// `plots/training.*`, drawn by the analysis crate's plot module.
pub fn evaluated_run(f: &Fixture) -> tempfile::TempDir {
    let dir = trained_run(f);
    let report = eval_fixture();
    report.write(&dir.path().join("eval.json")).unwrap();
    let plots = dir.path().join("plots");
    plot_density_histogram(
        &report.figures.sparsity.density_histogram,
        "Feature density",
        &plots.join("density"),
    )
    .unwrap();
    let points = read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
    plot_training_curves(
        &[RunCurve {
            name: "run".into(),
            points,
        }],
        &plots,
    )
    .unwrap();
    dir
}

/// Status, content type and body of one request.
pub async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String, String) {
    let (status, ctype, body) = call_bytes(app, req).await;
    (status, ctype, String::from_utf8(body).unwrap())
}

/// Status, content type and raw body of one request.
pub async fn call_bytes(app: &axum::Router, req: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, body.to_vec())
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

pub async fn json_of(app: &axum::Router, req: Request<Body>, want: StatusCode) -> Value {
    let (status, ctype, body) = call(app, req).await;
    assert_eq!(status, want, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    serde_json::from_str(&body).unwrap()
}

/// The string at `key` of each element of the JSON array `array`.
pub fn strings_at<'a>(array: &'a Value, key: &str) -> Vec<&'a str> {
    let items = array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"));
    items
        .iter()
        .map(|item| {
            item[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string `{key}` in {item}"))
        })
        .collect()
}

/// The lines of a streamed (NDJSON) answer, read frame by frame as they arrive.
pub async fn stream_lines(app: &axum::Router, req: Request<Body>) -> (String, Vec<Value>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
    }
    assert!(buf.is_empty(), "the stream ends with a newline");
    (ctype, lines)
}

/// Serves `app` on a free port of 127.0.0.1 from a background thread.
pub fn serve_in_background(app: axum::Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || zephyra_web::serve_blocking(listener, app).unwrap());
    addr
}
