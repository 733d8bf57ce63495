//! Room stats and the invite, headless: a real hub, the fake provider shared through a real
//! participant session and tunnel, requests through the room's OpenAI endpoint, and fresh readers
//! of the management plane that were not watching when the requests were made (issue 12, "Room
//! stats lie": "Requests 0" for a room that served 2; "No one is sharing" after people shared).

use std::time::Duration;

use gambi::hub::HubConfig;
use serde_json::{json, Value};

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::inference::{chat, post_sse, share, wait_for};
use crate::util::{call, http, Sse, TestHub};

async fn room_data(hub: &TestHub, code: &str, key: Option<&str>) -> Value {
    let mut req = http().get(hub.at(&format!("/v1/rooms/{code}")));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let (status, _, v) = call(req).await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Two requests, one plain and one streamed: 5 words in, 7 out (the fake counts words).
async fn two_requests(hub: &TestHub, code: &str) {
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let (status, _, v) = call(http().post(&url).json(&chat("*", "one two three"))).await;
    assert_eq!(status, 200, "{v}");
    let mut streamed = chat("*", "four five");
    streamed["stream"] = json!(true);
    let (status, _) = post_sse(&url, &streamed).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_fresh_reader_of_the_room_sees_what_it_served() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Served twice", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let session = share(&hub, &code, "w-stats", &provider, "llama3").await;

    two_requests(&hub, &code).await;

    // Nobody watched; a reader that comes now still gets the hub's counts.
    let stats = room_data(&hub, &code, None).await["stats"].clone();
    assert_eq!(stats["requests"], 2, "{stats}");
    // The streamed answer's metrics are published as its stream ends.
    wait_for(|| async { room_data(&hub, &code, None).await["stats"]["completed"] == 2 }).await;
    let stats = room_data(&hub, &code, None).await["stats"].clone();
    assert_eq!((stats["inputTokens"].clone(), stats["outputTokens"].clone()), (json!(5), json!(7)), "{stats}");
    assert_eq!(stats["errors"], 0);
    assert_eq!(stats["requestsLast24h"], 2);
    assert_eq!(stats["recentCompleted"], 2);
    assert!(stats["avgTtftMs"].as_f64().is_some_and(|ms| ms >= 0.0), "{stats}");
    assert!(stats["lastRequestAt"].as_u64().is_some(), "{stats}");
    assert_eq!((stats["participantsOnline"].clone(), stats["participantsRegistered"].clone()), (json!(1), json!(1)));
    assert_eq!(stats["participantsShared"], 1);

    // Per participant, in the listing and alone: what it served, and who called.
    let (status, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(status, 200, "{v}");
    let mine = &v["data"][0];
    assert_eq!(mine["id"], "w-stats");
    assert_eq!(mine["nickname"], "w-stats", "the listing is whole around the spliced stats");
    assert_eq!(mine["stats"]["requests"], 2, "{mine}");
    let callers = mine["stats"]["recentCallers"].as_array().unwrap();
    assert_eq!(callers.len(), 2, "{mine}");
    assert_eq!(callers[0]["caller"], "127.0.0.1");
    assert_eq!(callers[0]["model"], "llama3");
    let (_, _, one) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/w-stats")))).await;
    assert_eq!(one["data"]["stats"]["outputTokens"], 7, "{one}");

    // The event says who asked, on the /v1 stream (replayed from the start of the room).
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), Some("0")).await;
    let request = loop {
        let e = events.next().await;
        if e.event == "llm.request" {
            break e.json();
        }
    };
    assert_eq!(request["data"]["caller"], "127.0.0.1", "{request}");

    session.close().await;
    provider.stop().await;
}

#[tokio::test]
async fn counts_survive_the_participant_leaving() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Shared and left", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let session = share(&hub, &code, "w-gone", &provider, "llama3").await;
    two_requests(&hub, &code).await;
    wait_for(|| async { room_data(&hub, &code, None).await["stats"]["completed"] == 2 }).await;

    session.close().await;
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(v["data"], json!([]), "the participant left");

    let stats = room_data(&hub, &code, None).await["stats"].clone();
    assert_eq!(stats["requests"], 2, "{stats}");
    assert_eq!(stats["outputTokens"], 7);
    assert_eq!(stats["participantsOnline"], 0);
    assert_eq!(stats["participantsRegistered"], 0);
    assert_eq!(stats["participantsShared"], 1, "someone shared here, and left");
    provider.stop().await;
}

#[tokio::test]
async fn a_protected_rooms_stats_need_its_key() {
    let hub = TestHub::start().await;
    let (code, host_token) = hub.room("Locked stats", Some("s3cret")).await;
    hub.participant(&code, "w-locked", Some("s3cret")).await;

    let open = room_data(&hub, &code, None).await;
    assert_eq!(open["passwordProtected"], true);
    assert!(open.get("stats").is_none(), "a stranger gets the summary only: {open}");
    let wrong = room_data(&hub, &code, Some("guess")).await;
    assert!(wrong.get("stats").is_none(), "{wrong}");
    for key in ["s3cret", host_token.as_str()] {
        let inside = room_data(&hub, &code, Some(key)).await;
        assert_eq!(inside["stats"]["participantsRegistered"], 1, "{inside}");
        assert_eq!(inside["stats"]["requests"], 0);
    }
}

#[tokio::test]
async fn the_invite_page_says_how_to_share_and_use_the_room() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Lab <GPUs>", None).await;
    let port = hub.url.rsplit(':').next().unwrap().to_string();

    // Asked for by name, the page's URLs use that name.
    let res =
        http().get(hub.at(&format!("/join/{code}"))).header("host", format!("localhost:{port}")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = res.text().await.unwrap();
    assert!(html.contains(&format!("http://localhost:{port}/rooms/{code}/v1")), "{html}");
    assert!(html.contains(&format!("http://localhost:{port}/join/{code}")), "{html}");
    assert!(html.contains("<svg class=\"qr\""), "an inline QR code: {html}");
    assert!(html.contains("Join Lab &lt;GPUs&gt;") && !html.contains("<GPUs>"), "the name is escaped");
    assert!(html.contains("Click <strong>Share</strong>"), "{html}");
    assert!(!html.contains("<script"), "the page runs no script");

    // A lower-case code is the same room; the QR code alone is an SVG image.
    let (status, _, _) = call(http().get(hub.at(&format!("/join/{}", code.to_lowercase())))).await;
    assert_eq!(status, 200);
    let res = http().get(hub.at(&format!("/join/{code}/qr.svg"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert!(res.text().await.unwrap().contains("<svg"));

    // Unknown and impossible codes get a page that says so, in words.
    let res = http().get(hub.at("/join/ZZZZZ9")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("Room not found") && html.contains("ZZZZZ9"), "{html}");
    let res = http().get(hub.at("/join/%3Cscript%3E")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let html = res.text().await.unwrap();
    assert!(html.contains("isn't a room code") && !html.contains("<script>"), "{html}");
}

/// The next event of type `kind` on `events` (others skipped).
async fn next_of(events: &mut Sse, kind: &str) -> Value {
    loop {
        let e = events.next().await;
        if e.event == kind {
            return e.json();
        }
    }
}

/// Sends a chat completion for `model` to room `code`; returns the status and the request id the
/// hub answered with.
async fn refused(hub: &TestHub, code: &str, model: &str) -> (u16, String, Value) {
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let res = http().post(url).json(&chat(model, "anyone there?")).send().await.unwrap();
    let status = res.status().as_u16();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    (status, id, res.json().await.unwrap())
}

/// Issue 12, "Failed routings (404 model not found, 503 busy) appear in the activity with a
/// sentence": a request the hub turns away before routing it is published as `llm.rejected` on
/// the room's streams, with the id the client got, the model it asked for, the status, a sentence
/// and who asked. Nothing was served, so the room's counts do not move.
#[tokio::test]
async fn a_refused_request_is_published_with_a_sentence() {
    // No queue: a request for a busy participant is turned away at once (503).
    let hub = TestHub::with_config(HubConfig { queue_depth: 0, ..HubConfig::default() }).await;
    let (code, _) = hub.room("Refusals", None).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    assert_eq!(events.next().await.event, "connected");
    let mut classic = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;
    assert_eq!(classic.next().await.event, "connected");

    // No one shares mistral (no one shares anything): 404.
    let (status, request_id, body) = refused(&hub, &code, "mistral").await;
    assert_eq!(status, 404, "{body}");
    let e = next_of(&mut events, "llm.rejected").await;
    assert_eq!(e["roomCode"], code.as_str());
    let data = &e["data"];
    assert_eq!(data["requestId"], request_id.as_str(), "the id the client got: {e}");
    assert_eq!(data["model"], "mistral");
    assert_eq!(data["status"], 404);
    assert_eq!(data["code"], "MODEL_NOT_FOUND");
    assert_eq!(data["message"], "No one in this room shares mistral right now, so no one could answer.");
    assert_eq!(data["caller"], "127.0.0.1");
    assert!(data.get("participantId").is_none(), "no one was asked: {e}");
    // The classic stream names it with a colon and sends the bare payload.
    let bare = next_of(&mut classic, "llm:rejected").await;
    assert_eq!(bare["requestId"], request_id.as_str(), "{bare}");

    // "*" with no one sharing says so in those words.
    let (status, _, _) = refused(&hub, &code, "*").await;
    assert_eq!(status, 404);
    let e = next_of(&mut events, "llm.rejected").await;
    assert_eq!(e["data"]["message"], "No one is sharing in this room right now, so no one could answer.");

    // One participant, slow, serving one request at a time: while it answers, the next is 503.
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(1500), ..FakeOptions::default() })
            .await;
    let session = share(&hub, &code, "w-slow", &provider, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let slow = tokio::spawn(async move { call(http().post(url).json(&chat("model:llama3", "take your time"))).await });
    next_of(&mut events, "llm.request").await;
    let (status, request_id, body) = refused(&hub, &code, "model:llama3").await;
    assert_eq!(status, 503, "{body}");
    let e = next_of(&mut events, "llm.rejected").await;
    let data = &e["data"];
    assert_eq!(data["requestId"], request_id.as_str(), "{e}");
    assert_eq!((data["model"].clone(), data["status"].clone()), (json!("model:llama3"), json!(503)), "{e}");
    assert_eq!(data["code"], "CAPACITY_EXCEEDED");
    assert_eq!(data["message"], "Everyone sharing llama3 was busy, so it was turned away.");
    let (status, _, v) = slow.await.unwrap();
    assert_eq!(status, 200, "{v}");

    // The room served one request; the refusals are not counted as served.
    wait_for(|| async { room_data(&hub, &code, None).await["stats"]["completed"] == 1 }).await;
    let stats = room_data(&hub, &code, None).await["stats"].clone();
    assert_eq!((stats["requests"].clone(), stats["errors"].clone()), (json!(1), json!(0)), "{stats}");
    session.close().await;
    provider.stop().await;
}
