//! `GET /metrics` after a known workload: a real hub, the fake provider shared through a real
//! participant session and tunnel, requests through the room's OpenAI endpoint (plain, streamed,
//! one that waits in the queue, one the provider fails with 500, one it answers with garbage), and
//! the exposition parsed by the reference Prometheus client's parser (Python `prometheus_client`,
//! `tests/python/prometheus_parse.py`). Counts are checked exactly, the histograms against the
//! `llm.complete` events the room published, and who may read it: this machine, or a room's host
//! for that room alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::fake_provider::{FakeOptions, FakeProvider, Mode};
use crate::inference::{chat, post_sse, share, wait_for};
use crate::util::{call, http, Sse, TestHub, PATIENCE};

/// The stages `llm.error` names, as the hub labels them.
const STAGES: [&str; 8] = ["connect", "request", "status", "stream", "decode", "client", "tunnel", "other"];

#[derive(Debug, Deserialize)]
struct Parsed {
    families: Vec<Family>,
}

#[derive(Debug, Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A Python with `prometheus_client`: `GAMBI_TEST_PYTHON_METRICS`, else the suite's
/// (`GAMBI_TEST_PYTHON`), else `python3`.
fn python() -> String {
    ["GAMBI_TEST_PYTHON_METRICS", "GAMBI_TEST_PYTHON"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "python3".into())
}

/// The exposition as the reference parser reads it.
async fn parse(text: &str) -> Vec<Family> {
    let text = text.to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/prometheus_parse.py");
        let python = python();
        let mut child = std::process::Command::new(&python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} (GAMBI_TEST_PYTHON_METRICS or GAMBI_TEST_PYTHON): {e}"));
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition (or is missing: `pip install -r tests/python/requirements.txt` \
         into GAMBI_TEST_PYTHON_METRICS or GAMBI_TEST_PYTHON):\n{stderr}"
    );
    serde_json::from_slice::<Parsed>(&out.stdout).unwrap().families
}

/// `GET /metrics` over real HTTP: (status, content type, body).
async fn scrape(hub: &TestHub) -> (u16, String, String) {
    let res = http().get(hub.at("/metrics")).send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
    (status, content_type.unwrap_or_default(), res.text().await.unwrap())
}

fn family<'a>(families: &'a [Family], name: &str) -> &'a Family {
    families.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no family {name}"))
}

/// The value of the one sample named `sample` whose labels are exactly `labels`.
fn value(families: &[Family], sample: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let found: Vec<f64> = families
        .iter()
        .flat_map(|f| &f.samples)
        .filter(|s| s.name == sample && s.labels == want)
        .map(|s| s.value)
        .collect();
    assert_eq!(found.len(), 1, "{sample} {want:?}: {found:?}");
    found[0]
}

/// A histogram's buckets for `labels` as (le, cumulative count), in the order served.
fn buckets(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    family(families, name)
        .samples
        .iter()
        .filter(|s| s.name == bucket)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .filter(|s| s.labels.len() == labels.len() + 1)
        .map(|s| {
            let le = &s.labels["le"];
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, s.value)
        })
        .collect()
}

/// Checks a histogram against the observations it should hold: every bucket's count is how many
/// are ≤ its bound (so cumulative, ending in `+Inf` with the count), and `_sum`/`_count` agree.
fn check_histogram(families: &[Family], name: &str, labels: &[(&str, &str)], seen: &[f64]) {
    let got = buckets(families, name, labels);
    assert!(got.len() >= 2, "{name} {labels:?}: {got:?}");
    assert_eq!(got.last().unwrap().0, f64::INFINITY, "the last bucket is +Inf: {got:?}");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "ascending, cumulative: {got:?}");
    for (le, count) in &got {
        // Observations go in as ms rounded to 0.01 and are divided by 1000 on both sides.
        let expected = seen.iter().filter(|v| **v <= *le).count();
        assert_eq!(*count, expected as f64, "{name} {labels:?} le={le}: {got:?} for {seen:?}");
    }
    assert_eq!(value(families, &format!("{name}_count"), labels), seen.len() as f64, "{name} {labels:?}");
    let sum = value(families, &format!("{name}_sum"), labels);
    assert!((sum - seen.iter().sum::<f64>()).abs() < 1e-6, "{name} {labels:?}: {sum} vs {seen:?}");
}

/// Every family once, typed and described; names and label sets as the README lists them.
fn check_shape(families: &[Family], rooms: &[&str], participants: &[&str]) {
    let mut names = BTreeSet::new();
    for f in families {
        assert!(names.insert(f.name.as_str()), "family {} is served in two pieces", f.name);
        assert!(["counter", "gauge", "histogram"].contains(&f.kind.as_str()), "{} is {}", f.name, f.kind);
        assert!(!f.help.is_empty(), "{} has no HELP", f.name);
        for s in &f.samples {
            let mut keys: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            if f.kind == "histogram" && s.name.ends_with("_bucket") {
                assert!(keys.remove("le"), "{} without le", s.name);
            }
            if f.name.ends_with("errors") {
                assert!(keys.remove("stage"), "{} without stage", s.name);
                assert!(STAGES.contains(&s.labels["stage"].as_str()), "{s:?}");
            }
            let expected: BTreeSet<&str> = if f.name.starts_with("gambi_participant_") {
                ["room", "participant"].into()
            } else if f.name.starts_with("gambi_room_") {
                ["room"].into()
            } else {
                assert!(f.name.starts_with("gambi_hub_") || f.name.starts_with("process_"), "{}", f.name);
                BTreeSet::new()
            };
            assert_eq!(keys, expected, "labels of {s:?}");
            if let Some(room) = s.labels.get("room") {
                assert!(rooms.contains(&room.as_str()), "{s:?}");
            }
            if let Some(id) = s.labels.get("participant") {
                assert!(participants.contains(&id.as_str()), "{s:?}");
            }
            assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
        }
    }
}

/// Every family a scrape by this machine serves, as the parser names them (counters without
/// `_total`).
const HUB_FAMILIES: [(&str, &str); 7] = [
    ("gambi_hub_connections", "gauge"),
    ("gambi_hub_event_streams", "gauge"),
    ("gambi_hub_tunnels", "gauge"),
    ("gambi_hub_rooms", "gauge"),
    ("gambi_hub_participants", "gauge"),
    ("gambi_hub_start_time_seconds", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
];
const ROOM_FAMILIES: [(&str, &str); 12] = [
    ("gambi_room_participants", "gauge"),
    ("gambi_room_requests", "counter"),
    ("gambi_room_completed", "counter"),
    ("gambi_room_errors", "counter"),
    ("gambi_room_in_flight", "gauge"),
    ("gambi_room_queue_depth", "gauge"),
    ("gambi_room_queue_wait_seconds", "histogram"),
    ("gambi_room_ttft_seconds", "histogram"),
    ("gambi_room_duration_seconds", "histogram"),
    ("gambi_room_input_tokens", "counter"),
    ("gambi_room_output_tokens", "counter"),
    ("gambi_room_tokens_per_second", "gauge"),
];
const PARTICIPANT_FAMILIES: [(&str, &str); 11] = [
    ("gambi_participant_connected", "gauge"),
    ("gambi_participant_in_flight", "gauge"),
    ("gambi_participant_max_concurrency", "gauge"),
    ("gambi_participant_requests", "counter"),
    ("gambi_participant_completed", "counter"),
    ("gambi_participant_errors", "counter"),
    ("gambi_participant_ttft_seconds", "histogram"),
    ("gambi_participant_duration_seconds", "histogram"),
    ("gambi_participant_input_tokens", "counter"),
    ("gambi_participant_output_tokens", "counter"),
    ("gambi_participant_tokens_per_second", "gauge"),
];

fn kinds(families: &[Family]) -> BTreeMap<String, String> {
    families.iter().map(|f| (f.name.clone(), f.kind.clone())).collect()
}

fn expected_kinds(with_hub: bool) -> BTreeMap<String, String> {
    let hub = if with_hub { &HUB_FAMILIES[..] } else { &[] };
    hub.iter().chain(&ROOM_FAMILIES).chain(&PARTICIPANT_FAMILIES).map(|(n, k)| (n.to_string(), k.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_a_known_workload_are_exact_and_parse() {
    const PASSWORD: &str = "hunter2-metrics-secret";
    let hub = TestHub::start().await;
    let (code, host_token) = hub.room("Metrics", None).await;
    let (locked, locked_host_token) = hub.room("Locked", Some(PASSWORD)).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let session = share(&hub, &code, "w-metrics", &provider, "llama3").await;
    // Registered into the protected room, its tunnel never opened: known, not reachable.
    let idle = hub.participant(&locked, "w-idle", Some(PASSWORD)).await;
    let idle_token = idle["data"]["participantToken"].as_str().unwrap().to_string();
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));

    // Five completions, two of them streamed; one waits in the queue behind a slow one.
    let (status, _, v) = call(http().post(&url).json(&chat("*", "one two three"))).await;
    assert_eq!(status, 200, "{v}");
    let mut streamed = chat("*", "four five");
    streamed["stream"] = json!(true);
    let (status, _) = post_sse(&url, &streamed).await;
    assert_eq!(status, 200);
    provider.update(|o| o.first_byte_delay = Duration::from_millis(1000));
    let slow = tokio::spawn(call(http().post(&url).json(&chat("*", "six"))));
    assert!(provider.wait_in_flight(1, PATIENCE).await);
    let mut queued_body = chat("*", "seven eight");
    queued_body["stream"] = json!(true);
    let queued = tokio::spawn({
        let url = url.clone();
        async move { post_sse(&url, &queued_body).await }
    });
    wait_for(|| async { hub.hub.registry().queued(&code) == 1 }).await;
    let (status, _, v) = slow.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(queued.await.unwrap().0, 200, "the queued request was served");
    provider.update(|o| o.first_byte_delay = Duration::ZERO);
    let (status, _, v) = call(http().post(&url).json(&chat("*", "nine ten eleven twelve"))).await;
    assert_eq!(status, 200, "{v}");
    // One the provider fails with 500, one it answers with bytes that are not JSON.
    provider.set_mode(Mode::Fail500);
    let (status, _, _) = call(http().post(&url).json(&chat("*", "fails"))).await;
    assert_eq!(status, 500);
    provider.set_mode(Mode::Garbage);
    let (status, _, _) = call(http().post(&url).json(&chat("*", "garbled"))).await;
    assert_eq!(status, 502);
    provider.set_mode(Mode::Normal);

    // What the room published: five completions (their metrics) and two errors (their stages).
    let mut ttft = Vec::new();
    let mut duration = Vec::new();
    let mut stages = BTreeMap::new();
    while ttft.len() < 5 || stages.values().sum::<u32>() < 2 {
        let e = tokio::time::timeout(PATIENCE, events.next()).await.expect("the room's events");
        match e.event.as_str() {
            "llm.complete" => {
                let m = &e.json()["data"]["metrics"];
                ttft.push(m["ttftMs"].as_f64().unwrap() / 1000.0);
                duration.push(m["durationMs"].as_f64().unwrap() / 1000.0);
            }
            "llm.error" => *stages.entry(e.json()["data"]["stage"].as_str().unwrap().to_string()).or_insert(0) += 1,
            _ => {}
        }
    }
    assert_eq!(stages, BTreeMap::from([("decode".to_string(), 1), ("status".to_string(), 1)]));

    let (status, content_type, text) = scrape(&hub).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    for secret in [PASSWORD, host_token.as_str(), locked_host_token.as_str(), idle_token.as_str()] {
        assert!(!text.contains(secret), "a secret in the metrics");
    }
    let session_token = session.participant_token().unwrap();
    assert!(!text.contains(session_token) && !text.contains("gp_") && !text.contains("gh_"), "a token: {text}");
    assert!(!text.contains(" -0\n"), "zero is written 0: {text}");
    let families = parse(&text).await;
    assert_eq!(kinds(&families), expected_kinds(true), "{text}");
    check_shape(&families, &[&code, &locked], &["w-metrics", "w-idle"]);

    // The hub.
    assert_eq!(value(&families, "gambi_hub_rooms", &[]), 2.0);
    assert_eq!(value(&families, "gambi_hub_participants", &[]), 2.0);
    assert_eq!(value(&families, "gambi_hub_tunnels", &[]), 1.0);
    assert_eq!(value(&families, "gambi_hub_event_streams", &[]), 1.0, "the one stream this test holds");
    assert!(value(&families, "gambi_hub_connections", &[]) >= 1.0, "this scrape's own, at least");
    let rss = value(&families, "process_resident_memory_bytes", &[]);
    assert!(rss > 1024.0 * 1024.0, "{rss}");
    let started = value(&families, "gambi_hub_start_time_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started <= now && started > now - 600.0, "{started} {now}");

    // The room: each request once, each failed try by stage, tokens (the fake counts words: 12
    // in, and each answer is "echo:" and the prompt back, 17 out), nothing in flight or waiting.
    let room = [("room", code.as_str())];
    assert_eq!(value(&families, "gambi_room_requests_total", &room), 7.0);
    assert_eq!(value(&families, "gambi_room_completed_total", &room), 5.0);
    for stage in STAGES {
        let expected = stages.get(stage).copied().unwrap_or(0);
        let labels = [("room", code.as_str()), ("stage", stage)];
        assert_eq!(value(&families, "gambi_room_errors_total", &labels), f64::from(expected), "{stage}");
    }
    assert_eq!(value(&families, "gambi_room_input_tokens_total", &room), 12.0);
    assert_eq!(value(&families, "gambi_room_output_tokens_total", &room), 17.0);
    assert_eq!(value(&families, "gambi_room_in_flight", &room), 0.0);
    assert_eq!(value(&families, "gambi_room_queue_depth", &room), 0.0);
    assert_eq!(value(&families, "gambi_room_participants", &room), 1.0);
    check_histogram(&families, "gambi_room_ttft_seconds", &room, &ttft);
    check_histogram(&families, "gambi_room_duration_seconds", &room, &duration);
    // One request queued, and waited for most of the slow one's second.
    assert_eq!(value(&families, "gambi_room_queue_wait_seconds_count", &room), 1.0);
    let waited = value(&families, "gambi_room_queue_wait_seconds_sum", &room);
    assert!((0.05..10.0).contains(&waited), "{waited}");
    check_histogram(&families, "gambi_room_queue_wait_seconds", &room, &[waited]);
    assert!(value(&families, "gambi_room_tokens_per_second", &room) > 0.0);

    // Its participant: the same, per try, and its tunnel up.
    let me = [("room", code.as_str()), ("participant", "w-metrics")];
    assert_eq!(value(&families, "gambi_participant_requests_total", &me), 7.0);
    assert_eq!(value(&families, "gambi_participant_completed_total", &me), 5.0);
    for stage in STAGES {
        let expected = stages.get(stage).copied().unwrap_or(0);
        let labels = [("room", code.as_str()), ("participant", "w-metrics"), ("stage", stage)];
        assert_eq!(value(&families, "gambi_participant_errors_total", &labels), f64::from(expected), "{stage}");
    }
    assert_eq!(value(&families, "gambi_participant_input_tokens_total", &me), 12.0);
    assert_eq!(value(&families, "gambi_participant_output_tokens_total", &me), 17.0);
    assert_eq!(value(&families, "gambi_participant_in_flight", &me), 0.0);
    assert_eq!(value(&families, "gambi_participant_max_concurrency", &me), 1.0);
    assert_eq!(value(&families, "gambi_participant_connected", &me), 1.0);
    check_histogram(&families, "gambi_participant_ttft_seconds", &me, &ttft);
    check_histogram(&families, "gambi_participant_duration_seconds", &me, &duration);
    assert!(value(&families, "gambi_participant_tokens_per_second", &me) > 0.0);

    // The protected room: its participant known but unreachable, nothing served.
    let idle_labels = [("room", locked.as_str()), ("participant", "w-idle")];
    assert_eq!(value(&families, "gambi_participant_connected", &idle_labels), 0.0);
    assert_eq!(value(&families, "gambi_participant_requests_total", &idle_labels), 0.0);
    check_histogram(&families, "gambi_participant_ttft_seconds", &idle_labels, &[]);
    assert_eq!(value(&families, "gambi_room_requests_total", &[("room", locked.as_str())]), 0.0);
    let speeds = &family(&families, "gambi_participant_tokens_per_second").samples;
    assert!(speeds.iter().all(|s| s.labels["participant"] != "w-idle"), "no speed before any request");

    // The participant left: its series go, the room keeps what it served.
    session.close().await;
    wait_for(|| async { hub.hub.registry().participants(&code).unwrap().is_empty() }).await;
    let (_, _, text) = scrape(&hub).await;
    let families = parse(&text).await;
    assert!(!text.contains("participant=\"w-metrics\""), "{text}");
    assert_eq!(value(&families, "gambi_room_requests_total", &room), 7.0);
    assert_eq!(value(&families, "gambi_room_participants", &room), 0.0);
    assert_eq!(value(&families, "gambi_hub_tunnels", &[]), 0.0);
    provider.stop().await;
}

/// A request to the hub's router as if it came from `from` (the connection's source address is
/// the one thing loopback cannot give): (status, content type, body).
async fn from_peer(hub: &TestHub, from: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let peer: SocketAddr = from.parse().unwrap();
    let mut req = Request::builder().uri("/metrics").header(header::HOST, hub.url.trim_start_matches("http://"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = hub.hub.router().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let content_type =
        res.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), 16 << 20).await.unwrap();
    (status, content_type, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn another_machine_reads_a_rooms_metrics_with_its_host_token_and_nothing_else() {
    const LAN_PEER: &str = "192.168.1.50:50123";
    let hub = TestHub::start().await;
    let (open, open_host_token) = hub.room("Open", None).await;
    let (locked, locked_host_token) = hub.room("Locked", Some("s3cret-room-key")).await;
    hub.participant(&open, "w-open", None).await;
    hub.participant(&locked, "w-locked", Some("s3cret-room-key")).await;

    // Without a credential: refused, in the /v1 error shape, with nothing of the rooms in it.
    let (status, _, body) = from_peer(&hub, LAN_PEER, &[]).await;
    assert_eq!(status, 401, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "METRICS_NOT_ALLOWED", "{v}");
    assert!(v["error"]["hint"].as_str().unwrap().contains("hostToken"), "{v}");
    assert!(!body.contains(&open) && !body.contains(&locked), "{body}");
    // A room's password is not a host token (and is not tried as one), nor is anything else.
    for wrong in ["Bearer s3cret-room-key", "Bearer gh_not-a-real-token", "Basic czNjcmV0"] {
        let (status, _, body) = from_peer(&hub, LAN_PEER, &[("authorization", wrong)]).await;
        let expected = if wrong.starts_with("Bearer") { 403 } else { 401 };
        assert_eq!(status, expected, "{wrong}: {body}");
        assert!(body.contains("METRICS_NOT_ALLOWED"), "{body}");
    }

    // With the protected room's host token: that room's series, and nothing of the hub or of the
    // other room.
    let bearer = format!("Bearer {locked_host_token}");
    let (status, content_type, text) = from_peer(&hub, LAN_PEER, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(!text.contains(&open) && !text.contains("w-open"), "another room leaked: {text}");
    assert!(!text.contains(&locked_host_token) && !text.contains("s3cret-room-key"));
    let families = parse(&text).await;
    // Every room and participant family (those without a sample yet, such as the speeds, still
    // say what they are), and none of the hub's.
    assert_eq!(kinds(&families), expected_kinds(false), "{text}");
    check_shape(&families, &[&locked], &["w-locked"]);
    assert_eq!(value(&families, "gambi_room_participants", &[("room", locked.as_str())]), 1.0);
    assert_eq!(
        value(&families, "gambi_participant_connected", &[("room", locked.as_str()), ("participant", "w-locked")]),
        0.0
    );

    // This machine, however it is addressed, reads the whole hub.
    for own in ["127.0.0.1:40000", "127.0.0.9:40000", "[::1]:40000", "[::ffff:127.0.0.1]:40000"] {
        let (status, _, text) = from_peer(&hub, own, &[]).await;
        assert_eq!(status, 200, "{own}: {text}");
        assert!(text.contains(&open) && text.contains(&locked) && text.contains("gambi_hub_rooms 2"), "{own}");
    }
    // A web page on this machine is kept out by the Origin check, as from every read.
    let (status, _, body) = from_peer(&hub, "127.0.0.1:40000", &[("origin", "http://evil.example")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("web pages on http://evil.example are refused"), "{body}");
    // Over real HTTP from loopback, with or without a token.
    let (status, _, v) = call(http().get(hub.at("/metrics")).bearer_auth(&open_host_token)).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.as_str().unwrap().contains("gambi_hub_rooms 2"), "{v}");
}

#[tokio::test]
async fn a_post_to_metrics_is_refused_in_the_hubs_shape() {
    let hub = TestHub::start().await;
    let (status, headers, v) = call(http().post(hub.at("/metrics")).json(&json!({}))).await;
    assert_eq!(status, 405, "{v}");
    assert!(headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap().starts_with("application/json"));
    assert!(v["error"].is_string() || v["error"].is_object(), "{v}");
}
