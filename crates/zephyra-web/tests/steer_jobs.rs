//! Steering under a greedy or vanishing client: the work of one request is bounded (a 400 that names the
//! bound and the flag), and a request whose client closed the connection while it waited for the model is
//! skipped instead of generating for nobody.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{fixture, get, json_of, post};
use serde_json::{json, Value};
use tower::ServiceExt;
use zephyra_web::jobs::{steer_work, DEFAULT_STEER_WORK};
use zephyra_web::router;

#[tokio::test]
async fn the_work_of_one_request_is_bounded() {
    let f = fixture();
    let prompt = "the cat sat";
    let n_prompt = f.p.tokenizer.encode(prompt).unwrap().len();
    // Hand-computed: 8 generated tokens over the prompt cost 8 × (n_prompt + 8) token steps.
    let limit = 8 * (n_prompt as u64 + 8);
    assert_eq!(steer_work(n_prompt, 8), limit);
    let app = router(f.state(true).with_steer_work_limit(limit));
    let body = |max_tokens: usize| {
        json!({"prompt": prompt, "feature": 0, "strength": 1.0, "max_tokens": max_tokens})
            .to_string()
    };
    for uri in ["/api/steer", "/api/steer/stream"] {
        let j = json_of(&app, post(uri, body(9)), StatusCode::BAD_REQUEST).await;
        let message = j["error"].as_str().unwrap();
        let need = 9 * (n_prompt as u64 + 9);
        assert!(
            message.contains(&need.to_string())
                && message.contains(&limit.to_string())
                && message.contains("--max-steer-work"),
            "{uri}: {message}"
        );
        let resp = app.clone().oneshot(post(uri, body(8))).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{uri}: at the bound is allowed"
        );
    }
    let info = json_of(&app, get("/api/info"), StatusCode::OK).await;
    assert_eq!(info["steer"]["max_work"], limit);
    // The default admits the README's examples and refuses a context-long prompt with 256 tokens.
    assert!(
        steer_work(8_160, 32) <= DEFAULT_STEER_WORK && steer_work(768, 256) <= DEFAULT_STEER_WORK
    );
    assert!(steer_work(8_190, 256) > DEFAULT_STEER_WORK);
}

/// `/api/info`'s steering counters.
async fn counts(app: &axum::Router) -> Value {
    json_of(app, get("/api/info"), StatusCode::OK).await["steer"].clone()
}

/// Polls the counters until `done` holds; fails after a generous bound (not a timing assertion: it only
/// keeps a regression from hanging the suite).
async fn wait_for(app: &axum::Router, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let c = counts(app).await;
        if done(&c) {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "waited 120 s for {what}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_left_is_not_generated() {
    let f = fixture();
    let app = router(f.state(true));
    let addr = common::serve_in_background(app.clone());

    // Request B holds the model: a stream nobody reads blocks once its channel is full.
    let hold = json!({"prompt": "the cat", "feature": 0, "strength": 0.0, "max_tokens": 256,
        "temperature": 0.0})
    .to_string();
    let held = app
        .clone()
        .oneshot(post("/api/steer/stream", hold))
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    wait_for(&app, "the held stream to run", |c| c["running"] == 1).await;

    // Request A, over a real connection, queues behind it; then its client closes the connection.
    let body =
        json!({"prompt": "the cat", "feature": 0, "strength": 3.0, "max_tokens": 256}).to_string();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "POST /api/steer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_for(&app, "the second request to queue", |c| c["queued"] == 1).await;
    drop(conn);
    wait_for(&app, "the closed connection to be noticed", |c| {
        c["abandoned"] == 1
    })
    .await;
    let c = counts(&app).await;
    assert_eq!(
        (c["running"].as_u64(), c["completed"].as_u64()),
        (Some(1), Some(0)),
        "{c}"
    );

    // Release the model: B stops (its reader is gone), A is skipped.
    drop(held);
    let c = wait_for(&app, "both requests to end", |c| {
        c["queued"] == 0 && c["running"] == 0 && c["cancelled"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(c["completed"], 0, "nothing was generated to the end: {c}");
    assert_eq!(c["cancelled"], 2, "{c}");
}
