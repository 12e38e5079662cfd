//! `POST /api/steer/stream`: steered and unsteered generation streamed token by token as NDJSON.
//!
//! Wire format (`application/x-ndjson`, one JSON object per line):
//! - `{"side": "steered"|"unsteered", "token": "…"}`: the next piece of that side's text (a token, or
//!   several when a character spans tokens); a side's pieces concatenate to its final text;
//! - last line, on success: `{"done": true, "request", "steered", "unsteered", "steered_ids",
//!   "unsteered_ids"}`, the same fields as `POST /api/steer`;
//! - last line, on a failure after the answer started: `{"error": "…"}`.
//!
//! A bad body is refused before streaming starts, with the status codes of `POST /api/steer`. The model
//! runs on a blocking thread feeding a bounded channel; when the client goes away the channel closes and
//! generation stops before its next token (or is skipped, if it was still waiting for the model).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::SteerBody;
use crate::jobs::{checked_request, run_steer};
use crate::{ApiError, AppState};

/// Content type of the stream.
pub const STREAM_CONTENT_TYPE: &str = "application/x-ndjson";

/// Lines buffered between the model thread and the connection.
const CHANNEL_LINES: usize = 64;

/// A response body fed by a channel: it ends when the sender is dropped, and dropping it (the client went
/// away) makes the sender's next send fail.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// `POST /api/steer/stream`.
pub async fn steer_stream(
    State(state): State<AppState>,
    body: Result<Json<SteerBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = checked_request(&state, body).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_LINES);
    tokio::task::spawn_blocking(move || {
        let cancel = AtomicBool::new(false);
        let send = |v: Value| {
            let mut line = v.to_string();
            line.push('\n');
            if tx.blocking_send(Bytes::from(line)).is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let result = run_steer(
            &state,
            &req,
            &cancel,
            || tx.is_closed(),
            |side, piece| send(json!({ "side": side, "token": piece })),
        );
        match result {
            Ok(Some(out)) => send(json!({
                "done": true, "request": req, "steered": out.steered, "unsteered": out.unsteered,
                "steered_ids": out.steered_ids, "unsteered_ids": out.unsteered_ids,
            })),
            Ok(None) => {}
            Err(e) => {
                let message = match ApiError::from(e) {
                    ApiError::BadRequest(m) => m,
                    other => {
                        tracing::error!(error = %other, "streamed steering failed");
                        "Something went wrong".to_string()
                    }
                };
                send(json!({ "error": message }));
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, STREAM_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::new(ChannelBody { rx }),
    )
        .into_response())
}
