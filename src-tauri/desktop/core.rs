//! The app's runtime, with no window or tray in it: the embedded hub (started per the settings),
//! the share (a supervised participant session), the discovery browser, the room event streams the
//! window follows, and the notifications. The Tauri commands and the tray are thin calls into it,
//! and the hub never knows the app exists: the app follows the hub's and the share's events like
//! any other client.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::notify::{Coalescer, Notifier, PeopleTracker, Transition};
use super::settings::{RememberedRoom, SecretStorage, Secrets, Settings, SettingsStore};
use crate::client::events::{FollowError, RoomEvents, StreamItem};
use crate::client::{ClientError, HubClient};
use crate::discovery::{self, Advertiser, FoundHub, HubChange};
use crate::hub::{Hub, HubConfig};
use crate::participant::{SessionOptions, ShareState, Supervisor};
use crate::protocol::events::EventEnvelope;
use crate::protocol::{normalize_room_code, CreatedRoom, Health, Participant, RoomSummary};
use crate::provider::{self, ProviderKind};

/// How many ports after the preferred one are tried when it is taken.
const PORT_TRIES: u16 = 20;
/// How long `start_share` waits for the share to go live before answering with where it stands.
const SHARE_START_WAIT: Duration = Duration::from_secs(20);

/// Where the window's events go: the app emits them to the webview; tests record them.
pub trait UiSink: Send + Sync + 'static {
    /// Sends `payload` to the window as event `event`.
    fn emit(&self, event: &str, payload: Value);
    /// Something the tray shows changed (the share, the hub, the rooms).
    fn changed(&self) {}
}

/// A sink that drops everything (a core without a window).
pub struct NoUi;
impl UiSink for NoUi {
    fn emit(&self, _: &str, _: Value) {}
}

/// What the core is built from. The app uses [`CoreOptions::new`]; tests point the provider
/// probes at a fake server, keep passwords in memory and bind the hub to loopback.
pub struct CoreOptions {
    /// Where `settings.json` (and the embedded hub's rooms) are kept.
    pub config_dir: PathBuf,
    pub notifier: Arc<dyn Notifier>,
    pub ui: Arc<dyn UiSink>,
    /// Keep room passwords in the OS keyring (else in memory only).
    pub use_keyring: bool,
    /// Browse the LAN for hubs over mDNS.
    pub discovery: bool,
    /// Where to look for Ollama and LM Studio (the usual local ports unless a test says).
    pub ollama_url: String,
    pub lmstudio_url: String,
    /// How long transitions are collected into one notification.
    pub notify_window: Duration,
    /// The address a LAN hub listens on (every interface).
    pub lan_host: IpAddr,
    /// The embedded hub's configuration; its rooms are kept in the config directory unless it
    /// names a state file of its own.
    pub hub_config: HubConfig,
}

impl CoreOptions {
    pub fn new(config_dir: PathBuf, notifier: Arc<dyn Notifier>, ui: Arc<dyn UiSink>) -> CoreOptions {
        CoreOptions {
            config_dir,
            notifier,
            ui,
            use_keyring: true,
            discovery: true,
            ollama_url: provider::ollama_url_from(std::env::var("OLLAMA_HOST").ok().as_deref()),
            lmstudio_url: provider::LMSTUDIO_URL.to_string(),
            notify_window: Duration::from_millis(1500),
            lan_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            hub_config: HubConfig { shutdown_grace: Duration::from_secs(3), ..HubConfig::default() },
        }
    }
}

/// The code of the failure "no model server runs on this computer".
pub const NO_MODEL_SERVER: &str = "NO_MODEL_SERVER";

/// A failure a command reports: a sentence the window shows as is, and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The hub's error code, when the hub refused (the window tells a locked room by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl AppError {
    pub fn new(message: impl Into<String>) -> AppError {
        AppError { message: message.into(), hint: None, code: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> AppError {
        self.hint = Some(hint.into());
        self
    }

    /// A hub client's failure in the words the window uses. `code` is the room it was about.
    fn with_code(mut self, code: &str) -> AppError {
        self.code = Some(code.to_string());
        self
    }

    pub fn from_client(error: &ClientError, code: Option<&str>) -> AppError {
        match error {
            ClientError::Unreachable { url, .. } => AppError::new(format!("The hub at {url} isn't answering."))
                .hint("Check that it is still running and that this computer is on the same network."),
            ClientError::Api { code: api_code, message, hint, .. } => match api_code.as_str() {
                "ROOM_NOT_FOUND" => AppError::new(match code {
                    Some(code) => format!("Room {code} isn't on this hub — check the code."),
                    None => "That room isn't on this hub — check the code.".into(),
                })
                .hint("Room codes are 6 letters and digits, like K7QX2M. The room may also have been deleted."),
                "INVALID_PASSWORD" => AppError::new("Wrong password.").hint("Ask the room's host for the password."),
                "INVALID_HOST_TOKEN" | "HOST_TOKEN_REQUIRED" => {
                    AppError::new("Only the room's host can delete it.").hint("This app doesn't hold its host token.")
                }
                _ => AppError { message: sentence(message), hint: hint.clone(), code: None },
            }
            .with_code(api_code),
            ClientError::InvalidInput { .. } => {
                AppError::new("That isn't a room code.").hint("Room codes are 6 letters and digits, like K7QX2M.")
            }
            ClientError::InvalidUrl { url, .. } => AppError::new(format!("{url} isn't a hub address."))
                .hint("Use an address like http://192.168.1.20:3000."),
            ClientError::Decode { url, .. } => AppError::new(format!("{url} doesn't answer like a Gambi hub."))
                .hint("Check the hub's address and port."),
        }
    }
}

/// Capitalised and ending with a full stop, whatever the source wrote.
fn sentence(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return "Something went wrong.".into(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// Where the embedded hub stands, as `hub_info` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubInfo {
    /// The address other machines use (`http://192.168.1.20:3000`), or this machine's loopback
    /// address for a private hub; `None` when off.
    pub url: Option<String>,
    /// `running` (on the LAN), `loopback` or `off`.
    pub state: &'static str,
    pub version: &'static str,
    /// Why the hub is off when it should be on (the port was taken, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it is advertised on the LAN.
    pub advertised: bool,
}

/// The share as the window and the tray see it (`ShareStatus` in `ui/backend.js`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareStatus {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The room is on this app's own hub (whose address for others is `HubInfo::url`, not the
    /// loopback address the share dials).
    pub own_hub: bool,
}

impl ShareStatus {
    pub fn off() -> ShareStatus {
        ShareStatus { state: "off", ..ShareStatus::default() }
    }

    pub fn is_on(&self) -> bool {
        matches!(self.state, "starting" | "live" | "paused" | "reconnecting")
    }
}

/// What "Share my Ollama" in the tray did.
#[derive(Debug, Clone, PartialEq)]
pub enum ToggleOutcome {
    Started(ShareStatus),
    Stopped,
    /// No room to share into yet: the window should open on the Share screen.
    NeedsRoom,
    Failed(AppError),
}

struct EmbeddedHub {
    local_url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    advertiser: Option<Advertiser>,
    watcher: tokio::task::JoinHandle<()>,
}

/// Who the share serves.
#[derive(Debug, Clone)]
struct ShareTarget {
    /// `None`: this app's own hub.
    hub: Option<String>,
    hub_url: String,
    code: String,
    room_name: Option<String>,
    model: String,
    /// The model server shared, as people call it ("Ollama", "LM Studio").
    server: String,
}

struct Share {
    supervisor: Supervisor,
    target: ShareTarget,
    forward: tokio::task::JoinHandle<()>,
    /// Follows the served room's events for notifications when it is on another hub.
    room_watch: Option<CancellationToken>,
}

struct Inner {
    options: CoreOptions,
    store: SettingsStore,
    settings: Mutex<Settings>,
    first_launch: bool,
    secrets: Secrets,
    hub: tokio::sync::Mutex<Option<EmbeddedHub>>,
    hub_snapshot: Mutex<(HubInfo, Option<Hub>)>,
    share: tokio::sync::Mutex<Option<Share>>,
    share_status: watch::Sender<ShareStatus>,
    own_participant: Mutex<Option<String>>,
    discovered: Mutex<BTreeMap<String, FoundHub>>,
    subscriptions: Mutex<HashMap<String, CancellationToken>>,
    coalescer: Coalescer,
    tracker: Mutex<PeopleTracker>,
    browser_stop: CancellationToken,
}

/// The app's runtime. Cheap to clone.
#[derive(Clone)]
pub struct AppCore {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AppCore {
    /// Reads the settings (a damaged file is moved aside and defaults used) and sets up the
    /// notifications. Must run inside the tokio runtime. Nothing is started before [`Self::start`].
    pub fn new(options: CoreOptions) -> AppCore {
        let store = SettingsStore::new(&options.config_dir);
        let (settings, first_launch) = match store.load() {
            Ok(Some(settings)) => (settings, false),
            Ok(None) => (Settings::default(), true),
            Err(e) => {
                tracing::warn!(error = %e, "settings not loaded; using defaults");
                (Settings::default(), false)
            }
        };
        let secrets = Secrets::new("dev.gambi.desktop", options.use_keyring);
        let (share_status, _) = watch::channel(ShareStatus::off());
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let enabled = move || weak.upgrade().is_some_and(|inner| lock(&inner.settings).notifications);
            let coalescer = Coalescer::start(options.notifier.clone(), options.notify_window, enabled);
            Inner {
                store,
                settings: Mutex::new(settings),
                first_launch,
                secrets,
                hub: tokio::sync::Mutex::new(None),
                hub_snapshot: Mutex::new((off_info(None), None)),
                share: tokio::sync::Mutex::new(None),
                share_status,
                own_participant: Mutex::new(None),
                discovered: Mutex::new(BTreeMap::new()),
                subscriptions: Mutex::new(HashMap::new()),
                coalescer,
                tracker: Mutex::new(PeopleTracker::default()),
                browser_stop: CancellationToken::new(),
                options,
            }
        });
        AppCore { inner }
    }

    /// True when there were no settings yet: the window opens to welcome the person.
    pub fn first_launch(&self) -> bool {
        self.inner.first_launch
    }

    /// Starts what the settings ask for: the hub, the discovery browser, and the share of the last
    /// room when "share on start" is on. Failures are reported in the state, never fatal.
    pub async fn start(&self) {
        if self.inner.first_launch {
            let settings = self.settings();
            if let Err(e) = self.inner.store.save(&settings) {
                tracing::warn!(error = %e, "settings not saved");
            }
        }
        self.start_hub().await;
        if self.inner.options.discovery {
            self.start_browser();
        }
        let settings = self.settings();
        if settings.share_on_start && !settings.rooms.is_empty() {
            let core = self.clone();
            tokio::spawn(async move {
                if let ToggleOutcome::Failed(e) = core.share_remembered().await {
                    tracing::warn!(error = %e, "the share on start did not start");
                }
            });
        }
    }

    /// Leaves the room (if sharing), stops following, unregisters from the LAN and stops the hub.
    pub async fn shutdown(&self) {
        self.stop_share_inner().await;
        for (_, token) in lock(&self.inner.subscriptions).drain() {
            token.cancel();
        }
        self.inner.browser_stop.cancel();
        self.stop_hub().await;
    }

    /// Whether hubs on the LAN are looked for.
    pub fn discovery_enabled(&self) -> bool {
        self.inner.options.discovery
    }

    pub fn settings(&self) -> Settings {
        lock(&self.inner.settings).clone()
    }

    // ---- the embedded hub ----------------------------------------------------------------------

    /// The hub's state, for `hub_info` and the tray.
    pub fn hub_info(&self) -> HubInfo {
        lock(&self.inner.hub_snapshot).0.clone()
    }

    /// The number of rooms on the embedded hub.
    pub fn room_count(&self) -> Option<usize> {
        lock(&self.inner.hub_snapshot).1.as_ref().map(|hub| hub.registry().room_count())
    }

    /// The embedded hub's local address (`http://127.0.0.1:PORT`), when it runs.
    pub async fn local_hub_url(&self) -> Option<String> {
        self.inner.hub.lock().await.as_ref().map(|h| h.local_url.clone())
    }

    async fn start_hub(&self) {
        let settings = self.settings();
        let mut slot = self.inner.hub.lock().await;
        if slot.is_some() {
            return;
        }
        let host = match settings.hub_exposure {
            super::settings::HubExposure::Off => {
                self.set_hub_snapshot(off_info(None), None);
                return;
            }
            super::settings::HubExposure::Lan => self.inner.options.lan_host,
            super::settings::HubExposure::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let listener = match bind_first_free(host, settings.hub_port).await {
            Ok(listener) => listener,
            Err(message) => {
                tracing::warn!(%message, "the embedded hub did not start");
                self.set_hub_snapshot(off_info(Some(message)), None);
                return;
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(settings.hub_port);
        let mut config = self.inner.options.hub_config.clone();
        // The names and origins the settings add to the hub's own (see hub::browser).
        config.allowed_hosts.extend(settings.allowed_hosts.iter().cloned());
        config.cors_origins.extend(settings.cors_origins.iter().cloned());
        if config.state_path.is_none() {
            config.state_path = Some(self.inner.options.config_dir.join("hub-rooms.json"));
        }
        let hub = match Hub::new(config) {
            Ok(hub) => hub,
            Err(e) => {
                let message = format!("The hub's saved rooms could not be read: {e}");
                self.set_hub_snapshot(off_info(Some(message)), None);
                return;
            }
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let hub = hub.clone();
            let stop = stop.clone();
            async move {
                if let Err(e) = hub.serve(listener, stop).await {
                    tracing::error!(error = %e, "the embedded hub stopped");
                }
            }
        });
        let lan = settings.hub_exposure == super::settings::HubExposure::Lan;
        let advertiser = if lan {
            let options = discovery::AdvertiseOptions { listen: host, ..Default::default() };
            match Advertiser::start(&hub, port, options) {
                Ok(advertiser) => Some(advertiser),
                Err(e) => {
                    tracing::warn!(error = %e, "the hub is not advertised on the LAN");
                    None
                }
            }
        } else {
            None
        };
        let local_url = format!("http://127.0.0.1:{port}");
        let url = if lan { lan_address().map(|ip| format!("http://{ip}:{port}")) } else { None };
        let info = HubInfo {
            url: Some(url.unwrap_or_else(|| local_url.clone())),
            state: if lan { "running" } else { "loopback" },
            version: env!("CARGO_PKG_VERSION"),
            error: None,
            advertised: advertiser.is_some(),
        };
        tracing::info!(url = ?info.url, state = info.state, "embedded hub started");
        let watcher = tokio::spawn(self.clone().watch_own_hub(hub.clone()));
        self.set_hub_snapshot(info, Some(hub));
        *slot = Some(EmbeddedHub { local_url, stop, task, advertiser, watcher });
    }

    async fn stop_hub(&self) {
        let Some(embedded) = self.inner.hub.lock().await.take() else {
            return;
        };
        if let Some(advertiser) = embedded.advertiser {
            advertiser.shutdown().await;
        }
        embedded.stop.cancel();
        embedded.watcher.abort();
        let _ = embedded.task.await;
        self.set_hub_snapshot(off_info(None), None);
    }

    fn set_hub_snapshot(&self, info: HubInfo, hub: Option<Hub>) {
        *lock(&self.inner.hub_snapshot) = (info, hub);
        self.inner.options.ui.changed();
    }

    /// Notifications for every room of the embedded hub, straight from its event bus.
    async fn watch_own_hub(self, hub: Hub) {
        let mut events = hub.subscribe();
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "notifications fell behind the hub's events");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            match serde_json::from_str::<EventEnvelope>(&event.v1_json) {
                Ok(envelope) => {
                    if matches!(envelope.kind.as_str(), "room.created" | "room.closed") {
                        self.inner.options.ui.changed();
                    }
                    self.observe(&envelope);
                }
                Err(e) => tracing::debug!(error = %e, "an event that is not an envelope"),
            }
            if event.kind == crate::protocol::events::EventKind::RoomClosed {
                self.inner.options.ui.changed();
            }
        }
    }

    fn observe(&self, envelope: &EventEnvelope) {
        let own = lock(&self.inner.own_participant).clone();
        let transition = lock(&self.inner.tracker).observe(envelope, own.as_deref());
        if let Some(mut transition) = transition {
            // Notifications name the room as people know it ("Lab GPUs"), not by its code.
            if let Transition::Offline { room, .. } | Transition::Back { room, .. } | Transition::Joined { room, .. } =
                &mut transition
            {
                *room = self.room_label(room);
            }
            self.inner.coalescer.push(transition);
        }
    }

    /// Room `code`'s name where this app knows it (its own hub's rooms, the rooms it shared into),
    /// else the code.
    fn room_label(&self, code: &str) -> String {
        let own =
            lock(&self.inner.hub_snapshot).1.as_ref().and_then(|hub| hub.registry().room(code).ok()).map(|r| r.name);
        own.or_else(|| {
            lock(&self.inner.settings)
                .rooms
                .iter()
                .find(|r| r.code.eq_ignore_ascii_case(code))
                .and_then(|r| r.name.clone())
        })
        .unwrap_or_else(|| code.to_string())
    }

    async fn own_client(&self) -> Result<HubClient, AppError> {
        let url = self.local_hub_url().await.ok_or_else(hub_off)?;
        HubClient::new(&url).map_err(|e| AppError::from_client(&e, None))
    }

    /// The hub that has room `code`: this app's own, the one the share serves, or the one found on
    /// the LAN that lists it; an error naming them when several do.
    async fn client_for(&self, code: &str) -> Result<HubClient, AppError> {
        let code = room_code(code)?;
        if let Some(url) = self.local_hub_url().await {
            let own = lock(&self.inner.hub_snapshot).1.as_ref().is_some_and(|hub| hub.registry().room(&code).is_ok());
            if own {
                return HubClient::new(&url).map_err(|e| AppError::from_client(&e, None));
            }
        }
        let shared = self.inner.share.lock().await.as_ref().map(|s| s.target.clone());
        if let Some(target) = shared.filter(|t| t.code == code) {
            return HubClient::new(&target.hub_url).map_err(|e| AppError::from_client(&e, None));
        }
        // Never the first hub that lists the room: an impostor can copy a hub's name and a room's
        // code, and the host token goes to whichever hub this picks.
        let claims = discovery::room_claims(&code, lock(&self.inner.discovered).values());
        match claims.as_slice() {
            [] => {}
            [one] => return HubClient::new(&one.hub.url).map_err(|e| AppError::from_client(&e, None)),
            many => {
                let list: Vec<String> = many.iter().map(ToString::to_string).collect();
                return Err(AppError::new(format!(
                    "{} hubs on this network claim room {code}: {}. One may be posing as another.",
                    many.len(),
                    list.join(", ")
                ))
                .hint("Ask the room's host which address is their hub's, and open the room on that hub."));
            }
        }
        // Let the embedded hub say the room is not there, in the usual words.
        match self.own_client().await {
            Ok(client) => Ok(client),
            Err(_) => Err(AppError::new(format!("Room {code} isn't on any hub this app knows — check the code."))
                .hint("Turn this app's hub on in Settings, or wait for the room's hub to appear on the LAN.")),
        }
    }

    // ---- rooms -----------------------------------------------------------------------------------

    pub async fn health(&self) -> Result<Health, AppError> {
        self.own_client().await?.health().await.map_err(|e| AppError::from_client(&e, None))
    }

    pub async fn list_rooms(&self) -> Result<Vec<RoomSummary>, AppError> {
        self.own_client().await?.list_rooms().await.map_err(|e| AppError::from_client(&e, None))
    }

    pub async fn create_room(&self, name: &str, password: Option<&str>) -> Result<CreatedRoom, AppError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(AppError::new("Give the room a name, so people know which one to join."));
        }
        let password = password.filter(|p| !p.is_empty());
        let created = self
            .own_client()
            .await?
            .create_room(name, password, None)
            .await
            .map_err(|e| AppError::from_client(&e, None))?;
        if let Some(password) = password {
            self.keep_password(None, &created.room.code, password).await;
        }
        self.inner.options.ui.changed();
        Ok(created)
    }

    pub async fn get_room(&self, code: &str) -> Result<RoomSummary, AppError> {
        let client = self.client_for(code).await?;
        client.get_room(&room_code(code)?).await.map_err(|e| AppError::from_client(&e, Some(code)))
    }

    /// The room's participants; `key` is a protected room's password (or its host token).
    /// Room `code` as the window shows it: the room, what it served (`stats`, with the key of a
    /// protected room), and `hubUrl`, the address others use for the hub that holds it (this
    /// app's own hub's LAN address, or the other hub's): every URL the window shows or copies is
    /// built from it.
    pub async fn room_details(&self, code: &str, key: Option<&str>) -> Result<Value, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let details =
            client.get_room_details_as(&code, key).await.map_err(|e| AppError::from_client(&e, Some(&code)))?;
        let mut value = serde_json::to_value(&details).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut value {
            fields.insert("hubUrl".into(), json!(self.public_url_of(&client).await));
        }
        Ok(value)
    }

    /// The address others use for the hub `client` talks to.
    async fn public_url_of(&self, client: &HubClient) -> String {
        let base = client.base_url().trim_end_matches('/').to_string();
        let own = self.local_hub_url().await.map(|u| u.trim_end_matches('/').to_string());
        match (own, self.hub_info().url) {
            (Some(own), Some(public)) if own == base => public,
            _ => base,
        }
    }

    /// The SVG of the QR code of room `code`'s invite link (`HUB/join/CODE`, on the hub that holds
    /// the room), drawn here: no network service.
    pub async fn invite_qr(&self, code: &str) -> Result<String, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let link = format!("{}/join/{code}", self.public_url_of(&client).await.trim_end_matches('/'));
        crate::hub::invite::qr_svg(&link).ok_or_else(|| AppError::new("The invite link is too long for a QR code."))
    }

    pub async fn list_participant_details(
        &self,
        code: &str,
        key: Option<&str>,
    ) -> Result<Vec<crate::protocol::stats::ParticipantDetails>, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        client.list_participant_details_as(&code, key).await.map_err(|e| AppError::from_client(&e, Some(&code)))
    }

    pub async fn list_participants(&self, code: &str, key: Option<&str>) -> Result<Vec<Participant>, AppError> {
        let client = self.client_for(code).await?;
        client.list_participants_as(&room_code(code)?, key).await.map_err(|e| AppError::from_client(&e, Some(code)))
    }

    pub async fn delete_room(&self, code: &str, host_token: &str) -> Result<Value, AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        client.delete_room(&code, host_token).await.map_err(|e| AppError::from_client(&e, Some(&code)))?;
        self.inner.options.ui.changed();
        Ok(json!({ "success": true }))
    }

    /// Starts forwarding room `code`'s events to the window as `room-event`; `key` is a protected
    /// room's password (or its host token).
    pub async fn subscribe_room(&self, code: &str, key: Option<&str>) -> Result<(), AppError> {
        let code = room_code(code)?;
        let client = self.client_for(&code).await?;
        let mut events = RoomEvents::new(&client, &code)
            .map_err(|e| AppError::from_client(&e, Some(&code)))?
            .with_key(key.map(str::to_string));
        let token = CancellationToken::new();
        if let Some(old) = lock(&self.inner.subscriptions).insert(code.clone(), token.clone()) {
            old.cancel();
        }
        let ui = self.inner.options.ui.clone();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = token.cancelled() => break,
                    item = events.next() => item,
                };
                match item {
                    Ok(StreamItem::Connected { .. }) => ui.emit(
                        "room-event",
                        json!({ "type": "connected", "timestamp": crate::protocol::now_ms(), "roomCode": code, "data": {} }),
                    ),
                    Ok(StreamItem::Event { data, .. }) => {
                        let Ok(mut payload) = serde_json::from_str::<Value>(&data) else { continue };
                        if let (Some(object), Some(id)) = (payload.as_object_mut(), events.last_event_id()) {
                            if let Ok(id) = id.parse::<u64>() {
                                object.insert("id".into(), id.into());
                            }
                        }
                        ui.emit("room-event", payload);
                    }
                    Ok(StreamItem::Reconnecting { reason, .. }) => {
                        tracing::debug!(%code, %reason, "room events interrupted; reconnecting")
                    }
                    Err(e) => {
                        tracing::info!(%code, error = %e, "room events ended");
                        break;
                    }
                }
            }
        });
        Ok(())
    }

    pub fn unsubscribe_room(&self, code: &str) {
        if let Some(code) = normalize_room_code(code) {
            if let Some(token) = lock(&self.inner.subscriptions).remove(&code) {
                token.cancel();
            }
        }
    }

    // ---- the share -------------------------------------------------------------------------------

    pub fn share_status(&self) -> ShareStatus {
        self.inner.share_status.borrow().clone()
    }

    /// Follows the share's status.
    pub fn subscribe_share(&self) -> watch::Receiver<ShareStatus> {
        self.inner.share_status.subscribe()
    }

    /// This computer's model server and its models (`local_models`); an error that says what to
    /// do when there is none.
    pub async fn local_models(&self) -> Result<Value, AppError> {
        let endpoint = self.settings().provider_endpoint;
        let detection =
            provider::detect_at(&self.inner.options.ollama_url, &self.inner.options.lmstudio_url, endpoint.as_deref())
                .await;
        let Some(found) = detection.found else {
            return Err(not_running(&detection));
        };
        let kind = match found.kind {
            ProviderKind::Ollama => "ollama",
            ProviderKind::LmStudio => "lmstudio",
            ProviderKind::OpenAiCompatible => "openai",
        };
        let models: Vec<Value> = found
            .models
            .iter()
            .map(|m| {
                let loaded = found.loaded.iter().find(|l| l.name == m.name);
                let mut model = json!({ "name": m.name, "loaded": loaded.is_some() });
                if let Some(vram) = loaded.and_then(|l| l.vram) {
                    model["vram"] = json!(vram);
                }
                if let Some(size) = m.size_gib.or_else(|| loaded.and_then(|l| l.size)) {
                    model["size"] = json!(size);
                }
                model
            })
            .collect();
        Ok(json!({ "provider": { "kind": kind, "url": found.endpoint }, "models": models }))
    }

    /// Shares this computer's model server into room `code` on `hub` (`None`: this app's hub).
    /// Answers once the share is live, or with where it stands after a while (it keeps trying);
    /// a refusal (wrong password, no such room, no model server) is an error.
    pub async fn start_share(
        &self,
        hub: Option<&str>,
        code: &str,
        password: Option<&str>,
        nickname: &str,
        model: &str,
    ) -> Result<ShareStatus, AppError> {
        let code = room_code(code)?;
        let nickname = nickname.trim();
        if nickname.is_empty() {
            return Err(AppError::new("Choose a nickname, so people in the room know whose computer this is."));
        }
        let hub = hub.map(str::trim).filter(|h| !h.is_empty()).map(str::to_string);
        let hub_url = match &hub {
            Some(url) => HubClient::new(url).map_err(|e| AppError::from_client(&e, None))?.base_url().to_string(),
            None => self.local_hub_url().await.ok_or_else(hub_off)?,
        };
        let client = HubClient::new(&hub_url).map_err(|e| AppError::from_client(&e, None))?;
        let room = client.get_room(&code).await.map_err(|e| AppError::from_client(&e, Some(&code)))?;
        // A room this app keeps the password of (one it made, or shared into before) does not ask
        // for it again.
        let kept = match password.filter(|p| !p.is_empty()) {
            None if room.password_protected => self.kept_password(hub.as_deref(), &code).await,
            _ => None,
        };
        let password = password.filter(|p| !p.is_empty()).or(kept.as_deref());
        if room.password_protected && password.is_none() {
            let asked = AppError::new(format!("Room {code} has a password — type it to share into it."));
            return Err(if hub.is_none() { asked } else { asked.hint("Ask the room's host for the password.") });
        }
        let settings = self.settings();
        let detection = self.detect_provider(&settings).await;
        let Some(found) = detection.found.clone() else {
            return Err(not_running(&detection));
        };
        let model = match model.trim() {
            "" => provider::pick_model(&found, settings.preferred_model.as_deref()),
            wanted => provider::pick_model(&found, Some(wanted)),
        }
        .map_err(|e| AppError::new(sentence(&e.to_string())).hint("Pick one of the models listed."))?;
        let participant_id = {
            let mut settings = lock(&self.inner.settings);
            settings
                .participant_id
                .get_or_insert_with(|| crate::cli::participant::generated_participant_id(nickname))
                .clone()
        };
        self.stop_share_inner().await;
        let mut options = SessionOptions::new(&hub_url, &code, &participant_id, &found.endpoint, &model);
        options.nickname = nickname.to_string();
        options.password = password.map(str::to_string);
        // After a crash the hub (ours with its state file, or another) still binds the saved id to
        // a token this app no longer has: share under a fresh id rather than wait for it.
        options.rename_on_conflict = true;
        let target = ShareTarget {
            hub: hub.clone(),
            hub_url: hub_url.clone(),
            code: code.clone(),
            room_name: Some(room.name.clone()),
            model: model.clone(),
            server: found.kind.to_string(),
        };
        *lock(&self.inner.own_participant) = Some(participant_id.clone());
        let supervisor = Supervisor::start(options);
        let forward = tokio::spawn(self.clone().forward_share(supervisor.subscribe(), target.clone()));
        let room_watch = if hub.is_some() { Some(self.watch_remote_room(&client, &code, password)) } else { None };
        let mut rx = supervisor.subscribe();
        *self.inner.share.lock().await = Some(Share { supervisor, target: target.clone(), forward, room_watch });
        let settled: Option<ShareState> = tokio::time::timeout(
            SHARE_START_WAIT,
            rx.wait_for(|s| {
                matches!(
                    s,
                    ShareState::Live { .. }
                        | ShareState::Paused { .. }
                        | ShareState::Failed { .. }
                        | ShareState::Stopped
                )
            }),
        )
        .await
        .ok()
        .and_then(|r| r.ok().map(|state| state.clone()));
        let state = settled.unwrap_or_else(|| rx.borrow().clone());
        if let ShareState::Failed { error, status } = &state {
            let failure = share_failure(error, *status, &code, hub.is_none());
            self.stop_share_inner().await;
            self.publish_share(ShareStatus {
                state: "error",
                message: Some(failure.message.clone()),
                ..ShareStatus::off()
            });
            return Err(failure);
        }
        // Remembered once the hub has taken it (or it is still trying): "Share my Ollama" in the
        // tray and "share on start" use the most recent room.
        {
            let mut settings = lock(&self.inner.settings);
            settings.nickname = nickname.to_string();
            settings.remember(RememberedRoom {
                hub: hub.clone(),
                code: code.clone(),
                name: Some(room.name.clone()),
                model: Some(model.clone()),
                protected: room.password_protected,
            });
            if let Err(e) = self.inner.store.save(&settings) {
                tracing::warn!(error = %e, "settings not saved");
            }
        }
        if let Some(password) = password {
            self.keep_password(hub.as_deref(), &code, password).await;
        }
        Ok(status_of(&state, &target))
    }

    /// Stops sharing: the participant leaves its room.
    pub async fn stop_share(&self) -> ShareStatus {
        self.stop_share_inner().await;
        self.share_status()
    }

    async fn stop_share_inner(&self) {
        let share = self.inner.share.lock().await.take();
        if let Some(share) = share {
            share.forward.abort();
            if let Some(token) = share.room_watch {
                token.cancel();
            }
            share.supervisor.stop().await;
            self.publish_share(ShareStatus::off());
        }
    }

    /// "Share my Ollama" in the tray: stops a running share, or shares into the last room.
    pub async fn toggle_share(&self) -> ToggleOutcome {
        if self.share_status().is_on() {
            self.stop_share_inner().await;
            return ToggleOutcome::Stopped;
        }
        self.share_remembered().await
    }

    /// "Share my Ollama", in one click (the window's button and the tray's item): a share that is
    /// on stays on; else it goes into the last room; with none, into a new room on this machine's
    /// hub named after the person — unless rooms on other hubs of the LAN are there to be picked
    /// first (`NeedsRoom`: the window offers them).
    pub async fn share_now(&self) -> ToggleOutcome {
        let status = self.share_status();
        if status.is_on() {
            return ToggleOutcome::Started(status);
        }
        if !self.settings().rooms.is_empty() {
            return self.share_remembered().await;
        }
        if self.lan_rooms_elsewhere() {
            return ToggleOutcome::NeedsRoom;
        }
        self.share_in_new_room().await
    }

    /// Rooms found on the LAN on hubs other than this app's own.
    fn lan_rooms_elsewhere(&self) -> bool {
        let own = self.hub_info().url;
        lock(&self.inner.discovered).values().any(|hub| Some(&hub.url) != own.as_ref() && !hub.rooms.is_empty())
    }

    /// A room on this machine's hub, named after the person, with this machine's model in it.
    /// With no model server running, no room is made: the failure (code `NO_MODEL_SERVER`) says
    /// where to get one, and the Share screen notices it when it starts.
    pub async fn share_in_new_room(&self) -> ToggleOutcome {
        let settings = self.settings();
        let detection = self.detect_provider(&settings).await;
        if detection.found.is_none() {
            return ToggleOutcome::Failed(not_running(&detection));
        }
        let nickname = settings.nickname.trim().to_string();
        let name: String = format!("{nickname}'s room").chars().take(64).collect();
        let created = match self.create_room(&name, None).await {
            Ok(created) => created,
            Err(e) => return ToggleOutcome::Failed(e),
        };
        let model = settings.preferred_model.clone().unwrap_or_default();
        match self.start_share(None, &created.room.code, None, &nickname, &model).await {
            Ok(status) => ToggleOutcome::Started(status),
            Err(e) => {
                // No empty room left behind by a share that did not start.
                if let Some(token) = created.host_token.as_deref() {
                    if let Err(gone) = self.delete_room(&created.room.code, token).await {
                        tracing::debug!(error = %gone.message, "the room made for the share was not removed");
                    }
                }
                ToggleOutcome::Failed(e)
            }
        }
    }

    async fn share_remembered(&self) -> ToggleOutcome {
        let settings = self.settings();
        let Some(room) = settings.rooms.first().cloned() else {
            return ToggleOutcome::NeedsRoom;
        };
        let password = if room.protected {
            match self.kept_password(room.hub.as_deref(), &room.code).await {
                Some(password) => Some(password),
                None => return ToggleOutcome::NeedsRoom,
            }
        } else {
            None
        };
        let model = room.model.clone().or(settings.preferred_model.clone()).unwrap_or_default();
        match self.start_share(room.hub.as_deref(), &room.code, password.as_deref(), &settings.nickname, &model).await {
            Ok(status) => ToggleOutcome::Started(status),
            Err(e) => ToggleOutcome::Failed(e),
        }
    }

    /// The model server on this computer, where `settings` say to look.
    async fn detect_provider(&self, settings: &Settings) -> provider::Detection {
        provider::detect_at(
            &self.inner.options.ollama_url,
            &self.inner.options.lmstudio_url,
            settings.provider_endpoint.as_deref(),
        )
        .await
    }

    /// The password kept for room `code` on `hub`, if any.
    async fn kept_password(&self, hub: Option<&str>, code: &str) -> Option<String> {
        let inner = self.inner.clone();
        let (hub, code) = (hub.map(str::to_string), code.to_string());
        tokio::task::spawn_blocking(move || inner.secrets.get(hub.as_deref(), &code)).await.ok().flatten()
    }

    async fn keep_password(&self, hub: Option<&str>, code: &str, password: &str) -> SecretStorage {
        let inner = self.inner.clone();
        let (hub, code, password) = (hub.map(str::to_string), code.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || inner.secrets.put(hub.as_deref(), &code, &password))
            .await
            .unwrap_or(SecretStorage::Memory)
    }

    fn publish_share(&self, status: ShareStatus) {
        self.inner.share_status.send_replace(status.clone());
        self.inner.options.ui.emit("share-status", serde_json::to_value(&status).unwrap_or(Value::Null));
        self.inner.options.ui.changed();
    }

    /// Remembers the id the share is live under (a fresh one, when the saved id was taken).
    fn keep_participant_id(&self, id: &str) {
        let mut settings = lock(&self.inner.settings);
        if settings.participant_id.as_deref() != Some(id) {
            settings.participant_id = Some(id.to_string());
            if let Err(e) = self.inner.store.save(&settings) {
                tracing::warn!(error = %e, "settings not saved");
            }
        }
        drop(settings);
        *lock(&self.inner.own_participant) = Some(id.to_string());
    }

    /// Turns the supervisor's states into the window's, the tray's and the notifications'.
    async fn forward_share(self, mut states: watch::Receiver<ShareState>, target: ShareTarget) {
        let mut was_live = false;
        let mut lost = false;
        let mut paused = false;
        let room = target.room_name.clone().unwrap_or_else(|| target.code.clone());
        loop {
            let state = states.borrow_and_update().clone();
            match &state {
                ShareState::Live { participant_id, .. } => {
                    self.keep_participant_id(participant_id);
                    if lost {
                        self.inner.coalescer.push(Transition::ShareRecovered { room: room.clone() });
                    }
                    if paused {
                        self.inner
                            .coalescer
                            .push(Transition::ShareResumed { server: target.server.clone(), room: room.clone() });
                    }
                    was_live = true;
                    lost = false;
                    paused = false;
                }
                // Once per pause, however long it lasts.
                ShareState::Paused { .. } if !paused => {
                    self.inner
                        .coalescer
                        .push(Transition::SharePaused { server: target.server.clone(), room: room.clone() });
                    paused = true;
                }
                ShareState::Reconnecting { attempt, .. } => {
                    if was_live && !lost {
                        self.inner.coalescer.push(Transition::ShareReconnecting { attempt: *attempt });
                    }
                    lost = was_live || lost;
                    // A hub that answers without the room: the room was closed, and retrying
                    // would never bring it back.
                    tokio::spawn(self.clone().end_if_room_gone(target.clone(), room.clone()));
                }
                ShareState::Failed { error, status } if was_live => {
                    let failure = share_failure(error, *status, &target.code, target.hub.is_none());
                    self.inner.coalescer.push(Transition::ShareDropped { reason: failure.message });
                }
                _ => {}
            }
            let status = status_of(&state, &target);
            self.publish_share(status);
            if states.changed().await.is_err() {
                break;
            }
        }
    }

    /// Ends the share of `target` if its hub answers that the room is not there: "Lab GPUs was
    /// closed — pick another room", said once (the window then offers the rooms to pick from).
    async fn end_if_room_gone(self, target: ShareTarget, room: String) {
        let Ok(client) = HubClient::new(&target.hub_url) else { return };
        let gone = matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), client.get_room(&target.code)).await,
            Ok(Err(ref e)) if e.status() == Some(404)
        );
        let still_this_share = self
            .inner
            .share
            .lock()
            .await
            .as_ref()
            .is_some_and(|s| s.target.code == target.code && s.target.hub_url == target.hub_url);
        if !gone || !still_this_share {
            return;
        }
        self.stop_share_inner().await;
        let message = format!("{room} was closed — pick another room.");
        self.inner.coalescer.push(Transition::ShareDropped { reason: message.clone() });
        self.publish_share(ShareStatus {
            state: "error",
            code: Some(target.code.clone()),
            room_name: target.room_name.clone(),
            hub: Some(target.hub_url.clone()),
            own_hub: target.hub.is_none(),
            message: Some(message),
            ..ShareStatus::off()
        });
        // Not offered again by "Share my Ollama": it is gone.
        let mut settings = lock(&self.inner.settings);
        settings.rooms.retain(|r| !(r.code.eq_ignore_ascii_case(&target.code) && r.hub == target.hub));
        if let Err(e) = self.inner.store.save(&settings) {
            tracing::warn!(error = %e, "settings not saved");
        }
    }

    /// Notifications for a room on another hub: follows its events over HTTP.
    fn watch_remote_room(&self, client: &HubClient, code: &str, key: Option<&str>) -> CancellationToken {
        let key = key.map(str::to_string);
        let token = CancellationToken::new();
        let core = self.clone();
        let client = client.clone();
        let code = code.to_string();
        let stop = token.clone();
        tokio::spawn(async move {
            if let Ok(people) = client.list_participants_as(&code, key.as_deref()).await {
                lock(&core.inner.tracker).seed(&code, &people);
            }
            let Ok(events) = RoomEvents::new(&client, &code) else { return };
            let mut events = events.with_key(key);
            loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => break,
                    item = events.next() => item,
                };
                match item {
                    Ok(StreamItem::Event { data, .. }) => {
                        if let Ok(envelope) = serde_json::from_str::<EventEnvelope>(&data) {
                            core.observe(&envelope);
                        }
                    }
                    Ok(_) => {}
                    Err(FollowError::Refused(_) | FollowError::Unreachable { .. }) => break,
                }
            }
        });
        token
    }

    /// The OpenAI base URL of the room this machine shares into (or shared into last).
    pub fn room_url(&self) -> Option<String> {
        let status = self.share_status();
        let info = self.hub_info();
        let own_base = info.url.clone();
        let (hub, code) = match (status.is_on(), status.hub, status.code) {
            // Built from the hub that holds the room: another hub on this machine (another port)
            // is not this app's.
            (true, Some(hub), Some(code)) => (if status.own_hub { own_base } else { Some(hub) }, code),
            _ => {
                let room = self.settings().rooms.first().cloned()?;
                (room.hub.or(own_base), room.code)
            }
        };
        Some(format!("{}/rooms/{code}/v1", hub?.trim_end_matches('/')))
    }

    // ---- discovery -------------------------------------------------------------------------------

    fn start_browser(&self) {
        let mut browser = match discovery::browse(discovery::BrowseOptions::new(discovery::SERVICE_TYPE)) {
            Ok(browser) => browser,
            Err(e) => {
                tracing::warn!(error = %e, "no LAN discovery");
                return;
            }
        };
        let core = self.clone();
        let stop = self.inner.browser_stop.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = stop.cancelled() => break,
                    change = browser.next() => change,
                };
                match change {
                    Some(HubChange::Appeared(hub) | HubChange::Updated(hub)) => {
                        lock(&core.inner.discovered).insert(hub.instance.clone(), hub);
                    }
                    Some(HubChange::Gone { instance }) => {
                        lock(&core.inner.discovered).remove(&instance);
                    }
                    None => break,
                }
            }
            browser.stop().await;
        });
    }

    /// The hubs found on the LAN (`discovered_hubs`).
    /// This app's own hub is not among them: it is "This computer".
    pub fn discovered_hubs(&self) -> Vec<Value> {
        let own = self.hub_info().url;
        lock(&self.inner.discovered)
            .values()
            .filter(|hub| Some(&hub.url) != own.as_ref())
            .map(|hub| {
                json!({
                    "url": hub.url,
                    "name": hub.name,
                    "version": hub.hub_version.clone().or(hub.version.clone()),
                    "rooms": hub.rooms,
                })
            })
            .collect()
    }

    // ---- settings --------------------------------------------------------------------------------

    /// Saves what the window sent and applies it: a changed exposure or port restarts the hub
    /// (and a share into it follows it to its new address).
    pub async fn save_settings(&self, new: Settings) -> Result<Settings, AppError> {
        let new = new.normalized();
        new.validate().map_err(AppError::new)?;
        let (old, saved) = {
            let mut settings = lock(&self.inner.settings);
            let old = settings.clone();
            let mut saved = new;
            // What the window does not edit stays as it was.
            saved.rooms = old.rooms.clone();
            saved.participant_id = old.participant_id.clone();
            self.inner.store.save(&saved).map_err(|e| {
                AppError::new("The settings could not be saved.").hint(format!("{e}. Check the disk and try again."))
            })?;
            *settings = saved.clone();
            (old, saved)
        };
        let restart = old.hub_exposure != saved.hub_exposure
            || old.hub_port != saved.hub_port
            || old.allowed_hosts != saved.allowed_hosts
            || old.cors_origins != saved.cors_origins;
        if restart {
            let share = self.inner.share.lock().await.as_ref().map(|s| s.target.clone());
            let follow = share.filter(|t| t.hub.is_none());
            if follow.is_some() {
                self.stop_share_inner().await;
            }
            self.stop_hub().await;
            self.start_hub().await;
            if follow.is_some() && self.local_hub_url().await.is_some() {
                let core = self.clone();
                tokio::spawn(async move {
                    if let ToggleOutcome::Failed(e) = core.share_remembered().await {
                        tracing::warn!(error = %e, "the share did not follow the hub");
                    }
                });
            }
        }
        self.inner.options.ui.changed();
        Ok(saved)
    }
}

/// The window's form of the supervisor's state.
fn status_of(state: &ShareState, target: &ShareTarget) -> ShareStatus {
    let base = ShareStatus {
        hub: Some(target.hub_url.clone()),
        own_hub: target.hub.is_none(),
        code: Some(target.code.clone()),
        room_name: target.room_name.clone(),
        model: Some(target.model.clone()),
        ..ShareStatus::off()
    };
    match state {
        ShareState::Starting => ShareStatus { state: "starting", ..base },
        ShareState::Live { participant_id, model, .. } => ShareStatus {
            state: "live",
            participant_id: Some(participant_id.clone()),
            model: Some(model.clone()),
            ..base
        },
        ShareState::Paused { participant_id, model, .. } => ShareStatus {
            state: "paused",
            participant_id: Some(participant_id.clone()),
            model: Some(model.clone()),
            message: Some(format!("{} stopped — your share is paused until it runs again.", target.server)),
            ..base
        },
        ShareState::Reconnecting { attempt, retry_in_ms, error } => ShareStatus {
            state: "reconnecting",
            message: Some(format!(
                "Lost the hub ({}) — trying again in {} s (attempt {attempt}).",
                error.trim_end_matches('.'),
                retry_in_ms.div_ceil(1000)
            )),
            ..base
        },
        ShareState::Stopped => ShareStatus::off(),
        ShareState::Failed { error, status } => ShareStatus {
            state: "error",
            message: Some(share_failure(error, *status, &target.code, target.hub.is_none()).message),
            ..base
        },
    }
}

fn off_info(error: Option<String>) -> HubInfo {
    HubInfo { url: None, state: "off", version: env!("CARGO_PKG_VERSION"), error, advertised: false }
}

fn hub_off() -> AppError {
    AppError::new("This app's hub is off.").hint("Turn it on in Settings, or share into a room on another hub.")
}

fn room_code(code: &str) -> Result<String, AppError> {
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    normalize_room_code(&compact).ok_or_else(|| {
        AppError::new("That isn't a room code.").hint("Room codes are 6 letters or digits (or - and _), like K7QX2M.")
    })
}

/// "Ollama isn't running — start it, then try again", from what detection tried.
fn not_running(detection: &provider::Detection) -> AppError {
    let hint = "Get Ollama at https://ollama.com/download, or use LM Studio (https://lmstudio.ai) with its \
                server on. Gambi looks for Ollama on port 11434 and LM Studio on port 1234, or the address in \
                Settings, and notices it as soon as it starts.";
    let error = match detection.errors().first() {
        Some(error) => AppError::new(sentence(&error.to_string())).hint(hint),
        None => AppError::new("Ollama isn't running on this computer.").hint(hint),
    };
    error.with_code(NO_MODEL_SERVER)
}

/// A share the hub refused, in the window's words.
/// `own`: the room is on this app's hub, so the person is its host (no one to ask).
fn share_failure(error: &str, status: Option<u16>, code: &str, own: bool) -> AppError {
    match status {
        Some(401) if own => {
            AppError::new("That password isn't right.").hint("It is the one you chose when you made the room.")
        }
        Some(401) => AppError::new("That password isn't right.").hint("Ask the room's host for the password."),
        Some(404) => AppError::new(format!("Room {code} isn't on this hub — check the code.")),
        _ => AppError::new(sentence(error)),
    }
}

/// Listens on `port`, or the next free one after it.
async fn bind_first_free(host: IpAddr, port: u16) -> Result<tokio::net::TcpListener, String> {
    let mut last = None;
    for candidate in port..=port.saturating_add(PORT_TRIES) {
        match tokio::net::TcpListener::bind(SocketAddr::new(host, candidate)).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(format!(
        "Ports {port} to {} are all taken ({}). Pick another port in Settings.",
        port.saturating_add(PORT_TRIES),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// The address other machines on the LAN most likely reach this one at: the first private IPv4
/// address of an interface that is up and not loopback.
fn lan_address() -> Option<Ipv4Addr> {
    let addresses = if_addrs::get_if_addrs().ok()?;
    let mut v4: Vec<Ipv4Addr> = addresses
        .iter()
        .filter(|a| !a.is_loopback())
        .filter_map(|a| match a.ip() {
            IpAddr::V4(ip) if !ip.is_link_local() => Some(ip),
            _ => None,
        })
        .collect();
    v4.sort_by_key(|ip| !ip.is_private());
    v4.first().copied()
}
