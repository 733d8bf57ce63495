//! The tray icon and its menu: a status line (hub state and address, rooms, what is shared),
//! "Share my Ollama", "Open Gambi", "Copy room URL" and "Quit". The icon shows a green dot while a
//! share is live (Linux trays show no tooltips); the tooltip says the same where there is one.

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime};

use super::core::AppCore;

const IDLE_ICON: &[u8] = include_bytes!("../../icons/tray.png");
const LIVE_ICON: &[u8] = include_bytes!("../../icons/tray-live.png");

/// The menu items that change, kept to update them.
pub struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    status: MenuItem<R>,
    share: CheckMenuItem<R>,
    copy: MenuItem<R>,
    live: std::sync::Mutex<Option<bool>>,
}

/// Builds the tray; the menu's actions are `on_action`'s to carry out.
pub fn create<R: Runtime>(
    app: &AppHandle<R>,
    on_action: impl Fn(&AppHandle<R>, &str) + Send + Sync + 'static,
) -> tauri::Result<Tray<R>> {
    let status = MenuItem::with_id(app, "status", "Gambi is starting…", false, None::<&str>)?;
    let share = CheckMenuItem::with_id(app, "share", "Share my Ollama", true, false, None::<&str>)?;
    let open = MenuItem::with_id(app, "open", "Open Gambi", true, None::<&str>)?;
    let copy = MenuItem::with_id(app, "copy-url", "Copy room URL", false, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[
            &status,
            &PredefinedMenuItem::separator(app)?,
            &share,
            &open,
            &copy,
            &PredefinedMenuItem::separator(app)?,
            &quit,
        ],
    )?;
    let icon = TrayIconBuilder::with_id("gambi")
        .icon(Image::from_bytes(IDLE_ICON)?)
        .tooltip("Gambi")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(move |app, event| on_action(app, event.id().as_ref()))
        .build(app)?;
    Ok(Tray { icon, status, share, copy, live: std::sync::Mutex::new(None) })
}

impl<R: Runtime> Tray<R> {
    /// Shows what the core says now.
    pub fn refresh(&self, core: &AppCore) {
        let (line, live, on) = status_line(core);
        let _ = self.status.set_text(&line);
        let _ = self.share.set_checked(on);
        let _ = self.copy.set_enabled(core.room_url().is_some());
        let _ = self.icon.set_tooltip(Some(format!("Gambi — {line}")));
        let mut shown = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *shown != Some(live) {
            if let Ok(image) = Image::from_bytes(if live { LIVE_ICON } else { IDLE_ICON }) {
                let _ = self.icon.set_icon(Some(image));
            }
            *shown = Some(live);
        }
    }
}

/// Refreshes the tray of `app`, if it has one.
pub fn refresh<R: Runtime>(app: &AppHandle<R>) {
    if let (Some(tray), Some(core)) = (app.try_state::<Tray<R>>(), app.try_state::<AppCore>()) {
        tray.refresh(&core);
    }
}

/// "Hub on 192.168.1.20:3000 · 2 rooms · sharing llama3 in K7QX2M"; whether the share is live;
/// whether it is on at all (live, starting or reconnecting).
pub fn status_line(core: &AppCore) -> (String, bool, bool) {
    let info = core.hub_info();
    let hub = match (info.state, &info.url) {
        ("off", _) if info.error.is_some() => "Hub stopped (port taken)".to_string(),
        ("off", _) => "Hub off".to_string(),
        (_, Some(url)) => {
            let rooms = core.room_count().unwrap_or(0);
            let address = url.trim_start_matches("http://");
            format!("Hub on {address} · {rooms} room{}", if rooms == 1 { "" } else { "s" })
        }
        _ => "Hub starting".to_string(),
    };
    let share = core.share_status();
    let what = match share.state {
        "live" => format!(
            "sharing {} in {}",
            share.model.as_deref().unwrap_or("a model"),
            share.code.as_deref().unwrap_or("a room")
        ),
        "starting" => "starting the share".into(),
        "paused" => "share paused (model server stopped)".into(),
        "reconnecting" => "share reconnecting".into(),
        "error" => "share stopped".into(),
        _ => "not sharing".into(),
    };
    (format!("{hub} · {what}"), share.state == "live", share.is_on())
}
