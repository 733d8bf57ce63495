//! Health (acceptance 4), with the intervals shortened by configuration: a silent participant goes
//! offline exactly once, comes back on a heartbeat (through either surface), and is purged after
//! the retention; a participant that keeps heartbeating never goes offline; empty rooms expire
//! after the room TTL while occupied rooms stay.

use std::time::{Duration, Instant};

use gambi::hub::HubConfig;
use serde_json::{json, Value};

use crate::util::{call, http, Sse, SseEvent, TestHub, PATIENCE};

#[derive(Clone, Copy, Debug)]
enum Surface {
    V1,
    Classic,
}

/// Sweeps every 50 ms; silent for 1 s: offline (long enough for a few requests to check an online
/// participant before it goes silent again, on a slow machine); offline for `retention`: gone.
fn fast(retention: Duration) -> HubConfig {
    HubConfig {
        sweep_interval: Duration::from_millis(50),
        participant_timeout: Duration::from_secs(1),
        offline_retention: retention,
        ..HubConfig::default()
    }
}

/// Registers `id` through `surface` (classic join: a `direct` participant; `/v1` upsert: a tunnel
/// participant).
async fn register(th: &TestHub, code: &str, id: &str, surface: Surface) {
    let body = json!({"nickname": id, "model": "llama3", "endpoint": "http://127.0.0.1:9",
        "specs": {"gpu": "RTX 3060", "vram": 12}});
    let (status, _, res) = match surface {
        Surface::V1 => call(http().put(th.at(&format!("/v1/rooms/{code}/participants/{id}"))).json(&body)).await,
        Surface::Classic => {
            let mut body = body;
            body["id"] = json!(id);
            call(http().post(th.at(&format!("/rooms/{code}/join"))).json(&body)).await
        }
    };
    assert!(status == 200 || status == 201, "register {id} via {surface:?}: {status} {res}");
}

/// Sends a heartbeat through `surface`; returns (status code, the status the hub reports).
async fn heartbeat(th: &TestHub, code: &str, id: &str, surface: Surface) -> (u16, Value) {
    let (status, _, body) = match surface {
        Surface::V1 => call(http().post(th.at(&format!("/v1/rooms/{code}/participants/{id}/heartbeat")))).await,
        Surface::Classic => call(http().post(th.at(&format!("/rooms/{code}/health"))).json(&json!({"id": id}))).await,
    };
    let reported = match surface {
        Surface::V1 => body["data"]["status"].clone(),
        Surface::Classic => body["status"].clone(),
    };
    if status == 200 {
        let success = match surface {
            Surface::V1 => &body["data"]["success"],
            Surface::Classic => &body["success"],
        };
        assert_eq!(*success, true, "{body}");
    }
    (status, reported)
}

/// The participant's status in both listings (which must agree); `None` when it is not listed.
async fn listed_status(th: &TestHub, code: &str, id: &str) -> Option<String> {
    let (status, _, v1) = call(http().get(th.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(status, 200, "{v1}");
    let (status, _, classic) = call(http().get(th.at(&format!("/rooms/{code}/participants")))).await;
    assert_eq!(status, 200, "{classic}");
    let find = |list: &Value| {
        list.as_array().unwrap().iter().find(|p| p["id"] == id).map(|p| p["status"].as_str().unwrap().to_string())
    };
    let from_v1 = find(&v1["data"]);
    assert_eq!(from_v1, find(&classic["participants"]), "both surfaces list the same status");
    from_v1
}

/// Both streams of a room, past their `connected`.
async fn streams(th: &TestHub, code: &str) -> (Sse, Sse) {
    let mut v1 = Sse::connect(&th.at(&format!("/v1/rooms/{code}/events")), None).await;
    let mut classic = Sse::connect(&th.at(&format!("/rooms/{code}/events")), None).await;
    assert_eq!(v1.next().await.event, "connected");
    assert_eq!(classic.next().await.event, "connected");
    (v1, classic)
}

/// The next event on both streams is `v1_name` (colon form on the classic stream) about `id`,
/// arriving within `within`; returns the `/v1` one.
async fn expect_on_both(v1: &mut Sse, classic: &mut Sse, v1_name: &str, id: &str, within: Duration) -> SseEvent {
    let event = v1.next_within(within).await.unwrap_or_else(|| panic!("no {v1_name} within {within:?}"));
    assert_eq!(event.event, v1_name, "{event:?}");
    let data = event.json();
    let pid = data["data"].get("participantId").unwrap_or(&data["data"]["id"]);
    assert_eq!(pid, id, "{data}");
    let classic_name = v1_name.replace('.', ":");
    let bare = classic.next_within(within).await.unwrap_or_else(|| panic!("no {classic_name} within {within:?}"));
    assert_eq!(bare.event, classic_name, "{bare:?}");
    let bare_data = bare.json();
    let pid = bare_data.get("participantId").unwrap_or(&bare_data["id"]);
    assert_eq!(pid, id, "{bare_data}");
    assert_eq!(bare.id, event.id, "the same event on both streams");
    event
}

async fn silent_participant_goes_offline_once_comes_back_and_is_purged(surface: Surface) {
    // Retention 2 s: long enough to watch many sweeps go by and come back before the purge.
    let retention = Duration::from_secs(2);
    let th = TestHub::with_config(fast(retention)).await;
    let (code, _) = th.room("Health", None).await;
    let (mut v1, mut classic) = streams(&th, &code).await;

    let registered = Instant::now();
    register(&th, &code, "w1", surface).await;
    expect_on_both(&mut v1, &mut classic, "participant.joined", "w1", PATIENCE).await;
    assert_eq!(listed_status(&th, &code, "w1").await.as_deref(), Some("online"));

    // Silent: offline after the timeout, not before.
    expect_on_both(&mut v1, &mut classic, "participant.offline", "w1", PATIENCE).await;
    let offline_after = registered.elapsed();
    assert!(offline_after >= Duration::from_millis(950), "offline too early: {offline_after:?} < 1 s timeout");
    assert_eq!(listed_status(&th, &code, "w1").await.as_deref(), Some("offline"));
    let (status, _, one) = call(http().get(th.at(&format!("/v1/rooms/{code}/participants/w1")))).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"]["status"], "offline");

    // Exactly once: a dozen more sweeps go by without another event on either stream.
    assert!(v1.next_within(Duration::from_millis(600)).await.is_none(), "offline is broadcast once (/v1)");
    assert!(classic.next_within(Duration::from_millis(100)).await.is_none(), "offline is broadcast once (classic)");
    assert_eq!(listed_status(&th, &code, "w1").await.as_deref(), Some("offline"));

    // A heartbeat brings it back.
    let (status, reported) = heartbeat(&th, &code, "w1", surface).await;
    assert_eq!(status, 200);
    assert_eq!(reported, "online");
    let back = expect_on_both(&mut v1, &mut classic, "participant.updated", "w1", PATIENCE).await;
    assert_eq!(back.json()["data"]["status"], "online");
    assert_eq!(listed_status(&th, &code, "w1").await.as_deref(), Some("online"));

    // Silent again: offline once more (a new silence), then nothing until the retention is over,
    // then it leaves.
    expect_on_both(&mut v1, &mut classic, "participant.offline", "w1", PATIENCE).await;
    let offline_at = Instant::now();
    let left = expect_on_both(&mut v1, &mut classic, "participant.left", "w1", retention + PATIENCE).await;
    let offline_for = offline_at.elapsed();
    assert!(offline_for >= retention / 2, "purged too early: after {offline_for:?} of {retention:?}");
    assert_eq!(left.json()["data"], json!({"participantId": "w1"}));
    assert_eq!(listed_status(&th, &code, "w1").await, None, "purged participants are not listed");
    let (status, _, _) = call(http().get(th.at(&format!("/v1/rooms/{code}/participants/w1")))).await;
    assert_eq!(status, 404);
    let (status, _) = heartbeat(&th, &code, "w1", surface).await;
    assert_eq!(status, 404, "a purged participant must register again");
    let (status, _, room) = call(http().get(th.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(status, 200, "the room itself stays (no TTL)");
    assert_eq!(room["data"]["participantCount"], 0);
    assert!(v1.next_within(Duration::from_millis(300)).await.is_none(), "nothing after the purge");
}

#[tokio::test]
async fn silent_participant_goes_offline_once_and_v1_heartbeat_brings_it_back() {
    silent_participant_goes_offline_once_comes_back_and_is_purged(Surface::V1).await;
}

#[tokio::test]
async fn silent_participant_goes_offline_once_and_classic_health_brings_it_back() {
    silent_participant_goes_offline_once_comes_back_and_is_purged(Surface::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_keeps_heartbeating_never_goes_offline() {
    // Timeout 600 ms and heartbeats every 100 ms, alternating the two surfaces; a silent
    // participant beside it shows that the sweep is running.
    let th = TestHub::with_config(HubConfig {
        sweep_interval: Duration::from_millis(50),
        participant_timeout: Duration::from_millis(600),
        offline_retention: Duration::from_secs(60),
        ..HubConfig::default()
    })
    .await;
    let (code, _) = th.room("Steady", None).await;
    let (mut v1, mut classic) = streams(&th, &code).await;
    register(&th, &code, "steady", Surface::V1).await;
    register(&th, &code, "direct", Surface::Classic).await;
    register(&th, &code, "silent", Surface::V1).await;
    // The heartbeats go on, on their own, until every check below is done: stopping them first
    // would let the steady participants go silent while the checks run.
    let done = tokio_util::sync::CancellationToken::new();
    let beating = Instant::now();
    let beats = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut beats = 0;
        while !done.is_cancelled() {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tick.tick() => {}
            }
            let surface = if beats % 2 == 0 { Surface::V1 } else { Surface::Classic };
            for id in ["steady", "direct"] {
                let (status, reported) = heartbeat(&th, &code, id, surface).await;
                assert_eq!((status, reported.as_str()), (200, Some("online")), "{id} after {:?}", beating.elapsed());
            }
            beats += 1;
        }
        beats
    };
    let checks = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut seen = Vec::new();
        for sse in [&mut v1, &mut classic] {
            while let Some(event) = sse.next_within(Duration::from_millis(300)).await {
                let data = event.json();
                let data = data.get("data").filter(|d| d.is_object()).unwrap_or(&data).clone();
                let pid = data.get("participantId").unwrap_or(&data["id"]).as_str().unwrap().to_string();
                seen.push((event.event, pid));
            }
        }
        let offline: Vec<_> = seen.iter().filter(|(name, _)| name.contains("offline")).collect();
        assert_eq!(
            offline,
            [
                &("participant.offline".to_string(), "silent".to_string()),
                &("participant:offline".into(), "silent".into())
            ],
            "only the silent participant went offline, once per stream; all events: {seen:?}"
        );
        assert!(
            !seen.iter().any(|(name, pid)| pid != "silent" && name.contains("updated")),
            "steady heartbeats change nothing, so they broadcast nothing: {seen:?}"
        );
        assert_eq!(listed_status(&th, &code, "steady").await.as_deref(), Some("online"));
        assert_eq!(listed_status(&th, &code, "direct").await.as_deref(), Some("online"));
        assert_eq!(listed_status(&th, &code, "silent").await.as_deref(), Some("offline"));
        done.cancel();
    };
    let (beats, ()) = tokio::join!(beats, checks);
    assert!(beats >= 20, "heartbeats kept going through the checks ({beats})");
}

/// Polls until `GET /v1/rooms/:code` is 404; returns how long that took.
async fn wait_until_gone(th: &TestHub, code: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _, _) = call(http().get(th.at(&format!("/v1/rooms/{code}")))).await;
        if status == 404 {
            return started.elapsed();
        }
        assert_eq!(status, 200);
        assert!(started.elapsed() < within, "room {code} still there after {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn empty_rooms_expire_after_the_ttl_and_occupied_rooms_stay() {
    let ttl = Duration::from_secs(1);
    let th = TestHub::with_config(HubConfig {
        sweep_interval: Duration::from_millis(50),
        participant_timeout: Duration::from_secs(60),
        room_ttl: Some(ttl),
        ..HubConfig::default()
    })
    .await;
    let created = Instant::now();
    let (empty, _) = th.room("Empty", None).await;
    let (busy, busy_host) = th.room("Busy", None).await;
    register(&th, &busy, "w1", Surface::Classic).await;
    let (mut v1, mut classic) = streams(&th, &empty).await;

    let took = wait_until_gone(&th, &empty, ttl + PATIENCE).await;
    assert!(created.elapsed() >= ttl - Duration::from_millis(100), "expired before its TTL ({took:?})");
    assert!(v1.ended_within(PATIENCE).await, "the expired room's /v1 stream ends");
    assert!(classic.ended_within(PATIENCE).await, "the expired room's classic stream ends");
    let (status, _, body) = call(http().get(th.at(&format!("/rooms/{empty}/participants")))).await;
    assert_eq!((status, body), (404, json!({"error": "Room not found"})));
    let (status, _, _) = call(http().get(th.at(&format!("/v1/rooms/{empty}/events")))).await;
    assert_eq!(status, 404);
    let (_, _, rooms) = call(http().get(th.at("/v1/rooms"))).await;
    let codes: Vec<_> = rooms["data"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, [busy.as_str()], "only the occupied room is listed");

    // The occupied room outlives two TTLs...
    tokio::time::sleep((ttl * 2).saturating_sub(created.elapsed())).await;
    let (status, _, room) = call(http().get(th.at(&format!("/v1/rooms/{busy}")))).await;
    assert_eq!(status, 200, "a room with a live participant does not expire");
    assert_eq!(room["data"]["participantCount"], 1);

    // ...and its TTL starts when it becomes empty.
    let (status, _, _) = call(http().delete(th.at(&format!("/rooms/{busy}/leave/w1"))).bearer_auth(&busy_host)).await;
    assert_eq!(status, 200);
    let emptied = Instant::now();
    wait_until_gone(&th, &busy, ttl + PATIENCE).await;
    assert!(emptied.elapsed() >= ttl - Duration::from_millis(100), "expired {:?} after emptying", emptied.elapsed());
}
