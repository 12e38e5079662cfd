//! Every error answer is JSON `{"error"}`, and limits are enforced from the request head: a declared
//! `Content-Length` over the limit is refused before a byte of the body arrives, a long URI is a 414.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use common::{app, call, fixture, get, json_of};
use http_body::Frame;
use zephyra_web::limits::MAX_URI_BYTES;
use zephyra_web::MAX_BODY_BYTES;

/// A request body that never sends a byte (a client that declared a length and stalls).
struct Stalled;

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

fn stalled_post(uri: &str, declared: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, declared)
        .body(Body::new(Stalled))
        .unwrap()
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_from_the_header() {
    let f = fixture();
    let app = app(&f, true);
    for uri in ["/api/explain", "/api/steer", "/api/steer/stream"] {
        for declared in ["10000000000".to_string(), (MAX_BODY_BYTES + 1).to_string()] {
            // The body never arrives: an answer can only come from the header. A generous bound keeps a
            // regression from hanging the suite; it is not a timing assertion.
            let answer = tokio::time::timeout(
                Duration::from_secs(60),
                json_of(
                    &app,
                    stalled_post(uri, &declared),
                    StatusCode::PAYLOAD_TOO_LARGE,
                ),
            )
            .await
            .unwrap_or_else(|_| panic!("{uri} {declared}: no answer without the body"));
            let message = answer["error"].as_str().unwrap();
            assert!(
                message.contains(&declared) && message.contains(&MAX_BODY_BYTES.to_string()),
                "{message}"
            );
        }
    }
    let j = json_of(
        &app,
        stalled_post("/api/explain", "ten"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(j["error"].as_str().unwrap().contains("Content-Length"));
}

#[tokio::test]
async fn unknown_api_routes_wrong_methods_and_long_uris_answer_json() {
    let f = fixture();
    let app = app(&f, true);
    for uri in ["/api/nope", "/api/feature", "/api/features/0/extra", "/api"] {
        let j = json_of(&app, get(uri), StatusCode::NOT_FOUND).await;
        assert!(
            j["error"].as_str().unwrap().contains("no API route"),
            "{uri}: {j}"
        );
    }
    // Pages stay pages.
    let (status, ctype, _) = call(&app, get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(ctype.starts_with("text/html"), "{ctype}");

    for (method, uri, allowed) in [
        (Method::GET, "/api/steer", "POST"),
        (Method::GET, "/api/explain", "POST"),
        (Method::DELETE, "/api/steer/stream", "POST"),
        (Method::POST, "/api/features", "GET"),
        (Method::PUT, "/api/feature/0", "GET"),
        (Method::POST, "/", "GET"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        let allow = resp.headers().get(header::ALLOW).unwrap().to_str().unwrap();
        assert!(allow.contains(allowed), "{method} {uri}: Allow {allow}");
        let ctype = resp.headers().get(header::CONTENT_TYPE).unwrap().clone();
        assert_eq!(ctype, "application/json", "{method} {uri}");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(j["error"].as_str().unwrap().contains(allowed), "{j}");
    }

    let long = format!("/api/features?q={}", "a".repeat(MAX_URI_BYTES));
    let j = json_of(&app, get(&long), StatusCode::URI_TOO_LONG).await;
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains(&MAX_URI_BYTES.to_string()),
        "{j}"
    );
    // Just under the limit is an ordinary request.
    let fits = format!("/api/features?q={}", "a".repeat(MAX_URI_BYTES - 20));
    json_of(&app, get(&fits), StatusCode::OK).await;
}
