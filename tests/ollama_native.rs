//! The Ollama API of a room reaching an Ollama participant natively: a real hub, real participant
//! sessions dialing real tunnels (and a direct participant the hub calls over HTTP), and the fake
//! provider speaking Ollama's own API (`ollama: true`). Its requests arrive as the client sent
//! them (`keep_alive`, `options`, `format`, `images`, `think`), its NDJSON lines reach the client
//! as it wrote them, and what its `/api/tags` tells of the model shows in the room's. A participant
//! whose provider is not Ollama still gets the translation to the OpenAI endpoints.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::fake_provider::ollama::{chat_lines, generate_lines, CREATED_AT, TOTAL_DURATION};
use crate::fake_provider::surfaces::embedding_of;
use crate::fake_provider::{count_tokens, echo, ollama_size, FakeOptions, FakeProvider};
use crate::inference::{share, wait_for};
use crate::util::{call, http, Sse, TestHub, PATIENCE};

/// An Ollama provider serving `llama3:latest` (and its own native API).
async fn ollama_provider(tweak: impl FnOnce(&mut FakeOptions)) -> FakeProvider {
    let mut options = FakeOptions { ollama: true, models: vec!["llama3:latest".into()], ..FakeOptions::default() };
    tweak(&mut options);
    FakeProvider::start(options).await
}

/// A participant's public record.
async fn record(hub: &TestHub, code: &str, id: &str) -> Value {
    let (status, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/{id}")))).await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

fn api(hub: &TestHub, code: &str, path: &str) -> String {
    hub.at(&format!("/rooms/{code}/api/{path}"))
}

/// The NDJSON lines of a streamed answer.
async fn lines_of(res: reqwest::Response) -> Vec<Value> {
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.unwrap();
    assert!(text.ends_with('\n'), "every line ends: {text}");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The calls `provider` received on `path`, without the participant's capability probe.
fn calls_to(provider: &FakeProvider, path: &str) -> Vec<Value> {
    provider.requests_to(path).into_iter().map(|r| r.json()).filter(|b| b != &json!({})).collect()
}

/// An Ollama chat request with everything a native call must carry as it is.
fn rich_chat(model: &str, text: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": text, "images": ["aGVsbG8="]}],
        "stream": stream,
        "keep_alive": "12m",
        "options": {"num_ctx": 8192, "temperature": 0.25, "seed": 7, "repeat_last_n": 33},
        "format": {"type": "object", "properties": {"a": {"type": "string"}}},
        "think": false,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ollama_participant_gets_the_ollama_api_natively_and_others_the_translation() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Native", None).await;
    let ollama = ollama_provider(|_| {}).await;
    let openai = FakeProvider::start(FakeOptions { models: vec!["qwen2".into()], ..FakeOptions::default() }).await;
    let _a = share(&hub, &code, "olla", &ollama, "llama3").await;
    let _b = share(&hub, &code, "oai", &openai, "qwen2").await;

    // What each participant registered: Ollama, and what its /api/tags says of the model.
    let olla = record(&hub, &code, "olla").await;
    assert_eq!(olla["capabilities"]["ollama"], "supported", "{olla}");
    assert_eq!(
        olla["modelDetails"],
        json!({"size": ollama_size("llama3:latest"), "format": "gguf", "family": "llama", "families": ["llama"],
               "parameterSize": "8.0B", "quantizationLevel": "Q4_K_M"})
    );
    let oai = record(&hub, &code, "oai").await;
    assert!(oai["capabilities"].get("ollama").is_none(), "not Ollama: {oai}");
    assert!(oai.get("modelDetails").is_none(), "{oai}");

    // The room's /api/tags tells what the Ollama told, and keeps placeholders for the other.
    let (status, _, tags) = call(http().get(api(&hub, &code, "tags"))).await;
    assert_eq!(status, 200, "{tags}");
    let llama = tags["models"].as_array().unwrap().iter().find(|m| m["name"] == "llama3:latest").unwrap().clone();
    assert_eq!(llama["size"], ollama_size("llama3:latest"));
    assert_eq!(llama["details"]["family"], "llama");
    assert_eq!(llama["details"]["parameter_size"], "8.0B");
    assert_eq!(llama["details"]["quantization_level"], "Q4_K_M");
    let qwen = tags["models"].as_array().unwrap().iter().find(|m| m["name"] == "qwen2:latest").unwrap().clone();
    assert_eq!(qwen["details"]["family"], "", "nobody told: {qwen}");
    assert_eq!(qwen["size"], 0);
    let (_, _, shown) = call(http().post(api(&hub, &code, "show")).json(&json!({"model": "llama3"}))).await;
    assert_eq!(shown["details"]["quantization_level"], "Q4_K_M", "{shown}");

    // A streamed chat: the request arrives as the client sent it (the model the participant's),
    // and the client reads the provider's own lines.
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let request = rich_chat("llama3", "native words", true);
    let lines = lines_of(http().post(api(&hub, &code, "chat")).json(&request).send().await.unwrap()).await;
    let reply = echo("native words");
    assert_eq!(lines, chat_lines("llama3:latest", "native words", &reply, 5), "the provider's lines, untouched");
    let got = calls_to(&ollama, "/api/chat");
    assert_eq!(got.len(), 1, "{got:?}");
    let mut expected = request.clone();
    expected["model"] = json!("llama3");
    assert_eq!(got[0], expected, "keep_alive, options, format, images and think as they were");
    assert!(calls_to(&ollama, "/v1/chat/completions").is_empty(), "nothing was translated for it");
    // Counted like any request: llm.request, then llm.complete with the done line's counts.
    let complete = loop {
        let e = events.next().await;
        if e.event == "llm.complete" {
            break e.json();
        }
    };
    assert_eq!(complete["data"]["participantId"], "olla");
    assert_eq!(complete["data"]["metrics"]["outputTokens"], count_tokens(&reply), "{complete}");
    assert_eq!(complete["data"]["metrics"]["inputTokens"], count_tokens("native words"));

    // Not streamed, generate, embed and the older embeddings: natively too.
    let (status, _, whole) =
        call(http().post(api(&hub, &code, "chat")).json(&rich_chat("llama3", "whole", false))).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["message"]["content"], echo("whole"));
    assert_eq!(
        (whole["created_at"].as_str(), whole["total_duration"].as_u64()),
        (Some(CREATED_AT), Some(TOTAL_DURATION))
    );
    let generate = json!({"model": "llama3", "prompt": "go on", "raw": true, "keep_alive": 0,
                          "options": {"num_predict": 9}});
    let lines = lines_of(http().post(api(&hub, &code, "generate")).json(&generate).send().await.unwrap()).await;
    assert_eq!(lines, generate_lines("llama3:latest", "go on", &echo("go on"), 5));
    let sent = &calls_to(&ollama, "/api/generate")[0];
    assert_eq!((&sent["raw"], &sent["keep_alive"]), (&json!(true), &json!(0)));
    assert_eq!(sent["options"], json!({"num_predict": 9}));
    // What no translation carries (fill-in-the-middle's `suffix`) goes to the Ollama alone...
    let fim = json!({"model": "llama3", "prompt": "fn main() {", "suffix": "}", "stream": false});
    let (status, _, v) = call(http().post(api(&hub, &code, "generate")).json(&fim)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"], echo("fn main() {"));
    assert_eq!(calls_to(&ollama, "/api/generate")[1]["suffix"], "}");
    // ...and is refused, as before, for a model only others serve.
    let (status, _, v) =
        call(http().post(api(&hub, &code, "generate")).json(&json!({"model": "qwen2", "prompt": "a", "suffix": "b"})))
            .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("suffix")), "{v}");
    assert!(openai.requests_to("/api/generate").is_empty() && calls_to(&openai, "/v1/completions").is_empty());
    let embed = json!({"model": "llama3", "input": ["a", "b"], "truncate": false, "keep_alive": "1m",
                       "options": {"num_thread": 2}});
    let (status, _, v) = call(http().post(api(&hub, &code, "embed")).json(&embed)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["embeddings"][1].as_array().map(Vec::len), Some(embedding_of("b", 8).len()));
    assert_eq!(v["total_duration"], TOTAL_DURATION, "the provider's own answer: {v}");
    let mut sent = calls_to(&ollama, "/api/embed")[0].clone();
    sent["model"] = json!("llama3");
    assert_eq!(sent, embed);
    let (status, _, v) =
        call(http().post(api(&hub, &code, "embeddings")).json(&json!({"model": "llama3", "prompt": "x"}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["embedding"].as_array().map(Vec::len), Some(8));
    assert_eq!(calls_to(&ollama, "/api/embeddings").len(), 1);
    assert!(calls_to(&ollama, "/v1/embeddings").is_empty(), "nothing was translated for it");

    // The other participant still gets the OpenAI translation.
    let lines = lines_of(
        http().post(api(&hub, &code, "chat")).json(&rich_chat("qwen2", "hi there", true)).send().await.unwrap(),
    )
    .await;
    let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(text, echo("hi there"));
    assert!(lines.iter().all(|l| l["created_at"] != CREATED_AT), "written by the hub");
    let translated = calls_to(&openai, "/v1/chat/completions");
    assert_eq!(translated.len(), 1);
    assert_eq!(translated[0]["model"], "qwen2");
    assert_eq!(translated[0]["stream"], true);
    assert_eq!(translated[0]["temperature"], 0.25, "options mapped to the OpenAI fields");
    assert!(translated[0].get("keep_alive").is_none() && translated[0].get("options").is_none());
    assert!(openai.requests_to("/api/chat").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_ollama_participant_is_served_natively_and_a_client_that_leaves_cancels_it() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Direct", None).await;
    let ollama = ollama_provider(|o| {
        o.stream_chunks = 6;
        o.chunk_delay = Duration::from_millis(150);
    })
    .await;
    // A direct participant says itself what its provider is (the hub never probes it).
    let body = json!({"id": "dollama", "nickname": "D", "model": "llama3", "endpoint": ollama.url,
                      "capabilities": {"chatCompletions": "supported", "ollama": "supported"},
                      "modelDetails": {"family": "llama", "quantizationLevel": "Q8_0"}});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    let (_, _, tags) = call(http().get(api(&hub, &code, "tags"))).await;
    assert_eq!(tags["models"][0]["details"]["quantization_level"], "Q8_0", "{tags}");

    let request = rich_chat("llama3", "direct words", true);
    let lines = lines_of(http().post(api(&hub, &code, "chat")).json(&request).send().await.unwrap()).await;
    assert_eq!(lines, chat_lines("llama3:latest", "direct words", &echo("direct words"), 6));
    let got = calls_to(&ollama, "/api/chat");
    let mut expected = request.clone();
    expected["model"] = json!("llama3");
    assert_eq!(got, [expected]);

    // The client reads the first line and goes away: the provider's call is cancelled.
    let res = http().post(api(&hub, &code, "chat")).json(&request).send().await.unwrap();
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains(CREATED_AT));
    drop(body);
    assert!(ollama.wait_cancelled(1, PATIENCE).await, "the provider saw the client leave");
    // And the participant is free again.
    wait_for(|| async {
        let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/dollama")))).await;
        v["data"]["status"] == "online"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ollama_that_fails_before_its_first_byte_is_failed_over_to_one_that_answers() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Failover", None).await;
    let broken = ollama_provider(|o| o.mode = crate::fake_provider::Mode::Fail500).await;
    let good = FakeProvider::start(FakeOptions { models: vec!["llama3".into()], ..FakeOptions::default() }).await;
    let _a = share(&hub, &code, "broken", &broken, "llama3").await;
    let _b = share(&hub, &code, "good", &good, "llama3").await;
    // Until routing has tried the broken one first (it picks by speed, not in turn).
    let mut asked = 0;
    while calls_to(&broken, "/api/chat").is_empty() {
        assert!(asked < 12, "routing never tried the Ollama participant");
        asked += 1;
        let res = http().post(api(&hub, &code, "chat")).json(&rich_chat("llama3", "again", true)).send().await.unwrap();
        let lines = lines_of(res).await;
        let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
        assert_eq!(text, echo("again"), "every answer comes whole: {lines:?}");
    }
    assert_eq!(calls_to(&good, "/v1/chat/completions").len(), asked, "each came translated from the other");
}

/// The official `ollama` Python client against a room whose members are Ollamas: every call
/// (list, ps, show, chat with tools, generate, raw generate, embed, embeddings) goes natively.
#[tokio::test(flavor = "multi_thread")]
async fn the_official_ollama_client_works_against_ollama_members() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Ollamas", None).await;
    let ollama = ollama_provider(|o| {
        o.models = vec!["llama3:latest".into(), "nomic-embed-text:latest".into()];
        o.loaded = vec!["llama3:latest".into()];
    })
    .await;
    let _a = share(&hub, &code, "chat", &ollama, "llama3").await;
    let _b = share(&hub, &code, "embed", &ollama, "nomic-embed-text").await;
    let base = hub.at(&format!("/rooms/{code}"));
    crate::ollama_api::run_ollama_client(vec![base, "llama3".into(), "nomic-embed-text".into()]).await;
    for path in ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"] {
        assert!(!calls_to(&ollama, path).is_empty(), "{path} was called natively");
    }
    let translated: Vec<Value> = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
        .iter()
        .flat_map(|p| calls_to(&ollama, p))
        .collect();
    assert!(translated.is_empty(), "nothing went through the OpenAI endpoints: {translated:?}");
}
