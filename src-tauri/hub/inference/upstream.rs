//! Calling a participant's provider: through its tunnel, or over HTTP for a `direct` participant.
//! Either way the caller gets an [`Upstream`]: the status and headers, then the body chunk by chunk,
//! each step bounded by a timeout so a hung provider never holds a request (or its slot) forever.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::hub::egress;
use crate::hub::error::HubError;
use crate::hub::registry::ParticipantRecord;
use crate::hub::tunnel::{TunnelEvent, TunnelReply};
use crate::hub::Hub;
use crate::protocol::ConnectionKind;

/// One call to make on a participant's provider.
pub struct Call {
    /// What it is for, as the tunnel's `operation` says (`chat.completions`, `responses.create`...).
    pub operation: &'static str,
    pub method: reqwest::Method,
    /// Path on the provider, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The JSON body as text, sent as it is (the hub never holds a request as a value tree).
    pub body: Option<Bytes>,
    pub stream: bool,
}

/// Why a call could not start, and whether another participant may be tried.
pub struct OpenFailure {
    pub error: HubError,
    /// Nothing reached the client and the failure says nothing about the request itself (tunnel
    /// gone, connection refused): another participant may serve it.
    pub retryable: bool,
}

enum Body {
    Tunnel(TunnelReply),
    Direct(BoxStream<'static, reqwest::Result<Bytes>>),
    /// A body the hub already read (or wrote in its place), handed out once.
    Ready(Option<Bytes>),
}

/// An answer that has started: status and headers known, body to come.
pub struct Upstream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: Body,
    idle: Duration,
}

impl Upstream {
    /// The next piece of the body; `Ok(None)` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HubError> {
        let idle = self.idle;
        let timed_out = || HubError::UpstreamTimeout { stage: "stream".into() };
        match &mut self.body {
            Body::Tunnel(reply) => loop {
                match tokio::time::timeout(idle, reply.next()).await.map_err(|_| timed_out())? {
                    Some(TunnelEvent::Chunk(b)) => return Ok(Some(b)),
                    Some(TunnelEvent::End) => return Ok(None),
                    Some(TunnelEvent::Error { stage, message }) => {
                        return Err(HubError::Upstream {
                            stage: if stage.is_empty() { "stream".into() } else { stage },
                            message,
                        })
                    }
                    Some(TunnelEvent::Start { .. }) => continue,
                    None => {
                        return Err(HubError::Upstream { stage: "tunnel".into(), message: "the tunnel closed".into() })
                    }
                }
            },
            Body::Ready(bytes) => Ok(bytes.take()),
            Body::Direct(stream) => match tokio::time::timeout(idle, stream.next()).await.map_err(|_| timed_out())? {
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => {
                    tracing::debug!("a direct answer broke off: {}", plain(&e));
                    Err(HubError::Upstream {
                        stage: "stream".into(),
                        message: "the model server's answer broke off".into(),
                    })
                }
                None => Ok(None),
            },
        }
    }

    /// The whole body, up to `limit` bytes.
    pub async fn collect(&mut self, limit: usize) -> Result<Bytes, HubError> {
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.next_chunk().await? {
            if out.len() + chunk.len() > limit {
                return Err(HubError::Upstream {
                    stage: "stream".into(),
                    message: format!("the answer is larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.as_str())
    }

    /// The answer's content type is `text/event-stream`.
    pub fn is_event_stream(&self) -> bool {
        self.content_type().is_some_and(|ct| essence(ct).eq_ignore_ascii_case("text/event-stream"))
    }

    /// The answer's content type is `application/x-ndjson` (an Ollama stream).
    pub fn is_ndjson(&self) -> bool {
        self.content_type().is_some_and(|ct| essence(ct).eq_ignore_ascii_case("application/x-ndjson"))
    }

    /// Makes `body` the rest of the answer, with `content_type` (a body read to look at it, given
    /// back; or the stream written in place of a JSON answer).
    pub fn replay(&mut self, body: Bytes, content_type: &str) {
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type") && !k.eq_ignore_ascii_case("content-length"));
        self.headers.push(("content-type".into(), content_type.into()));
        self.body = Body::Ready(Some(body));
    }
}

/// A reqwest error as a sentence, without the URL (it may carry credentials).
fn plain(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Starts `call` on participant `p` of room `code`, waiting at most `first_byte` for the answer to
/// start; the body then flows with at most `idle` between pieces.
pub async fn open(
    hub: &Hub,
    code: &str,
    p: &ParticipantRecord,
    call: Call,
    first_byte: Duration,
    idle: Duration,
) -> Result<Upstream, OpenFailure> {
    let up = open_raw(hub, code, p, call, first_byte, idle).await?;
    vet(up, p, false)
}

/// Starts `call` as [`open`] does, without looking at what answered.
pub async fn open_raw(
    hub: &Hub,
    code: &str,
    p: &ParticipantRecord,
    call: Call,
    first_byte: Duration,
    idle: Duration,
) -> Result<Upstream, OpenFailure> {
    match p.public.connection.kind {
        ConnectionKind::Tunnel => open_tunnel(hub, code, p, call, first_byte, idle).await,
        ConnectionKind::Direct => open_direct(hub, p, call, first_byte, idle).await,
    }
}

/// Only an OpenAI-shaped answer is relayed: anything else served on the hub's origin (HTML, a
/// script) would run there. `learning`: the caller learns from a 404, 405 or 501 that the endpoint
/// is missing, so such an answer is kept, its body replaced by an OpenAI-shaped error saying so
/// (a Go server's `404 page not found` is text, not JSON). A direct participant's non-JSON answer
/// is kept that way only when the caller can still translate the request (its failure then is
/// worded as any other), so nothing tells apart what listens on a direct endpoint.
pub fn vet(mut up: Upstream, p: &ParticipantRecord, learning: bool) -> Result<Upstream, OpenFailure> {
    if !up.content_type().is_some_and(relayable) {
        if learning && matches!(up.status, 404 | 405 | 501) {
            let body = serde_json::json!({"error": {
                "message": "this endpoint is missing on the provider",
                "type": "not_found_error",
                "code": "endpoint_missing",
            }});
            up.replay(Bytes::from(body.to_string()), "application/json");
            return Ok(up);
        }
        // For a direct participant, in the same words as a failure to connect: what answered on
        // its address is not told apart.
        let stage = if p.public.connection.kind == ConnectionKind::Direct { "connect" } else { "decode" };
        return Err(OpenFailure {
            error: HubError::Upstream { stage: stage.into(), message: egress::NOT_OPENAI.into() },
            retryable: true,
        });
    }
    Ok(up)
}

fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// True for the content types the hub relays: JSON and server-sent events.
pub fn relayable(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("text/event-stream")
}

async fn open_tunnel(
    hub: &Hub,
    code: &str,
    p: &ParticipantRecord,
    call: Call,
    first_byte: Duration,
    idle: Duration,
) -> Result<Upstream, OpenFailure> {
    let id = &p.public.id;
    let unavailable = |reason: &str| OpenFailure {
        error: HubError::ParticipantUnavailable { id: id.clone(), reason: reason.into() },
        retryable: true,
    };
    let conn = hub.tunnels().get(code, id).ok_or_else(|| unavailable("its tunnel is not connected"))?;
    let mut headers = BTreeMap::new();
    if call.body.is_some() {
        headers.insert("content-type".to_string(), "application/json".to_string());
    }
    headers.insert("accept".to_string(), if call.stream { "text/event-stream" } else { "application/json" }.into());
    // A `tunnel.request` frame, written with the body's text in place.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RequestFrame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        request_id: &'a str,
        operation: &'a str,
        method: &'a str,
        path: &'a str,
        headers: &'a BTreeMap<String, String>,
        stream: bool,
    }
    let request_id = format!("tr_{}", uuid::Uuid::new_v4().simple());
    let frame = RequestFrame {
        kind: "tunnel.request",
        request_id: &request_id,
        operation: call.operation,
        method: call.method.as_str(),
        path: &call.path,
        headers: &headers,
        stream: call.stream,
    };
    let mut text = serde_json::to_vec(&frame).map_err(|e| unavailable(&e.to_string()))?;
    if let Some(body) = &call.body {
        // The frame's fields, then the body's JSON text in place as `body`.
        text.pop();
        text.reserve(body.len() + 9);
        text.extend_from_slice(b",\"body\":");
        text.extend_from_slice(body);
        text.push(b'}');
    }
    drop(call);
    let text = String::from_utf8(text).map_err(|_| unavailable("the request body is not UTF-8"))?;
    let mut reply = conn.send_text(request_id, text).await.map_err(|reason| unavailable(&reason))?;
    let start = tokio::time::timeout(first_byte, reply.next()).await.map_err(|_| OpenFailure {
        error: HubError::UpstreamTimeout { stage: "first_byte".into() },
        retryable: false,
    })?;
    match start {
        Some(TunnelEvent::Start { status, headers }) => {
            Ok(Upstream { status, headers, body: Body::Tunnel(reply), idle })
        }
        Some(TunnelEvent::Error { stage, message }) => Err(OpenFailure {
            error: HubError::Upstream { stage: if stage.is_empty() { "connect".into() } else { stage }, message },
            retryable: true,
        }),
        Some(TunnelEvent::Chunk(_)) | Some(TunnelEvent::End) => Err(OpenFailure {
            error: HubError::Upstream {
                stage: "protocol".into(),
                message: "the participant answered without a start".into(),
            },
            retryable: true,
        }),
        None => Err(unavailable("its tunnel closed")),
    }
}

async fn open_direct(
    hub: &Hub,
    p: &ParticipantRecord,
    call: Call,
    first_byte: Duration,
    idle: Duration,
) -> Result<Upstream, OpenFailure> {
    // Nothing about the target (open, closed, not HTTP, refused by policy) is told apart.
    let not_openai = |retryable: bool| OpenFailure {
        error: HubError::Upstream { stage: "connect".into(), message: egress::NOT_OPENAI.into() },
        retryable,
    };
    // Parsed when the participant registered; parsed here only for a record made otherwise.
    let parsed;
    let base = match &p.base_url {
        Some(base) => base,
        None => {
            parsed = egress::base_url(&p.public.endpoint).map_err(|_| not_openai(true))?;
            &parsed
        }
    };
    if let Err(why) = egress::check_literal(base, p.reach) {
        tracing::warn!(participant = %p.public.id, "not calling a direct endpoint: {why}");
        return Err(not_openai(true));
    }
    let url = egress::join(base, &call.path);
    let mut request = hub.direct_client(p.reach).request(call.method, url);
    if let Some(body) = call.body {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    }
    if call.stream {
        request = request.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let response = match tokio::time::timeout(first_byte, request.send()).await {
        Err(_) => {
            return Err(OpenFailure {
                error: HubError::UpstreamTimeout { stage: "first_byte".into() },
                retryable: false,
            })
        }
        Ok(Err(e)) => {
            tracing::debug!(participant = %p.public.id, "direct call failed: {}", plain(&e));
            return Err(not_openai(e.is_connect() || e.is_request()));
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    Ok(Upstream { status, headers, body: Body::Direct(response.bytes_stream().boxed()), idle })
}
