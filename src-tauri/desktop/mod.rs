//! The desktop app (feature `desktop`): a Tauri shell around [`core::AppCore`] — the window (the
//! web UI in `ui/`), the tray, notifications, single instance. Nothing outside this module depends
//! on Tauri.
//!
//! - [`core`]: the runtime (embedded hub, share, discovery, room events), no Tauri in it.
//! - [`commands`]: what the window calls.
//! - [`notify`]: which changes become notifications, and their coalescing.
//! - [`settings`]: the settings file and the room passwords.
//! - [`tray`]: the tray icon and menu.

pub mod commands;
pub mod core;
pub mod notify;
pub mod settings;
pub mod tray;

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;
use tauri::{AppHandle, Emitter, Manager, Runtime, WindowEvent};

use self::core::{AppCore, CoreOptions, ToggleOutcome, UiSink};
use self::notify::Notifier;

/// The window's label, as `capabilities/main.json` names it.
pub const MAIN_WINDOW: &str = "main";
/// How long Quit waits for the share to leave its room and the hub to stop.
const QUIT_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

/// Sends the core's events to the window and keeps the tray current.
pub struct AppUi<R: Runtime> {
    app: AppHandle<R>,
}

impl<R: Runtime> AppUi<R> {
    pub fn new(app: AppHandle<R>) -> Arc<AppUi<R>> {
        Arc::new(AppUi { app })
    }
}

impl<R: Runtime> UiSink for AppUi<R> {
    fn emit(&self, event: &str, payload: Value) {
        if let Err(e) = self.app.emit(event, payload) {
            tracing::debug!(error = %e, event, "event not delivered to the window");
        }
    }

    fn changed(&self) {
        tray::refresh(&self.app);
    }
}

/// Notifications through the OS (the notification plugin).
struct SystemNotifier<R: Runtime> {
    app: AppHandle<R>,
}

impl<R: Runtime> Notifier for SystemNotifier<R> {
    fn notify(&self, title: &str, body: &str) {
        use tauri_plugin_notification::NotificationExt as _;
        if let Err(e) = self.app.notification().builder().title(title).body(body).show() {
            tracing::info!(error = %e, "notification not shown");
        }
    }
}

/// The app's wiring, shared by the real app and the command tests: the core (made by `options`
/// once the app exists), the commands, and the window that hides instead of closing. `then` runs
/// at the end of the setup (the real app adds its tray there); the core starts when it says true.
pub fn builder<R: Runtime>(
    builder: tauri::Builder<R>,
    options: impl FnOnce(&AppHandle<R>) -> CoreOptions + Send + 'static,
    then: impl FnOnce(&AppHandle<R>, &AppCore) -> bool + Send + 'static,
) -> tauri::Builder<R> {
    builder
        .invoke_handler(tauri::generate_handler![
            commands::capabilities,
            commands::hub_info,
            commands::hub_health,
            commands::list_rooms,
            commands::create_room,
            commands::get_room,
            commands::invite_qr,
            commands::list_participants,
            commands::delete_room,
            commands::subscribe_room,
            commands::unsubscribe_room,
            commands::share_status,
            commands::local_models,
            commands::start_share,
            commands::share_now,
            commands::open_help,
            commands::stop_share,
            commands::discovered_hubs,
            commands::get_settings,
            commands::save_settings,
        ])
        .setup(move |app| {
            let options = options(app.handle());
            // The core spawns its tasks on Tauri's tokio runtime.
            let core = tauri::async_runtime::block_on(async move { AppCore::new(options) });
            app.manage(core.clone());
            if then(app.handle(), &core) {
                tauri::async_runtime::spawn(async move { core.start().await });
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            if let WindowEvent::Destroyed = event {
                // Closing the window destroys it and its webview: the app lives on in the tray,
                // with its hub, share and notifications, until Quit.
                tracing::info!(window = window.label(), "window closed");
                end_webkit_helpers(window.app_handle().clone());
            }
        })
}

/// WebKit's web process ends with the webview; its network process stays for the next one, some
/// 60 MB for as long as the app sits in the tray. It is stopped once the window is gone; WebKit
/// starts a new one with the next window — unless a new window came within that second, whose
/// page the network process now loads (stopped then, the window stayed blank).
fn end_webkit_helpers<R: Runtime>(app: AppHandle<R>) {
    #[cfg(not(target_os = "linux"))]
    drop(app);
    #[cfg(target_os = "linux")]
    std::thread::spawn(move || {
        // The webview's own teardown first.
        std::thread::sleep(std::time::Duration::from_secs(1));
        if app.get_webview_window(MAIN_WINDOW).is_some() {
            return;
        }
        for pid in child_processes_named("WebKitNetworkPr") {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
                    tracing::debug!(error = %e, "WebKit's network process not stopped");
                }
            }
        }
    });
}

/// This process's children whose name (`/proc/PID/comm`, 15 characters at most) is `name`.
#[cfg(target_os = "linux")]
fn child_processes_named(name: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "PID (comm) STATE PPID ...": the name may hold spaces, the part after the last ')' not.
            let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string));
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            parent.as_deref() == Some(me.as_str()) && comm.trim_end() == name
        })
        .collect()
}

/// What keeps the app running with no window: only Quit (an exit with a code) ends it.
pub fn on_run_event<R: Runtime>(_app: &AppHandle<R>, event: tauri::RunEvent) {
    if let tauri::RunEvent::ExitRequested { code: None, api, .. } = event {
        api.prevent_exit();
    }
}

/// The app's context: `tauri.conf.json`, the capabilities, and `ui/` embedded.
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!()
}

/// Shows, unminimizes and focuses the window, making it first if it is closed.
pub fn show_window<R: Runtime>(app: &AppHandle<R>) {
    open_window(app, None);
}

/// Shows the window on `route` (`/join`), or where `GAMBI_WINDOW_ROUTE` says, or home. The window
/// and its webview exist only while the window is open: the app in the tray holds no WebKit.
fn open_window<R: Runtime>(app: &AppHandle<R>, route: Option<&str>) {
    if let Some(window) = app.get_webview_window(MAIN_WINDOW) {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
        if let Some(route) = route {
            let _ = window.eval(format!("location.hash = '#{route}'"));
        }
        return;
    }
    let started = std::time::Instant::now();
    let route = route.map(str::to_string).or_else(window_route);
    let page = match &route {
        Some(route) => format!("index.html#{route}"),
        None => "index.html".to_string(),
    };
    let mut config = app
        .config()
        .app
        .windows
        .iter()
        .find(|w| w.label == MAIN_WINDOW)
        .cloned()
        .unwrap_or_else(|| tauri::utils::config::WindowConfig { label: MAIN_WINDOW.into(), ..Default::default() });
    config.url = tauri::WebviewUrl::App(page.into());
    config.visible = true;
    let built = tauri::WebviewWindowBuilder::from_config(app, &config).and_then(|b| b.build());
    match built {
        Ok(window) => {
            let _ = window.set_focus();
            tracing::info!(took = ?started.elapsed(), "window opened");
        }
        Err(e) => tracing::warn!(error = %e, "the window could not be opened"),
    }
}

/// Opens the window on the Share screen (nothing remembered to share yet).
fn show_share_screen<R: Runtime>(app: &AppHandle<R>) {
    open_window(app, Some("/join"));
}

/// Quit: leaves the room (if sharing), unregisters from the LAN, stops the hub, exits 0.
pub fn quit<R: Runtime>(app: &AppHandle<R>) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        if let Some(core) = app.try_state::<AppCore>() {
            let core: AppCore = (*core).clone();
            // Leaving a room whose hub is gone must not keep the app from quitting.
            if tokio::time::timeout(QUIT_WAIT, core.shutdown()).await.is_err() {
                tracing::warn!("quitting before the share and the hub finished stopping");
            }
        }
        tracing::info!("quit");
        app.exit(0);
    });
}

fn on_tray_action<R: Runtime>(app: &AppHandle<R>, action: &str) {
    match action {
        "open" => show_window(app),
        "quit" => quit(app),
        "share" => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                let Some(core) = app.try_state::<AppCore>().map(|c| (*c).clone()) else { return };
                // Off: the same one click as the window's button; on: stops.
                let first_room = core.settings().rooms.is_empty();
                let outcome =
                    if core.share_status().is_on() { core.toggle_share().await } else { core.share_now().await };
                match outcome {
                    ToggleOutcome::NeedsRoom => show_share_screen(&app),
                    // A room made for this share: show it, with its invite.
                    ToggleOutcome::Started(status) if first_room => {
                        if let Some(code) = status.code {
                            open_window(&app, Some(&format!("/room/{code}")));
                        }
                    }
                    // No model server: the Share screen says where to get one, and notices it.
                    ToggleOutcome::Failed(e) if e.code.as_deref() == Some(self::core::NO_MODEL_SERVER) => {
                        show_share_screen(&app)
                    }
                    ToggleOutcome::Failed(e) => {
                        use tauri_plugin_notification::NotificationExt as _;
                        let _ = app.notification().builder().title(&e.message).body(e.hint.unwrap_or_default()).show();
                    }
                    ToggleOutcome::Started(_) | ToggleOutcome::Stopped => {}
                }
                tray::refresh(&app);
            });
        }
        "copy-url" => {
            let Some(core) = app.try_state::<AppCore>() else { return };
            if let Some(url) = core.room_url() {
                use tauri_plugin_clipboard_manager::ClipboardExt as _;
                if let Err(e) = app.clipboard().write_text(url) {
                    tracing::warn!(error = %e, "room URL not copied");
                }
            }
        }
        _ => {}
    }
}

/// The screen `GAMBI_WINDOW_ROUTE` asks for, when it is a plain route (`/room/ABC123`).
fn window_route() -> Option<String> {
    let route = std::env::var("GAMBI_WINDOW_ROUTE").ok()?;
    let plain = route.starts_with('/') && route.chars().all(|c| c.is_ascii_alphanumeric() || "/-_".contains(c));
    plain.then_some(route)
}

/// Whether a graphical session is there to show a window in.
fn has_display() -> bool {
    if cfg!(target_os = "linux") {
        std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
            || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty())
    } else {
        true
    }
}

/// GTK opens OpenGL when it opens the display, to choose its visuals: on a machine without a GPU
/// driver that loads Mesa's software renderer (LLVM), some 50 MB, for an app that mostly sits in
/// the tray with no window at all. The window draws a few panels of text, which GTK and WebKit
/// draw as well without OpenGL. Someone who wants it back sets `GDK_GL` (e.g. `GDK_GL=always`) or
/// `WEBKIT_DISABLE_COMPOSITING_MODE=0`.
fn light_webkit() {
    if !cfg!(target_os = "linux") {
        return;
    }
    // Before GTK starts, and before any thread of the app reads the environment.
    if std::env::var_os("GDK_GL").is_none() {
        std::env::set_var("GDK_GL", "disable");
    }
    if std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_none() {
        std::env::set_var("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
    }
}

/// `gambi` with no command: runs the desktop app until Quit. `show` opens the window even when
/// the settings say to start in the tray; `quit` asks a running app to quit.
pub fn run(show: bool, quit_running: bool) -> ExitCode {
    if !has_display() {
        eprintln!("error: no display found — the Gambi desktop app needs a graphical session.");
        eprintln!("hint: to run the hub on this machine without one: gambi hub serve");
        return ExitCode::from(2);
    }
    // The embedded hub holds one descriptor per connection: start from the most allowed.
    let _ = crate::hub::quota::raise_fd_limit();
    light_webkit();
    let app = builder(
        tauri::Builder::default(),
        |app| {
            let config_dir = app.path().app_config_dir().unwrap_or_else(|_| std::env::temp_dir().join("gambi-desktop"));
            let mut options =
                CoreOptions::new(config_dir, Arc::new(SystemNotifier { app: app.clone() }), AppUi::new(app.clone()));
            // Tests of the app itself run without touching the LAN.
            options.discovery = std::env::var_os("GAMBI_NO_DISCOVERY").is_none();
            options
        },
        move |handle, core| {
            if quit_running {
                // No other instance was running (it would have taken this launch): nothing to quit.
                handle.exit(0);
                return false;
            }
            match tray::create(handle, on_tray_action) {
                Ok(tray) => {
                    handle.manage(tray);
                    tray::refresh(handle);
                }
                // A desktop without a tray still has the window.
                Err(e) => tracing::warn!(error = %e, "no tray icon"),
            }
            if show || core.first_launch() {
                show_window(handle);
            }
            true
        },
    )
    .plugin(tauri_plugin_single_instance::init(|app, argv, _cwd| {
        // A second launch: do what it asked in the running app, then it exits.
        if argv.iter().any(|a| a == "--quit") {
            quit(app);
        } else {
            show_window(app);
        }
    }))
    .plugin(tauri_plugin_notification::init())
    .plugin(tauri_plugin_clipboard_manager::init())
    .build(context());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: the desktop app could not start: {e}");
            eprintln!("hint: to run the hub without it: gambi hub serve");
            return ExitCode::from(1);
        }
    };
    let code = app.run_return(on_run_event);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
