//! `/rooms/:code/api/*` (and `/rooms/:code/`): the room as an Ollama server, for clients whose base
//! URL is the room. Thin handlers: read the body, translate it (`ollama_compat`), run it on the
//! inference plane (`proxy::run_with_native`: routed, queued, failed over, counted and evented like any
//! room request), translate the answer back — NDJSON lines as the chunks arrive when streamed.
//! A participant whose provider is Ollama gets the request as the client sent it, on its own
//! `/api/...` endpoint (`proxy::run_with_native`), and its answer reaches the client untouched.
//! What no translation carries (a `suffix`, a `template`, a `context`...) is routed to Ollama
//! participants only, and refused as before where the room has none serving the model.
//! A protected room takes its password as `Authorization: Bearer`, as the OpenAI plane does.
//! Every error, the hub's or a provider's, is Ollama's `{"error": "..."}`.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, response::Parts, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use crate::hub::body::read_json_held;
use crate::hub::error::{HubError, OpenAiError};
use crate::hub::routes::{room_code, Params};
use crate::hub::Hub;
use crate::protocol::Capability;

use super::ollama_compat::{self as compat, Clock, CompatError, Generate, Kind, NdjsonTranslator};
use super::op::Op;
use super::proxy::{self, NativeAnswer, NativeForm, OllamaCall};
use super::sse_parse::{SseFrame, SseParser};

/// Largest whole answer read back for translation (as the OpenAI plane buffers).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest error answer read to find its words; past it, the status speaks.
const MAX_ERROR_BYTES: usize = 1024 * 1024;
const NDJSON: &str = "application/x-ndjson";

type P<T> = Params<T, OllamaError>;

pub fn router(hub: &Hub) -> Router<Hub> {
    Router::new()
        // What Ollama's own client checks first (`HEAD /` of its base URL).
        .route("/rooms/{code}/", get(running))
        .route("/rooms/{code}/api/version", get(version))
        .route("/rooms/{code}/api/tags", get(tags))
        .route("/rooms/{code}/api/ps", get(ps))
        .route("/rooms/{code}/api/show", post(show))
        .route("/rooms/{code}/api/chat", post(chat))
        .route("/rooms/{code}/api/generate", post(generate))
        .route("/rooms/{code}/api/embed", post(embed))
        .route("/rooms/{code}/api/embeddings", post(embeddings))
        .route("/rooms/{code}/api/pull", any(manage))
        .route("/rooms/{code}/api/push", any(manage))
        .route("/rooms/{code}/api/create", any(manage))
        .route("/rooms/{code}/api/copy", any(manage))
        .route("/rooms/{code}/api/delete", any(manage))
        .route("/rooms/{code}/api/blobs/{digest}", any(manage))
        .route_layer(middleware::from_fn_with_state(hub.clone(), super::routes::room_key))
        .route_layer(middleware::from_fn(ollama_shaped))
        .route_layer(middleware::from_fn(crate::hub::stats::caller_scope))
        .layer(axum::extract::DefaultBodyLimit::max(hub.config().inference_body_limit))
}

/// A [`HubError`] in Ollama's shape, with the status (and `Retry-After`) the hub gives it anywhere.
pub struct OllamaError(pub HubError);

impl From<HubError> for OllamaError {
    fn from(e: HubError) -> Self {
        OllamaError(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let message = self.0.message();
        let (parts, _) = OpenAiError(self.0).into_response().into_parts();
        with_error(parts, &message)
    }
}

fn bad(e: CompatError) -> OllamaError {
    OllamaError(HubError::InvalidRequest { message: e.to_string(), hint: None })
}

/// `parts` (status and headers) with `{"error": message}` as the body.
fn with_error(mut parts: Parts, message: &str) -> Response {
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(json!({ "error": message }).to_string()))
}

fn error(status: StatusCode, message: &str) -> Response {
    let (parts, _) = status.into_response().into_parts();
    with_error(parts, message)
}

fn model_not_found(model: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("model '{model}' not found"))
}

/// Renders every error answer of these routes (the room key's, the OpenAI plane's, a provider's)
/// in Ollama's shape; answers already in it pass as they are.
async fn ollama_shaped(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if response.status().is_success() {
        return response;
    }
    reshape(response, None).await
}

/// An error answer as `{"error": "..."}`. With `asked`, "no such model" names the model asked for.
async fn reshape(response: Response, asked: Option<&str>) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES).await.unwrap_or_default();
    let ours = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.len() == 1 && o.get("error").is_some_and(Value::is_string)));
    if ours == Some(true) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let (message, code) = compat::error_words(&bytes);
    if let (Some(model), Some("model_not_found")) = (asked, code.as_deref()) {
        parts.status = StatusCode::NOT_FOUND;
        return with_error(parts, &format!("model '{model}' not found"));
    }
    let message = if message.is_empty() { format!("HTTP {}", parts.status.as_u16()) } else { message };
    with_error(parts, &message)
}

async fn running(State(hub): State<Hub>, P { 0: code, .. }: P<String>) -> Result<Response, OllamaError> {
    hub.registry().room(&room_code(&code)?)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "Ollama is running").into_response())
}

async fn version(State(hub): State<Hub>, P { 0: code, .. }: P<String>) -> Result<Json<Value>, OllamaError> {
    hub.registry().room(&room_code(&code)?)?;
    Ok(Json(json!({ "version": compat::VERSION })))
}

async fn tags(State(hub): State<Hub>, P { 0: code, .. }: P<String>) -> Result<Json<Value>, OllamaError> {
    Ok(Json(compat::tags(&hub.registry().participants(&room_code(&code)?)?)))
}

async fn ps(State(hub): State<Hub>, P { 0: code, .. }: P<String>) -> Result<Json<Value>, OllamaError> {
    Ok(Json(compat::ps(&hub.registry().participants(&room_code(&code)?)?)))
}

async fn show(State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request) -> Result<Response, OllamaError> {
    let code = room_code(&code)?;
    hub.registry().room(&code)?;
    let (body, _hold) = read_json_held(req, &(), hub.config().inference_body_limit).await?;
    let model = compat::model_of(&body.unwrap_or(Value::Null)).map_err(bad)?;
    match compat::find_model(&hub.registry().participants(&code)?, &model) {
        Some(found) => Ok(Json(compat::show(&found)).into_response()),
        None => Ok(model_not_found(&model)),
    }
}

/// Pull, push, create, copy, delete, blobs: a room does not manage its members' models.
async fn manage(
    State(hub): State<Hub>,
    P { 0: params, .. }: P<std::collections::HashMap<String, String>>,
) -> Result<Response, OllamaError> {
    hub.registry().room(&room_code(params.get("code").map_or("", String::as_str))?)?;
    Ok(error(StatusCode::FORBIDDEN, compat::MANAGEMENT_REFUSED))
}

/// The Ollama calls that run on a participant.
#[derive(Debug, Clone, Copy)]
enum Call {
    Chat,
    Generate,
    Embed,
    Embeddings,
}

impl Call {
    fn native(self) -> OllamaCall {
        match self {
            Call::Chat => OllamaCall::Chat,
            Call::Generate => OllamaCall::Generate,
            Call::Embed => OllamaCall::Embed,
            Call::Embeddings => OllamaCall::Embeddings,
        }
    }
}

/// Some participant of the room has Ollama for its provider: the request is kept in its own shape
/// too, for that participant.
fn room_has_ollama(hub: &Hub, code: &str) -> bool {
    hub.registry().participants(code).is_ok_and(|ps| {
        ps.iter().any(|p| p.capabilities.of(crate::protocol::Endpoint::Ollama) == Capability::Supported)
    })
}

async fn chat(State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request) -> Response {
    run(hub, code, req, Call::Chat).await.unwrap_or_else(IntoResponse::into_response)
}

async fn generate(State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request) -> Response {
    run(hub, code, req, Call::Generate).await.unwrap_or_else(IntoResponse::into_response)
}

async fn embed(State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request) -> Response {
    run(hub, code, req, Call::Embed).await.unwrap_or_else(IntoResponse::into_response)
}

async fn embeddings(State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request) -> Response {
    run(hub, code, req, Call::Embeddings).await.unwrap_or_else(IntoResponse::into_response)
}

/// Reads and translates an Ollama request, runs it on the room, and translates the answer.
async fn run(hub: Hub, code: String, req: Request, call: Call) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let code = room_code(&code)?;
    hub.registry().room(&code)?;
    // The body's memory (its text and its tree) is held until the answer has been relayed.
    let (body, mut hold) = read_json_held(req, &(), hub.config().inference_body_limit).await?;
    let body =
        body.ok_or_else(|| bad(CompatError::Invalid { field: "request".into(), reason: "the body is empty".into() }))?;
    let model = compat::model_of(&body).map_err(bad)?;
    let stream = match call {
        Call::Chat | Call::Generate => compat::stream_of(&body).map_err(bad)?,
        Call::Embed | Call::Embeddings => false,
    };
    let unloads = compat::unloads(&body);
    // The translation is a second tree of about the body's size beside it, then its text beside
    // the translation: held as twice the body.
    let held = hold.held();
    hold.grow_to(held.saturating_mul(2))?;
    // For an Ollama participant, the request as it came: its text beside the rest.
    let native = if room_has_ollama(&hub, &code) {
        let text = Bytes::from(body.to_string());
        let held = hold.held();
        hold.grow_to(held.saturating_add(text.len()))?;
        Some(NativeForm { call: call.native(), text, only: false })
    } else {
        None
    };
    let (op, openai) = match call {
        Call::Chat => (Op::Chat, compat::chat_request(&body, &model, stream)),
        Call::Generate => {
            let generate = compat::generate_request(&body, &model, stream);
            // A raw prompt, already templated, runs as a legacy completion.
            let op = if matches!(generate, Ok(Some(Generate::Completion(_)))) { Op::Completions } else { Op::Chat };
            (op, generate.map(|g| g.map(Generate::into_body)))
        }
        Call::Embed => (Op::Embeddings, compat::embed_request(&body, &model)),
        Call::Embeddings => (Op::Embeddings, compat::embeddings_request(&body, &model)),
    };
    drop(body);
    let (text, native, untranslatable) = match (openai, native) {
        (Ok(Some(openai)), native) => (Bytes::from(openai.to_string()), native, None),
        (Ok(None), _) => return nothing_to_run(&hub, &code, call, &model, stream, unloads, started),
        // Only an Ollama participant can serve it: the OpenAI form stands in, never sent.
        (Err(e @ CompatError::Unsupported { .. }), Some(native)) => {
            let stand_in = json!({"model": model, "stream": stream, "messages": [], "prompt": "", "input": ""});
            (Bytes::from(stand_in.to_string()), Some(NativeForm { only: true, ..native }), Some(e))
        }
        (Err(e), _) => return Err(bad(e)),
    };
    match proxy::run_with_native(hub, &code, op, text, hold, native).await {
        Ok(response) => Ok(answer(response, call, &model, stream, started).await),
        // No participant in the room serves that model (by any name the room routes by).
        Err(HubError::NoParticipant) => Ok(model_not_found(&model)),
        // Some serve it, but none is an Ollama: what the translation could not carry.
        Err(e @ HubError::NotServed { .. }) => Err(untranslatable.map_or(OllamaError(e), bad)),
        Err(e) => Err(OllamaError(e)),
    }
}

/// A request with nothing for a model to do (no messages, no prompt, no input): answered as
/// Ollama answers it, once the room is known to serve the model.
fn nothing_to_run(
    hub: &Hub,
    code: &str,
    call: Call,
    model: &str,
    stream: bool,
    unloads: bool,
    started: Instant,
) -> Result<Response, OllamaError> {
    if unloads && matches!(call, Call::Chat | Call::Generate) {
        return Ok(error(StatusCode::FORBIDDEN, compat::MANAGEMENT_REFUSED));
    }
    let Some(found) = compat::find_model(&hub.registry().participants(code)?, model) else {
        return Ok(model_not_found(model));
    };
    let answer = match call {
        Call::Chat => compat::loaded_answer(Kind::Chat, &found.name),
        Call::Generate => compat::loaded_answer(Kind::Generate, &found.name),
        Call::Embed => json!({
            "model": found.name,
            "embeddings": [],
            "total_duration": u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            "load_duration": 0,
        }),
        Call::Embeddings => json!({ "embedding": [] }),
    };
    Ok(whole(answer.to_string(), stream))
}

/// A whole answer: JSON, or one NDJSON line for a client that asked for a stream.
fn whole(mut text: String, stream: bool) -> Response {
    let content_type = if stream {
        text.push('\n');
        NDJSON
    } else {
        "application/json"
    };
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

fn upstream_error(message: &str) -> Response {
    error(
        StatusCode::BAD_GATEWAY,
        &format!("The participant's model server gave an answer the room cannot read: {message}"),
    )
}

/// The OpenAI plane's answer in Ollama's shape.
async fn answer(response: Response, call: Call, asked: &str, stream: bool, started: Instant) -> Response {
    if !response.status().is_success() {
        return reshape(response, Some(asked)).await;
    }
    // An Ollama provider's own answer is already in Ollama's shape.
    if response.extensions().get::<NativeAnswer>().is_some() {
        return response;
    }
    let kind = if matches!(call, Call::Generate) { Kind::Generate } else { Kind::Chat };
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
    if is_sse && matches!(call, Call::Chat | Call::Generate) {
        return ndjson_stream(response, kind, asked, started);
    }
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await else {
        return upstream_error("it is cut off or too large");
    };
    let clock = Clock { total: started.elapsed(), first_token: None };
    let translated = match call {
        Call::Chat | Call::Generate => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| format!("it is not JSON ({e})"))
            .and_then(|completion| compat::chat_answer(&completion, kind, asked, &clock))
            .map(|v| v.to_string()),
        Call::Embed => compat::embed_answer(&bytes, asked, &clock),
        Call::Embeddings => compat::embeddings_answer(&bytes),
    };
    match translated {
        Ok(text) => whole(text, stream),
        Err(message) => upstream_error(&message),
    }
}

/// A chat stream (SSE) relayed as NDJSON: each chunk's line goes out as soon as the chunk is in.
fn ndjson_stream(response: Response, kind: Kind, asked: &str, started: Instant) -> Response {
    let lines = Lines {
        body: response.into_body().into_data_stream(),
        parser: SseParser::new(),
        translator: NdjsonTranslator::new(kind, asked),
        started,
        ended: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(lines, Lines::next));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The NDJSON body being written. Dropping it (the client went away) drops the inference plane's
/// stream under it, which frees the participant and cancels the provider's call.
struct Lines {
    body: BodyDataStream,
    parser: SseParser,
    translator: NdjsonTranslator,
    started: Instant,
    ended: bool,
}

impl Lines {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Lines)> {
        loop {
            if self.ended {
                return None;
            }
            // After the last line the stream is still read to its end, so the plane under it ends
            // as a completed answer rather than as a client that went away.
            let lines = match self.body.next().await {
                Some(Ok(bytes)) => {
                    let frames = self.parser.push(&bytes);
                    self.translate(frames)
                }
                Some(Err(e)) => {
                    self.ended = true;
                    if self.translator.is_finished() {
                        Vec::new()
                    } else {
                        vec![self.translator.fail(&format!("the answer was cut off: {e}"))]
                    }
                }
                None => {
                    self.ended = true;
                    let frames = self.parser.finish();
                    let mut lines = self.translate(frames);
                    lines.extend(self.translator.finish(self.started.elapsed()));
                    lines
                }
            };
            if !lines.is_empty() {
                return Some((Ok(Bytes::from(compat::ndjson(&lines))), self));
            }
        }
    }

    fn translate(&mut self, frames: Vec<SseFrame>) -> Vec<Value> {
        let mut lines = Vec::new();
        for frame in frames {
            if self.translator.is_finished() {
                break;
            }
            let data = frame.data.trim();
            if frame.event.as_deref() == Some("error") {
                let (message, _) = compat::error_words(data.as_bytes());
                lines.push(self.translator.fail(&message));
                continue;
            }
            if data == "[DONE]" {
                lines.extend(self.translator.finish(self.started.elapsed()));
                continue;
            }
            match serde_json::from_str::<Value>(data) {
                Ok(chunk) if chunk.get("error").is_some() => {
                    let (message, _) = compat::error_words(data.as_bytes());
                    lines.push(self.translator.fail(&message));
                }
                Ok(chunk) => lines.extend(self.translator.push(&chunk, self.started.elapsed())),
                // Not a chunk (a provider's note): nothing for the client.
                Err(_) => {}
            }
        }
        lines
    }
}
