//! Graceful shutdown of the real binary (issue 6): SIGTERM stops taking new connections, lets the
//! requests in flight finish (through participants' tunnels too) within the grace period, tells the
//! participants (`tunnel.shutdown`), closes their tunnels, and exits 0. A request that outlives the
//! grace period is cut, and the hub still exits 0 right after it. (Withdrawing the mDNS
//! advertisement at shutdown is shown by `discovery::python_zeroconf_sees_our_advertisement_and_its_goodbye`.)

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gambi::participant::{CloseReason, ParticipantSession, SessionOptions};
use serde_json::json;

use crate::fake_provider::{echo, FakeOptions, FakeProvider};
use crate::util::{call, http, BinHub, PATIENCE};

async fn room(hub: &BinHub) -> String {
    let (status, _, v) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Closing"}))).await;
    assert_eq!(status, 201, "{v}");
    v["data"]["room"]["code"].as_str().unwrap().to_string()
}

async fn session(hub: &BinHub, code: &str, provider: &FakeProvider) -> ParticipantSession {
    let mut options = SessionOptions::new(&hub.url, code, "closer", &provider.url, "llama3");
    options.auto_specs = false;
    let session = ParticipantSession::start(options).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants/closer")))).await;
        if v["data"]["connection"]["connected"] == true {
            return session;
        }
        assert!(Instant::now() < deadline, "the tunnel never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM off the async threads and waits for the exit; returns (status, time to exit).
async fn terminate(mut hub: BinHub) -> (std::process::ExitStatus, Duration, String) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let status = hub.terminate();
        (status, started.elapsed(), hub.log())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_stream_in_flight_finish_tells_the_participant_and_exits_0() {
    let hub = BinHub::start(&["--shutdown-grace", "10s"]);
    let url = hub.url.clone();
    let code = room(&hub).await;
    // A stream of 10 pieces, 200 ms apart: about 2 s from start to end.
    let provider = FakeProvider::start(FakeOptions {
        stream_chunks: 10,
        chunk_delay: Duration::from_millis(200),
        ..FakeOptions::default()
    })
    .await;
    let session = session(&hub, &code, &provider).await;
    // A hand-written participant too, to see the words on the wire.
    let raw = crate::tunnel::register(&url, &code, "raw").await;
    let mut raw_ws = crate::tunnel::dial(&raw.url, &raw.token, Some(&raw.participant_token)).await.unwrap();
    let text = "one two three four five six seven eight nine ten";
    let body = json!({"model": "closer", "stream": true, "messages": [{"role": "user", "content": text}]});
    let res = reqwest::Client::new()
        .post(format!("{url}/rooms/{code}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut got = String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).into_owned();

    // Mid-stream: SIGTERM.
    let exit = tokio::spawn(terminate(hub));
    // New connections are refused soon after the signal.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let probe = reqwest::Client::new().get(format!("{url}/v1/health")).timeout(Duration::from_secs(1)).send().await;
        if probe.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the hub kept taking new connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The participants are told at once, before their tunnels close.
    let told = loop {
        match tokio::time::timeout(PATIENCE, raw_ws.next()).await.expect("a frame after SIGTERM") {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => break t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("the tunnel closed without a word: {other:?}"),
        }
    };
    let told: serde_json::Value = serde_json::from_str(&told).unwrap();
    assert_eq!(told, json!({"type": "tunnel.shutdown", "graceMs": 10_000}));
    // The stream in flight finishes whole.
    while let Some(chunk) = stream.next().await {
        got.push_str(&String::from_utf8_lossy(&chunk.expect("the stream in flight is not cut")));
    }
    let finished = Instant::now();
    assert!(got.contains("data: [DONE]"), "the stream ended properly: {got}");
    let content: String = got
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(content, echo(text), "every piece arrived");

    // The participant was told, and its tunnel closed once the stream was done.
    let close = tokio::time::timeout(PATIENCE, session.wait_until_closed()).await.expect("the session ended");
    assert_eq!(close.reason, CloseReason::TunnelClosed, "{close:?}");
    let (status, took, log) = exit.await.unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let after_stream = finished.elapsed();
    eprintln!(
        "SIGTERM mid-stream: the hub exited 0 {took:?} after the signal, {after_stream:?} after the stream ended"
    );
    assert!(took < Duration::from_secs(10), "exited within the grace period ({took:?})");
    assert!(log.contains("shutting down"), "log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_outliving_the_grace_period_is_cut_and_the_hub_still_exits_0() {
    let hub = BinHub::start(&["--shutdown-grace", "1s"]);
    let url = hub.url.clone();
    let code = room(&hub).await;
    // A provider that takes 30 s to answer.
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_secs(30), ..FakeOptions::default() }).await;
    let _session = session(&hub, &code, &provider).await;
    let body = json!({"model": "closer", "messages": [{"role": "user", "content": "slow"}]});
    let pending =
        tokio::spawn(reqwest::Client::new().post(format!("{url}/rooms/{code}/v1/chat/completions")).json(&body).send());
    assert!(provider.wait_in_flight(1, PATIENCE).await, "the request reached the provider");
    let (status, took, log) = terminate(hub).await;
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    eprintln!("SIGTERM with a 30 s request in flight and a 1 s grace: exited 0 after {took:?}");
    assert!(took >= Duration::from_millis(900), "the grace period was given ({took:?})");
    assert!(took < Duration::from_secs(4), "exited soon after the grace period ({took:?})");
    assert!(log.contains("grace period over"), "log:\n{log}");
    // The client is not left hanging: an error status or a closed connection, promptly.
    let outcome = tokio::time::timeout(PATIENCE, pending).await.expect("the client was answered or cut").unwrap();
    if let Ok(res) = outcome {
        assert!(!res.status().is_success(), "{}", res.status());
    }
}
