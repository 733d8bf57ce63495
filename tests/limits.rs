//! Limits and timeouts (issue 6): a header-read deadline against slowloris clients, header count
//! and size limits, body limits enforced while the body streams in, caps on rooms, participants,
//! event streams and requests in flight per tunnel, and a tunnel closed (with a reason) when its
//! peer sends more malformed frames than the limit. Each refusal is a clear error in the surface's
//! shape, and the hub keeps serving everyone else.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gambi::hub::HubConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::inference::share_with;
use crate::tunnel::{dial, register};
use crate::util::{call, http, Sse, TestHub, PATIENCE};

fn addr(hub: &TestHub) -> String {
    hub.url.strip_prefix("http://").unwrap().to_string()
}

/// Reads until the peer closes; the time it took, or `None` if it stayed open for `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn health_ms(hub: &TestHub) -> Duration {
    let started = Instant::now();
    let (status, _, _) = call(http().get(hub.at("/v1/health"))).await;
    assert_eq!(status, 200);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_clients_are_cut_off_at_the_header_deadline_and_others_are_served() {
    let timeout = Duration::from_secs(1);
    let hub = TestHub::with_config(HubConfig { header_read_timeout: timeout, ..HubConfig::default() }).await;
    // 100 clients that start a request and then send one header byte every 300 ms, forever.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr(&hub)).await.unwrap();
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
        slow.push(s);
    }
    let trickle = tokio::spawn(async move {
        let mut closed = Vec::new();
        let started = Instant::now();
        while !slow.is_empty() && started.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut open = Vec::new();
            for mut s in slow.drain(..) {
                match s.write_all(b"a").await {
                    Ok(()) => open.push(s),
                    Err(_) => closed.push(started.elapsed()),
                }
            }
            // A write may still succeed once after the hub closed; a read tells for sure.
            for mut s in open {
                let mut b = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => closed.push(started.elapsed()),
                    _ => slow.push(s),
                }
            }
        }
        (closed, slow.len())
    });
    // Meanwhile everyone else is served at once.
    for _ in 0..5 {
        let took = health_ms(&hub).await;
        assert!(took < Duration::from_secs(1), "a health check took {took:?} beside 100 slow clients");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (closed, still_open) = trickle.await.unwrap();
    assert_eq!(still_open, 0, "every slowloris connection was closed");
    let last = closed.iter().max().copied().unwrap_or_default();
    eprintln!("100 slowloris clients, header deadline {timeout:?}: all cut off, the last after {last:?}");
    assert!(last < timeout + Duration::from_secs(3), "the last slow client was cut off after {last:?}");
}

#[tokio::test]
async fn header_floods_get_431_and_normal_requests_pass() {
    let hub = TestHub::start().await;
    let send = |headers: String| {
        let addr = addr(&hub);
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let req = format!("GET /v1/health HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let (_, got) = closed_within(&mut s, PATIENCE).await.expect("the hub answers and closes");
            String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_string()
        }
    };
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert!(send(many).await.contains(" 431 "), "150 headers");
    let big = format!("X-Big: {}\r\n", "b".repeat(100 * 1024));
    let line = send(big).await;
    assert!(line.contains(" 431 "), "a 100 KiB header: {line:?}");
    let fine: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert!(send(fine).await.contains(" 200 "), "80 headers are fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_refused_while_streaming_in_each_surface_shape() {
    let hub = TestHub::with_config(HubConfig { management_body_limit: 64 * 1024, ..HubConfig::default() }).await;
    let (code, _) = hub.room("Limits", None).await;
    let big = json!({"name": "x", "pad": "p".repeat(100 * 1024)});
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&big)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{v}");
    let (status, _, v) = call(http().post(hub.at("/rooms")).json(&big)).await;
    assert_eq!((status, v["error"].as_str()), (413, Some("Request body too large")), "{v}");

    // 100 MiB streamed at the inference plane (limit 32 MiB): refused once 32 MiB have come in,
    // without the rest being read, in OpenAI's shape.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let chunks = futures_util::stream::iter((0..100).map(move |i| {
        counter.fetch_add(1024 * 1024, std::sync::atomic::Ordering::Relaxed);
        let piece = if i == 0 {
            format!("{{\"model\": \"*\", \"pad\": \"{}", "p".repeat(1024 * 1024 - 24))
        } else {
            "p".repeat(1024 * 1024)
        };
        Ok::<_, std::io::Error>(piece)
    }));
    let started = Instant::now();
    let res = http()
        .post(hub.at(&format!("/rooms/{code}/v1/chat/completions")))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    let took = started.elapsed();
    // The hub may answer before the client has finished writing, which reqwest can report as a
    // broken pipe instead of the answer; either way the hub did not swallow 100 MiB.
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
    }
    let streamed = sent.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("100 MiB body at the inference plane: refused after {took:?}, {} MiB offered", streamed >> 20);
    assert!(streamed < 100 * 1024 * 1024, "the hub stopped reading before the end ({streamed} bytes)");
    assert_eq!(call(http().get(hub.at("/v1/health"))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_participants_and_event_streams_are_capped_with_clear_errors() {
    let hub = TestHub::with_config(HubConfig {
        max_rooms: 2,
        max_participants_per_room: 2,
        max_sse_clients_per_room: 2,
        ..HubConfig::default()
    })
    .await;
    let (code, _) = hub.room("One", None).await;
    hub.room("Two", None).await;
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Three"}))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("CAPACITY_EXCEEDED")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("2 rooms"), "{v}");
    let (status, headers, v) = call(http().post(hub.at("/rooms")).json(&json!({"name": "Three"}))).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].is_string() && headers.contains_key("retry-after"), "{v}");

    hub.participant(&code, "p1", None).await;
    let p2 = hub.participant(&code, "p2", None).await;
    let body = json!({"nickname": "p3", "model": "m", "endpoint": "http://127.0.0.1:9"});
    let (status, _, v) = call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/p3"))).json(&body)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("CAPACITY_EXCEEDED")), "{v}");
    // Updating one already in is not a new place.
    let token = p2["data"]["participantToken"].as_str().unwrap();
    let url = hub.at(&format!("/v1/rooms/{code}/participants/p2"));
    assert_eq!(call(http().put(&url).bearer_auth(token).json(&body)).await.0, 200);

    let _a = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let b = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;
    let (status, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/events")))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("CAPACITY_EXCEEDED")), "{v}");
    let (status, _, v) = call(http().get(hub.at(&format!("/rooms/{code}/events")))).await;
    assert_eq!(status, 503, "{v}");
    // A stream that ends gives its place back.
    drop(b);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let res = http().get(hub.at(&format!("/rooms/{code}/events"))).send().await.unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed stream's place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_takes_at_most_its_in_flight_limit() {
    let hub = TestHub::with_config(HubConfig { max_in_flight_per_tunnel: 1, ..HubConfig::default() }).await;
    let (code, _) = hub.room("Busy", None).await;
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(1500), ..FakeOptions::default() })
            .await;
    let _s = share_with(&hub, &code, "w", &provider, "llama3", |o| o.max_concurrency = Some(4)).await;
    let chat = json!({"model": "w", "messages": [{"role": "user", "content": "hi"}]});
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let first = tokio::spawn(call(http().post(&url).json(&chat)));
    assert!(provider.wait_in_flight(1, PATIENCE).await);
    let (status, _, v) = call(http().post(&url).json(&chat)).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("in flight"), "{v}");
    let (status, _, v) = first.await.unwrap();
    assert_eq!(status, 200, "the request in flight is untouched: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_flooded_with_malformed_frames_is_closed_with_a_reason() {
    let hub = TestHub::with_config(HubConfig { malformed_frame_limit: 10, ..HubConfig::default() }).await;
    let (code, _) = hub.room("Garbage", None).await;
    let reg = register(&hub.url, &code, "g").await;
    let mut ws = dial(&reg.url, &reg.token, Some(&reg.participant_token)).await.unwrap();
    // Up to the limit: ignored and counted, the tunnel lives.
    for _ in 0..10 {
        ws.send(Message::Text("not json".into())).await.unwrap();
    }
    ws.send(Message::Text(r#"{"type":"tunnel.ping","timestamp":7}"#.into())).await.unwrap();
    let pong = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(pong.to_text().unwrap().contains("tunnel.pong"), "{pong:?}");
    // Past it: closed with 1008 and a reason.
    for _ in 0..5 {
        let _ = ws.send(Message::Text("{\"type\":".into())).await;
    }
    let close = loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await.expect("the hub closes the tunnel") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = close.expect("the close carries a reason");
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "too many malformed frames");
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/g")))).await;
    assert_eq!(v["data"]["connection"]["connected"], false, "{v}");
}
