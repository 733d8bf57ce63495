//! `/rooms/:code/v1/*`: the room as one OpenAI endpoint (and one Anthropic Messages endpoint).
//! The route table, the room key, and the error shape of each path; what each endpoint does is
//! in [`super::op`] (the table), [`super::proxy`] (routing and sending) and [`super::relay`]
//! (answers), the models listing in [`super::models`], stored responses in [`super::stored`].

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::hub::error::{HubError, OpenAiError};
use crate::hub::routes::v1::bearer;
use crate::hub::routes::{room_code, ClientAddr, Params};
use crate::hub::Hub;

use super::op::{ErrorShape, Op};
use super::{models, proxy, stored};

type P<T> = Params<T, OpenAiError>;

pub fn router() -> Router<Hub> {
    let mut router = Router::new()
        .route("/rooms/{code}/v1/models", get(models::list))
        // Model names may hold slashes (`hf.co/org/model:Q4_K_M`).
        .route("/rooms/{code}/v1/models/{*id}", get(models::retrieve));
    for op in Op::ALL {
        let path = format!("/rooms/{{code}}/v1{}", op.spec().client_path);
        let handler = move |State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request| async move {
            proxy::infer(hub, code, op, req).await
        };
        router = router.route(&path, post(handler));
    }
    router
        .route("/rooms/{code}/v1/responses/{id}", get(stored::get_response).delete(stored::delete_response))
        .route("/rooms/{code}/v1/responses/{id}/cancel", post(stored::cancel_response))
        .route("/rooms/{code}/v1/responses/{id}/input_items", get(stored::input_items))
}

/// `error` in the shape of the inference path it answers: Anthropic's under `/v1/messages`,
/// OpenAI's elsewhere (the route table's fallbacks and the browser guard use it too).
pub fn error_response(path: &str, error: HubError) -> Response {
    ErrorShape::of_path(path).render(error)
}

/// The room key a client sent: `Authorization: Bearer <key>` (OpenAI clients), or `x-api-key`
/// (Anthropic clients).
fn room_key_of(headers: &axum::http::HeaderMap) -> Option<String> {
    bearer(headers).map(str::to_string).or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    })
}

/// A protected room protects its models too: every call needs the room password as its API key
/// (`Authorization: Bearer`, or `x-api-key`). Checked before the body is read; rooms without a
/// password (and codes that name no room, which the handler answers) pass through.
pub async fn room_key(
    State(hub): State<Hub>,
    ClientAddr(client): ClientAddr,
    params: std::result::Result<
        axum::extract::Path<std::collections::HashMap<String, String>>,
        axum::extract::rejection::PathRejection,
    >,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let code = params.ok().and_then(|p| p.0.get("code").and_then(|c| room_code(c).ok()));
    let Some(code) = code else { return next.run(req).await };
    match hub.registry().password_hash(&code) {
        Ok(Some(_)) => {}
        _ => return next.run(req).await,
    }
    let shape = ErrorShape::of_path(req.uri().path());
    let Some(key) = room_key_of(req.headers()) else {
        return shape.render(HubError::RoomKeyRequired);
    };
    match hub.check_password(&code, Some(key), client).await {
        Ok(()) => next.run(req).await,
        Err(HubError::InvalidPassword) => shape.render(HubError::RoomKeyRequired),
        Err(e) => shape.render(e),
    }
}

/// True for paths of this plane, so unknown ones get an OpenAI-shaped 404.
pub fn is_inference_path(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    parts.next() == Some("rooms") && parts.next().is_some() && parts.next() == Some("v1")
}
