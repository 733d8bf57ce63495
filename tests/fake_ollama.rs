//! The fake provider's native Ollama API, served with `ollama: true` beside `/api/version`,
//! `/api/tags` and `/api/ps` (a child module of `fake_provider`, whose options, recording, modes
//! and flights it shares): `/api/chat` and `/api/generate` (NDJSON streams unless `stream: false`,
//! as Ollama does), `/api/embed` and the older `/api/embeddings`, in Ollama's shapes and with its
//! `{"error": "..."}` errors. Every line it writes is deterministic ([`chat_lines`],
//! [`generate_lines`]), so a test can tell its lines from ones a hub translated.

use super::*;

/// What the fake's Ollama answers carry for `created_at` (a hub translating writes its own time).
pub const CREATED_AT: &str = "2025-03-01T12:00:00.000000000Z";
/// The fake's `total_duration`, in nanoseconds.
pub const TOTAL_DURATION: u64 = 123_456_789;

fn ollama_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn served(options: &FakeOptions, model: &str) -> Option<String> {
    let key = |m: &str| m.strip_suffix(":latest").unwrap_or(m).to_ascii_lowercase();
    options.models.iter().find(|m| key(m) == key(model)).cloned()
}

/// The request, its model as served, and whether it streams; else Ollama's error answer.
fn read(raw: &Bytes, options: &FakeOptions) -> Result<(Value, String, bool), Box<Response>> {
    if !options.ollama {
        return Err(Box::new(route_not_found(options)));
    }
    if options.mode == Mode::Fail500 {
        return Err(Box::new(ollama_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the fake Ollama failed (Mode::Fail500)",
        )));
    }
    let body: Value = serde_json::from_slice(raw)
        .map_err(|_| Box::new(ollama_error(StatusCode::BAD_REQUEST, "invalid JSON body")))?;
    let model = body["model"].as_str().unwrap_or_default();
    if model.is_empty() {
        return Err(Box::new(ollama_error(StatusCode::BAD_REQUEST, "model is required")));
    }
    let Some(model) = served(options, model) else {
        return Err(Box::new(ollama_error(
            StatusCode::NOT_FOUND,
            &format!("model \"{model}\" not found, try pulling it first"),
        )));
    };
    let stream = body["stream"].as_bool().unwrap_or(true);
    Ok((body, model, stream))
}

/// The last line of an Ollama answer: `done`, its reason, counts and durations.
fn done_line(model: &str, prompt: &str, reply: &str) -> Value {
    json!({
        "model": model,
        "created_at": CREATED_AT,
        "done": true,
        "done_reason": "stop",
        "total_duration": TOTAL_DURATION,
        "load_duration": 1_000_000,
        "prompt_eval_count": count_tokens(prompt),
        "prompt_eval_duration": 2_000_000,
        "eval_count": count_tokens(reply),
        "eval_duration": 3_000_000,
    })
}

/// The NDJSON lines of `/api/chat` answering `reply` in `chunks` pieces, as this fake sends them.
pub fn chat_lines(model: &str, prompt: &str, reply: &str, chunks: usize) -> Vec<Value> {
    let mut lines: Vec<Value> = split(reply, chunks)
        .into_iter()
        .map(|piece| {
            json!({"model": model, "created_at": CREATED_AT,
                   "message": {"role": "assistant", "content": piece}, "done": false})
        })
        .collect();
    let mut done = done_line(model, prompt, reply);
    done["message"] = json!({"role": "assistant", "content": ""});
    lines.push(done);
    lines
}

/// The NDJSON lines of `/api/generate` answering `reply` in `chunks` pieces.
pub fn generate_lines(model: &str, prompt: &str, reply: &str, chunks: usize) -> Vec<Value> {
    let mut lines: Vec<Value> = split(reply, chunks)
        .into_iter()
        .map(|piece| json!({"model": model, "created_at": CREATED_AT, "response": piece, "done": false}))
        .collect();
    let mut done = done_line(model, prompt, reply);
    done["response"] = json!("");
    done["context"] = json!([1, 2, 3]);
    lines.push(done);
    lines
}

/// The whole answer (`stream: false`): the lines folded into one object, as Ollama does.
fn folded(lines: &[Value], key: &str) -> Value {
    let mut whole = lines.last().cloned().unwrap_or_default();
    let text: String = lines
        .iter()
        .filter_map(|l| if key == "message" { l["message"]["content"].as_str() } else { l[key].as_str() })
        .collect();
    if key == "message" {
        whole["message"]["content"] = json!(text);
    } else {
        whole[key] = json!(text);
    }
    whole
}

/// Streams `lines` as NDJSON (one write per line, `chunk_delay` between them), or answers them
/// folded into one JSON object.
async fn answer(state: &Arc<FakeState>, options: &FakeOptions, lines: Vec<Value>, key: &str, stream: bool) -> Response {
    let flight = Flight::new(state);
    if !stream {
        return whole(folded(&lines, key), options, flight).await;
    }
    let frames = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let delay = if i == 0 { options.first_byte_delay } else { options.chunk_delay };
            Frame::new(delay, Bytes::from(format!("{line}\n")))
        })
        .collect();
    streamed(frames, 1, "application/x-ndjson", options.mode, flight)
}

fn reply_to(options: &FakeOptions, prompt: &str) -> String {
    options.reply.clone().unwrap_or_else(|| echo(prompt))
}

pub async fn chat(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    let (body, model, stream) = match read(&raw, &options) {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let Some(messages) = body["messages"].as_array() else {
        return ollama_error(StatusCode::BAD_REQUEST, "messages must be an array");
    };
    let prompt = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    // A function tool offered, with the user's turn last: the model calls it (Ollama's shape: the
    // arguments an object, no id), in one line before the done line as Ollama streams it.
    let last_is_user = messages.last().is_some_and(|m| m["role"] == "user");
    if let Some(name) = first_tool(&body).filter(|_| last_is_user) {
        let arguments: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
        let call = json!({"model": model, "created_at": CREATED_AT, "done": false,
            "message": {"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": name, "arguments": arguments}}]}});
        let mut done = done_line(&model, &prompt, "");
        done["message"] = json!({"role": "assistant", "content": ""});
        if !stream {
            let mut whole = done;
            whole["message"] = call["message"].clone();
            return whole_answer(&state, &options, whole).await;
        }
        return answer(&state, &options, vec![call, done], "message", true).await;
    }
    let reply = reply_to(&options, &prompt);
    let lines = chat_lines(&model, &prompt, &reply, options.stream_chunks);
    answer(&state, &options, lines, "message", stream).await
}

async fn whole_answer(state: &Arc<FakeState>, options: &FakeOptions, value: Value) -> Response {
    whole(value, options, Flight::new(state)).await
}

pub async fn generate(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    let (body, model, stream) = match read(&raw, &options) {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let prompt = body["prompt"].as_str().unwrap_or_default().to_owned();
    let reply = reply_to(&options, &prompt);
    let lines = generate_lines(&model, &prompt, &reply, options.stream_chunks);
    answer(&state, &options, lines, "response", stream).await
}

pub async fn embed(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    let (body, model, _) = match read(&raw, &options) {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let texts: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => return ollama_error(StatusCode::BAD_REQUEST, "invalid input type"),
    };
    let embeddings: Vec<Vec<f32>> =
        texts.iter().map(|t| surfaces::embedding_of(t, options.embedding_dimensions)).collect();
    let tokens: u64 = texts.iter().map(|t| count_tokens(t)).sum();
    Json(json!({
        "model": model,
        "embeddings": embeddings,
        "total_duration": TOTAL_DURATION,
        "load_duration": 1_000_000,
        "prompt_eval_count": tokens,
    }))
    .into_response()
}

pub async fn embeddings(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    let (body, _, _) = match read(&raw, &options) {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let prompt = body["prompt"].as_str().unwrap_or_default();
    Json(json!({ "embedding": surfaces::embedding_of(prompt, options.embedding_dimensions) })).into_response()
}
