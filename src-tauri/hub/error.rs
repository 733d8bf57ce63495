//! The hub's one error type and its three renderings. Domain code returns [`HubError`]; a handler
//! wraps it in the shape of its surface: [`ClassicError`] (`{"error": "message"}`, the seed's exact
//! messages), [`ApiError`] (the `/v1` envelope with code, message, hint and request id) or
//! [`OpenAiError`] (`{"error": {message, type, code}}`). One match decides each status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::protocol::{ApiErrorBody, ErrorEnvelope, Meta};

use super::request_id;

#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("room {code} was not found on this hub")]
    RoomNotFound { code: String },
    #[error("participant {id} was not found in this room")]
    ParticipantNotFound { id: String },
    #[error("invalid password")]
    InvalidPassword,
    #[error("the request body is not valid JSON: {cause}")]
    InvalidJson { cause: String },
    #[error("missing required fields: {fields}")]
    MissingFields { fields: &'static str, hint: &'static str },
    #[error("{message}")]
    InvalidRequest { message: String, hint: Option<String> },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body would take {bytes} bytes to hold, over the {budget} this hub allows")]
    BodyTooLarge { bytes: usize, budget: usize },
    #[error("this call needs the room's host token")]
    HostTokenRequired,
    #[error("the host token does not match this room")]
    HostTokenInvalid,
    #[error("this call needs the participant's token")]
    ParticipantTokenRequired,
    #[error("the participant token does not match")]
    ParticipantTokenInvalid,
    #[error("participant {id} is live on another connection")]
    ParticipantConflict { id: String },
    #[error("this room needs its key")]
    RoomKeyRequired,
    #[error("a protected room's participants and events need its password")]
    RoomPasswordRequired,
    #[error("no route for {path}")]
    RouteNotFound { path: String },
    #[error("{method} is not allowed here")]
    MethodNotAllowed { method: String },
    #[error("the hub is at its limit: {what}")]
    Capacity { what: String },
    #[error("too many attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("the tunnel token is wrong, used or expired")]
    TunnelTokenInvalid,
    #[error("no available participant for the requested model")]
    NoParticipant,
    /// The participants that could serve the request have no such endpoint (`participant`: the
    /// one the request named).
    #[error("no participant serves {path}")]
    NotServed { path: String, participant: Option<String> },
    #[error("participant {id} is busy")]
    ParticipantBusy { id: String },
    #[error("participant {id} is unavailable: {reason}")]
    ParticipantUnavailable { id: String, reason: String },
    /// Registered and alive but not routable (additive status `paused`); `reason` is its words.
    #[error("participant {id} is paused: {reason}")]
    ParticipantPaused { id: String, reason: String },
    #[error("the participant's provider failed ({stage}): {message}")]
    Upstream { stage: String, message: String },
    #[error("the participant's provider did not answer in time ({stage})")]
    UpstreamTimeout { stage: String },
    #[error("the hub does not answer to host name {host}")]
    HostNotAllowed { host: String },
    #[error("requests from web pages on {origin} are refused")]
    OriginNotAllowed { origin: String },
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// `/metrics` from another machine without a room's host token (`credential`: one was sent,
    /// and it is no room's).
    #[error("the hub's metrics are not served to this client")]
    MetricsNotAllowed { credential: bool },
    #[error("internal error: {0}")]
    Internal(String),
}

impl HubError {
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        HubError::InvalidRequest { message: message.into(), hint: Some(hint.into()) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HubError::RoomNotFound { .. }
            | HubError::ParticipantNotFound { .. }
            | HubError::RouteNotFound { .. }
            | HubError::NoParticipant
            | HubError::NotServed { .. } => StatusCode::NOT_FOUND,
            HubError::ParticipantBusy { .. } => StatusCode::CONFLICT,
            HubError::ParticipantUnavailable { .. } | HubError::ParticipantPaused { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HubError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            HubError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            HubError::InvalidPassword
            | HubError::HostTokenRequired
            | HubError::ParticipantTokenRequired
            | HubError::RoomKeyRequired
            | HubError::RoomPasswordRequired
            | HubError::MetricsNotAllowed { credential: false } => StatusCode::UNAUTHORIZED,
            HubError::HostTokenInvalid
            | HubError::ParticipantTokenInvalid
            | HubError::HostNotAllowed { .. }
            | HubError::OriginNotAllowed { .. }
            | HubError::MetricsNotAllowed { credential: true } => StatusCode::FORBIDDEN,
            HubError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HubError::ParticipantConflict { .. } => StatusCode::CONFLICT,
            HubError::TunnelTokenInvalid => StatusCode::UNAUTHORIZED,
            HubError::InvalidJson { .. } | HubError::MissingFields { .. } | HubError::InvalidRequest { .. } => {
                StatusCode::BAD_REQUEST
            }
            HubError::PayloadTooLarge { .. } | HubError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HubError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HubError::Capacity { .. } | HubError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            HubError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            HubError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The management plane's error code (PROTOCOL.md's list, plus additive codes for the cases
    /// it does not name).
    pub fn code(&self) -> &'static str {
        match self {
            HubError::RoomNotFound { .. } => "ROOM_NOT_FOUND",
            HubError::ParticipantNotFound { .. } => "PARTICIPANT_NOT_FOUND",
            HubError::InvalidPassword => "INVALID_PASSWORD",
            HubError::InvalidJson { .. } | HubError::MissingFields { .. } | HubError::InvalidRequest { .. } => {
                "INVALID_REQUEST"
            }
            HubError::PayloadTooLarge { .. } | HubError::BodyTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            HubError::HostTokenRequired => "HOST_TOKEN_REQUIRED",
            HubError::HostTokenInvalid => "INVALID_HOST_TOKEN",
            HubError::ParticipantTokenRequired => "PARTICIPANT_TOKEN_REQUIRED",
            HubError::ParticipantTokenInvalid => "INVALID_PARTICIPANT_TOKEN",
            HubError::ParticipantConflict { .. } => "PARTICIPANT_CONFLICT",
            HubError::RoomKeyRequired => "INVALID_API_KEY",
            HubError::RoomPasswordRequired => "ROOM_PASSWORD_REQUIRED",
            HubError::RouteNotFound { .. } => "NOT_FOUND",
            HubError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            HubError::Capacity { .. } => "CAPACITY_EXCEEDED",
            HubError::RateLimited { .. } => "RATE_LIMITED",
            HubError::ShuttingDown => "SHUTTING_DOWN",
            HubError::TunnelTokenInvalid => "INVALID_TUNNEL_TOKEN",
            HubError::NoParticipant => "MODEL_NOT_FOUND",
            HubError::NotServed { .. } => "ENDPOINT_NOT_SERVED",
            HubError::ParticipantBusy { .. } => "PARTICIPANT_BUSY",
            HubError::ParticipantUnavailable { .. } => "PARTICIPANT_TUNNEL_NOT_CONNECTED",
            HubError::ParticipantPaused { .. } => "PARTICIPANT_PAUSED",
            HubError::Upstream { .. } => "UPSTREAM_ERROR",
            HubError::UpstreamTimeout { .. } => "UPSTREAM_TIMEOUT",
            HubError::HostNotAllowed { .. } => "HOST_NOT_ALLOWED",
            HubError::OriginNotAllowed { .. } => "ORIGIN_NOT_ALLOWED",
            HubError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            HubError::MetricsNotAllowed { .. } => "METRICS_NOT_ALLOWED",
            HubError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// A sentence for people, saying what went wrong (the `/v1` `message`).
    pub fn message(&self) -> String {
        match self {
            HubError::RoomNotFound { code } if code.is_empty() => "Room not found.".into(),
            HubError::RoomNotFound { code } => format!("Room {code} isn't on this hub."),
            HubError::ParticipantNotFound { id } => format!("Participant '{id}' isn't in this room."),
            HubError::InvalidPassword => "Wrong password for this room.".into(),
            HubError::InvalidJson { .. } => "Invalid JSON body.".into(),
            HubError::MissingFields { fields, .. } => format!("Missing required fields: {fields}."),
            HubError::InvalidRequest { message, .. } => message.clone(),
            HubError::PayloadTooLarge { limit } => format!("Request body too large (the limit is {limit} bytes)."),
            HubError::BodyTooLarge { bytes, budget } => format!(
                "Request body too large to hold: read, it would take about {} MiB of the {} MiB this hub keeps for one client's bodies.",
                bytes.div_ceil(1 << 20),
                budget / (1 << 20)
            ),
            HubError::HostTokenRequired => "Deleting a room needs its host token.".into(),
            HubError::HostTokenInvalid => "That host token does not match this room.".into(),
            HubError::ParticipantTokenRequired => "This call needs the participant's token.".into(),
            HubError::ParticipantTokenInvalid => "That token does not match this participant.".into(),
            HubError::ParticipantConflict { id } => {
                format!("Participant '{id}' is already registered in this room; only its owner can replace it.")
            }
            HubError::RoomKeyRequired => {
                "This room is password-protected: send the room password as the API key.".into()
            }
            HubError::RoomPasswordRequired => {
                "This room is password-protected: who is in it and what happens there need its password.".into()
            }
            HubError::RouteNotFound { path } => format!("No such endpoint: {path}."),
            HubError::MethodNotAllowed { method } => format!("Method {method} is not allowed on this endpoint."),
            HubError::Capacity { what } => format!("The hub is at its limit: {what}."),
            HubError::RateLimited { retry_after_secs } => {
                format!("Too many attempts; try again in {retry_after_secs} s.")
            }
            HubError::ShuttingDown => "The hub is shutting down.".into(),
            HubError::TunnelTokenInvalid => "The tunnel token is wrong, already used, or expired.".into(),
            HubError::NoParticipant => "No available participant for the requested model".into(),
            HubError::NotServed { path, participant: Some(id) } => {
                format!("Participant '{id}' does not serve {path}: its model server has no such endpoint.")
            }
            HubError::NotServed { path, participant: None } => {
                format!("No available participant in this room serves {path}: their model servers have no such endpoint.")
            }
            HubError::ParticipantBusy { id } => format!("Participant '{id}' is busy."),
            HubError::ParticipantUnavailable { id, reason } => format!("Participant '{id}' is unavailable: {reason}."),
            HubError::ParticipantPaused { id, reason } => format!("Participant '{id}' is paused: {reason}."),
            HubError::Upstream { stage, message } => {
                format!("The participant's model server failed ({stage}): {message}")
            }
            HubError::UpstreamTimeout { stage } => {
                format!("The participant's model server did not answer in time ({stage}).")
            }
            HubError::HostNotAllowed { host } => format!(
                "This hub does not answer to the host name '{host}' (a guard against DNS rebinding); \
                 if that is its name, start it with --allowed-host {host}."
            ),
            HubError::OriginNotAllowed { origin } => format!(
                "Requests from web pages on {origin} are refused (a guard against cross-site requests); \
                 to let that page in, start the hub with --cors {origin}."
            ),
            HubError::UnsupportedMediaType => "The body must be sent as JSON.".into(),
            HubError::MetricsNotAllowed { credential: false } => {
                "The hub's metrics are served to this machine only, or to a room's host.".into()
            }
            HubError::MetricsNotAllowed { credential: true } => "That token is no room's host token.".into(),
            HubError::Internal(_) => "Something went wrong inside the hub.".into(),
        }
    }

    /// What to do next, where there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            HubError::RoomNotFound { .. } => {
                Some("Check the code, or run 'gambi room list' to see the rooms on this hub.".into())
            }
            HubError::ParticipantNotFound { .. } => {
                Some("Check the participant id, or list the room's participants.".into())
            }
            HubError::InvalidPassword => Some("Ask the room's host for the password and try again.".into()),
            HubError::InvalidJson { .. } => Some("Send a JSON object with Content-Type: application/json.".into()),
            HubError::MissingFields { hint, .. } => Some((*hint).into()),
            HubError::InvalidRequest { hint, .. } => hint.clone(),
            HubError::PayloadTooLarge { .. } => Some("Send a smaller body.".into()),
            HubError::BodyTooLarge { .. } => {
                Some("Send a smaller body, or one with fewer values (long arrays of numbers cost the most).".into())
            }
            HubError::HostTokenRequired => Some(
                "Send 'Authorization: Bearer <hostToken>' with the token returned when the room was created.".into(),
            ),
            HubError::HostTokenInvalid => Some("Use the hostToken returned when the room was created.".into()),
            HubError::ParticipantTokenRequired | HubError::ParticipantTokenInvalid => Some(
                "Send 'Authorization: Bearer <participantToken>' with the token returned when the participant \
                 registered (the room's host token also removes a participant)."
                    .into(),
            ),
            HubError::ParticipantConflict { .. } => Some(
                "Send its participantToken as 'Authorization: Bearer', or pick another participant id (the hub \
                 frees an id when its participant leaves, or after it has been offline for --offline-retention)."
                    .into(),
            ),
            HubError::RoomKeyRequired => {
                Some("Send 'Authorization: Bearer <room password>' (the API key of an OpenAI client).".into())
            }
            HubError::RoomPasswordRequired => Some(
                "Send 'Authorization: Bearer <room password>' (or the room's host token); with the CLI, pass --password."
                    .into(),
            ),
            HubError::RouteNotFound { .. } => Some("See the README for the hub's endpoints.".into()),
            HubError::MethodNotAllowed { .. } => None,
            HubError::Capacity { .. } | HubError::ShuttingDown => Some("Try again later.".into()),
            HubError::RateLimited { .. } => Some("Wait before trying again.".into()),
            HubError::TunnelTokenInvalid => Some(
                "Register again (PUT the participant) to get a fresh token; each token opens one tunnel within 60 s."
                    .into(),
            ),
            HubError::NoParticipant => {
                Some("Use model '*' for any participant, 'model:<name>', or a participant id from /models.".into())
            }
            HubError::NotServed { .. } => Some(
                "Use model '*' to let the hub pick a participant that serves it, or ask for a model server that \
                 does (llama-server serves embeddings when started with --embeddings)."
                    .into(),
            ),
            HubError::ParticipantBusy { .. } => Some("Retry shortly, or use model '*' to let the hub pick.".into()),
            HubError::ParticipantUnavailable { .. } => Some("Pick another participant, or use model '*'.".into()),
            HubError::ParticipantPaused { .. } => Some(
                "It resumes by itself once it can serve again; meanwhile pick another participant, or use model '*'."
                    .into(),
            ),
            HubError::Upstream { .. } | HubError::UpstreamTimeout { .. } => {
                Some("Retry; if it keeps failing, the participant's model server needs attention.".into())
            }
            HubError::HostNotAllowed { host } => Some(format!(
                "Reach the hub by its IP address, or start it with --allowed-host {host} (the desktop app: Settings)."
            )),
            HubError::OriginNotAllowed { origin } => {
                Some(format!("Start the hub with --cors {origin} (the desktop app: Settings) if that page is yours."))
            }
            HubError::UnsupportedMediaType => Some("Send the header 'Content-Type: application/json'.".into()),
            HubError::MetricsNotAllowed { .. } => Some(
                "Scrape /metrics on the hub's machine, or send 'Authorization: Bearer <hostToken>' for that room's \
                 series."
                    .into(),
            ),
            HubError::Internal(_) => Some("Retry; if it keeps failing, look at the hub's log.".into()),
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            HubError::InvalidJson { cause } => Some(json!({ "cause": cause })),
            HubError::MissingFields { fields, .. } => {
                Some(json!({ "required": fields.split(", ").collect::<Vec<_>>() }))
            }
            _ => None,
        }
    }

    /// The classic surface's message: the seed's exact words where the seed has them.
    pub fn classic_message(&self) -> String {
        match self {
            HubError::RoomNotFound { .. } => "Room not found".into(),
            HubError::ParticipantNotFound { .. } => "Participant not found".into(),
            HubError::InvalidPassword => "Invalid password".into(),
            HubError::InvalidJson { .. } => "Invalid JSON body".into(),
            HubError::MissingFields { fields, .. } => format!("Missing required fields: {fields}"),
            HubError::RouteNotFound { .. } => "Not found".into(),
            HubError::PayloadTooLarge { .. } => "Request body too large".into(),
            other => other.message().trim_end_matches('.').to_string(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            HubError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            HubError::Capacity { .. } | HubError::ShuttingDown | HubError::ParticipantBusy { .. } => Some(1),
            _ => None,
        }
    }

    fn finish(&self, mut response: Response) -> Response {
        if let HubError::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
        if let Some(secs) = self.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// A [`HubError`] rendered in the classic surface's shape.
#[derive(Debug)]
pub struct ClassicError(pub HubError);

impl From<HubError> for ClassicError {
    fn from(e: HubError) -> Self {
        ClassicError(e)
    }
}

impl IntoResponse for ClassicError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.0.classic_message() });
        let response = (self.0.status(), axum::Json(body)).into_response();
        self.0.finish(response)
    }
}

/// A [`HubError`] rendered in the management plane's envelope.
#[derive(Debug)]
pub struct ApiError(pub HubError);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ApiErrorBody {
                code: self.0.code().into(),
                message: self.0.message(),
                hint: self.0.hint(),
                details: self.0.details(),
            },
            meta: Meta { request_id: request_id::current() },
        };
        let response = (self.0.status(), axum::Json(body)).into_response();
        self.0.finish(response)
    }
}

/// A [`HubError`] rendered as OpenAI renders errors, for the inference plane.
#[derive(Debug)]
pub struct OpenAiError(pub HubError);

impl From<HubError> for OpenAiError {
    fn from(e: HubError) -> Self {
        OpenAiError(e)
    }
}

impl OpenAiError {
    pub fn error_type(&self) -> &'static str {
        match self.0.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn body(&self) -> Value {
        json!({ "error": {
            "message": self.0.message(),
            "type": self.error_type(),
            "code": self.0.code().to_ascii_lowercase(),
        }})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let response = (self.0.status(), axum::Json(self.body())).into_response();
        self.0.finish(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_messages_on_the_classic_surface() {
        assert_eq!(HubError::RoomNotFound { code: "ABC123".into() }.classic_message(), "Room not found");
        assert_eq!(HubError::InvalidPassword.classic_message(), "Invalid password");
        assert_eq!(
            HubError::MissingFields { fields: "id, nickname, model, endpoint", hint: "" }.classic_message(),
            "Missing required fields: id, nickname, model, endpoint"
        );
        assert_eq!(HubError::ParticipantNotFound { id: "x".into() }.classic_message(), "Participant not found");
        assert_eq!(HubError::InvalidJson { cause: "eof".into() }.classic_message(), "Invalid JSON body");
    }

    #[test]
    fn statuses_and_codes() {
        let cases: Vec<(HubError, u16, &str)> = vec![
            (HubError::RoomNotFound { code: "A".into() }, 404, "ROOM_NOT_FOUND"),
            (HubError::ParticipantNotFound { id: "x".into() }, 404, "PARTICIPANT_NOT_FOUND"),
            (HubError::InvalidPassword, 401, "INVALID_PASSWORD"),
            (HubError::InvalidJson { cause: String::new() }, 400, "INVALID_REQUEST"),
            (HubError::PayloadTooLarge { limit: 1 }, 413, "PAYLOAD_TOO_LARGE"),
            (HubError::HostTokenInvalid, 403, "INVALID_HOST_TOKEN"),
            (
                HubError::ParticipantPaused { id: "x".into(), reason: "model server stopped".into() },
                503,
                "PARTICIPANT_PAUSED",
            ),
            (HubError::Internal("x".into()), 500, "INTERNAL_ERROR"),
            (HubError::MetricsNotAllowed { credential: false }, 401, "METRICS_NOT_ALLOWED"),
            (HubError::MetricsNotAllowed { credential: true }, 403, "METRICS_NOT_ALLOWED"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code);
        }
    }
}
