//! One client on the LAN trying to spend the hub: its descriptors (a flood of event streams), its
//! room slots, and a room's password checks. Each client is an address of its own on loopback
//! (127.0.0.x), with the hub counting loopback addresses like any other (`--limit-loopback`; by
//! default this machine's own clients are not counted per address).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::util::{call, BinHub, TestHub};

fn from(address: &str) -> reqwest::Client {
    let ip: IpAddr = address.parse().unwrap();
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(20)).build().unwrap()
}

/// Opens an event stream of `code` from `source`: `Some(connection)` while the hub keeps it open
/// (200), `None` when it refused or the connection failed.
async fn open_stream(hub: SocketAddr, source: IpAddr, code: String) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(hub)).await.ok()?.ok()?;
    let request =
        format!("GET /v1/rooms/{code}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head)).await.ok()?.ok()?;
    head.starts_with(b"HTTP/1.1 200").then_some(tcp)
}

/// 80 rooms × 256 event streams attempted from one address, while another address checks the
/// hub's health every 50 ms. Returns (streams the flood got, failed health checks, median, max).
async fn stream_flood(hub: &BinHub) -> (usize, usize, Duration, Duration) {
    let addr: SocketAddr = hub.url.trim_start_matches("http://").parse().unwrap();
    let creator = from("127.0.0.1");
    let mut codes = Vec::new();
    for i in 0..80 {
        let (status, _, v) = call(creator.post(hub.at("/v1/rooms")).json(&json!({"name": format!("Flood {i}")}))).await;
        assert_eq!(status, 201, "{v}");
        codes.push(v["data"]["room"]["code"].as_str().unwrap().to_string());
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let checker = {
        let stop = stop.clone();
        let url = hub.at("/v1/health");
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .local_address("127.0.0.3".parse::<IpAddr>().unwrap())
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let (mut times, mut failed) = (Vec::new(), 0usize);
            while !stop.is_cancelled() {
                let started = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => times.push(started.elapsed()),
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (times, failed)
        })
    };
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = Vec::new();
    for code in &codes {
        let attempts: Vec<_> = (0..256).map(|_| tokio::spawn(open_stream(addr, attacker, code.clone()))).collect();
        for attempt in attempts {
            if let Ok(Some(stream)) = attempt.await {
                held.push(stream);
            }
        }
    }
    // Hold what was got for a moment, with the checker still going.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let (mut times, failed) = checker.await.unwrap();
    times.sort();
    assert!(!times.is_empty(), "no health check ran");
    let median = times[times.len() / 2];
    let max = *times.last().unwrap();
    (held.len(), failed, median, max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_event_streams_from_one_address_never_makes_the_hub_unreachable() {
    let flags = ["--limit-loopback", "--rooms-per-minute", "1000", "--rooms-burst", "100"];
    for (label, wrapper) in
        [("default fd limit", &[][..]), ("soft fd limit 1024", &["prlimit", "--nofile=1024:1024", "--"][..])]
    {
        let hub = BinHub::start_under(wrapper, &flags, &[]);
        let (held, failed, median, max) = stream_flood(&hub).await;
        eprintln!("stream flood ({label}): the flood holds {held} streams; health: {failed} failed, median {median:?}, max {max:?}");
        assert_eq!(failed, 0, "{label}: health checks failed under the flood");
        assert!(held <= 32, "{label}: one address holds {held} streams (cap 32)");
        assert!(held > 0, "{label}: the flood got no stream at all, so it proves nothing");
        // And a stream from yet another address still opens.
        let addr: SocketAddr = hub.url.trim_start_matches("http://").parse().unwrap();
        let (_, _, rooms) = call(from("127.0.0.1").get(hub.at("/v1/rooms"))).await;
        let code = rooms["data"][0]["code"].as_str().unwrap().to_string();
        assert!(open_stream(addr, "127.0.0.4".parse().unwrap(), code).await.is_some(), "{label}");
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_room_slot() {
    let th = TestHub::with_config(gambi::hub::HubConfig { limit_loopback: true, ..Default::default() }).await;
    let client = from("127.0.0.2");
    let mut made = 0;
    let mut refused = None;
    for i in 0..20 {
        let (status, headers, body) =
            call(client.post(th.at("/v1/rooms")).json(&json!({"name": format!("R{i}")}))).await;
        if status == 201 {
            made += 1;
        } else {
            refused = Some((status, headers.get("retry-after").cloned(), body));
            break;
        }
    }
    assert_eq!(made, 5, "a burst of 5 rooms");
    let (status, retry, body) = refused.expect("the 6th room is refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert!(retry.is_some(), "Retry-After");
    // The classic surface, same bucket, its own shape.
    let (status, _, body) = call(client.post(th.at("/rooms")).json(&json!({"name": "Classic"}))).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // Another address is not affected.
    let (status, _, _) = call(from("127.0.0.3").post(th.at("/v1/rooms")).json(&json!({"name": "Mine"}))).await;
    assert_eq!(status, 201);
    // Empty rooms expire after 24 hours by default.
    assert_eq!(gambi::hub::HubConfig::default().room_ttl, Some(Duration::from_secs(24 * 3600)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guess_flood_does_not_lock_out_people_who_know_the_password() {
    let th = TestHub::start().await;
    let mut rooms = Vec::new();
    for i in 0..3 {
        rooms.push(th.room(&format!("Locked {i}"), Some(&format!("right-{i}"))).await.0);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let mut flood = Vec::new();
    for n in 10..30 {
        let client = from(&format!("127.0.0.{n}"));
        let url = th.url.clone();
        let rooms = rooms.clone();
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while !stop.is_cancelled() {
                for code in &rooms {
                    let body = json!({"nickname": "x", "model": "m", "endpoint": "http://127.0.0.1:9", "password": format!("guess-{sent}")});
                    let _ = client.put(format!("{url}/v1/rooms/{code}/participants/g{n}")).json(&body).send().await;
                    sent += 1;
                }
            }
            sent
        }));
    }
    // Let the flood run long enough that every guesser has guessed wrong.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut outcomes = Vec::new();
    for (i, code) in rooms.iter().enumerate() {
        let person = from(&format!("127.0.0.{}", 100 + i));
        let body = json!({"nickname": "Ana", "model": "m", "endpoint": "http://127.0.0.1:9", "password": format!("right-{i}")});
        let (status, _, answer) =
            call(person.put(th.at(&format!("/v1/rooms/{code}/participants/ana"))).json(&body)).await;
        outcomes.push((status, answer["error"]["code"].clone()));
    }
    stop.cancel();
    let mut guesses = 0;
    for task in flood {
        guesses += task.await.unwrap();
    }
    eprintln!("guess flood: {guesses} wrong guesses from 20 addresses; the person: {outcomes:?}");
    assert!(outcomes.iter().all(|(status, _)| *status == 201), "locked out by the flood: {outcomes:?}");
}

/// Sends the head of a request declaring `declared` bytes and then `sent` bytes of `fill` (after
/// `prefix`), from `source`, and leaves it there. `None` when the hub refused or closed at once.
async fn stalled_body(
    hub: SocketAddr,
    source: IpAddr,
    path: String,
    declared: usize,
    prefix: &[u8],
    sent: usize,
    fill: u8,
) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut tcp = socket.connect(hub).await.ok()?;
    let head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.ok()?;
    tcp.write_all(prefix).await.ok()?;
    let chunk = vec![fill; 1 << 20];
    let mut left = sent.saturating_sub(prefix.len());
    while left > 0 {
        let n = left.min(chunk.len());
        // A refused body is answered and closed while we write: stop there.
        match tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&chunk[..n])).await {
            Ok(Ok(())) => left -= n,
            _ => return None,
        }
    }
    Some(tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_and_bodies_that_parse_huge_cannot_spend_the_hub_s_memory() {
    let hub = BinHub::start(&["--limit-loopback"]);
    let addr: SocketAddr = hub.url.trim_start_matches("http://").parse().unwrap();
    let pid = hub.child.id();
    let start = crate::util::rss_kib(pid);
    // The hub's RSS, sampled all along (not only between steps).
    let sampler = crate::util::PeakRss::start(pid);
    let (status, _, created) = call(from("127.0.0.1").post(hub.at("/v1/rooms")).json(&json!({"name": "Mem"}))).await;
    assert_eq!(status, 201);
    let code = created["data"]["room"]["code"].as_str().unwrap().to_string();
    let path = format!("/rooms/{code}/v1/chat/completions");
    let mut peak = start;

    // 64 connections each sending 30 MiB of a declared 32 MiB body, then stalling.
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let uploads: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(stalled_body(
                addr,
                attacker,
                path.clone(),
                32 << 20,
                b"{\"model\":\"*\",\"pad\":\"",
                30 << 20,
                b'a',
            ))
        })
        .collect();
    let mut stalled = Vec::new();
    for upload in uploads {
        if let Ok(Some(tcp)) = upload.await {
            stalled.push(tcp);
        }
        peak = peak.max(crate::util::rss_kib(pid));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled_rss = crate::util::rss_kib(pid);
    peak = peak.max(stalled_rss);
    // The hub still answers, from another address too.
    let (status, _, _) = call(from("127.0.0.3").get(hub.at("/v1/health"))).await;
    assert_eq!(status, 200);
    drop(stalled);

    // Four 32 MiB bodies of `0,0,0,…` (each ~1.1 GB as a tree), from four addresses, to a room
    // whose participant answers: the hub reads what it needs and relays the rest as it came.
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let options = gambi::participant::SessionOptions::new(&hub.url, &code, "mem-1", &provider.url, "llama3");
    let session = gambi::participant::ParticipantSession::start(options).await.unwrap();
    let connected = hub.at(&format!("/v1/rooms/{code}/participants/mem-1"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, v) = call(from("127.0.0.1").get(&connected)).await;
        if v["data"]["connection"]["connected"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the share's tunnel did not open: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prefix = b"{\"model\":\"*\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"pad\":";
    let zeros = {
        let mut body = prefix.to_vec();
        body.push(b'[');
        while body.len() < (32 << 20) - 16 {
            body.extend_from_slice(b"0,");
        }
        body.extend_from_slice(b"0]}");
        body
    };
    let mut statuses = Vec::new();
    for n in 0..4 {
        let client = from(&format!("127.0.0.{}", 10 + n));
        let res =
            client.post(hub.at(&path)).header("content-type", "application/json").body(zeros.clone()).send().await;
        statuses.push(res.map(|r| r.status().as_u16()).unwrap_or(0));
        peak = peak.max(crate::util::rss_kib(pid));
    }
    let end = crate::util::rss_kib(pid);
    peak = peak.max(sampler.peak_kib());
    eprintln!(
        "body memory: RSS start {} MiB, with 64 stalled 30 MiB uploads {} MiB, peak {} MiB, end {} MiB; zero-array bodies answered {statuses:?}",
        start / 1024,
        stalled_rss / 1024,
        peak / 1024,
        end / 1024
    );
    assert!(peak < 400 * 1024, "peak RSS {} MiB (target: under 400)", peak / 1024);
    assert!(statuses.iter().all(|s| *s == 200), "every body is within the limits and is served: {statuses:?}");
    let relayed: Vec<_> =
        provider.requests_to("/v1/chat/completions").into_iter().filter(|r| r.raw.len() > 1 << 20).collect();
    assert_eq!(relayed.len(), 4);
    for r in &relayed {
        let pad = zeros.len() - prefix.len() - 1;
        assert_eq!(r.json()["pad"]["$omitted"].as_u64(), Some(pad as u64), "the whole array reached the provider");
        assert_eq!(r.json()["model"], "llama3");
    }
    session.close().await;
    provider.stop().await;

    // Room defaults as OpenAI bounds them: an 836 KB `stop` is refused, and the listing stays small.
    let big = "s".repeat(836 * 1024);
    for i in 0..60 {
        let body = json!({"name": format!("Big {i}"), "defaults": {"stop": [big]}});
        let (status, _, _) = call(from("127.0.0.1").post(hub.at("/v1/rooms")).json(&body)).await;
        assert_eq!(status, 400);
    }
    let listing = from("127.0.0.1").get(hub.at("/v1/rooms")).send().await.unwrap().bytes().await.unwrap();
    let after_config = crate::util::rss_kib(pid);
    eprintln!("config attack: RSS {} MiB, GET /v1/rooms {} bytes", after_config / 1024, listing.len());
    assert!(after_config < 200 * 1024, "RSS {} MiB after the config attack", after_config / 1024);
    assert!(listing.len() < 64 * 1024);
}
