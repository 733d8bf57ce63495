//! The `gambi` binary: everything lives in the library.

/// mimalloc instead of the system's malloc: a hub allocates and frees a few hundred small blocks
/// per request on several threads, where glibc's malloc spent a tenth of the hub's CPU (and kept
/// what the largest bodies had needed; mimalloc gives freed memory back by itself).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Where transparent huge pages are always on, every 2 MiB region mimalloc touches would be
    // resident whole: an idle hub started at 20 MiB instead of 11, and a busy one held twice what
    // glibc's heap did. Small pages keep its memory what it uses.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    gambi::cli::main()
}
