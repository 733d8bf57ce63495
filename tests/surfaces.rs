//! The room's whole OpenAI plane and Anthropic Messages, end to end: embeddings and legacy
//! completions routed like chat, the models listing and `/models/{id}`, routing that skips a
//! participant whose provider lacks an endpoint (found by the probe, or learned from its 404),
//! Messages passed through to a provider that has `/v1/messages` and translated for one that
//! does not, the room key as `x-api-key`, and a provider that answers a stream request with one
//! JSON document. Real hubs, real tunnel participants, the fake provider; the official OpenAI and
//! Anthropic Python clients where they fit.

use serde_json::{json, Value};

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::inference::{share, share_with};
use crate::tunnel::python;
use crate::util::{call, http, parse_sse, Sse, SseEvent, TestHub};

/// POSTs `body` to the room's `path` (under `/rooms/CODE/v1`) and reads the whole answer as SSE.
async fn post_stream(hub: &TestHub, code: &str, path: &str, body: &Value) -> (u16, String, Vec<SseEvent>) {
    let res = http().post(hub.at(&format!("/rooms/{code}/v1{path}"))).json(body).send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = res.text().await.unwrap();
    (status, content_type, parse_sse(&text))
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// The JSON of every data frame but `[DONE]`.
fn chunks(events: &[SseEvent]) -> Vec<Value> {
    events.iter().filter(|e| e.data != "[DONE]").map(SseEvent::json).collect()
}

async fn post(hub: &TestHub, code: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/v1{path}"))).json(body)).await;
    (status, v)
}

async fn next_named(sse: &mut Sse, name: &str) -> Value {
    loop {
        let e = sse.next().await;
        if e.event == name {
            return e.json();
        }
    }
}

async fn capabilities(hub: &TestHub, code: &str, id: &str) -> Value {
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/{id}")))).await;
    v["data"]["capabilities"].clone()
}

/// The requests `provider` got on `path` other than the probe's empty body.
fn served(provider: &FakeProvider, path: &str) -> usize {
    provider.requests_to(path).iter().filter(|r| r.body.as_ref() != Some(&json!({}))).count()
}

/// A Python interpreter with the `anthropic` package: `GAMBI_TEST_PYTHON_ANTHROPIC`, else the
/// suite's (`GAMBI_TEST_PYTHON`).
fn python_anthropic() -> String {
    std::env::var("GAMBI_TEST_PYTHON_ANTHROPIC").unwrap_or_else(|_| python())
}

async fn run_script(python: String, script: &'static str, args: Vec<String>) -> String {
    let out = tokio::task::spawn_blocking(move || {
        let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
        std::process::Command::new(&python).arg(path).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_are_routed_like_chat_with_events_and_usage() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions { embedding_dimensions: 12, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Embeddings", None).await;
    let _s = share(&hub, &code, "embedder", &provider, "llama3").await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "*", "input": ["one two", "three"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 12);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let sent = provider.last_body("/v1/embeddings").unwrap();
    assert_eq!(
        sent,
        json!({"model": "llama3", "input": ["one two", "three"]}),
        "the participant's model, nothing else"
    );
    let request = next_named(&mut events, "llm.request").await;
    assert_eq!(request["data"]["operation"], "embeddings.create");
    assert_eq!(request["data"]["participantId"], "embedder");
    let complete = next_named(&mut events, "llm.complete").await;
    assert_eq!(complete["data"]["metrics"]["inputTokens"], 3);
    assert_eq!(complete["data"]["metrics"]["totalTokens"], 3);
    // Routed by model name and by participant id as chat is; bad input is the client's to fix.
    let (status, _) = post(&hub, &code, "/embeddings", &json!({"model": "model:llama3", "input": "x"})).await;
    assert_eq!(status, 200);
    let (status, _) = post(&hub, &code, "/embeddings", &json!({"model": "embedder", "input": "x"})).await;
    assert_eq!(status, 200);
    let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "*"})).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("'input'"), "{v}");
    let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "*", "input": "x", "stream": true})).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "nobody", "input": "x"})).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_completions_stream_and_not_with_usage_hidden_unless_asked() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Completions", None).await;
    let _s = share(&hub, &code, "coder", &provider, "llama3").await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let (status, v) =
        post(&hub, &code, "/completions", &json!({"model": "*", "prompt": "fn main", "max_tokens": 8})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "echo: fn main");
    assert_eq!(provider.last_body("/v1/completions").unwrap()["model"], "llama3");
    let request = next_named(&mut events, "llm.request").await;
    assert_eq!(request["data"]["operation"], "completions.create");
    let complete = next_named(&mut events, "llm.complete").await;
    assert_eq!(complete["data"]["metrics"]["outputTokens"], 3);

    let body = json!({"model": "*", "prompt": "stream this", "stream": true});
    let (status, content_type, frames) = post_stream(&hub, &code, "/completions", &body).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    assert_eq!(frames.last().unwrap().data, "[DONE]");
    let text: String = chunks(&frames).iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, "echo: stream this");
    assert!(chunks(&frames).iter().all(|c| c.get("usage").is_none()), "the usage chunk the hub asked for is hidden");
    assert_eq!(provider.last_body("/v1/completions").unwrap()["stream_options"]["include_usage"], true);
    let complete = next_named(&mut events, "llm.complete").await;
    assert_eq!(complete["data"]["metrics"]["inputTokens"], 2, "the hub still counted");
    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let (_, _, frames) = post_stream(&hub, &code, "/completions", &asked).await;
    assert!(chunks(&frames).iter().any(|c| c["usage"]["total_tokens"].as_u64().is_some()), "asked for, it is kept");
    let (status, v) = post(&hub, &code, "/completions", &json!({"model": "*", "prompt": 7})).await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_models_list_puts_models_first_then_any_then_participants_and_each_can_be_retrieved() {
    let hub = TestHub::start().await;
    let a = FakeProvider::start(FakeOptions { models: vec!["llama3".into()], ..FakeOptions::default() }).await;
    let b = FakeProvider::start(FakeOptions { models: vec!["qwen2".into()], ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Pickers", None).await;
    let _a1 = share(&hub, &code, "alice", &a, "llama3").await;
    let _a2 = share(&hub, &code, "bob", &a, "llama3").await;
    let _b = share(&hub, &code, "carol", &b, "qwen2").await;
    let (status, _, v) = call(http().get(hub.at(&format!("/rooms/{code}/v1/models")))).await;
    assert_eq!(status, 200);
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..3], ["llama3", "qwen2", "*"], "{v}");
    let mut participants = ids[3..].to_vec();
    participants.sort();
    assert_eq!(participants, ["alice", "bob", "carol"]);
    let mut serving: Vec<&str> =
        data[0]["gambi"]["participants"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    serving.sort();
    assert_eq!(serving, ["alice", "bob"]);
    assert!(data.iter().all(|m| m["object"] == "model" && m["created"].is_u64()), "{v}");
    assert!(data[0]["gambi"].get("nickname").is_none(), "a model entry is not a participant");

    let retrieve = |id: &str| {
        let url = hub.at(&format!("/rooms/{code}/v1/models/{id}"));
        async move { call(http().get(url)).await }
    };
    let (status, _, m) = retrieve("qwen2").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["gambi"]["participants"], json!(["carol"]));
    let (status, _, m) = retrieve("alice").await;
    assert_eq!(status, 200);
    assert_eq!(m["gambi"]["model"], "llama3");
    assert_eq!(m["owned_by"], "alice");
    let (status, _, m) = retrieve("*").await;
    assert_eq!(status, 200);
    assert_eq!(m["id"], "*");
    assert_eq!(m["gambi"]["participants"].as_array().unwrap().len(), 3);
    let (status, _, m) = retrieve("model:llama3").await;
    assert_eq!(status, 200);
    assert_eq!(m["id"], "llama3");
    let (status, _, m) = retrieve("gpt-9").await;
    assert_eq!(status, 404);
    assert_eq!(m["error"]["code"], "model_not_found", "{m}");
    assert_eq!(m["error"]["type"], "not_found_error");
    let (status, _, m) = call(http().get(hub.at("/rooms/ZZZZZZ/v1/models/llama3"))).await;
    assert_eq!(status, 404, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_skips_a_participant_the_probe_found_without_the_endpoint() {
    // The first wave's rule (ties at random), so "chat still goes to either" is a fair check; the
    // default rule sends every request to whichever answered faster (tests/scheduling.rs).
    let hub = TestHub::with_config(gambi::hub::HubConfig {
        routing: gambi::hub::scheduler::Policy::LeastLoaded,
        ..gambi::hub::HubConfig::default()
    })
    .await;
    let chat_only =
        FakeProvider::start(FakeOptions { embeddings: false, completions: false, ..FakeOptions::default() }).await;
    let full = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Probe", None).await;
    let _c = share(&hub, &code, "chat-only", &chat_only, "llama3").await;
    let caps = capabilities(&hub, &code, "chat-only").await;
    assert_eq!(caps["embeddings"], "unsupported", "{caps}");
    assert_eq!(caps["completions"], "unsupported", "{caps}");
    assert_eq!(caps["messages"], "unsupported", "{caps}");
    assert_eq!(caps["chatCompletions"], "supported", "{caps}");
    // Alone, it cannot serve embeddings: a clear 404, and nothing reached its provider.
    let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "*", "input": "x"})).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "endpoint_not_served");
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/embeddings"), "{v}");
    let _f = share(&hub, &code, "full", &full, "llama3").await;
    for _ in 0..6 {
        let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "llama3", "input": "x"})).await;
        assert_eq!(status, 200, "{v}");
        let (status, v) = post(&hub, &code, "/completions", &json!({"model": "*", "prompt": "x"})).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(served(&chat_only, "/v1/embeddings") + served(&chat_only, "/v1/completions"), 0);
    assert_eq!(served(&full, "/v1/embeddings"), 6);
    // Chat still goes to either.
    for _ in 0..12 {
        let (status, _) = post(
            &hub,
            &code,
            "/chat/completions",
            &json!({"model": "*", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 200);
    }
    assert!(served(&chat_only, "/v1/chat/completions") > 0 && served(&full, "/v1/chat/completions") > 0);
    // Named, it says it does not serve the endpoint.
    let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "chat-only", "input": "x"})).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("'chat-only'"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_teaches_the_hub_that_an_endpoint_is_missing_and_the_request_fails_over() {
    let hub = TestHub::start().await;
    let fading = FakeProvider::start(FakeOptions::default()).await;
    let full = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Learn", None).await;
    let _a = share(&hub, &code, "fading", &fading, "llama3").await;
    let _b = share(&hub, &code, "full", &full, "llama3").await;
    assert_eq!(capabilities(&hub, &code, "fading").await["embeddings"], "supported");
    // The provider loses its embeddings after the probe (restarted without them, say).
    fading.update(|o| o.embeddings = false);
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    // The hub picks at random among free participants: until it has picked the one that lost them.
    let mut sent = 0;
    while served(&fading, "/v1/embeddings") == 0 && sent < 64 {
        let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "*", "input": "x"})).await;
        assert_eq!(status, 200, "every request is served: {v}");
        sent += 1;
    }
    assert_eq!(served(&fading, "/v1/embeddings"), 1, "picked once in {sent}");
    assert_eq!(served(&full, "/v1/embeddings"), sent, "the one that hit the 404 failed over");
    let error = next_named(&mut events, "llm.error").await;
    assert_eq!(error["data"]["participantId"], "fading");
    assert!(error["data"]["error"].as_str().unwrap().contains("/v1/embeddings"), "{error}");
    assert_eq!(capabilities(&hub, &code, "fading").await["embeddings"], "unsupported");
    for _ in 0..8 {
        let (status, _) = post(&hub, &code, "/embeddings", &json!({"model": "*", "input": "x"})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(served(&fading, "/v1/embeddings"), 1, "never asked again");
    let (status, v) = post(&hub, &code, "/embeddings", &json!({"model": "fading", "input": "x"})).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "endpoint_not_served");
}

/// A Messages request with one tool, as an Anthropic client sends it.
fn messages_body(text: &str, stream: bool, tools: bool) -> Value {
    let mut body = json!({
        "model": "*",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    });
    if tools {
        body["tools"] = json!([{
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }]);
    }
    body
}

fn message_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event == "content_block_delta")
        .filter_map(|e| e.json()["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

const MESSAGE_EVENTS: [&str; 5] =
    ["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta"];

fn assert_message_stream(events: &[SseEvent]) {
    let names = names(events);
    for name in MESSAGE_EVENTS {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(!names.contains(&"error"), "{names:?}");
    for e in events {
        assert_eq!(e.json()["type"], e.event.as_str(), "{}", e.data);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_pass_through_to_a_provider_that_serves_them() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions { messages: true, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Native", None).await;
    let _s = share(&hub, &code, "claude-ish", &provider, "llama3").await;
    assert_eq!(capabilities(&hub, &code, "claude-ish").await["messages"], "supported");
    let (status, v) = post(&hub, &code, "/messages", &messages_body("hi", false, false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0], json!({"type": "text", "text": "echo: hi"}));
    assert_eq!(v["stop_reason"], "end_turn");
    let sent = provider.last_body("/v1/messages").unwrap();
    assert_eq!(sent["model"], "llama3");
    assert_eq!(sent["system"], "Be brief.", "passed as it came");
    assert_eq!(served(&provider, "/v1/chat/completions"), 0);

    let (status, content_type, events) =
        post_stream(&hub, &code, "/messages", &messages_body("stream me", true, false)).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"));
    assert_message_stream(&events);
    assert_eq!(message_text(&events), "echo: stream me");

    let (status, v) = post(&hub, &code, "/messages", &messages_body("weather?", false, true)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"city": "Paris"}));
    let (_, _, events) = post_stream(&hub, &code, "/messages", &messages_body("weather?", true, true)).await;
    assert_message_stream(&events);
    let json: String =
        events.iter().filter_map(|e| e.json()["delta"]["partial_json"].as_str().map(str::to_string)).collect();
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"city": "Paris"}));
    assert_eq!(served(&provider, "/v1/messages"), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_are_translated_for_a_provider_that_only_speaks_chat() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Translated", None).await;
    let _s = share(&hub, &code, "ollama-ish", &provider, "llama3").await;
    let mut watch = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let (status, v) = post(&hub, &code, "/messages", &messages_body("hi", false, false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    assert_eq!(v["content"], json!([{"type": "text", "text": "echo: hi"}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 3, "Be brief. + hi");
    let sent = provider.last_body("/v1/chat/completions").unwrap();
    assert_eq!(sent["model"], "llama3");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(sent["messages"][1], json!({"role": "user", "content": "hi"}));
    let request = next_named(&mut watch, "llm.request").await;
    assert_eq!(request["data"]["operation"], "messages.create");
    let complete = next_named(&mut watch, "llm.complete").await;
    assert_eq!(complete["data"]["metrics"]["outputTokens"], 2);

    let (status, _, events) = post_stream(&hub, &code, "/messages", &messages_body("stream me", true, false)).await;
    assert_eq!(status, 200);
    assert_message_stream(&events);
    assert_eq!(message_text(&events), "echo: stream me");
    let delta = events.iter().find(|e| e.event == "message_delta").unwrap().json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0, "{delta}");

    let (status, v) = post(&hub, &code, "/messages", &messages_body("weather?", false, true)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["name"], "get_weather");
    assert_eq!(v["content"][0]["input"], json!({"city": "Paris"}));
    let sent = provider.last_body("/v1/chat/completions").unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    let (_, _, events) = post_stream(&hub, &code, "/messages", &messages_body("weather?", true, true)).await;
    assert_message_stream(&events);
    let start = events.iter().find(|e| e.event == "content_block_start").unwrap().json();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let json: String =
        events.iter().filter_map(|e| e.json()["delta"]["partial_json"].as_str().map(str::to_string)).collect();
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"city": "Paris"}));
    assert_eq!(served(&provider, "/v1/messages"), 0, "the probe found it missing: never asked");

    // What a chat body cannot carry is refused in Anthropic's shape, naming it.
    let mut document = messages_body("x", false, false);
    document["messages"][0]["content"] = json!([{"type": "document", "source": {"type": "text", "data": "x"}}]);
    let (status, v) = post(&hub, &code, "/messages", &document).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("messages[0].content[0]"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_whose_messages_endpoint_is_gone_is_translated_for_after_its_text_404() {
    // As Ollama (a Go server) answers a route it lacks: `404 page not found`, text, not JSON.
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions { messages: true, plain_404: true, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Gone", None).await;
    let _s = share(&hub, &code, "p", &provider, "llama3").await;
    assert_eq!(capabilities(&hub, &code, "p").await["messages"], "supported");
    provider.update(|o| o.messages = false);
    let (status, v) = post(&hub, &code, "/messages", &messages_body("hi", false, false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"][0]["text"], "echo: hi");
    let (status, _, events) = post_stream(&hub, &code, "/messages", &messages_body("hi", true, false)).await;
    assert_eq!(status, 200);
    assert_message_stream(&events);
    assert_eq!(message_text(&events), "echo: hi");
    assert_eq!(served(&provider, "/v1/messages"), 1, "asked once, then translated");
    assert_eq!(served(&provider, "/v1/chat/completions"), 2);
    assert_eq!(capabilities(&hub, &code, "p").await["messages"], "unsupported");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_on_the_messages_surface_are_in_anthropic_s_shape() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Shapes", None).await;
    let anthropic_shaped = |v: &Value, kind: &str| {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    };
    let (status, v) = post(&hub, &code, "/messages", &json!({"model": "*", "max_tokens": 5})).await;
    assert_eq!(status, 400);
    anthropic_shaped(&v, "invalid_request_error");
    let (status, v) = post(&hub, &code, "/messages", &messages_body("hi", false, false)).await;
    assert_eq!(status, 404, "no participant");
    anthropic_shaped(&v, "not_found_error");
    let (status, v) = post(&hub, "ZZZZZZ", "/messages", &messages_body("hi", false, false)).await;
    assert_eq!(status, 404);
    anthropic_shaped(&v, "not_found_error");
    let (status, _, v) =
        call(http().post(hub.at(&format!("/rooms/{code}/v1/messages/count_tokens"))).json(&json!({}))).await;
    assert_eq!(status, 404);
    anthropic_shaped(&v, "not_found_error");
    let (status, _, v) = call(
        http().post(hub.at(&format!("/rooms/{code}/v1/messages"))).header("content-type", "application/json").body("{"),
    )
    .await;
    assert_eq!(status, 400);
    anthropic_shaped(&v, "invalid_request_error");
    // The OpenAI surface keeps its own.
    let (status, v) = post(&hub, &code, "/chat/completions", &json!({"model": "*"})).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].is_string() && v.get("type").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_room_key_is_accepted_as_x_api_key_as_well_as_bearer() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Keyed", Some("sesame")).await;
    let _s = share_with(&hub, &code, "p", &provider, "llama3", |o| o.password = Some("sesame".into())).await;
    let url = hub.at(&format!("/rooms/{code}/v1/messages"));
    let body = messages_body("hi", false, false);
    let (status, _, v) = call(http().post(&url).header("x-api-key", "sesame").json(&body)).await;
    assert_eq!(status, 200, "{v}");
    let (status, _, v) = call(http().post(&url).bearer_auth("sesame").json(&body)).await;
    assert_eq!(status, 200, "{v}");
    let (status, _, v) = call(http().post(&url).json(&body)).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    let (status, _, v) = call(http().post(&url).header("x-api-key", "wrong").json(&body)).await;
    assert_eq!(status, 401);
    assert_eq!(v["type"], "error", "{v}");
    // The OpenAI endpoints take it too, and still answer in their shape.
    let chat = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let body = json!({"model": "*", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, _) = call(http().post(&chat).header("x-api-key", "sesame").json(&body)).await;
    assert_eq!(status, 200);
    let (status, _, v) = call(http().post(&chat).json(&body)).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_answer_to_a_stream_request_is_relayed_as_a_well_formed_stream() {
    // Regression (issue 13): the hub relayed such an answer as application/json and then
    // appended `event: error` SSE to the same body, a document no client can parse.
    let hub = TestHub::start().await;
    let plain = FakeProvider::start(FakeOptions { json_streams: true, messages: true, ..FakeOptions::default() }).await;
    let old =
        FakeProvider::start(FakeOptions { json_streams: true, responses_api: false, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("JSON streams", None).await;
    let _a = share(&hub, &code, "plain", &plain, "llama3").await;
    let _b = share(&hub, &code, "old", &old, "llama3").await;
    let mut watch = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    for who in ["plain", "old"] {
        // Chat: chunks, then [DONE].
        let body = json!({"model": who, "stream": true, "messages": [{"role": "user", "content": "hello json"}]});
        let (status, content_type, events) = post_stream(&hub, &code, "/chat/completions", &body).await;
        assert_eq!(status, 200);
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        assert!(events.iter().all(|e| e.event == "message"), "{:?}", names(&events));
        assert_eq!(events.last().unwrap().data, "[DONE]");
        let text: String =
            chunks(&events).iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "echo: hello json");
        assert!(chunks(&events).iter().all(|c| c["object"] == "chat.completion.chunk"));
        let complete = next_named(&mut watch, "llm.complete").await;
        assert_eq!(complete["data"]["participantId"], who);
        assert!(complete["data"]["metrics"]["outputTokens"].as_u64().unwrap() > 0, "{complete}");

        // Responses: passed through (plain) or translated (old), the events end in completed.
        let body = json!({"model": who, "stream": true, "input": "hello responses"});
        let (status, content_type, events) = post_stream(&hub, &code, "/responses", &body).await;
        assert_eq!(status, 200);
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let names = names(&events);
        assert_eq!(names.first(), Some(&"response.created"), "{who}: {names:?}");
        assert_eq!(names.last(), Some(&"response.completed"), "{who}: {names:?}");
        assert!(!names.contains(&"error"), "{names:?}");
        let text: String = events
            .iter()
            .filter(|e| e.event == "response.output_text.delta")
            .filter_map(|e| e.json()["delta"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "echo: hello responses", "{who}");
        let last = events.last().unwrap().json();
        assert_eq!(last["response"]["status"], "completed");
        let complete = next_named(&mut watch, "llm.complete").await;
        assert_eq!(complete["data"]["participantId"], who);
        assert!(complete["data"]["metrics"]["inputTokens"].as_u64().unwrap() > 0, "{who}: {complete}");
        let id = last["response"]["id"].as_str().unwrap().to_string();
        let (status, _, stored) = call(http().get(hub.at(&format!("/rooms/{code}/v1/responses/{id}")))).await;
        assert_eq!(status, 200, "{who}: the streamed response is kept: {stored}");
    }
    // Completions and (native) Messages too.
    let body = json!({"model": "plain", "stream": true, "prompt": "once"});
    let (_, _, events) = post_stream(&hub, &code, "/completions", &body).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let text: String = chunks(&events).iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, "echo: once");
    // Messages: passed through (plain) or translated from the chat JSON (old).
    for who in ["plain", "old"] {
        let mut body = messages_body("hello messages", true, false);
        body["model"] = json!(who);
        let (_, _, events) = post_stream(&hub, &code, "/messages", &body).await;
        assert_message_stream(&events);
        assert_eq!(message_text(&events), "echo: hello messages", "{who}");
    }
    assert_eq!(served(&plain, "/v1/messages"), 1);
    assert_eq!(served(&old, "/v1/messages"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_embeds_and_completes_through_a_room() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions { embedding_dimensions: 16, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("OpenAI surfaces", None).await;
    let _s = share(&hub, &code, "p", &provider, "llama3").await;
    let base = hub.at(&format!("/rooms/{code}/v1"));
    let out = run_script(python(), "openai_surfaces.py", vec![base, "no-key-needed".into(), "*".into()]).await;
    assert!(out.contains("dimensions 16"), "{out}");
    assert_eq!(
        provider.last_body("/v1/embeddings").unwrap()["encoding_format"],
        "float",
        "the client's own choice reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_anthropic_client_works_against_a_room_natively_and_translated() {
    let hub = TestHub::start().await;
    let native = FakeProvider::start(FakeOptions { messages: true, ..FakeOptions::default() }).await;
    let chat_only = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Anthropic", Some("open sesame")).await;
    let _a = share_with(&hub, &code, "native", &native, "llama3", |o| o.password = Some("open sesame".into())).await;
    let _b =
        share_with(&hub, &code, "chat-only", &chat_only, "llama3", |o| o.password = Some("open sesame".into())).await;
    let base = hub.at(&format!("/rooms/{code}"));
    // The client sends the key as x-api-key.
    for who in ["native", "chat-only"] {
        run_script(python_anthropic(), "anthropic_client.py", vec![base.clone(), "open sesame".into(), who.into()])
            .await;
    }
    assert_eq!(served(&native, "/v1/messages"), 5);
    assert_eq!(served(&native, "/v1/chat/completions"), 0);
    assert_eq!(served(&chat_only, "/v1/chat/completions"), 5);
    assert_eq!(served(&chat_only, "/v1/messages"), 0);
    assert!(
        native.requests_to("/v1/messages").iter().all(|r| r.header("x-api-key").is_none()),
        "the room key stays at the hub"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_new_endpoints_queue_and_are_cancelled_when_the_client_goes_away() {
    use futures_util::StreamExt;
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions {
        first_byte_delay: std::time::Duration::from_millis(200),
        chunk_delay: std::time::Duration::from_millis(200),
        ..FakeOptions::default()
    })
    .await;
    let (code, _) = hub.room("Queue", None).await;
    let _s = share(&hub, &code, "only", &provider, "llama3").await;
    // One participant that serves one request at a time: the others wait their turn.
    let url = hub.at(&format!("/rooms/{code}/v1/embeddings"));
    let calls: Vec<_> = (0..3)
        .map(|i| tokio::spawn(call(http().post(&url).json(&json!({"model": "*", "input": format!("text {i}")})))))
        .collect();
    for c in calls {
        let (status, _, v) = c.await.unwrap();
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(provider.completed(), 3);
    // A stream the client drops is cancelled at the provider, for completions and (translated)
    // messages alike, and the participant is free again at once.
    let streams = [
        ("/completions", json!({"model": "*", "prompt": "a long story", "stream": true})),
        ("/messages", messages_body("a long answer", true, false)),
    ];
    for (n, (path, body)) in streams.into_iter().enumerate() {
        let res = http().post(hub.at(&format!("/rooms/{code}/v1{path}"))).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let mut stream = res.bytes_stream();
        assert!(!stream.next().await.unwrap().unwrap().is_empty());
        drop(stream);
        assert!(provider.wait_cancelled(n + 1, crate::util::PATIENCE).await, "{path}: the provider saw the cancel");
    }
    // A whole answer the client stops waiting for, too.
    provider.set_mode(crate::fake_provider::Mode::Hang);
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(300)).build().unwrap();
    assert!(impatient.post(&url).json(&json!({"model": "*", "input": "x"})).send().await.is_err());
    assert!(provider.wait_cancelled(3, crate::util::PATIENCE).await, "the hung embeddings call was cancelled");
    provider.set_mode(crate::fake_provider::Mode::Normal);
    let (status, _, v) = call(http().post(&url).json(&json!({"model": "*", "input": "next"}))).await;
    assert_eq!(status, 200, "served at once, not queued behind a ghost: {v}");
}
