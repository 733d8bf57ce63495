//! A typed HTTP client of the hub's management plane (`/v1`): rooms, participants, heartbeats and
//! health, with the envelope unwrapped and the error envelope turned into a [`ClientError`]. The
//! CLI uses it today; the participant runtime and the desktop app reuse it, so nothing here prints,
//! exits or knows about clap. Event streams and the tunnel live elsewhere.

pub mod events;

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::{
    Capabilities, CreatedRoom, Envelope, ErrorEnvelope, Health, HeartbeatNews, HeartbeatResult, LoadedModel,
    MachineSpecs, Participant, Registered, RoomSummary, RuntimeConfig, Success,
};

/// How long to wait for a TCP (and TLS) connection to the hub: a LAN hub answers in milliseconds,
/// so a long wait only means it is not there.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one management call may take from start to the last byte of its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read into memory. A listing of 10,000 participants is a few MiB; anything
/// far beyond that is not a hub talking, and must not exhaust the caller's memory.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Everything a management call can fail with, told apart by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer at all: connection refused, DNS failure, timeout, or the connection dropped.
    #[error("cannot reach the hub at {url}: {}", transport_reason(.source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The hub answered with an error envelope (or an error status without one).
    #[error("{message}")]
    Api { status: u16, code: String, message: String, hint: Option<String> },
    /// The hub answered success with a body this client does not understand.
    #[error("unexpected answer from {url} (HTTP {status}): {reason}")]
    Decode { url: String, status: u16, reason: String },
    /// A room code or participant id that cannot be put in a path (empty, `.` or `..`).
    #[error("{value:?} is not a valid room code or participant id")]
    InvalidInput { value: String },
    /// The hub address itself is not usable.
    #[error("invalid hub URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl ClientError {
    /// The process exit code for this failure, as the product's command line defines them:
    /// 1 internal failure, 2 bad usage or 400, 3 hub unreachable or 401/403/503, 4 404/409.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => 3,
            ClientError::Api { status, .. } => match *status {
                // Bad usage: the request itself was wrong (too large, unprocessable, ...).
                400 | 405 | 411 | 413 | 414 | 415 | 422 => 2,
                // Not allowed, or the hub (or a proxy in front of it) cannot serve right now.
                401 | 403 | 407 | 429 | 502 | 503 | 504 => 3,
                404 | 409 | 410 => 4,
                _ => 1,
            },
            ClientError::Decode { .. } => 1,
            ClientError::InvalidInput { .. } | ClientError::InvalidUrl { .. } => 2,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The management plane's error code (`ROOM_NOT_FOUND`, `INVALID_PASSWORD`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The hub's advice on what to do next, when it gave one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            ClientError::Api { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

/// A short reason for a transport failure ("connection refused", "timed out"), rather than
/// reqwest's nested "error sending request for url (...)" chain.
pub(crate) fn transport_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut deepest: Option<&(dyn std::error::Error + 'static)> = None;
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::ConnectionAborted => "connection aborted".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        deepest = Some(s);
        source = s.source();
    }
    match deepest {
        Some(s) => s.to_string(),
        None => error.to_string(),
    }
}

/// The body of `PUT /v1/rooms/:code/participants/:id`: what a participant tells the hub about
/// itself. Optional parts are left out of the JSON when `None`, so the hub keeps its defaults.
#[derive(Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub nickname: String,
    pub model: String,
    /// The provider's base URL as the participant sees it (it may be `localhost`: with a tunnel the
    /// hub never dials it).
    pub endpoint: String,
    /// The room's password, when it has one. Never shown by `Debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specs: Option<MachineSpecs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<RuntimeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_models: Option<Vec<LoadedModel>>,
    /// Additive: what the provider tells of the model (Ollama's `/api/tags` details).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_details: Option<crate::protocol::ModelDetails>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("nickname", &self.nickname)
            .field("model", &self.model)
            .field("endpoint", &self.endpoint)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("specs", &self.specs)
            .field("config", &self.config.as_ref().map(|c| c.public()))
            .field("capabilities", &self.capabilities)
            .field("max_concurrency", &self.max_concurrency)
            .field("loaded_models", &self.loaded_models)
            .finish()
    }
}

/// `POST /v1/rooms` body.
#[derive(Serialize)]
struct CreateRoomBody<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    defaults: Option<RuntimeConfig>,
}

/// A client of one hub. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct HubClient {
    /// Normalized: `http(s)://host[:port][/prefix]`, no trailing slash, no query.
    base: Url,
    base_text: String,
    http: reqwest::Client,
    request_timeout: Duration,
}

impl HubClient {
    /// A client of the hub at `base_url`. A bare `host:port` means `http://host:port`; a trailing
    /// slash is dropped; only `http` and `https` are accepted.
    pub fn new(base_url: &str) -> Result<HubClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("gambi/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::InvalidUrl {
                url: base_url.to_string(),
                reason: format!("cannot set up the HTTP client: {e}"),
            })?;
        Self::with_http_client(base_url, http)
    }

    /// Like [`HubClient::new`], with a caller's `reqwest::Client` (its own pool, proxy or TLS
    /// settings). Per-call timeouts still apply.
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<HubClient, ClientError> {
        let base = normalize_base_url(base_url)?;
        let base_text = base.as_str().trim_end_matches('/').to_string();
        Ok(HubClient { base, base_text, http, request_timeout: REQUEST_TIMEOUT })
    }

    /// Changes how long one call may take (default [`REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> HubClient {
        self.request_timeout = timeout;
        self
    }

    /// The hub's normalized address, without a trailing slash (`http://localhost:3000`).
    pub fn base_url(&self) -> &str {
        &self.base_text
    }

    /// The room's OpenAI-compatible base URL: `<hub>/rooms/<CODE>/v1`.
    pub fn inference_url(&self, code: &str) -> String {
        match self.url(&["rooms", code, "v1"]) {
            Ok(url) => url.to_string(),
            Err(_) => format!("{}/rooms/{code}/v1", self.base_text),
        }
    }

    /// The room's `/v1` event stream URL (for an SSE reader).
    pub fn events_url(&self, code: &str) -> Result<Url, ClientError> {
        self.url(&["v1", "rooms", code, "events"])
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, &["v1", "health"], None::<&()>, None).await.map(|(_, data)| data)
    }

    /// `GET /v1/rooms`.
    pub async fn list_rooms(&self) -> Result<Vec<RoomSummary>, ClientError> {
        self.call(Method::GET, &["v1", "rooms"], None::<&()>, None).await.map(|(_, data)| data)
    }

    /// `POST /v1/rooms`. The answer carries the host token, the only time the hub ever shows it.
    pub async fn create_room(
        &self,
        name: &str,
        password: Option<&str>,
        defaults: Option<RuntimeConfig>,
    ) -> Result<CreatedRoom, ClientError> {
        let body = CreateRoomBody { name, password, defaults };
        self.call(Method::POST, &["v1", "rooms"], Some(&body), None).await.map(|(_, data)| data)
    }

    /// `GET /v1/rooms/:code`.
    pub async fn get_room(&self, code: &str) -> Result<RoomSummary, ClientError> {
        self.call(Method::GET, &["v1", "rooms", code], None::<&()>, None).await.map(|(_, data)| data)
    }

    /// `GET /v1/rooms/:code` with `key` (a protected room's password or host token): the room and
    /// what it has served (`stats`, given to readers with the key).
    pub async fn get_room_details_as(
        &self,
        code: &str,
        key: Option<&str>,
    ) -> Result<crate::protocol::stats::RoomDetails, ClientError> {
        self.call(Method::GET, &["v1", "rooms", code], None::<&()>, key).await.map(|(_, data)| data)
    }

    /// `GET /v1/rooms/:code/participants` with `key`, each participant with what it has served.
    pub async fn list_participant_details_as(
        &self,
        code: &str,
        key: Option<&str>,
    ) -> Result<Vec<crate::protocol::stats::ParticipantDetails>, ClientError> {
        self.call(Method::GET, &["v1", "rooms", code, "participants"], None::<&()>, key).await.map(|(_, data)| data)
    }

    /// `DELETE /v1/rooms/:code` with `Authorization: Bearer <host_token>`.
    pub async fn delete_room(&self, code: &str, host_token: &str) -> Result<Success, ClientError> {
        self.call(Method::DELETE, &["v1", "rooms", code], None::<&()>, Some(host_token)).await.map(|(_, data)| data)
    }

    /// `GET /v1/rooms/:code/participants`.
    pub async fn list_participants(&self, code: &str) -> Result<Vec<Participant>, ClientError> {
        self.list_participants_as(code, None).await
    }

    /// `GET /v1/rooms/:code/participants` with `key`: a protected room's password (or its host
    /// token), which its participant list needs.
    pub async fn list_participants_as(&self, code: &str, key: Option<&str>) -> Result<Vec<Participant>, ClientError> {
        self.call(Method::GET, &["v1", "rooms", code, "participants"], None::<&()>, key).await.map(|(_, data)| data)
    }

    /// `GET /v1/rooms/:code/participants/:id`.
    pub async fn get_participant(&self, code: &str, id: &str) -> Result<Participant, ClientError> {
        self.get_participant_as(code, id, None).await
    }

    /// `GET /v1/rooms/:code/participants/:id` with `key`: a protected room's password, its host
    /// token, or the participant's own token.
    pub async fn get_participant_as(
        &self,
        code: &str,
        id: &str,
        key: Option<&str>,
    ) -> Result<Participant, ClientError> {
        self.call(Method::GET, &["v1", "rooms", code, "participants", id], None::<&()>, key).await.map(|(_, data)| data)
    }

    /// `PUT /v1/rooms/:code/participants/:id`: registers or updates. The flag is true when the
    /// hub created the participant (201) and false when it updated an existing one (200).
    pub async fn upsert_participant(
        &self,
        code: &str,
        id: &str,
        registration: &Registration,
    ) -> Result<(Registered, bool), ClientError> {
        self.upsert_participant_as(code, id, registration, None).await
    }

    /// Like [`HubClient::upsert_participant`], proving the participant with its token (needed to
    /// replace it while its tunnel is live). The answer's `participant_token` is set when the hub
    /// handed out a new one; keep it for the next calls.
    pub async fn upsert_participant_as(
        &self,
        code: &str,
        id: &str,
        registration: &Registration,
        participant_token: Option<&str>,
    ) -> Result<(Registered, bool), ClientError> {
        let (status, data) = self
            .call(Method::PUT, &["v1", "rooms", code, "participants", id], Some(registration), participant_token)
            .await?;
        Ok((data, status == StatusCode::CREATED))
    }

    /// `POST /v1/rooms/:code/participants/:id/heartbeat`, refreshing the loaded models when given.
    pub async fn heartbeat(
        &self,
        code: &str,
        id: &str,
        loaded_models: Option<Vec<LoadedModel>>,
    ) -> Result<HeartbeatResult, ClientError> {
        self.heartbeat_as(code, id, loaded_models, None).await
    }

    /// A heartbeat with the participant's token, which the hub asks for when it carries news
    /// (loaded models).
    pub async fn heartbeat_as(
        &self,
        code: &str,
        id: &str,
        loaded_models: Option<Vec<LoadedModel>>,
        participant_token: Option<&str>,
    ) -> Result<HeartbeatResult, ClientError> {
        self.heartbeat_news(code, id, &HeartbeatNews { loaded_models, ..HeartbeatNews::default() }, participant_token)
            .await
    }

    /// A heartbeat carrying `news` (loaded models, a pause or its end) with the participant's
    /// token; one without news has no body, as the seed's participants send it.
    pub async fn heartbeat_news(
        &self,
        code: &str,
        id: &str,
        news: &HeartbeatNews,
        participant_token: Option<&str>,
    ) -> Result<HeartbeatResult, ClientError> {
        let body = (!news.is_empty()).then_some(news);
        self.call(Method::POST, &["v1", "rooms", code, "participants", id, "heartbeat"], body, participant_token)
            .await
            .map(|(_, data)| data)
    }

    /// `DELETE /v1/rooms/:code/participants/:id` without a token (enough only on a `--compat` hub).
    pub async fn leave(&self, code: &str, id: &str) -> Result<Success, ClientError> {
        self.leave_as(code, id, None).await
    }

    /// `DELETE /v1/rooms/:code/participants/:id` with `Authorization: Bearer <token>`: the
    /// participant's token, or the room's host token.
    pub async fn leave_as(&self, code: &str, id: &str, token: Option<&str>) -> Result<Success, ClientError> {
        self.call(Method::DELETE, &["v1", "rooms", code, "participants", id], None::<&()>, token)
            .await
            .map(|(_, data)| data)
    }

    /// The hub's URL with `segments` appended, each percent-encoded: a code or id typed by a
    /// person can never turn into another path or a query.
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        // The URL parser drops `.` and `..` segments instead of encoding them, which would send
        // the call to another endpoint; an empty one would too.
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(ClientError::InvalidInput { value: bad.to_string() });
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl {
                url: self.base_text.clone(),
                reason: "it cannot have a path".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One management call: sends, reads a bounded answer, unwraps the envelope.
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, T), ClientError> {
        let url = self.url(segments)?;
        let mut request = self
            .http
            .request(method, url.clone())
            .timeout(self.request_timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let unreachable = |source| ClientError::Unreachable { url: self.base_text.clone(), source };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ClientError::Decode {
                    url: url.to_string(),
                    status: status.as_u16(),
                    reason: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                url: url.to_string(),
                status: status.as_u16(),
                reason: e.to_string(),
            })?;
            Ok((status, envelope.data))
        } else {
            Err(api_error(status, &bytes))
        }
    }
}

/// Turns an error answer into [`ClientError::Api`]: the hub's envelope when there is one, else
/// the status itself (a proxy's HTML page, or something that is not a hub).
pub fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => ClientError::Api {
            status: status.as_u16(),
            code: envelope.error.code,
            message: envelope.error.message,
            hint: envelope.error.hint,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: format!("HTTP_{}", status.as_u16()),
            message: format!(
                "the hub answered HTTP {}{}",
                status.as_u16(),
                status.canonical_reason().map(|r| format!(" {r}")).unwrap_or_default()
            ),
            hint: Some("Check that the address points at a Gambi hub.".into()),
        },
    }
}

/// `localhost:3000` → `http://localhost:3000`; drops a trailing slash; refuses other schemes,
/// queries and fragments (they would be silently lost when paths are appended).
fn normalize_base_url(raw: &str) -> Result<Url, ClientError> {
    let trimmed = raw.trim();
    let invalid = |reason: &str| ClientError::InvalidUrl { url: raw.to_string(), reason: reason.to_string() };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = if trimmed.contains("://") { trimmed.to_string() } else { format!("http://{trimmed}") };
    let mut url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http:// and https:// hubs are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a hub address cannot have a query or a fragment"));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(raw: &str) -> String {
        HubClient::new(raw).map(|c| c.base_url().to_string()).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn base_urls_are_normalized() {
        assert_eq!(base("localhost:3000"), "http://localhost:3000");
        assert_eq!(base("http://localhost:3000/"), "http://localhost:3000");
        assert_eq!(base(" https://hub.lan "), "https://hub.lan");
        assert_eq!(base("192.168.1.10:3000"), "http://192.168.1.10:3000");
        assert_eq!(base("http://host:8080/gambi/"), "http://host:8080/gambi");
        assert_eq!(base("[::1]:3000"), "http://[::1]:3000");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for raw in ["", "   ", "ftp://host", "ws://host:3000", "http://", "http://host/?x=1", "http://host/#f"] {
            let err = HubClient::new(raw).expect_err(raw);
            assert!(matches!(err, ClientError::InvalidUrl { .. }), "{raw}: {err:?}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        let client = HubClient::new("http://h:1/p").expect("valid");
        let url = client.url(&["v1", "rooms", "../x?y=1", "participants", "a/b"]).expect("url");
        assert_eq!(url.as_str(), "http://h:1/p/v1/rooms/..%2Fx%3Fy=1/participants/a%2Fb");
        assert_eq!(client.inference_url("ABC123"), "http://h:1/p/rooms/ABC123/v1");
        for bad in ["", ".", ".."] {
            let err = client.url(&["v1", "rooms", bad]).expect_err(bad);
            assert!(matches!(err, ClientError::InvalidInput { .. }), "{err:?}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    fn api(status: u16) -> ClientError {
        ClientError::Api { status, code: "X".into(), message: "m".into(), hint: None }
    }

    #[test]
    fn exit_codes_follow_the_product() {
        for (status, code) in [(400, 2), (413, 2), (401, 3), (403, 3), (429, 3), (503, 3), (404, 4), (409, 4), (500, 1)]
        {
            assert_eq!(api(status).exit_code(), code, "{status}");
        }
        let decode = ClientError::Decode { url: "u".into(), status: 200, reason: "r".into() };
        assert_eq!(decode.exit_code(), 1);
    }

    #[test]
    fn error_envelopes_become_api_errors() {
        let body = br#"{"error":{"code":"ROOM_NOT_FOUND","message":"Room ABC123 isn't on this hub.","hint":"Check the code."},"meta":{"requestId":"r"}}"#;
        let err = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(err.to_string(), "Room ABC123 isn't on this hub.");
        assert_eq!(err.code(), Some("ROOM_NOT_FOUND"));
        assert_eq!(err.hint(), Some("Check the code."));
        assert_eq!(err.exit_code(), 4);

        let err = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(err.code(), Some("HTTP_502"));
        assert_eq!(err.to_string(), "the hub answered HTTP 502 Bad Gateway");
        assert_eq!(err.exit_code(), 3);
    }

    #[test]
    fn registration_debug_hides_the_password_and_json_is_camel_case() {
        let r = Registration {
            nickname: "A".into(),
            model: "m".into(),
            endpoint: "http://localhost:11434".into(),
            password: Some("hunter2".into()),
            max_concurrency: Some(2),
            ..Default::default()
        };
        assert!(!format!("{r:?}").contains("hunter2"));
        let v = serde_json::to_value(&r).expect("serializes");
        assert_eq!(v["maxConcurrency"], 2);
        assert_eq!(v["password"], "hunter2");
        assert!(v.get("specs").is_none());
        assert!(v.get("loadedModels").is_none());
    }
}
