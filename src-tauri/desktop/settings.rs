//! The app's settings: one JSON file in the platform's app config directory, written atomically on
//! every change. Room passwords never go in it: they live in the OS keyring (Secret Service,
//! Keychain, Credential Manager) when there is one, else only in this process's memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::protocol::normalize_room_code;

/// The file name inside the app config directory.
pub const FILE_NAME: &str = "settings.json";
/// The port the embedded hub tries first.
pub const DEFAULT_HUB_PORT: u16 = crate::protocol::DEFAULT_PORT;
/// How many rooms are remembered (the most recent first).
const MAX_REMEMBERED: usize = 20;

/// Where the embedded hub listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HubExposure {
    /// Every interface, advertised on the LAN over mDNS.
    Lan,
    /// 127.0.0.1 only: rooms for this machine alone.
    Loopback,
    /// No embedded hub.
    Off,
}

/// A room this machine has shared into; its password (if any) is in the [`Secrets`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RememberedRoom {
    /// The hub's address; `None` for this app's own hub (whatever port it ends up on).
    pub hub: Option<String>,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether the room wants a password (which is kept elsewhere).
    #[serde(default)]
    pub protected: bool,
}

impl RememberedRoom {
    /// The same room: the same code (in any case) on the same hub (a trailing slash aside).
    pub fn same_room(&self, other: &RememberedRoom) -> bool {
        let hub = |h: &Option<String>| h.as_deref().map(|h| h.trim().trim_end_matches('/').to_ascii_lowercase());
        self.code.eq_ignore_ascii_case(&other.code) && hub(&self.hub) == hub(&other.hub)
    }
}

/// Everything the person can set, as the window shows it (`ui/backend.js` documents the shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    pub nickname: String,
    pub provider_endpoint: Option<String>,
    pub preferred_model: Option<String>,
    pub hub_exposure: HubExposure,
    pub hub_port: u16,
    pub notifications: bool,
    pub share_on_start: bool,
    /// "Pause sharing while I use Ollama myself": a share pauses while the model server is busy
    /// with requests that did not come from the room (`participant::owner_watch`).
    pub pause_while_owner_busy: bool,
    /// Host names the app's hub answers to beyond its own (as `--allowed-host`).
    pub allowed_hosts: Vec<String>,
    /// Web origins allowed to call the app's hub (as `--cors`).
    pub cors_origins: Vec<String>,
    /// Rooms shared into, most recent first; "Share my Ollama" in the tray uses the first.
    pub rooms: Vec<RememberedRoom>,
    /// This machine's participant id, kept so a share comes back as the same participant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nickname: default_nickname(),
            provider_endpoint: None,
            preferred_model: None,
            hub_exposure: HubExposure::Lan,
            hub_port: DEFAULT_HUB_PORT,
            notifications: true,
            share_on_start: false,
            pause_while_owner_busy: false,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            rooms: Vec::new(),
            participant_id: None,
        }
    }
}

/// This machine's name, as a nickname people recognise.
pub fn default_nickname() -> String {
    sysinfo::System::host_name()
        .ok()
        .map(|name| name.split('.').next().unwrap_or_default().trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "my-computer".into())
}

impl Settings {
    /// Checks what the window sent; the error is a sentence that says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        let nickname = self.nickname.trim();
        if nickname.is_empty() {
            return Err("Choose a nickname, so people in the room know whose computer this is.".into());
        }
        if nickname.chars().count() > 64 {
            return Err("That nickname is too long — keep it under 64 characters.".into());
        }
        if nickname.chars().any(char::is_control) {
            return Err("A nickname can't contain control characters.".into());
        }
        if self.hub_port == 0 {
            return Err("The hub's port must be between 1 and 65535 (3000 is the usual one).".into());
        }
        if let Some(endpoint) = &self.provider_endpoint {
            let url = reqwest::Url::parse(endpoint.trim())
                .map_err(|_| "The model server address must be a URL like http://localhost:11434.".to_string())?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err("The model server address must start with http:// or https://.".into());
            }
        }
        for host in &self.allowed_hosts {
            crate::hub::browser::parse_host_name(host)?;
        }
        for origin in &self.cors_origins {
            crate::hub::browser::parse_origin(origin)?;
        }
        if let Some(model) = &self.preferred_model {
            if model.chars().count() > 256 || model.chars().any(char::is_control) {
                return Err("That model name doesn't look right — pick one from the list.".into());
            }
        }
        Ok(())
    }

    /// Trims what people type and turns empty fields into "not set".
    pub fn normalized(mut self) -> Settings {
        self.nickname = self.nickname.trim().to_string();
        let blank_to_none = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        self.provider_endpoint = blank_to_none(self.provider_endpoint);
        self.preferred_model = blank_to_none(self.preferred_model);
        let listed = |list: Vec<String>| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for item in list.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            out
        };
        self.allowed_hosts = listed(self.allowed_hosts);
        self.cors_origins = listed(self.cors_origins);
        self.rooms.retain(|room| normalize_room_code(&room.code).is_some());
        // One entry per room, the most recent (first) kept: files written by earlier versions may
        // hold the same room twice, by a code in other case or a hub with a trailing slash.
        let mut kept: Vec<RememberedRoom> = Vec::new();
        for room in std::mem::take(&mut self.rooms) {
            if !kept.iter().any(|k| k.same_room(&room)) {
                kept.push(room);
            }
        }
        self.rooms = kept;
        self.rooms.truncate(MAX_REMEMBERED);
        self
    }

    /// Puts `room` first in the remembered rooms (replacing an older entry for the same room).
    pub fn remember(&mut self, room: RememberedRoom) {
        self.rooms.retain(|r| !r.same_room(&room));
        self.rooms.insert(0, room);
        self.rooms.truncate(MAX_REMEMBERED);
    }
}

/// Why the settings could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the settings in {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the settings file {path} is damaged ({source}); it was kept as {backup} and defaults are used")]
    Corrupt { path: PathBuf, backup: PathBuf, source: serde_json::Error },
    #[error("cannot save the settings in {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The settings file.
#[derive(Debug, Clone)]
pub struct SettingsStore {
    path: PathBuf,
}

impl SettingsStore {
    pub fn new(config_dir: &Path) -> SettingsStore {
        SettingsStore { path: config_dir.join(FILE_NAME) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved settings; `Ok(None)` when there are none yet (the first launch). A damaged file
    /// is moved aside (never silently overwritten) and reported.
    pub fn load(&self) -> Result<Option<Settings>, SettingsError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SettingsError::Read { path: self.path.clone(), source }),
        };
        match serde_json::from_str::<Settings>(&text) {
            Ok(settings) => Ok(Some(settings.normalized())),
            Err(source) => {
                let backup = self.path.with_extension(format!("json.damaged-{}", crate::protocol::now_ms()));
                if let Err(source) = std::fs::rename(&self.path, &backup) {
                    return Err(SettingsError::Read { path: self.path.clone(), source });
                }
                Err(SettingsError::Corrupt { path: self.path.clone(), backup, source })
            }
        }
    }

    /// Writes the settings: a temporary file renamed over the old one, so a crash mid-write never
    /// leaves half a file.
    pub fn save(&self, settings: &Settings) -> Result<(), SettingsError> {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let text = serde_json::to_string_pretty(settings).map_err(std::io::Error::other)?;
            let tmp = self.path.with_extension("json.tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| SettingsError::Write { path: self.path.clone(), source })
    }
}

/// Where room passwords are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretStorage {
    Keyring,
    Memory,
}

/// Room passwords: in the OS keyring when it works, else only in memory (forgotten on quit).
pub struct Secrets {
    use_keyring: bool,
    memory: Mutex<HashMap<String, String>>,
    service: String,
}

impl Secrets {
    /// `use_keyring` false keeps everything in memory (tests, or a machine without a keyring).
    pub fn new(service: &str, use_keyring: bool) -> Secrets {
        Secrets { use_keyring, memory: Mutex::new(HashMap::new()), service: service.to_string() }
    }

    fn account(hub: Option<&str>, code: &str) -> String {
        format!("{}#{code}", hub.unwrap_or("this-app"))
    }

    /// The host token of a room this app made on its own hub: the person owns that hub, so the app
    /// keeps the token for them (and deletes the room with it when asked).
    fn host_account(code: &str) -> String {
        format!("host-token#{code}")
    }

    /// Keeps `password` for the room; says where it went. Blocking (the keyring may talk D-Bus):
    /// call from a blocking thread.
    pub fn put(&self, hub: Option<&str>, code: &str, password: &str) -> SecretStorage {
        self.put_account(Self::account(hub, code), password)
    }

    /// Keeps the host token of room `code` of this app's own hub (blocking, like [`Self::put`]).
    pub fn put_host_token(&self, code: &str, token: &str) -> SecretStorage {
        self.put_account(Self::host_account(code), token)
    }

    /// The host token kept for room `code` of this app's own hub, if any (blocking).
    pub fn host_token(&self, code: &str) -> Option<String> {
        self.get_account(Self::host_account(code))
    }

    /// Forgets the host token of room `code` (the room is gone).
    pub fn forget_host_token(&self, code: &str) {
        self.forget_account(Self::host_account(code));
    }

    fn put_account(&self, account: String, password: &str) -> SecretStorage {
        if self.use_keyring {
            match keyring::Entry::new(&self.service, &account).and_then(|e| e.set_password(password)) {
                Ok(()) => {
                    self.lock().remove(&account);
                    return SecretStorage::Keyring;
                }
                Err(e) => tracing::info!(error = %e, "no OS keyring; the room password is kept in memory only"),
            }
        }
        self.lock().insert(account, password.to_string());
        SecretStorage::Memory
    }

    /// The room's password, if one was kept.
    pub fn get(&self, hub: Option<&str>, code: &str) -> Option<String> {
        self.get_account(Self::account(hub, code))
    }

    fn get_account(&self, account: String) -> Option<String> {
        if let Some(password) = self.lock().get(&account) {
            return Some(password.clone());
        }
        if self.use_keyring {
            match keyring::Entry::new(&self.service, &account).and_then(|e| e.get_password()) {
                Ok(password) => return Some(password),
                Err(keyring::Error::NoEntry) => {}
                Err(e) => tracing::debug!(error = %e, "keyring not readable"),
            }
        }
        None
    }

    /// Forgets the room's password everywhere.
    pub fn forget(&self, hub: Option<&str>, code: &str) {
        self.forget_account(Self::account(hub, code));
    }

    fn forget_account(&self, account: String) {
        self.lock().remove(&account);
        if self.use_keyring {
            if let Ok(entry) = keyring::Entry::new(&self.service, &account) {
                let _ = entry.delete_credential();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_a_damaged_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = SettingsStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let mut settings = Settings { nickname: "alice".into(), hub_port: 3100, ..Settings::default() };
        settings.remember(RememberedRoom {
            hub: None,
            code: "ABC123".into(),
            name: Some("Team".into()),
            model: None,
            protected: true,
        });
        store.save(&settings).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"hubPort\": 3100"), "{text}");
        assert_eq!(store.load().unwrap(), Some(settings));
        std::fs::write(store.path(), "{ not json").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, SettingsError::Corrupt { .. }), "{err}");
        assert!(store.load().unwrap().is_none(), "the damaged file was moved aside");
        let kept = std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).count();
        assert_eq!(kept, 1);
    }

    #[test]
    fn validation_says_what_to_fix() {
        let ok = Settings { nickname: "bob".into(), ..Settings::default() };
        assert!(ok.validate().is_ok());
        let cases = [
            Settings { nickname: "  ".into(), ..ok.clone() },
            Settings { hub_port: 0, ..ok.clone() },
            Settings { provider_endpoint: Some("localhost:11434".into()), ..ok.clone() },
            Settings { provider_endpoint: Some("ftp://x".into()), ..ok.clone() },
            Settings { nickname: "a\u{7}b".into(), ..ok.clone() },
        ];
        for case in cases {
            let message = case.validate().unwrap_err();
            assert!(message.ends_with('.'), "{message}");
        }
    }

    #[test]
    fn extra_hosts_and_origins_are_checked_and_tidied() {
        let ok = Settings {
            allowed_hosts: vec![" gambi.example.org ".into(), "".into(), "gambi.example.org".into()],
            cors_origins: vec!["http://localhost:5173".into()],
            ..Settings::default()
        }
        .normalized();
        assert_eq!(ok.allowed_hosts, ["gambi.example.org"]);
        assert!(ok.validate().is_ok());
        let bad_host = Settings { allowed_hosts: vec!["http://x.example".into()], ..Settings::default() };
        assert!(bad_host.validate().unwrap_err().contains("not a host name"));
        let bad_origin = Settings { cors_origins: vec!["localhost:5173".into()], ..Settings::default() };
        assert!(bad_origin.validate().unwrap_err().contains("not an origin"));
        // A settings file from before these fields reads as none.
        let old: Settings = serde_json::from_str(r#"{"nickname": "bob"}"#).unwrap();
        assert!(old.allowed_hosts.is_empty() && old.cors_origins.is_empty());
        assert!(!old.pause_while_owner_busy, "owner first is off unless chosen");
        let chosen: Settings = serde_json::from_str(r#"{"nickname": "bob", "pauseWhileOwnerBusy": true}"#).unwrap();
        assert!(chosen.pause_while_owner_busy);
    }

    #[test]
    fn remembering_moves_a_room_to_the_front_without_duplicates() {
        let mut settings = Settings::default();
        for code in ["AAAAAA", "BBBBBB", "AAAAAA"] {
            settings.remember(RememberedRoom {
                hub: None,
                code: code.into(),
                name: None,
                model: None,
                protected: false,
            });
        }
        let codes: Vec<_> = settings.rooms.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["AAAAAA", "BBBBBB"]);
    }

    #[test]
    fn one_room_is_remembered_once_whatever_its_spelling() {
        let room = |hub: Option<&str>, code: &str| RememberedRoom {
            hub: hub.map(str::to_string),
            code: code.into(),
            name: None,
            model: None,
            protected: false,
        };
        let mut settings = Settings::default();
        settings.remember(room(Some("http://lab:3000/"), "AAAAAA"));
        settings.remember(room(Some("http://lab:3000"), "aaaaaa"));
        settings.remember(room(None, "AAAAAA"));
        assert_eq!(settings.rooms.len(), 2, "the lab's room once, this computer's once: {:?}", settings.rooms);
        let file = Settings {
            rooms: vec![room(None, "BBBBBB"), room(None, "bbbbbb"), room(Some("http://h"), "BBBBBB")],
            ..Settings::default()
        };
        assert_eq!(file.normalized().rooms.len(), 2);
    }

    #[test]
    fn passwords_without_a_keyring_stay_in_memory() {
        let secrets = Secrets::new("gambi-test", false);
        assert_eq!(secrets.put(Some("http://h:3000"), "ABC123", "pw"), SecretStorage::Memory);
        assert_eq!(secrets.get(Some("http://h:3000"), "ABC123").as_deref(), Some("pw"));
        assert_eq!(secrets.get(None, "ABC123"), None);
        secrets.forget(Some("http://h:3000"), "ABC123");
        assert_eq!(secrets.get(Some("http://h:3000"), "ABC123"), None);
    }
}
