//! Issue 12, false statements 2 and 3, and acceptance 3: a share tells the truth about itself.
//! A real `gambi participant join` whose model server stops is paused in the room within 5 s (not
//! routable, and saying why in its listing and in the error a request naming it gets), and resumes
//! by itself when the model server is back on the same port, without restarting; it says both in
//! one line each. A share killed with SIGKILL is offline the moment its tunnel closes (with a
//! `participant.offline` event), and a tunnel that opens again brings its participant back. A
//! request routed to a share whose model server just died, before the pause, fails over to a
//! healthy participant.

use std::time::{Duration, Instant};

use gambi::participant::SessionOptions;
use serde_json::{json, Value};

use crate::fake_provider::{echo, FakeOptions, FakeProvider};
use crate::inference::{share_with, wait_for};
use crate::participant_cli::{connected, eventually, expect_event, join_args, participant, Proc, SOON, STARTUP};
use crate::tunnel::{dial, register, register_as};
use crate::util::{call, http, Sse, TestHub};

/// What issue 12 allows for a pause or a resume to reach the room.
const PAUSE_DEADLINE: Duration = Duration::from_secs(5);
/// What it allows for a killed share to show offline.
const OFFLINE_DEADLINE: Duration = Duration::from_secs(2);

/// A chat completion through the room's OpenAI URL: (status, body).
async fn chat(hub: &TestHub, code: &str, model: &str, text: &str) -> (u16, Value) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&body)).await;
    (status, v)
}

/// The participant as the room's listing (`GET /v1/rooms/CODE/participants`) shows it.
async fn listed(hub: &TestHub, code: &str, id: &str) -> Value {
    let (status, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().and_then(|list| list.iter().find(|p| p["id"] == id).cloned()).unwrap_or(Value::Null)
}

/// The ids `GET /rooms/CODE/v1/models` offers as participants.
async fn routable_ids(hub: &TestHub, code: &str) -> Vec<String> {
    let (_, _, v) = call(http().get(hub.at(&format!("/rooms/{code}/v1/models")))).await;
    v["data"]
        .as_array()
        .map(|models| models.iter().filter(|m| m["gambi"]["nickname"].is_string()))
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_whose_model_server_stops_is_paused_within_5_s_and_resumes_by_itself() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Watch", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let port = provider.port();
    let mut join = Proc::spawn(&join_args(
        &hub.url,
        &code,
        &provider,
        &["--participant-id", "watch-1", "--nickname", "Watcher", "--no-specs", "--format", "text"],
    ));
    join.line(STARTUP, |l| l.starts_with("Sharing llama3 in room")).await;
    eventually(SOON, "the share is connected", || connected(&hub.url, &code, "watch-1")).await;
    let (status, v) = chat(&hub, &code, "watch-1", "before").await;
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (200, Some(echo("before").as_str())), "{v}");
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    assert_eq!(events.next().await.event, "connected");

    // The model server stops: new connections are refused.
    provider.stop().await;
    let stopped = Instant::now();
    eventually(PAUSE_DEADLINE, "the room lists the share as paused, saying why", || async {
        let p = listed(&hub, &code, "watch-1").await;
        p["status"] == "paused" && p["pausedReason"] == "model server stopped"
    })
    .await;
    eprintln!("model server stopped: the room listed the share paused after {:?}", stopped.elapsed());
    let update = expect_event(&mut events, "participant.updated", "watch-1", SOON).await;
    assert_eq!(update["data"]["status"], "paused", "{update}");
    // Not routable, and a request naming it is told why, OpenAI-shaped.
    assert!(!routable_ids(&hub, &code).await.contains(&"watch-1".to_string()));
    for model in ["watch-1", "llama3", "*"] {
        let (status, v) = chat(&hub, &code, model, "while paused").await;
        assert_eq!(status, 503, "{model}: {v}");
        assert_eq!(v["error"]["code"], "participant_paused", "{model}: {v}");
        assert_eq!(v["error"]["type"], "server_error", "{model}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(message, "Participant 'watch-1' is paused: model server stopped.", "{model}: {v}");
    }
    let paused_line = join.line(SOON, |l| l.contains("stopped answering")).await;
    assert_eq!(
        paused_line,
        format!(
            "The model server at {} stopped answering — your share is paused until it is back.",
            provider_url(port)
        )
    );

    // The same model server comes back on the same port: the share resumes without a restart.
    let back = FakeProvider::start_on(port, FakeOptions::default()).await;
    let started = Instant::now();
    eventually(PAUSE_DEADLINE, "the share is routable again", || async {
        chat(&hub, &code, "watch-1", "after").await.0 == 200
    })
    .await;
    eprintln!("model server back: the share served again after {:?}", started.elapsed());
    let p = listed(&hub, &code, "watch-1").await;
    assert_eq!(p["status"], "online", "{p}");
    assert!(p.get("pausedReason").is_none(), "{p}");
    assert!(routable_ids(&hub, &code).await.contains(&"watch-1".to_string()));
    let resumed_line = join.line(SOON, |l| l.contains("answering again")).await;
    assert_eq!(
        resumed_line,
        format!("The model server at {} is answering again — your share is back on.", provider_url(port))
    );
    assert!(back.requests_to("/v1/chat/completions").iter().any(|r| r.json().to_string().contains("after")));
    // One process, one registration all along: no reconnection happened.
    let log = join.log();
    assert!(!log.contains("Connection lost") && !log.contains("Back online"), "log:\n{log}");
    assert!(join.child.try_wait().unwrap().is_none(), "the share is still the same process");
    join.signal("INT");
    assert_eq!(join.exit(SOON).await.code(), Some(0), "log:\n{}", join.log());
}

fn provider_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_killed_with_sigkill_is_offline_at_once_with_a_participant_offline_event() {
    // The default participant timeout (30 s): only the closed tunnel can make it offline in time.
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Killed", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let mut join = Proc::spawn(&join_args(
        &hub.url,
        &code,
        &provider,
        &["--participant-id", "kill-1", "--no-specs", "--format", "text"],
    ));
    join.line(STARTUP, |l| l.starts_with("Sharing llama3 in room")).await;
    eventually(SOON, "the share is connected", || connected(&hub.url, &code, "kill-1")).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    assert_eq!(events.next().await.event, "connected");

    join.child.kill().unwrap(); // SIGKILL: no leave, no goodbye, the socket just dies.
    let killed = Instant::now();
    expect_event(&mut events, "participant.offline", "kill-1", OFFLINE_DEADLINE).await;
    eventually(OFFLINE_DEADLINE, "the participant shows offline", || async {
        let (_, p) = participant(&hub.url, &code, "kill-1").await;
        p["status"] == "offline" && p["connection"]["connected"] == false
    })
    .await;
    eprintln!("share killed with SIGKILL: offline after {:?}", killed.elapsed());
    assert!(!routable_ids(&hub, &code).await.contains(&"kill-1".to_string()));
    let (status, v) = chat(&hub, &code, "kill-1", "anyone there?").await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("offline"), "{v}");
    // Kept, as the retention rules say, not removed.
    assert_eq!(listed(&hub, &code, "kill-1").await["id"], "kill-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_tunnel_is_offline_until_its_owner_opens_it_again() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Reopen", None).await;
    let first = register(&hub.url, &code, "re-1").await;
    let ws = dial(&first.url, &first.token, Some(&first.participant_token)).await.unwrap();
    wait_for(|| async { listed(&hub, &code, "re-1").await["connection"]["connected"] == true }).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    assert_eq!(events.next().await.event, "connected");

    drop(ws);
    expect_event(&mut events, "participant.offline", "re-1", OFFLINE_DEADLINE).await;
    assert_eq!(listed(&hub, &code, "re-1").await["status"], "offline");
    // A heartbeat alone (a session that has not noticed yet) does not make it routable.
    let beat = hub.at(&format!("/v1/rooms/{code}/participants/re-1/heartbeat"));
    let (status, _, v) = call(http().post(&beat)).await;
    assert_eq!((status, &v["data"]["status"]), (200, &json!("offline")), "{v}");
    assert!(routable_ids(&hub, &code).await.is_empty());

    // Its owner registers again with its token and reopens the tunnel: online and routable.
    let again = register_as(&hub.url, &code, "re-1", Some(&first.participant_token)).await;
    let _ws = dial(&again.url, &again.token, Some(&first.participant_token)).await.unwrap();
    let update = expect_event(&mut events, "participant.updated", "re-1", SOON).await;
    assert_eq!(update["data"]["status"], "online", "{update}");
    wait_for(|| async {
        let p = listed(&hub, &code, "re-1").await;
        p["status"] == "online" && p["connection"]["connected"] == true
    })
    .await;
    assert_eq!(routable_ids(&hub, &code).await, vec!["re-1".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_routed_to_a_share_whose_model_server_just_died_fails_over() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Failover", None).await;
    let dying = FakeProvider::start(FakeOptions::default()).await;
    // The healthy one answers after a moment, so a request it serves holds its place meanwhile.
    let healthy =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(400), ..FakeOptions::default() })
            .await;
    let quiet = |o: &mut SessionOptions| {
        o.auto_specs = false;
        o.auto_loaded_models = false;
    };
    // The dying share's watch looks only rarely on its own: the test is the gap before a pause.
    let _a = share_with(&hub, &code, "dying", &dying, "llama3", |o| {
        quiet(o);
        o.provider_check_interval = Duration::from_secs(60);
    })
    .await;
    let _b = share_with(&hub, &code, "healthy", &healthy, "llama3", |o| {
        quiet(o);
        o.max_concurrency = Some(4);
    })
    .await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    assert_eq!(events.next().await.event, "connected");
    dying.stop().await;
    assert_eq!(listed(&hub, &code, "dying").await["status"], "online", "not paused yet");

    // The first request goes to either; once the healthy one holds it, the least loaded one is the
    // share whose model server is gone, and the second goes there.
    let first = tokio::spawn({
        let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
        async move {
            let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "one"}]});
            call(http().post(url).json(&body)).await
        }
    });
    assert!(healthy.wait_in_flight(1, SOON).await, "the healthy share took the first request");
    let (status, v) = chat(&hub, &code, "llama3", "two").await;
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (200, Some(echo("two").as_str())), "{v}");
    let (status, _, v) = first.await.unwrap();
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (200, Some(echo("one").as_str())), "{v}");
    let served = healthy.requests_to("/v1/chat/completions").iter().filter(|r| r.json()["messages"].is_array()).count();
    assert_eq!(served, 2, "both were served by the healthy share");

    // The room saw it: the dying share failed to connect, the same request completed elsewhere.
    let mut failed = None;
    let deadline = Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events.next_within(left).await.expect("an llm.error, then the same request's llm.complete");
        let v = event.json();
        let data = &v["data"];
        match event.event.as_str() {
            "llm.error" if data["participantId"] == "dying" => {
                assert_eq!(data["stage"], "connect", "{v}");
                failed = data["requestId"].as_str().map(str::to_string);
            }
            "llm.complete" if failed.is_some() && data["requestId"].as_str() == failed.as_deref() => {
                assert_eq!(data["participantId"], "healthy", "{v}");
                break;
            }
            _ => {}
        }
    }
}
