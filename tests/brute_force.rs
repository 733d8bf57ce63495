//! Password guessing (issue 6, acceptance 5): 1,000 wrong passwords fired at one room of the real
//! binary. The hub keeps answering health checks promptly, guesses beyond the per-room and
//! per-address buckets get 429 with `Retry-After` in each surface's shape, the argon2 work done is
//! what the buckets allow and no more, and the right password still works afterwards.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::util::{call, http, BinHub};

const PASSWORD: &str = "the-Right-one-42";
const GUESSES: usize = 1000;
/// Guesses in flight at once: a patient attacker on one machine.
const FLOOD_CONCURRENCY: usize = 32;

/// Polls `GET /v1/health` every 10 ms from a process of its own (curl, one connection per check,
/// like a monitoring probe), so the flooding client's threads do not delay the probe itself.
fn watch_health(url: &str) -> Child {
    Command::new("nice")
        .args([
            "-n",
            "-10",
            "sh",
            "-c",
            "while :; do curl -s -o /dev/null -w '%{time_total} %{http_code}\\n' \"$0\"; sleep 0.01; done",
        ])
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh and curl")
}

/// The latencies the probe saw (every check must have been a 200).
fn stop_watching(mut probe: Child) -> Vec<Duration> {
    let _ = probe.kill();
    let _ = probe.wait();
    let mut text = String::new();
    let _ = probe.stdout.take().unwrap().read_to_string(&mut text);
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, code)| !code.is_empty())
        .map(|(t, code)| {
            assert_eq!(code, "200", "a health check failed during the flood");
            Duration::from_secs_f64(t.parse().unwrap())
        })
        .collect()
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
    let health = watch_health(&hub.at("/v1/health"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Three surfaces, one room, 1,000 wrong guesses, 32 at a time.
    let started = Instant::now();
    let client = http();
    let results: Vec<(usize, u16, Option<u64>, Value)> = futures_util::stream::iter(0..GUESSES)
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
        .collect()
        .await;
    let flood = started.elapsed();
    let latencies = stop_watching(health);

    let refused = results.iter().filter(|r| r.1 == 401).count();
    let limited: Vec<_> = results.iter().filter(|r| r.1 == 429).collect();
    assert_eq!(refused + limited.len(), GUESSES, "every guess is a 401 or a 429");
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
        "{GUESSES} wrong passwords in {flood:?}: {refused} checked (401), {} limited (429); \
         {} health checks meanwhile, slowest {max:?}",
        limited.len(),
        latencies.len()
    );
    assert!(latencies.len() >= 5, "health was polled during the flood ({} times)", latencies.len());
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
    // cores equally and only the typical check is held to it.
    assert!(median < Duration::from_millis(50), "the median health check took {median:?} during the flood");
    if boosted {
        assert!(max < Duration::from_millis(50), "a health check took {max:?} during the flood");
    } else {
        eprintln!("not root: the hub could not be given a CPU of its own; the slowest check is not held to 50 ms");
        assert!(max < Duration::from_millis(500), "a health check took {max:?} during the flood");
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
