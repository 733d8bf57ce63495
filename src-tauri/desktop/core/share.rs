//! The share: this computer's model server in a room, as a supervised participant session; its
//! state as the window, the tray and the notifications see it; "Share my Ollama" in one click.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::{sentence, AppError, NO_MODEL_SERVER};
use super::{hub_off, lock, room_code, AppCore};
use crate::client::events::{FollowError, RoomEvents, StreamItem};
use crate::client::HubClient;
use crate::desktop::notify::Transition;
use crate::desktop::settings::{RememberedRoom, SecretStorage, Settings};
use crate::participant::{SessionOptions, ShareState, Supervisor};
use crate::protocol::events::EventEnvelope;
use crate::provider::{self, ProviderKind};

/// How long `start_share` waits for the share to go live before answering with where it stands.
const SHARE_START_WAIT: Duration = Duration::from_secs(20);

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
    /// What failed, in the words of the software (for a tooltip; `message` says it for people).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// While reconnecting: the attempt that failed last, and how long until the next one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
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

/// Who the share serves.
#[derive(Debug, Clone)]
pub(super) struct ShareTarget {
    /// `None`: this app's own hub.
    pub(super) hub: Option<String>,
    pub(super) hub_url: String,
    pub(super) code: String,
    pub(super) room_name: Option<String>,
    pub(super) model: String,
    /// The model server shared, as people call it ("Ollama", "LM Studio").
    pub(super) server: String,
}

pub(super) struct Share {
    pub(super) supervisor: Supervisor,
    pub(super) target: ShareTarget,
    pub(super) forward: tokio::task::JoinHandle<()>,
    /// Follows the served room's events for notifications when it is on another hub.
    pub(super) room_watch: Option<CancellationToken>,
}

impl AppCore {
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
        options.pause_while_owner_busy = settings.pause_while_owner_busy;
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

    /// "Retry now": a share waiting to reconnect tries again at once; says whether it was waiting.
    pub async fn retry_share(&self) -> bool {
        self.inner.share.lock().await.as_ref().is_some_and(|share| share.supervisor.retry_now())
    }

    /// Stops sharing: the participant leaves its room.
    pub async fn stop_share(&self) -> ShareStatus {
        self.stop_share_inner().await;
        self.share_status()
    }

    pub(super) async fn stop_share_inner(&self) {
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
    /// A share waiting to reconnect retries at once ("Retry now").
    pub async fn share_now(&self) -> ToggleOutcome {
        let status = self.share_status();
        if status.state == "reconnecting" {
            self.retry_share().await;
            return ToggleOutcome::Started(self.share_status());
        }
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
                    if let Err(gone) = self.delete_room(&created.room.code, Some(token)).await {
                        tracing::debug!(error = %gone.message, "the room made for the share was not removed");
                    }
                }
                ToggleOutcome::Failed(e)
            }
        }
    }

    pub(super) async fn share_remembered(&self) -> ToggleOutcome {
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
    pub(super) async fn kept_password(&self, hub: Option<&str>, code: &str) -> Option<String> {
        let inner = self.inner.clone();
        let (hub, code) = (hub.map(str::to_string), code.to_string());
        tokio::task::spawn_blocking(move || inner.secrets.get(hub.as_deref(), &code)).await.ok().flatten()
    }

    pub(super) async fn keep_password(&self, hub: Option<&str>, code: &str, password: &str) -> SecretStorage {
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
                        self.inner
                            .coalescer
                            .push(Transition::ShareReconnecting { attempt: *attempt, room: room.clone() });
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
                "Lost the connection to {} — trying again in {} s{}.",
                target.room_name.as_deref().unwrap_or(&target.code),
                retry_in_ms.div_ceil(1000),
                if *attempt > 1 { format!(" (attempt {attempt})") } else { String::new() },
            )),
            detail: Some(error.clone()),
            attempt: Some(*attempt),
            retry_in_ms: Some(*retry_in_ms),
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

/// "Ollama isn't running — start it, then try again", from what detection tried.
pub(super) fn not_running(detection: &provider::Detection) -> AppError {
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
