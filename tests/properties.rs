//! Property tests (issue 6, acceptance 2): the tunnel message codec and the request parsers take any
//! input and either parse it or reject it, never panic; and what the codec encodes, it decodes back
//! unchanged.

use std::collections::BTreeMap;

use gambi::hub::inference::responses_compat::request_to_chat;
use gambi::hub::inference::sse_parse::SseParser;
use gambi::hub::registry::Selector;
use gambi::hub::validate::{self, Surface};
use gambi::protocol::tunnel::{decode_chunk, Decoded, TunnelMessage};
use gambi::protocol::{is_participant_id, normalize_room_code};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    json_with(any::<f64>().prop_filter("finite", |f| f.is_finite()).boxed())
}

/// Any JSON value whose numbers survive a text round trip exactly (serde_json, without its
/// `float_roundtrip` feature, may move a float by one unit in the last place).
fn exact_json() -> impl Strategy<Value = Value> {
    json_with((-1_000_000i32..1_000_000).prop_map(|n| f64::from(n) / 8.0).boxed())
}

fn json_with(floats: BoxedStrategy<f64>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        floats.prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object whose keys are the ones a parser looks for, with any values: reaches deeper into
/// the parser than random keys would.
fn object_with(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(keys), any_json()), 0..10).prop_map(|pairs| {
        let mut map = Map::new();
        for (k, v) in pairs {
            map.insert(k.to_string(), v);
        }
        Value::Object(map)
    })
}

const REGISTRATION_KEYS: &[&str] = &[
    "id",
    "nickname",
    "model",
    "endpoint",
    "password",
    "specs",
    "config",
    "capabilities",
    "maxConcurrency",
    "loadedModels",
    "authHeaders",
];
const ROOM_KEYS: &[&str] = &["name", "password", "defaults"];
const TUNNEL_KEYS: &[&str] =
    &["type", "requestId", "operation", "method", "path", "headers", "body", "stream", "status", "chunk", "timestamp"];
const TUNNEL_TYPES: &[&str] = &[
    "tunnel.request",
    "tunnel.response.start",
    "tunnel.response.chunk",
    "tunnel.response.end",
    "tunnel.response.error",
    "tunnel.ping",
    "tunnel.pong",
    "tunnel.cancel",
    "tunnel.shutdown",
    "tunnel.unknown",
];

fn any_message() -> impl Strategy<Value = TunnelMessage> {
    let headers = prop::collection::btree_map("[a-z-]{1,12}", ".{0,20}", 0..4);
    prop_oneof![
        (
            ".{0,20}",
            ".{0,20}",
            "GET|POST|DELETE",
            ".{0,30}",
            headers.clone(),
            prop::option::of(exact_json()),
            any::<bool>()
        )
            .prop_map(|(request_id, operation, method, path, headers, body, stream)| TunnelMessage::Request {
                request_id,
                operation,
                method,
                path,
                headers,
                // `null` and absent are one thing on the wire.
                body: body.filter(|b| !b.is_null()),
                stream,
                metadata: None,
            }),
        (".{0,20}", any::<u16>(), headers).prop_map(|(request_id, status, headers)| TunnelMessage::ResponseStart {
            request_id,
            status,
            headers
        }),
        (".{0,20}", prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(id, bytes)| TunnelMessage::chunk(&id, &bytes)),
        ".{0,20}".prop_map(|request_id| TunnelMessage::ResponseEnd { request_id }),
        (".{0,20}", ".{0,20}", ".{0,40}").prop_map(|(request_id, stage, message)| TunnelMessage::ResponseError {
            request_id,
            stage,
            message
        }),
        any::<u64>().prop_map(|timestamp| TunnelMessage::Ping { timestamp }),
        any::<u64>().prop_map(|timestamp| TunnelMessage::Pong { timestamp }),
        ".{0,20}".prop_map(|request_id| TunnelMessage::Cancel { request_id }),
        any::<u64>().prop_map(|grace_ms| TunnelMessage::Shutdown { grace_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tunnel_messages_round_trip(m in any_message()) {
        prop_assert_eq!(TunnelMessage::decode(&m.encode()), Decoded::Message(m.clone()));
        if let TunnelMessage::ResponseChunk { chunk, .. } = &m {
            prop_assert!(decode_chunk(chunk).is_some());
        }
    }

    #[test]
    fn any_text_frame_decodes_or_is_ignored(text in ".{0,200}") {
        let _ = TunnelMessage::decode(&text);
    }

    #[test]
    fn any_json_frame_decodes_or_is_ignored(v in any_json()) {
        let _ = TunnelMessage::decode(&v.to_string());
    }

    #[test]
    fn frames_of_known_types_with_any_fields_decode_or_are_ignored(
        kind in prop::sample::select(TUNNEL_TYPES),
        fields in object_with(TUNNEL_KEYS),
    ) {
        let mut frame = fields;
        frame["type"] = json!(kind);
        match TunnelMessage::decode(&frame.to_string()) {
            // Whatever decoded encodes again and decodes to the same message.
            Decoded::Message(m) => prop_assert_eq!(TunnelMessage::decode(&m.encode()), Decoded::Message(m)),
            Decoded::Ignored { reason } => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn chunks_of_any_text_decode_or_are_refused(text in ".{0,100}") {
        let _ = decode_chunk(&text);
    }

    #[test]
    fn registrations_parse_or_are_refused(body in object_with(REGISTRATION_KEYS), any in any_json()) {
        for surface in [Surface::Classic, Surface::V1] {
            if let Err(e) = validate::registration(&body, surface) {
                prop_assert!(e.status().is_client_error(), "{e:?}");
            }
            if let Err(e) = validate::registration(&any, surface) {
                prop_assert!(e.status().is_client_error(), "{e:?}");
            }
        }
        let _ = validate::password_of(&body);
        let _ = validate::password_of(&any);
    }

    #[test]
    fn room_creations_and_heartbeats_parse_or_are_refused(body in object_with(ROOM_KEYS), any in any_json()) {
        for v in [&body, &any] {
            if let Err(e) = validate::create_room(v) {
                prop_assert!(e.status().is_client_error(), "{e:?}");
            }
            if let Err(e) = validate::heartbeat(Some(v)) {
                prop_assert!(e.status().is_client_error(), "{e:?}");
            }
        }
    }

    #[test]
    fn responses_requests_translate_or_are_refused(
        body in object_with(&["model", "input", "instructions", "tools", "tool_choice", "stream", "max_output_tokens", "text"]),
        any in any_json(),
    ) {
        let _ = request_to_chat(&body);
        let _ = request_to_chat(&any);
    }

    #[test]
    fn sse_from_a_provider_parses_in_any_chunking(bytes in prop::collection::vec(any::<u8>(), 0..2048), cuts in prop::collection::vec(0usize..2048, 0..8)) {
        let mut parser = SseParser::with_limit(256);
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= bytes.len()).collect();
        cuts.sort_unstable();
        let mut last = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            for frame in parser.push(&bytes[last..cut]) {
                prop_assert!(frame.data.len() <= 256, "a frame over the limit: {}", frame.data.len());
            }
            last = cut;
        }
    }

    #[test]
    fn codes_ids_and_model_selectors_never_panic(s in ".{0,160}") {
        if let Some(code) = normalize_room_code(&s) {
            prop_assert_eq!(code.len(), 6);
            prop_assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        }
        if is_participant_id(&s) {
            prop_assert!(!s.contains('/') && !s.contains('?') && s.len() <= 128);
        }
        let _ = Selector::parse(&s);
    }

    #[test]
    fn bearer_headers_of_any_shape_never_panic(value in prop::collection::vec(any::<u8>(), 0..80)) {
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_bytes(&value) {
            headers.insert(axum::http::header::AUTHORIZATION, v);
        }
        if let Some(token) = gambi::hub::routes::v1::bearer(&headers) {
            prop_assert!(!token.is_empty() && token.trim() == token);
        }
    }
}

#[test]
fn the_request_headers_map_keeps_its_order() {
    // The codec's headers are a BTreeMap: the same request always encodes to the same bytes.
    let m = TunnelMessage::Request {
        request_id: "r".into(),
        operation: "o".into(),
        method: "GET".into(),
        path: "/".into(),
        headers: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        body: None,
        stream: false,
        metadata: None,
    };
    assert_eq!(m.encode(), m.clone().encode());
    assert!(m.encode().find("\"a\"") < m.encode().find("\"b\""));
}
