//! JSON bodies for the classic and `/v1` surfaces. The body is read up to the surface's limit
//! (axum's `DefaultBodyLimit` stops reading past it, nothing larger is buffered) and parsed as a
//! JSON value; every failure becomes a [`HubError`] that the surface renders in its own shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::Value;

use super::error::{ApiError, ClassicError, HubError};

/// Reads and parses a JSON body. An empty body is `None`.
pub async fn read_json<S: Send + Sync>(req: Request, state: &S, limit: usize) -> Result<Option<Value>, HubError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HubError::PayloadTooLarge { limit }
        } else {
            HubError::InvalidJson { cause: rejection.body_text() }
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| HubError::InvalidJson { cause: e.to_string() })
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
