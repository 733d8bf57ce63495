//! The tunnel's edges: tokens, garbage frames, the wire format seen from a hand-written participant,
//! provider credentials that never reach the hub, and the official OpenAI Python client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gambi::hub::HubConfig;
use gambi::participant::{ParticipantSession, SessionOptions};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::inference::{share, share_with, wait_for};
use crate::util::{call, http, BinHub, Sse, TestHub, PATIENCE};

/// What a registration gave: the tunnel's url and single-use token, and the participant token.
pub struct Reg {
    pub url: String,
    pub token: String,
    pub participant_token: String,
}

/// Registers `id` through `/v1`.
pub async fn register(hub_url: &str, code: &str, id: &str) -> Reg {
    register_as(hub_url, code, id, None).await
}

/// Registers `id` through `/v1`, proving it with `participant_token` when given.
pub async fn register_as(hub_url: &str, code: &str, id: &str, participant_token: Option<&str>) -> Reg {
    let body = json!({"nickname": id, "model": "llama3", "endpoint": "http://127.0.0.1:9"});
    let mut req = http().put(format!("{hub_url}/v1/rooms/{code}/participants/{id}")).json(&body);
    if let Some(t) = participant_token {
        req = req.bearer_auth(t);
    }
    let (status, _, v) = call(req).await;
    assert!(status == 200 || status == 201, "{v}");
    let tunnel = &v["data"]["tunnel"];
    let participant_token = v["data"]["participantToken"].as_str().or(participant_token).unwrap().to_string();
    Reg {
        url: tunnel["url"].as_str().unwrap().to_string(),
        token: tunnel["token"].as_str().unwrap().to_string(),
        participant_token,
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Dials a tunnel with its token and, when given, `Authorization: Bearer <participant token>`;
/// `Err(status)` when the hub refused the upgrade.
pub async fn dial(url: &str, token: &str, participant_token: Option<&str>) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("{url}?token={token}").into_client_request().unwrap();
    if let Some(t) = participant_token {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected dial error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_reused_expired_and_misdirected_tunnel_tokens_are_refused() {
    let hub =
        TestHub::with_config(HubConfig { tunnel_token_ttl: Duration::from_millis(300), ..HubConfig::default() }).await;
    let (code, _) = hub.room("Tokens", None).await;
    let w1 = register(&hub.url, &code, "w1").await;
    let p1 = w1.participant_token.clone();
    assert_eq!(dial(&w1.url, "gt_wrong", Some(&p1)).await.err(), Some(401), "wrong token");
    assert_eq!(dial(&w1.url, "", Some(&p1)).await.err(), Some(401), "missing token");
    let other_url = w1.url.replace("/w1/", "/w2/");
    let w2 = register(&hub.url, &code, "w2").await;
    assert_eq!(
        dial(&other_url, &w1.token, Some(&w2.participant_token)).await.err(),
        Some(401),
        "a token opens only its own participant's tunnel"
    );
    let w1 = register_as(&hub.url, &code, "w1", Some(&p1)).await;
    assert_eq!(w1.participant_token, p1, "re-registering with the token keeps it");
    let ws = dial(&w1.url, &w1.token, Some(&p1)).await.expect("the right token opens the tunnel");
    assert_eq!(dial(&w1.url, &w1.token, Some(&p1)).await.err(), Some(401), "a token is single use");
    drop(ws);
    let w1 = register_as(&hub.url, &code, "w1", Some(&p1)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(dial(&w1.url, &w1.token, Some(&p1)).await.err(), Some(401), "an expired token");
    // The refusal is the /v1 envelope.
    let (status, _, v) = call(
        http()
            .get(format!("{}/v1/rooms/{code}/participants/w1/tunnel?token=nope", hub.url))
            .bearer_auth(&p1)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "INVALID_TUNNEL_TOKEN");
}

/// Registers `id` and opens its tunnel by hand (the test speaks the wire format), returned once the
/// hub says it is connected.
async fn hand_written_participant(hub: &TestHub, code: &str, id: &str) -> Ws {
    let reg = register(&hub.url, code, id).await;
    let ws = dial(&reg.url, &reg.token, Some(&reg.participant_token)).await.unwrap();
    wait_for(|| async {
        let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/{id}")))).await;
        v["data"]["connection"]["connected"] == true
    })
    .await;
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_written_participant_speaks_the_wire_format_and_garbage_does_not_close_the_tunnel() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Wire", None).await;
    let mut ws = hand_written_participant(&hub, &code, "raw").await;
    for garbage in [
        Message::Text("nope".into()),
        Message::Text("{}".into()),
        Message::Text("[1,2]".into()),
        Message::Text(r#"{"type":"tunnel.from.the.future","x":1}"#.into()),
        Message::Text(r#"{"type":"tunnel.response.chunk","requestId":"unknown","chunk":"aGk="}"#.into()),
        Message::Text(r#"{"type":"tunnel.response.chunk","requestId":"unknown","chunk":"%%%not base64"}"#.into()),
        Message::Binary(vec![0, 159, 146, 150].into()),
    ] {
        ws.send(garbage).await.unwrap();
    }
    ws.send(Message::Text(r#"{"type":"tunnel.ping","timestamp":42}"#.into())).await.unwrap();
    let pong = next_text(&mut ws).await;
    assert_eq!(pong, json!({"type": "tunnel.pong", "timestamp": 42}), "the tunnel survived the garbage");
    let malformed = hub.hub.tunnels().get(&code, "raw").unwrap().malformed_frames();
    assert_eq!(malformed, 7, "each garbage frame was counted");

    // A request through the room reaches this participant as a tunnel.request frame...
    let chat = json!({"model": "raw", "messages": [{"role": "user", "content": "hi"}]});
    let client = tokio::spawn(call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat)));
    let request = next_text(&mut ws).await;
    assert_eq!(request["type"], "tunnel.request");
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/v1/chat/completions");
    assert_eq!(request["stream"], false);
    assert_eq!(request["body"]["model"], "llama3", "the body is the JSON object itself, model rewritten");
    assert_eq!(request["body"]["messages"][0]["content"], "hi");
    let id = request["requestId"].as_str().unwrap().to_string();
    // ...and the answer goes back as start, base64 chunks and end.
    let answer = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hand made"},"finish_reason":"stop"}]}"#;
    use base64::Engine as _;
    let (a, b) = answer.split_at(20);
    for frame in [
        json!({"type": "tunnel.response.start", "requestId": id, "status": 200, "headers": {"content-type": "application/json"}}),
        json!({"type": "tunnel.response.chunk", "requestId": id, "chunk": base64::engine::general_purpose::STANDARD.encode(a)}),
        json!({"type": "tunnel.response.chunk", "requestId": id, "chunk": base64::engine::general_purpose::STANDARD.encode(b)}),
        json!({"type": "tunnel.response.end", "requestId": id}),
    ] {
        ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }
    let (status, _, v) = client.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "hand made");

    // A client that goes away makes the hub send tunnel.cancel.
    let mut stream_chat = chat.clone();
    stream_chat["stream"] = json!(true);
    let res = http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&stream_chat).send();
    let pending = tokio::spawn(res);
    let request = next_text(&mut ws).await;
    let id = request["requestId"].as_str().unwrap().to_string();
    ws.send(Message::Text(
        json!({"type": "tunnel.response.start", "requestId": id, "status": 200,
        "headers": {"content-type": "text/event-stream"}})
        .to_string()
        .into(),
    ))
    .await
    .unwrap();
    let response = pending.await.unwrap().unwrap();
    drop(response);
    let cancel = next_text(&mut ws).await;
    assert_eq!(cancel, json!({"type": "tunnel.cancel", "requestId": id}));
}

/// A participant streaming a long answer keeps sending it until the hub's cancel reaches it. Those
/// late frames name a request the hub has just ended: they are dropped quietly, not counted as
/// malformed, so a big stream a client walked away from cannot get its participant's tunnel
/// closed. A frame naming a request the hub never sent still counts.
#[tokio::test(flavor = "multi_thread")]
async fn late_frames_of_a_cancelled_request_do_not_count_against_the_tunnel() {
    use base64::Engine as _;
    let hub = TestHub::with_config(HubConfig { malformed_frame_limit: 10, ..HubConfig::default() }).await;
    let (code, _) = hub.room("Late", None).await;
    let mut ws = hand_written_participant(&hub, &code, "raw").await;
    let chat = json!({"model": "raw", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let pending = tokio::spawn(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat).send());
    let request = next_text(&mut ws).await;
    let id = request["requestId"].as_str().unwrap().to_string();
    let start = json!({"type": "tunnel.response.start", "requestId": id, "status": 200,
        "headers": {"content-type": "text/event-stream"}});
    ws.send(Message::Text(start.to_string().into())).await.unwrap();
    drop(pending.await.unwrap().unwrap());
    assert_eq!(next_text(&mut ws).await, json!({"type": "tunnel.cancel", "requestId": id}));

    // Five times the malformed limit of late chunks, then the end, as a busy participant would.
    let delta = base64::engine::general_purpose::STANDARD.encode("data: {\"choices\":[]}\n\n");
    for _ in 0..50 {
        let chunk = json!({"type": "tunnel.response.chunk", "requestId": id, "chunk": delta});
        ws.send(Message::Text(chunk.to_string().into())).await.unwrap();
    }
    ws.send(Message::Text(json!({"type": "tunnel.response.end", "requestId": id}).to_string().into())).await.unwrap();
    ws.send(Message::Text(r#"{"type":"tunnel.ping","timestamp":9}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, json!({"type": "tunnel.pong", "timestamp": 9}), "the tunnel is open");
    let conn = hub.hub.tunnels().get(&code, "raw").expect("the tunnel is still registered");
    assert_eq!(conn.malformed_frames(), 0, "late frames of an ended request are not malformed");

    // A request the hub never sent is still garbage, and counted.
    let stray = json!({"type": "tunnel.response.chunk", "requestId": "never-sent", "chunk": delta});
    ws.send(Message::Text(stray.to_string().into())).await.unwrap();
    ws.send(Message::Text(r#"{"type":"tunnel.ping","timestamp":10}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, json!({"type": "tunnel.pong", "timestamp": 10}));
    assert_eq!(conn.malformed_frames(), 1, "a frame for a request never sent counts");

    // And the participant serves the next request.
    let plain = json!({"model": "raw", "messages": [{"role": "user", "content": "again"}]});
    let client = tokio::spawn(call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&plain)));
    let request = next_text(&mut ws).await;
    let id = request["requestId"].as_str().unwrap().to_string();
    let answer = r#"{"id":"y","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"still here"},"finish_reason":"stop"}]}"#;
    for frame in [
        json!({"type": "tunnel.response.start", "requestId": id, "status": 200, "headers": {"content-type": "application/json"}}),
        json!({"type": "tunnel.response.chunk", "requestId": id, "chunk": base64::engine::general_purpose::STANDARD.encode(answer)}),
        json!({"type": "tunnel.response.end", "requestId": id}),
    ] {
        ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }
    let (status, _, v) = client.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "still here");
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next()).await.expect("a frame from the hub").unwrap().unwrap();
        if let Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_credentials_reach_the_provider_and_nowhere_on_the_hub() {
    const SECRET: &str = "sk-local-do-not-leak-5f2e";
    let hub = BinHub::start(&[]);
    let provider = FakeProvider::start(FakeOptions {
        required_headers: vec![("authorization".into(), format!("Bearer {SECRET}"))],
        ..FakeOptions::default()
    })
    .await;
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Creds"}))).await;
    assert_eq!(status, 201);
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();
    let mut seen = String::new();
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let mut classic = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;
    let mut options = SessionOptions::new(&hub.url, &code, "keyed", &provider.url, "llama3");
    options.auth_headers.insert("Authorization".into(), format!("Bearer {SECRET}"));
    let session = ParticipantSession::start(options).await.unwrap();
    for stream in [false, true] {
        let body = json!({"model": "keyed", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let res = http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200, "the provider accepted the participant's credentials");
        seen.push_str(&res.text().await.unwrap());
    }
    let res = http()
        .post(hub.at(&format!("/rooms/{code}/v1/responses")))
        .json(&json!({"model": "keyed", "input": "hi"}))
        .send()
        .await
        .unwrap();
    seen.push_str(&res.text().await.unwrap());
    for path in [
        format!("/v1/rooms/{code}/participants"),
        format!("/rooms/{code}/participants"),
        format!("/v1/rooms/{code}/participants/keyed"),
        format!("/rooms/{code}/v1/models"),
        "/v1/rooms".to_string(),
    ] {
        seen.push_str(&http().get(hub.at(&path)).send().await.unwrap().text().await.unwrap());
    }
    session.close().await;
    while let Some(e) = events.next_within(Duration::from_millis(300)).await {
        seen.push_str(&e.data);
    }
    while let Some(e) = classic.next_within(Duration::from_millis(300)).await {
        seen.push_str(&e.data);
    }
    let sent = provider.requests_to("/v1/chat/completions");
    assert!(sent.len() >= 2);
    assert!(sent.iter().all(|r| r.header("authorization") == Some(&format!("Bearer {SECRET}"))));
    assert!(seen.contains("participant.joined") && seen.contains("llm.complete"), "the scan saw real traffic");
    assert!(!seen.contains(SECRET), "a response or event carried the provider's key");
    let log = hub.log();
    assert!(log.contains("/v1/rooms"), "the hub's log was captured");
    assert!(!log.contains(SECRET), "the hub's log carried the provider's key");
}

/// The Python interpreter for client tests: `GAMBI_TEST_PYTHON` (set by scripts/test to a venv
/// with the test packages), else `python3`.
pub fn python() -> String {
    std::env::var("GAMBI_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

async fn run_python_client(base_url: String, model: &str) {
    let model = model.to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_client.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python()).args([script, &base_url, "no-key-needed", &model]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the OpenAI Python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_python_client_works_against_a_room() {
    let hub = TestHub::start().await;
    let modern = FakeProvider::start(FakeOptions::default()).await;
    let old = FakeProvider::start(FakeOptions { responses_api: false, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Python", None).await;
    let _a = share(&hub, &code, "modern", &modern, "llama3").await;
    let _b = share_with(&hub, &code, "old", &old, "llama3", |_| {}).await;
    let base = hub.at(&format!("/rooms/{code}/v1"));
    // Passed through to a provider with the Responses API...
    run_python_client(base.clone(), "modern").await;
    // ...and translated for one without it.
    run_python_client(base, "old").await;
    assert!(
        old.requests_to("/v1/responses").iter().all(|r| r.body.as_ref().is_some_and(|b| b == &json!({}))),
        "the old provider only ever saw the capability probe on /v1/responses"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_reports_this_machines_specs_and_refreshes_loaded_models_with_its_heartbeat() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions {
        ollama: true,
        models: vec!["llama3:latest".into(), "qwen2:7b".into()],
        loaded: vec!["llama3:latest".into()],
        ..FakeOptions::default()
    })
    .await;
    let (code, _) = hub.room("Specs", None).await;
    let session = share_with(&hub, &code, "warm", &provider, "llama3", |o| {
        o.heartbeat_interval = Duration::from_millis(200);
    })
    .await;
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/warm")))).await;
    let p = &v["data"];
    assert!(p["specs"]["cpu"].as_str().is_some_and(|c| !c.is_empty()), "specs were read: {p}");
    assert!(p["specs"]["ram"].as_f64().unwrap() > 0.0);
    assert_eq!(p["loadedModels"][0]["name"], "llama3:latest");
    assert!(p["loadedModels"][0]["vram"].as_f64().unwrap() > 0.0);
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    provider.update(|o| o.loaded = vec!["qwen2:7b".into()]);
    let updated = loop {
        let e = events.next().await;
        if e.event == "participant.updated" {
            break e.json();
        }
    };
    assert_eq!(updated["data"]["loadedModels"][0]["name"], "qwen2:7b", "refreshed with the heartbeat");
    // A session told not to read specs sends none.
    let quiet = share_with(&hub, &code, "quiet", &provider, "llama3", |o| o.auto_specs = false).await;
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/quiet")))).await;
    assert!(v["data"]["specs"].as_object().unwrap().is_empty(), "{v}");
    quiet.close().await;
    session.close().await;
}

/// Issue 10, section 4: the TypeScript participant has never heard of participant tokens. On a
/// default (strict) hub it registered, then its upgrade was refused for want of the token, and it
/// left a participant behind. The tunnel token of the registration that created the participant
/// went to that registrant alone, so that first upgrade needs nothing more: the original protocol
/// serves through a default hub. The id stays bound: the same client cannot re-register it (nor
/// open a later tunnel) without the token it ignored.
#[tokio::test(flavor = "multi_thread")]
async fn a_participant_speaking_only_the_original_protocol_serves_through_a_default_hub() {
    use base64::Engine as _;
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Original", None).await;
    let body = json!({"nickname": "ts-cli", "model": "llama3", "endpoint": "http://127.0.0.1:9"});
    let url = hub.at(&format!("/v1/rooms/{code}/participants/ts-1"));
    let (status, _, v) = call(http().put(&url).json(&body)).await;
    assert_eq!(status, 201, "{v}");
    let tunnel = &v["data"]["tunnel"];
    let mut ws = dial(tunnel["url"].as_str().unwrap(), tunnel["token"].as_str().unwrap(), None)
        .await
        .expect("the first tunnel of a registration opens with its tunnel token alone");
    wait_for(|| async {
        let (_, _, v) = call(http().get(&url)).await;
        v["data"]["connection"]["connected"] == true
    })
    .await;

    let chat = json!({"model": "ts-1", "messages": [{"role": "user", "content": "hi"}]});
    let client = tokio::spawn(call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat)));
    let request = next_text(&mut ws).await;
    assert_eq!(request["type"], "tunnel.request");
    let id = request["requestId"].as_str().unwrap().to_string();
    let answer = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"from the original"},"finish_reason":"stop"}]}"#;
    for frame in [
        json!({"type": "tunnel.response.start", "requestId": id, "status": 200, "headers": {"content-type": "application/json"}}),
        json!({"type": "tunnel.response.chunk", "requestId": id, "chunk": base64::engine::general_purpose::STANDARD.encode(answer)}),
        json!({"type": "tunnel.response.end", "requestId": id}),
    ] {
        ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }
    let (status, _, v) = client.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "from the original");

    // Without the token it never kept, the id is not its to register again, tunnel open or not.
    let (status, _, v) = call(http().put(&url).json(&body)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("PARTICIPANT_CONFLICT")), "{v}");
    drop(ws);
    wait_for(|| async {
        let (_, _, v) = call(http().get(&url)).await;
        v["data"]["connection"]["connected"] == false
    })
    .await;
    let (status, _, v) = call(http().put(&url).json(&body)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("PARTICIPANT_CONFLICT")), "{v}");
    // (A later tunnel, from a registration made with the token, needs the token at the upgrade:
    // identity::without_its_token_nobody_removes_replaces_or_retunnels_a_participant.)
}
