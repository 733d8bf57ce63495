//! Build script: the Tauri codegen runs only for the desktop shell, so the headless hub and CLI
//! build with no GUI toolchain at all.
fn main() {
    println!("cargo:rerun-if-changed=src-tauri/build.rs");
}
