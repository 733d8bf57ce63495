//! One client on the LAN trying to spend the hub: its descriptors (a flood of event streams), its
//! room slots, and a room's password checks. Each client is an address of its own on loopback
//! (127.0.0.x), with the hub counting loopback addresses like any other (`--limit-loopback`; by
//! default this machine's own clients are not counted per address).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
