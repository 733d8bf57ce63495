//! The hub's footprint, measured on the release `gambi` binary as a user runs it (issue 2,
//! acceptance 9): process start to the first healthy `/v1/health`, idle RSS with one room, RSS with
//! 10,000 registered participants, and the latency of both participant listings at that size.
//! Prints one aligned table with the targets beside the figures. Not a test: it never fails, it
//! reports.
//!
//! Run with `cargo bench --no-default-features --bench hub`. Linux only for the memory figures
//! (`/proc/<pid>/status`).
#![expect(clippy::unwrap_used, reason = "benchmark: fails loudly")]
#![expect(clippy::print_stdout, reason = "benchmark: the table is its output")]

#[path = "support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gambi::hub::registry::{HealthRules, Registry};
use gambi::hub::validate::{self, Surface};
use gambi::hub::EventBus;
use gambi::protocol::ConnectionKind;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_gambi");
const START_RUNS: usize = 10;
const PARTICIPANTS: usize = 10_000;
const REGISTER_CONCURRENCY: usize = 16;
const LIST_RUNS: usize = 50;

/// A running hub, killed (and reaped) when dropped, whatever happens to the benchmark.
struct HubProcess {
    child: Child,
    url: String,
}

impl HubProcess {
    /// Spawns `gambi hub serve` on a free port and reads where it listens; returns it with the
    /// instant it was spawned.
    fn spawn() -> (HubProcess, Instant) {
        let spawned = Instant::now();
        let (child, url) = support::spawn_hub(BIN, &["--participant-timeout", "1h", "--max-participants", "20000"]);
        (HubProcess { child, url }, spawned)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/<pid>/status`, in kB for the memory ones.
    fn status_field(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..].trim_start_matches(':').split_whitespace().next()?.parse().ok()
    }

    fn rss_mib(&self) -> Option<f64> {
        self.status_field("VmRSS").map(|kb| kb as f64 / 1024.0)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /v1/health` over a fresh plain socket; true on a 200. Kept free of any client library so
/// the start figure measures the hub, not the client's set-up.
fn healthy(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    let Ok(mut sock) = TcpStream::connect(addr) else { return false };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if sock.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A participant as a real one registers: specs, runtime config, capabilities, loaded models.
fn registration(i: usize) -> Value {
    json!({
        "nickname": format!("worker-{i}"),
        "model": if i % 3 == 0 { "llama3.1:8b" } else { "qwen2.5-coder:7b" },
        "endpoint": format!("http://192.168.{}.{}:11434", (i / 250) % 256, i % 250 + 2),
        "specs": {"gpu": "NVIDIA GeForce RTX 4090", "vram": 24, "ram": 64, "cpu": "AMD Ryzen 9 7950X 16-Core Processor"},
        "config": {"temperature": 0.7, "max_tokens": 2048, "top_p": 0.9, "instructions": "Answer briefly."},
        "capabilities": {"openResponses": "unknown", "chatCompletions": "supported"},
        "maxConcurrency": 2,
        "loadedModels": [{"name": "llama3.1:8b", "vram": 5.6}],
    })
}

struct Row {
    metric: String,
    measured: String,
    target: String,
    verdict: &'static str,
}

fn row(metric: &str, measured: String, target: &str, pass: Option<bool>) -> Row {
    let verdict = match pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "",
    };
    Row { metric: metric.into(), measured, target: target.into(), verdict }
}

fn print_table(rows: &[Row]) {
    let header = ["metric", "measured", "target", "result"];
    let w0 = rows.iter().map(|r| r.metric.len()).chain([header[0].len()]).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.measured.len()).chain([header[1].len()]).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.target.len()).chain([header[2].len()]).max().unwrap_or(0);
    println!("{:<w0$}  {:>w1$}  {:<w2$}  {}", header[0], header[1], header[2], header[3]);
    println!("{}", "-".repeat(w0 + w1 + w2 + 14));
    for r in rows {
        println!("{:<w0$}  {:>w1$}  {:<w2$}  {}", r.metric, r.measured, r.target, r.verdict);
    }
}

fn main() {
    let mut rows = Vec::new();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("gambi hub benchmark: {BIN}");
    println!("machine: {cpus} CPU(s); client: single-threaded tokio runtime, reqwest over keep-alive loopback\n");

    // (a) Process start to the first healthy /v1/health.
    let mut starts = Vec::with_capacity(START_RUNS);
    for _ in 0..START_RUNS {
        let (hub, spawned) = HubProcess::spawn();
        let deadline = spawned + Duration::from_secs(10);
        while !healthy(&hub.url) {
            assert!(Instant::now() < deadline, "the hub never answered /v1/health");
            std::thread::sleep(Duration::from_millis(1));
        }
        starts.push(spawned.elapsed());
        drop(hub);
    }
    starts.sort();
    let start_median = percentile(&starts, 50.0);
    let start_max = *starts.last().unwrap();
    rows.push(row(
        &format!("start -> first healthy /v1/health, median of {START_RUNS}"),
        format!("{:.1} ms", ms(start_median)),
        "<= 50 ms",
        Some(start_median <= Duration::from_millis(50)),
    ));
    rows.push(row(
        &format!("start -> first healthy /v1/health, max of {START_RUNS}"),
        format!("{:.1} ms", ms(start_max)),
        "<= 50 ms",
        Some(start_max <= Duration::from_millis(50)),
    ));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(REGISTER_CONCURRENCY).build().unwrap();
        let (hub, _) = HubProcess::spawn();
        let url = hub.url.clone();

        // (b) Idle RSS after start and one room.
        let res = client.post(format!("{url}/v1/rooms")).json(&json!({"name": "Bench room"})).send().await.unwrap();
        assert_eq!(res.status(), 201);
        let created: Value = res.json().await.unwrap();
        let code = created["data"]["room"]["code"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = hub.rss_mib().unwrap_or(f64::NAN);
        let threads = hub.status_field("Threads").unwrap_or(0);
        rows.push(row("idle RSS, after start and one room", format!("{idle:.1} MiB"), "<= 15 MiB", Some(idle <= 15.0)));

        // (c) RSS with 10,000 participants, registered through the /v1 upsert.
        let registering = Instant::now();
        let statuses: Vec<u16> = futures_util::stream::iter(0..PARTICIPANTS)
            .map(|i| {
                let req = client.put(format!("{url}/v1/rooms/{code}/participants/worker-{i}")).json(&registration(i));
                async move {
                    let res = req.send().await.unwrap();
                    let status = res.status().as_u16();
                    let _ = res.bytes().await;
                    status
                }
            })
            .buffer_unordered(REGISTER_CONCURRENCY)
            .collect()
            .await;
        let register_took = registering.elapsed();
        assert!(statuses.iter().all(|s| *s == 201), "every registration is a 201");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let loaded = hub.rss_mib().unwrap_or(f64::NAN);
        rows.push(row(
            &format!("RSS with {PARTICIPANTS} participants"),
            format!("{loaded:.1} MiB"),
            "<= 60 MiB",
            Some(loaded <= 60.0),
        ));

        // (d) Participant list latency, both surfaces, over one keep-alive connection each.
        let mut sizes = Vec::new();
        for (label, path) in [
            ("GET /v1/rooms/:code/participants", format!("/v1/rooms/{code}/participants")),
            ("GET /rooms/:code/participants (classic)", format!("/rooms/{code}/participants")),
        ] {
            let target = format!("{url}{path}");
            let mut size = 0;
            for _ in 0..3 {
                let body = client.get(&target).send().await.unwrap().bytes().await.unwrap();
                size = body.len();
            }
            let listed: Value =
                serde_json::from_slice(&client.get(&target).send().await.unwrap().bytes().await.unwrap()).unwrap();
            let count =
                listed.get("data").or_else(|| listed.get("participants")).and_then(Value::as_array).map(Vec::len);
            assert_eq!(count, Some(PARTICIPANTS), "{label} lists everyone");
            let mut times = Vec::with_capacity(LIST_RUNS);
            for _ in 0..LIST_RUNS {
                let t = Instant::now();
                let res = client.get(&target).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let body = res.bytes().await.unwrap();
                times.push(t.elapsed());
                size = body.len();
            }
            times.sort();
            let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
            rows.push(row(
                &format!("{label}, p50 of {LIST_RUNS}"),
                format!("{:.2} ms", ms(p50)),
                "<= 5 ms",
                Some(p50 <= Duration::from_millis(5)),
            ));
            rows.push(row(
                &format!("{label}, p99 of {LIST_RUNS}"),
                format!("{:.2} ms", ms(p99)),
                "<= 5 ms",
                Some(p99 <= Duration::from_millis(5)),
            ));
            sizes.push((label, size));
        }
        for (label, size) in sizes {
            rows.push(row(
                &format!("{label}, response size"),
                format!("{:.2} MiB", size as f64 / (1024.0 * 1024.0)),
                "",
                None,
            ));
        }
        let after = hub.rss_mib().unwrap_or(f64::NAN);
        let peak = hub.status_field("VmHWM").map(|kb| kb as f64 / 1024.0).unwrap_or(f64::NAN);
        rows.push(row("RSS after the listings", format!("{after:.1} MiB"), "", None));
        rows.push(row("peak RSS (VmHWM) over the whole run", format!("{peak:.1} MiB"), "", None));
        rows.push(row(
            &format!("registering {PARTICIPANTS} participants ({REGISTER_CONCURRENCY} at a time)"),
            format!("{:.0} /s", PARTICIPANTS as f64 / register_took.as_secs_f64()),
            "",
            None,
        ));
        rows.push(row("hub threads when idle", threads.to_string(), "", None));
        drop(hub);
    });

    print_table(&rows);
    let misses = rows.iter().filter(|r| r.verdict == "MISS").count();
    println!("\n{} target(s) missed", misses);

    println!("\nwhere the list time goes (in this process, the same registry code, no HTTP):");
    print_table(&list_breakdown());
}

/// Splits the listing's cost: serializing 10,000 participants as the hub does today, and, for
/// comparison, only concatenating JSON already serialized per participant (what a per-participant
/// cache, refreshed on each change, would leave to do per request).
fn list_breakdown() -> Vec<Row> {
    let bus = EventBus::new(4096, 512);
    let rules = HealthRules {
        participant_timeout: Duration::from_secs(3600),
        offline_retention: Duration::from_secs(600),
        room_ttl: None,
    };
    let registry = Registry::new(bus, rules, Vec::new());
    let code = registry.create_room("Bench room".into(), None, None).room.code;
    for i in 0..PARTICIPANTS {
        let (reg, _) = validate::registration(&registration(i), Surface::V1).unwrap();
        registry.upsert(&code, &format!("worker-{i}"), reg, ConnectionKind::Tunnel).unwrap();
    }
    let mut serialize = Vec::with_capacity(LIST_RUNS);
    let mut size = 0;
    for _ in 0..LIST_RUNS {
        let t = Instant::now();
        let body = registry.participants_json(&code).unwrap();
        serialize.push(t.elapsed());
        size = body.len();
    }
    serialize.sort();
    let cached: Vec<Vec<u8>> =
        registry.participants(&code).unwrap().iter().map(|p| serde_json::to_vec(p).unwrap()).collect();
    let mut concat = Vec::with_capacity(LIST_RUNS);
    for _ in 0..LIST_RUNS {
        let t = Instant::now();
        let mut body = Vec::with_capacity(size + 16);
        body.push(b'[');
        for (i, p) in cached.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(p);
        }
        body.push(b']');
        std::hint::black_box(&body);
        concat.push(t.elapsed());
    }
    concat.sort();
    vec![
        row(
            &format!("Registry::participants_json, {PARTICIPANTS} participants, p50"),
            format!("{:.2} ms", ms(percentile(&serialize, 50.0))),
            "",
            None,
        ),
        row(
            &format!("Registry::participants_json, {PARTICIPANTS} participants, p99"),
            format!("{:.2} ms", ms(percentile(&serialize, 99.0))),
            "",
            None,
        ),
        row(
            "serialization throughput",
            format!("{:.0} MB/s", size as f64 / percentile(&serialize, 50.0).as_secs_f64() / 1e6),
            "",
            None,
        ),
        row(
            "concatenating per-participant cached JSON, p50",
            format!("{:.2} ms", ms(percentile(&concat, 50.0))),
            "",
            None,
        ),
    ]
}
