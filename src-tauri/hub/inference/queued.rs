//! A streaming request that waits in its room's queue hears its place in line: its answer starts
//! at once as an event stream whose first lines are SSE comments (`: queued, position 2`), sent
//! again whenever the place changes and every few seconds while it waits (which also keeps idle
//! proxies from closing the connection); then comes the stream itself. Every SSE client skips
//! comment lines, so the stream parses as it would have.
//!
//! The request was checked before it queued: a malformed one, or one the room refuses at once,
//! still gets its JSON error with its status. Once the stream has started, whatever ends the wait
//! or the answer before its first byte (the wait ran out, the participant answered with an error)
//! ends the stream with an SSE `error` event in the endpoint's shape, as a failure mid-stream does.
//! A client that goes away while it waits leaves the queue (dropping the body drops its ticket).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::watch;

use crate::hub::error::HubError;
use crate::hub::registry::WaitTicket;

use super::op::ErrorShape;
use super::proxy::{serve, wait_turn, Job, Route};
use super::relay::headers_for;
use super::sse_parse;

/// How often a waiting stream hears its place again when it has not changed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Largest error answer turned into the stream's `error` event.
const MAX_ERROR_BYTES: usize = 256 * 1024;

/// The comment line telling a waiting request its place (1 = next), or that it got one.
pub fn note(position: Option<u32>) -> Bytes {
    match position {
        Some(n) => Bytes::from(format!(": queued, position {n}\n\n")),
        None => Bytes::from_static(b": starting\n\n"),
    }
}

/// The `data` of the `error` event that ends a stream whose answer was an error: the answer itself
/// when it is an error document in the endpoint's shape, else the endpoint's error for its status.
pub fn error_data(shape: ErrorShape, status: u16, body: &[u8]) -> Value {
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    match answer {
        Some(v) if v.get("error").is_some_and(|e| e.is_object()) => v,
        _ => shape.stream_error(&HubError::Upstream { stage: "status".into(), message: format!("HTTP {status}") }),
    }
}

type Work = Pin<Box<dyn Future<Output = Result<Response, HubError>> + Send>>;

enum Phase {
    Waiting {
        work: Work,
        /// Closed (`None`) once the request has left the queue.
        positions: Option<watch::Receiver<u32>>,
        keep_alive: tokio::time::Interval,
        shape: ErrorShape,
        /// The first note is still to be sent.
        first: bool,
    },
    Streaming(BodyDataStream),
    Done,
}

/// The answer to streaming request `job`, which waits for `ticket`: an event stream at once.
pub(super) fn respond(job: Job, ticket: WaitTicket, route: Route) -> Response {
    let shape = job.spec.errors;
    let positions = ticket.positions();
    // The body is polled outside the handler's task: it takes the request's id and caller along.
    let work = crate::hub::request_id::carry(crate::hub::stats::carry_caller(async move {
        let slot = wait_turn(&job, &route, ticket).await?;
        serve(job, slot, route).await
    }));
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let phase = Phase::Waiting {
        work: Box::pin(work),
        positions: Some(positions),
        keep_alive: tokio::time::interval_at(start, KEEP_ALIVE),
        shape,
        first: true,
    };
    let body = Body::from_stream(futures_util::stream::unfold(phase, next));
    let mut response = (StatusCode::OK, body).into_response();
    headers_for(&mut response, None, true);
    response
}

async fn changed(positions: &mut Option<watch::Receiver<u32>>) -> Option<u32> {
    match positions {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => {
                *positions = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

fn error_event(data: &Value) -> Bytes {
    sse_parse::encode(Some("error"), &data.to_string())
}

async fn next(phase: Phase) -> Option<(Result<Bytes, axum::Error>, Phase)> {
    let mut phase = phase;
    loop {
        match phase {
            Phase::Done => return None,
            Phase::Streaming(mut data) => {
                return data.next().await.map(|item| (item, Phase::Streaming(data)));
            }
            Phase::Waiting { mut work, mut positions, mut keep_alive, shape, first } => {
                let current = |p: &Option<watch::Receiver<u32>>| p.as_ref().map(|rx| *rx.borrow());
                if first {
                    // What it is told first counts as seen: a change is a later one.
                    let note = note(positions.as_mut().map(|rx| *rx.borrow_and_update()));
                    let phase = Phase::Waiting { work, positions, keep_alive, shape, first: false };
                    return Some((Ok(note), phase));
                }
                let out = tokio::select! {
                    biased;
                    answer = &mut work => match answer {
                        Ok(response) if response.status().is_success() => {
                            phase = Phase::Streaming(response.into_body().into_data_stream());
                            continue;
                        }
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = axum::body::to_bytes(response.into_body(), MAX_ERROR_BYTES).await;
                            let event = error_event(&error_data(shape, status, &body.unwrap_or_default()));
                            return Some((Ok(event), Phase::Done));
                        }
                        Err(error) => return Some((Ok(error_event(&shape.stream_error(&error))), Phase::Done)),
                    },
                    moved = changed(&mut positions) => note(moved),
                    _ = keep_alive.tick() => note(current(&positions)),
                };
                return Some((Ok(out), Phase::Waiting { work, positions, keep_alive, shape, first: false }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notes_are_sse_comments() {
        assert_eq!(&note(Some(2))[..], b": queued, position 2\n\n");
        assert_eq!(&note(None)[..], b": starting\n\n");
        // An SSE parser sees no frame in them.
        let mut parser = sse_parse::SseParser::new();
        assert!(parser.push(&note(Some(1))).is_empty());
        assert!(parser.push(&note(None)).is_empty());
    }

    #[test]
    fn an_error_answer_becomes_the_error_event_of_its_shape() {
        let provider = json!({"error": {"message": "bad model", "type": "invalid_request_error"}});
        let body = provider.to_string();
        assert_eq!(error_data(ErrorShape::OpenAi, 400, body.as_bytes()), provider);
        let anthropic = json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}});
        let body = anthropic.to_string();
        assert_eq!(error_data(ErrorShape::Anthropic, 529, body.as_bytes()), anthropic);
        let made = error_data(ErrorShape::OpenAi, 502, b"<html>bad gateway</html>");
        assert!(made["error"]["message"].as_str().is_some_and(|m| m.contains("HTTP 502")), "{made}");
        let made = error_data(ErrorShape::Anthropic, 500, b"oops");
        assert_eq!(made["type"], "error", "{made}");
    }
}
