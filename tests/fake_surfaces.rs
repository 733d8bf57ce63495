//! The fake provider's embeddings, legacy completions and Anthropic Messages endpoints (a child
//! module of `fake_provider`, whose options, recording, modes and flights they share). Shapes are
//! the real ones: OpenAI's embeddings list (float arrays, or base64 of little-endian `f32`, which
//! the official Python client asks for), `text_completion` objects and chunks, and Anthropic's
//! message object and event stream.

use base64::Engine as _;

use super::*;

/// A deterministic unit-free vector for `text`, `dimensions` long.
pub fn embedding_of(text: &str, dimensions: usize) -> Vec<f32> {
    (0..dimensions)
        .map(|i| {
            let h = fnv(&format!("{i}:{text}"));
            (h % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// The texts of an embeddings `input`: a string, strings, or token arrays (read as their numbers).
fn inputs(input: &Value) -> Option<Vec<String>> {
    match input {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => Some(vec![input.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Array(_) => Some(i.to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

pub async fn embeddings(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    if !options.embeddings {
        return route_not_found(&options);
    }
    if options.mode == Mode::Fail500 {
        return server_failure();
    }
    let (body, model) = match parse_request(&raw, &options) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let Some(texts) = body.get("input").and_then(inputs) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'input' must be a string or an array of strings or token arrays.",
            "invalid_request_error",
            None,
            Some("input"),
        );
    };
    let flight = Flight::new(&state, &body);
    match options.mode {
        Mode::Hang => return hang(flight).await,
        Mode::Garbage => return garbage(flight, false),
        _ => {}
    }
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let dimensions =
        body.get("dimensions").and_then(Value::as_u64).map_or(options.embedding_dimensions, |d| d as usize);
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding_of(text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| count_tokens(t)).sum();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    whole(answer, &options, flight).await
}

fn prompt_text(prompt: &Value) -> Option<String> {
    match prompt {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            items.first().map(|first| first.as_str().map_or_else(|| prompt.to_string(), str::to_owned))
        }
        _ => None,
    }
}

pub async fn completions(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    if !options.completions {
        return route_not_found(&options);
    }
    if options.mode == Mode::Fail500 {
        return server_failure();
    }
    let (body, model) = match parse_request(&raw, &options) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let Some(prompt) = body.get("prompt").and_then(prompt_text) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'prompt'.",
            "invalid_request_error",
            Some("missing_required_parameter"),
            Some("prompt"),
        );
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false) && !options.json_streams;
    let flight = Flight::new(&state, &body);
    match options.mode {
        Mode::Hang => return hang(flight).await,
        Mode::Garbage => return garbage(flight, stream),
        _ => {}
    }
    let text = options.reply.clone().unwrap_or_else(|| echo(&prompt));
    let (prompt_tokens, completion_tokens) = (count_tokens(&prompt), count_tokens(&text));
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let (id, created) = (new_id("cmpl"), now_secs());
    let object = |choices: Value| json!({"id": id, "object": "text_completion", "created": created, "model": model, "system_fingerprint": null, "choices": choices});
    if !stream {
        let mut answer = object(json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}]));
        answer["usage"] = usage;
        return whole(answer, &options, flight).await;
    }
    let mut frames = Vec::new();
    for (i, piece) in split(&text, options.stream_chunks).into_iter().enumerate() {
        let delay = if i == 0 { options.first_byte_delay } else { options.chunk_delay };
        frames.push(Frame::new(
            delay,
            sse_data(&object(json!([{"text": piece, "index": 0, "logprobs": null, "finish_reason": null}]))),
        ));
    }
    frames.push(Frame::new(
        Duration::ZERO,
        sse_data(&object(json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]))),
    ));
    if body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false) {
        let mut last = object(json!([]));
        last["usage"] = usage;
        frames.push(Frame::new(Duration::ZERO, sse_data(&last)));
    }
    frames.push(Frame::new(Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    streamed(frames, 1, "text/event-stream", options.mode, flight)
}

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"type": "error", "error": {"type": kind, "message": message}}))).into_response()
}

/// The text of an Anthropic `content`: a string, or its text blocks joined by spaces.
fn anthropic_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

pub async fn messages(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    if !options.messages {
        return route_not_found(&options);
    }
    if options.mode == Mode::Fail500 {
        return anthropic_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "The fake provider failed (Mode::Fail500).",
        );
    }
    let Some(body) = light_json(&raw).filter(Value::is_object) else {
        return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", "The body must be a JSON object.");
    };
    let Some(model) = body.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", "model: Field required");
    };
    if !options.models.contains(&model) {
        return anthropic_error(StatusCode::NOT_FOUND, "not_found_error", &format!("model: {model}"));
    }
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", "max_tokens: Field required");
    }
    let Some(turns) = body.get("messages").and_then(Value::as_array) else {
        return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", "messages: Field required");
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false) && !options.json_streams;
    let flight = Flight::new(&state, &body);
    match options.mode {
        Mode::Hang => return hang(flight).await,
        Mode::Garbage => return garbage(flight, stream),
        _ => {}
    }
    let last = turns.last();
    let last_is_user_text = last.is_some_and(|m| {
        m.get("role").and_then(Value::as_str) == Some("user")
            && !m
                .get("content")
                .and_then(Value::as_array)
                .is_some_and(|b| b.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result")))
    });
    let last_user = turns
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| anthropic_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let tool = body
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|_| last_is_user_text)
        .map(str::to_owned);
    let answer = decide(&options, &last_user, tool);
    let input_tokens: u64 =
        turns.iter().map(|m| count_tokens(&anthropic_text(m.get("content").unwrap_or(&Value::Null)))).sum();
    let output_tokens = answer.output_tokens();
    let id = new_id("msg");
    let (block, stop_reason) = match &answer {
        Answer::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Answer::Tool { call_id, name, arguments } => (
            json!({"type": "tool_use", "id": call_id.replace("call_", "toolu_"), "name": name,
                   "input": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({}))}),
            "tool_use",
        ),
    };
    let message = |content: Value, stop: Value, output: u64| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output},
        })
    };
    if !stream {
        return whole(message(json!([block]), json!(stop_reason), output_tokens), &options, flight).await;
    }
    let event = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        sse_event(name, &data)
    };
    let mut frames = vec![
        Frame::new(
            options.first_byte_delay,
            event("message_start", json!({"message": message(json!([]), Value::Null, 1)})),
        ),
        Frame::new(Duration::ZERO, event("ping", json!({}))),
    ];
    match &answer {
        Answer::Text(text) => {
            frames.push(Frame::new(
                Duration::ZERO,
                event("content_block_start", json!({"index": 0, "content_block": {"type": "text", "text": ""}})),
            ));
            for (i, piece) in split(text, options.stream_chunks).into_iter().enumerate() {
                let delay = if i == 0 { Duration::ZERO } else { options.chunk_delay };
                frames.push(Frame::new(
                    delay,
                    event("content_block_delta", json!({"index": 0, "delta": {"type": "text_delta", "text": piece}})),
                ));
            }
        }
        Answer::Tool { arguments, .. } => {
            let mut opened = block.clone();
            opened["input"] = json!({});
            frames.push(Frame::new(
                Duration::ZERO,
                event("content_block_start", json!({"index": 0, "content_block": opened})),
            ));
            for piece in split_nonempty(arguments, options.stream_chunks) {
                frames.push(Frame::new(
                    options.chunk_delay,
                    event(
                        "content_block_delta",
                        json!({"index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ),
                ));
            }
        }
    }
    frames.push(Frame::new(Duration::ZERO, event("content_block_stop", json!({"index": 0}))));
    frames.push(Frame::new(
        Duration::ZERO,
        event(
            "message_delta",
            json!({"delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
        ),
    ));
    frames.push(Frame::new(Duration::ZERO, event("message_stop", json!({}))));
    streamed(frames, 3, "text/event-stream", options.mode, flight)
}
