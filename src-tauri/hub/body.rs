//! JSON bodies for the classic and `/v1` surfaces. The body is read up to the surface's limit
//! (axum's `DefaultBodyLimit` stops reading past it, nothing larger is buffered) and parsed as a
//! JSON value; every failure becomes a [`HubError`] that the surface renders in its own shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use std::time::Duration;

use axum::http::{header, StatusCode};
use serde_json::Value;

use super::error::{ApiError, ClassicError, HubError};

/// How long a body may take to arrive once its headers have: a client that declares a body and
/// then trickles it (or never sends it) is not allowed to hold a connection and a task forever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and parses a JSON body. An empty body is `None`. A declared `Content-Length` over the
/// limit is refused before a byte is read; a body without one is refused as soon as it passes the
/// limit.
pub async fn read_json<S: Send + Sync>(req: Request, state: &S, limit: usize) -> Result<Option<Value>, HubError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if limit > 0 && declared.is_some_and(|len| len > limit as u64) {
        return Err(HubError::PayloadTooLarge { limit });
    }
    let json_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json_type);
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state))
        .await
        .map_err(|_| HubError::invalid("The request body took too long to arrive.", "Send the whole body at once."))?;
    let bytes = read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HubError::PayloadTooLarge { limit }
        } else {
            HubError::InvalidJson { cause: rejection.body_text() }
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // A body that does not say it is JSON could be a browser's "simple request" (text/plain, a
    // form), which skips the CORS preflight: refused.
    if !json_type {
        return Err(HubError::UnsupportedMediaType);
    }
    super::unique_keys::check(&bytes).map_err(|cause| HubError::InvalidJson { cause })?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| HubError::InvalidJson { cause: e.to_string() })
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
