//! Relaying an answer that has started: a whole answer read and passed on (translated from a chat
//! completion when the request was), or a stream passed on as it comes (its frames copied, the
//! usage chunk the hub asked for hidden, or chat chunks translated into Responses or Messages
//! events). Usage and response ids are read along the way for the room's metrics and the
//! Responses store; `llm.complete` or `llm.error` is published once per answer.
//!
//! An Ollama provider's native answer ([`Form::Native`]) is relayed as it is: JSON, or its NDJSON
//! stream line by line (usage read from the `done` line's `prompt_eval_count` and `eval_count`).
//!
//! A provider that answers a stream request with one JSON document gets its answer replayed as
//! the stream it stands for ([`super::json_stream`]), never JSON with SSE appended. Errors before
//! the answer starts are in the endpoint's error shape; once streaming, a failure ends the stream
//! with an `error` event in that shape.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt as _;
use serde_json::Value;

use crate::hub::error::HubError;
use crate::hub::registry::{ParticipantRecord, Slot};
use crate::protocol::events::{EventKind, LlmMetrics};
use crate::protocol::{now_ms, Endpoint};

use super::answer_head;
use super::json_stream;
use super::messages_compat::{self, MessagesStream};
use super::op::{ErrorShape, Op, Translation};
use super::proxy::Job;
use super::responses_compat::{self, StreamTranslator};
use super::responses_index::Owner;
use super::sse_parse::{self, SseParser};
use super::stored::is_plain_id;
use super::upstream::Upstream;

/// Largest non-streamed answer the hub buffers.
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// What an answer that has started is to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// The provider's answer to the request as it is.
    AsIs,
    /// A chat completion, translated into the endpoint's shape.
    Translated,
    /// An Ollama provider's answer on its own endpoint: relayed as it is, NDJSON streams too.
    Native,
}

/// Token counts from an answer's `usage` (chat and completions, Responses, Messages).
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

    /// An answer's counts as [`answer_head`] read them: `usage` as [`Usage::from_value`] reads it,
    /// else Ollama's as [`Usage::from_ollama`] does.
    fn from_head(head: &answer_head::Head) -> Option<Usage> {
        let from_usage = head.usage.and_then(|u| {
            let input = u.prompt_tokens.or(u.input_tokens);
            let output = u.completion_tokens.or(u.output_tokens);
            let total = u.total_tokens.or_else(|| Some(input? + output?));
            (input.is_some() || output.is_some()).then_some(Usage { input, output, total })
        });
        from_usage.or_else(|| {
            let (input, output) = (head.prompt_eval_count, head.eval_count);
            let total = input.map(|i| i + output.unwrap_or(0));
            (input.is_some() || output.is_some()).then_some(Usage { input, output, total })
        })
    }

    /// Ollama's counts: `prompt_eval_count` and `eval_count` (a native answer, or its `done` line).
    fn from_ollama(answer: &Value) -> Option<Usage> {
        let n = |k: &str| answer.get(k).and_then(Value::as_u64);
        let (input, output) = (n("prompt_eval_count"), n("eval_count"));
        let total = input.map(|i| i + output.unwrap_or(0));
        (input.is_some() || output.is_some()).then_some(Usage { input, output, total })
    }

    /// `newer` over `self`, field by field: Anthropic streams tell input tokens in
    /// `message_start` and output tokens in `message_delta`.
    fn merge(self, newer: Usage) -> Usage {
        let input = newer.input.or(self.input);
        let output = newer.output.or(self.output);
        let total = match (newer.input, newer.output, input, output) {
            (Some(_), Some(_), _, _) => newer.total,
            (_, _, Some(i), Some(o)) => Some(i + o),
            _ => newer.total.or(self.total),
        };
        Usage { input, output, total }
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

pub(super) fn headers_for(response: &mut Response, content_type: Option<&str>, stream: bool) {
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

fn complete(job: &Job, p: &ParticipantRecord, metrics: LlmMetrics) {
    // What routing learns: this participant's first token and speed (`p` is the record as the
    // request found it: whether its model was loaded then).
    let cold = p.loaded() == crate::hub::scheduler::Loaded::No;
    job.hub.registry().observe_speed(
        &job.code,
        &p.public.id,
        metrics.ttft_ms,
        metrics.tokens_per_second,
        metrics.output_tokens,
        cold,
    );
    job.publish(EventKind::LlmComplete {
        request_id: job.request_id.clone(),
        participant_id: p.public.id.clone(),
        model: p.public.model.clone(),
        metrics,
    });
}

/// A stream request answered with one JSON document: the stream it stands for, in place of the
/// body (what `respond` then relays as any stream). `Err` is the answer to give instead.
async fn replay_as_stream(
    job: &Job,
    p: &ParticipantRecord,
    up: &mut Upstream,
    translated: bool,
) -> Result<(), Response> {
    let shape = job.spec.errors;
    let body = match up.collect(MAX_ANSWER_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            job.error_event(p, "stream", &e);
            return Err(shape.render(e));
        }
    };
    let endpoint = if translated { Endpoint::ChatCompletions } else { job.spec.endpoint };
    let answer: Option<Value> = serde_json::from_slice(&body).ok();
    // A 200 whose JSON is an error (some servers do that) fails as one, with its words.
    let in_band = answer.as_ref().and_then(|v| v.get("error")).filter(|e| !e.is_null());
    let error = match (in_band, answer.as_ref().and_then(|a| json_stream::replay(endpoint, a))) {
        (None, Some(stream)) => {
            up.replay(stream, "text/event-stream");
            return Ok(());
        }
        (Some(e), _) => {
            let message = e.get("message").and_then(Value::as_str).or_else(|| e.as_str()).unwrap_or("an error");
            HubError::Upstream { stage: "status".into(), message: message.chars().take(500).collect() }
        }
        (None, None) => HubError::Upstream {
            stage: "decode".into(),
            message: "the answer to a stream request is neither an event stream nor JSON".into(),
        },
    };
    job.error_event(p, "decode", &error);
    Err(shape.render(error))
}

/// Relays an answer that has started.
pub(super) async fn respond(job: Job, slot: Slot, mut up: Upstream, started: Instant, form: Form) -> Response {
    let status = StatusCode::from_u16(up.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let ok = status.is_success();
    let p = slot.participant_shared();
    let translated = form == Form::Translated;
    let native = form == Form::Native;
    if job.stream && ok && !native && !up.is_event_stream() {
        if let Err(answer) = replay_as_stream(&job, &p, &mut up, translated).await {
            return answer;
        }
    }
    if !job.stream || !ok {
        return respond_whole(job, slot, up, started, translated).await;
    }
    let content_type = match form {
        Form::Translated => None,
        Form::AsIs => up.content_type().map(str::to_string),
        Form::Native => Some(up.content_type().unwrap_or("application/x-ndjson").to_string()),
    };
    let mode = match (translated, job.spec.translation) {
        _ if native => Mode::Ndjson { line: Vec::new(), error: None },
        (true, Some(Translation::ResponsesOverChat)) => {
            let translator =
                StreamTranslator::new(&job.settings(), responses_compat::new_response_id(), now_ms() / 1000);
            Mode::Translate { parser: SseParser::new(), translator: Translator::Responses(Box::new(translator)) }
        }
        (true, Some(Translation::MessagesOverChat)) => {
            let stream = MessagesStream::new(messages_compat::new_message_id(), p.public.model.clone());
            Mode::Translate { parser: SseParser::new(), translator: Translator::Messages(Box::new(stream)) }
        }
        _ => Mode::Pass {
            parser: SseParser::new(),
            strip_usage: job.spec.asks_stream_usage() && !job.client_wants_usage,
        },
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
        started_events: false,
        done: false,
        reported: false,
        frames_seen: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(relay, Relay::next));
    let mut response = (status, body).into_response();
    headers_for(&mut response, content_type.as_deref(), true);
    response
}

/// A whole answer (not streamed, or an error): read, then passed on or translated.
async fn respond_whole(job: Job, slot: Slot, mut up: Upstream, started: Instant, translated: bool) -> Response {
    let status = StatusCode::from_u16(up.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let shape = job.spec.errors;
    let p = slot.participant_shared();
    let first = Instant::now();
    let body = match up.collect(MAX_ANSWER_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            job.error_event(&p, "stream", &e);
            return shape.render(e);
        }
    };
    drop(slot);
    if !status.is_success() {
        let error = HubError::Upstream { stage: "status".into(), message: format!("HTTP {}", up.status) };
        job.error_event(&p, "status", &error);
        if shape == ErrorShape::Anthropic {
            // Whatever the provider's words, an Anthropic client reads Anthropic's shape.
            let body = messages_compat::error_from_provider(up.status, &body);
            return (status, axum::Json(body)).into_response();
        }
        let mut response = (status, body).into_response();
        headers_for(&mut response, up.content_type().or(Some("application/json")), false);
        return response;
    }
    let not_json = || {
        // A success that is not JSON is never an answer: a clean 502, not garbage.
        let error = HubError::Upstream { stage: "decode".into(), message: "the answer is not JSON".into() };
        job.error_event(&p, "decode", &error);
        shape.render(error)
    };
    let (body, usage) = match (translated, job.spec.translation) {
        (true, Some(translation)) => {
            let Some(value) = serde_json::from_slice::<Value>(&body).ok() else { return not_json() };
            let (body, value) = match translation {
                Translation::ResponsesOverChat => {
                    let id = responses_compat::new_response_id();
                    let response = responses_compat::chat_to_response(&value, &job.settings(), &id);
                    let body = Bytes::from(response.to_string());
                    job.hub.responses().remember(&id, job.kept(body.clone()));
                    (body, response)
                }
                Translation::MessagesOverChat => {
                    let id = messages_compat::new_message_id();
                    let message = messages_compat::chat_to_message(&value, &p.public.model, &id);
                    (Bytes::from(message.to_string()), message)
                }
            };
            let usage = value
                .get("usage")
                .and_then(Usage::from_value)
                .or_else(|| Usage::from_ollama(&value))
                .unwrap_or_default();
            (body, usage)
        }
        _ => {
            // Relayed as it is: only what the hub needs is read of it (no tree of the answer).
            let Some(head) = answer_head::read(&body) else { return not_json() };
            if job.op == Op::Responses {
                // The id comes from the participant and goes into later paths: only a plain one is kept.
                if let Some(id) = head.id.as_deref().filter(|id| is_plain_id(id)) {
                    job.hub.responses().remember(
                        id,
                        Owner::Participant { code: job.code.clone(), participant_id: p.public.id.clone() },
                    );
                }
            }
            (body, Usage::from_head(&head).unwrap_or_default())
        }
    };
    complete(&job, &p, metrics(started, Some(first), usage));
    let mut response = (status, body).into_response();
    let ct = if translated { Some("application/json") } else { up.content_type() };
    headers_for(&mut response, ct, false);
    response
}

/// A stream of chat chunks being translated for the client.
enum Translator {
    Responses(Box<StreamTranslator>),
    Messages(Box<MessagesStream>),
}

impl Translator {
    fn start(&mut self) -> Vec<Bytes> {
        match self {
            Translator::Responses(t) => t.start().iter().map(|e| e.to_sse()).collect(),
            Translator::Messages(t) => t.start().iter().map(|e| e.to_sse()).collect(),
        }
    }

    fn push(&mut self, chunk: &Value) -> Vec<Bytes> {
        match self {
            Translator::Responses(t) => t.push(chunk).iter().map(|e| e.to_sse()).collect(),
            Translator::Messages(t) => t.push(chunk).iter().map(|e| e.to_sse()).collect(),
        }
    }

    /// The stream's last events; a translated response is kept for its `{id}` routes.
    fn finish(&mut self, job: &Job) -> Vec<Bytes> {
        match self {
            Translator::Responses(t) => {
                let events = t.finish();
                for event in &events {
                    if event.event_type == "response.completed" {
                        if let Some(response) = event.data.get("response") {
                            let kept = job.kept(Bytes::from(response.to_string()));
                            job.hub.responses().remember(t.response_id(), kept);
                        }
                    }
                }
                events.iter().map(|e| e.to_sse()).collect()
            }
            Translator::Messages(t) => t.finish().iter().map(|e| e.to_sse()).collect(),
        }
    }

    fn fail(&mut self, message: &str) -> Vec<Bytes> {
        match self {
            Translator::Responses(t) => t.fail(message).iter().map(|e| e.to_sse()).collect(),
            Translator::Messages(t) => t.fail(message).iter().map(|e| e.to_sse()).collect(),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Translator::Responses(t) => t.usage().map(|(input, output, total)| Usage {
                input: Some(input),
                output: Some(output),
                total: Some(total),
            }),
            Translator::Messages(t) => t.usage().map(|(input, output)| Usage {
                input: Some(input),
                output: Some(output),
                total: Some(input + output),
            }),
        }
    }
}

enum Mode {
    /// The provider's bytes go to the client as they are (re-framed only to hide the usage chunk
    /// the hub asked for); a parser reads along for usage and response ids.
    Pass { parser: SseParser, strip_usage: bool },
    /// Chat chunks in, Responses or Messages events out.
    Translate { parser: SseParser, translator: Translator },
    /// An Ollama NDJSON stream, passed on as it comes; its lines are read along (`line`: the one
    /// not ended yet) for usage and for an error line (`error`: its words).
    Ndjson { line: Vec<u8>, error: Option<String> },
}

/// A streaming answer on its way to the client. Holds the participant's slot until the stream
/// ends or the client goes away (dropping it frees the slot and cancels the provider call).
struct Relay {
    job: Job,
    participant: Arc<ParticipantRecord>,
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
    /// A translation's opening events were sent.
    started_events: bool,
    done: bool,
    /// `llm.complete` or `llm.error` was published.
    reported: bool,
    /// The provider's stream held at least one SSE frame: one that ends without any was not an
    /// event stream at all, and ends with an error event rather than as a success.
    frames_seen: bool,
}

impl Relay {
    async fn next(self) -> Option<(Result<Bytes, Infallible>, Relay)> {
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

    async fn next_inner(mut self) -> Option<(Result<Bytes, Infallible>, Relay)> {
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
            if let Mode::Translate { translator, .. } = &mut self.mode {
                if !self.started_events {
                    self.started_events = true;
                    self.pending.extend(translator.start());
                    continue;
                }
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
        match &mut self.mode {
            Mode::Pass { parser, strip_usage } => {
                let frames = parser.push(&bytes);
                self.frames_seen |= !frames.is_empty();
                let strip = *strip_usage;
                self.pass(frames, strip, bytes);
            }
            Mode::Ndjson { line, error } => {
                let mut lines = Vec::new();
                for piece in bytes.split_inclusive(|b| *b == b'\n') {
                    line.extend_from_slice(piece);
                    if line.ends_with(b"\n") {
                        lines.push(std::mem::take(line));
                    }
                }
                for text in lines {
                    self.frames_seen |= !text.trim_ascii().is_empty();
                    if let Some(usage) = ndjson_line(&text, error) {
                        self.usage = usage;
                    }
                }
                self.pending.push_back(bytes);
            }
            Mode::Translate { parser, translator } => {
                for frame in parser.push(&bytes) {
                    if frame.data.trim() == "[DONE]" {
                        continue;
                    }
                    if let Ok(chunk) = serde_json::from_str::<Value>(&frame.data) {
                        self.pending.extend(translator.push(&chunk));
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

    /// Reads usage and response ids from a frame of the provider's stream: `usage` (chat,
    /// completions, `message_delta`), `response.usage` (Responses), `message.usage`
    /// (`message_start`).
    fn observe(&mut self, v: &Value) {
        for usage in [v.get("usage"), v.pointer("/response/usage"), v.pointer("/message/usage")].into_iter().flatten() {
            if let Some(u) = Usage::from_value(usage) {
                self.usage = self.usage.merge(u);
            }
        }
        if let Some(id) = v.pointer("/response/id").and_then(Value::as_str) {
            if v.get("type").and_then(Value::as_str) == Some("response.created") && is_plain_id(id) {
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
            Mode::Ndjson { line, error } => {
                let last = std::mem::take(line);
                self.frames_seen |= !last.trim_ascii().is_empty();
                if let Some(usage) = ndjson_line(&last, error) {
                    self.usage = usage;
                }
                if !self.frames_seen {
                    let error = HubError::Upstream { stage: "stream".into(), message: "the answer is empty".into() };
                    return self.fail(error);
                }
                if let Some(message) = error.take() {
                    // The provider ended its stream with an error line (passed on as it was).
                    self.reported = true;
                    let error = HubError::Upstream { stage: "stream".into(), message };
                    return self.job.error_event(&self.participant, "stream", &error);
                }
            }
            Mode::Translate { parser, translator } => {
                for frame in parser.finish() {
                    if let Ok(chunk) = serde_json::from_str::<Value>(&frame.data) {
                        self.pending.extend(translator.push(&chunk));
                    }
                }
                self.pending.extend(translator.finish(&self.job));
                if let Some(usage) = translator.usage() {
                    self.usage = usage;
                }
            }
        }
        self.reported = true;
        complete(&self.job, &self.participant, metrics(self.started, self.first_byte, self.usage));
    }

    fn fail(&mut self, error: HubError) {
        self.done = true;
        self.release_slot();
        let stage = match &error {
            HubError::Upstream { stage, .. } | HubError::UpstreamTimeout { stage } => stage.clone(),
            _ => "stream".into(),
        };
        match &mut self.mode {
            Mode::Translate { translator, .. } => self.pending.extend(translator.fail(&error.message())),
            // Ollama ends a stream that failed with an error line.
            Mode::Ndjson { .. } => {
                let line = serde_json::json!({ "error": error.message() });
                self.pending.push_back(Bytes::from(format!("{line}\n")));
            }
            Mode::Pass { .. } => {
                let body = self.job.spec.errors.stream_error(&error);
                self.pending.push_back(sse_parse::encode(Some("error"), &body.to_string()));
            }
        }
        self.reported = true;
        self.job.error_event(&self.participant, &stage, &error);
    }
}

/// Reads one line of an Ollama NDJSON stream: the usage its `done` line carries, and the words of
/// an error line (kept in `error`). Lines of content are not parsed: relaying stays a byte copy.
fn ndjson_line(line: &[u8], error: &mut Option<String>) -> Option<Usage> {
    let text = std::str::from_utf8(line).ok()?;
    if !text.contains("\"done\":true") && !text.contains("\"done\": true") && !text.contains("\"error\"") {
        return None;
    }
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    if let Some(message) = value.get("error").and_then(Value::as_str) {
        *error = Some(message.chars().take(500).collect());
        return None;
    }
    Usage::from_ollama(&value)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_reads_every_shape_and_merges_anthropic_s_halves() {
        let chat = Usage::from_value(&json!({"prompt_tokens": 3, "completion_tokens": 4})).unwrap();
        assert_eq!((chat.input, chat.output, chat.total), (Some(3), Some(4), Some(7)));
        let embeddings = Usage::from_value(&json!({"prompt_tokens": 8, "total_tokens": 8})).unwrap();
        assert_eq!((embeddings.input, embeddings.output, embeddings.total), (Some(8), None, Some(8)));
        let start = Usage::from_value(&json!({"input_tokens": 10, "output_tokens": 1})).unwrap();
        let delta = Usage::from_value(&json!({"output_tokens": 6})).unwrap();
        let merged = Usage::default().merge(start).merge(delta);
        assert_eq!((merged.input, merged.output, merged.total), (Some(10), Some(6), Some(16)));
        assert!(Usage::from_value(&json!({})).is_none());
        let ollama = Usage::from_ollama(&json!({"done": true, "prompt_eval_count": 26, "eval_count": 290})).unwrap();
        assert_eq!((ollama.input, ollama.output, ollama.total), (Some(26), Some(290), Some(316)));
    }

    #[test]
    fn an_answer_s_head_gives_the_usage_its_tree_gave() {
        let answers = [
            json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
            json!({"usage": {"prompt_tokens": 8, "total_tokens": 8}}),
            json!({"usage": {"input_tokens": 10, "output_tokens": 1}}),
            json!({"usage": {"total_tokens": 5}, "prompt_eval_count": 2}),
            json!({"usage": "x", "prompt_eval_count": 26, "eval_count": 290}),
            json!({"eval_count": 7}),
            json!({"usage": {}}),
            json!({}),
            json!([1]),
        ];
        for answer in answers {
            let tree = answer.get("usage").and_then(Usage::from_value).or_else(|| Usage::from_ollama(&answer));
            let head = answer_head::read(answer.to_string().as_bytes()).unwrap();
            let scanned = Usage::from_head(&head);
            let fields = |u: Option<Usage>| u.map(|u| (u.input, u.output, u.total));
            assert_eq!(fields(scanned), fields(tree), "{answer}");
        }
    }

    #[test]
    fn ndjson_lines_give_the_done_line_s_usage_and_an_error_line_s_words() {
        let mut error = None;
        assert!(ndjson_line(br#"{"message":{"content":"hi"},"done":false}"#, &mut error).is_none());
        let done = ndjson_line(b"{\"done\":true,\"prompt_eval_count\":3,\"eval_count\":5}\n", &mut error).unwrap();
        assert_eq!((done.input, done.output), (Some(3), Some(5)));
        assert!(ndjson_line(br#"{"error":"model 'x' not found"}"#, &mut error).is_none());
        assert_eq!(error.as_deref(), Some("model 'x' not found"));
        assert!(ndjson_line(b"not json", &mut error).is_none());
    }
}
