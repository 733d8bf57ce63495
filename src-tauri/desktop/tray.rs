//! The tray icon and its menu: a status line (hub state and address, rooms, what is shared),
//! "Share my Ollama", "Open Gambi", "Copy room URL" and "Quit". The icon shows a green dot while a
//! share is live (Linux trays show no tooltips); the tooltip says the same where there is one.
//!
//! One reading of the share state draws the menu and the icon, one refresh at a time; each drawing
//! that changes something is logged (`gambi::tray`, "tray drawn": the icon, the check mark and the
//! status line), which is how the tests see what the tray shows besides its pixels.
//!
//! The icons are the window's logo (`ui/icon.svg`) drawn at 64 px; the live one adds the dot of
//! `icons/tray-live.svg`.

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
    painter: Painter,
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
        // Linux trays read the icon from a file the tray writes at each change: a directory of
        // this process's own, so another Gambi (another user's, a test's) never rewrites it.
        .temp_dir_path(icon_dir())
        .icon(Image::from_bytes(IDLE_ICON)?)
        .tooltip("Gambi")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(move |app, event| on_action(app, event.id().as_ref()))
        .build(app)?;
    Ok(Tray { icon, status, share, copy, painter: Painter::default() })
}

/// Where the tray writes its icon files: the session's runtime directory (or the temporary one),
/// in a directory named after this process.
fn icon_dir() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("gambi-tray-{}", std::process::id()))
}

impl<R: Runtime> Tray<R> {
    /// Shows what the core says now: the menu and the icon from one reading of the share state,
    /// one refresh at a time (see [`Painter::paint`]).
    pub fn refresh(&self, core: &AppCore) {
        self.painter.paint(self, || {
            let (line, live, on) = status_line(core);
            Drawing { line, live, on, copy: core.room_url().is_some() }
        });
    }
}

impl<R: Runtime> Surface for Tray<R> {
    fn status(&self, line: &str) {
        let _ = self.status.set_text(line);
        let _ = self.icon.set_tooltip(Some(format!("Gambi — {line}")));
    }

    fn checked(&self, on: bool) {
        let _ = self.share.set_checked(on);
    }

    fn copy_enabled(&self, enabled: bool) {
        let _ = self.copy.set_enabled(enabled);
    }

    fn live_icon(&self, live: bool) {
        if let Ok(image) = Image::from_bytes(if live { LIVE_ICON } else { IDLE_ICON }) {
            let _ = self.icon.set_icon(Some(image));
        }
    }
}

/// What the tray shows, read from the core at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drawing {
    pub line: String,
    /// The icon with the green dot: the share is live.
    pub live: bool,
    /// The check mark on "Share my Ollama": the share is on (live, starting, reconnecting).
    pub on: bool,
    /// "Copy room URL" can be used.
    pub copy: bool,
}

/// What a drawing is put on: the tray's icon and menu items (or a test's recorder).
pub trait Surface {
    fn status(&self, line: &str);
    fn checked(&self, on: bool);
    fn copy_enabled(&self, enabled: bool);
    fn live_icon(&self, live: bool);
}

/// Draws the tray one refresh at a time, remembering what it drew last.
#[derive(Default)]
pub struct Painter {
    /// What was drawn last: (live icon, check mark, status line).
    shown: std::sync::Mutex<Option<(bool, bool, String)>>,
}

impl Painter {
    /// Draws what `read` says, read under the painter's lock. Refreshes come from several tasks
    /// at once (the share's states, the hub's, the menu's own actions); reading inside the lock
    /// means the last to draw shows the newest state, and a reading taken before a newer one is
    /// never drawn after it (the icon losing its dot while the menu said "Sharing").
    pub fn paint(&self, surface: &impl Surface, read: impl FnOnce() -> Drawing) {
        let mut shown = self.shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Drawing { line, live, on, copy } = read();
        surface.status(&line);
        // Set every time: clicking a check item toggles its mark by itself, before the share
        // has changed (or when it does not).
        surface.checked(on);
        surface.copy_enabled(copy);
        let before = shown.as_ref().map(|(live, _, _)| *live);
        if before != Some(live) {
            surface.live_icon(live);
        }
        let now = (live, on, line);
        if shown.as_ref() != Some(&now) {
            tracing::info!(
                target: "gambi::tray",
                icon = if now.0 { "live" } else { "idle" },
                checked = now.1,
                status = ?now.2,
                "tray drawn"
            );
            *shown = Some(now);
        }
    }
}

/// Refreshes the tray of `app`, if it has one.
pub fn refresh<R: Runtime>(app: &AppHandle<R>) {
    if let (Some(tray), Some(core)) = (app.try_state::<Tray<R>>(), app.try_state::<AppCore>()) {
        tray.refresh(&core);
    }
}

/// "Sharing llama3 in Lab GPUs · 2 rooms on 192.168.1.20:3000": what this machine shares (the
/// room by its name), then this machine's hub, short enough for a menu; whether the share is live;
/// whether it is on at all (live, starting or reconnecting).
pub fn status_line(core: &AppCore) -> (String, bool, bool) {
    let info = core.hub_info();
    let hub = match (info.state, &info.url) {
        ("off", _) if info.error.is_some() => "Gambi stopped here (its port is taken)".to_string(),
        ("off", _) => "No rooms served here".to_string(),
        (_, Some(url)) => {
            let rooms = core.room_count().unwrap_or(0);
            let address = url.trim_start_matches("http://");
            format!("{rooms} room{} on {address}", if rooms == 1 { "" } else { "s" })
        }
        _ => "Starting".to_string(),
    };
    let share = core.share_status();
    let room = share.room_name.clone().or(share.code.clone()).unwrap_or_else(|| "a room".into());
    let what = match share.state {
        "live" => format!("Sharing {} in {room}", share.model.as_deref().unwrap_or("a model")),
        "starting" => format!("Starting to share in {room}"),
        "paused" => format!("Paused in {room} — the model server stopped"),
        "reconnecting" => format!("Reconnecting to {room}"),
        "error" => "Share stopped".into(),
        _ => "Not sharing".into(),
    };
    (format!("{what} · {hub}"), share.state == "live", share.is_on())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    /// Records what is drawn; the first status line it is given holds the drawing thread a while,
    /// as a slow menu update on a busy desktop does.
    #[derive(Default)]
    struct Recorder {
        icon: Mutex<Vec<bool>>,
        statuses: Mutex<Vec<String>>,
        stall_first: Mutex<Option<mpsc::Sender<()>>>,
    }

    impl Surface for Recorder {
        fn status(&self, line: &str) {
            self.statuses.lock().unwrap().push(line.to_string());
            let stall = self.stall_first.lock().unwrap().take();
            if let Some(started) = stall {
                let _ = started.send(());
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        fn checked(&self, _: bool) {}
        fn copy_enabled(&self, _: bool) {}
        fn live_icon(&self, live: bool) {
            self.icon.lock().unwrap().push(live);
        }
    }

    fn drawing(live: bool) -> Drawing {
        let line = if live { "Sharing m in Lab" } else { "Not sharing" };
        Drawing { line: line.into(), live, on: live, copy: live }
    }

    /// The race seen in the tray: a refresh that read "not sharing" was still drawing when the
    /// share went live and a second refresh drew the dot; the first then finished and drew the
    /// icon without it. Every refresh now reads inside the lock, so the newest state is drawn last.
    #[test]
    fn a_refresh_that_read_an_older_state_never_draws_over_a_newer_one() {
        let painter = Arc::new(Painter::default());
        let surface = Arc::new(Recorder::default());
        let sharing = Arc::new(AtomicBool::new(false));
        let (started, first_is_drawing) = mpsc::channel();
        *surface.stall_first.lock().unwrap() = Some(started);

        let first = {
            let (painter, surface, sharing) = (painter.clone(), surface.clone(), sharing.clone());
            std::thread::spawn(move || painter.paint(&*surface, || drawing(sharing.load(Ordering::SeqCst))))
        };
        first_is_drawing.recv_timeout(Duration::from_secs(5)).unwrap();
        // The share goes live while the first refresh is still drawing, and says so.
        sharing.store(true, Ordering::SeqCst);
        let second = {
            let (painter, surface, sharing) = (painter.clone(), surface.clone(), sharing.clone());
            std::thread::spawn(move || painter.paint(&*surface, || drawing(sharing.load(Ordering::SeqCst))))
        };
        first.join().unwrap();
        second.join().unwrap();

        let icons = surface.icon.lock().unwrap().clone();
        assert_eq!(icons.last(), Some(&true), "the share is live, so the icon has its dot: drawn {icons:?}");
        let statuses = surface.statuses.lock().unwrap().clone();
        assert_eq!(statuses.last().map(String::as_str), Some("Sharing m in Lab"), "{statuses:?}");
        // Drawn again only when something changed: the same state twice draws the icon once.
        painter.paint(&*surface, || drawing(true));
        assert_eq!(surface.icon.lock().unwrap().len(), icons.len(), "an unchanged icon is not rewritten");
    }
}
