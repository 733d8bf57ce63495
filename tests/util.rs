//! Shared test helpers: a hub in this process on port 0, the real `gambi` binary on port 0, an SSE
//! reader, and small HTTP shortcuts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use gambi::hub::{Hub, HubConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const BIN: &str = env!("CARGO_BIN_EXE_gambi");

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// A hub running in this process on `127.0.0.1:0`; stopped when dropped.
pub struct TestHub {
    pub url: String,
    pub hub: Hub,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestHub {
    pub async fn start() -> Self {
        Self::with_config(HubConfig::default()).await
    }

    pub async fn with_config(config: HubConfig) -> Self {
        let hub = Hub::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hub.clone().serve(listener, shutdown.clone()));
        TestHub { url, hub, shutdown, task: Some(task) }
    }

    /// Stops the hub and waits until it has returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Creates a room through `/v1`; returns (code, hostToken).
    pub async fn room(&self, name: &str, password: Option<&str>) -> (String, String) {
        let mut body = json!({ "name": name });
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        let res = http().post(self.at("/v1/rooms")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 201);
        let v: Value = res.json().await.unwrap();
        (v["data"]["room"]["code"].as_str().unwrap().to_string(), v["data"]["hostToken"].as_str().unwrap().to_string())
    }

    /// Registers a participant through `/v1`; returns the whole response body.
    pub async fn participant(&self, code: &str, id: &str, password: Option<&str>) -> Value {
        let mut body = json!({ "nickname": id, "model": "llama3", "endpoint": "http://127.0.0.1:9" });
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        let res = http().put(self.at(&format!("/v1/rooms/{code}/participants/{id}"))).json(&body).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        res.json().await.unwrap()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A process's resident memory, from `/proc/<pid>/status`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The highest resident memory of process `pid`, sampled every 10 ms on a thread of its own from
/// `start` until `peak_kib` is read.
pub struct PeakRss {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    pub fn start(pid: u32) -> PeakRss {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let done = done.clone();
            move || {
                let mut peak = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(rss_kib(pid));
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                peak
            }
        });
        PeakRss { done, sampler }
    }

    /// Stops sampling; the peak seen, in KiB.
    pub fn peak_kib(self) -> u64 {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap_or(0)
    }
}

/// Sends a request and returns (status, headers, body as JSON or `Value::String` when not JSON).
/// The passwords and keys it sends, the tokens it receives and the answer go to the [`ledger`].
pub async fn call(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    if let Some(sent) = req.try_clone().and_then(|r| r.build().ok()) {
        ledger::note_request(&sent);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    ledger::said("response", &text);
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    ledger::note_tokens(&body);
    (status, headers, body)
}

/// What the suite sends as secrets and what the hub says (answers, events, its binary's logs),
/// written under the build's test directory. After the suite, `scripts/test` runs
/// `tests/secret_scan.py`, which fails if any secret shows up where it must not: no password or
/// room key in any answer, event or log line; no host or participant token in any event or log
/// line (a token is in exactly the answer that hands it out); no argon2 hash anywhere.
pub mod ledger {
    use std::io::Write as _;
    use std::path::PathBuf;

    use serde_json::Value;

    /// Where the records go; `scripts/test` empties it before the suite.
    pub fn dir() -> PathBuf {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("suite-ledger")
    }

    /// One JSON string per line; tests run on many threads, so lines are written whole, one
    /// writer at a time.
    fn append(file: &str, text: &str) {
        static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let line = format!("{}\n", Value::String(text.to_string()));
        let dir = dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{file}-{}.jsonl", std::process::id()));
        let _one = WRITING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// A password or room key the suite sent.
    pub fn password(secret: &str) {
        append("passwords", secret);
    }

    /// A host or participant token the hub handed out.
    pub fn token(secret: &str) {
        append("tokens", secret);
    }

    /// Something the hub said: an answer, an event, its log.
    pub fn said(kind: &str, text: &str) {
        append(kind, text);
    }

    /// Records the `password` fields of a JSON body and a bearer key that is not a token.
    pub fn note_request(request: &reqwest::Request) {
        if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
            if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) {
                if let Some(Value::String(p)) = fields.get("password") {
                    password(p);
                }
            }
        }
        let bearer = request.headers().get("authorization").and_then(|v| v.to_str().ok());
        if let Some(key) = bearer.and_then(|v| v.strip_prefix("Bearer ")) {
            if !key.starts_with("gh_") && !key.starts_with("gp_") {
                password(key);
            }
        }
    }

    /// Records the tokens an answer hands out.
    pub fn note_tokens(body: &Value) {
        for at in ["/data/hostToken", "/data/participantToken", "/hostToken", "/participantToken"] {
            if let Some(Value::String(t)) = body.pointer(at) {
                token(t);
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// The events of a whole SSE body, read at once (comments and blank blocks skipped).
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for block in text.replace("\r\n", "\n").split("\n\n") {
        let mut event = SseEvent { event: "message".into(), id: None, data: String::new() };
        let mut has_data = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event.event = v.trim().into();
            } else if let Some(v) = line.strip_prefix("data:") {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                has_data = true;
            }
        }
        if has_data {
            out.push(event);
        }
    }
    out
}

/// A real SSE client: reads the stream in a task and hands over parsed events (comments dropped).
pub struct Sse {
    rx: mpsc::UnboundedReceiver<SseEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Sse {
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Sse {
        Self::connect_as(url, last_event_id, None).await
    }

    /// Like [`Sse::connect`], with `key` (a protected room's password or host token).
    pub async fn connect_as(url: &str, last_event_id: Option<&str>, key: Option<&str>) -> Sse {
        let mut req = http_streaming().get(url).header("accept", "text/event-stream");
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "SSE connect to {url}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = res.bytes_stream();
            let mut buf = String::new();
            let mut current = SseEvent { event: "message".into(), id: None, data: String::new() };
            let mut has_data = false;
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(pos) = buf.find('\n') {
                    let line = buf[..pos].trim_end_matches('\r').to_string();
                    buf.drain(..=pos);
                    if line.is_empty() {
                        if has_data {
                            ledger::said("event", &current.data);
                            if tx.send(current.clone()).is_err() {
                                return;
                            }
                        }
                        current = SseEvent { event: "message".into(), id: None, data: String::new() };
                        has_data = false;
                    } else if line.starts_with(':') {
                        continue;
                    } else {
                        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => current.event = value.to_string(),
                            "id" => current.id = Some(value.to_string()),
                            "data" => {
                                if has_data {
                                    current.data.push('\n');
                                }
                                current.data.push_str(value);
                                has_data = true;
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        Sse { rx, task }
    }

    /// The next event; panics if none comes within [`PATIENCE`].
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(PATIENCE).await.expect("expected an SSE event")
    }

    /// The next event within `d`, or `None` (also when the stream ended).
    pub async fn next_within(&mut self, d: Duration) -> Option<SseEvent> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    /// True once the server has ended the stream (checked within `d`).
    pub async fn ended_within(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn http_streaming() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// The real `gambi` binary serving a hub on `127.0.0.1:0`. Its stderr (the log) is collected;
/// the process is killed when dropped.
pub struct BinHub {
    pub url: String,
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl BinHub {
    /// Starts `gambi hub serve --host 127.0.0.1 --port 0 <args>` and waits for its
    /// "listening on http://…" line.
    pub fn start(args: &[&str]) -> BinHub {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> BinHub {
        Self::start_under(&[], args, env)
    }

    /// Like [`BinHub::start_with_env`], run under `wrapper` (e.g. `prlimit --nofile=1024:1024 --`).
    pub fn start_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> BinHub {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(["hub", "serve", "--host", "127.0.0.1", "--port", "0"]).args(args);
        cmd.env("RUST_LOG", "debug").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "gambi hub serve exited before listening; log:\n{}", log.lock().unwrap());
            if let Some(pos) = line.find("http://") {
                break line[pos..].split_whitespace().next().unwrap().trim_end_matches('/').to_string();
            }
        };
        // Keep draining stdout so the hub never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        BinHub { url, child, log }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "hub did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        ledger::said("log", &self.log());
    }
}

/// Runs the real `gambi` with `args` (and `GAMBI_HUB` unset unless given) and returns
/// (exit code, stdout, stderr).
pub fn gambi(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("GAMBI_HUB").env("NO_COLOR", "1").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`gambi`] off the async threads, so a hub in this process keeps serving while the binary runs.
pub async fn gambi_async(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        gambi(&args, &env)
    })
    .await
    .unwrap()
}

/// One HTTP/1.1 request read off a raw socket (for model servers that misbehave on purpose): its
/// head, then as much body as `Content-Length` says, as text; what came after stays in `buf` for
/// the next request on the connection. `None` when the peer closed first.
pub async fn read_http_request(
    socket: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    buf.drain(..head_end + length);
    Some((head, body))
}
