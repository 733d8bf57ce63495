//! The fake provider's native Ollama API, served with `ollama: true` beside `/api/version`,
//! `/api/tags` and `/api/ps` (a child module of `fake_provider`, whose options, recording, modes
//! and flights it shares): `/api/chat` and `/api/generate` (NDJSON streams unless `stream: false`,
//! as Ollama does), `/api/embed` and the older `/api/embeddings`, in Ollama's shapes and with its
//! `{"error": "..."}` errors. Every line it writes is deterministic ([`chat_lines`],
//! [`generate_lines`]), so a test can tell its lines from ones a hub translated.
//!
//! `/api/ps`'s `expires_at` moves as Ollama's scheduler moves it (server/sched.go): each model's
//! last use plus its keep-alive (5 minutes unless a request's `keep_alive` set another, which the
//! model keeps), written when the model's last request in flight ends, whoever sent it and on
//! whichever surface (native or `/v1`). While a request is in flight it does not move. A model
//! `loaded` from the start was last used when the fake started. (Ollama would also load a model
//! on first use and unload it on expiry or `keep_alive: 0`; here `loaded` stays as the test set it.)

use super::*;

/// What the fake's Ollama answers carry for `created_at` (a hub translating writes its own time).
pub const CREATED_AT: &str = "2025-03-01T12:00:00.000000000Z";
/// The fake's `total_duration`, in nanoseconds.
pub const TOTAL_DURATION: u64 = 123_456_789;

/// Ollama's default keep-alive (`OLLAMA_KEEP_ALIVE` unset).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);

/// One model's use, as Ollama's runner keeps it: requests in flight, keep-alive, expiry.
#[derive(Debug, Clone)]
pub struct ModelUse {
    refs: usize,
    keep_alive: Duration,
    expires_at: SystemTime,
}

/// The name a model is kept under: `llama3` and `llama3:latest` are one model.
pub fn key(model: &str) -> String {
    model.strip_suffix(":latest").unwrap_or(model).to_ascii_lowercase()
}

/// A request's `keep_alive`, read as Ollama reads it (api.Duration): a number of seconds or a Go
/// duration string; negative means forever. `None` when absent or unreadable.
pub fn keep_alive(value: &Value) -> Option<Duration> {
    const FOREVER: Duration = Duration::from_nanos(i64::MAX as u64);
    match value {
        Value::Number(n) => {
            let seconds = n.as_f64()?;
            Some(if seconds < 0.0 { FOREVER } else { Duration::from_secs_f64(seconds) })
        }
        Value::String(s) if s.starts_with('-') => Some(FOREVER),
        Value::String(s) if s.trim_start_matches('+') == "0" => Some(Duration::ZERO),
        Value::String(s) => humantime::parse_duration(s.trim_start_matches('+')).ok(),
        _ => None,
    }
}

/// A time as Go's `time.Time` writes it in JSON (RFC 3339 with nanoseconds, trailing zeros cut,
/// and the zone: `Z` here, the fake's clock being UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let full = humantime::format_rfc3339_nanos(t).to_string();
    let fraction = full.trim_end_matches('Z').trim_end_matches('0').trim_end_matches('.');
    format!("{fraction}Z")
}

/// `/api/ps`'s `expires_at` for `model` now.
pub fn expires_at(state: &FakeState, model: &str) -> String {
    let expires = lock(&state.ollama_use).get(&key(model)).map(|u| u.expires_at);
    rfc3339(expires.unwrap_or(state.born + KEEP_ALIVE))
}

/// The model one inference request uses, from its start to its end (Ollama's runner reference).
pub struct InUse {
    state: Arc<FakeState>,
    model: Option<String>,
}

impl InUse {
    /// A request for `body["model"]` starts (nothing is kept unless the fake serves Ollama).
    pub fn begin(state: &Arc<FakeState>, body: &Value) -> InUse {
        let model = body["model"].as_str().filter(|_| state.options().ollama).map(key);
        if let Some(model) = &model {
            let mut uses = lock(&state.ollama_use);
            let born = state.born;
            let model_use = uses.entry(model.clone()).or_insert_with(|| ModelUse {
                refs: 0,
                keep_alive: KEEP_ALIVE,
                expires_at: born + KEEP_ALIVE,
            });
            model_use.refs += 1;
            if let Some(keep) = keep_alive(&body["keep_alive"]) {
                model_use.keep_alive = keep;
            }
        }
        InUse { state: state.clone(), model }
    }

    /// The request ended: the model's last one in flight sets its expiry (once; also on drop).
    pub fn end(&mut self) {
        let Some(model) = self.model.take() else { return };
        let mut uses = lock(&self.state.ollama_use);
        if let Some(model_use) = uses.get_mut(&model) {
            model_use.refs = model_use.refs.saturating_sub(1);
            if model_use.refs == 0 {
                let now = SystemTime::now();
                model_use.expires_at = now.checked_add(model_use.keep_alive).unwrap_or(now);
            }
        }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.end();
    }
}

fn ollama_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn served(options: &FakeOptions, model: &str) -> Option<String> {
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
/// folded into one JSON object. `body` is the request's.
async fn answer(
    state: &Arc<FakeState>,
    options: &FakeOptions,
    body: &Value,
    lines: Vec<Value>,
    key: &str,
    stream: bool,
) -> Response {
    let flight = Flight::new(state, body);
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
            let mut whole_line = done;
            whole_line["message"] = call["message"].clone();
            return whole(whole_line, &options, Flight::new(&state, &body)).await;
        }
        return answer(&state, &options, &body, vec![call, done], "message", true).await;
    }
    let reply = reply_to(&options, &prompt);
    let lines = chat_lines(&model, &prompt, &reply, options.stream_chunks);
    answer(&state, &options, &body, lines, "message", stream).await
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
    answer(&state, &options, &body, lines, "response", stream).await
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
    let _in_use = InUse::begin(&state, &body);
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
    let _in_use = InUse::begin(&state, &body);
    Json(json!({ "embedding": surfaces::embedding_of(prompt, options.embedding_dimensions) })).into_response()
}
