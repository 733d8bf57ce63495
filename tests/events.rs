//! Live events (acceptance 5): both SSE streams start with `connected` and then follow the room in
//! order, every event with an increasing `id:`; `Last-Event-ID` replays exactly what was missed; a
//! reader that never reads holds up neither the other readers nor the hub; a reader that falls
//! behind the live channel catches up from the room's ring, and one that falls behind the ring is
//! told so; idle streams get keep-alive comments; unknown rooms are 404 and a deleted room's
//! streams end after everyone has left.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gambi::hub::registry::Registration;
use gambi::hub::HubConfig;
use gambi::protocol::ConnectionKind;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{call, http, Sse, SseEvent, TestHub, PATIENCE};

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Surface {
    V1,
    Classic,
}

impl Surface {
    fn path(self, code: &str) -> String {
        match self {
            Surface::V1 => format!("/v1/rooms/{code}/events"),
            Surface::Classic => format!("/rooms/{code}/events"),
        }
    }

    /// The stream's name for a `/v1` event type (`participant.joined` -> `participant:joined`).
    fn name(self, v1_name: &str) -> String {
        match self {
            Surface::V1 => v1_name.to_string(),
            Surface::Classic => v1_name.replace('.', ":"),
        }
    }
}

fn id_of(event: &SseEvent) -> u64 {
    event
        .id
        .as_deref()
        .unwrap_or_else(|| panic!("event without id: {event:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("event id is not a number: {event:?}"))
}

/// The payload of an event whatever the surface: the envelope's `data` on `/v1` (after checking
/// the envelope), the bare `data:` on the classic stream.
fn payload(surface: Surface, code: &str, event: &SseEvent) -> Value {
    let data = event.json();
    match surface {
        Surface::V1 => {
            let keys: Vec<_> = data.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys.len(), 4, "envelope has exactly type, timestamp, roomCode, data: {data}");
            assert_eq!(data["type"], event.event.as_str(), "envelope type matches the SSE event name");
            assert_eq!(data["roomCode"], code);
            assert!(data["timestamp"].as_u64().unwrap() > 1_600_000_000_000, "timestamp is epoch ms: {data}");
            data["data"].clone()
        }
        Surface::Classic => data,
    }
}

/// Reads the `connected` event every stream starts with, checks its shape, returns its client id.
async fn expect_connected(surface: Surface, code: &str, sse: &mut Sse) -> (String, SseEvent) {
    let event = sse.next().await;
    assert_eq!(event.event, "connected", "first event on {surface:?}: {event:?}");
    id_of(&event);
    let data = payload(surface, code, &event);
    let client_id = data["clientId"].as_str().unwrap_or_else(|| panic!("connected without clientId: {data}"));
    assert!(!client_id.is_empty());
    if surface == Surface::Classic {
        assert_eq!(data.as_object().unwrap().len(), 1, "classic connected is bare {{clientId}}: {data}");
    }
    (client_id.to_string(), event)
}

/// The participant tokens the hub handed out, by hub, room and id: an update of a participant is
/// its owner's, with its token.
static TOKENS: std::sync::Mutex<Option<HashMap<String, String>>> = std::sync::Mutex::new(None);

async fn put(th: &TestHub, code: &str, id: &str, body: Value) -> u16 {
    let url = th.at(&format!("/v1/rooms/{code}/participants/{id}"));
    let known = TOKENS.lock().unwrap().get_or_insert_with(HashMap::new).get(&url).cloned();
    let mut req = http().put(&url).json(&body);
    if let Some(token) = known {
        req = req.bearer_auth(token);
    }
    let (status, _, res) = call(req).await;
    assert!(status == 200 || status == 201, "upsert {id}: {status} {res}");
    if let Some(token) = res["data"]["participantToken"].as_str() {
        TOKENS.lock().unwrap().get_or_insert_with(HashMap::new).insert(url, token.to_string());
    }
    status
}

/// The participant token `put` was handed for `id`.
fn token_of(th: &TestHub, code: &str, id: &str) -> String {
    let url = th.at(&format!("/v1/rooms/{code}/participants/{id}"));
    TOKENS.lock().unwrap().get_or_insert_with(HashMap::new).get(&url).cloned().expect("put handed out a token")
}

fn reg_body(nickname: &str) -> Value {
    json!({"nickname": nickname, "model": "llama3", "endpoint": "http://127.0.0.1:9"})
}

/// Registers a participant without going through HTTP, so a burst of events is published with no
/// chance for any stream task to run in between.
fn upsert_now(th: &TestHub, code: &str, id: &str) {
    let reg = Registration {
        nickname: id.into(),
        model: "llama3".into(),
        endpoint: "http://127.0.0.1:9".into(),
        ..Registration::default()
    };
    th.hub.registry().upsert(code, id, reg, ConnectionKind::Tunnel).unwrap();
}

/// Checks that nothing more arrives on `sse` for a moment.
async fn expect_quiet(sse: &mut Sse, what: &str) {
    if let Some(extra) = sse.next_within(QUIET).await {
        panic!("{what}: unexpected extra event {extra:?}");
    }
}

#[tokio::test]
async fn both_streams_start_with_connected_then_follow_the_room_in_order() {
    let th = TestHub::start().await;
    let (code, host) = th.room("Events", None).await;
    let (other, _) = th.room("Elsewhere", None).await;
    let mut v1 = Sse::connect(&th.at(&Surface::V1.path(&code)), None).await;
    let mut classic = Sse::connect(&th.at(&Surface::Classic.path(&code)), None).await;
    let (v1_client, v1_connected) = expect_connected(Surface::V1, &code, &mut v1).await;
    let (classic_client, classic_connected) = expect_connected(Surface::Classic, &code, &mut classic).await;
    assert_ne!(v1_client, classic_client, "each stream gets its own client id");

    // joined, updated, joined (classic), an event in another room, a heartbeat that changes
    // nothing, a heartbeat that changes the loaded models, then both leave.
    assert_eq!(put(&th, &code, "w1", reg_body("Alice")).await, 201);
    assert_eq!(put(&th, &code, "w1", reg_body("Alice B")).await, 200);
    let join = json!({"id": "w2", "nickname": "Bob", "model": "qwen", "endpoint": "http://127.0.0.1:9",
        "specs": {"gpu": "RTX 4090", "vram": 24}, "config": {"temperature": 0.5}});
    let (status, _, body) = call(http().post(th.at(&format!("/rooms/{code}/join"))).json(&join)).await;
    assert_eq!(status, 200, "{body}");
    put(&th, &other, "x1", reg_body("Elsewhere")).await;
    let (status, _, _) = call(http().post(th.at(&format!("/rooms/{code}/health"))).json(&json!({"id": "w2"}))).await;
    assert_eq!(status, 200);
    let hb = json!({"loadedModels": [{"name": "llama3", "vram": 5.5}]});
    let (status, _, _) = call(
        http()
            .post(th.at(&format!("/v1/rooms/{code}/participants/w1/heartbeat")))
            .bearer_auth(token_of(&th, &code, "w1"))
            .json(&hb),
    )
    .await;
    assert_eq!(status, 200);
    // The room's host token removes anyone from its room.
    let (status, _, _) =
        call(http().delete(th.at(&format!("/v1/rooms/{code}/participants/w1"))).bearer_auth(&host)).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(http().delete(th.at(&format!("/rooms/{code}/leave/w2"))).bearer_auth(&host)).await;
    assert_eq!(status, 200);

    let expected = [
        ("participant.joined", "w1"),
        ("participant.updated", "w1"),
        ("participant.joined", "w2"),
        ("participant.updated", "w1"),
        ("participant.left", "w1"),
        ("participant.left", "w2"),
    ];
    let mut ids_by_surface = Vec::new();
    for (surface, sse, connected) in
        [(Surface::V1, &mut v1, &v1_connected), (Surface::Classic, &mut classic, &classic_connected)]
    {
        let mut last = id_of(connected);
        let mut ids = Vec::new();
        for (i, (name, pid)) in expected.iter().enumerate() {
            let event = sse.next().await;
            assert_eq!(event.event, surface.name(name), "event #{i} on {surface:?}: {event:?}");
            let id = id_of(&event);
            assert!(id > last, "ids increase on {surface:?}: {id} after {last}");
            last = id;
            ids.push(id);
            let data = payload(surface, &code, &event);
            if name.ends_with(".left") {
                assert_eq!(data, json!({"participantId": pid}), "{surface:?} {name}");
            } else {
                // The whole public participant, never its private parts.
                assert_eq!(data["id"], *pid, "{surface:?} {name}: {data}");
                assert!(data["status"].is_string() && data["joinedAt"].is_u64(), "{surface:?} {name}: {data}");
                assert!(data.get("participantToken").is_none() && data["config"].get("instructions").is_none());
            }
            match (i, surface) {
                (1, _) => assert_eq!(data["nickname"], "Alice B"),
                (2, _) => {
                    assert_eq!(data["specs"]["gpu"], "RTX 4090");
                    assert_eq!(data["connection"]["kind"], "direct");
                }
                (3, _) => assert_eq!(data["loadedModels"][0]["name"], "llama3"),
                _ => {}
            }
        }
        expect_quiet(sse, &format!("{surface:?} stream after the last event (other rooms stay out)")).await;
        ids_by_surface.push(ids);
    }
    assert_eq!(ids_by_surface[0], ids_by_surface[1], "both streams carry the same events under the same ids");
}

/// Reads `n` room events after `connected`, returning `connected` first.
async fn collect(sse: &mut Sse, n: usize) -> Vec<SseEvent> {
    let mut events = Vec::with_capacity(n + 1);
    for _ in 0..=n {
        events.push(sse.next().await);
    }
    events
}

#[tokio::test]
async fn last_event_id_replays_exactly_the_missed_events() {
    let th = TestHub::start().await;
    let (code, host) = th.room("Replay", None).await;
    let mut originals = HashMap::new();
    let mut live = Vec::new();
    for surface in [Surface::V1, Surface::Classic] {
        live.push((surface, Sse::connect(&th.at(&surface.path(&code)), None).await));
    }
    for id in ["p0", "p1", "p2", "p3"] {
        put(&th, &code, id, reg_body(id)).await;
    }
    put(&th, &code, "p0", reg_body("p0 again")).await;
    call(http().delete(th.at(&format!("/v1/rooms/{code}/participants/p1"))).bearer_auth(&host)).await;
    put(&th, &code, "p4", reg_body("p4")).await;
    call(http().delete(th.at(&format!("/rooms/{code}/leave/p2"))).bearer_auth(&host)).await;
    const N: usize = 8;
    for (surface, sse) in &mut live {
        let events = collect(sse, N).await;
        assert_eq!(events[0].event, "connected");
        let ids: Vec<u64> = events.iter().map(id_of).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{surface:?} ids increase: {ids:?}");
        originals.insert(*surface, events);
    }

    // Reconnect after the k-th event (0 is `connected`: everything is replayed; N: nothing is).
    let mut resumed = Vec::new();
    for surface in [Surface::V1, Surface::Classic] {
        let events = &originals[&surface];
        for k in [0, 1, 3, 5, N - 1, N] {
            let after = events[k].id.clone().unwrap();
            let mut sse = Sse::connect(&th.at(&surface.path(&code)), Some(&after)).await;
            expect_connected(surface, &code, &mut sse).await;
            for (j, want) in events[k + 1..].iter().enumerate() {
                let got = sse.next().await;
                assert_eq!(
                    (&got.event, &got.id, &got.data),
                    (&want.event, &want.id, &want.data),
                    "{surface:?} resumed after event #{k}: replayed event #{j} differs"
                );
            }
            expect_quiet(&mut sse, &format!("{surface:?} resumed after event #{k}: no duplicates")).await;
            resumed.push((surface, k, sse));
        }
    }

    // The replay and the live events join without a gap or a duplicate.
    put(&th, &code, "p5", reg_body("p5")).await;
    for (surface, k, sse) in &mut resumed {
        let got = sse.next().await;
        assert_eq!(got.event, surface.name("participant.joined"), "{surface:?} after #{k}");
        assert_eq!(payload(*surface, &code, &got)["id"], "p5");
        assert!(id_of(&got) > id_of(originals[surface].last().unwrap()));
        expect_quiet(sse, &format!("{surface:?} resumed after #{k}, live event")).await;
    }

    // An unreadable Last-Event-ID starts a fresh stream: nothing is replayed.
    for surface in [Surface::V1, Surface::Classic] {
        let mut sse = Sse::connect(&th.at(&surface.path(&code)), Some("not-a-number")).await;
        expect_connected(surface, &code, &mut sse).await;
        expect_quiet(&mut sse, &format!("{surface:?} fresh stream")).await;
    }
}

#[tokio::test]
async fn a_last_event_id_from_the_future_does_not_silence_the_stream() {
    // Regression: a `Last-Event-ID` above every id this hub has issued (a client of an earlier hub
    // process whose clock was ahead: ids start at the boot time) used to become the stream's
    // position, so every live event was skipped as "already seen" — an EventSource reconnecting
    // that way heard nothing, ever. It is told it lagged and follows the live events.
    let th = TestHub::start().await;
    let (code, _) = th.room("Future", None).await;
    for surface in [Surface::V1, Surface::Classic] {
        let mut sse = Sse::connect(&th.at(&surface.path(&code)), Some(&u64::MAX.to_string())).await;
        let (_, connected) = expect_connected(surface, &code, &mut sse).await;
        assert!(id_of(&connected) < u64::MAX, "{surface:?}: the position is one this hub issued");
        let lagged = sse.next().await;
        assert_eq!(lagged.event, surface.name("stream.lagged"), "{surface:?}: {lagged:?}");
        let id = format!("{surface:?}").to_lowercase();
        put(&th, &code, &id, reg_body(&id)).await;
        let event = sse.next().await;
        assert_eq!(event.event, surface.name("participant.joined"), "{surface:?}: live events flow");
        assert_eq!(payload(surface, &code, &event)["id"], id.as_str());
    }
}

/// A raw HTTP/1.1 SSE client on a plain TCP socket, for what a real client hides: a reader that
/// never reads, and the keep-alive comments.
struct RawSse {
    sock: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    head: Option<String>,
    ended: bool,
}

impl RawSse {
    /// Sends the GET and reads nothing.
    async fn open(th: &TestHub, path: &str, last_event_id: Option<&str>) -> RawSse {
        let addr = th.url.trim_start_matches("http://");
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).await.unwrap();
        RawSse { sock, raw: Vec::new(), body: Vec::new(), head: None, ended: false }
    }

    /// Reads what is there (waiting until `deadline` for something), de-chunking the body.
    /// Returns false once the deadline passed or the connection closed.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut buf = vec![0u8; 256 * 1024];
        let n = match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(r) => r.unwrap(),
        };
        if n == 0 {
            self.ended = true;
            return false;
        }
        self.raw.extend_from_slice(&buf[..n]);
        if self.head.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else { return true };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_string();
            self.raw.drain(..end + 4);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("content-type: text/event-stream"), "{head}");
            assert!(lower.contains("transfer-encoding: chunked"), "{head}");
            self.head = Some(head);
        }
        // Chunks: "<hex size>\r\n<bytes>\r\n".
        while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            if size == 0 {
                self.ended = true;
                break;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                break;
            }
            self.body.extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..line_end + 2 + size + 2);
        }
        true
    }

    /// Takes the complete blocks (events or comments) received so far.
    fn blocks(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(end) = self.body.windows(2).position(|w| w == b"\n\n") {
            out.push(String::from_utf8_lossy(&self.body[..end]).to_string());
            self.body.drain(..end + 2);
        }
        out
    }
}

fn block_field<'a>(block: &'a str, field: &str) -> Option<&'a str> {
    block.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.strip_prefix(' ').unwrap_or(v)))
}

/// A big registration, so a few thousand events fill any socket buffer (~16 KB per event).
fn heavy_body(nickname: &str, round: usize) -> Value {
    let models: Vec<Value> =
        (0..64).map(|m| json!({"name": format!("model-{m}-round-{round}-{}", "x".repeat(180)), "vram": 1.5})).collect();
    json!({
        "nickname": nickname, "model": "llama3",
        "endpoint": format!("http://127.0.0.1:9/{}", "p".repeat(1000)),
        "specs": {"gpu": "NVIDIA RTX 4090", "vram": 24, "ram": 64, "cpu": "AMD Ryzen 9 7950X"},
        "config": {"temperature": 0.7, "max_tokens": 2000},
        "loadedModels": models,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_does_not_stop_other_readers_or_the_hub() {
    const PARTICIPANTS: usize = 100;
    const ROUNDS: usize = 10;
    const TOTAL: usize = PARTICIPANTS * ROUNDS;
    // ~16 KB per event, ~16 MB per stream in all: far more than the socket buffers (a few MB)
    // hold, so the readers that never read are stuck about 300 events in. A small live channel,
    // so they fall behind it at once; a ring of 512, so a reader that keeps up is never short of
    // anything while the stuck ones end up far behind it.
    let th = TestHub::with_config(HubConfig { event_channel: 64, event_ring: 512, ..HubConfig::default() }).await;
    let (code, _) = th.room("Flood", None).await;
    let mut stuck = RawSse::open(&th, &Surface::V1.path(&code), None).await;
    let mut stuck_classic = RawSse::open(&th, &Surface::Classic.path(&code), None).await;
    let mut reader = Sse::connect(&th.at(&Surface::V1.path(&code)), None).await;
    expect_connected(Surface::V1, &code, &mut reader).await;

    // The flood: every participant registers, then updates itself, ROUNDS times in all.
    let started = Instant::now();
    let flood = {
        let url = th.url.clone();
        let code = code.clone();
        tokio::spawn(async move {
            let client = http();
            // Each participant's token, from its first registration: its updates are its own.
            let tokens = std::sync::Arc::new(std::sync::Mutex::new(vec![String::new(); PARTICIPANTS]));
            for round in 0..ROUNDS {
                let mut batch = tokio::task::JoinSet::new();
                for p in 0..PARTICIPANTS {
                    let token = tokens.lock().unwrap()[p].clone();
                    let mut req = client
                        .put(format!("{url}/v1/rooms/{code}/participants/w{p}"))
                        .json(&heavy_body(&format!("worker {p}"), round));
                    if !token.is_empty() {
                        req = req.bearer_auth(token);
                    }
                    let tokens = tokens.clone();
                    batch.spawn(async move {
                        let res = req.send().await.unwrap();
                        let status = res.status().as_u16();
                        let v: Value = res.json().await.unwrap_or(Value::Null);
                        if let Some(t) = v["data"]["participantToken"].as_str() {
                            tokens.lock().unwrap()[p] = t.to_string();
                        }
                        status
                    });
                    if batch.len() >= 4 {
                        let status = batch.join_next().await.unwrap().unwrap();
                        assert!(status == 200 || status == 201, "upsert: {status}");
                    }
                }
                while let Some(status) = batch.join_next().await {
                    let status = status.unwrap();
                    assert!(status == 200 || status == 201, "upsert: {status}");
                }
            }
        })
    };

    // Meanwhile the hub answers promptly.
    let mut slowest_health = Duration::ZERO;
    while !flood.is_finished() {
        let t = Instant::now();
        let res = http().get(th.at("/v1/health")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        slowest_health = slowest_health.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flood.await.unwrap();
    let flood_took = started.elapsed();
    assert!(slowest_health < Duration::from_secs(2), "GET /v1/health took {slowest_health:?} during the flood");

    // The reader that reads got every event, in order, none lost, and promptly.
    let mut per_participant: HashMap<String, Vec<String>> = HashMap::new();
    let mut last = 0;
    let mut bytes = 0usize;
    for i in 0..TOTAL {
        let event = reader
            .next_within(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("reader got only {i} of {TOTAL} events"));
        assert_ne!(event.event, "stream.lagged", "a reader that keeps up is never lagged (event #{i})");
        let id = id_of(&event);
        assert!(id > last, "ids increase");
        last = id;
        bytes += event.data.len();
        let data = payload(Surface::V1, &code, &event);
        per_participant.entry(data["id"].as_str().unwrap().to_string()).or_default().push(event.event);
    }
    let all_read = started.elapsed();
    assert!(bytes > 12 * 1024 * 1024, "the flood is big enough to fill socket buffers ({bytes} bytes)");
    assert_eq!(per_participant.len(), PARTICIPANTS);
    for (id, names) in &per_participant {
        assert_eq!(names.len(), ROUNDS, "{id}");
        assert_eq!(names[0], "participant.joined", "{id}");
        assert!(names[1..].iter().all(|n| n == "participant.updated"), "{id}: {names:?}");
    }
    expect_quiet(&mut reader, "reader after the flood").await;
    assert!(
        all_read < flood_took + Duration::from_secs(10),
        "the reader lagged far behind the flood: flood {flood_took:?}, all read at {all_read:?}"
    );

    // And the hub still serves everything else at once.
    let t = Instant::now();
    let (status, _, _) = call(http().get(th.at("/v1/health"))).await;
    assert_eq!(status, 200);
    let (status, _, list) = call(http().get(th.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), PARTICIPANTS);
    assert!(t.elapsed() < Duration::from_secs(2), "hub slow after the flood: {:?}", t.elapsed());
    let mut fresh = Sse::connect(&th.at(&Surface::Classic.path(&code)), None).await;
    expect_connected(Surface::Classic, &code, &mut fresh).await;

    // The stuck readers, once they do read, learn that they lost events (they were stuck behind
    // full socket buffers, far behind the ring) and then get the newest ones.
    for (surface, raw) in [(Surface::V1, &mut stuck), (Surface::Classic, &mut stuck_classic)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut names = Vec::new();
        let mut ids = Vec::new();
        while ids.last() != Some(&last) {
            assert!(raw.fill(deadline).await, "{surface:?} stuck reader: stream stalled; got {} events", names.len());
            for block in raw.blocks() {
                if block.starts_with(':') {
                    continue;
                }
                if let Some(id) = block_field(&block, "id") {
                    ids.push(id.parse::<u64>().unwrap());
                }
                names.push(block_field(&block, "event").unwrap_or_default().to_string());
            }
        }
        let lagged = surface.name("stream.lagged");
        assert_eq!(names[0], "connected");
        let lag_at = names.iter().position(|n| *n == lagged).unwrap_or_else(|| {
            panic!("{surface:?}: a reader stuck behind the ring is told it lagged ({} events seen)", names.len())
        });
        assert!(lag_at > 1, "{surface:?}: it got events before it was stuck");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{surface:?}: no duplicates, in order");
        assert!(ids.len() < TOTAL, "{surface:?}: events were skipped, not buffered without bound");
    }
}

#[tokio::test]
async fn a_reader_behind_the_live_channel_catches_up_from_the_ring() {
    // A burst of 200 events published with no await in between: on this single-threaded runtime no
    // stream task runs until it is over, so every reader is 200 behind a channel of 16. The ring
    // keeps 1024, so nothing is lost.
    let th = TestHub::with_config(HubConfig { event_channel: 16, event_ring: 1024, ..HubConfig::default() }).await;
    let (code, _) = th.room("Catch-up", None).await;
    let mut readers = Vec::new();
    for surface in [Surface::V1, Surface::Classic] {
        let mut sse = Sse::connect(&th.at(&surface.path(&code)), None).await;
        expect_connected(surface, &code, &mut sse).await;
        readers.push((surface, sse));
    }
    for i in 0..200 {
        upsert_now(&th, &code, &format!("b{i}"));
    }
    for (surface, sse) in &mut readers {
        for i in 0..200 {
            let event = sse.next().await;
            assert_eq!(event.event, surface.name("participant.joined"), "{surface:?} #{i}: {event:?}");
            assert_eq!(payload(*surface, &code, &event)["id"], format!("b{i}"), "{surface:?}: in order");
        }
        expect_quiet(sse, &format!("{surface:?} after the burst")).await;
    }
    // Live events flow normally afterwards.
    upsert_now(&th, &code, "after");
    for (surface, sse) in &mut readers {
        let event = sse.next().await;
        assert_eq!(payload(*surface, &code, &event)["id"], "after");
    }
}

#[tokio::test]
async fn a_reader_behind_the_ring_is_told_it_lagged() {
    // The same burst with a ring of 32: readers lose the first 168 events and are told so once,
    // then get the 32 the ring still has, then the live events.
    let th = TestHub::with_config(HubConfig { event_channel: 16, event_ring: 32, ..HubConfig::default() }).await;
    let (code, _) = th.room("Lagged", None).await;
    let mut readers = Vec::new();
    let mut before_burst = HashMap::new();
    for surface in [Surface::V1, Surface::Classic] {
        let mut sse = Sse::connect(&th.at(&surface.path(&code)), None).await;
        let (_, connected) = expect_connected(surface, &code, &mut sse).await;
        before_burst.insert(surface, connected.id.unwrap());
        readers.push((surface, sse));
    }
    for i in 0..200 {
        upsert_now(&th, &code, &format!("b{i}"));
    }
    let (kept, _) = th.hub.registry().bus().replay(&code, 0);
    assert_eq!(kept.len(), 32);
    let kept_ids: Vec<String> = kept.iter().map(|e| e.id.to_string()).collect();

    for (surface, sse) in &mut readers {
        expect_lagged_then(*surface, &code, sse, &kept_ids).await;
    }
    // A reconnect whose Last-Event-ID is older than the ring is told the same.
    for surface in [Surface::V1, Surface::Classic] {
        let mut sse = Sse::connect(&th.at(&surface.path(&code)), Some(&before_burst[&surface])).await;
        expect_connected(surface, &code, &mut sse).await;
        expect_lagged_then(surface, &code, &mut sse, &kept_ids).await;
    }
    upsert_now(&th, &code, "after");
    for (surface, sse) in &mut readers {
        let event = sse.next().await;
        assert_eq!(event.event, surface.name("participant.joined"));
        assert_eq!(payload(*surface, &code, &event)["id"], "after");
    }
}

/// `stream.lagged` once, then exactly the events whose ids are `kept_ids`, then nothing.
async fn expect_lagged_then(surface: Surface, code: &str, sse: &mut Sse, kept_ids: &[String]) {
    let lagged = sse.next().await;
    assert_eq!(lagged.event, surface.name("stream.lagged"), "{surface:?}: {lagged:?}");
    let data = payload(surface, code, &lagged);
    assert_eq!(data["missed"], true, "{surface:?}: {data}");
    assert!(data["hint"].as_str().is_some_and(|h| !h.is_empty()), "{surface:?}: a hint says what to do: {data}");
    for (i, want) in kept_ids.iter().enumerate() {
        let event = sse.next().await;
        assert_eq!(event.id.as_deref(), Some(want.as_str()), "{surface:?}: kept event #{i}");
        assert_eq!(event.event, surface.name("participant.joined"));
    }
    expect_quiet(sse, &format!("{surface:?} after the ring")).await;
}

#[tokio::test]
async fn idle_streams_carry_keep_alive_comments() {
    let th = TestHub::with_config(HubConfig { keep_alive: Duration::from_millis(200), ..HubConfig::default() }).await;
    let (code, _) = th.room("Quiet", None).await;
    for surface in [Surface::V1, Surface::Classic] {
        let mut raw = RawSse::open(&th, &surface.path(&code), None).await;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut comments = 0;
        let mut events = Vec::new();
        while comments < 3 {
            assert!(raw.fill(deadline).await, "{surface:?}: only {comments} keep-alive comments in {PATIENCE:?}");
            for block in raw.blocks() {
                if block.lines().all(|l| l.starts_with(':')) {
                    comments += 1;
                } else {
                    events.push(block);
                }
            }
        }
        assert!(started.elapsed() >= Duration::from_millis(500), "3 comments 200 ms apart");
        assert_eq!(events.len(), 1, "{surface:?}: only `connected` besides the comments: {events:?}");
        assert_eq!(block_field(&events[0], "event"), Some("connected"));
    }
}

#[tokio::test]
async fn streams_of_an_unknown_room_are_404() {
    let th = TestHub::start().await;
    for code in ["ZZZZZZ", "abc", "AB-12!"] {
        let (status, _, body) = call(http().get(th.at(&format!("/v1/rooms/{code}/events")))).await;
        assert_eq!(status, 404, "{code}");
        assert_eq!(body["error"]["code"], "ROOM_NOT_FOUND", "{body}");
        assert!(body["meta"]["requestId"].is_string(), "{body}");
        let (status, _, body) =
            call(http().get(th.at(&format!("/rooms/{code}/events"))).header("last-event-id", "5")).await;
        assert_eq!(status, 404, "{code}");
        assert_eq!(body, json!({"error": "Room not found"}));
    }
}

#[tokio::test]
async fn deleting_the_room_says_everyone_left_then_ends_its_streams() {
    let th = TestHub::start().await;
    let (code, host_token) = th.room("Doomed", None).await;
    let (other, _) = th.room("Survivor", None).await;
    th.participant(&code, "w1", None).await;
    th.participant(&code, "w2", None).await;
    let mut streams = Vec::new();
    for surface in [Surface::V1, Surface::Classic] {
        let mut sse = Sse::connect(&th.at(&surface.path(&code)), None).await;
        expect_connected(surface, &code, &mut sse).await;
        streams.push((surface, sse));
    }
    let mut other_stream = Sse::connect(&th.at(&Surface::V1.path(&other)), None).await;
    expect_connected(Surface::V1, &other, &mut other_stream).await;

    let url = th.at(&format!("/v1/rooms/{code}"));
    let (status, _, _) = call(http().delete(&url).bearer_auth("gh_wrong")).await;
    assert_eq!(status, 403);
    for (surface, sse) in &mut streams {
        expect_quiet(sse, &format!("{surface:?} after a refused deletion")).await;
    }
    let (status, _, body) = call(http().delete(&url).bearer_auth(&host_token)).await;
    assert_eq!(status, 200, "{body}");
    for (surface, sse) in &mut streams {
        let mut left = Vec::new();
        for _ in 0..2 {
            let event = sse.next().await;
            assert_eq!(event.event, surface.name("participant.left"), "{surface:?}: {event:?}");
            left.push(payload(*surface, &code, &event)["participantId"].as_str().unwrap().to_string());
        }
        left.sort();
        assert_eq!(left, ["w1", "w2"]);
        assert!(sse.ended_within(PATIENCE).await, "{surface:?}: the stream ends with the room");
    }
    for surface in [Surface::V1, Surface::Classic] {
        let (status, _, _) = call(http().get(th.at(&surface.path(&code))).header("last-event-id", "1")).await;
        assert_eq!(status, 404, "{surface:?}: the deleted room has no stream");
    }
    // The other room's stream saw none of it and lives on.
    expect_quiet(&mut other_stream, "another room's stream").await;
    th.participant(&other, "w3", None).await;
    assert_eq!(other_stream.next().await.event, "participant.joined");
}

#[tokio::test]
async fn streams_end_when_the_hub_stops() {
    let th = TestHub::start().await;
    let (code, _) = th.room("Closing", None).await;
    let mut v1 = Sse::connect(&th.at(&Surface::V1.path(&code)), None).await;
    let mut classic = Sse::connect(&th.at(&Surface::Classic.path(&code)), None).await;
    expect_connected(Surface::V1, &code, &mut v1).await;
    expect_connected(Surface::Classic, &code, &mut classic).await;
    let started = Instant::now();
    tokio::time::timeout(PATIENCE, th.stop()).await.expect("open streams do not hold up shutdown");
    assert!(started.elapsed() < PATIENCE);
    assert!(v1.ended_within(PATIENCE).await);
    assert!(classic.ended_within(PATIENCE).await);
}
