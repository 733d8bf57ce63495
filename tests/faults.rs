//! Faults survived (issue 6), beside the ones tested where their feature lives (a hung provider and
//! a tunnel dying mid-stream: `inference`; a participant process killed mid-stream and a hub killed
//! and restarted: `participant_cli`; an event-stream reader that never reads: `events`; shutdown:
//! `shutdown`): a provider that answers garbage, a tunnel that stalls, before its answer and in the
//! middle of it, and an inference client that never reads its stream. Each time the client gets a clean, prompt error, the other participant's work is untouched,
//! and the room heals by itself (the slot is free again).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gambi::hub::HubConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::fake_provider::{echo, FakeOptions, FakeProvider, Mode};
use crate::inference::{chat, chat_text, post_sse, share};
use crate::tunnel::{dial, register};
use crate::util::{call, http, TestHub, PATIENCE};

/// The next text frame of the tunnel that names `kind` (other frames are skipped), as JSON.
async fn next_frame(ws: &mut crate::tunnel::Ws, kind: &str) -> Value {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.contains(kind) => return serde_json::from_str::<Value>(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
}

fn streamed(model: &str, text: &str) -> Value {
    let mut body = chat(model, text);
    body["stream"] = json!(true);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_answering_garbage_gets_a_clean_error_and_the_others_keep_working() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Garbage", None).await;
    let bad = FakeProvider::start(FakeOptions { mode: Mode::Garbage, ..FakeOptions::default() }).await;
    let good = FakeProvider::start(FakeOptions {
        stream_chunks: 10,
        chunk_delay: Duration::from_millis(50),
        ..FakeOptions::default()
    })
    .await;
    let _b = share(&hub, &code, "bad", &bad, "llama3").await;
    let _g = share(&hub, &code, "good", &good, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));

    // The good participant streams while the bad one is asked, both ways.
    let other = tokio::spawn({
        let url = url.clone();
        async move { post_sse(&url, &streamed("good", "steady as she goes")).await }
    });
    let started = Instant::now();
    let (status, _, v) = call(http().post(&url).json(&chat("bad", "x"))).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["type"], "server_error", "OpenAI-shaped: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("not JSON"), "{v}");
    let (status, events) = post_sse(&url, &streamed("bad", "x")).await;
    let stream_took = started.elapsed();
    assert_eq!(status, 200);
    let last = events.last().unwrap_or_else(|| panic!("the stream ended without a word"));
    assert_eq!(last.event, "error", "{events:?}");
    assert!(last.data.contains("not an event stream"), "{}", last.data);
    eprintln!("garbage provider: non-stream answered in {took:?}, stream ended {stream_took:?} after the start");
    assert!(stream_took < Duration::from_secs(5), "prompt: {stream_took:?}");

    let (status, events) = other.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(chat_text(&events), echo("steady as she goes"), "the other stream was untouched");
    // The bad participant's slot is free again: once it behaves, it serves.
    bad.set_mode(Mode::Normal);
    let (status, _, v) = call(http().post(&url).json(&chat("bad", "healed"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], echo("healed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_tunnel_times_out_promptly_and_frees_its_slot() {
    let hub = TestHub::with_config(HubConfig {
        first_byte_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(800),
        ..HubConfig::default()
    })
    .await;
    let (code, _) = hub.room("Stall", None).await;
    let good = FakeProvider::start(FakeOptions::default()).await;
    let _g = share(&hub, &code, "good", &good, "llama3").await;
    // A hand-written participant whose tunnel takes requests and then stalls.
    let reg = register(&hub.url, &code, "stuck").await;
    let mut ws = dial(&reg.url, &reg.token, Some(&reg.participant_token)).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/stuck")))).await;
        if v["data"]["connection"]["connected"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the raw tunnel never showed as connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));

    // Before the first byte: 504 within the first-byte timeout.
    let started = Instant::now();
    let client = tokio::spawn(call(http().post(&url).json(&chat("stuck", "x"))));
    let request = next_frame(&mut ws, "tunnel.request").await;
    let (status, _, v) = client.await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, 504, "{v}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The hub tells the participant to give up on it.
    let cancel = next_frame(&mut ws, "tunnel.cancel").await;
    assert_eq!(cancel["requestId"], request["requestId"]);

    // Mid-answer: a start and one chunk, then silence; the stream ends with an error event.
    let started = Instant::now();
    let client = tokio::spawn({
        let url = url.clone();
        async move { post_sse(&url, &streamed("stuck", "x")).await }
    });
    let request = next_frame(&mut ws, "tunnel.request").await;
    let id = request["requestId"].as_str().unwrap();
    let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"half\"}}]}\n\n";
    use base64::Engine as _;
    for frame in [
        json!({"type": "tunnel.response.start", "requestId": id, "status": 200, "headers": {"content-type": "text/event-stream"}}),
        json!({"type": "tunnel.response.chunk", "requestId": id, "chunk": base64::engine::general_purpose::STANDARD.encode(first)}),
    ] {
        ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }
    let (status, events) = client.await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(chat_text(&events), "half", "what came before the stall was relayed");
    assert_eq!(events.last().unwrap().event, "error", "{events:?}");
    eprintln!("stalled tunnel: 504 before the first byte, and an error event {took:?} into a stalled stream");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // The other participant never noticed, and the stuck one's slot is free again.
    let (status, _, v) = call(http().post(&url).json(&chat("good", "fine"))).await;
    assert_eq!((status, v["choices"][0]["message"]["content"].clone()), (200, json!(echo("fine"))));
    let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/stuck")))).await;
    assert_eq!(v["data"]["status"], "online", "not left busy: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_a_big_stream_is_cut_off_and_the_rest_carries_on() {
    use tokio::io::AsyncWriteExt;

    // A reader that has taken nothing for longer than the idle timeout (1 s here) is stalled.
    let hub = TestHub::with_config(HubConfig { idle_timeout: Duration::from_secs(1), ..HubConfig::default() }).await;
    let (code, _) = hub.room("Sponge", None).await;
    // 48 MiB of answer in 1,536 deltas of 32 KiB: far more than socket buffers and the hub's 16 MiB
    // per-request queue hold.
    let big = FakeProvider::start(FakeOptions {
        reply: Some("x".repeat(48 << 20)),
        stream_chunks: 1536,
        ..FakeOptions::default()
    })
    .await;
    let good = FakeProvider::start(FakeOptions::default()).await;
    let _b = share(&hub, &code, "big", &big, "llama3").await;
    let _g = share(&hub, &code, "good", &good, "llama3").await;

    // A client that asks for the stream and never reads a byte of it.
    let body = streamed("big", "x").to_string();
    let mut sponge = tokio::net::TcpStream::connect(hub.url.trim_start_matches("http://")).await.unwrap();
    let request = format!(
        "POST /rooms/{code}/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sponge.write_all(request.as_bytes()).await.unwrap();

    // The hub gives up on it (the provider call is cancelled through the tunnel) instead of
    // queueing the whole answer.
    let started = Instant::now();
    assert!(
        big.wait_until(Duration::from_secs(45), |p| p.cancelled() + p.aborted() >= 1).await,
        "the provider call of the reader that never reads was not stopped"
    );
    eprintln!("a client that never reads a 48 MiB stream: its provider call was stopped after {:?}", started.elapsed());
    // Meanwhile and after, the room serves everyone else.
    let (status, _, v) =
        call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat("good", "ok"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], echo("ok"));
    // The stuck client does not keep the participant busy: its slot comes back by itself.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/big")))).await;
        if v["data"]["status"] == "online" {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    big.update(|o| o.reply = None);
    let (status, _, v) =
        call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat("big", "free"))).await;
    assert_eq!(status, 200, "{v}");
    drop(sponge);
}

/// Every fault above, again and again, against the real binary: a provider answering garbage, one
/// that hangs before its answer and one that hangs in the middle of it, a client that drops its
/// stream after the first chunk, an event-stream reader that never reads. Each round gets clean,
/// prompt answers, the healthy participant keeps serving, and the hub's memory stays where it was
/// after the first round.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_faults_leave_the_hubs_memory_where_it_was() {
    use tokio::io::AsyncWriteExt as _;

    let hub = crate::util::BinHub::start_with_env(
        &["--first-byte-timeout", "300ms", "--idle-timeout", "300ms"],
        &[("RUST_LOG", "info")],
    );
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Soak"}))).await;
    assert_eq!(status, 201, "{v}");
    let code = v["data"]["room"]["code"].as_str().unwrap().to_string();
    let provider = |model: &str, mode: Mode| {
        FakeProvider::start(FakeOptions {
            models: vec![model.to_string()],
            mode,
            stream_chunks: 20,
            chunk_delay: Duration::from_millis(20),
            ..FakeOptions::default()
        })
    };
    let providers = [
        provider("garbage", Mode::Garbage).await,
        provider("hang", Mode::Hang).await,
        provider("midhang", Mode::HangMidStream).await,
        provider("steady", Mode::Normal).await,
    ];
    for (p, model) in providers.iter().zip(["garbage", "hang", "midhang", "steady"]) {
        let body = json!({"id": model, "nickname": model, "model": model, "endpoint": p.url});
        let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
        assert_eq!(status, 200, "{v}");
    }
    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let events = hub.at(&format!("/v1/rooms/{code}/events"));

    let round = |n: usize| {
        let (url, events) = (url.clone(), events.clone());
        async move {
            let started = Instant::now();
            // Garbage, both ways: 502 and a stream that ends with an error event.
            let (status, _, v) = call(http().post(&url).json(&chat("garbage", "x"))).await;
            assert_eq!(status, 502, "{v}");
            let (_, got) = post_sse(&url, &streamed("garbage", "x")).await;
            assert_eq!(got.last().map(|e| e.event.as_str()), Some("error"), "{got:?}");
            // A provider that never answers: 504 after the first-byte timeout.
            let (status, _, v) = call(http().post(&url).json(&chat("hang", "x"))).await;
            assert_eq!(status, 504, "{v}");
            // One that stops in the middle: the stream ends with an error event.
            let (_, got) = post_sse(&url, &streamed("midhang", "x y z")).await;
            assert_eq!(got.last().map(|e| e.event.as_str()), Some("error"), "{got:?}");
            // A client that leaves after the first chunk, and a reader of events that never reads.
            let mut never =
                tokio::net::TcpStream::connect(url.trim_start_matches("http://").split('/').next().unwrap())
                    .await
                    .unwrap();
            let path = events.splitn(4, '/').nth(3).unwrap();
            never
                .write_all(format!("GET /{path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut res = http().post(&url).json(&streamed("steady", "leaving early")).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let _ = res.chunk().await;
            drop(res);
            // The healthy participant still serves, whole.
            let (status, _, v) = call(http().post(&url).json(&chat("steady", &format!("round {n}")))).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["choices"][0]["message"]["content"], echo(&format!("round {n}")));
            drop(never);
            started.elapsed()
        }
    };
    // The first rounds warm up what the hub keeps for good (buffers, pools, the event ring).
    for n in 0..3 {
        round(n).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = crate::util::rss_kib(hub.child.id());
    let mut slowest = Duration::ZERO;
    for n in 3..23 {
        slowest = slowest.max(round(n).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = crate::util::rss_kib(hub.child.id());
    eprintln!("20 rounds of faults: RSS {before} KiB → {after} KiB; the slowest round took {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "every fault was answered promptly: {slowest:?}");
    assert!(after < before + 5 * 1024, "the hub's memory grew from {before} KiB to {after} KiB");
}

/// A hub whose log nobody reads (a paused terminal, a stuck pipe) keeps answering: the log is
/// written from a thread of its own, so requests never wait on stderr. With the pipe full after
/// a few hundred request lines, 3,000 more are answered promptly, and once the reader comes back
/// every line is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_whose_log_nobody_reads_keeps_answering_and_loses_no_line() {
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::process::{Command, Stdio};

    const REQUESTS: usize = 3000;
    let mut child = Command::new(crate::util::BIN)
        .args(["hub", "serve", "--host", "127.0.0.1", "--port", "0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held open and not read until the end: the pipe fills (64 KiB) and stays full.
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the hub exited before listening");
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().trim_end_matches('/').to_string();
        }
    };
    let health = format!("{url}/v1/health");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let started = Instant::now();
    let all = futures_util::stream::iter(0..REQUESTS)
        .map(|_| {
            let req = client.get(&health);
            async move { req.send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string()) }
        })
        .buffer_unordered(8)
        .collect::<Vec<Result<u16, String>>>();
    let answered = match tokio::time::timeout(Duration::from_secs(60), all).await {
        Ok(answered) => answered,
        Err(_) => {
            let _ = child.kill();
            panic!("{REQUESTS} health checks were not all answered within 60 s with nobody reading the log");
        }
    };
    let took = started.elapsed();
    let ok = answered.iter().filter(|r| matches!(r, Ok(200))).count();
    eprintln!("{ok} of {REQUESTS} health checks answered in {took:?} with nobody reading the log");
    assert_eq!(ok, REQUESTS, "first failure: {:?}", answered.iter().find(|r| !matches!(r, Ok(200))));

    // The reader comes back; the hub stops; every request's line was kept and written.
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "exit {status:?}");
    let lines = log.lines().filter(|l| l.contains("path=/v1/health")).count();
    assert_eq!(lines, REQUESTS, "every request's log line is written once the log is read");
    assert!(!log.contains("dropped"), "nothing was dropped: {}", log.lines().last().unwrap_or_default());
}
