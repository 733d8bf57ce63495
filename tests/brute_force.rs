//! Password guessing (issue 6, acceptance 5): 1,000 wrong passwords fired at one room of the real
//! binary. The hub keeps answering health checks promptly, guesses beyond the per-room and
//! per-address buckets get 429 with `Retry-After` in each surface's shape, the argon2 work done is
//! what the buckets allow and no more, and the right password still works afterwards.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::util::{call, http, BinHub};

const PASSWORD: &str = "the-Right-one-42";
const GUESSES: usize = 1000;
/// Guesses in flight at once: a patient attacker on one machine.
const FLOOD_CONCURRENCY: usize = 32;

/// Polls `GET /v1/health` every 10 ms from a process of its own (curl, one connection per check,
/// like a monitoring probe), so the flooding client's threads do not delay the probe itself. Each
/// line: the check's time, its status, and the wall clock when it ended.
fn watch_health(url: &str) -> Probe {
    let mut child = Command::new("nice")
        .args([
            "-n",
            "-10",
            "bash",
            "-c",
            "while :; do curl -s -o /dev/null -w '%{time_total} %{http_code}' \"$0\"; echo \" $EPOCHREALTIME\"; sleep 0.01; done",
        ])
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash and curl");
    let checks = Arc::new(Mutex::new(Vec::new()));
    let seen = checks.clone();
    let stdout = child.stdout.take().expect("the probe's stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut fields = line.split_whitespace();
            let (Some(took), Some(code), Some(ended)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let (Ok(took), Ok(ended)) = (took.parse::<f64>(), ended.parse::<f64>()) else { continue };
            let check = Check { took: Duration::from_secs_f64(took), ended, ok: code == "200" };
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(check);
        }
    });
    Probe { child, checks, reader }
}

/// The health probe, read as it goes so the flood can last until it has seen enough checks.
struct Probe {
    child: Child,
    checks: Arc<Mutex<Vec<Check>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Probe {
    /// How many checks ended after `since` (seconds since the epoch).
    fn count_since(&self, since: f64) -> usize {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|c| c.ended > since).count()
    }
}

/// One health check as the probe saw it.
#[derive(Clone, Copy, Debug)]
struct Check {
    took: Duration,
    /// Seconds since the epoch when the answer arrived.
    ended: f64,
    ok: bool,
}

/// The checks the probe saw (every one must have been a 200).
fn stop_watching(mut probe: Probe) -> Vec<Check> {
    let _ = probe.child.kill();
    let _ = probe.child.wait();
    let _ = probe.reader.join();
    let checks = probe.checks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for check in &checks {
        assert!(check.ok, "a health check failed during the flood");
    }
    checks
}

/// This machine is a virtual one: its host can take a CPU away for tens of milliseconds (steal
/// time), and then nothing on it runs, the hub included. Samples every CPU's steal counter so a
/// slow check can be told apart from a stalled machine.
struct StealClock {
    stop: Arc<AtomicBool>,
    samples: std::thread::JoinHandle<Vec<(f64, Vec<u64>)>>,
}

impl StealClock {
    fn start() -> StealClock {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let samples = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(steal) = steal_ticks() {
                    samples.push((epoch(), steal));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            samples
        });
        StealClock { stop, samples }
    }

    /// The samples taken, in order.
    fn stop(self) -> Vec<(f64, Vec<u64>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.samples.join().unwrap_or_default()
    }
}

/// Per-CPU steal, in USER_HZ ticks (10 ms), from /proc/stat; None where there is no such file.
fn steal_ticks() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(
        stat.lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .filter_map(|l| l.split_whitespace().nth(8)?.parse().ok())
            .collect(),
    )
}

fn epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The most time the host took from any one CPU while `check` was in flight: the steal between
/// the last sample before it began and the first after it ended.
fn stolen_during(check: &Check, samples: &[(f64, Vec<u64>)]) -> Duration {
    let began = check.ended - check.took.as_secs_f64();
    let before = samples.iter().rev().find(|(t, _)| *t <= began);
    let after = samples.iter().find(|(t, _)| *t >= check.ended);
    let (Some((_, before)), Some((_, after))) = (before, after) else { return Duration::ZERO };
    let ticks = after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).max().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Raises every thread of `pid` ten nice levels (needs root): on a LAN the attacker's CPU is not
/// the hub's, here both share two cores. Relative, so the hub's argon2 threads stay as far below
/// its other threads as the hub put them. False where not allowed.
fn boost(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(Result::ok).all(|task| {
        let Some(nice) = std::fs::read_to_string(task.path().join("stat")).ok().and_then(|stat| {
            // Field 19 is the nice value; fields start after the command's closing parenthesis.
            stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse::<i32>().ok()
        }) else {
            return false;
        };
        Command::new("renice")
            .args(["-n", &(nice - 10).max(-20).to_string(), "-p"])
            .arg(task.file_name())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_wrong_passwords_are_rate_limited_and_the_hub_stays_responsive() {
    let hub = BinHub::start_with_env(&[], &[("RUST_LOG", "info")]);
    let (status, _, v) =
        call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Vault", "password": PASSWORD}))).await;
    assert_eq!(status, 201, "{v}");
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();

    // The hub and the probe run as if on machines of their own; the flood (this process) does not.
    let boosted = boost(hub.child.id());
    let steal = StealClock::start();
    let health = watch_health(&hub.at("/v1/health"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Three surfaces, one room, 1,000 wrong guesses, 32 at a time; more in rounds of 100 if the
    // probe (slow to start its curls on a loaded machine) has not yet seen five checks meanwhile.
    let started = Instant::now();
    let flood_began = epoch();
    let client = http();
    let fire = |range: std::ops::Range<usize>| {
        futures_util::stream::iter(range)
            .map(|i| {
                let guess = format!("guess-{i}");
                let req = match i % 3 {
                    0 => client.post(hub.at(&format!("/rooms/{code}/join"))).json(&json!({
                        "id": format!("g{i}"), "nickname": "g", "model": "m", "endpoint": "http://127.0.0.1:9", "password": guess
                    })),
                    1 => client.put(hub.at(&format!("/v1/rooms/{code}/participants/g{i}"))).json(&json!({
                        "nickname": "g", "model": "m", "endpoint": "http://127.0.0.1:9", "password": guess
                    })),
                    _ => client
                        .post(hub.at(&format!("/rooms/{code}/v1/chat/completions")))
                        .bearer_auth(guess)
                        .json(&json!({"model": "*", "messages": []})),
                };
                async move {
                    let res = req.send().await.unwrap();
                    let status = res.status().as_u16();
                    let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                    let body = res.json::<Value>().await.unwrap_or(Value::Null);
                    (i, status, retry, body)
                }
            })
            .buffer_unordered(FLOOD_CONCURRENCY)
            .collect::<Vec<(usize, u16, Option<u64>, Value)>>()
    };
    let mut results = fire(0..GUESSES).await;
    while health.count_since(flood_began) < 5 && started.elapsed() < Duration::from_secs(20) {
        let next = results.len();
        results.extend(fire(next..next + 100).await);
    }
    let guesses = results.len();
    let flood = started.elapsed();
    let during = health.count_since(flood_began);
    let checks = stop_watching(health);
    let steal = steal.stop();
    let latencies: Vec<Duration> = checks.iter().map(|c| c.took).collect();

    let refused = results.iter().filter(|r| r.1 == 401).count();
    let limited: Vec<_> = results.iter().filter(|r| r.1 == 429).collect();
    assert_eq!(refused + limited.len(), guesses, "every guess is a 401 or a 429");
    assert!(!limited.is_empty(), "guesses beyond the limit get 429");
    for (i, _, retry, body) in &limited {
        assert!(retry.is_some_and(|s| (1..=5).contains(&s)), "429 carries Retry-After: {retry:?}");
        match i % 3 {
            0 => assert!(body["error"].as_str().is_some_and(|m| m.contains("Too many")), "classic: {body}"),
            1 => assert_eq!(body["error"]["code"], "RATE_LIMITED", "/v1: {body}"),
            _ => assert_eq!(body["error"]["type"], "rate_limit_error", "inference: {body}"),
        }
    }
    // Only guesses the buckets let through got an argon2 run (those are the 401s): at most the
    // address's 5 a second, plus its first burst.
    let allowed = 5.0 * flood.as_secs_f64() + 5.0 + 2.0;
    assert!((refused as f64) <= allowed, "{refused} argon2 checks in {flood:?} (allowed {allowed})");

    let mut sorted = latencies.clone();
    sorted.sort();
    let max = sorted.last().copied().unwrap_or_default();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let p90 = sorted.get(sorted.len() * 9 / 10).copied().unwrap_or_default();
    eprintln!("health latency during the flood: median {median:?}, p90 {p90:?}, max {max:?}");
    eprintln!(
        "{guesses} wrong passwords in {flood:?}: {refused} checked (401), {} limited (429); \
         {during} health checks meanwhile, slowest {max:?}",
        limited.len(),
    );
    assert!(during >= 5, "health was polled during the flood ({during} times)");
    // What the hub itself took to answer each health check (its request log's `ms=`), apart from
    // the time the attacking client, on the same two cores, keeps the CPU from the poller.
    // The hub logs a request once it has answered it, and this process reads that log through a
    // pipe: the last check's line may land a moment after the probe has its answer.
    let logged = || -> Vec<f64> {
        hub.log()
            .lines()
            .filter(|l| l.contains("path=/v1/health"))
            .filter_map(|l| l.split(" ms=").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answered = logged();
    while answered.len() < latencies.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        answered = logged();
    }
    answered.sort_by(f64::total_cmp);
    let slowest = answered.last().copied().unwrap_or(f64::MAX);
    eprintln!(
        "the hub answered {} health checks in a median {:.2} ms, the slowest in {slowest:.2} ms",
        answered.len(),
        answered.get(answered.len() / 2).copied().unwrap_or_default()
    );
    assert!(answered.len() >= latencies.len(), "every health check is in the hub's log");
    assert!(slowest < 50.0, "the hub took {slowest} ms to answer a health check during the flood");
    // The promise is "under 50 ms". With the hub and the probe at the priority of machines of their
    // own, every check keeps it; where that cannot be arranged (not root), the flood shares the
    // cores equally and only the typical check is held to it. A check is never charged for time
    // the virtual machine's host took the CPU away from everything on it (its steal time, counted
    // in 10 ms ticks); the typical check is held to 50 ms with no allowance at all.
    assert!(median < Duration::from_millis(50), "the median health check took {median:?} during the flood");
    assert!(p90 < Duration::from_millis(50), "one health check in ten took {p90:?} or more during the flood");
    let limit = if boosted { Duration::from_millis(50) } else { Duration::from_millis(500) };
    if !boosted {
        eprintln!("not root: the hub could not be given a CPU of its own; the slowest check is held to 500 ms");
    }
    for check in &checks {
        if check.took < limit {
            continue;
        }
        let stolen = stolen_during(check, &steal);
        eprintln!("a health check took {:?}; the host held a CPU for {stolen:?} of it", check.took);
        assert!(
            check.took.saturating_sub(stolen) < limit,
            "a health check took {:?} during the flood ({stolen:?} of it stolen by the host)",
            check.took
        );
    }

    // After waiting for the bucket, the right password works.
    let wait = limited.iter().filter_map(|r| r.2).max().unwrap_or(1);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, v) = call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/owner"))).json(&json!({
        "nickname": "owner", "model": "m", "endpoint": "http://127.0.0.1:9", "password": PASSWORD
    })))
    .await;
    assert_eq!(status, 201, "{v}");
    // The verified key then passes on the inference plane too, without another guess.
    let (status, _, v) = call(http().get(hub.at(&format!("/rooms/{code}/v1/models"))).bearer_auth(PASSWORD)).await;
    assert_eq!(status, 200, "{v}");
}
