//! The route table and its layers, set up in one place. Handlers stay thin: they extract, call the
//! registry, and render; the shape of every answer belongs to its surface module.

pub mod classic;
pub mod v1;

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::protocol::{is_participant_id, normalize_room_code};

use super::body::BodyLimit;
use super::error::{ApiError, ClassicError, HubError};
use super::Hub;

pub fn router(hub: Hub) -> Router {
    let limit = hub.config().management_body_limit;
    let classic = Router::new()
        .route("/rooms", get(classic::list).post(classic::create))
        .route("/rooms/{code}/join", post(classic::join))
        .route("/rooms/{code}/health", post(classic::health))
        .route("/rooms/{code}/leave/{id}", delete(classic::leave))
        .route("/rooms/{code}/participants", get(classic::participants))
        .route("/rooms/{code}/events", get(classic::events));
    let management = Router::new()
        .route("/v1/health", get(v1::health))
        .route("/v1/rooms", get(v1::list).post(v1::create))
        .route("/v1/rooms/{code}", get(v1::room).delete(v1::delete_room))
        .route("/v1/rooms/{code}/participants", get(v1::participants))
        .route("/v1/rooms/{code}/participants/{id}", get(v1::participant).put(v1::upsert).delete(v1::leave))
        .route("/v1/rooms/{code}/participants/{id}/heartbeat", post(v1::heartbeat))
        .route("/v1/rooms/{code}/participants/{id}/tunnel", get(v1::tunnel))
        .route("/v1/rooms/{code}/events", get(v1::events));
    let body_limit = tower::ServiceBuilder::new()
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)));
    let inference = super::inference::routes::router()
        .route_layer(middleware::from_fn_with_state(hub.clone(), super::inference::routes::room_key))
        .route_layer(middleware::from_fn(super::stats::caller_scope))
        .layer(axum::extract::DefaultBodyLimit::max(hub.config().inference_body_limit));
    Router::new()
        .merge(classic.layer(body_limit.clone()))
        .merge(management.layer(body_limit))
        .merge(inference)
        .merge(super::inference::ollama_routes::router(&hub))
        .merge(super::invite::router())
        .merge(super::metrics::router())
        .merge(super::ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(hub.clone())
        .layer(axum::Extension(hub.body_budget().clone()))
        .layer(super::browser::cors(&hub))
        .layer(middleware::from_fn_with_state(hub.clone(), super::browser::middleware))
        .layer(middleware::from_fn(super::request_id::middleware))
}

fn is_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    let error = HubError::RouteNotFound { path: path.chars().take(200).collect() };
    if super::inference::routes::is_inference_path(path) {
        return super::inference::routes::error_response(path, error);
    }
    if is_v1(path) {
        ApiError(error).into_response()
    } else {
        ClassicError(error).into_response()
    }
}

async fn method_not_allowed(req: Request) -> Response {
    let error = HubError::MethodNotAllowed { method: req.method().to_string() };
    if super::inference::routes::is_inference_path(req.uri().path()) {
        return super::inference::routes::error_response(req.uri().path(), error);
    }
    if is_v1(req.uri().path()) {
        ApiError(error).into_response()
    } else {
        ClassicError(error).into_response()
    }
}

/// Path parameters whose rejection (bad percent-encoding, say) is rendered by the surface `R`.
pub struct Params<T, R>(pub T, PhantomData<R>);

impl<S, T, R> FromRequestParts<S> for Params<T, R>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
    R: From<HubError> + IntoResponse,
{
    type Rejection = R;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Params(t, PhantomData)),
            Err(_) => Err(R::from(HubError::invalid(
                "The request path is malformed.",
                "Use a 6-character room code and a plain participant id.",
            ))),
        }
    }
}

/// The client's address, when the hub is served with connect info (it always is by
/// [`Hub::serve`]); `None` otherwise. Never rejects.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// A room code from a path: upper-cased; anything that cannot be a code is simply not found (and
/// is not echoed back).
pub fn room_code(raw: &str) -> Result<String, HubError> {
    normalize_room_code(raw).ok_or(HubError::RoomNotFound { code: String::new() })
}

/// A participant id from a path, for lookups: an impossible id is not found.
pub fn existing_id(raw: &str) -> Result<&str, HubError> {
    if is_participant_id(raw) {
        Ok(raw)
    } else {
        Err(HubError::ParticipantNotFound { id: "?".into() })
    }
}
