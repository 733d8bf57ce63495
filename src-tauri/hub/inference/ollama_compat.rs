//! The Ollama API of a room, as translation to and from the OpenAI plane: an Ollama client's base
//! URL is the room, and its calls are answered by the participants' OpenAI endpoints.
//!
//! Pure functions over `serde_json::Value`, no I/O, beside the Responses fallback
//! (`responses_compat`) and built the same way: [`chat_request`], [`generate_request`],
//! [`embed_request`] and [`embeddings_request`] turn Ollama bodies into OpenAI bodies;
//! [`chat_answer`], [`embed_answer`] and [`embeddings_answer`] turn OpenAI answers back;
//! [`NdjsonTranslator`] turns a stream of chat (or legacy completion) chunks into Ollama's NDJSON
//! lines as they come; and
//! [`room_models`], [`tags`], [`ps`] and [`show`] describe the room's models from its participant
//! records (split by what each owns: `request`, `answer`, `stream`, `models`). Routing, reading
//! bodies and writing the client's stream belong to `ollama_routes` and the inference plane.
//!
//! A raw `/api/generate` (a prompt already templated) runs as a legacy completion
//! (`/v1/completions`), the prompt sent as it is. What the OpenAI endpoints cannot carry is refused
//! with a [`CompatError`] naming the field, not dropped: a prompt template, fill-in-the-middle
//! suffixes, token contexts, logprobs.
//! Load-time settings (`num_ctx`, `num_gpu`, ...) and `keep_alive` belong to the member's own model
//! server and are not sent (its OpenAI endpoints have no such fields).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod answer;
mod models;
mod request;
mod stream;

pub use answer::{chat_answer, embed_answer, embeddings_answer, loaded_answer};
pub use models::{find_model, ps, room_models, show, tags, RoomModel};
pub use request::{
    chat_request, embed_request, embeddings_request, generate_request, model_of, stream_of, unloads, Generate,
};
pub use stream::{ndjson, NdjsonTranslator};

/// The Ollama API version a room answers to `/api/version`: the release whose API this surface
/// follows (chat and generate with tools, structured outputs and thinking, `/api/embed`).
pub const VERSION: &str = "0.9.0";

/// What the model-management endpoints answer.
pub const MANAGEMENT_REFUSED: &str = "A Gambi room serves the models its members share and does not manage them: \
     pull, push, create, copy, delete or unload models on the machine that shares them (for example \
     `ollama pull llama3.2` there).";

/// Why an Ollama request cannot be translated; both are the client's to fix (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field} is not supported through a room: {detail}")]
    Unsupported { field: String, detail: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> CompatError {
    CompatError::Invalid { field: field.to_owned(), reason: reason.into() }
}

fn unsupported(field: &str, detail: impl Into<String>) -> CompatError {
    CompatError::Unsupported { field: field.to_owned(), detail: detail.into() }
}

/// Which call an answer belongs to: chat answers carry a `message`, generate answers a `response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Generate,
}

/// What the hub measured of a call: from the request's arrival to the end, and to the first token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    pub total: Duration,
    pub first_token: Option<Duration>,
}

/// An instant as Ollama writes times: RFC 3339, UTC.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

fn rfc3339_ms(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

/// A model name as Ollama lists it: always with a tag (`llama3` is `llama3:latest`).
pub fn ollama_name(model: &str) -> String {
    if model.contains(':') {
        model.to_owned()
    } else {
        format!("{model}:latest")
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The words of an error answer: OpenAI's `{"error": {"message", "code"}}`, Ollama's
/// `{"error": "..."}`, or the text itself. Returns the message and OpenAI's `code`.
pub fn error_words(body: &[u8]) -> (String, Option<String>) {
    let text = || String::from_utf8_lossy(body).trim().chars().take(500).collect::<String>();
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("error") {
            Some(Value::String(s)) => (s.clone(), None),
            Some(e @ Value::Object(_)) => {
                let message = e.get("message").and_then(Value::as_str).map_or_else(text, str::to_owned);
                (message, e.get("code").and_then(Value::as_str).map(str::to_owned))
            }
            _ => (v.get("message").and_then(Value::as_str).map_or_else(text, str::to_owned), None),
        },
        Err(_) => (text(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_ollamas_tag() {
        assert_eq!(ollama_name("llama3"), "llama3:latest");
        assert_eq!(ollama_name("qwen2:7b"), "qwen2:7b");
        assert_eq!(ollama_name("hf.co/org/repo:Q4_K_M"), "hf.co/org/repo:Q4_K_M");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123000Z");
    }

    #[test]
    fn error_words_from_any_error_shape() {
        let openai = br#"{"error":{"message":"No available participant for the requested model","type":"not_found_error","code":"model_not_found"}}"#;
        assert_eq!(
            error_words(openai),
            ("No available participant for the requested model".into(), Some("model_not_found".into()))
        );
        assert_eq!(error_words(br#"{"error":"model 'x' not found"}"#), ("model 'x' not found".into(), None));
        assert_eq!(error_words(b"upstream exploded\n"), ("upstream exploded".into(), None));
        assert_eq!(error_words(br#"{"message":"bad"}"#), ("bad".into(), None));
    }
}
