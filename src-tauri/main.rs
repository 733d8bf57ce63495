//! The `gambi` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    gambi::cli::main()
}
