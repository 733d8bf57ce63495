//! The `gambi` binary: everything lives in the library.

/// mimalloc instead of the system's malloc in the headless build (`--no-default-features`, the
/// hub a server runs): a hub allocates and frees a few hundred small blocks per request on several
/// threads, where glibc's malloc spent a tenth of the hub's CPU (and kept what the largest bodies
/// had needed; mimalloc gives freed memory back by itself).
///
/// The desktop build keeps the system's allocator. GTK and WebKit allocate with it whatever Rust
/// uses, so a second allocator's heaps are memory on top, held all day by an app that sits in the
/// tray: 5 MiB more in the tray-only app, measured. Its hub serves a few people's requests, where
/// a tenth of a microsecond-scale cost does not show beside seconds of inference. It fixes glibc's
/// mmap threshold instead (`cli::serve::return_large_buffers_to_the_system`).
#[cfg(not(feature = "desktop"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Where transparent huge pages are always on, every 2 MiB region mimalloc touches would be
    // resident whole: an idle hub started at 20 MiB instead of 11, and a busy one held twice what
    // glibc's heap did. Small pages keep its memory what it uses.
    #[cfg(all(target_os = "linux", not(feature = "desktop")))]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    gambi::cli::main()
}
