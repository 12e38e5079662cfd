//! Every route of the app, driven through `router(state)` with `oneshot` (no socket), on the tiny model with
//! a planted feature: status, content type, JSON shape and values, and every malformed request.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use zephyra_analysis::features::planted::{planted, Planted};
use zephyra_analysis::features::{
    compute_features, FeatureJob, FeatureOptions, FeatureStore, Provenance,
};
use zephyra_analysis::steer::Engine;
use zephyra_data::Corpus;
use zephyra_web::{router, AppState, MAX_BODY_BYTES};

struct Fixture {
    p: Planted,
    _dir: tempfile::TempDir,
    store: FeatureStore,
}

fn fixture() -> Fixture {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let corpus =
        Corpus::from_specs(&[p.corpus_path.display().to_string()], Default::default()).unwrap();
    let job = FeatureJob {
        llama: &p.llama,
        tokenizer: p.tokenizer.clone(),
        sae: &p.sae,
        hook: p.hook,
        corpus: &corpus,
        options: FeatureOptions {
            ctx: 16,
            n_top: 5,
            checkpoint_every: 0,
            ..Default::default()
        },
        out_dir: dir.path(),
        provenance: Provenance::default(),
    };
    compute_features(&job, &mut |_| {}).unwrap();
    let store = FeatureStore::open(dir.path()).unwrap();
    Fixture {
        p,
        _dir: dir,
        store,
    }
}

fn app(f: &Fixture, with_model: bool) -> axum::Router {
    let engine = with_model.then(|| {
        Engine::new(
            f.p.llama.clone(),
            f.p.tokenizer.clone(),
            Arc::clone(&f.p.sae),
            f.p.hook,
        )
        .unwrap()
    });
    router(AppState::new(f.store.clone(), engine))
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn json_of(app: &axum::Router, req: Request<Body>, want: StatusCode) -> Value {
    let (status, ctype, body) = call(app, req).await;
    assert_eq!(status, want, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn pages_and_assets_are_embedded() {
    let f = fixture();
    let app = app(&f, false);
    for (uri, page) in [
        ("/", "browser"),
        ("/feature/0", "feature"),
        ("/explain", "explain"),
        ("/steer", "steer"),
    ] {
        let (status, ctype, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(ctype.starts_with("text/html"), "{uri}: {ctype}");
        assert!(body.contains(&format!("data-page=\"{page}\"")), "{uri}");
        assert!(
            body.contains("/assets/app.js")
                && !body.contains("http://")
                && !body.contains("https://"),
            "{uri}: no CDN"
        );
    }
    let (status, ctype, js) = call(&app, get("/assets/app.js")).await;
    assert_eq!(
        (status, ctype.starts_with("text/javascript")),
        (StatusCode::OK, true)
    );
    assert!(js.contains("/api/steer") && !js.contains("innerHTML"));
    let (status, ctype, _) = call(&app, get("/assets/app.css")).await;
    assert_eq!(
        (status, ctype.starts_with("text/css")),
        (StatusCode::OK, true)
    );
    for bad in [
        "/feature/4",
        "/feature/abc",
        "/feature/-1",
        "/nope",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/app.js/../../etc/passwd",
    ] {
        let (status, _, body) = call(&app, get(bad)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        assert!(
            !body.contains("[package]") && !body.contains("root:"),
            "{bad} leaked a file"
        );
    }
}

#[tokio::test]
async fn feature_list_sorts_filters_and_pages() {
    let f = fixture();
    let app = app(&f, false);
    let j = json_of(&app, get("/api/features"), StatusCode::OK).await;
    // Only latent 0 ever fires; dead latents are hidden unless asked for.
    assert_eq!(j["total"], 1);
    assert_eq!(j["features"][0]["id"], 0);
    let tok = f.p.tokenizer.decode(&[f.p.token]).unwrap();
    assert_eq!(j["features"][0]["top_tokens"][0], json!(tok));
    for key in ["density", "max_act", "mean_act", "n_fires", "top_logits"] {
        assert!(j["features"][0].get(key).is_some(), "{key}");
    }
    let j = json_of(
        &app,
        get("/api/features?dead=true&sort=id&order=asc&limit=2&offset=1"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (j["total"].as_u64(), j["features"].as_array().unwrap().len()),
        (Some(4), 2)
    );
    assert_eq!(
        (
            j["features"][0]["id"].as_u64(),
            j["features"][1]["id"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let j = json_of(
        &app,
        get("/api/features?sort=max&dead=true"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(j["features"][0]["id"], 0);
    let j = json_of(
        &app,
        get(&format!("/api/features?q={}", tok.trim())),
        StatusCode::OK,
    )
    .await;
    assert!(j["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == 0));
    let j = json_of(&app, get("/api/features?q=3"), StatusCode::OK).await;
    assert_eq!(j["features"][0]["id"], 3, "a number finds that latent");
    let j = json_of(&app, get("/api/features?q=zzzz-nothing"), StatusCode::OK).await;
    assert_eq!(j["total"], 0);
    for bad in [
        "/api/features?sort=bogus",
        "/api/features?limit=0",
        "/api/features?limit=100000",
        "/api/features?offset=-3",
        "/api/features?nope=1",
    ] {
        let j = json_of(&app, get(bad), StatusCode::BAD_REQUEST).await;
        assert!(j["error"].as_str().unwrap().len() > 5, "{bad}: {j}");
    }
    let info = json_of(&app, get("/api/info"), StatusCode::OK).await;
    assert_eq!(
        (info["d_sae"].as_u64(), info["n_alive"].as_u64()),
        (Some(4), Some(1))
    );
}

#[tokio::test]
async fn feature_records_and_bad_ids() {
    let f = fixture();
    let app = app(&f, false);
    let j = json_of(&app, get("/api/feature/0"), StatusCode::OK).await;
    assert_eq!(j["id"], 0);
    assert_eq!(j["logits_pos"][0]["id"], json!(f.p.token));
    assert_eq!(
        j["top"][0]["token_ids"][j["top"][0]["center"].as_u64().unwrap() as usize],
        json!(f.p.token)
    );
    for key in ["histogram", "quantiles", "cofire", "logits_neg", "density"] {
        assert!(j.get(key).is_some(), "{key}");
    }
    for bad in [
        "/api/feature/4",
        "/api/feature/99999999999",
        "/api/feature/x",
        "/api/feature/-1",
    ] {
        let j = json_of(&app, get(bad), StatusCode::NOT_FOUND).await;
        assert!(
            j["error"].as_str().unwrap().contains("no feature"),
            "{bad}: {j}"
        );
    }
}

#[tokio::test]
async fn explain_marks_the_planted_token() {
    let f = fixture();
    let app = app(&f, true);
    let text = "the box and six";
    let j = json_of(
        &app,
        post("/api/explain", json!({ "text": text }).to_string()),
        StatusCode::OK,
    )
    .await;
    let tokens = j["tokens"].as_array().unwrap();
    let ids = f.p.tokenizer.encode(text).unwrap();
    assert_eq!(tokens.len(), ids.len());
    assert_eq!(tokens[0]["excluded"], true, "position 0 is excluded");
    for (t, &id) in tokens.iter().zip(&ids).skip(1) {
        let feats = t["features"].as_array().unwrap();
        if id == f.p.token {
            assert_eq!(feats[0]["id"], 0);
            assert!((feats[0]["act"].as_f64().unwrap() - 1.0).abs() < 1e-4);
        } else {
            assert!(feats.is_empty(), "{t}");
        }
    }
}

#[tokio::test]
async fn steer_zero_equals_unsteered_and_large_changes_it() {
    let f = fixture();
    let app = app(&f, true);
    let body = |strength: f32, mode: &str| {
        json!({"prompt": "the cat", "feature": 0, "strength": strength, "mode": mode, "max_tokens": 12, "seed": 5}).to_string()
    };
    let j = json_of(&app, post("/api/steer", body(0.0, "add")), StatusCode::OK).await;
    assert_eq!(j["steered"], j["unsteered"]);
    assert_eq!(j["steered_ids"], j["unsteered_ids"]);
    assert_eq!(j["request"]["mode"], "add");
    let j = json_of(&app, post("/api/steer", body(500.0, "add")), StatusCode::OK).await;
    assert_ne!(j["steered_ids"], j["unsteered_ids"]);
    let j = json_of(
        &app,
        post("/api/steer", body(500.0, "clamp")),
        StatusCode::OK,
    )
    .await;
    assert_ne!(j["steered_ids"], j["unsteered_ids"]);
}

#[tokio::test]
async fn malformed_requests_are_4xx_with_a_message() {
    let f = fixture();
    let app = app(&f, true);
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("/api/explain", "{not json".into(), StatusCode::BAD_REQUEST),
        ("/api/explain", "{}".into(), StatusCode::BAD_REQUEST),
        (
            "/api/explain",
            json!({"text": 5}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": ""}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": "x".repeat(70_000)}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": "the cat", "top_k": 0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": "x".repeat(MAX_BODY_BYTES + 10)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("/api/steer", "[]".into(), StatusCode::BAD_REQUEST),
        (
            "/api/steer",
            json!({"prompt": "a", "feature": 4, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/steer",
            json!({"prompt": "a", "feature": -1, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/steer",
            json!({"prompt": "a", "feature": 0, "strength": 1.0, "mode": "multiply"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/steer",
            json!({"prompt": "a", "feature": 0, "strength": 1.0, "max_tokens": 0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/steer",
            json!({"prompt": "a", "feature": 0, "strength": 1.0, "max_tokens": 100000}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/steer",
            json!({"prompt": "", "feature": 0, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/steer",
            json!({"prompt": "x ".repeat(400), "feature": 0, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/steer",
            json!({"prompt": "a", "feature": 0, "strength": "big"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (uri, body, want) in cases {
        let short = body.chars().take(60).collect::<String>();
        let j = json_of(&app, post(uri, body), want).await;
        assert!(
            j["error"].as_str().is_some_and(|m| m.len() > 5),
            "{uri} {short}: {j}"
        );
    }
    // Without a model, explain and steer say so (503), they do not fail.
    let no_model = self::app(&f, false);
    let j = json_of(
        &no_model,
        post("/api/explain", json!({"text": "a"}).to_string()),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(j["error"].as_str().unwrap().contains("model"));
    // Wrong method.
    let (status, _, _) = call(&app, get("/api/steer")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
