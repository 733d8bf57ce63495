//! `/rooms/:code/v1/*`: the room as one OpenAI endpoint. A request is routed on its `model`, waits
//! for a free participant if all are busy, is rewritten for the participant (real model name, merged
//! config, instructions), and its answer is relayed as it comes — translated from a chat completion
//! when the participant has no Responses API. Errors before the answer starts are OpenAI-shaped;
//! once streaming, a failure ends the stream with an SSE `error` event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::FutureExt as _;
use serde_json::{json, Map, Value};

use crate::hub::body::read_body_held;
use crate::hub::error::{HubError, OpenAiError};
use crate::hub::registry::{Acquire, ParticipantRecord, Selector, Slot};
use crate::hub::routes::v1::bearer;
use crate::hub::routes::{room_code, ClientAddr, Params};
use crate::hub::Hub;
use crate::protocol::events::{EventKind, LlmMetrics};
use crate::protocol::{now_ms, Capabilities, Capability, ParticipantStatus};

use super::merge;
use super::request::RawObject;
use super::responses_compat::{self, StreamTranslator};
use super::responses_index::Owner;
use super::sse_parse::{self, SseParser};
use super::upstream::{self, Call, OpenFailure, Upstream};

type Result<T> = std::result::Result<T, OpenAiError>;
type P<T> = Params<T, OpenAiError>;

/// Largest non-streamed answer the hub buffers.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

pub fn router() -> Router<Hub> {
    Router::new()
        .route("/rooms/{code}/v1/models", get(models))
        .route("/rooms/{code}/v1/chat/completions", post(chat_completions))
        .route("/rooms/{code}/v1/responses", post(responses))
        .route("/rooms/{code}/v1/responses/{id}", get(get_response).delete(delete_response))
        .route("/rooms/{code}/v1/responses/{id}/cancel", post(cancel_response))
        .route("/rooms/{code}/v1/responses/{id}/input_items", get(input_items))
}

/// A protected room protects its models too: every call needs `Authorization: Bearer <room
/// password>`, the API key any OpenAI client sends. Checked before the body is read; rooms without
/// a password (and codes that name no room, which the handler answers) pass through.
pub async fn room_key(
    State(hub): State<Hub>,
    ClientAddr(client): ClientAddr,
    params: std::result::Result<
        axum::extract::Path<std::collections::HashMap<String, String>>,
        axum::extract::rejection::PathRejection,
    >,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let code = params.ok().and_then(|p| p.0.get("code").and_then(|c| room_code(c).ok()));
    let Some(code) = code else { return next.run(req).await };
    match hub.registry().password_hash(&code) {
        Ok(Some(_)) => {}
        _ => return next.run(req).await,
    }
    let Some(key) = bearer(req.headers()).map(str::to_string) else {
        return OpenAiError(HubError::RoomKeyRequired).into_response();
    };
    match hub.check_password(&code, Some(key), client).await {
        Ok(()) => next.run(req).await,
        Err(HubError::InvalidPassword) => OpenAiError(HubError::RoomKeyRequired).into_response(),
        Err(e) => OpenAiError(e).into_response(),
    }
}

/// True for paths of this plane, so unknown ones get an OpenAI-shaped 404.
pub fn is_inference_path(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    parts.next() == Some("rooms") && parts.next().is_some() && parts.next() == Some("v1")
}

async fn models(State(hub): State<Hub>, P { 0: code, .. }: P<String>) -> Result<Json<Value>> {
    let code = room_code(&code)?;
    let participants = hub.registry().participants(&code)?;
    let data: Vec<Value> = participants
        .into_iter()
        .filter(|p| {
            !matches!(p.status, ParticipantStatus::Offline | ParticipantStatus::Paused) && p.connection.connected
        })
        .map(|p| {
            json!({
                "id": p.id,
                "object": "model",
                "created": p.joined_at / 1000,
                "owned_by": p.nickname,
                "gambi": {
                    "nickname": p.nickname,
                    "model": p.model,
                    "capabilities": p.capabilities,
                    "connection": p.connection,
                    "status": p.status,
                },
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Chat,
    Responses,
}

impl Op {
    fn operation(self) -> &'static str {
        match self {
            Op::Chat => "chat.completions",
            Op::Responses => "responses.create",
        }
    }
}

async fn chat_completions(State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request) -> Response {
    infer(hub, code, Op::Chat, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn responses(State(hub): State<Hub>, P { 0: code, .. }: P<String>, req: Request) -> Response {
    infer(hub, code, Op::Responses, req).await.unwrap_or_else(IntoResponse::into_response)
}

fn bad(message: impl Into<String>) -> HubError {
    HubError::InvalidRequest { message: message.into(), hint: None }
}

/// The parts of a request every step needs.
struct Job {
    hub: Hub,
    code: String,
    op: Op,
    /// The request as the client sent it, field by field as text (see `request`).
    request: RawObject,
    /// For the Responses fallback: the request's settings and input as value trees, built once
    /// when a participant first needs the translation (and its memory held with the body's).
    tree: std::sync::OnceLock<Tree>,
    stream: bool,
    /// The client asked for the usage chunk itself (else the hub asks and hides it).
    client_wants_usage: bool,
    request_id: String,
    /// The request body's share of the hub's body memory, given back with the job.
    body: std::sync::Mutex<crate::hub::memory::BodyHold>,
}

/// A Responses request's settings (every field but `input`) parsed for translation; the input is
/// translated from its text, item by item (`responses_compat::request_parts_to_chat_text`).
struct Tree {
    settings: Map<String, Value>,
}

impl Job {
    /// The request's settings as a tree, parsed the first time it is asked for. What that takes,
    /// and the chat body the translation writes (about the input's size), is held against the
    /// body budget first: a request that would not fit is refused, not translated.
    fn tree(&self) -> std::result::Result<&Tree, HubError> {
        if let Some(tree) = self.tree.get() {
            return Ok(tree);
        }
        let settings_text = self.request.text_except("input");
        let input_text = self.request.raw("input").unwrap_or("null");
        let measure =
            |text: &[u8]| crate::hub::unique_keys::measure(text).map(|s| s.parsed_bytes()).unwrap_or(text.len());
        let cost = measure(&settings_text).saturating_add(input_text.len());
        {
            let mut hold = self.body.lock().unwrap_or_else(|p| p.into_inner());
            let held = hold.held();
            hold.grow_to(held.saturating_add(cost))?;
        }
        let tree = Tree { settings: self.request.values_except("input") };
        Ok(self.tree.get_or_init(|| tree))
    }

    /// The settings of a translated request (empty before [`Job::tree`] was built).
    fn settings(&self) -> Value {
        Value::Object(self.tree.get().map(|t| t.settings.clone()).unwrap_or_default())
    }

    /// What the hub keeps of a response it translated: the answer and the input's items.
    fn kept(&self, response: Bytes) -> Owner {
        Owner::local_from_text(self.code.clone(), response, self.request.raw("input"))
    }

    fn publish(&self, kind: EventKind) {
        self.hub.registry().bus().publish(&self.code, kind);
    }

    fn error_event(&self, p: &ParticipantRecord, stage: &str, error: &HubError) {
        self.publish(EventKind::LlmError {
            request_id: self.request_id.clone(),
            participant_id: p.public.id.clone(),
            model: p.public.model.clone(),
            stage: stage.into(),
            error: error.message(),
        });
    }
}

async fn infer(hub: Hub, code: String, op: Op, req: Request) -> Result<Response> {
    let code = room_code(&code)?;
    let limit = hub.config().inference_body_limit;
    // The body's memory stays held until the answer has been relayed (the request is kept that long).
    let (bytes, _shape, mut body_hold) = read_body_held(req, &(), limit).await?;
    let bytes = bytes.ok_or_else(|| bad("The request body is empty; send a JSON object."))?;
    // Kept as text, field by field: no tree of the whole body is built (see `request`).
    let request = RawObject::parse(bytes).map_err(|_| bad("The request body must be a JSON object."))?;
    body_hold.grow_to(request.held_bytes())?;
    let model = match request.raw("model") {
        None | Some("null") => None,
        Some(text) if text.starts_with('"') => {
            serde_json::from_str::<String>(text).ok().map(|m| m.trim().to_string()).filter(|m| !m.is_empty())
        }
        Some(_) => return Err(bad("'model' must be a string.").into()),
    };
    let model =
        model.ok_or_else(|| bad("You must provide a model parameter ('*', 'model:<name>' or a participant id)."))?;
    if op == Op::Chat && !request.is_array("messages") {
        return Err(bad("'messages' must be an array of chat messages.").into());
    }
    let stream = match request.raw("stream") {
        None | Some("null") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("'stream' must be true or false.").into()),
    };
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: Option<bool>,
    }
    let client_wants_usage = request
        .get::<StreamOptions>("stream_options")
        .and_then(std::result::Result::ok)
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let defaults = hub.registry().room_defaults(&code)?;
    let selector = Selector::parse(&model);
    let mut slot = match hub.registry().acquire(&code, &selector)? {
        Acquire::Ready(slot) => slot,
        Acquire::Wait(ticket) => ticket.wait(hub.config().queue_wait).await?,
    };
    let job = Job {
        hub: hub.clone(),
        code,
        op,
        request,
        tree: std::sync::OnceLock::new(),
        stream,
        client_wants_usage,
        request_id: format!("chatreq_{}", uuid::Uuid::new_v4().simple()),
        body: std::sync::Mutex::new(body_hold),
    };
    // Failover only where the client let the hub choose: never away from a participant it named.
    let may_fail_over = !matches!(&selector, Selector::Named(n) if *n == slot.participant().public.id);
    let mut failed_over = false;
    loop {
        let p = slot.participant().clone();
        let config = merge::layered(defaults.as_ref(), &p.config);
        job.publish(EventKind::LlmRequest {
            request_id: job.request_id.clone(),
            participant_id: p.public.id.clone(),
            model: p.public.model.clone(),
            operation: op.operation().into(),
            caller: crate::hub::stats::caller(),
        });
        let started = Instant::now();
        let fallback = op == Op::Responses && p.public.capabilities.open_responses == Capability::Unsupported;
        let attempt =
            if fallback { start_fallback(&job, &p, &config).await } else { start_direct_op(&job, &p, &config).await };
        let outcome = match attempt {
            // A provider without the Responses API: remember it, and translate on this participant.
            Ok(up) if op == Op::Responses && !fallback && matches!(up.status, 404 | 405 | 501) => {
                let caps = Capabilities { open_responses: Capability::Unsupported, ..p.public.capabilities };
                job.hub.registry().set_capabilities(&job.code, &p.public.id, caps);
                drop(up);
                start_fallback(&job, &p, &config).await.map(|up| (up, true))
            }
            other => other.map(|up| (up, fallback)),
        };
        match outcome {
            Ok((up, _)) if up.status >= 500 && may_fail_over && !failed_over => {
                let next = job.hub.registry().try_acquire(&job.code, &selector, std::slice::from_ref(&p.public.id));
                match next {
                    Some(next) => {
                        let error =
                            HubError::Upstream { stage: "status".into(), message: format!("HTTP {}", up.status) };
                        job.error_event(&p, "status", &error);
                        drop(up);
                        slot = next;
                        failed_over = true;
                        continue;
                    }
                    None => return Ok(respond(job, slot, up, started, false).await),
                }
            }
            Ok((up, translated)) => return Ok(respond(job, slot, up, started, translated).await),
            Err(OpenFailure { error, retryable }) => {
                job.error_event(&p, "connect", &error);
                if retryable && may_fail_over && !failed_over {
                    if let Some(next) =
                        job.hub.registry().try_acquire(&job.code, &selector, std::slice::from_ref(&p.public.id))
                    {
                        slot = next;
                        failed_over = true;
                        continue;
                    }
                }
                return Err(error.into());
            }
        }
    }
}

fn call_timeouts(hub: &Hub) -> (std::time::Duration, std::time::Duration) {
    (hub.config().first_byte_timeout, hub.config().idle_timeout)
}

/// Sends the request as the client made it (chat completions or Responses), adapted to `p`.
async fn start_direct_op(
    job: &Job,
    p: &ParticipantRecord,
    config: &crate::protocol::RuntimeConfig,
) -> std::result::Result<Upstream, OpenFailure> {
    let (path, mut body) = match job.op {
        Op::Chat => ("/v1/chat/completions", merge::chat_body(&job.request, &p.public.model, config)),
        Op::Responses => ("/v1/responses", merge::responses_body(&job.request, &p.public.model, config)),
    };
    if job.op == Op::Chat && job.stream && !job.client_wants_usage {
        // Ask for the final usage chunk so the room's metrics have token counts; the relay hides it
        // from a client that did not ask for it.
        let mut options = body.field_object("stream_options").unwrap_or_default();
        options.set("include_usage", &Value::Bool(true));
        body.set_object("stream_options", &options);
    }
    let call = Call {
        operation: job.op.operation(),
        method: reqwest::Method::POST,
        path: path.into(),
        body: Some(body.encode()),
        stream: job.stream,
    };
    let (first_byte, idle) = call_timeouts(&job.hub);
    upstream::open(&job.hub, &job.code, p, call, first_byte, idle).await
}

/// Sends a Responses request to `p` as a chat completion.
async fn start_fallback(
    job: &Job,
    p: &ParticipantRecord,
    config: &crate::protocol::RuntimeConfig,
) -> std::result::Result<Upstream, OpenFailure> {
    let tree = job.tree().map_err(|error| OpenFailure { error, retryable: false })?;
    let adapted = merge::responses_body(&tree.settings, &p.public.model, config);
    let chat =
        responses_compat::request_parts_to_chat_text(&adapted, job.request.raw("input")).map_err(|e| OpenFailure {
            error: HubError::InvalidRequest {
                message: format!(
                    "This participant's model server has no Responses API, and the request cannot be translated: {e}"
                ),
                hint: Some("Use /chat/completions, or pick a participant whose server supports /v1/responses.".into()),
            },
            retryable: false,
        })?;
    let call = Call {
        operation: "chat.completions",
        method: reqwest::Method::POST,
        path: "/v1/chat/completions".into(),
        body: Some(Bytes::from(chat)),
        stream: job.stream,
    };
    let (first_byte, idle) = call_timeouts(&job.hub);
    upstream::open(&job.hub, &job.code, p, call, first_byte, idle).await
}

/// Token counts from a chat completion's or a response's `usage`.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    input: Option<u64>,
    output: Option<u64>,
    total: Option<u64>,
}

impl Usage {
    fn from_value(usage: &Value) -> Option<Usage> {
        let usage = usage.as_object()?;
        let n = |k: &str| usage.get(k).and_then(Value::as_u64);
        let input = n("prompt_tokens").or_else(|| n("input_tokens"));
        let output = n("completion_tokens").or_else(|| n("output_tokens"));
        let total = n("total_tokens").or_else(|| Some(input? + output?));
        (input.is_some() || output.is_some()).then_some(Usage { input, output, total })
    }
}

fn metrics(started: Instant, first_byte: Option<Instant>, usage: Usage) -> LlmMetrics {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let duration_ms = ms(started.elapsed());
    let ttft_ms = first_byte.map_or(duration_ms, |t| ms(t.duration_since(started)));
    let generation_ms = (duration_ms - ttft_ms).max(0.0);
    // Tokens per second of generation (after the first token); a non-streamed answer arrives at
    // once, so its rate is over the whole call.
    let basis_ms = if generation_ms >= 1.0 { generation_ms } else { duration_ms };
    let tokens_per_second = usage.output.filter(|_| basis_ms > 0.0).map(|o| o as f64 / (basis_ms / 1000.0));
    LlmMetrics {
        ttft_ms: (ttft_ms * 100.0).round() / 100.0,
        duration_ms: (duration_ms * 100.0).round() / 100.0,
        input_tokens: usage.input,
        output_tokens: usage.output,
        total_tokens: usage.total,
        tokens_per_second: tokens_per_second.map(|t| (t * 100.0).round() / 100.0),
    }
}

fn headers_for(response: &mut Response, content_type: Option<&str>, stream: bool) {
    let h = response.headers_mut();
    let ct = content_type.unwrap_or(if stream { "text/event-stream" } else { "application/json" });
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if stream {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
}

/// Relays an answer that has started.
async fn respond(job: Job, slot: Slot, mut up: Upstream, started: Instant, translated: bool) -> Response {
    let status = StatusCode::from_u16(up.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let ok = status.is_success();
    let p = slot.participant().clone();
    if !job.stream || !ok {
        let first = Instant::now();
        let body = match up.collect(MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                job.error_event(&p, "stream", &e);
                return OpenAiError(e).into_response();
            }
        };
        drop(slot);
        if !ok {
            let error = HubError::Upstream { stage: "status".into(), message: format!("HTTP {}", up.status) };
            job.error_event(&p, "status", &error);
            let mut response = (status, body).into_response();
            headers_for(&mut response, up.content_type().or(Some("application/json")), false);
            return response;
        }
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let (body, value) = match (translated, parsed) {
            (true, Some(chat)) => {
                let id = responses_compat::new_response_id();
                let response = responses_compat::chat_to_response(&chat, &job.settings(), &id);
                let body = Bytes::from(response.to_string());
                job.hub.responses().remember(&id, job.kept(body.clone()));
                (body, Some(response))
            }
            // A success that is not JSON is never an OpenAI answer: a clean 502, not garbage.
            (_, None) => {
                let error = HubError::Upstream { stage: "decode".into(), message: "the answer is not JSON".into() };
                job.error_event(&p, "decode", &error);
                return OpenAiError(error).into_response();
            }
            (false, parsed) => (body, parsed),
        };
        if job.op == Op::Responses && !translated {
            // The id comes from the participant and goes into later paths: only a plain one is kept.
            let id = value.as_ref().and_then(|v| v.get("id")).and_then(Value::as_str).filter(|id| is_plain_id(id));
            if let Some(id) = id {
                job.hub
                    .responses()
                    .remember(id, Owner::Participant { code: job.code.clone(), participant_id: p.public.id.clone() });
            }
        }
        let usage = value.as_ref().and_then(|v| v.get("usage")).and_then(Usage::from_value).unwrap_or_default();
        job.publish(EventKind::LlmComplete {
            request_id: job.request_id.clone(),
            participant_id: p.public.id.clone(),
            model: p.public.model.clone(),
            metrics: metrics(started, Some(first), usage),
        });
        let mut response = (status, body).into_response();
        let ct = if translated { Some("application/json") } else { up.content_type() };
        headers_for(&mut response, ct, false);
        return response;
    }
    let content_type = if translated { None } else { up.content_type().map(str::to_string) };
    let mode = if translated {
        let translator = StreamTranslator::new(&job.settings(), responses_compat::new_response_id(), now_ms() / 1000);
        Mode::Translate { parser: SseParser::new(), translator: Box::new(translator), started: false }
    } else {
        Mode::Pass { parser: SseParser::new(), strip_usage: job.op == Op::Chat && !job.client_wants_usage }
    };
    let slot = Arc::new(std::sync::Mutex::new(Some(slot)));
    let reader = Arc::new(ReaderClock::default());
    spawn_reader_watchdog(slot.clone(), reader.clone(), job.hub.config().idle_timeout, p.public.id.clone());
    let relay = Relay {
        job,
        participant: p,
        slot,
        reader,
        upstream: up,
        started,
        first_byte: None,
        mode,
        pending: VecDeque::new(),
        usage: Usage::default(),
        done: false,
        reported: false,
        frames_seen: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(relay, Relay::next));
    let mut response = (status, body).into_response();
    headers_for(&mut response, content_type.as_deref(), true);
    response
}

enum Mode {
    /// The provider's bytes go to the client as they are (re-framed only to hide the usage chunk
    /// the hub asked for); a parser reads along for usage and response ids.
    Pass { parser: SseParser, strip_usage: bool },
    /// Chat chunks in, Responses events out.
    Translate { parser: SseParser, translator: Box<StreamTranslator>, started: bool },
}

/// A streaming answer on its way to the client. Holds the participant's slot until the stream
/// ends or the client goes away (dropping it frees the slot and cancels the provider call).
struct Relay {
    job: Job,
    participant: ParticipantRecord,
    /// The participant's place, held while the provider is answering and given back the moment
    /// its answer ends (or fails), or when the client stops reading (see
    /// [`spawn_reader_watchdog`]): a client that reads slowly, or never, must not keep the
    /// participant busy.
    slot: Arc<std::sync::Mutex<Option<Slot>>>,
    reader: Arc<ReaderClock>,
    upstream: Upstream,
    started: Instant,
    first_byte: Option<Instant>,
    mode: Mode,
    pending: VecDeque<Bytes>,
    usage: Usage,
    done: bool,
    /// `llm.complete` or `llm.error` was published.
    reported: bool,
    /// The provider's stream held at least one SSE frame: one that ends without any was not an
    /// event stream at all, and ends with an error event rather than as a success.
    frames_seen: bool,
}

impl Relay {
    async fn next(self) -> Option<(std::result::Result<Bytes, Infallible>, Relay)> {
        self.reader.asked();
        let item = self.next_inner().await;
        if let Some((_, relay)) = &item {
            relay.reader.handed();
        }
        item
    }

    fn release_slot(&self) {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    async fn next_inner(mut self) -> Option<(std::result::Result<Bytes, Infallible>, Relay)> {
        loop {
            if !self.pending.is_empty() {
                // Everything ready goes out as one write, not one syscall per SSE frame.
                let out = if self.pending.len() == 1 {
                    self.pending.pop_front().unwrap_or_default()
                } else {
                    let mut joined = bytes::BytesMut::with_capacity(self.pending.iter().map(Bytes::len).sum());
                    for b in self.pending.drain(..) {
                        joined.extend_from_slice(&b);
                    }
                    joined.freeze()
                };
                return Some((Ok(out), self));
            }
            if self.done {
                return None;
            }
            if let Mode::Translate { translator, started: started @ false, .. } = &mut self.mode {
                *started = true;
                for event in translator.start() {
                    self.pending.push_back(event.to_sse());
                }
                continue;
            }
            match self.upstream.next_chunk().await {
                Ok(Some(bytes)) => {
                    self.first_byte.get_or_insert_with(Instant::now);
                    self.take(bytes);
                    // Gather what has already arrived behind it.
                    for _ in 0..256 {
                        match self.upstream.next_chunk().now_or_never() {
                            Some(Ok(Some(more))) => self.take(more),
                            Some(Ok(None)) => {
                                self.finish();
                                break;
                            }
                            Some(Err(e)) => {
                                self.fail(e);
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Ok(None) => self.finish(),
                Err(e) => self.fail(e),
            }
        }
    }

    fn take(&mut self, bytes: Bytes) {
        if let Mode::Pass { parser, strip_usage } = &mut self.mode {
            let frames = parser.push(&bytes);
            self.frames_seen |= !frames.is_empty();
            let strip = *strip_usage;
            self.pass(frames, strip, bytes);
            return;
        }
        if let Mode::Translate { parser, translator, .. } = &mut self.mode {
            for frame in parser.push(&bytes) {
                if frame.data.trim() == "[DONE]" {
                    continue;
                }
                if let Ok(chunk) = serde_json::from_str::<Value>(&frame.data) {
                    for event in translator.push(&chunk) {
                        self.pending.push_back(event.to_sse());
                    }
                }
            }
        }
    }

    fn pass(&mut self, frames: Vec<sse_parse::SseFrame>, strip_usage: bool, bytes: Bytes) {
        if !strip_usage {
            self.pending.push_back(bytes);
        }
        for frame in frames {
            // Most frames are content deltas: only the few that can carry usage or a response id
            // are parsed, so relaying stays a byte copy.
            let interesting = frame.data.contains("\"usage\"") || frame.data.contains("\"response\"");
            let mut usage_only = false;
            if interesting {
                if let Ok(v) = serde_json::from_str::<Value>(&frame.data) {
                    usage_only = v.get("usage").is_some_and(|u| !u.is_null())
                        && v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
                    self.observe(&v);
                }
            }
            if strip_usage && !usage_only {
                self.pending.push_back(sse_parse::encode(frame.event.as_deref(), &frame.data));
            }
        }
    }

    /// Reads usage and response ids from a frame of the provider's stream.
    fn observe(&mut self, v: &Value) {
        if let Some(u) = v.get("usage").and_then(Usage::from_value) {
            self.usage = u;
        }
        if let Some(response) = v.get("response") {
            if let Some(u) = response.get("usage").and_then(Usage::from_value) {
                self.usage = u;
            }
            if let Some(id) = response.get("id").and_then(Value::as_str) {
                if v.get("type").and_then(Value::as_str) == Some("response.created") {
                    self.job.hub.responses().remember(
                        id,
                        Owner::Participant {
                            code: self.job.code.clone(),
                            participant_id: self.participant.public.id.clone(),
                        },
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.release_slot();
        match &mut self.mode {
            Mode::Pass { parser, strip_usage } => {
                let last = parser.finish();
                if !self.frames_seen && last.is_empty() {
                    let error = HubError::Upstream {
                        stage: "stream".into(),
                        message: "the answer is not an event stream".into(),
                    };
                    return self.fail(error);
                }
                for frame in last {
                    if *strip_usage {
                        self.pending.push_back(sse_parse::encode(frame.event.as_deref(), &frame.data));
                    }
                }
            }
            Mode::Translate { parser, translator, .. } => {
                for frame in parser.finish() {
                    if let Ok(chunk) = serde_json::from_str::<Value>(&frame.data) {
                        for event in translator.push(&chunk) {
                            self.pending.push_back(event.to_sse());
                        }
                    }
                }
                for event in translator.finish() {
                    if event.event_type == "response.completed" {
                        if let Some(response) = event.data.get("response") {
                            self.job
                                .hub
                                .responses()
                                .remember(translator.response_id(), self.job.kept(Bytes::from(response.to_string())));
                        }
                    }
                    self.pending.push_back(event.to_sse());
                }
                if let Some((input, output, total)) = translator.usage() {
                    self.usage = Usage { input: Some(input), output: Some(output), total: Some(total) };
                }
            }
        }
        self.reported = true;
        self.job.publish(EventKind::LlmComplete {
            request_id: self.job.request_id.clone(),
            participant_id: self.participant.public.id.clone(),
            model: self.participant.public.model.clone(),
            metrics: metrics(self.started, self.first_byte, self.usage),
        });
    }

    fn fail(&mut self, error: HubError) {
        self.done = true;
        self.release_slot();
        let stage = match &error {
            HubError::Upstream { stage, .. } | HubError::UpstreamTimeout { stage } => stage.clone(),
            _ => "stream".into(),
        };
        match &mut self.mode {
            Mode::Translate { translator, .. } => {
                for event in translator.fail(&error.message()) {
                    self.pending.push_back(event.to_sse());
                }
            }
            Mode::Pass { .. } => {
                let body = OpenAiError(error.clone()).body();
                self.pending.push_back(sse_parse::encode(Some("error"), &body.to_string()));
            }
        }
        self.reported = true;
        self.job.error_event(&self.participant, &stage, &error);
    }
}

/// When the client last took a piece of the answer, and whether it is asking for the next one.
#[derive(Default)]
struct ReaderClock {
    /// ms since the epoch when the last piece was handed to the client.
    handed_at: AtomicU64,
    /// The body is being polled for its next piece (waiting on the provider, not on the client).
    asking: AtomicBool,
}

impl ReaderClock {
    fn asked(&self) {
        self.asking.store(true, Ordering::Relaxed);
    }

    fn handed(&self) {
        self.handed_at.store(now_ms(), Ordering::Relaxed);
        self.asking.store(false, Ordering::Relaxed);
    }
}

/// A client that stops reading a stream leaves its body unpolled, so nothing inside the stream can
/// notice. This watchdog does: once a piece has waited on the client for longer than the idle
/// timeout, the participant's slot is given back (the answer may still reach the client later).
fn spawn_reader_watchdog(
    slot: Arc<std::sync::Mutex<Option<Slot>>>,
    reader: Arc<ReaderClock>,
    idle: std::time::Duration,
    participant: String,
) {
    let every = (idle / 4).clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(5));
    let idle_ms = idle.as_millis() as u64;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
            if held.is_none() {
                return;
            }
            let handed = reader.handed_at.load(Ordering::Relaxed);
            let stalled =
                handed > 0 && !reader.asking.load(Ordering::Relaxed) && now_ms().saturating_sub(handed) > idle_ms;
            if stalled {
                held.take();
                tracing::warn!(%participant, "the client stopped reading its stream; its participant is free again");
                return;
            }
        }
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.release_slot();
        if !self.reported {
            let error = HubError::Upstream { stage: "client".into(), message: "the client went away".into() };
            self.job.error_event(&self.participant, "client", &error);
        }
    }
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
fn is_plain_id(id: &str) -> bool {
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

async fn get_response(State(hub): State<Hub>, P { 0: (code, id), .. }: P<(String, String)>) -> Result<Response> {
    response_call(hub, code, id, reqwest::Method::GET, "", "responses.retrieve").await
}

async fn delete_response(State(hub): State<Hub>, P { 0: (code, id), .. }: P<(String, String)>) -> Result<Response> {
    response_call(hub, code, id, reqwest::Method::DELETE, "", "responses.delete").await
}

async fn cancel_response(State(hub): State<Hub>, P { 0: (code, id), .. }: P<(String, String)>) -> Result<Response> {
    response_call(hub, code, id, reqwest::Method::POST, "/cancel", "responses.cancel").await
}

async fn input_items(State(hub): State<Hub>, P { 0: (code, id), .. }: P<(String, String)>) -> Result<Response> {
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
