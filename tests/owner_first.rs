//! Owner first (issue 14): a participant sharing with "pause sharing while I use my model server
//! myself" sees its provider busy with work the room did not send (a llama-server-like fake whose
//! `/slots` reports a busy slot the hub did not cause), pauses with reason `owner`, finishes what
//! is in flight, and takes requests again once the provider has been quiet. Real hub, real tunnel
//! participants.

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
