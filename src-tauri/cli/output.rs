//! Everything the CLI prints to stdout goes through here (the crate denies `print_stdout`
//! elsewhere), so output stays one consistent, pipe-safe shape.

use std::io::Write;

/// Prints one line to stdout and flushes it (scripts and tests read it as it comes). A closed pipe
/// is not an error worth dying for.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
