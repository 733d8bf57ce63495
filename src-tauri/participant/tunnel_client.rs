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
    /// A client that keeps no idle connections: the one retry of a request the model server
    /// closed its connection on without answering goes out on a new connection.
    fresh: reqwest::Client,
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
    pub fn new(
        http: reqwest::Client,
        fresh: reqwest::Client,
        endpoint: String,
        auth: HeaderMap,
        outgoing: mpsc::Sender<String>,
    ) -> Self {
        Executor {
            http,
            fresh,
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
        // Only a room's inference calls, on the provider: never its management API, and never a
        // scheme, host or `..` that would send the call (and the participant's credentials)
        // anywhere else.
        if !super::tunnel_calls::allowed(method, path) {
            tracing::warn!(%request_id, method, path = %path.escape_debug(), "refused a call the hub asked for: not an inference endpoint");
            self.send(error("request", format!("refused {method} {path:?}: a share serves only inference endpoints")))
                .await;
            return;
        }
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            self.send(error("request", format!("unknown method {method:?}"))).await;
            return;
        };
        // As bytes, so the retry sends the same body without copying it.
        let body = body.map(bytes::Bytes::from);
        let request = |client: &reqwest::Client| {
            let mut request = client.request(method.clone(), format!("{}{path}", self.endpoint));
            for (k, v) in headers {
                if FORWARDED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                    request = request.header(k.as_str(), v.as_str());
                }
            }
            request = request.headers(self.auth.clone());
            if let Some(body) = &body {
                if !headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
                    request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
                }
                request = request.body(body.clone());
            }
            request
        };
        let response = match request(&self.http).send().await {
            // The server closed the connection and not one byte of an answer came: it never read
            // the request, or never answered it (a keep-alive connection it was closing as the
            // request went out). Sent once more, on a new connection; a second such close is the
            // answer.
            Err(e) if closed_unanswered(&e) => {
                tracing::debug!(%request_id, error = %e, "the model server closed the connection unanswered; sending again");
                request(&self.fresh).send().await
            }
            sent => sent,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let reason = if e.is_connect() {
                    "the model server is not running or unreachable"
                } else if closed_unanswered(&e) {
                    "the model server closed the connection without answering, twice"
                } else {
                    "request failed"
                };
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

/// Whether `e` is a connection the server closed (or reset) before a byte of its answer came:
/// hyper's incomplete message ("connection closed before message completed"), a request it
/// cancelled unsent, or a reset or broken pipe under either. Never a failed connect (no server),
/// a timeout (the server may be working on it) or anything after the answer's head.
fn closed_unanswered(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind;
    if !e.is_request() || e.is_connect() || e.is_timeout() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(h) = cause.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model server that records every call it gets and answers each with a small JSON.
    async fn recording_server() -> (String, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |method: axum::http::Method, uri: axum::http::Uri| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(format!("{method} {uri}"));
                axum::Json(serde_json::json!({"ok": true}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, seen)
    }

    fn request(id: &str, method: &str, path: &str) -> String {
        TunnelMessage::Request {
            request_id: id.into(),
            operation: "x".into(),
            method: method.into(),
            path: path.into(),
            headers: BTreeMap::new(),
            body: Some(serde_json::json!({"name": "llama3"})),
            stream: false,
            metadata: None,
        }
        .encode()
    }

    /// The first frame the executor sends back about `id`.
    async fn answer(rx: &mut mpsc::Receiver<String>, id: &str) -> TunnelMessage {
        loop {
            let text = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            if let Decoded::Message(m) = TunnelMessage::decode(&text) {
                if m.request_id() == Some(id) {
                    return m;
                }
            }
        }
    }

    /// A hub (or whoever took it over) asks the share for the model server's management API:
    /// Ollama's pull, delete and create, LM Studio's model loading. The participant refuses
    /// before the model server hears of it, and still serves the room's inference calls.
    #[tokio::test]
    async fn the_hub_cannot_reach_the_model_server_s_management_api_through_a_share() {
        let (url, seen) = recording_server().await;
        let (tx, mut rx) = mpsc::channel(16);
        let executor = Executor::new(reqwest::Client::new(), reqwest::Client::new(), url, HeaderMap::new(), tx);
        let stop = CancellationToken::new();
        let refused = [
            ("POST", "/api/pull"),
            ("DELETE", "/api/delete"),
            ("POST", "/api/create"),
            ("POST", "/api/v0/models/load"),
            ("GET", "/v1/models"),
            ("GET", "/v1/responses/../../api/tags"),
        ];
        for (i, (method, path)) in refused.iter().enumerate() {
            let id = format!("r{i}");
            executor.handle(&request(&id, method, path), &stop);
            match answer(&mut rx, &id).await {
                TunnelMessage::ResponseError { stage, message, .. } => {
                    assert_eq!(stage, "request", "{method} {path}");
                    assert!(message.contains("only inference endpoints"), "{message}");
                }
                other => panic!("{method} {path} was not refused: {other:?}"),
            }
        }
        executor.handle(&request("ok", "POST", "/v1/chat/completions"), &stop);
        assert!(matches!(answer(&mut rx, "ok").await, TunnelMessage::ResponseStart { status: 200, .. }));
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["POST /v1/chat/completions".to_string()],
            "the model server heard only the chat"
        );
    }
}
