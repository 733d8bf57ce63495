//! The app's runtime, with no window or tray in it: the embedded hub (started per the settings),
//! the share (a supervised participant session), the discovery browser, the room event streams the
//! window follows, and the notifications. The Tauri commands and the tray are thin calls into it,
//! and the hub never knows the app exists: the app follows the hub's and the share's events like
//! any other client.
//!
//! - [`rooms`]: the rooms the window shows, their keys and their events.
//! - [`share`]: the share and "Share my Ollama".
//! - [`error`]: the sentences commands fail with.

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
use super::settings::{Secrets, Settings, SettingsStore};
use crate::client::HubClient;
use crate::discovery::{self, Advertiser, FoundHub, HubChange};
use crate::hub::{Hub, HubConfig};
use crate::protocol::events::EventEnvelope;
use crate::protocol::normalize_room_code;
use crate::provider;

mod error;
mod rooms;
mod share;

pub use error::{AppError, NO_MODEL_SERVER};
use share::Share;
pub use share::{ShareStatus, ToggleOutcome};

/// How many ports after the preferred one are tried when it is taken.
const PORT_TRIES: u16 = 20;

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

struct EmbeddedHub {
    local_url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    advertiser: Option<Advertiser>,
    watcher: tokio::task::JoinHandle<()>,
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

fn off_info(error: Option<String>) -> HubInfo {
    HubInfo { url: None, state: "off", version: env!("CARGO_PKG_VERSION"), error, advertised: false }
}

fn hub_off() -> AppError {
    AppError::new("This app's hub is off.").hint("Turn it on in Settings, or share into a room on another hub.")
}

fn room_code(code: &str) -> Result<String, AppError> {
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    normalize_room_code(&compact).ok_or_else(|| {
        AppError::new("That isn't a room code.").hint("Room codes are 6 letters, digits, - or _, like K7QX2M.")
    })
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
