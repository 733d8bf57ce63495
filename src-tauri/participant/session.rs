//! One participant session: probe the provider, register, open the tunnel, keep the heartbeat and
//! ping loops going, watch the provider (pausing the participant on the hub while it does not
//! answer, see [`super::provider_watch`]), serve tunnel requests, and report how it ended. Several
//! sessions in one process are independent: each has its own client, tunnel, loops and identity.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{ClientError, HubClient, Registration};
use crate::protocol::tunnel::{Decoded, TunnelMessage};
use crate::protocol::{
    is_participant_id, normalize_room_code, now_ms, Capabilities, HeartbeatNews, LoadedModel, MachineSpecs,
    Participant, PauseReason, RuntimeConfig, HEARTBEAT_INTERVAL, ROOM_CODE_SHAPE,
};

use super::probe::{self, ProbeError};
use super::provider_watch::{self, ProviderHealth};
use super::tunnel_client::Executor;

/// Heartbeats that may fail in a row before the session gives up on the hub.
const HEARTBEAT_FAILURES: u32 = 3;
/// How long an idle connection to the provider is kept for reuse: below the 5 s after which common
/// model servers close theirs.
const PROVIDER_IDLE: Duration = Duration::from_secs(3);
/// Largest frame the hub may send: a request with its body whole (the hub accepts bodies of 32 MiB
/// by default, and more when configured).
const MAX_REQUEST_FRAME: usize = 256 * 1024 * 1024;

/// Everything a session needs to know.
#[derive(Clone)]
pub struct SessionOptions {
    pub hub_url: String,
    pub room_code: String,
    pub participant_id: String,
    pub nickname: String,
    /// The provider's base URL as seen from this machine (usually `localhost`).
    pub endpoint: String,
    pub model: String,
    pub password: Option<String>,
    pub specs: Option<MachineSpecs>,
    pub config: Option<RuntimeConfig>,
    /// Overrides what the probe finds.
    pub capabilities: Option<Capabilities>,
    pub max_concurrency: Option<u32>,
    pub loaded_models: Option<Vec<LoadedModel>>,
    /// Added to every provider call, here, and never sent to the hub.
    pub auth_headers: BTreeMap<String, String>,
    /// The token the hub gave this participant id at an earlier registration, if any: it proves
    /// the id is ours when re-registering while the hub still sees our old tunnel. A hub that does
    /// not know the participant any more ignores it and hands out a new one.
    pub participant_token: Option<String>,
    pub heartbeat_interval: Duration,
    pub ping_interval: Duration,
    /// How often the provider watch looks at the provider (default 2 s).
    pub provider_check_interval: Duration,
    /// Read this machine's specs when `specs` is not given (`--no-specs` turns it off).
    pub auto_specs: bool,
    /// Report the provider's loaded models (Ollama `/api/ps`) at registration and with each
    /// heartbeat, when `loaded_models` is not given.
    pub auto_loaded_models: bool,
    /// When the hub says the id is someone else's (`PARTICIPANT_CONFLICT`) and this share holds no
    /// token for it, a supervisor takes a fresh id instead of waiting for the old one to be freed.
    /// The desktop app sets it: its id outlives a crash, the token (never written down) does not.
    pub rename_on_conflict: bool,
    /// Owner first: pause the share while the provider is busy with work the room did not send
    /// (someone using the model server on this machine), see [`super::owner_watch`]. Off by default.
    pub pause_while_owner_busy: bool,
    /// How long without such work before the share takes requests again (default 30 s).
    pub owner_quiet: Duration,
}

impl SessionOptions {
    pub fn new(hub_url: &str, room_code: &str, participant_id: &str, endpoint: &str, model: &str) -> Self {
        SessionOptions {
            hub_url: hub_url.into(),
            room_code: room_code.into(),
            participant_id: participant_id.into(),
            nickname: participant_id.into(),
            endpoint: endpoint.into(),
            model: model.into(),
            password: None,
            specs: None,
            config: None,
            capabilities: None,
            max_concurrency: None,
            loaded_models: None,
            auth_headers: BTreeMap::new(),
            participant_token: None,
            rename_on_conflict: false,
            pause_while_owner_busy: false,
            owner_quiet: super::owner_watch::QUIET,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            ping_interval: HEARTBEAT_INTERVAL,
            provider_check_interval: provider_watch::CHECK_INTERVAL,
            auto_specs: true,
            auto_loaded_models: true,
        }
    }
}

impl std::fmt::Debug for SessionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOptions")
            .field("hub_url", &self.hub_url)
            .field("room_code", &self.room_code)
            .field("participant_id", &self.participant_id)
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("auth_headers", &self.auth_headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Asked to stop (or a signal).
    Closed,
    /// The heartbeat failed repeatedly: the hub is unreachable or forgot us.
    HeartbeatFailed,
    /// The WebSocket tunnel closed, from either side.
    TunnelClosed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseEvent {
    pub reason: CloseReason,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Hub(#[from] ClientError),
    #[error("cannot open the tunnel to the hub: {0}")]
    Tunnel(String),
    #[error("{0}")]
    Invalid(String),
}

impl SessionError {
    /// True when trying again cannot help (wrong password, model not served, bad options); a
    /// supervisor stops instead of retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            SessionError::Probe(ProbeError::ModelNotServed { .. }) | SessionError::Invalid(_) => true,
            SessionError::Hub(ClientError::Api { status, .. }) => matches!(status, 400 | 401 | 403 | 413 | 422),
            SessionError::Hub(ClientError::InvalidUrl { .. } | ClientError::InvalidInput { .. }) => true,
            _ => false,
        }
    }
}

/// A running participant session.
pub struct ParticipantSession {
    client: HubClient,
    code: String,
    participant: Participant,
    stop: CancellationToken,
    closed: watch::Receiver<Option<CloseEvent>>,
    close_tx: Arc<watch::Sender<Option<CloseEvent>>>,
    tasks: TaskTracker,
    executor: Executor,
    /// This participant's token, from the hub's answer or, when it handed out none, from the options.
    participant_token: Option<String>,
    /// What the provider watch last found; the heartbeat loop tells the hub each change.
    health: watch::Receiver<ProviderHealth>,
}

fn set_closed(
    tx: &watch::Sender<Option<CloseEvent>>,
    stop: &CancellationToken,
    reason: CloseReason,
    error: Option<String>,
) {
    tx.send_if_modified(|v| {
        if v.is_some() {
            return false;
        }
        *v = Some(CloseEvent { reason, error });
        true
    });
    stop.cancel();
}

impl ParticipantSession {
    /// Probes the provider, registers, and opens the tunnel. Fails before registering if the
    /// provider does not serve the model.
    pub async fn start(options: SessionOptions) -> Result<ParticipantSession, SessionError> {
        let code = normalize_room_code(&options.room_code).ok_or_else(|| {
            SessionError::Invalid(format!("{:?} is not a room code ({ROOM_CODE_SHAPE})", options.room_code))
        })?;
        let id = options.participant_id.clone();
        if !is_participant_id(&id) {
            return Err(SessionError::Invalid(format!(
                "{id:?} is not a valid participant id (1-128 letters, digits or . _ - ~ @ +)"
            )));
        }
        let auth = probe::auth_header_map(&options.auth_headers).map_err(SessionError::Invalid)?;
        let provider = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Model servers close idle keep-alive connections after 5 s (llama-server's httplib,
            // Node's http): a request sent on one as it closes fails before any answer (a 502 in
            // the room). A connection idle for 3 s is not reused; a new one to a local server
            // costs nothing.
            .pool_idle_timeout(PROVIDER_IDLE)
            .build()
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        // For the one retry of a request the server closed its connection on unanswered (the
        // close still crossed it now and then): keeps no idle connection, so each is a new one.
        let fresh = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        let found = probe::probe(&provider, &options.endpoint, &options.model, &auth).await?;
        let client = HubClient::new(&options.hub_url)?;
        let specs = match (&options.specs, options.auto_specs) {
            (Some(given), _) => Some(given.clone()),
            (None, true) => Some(crate::specs::collect().await),
            (None, false) => None,
        };
        let track_loaded = options.loaded_models.is_none() && options.auto_loaded_models;
        let loaded_models = match &options.loaded_models {
            Some(given) => Some(given.clone()),
            None if track_loaded => crate::provider::loaded_models(&options.endpoint).await,
            None => None,
        };
        let registration = Registration {
            nickname: options.nickname.clone(),
            model: options.model.clone(),
            endpoint: options.endpoint.trim_end_matches('/').to_string(),
            password: options.password.clone(),
            specs,
            config: options.config.clone(),
            capabilities: Some(options.capabilities.unwrap_or(found.capabilities)),
            max_concurrency: options.max_concurrency,
            loaded_models: loaded_models.clone(),
            model_details: found.model_details.clone(),
        };
        let (registered, _created) =
            client.upsert_participant_as(&code, &id, &registration, options.participant_token.as_deref()).await?;
        let participant_token = registered.participant_token.clone().or_else(|| options.participant_token.clone());
        let mut url = reqwest::Url::parse(&registered.tunnel.url)
            .map_err(|e| SessionError::Tunnel(format!("the hub gave a bad tunnel URL: {e}")))?;
        // Replace any token already there, so both the hub's and older forms interoperate.
        let others: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| k != "token").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.query_pairs_mut().clear().extend_pairs(others).append_pair("token", &registered.tunnel.token);
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
            .map_err(|e| SessionError::Tunnel(format!("the hub gave a bad tunnel URL: {e}")))?;
        if let Some(token) = &participant_token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| SessionError::Tunnel("the hub gave an unusable participant token".into()))?;
            request.headers_mut().insert(reqwest::header::AUTHORIZATION, value);
        }
        // TCP_NODELAY: answers go back as many small frames that must not wait on delayed ACKs.
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(
                request,
                // tungstenite zero-fills its whole read buffer on every read: keep it near a frame's size.
                // A request comes as one frame holding its body whole: up to the hub's inference body
                // limit (32 MiB by default), past tungstenite's default frame limit of 16 MiB.
                Some(
                    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                        .read_buffer_size(16 * 1024)
                        .max_frame_size(Some(MAX_REQUEST_FRAME))
                        .max_message_size(Some(MAX_REQUEST_FRAME)),
                ),
                true,
            ),
        )
        .await;
        let (socket, _) = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SessionError::Tunnel(e.to_string())),
            Err(_) => return Err(SessionError::Tunnel("timed out".into())),
        };

        let stop = CancellationToken::new();
        let (close_tx, closed) = watch::channel(None);
        let close_tx = Arc::new(close_tx);
        let tasks = TaskTracker::new();
        let (outgoing, mut outbox) = mpsc::channel::<String>(256);
        let executor = Executor::new(provider.clone(), fresh, options.endpoint.clone(), auth.clone(), outgoing.clone());
        let (mut sink, mut stream) = socket.split();
        // The hub attaches the tunnel once the upgrade is done, a moment after this side sees it;
        // a request sent in that moment found the participant with no tunnel (503). Its pong to a
        // first ping means the tunnel is attached: the share is routable when `start` returns.
        let early = first_pong(&mut sink, &mut stream).await;

        // Provider watch: the probe just found the provider answering.
        let (health_tx, health) = watch::channel(ProviderHealth::Answering);
        tasks.spawn(provider_watch::run(
            provider.clone(),
            options.endpoint.clone(),
            auth.clone(),
            options.provider_check_interval,
            executor.provider_trouble(),
            health_tx,
            stop.clone(),
        ));

        // Owner watch: off unless asked for; `true` while the owner is using the provider.
        let (owner_tx, owner) = watch::channel(false);
        if options.pause_while_owner_busy {
            let executor = executor.clone();
            let target = super::owner_watch::Target {
                http: provider.clone(),
                endpoint: options.endpoint.clone(),
                auth: auth.clone(),
            };
            tasks.spawn(super::owner_watch::run(
                target,
                options.provider_check_interval,
                options.owner_quiet,
                move || executor.activity(),
                owner_tx,
                stop.clone(),
            ));
        }

        // Writer: the only task that writes to the socket.
        tasks.spawn({
            let stop = stop.clone();
            async move {
                loop {
                    tokio::select! {
                        biased;
                        m = outbox.recv() => match m {
                            Some(text) => {
                                // Queue what is already waiting and flush once per burst.
                                if sink.feed(Message::Text(text.into())).await.is_err() { break }
                                while let Ok(more) = outbox.try_recv() {
                                    if sink.feed(Message::Text(more.into())).await.is_err() { break }
                                }
                                if sink.flush().await.is_err() { break }
                            }
                            None => break,
                        },
                        _ = stop.cancelled() => break,
                    }
                }
                let _ = sink.send(Message::Close(None)).await;
            }
        });

        // Reader: frames from the hub; the hub answering nothing (not even pongs) for three ping
        // intervals means a half-open connection (a laptop that slept), which counts as closed.
        let silence = options.ping_interval * 3;
        tasks.spawn({
            let stop = stop.clone();
            let close_tx = close_tx.clone();
            let executor = executor.clone();
            async move {
                for text in early {
                    executor.handle(&text, &stop);
                }
                let (reason, error) = loop {
                    let frame = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tokio::time::timeout(silence, stream.next()) => r,
                    };
                    match frame {
                        Err(_) => break (CloseReason::TunnelClosed, Some("the hub stopped answering".to_string())),
                        Ok(None) => break (CloseReason::TunnelClosed, Some("the hub closed the tunnel".to_string())),
                        Ok(Some(Err(e))) => break (CloseReason::TunnelClosed, Some(e.to_string())),
                        Ok(Some(Ok(Message::Text(t)))) => executor.handle(t.as_str(), &stop),
                        Ok(Some(Ok(Message::Close(_)))) => {
                            break (CloseReason::TunnelClosed, Some("the hub closed the tunnel".to_string()))
                        }
                        Ok(Some(Ok(_))) => {}
                    }
                };
                set_closed(&close_tx, &stop, reason, error);
            }
        });

        // Ping: keeps the tunnel known alive on the hub.
        tasks.spawn({
            let stop = stop.clone();
            let outgoing = outgoing.clone();
            let every = options.ping_interval;
            async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {
                            if outgoing.send(TunnelMessage::Ping { timestamp: now_ms() }.encode()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });

        // Heartbeat: keeps the participant online, and tells the hub at once when the provider
        // watch pauses or resumes the share; repeated failures end the session.
        tasks.spawn({
            let stop = stop.clone();
            let close_tx = close_tx.clone();
            let client = client.clone();
            let code = code.clone();
            let id = id.clone();
            let every = options.heartbeat_interval;
            let endpoint = options.endpoint.clone();
            // A heartbeat with news (loaded models, a pause) proves the participant with its token.
            let token = participant_token.clone();
            let mut health = health.clone();
            let mut owner = owner.clone();
            async move {
                let failures = AtomicU32::new(0);
                let mut last_loaded = loaded_models;
                // What the hub was last told: a registration starts unpaused.
                let mut hub_thinks: Option<PauseReason> = None;
                let mut watching = true;
                let mut watching_owner = true;
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    let periodic = tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => true,
                        changed = health.changed(), if watching => {
                            watching = changed.is_ok();
                            false
                        }
                        changed = owner.changed(), if watching_owner => {
                            watching_owner = changed.is_ok();
                            false
                        }
                    };
                    // A stopped provider says more than an owner at work.
                    let reason = if !health.borrow_and_update().is_answering() {
                        Some(PauseReason::Provider)
                    } else if *owner.borrow_and_update() {
                        Some(PauseReason::Owner)
                    } else {
                        None
                    };
                    let paused = reason.is_some();
                    // Tell the room what the provider holds in memory now, when that changed (not
                    // while it does not answer, and not on a heartbeat that must go out at once).
                    let loaded = if track_loaded && periodic && !paused {
                        crate::provider::loaded_models(&endpoint).await.filter(|l| Some(l) != last_loaded.as_ref())
                    } else {
                        None
                    };
                    let news = HeartbeatNews {
                        loaded_models: loaded.clone(),
                        paused: (reason != hub_thinks).then_some(paused),
                        pause_reason: if reason != hub_thinks { reason } else { None },
                    };
                    if !periodic && news.is_empty() {
                        continue;
                    }
                    match client.heartbeat_news(&code, &id, &news, token.as_deref()).await {
                        Ok(_) => {
                            failures.store(0, Ordering::Relaxed);
                            if loaded.is_some() {
                                last_loaded = loaded;
                            }
                            hub_thinks = reason;
                        }
                        // The hub no longer knows this participant (or room): no point waiting.
                        Err(ClientError::Api { status: 404, message, .. }) => {
                            set_closed(&close_tx, &stop, CloseReason::HeartbeatFailed, Some(message));
                            return;
                        }
                        Err(e) => {
                            if failures.fetch_add(1, Ordering::Relaxed) + 1 >= HEARTBEAT_FAILURES {
                                set_closed(&close_tx, &stop, CloseReason::HeartbeatFailed, Some(e.to_string()));
                                return;
                            }
                        }
                    }
                }
            }
        });
        tasks.close();
        tracing::info!(code = %code, participant = %id, model = %options.model, "participant session live");
        Ok(ParticipantSession {
            client,
            code,
            participant: registered.participant,
            stop,
            closed,
            close_tx,
            tasks,
            executor,
            participant_token,
            health,
        })
    }

    /// What the provider watch last found, followed as it changes: `NotAnswering` while the
    /// participant is paused on the hub.
    pub fn provider_health(&self) -> watch::Receiver<ProviderHealth> {
        self.health.clone()
    }

    /// The token that proves this participant to the hub (leaving, re-registering, re-tunnelling).
    pub fn participant_token(&self) -> Option<&str> {
        self.participant_token.as_deref()
    }

    /// The participant as the hub registered it.
    pub fn participant(&self) -> &Participant {
        &self.participant
    }

    pub fn room_code(&self) -> &str {
        &self.code
    }

    pub fn hub_url(&self) -> &str {
        self.client.base_url()
    }

    /// Provider calls being served now.
    pub fn in_flight(&self) -> usize {
        self.executor.in_flight()
    }

    /// Resolves when the session has ended, whatever the reason.
    pub async fn wait_until_closed(&self) -> CloseEvent {
        let mut rx = self.closed.clone();
        let event = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        event.unwrap_or(CloseEvent { reason: CloseReason::Closed, error: None })
    }

    /// The close event, if the session has ended.
    pub fn closed(&self) -> Option<CloseEvent> {
        self.closed.borrow().clone()
    }

    /// Leaves the room and closes the tunnel. Best effort when the hub is already gone.
    pub async fn close(&self) {
        set_closed(&self.close_tx, &self.stop, CloseReason::Closed, None);
        let leave = tokio::time::timeout(
            Duration::from_secs(5),
            self.client.leave_as(&self.code, &self.participant.id, self.participant_token.as_deref()),
        );
        match leave.await {
            Ok(Ok(_)) => tracing::info!(code = %self.code, participant = %self.participant.id, "left the room"),
            Ok(Err(e)) => tracing::debug!(error = %e, "leave failed (the hub may be gone)"),
            Err(_) => tracing::debug!("leave timed out"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

impl Drop for ParticipantSession {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How long `start` waits for the hub's answer to its first ping (an older hub may answer none).
const FIRST_PONG_WAIT: Duration = Duration::from_secs(5);

/// Sends a first ping and waits for the hub's pong, up to [`FIRST_PONG_WAIT`]; the text frames
/// that came before it (a request already) are returned, to be handled first.
async fn first_pong<S, R>(sink: &mut S, stream: &mut R) -> Vec<String>
where
    S: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut early = Vec::new();
    if sink.send(Message::Text(TunnelMessage::Ping { timestamp: now_ms() }.encode().into())).await.is_err() {
        return early;
    }
    let deadline = tokio::time::Instant::now() + FIRST_PONG_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => match TunnelMessage::decode(text.as_str()) {
                Decoded::Message(TunnelMessage::Pong { .. }) => return early,
                _ => early.push(text.as_str().to_string()),
            },
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return early,
            Ok(Some(Ok(_))) => {}
        }
    }
}
