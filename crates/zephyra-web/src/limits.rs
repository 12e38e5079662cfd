//! Request limits checked before a route runs, and JSON bodies for the errors axum answers on its own.
//!
//! - A declared `Content-Length` over [`MAX_BODY_BYTES`](crate::MAX_BODY_BYTES) is answered 413 from the
//!   header, before a byte of the body is read (the body limit itself still holds for chunked bodies).
//! - A URI longer than [`MAX_URI_BYTES`] is answered 414. (hyper refuses a URI over 64 KiB itself, with an
//!   empty 414, before the app sees the request.)
//! - An error answer without a body (axum's 405 for a wrong method, any empty 4xx/5xx) gets the
//!   `{"error": "…"}` body every other error has; its headers (`Allow`) are kept.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;

use crate::{ApiError, MAX_BODY_BYTES};

/// Longest request URI (path and query) accepted (longer: 414).
pub const MAX_URI_BYTES: usize = 8 << 10;

/// Refuses a request from its head: a URI over [`MAX_URI_BYTES`] (414), a declared body over
/// [`MAX_BODY_BYTES`] (413) or an unreadable `Content-Length` (400).
pub async fn check_head(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong(format!(
            "the request URI has {uri_len} bytes, more than the {MAX_URI_BYTES} accepted: shorten the query"
        ))
        .into_response();
    }
    if let Some(value) = req.headers().get(header::CONTENT_LENGTH) {
        match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(n) if n > MAX_BODY_BYTES as u64 => {
                return ApiError::TooLarge(format!(
                    "the request declares a {n}-byte body, more than the {MAX_BODY_BYTES} bytes accepted"
                ))
                .into_response();
            }
            Some(_) => {}
            None => {
                return ApiError::BadRequest(format!(
                    "the Content-Length header `{}` is not a byte count",
                    String::from_utf8_lossy(value.as_bytes())
                ))
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Gives an error answer that has no body a JSON `{"error"}` body naming the status.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let empty = response.body().size_hint().exact() == Some(0);
    if !(status.is_client_error() || status.is_server_error()) || !empty {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("another method");
            format!("this route does not answer this method: use {allowed}")
        }
        other => other
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_parts(parts, Body::from(body))
}
