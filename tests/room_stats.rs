//! Room stats and the invite, headless: a real hub, the fake provider shared through a real
//! participant session and tunnel, requests through the room's OpenAI endpoint, and fresh readers
//! of the management plane that were not watching when the requests were made (issue 12, "Room
//! stats lie": "Requests 0" for a room that served 2; "No one is sharing" after people shared).

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
