//! The inference plane's cost, measured on the release `gambi` binary as a user runs it (issue 3,
//! acceptance 10). One run measures three paths side by side:
//!
//! - `direct`: client -> fake provider (the baseline: what the hub is compared against),
//! - `hub + direct participant`: client -> hub -> fake provider (a classic `join` with an endpoint),
//! - `hub + tunnel`: client -> hub -> WebSocket tunnel -> `ParticipantSession` -> fake provider,
//!
//! and prints requests/s and latency p50/p99 of non-streamed chat completions at concurrency 1 and
//! 32, streaming of 200 chunks (time to last byte, chunks/s), and the hub's CPU per request and peak
//! RSS, with the targets beside the figures. Not a test: it never fails on a miss, it reports.
//!
//! The hub is a separate process (so its CPU and memory can be read from `/proc/<pid>`); the fake
//! providers, the participant sessions and the load generator share this process. Linux only for
//! the CPU and memory figures.
//!
//! Run with `cargo bench --no-default-features --bench inference`.
//!
//! To profile one path instead, set `GAMBI_BENCH_SOAK=PATH[,CONCURRENCY[,SECONDS[,stream]]]` (PATH:
//! `direct`, `hub-direct` or `hub-tunnel`): after the same set-up the bench prints the hub's pid,
//! runs only that load for that long (default 1 request at a time for 20 s), and prints its rate;
//! attach `perf record -g -p PID` meanwhile.
#![expect(clippy::unwrap_used, reason = "benchmark: fails loudly")]
#![expect(clippy::print_stdout, reason = "benchmark: the table is its output")]

#[path = "../tests/fake_provider.rs"]
mod fake_provider;

#[path = "support.rs"]
mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use gambi::participant::{ParticipantSession, SessionOptions};
use serde_json::{json, Value};

use fake_provider::{FakeOptions, FakeProvider};

const BIN: &str = env!("CARGO_BIN_EXE_gambi");
const MODEL: &str = "llama3";
/// Fake providers, and so participants of each kind (each participant has its own provider).
const PROVIDERS: usize = 4;
/// The slot limit each participant declares: 4 x 8 = 32 slots, the high concurrency below.
const MAX_CONCURRENCY: u32 = 8;
const HIGH: usize = 32;
/// Requests per path at concurrency 1 and 32, split in rounds that alternate the paths so slow
/// drift of the machine (other processes, CPU frequency) is shared fairly between them.
const LOW_REQUESTS: usize = 2_000;
const LOW_ROUNDS: usize = 4;
const LOW_WARMUP: usize = 300;
const HIGH_REQUESTS: usize = 10_000;
const HIGH_ROUNDS: usize = 2;
const HIGH_WARMUP: usize = 1_000;
/// Content deltas per streamed answer.
const STREAM_CHUNKS: usize = 200;
/// Streams per path, one at a time, and then several at a time for the aggregate relay rate.
const STREAMS: usize = 150;
const STREAM_ROUNDS: usize = 3;
const STREAM_WARMUP: usize = 20;
const STREAMS_PARALLEL: usize = 8;
const STREAMS_AGGREGATE: usize = 200;
/// Threads of the runtime that runs the fake providers and participant sessions. The client runs
/// on its own current-thread runtime on the main thread.
const SERVER_THREADS: usize = 1;

/// The reply of a non-streamed answer: short, as most chat answers in a benchmark should be.
const SHORT_REPLY: &str = "Hello! This is the fake provider answering a benchmark request.";

// ---------------------------------------------------------------------------------------------
// The hub process
// ---------------------------------------------------------------------------------------------

/// A running hub, killed (and reaped) when dropped, on a panic too.
struct HubProcess {
    child: Child,
    url: String,
    clock_ticks: f64,
}

impl HubProcess {
    fn spawn() -> HubProcess {
        let (child, url) = support::spawn_hub(BIN, &["--participant-timeout", "1h", "--queue-wait", "120s"]);
        HubProcess { child, url, clock_ticks: clock_ticks() }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// User + system CPU time the hub has used so far.
    fn cpu(&self) -> Duration {
        process_cpu(&format!("/proc/{}/stat", self.child.id()), self.clock_ticks)
    }

    /// Time the hub's threads spent waiting for a CPU while runnable (summed over its live threads).
    fn cpu_wait(&self) -> Duration {
        run_queue_wait(&format!("/proc/{}/task", self.child.id()))
    }

    /// A field of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
    fn memory_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sysconf(_SC_CLK_TCK)` without `unsafe`: the unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (every thread, dead ones included) from its `stat` file.
fn process_cpu(stat_path: &str, clock_ticks: f64) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The command name may hold spaces and parentheses: count fields after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    Duration::from_secs_f64(ticks / clock_ticks)
}

/// The second field of every thread's `schedstat`: nanoseconds spent runnable but not running.
fn run_queue_wait(task_dir: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(task_dir) else { return Duration::ZERO };
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn own_cpu() -> Duration {
    process_cpu("/proc/self/stat", clock_ticks())
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    HubDirect,
    HubTunnel,
}

const PATHS: [Path; 3] = [Path::Direct, Path::HubDirect, Path::HubTunnel];

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct (client -> provider)",
            Path::HubDirect => "hub + direct participant",
            Path::HubTunnel => "hub + tunnel participant",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where each path sends its chat completions: the baseline spreads over the providers the way the
/// hub spreads over the participants.
struct Targets {
    urls: [Vec<String>; 3],
    /// The body each path sends (`model` differs: the provider's name, or `*` for the hub).
    bodies: [Bytes; 3],
    stream_bodies: [Bytes; 3],
}

/// CPU spent by the hub and by this process while a segment ran, and how long the hub's threads
/// waited for a core (the machine is shared: a hop costs more when its thread must wait to run).
#[derive(Default, Clone, Copy)]
struct Cpu {
    hub: Duration,
    bench: Duration,
    hub_wait: Duration,
}

impl Cpu {
    fn add(&mut self, other: Cpu) {
        self.hub += other.hub;
        self.bench += other.bench;
        self.hub_wait += other.hub_wait;
    }
}

/// Runs `work` and returns its result with the CPU both processes used meanwhile.
async fn metered<T>(hub: &HubProcess, work: impl std::future::Future<Output = T>) -> (T, Cpu) {
    let (hub0, own0, wait0) = (hub.cpu(), own_cpu(), hub.cpu_wait());
    let out = work.await;
    let cpu = Cpu {
        hub: hub.cpu().saturating_sub(hub0),
        bench: own_cpu().saturating_sub(own0),
        hub_wait: hub.cpu_wait().saturating_sub(wait0),
    };
    (out, cpu)
}

#[derive(Default)]
struct Load {
    latencies: Vec<Duration>,
    failed: usize,
    wall: Duration,
    cpu: Cpu,
}

impl Load {
    fn absorb(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.wall += other.wall;
        self.cpu.add(other.cpu);
    }

    fn requests(&self) -> usize {
        self.latencies.len() + self.failed
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        percentile(&self.latencies, p)
    }
}

/// One non-streamed chat completion; its latency to the last byte of the answer, or `None` when it
/// failed (transport error, non-200, or not a JSON answer).
async fn one_request(request: reqwest::RequestBuilder) -> Option<Duration> {
    let started = Instant::now();
    let response = request.send().await.ok()?;
    let ok = response.status() == reqwest::StatusCode::OK;
    let body = response.bytes().await.ok()?;
    let elapsed = started.elapsed();
    (ok && body.first() == Some(&b'{')).then_some(elapsed)
}

/// Sends `n` requests, `concurrency` at a time over keep-alive connections, each through `one`;
/// returns what succeeded, how many failed, and the wall time.
async fn fire<T, F, Fut>(
    client: &reqwest::Client,
    urls: &[String],
    body: &Bytes,
    concurrency: usize,
    n: usize,
    one: F,
) -> (Vec<T>, usize, Duration)
where
    F: Fn(reqwest::RequestBuilder) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    let results: Vec<Option<T>> = futures_util::stream::iter(0..n)
        .map(|i| {
            one(client
                .post(&urls[i % urls.len()])
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let failed = results.iter().filter(|r| r.is_none()).count();
    (results.into_iter().flatten().collect(), failed, wall)
}

/// `n` requests, `concurrency` at a time, over keep-alive connections.
async fn load(client: &reqwest::Client, urls: &[String], body: &Bytes, concurrency: usize, n: usize) -> Load {
    let (latencies, failed, wall) = fire(client, urls, body, concurrency, n, one_request).await;
    Load { latencies, failed, wall, cpu: Cpu::default() }
}

/// One streamed answer as the client sees it.
struct Streamed {
    first_byte: Duration,
    last_byte: Duration,
    /// SSE `data:` frames received, `[DONE]` included.
    frames: usize,
}

async fn one_stream(request: reqwest::RequestBuilder) -> Option<Streamed> {
    let started = Instant::now();
    let response = request.send().await.ok()?;
    if response.status() != reqwest::StatusCode::OK {
        return None;
    }
    let mut body = response.bytes_stream();
    let mut first_byte = None;
    let mut received = Vec::with_capacity(96 * 1024);
    while let Some(piece) = body.next().await {
        let piece = piece.ok()?;
        first_byte.get_or_insert_with(|| started.elapsed());
        received.extend_from_slice(&piece);
    }
    let last_byte = started.elapsed();
    let text = std::str::from_utf8(&received).ok()?;
    let data: Vec<&str> = text.split('\n').filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    // A relay failure ends the stream with an `error` event: that is a failed stream, not a short one.
    if data.last() != Some(&"[DONE]") || text.contains("event: error") {
        return None;
    }
    Some(Streamed { first_byte: first_byte.unwrap_or(last_byte), last_byte, frames: data.len() })
}

#[derive(Default)]
struct StreamRun {
    streams: Vec<Streamed>,
    failed: usize,
    wall: Duration,
    cpu: Cpu,
}

impl StreamRun {
    fn absorb(&mut self, other: StreamRun) {
        self.streams.extend(other.streams);
        self.failed += other.failed;
        self.wall += other.wall;
        self.cpu.add(other.cpu);
    }

    fn frames(&self) -> usize {
        self.streams.iter().map(|s| s.frames).sum()
    }

    fn last_bytes(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.streams.iter().map(|s| s.last_byte).collect();
        v.sort_unstable();
        v
    }

    fn first_bytes(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.streams.iter().map(|s| s.first_byte).collect();
        v.sort_unstable();
        v
    }

    /// Frames per second of one stream: all frames over the sum of the streams' times to last byte.
    fn per_stream_rate(&self) -> f64 {
        let busy: f64 = self.streams.iter().map(|s| s.last_byte.as_secs_f64()).sum();
        self.frames() as f64 / busy
    }

    /// Frames per second over the wall time, streams overlapping.
    fn aggregate_rate(&self) -> f64 {
        self.frames() as f64 / self.wall.as_secs_f64()
    }
}

async fn streams(client: &reqwest::Client, urls: &[String], body: &Bytes, concurrency: usize, n: usize) -> StreamRun {
    let (streams, failed, wall) = fire(client, urls, body, concurrency, n, one_stream).await;
    StreamRun { streams, failed, wall, cpu: Cpu::default() }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------

fn chat_body(model: &str, stream: bool) -> Bytes {
    let mut body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello to the benchmark in one short sentence."},
        ],
        "temperature": 0.7,
    });
    if stream {
        body["stream"] = json!(true);
    }
    Bytes::from(body.to_string())
}

/// A reply `STREAM_CHUNKS` pieces long where every piece has content.
fn stream_reply() -> String {
    (0..STREAM_CHUNKS).map(|i| format!("tok{:03} ", i % 1000)).collect()
}

async fn create_room(client: &reqwest::Client, hub: &HubProcess, name: &str) -> String {
    let res = client.post(hub.at("/v1/rooms")).json(&json!({ "name": name })).send().await.unwrap();
    assert_eq!(res.status(), 201, "room creation");
    let created: Value = res.json().await.unwrap();
    created["data"]["room"]["code"].as_str().unwrap().to_string()
}

/// A classic `join` with an endpoint: the hub calls the provider itself.
async fn join_direct(client: &reqwest::Client, hub: &HubProcess, code: &str, id: &str, endpoint: &str) {
    let body = json!({
        "id": id, "nickname": id, "model": MODEL, "endpoint": endpoint, "maxConcurrency": MAX_CONCURRENCY,
    });
    let res = client.post(hub.at(&format!("/rooms/{code}/join"))).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200, "classic join: {}", res.text().await.unwrap_or_default());
}

async fn tunnel_connected(client: &reqwest::Client, hub: &HubProcess, code: &str, id: &str) -> bool {
    let Ok(res) = client.get(hub.at(&format!("/v1/rooms/{code}/participants/{id}"))).send().await else {
        return false;
    };
    let v: Value = res.json().await.unwrap_or(Value::Null);
    v["data"]["connection"]["connected"] == true
}

/// Checks once, outside the measurements, that a path really answers what the provider says.
async fn sanity(client: &reqwest::Client, url: &str, body: &Bytes) {
    let res = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{url}: {v}");
    assert_eq!(v["choices"][0]["message"]["content"], SHORT_REPLY, "{url}: {v}");
    assert_eq!(v["model"], MODEL, "{url}: the hub rewrites `*` to the participant's model");
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Prints rows of cells aligned in columns: text left, figures right.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let numeric = |c: usize| rows.iter().all(|r| r[c].is_empty() || r[c].starts_with(|ch: char| ch.is_ascii_digit()));
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c > 0 && numeric(c) {
                    format!("{s:>w$}", w = widths[c])
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

struct Verdict {
    metric: String,
    measured: String,
    target: String,
    pass: bool,
    margin: String,
}

fn verdict(metric: impl Into<String>, measured: String, target: &str, pass: bool, margin: String) -> Verdict {
    Verdict { metric: metric.into(), measured, target: target.into(), pass, margin }
}

/// `measured <= limit`, with the margin in the unit of both (negative: over the limit).
fn at_most(metric: &str, measured: f64, limit: f64, unit: &str) -> Verdict {
    verdict(
        metric,
        format!("{measured:.3} {unit}"),
        &format!("<= {limit} {unit}"),
        measured <= limit,
        format!("{:+.3} {unit}", limit - measured),
    )
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// `GAMBI_BENCH_SOAK`: one path's load for a while, for a profiler attached to the hub.
fn soak(spec: &str, hub: &HubProcess, providers: &[FakeProvider], targets: &Targets, rt: &tokio::runtime::Runtime) {
    let mut parts = spec.split(',').map(str::trim);
    let path = match parts.next() {
        Some("direct") => Path::Direct,
        Some("hub-direct") => Path::HubDirect,
        Some("hub-tunnel") => Path::HubTunnel,
        other => panic!("GAMBI_BENCH_SOAK: unknown path {other:?} (direct, hub-direct or hub-tunnel)"),
    };
    let concurrency: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
    let seconds: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(20);
    let stream = parts.next() == Some("stream");
    if stream {
        for p in providers {
            p.update(|o| o.reply = Some(stream_reply()));
        }
    }
    let i = path.index();
    let body = if stream { &targets.stream_bodies[i] } else { &targets.bodies[i] };
    println!("soak: {} at concurrency {concurrency} for {seconds} s; hub pid {}", path.label(), hub.child.id());
    rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (mut done, mut failed) = (0, 0);
        let (_, cpu) = metered(hub, async {
            while Instant::now() < deadline {
                let batch = 100 * concurrency;
                if stream {
                    let run = streams(&client, &targets.urls[i], body, concurrency, batch).await;
                    failed += run.failed;
                } else {
                    failed += load(&client, &targets.urls[i], body, concurrency, batch).await.failed;
                }
                done += batch;
            }
        })
        .await;
        println!(
            "soak: {done} {} ({failed} failed), {:.0}/s, hub CPU {:.3} ms each",
            if stream { "streams" } else { "requests" },
            done as f64 / seconds as f64,
            ms(cpu.hub) / done as f64
        );
    });
}

fn main() {
    let bench_started = Instant::now();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("gambi inference benchmark: {BIN}");
    println!(
        "machine: {cpus} CPU(s), load average at start {}",
        loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "processes: the hub (release binary, its own multi-thread runtime, default info logging to /dev/null) and \
         this bench (client on a current-thread runtime; {PROVIDERS} fake providers and {PROVIDERS} participant \
         sessions on a {SERVER_THREADS}-thread runtime) share the same {cpus} core(s), so absolute figures \
         depend on it"
    );

    let servers =
        tokio::runtime::Builder::new_multi_thread().worker_threads(SERVER_THREADS).enable_all().build().unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let hub = HubProcess::spawn();
    let rss_start = hub.memory_mib("VmRSS");
    let options = FakeOptions {
        models: vec![MODEL.to_string()],
        record: false,
        reply: Some(SHORT_REPLY.to_string()),
        stream_chunks: STREAM_CHUNKS,
        chunk_delay: Duration::ZERO,
        first_byte_delay: Duration::ZERO,
        ..FakeOptions::default()
    };
    let providers: Vec<FakeProvider> = servers.block_on(async {
        futures_util::future::join_all((0..PROVIDERS).map(|_| FakeProvider::start(options.clone()))).await
    });

    // One client for set-up, then one per path with a pool sized for the concurrency.
    let setup = client_rt.block_on(async { reqwest::Client::new() });
    let (direct_room, tunnel_room) = client_rt.block_on(async {
        let direct_room = create_room(&setup, &hub, "Bench direct").await;
        let tunnel_room = create_room(&setup, &hub, "Bench tunnel").await;
        for (i, p) in providers.iter().enumerate() {
            join_direct(&setup, &hub, &direct_room, &format!("direct-{i}"), &p.url).await;
        }
        (direct_room, tunnel_room)
    });
    let sessions: Vec<ParticipantSession> = servers.block_on(async {
        let mut sessions = Vec::new();
        for (i, p) in providers.iter().enumerate() {
            let mut opts = SessionOptions::new(&hub.url, &tunnel_room, &format!("tunnel-{i}"), &p.url, MODEL);
            opts.max_concurrency = Some(MAX_CONCURRENCY);
            sessions.push(ParticipantSession::start(opts).await.unwrap());
        }
        sessions
    });
    client_rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..PROVIDERS {
            while !tunnel_connected(&setup, &hub, &tunnel_room, &format!("tunnel-{i}")).await {
                assert!(Instant::now() < deadline, "tunnel-{i} never connected");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let rss_ready = hub.memory_mib("VmRSS");

    let hub_chat = |code: &str| vec![hub.at(&format!("/rooms/{code}/v1/chat/completions"))];
    let targets = Targets {
        urls: [
            providers.iter().map(|p| p.at("/v1/chat/completions")).collect(),
            hub_chat(&direct_room),
            hub_chat(&tunnel_room),
        ],
        bodies: [chat_body(MODEL, false), chat_body("*", false), chat_body("*", false)],
        stream_bodies: [chat_body(MODEL, true), chat_body("*", true), chat_body("*", true)],
    };

    if let Ok(spec) = std::env::var("GAMBI_BENCH_SOAK") {
        soak(&spec, &hub, &providers, &targets, &client_rt);
        return;
    }

    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut phase_rss = Vec::new();
    let mut results: Vec<[Load; 3]> = Vec::new();

    // Request/response at concurrency 1 and 32.
    for (concurrency, total, rounds, warmup) in
        [(1, LOW_REQUESTS, LOW_ROUNDS, LOW_WARMUP), (HIGH, HIGH_REQUESTS, HIGH_ROUNDS, HIGH_WARMUP)]
    {
        let mut loads: [Load; 3] = Default::default();
        client_rt.block_on(async {
            let clients: Vec<reqwest::Client> = PATHS
                .iter()
                .map(|_| reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap())
                .collect();
            for path in PATHS {
                let i = path.index();
                sanity(&clients[i], &targets.urls[i][0], &targets.bodies[i]).await;
                let warm = load(&clients[i], &targets.urls[i], &targets.bodies[i], concurrency, warmup).await;
                assert_eq!(warm.failed, 0, "{}: warm-up requests failed", path.label());
            }
            for _ in 0..rounds {
                for path in PATHS {
                    let i = path.index();
                    let (mut part, cpu) = metered(
                        &hub,
                        load(&clients[i], &targets.urls[i], &targets.bodies[i], concurrency, total / rounds),
                    )
                    .await;
                    part.cpu = cpu;
                    loads[i].absorb(part);
                }
            }
        });
        phase_rss.push((format!("after concurrency {concurrency}"), hub.memory_mib("VmRSS")));
        for path in PATHS {
            let l = &mut loads[path.index()];
            let per_request = |d: Duration| format!("{:.3}", ms(d) / l.requests() as f64);
            let (hub_cpu, hub_wait) = if path == Path::Direct {
                ("-".to_string(), "-".to_string())
            } else {
                (per_request(l.cpu.hub), per_request(l.cpu.hub_wait))
            };
            rows.push(vec![
                path.label().to_string(),
                concurrency.to_string(),
                l.requests().to_string(),
                l.failed.to_string(),
                format!("{:.0}", l.per_second()),
                format!("{:.3}", ms(l.percentile(50.0))),
                format!("{:.3}", ms(l.percentile(99.0))),
                hub_cpu,
                hub_wait,
                format!("{:.3}", ms(l.cpu.bench) / l.requests() as f64),
            ]);
        }
        results.push(loads);
    }

    // Streaming: 200 content chunks per answer, as fast as the provider can write them.
    for p in &providers {
        p.update(|o| o.reply = Some(stream_reply()));
    }
    let mut single: [StreamRun; 3] = Default::default();
    let mut parallel: [StreamRun; 3] = Default::default();
    client_rt.block_on(async {
        let clients: Vec<reqwest::Client> = PATHS
            .iter()
            .map(|_| reqwest::Client::builder().pool_max_idle_per_host(STREAMS_PARALLEL).build().unwrap())
            .collect();
        for path in PATHS {
            let i = path.index();
            let warm = streams(&clients[i], &targets.urls[i], &targets.stream_bodies[i], 1, STREAM_WARMUP).await;
            assert_eq!(warm.failed, 0, "{}: warm-up streams failed", path.label());
            let frames = warm.streams[0].frames;
            assert_eq!(frames, STREAM_CHUNKS + 3, "{}: role, {STREAM_CHUNKS} contents, finish, [DONE]", path.label());
        }
        for _ in 0..STREAM_ROUNDS {
            for path in PATHS {
                let i = path.index();
                let (mut part, cpu) = metered(
                    &hub,
                    streams(&clients[i], &targets.urls[i], &targets.stream_bodies[i], 1, STREAMS / STREAM_ROUNDS),
                )
                .await;
                part.cpu = cpu;
                single[i].absorb(part);
            }
        }
        for path in PATHS {
            let i = path.index();
            let (mut part, cpu) = metered(
                &hub,
                streams(&clients[i], &targets.urls[i], &targets.stream_bodies[i], STREAMS_PARALLEL, STREAMS_AGGREGATE),
            )
            .await;
            part.cpu = cpu;
            parallel[i] = part;
        }
    });
    phase_rss.push(("after streaming".to_string(), hub.memory_mib("VmRSS")));
    let mut stream_rows = Vec::new();
    for path in PATHS {
        let i = path.index();
        let (s, a) = (&single[i], &parallel[i]);
        let (ttfb, ttlb) = (s.first_bytes(), s.last_bytes());
        let hub_cpu = if path == Path::Direct {
            "-".to_string()
        } else {
            format!("{:.3}", ms(s.cpu.hub) / (s.streams.len() + s.failed) as f64)
        };
        stream_rows.push(vec![
            path.label().to_string(),
            (s.streams.len() + s.failed).to_string(),
            (s.failed + a.failed).to_string(),
            format!("{:.0}", s.frames() as f64 / s.streams.len().max(1) as f64),
            format!("{:.3}", ms(percentile(&ttfb, 50.0))),
            format!("{:.3}", ms(percentile(&ttlb, 50.0))),
            format!("{:.3}", ms(percentile(&ttlb, 99.0))),
            format!("{:.0}", s.per_stream_rate()),
            format!("{:.0}", a.aggregate_rate()),
            hub_cpu,
        ]);
    }

    let peak = hub.memory_mib("VmHWM");
    let end_rss = hub.memory_mib("VmRSS");
    let hub_cpu_total = hub.cpu();
    // Every inference request the hub served: per hub path, the sanity checks, warm-ups, measured
    // requests and streams (set-up calls are a handful and not counted).
    let hub_served =
        2 * (2 + LOW_WARMUP + LOW_REQUESTS + HIGH_WARMUP + HIGH_REQUESTS + STREAM_WARMUP + STREAMS + STREAMS_AGGREGATE);

    // Targets.
    let (low, high) = results.split_at_mut(1);
    let (low, high) = (&mut low[0], &mut high[0]);
    let over = |loads: &mut [Load; 3], path: Path, p: f64| {
        let base = loads[Path::Direct.index()].percentile(p);
        ms(loads[path.index()].percentile(p)) - ms(base)
    };
    verdicts.push(at_most("c=1 hub + direct participant adds, p50", over(low, Path::HubDirect, 50.0), 0.1, "ms"));
    verdicts.push(at_most("c=1 hub + direct participant adds, p99", over(low, Path::HubDirect, 99.0), 0.3, "ms"));
    verdicts.push(at_most("c=1 hub + tunnel adds, p50", over(low, Path::HubTunnel, 50.0), 0.2, "ms"));
    verdicts.push(at_most("c=1 hub + tunnel adds, p99", over(low, Path::HubTunnel, 99.0), 0.5, "ms"));
    let failed: usize = high.iter().map(|l| l.failed).sum::<usize>() + low.iter().map(|l| l.failed).sum::<usize>();
    verdicts.push(verdict(
        "failed requests, all paths, c=1 and c=32",
        failed.to_string(),
        "0",
        failed == 0,
        String::new(),
    ));
    let share = high[Path::HubTunnel.index()].per_second() / high[Path::Direct.index()].per_second() * 100.0;
    verdicts.push(verdict(
        "c=32 tunnel throughput, % of direct",
        format!("{share:.1} %"),
        ">= 25 %",
        share >= 25.0,
        format!("{:+.1} points", share - 25.0),
    ));
    let direct_share = high[Path::HubDirect.index()].per_second() / high[Path::Direct.index()].per_second() * 100.0;
    for (label, path) in [("hub + direct participant", Path::HubDirect), ("hub + tunnel", Path::HubTunnel)] {
        let rate = single[path.index()].per_stream_rate();
        verdicts.push(verdict(
            format!("streaming relay, one stream, {label}"),
            format!("{rate:.0} chunks/s"),
            ">= 100000 chunks/s",
            rate >= 100_000.0,
            format!("{:+.0} chunks/s", rate - 100_000.0),
        ));
    }

    println!();
    println!("Non-streamed chat completions ({PROVIDERS} providers; {PROVIDERS} direct participants and {PROVIDERS} tunnel participants of limit {MAX_CONCURRENCY}, model \"*\"; each participant has its own provider, the baseline spreads over the same {PROVIDERS} providers)");
    print_table(
        &[
            "path",
            "conc",
            "requests",
            "failed",
            "req/s",
            "p50 ms",
            "p99 ms",
            "hub CPU ms/req",
            "hub waited for CPU ms/req",
            "bench CPU ms/req",
        ],
        &rows,
    );
    println!();
    println!(
        "Streaming, {STREAM_CHUNKS} content chunks per answer, chunk_delay 0 (one stream at a time, then \
         {STREAMS_AGGREGATE} streams {STREAMS_PARALLEL} at a time for the aggregate rate)"
    );
    print_table(
        &[
            "path",
            "streams",
            "failed",
            "frames/stream",
            "TTFB p50 ms",
            "TTLB p50 ms",
            "TTLB p99 ms",
            "chunks/s (1 stream)",
            &format!("chunks/s ({STREAMS_PARALLEL} streams)"),
            "hub CPU ms/stream",
        ],
        &stream_rows,
    );
    println!();
    println!("Hub resources");
    let mut memory = vec![
        vec!["RSS after start".to_string(), format!("{rss_start:.1} MiB")],
        vec!["RSS with 2 rooms, 8 participants, 4 tunnels".to_string(), format!("{rss_ready:.1} MiB")],
    ];
    for (label, rss) in &phase_rss {
        memory.push(vec![format!("RSS {label}"), format!("{rss:.1} MiB")]);
    }
    memory.push(vec!["RSS at the end".to_string(), format!("{end_rss:.1} MiB")]);
    memory.push(vec!["peak RSS (VmHWM) over the run".to_string(), format!("{peak:.1} MiB")]);
    memory.push(vec![
        "hub CPU over the run (user + system)".to_string(),
        format!("{:.2} s", hub_cpu_total.as_secs_f64()),
    ]);
    memory.push(vec![
        format!("hub CPU per inference request over the run ({hub_served} served, streams included)"),
        format!("{:.3} ms", ms(hub_cpu_total) / hub_served as f64),
    ]);
    print_table(&["figure", "value"], &memory);
    println!();
    println!("Targets (overhead = hub path - direct path, same run)");
    let verdict_rows: Vec<Vec<String>> = verdicts
        .iter()
        .map(|v| {
            vec![
                v.metric.clone(),
                v.measured.clone(),
                v.target.clone(),
                if v.pass { "PASS" } else { "MISS" }.to_string(),
                v.margin.clone(),
            ]
        })
        .collect();
    print_table(&["target", "measured", "target", "result", "margin"], &verdict_rows);
    println!();
    println!("c=32 hub + direct participant throughput: {direct_share:.1} % of direct (no target)");
    println!(
        "hub waited for CPU: time the hub's threads were runnable but not running (schedstat); large values mean \
         the {cpus} core(s) were oversubscribed during that phase"
    );
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the end {}", loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let misses = verdicts.iter().filter(|v| !v.pass).count();
    println!("{misses} target(s) missed; bench ran in {:.1} s", bench_started.elapsed().as_secs_f64());

    // Leave cleanly: sessions close their tunnels, providers stop, the hub is killed on drop.
    servers.block_on(async {
        for s in &sessions {
            s.close().await;
        }
    });
    drop(sessions);
    drop(providers);
    servers.shutdown_timeout(Duration::from_secs(2));
    drop(hub);
}
