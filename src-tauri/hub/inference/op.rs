//! The room's inference endpoints as data. Each [`Op`] says where it is served (the client's path
//! under `/rooms/:code/v1`), which provider endpoint it calls (its path, the capability that says
//! whether a participant has it), whether it streams, which fields it needs, how the request is
//! adapted to a participant, how it is translated when the provider lacks the endpoint, and in
//! which shape its errors are written. The proxy ([`super::proxy`]) and the relay
//! ([`super::relay`]) read this table and nothing else about an endpoint.

use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::hub::error::{HubError, OpenAiError};
use crate::hub::registry::Need;
use crate::protocol::{Endpoint, RuntimeConfig};

use super::merge;
use super::messages_compat;
use super::request::RawObject;

/// One endpoint of a room's inference plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Chat,
    Responses,
    Completions,
    Embeddings,
    Messages,
}

/// How a request is served by a participant whose provider lacks the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Responses ↔ chat completions (`responses_compat`).
    ResponsesOverChat,
    /// Anthropic Messages ↔ chat completions (`messages_compat`).
    MessagesOverChat,
}

/// The shape of the errors the hub writes on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "code"}}`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

impl ErrorShape {
    /// The shape of the inference plane's errors at `path` (a request path).
    pub fn of_path(path: &str) -> ErrorShape {
        // `/rooms/CODE/v1/messages` and anything under it.
        let mut parts = path.split('/');
        let messages = parts.next() == Some("")
            && parts.next() == Some("rooms")
            && parts.next().is_some()
            && parts.next() == Some("v1")
            && parts.next() == Some("messages");
        if messages {
            ErrorShape::Anthropic
        } else {
            ErrorShape::OpenAi
        }
    }

    /// `error` as an answer in this shape.
    pub fn render(self, error: HubError) -> Response {
        match self {
            ErrorShape::OpenAi => OpenAiError(error).into_response(),
            ErrorShape::Anthropic => {
                let status = error.status();
                let body = messages_compat::error_body(status.as_u16(), &error.message());
                let mut response = (status, axum::Json(body)).into_response();
                // The status and Retry-After are the OpenAI rendering's; only the body differs.
                if let Some(retry) = OpenAiError(error).into_response().headers().get(axum::http::header::RETRY_AFTER) {
                    response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry.clone());
                }
                response
            }
        }
    }

    /// The data of the `error` event that ends a stream of this shape after it started.
    pub fn stream_error(self, error: &HubError) -> Value {
        match self {
            ErrorShape::OpenAi => OpenAiError(error.clone()).body(),
            ErrorShape::Anthropic => messages_compat::error_event(&error.message()).data,
        }
    }
}

/// What an [`Op`] is, as data.
pub struct OpSpec {
    /// What it is for, as `llm.request` and the tunnel's `operation` say.
    pub operation: &'static str,
    /// The path under `/rooms/:code/v1`.
    pub client_path: &'static str,
    /// The provider endpoint it calls: its path and the capability that says who has it.
    pub endpoint: Endpoint,
    /// `stream: true` is allowed.
    pub streams: bool,
    /// How it is served by a provider without `endpoint` (else it is routed only to those that
    /// have it).
    pub translation: Option<Translation>,
    pub errors: ErrorShape,
    /// The fields it needs, checked before routing.
    check: fn(&RawObject) -> Result<(), HubError>,
    /// The request adapted to a participant: its real model and the merged runtime config.
    adapt: fn(&RawObject, &str, &RuntimeConfig) -> RawObject,
}

impl OpSpec {
    pub fn check(&self, request: &RawObject) -> Result<(), HubError> {
        (self.check)(request)
    }

    pub fn adapt(&self, request: &RawObject, model: &str, config: &RuntimeConfig) -> RawObject {
        (self.adapt)(request, model, config)
    }

    /// What routing needs of a participant for this endpoint.
    pub fn need(&self) -> Need {
        Need { endpoint: Some(self.endpoint), or_chat: self.translation.is_some() }
    }

    /// The hub asks for the provider's usage chunk in a stream (and hides it from a client that
    /// did not ask): endpoints whose streams carry usage only when asked.
    pub fn asks_stream_usage(&self) -> bool {
        matches!(self.endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

fn bad(message: impl Into<String>) -> HubError {
    HubError::InvalidRequest { message: message.into(), hint: None }
}

fn needs_messages(request: &RawObject) -> Result<(), HubError> {
    if request.is_array("messages") {
        Ok(())
    } else {
        Err(bad("'messages' must be an array of chat messages."))
    }
}

fn needs_nothing(_request: &RawObject) -> Result<(), HubError> {
    Ok(())
}

/// A string, or an array (of strings, or of token ids).
fn string_or_array(request: &RawObject, field: &str) -> bool {
    request.raw(field).is_some_and(|r| r.starts_with('"') || r.starts_with('['))
}

fn needs_prompt(request: &RawObject) -> Result<(), HubError> {
    if string_or_array(request, "prompt") {
        Ok(())
    } else {
        Err(bad("'prompt' must be a string or an array of strings (or of token ids)."))
    }
}

fn needs_input(request: &RawObject) -> Result<(), HubError> {
    if string_or_array(request, "input") {
        Ok(())
    } else {
        Err(bad("'input' must be a string or an array of strings (or of token ids) to embed."))
    }
}

fn needs_anthropic_messages(request: &RawObject) -> Result<(), HubError> {
    if request.is_array("messages") {
        Ok(())
    } else {
        Err(bad("messages: must be an array of {role, content} messages."))
    }
}

static CHAT: OpSpec = OpSpec {
    operation: "chat.completions",
    client_path: "/chat/completions",
    endpoint: Endpoint::ChatCompletions,
    streams: true,
    translation: None,
    errors: ErrorShape::OpenAi,
    check: needs_messages,
    adapt: merge::chat_body::<RawObject>,
};

static RESPONSES: OpSpec = OpSpec {
    operation: "responses.create",
    client_path: "/responses",
    endpoint: Endpoint::Responses,
    streams: true,
    translation: Some(Translation::ResponsesOverChat),
    errors: ErrorShape::OpenAi,
    check: needs_nothing,
    adapt: merge::responses_body::<RawObject>,
};

static COMPLETIONS: OpSpec = OpSpec {
    operation: "completions.create",
    client_path: "/completions",
    endpoint: Endpoint::Completions,
    streams: true,
    translation: None,
    errors: ErrorShape::OpenAi,
    check: needs_prompt,
    adapt: merge::completions_body::<RawObject>,
};

static EMBEDDINGS: OpSpec = OpSpec {
    operation: "embeddings.create",
    client_path: "/embeddings",
    endpoint: Endpoint::Embeddings,
    streams: false,
    translation: None,
    errors: ErrorShape::OpenAi,
    check: needs_input,
    adapt: merge::embeddings_body::<RawObject>,
};

static MESSAGES: OpSpec = OpSpec {
    operation: "messages.create",
    client_path: "/messages",
    endpoint: Endpoint::Messages,
    streams: true,
    translation: Some(Translation::MessagesOverChat),
    errors: ErrorShape::Anthropic,
    check: needs_anthropic_messages,
    adapt: merge::messages_body::<RawObject>,
};

impl Op {
    pub const ALL: [Op; 5] = [Op::Chat, Op::Responses, Op::Completions, Op::Embeddings, Op::Messages];

    pub fn spec(self) -> &'static OpSpec {
        match self {
            Op::Chat => &CHAT,
            Op::Responses => &RESPONSES,
            Op::Completions => &COMPLETIONS,
            Op::Embeddings => &EMBEDDINGS,
            Op::Messages => &MESSAGES,
        }
    }
}

/// Whether an answer says the provider has no such endpoint (so the hub learns it and serves the
/// request elsewhere, or translated): 405 and 501 always; 404 unless its body is about the model
/// (`model_not_found`, "model 'x' not found": the endpoint is there, the model is not).
pub fn says_endpoint_missing(status: u16, body: &[u8]) -> bool {
    match status {
        405 | 501 => true,
        404 => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else { return true };
            let error = v.get("error").unwrap_or(&v);
            let code = error.get("code").and_then(Value::as_str).unwrap_or_default();
            let message = error.get("message").and_then(Value::as_str).or_else(|| error.as_str()).unwrap_or_default();
            !(code.contains("model") || message.to_ascii_lowercase().contains("model"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn raw(text: &str) -> RawObject {
        RawObject::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    #[test]
    fn each_endpoint_checks_the_fields_it_needs() {
        assert!(Op::Chat.spec().check(&raw(r#"{"messages": []}"#)).is_ok());
        assert!(Op::Chat.spec().check(&raw(r#"{"messages": "hi"}"#)).is_err());
        assert!(Op::Completions.spec().check(&raw(r#"{"prompt": "once"}"#)).is_ok());
        assert!(Op::Completions.spec().check(&raw(r#"{"prompt": [1, 2]}"#)).is_ok());
        assert!(Op::Completions.spec().check(&raw(r#"{"prompt": 3}"#)).is_err());
        assert!(Op::Completions.spec().check(&raw(r#"{}"#)).is_err());
        assert!(Op::Embeddings.spec().check(&raw(r#"{"input": ["a", "b"]}"#)).is_ok());
        assert!(Op::Embeddings.spec().check(&raw(r#"{"input": null}"#)).is_err());
        assert!(Op::Messages.spec().check(&raw(r#"{"messages": []}"#)).is_ok());
        assert!(Op::Messages.spec().check(&raw(r#"{}"#)).is_err());
        assert!(Op::Responses.spec().check(&raw(r#"{}"#)).is_ok(), "the provider says what a response needs");
    }

    #[test]
    fn the_table_is_consistent() {
        for op in Op::ALL {
            let spec = op.spec();
            assert!(spec.endpoint.path().ends_with(spec.client_path), "{op:?}");
            assert_eq!(spec.need().or_chat, spec.translation.is_some());
        }
        assert!(!Op::Embeddings.spec().streams);
        assert_eq!(Op::Messages.spec().errors, ErrorShape::Anthropic);
    }

    #[test]
    fn a_missing_endpoint_is_told_from_a_missing_model() {
        assert!(says_endpoint_missing(404, b"404 page not found"));
        assert!(says_endpoint_missing(
            404,
            br#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#
        ));
        assert!(says_endpoint_missing(501, br#"{"error":{"message":"This server does not support embeddings."}}"#));
        assert!(says_endpoint_missing(405, b""));
        assert!(says_endpoint_missing(404, br#"{"detail":"Not Found"}"#), "vLLM");
        assert!(says_endpoint_missing(404, br#"{"error":"Unexpected endpoint or method. (POST /v1/messages)"}"#));
        // What the hub writes in place of a text 404 (see `upstream::vet`) reads as missing too.
        assert!(says_endpoint_missing(404, br#"{"error":{"message":"this endpoint is missing on the provider","type":"not_found_error","code":"endpoint_missing"}}"#));
        assert!(!says_endpoint_missing(
            404,
            br#"{"error":{"message":"The model `x` does not exist","code":"model_not_found"}}"#
        ));
        assert!(!says_endpoint_missing(404, br#"{"error":"model \"llama9\" not found, try pulling it first"}"#));
        assert!(!says_endpoint_missing(400, b"{}"));
        assert!(!says_endpoint_missing(500, b"{}"));
    }

    #[test]
    fn the_messages_paths_answer_in_anthropic_s_shape() {
        assert_eq!(ErrorShape::of_path("/rooms/ABC123/v1/messages"), ErrorShape::Anthropic);
        assert_eq!(ErrorShape::of_path("/rooms/ABC123/v1/messages/count_tokens"), ErrorShape::Anthropic);
        assert_eq!(ErrorShape::of_path("/rooms/ABC123/v1/chat/completions"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::of_path("/rooms/ABC123/v1/messagesx"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::of_path("/rooms/ABC123/messages"), ErrorShape::OpenAi);
    }
}
