//! Build script: the Tauri codegen runs only for the desktop shell, so the headless hub and CLI
//! build with no GUI toolchain at all. The hub embeds `ui/`, so a change there rebuilds it.
fn main() {
    println!("cargo:rerun-if-changed=src-tauri/build.rs");
    println!("cargo:rerun-if-changed=ui");
}
