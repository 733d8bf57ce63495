//! The inference plane end to end: a real hub, real participant sessions dialing real tunnels (or
//! direct participants the hub calls over HTTP), and the fake provider as the only fake.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gambi::hub::HubConfig;
use gambi::participant::{ParticipantSession, SessionOptions};
use serde_json::{json, Value};

use crate::fake_provider::{FakeOptions, FakeProvider, Mode};
use crate::util::{call, http, parse_sse, rss_kib, BinHub, Sse, SseEvent, TestHub, PATIENCE};

/// A tunnel participant sharing `provider` into room `code`.
pub async fn share(hub: &TestHub, code: &str, id: &str, provider: &FakeProvider, model: &str) -> ParticipantSession {
    share_with(hub, code, id, provider, model, |_| {}).await
}

pub async fn share_with(
    hub: &TestHub,
    code: &str,
    id: &str,
    provider: &FakeProvider,
    model: &str,
    tweak: impl FnOnce(&mut SessionOptions),
) -> ParticipantSession {
    let mut options = SessionOptions::new(&hub.url, code, id, &provider.url, model);
    tweak(&mut options);
    let key = options.password.clone();
    let session = ParticipantSession::start(options).await.unwrap();
    // The tunnel is open once the hub says so (a protected room tells only with its password).
    wait_for(|| async {
        let mut req = http().get(hub.at(&format!("/v1/rooms/{code}/participants/{id}")));
        if let Some(key) = &key {
            req = req.bearer_auth(key);
        }
        let (_, _, v) = call(req).await;
        v["data"]["connection"]["connected"] == true
    })
    .await;
    session
}

/// A direct participant (classic join) whose endpoint is `provider`.
async fn join_direct(hub: &TestHub, code: &str, id: &str, provider: &FakeProvider, model: &str) {
    let body = json!({"id": id, "nickname": id, "model": model, "endpoint": provider.url});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");
}

pub async fn wait_for<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// POSTs and reads a whole SSE answer.
pub async fn post_sse(url: &str, body: &Value) -> (u16, Vec<SseEvent>) {
    let res = http().post(url).json(body).send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, parse_sse(&text))
}

pub fn chat_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

async fn exercise_all_four(hub: &TestHub, code: &str, model: &str) {
    let base = hub.at(&format!("/rooms/{code}/v1"));
    // Chat, not streamed.
    let (status, _, v) = call(http().post(format!("{base}/chat/completions")).json(&chat(model, "hi"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(v["object"], "chat.completion");
    // Chat, streamed.
    let mut body = chat(model, "stream me");
    body["stream"] = json!(true);
    let (status, events) = post_sse(&format!("{base}/chat/completions"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(chat_text(&events), "echo: stream me");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(
        events.iter().all(|e| !e.data.contains("\"usage\"") || e.data.contains("\"choices\":[{")),
        "the usage chunk the hub asked for is hidden from a client that did not ask for it"
    );
    // Responses, not streamed, then retrieved through the hub.
    let (status, _, v) =
        call(http().post(format!("{base}/responses")).json(&json!({"model": model, "input": "hello"}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    let id = v["id"].as_str().unwrap().to_string();
    let (status, _, again) = call(http().get(format!("{base}/responses/{id}"))).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    // Responses, streamed.
    let (status, events) =
        post_sse(&format!("{base}/responses"), &json!({"model": model, "input": "hello", "stream": true})).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(kinds.contains(&"response.output_text.delta"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"response.completed"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_and_responses_through_a_tunnel_participant() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Tunnel", None).await;
    let session = share(&hub, &code, "worker-1", &provider, "llama3").await;
    exercise_all_four(&hub, &code, "*").await;
    exercise_all_four(&hub, &code, "worker-1").await;
    // The hub rewrote the model to the participant's real one before it reached the provider.
    let sent = provider.last_body("/v1/chat/completions").unwrap();
    assert_eq!(sent["model"], "llama3");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_and_responses_through_a_direct_participant() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Direct", None).await;
    join_direct(&hub, &code, "direct-1", &provider, "llama3").await;
    exercise_all_four(&hub, &code, "model:llama3").await;
    exercise_all_four(&hub, &code, "direct-1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn models_lists_exactly_the_routable_participants() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Models", None).await;
    let session = share(&hub, &code, "tunnelled", &provider, "llama3").await;
    join_direct(&hub, &code, "direct", &provider, "llama3").await;
    // Registered through /v1 but never connected its tunnel: not routable.
    hub.participant(&code, "no-tunnel", None).await;
    let (status, _, v) = call(http().get(hub.at(&format!("/rooms/{code}/v1/models")))).await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    // The model they serve, then `*`, then the participants themselves (in the room's order).
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..2], ["llama3", "*"], "{v}");
    let mut participants = ids[2..].to_vec();
    participants.sort();
    assert_eq!(participants, ["direct", "tunnelled"]);
    let mut serving: Vec<&str> =
        data[0]["gambi"]["participants"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    serving.sort();
    assert_eq!(serving, ["direct", "tunnelled"], "the model entry names exactly the routable ones");
    let tunnelled = data.iter().find(|m| m["id"] == "tunnelled").unwrap();
    assert_eq!(tunnelled["object"], "model");
    assert_eq!(tunnelled["owned_by"], "tunnelled");
    assert_eq!(tunnelled["gambi"]["model"], "llama3");
    assert_eq!(tunnelled["gambi"]["connection"]["kind"], "tunnel");
    // Once the session leaves, it is no longer listed, nor counted as serving the model.
    session.close().await;
    let (_, _, v) = call(http().get(hub.at(&format!("/rooms/{code}/v1/models")))).await;
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["llama3", "*", "direct"]);
    assert_eq!(v["data"][0]["gambi"]["participants"], json!(["direct"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_fall_back_to_chat_when_the_provider_has_no_responses_api() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions { responses_api: false, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Fallback", None).await;
    let _session = share(&hub, &code, "old-ollama", &provider, "llama3").await;
    let base = hub.at(&format!("/rooms/{code}/v1"));
    let (status, _, v) =
        call(http().post(format!("{base}/responses")).json(&json!({"model": "*", "input": "translate me"}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["output_text"], "echo: translate me");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // The hub remembers it and serves it back.
    let id = v["id"].as_str().unwrap();
    let (status, _, again) = call(http().get(format!("{base}/responses/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(again["output_text"], "echo: translate me");
    // Streamed.
    let (status, events) =
        post_sse(&format!("{base}/responses"), &json!({"model": "*", "input": "stream it", "stream": true})).await;
    assert_eq!(status, 200);
    let deltas: String = events
        .iter()
        .filter(|e| e.event == "response.output_text.delta")
        .map(|e| e.json()["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, "echo: stream it");
    assert_eq!(events.last().unwrap().event, "response.completed");
    // A function tool, not streamed and streamed.
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}}}]);
    let (status, _, v) = call(
        http().post(format!("{base}/responses")).json(&json!({"model": "*", "input": "weather?", "tools": tools})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let call_item = v["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap().clone();
    assert_eq!(call_item["name"], "get_weather");
    assert!(call_item["arguments"].as_str().unwrap().contains("Paris"));
    let (status, events) = post_sse(
        &format!("{base}/responses"),
        &json!({"model": "*", "input": "weather?", "tools": tools, "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let done = events.iter().find(|e| e.event == "response.function_call_arguments.done").unwrap().json();
    assert!(done["arguments"].as_str().unwrap().contains("Paris"));
    // The provider only ever saw chat completions (after the first probe of /v1/responses).
    let sent = provider.last_body("/v1/chat/completions").unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather", "flat Responses tools became nested chat tools");
    // The participant is now known not to have the Responses API.
    let (_, _, p) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/old-ollama")))).await;
    assert_eq!(p["data"]["capabilities"]["openResponses"], "unsupported");
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_by_id_by_model_and_by_star() {
    // Under `--routing least-loaded`, '*' spreads over idle participants at random; the default
    // rule's choice of the faster one is tests/scheduling.rs's.
    let hub =
        TestHub::with_config(HubConfig { routing: gambi::hub::scheduler::Policy::LeastLoaded, ..HubConfig::default() })
            .await;
    let llama = FakeProvider::start(FakeOptions::default()).await;
    let qwen = FakeProvider::start(FakeOptions { models: vec!["qwen2".into()], ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Routing", None).await;
    let _a = share(&hub, &code, "alice", &llama, "llama3").await;
    let _b = share(&hub, &code, "bob", &qwen, "qwen2").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    for (model, expect) in
        [("alice", "llama3"), ("bob", "qwen2"), ("model:qwen2", "qwen2"), ("qwen2", "qwen2"), ("llama3", "llama3")]
    {
        let (status, _, v) = call(http().post(&url).json(&chat(model, "x"))).await;
        assert_eq!(status, 200, "{model}: {v}");
        assert_eq!(v["model"], expect, "{model}");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let (status, _, v) = call(http().post(&url).json(&chat("*", "x"))).await;
        assert_eq!(status, 200);
        seen.insert(v["model"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "'*' spreads over both idle participants");
    let (status, _, v) = call(http().post(&url).json(&chat("model:mistral", "x"))).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["message"], "No available participant for the requested model");
    assert_eq!(v["error"]["type"], "not_found_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_least_loaded_participant_is_chosen() {
    let hub = TestHub::start().await;
    let slow = FakeOptions { first_byte_delay: Duration::from_millis(800), ..FakeOptions::default() };
    let a = FakeProvider::start(slow.clone()).await;
    let b = FakeProvider::start(slow).await;
    let (code, _) = hub.room("Load", None).await;
    let _sa = share_with(&hub, &code, "a", &a, "llama3", |o| o.max_concurrency = Some(4)).await;
    let _sb = share_with(&hub, &code, "b", &b, "llama3", |o| o.max_concurrency = Some(4)).await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    // Four requests in flight at once must land two and two: each goes to the less loaded one.
    let calls: Vec<_> = (0..4).map(|_| tokio::spawn(call(http().post(&url).json(&chat("*", "x"))))).collect();
    assert!(a.wait_until(PATIENCE, |_| a.in_flight() + b.in_flight() == 4).await);
    assert_eq!((a.in_flight(), b.in_flight()), (2, 2));
    for c in calls {
        assert_eq!(c.await.unwrap().0, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_requests_two_participants_of_limit_one_all_succeed_by_queueing() {
    let hub = TestHub::start().await;
    let opts = FakeOptions { first_byte_delay: Duration::from_millis(150), ..FakeOptions::default() };
    let a = FakeProvider::start(opts.clone()).await;
    let b = FakeProvider::start(opts).await;
    let (code, _) = hub.room("Queue", None).await;
    let _sa = share(&hub, &code, "a", &a, "llama3").await;
    let _sb = share(&hub, &code, "b", &b, "llama3").await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let calls: Vec<_> =
        (0..8).map(|i| tokio::spawn(call(http().post(&url).json(&chat("*", &format!("n{i}")))))).collect();
    for c in calls {
        let (status, _, v) = c.await.unwrap();
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(a.completed() + b.completed(), 8);
    assert!(a.completed() >= 1 && b.completed() >= 1);
    // While full, a participant showed as busy.
    let mut saw_busy = false;
    while let Some(e) = events.next_within(Duration::from_millis(300)).await {
        if e.event == "participant.updated" && e.json()["data"]["status"] == "busy" {
            saw_busy = true;
        }
    }
    assert!(saw_busy, "participant.updated with status busy");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_gets_503_with_retry_after_and_a_named_busy_participant_409() {
    let hub = TestHub::with_config(HubConfig { queue_depth: 1, ..HubConfig::default() }).await;
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(1500), ..FakeOptions::default() })
            .await;
    let (code, _) = hub.room("Full", None).await;
    let _s = share(&hub, &code, "only", &provider, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let first = tokio::spawn(call(http().post(&url).json(&chat("*", "1"))));
    assert!(provider.wait_in_flight(1, PATIENCE).await);
    let second = tokio::spawn(call(http().post(&url).json(&chat("*", "2"))));
    wait_for(|| async { hub.hub.registry().queued(&code) == 1 }).await;
    let (status, headers, v) = call(http().post(&url).json(&chat("*", "3"))).await;
    assert_eq!(status, 503, "{v}");
    assert!(headers.get("retry-after").is_some());
    assert!(v["error"]["message"].is_string());
    let (status, headers, v) = call(http().post(&url).json(&chat("only", "4"))).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "participant_busy");
    assert!(headers.get("retry-after").is_some());
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200, "the queued request was served when the slot freed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_waits_too_long_gets_503() {
    let hub = TestHub::with_config(HubConfig { queue_wait: Duration::from_millis(300), ..HubConfig::default() }).await;
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(1500), ..FakeOptions::default() })
            .await;
    let (code, _) = hub.room("Wait", None).await;
    let _s = share(&hub, &code, "only", &provider, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let first = tokio::spawn(call(http().post(&url).json(&chat("*", "1"))));
    assert!(provider.wait_in_flight(1, PATIENCE).await);
    let started = Instant::now();
    let (status, headers, _) = call(http().post(&url).json(&chat("*", "2"))).await;
    assert_eq!(status, 503);
    assert!(headers.get("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(hub.hub.registry().queued(&code), 0, "the timed-out waiter left the queue");
}

async fn drop_mid_stream(hub: &TestHub, code: &str, provider: &FakeProvider, model: &str) {
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let mut body = chat(model, "a long answer");
    body["stream"] = json!(true);
    let res = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    assert!(provider.wait_cancelled(1, PATIENCE).await, "the provider saw its request cancelled");
    // The slot is free again: a new request is served at once, not queued behind a ghost.
    let (status, _, v) = call(http().post(&url).json(&chat(model, "next"))).await;
    assert_eq!(status, 200, "{v}");
    let (status, _, _) = call(http().get(hub.at("/v1/health"))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_drops_mid_stream_frees_the_slot_and_cancels_the_provider() {
    let hub = TestHub::start().await;
    let opts = FakeOptions { stream_chunks: 50, chunk_delay: Duration::from_millis(100), ..FakeOptions::default() };
    let tunnelled = FakeProvider::start(opts.clone()).await;
    let direct = FakeProvider::start(opts).await;
    let (code, _) = hub.room("Drops", None).await;
    let _s = share(&hub, &code, "t", &tunnelled, "llama3").await;
    join_direct(&hub, &code, "d", &direct, "llama3").await;
    drop_mid_stream(&hub, &code, &tunnelled, "t").await;
    drop_mid_stream(&hub, &code, &direct, "d").await;
    // Both are online (not stuck busy).
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    for p in v["data"].as_array().unwrap() {
        assert_eq!(p["status"], "online", "{p}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_that_dies_mid_stream_ends_the_stream_with_an_error_event() {
    let hub = TestHub::start().await;
    let opts = FakeOptions { stream_chunks: 50, chunk_delay: Duration::from_millis(100), ..FakeOptions::default() };
    let dying = FakeProvider::start(opts.clone()).await;
    let steady = FakeProvider::start(opts).await;
    let (code, _) = hub.room("Dies", None).await;
    let session = share(&hub, &code, "dying", &dying, "llama3").await;
    let _other = share(&hub, &code, "steady", &steady, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let mut body = chat("dying", "x");
    body["stream"] = json!(true);
    let res = http().post(&url).json(&body).send().await.unwrap();
    let mut doomed = res.bytes_stream();
    doomed.next().await.unwrap().unwrap();
    let mut body = chat("steady", "x");
    body["stream"] = json!(true);
    let other = tokio::spawn({
        let (url, body) = (url.clone(), body.clone());
        async move { post_sse(&url, &body).await }
    });
    drop(session);
    let killed = Instant::now();
    let mut rest = Vec::new();
    while let Some(Ok(b)) = doomed.next().await {
        rest.extend_from_slice(&b);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(killed.elapsed() < Duration::from_secs(1), "error within 1 s, took {:?}", killed.elapsed());
    assert!(rest.contains("event: error"), "{rest}");
    let (status, events) = other.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(chat_text(&events).len(), "echo: x".len(), "the other stream was untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_before_the_first_byte_and_never_away_from_a_named_participant() {
    let hub = TestHub::start().await;
    let broken = FakeProvider::start(FakeOptions { mode: Mode::Fail500, ..FakeOptions::default() }).await;
    let healthy = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Failover", None).await;
    let _b = share(&hub, &code, "broken", &broken, "llama3").await;
    let _h = share(&hub, &code, "healthy", &healthy, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    for _ in 0..6 {
        let (status, _, v) = call(http().post(&url).json(&chat("*", "x"))).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, _, _) = call(http().post(&url).json(&chat("broken", "x"))).await;
    assert_eq!(status, 500, "a named participant's failure is passed through");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_provider_times_out_and_frees_its_slot() {
    let hub = TestHub::with_config(HubConfig {
        first_byte_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(400),
        ..HubConfig::default()
    })
    .await;
    let provider = FakeProvider::start(FakeOptions { mode: Mode::Hang, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Hang", None).await;
    let _s = share(&hub, &code, "h", &provider, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let started = Instant::now();
    let (status, _, v) = call(http().post(&url).json(&chat("*", "x"))).await;
    assert_eq!(status, 504, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("in time"));
    assert!(started.elapsed() < Duration::from_secs(3));
    // Mid-stream silence ends the stream with an error event.
    provider.set_mode(Mode::HangMidStream);
    let mut body = chat("*", "x");
    body["stream"] = json!(true);
    let (status, events) = post_sse(&url, &body).await;
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap().event, "error", "{events:?}");
    provider.set_mode(Mode::Normal);
    let (status, _, _) = call(http().post(&url).json(&chat("*", "x"))).await;
    assert_eq!(status, 200, "the slot was freed");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_is_merged_and_instructions_become_a_system_message() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({
        "name": "Defaults", "defaults": {"temperature": 0.3, "top_p": 0.8, "instructions": "Be brief."}
    })))
    .await;
    assert_eq!(status, 201);
    assert_eq!(v["data"]["room"]["defaults"]["hasInstructions"], true);
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();
    let _s = share_with(&hub, &code, "p", &provider, "llama3", |o| {
        o.config = Some(gambi::protocol::RuntimeConfig { max_tokens: Some(50), top_p: Some(0.9), ..Default::default() })
    })
    .await;
    let mut body = chat("*", "hi");
    body["temperature"] = json!(0.9);
    let (status, _, _) = call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&body)).await;
    assert_eq!(status, 200);
    let sent = provider.last_body("/v1/chat/completions").unwrap();
    assert_eq!(sent["model"], "llama3");
    assert_eq!(sent["temperature"], 0.9, "the request wins");
    assert_eq!(sent["top_p"], 0.9, "the participant's config over the room's");
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "Be brief."}));
    let (status, _, _) =
        call(http().post(hub.at(&format!("/rooms/{code}/v1/responses"))).json(&json!({"model": "*", "input": "hi"})))
            .await;
    assert_eq!(status, 200);
    assert_eq!(provider.last_body("/v1/responses").unwrap()["instructions"], "Be brief.");
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_complete_carries_metrics_for_stream_and_non_stream() {
    let hub = TestHub::start().await;
    let provider =
        FakeProvider::start(FakeOptions { chunk_delay: Duration::from_millis(20), ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Metrics", None).await;
    let _s = share(&hub, &code, "m", &provider, "llama3").await;
    let mut v1 = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let mut classic = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    for stream in [false, true] {
        let mut body = chat("*", "count these words please");
        body["stream"] = json!(stream);
        let res = http().post(&url).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        let request = next_named(&mut v1, "llm.request").await;
        assert_eq!(request["data"]["participantId"], "m");
        let complete = next_named(&mut v1, "llm.complete").await;
        let m = &complete["data"]["metrics"];
        assert!(m["ttftMs"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["durationMs"].as_f64().unwrap() >= m["ttftMs"].as_f64().unwrap(), "{m}");
        assert!(m["inputTokens"].as_u64().unwrap() > 0, "stream={stream}: {m}");
        assert!(m["outputTokens"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["totalTokens"], m["inputTokens"].as_u64().unwrap() + m["outputTokens"].as_u64().unwrap());
        assert!(m["tokensPerSecond"].as_f64().unwrap() > 0.0, "{m}");
        let request = next_named(&mut classic, "llm:request").await;
        assert_eq!(request, json!({"participantId": "m", "model": "llama3"}));
    }
}

async fn next_named(sse: &mut Sse, name: &str) -> Value {
    loop {
        let e = sse.next().await;
        if e.event == name {
            return e.json();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_json_and_a_missing_model_are_400_in_openai_shape() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Bad", None).await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    for body in ["{", "[]", r#"{"messages": []}"#, r#"{"model": 5, "messages": []}"#, r#"{"model": "*"}"#] {
        let (status, _, v) =
            call(http().post(&url).header("content-type", "application/json").body(body.to_string())).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "{v}");
    }
    let (status, _, v) = call(http().post(hub.at("/rooms/ZZZZZZ/v1/chat/completions")).json(&chat("*", "x"))).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    let (status, _, v) = call(http().get(hub.at(&format!("/rooms/{code}/v1/nope")))).await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_responses_the_hub_keeps_are_bounded_in_bytes_and_its_memory_stays_put() {
    // Regression (issue 11, the Responses store): for a provider without /v1/responses the hub
    // kept each translated response and its input items, 10,000 of them, whole and parsed; large
    // requests piled up hundreds of megabytes. Now the store holds at most 64 MiB of JSON (a
    // quarter per room, the oldest going first), and the request is not copied whole to translate.
    const TURNS: usize = 20_000;
    const REQUESTS: usize = 8;
    // The participant joins the classic way and sends no heartbeats: it must not time out while
    // a loaded machine works through the large requests (this test is about memory).
    let hub = BinHub::start_with_env(&["--participant-timeout", "10m"], &[("RUST_LOG", "info")]);
    let provider = FakeProvider::start(FakeOptions {
        responses_api: false,
        reply: Some("ok".into()),
        record: false,
        ..Default::default()
    })
    .await;
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Big inputs"}))).await;
    assert_eq!(status, 201, "{v}");
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();
    let body = json!({"id": "old-ollama", "nickname": "old", "model": "llama3", "endpoint": provider.url});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");

    // A long conversation: 20,000 turns of a few hundred bytes, 7.4 MB in all.
    let filler = "and then some more words about the code under review ".repeat(6);
    let items: Vec<Value> = (0..TURNS)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"type": "message", "role": role, "content": format!("turn {i:06}: {filler}")})
        })
        .collect();
    let request = serde_json::to_vec(&json!({"model": "*", "input": items})).unwrap();
    assert!((7_000_000..8_000_000).contains(&request.len()), "{} bytes", request.len());
    let request = bytes::Bytes::from(request);

    let pid = hub.child.id();
    let before = rss_kib(pid);
    let sampler = crate::util::PeakRss::start(pid);
    let base = hub.at(&format!("/rooms/{code}/v1/responses"));
    let mut ids = Vec::new();
    for n in 0..REQUESTS {
        let res = http()
            .post(&base)
            .header("content-type", "application/json")
            .body(request.clone())
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let v: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "request {n}: {v}");
        assert_eq!(v["output_text"], "ok", "request {n}: translated by the hub");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let peak = sampler.peak_kib().max(after);
    eprintln!(
        "{REQUESTS} translated Responses requests of {:.1} MB ({TURNS} input items) each: hub RSS {before} KiB \
         before, peak {peak} KiB, {after} KiB after",
        request.len() as f64 / 1e6
    );
    assert!(after < 200 * 1024, "the hub kept {after} KiB after {REQUESTS} large translated responses");

    // The newest is still served whole; the oldest went to make room, and answers as any unknown id.
    let newest = ids.last().unwrap();
    let (status, headers, v) = call(http().get(format!("{base}/{newest}"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(v["id"], newest.as_str());
    assert_eq!(v["output_text"], "ok");
    let (status, _, v) = call(http().get(format!("{base}/{newest}/input_items"))).await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), TURNS);
    assert_eq!(v["data"][TURNS - 1], items[TURNS - 1]);
    let (status, _, v) = call(http().get(format!("{base}/{}", ids[0]))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["message"], format!("No response with id '{}' was made in this room.", ids[0]));

    // A streamed translation is kept the same way, and deleted on request.
    let (status, events) = post_sse(&base, &json!({"model": "*", "input": "stream it", "stream": true})).await;
    assert_eq!(status, 200);
    let completed = events.iter().find(|e| e.event == "response.completed").unwrap().json();
    let id = completed["response"]["id"].as_str().unwrap();
    let (status, _, v) = call(http().get(format!("{base}/{id}"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, completed["response"]);
    let (status, _, v) = call(http().get(format!("{base}/{id}/input_items"))).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["content"][0]["text"], "stream it");
    assert_eq!(v["first_id"], v["data"][0]["id"]);
    let (status, _, v) = call(http().delete(format!("{base}/{id}"))).await;
    assert_eq!((status, v), (200, json!({"id": id, "object": "response.deleted", "deleted": true})));
    let (status, _, _) = call(http().get(format!("{base}/{id}"))).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_translated_input_of_470_000_small_items_costs_its_text_not_its_tree() {
    // Three 22 MB Responses requests of tiny items, to a provider without the Responses API: as a
    // tree each input took gigabytes and the hub kept 1.5 GB resident after them (4.1 GB in the
    // report). Translated item by item from its text, the hub stays near its size.
    const ITEMS: usize = 470_000;
    // A classic participant without heartbeats: it must outlive a slow machine's run.
    let hub = BinHub::start(&["--participant-timeout", "10m"]);
    let provider = FakeProvider::start(FakeOptions {
        responses_api: false,
        reply: Some("ok".into()),
        record: false,
        ..Default::default()
    })
    .await;
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Tiny items"}))).await;
    assert_eq!(status, 201, "{v}");
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();
    let body = json!({"id": "old-server", "nickname": "old", "model": "llama3", "endpoint": provider.url});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    let mut request = String::from(r#"{"model":"*","input":["#);
    for i in 0..ITEMS {
        if i > 0 {
            request.push(',');
        }
        request.push_str(r#"{"type":"message","role":"user","content":"x"}"#);
    }
    request.push_str("]}");
    let request = bytes::Bytes::from(request);
    assert!(request.len() > 20_000_000, "{} bytes", request.len());

    let pid = hub.child.id();
    let before = rss_kib(pid);
    let sampler = crate::util::PeakRss::start(pid);
    let base = hub.at(&format!("/rooms/{code}/v1/responses"));
    for n in 0..3 {
        let res = http()
            .post(&base)
            .header("content-type", "application/json")
            .body(request.clone())
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let v: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "request {n}: {v}");
        assert_eq!(v["output_text"], "ok", "request {n}: translated by the hub");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let peak = sampler.peak_kib().max(after);
    eprintln!(
        "3 translated Responses requests of {:.1} MB ({ITEMS} tiny input items) each: hub RSS {before} KiB before, \
         peak {peak} KiB, {after} KiB after",
        request.len() as f64 / 1e6
    );
    assert!(peak < 200 * 1024, "the hub peaked at {peak} KiB");
    assert!(after < 200 * 1024, "the hub kept {after} KiB");
    provider.stop().await;
}
