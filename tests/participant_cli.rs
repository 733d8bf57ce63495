//! Acceptance 9, the second half of 4, and 6, with the real `gambi` binary: `participant join` in
//! both forms (live, serving through the room's OpenAI URL, leaving cleanly on SIGINT and SIGTERM),
//! its refusals and their exit codes, the `participant heartbeat|leave` one-shots, `events watch`
//! printing events as they happen; a participant process killed mid-stream (its client gets an SSE
//! error within 1 s, the other stream is untouched, it goes offline); and a supervised participant
//! healing a hub killed and restarted with `--state` (back within 15 s, same id, no duplicate).
//!
//! Each `gambi` process is a [`Proc`]: its stdout and stderr are read line by line on threads and
//! handed over as they come, and it is killed when the guard drops, so a failing test never leaves
//! a process behind.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gambi::hub::inference::sse_parse::SseParser;
use gambi::hub::HubConfig;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::fake_provider::{echo, FakeOptions, FakeProvider};
use crate::util::{self, call, http, read_http_request, Sse, TestHub, BIN};

/// Generous: a debug build on a slow two-core machine starts a process, probes a provider and
/// registers in well under this, but not always in one second.
pub const STARTUP: Duration = Duration::from_secs(30);
/// How long an event or a line that should come at once may take.
pub const SOON: Duration = Duration::from_secs(10);

/// A running `gambi` process; killed (and reaped) when dropped.
pub struct Proc {
    pub child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Everything it printed so far, for failure messages.
    log: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("GAMBI_HUB")
            .env_remove("GAMBI_ROOM_PASSWORD")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = pump(child.stdout.take().unwrap(), "out", log.clone());
        let stderr = pump(child.stderr.take().unwrap(), "err", log.clone());
        Proc { child, stdout, stderr, log }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The next stdout line that satisfies `want`, skipping others; panics after `within`.
    pub async fn line(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> String {
        Self::wait(&mut self.stdout, within, want)
            .await
            .unwrap_or_else(|| panic!("no such stdout line; log:\n{}", self.log()))
    }

    /// The next stdout line, or `None` if none comes within `within`.
    pub async fn next_line(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.stdout.recv()).await.ok().flatten()
    }

    pub async fn stderr_line(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> String {
        Self::wait(&mut self.stderr, within, want)
            .await
            .unwrap_or_else(|| panic!("no such stderr line; log:\n{}", self.log()))
    }

    async fn wait(
        rx: &mut mpsc::UnboundedReceiver<String>,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) if want(&line) => return Some(line),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next stdout line as JSON whose `state` is `state` (ndjson output of `join`).
    pub async fn state(&mut self, state: &str, within: Duration) -> Value {
        let line = self.line(within, |l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["state"] == state)).await;
        serde_json::from_str(&line).unwrap()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.pid()]).status().unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to end; panics after `within`.
    pub async fn exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process still running; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a pipe line by line on a thread: each line goes to the channel and the shared log.
fn pump(
    pipe: impl Read + Send + 'static,
    tag: &'static str,
    log: Arc<Mutex<String>>,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let text = line.trim_end_matches(['\n', '\r']).to_string();
            log.lock().unwrap().push_str(&format!("[{tag}] {text}\n"));
            let _ = tx.send(text);
            line.clear();
        }
    });
    rx
}

/// Runs the binary to completion off the async threads (the in-process hub keeps serving).
async fn run(args: &[&str]) -> (i32, String, String) {
    util::gambi_async(args, &[]).await
}

/// `participant join` arguments for a room on `hub`, sharing `provider`'s llama3.
pub fn join_args<'a>(hub: &'a str, code: &'a str, provider: &'a FakeProvider, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["participant", "join", "--room", code, "--model", "llama3", "--endpoint", &provider.url];
    args.extend_from_slice(extra);
    args.extend(["--hub", hub]);
    args
}

pub async fn participant(hub: &str, code: &str, id: &str) -> (u16, Value) {
    let (status, _, body) = call(http().get(format!("{hub}/v1/rooms/{code}/participants/{id}"))).await;
    (status, body["data"].clone())
}

pub async fn participants(hub: &str, code: &str) -> Vec<Value> {
    participants_as(hub, code, None).await
}

/// The participants of a room, with a protected room's password or host token.
async fn participants_as(hub: &str, code: &str, key: Option<&str>) -> Vec<Value> {
    let mut req = http().get(format!("{hub}/v1/rooms/{code}/participants"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let (status, _, body) = call(req).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Polls `check` every 20 ms until it holds; panics after `within`, saying what was waited for.
pub async fn eventually<F, Fut>(within: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn connected(hub: &str, code: &str, id: &str) -> bool {
    let (status, p) = participant(hub, code, id).await;
    status == 200 && p["connection"]["connected"] == true && p["status"] != "offline"
}

/// A non-streamed chat completion through the room's OpenAI URL; returns the answer's text.
async fn chat(base: &str, model: &str, text: &str) -> String {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    let (status, _, v) = call(http().post(format!("{base}/chat/completions")).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    v["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

/// Reads the room's event stream until `kind` about `id` (or panics after `within`).
pub async fn expect_event(sse: &mut Sse, kind: &str, id: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = sse.next_within(left).await.unwrap_or_else(|| panic!("no {kind} event for {id}"));
        if event.event == kind {
            let v = event.json();
            let about = v["data"]["participantId"].as_str().or(v["data"]["id"].as_str()).unwrap_or("");
            if about == id {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn join_long_form_serves_the_room_and_leaves_on_sigint() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("cli join", None).await;
    let args = join_args(
        &hub.url,
        &code,
        &provider,
        &["--participant-id", "alice-1", "--nickname", "Alice", "--format", "text"],
    );
    let mut join = Proc::spawn(&args);

    let base = format!("{}/rooms/{code}/v1", hub.url);
    let sharing = join.line(STARTUP, |l| l.starts_with("Sharing ")).await;
    assert_eq!(sharing, format!("Sharing llama3 in room {code} as alice-1."));
    let url_line = join.line(SOON, |l| l.starts_with("OpenAI base URL: ")).await;
    assert_eq!(url_line, format!("OpenAI base URL: {base}"));
    eventually(SOON, "the participant is connected on the hub", || connected(&hub.url, &code, "alice-1")).await;
    let (_, p) = participant(&hub.url, &code, "alice-1").await;
    assert_eq!(p["nickname"], "Alice");
    assert_eq!(p["connection"]["kind"], "tunnel");

    // A client that only knows the room's OpenAI URL reaches this machine's model server.
    assert_eq!(chat(&base, "*", "hello from the room").await, echo("hello from the room"));
    let served = provider.last_body("/v1/chat/completions").unwrap();
    assert_eq!(served["messages"][0]["content"], "hello from the room", "{served}");

    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    assert_eq!(events.next().await.event, "connected");
    join.signal("INT");
    let status = join.exit(SOON).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", join.log());
    expect_event(&mut events, "participant.left", "alice-1", SOON).await;
    assert_eq!(participant(&hub.url, &code, "alice-1").await.0, 404);
    assert!(join.log().contains(&format!("Stopped sharing; left room {code}.")), "{}", join.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn join_short_form_works_the_same_and_leaves_on_sigterm() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("short join", None).await;
    let lower = code.to_ascii_lowercase();
    let mut join = Proc::spawn(&[
        "join",
        &lower,
        "--nickname",
        "Bob's Laptop",
        "--model",
        "llama3",
        "--endpoint",
        &provider.url,
        "--hub",
        &hub.url,
        "--format",
        "text",
    ]);
    let sharing = join.line(STARTUP, |l| l.starts_with("Sharing ")).await;
    // The id is made from the nickname, with a random suffix: `bob-s-laptop-xxxxxx`.
    let id =
        sharing.strip_prefix(&format!("Sharing llama3 in room {code} as ")).unwrap().trim_end_matches('.').to_string();
    assert!(id.starts_with("bob-s-laptop-") && id.len() == "bob-s-laptop-".len() + 6, "{id}");
    join.line(SOON, |l| l == format!("OpenAI base URL: {}/rooms/{code}/v1", hub.url)).await;
    eventually(SOON, "the participant is connected", || connected(&hub.url, &code, &id)).await;
    assert_eq!(participant(&hub.url, &code, &id).await.1["nickname"], "Bob's Laptop");
    assert_eq!(chat(&format!("{}/rooms/{code}/v1", hub.url), &id, "by id").await, echo("by id"));

    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    join.signal("TERM");
    assert_eq!(join.exit(SOON).await.code(), Some(0), "log:\n{}", join.log());
    expect_event(&mut events, "participant.left", &id, SOON).await;
    assert!(participants(&hub.url, &code).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn join_refusals_exit_with_the_products_codes() {
    let hub = TestHub::start().await;
    let provider =
        FakeProvider::start(FakeOptions { models: vec!["llama3".into(), "qwen2".into()], ..Default::default() }).await;
    let (code, host) = hub.room("locked", Some("secret")).await;

    // Wrong password (and no password): 401 from the hub → exit 3, supervised or not.
    for extra in [&["--password", "wrong"][..], &[], &["--password", "wrong", "--no-reconnect"]] {
        let mut args = join_args(&hub.url, &code, &provider, extra);
        args.extend(["--participant-id", "p1"]);
        let (exit, stdout, stderr) = run(&args).await;
        assert_eq!(exit, 3, "{extra:?}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(stderr.contains("error: Wrong password for this room."), "{stderr}");
        assert!(stderr.contains("hint: Pass the room's password with --password"), "{stderr}");
        // Not a terminal, so json by default: the last line says how it ended.
        let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(last["state"], "failed", "{stdout}");
        assert_eq!(last["exitCode"], 3);
    }

    // A model the server does not serve: exit 2, and the message lists what it does serve.
    for extra in [&["--password", "secret"][..], &["--password", "secret", "--no-reconnect"]] {
        let mut args = vec!["participant", "join", "--room", &code, "--model", "mistral", "--endpoint", &provider.url];
        args.extend_from_slice(extra);
        args.extend(["--hub", &hub.url]);
        let (exit, _, stderr) = run(&args).await;
        assert_eq!(exit, 2, "{stderr}");
        assert!(stderr.contains("does not serve 'mistral' (it serves: llama3, qwen2)"), "{stderr}");
        assert!(stderr.contains("hint: Pass one of the models it serves with --model"), "{stderr}");
    }

    // A room that does not exist: exit 4.
    for extra in [&[][..], &["--no-reconnect"]] {
        let (exit, _, stderr) = run(&join_args(&hub.url, "ZZZ999", &provider, extra)).await;
        assert_eq!(exit, 4, "{stderr}");
        assert!(stderr.contains("error: Room ZZZ999 isn't on this hub."), "{stderr}");
    }

    // A model server that is not running: fail fast, exit 3, even though the supervisor would
    // retry a hub that is down.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let args = ["participant", "join", "--room", &code, "--model", "llama3", "--endpoint", &dead, "--hub", &hub.url];
    let started = Instant::now();
    let (exit, _, stderr) = run(&args).await;
    assert_eq!(exit, 3, "{stderr}");
    assert!(
        stderr.contains(&format!("error: Can't reach the model server at {dead} — is Ollama running?")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());

    // Bad arguments: exit 2 before anything is sent.
    let (exit, _, stderr) = run(&join_args(&hub.url, "nope", &provider, &[])).await;
    assert_eq!(exit, 2, "{stderr}");
    let (exit, _, stderr) = run(&join_args(&hub.url, &code, &provider, &["--participant-id", "a/b"])).await;
    assert_eq!(exit, 2, "{stderr}");

    // Nothing was registered by any of these.
    assert!(participants_as(&hub.url, &code, Some(&host)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn join_without_reconnect_ends_with_its_session() {
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let mut hub = util::BinHub::start(&[]);
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "once"}))).await;
    assert_eq!(status, 201, "{v}");
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();

    // Ctrl-C: leaves, exit 0, and the last json line says so.
    let args =
        join_args(&hub.url, &code, &provider, &["--participant-id", "once-1", "--no-reconnect", "--format", "ndjson"]);
    let mut join = Proc::spawn(&args);
    assert_eq!(join.state("starting", STARTUP).await["state"], "starting");
    let live = join.state("live", STARTUP).await;
    assert_eq!(live["openaiBaseUrl"], format!("{}/rooms/{code}/v1", hub.url));
    eventually(SOON, "the participant is connected", || connected(&hub.url, &code, "once-1")).await;
    join.signal("INT");
    join.state("stopped", SOON).await;
    assert_eq!(join.exit(SOON).await.code(), Some(0), "log:\n{}", join.log());
    assert_eq!(participant(&hub.url, &code, "once-1").await.0, 404);

    // The hub goes away: no reconnection, exit 3 with the reason.
    let mut join = Proc::spawn(&args);
    join.state("live", STARTUP).await;
    hub.child.kill().unwrap();
    let failed = join.state("failed", SOON).await;
    assert_eq!(failed["exitCode"], 3, "{failed}");
    assert_eq!(join.exit(SOON).await.code(), Some(3), "log:\n{}", join.log());
    let log = join.log();
    assert!(log.contains("error: the share ended: the tunnel to the hub closed"), "{log}");
    assert!(log.contains("hint: Run without --no-reconnect"), "{log}");
}

/// A port nothing listens on: bound by the OS, then released.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_and_leave_one_shots() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("one shots", None).await;
    let registered = hub.participant(&code, "w1", None).await;
    let token = registered["data"]["participantToken"].as_str().unwrap().to_string();

    let (exit, stdout, stderr) = run(&[
        "participant",
        "heartbeat",
        "--room",
        &code,
        "--participant-id",
        "w1",
        "--hub",
        &hub.url,
        "--format",
        "json",
    ])
    .await;
    assert_eq!(exit, 0, "{stderr}");
    let beat: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(beat["success"], true);
    assert_eq!(beat["status"], "online");
    assert!(beat["lastSeen"].as_u64().unwrap() > 0);

    let lower = code.to_ascii_lowercase();
    let (exit, stdout, _) = run(&[
        "participant",
        "heartbeat",
        "--room",
        &lower,
        "--participant-id",
        "w1",
        "--hub",
        &hub.url,
        "--format",
        "text",
    ])
    .await;
    assert_eq!(exit, 0);
    assert!(stdout.starts_with(&format!("Heartbeat sent for w1 in room {code}: online (last seen ")), "{stdout}");

    // Without its token nobody removes the participant (exit 3: not allowed), with it, it leaves.
    let (exit, _, stderr) =
        run(&["participant", "leave", "--room", &code, "--participant-id", "w1", "--hub", &hub.url]).await;
    assert_eq!(exit, 3, "{stderr}");
    assert!(stderr.contains("participant's token"), "{stderr}");
    assert_eq!(participant(&hub.url, &code, "w1").await.0, 200, "still there");
    let (exit, stdout, stderr) = run(&[
        "participant",
        "leave",
        "--room",
        &code,
        "--participant-id",
        "w1",
        "--token",
        &token,
        "--hub",
        &hub.url,
        "--format",
        "ndjson",
    ])
    .await;
    assert_eq!(exit, 0, "{stderr}");
    assert!(!stdout.contains(&token) && !stderr.contains(&token), "the token is never printed");
    assert_eq!(stdout, "{\"success\":true}\n");
    assert_eq!(participant(&hub.url, &code, "w1").await.0, 404);

    // Gone now: both one-shots say so with exit 4.
    for command in ["leave", "heartbeat"] {
        let (exit, _, stderr) =
            run(&["participant", command, "--room", &code, "--participant-id", "w1", "--hub", &hub.url]).await;
        assert_eq!(exit, 4, "{command}: {stderr}");
        assert!(stderr.contains("error: Participant 'w1' isn't in this room."), "{stderr}");
    }
    let (exit, _, _) =
        run(&["participant", "leave", "--room", "ZZZ999", "--participant-id", "w1", "--hub", &hub.url]).await;
    assert_eq!(exit, 4);
    let (exit, _, _) =
        run(&["participant", "heartbeat", "--room", &code, "--participant-id", "w1", "--hub", "http://127.0.0.1:9"])
            .await;
    assert_eq!(exit, 3);
}

/// The next stdout line of an ndjson watcher, parsed.
async fn next_json(watch: &mut Proc) -> Value {
    let line = watch.next_line(SOON).await.unwrap_or_else(|| panic!("no event line; log:\n{}", watch.log()));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn events_watch_prints_events_as_they_happen() {
    let hub = TestHub::start().await;
    let (code, host_token) = hub.room("watched", None).await;
    let mut watch = Proc::spawn(&["events", "watch", "--room", &code, "--hub", &hub.url, "--format", "ndjson"]);
    let first: Value = serde_json::from_str(&watch.line(STARTUP, |_| true).await).unwrap();
    assert_eq!(first["type"], "connected");
    assert_eq!(first["roomCode"], code.as_str());

    // Each action's event is on stdout shortly after it, before the next action.
    let started = Instant::now();
    let registered = hub.participant(&code, "w1", None).await;
    let token = registered["data"]["participantToken"].as_str().unwrap().to_string();
    let joined = next_json(&mut watch).await;
    let join_latency = started.elapsed();
    assert_eq!(joined["type"], "participant.joined", "{joined}");
    assert_eq!(joined["roomCode"], code.as_str());
    assert_eq!(joined["data"]["id"], "w1");
    assert!(joined["timestamp"].as_u64().unwrap() > 0);

    let heartbeat = json!({"loadedModels": [{"name": "llama3", "vram": 5.5}]});
    let (status, _, _) = call(
        http()
            .post(hub.at(&format!("/v1/rooms/{code}/participants/w1/heartbeat")))
            .bearer_auth(&token)
            .json(&heartbeat),
    )
    .await;
    assert_eq!(status, 200);
    let updated = next_json(&mut watch).await;
    assert_eq!(updated["type"], "participant.updated", "{updated}");
    assert_eq!(updated["data"]["loadedModels"][0]["name"], "llama3");

    let (status, _, _) =
        call(http().delete(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).bearer_auth(&host_token)).await;
    assert_eq!(status, 200);
    let left = next_json(&mut watch).await;
    assert_eq!(left["type"], "participant.left", "{left}");
    assert_eq!(left["data"]["participantId"], "w1");
    eprintln!("events watch: participant.joined printed {join_latency:?} after the join was sent");

    watch.signal("INT");
    assert_eq!(watch.exit(SOON).await.code(), Some(0), "log:\n{}", watch.log());

    // Text: a readable line for a join; the `connected` event is not shown.
    let mut watch = Proc::spawn(&["events", "watch", "--room", &code, "--hub", &hub.url, "--format", "text"]);
    watch.stderr_line(STARTUP, |l| l.starts_with(&format!("Watching room {code} on "))).await;
    let body = json!({"nickname": "Alice", "model": "llama3", "endpoint": "http://127.0.0.1:9"});
    let (status, _, _) = call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/alice-1"))).json(&body)).await;
    assert_eq!(status, 201);
    let line = watch.next_line(SOON).await.expect("a line for the join");
    assert!(line.contains("participant.joined"), "{line}");
    assert!(line.contains("Alice (alice-1) joined: llama3, online"), "{line}");
    watch.signal("TERM");
    assert_eq!(watch.exit(SOON).await.code(), Some(0));

    // The room is deleted while watched: the stream ends, the reconnection finds no room, exit 4.
    let mut watch = Proc::spawn(&["events", "watch", "--room", &code, "--hub", &hub.url, "--format", "ndjson"]);
    watch.stderr_line(STARTUP, |l| l.starts_with(&format!("Watching room {code} on "))).await;
    let (status, _, _) = call(http().delete(hub.at(&format!("/v1/rooms/{code}"))).bearer_auth(&host_token)).await;
    assert_eq!(status, 200);
    assert_eq!(watch.exit(SOON).await.code(), Some(4), "log:\n{}", watch.log());
    assert!(watch.log().contains(&format!("error: Room {code} isn't on this hub.")), "{}", watch.log());

    // A room that does not exist: exit 4 at once.
    let (exit, stdout, stderr) = run(&["events", "watch", "--room", "ZZZ999", "--hub", &hub.url]).await;
    assert_eq!((exit, stdout.as_str()), (4, ""), "{stderr}");
    assert!(stderr.contains("error: Room ZZZ999 isn't on this hub."), "{stderr}");
}

/// A streamed chat request's events as they arrive, each with the moment it was read.
struct Stream {
    rx: mpsc::UnboundedReceiver<(Instant, Option<String>, String)>,
}

impl Stream {
    async fn start(base: &str, model: &str, text: &str) -> Stream {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]});
        let res = reqwest::Client::new().post(format!("{base}/chat/completions")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200, "{model}");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut parser = SseParser::new();
            let mut bytes = res.bytes_stream();
            while let Some(Ok(chunk)) = bytes.next().await {
                let now = Instant::now();
                for frame in parser.push(&chunk) {
                    let _ = tx.send((now, frame.event, frame.data));
                }
            }
        });
        Stream { rx }
    }

    /// The next event (when it was read, its `event:` name, its data); `None` at the end.
    async fn next(&mut self, within: Duration) -> Option<(Instant, Option<String>, String)> {
        tokio::time::timeout(within, self.rx.recv()).await.ok().flatten()
    }
}

fn delta(data: &str) -> Option<String> {
    let v: Value = serde_json::from_str(data).ok()?;
    v["choices"][0]["delta"]["content"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_participant_process_killed_mid_stream_fails_only_its_own_stream() {
    let config = HubConfig {
        participant_timeout: Duration::from_secs(1),
        sweep_interval: Duration::from_millis(100),
        ..HubConfig::default()
    };
    let hub = TestHub::with_config(config).await;
    let (code, _) = hub.room("kill", None).await;
    let slow = FakeOptions { stream_chunks: 50, chunk_delay: Duration::from_millis(100), ..Default::default() };
    let provider_a = FakeProvider::start(slow.clone()).await;
    let provider_b = FakeProvider::start(slow).await;
    // Heartbeats well inside the hub's 1 s timeout, so only the killed one goes offline.
    let fast = ["--heartbeat-interval", "200ms", "--format", "ndjson"];
    let mut a =
        Proc::spawn(&join_args(&hub.url, &code, &provider_a, &[&["--participant-id", "part-a"][..], &fast].concat()));
    let mut b =
        Proc::spawn(&join_args(&hub.url, &code, &provider_b, &[&["--participant-id", "part-b"][..], &fast].concat()));
    let live = a.state("live", STARTUP).await;
    assert_eq!(live["participantId"], "part-a");
    assert_eq!(live["openaiBaseUrl"], format!("{}/rooms/{code}/v1", hub.url));
    b.state("live", STARTUP).await;
    for id in ["part-a", "part-b"] {
        eventually(SOON, "both participants are connected", || connected(&hub.url, &code, id)).await;
    }

    let base = format!("{}/rooms/{code}/v1", hub.url);
    let text: String = (1..=60).map(|i| format!("word{i} ")).collect();
    let mut stream_a = Stream::start(&base, "part-a", &text).await;
    let mut stream_b = Stream::start(&base, "part-b", &text).await;
    // Both are mid-stream: each has had its first content delta (B's text so far is kept).
    let mut got_b = String::new();
    for (name, stream, got) in [("A", &mut stream_a, &mut String::new()), ("B", &mut stream_b, &mut got_b)] {
        while got.is_empty() {
            let (_, _, data) = stream.next(SOON).await.unwrap_or_else(|| panic!("stream {name} never started"));
            got.push_str(&delta(&data).unwrap_or_default());
        }
    }

    let killed_at = Instant::now();
    a.child.kill().unwrap(); // SIGKILL: no leave, no goodbye, the socket just dies.
    let error_at = loop {
        let (at, event, data) =
            stream_a.next(Duration::from_secs(5)).await.expect("A's stream ended without an error event");
        if event.as_deref() == Some("error") {
            let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            assert!(v["error"]["message"].is_string(), "{data}");
            break at;
        }
    };
    let latency = error_at.duration_since(killed_at);
    eprintln!("participant process SIGKILLed mid-stream: its client got `event: error` after {latency:?}");
    assert!(latency < Duration::from_secs(1), "error event after {latency:?}");
    assert!(stream_a.next(SOON).await.is_none(), "A's stream ends after the error");

    // B never noticed: every delta, then [DONE].
    let mut got = got_b;
    let mut done = false;
    while let Some((_, event, data)) = stream_b.next(SOON).await {
        assert_ne!(event.as_deref(), Some("error"), "B's stream got an error: {data}");
        if data == "[DONE]" {
            done = true;
        } else if let Some(d) = delta(&data) {
            got.push_str(&d);
        }
    }
    assert!(done, "B's stream ended without [DONE]");
    assert_eq!(got, echo(&text));

    // A is offline (its tunnel closed with its process), B stays online.
    eventually(Duration::from_secs(5), "A is offline", || async {
        participant(&hub.url, &code, "part-a").await.1["status"] == "offline"
    })
    .await;
    let (_, pb) = participant(&hub.url, &code, "part-b").await;
    assert_ne!(pb["status"], "offline", "{pb}");
    assert_eq!(pb["connection"]["connected"], true);
    b.signal("INT");
    assert_eq!(b.exit(SOON).await.code(), Some(0), "log:\n{}", b.log());
}

/// `gambi hub serve` on a fixed port with a state file: killed and started again in place.
fn hub_at(port: u16, state: &std::path::Path) -> Proc {
    let port = port.to_string();
    let args = ["hub", "serve", "--host", "127.0.0.1", "--port", &port, "--state", state.to_str().unwrap()];
    Proc::spawn(&args)
}

/// A real hub on a fixed port that keeps its rooms in `state`, with one room; returns the hub, its
/// port, its URL and the room's code.
async fn hub_with_a_room(state: &std::path::Path, name: &str) -> (Proc, u16, String, String) {
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut hub = hub_at(port, state);
    hub.line(STARTUP, |l| l.contains("listening on")).await;
    let (status, _, v) = call(http().post(format!("{url}/v1/rooms")).json(&json!({ "name": name }))).await;
    assert_eq!(status, 201, "{v}");
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();
    (hub, port, url, code)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_supervisor_heals_a_hub_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hub-state.json");
    let (mut hub, port, url, code) = hub_with_a_room(&state, "survives").await;

    let provider = FakeProvider::start(FakeOptions::default()).await;
    let mut join =
        Proc::spawn(&join_args(&url, &code, &provider, &["--participant-id", "carol-1", "--format", "ndjson"]));
    join.state("live", STARTUP).await;
    eventually(SOON, "the participant is connected", || connected(&url, &code, "carol-1")).await;
    let base = format!("{url}/rooms/{code}/v1");
    assert_eq!(chat(&base, "*", "before").await, echo("before"));

    // A watcher of the room follows the restart too: it reconnects by itself and resumes.
    let mut watch = Proc::spawn(&["events", "watch", "--room", &code, "--hub", &url, "--format", "ndjson"]);
    watch.stderr_line(STARTUP, |l| l.starts_with(&format!("Watching room {code}"))).await;

    hub.child.kill().unwrap(); // SIGKILL: no graceful shutdown, the state file is as last written.
    hub.child.wait().unwrap();
    let reconnecting = join.state("reconnecting", SOON).await;
    assert!(reconnecting["attempt"].as_u64().unwrap() >= 1, "{reconnecting}");

    let mut hub = hub_at(port, &state);
    let restarted = Instant::now();
    hub.line(STARTUP, |l| l.contains("listening on")).await;
    let live = join.state("live", Duration::from_secs(15)).await;
    assert_eq!(live["participantId"], "carol-1");
    assert_eq!(live["roomCode"], code.as_str());
    let deadline = restarted + Duration::from_secs(15);
    while !connected(&url, &code, "carol-1").await {
        assert!(Instant::now() < deadline, "not back online within 15 s; log:\n{}\nhub:\n{}", join.log(), hub.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovery = restarted.elapsed();
    eprintln!("hub killed and restarted: the participant was back online {recovery:?} after the restart");

    let all = participants(&url, &code).await;
    assert_eq!(all.len(), 1, "exactly one participant, no duplicate: {all:?}");
    assert_eq!(all[0]["id"], "carol-1");
    assert_eq!(chat(&base, "*", "after").await, echo("after"));

    watch.stderr_line(SOON, |l| l.starts_with(&format!("Reconnected to room {code}; resuming after event "))).await;
    let rejoined = watch
        .line(SOON, |l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["type"] == "participant.joined" && v["data"]["id"] == "carol-1"
        })
        .await;
    assert!(rejoined.contains("\"roomCode\""), "{rejoined}");

    join.signal("INT");
    assert_eq!(join.exit(SOON).await.code(), Some(0), "log:\n{}", join.log());
    assert!(participants(&url, &code).await.is_empty(), "left cleanly after the restart too");
    watch.signal("INT");
    assert_eq!(watch.exit(SOON).await.code(), Some(0), "log:\n{}", watch.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn join_finds_the_local_ollama_and_its_loaded_model_by_itself() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions {
        ollama: true,
        models: vec!["llama3:latest".into(), "qwen2:7b".into()],
        loaded: vec!["qwen2:7b".into()],
        ..FakeOptions::default()
    })
    .await;
    let ollama_host = provider.url.trim_start_matches("http://").to_string();
    let env = [("OLLAMA_HOST", ollama_host.as_str())];
    let (code, _) = hub.room("auto", None).await;
    // Neither --endpoint nor --model: the loaded model of the Ollama found on this machine.
    let args =
        ["participant", "join", "--room", &code, "--participant-id", "auto-1", "--hub", &hub.url, "--format", "text"];
    let mut join = Proc::spawn_env(&args, &env);
    let found = join.stderr_line(STARTUP, |l| l.starts_with("Found Ollama")).await;
    assert!(found.contains(&provider.url), "{found}");
    join.line(STARTUP, |l| l.starts_with("Sharing qwen2:7b in room")).await;
    eventually(SOON, "the participant is connected", || connected(&hub.url, &code, "auto-1")).await;
    let (_, p) = participant(&hub.url, &code, "auto-1").await;
    assert_eq!(p["model"], "qwen2:7b");
    assert_eq!(p["endpoint"], provider.url.as_str());
    assert!(p["specs"]["cpu"].is_string() && p["specs"]["ram"].as_f64().unwrap() > 0.0, "specs were sent: {p}");
    assert_eq!(p["loadedModels"][0]["name"], "qwen2:7b");
    assert_eq!(chat(&format!("{}/rooms/{code}/v1", hub.url), "auto-1", "hi").await, echo("hi"));
    join.signal("INT");
    assert_eq!(join.exit(SOON).await.code(), Some(0), "{}", join.log());

    // --no-specs keeps this machine's figures to itself.
    let args =
        ["participant", "join", "--room", &code, "--participant-id", "private-1", "--no-specs", "--hub", &hub.url];
    let mut quiet = Proc::spawn_env(&args, &env);
    eventually(SOON * 2, "the quiet participant is connected", || connected(&hub.url, &code, "private-1")).await;
    let (_, p) = participant(&hub.url, &code, "private-1").await;
    assert!(p["specs"].as_object().unwrap().is_empty(), "{p}");
    quiet.signal("TERM");
    assert_eq!(quiet.exit(SOON).await.code(), Some(0));

    // Several models and none loaded: nobody at the terminal to ask, so it fails with the list.
    provider.update(|o| o.loaded = vec![]);
    let (status, _, stderr) = util::gambi_async(&["join", &code, "--hub", &hub.url], &env).await;
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("llama3:latest") && stderr.contains("qwen2:7b"), "{stderr}");

    // Nothing running at all: a plain sentence, exit 3.
    let dead = format!("127.0.0.1:{}", dead_port());
    let (status, _, stderr) =
        util::gambi_async(&["join", &code, "--hub", &hub.url], &[("OLLAMA_HOST", dead.as_str())]).await;
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("Nothing found"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn specs_prints_what_this_machine_reports() {
    let (status, stdout, stderr) = run(&["specs", "--format", "json"]).await;
    assert_eq!(status, 0, "{stderr}");
    let specs: Value = serde_json::from_str(&stdout).unwrap();
    assert!(specs["cpu"].as_str().is_some_and(|c| !c.is_empty()), "{specs}");
    assert!(specs["cpuCores"].as_u64().unwrap() > 0);
    assert!(specs["ram"].as_f64().unwrap() > 0.0);
    assert!(specs["os"].is_string());
    let (status, text, _) = run(&["specs", "--format", "text"]).await;
    assert_eq!(status, 0);
    for label in ["CPU", "Cores", "RAM", "OS", "GPU"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(label)), "{label} in:\n{text}");
    }
    if specs.get("gpus").is_none() {
        assert!(text.contains("no GPU found"), "{text}");
    }
}

/// The hub is killed and restarted while clients keep sending requests: every request ends
/// promptly (a completion, or a clean error while the hub is down — never a hang), the share comes
/// back by itself as the same participant, and the load is served again.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_restarted_under_load_heals_and_no_request_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hub-state.json");
    let (mut hub, port, url, code) = hub_with_a_room(&state, "busy").await;
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(20), ..FakeOptions::default() })
            .await;
    let mut join =
        Proc::spawn(&join_args(&url, &code, &provider, &["--participant-id", "dana-1", "--format", "ndjson"]));
    join.state("live", STARTUP).await;
    eventually(SOON, "the participant is connected", || connected(&url, &code, "dana-1")).await;

    // Four clients, each sending one request after another, with a 10 s cap on every request.
    let base = format!("{url}/rooms/{code}/v1");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<(Instant, bool, Duration)>::new()));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (base, stop, outcomes) = (base.clone(), stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let body = json!({"model": "*", "messages": [{"role": "user", "content": format!("c{i} r{n}")}]});
                    let started = Instant::now();
                    let ok = match client.post(format!("{base}/chat/completions")).json(&body).send().await {
                        Ok(res) => {
                            let status = res.status();
                            let text = res.text().await.unwrap_or_default();
                            status == 200 && text.contains(&echo(&format!("c{i} r{n}")))
                        }
                        Err(e) => {
                            assert!(!e.is_timeout(), "a request hung for 10 s during the restart");
                            false
                        }
                    };
                    outcomes.lock().unwrap().push((started, ok, started.elapsed()));
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    let killed = Instant::now();
    join.state("reconnecting", SOON).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut hub = hub_at(port, &state);
    hub.line(STARTUP, |l| l.contains("listening on")).await;
    let restarted = Instant::now();
    let back = join.state("live", Duration::from_secs(15)).await;
    assert_eq!(back["participantId"], "dana-1");
    eventually(Duration::from_secs(15), "the participant is back online", || connected(&url, &code, "dana-1")).await;
    // Served again: a success that started after the share came back.
    let healed = Instant::now();
    eventually(Duration::from_secs(10), "the load is served again", || {
        let outcomes = outcomes.clone();
        async move { outcomes.lock().unwrap().iter().any(|(at, ok, _)| *ok && *at > healed) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let before = outcomes.iter().filter(|(at, ok, _)| *ok && *at < killed).count();
    let failed = outcomes.iter().filter(|(_, ok, _)| !ok).count();
    let slowest = outcomes.iter().map(|(_, _, took)| *took).max().unwrap_or_default();
    eprintln!(
        "restart under load: {} requests, {before} served before the kill, {failed} failed cleanly while the hub \
         was down, slowest {slowest:?}; the share was back {:?} after the restart",
        outcomes.len(),
        healed.duration_since(restarted)
    );
    assert!(before > 0, "the load was served before the kill");
    assert!(slowest < Duration::from_secs(10), "no request hung");
    let all = participants(&url, &code).await;
    assert_eq!(all.len(), 1, "one participant, no duplicate: {all:?}");
    join.signal("INT");
    assert_eq!(join.exit(SOON).await.code(), Some(0), "log:\n{}", join.log());
}

/// A TCP relay in front of the hub for one client, whose connections the test can cut at will
/// (what a network blip or a laptop's sleep does to a share's tunnel).
struct CuttableRelay {
    port: u16,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttableRelay {
    async fn start(hub_port: u16) -> CuttableRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let held = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", hub_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                held.lock().unwrap().push(task.abort_handle());
            }
        });
        CuttableRelay { port, connections }
    }

    /// Drops every connection through the relay at once (both sides see them reset).
    fn cut(&self) -> usize {
        let mut connections = self.connections.lock().unwrap();
        let n = connections.len();
        for c in connections.drain(..) {
            c.abort();
        }
        n
    }
}

/// Issue 10, section 1: a share reconnecting after its tunnel dropped could be hijacked — a client
/// polling `PUT …/participants/ID` without a token got the id (and the room's next prompt) the
/// moment the tunnel closed. Here a real `gambi participant join` has its tunnel cut again and
/// again (its connections dropped, then the hub killed and restarted with `--state`) while an
/// attacker polls the same id on both surfaces without a token the whole time: the attacker never
/// gets a 2xx, and the real participant is back and serving after every cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_share_whose_tunnel_is_cut_again_and_again_is_never_hijacked() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hub-state.json");
    let (mut hub, port, url, code) = hub_with_a_room(&state, "no hijack").await;
    let relay = CuttableRelay::start(port).await;
    let via_relay = format!("http://127.0.0.1:{}", relay.port);
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let mut join = Proc::spawn(&join_args(
        &via_relay,
        &code,
        &provider,
        &["--participant-id", "victim", "--nickname", "Victim", "--format", "ndjson"],
    ));
    join.state("live", STARTUP).await;
    eventually(SOON, "the participant is connected", || connected(&url, &code, "victim")).await;

    // The attacker: every 10 ms, both surfaces, no token, for as long as the test runs.
    let stop = tokio_util::sync::CancellationToken::new();
    let attacker = tokio::spawn({
        let (url, code, stop) = (url.clone(), code.clone(), stop.clone());
        async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            let body = json!({"nickname": "Mallory", "model": "llama3", "endpoint": "http://127.0.0.1:9"});
            let mut classic = body.clone();
            classic["id"] = json!("victim");
            let (mut tries, mut won) = (0u32, Vec::new());
            while !stop.is_cancelled() {
                let put = client.put(format!("{url}/v1/rooms/{code}/participants/victim")).json(&body).send();
                let join = client.post(format!("{url}/rooms/{code}/join")).json(&classic).send();
                for answer in [put.await, join.await].into_iter().flatten() {
                    tries += 1;
                    if answer.status().is_success() {
                        won.push(answer.text().await.unwrap_or_default());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (tries, won)
        }
    });

    let base = format!("{url}/rooms/{code}/v1");
    for round in 0..5 {
        if round < 3 {
            assert!(relay.cut() > 0, "round {round}: the share had connections to cut");
        } else {
            hub.child.kill().unwrap();
            hub.child.wait().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            hub = hub_at(port, &state);
            hub.line(STARTUP, |l| l.contains("listening on")).await;
        }
        join.state("reconnecting", SOON).await;
        join.state("live", Duration::from_secs(20)).await;
        eventually(SOON, "the participant is back", || connected(&url, &code, "victim")).await;
        let (_, p) = participant(&url, &code, "victim").await;
        assert_eq!(p["nickname"], "Victim", "round {round}: the id is still the share's: {p}");
        let text = format!("private prompt {round}");
        assert_eq!(chat(&base, "victim", &text).await, echo(&text), "round {round}");
    }
    stop.cancel();
    let (tries, won) = attacker.await.unwrap();
    eprintln!("hijack attempts: {tries}, answered 2xx: {}", won.len());
    assert!(tries > 100, "the attacker kept trying ({tries})");
    assert!(won.is_empty(), "the attacker registered the share's id: {won:?}");
    let prompts = provider
        .requests_to("/v1/chat/completions")
        .iter()
        .filter(|r| r.body.as_ref().is_some_and(|b| b.to_string().contains("private prompt")))
        .count();
    assert_eq!(prompts, 5, "every prompt reached the real share");
    join.signal("INT");
    assert_eq!(join.exit(SOON).await.code(), Some(0), "log:\n{}", join.log());
}

/// A `--state` file holding rooms with these codes, as a hub that made them would have written it:
/// how a test gets a hub holding codes our own hub never makes.
pub fn state_with_codes(dir: &std::path::Path, codes: &[&str]) -> std::path::PathBuf {
    let rooms: Vec<Value> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            json!({"id": format!("ts-room-{i}"), "code": code, "name": format!("TypeScript room {i}"),
                   "hostId": format!("ts-host-{i}"), "createdAt": 1_700_000_000_000u64 + i as u64,
                   "hostTokenSha256": "0".repeat(64)})
        })
        .collect();
    let path = dir.join("state.json");
    std::fs::write(&path, json!({"version": 1, "rooms": rooms}).to_string()).unwrap();
    path
}

/// Issue 13: the TypeScript hub makes codes with `nanoid(6).toUpperCase()`, so about one in six
/// holds `-` or `_` (`B--JWY`, `MA_TPG`, `PKUH_T`). `room get` read them, but `participant join`
/// and `events watch` refused them as "not a room code" (exit 2). Any code a hub hands out is
/// joined and watched, typed in any case, even one that starts with `-`.
#[tokio::test(flavor = "multi_thread")]
async fn codes_with_dash_and_underscore_from_the_typescript_hub_are_joined_and_watched() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_codes(dir.path(), &["B-_JWY", "-MA_TP"]);
    let hub = util::BinHub::start(&["--state", state.to_str().unwrap()]);
    let provider = FakeProvider::start(FakeOptions::default()).await;

    let mut watch = Proc::spawn(&["events", "watch", "--room", "b-_jwy", "--hub", &hub.url, "--format", "ndjson"]);
    let first: Value = serde_json::from_str(&watch.line(STARTUP, |_| true).await).unwrap();
    assert_eq!((first["type"].as_str(), first["roomCode"].as_str()), (Some("connected"), Some("B-_JWY")), "{first}");

    let mut join =
        Proc::spawn(&join_args(&hub.url, "b-_jwy", &provider, &["--participant-id", "ts-1", "--format", "text"]));
    let sharing = join.line(STARTUP, |l| l.starts_with("Sharing ")).await;
    assert_eq!(sharing, "Sharing llama3 in room B-_JWY as ts-1.");
    let base = format!("{}/rooms/B-_JWY/v1", hub.url);
    join.line(SOON, |l| l == format!("OpenAI base URL: {base}")).await;
    let joined = next_json(&mut watch).await;
    assert_eq!((joined["type"].as_str(), joined["data"]["id"].as_str()), (Some("participant.joined"), Some("ts-1")));
    assert_eq!(joined["roomCode"], "B-_JWY");
    eventually(SOON, "the participant is connected", || connected(&hub.url, "B-_JWY", "ts-1")).await;
    assert_eq!(chat(&base, "ts-1", "through a nanoid code").await, echo("through a nanoid code"));

    // A code that starts with `-`, in the short form and watched with `--room -CODE`.
    let mut watch_dash = Proc::spawn(&["events", "watch", "--room", "-ma_tp", "--hub", &hub.url, "--format", "ndjson"]);
    let first: Value = serde_json::from_str(&watch_dash.line(STARTUP, |_| true).await).unwrap();
    assert_eq!(first["roomCode"], "-MA_TP", "{first}");
    let mut short = Proc::spawn(&[
        "join",
        "-MA_TP",
        "--nickname",
        "TS",
        "--model",
        "llama3",
        "--endpoint",
        &provider.url,
        "--hub",
        &hub.url,
        "--format",
        "text",
    ]);
    let sharing = short.line(STARTUP, |l| l.starts_with("Sharing ")).await;
    assert!(sharing.starts_with("Sharing llama3 in room -MA_TP as ts-"), "{sharing}");
    let joined = next_json(&mut watch_dash).await;
    assert_eq!(joined["type"], "participant.joined", "{joined}");

    // What is still refused is what no hub hands out, with the shape in the hint.
    for bad in ["B-_JW", "B.-JWY", "B/_JWY"] {
        let (exit, _, stderr) = run(&join_args(&hub.url, bad, &provider, &[])).await;
        assert_eq!(exit, 2, "{bad}: {stderr}");
        assert!(stderr.contains("is not a room code") && stderr.contains("(or - and _)"), "{stderr}");
        let (exit, _, stderr) = run(&["events", "watch", "--room", bad, "--hub", &hub.url]).await;
        assert_eq!(exit, 2, "{bad}: {stderr}");
    }

    for p in [&mut join, &mut short] {
        p.signal("INT");
        assert_eq!(p.exit(SOON).await.code(), Some(0), "log:\n{}", p.log());
    }
    // (The chat's `llm.*` events and stats updates come before it.)
    let left = loop {
        let event = next_json(&mut watch).await;
        if event["type"] == "participant.left" {
            break event;
        }
    };
    assert_eq!(left["data"]["participantId"], "ts-1", "{left}");
}

/// A model server whose keep-alive connections go stale the way llama-server's do (its HTTP
/// library closes a connection idle for 5 s), with the race made certain: a request that arrives
/// on a connection idle for `stale` or more finds it closed, unanswered, as when the server's
/// close crosses the request. It serves `llama3` (`/v1/models`), answers the probe's empty POSTs
/// with 400, and any other chat with one fixed completion. Returns its URL and how many requests
/// it dropped that way.
async fn stale_keepalive_server(stale: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut last_answer: Option<Instant> = None;
                let mut buf = Vec::new();
                loop {
                    let Some((head, body)) = read_http_request(&mut socket, &mut buf).await else { return };
                    if last_answer.is_some_and(|at| at.elapsed() >= stale) {
                        count.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let request_line = head.lines().next().unwrap_or_default().to_string();
                    let (status, answer) = if request_line.starts_with("GET /v1/models ") {
                        (200, json!({"object": "list", "data": [{"id": "llama3", "object": "model"}]}))
                    } else if request_line.starts_with("POST ") && body.trim() == "{}" {
                        (400, json!({"error": {"message": "missing fields", "type": "invalid_request_error"}}))
                    } else if request_line.starts_with("POST /v1/chat/completions ") {
                        let message = json!({"role": "assistant", "content": "fresh"});
                        let usage = json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2});
                        let choice = json!({"index": 0, "message": message, "finish_reason": "stop"});
                        (200, json!({"id": "c", "object": "chat.completion", "choices": [choice], "usage": usage}))
                    } else {
                        (404, json!({"error": "not found"}))
                    };
                    let text = answer.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{text}",
                        text.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    last_answer = Some(Instant::now());
                }
            });
        }
    });
    (url, dropped)
}

/// Issue 13, found with the real llama-server: it closes a keep-alive connection idle for 5 s, and
/// a participant that kept idle connections for reuse for longer sent requests on closing ones now
/// and then; the room answered those with a 502 ("the participant's model server failed"). A
/// connection idle for 3 s is no longer reused, so requests after a pause all find fresh ones.
#[tokio::test(flavor = "multi_thread")]
async fn requests_after_a_pause_never_land_on_a_keep_alive_connection_the_server_is_closing() {
    let (server, dropped) = stale_keepalive_server(Duration::from_secs(5)).await;
    let hub = TestHub::start().await;
    let (code, _) = hub.room("stale keep-alive", None).await;
    let args = [
        "participant",
        "join",
        "--room",
        &code,
        "--participant-id",
        "stale-1",
        "--model",
        "llama3",
        "--endpoint",
        &server,
        "--max-concurrency",
        "4",
        "--no-specs",
        "--format",
        "ndjson",
        "--hub",
        &hub.url,
    ];
    let mut join = Proc::spawn(&args);
    join.state("live", STARTUP).await;
    let base = format!("{}/rooms/{code}/v1", hub.url);
    // The probe left several connections idle (its calls run side by side); the provider watch
    // keeps one of them busy. After a pause longer than the server keeps them, a burst of
    // requests needs more connections than that one.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let burst = (0..3).map(|i| {
        let body = json!({"model": "stale-1", "messages": [{"role": "user", "content": format!("after a pause {i}")}]});
        call(http().post(format!("{base}/chat/completions")).json(&body))
    });
    for (status, _, v) in futures_util::future::join_all(burst).await {
        assert_eq!(status, 200, "{v}\nlog:\n{}", join.log());
        assert_eq!(v["choices"][0]["message"]["content"], "fresh");
    }
    assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 0, "a request went out on a stale connection");
}
