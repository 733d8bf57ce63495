//! JSON bodies for the classic and `/v1` surfaces. The body is read up to the surface's limit
//! (axum's `DefaultBodyLimit` stops reading past it, nothing larger is buffered) and parsed as a
//! JSON value; every failure becomes a [`HubError`] that the surface renders in its own shape.

use axum::extract::{FromRequest, Request};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::time::Duration;

use axum::http::header;
use serde_json::Value;

use super::error::{ApiError, ClassicError, HubError};
use super::memory::{BodyBudget, BodyHold};
use super::unique_keys::Shape;

/// How long a body may take to arrive once its headers have: a client that declares a body and
/// then trickles it (or never sends it) is not allowed to hold a connection and a task forever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and parses a JSON body. An empty body is `None`. A declared `Content-Length` over the
/// limit is refused before a byte is read; a body without one is refused as soon as it passes the
/// limit. The memory it takes is held against the hub's body budget only while it is read and
/// parsed; see [`read_json_held`] to keep holding it.
pub async fn read_json<S: Send + Sync>(req: Request, state: &S, limit: usize) -> Result<Option<Value>, HubError> {
    read_json_held(req, state, limit).await.map(|(value, _hold)| value)
}

/// Like [`read_json`], and returns the hold on the body budget (see `hub::memory`): what the body
/// took to read and what its parsed tree takes, given back when the hold drops.
pub async fn read_json_held<S: Send + Sync>(
    req: Request,
    state: &S,
    limit: usize,
) -> Result<(Option<Value>, BodyHold), HubError> {
    let (bytes, shape, mut hold) = read_body_held(req, state, limit).await?;
    let Some(bytes) = bytes else { return Ok((None, hold)) };
    // The tree is built while the text is still held: both count.
    hold.grow_to(bytes.len().saturating_add(shape.parsed_bytes()))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| HubError::InvalidJson { cause: e.to_string() })?;
    Ok((Some(value), hold))
}

/// Reads a JSON body without parsing it: its bytes (`None` when empty), checked to be JSON with no
/// repeated key, what it holds ([`Shape`]), and the hold on the body budget for the bytes read.
/// For callers that keep the body as text (the inference plane) rather than as a value tree.
pub async fn read_body_held<S: Send + Sync>(
    req: Request,
    _state: &S,
    limit: usize,
) -> Result<(Option<Bytes>, Shape, BodyHold), HubError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if limit > 0 && declared.is_some_and(|len| len > limit as u64) {
        return Err(HubError::PayloadTooLarge { limit });
    }
    let json_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json_type);
    let client = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let mut hold = match req.extensions().get::<BodyBudget>() {
        Some(budget) => budget.hold(client),
        None => BodyHold::none(),
    };
    // What the client says it will send is held before a byte is read.
    if let Some(len) = declared {
        hold.grow_to(usize::try_from(len).unwrap_or(usize::MAX))?;
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, async {
        let mut stream = req.into_body().into_data_stream();
        // The declared length, reserved at once: the body is kept as it came (the inference plane
        // keeps this buffer), so it should not carry a doubling's spare room.
        let cap = if limit > 0 { limit } else { 1 << 20 };
        let reserve = declared.map_or(0, |len| usize::try_from(len).unwrap_or(0).min(cap));
        let mut bytes = BytesMut::with_capacity(reserve);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| HubError::InvalidJson { cause: e.to_string() })?;
            if limit > 0 && bytes.len() + chunk.len() > limit {
                return Err(HubError::PayloadTooLarge { limit });
            }
            hold.grow_to(bytes.len() + chunk.len())?;
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    })
    .await
    .map_err(|_| HubError::invalid("The request body took too long to arrive.", "Send the whole body at once."))?;
    let bytes = read?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, Shape::default(), hold));
    }
    // A body that does not say it is JSON could be a browser's "simple request" (text/plain, a
    // form), which skips the CORS preflight: refused.
    if !json_type {
        return Err(HubError::UnsupportedMediaType);
    }
    let shape = super::unique_keys::measure(&bytes).map_err(|cause| HubError::InvalidJson { cause })?;
    Ok((Some(bytes), shape, hold))
}

/// `application/json`, `application/*+json` or `text/json`, parameters aside.
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The management body limit, as the router configured it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A required JSON body on the classic surface.
pub struct ClassicJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ClassicJson {
    type Rejection = ClassicError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        match read_json(req, state, limit).await? {
            Some(v) => Ok(ClassicJson(v)),
            None => Err(HubError::InvalidJson { cause: "empty body".into() }.into()),
        }
    }
}

/// A required JSON body on the `/v1` surface.
pub struct ApiJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ApiJson {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        match read_json(req, state, limit).await? {
            Some(v) => Ok(ApiJson(v)),
            None => Err(HubError::InvalidJson { cause: "empty body".into() }.into()),
        }
    }
}

/// An optional JSON body on the `/v1` surface (heartbeats may send one or not).
pub struct OptionalApiJson(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalApiJson {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        Ok(OptionalApiJson(read_json(req, state, limit).await?))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
            "text/json",
        ] {
            assert!(super::is_json_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            "application/jsonx",
        ] {
            assert!(!super::is_json_type(bad), "{bad}");
        }
    }
}
