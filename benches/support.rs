//! Shared by the benchmarks: the real `gambi hub serve` as a child process on a free port.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

/// Starts `gambi hub serve --host 127.0.0.1 --port 0 <args>` with the default log level (whatever
/// the caller's shell says) and returns it with the URL its first stdout line announces. Its stdout
/// keeps being drained so the hub never blocks on a full pipe.
pub fn spawn_hub(bin: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(["hub", "serve", "--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gambi hub serve starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    let url = loop {
        line.clear();
        let read = stdout.read_line(&mut line).expect("hub stdout readable");
        assert!(read > 0, "gambi hub serve exited before listening");
        if let Some(pos) = line.find("http://") {
            let url = line[pos..].split_whitespace().next().unwrap_or_default();
            break url.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    (child, url)
}
