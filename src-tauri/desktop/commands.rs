//! The commands the window calls (the contract is at the top of `ui/backend.js`). Each is a thin
//! call into [`AppCore`]; failures are [`AppError`]s, a sentence and what to do about it.

use serde_json::{json, Value};
use tauri::State;

use super::core::{AppCore, AppError, HubInfo, ShareStatus, ToggleOutcome};
use super::settings::Settings;
use crate::protocol::{CreatedRoom, Health, RoomSummary};

type Answer<T> = Result<T, AppError>;

#[tauri::command]
pub fn capabilities(core: State<'_, AppCore>) -> Value {
    json!({ "share": true, "discovery": core.discovery_enabled(), "settings": true })
}

#[tauri::command]
pub fn hub_info(core: State<'_, AppCore>) -> HubInfo {
    core.hub_info()
}

#[tauri::command]
pub async fn hub_health(core: State<'_, AppCore>) -> Answer<Health> {
    core.health().await
}

#[tauri::command]
pub async fn list_rooms(core: State<'_, AppCore>) -> Answer<Vec<RoomSummary>> {
    core.list_rooms().await
}

#[tauri::command]
pub async fn create_room(core: State<'_, AppCore>, name: String, password: Option<String>) -> Answer<CreatedRoom> {
    core.create_room(&name, password.as_deref()).await
}

#[tauri::command]
pub async fn get_room(core: State<'_, AppCore>, code: String, password: Option<String>) -> Answer<Value> {
    core.room_details(&code, password.as_deref()).await
}

#[tauri::command]
pub async fn invite_qr(core: State<'_, AppCore>, code: String) -> Answer<String> {
    core.invite_qr(&code).await
}

#[tauri::command]
pub async fn list_participants(
    core: State<'_, AppCore>,
    code: String,
    password: Option<String>,
) -> Answer<Vec<crate::protocol::stats::ParticipantDetails>> {
    core.list_participant_details(&code, password.as_deref()).await
}

/// `host_token` may be absent for a room this app made on its own hub: the app keeps its token.
#[tauri::command]
pub async fn delete_room(core: State<'_, AppCore>, code: String, host_token: Option<String>) -> Answer<Value> {
    core.delete_room(&code, host_token.as_deref()).await
}

#[tauri::command]
pub async fn subscribe_room(core: State<'_, AppCore>, code: String, password: Option<String>) -> Answer<()> {
    core.subscribe_room(&code, password.as_deref()).await
}

#[tauri::command]
pub fn unsubscribe_room(core: State<'_, AppCore>, code: String) {
    core.unsubscribe_room(&code)
}

#[tauri::command]
pub fn share_status(core: State<'_, AppCore>) -> ShareStatus {
    core.share_status()
}

#[tauri::command]
pub async fn local_models(core: State<'_, AppCore>) -> Answer<Value> {
    core.local_models().await
}

#[tauri::command]
pub async fn start_share(
    core: State<'_, AppCore>,
    hub: Option<String>,
    code: String,
    password: Option<String>,
    nickname: String,
    model: Option<String>,
) -> Answer<ShareStatus> {
    core.start_share(hub.as_deref(), &code, password.as_deref(), &nickname, model.as_deref().unwrap_or_default()).await
}

/// "Share my Ollama" in one click (see [`AppCore::share_now`]): `{"shared": ShareStatus}`, or
/// `{"pick": true}` when rooms found on the LAN are to be offered first; an error says why not.
#[tauri::command]
pub async fn share_now(core: State<'_, AppCore>, new_room: Option<bool>) -> Answer<Value> {
    let outcome = if new_room == Some(true) { core.share_in_new_room().await } else { core.share_now().await };
    match outcome {
        ToggleOutcome::Started(status) => Ok(json!({ "shared": status })),
        ToggleOutcome::NeedsRoom => Ok(json!({ "pick": true })),
        ToggleOutcome::Stopped => Ok(json!({ "shared": core.share_status() })),
        ToggleOutcome::Failed(e) => Err(e),
    }
}

/// Opens where to get a model server in the system's browser: only these two pages, so the window
/// cannot open anything else.
#[tauri::command]
pub fn open_help(page: String) -> Answer<()> {
    let url = match page.as_str() {
        "ollama" => "https://ollama.com/download",
        "lmstudio" => "https://lmstudio.ai",
        _ => return Err(AppError::new("There is no such page to open.")),
    };
    let mut command = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(target_os = "windows") {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    command.arg(url).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    match command.spawn() {
        // Reaped off the window's thread.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
            Ok(())
        }
        Err(_) => Err(AppError::new(format!("No browser could be opened: the page is {url}."))),
    }
}

#[tauri::command]
pub async fn stop_share(core: State<'_, AppCore>) -> Answer<ShareStatus> {
    Ok(core.stop_share().await)
}

#[tauri::command]
pub fn discovered_hubs(core: State<'_, AppCore>) -> Vec<Value> {
    core.discovered_hubs()
}

#[tauri::command]
pub fn get_settings(core: State<'_, AppCore>) -> Settings {
    core.settings()
}

/// Takes the settings as plain JSON so a malformed field is answered with a sentence, not with
/// the IPC layer's own wording.
#[tauri::command]
pub async fn save_settings(core: State<'_, AppCore>, settings: Value) -> Answer<Settings> {
    let settings: Settings = serde_json::from_value(settings).map_err(|e| {
        AppError::new("Those settings aren't valid.").hint(format!("{e}. Reopen Settings and try again."))
    })?;
    core.save_settings(settings).await
}
