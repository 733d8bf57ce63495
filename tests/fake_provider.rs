//! The one fake of the suite: a small OpenAI-compatible provider (the local model server a
//! participant shares) written for the tests and the benchmarks. It serves `/v1/models`,
//! `/v1/chat/completions` (stream and not, text and function tools), `/v1/responses` and its
//! `{id}` routes, `/v1/embeddings` and the legacy `/v1/completions` (each can be turned off),
//! optionally Anthropic's `/v1/messages` (stream and not, tools; in `fake_surfaces.rs`) and
//! Ollama's `/api/version`, `/api/tags`, `/api/ps` and its native `/api/chat`, `/api/generate`,
//! `/api/embed` and `/api/embeddings` (in `fake_ollama.rs`), in the exact shapes the official OpenAI and
//! Anthropic SDKs and Ollama clients parse. It can also answer stream requests with one JSON
//! document, as some servers do.
//!
//! It records every request it receives, counts requests in flight, completed and cancelled (a
//! client that went away before the end), and can be switched at run time into failure modes
//! ([`Mode`]): 500 before any byte, hang before the headers, hang or drop mid-stream, garbage, no
//! Responses API. Everything else in the suite is real; the hub, the tunnel and the participant
//! never know they talk to this.
//!
//! Self-contained on purpose (only regular dependencies, nothing from `util`): the benchmarks include
//! this file too.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How the provider answers chat completions and response creations. Switch it at run time with
/// [`FakeProvider::set_mode`]; `/v1/models` and `/api/*` are never affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// 500 with an OpenAI-shaped error before any byte (before validation too).
    Fail500,
    /// Accept the request and never send the headers. Counted in flight; cancelled when the client
    /// goes away.
    Hang,
    /// Send the headers and the first frames (a stream: up to and including the first content
    /// delta; a non-stream: the first half of the JSON), then hang forever.
    HangMidStream,
    /// 200 with bytes that are neither JSON nor SSE.
    Garbage,
    /// Send the same first frames as `HangMidStream`, then close the connection abruptly (the
    /// chunked body never terminates). Counted as `aborted`, not `cancelled`.
    DropMidStream,
    /// `/v1/responses` and its sub-routes answer 404, as a provider without the Responses API.
    NotFoundResponses,
}

/// What the provider serves and how. Can be changed while it runs with [`FakeProvider::update`].
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Served model names; requests for any other model get 404 `model_not_found`.
    pub models: Vec<String>,
    /// Serve `/v1/responses` (else 404, as an old Ollama or LM Studio).
    pub responses_api: bool,
    /// Serve Ollama's `/api/version`, `/api/tags`, `/api/ps` and its native inference endpoints
    /// (else 404).
    pub ollama: bool,
    /// Models `/api/ps` reports as loaded in memory (their `expires_at` moves with every use, as
    /// Ollama's does: see `fake_ollama.rs`).
    pub loaded: Vec<String>,
    /// Content deltas in a streamed answer (the reply is split into exactly this many pieces, some
    /// possibly empty when the reply is shorter than this).
    pub stream_chunks: usize,
    /// Pause before every content delta but the first.
    pub chunk_delay: Duration,
    /// Pause before the first body byte of a stream (its headers go at once), or before the whole
    /// answer of a non-stream.
    pub first_byte_delay: Duration,
    /// Headers (name, exact value) every request must carry, else 401 `invalid_api_key`.
    pub required_headers: Vec<(String, String)>,
    pub mode: Mode,
    /// Fixed reply text; `None` answers `echo: <text of the last user message>`.
    pub reply: Option<String>,
    /// Keep every request for [`FakeProvider::requests`] (default true). Benchmarks turn it off so
    /// the recording neither grows memory nor costs time.
    pub record: bool,
    /// Serve `/v1/embeddings` (else 404, as llama-server started without `--embeddings`).
    pub embeddings: bool,
    /// Length of the vectors `/v1/embeddings` answers.
    pub embedding_dimensions: usize,
    /// Serve the legacy `/v1/completions` (else 404).
    pub completions: bool,
    /// Serve Anthropic's `/v1/messages` (else 404, as most Ollama and LM Studio versions).
    pub messages: bool,
    /// Answer `stream: true` requests with the whole answer as one JSON document
    /// (`application/json`, no SSE), as some servers do.
    pub json_streams: bool,
    /// Answer unknown routes and the endpoints turned off with `404 page not found` as text, as
    /// Go's HTTP server (Ollama) does, instead of an OpenAI-shaped JSON error.
    pub plain_404: bool,
    /// Serve llama-server's `GET /slots` with this many slots (else 404): as many are processing
    /// as requests in flight plus `foreign_busy`.
    pub slots: Option<usize>,
    /// Slots busy with work that did not come through the hub (the machine's owner using it).
    pub foreign_busy: usize,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            models: vec!["llama3".to_owned()],
            responses_api: true,
            ollama: false,
            loaded: Vec::new(),
            stream_chunks: 5,
            chunk_delay: Duration::ZERO,
            first_byte_delay: Duration::ZERO,
            required_headers: Vec::new(),
            mode: Mode::Normal,
            reply: None,
            record: true,
            embeddings: true,
            embedding_dimensions: 8,
            completions: true,
            messages: false,
            json_streams: false,
            plain_404: false,
            slots: None,
            foreign_busy: 0,
        }
    }
}

/// One request as the provider received it, before any check.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, when it is JSON.
    pub body: Option<Value>,
    pub raw: Bytes,
}

impl Recorded {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body, or `Null` when it was not JSON.
    pub fn json(&self) -> Value {
        self.body.clone().unwrap_or(Value::Null)
    }
}

/// A created response, kept so its `{id}` routes can answer.
#[derive(Debug, Clone)]
struct Stored {
    response: Value,
    input_items: Vec<Value>,
}

/// Shared by the server task and the test. Counters are atomics so a test can read them while
/// requests run; the mutexes are never held across an `.await`.
pub struct FakeState {
    options: Mutex<FakeOptions>,
    requests: Mutex<Vec<Recorded>>,
    stored: Mutex<HashMap<String, Stored>>,
    in_flight: AtomicUsize,
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    aborted: AtomicUsize,
    /// Ollama's bookkeeping of each model's use, behind `/api/ps`'s `expires_at`
    /// ([`ollama::InUse`]), by [`ollama::key`].
    ollama_use: Mutex<HashMap<String, ollama::ModelUse>>,
    /// When the fake started: the models `loaded` from the start were last used then.
    born: SystemTime,
    /// Ends the server and wakes every hung request, so stopping never waits on a hang.
    shutdown: CancellationToken,
}

impl FakeState {
    fn new(options: FakeOptions) -> Self {
        FakeState {
            options: Mutex::new(options),
            requests: Mutex::new(Vec::new()),
            stored: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
            ollama_use: Mutex::new(HashMap::new()),
            born: SystemTime::now(),
            shutdown: CancellationToken::new(),
        }
    }

    pub fn options(&self) -> FakeOptions {
        lock(&self.options).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fake provider listening on `127.0.0.1:<random port>`; stopped by [`FakeProvider::stop`] or on
/// drop.
pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`, no trailing slash (the OpenAI base URL is `{url}/v1`).
    pub url: String,
    pub state: Arc<FakeState>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeProvider {
    pub async fn start(options: FakeOptions) -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake provider");
        Self::serve(listener, options)
    }

    /// A provider on `127.0.0.1:port`, such as the port of one stopped before: the same model
    /// server coming back. Retries the bind for a moment while the old socket goes away.
    pub async fn start_on(port: u16, options: FakeOptions) -> FakeProvider {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket for the fake provider");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            let bound =
                socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port))).and_then(|()| socket.listen(1024));
            match bound {
                Ok(listener) => return Self::serve(listener, options),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("cannot bind the fake provider on port {port} again: {e}"),
            }
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the fake provider's port")
    }

    fn serve(listener: tokio::net::TcpListener, options: FakeOptions) -> FakeProvider {
        let url = format!("http://{}", listener.local_addr().expect("fake provider address"));
        let state = Arc::new(FakeState::new(options));
        let app = router(state.clone());
        let shutdown = state.shutdown.clone();
        let task = tokio::spawn(async move {
            // Like real model servers (Ollama sets it), no Nagle delay on small stream writes.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        });
        FakeProvider { url, state, task: Some(task) }
    }

    /// Stops listening (new connections are refused), ends hung requests, and waits (at most 5 s)
    /// for the open connections to close.
    pub async fn stop(mut self) {
        self.state.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// `{url}{path}`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state.options).mode = mode;
    }

    /// Changes any option while the provider runs (models, loaded, delays, reply...).
    pub fn update(&self, change: impl FnOnce(&mut FakeOptions)) {
        change(&mut lock(&self.state.options));
    }

    pub fn options(&self) -> FakeOptions {
        self.state.options()
    }

    /// Every request received so far, in order (probes and failed ones included).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// The requests received on one path (query excluded).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        lock(&self.state.requests).iter().filter(|r| r.path == path).cloned().collect()
    }

    /// The JSON body of the last request received on `path`.
    pub fn last_body(&self, path: &str) -> Option<Value> {
        lock(&self.state.requests).iter().rev().find(|r| r.path == path).and_then(|r| r.body.clone())
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// Inference requests (chat completions, response creations) whose client went away before
    /// the answer's end.
    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// Inference requests accepted (valid, past `Fail500`) and not yet ended.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Inference requests answered to their end (`Garbage` included).
    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::SeqCst)
    }

    /// Inference requests the provider itself cut (`DropMidStream`, or hung ones ended by `stop`).
    pub fn aborted(&self) -> usize {
        self.state.aborted.load(Ordering::SeqCst)
    }

    /// Polls `check` every 5 ms until it holds or `within` runs out; says whether it held.
    pub async fn wait_until(&self, within: Duration, check: impl Fn(&FakeProvider) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if check(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_cancelled(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |p| p.cancelled() >= n).await
    }

    pub async fn wait_in_flight(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |p| p.in_flight() >= n).await
    }

    pub async fn wait_completed(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |p| p.completed() >= n).await
    }

    /// Waits until at least `n` requests reached `path`.
    pub async fn wait_requests(&self, path: &str, n: usize, within: Duration) -> bool {
        self.wait_until(within, |p| p.requests_to(path).len() >= n).await
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// The reply the provider gives to `text` when no fixed reply is set.
pub fn echo(text: &str) -> String {
    format!("echo: {text}")
}

/// The provider's token count: whitespace-separated words.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The arguments of every tool call the provider makes.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;

/// What `Mode::Garbage` sends: neither JSON nor SSE.
pub const GARBAGE: &[u8] = b"\x00\xff<<garbage>> this is {not json and not: sse\x7f\n\x01\x02";

/// The size Ollama's `/api/tags` and `/api/ps` report for a model (and its `size_vram` when loaded).
pub fn ollama_size(name: &str) -> u64 {
    4_000_000_000 + fnv(name) % 1_000_000_000
}

/// Embeddings, legacy completions and Anthropic Messages.
#[path = "fake_surfaces.rs"]
pub mod surfaces;

/// Ollama's native `/api/chat`, `/api/generate`, `/api/embed` and `/api/embeddings`.
#[path = "fake_ollama.rs"]
pub mod ollama;

/// llama-server's slot list: `is_processing` for the requests in flight and the foreign work.
async fn slots(State(state): State<Arc<FakeState>>) -> Response {
    let options = state.options();
    let Some(n) = options.slots else { return route_not_found(&options) };
    let busy = state.in_flight.load(Ordering::SeqCst) + options.foreign_busy;
    let list: Vec<Value> = (0..n).map(|id| json!({"id": id, "n_ctx": 4096, "is_processing": id < busy})).collect();
    Json(list).into_response()
}

fn router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses_create))
        .route("/v1/responses/{id}", get(responses_get).delete(responses_delete))
        .route("/v1/responses/{id}/cancel", post(responses_cancel))
        .route("/v1/responses/{id}/input_items", get(responses_input_items))
        .route("/v1/embeddings", post(surfaces::embeddings))
        .route("/v1/completions", post(surfaces::completions))
        .route("/v1/messages", post(surfaces::messages))
        .route("/api/version", get(ollama_version))
        .route("/api/tags", get(ollama_tags))
        .route("/api/ps", get(ollama_ps))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/slots", get(slots))
        .fallback(not_found)
        // A local model server takes whole long conversations: no 2 MB cap on what it reads.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Records the request, then checks the required headers: the recording comes first so a test can
/// see what arrived even when it was refused.
async fn record(State(state): State<Arc<FakeState>>, request: Request, next: Next) -> Response {
    let (record, required) = {
        let options = lock(&state.options);
        (options.record, options.required_headers.clone())
    };
    let request = if record {
        let (parts, body) = request.into_parts();
        let raw = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        lock(&state.requests).push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers,
            body: light_json(&raw),
            raw: raw.clone(),
        });
        Request::from_parts(parts, Body::from(raw))
    } else {
        request
    };
    for (name, value) in &required {
        let got = request.headers().get(name.to_ascii_lowercase().as_str()).and_then(|v| v.to_str().ok());
        if got != Some(value.as_str()) {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
            );
        }
    }
    next.run(request).await
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": param, "code": code}}))).into_response()
}

fn server_failure() -> Response {
    openai_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The fake provider failed (Mode::Fail500).",
        "server_error",
        Some("internal_error"),
        None,
    )
}

fn not_found_error(what: &str) -> Response {
    openai_error(StatusCode::NOT_FOUND, &format!("{what} not found"), "invalid_request_error", Some("not_found"), None)
}

async fn not_found(State(state): State<Arc<FakeState>>) -> Response {
    route_not_found(&state.options())
}

/// A route this provider does not serve: OpenAI's shape, or Go's plain text with `plain_404`.
fn route_not_found(options: &FakeOptions) -> Response {
    if options.plain_404 {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "404 page not found").into_response();
    }
    not_found_error("Route")
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// FNV-1a: a stable hash for deterministic digests and sizes.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

// ---------------------------------------------------------------------------------------------
// In-flight accounting
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Cancelled,
    Completed,
    Aborted,
}

/// Lives as long as the answer of one inference request (inside its body stream when streamed).
/// Dropped before `finish` means the client went away: that is how cancellation is seen.
struct Flight {
    state: Arc<FakeState>,
    outcome: Outcome,
    /// The model this request uses, for Ollama's `/api/ps` expiry.
    model: ollama::InUse,
}

impl Flight {
    /// An inference request accepted; `body` names its model (and perhaps Ollama's `keep_alive`).
    fn new(state: &Arc<FakeState>, body: &Value) -> Self {
        let model = ollama::InUse::begin(state, body);
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Flight { state: state.clone(), outcome: Outcome::Cancelled, model }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // The outcome and the model's expiry are set before in_flight drops, so a test that saw
        // in_flight reach zero also sees them.
        self.model.end();
        let counter = match self.outcome {
            Outcome::Cancelled => &self.state.cancelled,
            Outcome::Completed => &self.state.completed,
            Outcome::Aborted => &self.state.aborted,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Mode::Hang`: never answer; the client dropping us drops the flight (cancelled).
async fn hang(mut flight: Flight) -> Response {
    let shutdown = flight.state.shutdown.clone();
    shutdown.cancelled().await;
    flight.finish(Outcome::Aborted);
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

/// `Mode::Garbage`: the content type the client expects (so it tries to parse), bytes it cannot.
fn garbage(mut flight: Flight, stream: bool) -> Response {
    flight.finish(Outcome::Completed);
    let content_type = if stream { "text/event-stream" } else { "application/json" };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], Bytes::from_static(GARBAGE)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Streamed bodies
// ---------------------------------------------------------------------------------------------

struct Frame {
    delay: Duration,
    bytes: Bytes,
}

impl Frame {
    fn new(delay: Duration, bytes: impl Into<Bytes>) -> Self {
        Frame { delay, bytes: bytes.into() }
    }
}

enum Tail {
    End,
    Hang,
    Drop,
    Done,
}

struct Feed {
    frames: VecDeque<Frame>,
    tail: Tail,
    flight: Flight,
}

async fn next_frame(mut feed: Feed) -> Option<(Result<Bytes, std::io::Error>, Feed)> {
    if let Some(frame) = feed.frames.pop_front() {
        if !frame.delay.is_zero() {
            tokio::time::sleep(frame.delay).await;
        }
        return Some((Ok(frame.bytes), feed));
    }
    match feed.tail {
        Tail::End => {
            feed.flight.finish(Outcome::Completed);
            None
        }
        Tail::Hang => {
            let shutdown = feed.flight.state.shutdown.clone();
            shutdown.cancelled().await;
            feed.flight.finish(Outcome::Aborted);
            feed.tail = Tail::Done;
            Some((Err(std::io::Error::other("fake provider stopped")), feed))
        }
        Tail::Drop => {
            // Pause first so hyper flushes the frames already written: an error right away would
            // discard them with the connection, and the client would see no headers at all.
            tokio::time::sleep(Duration::from_millis(10)).await;
            feed.flight.finish(Outcome::Aborted);
            feed.tail = Tail::Done;
            Some((Err(std::io::Error::other("fake provider dropped the stream (Mode::DropMidStream)")), feed))
        }
        Tail::Done => None,
    }
}

/// Sends `frames` as a chunked body. In the mid-stream modes only the first `cut` frames go out,
/// then the body hangs or fails (hyper then closes the connection without the final chunk).
fn streamed(mut frames: Vec<Frame>, cut: usize, content_type: &'static str, mode: Mode, flight: Flight) -> Response {
    let tail = match mode {
        Mode::HangMidStream => Tail::Hang,
        Mode::DropMidStream => Tail::Drop,
        _ => Tail::End,
    };
    if !matches!(tail, Tail::End) {
        frames.truncate(cut);
    }
    let feed = Feed { frames: frames.into(), tail, flight };
    let body = Body::from_stream(futures_util::stream::unfold(feed, next_frame));
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// A whole JSON answer: at once in `Normal`, half of it then a hang or a cut in the mid-stream
/// modes.
async fn whole(value: Value, options: &FakeOptions, mut flight: Flight) -> Response {
    if !options.first_byte_delay.is_zero() {
        tokio::time::sleep(options.first_byte_delay).await;
    }
    let bytes = Bytes::from(value.to_string());
    match options.mode {
        Mode::HangMidStream | Mode::DropMidStream => {
            let half = bytes.len() / 2;
            let frames =
                vec![Frame::new(Duration::ZERO, bytes.slice(..half)), Frame::new(Duration::ZERO, bytes.slice(half..))];
            streamed(frames, 1, "application/json", options.mode, flight)
        }
        _ => {
            flight.finish(Outcome::Completed);
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
    }
}

fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn sse_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// Splits `text` into exactly `n` pieces (at least one) on character boundaries; they concatenate
/// back to `text`.
fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.max(1);
    (0..n).map(|i| chars[i * chars.len() / n..(i + 1) * chars.len() / n].iter().collect()).collect()
}

/// Like `split` but never with an empty piece (unless `text` is empty).
fn split_nonempty(text: &str, n: usize) -> Vec<String> {
    split(text, n.min(text.chars().count()).max(1))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// What the model "decides" to answer.
enum Answer {
    Text(String),
    Tool { call_id: String, name: String, arguments: String },
}

impl Answer {
    fn output_tokens(&self) -> u64 {
        match self {
            Answer::Text(text) => count_tokens(text),
            Answer::Tool { name, arguments, .. } => count_tokens(name) + count_tokens(arguments),
        }
    }
}

fn decide(options: &FakeOptions, last_user: &str, tool: Option<String>) -> Answer {
    match tool {
        Some(name) => Answer::Tool { call_id: new_id("call"), name, arguments: TOOL_ARGUMENTS.to_owned() },
        None => Answer::Text(options.reply.clone().unwrap_or_else(|| echo(last_user))),
    }
}

/// The text of a message's `content`: a string, or the `text` of its parts joined by spaces.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// The name of the first function tool, in the chat (`function.name`) or Responses (`name`) form.
fn first_tool(body: &Value) -> Option<String> {
    let tool = body.get("tools")?.as_array()?.first()?;
    tool.get("function")
        .and_then(|f| f.get("name"))
        .or_else(|| tool.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Parses the body and checks `model`; the error is the answer to send (boxed: a `Response` is
/// large).
/// A body as JSON, light: in a body over 1 MiB, a field over 64 KiB other than what the provider
/// answers from (`messages`, `input`, `prompt`) is `{"$omitted": BYTES}` (a test that sends tens of
/// megabytes of padding must not have the provider build a tree of them).
pub fn light_json(raw: &[u8]) -> Option<Value> {
    if raw.len() <= 1 << 20 {
        return serde_json::from_slice(raw).ok();
    }
    let fields: std::collections::BTreeMap<String, &serde_json::value::RawValue> = serde_json::from_slice(raw).ok()?;
    let object = fields
        .into_iter()
        .map(|(k, v)| {
            let value = if v.get().len() > 64 << 10 && !matches!(k.as_str(), "messages" | "input" | "prompt") {
                json!({"$omitted": v.get().len()})
            } else {
                serde_json::from_str(v.get()).unwrap_or(Value::Null)
            };
            (k, value)
        })
        .collect();
    Some(Value::Object(object))
}

fn parse_request(raw: &Bytes, options: &FakeOptions) -> Result<(Value, String), Box<Response>> {
    let body: Value = light_json(raw).ok_or_else(|| serde_json::from_slice::<Value>(raw).err()).map_err(|e| {
        let e = e.map_or_else(|| "not JSON".to_string(), |e| e.to_string());
        Box::new(openai_error(
            StatusCode::BAD_REQUEST,
            &format!("We could not parse the JSON body of your request: {e}"),
            "invalid_request_error",
            None,
            None,
        ))
    })?;
    if !body.is_object() {
        return Err(Box::new(openai_error(
            StatusCode::BAD_REQUEST,
            "The body of your request must be a JSON object.",
            "invalid_request_error",
            None,
            None,
        )));
    }
    let Some(model) = body.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return Err(Box::new(openai_error(
            StatusCode::BAD_REQUEST,
            "You must provide a model parameter.",
            "invalid_request_error",
            None,
            Some("model"),
        )));
    };
    if !options.models.contains(&model) {
        return Err(Box::new(openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
            Some("model"),
        )));
    }
    Ok((body, model))
}

// ---------------------------------------------------------------------------------------------
// /v1/models
// ---------------------------------------------------------------------------------------------

async fn models(State(state): State<Arc<FakeState>>) -> Response {
    let options = state.options();
    let data: Vec<Value> = options
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

// ---------------------------------------------------------------------------------------------
// /v1/chat/completions
// ---------------------------------------------------------------------------------------------

async fn chat(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    if options.mode == Mode::Fail500 {
        return server_failure();
    }
    let (body, model) = match parse_request(&raw, &options) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            Some("missing_required_parameter"),
            Some("messages"),
        );
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false) && !options.json_streams;
    let flight = Flight::new(&state, &body);
    match options.mode {
        Mode::Hang => return hang(flight).await,
        Mode::Garbage => return garbage(flight, stream),
        _ => {}
    }

    let last_is_user = messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("user");
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let tool = if last_is_user { first_tool(&body) } else { None };
    let answer = decide(&options, &last_user, tool);
    let prompt_tokens: u64 =
        messages.iter().map(|m| count_tokens(&content_text(m.get("content").unwrap_or(&Value::Null)))).sum();
    let completion_tokens = answer.output_tokens();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = new_id("chatcmpl");
    let created = now_secs();

    if !stream {
        let (message, finish) = match &answer {
            Answer::Text(text) => (json!({"role": "assistant", "content": text, "refusal": null}), "stop"),
            Answer::Tool { call_id, name, arguments } => (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                ]}),
                "tool_calls",
            ),
        };
        let completion = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage,
        });
        return whole(completion, &options, flight).await;
    }

    let chunk = |delta: Value, finish: Value| {
        sse_data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    };
    let mut frames =
        vec![Frame::new(options.first_byte_delay, chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
    let cut;
    let finish = match &answer {
        Answer::Text(text) => {
            for (i, piece) in split(text, options.stream_chunks).into_iter().enumerate() {
                let delay = if i == 0 { Duration::ZERO } else { options.chunk_delay };
                frames.push(Frame::new(delay, chunk(json!({"content": piece}), Value::Null)));
            }
            cut = 2;
            "stop"
        }
        Answer::Tool { call_id, name, arguments } => {
            frames.push(Frame::new(
                Duration::ZERO,
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ),
            ));
            cut = 2;
            for piece in split_nonempty(arguments, options.stream_chunks) {
                frames.push(Frame::new(
                    options.chunk_delay,
                    chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), Value::Null),
                ));
            }
            "tool_calls"
        }
    };
    frames.push(Frame::new(Duration::ZERO, chunk(json!({}), json!(finish))));
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    if include_usage {
        frames.push(Frame::new(
            Duration::ZERO,
            sse_data(&json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage,
            })),
        ));
    }
    frames.push(Frame::new(Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    streamed(frames, cut, "text/event-stream", options.mode, flight)
}

// ---------------------------------------------------------------------------------------------
// /v1/responses
// ---------------------------------------------------------------------------------------------

/// Whether the Responses routes answer 404 right now.
fn responses_off(options: &FakeOptions) -> bool {
    !options.responses_api || options.mode == Mode::NotFoundResponses
}

/// The request's input as stored input items, each with an id.
fn input_items(input: &Value) -> Vec<Value> {
    match input {
        Value::String(text) => vec![json!({
            "id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}],
        })],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if let Some(object) = item.as_object_mut() {
                    let role = object.get("role").and_then(Value::as_str).map(str::to_owned);
                    if let Some(role) = &role {
                        object.entry("type").or_insert_with(|| json!("message"));
                        if let Some(Value::String(text)) = object.get("content") {
                            let kind = if role == "assistant" { "output_text" } else { "input_text" };
                            let parts = json!([{"type": kind, "text": text}]);
                            object.insert("content".to_owned(), parts);
                        }
                    }
                    let prefix = match object.get("type").and_then(Value::as_str) {
                        Some("function_call") => "fc",
                        Some("function_call_output") => "fco",
                        _ => "msg",
                    };
                    object.entry("id").or_insert_with(|| json!(new_id(prefix)));
                }
                item
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_user_message(item: &Value) -> bool {
    item.get("role").and_then(Value::as_str) == Some("user")
        && item.get("type").and_then(Value::as_str).is_none_or(|t| t == "message")
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn function_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

/// A Responses object with every field the official SDKs require.
fn response_object(
    id: &str,
    created_at: u64,
    model: &str,
    body: &Value,
    status: &str,
    output: &[Value],
    usage: Value,
) -> Value {
    let output_text: String = output
        .iter()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("message"))
        .filter_map(|item| item.get("content").and_then(Value::as_array))
        .flatten()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect();
    let field = |name: &str, default: Value| body.get(name).cloned().unwrap_or(default);
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": field("instructions", Value::Null),
        "max_output_tokens": field("max_output_tokens", Value::Null),
        "metadata": field("metadata", json!({})),
        "model": model,
        "output": output,
        "output_text": output_text,
        "parallel_tool_calls": field("parallel_tool_calls", json!(true)),
        "previous_response_id": field("previous_response_id", Value::Null),
        "reasoning": {"effort": null, "summary": null},
        "service_tier": "default",
        "store": field("store", json!(true)),
        "temperature": field("temperature", json!(1.0)),
        "text": field("text", json!({"format": {"type": "text"}})),
        "tool_choice": field("tool_choice", json!("auto")),
        "tools": field("tools", json!([])),
        "top_p": field("top_p", json!(1.0)),
        "truncation": field("truncation", json!("disabled")),
        "usage": usage,
        "user": field("user", Value::Null),
    })
}

async fn responses_create(State(state): State<Arc<FakeState>>, raw: Bytes) -> Response {
    let options = state.options();
    if responses_off(&options) {
        return not_found_error("Route");
    }
    if options.mode == Mode::Fail500 {
        return server_failure();
    }
    let (body, model) = match parse_request(&raw, &options) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false) && !options.json_streams;
    let flight = Flight::new(&state, &body);
    match options.mode {
        Mode::Hang => return hang(flight).await,
        Mode::Garbage => return garbage(flight, stream),
        _ => {}
    }

    let input = body.get("input").cloned().unwrap_or(Value::Null);
    let items = input_items(&input);
    let last_user = items.iter().rev().find(|item| is_user_message(item)).map(|item| content_text(&item["content"]));
    let last_is_user = items.last().is_some_and(is_user_message);
    let tool = if last_is_user { first_tool(&body) } else { None };
    let answer = decide(&options, &last_user.unwrap_or_default(), tool);
    let instructions = body.get("instructions").and_then(Value::as_str).unwrap_or("");
    let input_tokens =
        count_tokens(instructions) + items.iter().map(|i| count_tokens(&content_text(&i["content"]))).sum::<u64>();
    let output_tokens = answer.output_tokens();
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let id = new_id("resp");
    let created_at = now_secs();
    let item_id = match &answer {
        Answer::Text(_) => new_id("msg"),
        Answer::Tool { .. } => new_id("fc"),
    };
    let done_item = match &answer {
        Answer::Text(text) => message_item(&item_id, text, "completed"),
        Answer::Tool { call_id, name, arguments } => function_item(&item_id, call_id, name, arguments, "completed"),
    };
    let finished =
        response_object(&id, created_at, &model, &body, "completed", std::slice::from_ref(&done_item), usage);
    if body.get("store").and_then(Value::as_bool) != Some(false) {
        lock(&state.stored).insert(id.clone(), Stored { response: finished.clone(), input_items: items });
    }

    if !stream {
        return whole(finished, &options, flight).await;
    }

    let started = response_object(&id, created_at, &model, &body, "in_progress", &[], Value::Null);
    let mut sequence = 0u64;
    let mut event = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        sse_event(name, &data)
    };
    let mut frames = vec![
        Frame::new(options.first_byte_delay, event("response.created", json!({"response": started}))),
        Frame::new(Duration::ZERO, event("response.in_progress", json!({"response": started}))),
    ];
    let cut;
    match &answer {
        Answer::Text(text) => {
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
            let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
            let with = |extra: Value| {
                let mut data = at.clone();
                if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
                    data.extend(extra);
                }
                data
            };
            let added = json!({"output_index": 0, "item": {"id": item_id, "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}});
            frames.push(Frame::new(Duration::ZERO, event("response.output_item.added", added)));
            frames.push(Frame::new(
                Duration::ZERO,
                event("response.content_part.added", with(json!({"part": part("")}))),
            ));
            for (i, piece) in split(text, options.stream_chunks).into_iter().enumerate() {
                let delay = if i == 0 { Duration::ZERO } else { options.chunk_delay };
                let delta = with(json!({"delta": piece, "logprobs": []}));
                frames.push(Frame::new(delay, event("response.output_text.delta", delta)));
            }
            cut = 5;
            let done = with(json!({"text": text, "logprobs": []}));
            frames.push(Frame::new(Duration::ZERO, event("response.output_text.done", done)));
            frames.push(Frame::new(
                Duration::ZERO,
                event("response.content_part.done", with(json!({"part": part(text)}))),
            ));
        }
        Answer::Tool { call_id, name, arguments } => {
            let added = json!({"output_index": 0, "item": function_item(&item_id, call_id, name, "", "in_progress")});
            frames.push(Frame::new(Duration::ZERO, event("response.output_item.added", added)));
            for (i, piece) in split_nonempty(arguments, options.stream_chunks).into_iter().enumerate() {
                let delay = if i == 0 { Duration::ZERO } else { options.chunk_delay };
                let delta = json!({"item_id": item_id, "output_index": 0, "delta": piece});
                frames.push(Frame::new(delay, event("response.function_call_arguments.delta", delta)));
            }
            cut = 4;
            let done = json!({"item_id": item_id, "output_index": 0, "name": name, "arguments": arguments});
            frames.push(Frame::new(Duration::ZERO, event("response.function_call_arguments.done", done)));
        }
    }
    let item_done = json!({"output_index": 0, "item": done_item});
    frames.push(Frame::new(Duration::ZERO, event("response.output_item.done", item_done)));
    frames.push(Frame::new(Duration::ZERO, event("response.completed", json!({"response": finished}))));
    streamed(frames, cut, "text/event-stream", options.mode, flight)
}

fn stored(state: &FakeState, id: &str) -> Option<Stored> {
    lock(&state.stored).get(id).cloned()
}

fn response_not_found(id: &str) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("Response with id '{id}' not found."),
        "invalid_request_error",
        Some("not_found"),
        None,
    )
}

async fn responses_get(State(state): State<Arc<FakeState>>, Path(id): Path<String>) -> Response {
    if responses_off(&state.options()) {
        return not_found_error("Route");
    }
    match stored(&state, &id) {
        Some(stored) => Json(stored.response).into_response(),
        None => response_not_found(&id),
    }
}

async fn responses_delete(State(state): State<Arc<FakeState>>, Path(id): Path<String>) -> Response {
    if responses_off(&state.options()) {
        return not_found_error("Route");
    }
    match lock(&state.stored).remove(&id) {
        Some(_) => Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response(),
        None => response_not_found(&id),
    }
}

/// Our responses are complete by the time they are stored, so cancelling returns them unchanged.
async fn responses_cancel(State(state): State<Arc<FakeState>>, Path(id): Path<String>) -> Response {
    responses_get(State(state), Path(id)).await
}

/// Pages as OpenAI does: `order` (default `desc`), `limit` (default 20), `after`.
async fn responses_input_items(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if responses_off(&state.options()) {
        return not_found_error("Route");
    }
    let Some(stored) = stored(&state, &id) else {
        return response_not_found(&id);
    };
    let mut items = stored.input_items;
    if query.get("order").map(String::as_str) != Some("asc") {
        items.reverse();
    }
    if let Some(after) = query.get("after") {
        if let Some(at) = items.iter().position(|item| item.get("id").and_then(Value::as_str) == Some(after.as_str())) {
            items.drain(..=at);
        }
    }
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(20);
    let has_more = items.len() > limit;
    items.truncate(limit);
    let id_of = |item: Option<&Value>| item.and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
    let (first_id, last_id) = (id_of(items.first()), id_of(items.last()));
    Json(json!({"object": "list", "data": items, "first_id": first_id, "last_id": last_id, "has_more": has_more}))
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Ollama
// ---------------------------------------------------------------------------------------------

fn ollama_details(name: &str) -> Value {
    let base = name.split(':').next().unwrap_or(name);
    let family = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let family = if family.is_empty() { base } else { family };
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_K_M",
    })
}

fn ollama_digest(name: &str) -> String {
    let hash = fnv(name);
    format!("{hash:016x}").repeat(4)
}

async fn ollama_version(State(state): State<Arc<FakeState>>) -> Response {
    if !state.options().ollama {
        return not_found_error("Route");
    }
    Json(json!({"version": "0.6.0"})).into_response()
}

async fn ollama_tags(State(state): State<Arc<FakeState>>) -> Response {
    let options = state.options();
    if !options.ollama {
        return not_found_error("Route");
    }
    let models: Vec<Value> = options
        .models
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "model": name,
                "modified_at": "2025-03-01T12:00:00.000000000Z",
                "size": ollama_size(name),
                "digest": ollama_digest(name),
                "details": ollama_details(name),
            })
        })
        .collect();
    Json(json!({"models": models})).into_response()
}

async fn ollama_ps(State(state): State<Arc<FakeState>>) -> Response {
    let options = state.options();
    if !options.ollama {
        return not_found_error("Route");
    }
    let models: Vec<Value> = options
        .loaded
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "model": name,
                "size": ollama_size(name),
                "digest": ollama_digest(name),
                "details": ollama_details(name),
                "expires_at": ollama::expires_at(&state, name),
                "size_vram": ollama_size(name),
                "context_length": 4096,
            })
        })
        .collect();
    Json(json!({"models": models})).into_response()
}

// ---------------------------------------------------------------------------------------------
// Self-tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
    }

    /// The `data:` payloads of an SSE body, in order.
    fn data_lines(body: &str) -> Vec<String> {
        body.lines().filter_map(|line| line.strip_prefix("data: ")).map(str::to_owned).collect()
    }

    async fn post(provider: &FakeProvider, path: &str, body: Value) -> reqwest::Response {
        client().post(provider.at(path)).json(&body).send().await.unwrap()
    }

    #[tokio::test]
    async fn models_list() {
        let provider =
            FakeProvider::start(FakeOptions { models: vec!["a".into(), "b".into()], ..FakeOptions::default() }).await;
        let body: Value = client().get(provider.at("/v1/models")).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(body["data"][0]["object"], "model");
        assert_eq!(body["data"][0]["owned_by"], "fake");
        assert_eq!(provider.requests_to("/v1/models").len(), 1);
        provider.update(|o| o.record = false);
        client().get(provider.at("/v1/models")).send().await.unwrap();
        assert_eq!(provider.requests().len(), 1, "nothing recorded when record is off");
        provider.stop().await;
    }

    #[tokio::test]
    async fn chat_non_stream_with_usage_and_recording() {
        let provider = FakeProvider::start(FakeOptions::default()).await;
        let response = post(
            &provider,
            "/v1/chat/completions",
            json!({"model": "llama3", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"}]}),
        )
        .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "llama3");
        assert_eq!(body["choices"][0]["message"]["content"], "echo: hello there");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"], json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}));
        assert_eq!(provider.completed(), 1);
        assert_eq!(provider.in_flight(), 0);
        let recorded = provider.requests_to("/v1/chat/completions");
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].method, "POST");
        assert_eq!(recorded[0].header("Content-Type"), Some("application/json"));
        assert_eq!(recorded[0].json()["messages"][0]["content"], "be brief");

        let unknown = post(&provider, "/v1/chat/completions", json!({"model": "nope", "messages": []})).await;
        assert_eq!(unknown.status(), 404);
        let unknown: Value = unknown.json().await.unwrap();
        assert_eq!(unknown["error"]["code"], "model_not_found");
        let missing = post(&provider, "/v1/chat/completions", json!({"messages": []})).await;
        assert_eq!(missing.status(), 400);
        let bad = client().post(provider.at("/v1/chat/completions")).body("{nope").send().await.unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.json::<Value>().await.unwrap()["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn chat_stream_ends_with_done_and_usage_when_asked() {
        let provider = FakeProvider::start(FakeOptions { stream_chunks: 4, ..FakeOptions::default() }).await;
        let request = json!({"model": "llama3", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi you"}]}]});
        let response = post(&provider, "/v1/chat/completions", request).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let lines = data_lines(&response.text().await.unwrap());
        assert_eq!(lines.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        // role, 4 content pieces, finish, usage
        assert_eq!(chunks.len(), 7);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks[1..5].iter().map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap()).collect();
        assert_eq!(text, "echo: hi you");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[6]["choices"], json!([]));
        assert_eq!(chunks[6]["usage"]["completion_tokens"], 3);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "llama3"));

        let plain = json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let lines = data_lines(&post(&provider, "/v1/chat/completions", plain).await.text().await.unwrap());
        assert!(lines.iter().all(|l| !l.contains("\"usage\"")));
        assert_eq!(provider.completed(), 2);
        assert_eq!(provider.cancelled(), 0);
    }

    #[tokio::test]
    async fn chat_tool_call_streams_and_not() {
        let provider = FakeProvider::start(FakeOptions::default()).await;
        let tools =
            json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
        let request = json!({"model": "llama3", "tools": tools, "messages": [{"role": "user", "content": "weather?"}]});
        let body: Value = post(&provider, "/v1/chat/completions", request.clone()).await.json().await.unwrap();
        let call = &body["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], TOOL_ARGUMENTS);
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

        let mut streaming = request.clone();
        streaming["stream"] = json!(true);
        let lines = data_lines(&post(&provider, "/v1/chat/completions", streaming).await.text().await.unwrap());
        let chunks: Vec<Value> = lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
        assert_eq!(calls[0][0]["function"]["name"], "get_weather");
        assert_eq!(calls[0][0]["function"]["arguments"], "");
        assert!(calls.len() > 2, "arguments come in several pieces");
        let arguments: String = calls.iter().map(|c| c[0]["function"]["arguments"].as_str().unwrap()).collect();
        assert_eq!(arguments, TOOL_ARGUMENTS);
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

        // After the tool result the model answers with text.
        let follow = json!({"model": "llama3", "tools": tools, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]});
        let body: Value = post(&provider, "/v1/chat/completions", follow).await.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "echo: weather?");
    }

    #[tokio::test]
    async fn responses_non_stream_stream_and_id_routes() {
        let provider =
            FakeProvider::start(FakeOptions { reply: Some("fixed answer".into()), ..Default::default() }).await;
        let body: Value =
            post(&provider, "/v1/responses", json!({"model": "llama3", "input": "hello", "instructions": "be nice"}))
                .await
                .json()
                .await
                .unwrap();
        assert_eq!(body["object"], "response");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["output_text"], "fixed answer");
        assert_eq!(body["output"][0]["content"][0]["type"], "output_text");
        assert_eq!(body["usage"]["output_tokens"], 2);
        assert_eq!(body["usage"]["input_tokens"], 3);
        assert_eq!(body["instructions"], "be nice");
        let id = body["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("resp_"));

        let got: Value =
            client().get(provider.at(&format!("/v1/responses/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(got["id"], id.as_str());
        let items: Value = client()
            .get(provider.at(&format!("/v1/responses/{id}/input_items")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(items["object"], "list");
        assert_eq!(items["data"][0]["content"][0]["text"], "hello");
        assert_eq!(items["first_id"], items["data"][0]["id"]);
        assert_eq!(items["has_more"], false);
        let cancelled = client().post(provider.at(&format!("/v1/responses/{id}/cancel"))).send().await.unwrap();
        assert_eq!(cancelled.status(), 200);
        let deleted: Value =
            client().delete(provider.at(&format!("/v1/responses/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(deleted, json!({"id": id, "object": "response.deleted", "deleted": true}));
        let gone = client().get(provider.at(&format!("/v1/responses/{id}"))).send().await.unwrap();
        assert_eq!(gone.status(), 404);

        let text = post(&provider, "/v1/responses", json!({"model": "llama3", "input": "hi", "stream": true}))
            .await
            .text()
            .await
            .unwrap();
        let events: Vec<Value> = data_lines(&text).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events[0]["type"], "response.created");
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert_eq!(events.last().unwrap()["type"], "response.completed");
        assert_eq!(events.last().unwrap()["response"]["output_text"], "fixed answer");
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], i);
        }
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "fixed answer");
        assert!(text.contains("event: response.output_text.delta\n"));

        let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
        let text =
            post(&provider, "/v1/responses", json!({"model": "llama3", "input": "w?", "tools": tools, "stream": true}))
                .await
                .text()
                .await
                .unwrap();
        let events: Vec<Value> = data_lines(&text).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let done = &events.last().unwrap()["response"]["output"][0];
        assert_eq!(done["type"], "function_call");
        assert_eq!(done["name"], "get_weather");
        assert_eq!(done["arguments"], TOOL_ARGUMENTS);
        assert!(events.iter().any(|e| e["type"] == "response.function_call_arguments.delta"));
    }

    #[tokio::test]
    async fn responses_404_when_disabled_or_mode() {
        let provider = FakeProvider::start(FakeOptions { responses_api: false, ..Default::default() }).await;
        let response = post(&provider, "/v1/responses", json!({"model": "llama3", "input": "x"})).await;
        assert_eq!(response.status(), 404);
        provider.update(|o| o.responses_api = true);
        let response = post(&provider, "/v1/responses", json!({"model": "llama3", "input": "x"})).await;
        assert_eq!(response.status(), 200);
        provider.set_mode(Mode::NotFoundResponses);
        let response = post(&provider, "/v1/responses", json!({"model": "llama3", "input": "x"})).await;
        assert_eq!(response.status(), 404);
        let chat = post(&provider, "/v1/chat/completions", json!({"model": "llama3", "messages": []})).await;
        assert_eq!(chat.status(), 200);
    }

    #[tokio::test]
    async fn fail500_garbage_and_required_headers() {
        let provider = FakeProvider::start(FakeOptions { mode: Mode::Fail500, ..Default::default() }).await;
        let response = post(&provider, "/v1/chat/completions", json!({"model": "llama3", "messages": []})).await;
        assert_eq!(response.status(), 500);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(post(&provider, "/v1/responses", json!({"model": "llama3", "input": "x"})).await.status(), 500);
        assert_eq!(client().get(provider.at("/v1/models")).send().await.unwrap().status(), 200);

        provider.set_mode(Mode::Garbage);
        let response =
            post(&provider, "/v1/chat/completions", json!({"model": "llama3", "stream": true, "messages": []})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(&response.bytes().await.unwrap()[..], GARBAGE);

        provider.set_mode(Mode::Normal);
        provider.update(|o| o.required_headers = vec![("Authorization".into(), "Bearer k".into())]);
        assert_eq!(client().get(provider.at("/v1/models")).send().await.unwrap().status(), 401);
        let ok = client().get(provider.at("/v1/models")).bearer_auth("k").send().await.unwrap();
        assert_eq!(ok.status(), 200);
    }

    #[tokio::test]
    async fn cancellation_is_counted_when_the_client_drops_a_stream() {
        use futures_util::StreamExt;
        let provider = FakeProvider::start(FakeOptions {
            stream_chunks: 50,
            chunk_delay: Duration::from_millis(20),
            ..Default::default()
        })
        .await;
        let request = json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let mut body = post(&provider, "/v1/chat/completions", request.clone()).await.bytes_stream();
        body.next().await.unwrap().unwrap();
        assert_eq!(provider.in_flight(), 1);
        drop(body);
        assert!(provider.wait_cancelled(1, Duration::from_secs(3)).await);
        assert_eq!(provider.in_flight(), 0);
        assert_eq!(provider.completed(), 0);

        // A stream that hangs mid-way, and a request that hangs before its headers, are cancelled too.
        provider.set_mode(Mode::HangMidStream);
        let mut body = post(&provider, "/v1/chat/completions", request.clone()).await.bytes_stream();
        body.next().await.unwrap().unwrap();
        drop(body);
        assert!(provider.wait_cancelled(2, Duration::from_secs(3)).await);

        provider.set_mode(Mode::Hang);
        let url = provider.at("/v1/chat/completions");
        let pending = tokio::spawn(async move { client().post(url).json(&request).send().await });
        assert!(provider.wait_in_flight(1, Duration::from_secs(3)).await);
        pending.abort();
        assert!(provider.wait_cancelled(3, Duration::from_secs(3)).await);
        assert_eq!(provider.in_flight(), 0);
    }

    #[tokio::test]
    async fn drop_mid_stream_cuts_the_connection() {
        use futures_util::StreamExt;
        let provider = FakeProvider::start(FakeOptions { mode: Mode::DropMidStream, ..Default::default() }).await;
        let request = json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let response = post(&provider, "/v1/chat/completions", request).await;
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut received = Vec::new();
        let error = loop {
            match body.next().await {
                Some(Ok(bytes)) => received.extend_from_slice(&bytes),
                Some(Err(error)) => break error,
                None => panic!("the body must end in an error, not cleanly"),
            }
        };
        assert!(error.is_body() || error.is_decode(), "{error:?}");
        let received = String::from_utf8(received).unwrap();
        assert!(received.contains("\"role\":\"assistant\""), "the first frames arrive before the cut");
        assert!(!received.contains("[DONE]"));
        assert!(provider.wait_until(Duration::from_secs(3), |p| p.aborted() == 1).await);
        assert_eq!(provider.cancelled(), 0);
    }

    #[tokio::test]
    async fn stop_ends_hung_requests_and_refuses_connections() {
        let provider = FakeProvider::start(FakeOptions { mode: Mode::Hang, ..Default::default() }).await;
        let url = provider.at("/v1/chat/completions");
        let hung = tokio::spawn({
            let url = url.clone();
            async move { client().post(url).json(&json!({"model": "llama3", "messages": []})).send().await }
        });
        assert!(provider.wait_in_flight(1, Duration::from_secs(3)).await);
        let state = provider.state.clone();
        let started = Instant::now();
        provider.stop().await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = hung.await.unwrap();
        assert_eq!(state.aborted.load(Ordering::SeqCst), 1);
        assert!(client().get(url).send().await.is_err(), "connection refused after stop");
    }

    #[tokio::test]
    async fn ollama_endpoints() {
        let provider = FakeProvider::start(FakeOptions {
            ollama: true,
            models: vec!["llama3:latest".into(), "qwen2.5:7b".into()],
            loaded: vec!["qwen2.5:7b".into()],
            ..Default::default()
        })
        .await;
        let get = |path: &str| {
            let url = provider.at(path);
            async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
        };
        assert_eq!(get("/api/version").await, json!({"version": "0.6.0"}));
        let tags = get("/api/tags").await;
        let models = tags["models"].as_array().unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0]["name"], "llama3:latest");
        assert_eq!(models[0]["details"]["family"], "llama");
        assert_eq!(models[1]["details"]["family"], "qwen");
        assert_eq!(models[0]["details"]["quantization_level"], "Q4_K_M");
        assert_eq!(models[0]["digest"].as_str().unwrap().len(), 64);
        let ps = get("/api/ps").await;
        assert_eq!(ps["models"].as_array().unwrap().len(), 1);
        assert_eq!(ps["models"][0]["model"], "qwen2.5:7b");
        assert_eq!(ps["models"][0]["size_vram"], ollama_size("qwen2.5:7b"));

        let plain = FakeProvider::start(FakeOptions::default()).await;
        assert_eq!(client().get(plain.at("/api/tags")).send().await.unwrap().status(), 404);
    }

    /// `/api/ps`'s `expires_at` as Ollama writes it: RFC 3339 with nanoseconds, last use plus
    /// the keep-alive, moved by every inference request on any surface when it ends.
    #[tokio::test]
    async fn ollama_expiry_moves_with_every_use() {
        let provider = FakeProvider::start(FakeOptions {
            ollama: true,
            models: vec!["llama3:latest".into(), "qwen2.5:7b".into()],
            loaded: vec!["llama3:latest".into(), "qwen2.5:7b".into()],
            ..Default::default()
        })
        .await;
        let expiry = |model: &'static str| {
            let url = provider.at("/api/ps");
            async move {
                let ps: Value = client().get(url).send().await.unwrap().json().await.unwrap();
                let entry = ps["models"].as_array().unwrap().iter().find(|m| m["name"] == model).unwrap().clone();
                let text = entry["expires_at"].as_str().unwrap().to_owned();
                (text.clone(), humantime::parse_rfc3339(&text).unwrap())
            }
        };
        let (first, at) = expiry("llama3:latest").await;
        assert!(first.ends_with('Z') && first.contains('.'), "{first}");
        let left = at.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(290) && left <= ollama::KEEP_ALIVE, "{first}");
        assert_eq!(expiry("llama3:latest").await.0, first, "a look alone moves nothing");

        let chat = json!({"model": "llama3", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
        let uses = [
            ("/api/chat", chat.clone()),
            ("/api/generate", json!({"model": "llama3:latest", "prompt": "hi", "stream": false})),
            ("/api/embed", json!({"model": "llama3", "input": "hi"})),
            ("/api/embeddings", json!({"model": "llama3", "prompt": "hi"})),
            (
                "/v1/chat/completions",
                json!({"model": "llama3:latest", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            ("/v1/completions", json!({"model": "llama3:latest", "prompt": "hi"})),
            ("/v1/embeddings", json!({"model": "llama3:latest", "input": "hi"})),
            ("/v1/responses", json!({"model": "llama3:latest", "input": "hi"})),
        ];
        let mut last = first;
        for (path, body) in uses {
            let qwen = expiry("qwen2.5:7b").await.0;
            assert_eq!(post(&provider, path, body).await.status(), 200, "{path}");
            let (now, _) = expiry("llama3:latest").await;
            assert!(now > last, "{path} moved the expiry: {last} then {now}");
            assert_eq!(expiry("qwen2.5:7b").await.0, qwen, "{path} used another model");
            last = now;
        }

        // A request in flight does not move it; its end does. Its keep_alive stays with the model.
        provider.update(|o| o.first_byte_delay = Duration::from_millis(600));
        let long = json!({"model": "llama3", "stream": false, "keep_alive": "1h", "prompt": "slow"});
        let pending = tokio::spawn(client().post(provider.at("/api/generate")).json(&long).send());
        assert!(provider.wait_in_flight(1, Duration::from_secs(3)).await);
        assert_eq!(expiry("llama3:latest").await.0, last, "moved while in flight");
        assert_eq!(pending.await.unwrap().unwrap().status(), 200);
        provider.update(|o| o.first_byte_delay = Duration::ZERO);
        let (text, at) = expiry("llama3:latest").await;
        assert!(text > last, "{text}");
        let left = at.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600), "{text}");
        assert_eq!(post(&provider, "/api/chat", chat).await.status(), 200);
        let left = expiry("llama3:latest").await.1.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3590), "the model kept its keep_alive: {left:?}");

        assert_eq!(ollama::keep_alive(&json!(-1)), ollama::keep_alive(&json!("-5m")));
        assert_eq!(ollama::keep_alive(&json!(0)), Some(Duration::ZERO));
        assert_eq!(ollama::keep_alive(&json!("0")), Some(Duration::ZERO));
        assert_eq!(ollama::keep_alive(&json!(30)), Some(Duration::from_secs(30)));
        assert_eq!(ollama::keep_alive(&json!("10m")), Some(Duration::from_secs(600)));
        assert_eq!(ollama::rfc3339(UNIX_EPOCH + Duration::from_millis(1500)), "1970-01-01T00:00:01.5Z");
        assert_eq!(ollama::rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
