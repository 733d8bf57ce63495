//! A waiting client sees its place in line (issue 14): a streaming request that queues reads SSE
//! comment lines with its position before its stream, the room's events show it waiting
//! (`llm.queued`), and clients still parse the stream. Real hub, a tunnel participant with one
//! place held busy by a slow fake stream.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use gambi::hub::HubConfig;
use serde_json::{json, Value};

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::inference::share_with;
use crate::tunnel::python;
use crate::util::{http, Sse, TestHub};

/// One place, each answer's first byte after `delay`.
async fn busy_room(hub: &TestHub, delay: Duration) -> (String, FakeProvider, gambi::participant::ParticipantSession) {
    let (code, _) = hub.room("Queue", None).await;
    let provider = FakeProvider::start(FakeOptions { first_byte_delay: delay, ..FakeOptions::default() }).await;
    let session = share_with(hub, &code, "only", &provider, "llama3", |o| o.max_concurrency = Some(1)).await;
    (code, provider, session)
}

fn chat(content: &str) -> Value {
    json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": content}]})
}

/// Sends a streaming chat request and holds the response (its headers have come).
async fn open(hub: &TestHub, code: &str, content: &str) -> reqwest::Response {
    http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat(content)).send().await.unwrap()
}

/// Reads `res` to its end: what came before the first `data:` line, and the whole text.
async fn read_all(res: reqwest::Response) -> (String, String) {
    let mut body = res.bytes_stream();
    let mut text = String::new();
    while let Some(piece) =
        tokio::time::timeout(Duration::from_secs(15), body.next()).await.expect("the stream went on")
    {
        text.push_str(&String::from_utf8_lossy(&piece.unwrap()));
    }
    let before = text.split("data:").next().unwrap_or_default().to_string();
    (before, text)
}

/// The next event named `name`, skipping others.
async fn next_of(events: &mut Sse, name: &str) -> Value {
    loop {
        let e = events.next_within(Duration::from_secs(30)).await.unwrap_or_else(|| panic!("no {name} event"));
        if e.event == name {
            return e.json()["data"].clone();
        }
    }
}

/// The text of a chat stream's deltas.
fn content(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

fn positions(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.strip_prefix(": queued, position ")).filter_map(|n| n.trim().parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_stream_reads_its_place_before_its_first_chunk() {
    let hub = TestHub::start().await;
    let (code, provider, _s) = busy_room(&hub, Duration::from_millis(700)).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let holder = tokio::spawn(open(&hub, &code, "first").await.text());
    assert!(provider.wait_in_flight(1, Duration::from_secs(5)).await);

    let started = Instant::now();
    let res = open(&hub, &code, "second").await;
    // The headers come at once, while it still waits.
    assert!(started.elapsed() < Duration::from_millis(500), "headers after {:?}", started.elapsed());
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(res.headers().contains_key("x-request-id"));
    let (before, text) = read_all(res).await;
    assert_eq!(positions(&before), [1], "one note, position 1, before the first data: {text:?}");
    assert!(content(&text) == "echo: second" && text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(content(&holder.await.unwrap().unwrap()) == "echo: first");

    let queued = next_of(&mut events, "llm.queued").await;
    assert_eq!((queued["position"].as_u64(), queued["model"].as_str()), (Some(1), Some("llama3")), "{queued}");
    assert_eq!(queued["operation"], "chat.completions");
    // Its llm.request follows under the same id, first in line.
    let mut request;
    loop {
        request = next_of(&mut events, "llm.request").await;
        if request["requestId"] == queued["requestId"] {
            break;
        }
    }
    assert_eq!(request["route"]["queuePosition"], 1, "{request}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_waiting_streams_see_places_one_and_two_and_the_second_moves_up() {
    let hub = TestHub::start().await;
    let (code, provider, _s) = busy_room(&hub, Duration::from_millis(600)).await;
    let holder = tokio::spawn(open(&hub, &code, "first").await.text());
    assert!(provider.wait_in_flight(1, Duration::from_secs(5)).await);
    let second = open(&hub, &code, "second").await;
    let third = open(&hub, &code, "third").await;
    let (second, third) = tokio::join!(read_all(second), read_all(third));
    assert_eq!(positions(&second.0), [1], "{:?}", second.1);
    assert_eq!(positions(&third.0), [2, 1], "second in line, then first: {:?}", third.1);
    assert_eq!((content(&second.1), content(&third.1)), ("echo: second".into(), "echo: third".into()));
    assert!(content(&holder.await.unwrap().unwrap()) == "echo: first");
    // A request that does not stream gets its JSON as ever.
    let holder = tokio::spawn(open(&hub, &code, "again").await.text());
    assert!(provider.wait_in_flight(1, Duration::from_secs(5)).await);
    let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "whole"}]});
    let res = http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: whole", "{v}");
    holder.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_while_queued_leaves_the_queue_and_a_wait_that_runs_out_ends_with_an_error_event() {
    let config = HubConfig { queue_wait: Duration::from_millis(400), ..HubConfig::default() };
    let hub = TestHub::with_config(config).await;
    let (code, provider, _s) = busy_room(&hub, Duration::from_millis(1500)).await;
    let holder = tokio::spawn(open(&hub, &code, "first").await.text());
    assert!(provider.wait_in_flight(1, Duration::from_secs(5)).await);

    // Gone while waiting: its place in line is given up at once.
    let mut res = open(&hub, &code, "leaving").await;
    let note = res.chunk().await.unwrap().unwrap();
    assert_eq!(&note[..], b": queued, position 1\n\n");
    assert_eq!(hub.hub.registry().queued(&code), 1);
    drop(res);
    let left = Instant::now();
    while hub.hub.registry().queued(&code) != 0 {
        assert!(left.elapsed() < Duration::from_secs(5), "the request stayed in the queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A wait that runs out: the stream has started, so it ends with an error event in its shape.
    let res = open(&hub, &code, "too late").await;
    assert_eq!(res.status(), 200);
    let (before, text) = read_all(res).await;
    assert_eq!(positions(&before), [1], "{text}");
    let error = text.split("event: error\ndata: ").nth(1).expect("an error event");
    let error: Value = serde_json::from_str(error.lines().next().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "capacity_exceeded", "{error}");
    assert!(content(&holder.await.unwrap().unwrap()) == "echo: first");
    // Refusals before the queue still answer JSON with their status.
    let bad = json!({"model": 3, "stream": true, "messages": []});
    let res = http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&bad).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

/// The official OpenAI client streaming through the queue (chat, Responses, legacy completions).
#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_parses_a_stream_that_waited() {
    let hub = TestHub::start().await;
    let (code, provider, _s) = busy_room(&hub, Duration::ZERO).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let base = hub.at(&format!("/rooms/{code}/v1"));
    for kind in ["chat", "responses", "completions"] {
        // The place is held until the client's request is seen waiting (Python starts slowly).
        provider.update(|o| o.first_byte_delay = Duration::from_secs(30));
        let holder = tokio::spawn(open(&hub, &code, "hold").await.text());
        assert!(provider.wait_in_flight(1, Duration::from_secs(5)).await);
        provider.update(|o| o.first_byte_delay = Duration::ZERO);
        let base = base.clone();
        let client = tokio::task::spawn_blocking(move || {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_queued.py");
            std::process::Command::new(python()).args([script, &base, "llama3", kind]).output().unwrap()
        });
        let queued = next_of(&mut events, "llm.queued").await;
        assert_eq!(queued["position"], 1, "the {kind} request waited: {queued}");
        // Its stream is open and waiting: the place is freed (the holder's client goes away).
        holder.abort();
        let out = client.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stdout.contains("all checks passed"), "{kind}:\n{stdout}\n{stderr}");
    }
}
