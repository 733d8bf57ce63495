//! How a room chooses (issue 14): loaded-first, speed-aware routing that converges on the fast
//! participant, a new participant tried once, fair turns between callers when requests queue, and
//! the reason on every `llm.request`. Real hub, real tunnel participants on fake providers that
//! differ in speed and in what they have loaded.

use std::time::{Duration, Instant};

use gambi::protocol::LoadedModel;
use serde_json::{json, Value};

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::inference::{share, share_with};
use crate::util::{call, http, Sse, TestHub};

const CHAT: &str = "/v1/chat/completions";

/// Chat requests a provider served for the room (its participant's probe aside).
fn served(provider: &FakeProvider) -> usize {
    provider.requests_to(CHAT).iter().filter(|r| r.json()["messages"].is_array()).count()
}

async fn ask(hub: &TestHub, code: &str, caller: Option<&str>) -> (u16, Value) {
    let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]});
    let mut req = http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&body);
    if let Some(caller) = caller {
        req = req.header("x-gambi-caller", caller);
    }
    let (status, _, v) = call(req).await;
    (status, v)
}

fn loaded(name: &str) -> Option<Vec<LoadedModel>> {
    Some(vec![LoadedModel { name: name.into(), vram: None, size: None }])
}

/// The next `llm.request` events of the room's stream, `n` of them.
async fn requests(events: &mut Sse, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = events.next_within(Duration::from_secs(10)).await.expect("an llm.request event");
        if e.event == "llm.request" {
            out.push(e.json()["data"].clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_goes_to_the_participant_that_has_the_model_loaded() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Loaded first", None).await;
    let warm = FakeProvider::start(FakeOptions::default()).await;
    let cold = FakeProvider::start(FakeOptions::default()).await;
    let _w = share_with(&hub, &code, "warm", &warm, "llama3", |o| o.loaded_models = loaded("llama3")).await;
    let _c = share_with(&hub, &code, "cold", &cold, "llama3", |o| o.loaded_models = loaded("qwen2.5")).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    for _ in 0..6 {
        let (status, v) = ask(&hub, &code, None).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!((served(&warm), served(&cold)), (6, 0));
    for r in requests(&mut events, 6).await {
        assert_eq!(r["participantId"], "warm", "{r}");
        assert_eq!(r["route"]["loaded"], true, "the reason says the model was loaded: {r}");
        assert!(matches!(r["route"]["rule"].as_str(), Some("explore" | "fastest")), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_converges_on_the_fast_participant_and_tries_a_new_one_once() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Fast and slow", None).await;
    let fast = FakeProvider::start(FakeOptions::default()).await;
    let slow =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(250), ..FakeOptions::default() })
            .await;
    let _f = share(&hub, &code, "fast", &fast, "llama3").await;
    let _s = share(&hub, &code, "slow", &slow, "llama3").await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    // Each is tried once (nothing measured yet), then the room knows which answers sooner.
    for _ in 0..12 {
        let (status, v) = ask(&hub, &code, None).await;
        assert_eq!(status, 200, "{v}");
    }
    let seen = requests(&mut events, 12).await;
    let first_two: Vec<&str> = seen[..2].iter().map(|r| r["route"]["rule"].as_str().unwrap_or("")).collect();
    assert_eq!(first_two, ["explore", "explore"], "{seen:?}");
    assert_eq!(served(&slow), 1, "the slow one was tried once, then passed by");
    for r in &seen[2..] {
        assert_eq!((r["participantId"].as_str(), r["route"]["rule"].as_str()), (Some("fast"), Some("fastest")), "{r}");
        assert!(r["route"]["expectedMs"].as_f64().is_some_and(|e| e < 250.0), "{r}");
    }

    // A newcomer with no measurements gets the next request while it has nothing to do.
    let newcomer = FakeProvider::start(FakeOptions::default()).await;
    let _n = share(&hub, &code, "newcomer", &newcomer, "llama3").await;
    let (status, v) = ask(&hub, &code, None).await;
    assert_eq!(status, 200, "{v}");
    let r = &requests(&mut events, 1).await[0];
    assert_eq!((r["participantId"].as_str(), r["route"]["rule"].as_str()), (Some("newcomer"), Some("explore")), "{r}");
    assert_eq!(served(&newcomer), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persons_request_is_served_between_a_scripts_burst() {
    // One place, 200 ms a request; a script fires 8 at once, then a person asks once. Served in
    // turns, the person's request goes as soon as the running one ends, not after the script's 8.
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Fair", None).await;
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(200), ..FakeOptions::default() })
            .await;
    let _p = share_with(&hub, &code, "only", &provider, "llama3", |o| o.max_concurrency = Some(1)).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let started = Instant::now();
    let mut script = Vec::new();
    for _ in 0..8 {
        let (hub_url, code) = (hub.url.clone(), code.clone());
        script.push(tokio::spawn(async move {
            let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "batch"}]});
            let res = http()
                .post(format!("{hub_url}/rooms/{code}/v1/chat/completions"))
                .header("x-gambi-caller", "script")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            started.elapsed()
        }));
    }
    assert!(provider.wait_in_flight(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, v) = ask(&hub, &code, Some("person")).await;
    let person_done = started.elapsed();
    assert_eq!(status, 200, "{v}");
    let mut script_done = Vec::new();
    for t in script {
        script_done.push(t.await.unwrap());
    }
    let before_person = script_done.iter().filter(|t| **t < person_done).count();
    assert!(
        before_person <= 2,
        "the person waited for {before_person} of the script's requests: {script_done:?} vs {person_done:?}"
    );
    // The provider saw the person's request second (or third, had it raced the first dispatch).
    let order: Vec<String> = provider
        .requests_to(CHAT)
        .iter()
        .filter(|r| r.json()["messages"].is_array())
        .map(|r| r.json()["messages"][0]["content"].as_str().unwrap_or("").to_string())
        .collect();
    let at = order.iter().position(|c| c == "hi");
    assert!(at.is_some_and(|i| i <= 2), "the person's request went in its turn: {order:?}");
    let seen = requests(&mut events, 9).await;
    assert!(
        seen.iter().skip(1).all(|r| r["route"]["queuePosition"] == 1),
        "each waited and went first in line: {seen:?}"
    );
}
