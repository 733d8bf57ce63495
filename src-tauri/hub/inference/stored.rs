//! `/rooms/:code/v1/responses/:id` and its `cancel` and `input_items`: a stored response is
//! forwarded to the participant that made it, or answered from the hub's own store for the
//! responses it translated (see `responses_index`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::hub::error::{HubError, OpenAiError};
use crate::hub::routes::{room_code, Params};
use crate::hub::Hub;

use super::relay::{headers_for, MAX_ANSWER_BYTES};
use super::responses_index::Owner;
use super::upstream::{self, Call};

type Result<T> = std::result::Result<T, OpenAiError>;
type P<T> = Params<T, OpenAiError>;

fn call_timeouts(hub: &Hub) -> (std::time::Duration, std::time::Duration) {
    (hub.config().first_byte_timeout, hub.config().idle_timeout)
}

/// Forwards a call about a stored response to the participant that made it, or answers it from the
/// hub's own store for responses the hub translated.
async fn response_call(
    hub: Hub,
    code: String,
    id: String,
    method: reqwest::Method,
    suffix: &str,
    operation: &'static str,
) -> Result<Response> {
    let code = room_code(&code)?;
    hub.registry().room(&code)?;
    let owner = hub.responses().get(&id).filter(|o| o.room_code() == code).ok_or_else(|| HubError::InvalidRequest {
        message: format!("No response with id '{}' in this room.", id.escape_debug()),
        hint: None,
    });
    let owner = match owner {
        Ok(o) => o,
        Err(_) => return Err(not_found_response(&id)),
    };
    match owner {
        Owner::Local { response, input_items, .. } => {
            let body = match (method.as_str(), suffix) {
                ("DELETE", "") => {
                    hub.responses().forget(&id);
                    Bytes::from(json!({"id": id, "object": "response.deleted", "deleted": true}).to_string())
                }
                (_, "/input_items") => input_items,
                _ => response,
            };
            let mut response = body.into_response();
            headers_for(&mut response, Some("application/json"), false);
            Ok(response)
        }
        Owner::Participant { participant_id, .. } => {
            let p = hub.registry().participant(&code, &participant_id).map_err(|_| {
                HubError::ParticipantUnavailable { id: participant_id.clone(), reason: "it has left the room".into() }
            })?;
            let call = Call {
                operation,
                method: method.clone(),
                path: format!("/v1/responses/{id}{suffix}"),
                body: (method == reqwest::Method::POST).then(|| Bytes::from_static(b"{}")),
                stream: false,
            };
            let (first_byte, idle) = call_timeouts(&hub);
            let mut up = upstream::open(&hub, &code, &p, call, first_byte, idle).await.map_err(|f| f.error)?;
            let body = up.collect(MAX_ANSWER_BYTES).await?;
            if method == reqwest::Method::DELETE && (200..300).contains(&up.status) {
                hub.responses().forget(&id);
            }
            let status = StatusCode::from_u16(up.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, body).into_response();
            headers_for(&mut response, up.content_type(), false);
            Ok(response)
        }
    }
}

/// A response id the hub may keep and call back with: 1 to 200 letters, digits, `_`, `-`, `.`, `:`
/// (what OpenAI-compatible servers hand out, like `resp_67ccd2bed1ec8190`).
pub(super) fn is_plain_id(id: &str) -> bool {
    (1..=200).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        && id != "."
        && id != ".."
}

fn not_found_response(id: &str) -> OpenAiError {
    OpenAiError(HubError::InvalidRequest {
        message: format!("No response with id '{}' was made in this room.", id.chars().take(100).collect::<String>()),
        hint: None,
    })
}

pub(super) async fn get_response(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
) -> Result<Response> {
    response_call(hub, code, id, reqwest::Method::GET, "", "responses.retrieve").await
}

pub(super) async fn delete_response(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
) -> Result<Response> {
    response_call(hub, code, id, reqwest::Method::DELETE, "", "responses.delete").await
}

pub(super) async fn cancel_response(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
) -> Result<Response> {
    response_call(hub, code, id, reqwest::Method::POST, "/cancel", "responses.cancel").await
}

pub(super) async fn input_items(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
) -> Result<Response> {
    response_call(hub, code, id, reqwest::Method::GET, "/input_items", "responses.input_items").await
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_response_ids_are_kept() {
        for ok in ["resp_67ccd2bed1ec8190", "chatcmpl-123", "a.b:c"] {
            assert!(super::is_plain_id(ok), "{ok}");
        }
        for bad in ["", "..", "../../containers/create", "x?y=1", "x#y", "a/b", "é", &"x".repeat(201)] {
            assert!(!super::is_plain_id(bad), "{bad}");
        }
    }
}
