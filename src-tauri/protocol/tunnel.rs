//! Tunnel messages: JSON text frames between the hub and a participant over its WebSocket.
//! `body` of a request is the JSON value itself; only `chunk` of a response chunk is base64 (response
//! bytes may be anything). A frame that does not parse, or has a type this side does not know, is
//! [`Decoded::Ignored`]: counted by the caller, never fatal, so either side can add message types.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TunnelMessage {
    /// hub → participant: call the provider.
    #[serde(rename = "tunnel.request", rename_all = "camelCase")]
    Request {
        request_id: String,
        /// What the call is for (`chat.completions`, `responses.create`, `models.list`, ...).
        operation: String,
        method: String,
        path: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        #[serde(default)]
        stream: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
    },
    /// participant → hub: the provider answered with this status and headers.
    #[serde(rename = "tunnel.response.start", rename_all = "camelCase")]
    ResponseStart {
        request_id: String,
        status: u16,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// participant → hub: the next bytes of the answer, base64.
    #[serde(rename = "tunnel.response.chunk", rename_all = "camelCase")]
    ResponseChunk { request_id: String, chunk: String },
    /// participant → hub: the answer is complete.
    #[serde(rename = "tunnel.response.end", rename_all = "camelCase")]
    ResponseEnd { request_id: String },
    /// participant → hub: the call failed at `stage` (`connect`, `status`, `stream`, ...).
    #[serde(rename = "tunnel.response.error", rename_all = "camelCase")]
    ResponseError {
        request_id: String,
        #[serde(default)]
        stage: String,
        #[serde(default)]
        message: String,
    },
    /// participant → hub: keep-alive.
    #[serde(rename = "tunnel.ping")]
    Ping {
        #[serde(default)]
        timestamp: u64,
    },
    /// hub → participant: answer to a ping.
    #[serde(rename = "tunnel.pong")]
    Pong {
        #[serde(default)]
        timestamp: u64,
    },
    /// hub → participant (additive): the client went away; abort that provider call.
    #[serde(rename = "tunnel.cancel", rename_all = "camelCase")]
    Cancel { request_id: String },
    /// hub → participant (additive): the hub is shutting down. It takes no new requests, finishes
    /// the ones in flight within `graceMs`, then closes the tunnel; reconnect after that.
    #[serde(rename = "tunnel.shutdown", rename_all = "camelCase")]
    Shutdown {
        #[serde(default)]
        grace_ms: u64,
    },
}

/// A `tunnel.request` with its body kept as the JSON text it came as. [`TunnelMessage`] is read
/// through serde's buffered tagged form, which builds the whole body as a tree first: a request
/// frame of 32 MiB would take a gigabyte that way. A participant reads requests with this.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestFrame {
    pub request_id: String,
    #[serde(default)]
    pub operation: String,
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub stream: bool,
}

impl RequestFrame {
    /// `Some` when `text` is a `tunnel.request` frame with the fields a request needs; anything
    /// else is for [`TunnelMessage::decode`].
    pub fn decode(text: &str) -> Option<RequestFrame> {
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let kind: Kind<'_> = serde_json::from_str(text).ok()?;
        if kind.kind != "tunnel.request" {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

/// What a received frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Message(TunnelMessage),
    /// Not JSON, not an object, an unknown type, or a known type with bad fields.
    Ignored {
        reason: String,
    },
}

impl TunnelMessage {
    pub fn encode(&self) -> String {
        // Serializing these plain structs cannot fail; an empty object would be ignored by the peer.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn decode(text: &str) -> Decoded {
        match serde_json::from_str::<TunnelMessage>(text) {
            Ok(m) => Decoded::Message(m),
            Err(e) => Decoded::Ignored { reason: e.to_string() },
        }
    }

    /// A chunk frame carrying `bytes`.
    pub fn chunk(request_id: &str, bytes: &[u8]) -> TunnelMessage {
        TunnelMessage::ResponseChunk {
            request_id: request_id.to_string(),
            chunk: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The request this message belongs to, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            TunnelMessage::Request { request_id, .. }
            | TunnelMessage::ResponseStart { request_id, .. }
            | TunnelMessage::ResponseChunk { request_id, .. }
            | TunnelMessage::ResponseEnd { request_id }
            | TunnelMessage::ResponseError { request_id, .. }
            | TunnelMessage::Cancel { request_id } => Some(request_id),
            TunnelMessage::Ping { .. } | TunnelMessage::Pong { .. } | TunnelMessage::Shutdown { .. } => None,
        }
    }
}

/// Decodes a chunk's base64; `None` for bytes that are not base64 (the frame is then malformed).
pub fn decode_chunk(chunk: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(chunk).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_frames_match_the_contract() {
        let m = TunnelMessage::Request {
            request_id: "r1".into(),
            operation: "chat.completions".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            body: Some(json!({"model": "llama3"})),
            stream: true,
            metadata: None,
        };
        let v: Value = serde_json::from_str(&m.encode()).unwrap();
        assert_eq!(v["type"], "tunnel.request");
        assert_eq!(v["requestId"], "r1");
        assert_eq!(v["body"]["model"], "llama3", "body is the JSON value itself");
        assert_eq!(TunnelMessage::decode(&m.encode()), Decoded::Message(m.clone()));
        let raw = RequestFrame::decode(&m.encode()).expect("a request frame");
        assert_eq!(raw.request_id, "r1");
        assert_eq!(raw.body.as_deref().map(|b| b.get()), Some(r#"{"model":"llama3"}"#));
        assert!(raw.stream);
        assert!(RequestFrame::decode(&TunnelMessage::Cancel { request_id: "r1".into() }.encode()).is_none());
        assert!(RequestFrame::decode(r#"{"type":"tunnel.request","requestId":"r"}"#).is_none(), "no method");
    }

    #[test]
    fn chunks_are_base64_of_raw_bytes() {
        let bytes = [0u8, 255, 10, 13, b'd'];
        let m = TunnelMessage::chunk("r", &bytes);
        let TunnelMessage::ResponseChunk { chunk, .. } = &m else { panic!() };
        assert_eq!(decode_chunk(chunk).unwrap(), bytes);
    }

    #[test]
    fn shutdown_frames_carry_the_grace_period() {
        let m = TunnelMessage::Shutdown { grace_ms: 10_000 };
        let v: Value = serde_json::from_str(&m.encode()).unwrap();
        assert_eq!(v, json!({"type": "tunnel.shutdown", "graceMs": 10_000}));
        assert_eq!(
            TunnelMessage::decode(r#"{"type":"tunnel.shutdown"}"#),
            Decoded::Message(TunnelMessage::Shutdown { grace_ms: 0 })
        );
    }

    #[test]
    fn unknown_and_garbage_frames_are_ignored() {
        for text in ["", "nope", "[]", "{}", r#"{"type":"tunnel.future"}"#, r#"{"type":"tunnel.response.end"}"#] {
            assert!(matches!(TunnelMessage::decode(text), Decoded::Ignored { .. }), "{text}");
        }
        assert_eq!(
            TunnelMessage::decode(r#"{"type":"tunnel.ping","timestamp":5,"extra":1}"#),
            Decoded::Message(TunnelMessage::Ping { timestamp: 5 })
        );
    }
}
