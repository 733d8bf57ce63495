//! The `gambi` binary: everything lives in the library.

/// mimalloc instead of the system's malloc: a hub allocates and frees a few dozen small blocks per
/// request on several threads, where glibc's malloc spent a tenth of the hub's CPU (and its heap
/// grew with the largest bodies it ever held; mimalloc returns freed memory to the system).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gambi::cli::main()
}
