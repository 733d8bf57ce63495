//! Participant identity (issue 6, acceptance 3): the first registration returns a
//! `participantToken`; without it nobody can remove, replace or re-tunnel a live participant on a
//! strict hub, and `--compat` restores the tokenless behaviour. Also: the room's host token removes
//! anyone from its room, and a supervised share whose hub forgot it registers afresh with a new token.

use std::time::Duration;

use gambi::hub::HubConfig;
use gambi::participant::{SessionOptions, ShareState, Supervisor};
use serde_json::{json, Value};

use crate::fake_provider::{echo, FakeOptions, FakeProvider};
use crate::inference::{share, wait_for};
use crate::tunnel::{dial, register_as};
use crate::util::{call, http, BinHub, TestHub, PATIENCE};

fn body(endpoint: &str) -> Value {
    json!({"nickname": "Mallory", "model": "llama3", "endpoint": endpoint})
}

async fn participant(hub: &TestHub, code: &str, id: &str) -> (u16, Value) {
    let (status, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/{id}")))).await;
    (status, v["data"].clone())
}

async fn chat(hub: &TestHub, code: &str, model: &str, text: &str) -> (u16, Value) {
    let chat = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat)).await;
    (status, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_its_token_nobody_removes_replaces_or_retunnels_a_participant() {
    let hub = TestHub::start().await;
    let (code, host_token) = hub.room("Strict", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let session = share(&hub, &code, "alice", &provider, "llama3").await;
    let token = session.participant_token().expect("the hub gave the session its token").to_string();
    assert!(token.starts_with("gp_"), "{token}");
    let (_, before) = participant(&hub, &code, "alice").await;
    assert!(!before.to_string().contains(&token), "listings never show the token: {before}");

    // Remove: no token, a wrong token, the classic surface: all refused, nothing changes.
    let v1 = hub.at(&format!("/v1/rooms/{code}/participants/alice"));
    let (status, _, v) = call(http().delete(&v1)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("PARTICIPANT_TOKEN_REQUIRED")), "{v}");
    assert!(v["error"]["hint"].as_str().is_some_and(|h| h.contains("participantToken")), "{v}");
    let (status, _, v) = call(http().delete(&v1).bearer_auth("gp_not-the-token")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("INVALID_PARTICIPANT_TOKEN")), "{v}");
    let classic = hub.at(&format!("/rooms/{code}/leave/alice"));
    let (status, _, v) = call(http().delete(&classic)).await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].is_string(), "the classic shape: {v}");

    // Replace while its tunnel is live: 409 on both surfaces, endpoint untouched.
    let (status, _, v) = call(http().put(&v1).json(&body("http://10.6.6.6:11434"))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("PARTICIPANT_CONFLICT")), "{v}");
    let (status, _, v) = call(http().put(&v1).bearer_auth("gp_guess").json(&body("http://10.6.6.6:11434"))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("INVALID_PARTICIPANT_TOKEN")), "{v}");
    let mut join = body("http://10.6.6.6:11434");
    join["id"] = json!("alice");
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&join)).await;
    assert_eq!(status, 409, "{v}");

    // The participant is exactly as it was.
    let (status, after) = participant(&hub, &code, "alice").await;
    assert_eq!(status, 200);
    assert_eq!(after["endpoint"], before["endpoint"]);
    assert_eq!(after["nickname"], before["nickname"]);
    assert_eq!(after["connection"]["connected"], true);

    // Re-tunnel: even holding a fresh tunnel token (which only the owner gets: registering while
    // live takes the participant token), the upgrade needs the participant token.
    let fresh = register_as(&hub.url, &code, "alice", Some(&token)).await;
    assert_eq!(fresh.participant_token, token, "the owner keeps its token");
    assert_eq!(dial(&fresh.url, &fresh.token, None).await.err(), Some(401), "no participant token");
    let fresh = register_as(&hub.url, &code, "alice", Some(&token)).await;
    assert_eq!(dial(&fresh.url, &fresh.token, Some("gp_wrong")).await.err(), Some(403), "a wrong one");

    // The session's tunnel is still the one serving.
    assert_eq!(participant(&hub, &code, "alice").await.1["connection"]["connected"], true);
    let (status, v) = chat(&hub, &code, "alice", "still mine").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], echo("still mine"));

    // The owner leaves with its token (the session does it on close).
    session.close().await;
    assert_eq!(participant(&hub, &code, "alice").await.0, 404);

    // The room's host may remove anyone from its room.
    let bob = hub.participant(&code, "bob", None).await;
    assert!(bob["data"]["participantToken"].is_string());
    let bob_url = hub.at(&format!("/v1/rooms/{code}/participants/bob"));
    let (status, _, v) = call(http().delete(&bob_url).bearer_auth(&host_token)).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compat_restores_tokenless_leave_replace_and_retunnel() {
    let hub = TestHub::with_config(HubConfig { compat: true, ..HubConfig::default() }).await;
    let (code, _) = hub.room("Compat", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let _session = share(&hub, &code, "alice", &provider, "llama3").await;
    let v1 = hub.at(&format!("/v1/rooms/{code}/participants/alice"));

    // Replace while live, without a token, as the TypeScript CLI does.
    let (status, _, v) = call(http().put(&v1).json(&body("http://127.0.0.1:9"))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"]["participantToken"].is_null(), "a tokenless update is handed no token: {v}");
    assert_eq!(v["data"]["participant"]["nickname"], "Mallory");
    // Re-tunnel without a participant token: the new tunnel replaces the session's.
    let tunnel = &v["data"]["tunnel"];
    let ws = dial(tunnel["url"].as_str().unwrap(), tunnel["token"].as_str().unwrap(), None).await;
    assert!(ws.is_ok(), "compat: the tunnel opens without a participant token");
    // Leave without a token, through both surfaces.
    let (status, _, v) = call(http().delete(&v1)).await;
    assert_eq!(status, 200, "{v}");
    hub.participant(&code, "bob", None).await;
    let (status, _, v) = call(http().delete(hub.at(&format!("/rooms/{code}/leave/bob")))).await;
    assert_eq!((status, v), (200, json!({"success": true})));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_is_strict_by_default_and_relaxed_with_compat() {
    for (args, tokenless_leave) in [(&[][..], 401), (&["--compat"][..], 200)] {
        let hub = BinHub::start(args);
        let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Bin"}))).await;
        assert_eq!(status, 201, "{v}");
        let code = v["data"]["room"]["code"].as_str().unwrap().to_string();
        let url = hub.at(&format!("/v1/rooms/{code}/participants/w1"));
        let (status, _, v) = call(http().put(&url).json(&body("http://127.0.0.1:9"))).await;
        assert_eq!(status, 201, "{v}");
        assert!(v["data"]["participantToken"].as_str().is_some_and(|t| t.starts_with("gp_")), "{v}");
        let (status, _, v) = call(http().delete(&url)).await;
        assert_eq!(status, tokenless_leave, "{args:?}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_share_registers_afresh_and_an_unheld_participant_stays_its_owners() {
    let hub = TestHub::start().await;
    let (code, host_token) = hub.room("Heal", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let mut options = SessionOptions::new(&hub.url, &code, "carol", &provider.url, "llama3");
    options.auto_specs = false;
    let supervisor = Supervisor::start(options);
    assert!(matches!(supervisor.wait_live(PATIENCE).await, ShareState::Live { .. }));
    let first = supervisor.participant_token().expect("the supervisor keeps the token");

    // The host removes the participant: the hub forgets it and closes its tunnel. The supervisor
    // registers again; the hub does not know the old token's owner any more, so it creates the
    // participant afresh with a new token, and the share is back.
    let url = hub.at(&format!("/v1/rooms/{code}/participants/carol"));
    let (status, _, v) = call(http().delete(&url).bearer_auth(&host_token)).await;
    assert_eq!(status, 200, "{v}");
    wait_for(|| async {
        let (_, _, v) = call(http().get(&url)).await;
        v["data"]["connection"]["connected"] == true
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while supervisor.participant_token().as_deref() == Some(first.as_str()) {
        assert!(tokio::time::Instant::now() < deadline, "the supervisor never took the new token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(supervisor.participant_token().is_some());
    let (status, v) = chat(&hub, &code, "carol", "back").await;
    assert_eq!(status, 200, "{v}");
    // The old token is worth nothing now; the new one is the participant's.
    let (status, _, _) = call(http().delete(&url).bearer_auth(&first)).await;
    assert_eq!(status, 403);
    supervisor.stop().await;
    let (status, _, _) = call(http().get(&url)).await;
    assert_eq!(status, 404, "the supervisor left with the new token");

    // A participant nobody holds (no tunnel) is still its owner's: registering it again needs its
    // token (the reconnect hijack of issue 10), or the room's host token, which makes the caller
    // its new owner and voids the old token.
    let dave = hub.participant(&code, "dave", None).await;
    let old = dave["data"]["participantToken"].as_str().unwrap().to_string();
    let dave_url = hub.at(&format!("/v1/rooms/{code}/participants/dave"));
    let (status, _, v) = call(http().put(&dave_url).json(&body("http://127.0.0.1:9"))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("PARTICIPANT_CONFLICT")), "{v}");
    let (status, _, v) = call(http().put(&dave_url).bearer_auth(&old).json(&body("http://127.0.0.1:9"))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"]["participantToken"].is_null(), "the owner keeps its token: {v}");
    let (status, _, v) = call(http().put(&dave_url).bearer_auth(&host_token).json(&body("http://127.0.0.1:9"))).await;
    assert_eq!(status, 200, "{v}");
    let new = v["data"]["participantToken"].as_str().expect("the host's take-over gets a token").to_string();
    assert_ne!(old, new);
    assert_eq!(call(http().delete(&dave_url).bearer_auth(&old)).await.0, 403);
    assert_eq!(call(http().delete(&dave_url).bearer_auth(&new)).await.0, 200);
}

/// A participant removed while its tunnel is being opened: whichever happens first, no tunnel
/// outlives its participant (the hub used to register such a tunnel after the removal had
/// looked for it, and the share behind it stayed connected to nothing).
#[tokio::test(flavor = "multi_thread")]
async fn a_participant_removed_while_its_tunnel_opens_keeps_no_tunnel() {
    use futures_util::StreamExt as _;
    let hub = TestHub::start().await;
    let (code, host_token) = hub.room("Race", None).await;
    for round in 0..40 {
        let id = format!("r{round}");
        let reg = register_as(&hub.url, &code, &id, None).await;
        let url = hub.at(&format!("/v1/rooms/{code}/participants/{id}"));
        // The upgrade is answered before the hub sets the tunnel up: remove the participant the
        // moment the answer arrives, and now and then a little later.
        let mut ws = dial(&reg.url, &reg.token, Some(&reg.participant_token)).await.unwrap();
        if round % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(round / 4)).await;
        }
        let (removed, _, v) = call(http().delete(&url).bearer_auth(&host_token)).await;
        assert_eq!(removed, 200, "round {round}: {v}");
        // The tunnel opened: the hub must close it, now that its participant is gone.
        let ended = tokio::time::timeout(PATIENCE, async {
            while let Some(Ok(frame)) = ws.next().await {
                if frame.is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "round {round}: a tunnel stayed open for a participant that left");
        assert_eq!(participant(&hub, &code, &id).await.0, 404, "round {round}");
    }
}

/// Issue 10, section 8, the small doors. A body with a key twice used to be read last-key-wins:
/// `{"password": "x", "password": ""}` created a room without a password. And a heartbeat that
/// carries `loadedModels` let a stranger rewrite what another participant holds (which routing
/// reads); an empty heartbeat stays open, as the seed has it.
#[tokio::test(flavor = "multi_thread")]
async fn duplicate_keys_are_refused_and_a_heartbeat_with_news_needs_the_token() {
    let hub = TestHub::start().await;
    let twice = r#"{"name": "Twice", "password": "x", "password": ""}"#;
    for path in ["/v1/rooms", "/rooms"] {
        let req = http().post(hub.at(path)).header("content-type", "application/json").body(twice);
        let (status, _, v) = call(req).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert!(v.to_string().contains("Invalid JSON body"), "{path}: {v}");
    }
    let (_, _, rooms) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(rooms["data"], json!([]), "no room was created: {rooms}");
    let (status, _, v) = call(
        http()
            .post(hub.at("/v1/rooms"))
            .header("content-type", "application/json")
            .body(r#"{"name": "Once", "password": "x"}"#),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["room"]["passwordProtected"], true);

    let (code, _) = hub.room("Beats", None).await;
    let registered = hub.participant(&code, "w1", None).await;
    let token = registered["data"]["participantToken"].as_str().unwrap().to_string();
    let beat = hub.at(&format!("/v1/rooms/{code}/participants/w1/heartbeat"));
    let news = json!({"loadedModels": [{"name": "evil", "vram": 99}]});
    let (status, _, v) = call(http().post(&beat).json(&news)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("PARTICIPANT_TOKEN_REQUIRED")), "{v}");
    let (status, _, v) = call(http().post(&beat).bearer_auth("gp_guess").json(&news)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("INVALID_PARTICIPANT_TOKEN")), "{v}");
    let (_, p) = participant(&hub, &code, "w1").await;
    assert!(!p.to_string().contains("evil"), "nothing was rewritten: {p}");
    let (status, _, v) = call(http().post(&beat)).await;
    assert_eq!(status, 200, "an empty heartbeat needs no token: {v}");
    let (status, _, v) = call(http().post(&beat).bearer_auth(&token).json(&news)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(participant(&hub, &code, "w1").await.1["loadedModels"][0]["name"], "evil");
}
