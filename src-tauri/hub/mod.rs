//! The hub: one process, one port, three surfaces (classic `/rooms`, management `/v1`, and, from the
//! inference module, `/rooms/:code/v1`). This module owns the configuration, the shared state
//! handle and the server loop; the registry, events, routes and errors live in the submodules.
//!
//! The hub never binds a socket itself: [`Hub::serve`] takes a bound listener and a cancellation
//! token, which is what lets tests (and the desktop app) run a real hub on port 0.

pub mod body;
pub mod browser;
pub mod egress;
pub mod error;
pub mod events;
pub mod guard;
pub mod inference;
pub mod invite;
pub mod json_list;
pub mod memory;
pub mod metrics;
pub mod password;
pub mod quota;
pub mod registry;
pub mod request_id;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod sse;
pub mod state_file;
pub mod stats;
pub mod tunnel;
pub mod ui;
pub mod unique_keys;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{now_ms, HEARTBEAT_INTERVAL, PARTICIPANT_TIMEOUT};

pub use error::HubError;
pub use events::{EventBus, HubEvent};
pub use registry::{Claim, HealthRules, Registry};
pub use state_file::StateError;

/// Everything a hub can be told at start. `Default` is the documented behaviour.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How often the health sweep runs.
    pub sweep_interval: Duration,
    /// No heartbeat for this long: `offline`.
    pub participant_timeout: Duration,
    /// Offline for this long: removed.
    pub offline_retention: Duration,
    /// Empty for this long: the room expires (24 h by default; `None` keeps rooms forever).
    pub room_ttl: Option<Duration>,
    /// Where rooms are kept across restarts; in memory only when `None`.
    pub state_path: Option<PathBuf>,
    /// Browser origins allowed to call the hub (`--cors`); `*` allows any. Empty: only the hub's
    /// own pages (and, on the inference plane of a room with a password, any page with its key).
    pub cors_origins: Vec<String>,
    /// Host names the hub answers to beyond its defaults (`--allowed-host`); see `hub::browser`.
    pub allowed_hosts: Vec<String>,
    /// Largest body accepted on the classic and `/v1` surfaces.
    pub management_body_limit: usize,
    /// SSE keep-alive comment interval.
    pub keep_alive: Duration,
    /// Recent events kept per room for `Last-Event-ID` replay.
    pub event_ring: usize,
    /// Capacity of the live event channel; a reader further behind than this catches up from the ring.
    pub event_channel: usize,
    /// argon2 computations allowed at once.
    pub password_concurrency: usize,
    /// How long in-flight requests may run on after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// Largest body accepted on the inference plane.
    pub inference_body_limit: usize,
    /// Memory all request bodies may hold at once, read and parsed (a quarter of it per client
    /// address); see `hub::memory`.
    pub body_memory: usize,
    /// Requests that may wait per room for a busy participant.
    pub queue_depth: usize,
    /// How long a request may wait for a free participant.
    pub queue_wait: Duration,
    /// How rooms choose a participant (`--routing`).
    pub routing: scheduler::Policy,
    /// How long a provider may take to start answering.
    pub first_byte_timeout: Duration,
    /// Longest silence inside an answer before it is cut with an error.
    pub idle_timeout: Duration,
    /// How long a tunnel bootstrap token may wait to be used.
    pub tunnel_token_ttl: Duration,
    /// Accept clients that predate participant tokens (the TypeScript CLI): leaving, replacing and
    /// re-tunnelling a participant then need no token, so anyone who can reach the hub can do them.
    pub compat: bool,
    /// Password guesses (checks that need argon2) allowed per room per second.
    pub guesses_per_room: u32,
    /// Password guesses allowed per client address per second.
    pub guesses_per_address: u32,
    /// How long a client may take to send a request's headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Most headers in one request (more: 431).
    pub max_headers: usize,
    /// Most bytes of one request's head (more: 431).
    pub max_header_bytes: usize,
    /// Most rooms on the hub.
    pub max_rooms: usize,
    /// Most participants in one room.
    pub max_participants_per_room: usize,
    /// Most open event streams (both surfaces together) per room.
    pub max_sse_clients_per_room: usize,
    /// Most open event streams of one client address (this machine's are not counted, see
    /// `hub::quota`).
    pub max_sse_clients_per_address: usize,
    /// Most open event streams in all; `None`: from the open-file limit.
    pub max_sse_clients_total: Option<usize>,
    /// Most open connections of one client address.
    pub max_connections_per_address: usize,
    /// Most open connections in all; `None`: from the open-file limit.
    pub max_connections: Option<usize>,
    /// Rooms one client address may create a minute, and in a burst.
    pub rooms_per_minute: u32,
    pub rooms_burst: u32,
    /// Count this machine's (loopback) addresses per address too, like any other client.
    pub limit_loopback: bool,
    /// Most requests in flight on one participant's tunnel.
    pub max_in_flight_per_tunnel: usize,
    /// Frames from a participant that do not parse (or name no request) tolerated within
    /// [`HubConfig::malformed_frame_window`]; one more closes the tunnel with a reason.
    pub malformed_frame_limit: u32,
    pub malformed_frame_window: Duration,
    /// Most bytes of the Responses-API responses the hub translated itself (for providers without
    /// `/v1/responses`) and keeps for later `GET`s, all rooms together; one room may hold a quarter.
    pub responses_store_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            sweep_interval: HEARTBEAT_INTERVAL,
            participant_timeout: PARTICIPANT_TIMEOUT,
            offline_retention: Duration::from_secs(600),
            room_ttl: Some(Duration::from_secs(24 * 3600)),
            state_path: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            management_body_limit: 1024 * 1024,
            keep_alive: Duration::from_secs(15),
            event_ring: 512,
            event_channel: 4096,
            // Half the machine at most, so guesses that pass the buckets can never take every core
            // from the threads that answer everything else.
            password_concurrency: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4)),
            shutdown_grace: Duration::from_secs(10),
            inference_body_limit: 32 * 1024 * 1024,
            body_memory: 256 * 1024 * 1024,
            queue_depth: 256,
            queue_wait: Duration::from_secs(60),
            routing: scheduler::Policy::Expected,
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            tunnel_token_ttl: crate::protocol::TUNNEL_TOKEN_TTL,
            compat: false,
            guesses_per_room: 10,
            guesses_per_address: 5,
            header_read_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_rooms: 1000,
            max_participants_per_room: 1000,
            max_sse_clients_per_room: 256,
            max_sse_clients_per_address: 32,
            max_sse_clients_total: None,
            max_connections_per_address: 256,
            max_connections: None,
            rooms_per_minute: 10,
            rooms_burst: 5,
            limit_loopback: false,
            max_in_flight_per_tunnel: 256,
            malformed_frame_limit: 100,
            malformed_frame_window: Duration::from_secs(10),
            responses_store_bytes: 64 * 1024 * 1024,
        }
    }
}

struct HubInner {
    config: HubConfig,
    registry: Registry,
    passwords: password::Passwords,
    guard: guard::Guard,
    /// Open event streams per room, for `max_sse_clients_per_room`.
    streams: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    quotas: quota::Quotas,
    bodies: memory::BodyBudget,
    state_file: Option<state_file::StateFile>,
    tunnels: tunnel::Tunnels,
    direct: egress::DirectClients,
    browser: browser::BrowserPolicy,
    responses: inference::responses_index::ResponsesIndex,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    local_addr: OnceLock<SocketAddr>,
}

/// One open event stream's place in its room's count; dropping it frees the place.
pub struct StreamTicket {
    streams: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    code: String,
    /// Its place in the client's and the hub's counts.
    _slot: quota::Slot,
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = streams.get_mut(&self.code) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.code);
            }
        }
    }
}

/// A handle on a hub's shared state; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl Hub {
    /// Builds a hub, loading its rooms from `state_path` when one is set. Nothing runs until
    /// [`Hub::serve`]. A hub with a state file holds the file's lock until it has served and
    /// stopped (or, never served, until it is dropped): a second hub on the same file fails here,
    /// with [`StateError::InUse`].
    pub fn new(config: HubConfig) -> Result<Self, StateError> {
        let (state_file, rooms) = match &config.state_path {
            Some(path) => {
                let (file, rooms) = state_file::StateFile::open(path.clone())?;
                (Some(file), rooms)
            }
            None => (None, Vec::new()),
        };
        let bus = EventBus::new(config.event_channel, config.event_ring);
        let rules = HealthRules {
            participant_timeout: config.participant_timeout,
            offline_retention: config.offline_retention,
            room_ttl: config.room_ttl,
        };
        let registry = Registry::new(bus, rules, rooms);
        registry.set_queue_depth(config.queue_depth);
        registry.set_policy(config.routing);
        registry.set_limits(config.max_rooms, config.max_participants_per_room);
        registry.set_tunnel_token_ttl(config.tunnel_token_ttl);
        let browser = browser::BrowserPolicy::new(&config.allowed_hosts, &config.cors_origins);
        let fd_limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024);
        let (connections, streams) = quota::totals_for(fd_limit);
        let quotas = quota::Quotas::new(quota::QuotaConfig {
            connections_per_address: config.max_connections_per_address,
            connections_total: config.max_connections.unwrap_or(connections),
            streams_per_address: config.max_sse_clients_per_address,
            streams_total: config.max_sse_clients_total.unwrap_or(streams),
            rooms_per_minute: config.rooms_per_minute,
            rooms_burst: config.rooms_burst,
            limit_loopback: config.limit_loopback,
        });
        let responses = inference::responses_index::ResponsesIndex::new(10_000, config.responses_store_bytes);
        Ok(Hub {
            inner: Arc::new(HubInner {
                browser,
                quotas,
                bodies: memory::BodyBudget::new(config.body_memory, config.limit_loopback),
                passwords: password::Passwords::new(config.password_concurrency),
                guard: guard::Guard::new(config.guesses_per_room, config.guesses_per_address),
                streams: Arc::default(),
                config,
                registry,
                state_file,
                tunnels: tunnel::Tunnels::default(),
                direct: egress::DirectClients::new(),
                responses,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                local_addr: OnceLock::new(),
            }),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The Host and Origin rules of this hub.
    pub fn browser_policy(&self) -> &browser::BrowserPolicy {
        &self.inner.browser
    }

    /// The HTTP client for direct participants registered with `reach`.
    pub fn direct_client(&self, reach: egress::Reach) -> &reqwest::Client {
        self.inner.direct.get(reach)
    }

    /// What each room and participant has served (see `hub::stats`).
    pub fn stats(&self) -> &stats::Stats {
        self.inner.registry.bus().stats()
    }

    /// Which participant created which Responses-API response.
    pub fn responses(&self) -> &inference::responses_index::ResponsesIndex {
        &self.inner.responses
    }

    /// Open participant tunnels.
    pub fn tunnels(&self) -> &tunnel::Tunnels {
        &self.inner.tunnels
    }

    /// Removes a participant and closes its tunnel, without checking any token.
    pub fn remove_participant(&self, code: &str, id: &str) -> Result<(), HubError> {
        self.inner.registry.leave(code, id)?;
        self.inner.tunnels.close(code, id);
        Ok(())
    }

    /// A caller's claim on a participant, checked strictly unless the hub runs with `--compat`.
    pub fn claim<'a>(&self, token: Option<&'a str>) -> Claim<'a> {
        Claim { token, strict: !self.inner.config.compat }
    }

    /// Removes a participant on behalf of a caller holding `token` (the participant's own, or the
    /// room's host token), and closes its tunnel.
    pub fn leave(&self, code: &str, id: &str, token: Option<&str>) -> Result<(), HubError> {
        self.inner.registry.leave_as(code, id, self.claim(token))?;
        self.inner.tunnels.close(code, id);
        Ok(())
    }

    pub fn passwords(&self) -> &password::Passwords {
        &self.inner.passwords
    }

    /// Every event of every room, live (the desktop app's notifications read this).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<HubEvent>> {
        self.inner.registry.bus().subscribe()
    }

    /// Cancelled when the hub begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// The address the hub serves on, once serving.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr.get().copied()
    }

    /// Writes the rooms to the state file, if there is one. A failure is logged, not returned: the
    /// change has happened in memory and the hub keeps serving it.
    pub async fn persist(&self) {
        if let Some(file) = &self.inner.state_file {
            if let Err(e) = file.save(&self.inner.registry).await {
                tracing::error!(error = %e, "rooms not saved");
            }
        }
    }

    /// Checks `password` against the room's. Open rooms accept anything. A key verified before
    /// passes at once; any other guess takes a token from the room's and the client address's
    /// buckets (429 when either is empty) before it gets an argon2 run.
    pub async fn check_password(
        &self,
        code: &str,
        password: Option<String>,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), HubError> {
        let Some(hash) = self.inner.registry.password_hash(code)? else {
            return Ok(());
        };
        let Some(password) = password else {
            return Err(HubError::InvalidPassword);
        };
        if self.inner.guard.is_verified(&hash, &password) {
            return Ok(());
        }
        if let Err(retry_after_secs) = self.inner.guard.take(code, client) {
            tracing::warn!(%code, client = ?client, "password guesses over the limit");
            return Err(HubError::RateLimited { retry_after_secs });
        }
        if self.inner.passwords.verify(password.clone(), hash.clone()).await? {
            self.inner.guard.remember(&hash, &password);
            Ok(())
        } else {
            self.inner.guard.failed(client);
            Err(HubError::InvalidPassword)
        }
    }

    /// Whether the caller may see who is in room `code` and what happens there (its participants
    /// and event streams). Open rooms are open to all; a room with a password needs the password
    /// (`Authorization: Bearer <password>`) or its host token, unless the hub runs with `--compat`.
    /// A wrong password counts as a guess, like any other.
    pub async fn check_reader(
        &self,
        code: &str,
        credential: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), HubError> {
        if self.inner.config.compat || self.inner.registry.password_hash(code)?.is_none() {
            return Ok(());
        }
        if self.inner.registry.holds_host_token(code, credential) {
            return Ok(());
        }
        match credential {
            None => Err(HubError::RoomPasswordRequired),
            Some(key) => self.check_password(code, Some(key.to_string()), client).await,
        }
    }

    /// The memory request bodies may hold.
    pub fn body_budget(&self) -> &memory::BodyBudget {
        &self.inner.bodies
    }

    /// What each client may hold (connections, streams, new rooms).
    pub fn quotas(&self) -> &quota::Quotas {
        &self.inner.quotas
    }

    /// Takes a place for one more event stream of room `code` from `client`, or refuses when the
    /// room has `max_sse_clients_per_room` already, or the client or the hub is at its cap. The
    /// places are given back when the ticket drops.
    pub fn open_stream(&self, code: &str, client: Option<std::net::IpAddr>) -> Result<StreamTicket, HubError> {
        let slot = self.inner.quotas.stream(client)?;
        let limit = self.inner.config.max_sse_clients_per_room;
        let mut streams = self.inner.streams.lock().unwrap_or_else(|p| p.into_inner());
        let open = streams.entry(code.to_string()).or_insert(0);
        if *open >= limit {
            return Err(HubError::Capacity {
                what: format!("room {code} already has {limit} open event streams (--max-sse-clients)"),
            });
        }
        *open += 1;
        Ok(StreamTicket { streams: self.inner.streams.clone(), code: code.to_string(), _slot: slot })
    }

    /// The router of every surface, with its layers.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// Serves on `listener` until `shutdown` is cancelled, then stops taking connections, lets
    /// in-flight requests finish within the grace period, and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let _ = self.inner.local_addr.set(addr);
        let own = self.inner.shutdown.clone();
        self.inner.tasks.spawn({
            let own = own.clone();
            async move {
                shutdown.cancelled().await;
                own.cancel();
            }
        });
        self.spawn_sweeper();
        let config = &self.inner.config;
        let limits = server::ConnLimits {
            header_read_timeout: config.header_read_timeout,
            max_headers: config.max_headers,
            max_header_bytes: config.max_header_bytes,
        };
        let server = server::serve(listener, self.router(), own.clone(), limits, self.inner.quotas.clone());
        let grace = config.shutdown_grace;
        self.inner.tasks.spawn({
            let own = own.clone();
            let tunnels = self.inner.tunnels.clone();
            async move {
                own.cancelled().await;
                tunnels.announce_shutdown(grace);
            }
        });
        let result = tokio::select! {
            () = server => Ok(()),
            _ = async { own.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("shutdown grace period over; closing the remaining connections");
                Ok(())
            }
        };
        // Every request in flight has finished (or the grace period is over): participants go.
        self.inner.tunnels.close_all();
        self.inner.tasks.close();
        self.persist().await;
        self.inner.tasks.wait().await;
        // The last write is done: the file is free for the next hub, even while handles on this
        // one live on (the desktop app restarts its hub on the same file).
        if let Some(file) = &self.inner.state_file {
            file.release().await;
        }
        result
    }

    fn spawn_sweeper(&self) {
        let hub = self.clone();
        let token = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(hub.inner.config.sweep_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        let report = hub.inner.registry.sweep(now_ms());
                        for (code, id) in &report.purged_ids {
                            hub.inner.tunnels.close(code, id);
                        }
                        for code in &report.expired_codes {
                            hub.inner.tunnels.close_room(code);
                        }
                        if report.rooms_expired > 0 {
                            tracing::info!(rooms = report.rooms_expired, "empty rooms expired");
                        }
                        // Removed participants free their ids, in the state file too.
                        if report.rooms_expired + report.purged + report.unbound > 0 {
                            hub.persist().await;
                        }
                    }
                }
            }
        });
    }
}
