//! Owner first (issue 14): a participant sharing with "pause sharing while I use my model server
//! myself" sees its provider busy with work the room did not send (a llama-server-like fake whose
//! `/slots` reports a busy slot the hub did not cause), pauses with reason `owner`, finishes what
//! is in flight, and takes requests again once the provider has been quiet. The same with an
//! Ollama-like fake, whose `/api/ps` `expires_at` moves with every use of the model: the room's own
//! requests move it too and do not pause the share, the owner's requests straight to Ollama do.
//! Real hub, real tunnel participants.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::inference::share_with;
use crate::util::{call, http, TestHub};

async fn participant(hub: &TestHub, code: &str, id: &str) -> Value {
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/{id}")))).await;
    v["data"].clone()
}

/// Waits until `check` holds for participant `id`, or fails saying what it was.
async fn until(hub: &TestHub, code: &str, id: &str, within: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let p = participant(hub, code, id).await;
        if check(&p) {
            return p;
        }
        assert!(started.elapsed() < within, "participant {id} stayed {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ask(hub: &TestHub, code: &str, model: &str, content: &str) -> (u16, Value) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": content}]});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&body)).await;
    (status, v)
}

fn served(provider: &FakeProvider) -> usize {
    provider.requests_to("/v1/chat/completions").iter().filter(|r| r.json()["messages"].is_array()).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_pauses_while_its_owner_uses_the_model_server_and_comes_back_when_quiet() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Owner first", None).await;
    let mine = FakeProvider::start(FakeOptions { slots: Some(2), ..FakeOptions::default() }).await;
    let other = FakeProvider::start(FakeOptions::default()).await;
    let _m = share_with(&hub, &code, "mine", &mine, "llama3", |o| {
        o.max_concurrency = Some(2);
        o.pause_while_owner_busy = true;
        o.provider_check_interval = Duration::from_millis(150);
        o.owner_quiet = Duration::from_millis(1200);
    })
    .await;
    let _o = share_with(&hub, &code, "other", &other, "llama3", |_| {}).await;

    // A request of the room's own keeps a slot busy: that is not the owner.
    mine.update(|o| o.first_byte_delay = Duration::from_secs(3));
    let in_flight = {
        let hub_url = hub.url.clone();
        let code = code.clone();
        tokio::spawn(async move {
            let body = json!({"model": "mine", "messages": [{"role": "user", "content": "in flight"}]});
            let req = http().post(format!("{hub_url}/rooms/{code}/v1/chat/completions")).json(&body);
            call(req).await
        })
    };
    assert!(mine.wait_in_flight(1, Duration::from_secs(5)).await);
    mine.update(|o| o.first_byte_delay = Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let p = participant(&hub, &code, "mine").await;
    assert_ne!(p["status"], "paused", "the room's own request paused it: {p}");

    // The owner starts using the model server: a slot busy that the hub did not cause.
    mine.update(|o| o.foreign_busy = 1);
    let p = until(&hub, &code, "mine", Duration::from_secs(5), |p| p["status"] == "paused").await;
    assert_eq!(p["pausedReason"], "its owner is using the machine", "{p}");
    // New requests go to the other participant; asking for this one says it is paused.
    let before = served(&other);
    for i in 0..3 {
        let (status, v) = ask(&hub, &code, "llama3", &format!("while paused {i}")).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(served(&other), before + 3, "every new request went to the other participant");
    let (status, v) = ask(&hub, &code, "mine", "named").await;
    assert!(matches!(status, 409 | 503), "{status} {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("owner")), "{v}");
    // The request in flight when the pause began finishes.
    let (status, _, v) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: in flight", "{v}");
    assert_eq!(mine.requests_to("/v1/chat/completions").iter().filter(|r| r.json()["messages"].is_array()).count(), 1);

    // The owner is done: after the quiet period the share takes requests again.
    mine.update(|o| o.foreign_busy = 0);
    let quiet_from = Instant::now();
    let p = until(&hub, &code, "mine", Duration::from_secs(6), |p| p["status"] != "paused").await;
    assert!(quiet_from.elapsed() >= Duration::from_millis(900), "resumed before the quiet period: {p}");
    assert!(p["pausedReason"].is_null(), "{p}");
    let (status, v) = ask(&hub, &code, "mine", "back").await;
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (200, Some("echo: back")), "{v}");
}

/// The `expires_at` the fake Ollama's `/api/ps` gives its one loaded model.
async fn expiry(provider: &FakeProvider) -> String {
    let (status, _, v) = call(http().get(provider.at("/api/ps"))).await;
    assert_eq!(status, 200, "{v}");
    v["models"][0]["expires_at"].as_str().unwrap().to_owned()
}

/// Room requests that reached `provider` (the chat completions whose text has `mark`).
fn room_asks(provider: &FakeProvider, mark: &str) -> usize {
    let asks = provider.requests_to("/v1/chat/completions");
    asks.iter().filter(|r| r.json()["messages"][0]["content"].as_str().is_some_and(|c| c.contains(mark))).count()
}

/// The owner using Ollama on their machine, straight to it (not through the hub), one request
/// every 250 ms on its native and OpenAI surfaces in turn, until `stop`; counts them in `done`.
/// Gives every status.
fn owner_uses(
    url: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<(&'static str, u16)>> {
    tokio::spawn(async move {
        let talk = json!([{"role": "user", "content": "owner"}]);
        let uses = [
            ("/api/chat", json!({"model": "llama3", "messages": talk, "stream": false})),
            ("/api/generate", json!({"model": "llama3", "prompt": "owner", "stream": false})),
            ("/v1/chat/completions", json!({"model": "llama3:latest", "messages": talk})),
            ("/api/embed", json!({"model": "llama3", "input": "owner"})),
        ];
        let mut statuses = Vec::new();
        for (path, body) in uses.iter().cycle() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let (status, _, _) = call(http().post(format!("{url}{path}")).json(body)).await;
            statuses.push((*path, status));
            done.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        statuses
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ollama_share_pauses_while_its_owner_uses_ollama_directly_and_comes_back_when_quiet() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Owner first, Ollama", None).await;
    let model = "llama3:latest";
    let mine = FakeProvider::start(FakeOptions {
        ollama: true,
        models: vec![model.into()],
        loaded: vec![model.into()],
        ..FakeOptions::default()
    })
    .await;
    let other = FakeProvider::start(FakeOptions { models: vec![model.into()], ..FakeOptions::default() }).await;
    let _m = share_with(&hub, &code, "mine", &mine, model, |o| {
        o.max_concurrency = Some(2);
        o.pause_while_owner_busy = true;
        o.provider_check_interval = Duration::from_millis(150);
        o.owner_quiet = Duration::from_millis(1200);
    })
    .await;
    let _o = share_with(&hub, &code, "other", &other, model, |_| {}).await;

    // The room's own requests move the expiry as much as anyone's: they must not pause the share.
    // One stays in flight across several looks, the others come at uneven moments between looks.
    let paused_seen = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (hub_url, code) = (hub.url.clone(), code.clone());
        let (paused_seen, watching) = (paused_seen.clone(), watching.clone());
        async move {
            while watching.load(Ordering::SeqCst) {
                let url = format!("{hub_url}/v1/rooms/{code}/participants/mine");
                let (_, _, v) = call(http().get(url)).await;
                if v["data"]["status"] == "paused" {
                    paused_seen.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    let before = expiry(&mine).await;
    mine.update(|o| o.first_byte_delay = Duration::from_millis(900));
    let slow = {
        let (hub_url, code) = (hub.url.clone(), code.clone());
        tokio::spawn(async move {
            let body = json!({"model": "mine", "messages": [{"role": "user", "content": "room slow"}]});
            call(http().post(format!("{hub_url}/rooms/{code}/v1/chat/completions")).json(&body)).await
        })
    };
    assert!(mine.wait_in_flight(1, Duration::from_secs(5)).await);
    mine.update(|o| o.first_byte_delay = Duration::ZERO);
    let (status, _, v) = slow.await.unwrap();
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (200, Some("echo: room slow")), "{v}");
    let mut moved = vec![expiry(&mine).await];
    for (i, gap) in [0u64, 60, 210, 90, 330, 20, 170].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let (status, v) = ask(&hub, &code, "mine", &format!("room {i}")).await;
        let reply = v["choices"][0]["message"]["content"].clone();
        assert_eq!((status, reply), (200, json!(format!("echo: room {i}"))), "a room request to the share: {v}");
        moved.push(expiry(&mine).await);
    }
    // The looks after the room's last request (past the margin the watch gives its calls' ends).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    watching.store(false, Ordering::SeqCst);
    watcher.await.unwrap();
    assert!(
        std::iter::once(&before).chain(&moved).collect::<Vec<_>>().windows(2).all(|w| w[0] < w[1]),
        "every room request moved the expiry: {before} then {moved:?}"
    );
    assert_eq!(room_asks(&mine, "room"), 8, "the room's requests reached the fake Ollama");
    assert!(mine.requests_to("/api/ps").len() >= 10, "the owner watch kept looking at /api/ps");
    assert!(!paused_seen.load(Ordering::SeqCst), "the room's own requests paused the share");

    // The owner uses Ollama on their machine, straight to it: the expiry moves, the room sent nothing.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let owner = owner_uses(mine.url.clone(), stop.clone(), done.clone());
    let p = until(&hub, &code, "mine", Duration::from_secs(5), |p| p["status"] == "paused").await;
    assert_eq!(p["pausedReason"], "its owner is using the machine", "{p}");
    // New requests go to the other participant; asking for this one says it is paused.
    let served_before = served(&other);
    for i in 0..3 {
        let (status, v) = ask(&hub, &code, model, &format!("while paused {i}")).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(served(&other), served_before + 3, "every new request went to the other participant");
    assert_eq!(room_asks(&mine, "while paused"), 0);
    let (status, v) = ask(&hub, &code, "mine", "named").await;
    assert!(matches!(status, 409 | 503), "{status} {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("owner")), "{v}");
    // The owner goes on well past a quiet period, on every surface: the share stays paused.
    let going_on = Instant::now();
    while done.load(Ordering::SeqCst) < 8 {
        assert!(going_on.elapsed() < Duration::from_secs(10), "the owner's requests stalled");
        let p = participant(&hub, &code, "mine").await;
        assert_eq!(p["status"], "paused", "resumed while the owner was still using Ollama: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The owner is done: after the quiet period the share takes requests again.
    stop.store(true, Ordering::SeqCst);
    let statuses = owner.await.unwrap();
    let quiet_from = Instant::now();
    assert!(statuses.len() >= 8 && statuses.iter().all(|(_, s)| *s == 200), "{statuses:?}");
    let p = until(&hub, &code, "mine", Duration::from_secs(6), |p| p["status"] != "paused").await;
    assert!(quiet_from.elapsed() >= Duration::from_millis(900), "resumed before the quiet period: {p}");
    assert!(p["pausedReason"].is_null(), "{p}");
    let (status, v) = ask(&hub, &code, "mine", "back").await;
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (200, Some("echo: back")), "{v}");
}
