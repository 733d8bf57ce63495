//! Build script: the Tauri codegen runs only for the desktop shell, so the headless hub and CLI
//! build with no GUI toolchain at all. The hub embeds `ui/`, so a change there rebuilds it.

/// Every command the desktop shell answers; `capabilities/main.json` allows exactly these for the
/// main window (the list in `ui/backend.js` is the contract).
#[cfg(feature = "desktop")]
const COMMANDS: &[&str] = &[
    "capabilities",
    "hub_info",
    "hub_health",
    "list_rooms",
    "create_room",
    "get_room",
    "invite_qr",
    "list_participants",
    "delete_room",
    "subscribe_room",
    "unsubscribe_room",
    "share_status",
    "local_models",
    "start_share",
    "share_now",
    "open_help",
    "stop_share",
    "discovered_hubs",
    "get_settings",
    "save_settings",
];

fn main() {
    println!("cargo:rerun-if-changed=src-tauri/build.rs");
    println!("cargo:rerun-if-changed=ui");
    #[cfg(feature = "desktop")]
    {
        println!("cargo:rerun-if-changed=capabilities");
        let attributes =
            tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
        if let Err(error) = tauri_build::try_build(attributes) {
            // A build script reports through cargo; there is no other channel.
            #[allow(clippy::print_stdout)]
            {
                println!("cargo:warning=tauri-build failed: {error:#}");
            }
            std::process::exit(1);
        }
    }
}
