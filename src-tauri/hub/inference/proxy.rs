//! One inference request against a room, for any endpoint of [`Op`]: the body read and checked,
//! a participant chosen (waiting in the room's queue while every match is busy) among those not
//! known to lack the endpoint, the request adapted to it and sent, translated to a chat completion
//! when its provider lacks the endpoint and the endpoint has a translation, and its answer handed
//! to the relay ([`super::relay`]).
//!
//! What a participant's provider serves is learned as requests go: a 404, 405 or 501 that says
//! the endpoint is missing marks it `unsupported` for that participant, and the request is
//! translated there or routed to another participant that may serve it. Failover otherwise
//! happens once, on a failure to connect or a 5xx, and never away from a participant the client
//! named.
//!
//! [`run_with_native`] is the entry point for other surfaces of a room (the Ollama API): it takes an
//! OpenAI-shaped (or Anthropic-shaped, for [`Op::Messages`]) body and answers as the route would.
//! It takes the request's native Ollama form beside it: a participant whose
//! provider is Ollama (`capabilities.ollama`) gets that, as it is, on its own `/api/...` endpoint,
//! and its answer is relayed untouched (marked [`NativeAnswer`]); any other gets the OpenAI form.

use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::hub::body::read_body_held;
use crate::hub::error::HubError;
use crate::hub::memory::BodyHold;
use crate::hub::metrics::waited;
use crate::hub::registry::{Acquire, Need, ParticipantRecord, Selector, Slot, WaitTicket};
use crate::hub::routes::room_code;
use crate::hub::Hub;
use crate::protocol::events::EventKind;
use crate::protocol::{Capability, ConnectionKind, Endpoint, RuntimeConfig};

pub(crate) use super::merge::OllamaCall;

use super::merge;
use super::messages_compat;
use super::op::{self, Op, OpSpec, Translation};
use super::queued;
use super::relay::{self, Form};
use super::request::RawObject;
use super::responses_compat;
use super::responses_index::Owner;
use super::upstream::{self, Call, OpenFailure, Upstream};

/// How many times one request may find an endpoint missing and move on (each time a participant
/// is marked, so the routing that follows skips it).
const MAX_LEARNED: usize = 16;

/// Largest error answer read to tell a missing endpoint from a missing model.
const MAX_PEEK_BYTES: usize = 64 * 1024;

fn bad(message: impl Into<String>) -> HubError {
    HubError::InvalidRequest { message: message.into(), hint: None }
}

/// The parts of a request every step needs.
pub(super) struct Job {
    pub hub: Hub,
    pub code: String,
    pub op: Op,
    pub spec: &'static OpSpec,
    /// The request as the client sent it, field by field as text (see `request`).
    pub request: RawObject,
    /// For a translation: the request's fields as value trees, built once when a participant
    /// first needs it (and its memory held with the body's).
    tree: std::sync::OnceLock<Tree>,
    pub stream: bool,
    /// The client asked for the usage chunk itself (else the hub asks and hides it).
    pub client_wants_usage: bool,
    pub request_id: String,
    /// The request body's share of the hub's body memory, given back with the job.
    body: std::sync::Mutex<BodyHold>,
    /// The request as an Ollama provider takes it natively (the Ollama surface's requests).
    native: Option<Native>,
}

/// An Ollama request in its own shape, for a participant whose provider is Ollama.
struct Native {
    call: OllamaCall,
    request: RawObject,
    /// Only an Ollama participant can serve it (the OpenAI form is a stand-in).
    only: bool,
}

/// A request's native Ollama form, for [`run_with_native`].
pub(crate) struct NativeForm {
    pub call: OllamaCall,
    /// The body as the client sent it.
    pub text: Bytes,
    /// No translation can carry it: routed only to participants whose provider is Ollama.
    pub only: bool,
}

/// Marks an answer that came from an Ollama provider's own endpoint, relayed as it is (for the
/// Ollama surface not to translate it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NativeAnswer;

/// A translated request's fields parsed: for Responses every field but `input` (the input is
/// translated from its text, item by item: `responses_compat::request_parts_to_chat_text`); for
/// Messages the whole body.
struct Tree {
    settings: Map<String, Value>,
}

impl Job {
    /// The request's fields as a tree, parsed the first time it is asked for. What that takes,
    /// and the chat body the translation writes (about the request's size), is held against the
    /// body budget first: a request that would not fit is refused, not translated.
    fn tree(&self) -> Result<&Tree, HubError> {
        if let Some(tree) = self.tree.get() {
            return Ok(tree);
        }
        let measure =
            |text: &[u8]| crate::hub::unique_keys::measure(text).map(|s| s.parsed_bytes()).unwrap_or(text.len());
        // Responses: the settings without `input`, which is translated from its text.
        let except = (self.spec.translation == Some(Translation::ResponsesOverChat)).then_some("input");
        let cost = match except {
            Some(input) => {
                measure(&self.request.text_except(input)).saturating_add(self.request.raw(input).map_or(0, str::len))
            }
            None => {
                let text = self.request.encode();
                measure(&text).saturating_add(text.len())
            }
        };
        {
            let mut hold = self.body.lock().unwrap_or_else(|p| p.into_inner());
            let held = hold.held();
            hold.grow_to(held.saturating_add(cost))?;
        }
        let settings = match except {
            Some(input) => self.request.values_except(input),
            None => self.request.values(),
        };
        let tree = Tree { settings };
        Ok(self.tree.get_or_init(|| tree))
    }

    /// The settings of a translated request (empty before [`Job::tree`] was built).
    pub fn settings(&self) -> Value {
        Value::Object(self.tree.get().map(|t| t.settings.clone()).unwrap_or_default())
    }

    /// What the hub keeps of a response it translated: the answer and the input's items.
    pub fn kept(&self, response: Bytes) -> Owner {
        Owner::local_from_text(self.code.clone(), response, self.request.raw("input"))
    }

    pub fn publish(&self, kind: EventKind) {
        self.hub.registry().bus().publish(&self.code, kind);
    }

    pub fn error_event(&self, p: &ParticipantRecord, stage: &str, error: &HubError) {
        self.publish(EventKind::LlmError {
            request_id: self.request_id.clone(),
            participant_id: p.public.id.clone(),
            model: p.public.model.clone(),
            stage: stage.into(),
            error: error.message(),
        });
    }
}

/// Reads the body of `req` and runs it as `op` against room `code`; errors in the endpoint's shape.
pub(super) async fn infer(hub: Hub, code: String, op: Op, req: Request) -> Response {
    let shape = op.spec().errors;
    let limit = hub.config().inference_body_limit;
    // The body's memory stays held until the answer has been relayed (the request is kept that long).
    let (bytes, hold) = match read_body_held(req, &(), limit).await {
        Ok((bytes, _shape, hold)) => (bytes, hold),
        Err(e) => return shape.render(e),
    };
    let Some(bytes) = bytes else {
        return shape.render(bad("The request body is empty; send a JSON object."));
    };
    run_noting(hub, &code, op, bytes, hold, QueueNotes::Sse).await.unwrap_or_else(|e| shape.render(e))
}

/// [`run_full`], telling a streaming request that waits its place in line as `notes` says.
pub(crate) async fn run_noting(
    hub: Hub,
    code: &str,
    op: Op,
    body: Bytes,
    hold: BodyHold,
    notes: QueueNotes,
) -> Result<Response, HubError> {
    run_full(hub, code, op, body, hold, None, notes).await
}

/// [`run_full`], with the request's native Ollama form (`native`: the call and its body as the client
/// sent it, held in `hold` too) for the participants whose provider is Ollama. With
/// `native.only`, `body` only stands in (its model and stream flag are read; it is never sent).
pub(crate) async fn run_with_native(
    hub: Hub,
    code: &str,
    op: Op,
    body: Bytes,
    hold: BodyHold,
    native: Option<NativeForm>,
) -> Result<Response, HubError> {
    run_full(hub, code, op, body, hold, native, QueueNotes::None).await
}

/// Runs one request of endpoint `op` against room `code` (a code as it came, normalized here):
/// `body` is the request as the endpoint takes it (OpenAI's shape; Anthropic's for
/// [`Op::Messages`]), `hold` its share of the hub's body memory (from
/// [`crate::hub::body::read_body_held`], or [`BodyHold::none`]), kept until the answer has been
/// relayed. `Ok` is the answer as the route would give it (the provider's own error answers
/// included: look at the status); `Err` is the hub's refusal before any participant answered,
/// for the caller to render in its surface's shape.
async fn run_full(
    hub: Hub,
    code: &str,
    op: Op,
    body: Bytes,
    mut hold: BodyHold,
    native: Option<NativeForm>,
    notes: QueueNotes,
) -> Result<Response, HubError> {
    let native = match native {
        Some(NativeForm { call, text, only }) => {
            let request = RawObject::parse(text).map_err(|_| bad("The request body must be a JSON object."))?;
            Some(Native { call, request, only })
        }
        None => None,
    };
    let spec = op.spec();
    let code = room_code(code)?;
    // Kept as text, field by field: no tree of the whole body is built (see `request`).
    let request = RawObject::parse(body).map_err(|_| bad("The request body must be a JSON object."))?;
    hold.grow_to(request.held_bytes())?;
    let model = match request.raw("model") {
        None | Some("null") => None,
        Some(text) if text.starts_with('"') => {
            serde_json::from_str::<String>(text).ok().map(|m| m.trim().to_string()).filter(|m| !m.is_empty())
        }
        Some(_) => return Err(bad("'model' must be a string.")),
    };
    let model =
        model.ok_or_else(|| bad("You must provide a model parameter ('*', 'model:<name>' or a participant id)."))?;
    spec.check(&request)?;
    let stream = match request.raw("stream") {
        None | Some("null") | Some("false") => false,
        Some("true") if spec.streams => true,
        Some("true") => return Err(bad(format!("'stream' is not supported on {}.", spec.client_path))),
        Some(_) => return Err(bad("'stream' must be true or false.")),
    };
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: Option<bool>,
    }
    let client_wants_usage = request
        .get::<StreamOptions>("stream_options")
        .and_then(Result::ok)
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let defaults = hub.registry().room_defaults(&code)?;
    let selector = Selector::parse(&model);
    let need = match &native {
        Some(Native { only: true, .. }) => Need { endpoint: Some(Endpoint::Ollama), or_chat: false },
        _ => spec.need(),
    };
    // Fair turns: the caller's X-Gambi-Caller name, else the request's `user` field, else its address.
    let turn_key = crate::hub::stats::named_caller_key()
        .or_else(|| match request.get::<String>("user") {
            Some(Ok(user)) if !user.trim().is_empty() => {
                Some(format!("user:{}", user.chars().take(64).collect::<String>()))
            }
            _ => None,
        })
        .or_else(crate::hub::stats::caller);
    let route = Route { selector, need, turn_key, defaults, model };
    let job = Job {
        hub: hub.clone(),
        code,
        op,
        spec,
        request,
        tree: std::sync::OnceLock::new(),
        stream,
        client_wants_usage,
        request_id: format!("chatreq_{}", uuid::Uuid::new_v4().simple()),
        body: std::sync::Mutex::new(hold),
        native,
    };
    let ticket = match route.acquire(&job).map_err(|e| route.reject(&job, e))? {
        Acquire::Ready(slot) => return serve(job, slot, route).await,
        Acquire::Wait(ticket) => ticket,
    };
    job.publish(EventKind::LlmQueued {
        request_id: job.request_id.clone(),
        model: crate::hub::stats::clipped_model(&route.model),
        operation: spec.operation.into(),
        position: ticket.position(),
        caller: crate::hub::stats::caller(),
    });
    if job.stream && notes == QueueNotes::Sse {
        // The client hears its place in line while it waits, then the stream.
        return Ok(queued::respond(job, ticket, route));
    }
    let slot = wait_turn(&job, &route, ticket).await?;
    serve(job, slot, route).await
}

/// Whether a streaming request that has to wait is told its place in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueNotes {
    /// SSE comment lines (`: queued, position N`) until its stream starts (the OpenAI and
    /// Anthropic surfaces: every SSE client skips comments).
    Sse,
    /// Nothing (the Ollama surface streams NDJSON).
    None,
}

/// What a request asks of the room's routing, kept for a second choice (failover, a participant
/// found to lack the endpoint).
pub(super) struct Route {
    selector: Selector,
    need: crate::hub::registry::Need,
    turn_key: Option<String>,
    defaults: Option<RuntimeConfig>,
    /// The `model` as the client sent it.
    model: String,
}

impl Route {
    fn acquire(&self, job: &Job) -> Result<Acquire, HubError> {
        job.hub.registry().acquire_as(&job.code, &self.selector, self.need, self.turn_key.as_deref())
    }

    fn reject(&self, job: &Job, error: HubError) -> HubError {
        crate::hub::stats::rejected(&job.hub, &job.code, &self.model, error)
    }
}

/// Waits in the room's queue for the place `ticket` stands for.
pub(super) async fn wait_turn(job: &Job, route: &Route, ticket: WaitTicket) -> Result<Slot, HubError> {
    waited(&job.hub, &job.code, ticket.wait(job.hub.config().queue_wait)).await.map_err(|e| route.reject(job, e))
}

/// Sends the request to the participant of `slot`, failing over or moving on as the module says,
/// and relays the answer.
pub(super) async fn serve(job: Job, mut slot: Slot, route: Route) -> Result<Response, HubError> {
    let spec = job.spec;
    let (selector, need) = (&route.selector, route.need);
    // Failover only where the client let the hub choose: never away from a participant it named.
    let may_fail_over = !matches!(selector, Selector::Named(n) if *n == slot.participant().public.id);
    let mut failed_over = false;
    let mut learned = 0;
    loop {
        let p = slot.participant_shared();
        let config = merge::layered(route.defaults.as_ref(), &p.config);
        job.publish(EventKind::LlmRequest {
            request_id: job.request_id.clone(),
            participant_id: p.public.id.clone(),
            model: p.public.model.clone(),
            operation: spec.operation.into(),
            caller: crate::hub::stats::caller(),
            route: Some(*slot.route()),
        });
        let started = Instant::now();
        match attempt(&job, &p, &config).await {
            Attempt::Answer(up, _) if up.status >= 500 && may_fail_over && !failed_over => {
                let next =
                    job.hub.registry().try_acquire_for(&job.code, selector, need, std::slice::from_ref(&p.public.id));
                match next {
                    Some(next) => {
                        let error =
                            HubError::Upstream { stage: "status".into(), message: format!("HTTP {}", up.status) };
                        job.error_event(&p, "status", &error);
                        drop(up);
                        slot = next;
                        failed_over = true;
                    }
                    None => return Ok(respond(job, slot, up, started, Form::AsIs).await),
                }
            }
            Attempt::Answer(up, form) => return Ok(respond(job, slot, up, started, form).await),
            Attempt::Missing(endpoint) => {
                let error =
                    HubError::NotServed { path: endpoint.path().into(), participant: Some(p.public.id.clone()) };
                job.error_event(&p, "status", &error);
                learned += 1;
                if learned >= MAX_LEARNED {
                    return Err(error);
                }
                // It is marked now, so routing passes it by (a participant the client named
                // answers that it does not serve the endpoint).
                drop(slot);
                slot = match route.acquire(&job)? {
                    Acquire::Ready(slot) => slot,
                    Acquire::Wait(ticket) => {
                        waited(&job.hub, &job.code, ticket.wait(job.hub.config().queue_wait)).await?
                    }
                };
            }
            Attempt::Failed(OpenFailure { error, retryable }) => {
                job.error_event(&p, "connect", &error);
                if retryable && may_fail_over && !failed_over {
                    let next = job.hub.registry().try_acquire_for(
                        &job.code,
                        selector,
                        need,
                        std::slice::from_ref(&p.public.id),
                    );
                    if let Some(next) = next {
                        slot = next;
                        failed_over = true;
                        continue;
                    }
                }
                return Err(error);
            }
        }
    }
}

/// Relays the answer; one from an Ollama provider's own endpoint is marked so.
async fn respond(job: Job, slot: crate::hub::registry::Slot, up: Upstream, started: Instant, form: Form) -> Response {
    let mut response = relay::respond(job, slot, up, started, form).await;
    if form == Form::Native {
        response.extensions_mut().insert(NativeAnswer);
    }
    response
}

/// What trying one participant gave.
enum Attempt {
    /// An answer has started, in that form.
    Answer(Upstream, Form),
    /// The provider has no such endpoint (now marked so).
    Missing(Endpoint),
    Failed(OpenFailure),
}

/// Sends the request to `p`: as it is when its provider may have the endpoint, else translated;
/// and translated after all when the provider answers that it lacks the endpoint.
async fn attempt(job: &Job, p: &ParticipantRecord, config: &RuntimeConfig) -> Attempt {
    if let Some(native) = &job.native {
        if p.public.capabilities.of(Endpoint::Ollama) == Capability::Supported {
            if let Some(attempt) = attempt_native(job, native, p, config).await {
                return attempt;
            }
        }
        if native.only {
            return Attempt::Missing(Endpoint::Ollama);
        }
    }
    let spec = job.spec;
    let caps = p.public.capabilities;
    let translatable = spec.translation.is_some() && caps.may_serve(Endpoint::ChatCompletions);
    let mut translated = translatable && !caps.may_serve(spec.endpoint);
    loop {
        let endpoint = if translated { Endpoint::ChatCompletions } else { spec.endpoint };
        let learning = p.public.connection.kind == ConnectionKind::Tunnel || (translatable && !translated);
        let mut up = match start(job, p, config, translated).await.and_then(|up| upstream::vet(up, p, learning)) {
            Ok(up) => up,
            Err(failure) => return Attempt::Failed(failure),
        };
        match endpoint_missing(&mut up).await {
            Ok(false) => return Attempt::Answer(up, if translated { Form::Translated } else { Form::AsIs }),
            Ok(true) => {}
            Err(error) => return Attempt::Failed(OpenFailure { error, retryable: false }),
        }
        drop(up);
        job.hub.registry().learn_capability(&job.code, &p.public.id, endpoint, Capability::Unsupported);
        if translated || !translatable {
            return Attempt::Missing(endpoint);
        }
        translated = true;
    }
}

/// Sends the native Ollama request to `p`'s own `/api/...` endpoint. `None`: the provider has no
/// such endpoint after all (now learned), so the request goes through its OpenAI endpoints.
async fn attempt_native(job: &Job, native: &Native, p: &ParticipantRecord, config: &RuntimeConfig) -> Option<Attempt> {
    let body = merge::ollama_body(&native.request, &p.public.model, config, native.call, job.stream).encode();
    let call = Call {
        operation: native.call.operation(),
        method: reqwest::Method::POST,
        path: native.call.path().into(),
        body: Some(body),
        stream: job.stream,
    };
    let (first_byte, idle) = call_timeouts(&job.hub);
    let opened = upstream::open_raw(&job.hub, &job.code, p, call, first_byte, idle).await;
    // Ollama streams NDJSON; anything else is vetted as any answer.
    let mut up = match opened.and_then(|up| if up.is_ndjson() { Ok(up) } else { upstream::vet(up, p, true) }) {
        Ok(up) => up,
        Err(failure) => return Some(Attempt::Failed(failure)),
    };
    match endpoint_missing(&mut up).await {
        Ok(false) => Some(Attempt::Answer(up, Form::Native)),
        Ok(true) => {
            drop(up);
            job.hub.registry().learn_capability(&job.code, &p.public.id, Endpoint::Ollama, Capability::Unsupported);
            None
        }
        Err(error) => Some(Attempt::Failed(OpenFailure { error, retryable: false })),
    }
}

/// Whether `up` says its endpoint is missing. A 404 is read (it is small) to tell a missing
/// endpoint from a missing model, then given back to be relayed.
async fn endpoint_missing(up: &mut Upstream) -> Result<bool, HubError> {
    if !matches!(up.status, 404 | 405 | 501) {
        return Ok(false);
    }
    let body = up.collect(MAX_PEEK_BYTES).await?;
    let missing = op::says_endpoint_missing(up.status, &body);
    let content_type = up.content_type().unwrap_or("application/json").to_string();
    up.replay(body, &content_type);
    Ok(missing)
}

fn call_timeouts(hub: &Hub) -> (std::time::Duration, std::time::Duration) {
    (hub.config().first_byte_timeout, hub.config().idle_timeout)
}

/// Starts the call on `p`: the request adapted to it, or (`translated`) its chat completion.
async fn start(
    job: &Job,
    p: &ParticipantRecord,
    config: &RuntimeConfig,
    translated: bool,
) -> Result<Upstream, OpenFailure> {
    let spec = job.spec;
    let refuse = |error: HubError| OpenFailure { error, retryable: false };
    let (path, operation, body) = if translated {
        (Endpoint::ChatCompletions.path(), "chat.completions", translate(job, p, config).map_err(refuse)?)
    } else {
        let mut body = spec.adapt(&job.request, &p.public.model, config);
        if job.stream && spec.asks_stream_usage() && !job.client_wants_usage {
            // Ask for the final usage chunk so the room's metrics have token counts; the relay
            // hides it from a client that did not ask for it.
            let mut options = body.field_object("stream_options").unwrap_or_default();
            options.set("include_usage", &Value::Bool(true));
            body.set_object("stream_options", &options);
        }
        (spec.endpoint.path(), spec.operation, body.encode())
    };
    let call =
        Call { operation, method: reqwest::Method::POST, path: path.into(), body: Some(body), stream: job.stream };
    let (first_byte, idle) = call_timeouts(&job.hub);
    upstream::open_raw(&job.hub, &job.code, p, call, first_byte, idle).await
}

/// The request as a chat completions body for `p`.
fn translate(job: &Job, p: &ParticipantRecord, config: &RuntimeConfig) -> Result<Bytes, HubError> {
    let cannot = |e: responses_compat::CompatError, what: &str, hint: &str| HubError::InvalidRequest {
        message: format!("This participant's model server has no {what}, and the request cannot be translated: {e}"),
        hint: Some(hint.into()),
    };
    let tree = job.tree()?;
    match job.spec.translation {
        Some(Translation::ResponsesOverChat) => {
            let adapted = merge::responses_body(&tree.settings, &p.public.model, config);
            let chat =
                responses_compat::request_parts_to_chat_text(&adapted, job.request.raw("input")).map_err(|e| {
                    cannot(
                        e,
                        "Responses API",
                        "Use /chat/completions, or pick a participant whose server supports /v1/responses.",
                    )
                })?;
            Ok(Bytes::from(chat))
        }
        Some(Translation::MessagesOverChat) => {
            let chat = messages_compat::request_to_chat(&tree.settings).map_err(|e| {
                cannot(e, "Messages API", "Leave that out, or pick a participant whose server supports /v1/messages.")
            })?;
            let Value::Object(chat) = chat else { return Err(HubError::Internal("a chat body is an object".into())) };
            let chat = merge::chat_body(&chat, &p.public.model, config);
            Ok(Bytes::from(Value::Object(chat).to_string()))
        }
        None => Err(HubError::Internal(format!("{} has no translation", job.spec.operation))),
    }
}
