//! The participant's end of the tunnel: reads the hub's frames, runs each `tunnel.request` against
//! the local provider (adding the participant's own auth headers, which never leave this process),
//! streams the answer back as `tunnel.response.*` frames, and aborts a call on `tunnel.cancel`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::protocol::tunnel::{Decoded, RequestFrame, TunnelMessage};

/// Largest piece of an answer put in one chunk frame.
const MAX_CHUNK: usize = 256 * 1024;

/// Headers of the hub's request that are passed on to the provider; anything else (hop-by-hop,
/// host, authorization meant for the hub) is dropped.
const FORWARDED_HEADERS: &[&str] = &["content-type", "accept", "openai-beta", "user-agent"];

/// Headers of the provider's answer that go back to the hub.
const RETURNED_HEADERS: &[&str] = &["content-type", "cache-control", "x-request-id", "openai-processing-ms"];

/// Runs provider calls for one tunnel.
#[derive(Clone)]
pub struct Executor {
    pub http: reqwest::Client,
    pub endpoint: String,
    pub auth: HeaderMap,
    pub outgoing: mpsc::Sender<String>,
    calls: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Frames that did not parse or made no sense, as the contract says to count them.
    pub ignored: Arc<std::sync::atomic::AtomicU64>,
    /// Woken when a call cannot reach the provider, so the session's provider watch looks at once
    /// instead of at its next round.
    provider_trouble: Arc<Notify>,
    /// Calls started so far, and when the last one ended (ms since the epoch): what the owner
    /// watch subtracts from what the provider says it is doing.
    started: Arc<std::sync::atomic::AtomicU64>,
    last_end_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Executor {
    pub fn new(http: reqwest::Client, endpoint: String, auth: HeaderMap, outgoing: mpsc::Sender<String>) -> Self {
        Executor {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            auth,
            outgoing,
            calls: Arc::new(Mutex::new(HashMap::new())),
            ignored: Arc::default(),
            provider_trouble: Arc::default(),
            started: Arc::default(),
            last_end_ms: Arc::default(),
        }
    }

    /// Notified each time a call finds the provider unreachable.
    pub fn provider_trouble(&self) -> Arc<Notify> {
        self.provider_trouble.clone()
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles one text frame from the hub.
    pub fn handle(&self, text: &str, stop: &CancellationToken) {
        // Requests are read with their body as text: it goes to the provider as it came.
        if let Some(RequestFrame { request_id, method, path, headers, body, .. }) = RequestFrame::decode(text) {
            let body = body.map(|b| String::from(Box::<str>::from(b)));
            self.start(request_id, method, path, headers, body, stop);
            return;
        }
        match TunnelMessage::decode(text) {
            Decoded::Message(TunnelMessage::Request { request_id, method, path, headers, body, .. }) => {
                self.start(request_id, method, path, headers, body.map(|b| b.to_string()), stop);
            }
            Decoded::Message(TunnelMessage::Cancel { request_id }) => {
                if let Some(token) = self.calls().remove(&request_id) {
                    tracing::debug!(%request_id, "provider call cancelled by the hub");
                    token.cancel();
                }
            }
            Decoded::Message(TunnelMessage::Pong { .. }) => {}
            Decoded::Message(TunnelMessage::Shutdown { grace_ms }) => {
                // The tunnel closes when the hub is done; the supervisor then reconnects.
                tracing::info!(grace_ms, "the hub is shutting down; finishing the calls in flight");
            }
            Decoded::Message(_) | Decoded::Ignored { .. } => {
                self.ignored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn start(
        &self,
        request_id: String,
        method: String,
        path: String,
        headers: BTreeMap<String, String>,
        body: Option<String>,
        stop: &CancellationToken,
    ) {
        let token = stop.child_token();
        self.calls().insert(request_id.clone(), token.clone());
        self.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = this.run(&request_id, &method, &path, &headers, body) => {}
            }
            this.calls().remove(&request_id);
            this.last_end_ms.store(crate::protocol::now_ms(), std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// What this participant is asking of its provider now.
    pub fn activity(&self) -> super::owner_watch::Ours {
        use std::sync::atomic::Ordering::Relaxed;
        super::owner_watch::Ours {
            in_flight: self.in_flight(),
            started: self.started.load(Relaxed),
            last_end_ms: self.last_end_ms.load(Relaxed),
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.calls().len()
    }

    async fn send(&self, message: TunnelMessage) -> bool {
        self.outgoing.send(message.encode()).await.is_ok()
    }

    async fn run(
        &self,
        request_id: &str,
        method: &str,
        path: &str,
        headers: &BTreeMap<String, String>,
        body: Option<String>,
    ) {
        let error = |stage: &str, message: String| TunnelMessage::ResponseError {
            request_id: request_id.to_string(),
            stage: stage.to_string(),
            message,
        };
        // Only a path on the provider: never a scheme, host or `..` that would send the call (and
        // the participant's credentials) anywhere else.
        if !path.starts_with('/') || path.starts_with("//") || path.split('/').any(|s| s == "..") {
            self.send(error("request", format!("refused path {path:?}"))).await;
            return;
        }
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            self.send(error("request", format!("unknown method {method:?}"))).await;
            return;
        };
        let mut request = self.http.request(method, format!("{}{path}", self.endpoint));
        for (k, v) in headers {
            if FORWARDED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                request = request.header(k.as_str(), v.as_str());
            }
        }
        request = request.headers(self.auth.clone());
        if let Some(body) = body {
            if !headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            request = request.body(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let reason =
                    if e.is_connect() { "the model server is not running or unreachable" } else { "request failed" };
                if e.is_connect() || e.is_timeout() {
                    self.provider_trouble.notify_one();
                }
                // Before any byte of an answer: the hub may still send the request elsewhere.
                self.send(error("connect", reason.to_string())).await;
                return;
            }
        };
        let returned: BTreeMap<String, String> = response
            .headers()
            .iter()
            .filter(|(k, _)| RETURNED_HEADERS.contains(&k.as_str()))
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
            .collect();
        let start = TunnelMessage::ResponseStart {
            request_id: request_id.to_string(),
            status: response.status().as_u16(),
            headers: returned,
        };
        if !self.send(start).await {
            return;
        }
        let mut body = response.bytes_stream();
        while let Some(piece) = body.next().await {
            match piece {
                Ok(bytes) => {
                    for part in bytes.chunks(MAX_CHUNK) {
                        if !self.send(TunnelMessage::chunk(request_id, part)).await {
                            return;
                        }
                    }
                }
                Err(_) => {
                    self.send(error("stream", "the model server's answer broke off".into())).await;
                    return;
                }
            }
        }
        self.send(TunnelMessage::ResponseEnd { request_id: request_id.to_string() }).await;
    }
}
