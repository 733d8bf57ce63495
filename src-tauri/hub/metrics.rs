//! `GET /metrics`: the hub, its rooms and their participants in Prometheus' text exposition format
//! (version 0.0.4), for a Prometheus (or anything that reads the format) to scrape.
//!
//! Nothing here counts on its own: the counters are `hub::stats`' (kept from the events the bus
//! publishes, with the histograms and per-stage errors defined here), the loads are the registry's
//! (`Registry::loads`), the open connections and event streams are `hub::quota`'s. A scrape copies
//! them, then renders off every lock. The one thing measured here is how long a request waits in
//! its room's queue ([`waited`], around the inference plane's wait).
//!
//! Who may read it follows the hub's trust model (README, "Security and limits"): this machine is
//! the hub's own user (as `hub::quota` treats it), so a loopback client gets everything; anyone
//! else gets a room's series with that room's host token as `Authorization: Bearer`, and nothing
//! without one. The per-room counters of a protected room are not the LAN's to read (its stats
//! need its key on `/v1` too), and the hub-wide gauges are the operator's. Web pages on this
//! machine are kept out by the Origin check (`hub::browser`), as from every read.
//!
//! Labels are room codes, participant ids and fixed words (`stage`, `le`) only: never a password,
//! key or token, nor anything a participant chose (a participant's error stage outside the known
//! list is `other`), so a series never says more than the room's own listings and its number
//! stays bounded.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::protocol::now_ms;

use super::error::{ApiError, HubError};
use super::registry::loads::{ParticipantLoad, RoomLoad};
use super::routes::v1::bearer;
use super::routes::ClientAddr;
use super::stats::{Counters, RoomCounters};
use super::Hub;

/// The text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where an inference request failed, as `llm.error` says (`stage`); any other word is `other`.
pub const STAGES: [&str; 8] = ["connect", "request", "status", "stream", "decode", "client", "tunnel", "other"];

/// Bucket bounds, in seconds. Time to first token: a loaded model answers in tens of ms, a cold
/// one in seconds to minutes.
pub const TTFT_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Whole requests: from a short answer to a long generation on a CPU.
pub const DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Waits in a room's queue, up to the longest allowed (`--queue-wait`, 60 s by default).
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The index of `stage` in [`STAGES`].
pub fn stage_index(stage: &str) -> usize {
    STAGES.iter().position(|s| *s == stage).unwrap_or(STAGES.len() - 1)
}

/// A histogram of seconds: a count per bucket (not cumulative; made so when rendered), their sum
/// and count. A few words per bucket: cheap enough for every participant's tally.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `counts[i]`: observations in `(bounds[i-1], bounds[i]]`; past the last bound, only in `count`.
    counts: Box<[u64]>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()].into_boxed_slice(), sum: 0.0, count: 0 }
    }

    /// Counts one observation; a negative or non-finite one counts as 0, so the count always
    /// matches the requests observed.
    pub fn observe(&mut self, seconds: f64) {
        let v = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(le, cumulative count)` for every bound, then `+Inf` with the whole count.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut running = 0;
        self.bounds
            .iter()
            .zip(self.counts.iter())
            .map(move |(bound, n)| {
                running += n;
                (*bound, running)
            })
            .chain(std::iter::once((f64::INFINITY, self.count)))
    }
}

/// Times a request's wait in room `code`'s queue: `wait` is the wait itself (the ticket's). The
/// wait is recorded however it ends: a slot, a timeout, or the client going away (the future
/// dropped).
pub async fn waited<T>(hub: &Hub, code: &str, wait: impl Future<Output = T>) -> T {
    struct Timer<'a> {
        hub: &'a Hub,
        code: &'a str,
        started: Instant,
    }
    impl Drop for Timer<'_> {
        fn drop(&mut self) {
            self.hub.stats().queue_wait(self.code, self.started.elapsed().as_secs_f64());
        }
    }
    let _timer = Timer { hub, code, started: Instant::now() };
    wait.await
}

/// The route.
pub fn router() -> Router<Hub> {
    Router::new().route("/metrics", get(serve))
}

/// Which rooms a reader may see, and whether the hub-wide gauges too.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// This machine: the whole hub.
    Hub,
    /// A room's host: those rooms only.
    Rooms(Vec<String>),
}

fn scope(hub: &Hub, client: Option<std::net::IpAddr>, credential: Option<&str>) -> Result<Scope, HubError> {
    if client.map(super::quota::canonical).is_some_and(|ip| ip.is_loopback()) {
        return Ok(Scope::Hub);
    }
    let Some(token) = credential else {
        return Err(HubError::MetricsNotAllowed { credential: false });
    };
    let rooms: Vec<String> = hub
        .registry()
        .list_rooms()
        .into_iter()
        .map(|room| room.code)
        .filter(|code| hub.registry().holds_host_token(code, Some(token)))
        .collect();
    if rooms.is_empty() {
        return Err(HubError::MetricsNotAllowed { credential: true });
    }
    Ok(Scope::Rooms(rooms))
}

async fn serve(State(hub): State<Hub>, ClientAddr(client): ClientAddr, headers: HeaderMap) -> Response {
    let scope = match scope(&hub, client, bearer(&headers)) {
        Ok(scope) => scope,
        Err(e) => return ApiError(e).into_response(),
    };
    let text = render(&hub, &scope);
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What the hub-wide gauges read.
struct HubGauges {
    connections: usize,
    event_streams: usize,
    tunnels: usize,
    rooms: usize,
    participants: usize,
    started_ms: u64,
    rss_bytes: Option<u64>,
}

/// One room as rendered: its loads and its counters.
struct RoomView {
    load: RoomLoad,
    counters: RoomCounters,
}

impl RoomView {
    fn participant(&self, load: &ParticipantLoad) -> Option<&Counters> {
        self.counters.participants.get(&load.id)
    }
}

fn render(hub: &Hub, scope: &Scope) -> String {
    let only = match scope {
        Scope::Hub => None,
        Scope::Rooms(codes) => Some(codes.as_slice()),
    };
    let now = now_ms();
    let rooms: Vec<RoomView> = hub
        .registry()
        .loads(only)
        .into_iter()
        .map(|load| {
            let counters = hub.stats().room_counters(&load.code, now);
            RoomView { load, counters }
        })
        .collect();
    let gauges = (*scope == Scope::Hub).then(|| {
        let (connections, event_streams) = hub.quotas().open();
        HubGauges {
            connections,
            event_streams,
            tunnels: hub.tunnels().len(),
            rooms: rooms.len(),
            participants: rooms.iter().map(|r| r.load.participants.len()).sum(),
            started_ms: hub.stats().started(),
            rss_bytes: resident_bytes(),
        }
    });
    render_text(gauges.as_ref(), &rooms)
}

/// This process's resident memory (`VmRSS` of `/proc/self/status`); `None` where there is no
/// such file.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

fn render_text(hub: Option<&HubGauges>, rooms: &[RoomView]) -> String {
    let mut out = Exposition::default();
    if let Some(g) = hub {
        let gauge = |out: &mut Exposition, name: &str, help: &str, value: f64| {
            out.family(name, "gauge", help);
            out.sample(name, &[], value);
        };
        gauge(&mut out, "gambi_hub_connections", "HTTP connections open to the hub.", g.connections as f64);
        gauge(&mut out, "gambi_hub_event_streams", "Room event streams open, both surfaces.", g.event_streams as f64);
        gauge(&mut out, "gambi_hub_tunnels", "Participant tunnels open.", g.tunnels as f64);
        gauge(&mut out, "gambi_hub_rooms", "Rooms on the hub.", g.rooms as f64);
        gauge(&mut out, "gambi_hub_participants", "Participants registered, all rooms.", g.participants as f64);
        gauge(
            &mut out,
            "gambi_hub_start_time_seconds",
            "When the hub started counting, in seconds since the epoch.",
            g.started_ms as f64 / 1000.0,
        );
        if let Some(rss) = g.rss_bytes {
            gauge(&mut out, "process_resident_memory_bytes", "Resident memory of the hub's process.", rss as f64);
        }
    }

    out.rooms(rooms, "gambi_room_participants", "gauge", "Participants registered in the room.", |r| {
        r.load.participants.len() as f64
    });
    out.rooms(
        rooms,
        "gambi_room_requests_total",
        "counter",
        "Requests routed (a request tried twice counts once).",
        |r| r.counters.total.requests as f64,
    );
    out.rooms(rooms, "gambi_room_completed_total", "counter", "Requests answered to their end.", |r| {
        r.counters.total.completed as f64
    });
    out.family("gambi_room_errors_total", "counter", "Failed tries, by where they failed.");
    for r in rooms {
        for (stage, n) in STAGES.iter().zip(r.counters.total.errors) {
            out.sample("gambi_room_errors_total", &[("room", &r.load.code), ("stage", stage)], n as f64);
        }
    }
    out.rooms(rooms, "gambi_room_in_flight", "gauge", "Requests being served in the room now.", |r| {
        r.load.participants.iter().map(|p| u64::from(p.in_flight)).sum::<u64>() as f64
    });
    out.rooms(rooms, "gambi_room_queue_depth", "gauge", "Requests waiting for a free participant now.", |r| {
        r.load.queued as f64
    });
    out.family(
        "gambi_room_queue_wait_seconds",
        "histogram",
        "How long requests that queued waited for a participant (served, timed out or abandoned).",
    );
    for r in rooms {
        out.histogram("gambi_room_queue_wait_seconds", &[("room", &r.load.code)], &r.counters.queue_wait);
    }
    out.family("gambi_room_ttft_seconds", "histogram", "Time to the first byte of the answer, completed requests.");
    for r in rooms {
        out.histogram("gambi_room_ttft_seconds", &[("room", &r.load.code)], &r.counters.total.ttft);
    }
    out.family("gambi_room_duration_seconds", "histogram", "Whole duration of completed requests.");
    for r in rooms {
        out.histogram("gambi_room_duration_seconds", &[("room", &r.load.code)], &r.counters.total.duration);
    }
    out.rooms(rooms, "gambi_room_input_tokens_total", "counter", "Prompt tokens of completed requests.", |r| {
        r.counters.total.input_tokens as f64
    });
    out.rooms(rooms, "gambi_room_output_tokens_total", "counter", "Generated tokens of completed requests.", |r| {
        r.counters.total.output_tokens as f64
    });
    out.family(
        "gambi_room_tokens_per_second",
        "gauge",
        "Generation speed, averaged over the room's recent completed requests.",
    );
    for r in rooms {
        if let Some(tps) = r.counters.total.tokens_per_second {
            out.sample("gambi_room_tokens_per_second", &[("room", &r.load.code)], tps);
        }
    }

    out.participants(
        rooms,
        "gambi_participant_connected",
        "gauge",
        "1 while the hub can reach the participant (its tunnel is open; direct: always), else 0.",
        |_, p| if p.connected { 1.0 } else { 0.0 },
    );
    out.participants(rooms, "gambi_participant_in_flight", "gauge", "Requests the participant serves now.", |_, p| {
        f64::from(p.in_flight)
    });
    out.participants(
        rooms,
        "gambi_participant_max_concurrency",
        "gauge",
        "Requests the participant serves at once at most.",
        |_, p| f64::from(p.max_concurrency),
    );
    let counter = |f: fn(&Counters) -> u64| move |c: Option<&Counters>, _: &ParticipantLoad| c.map_or(0, f) as f64;
    out.participants(
        rooms,
        "gambi_participant_requests_total",
        "counter",
        "Requests sent to the participant (each try).",
        counter(|c| c.requests),
    );
    out.participants(
        rooms,
        "gambi_participant_completed_total",
        "counter",
        "Requests the participant answered to their end.",
        counter(|c| c.completed),
    );
    out.family("gambi_participant_errors_total", "counter", "Failed tries at the participant, by where they failed.");
    for r in rooms {
        for p in &r.load.participants {
            let errors = r.participant(p).map_or([0; STAGES.len()], |c| c.errors);
            for (stage, n) in STAGES.iter().zip(errors) {
                out.sample(
                    "gambi_participant_errors_total",
                    &[("room", &r.load.code), ("participant", &p.id), ("stage", stage)],
                    n as f64,
                );
            }
        }
    }
    let empty_ttft = Histogram::new(TTFT_BUCKETS);
    let empty_duration = Histogram::new(DURATION_BUCKETS);
    out.family(
        "gambi_participant_ttft_seconds",
        "histogram",
        "Time to the first byte of the participant's answer, completed requests.",
    );
    for r in rooms {
        for p in &r.load.participants {
            let h = r.participant(p).map_or(&empty_ttft, |c| &c.ttft);
            out.histogram("gambi_participant_ttft_seconds", &[("room", &r.load.code), ("participant", &p.id)], h);
        }
    }
    out.family(
        "gambi_participant_duration_seconds",
        "histogram",
        "Whole duration of the participant's completed requests.",
    );
    for r in rooms {
        for p in &r.load.participants {
            let h = r.participant(p).map_or(&empty_duration, |c| &c.duration);
            out.histogram("gambi_participant_duration_seconds", &[("room", &r.load.code), ("participant", &p.id)], h);
        }
    }
    out.participants(
        rooms,
        "gambi_participant_input_tokens_total",
        "counter",
        "Prompt tokens of the participant's completed requests.",
        counter(|c| c.input_tokens),
    );
    out.participants(
        rooms,
        "gambi_participant_output_tokens_total",
        "counter",
        "Tokens the participant generated, completed requests.",
        counter(|c| c.output_tokens),
    );
    out.family(
        "gambi_participant_tokens_per_second",
        "gauge",
        "The participant's generation speed, averaged over its recent completed requests.",
    );
    for r in rooms {
        for p in &r.load.participants {
            if let Some(tps) = r.participant(p).and_then(|c| c.tokens_per_second) {
                out.sample(
                    "gambi_participant_tokens_per_second",
                    &[("room", &r.load.code), ("participant", &p.id)],
                    tps,
                );
            }
        }
    }
    out.text
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family; its samples follow, all together.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        self.text.push(' ');
        self.text.push_str(&number(value));
        self.text.push('\n');
    }

    /// A histogram's `_bucket` lines (cumulative, `+Inf` last), `_sum` and `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        for (le, n) in h.cumulative() {
            let _ = write!(self.text, "{name}_bucket");
            write_labels(&mut self.text, labels, Some(&number(le)));
            let _ = writeln!(self.text, " {n}");
        }
        let _ = write!(self.text, "{name}_sum");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", number(h.sum()));
        let _ = write!(self.text, "{name}_count");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", h.count());
    }

    /// A family with one sample per room.
    fn rooms(&mut self, rooms: &[RoomView], name: &str, kind: &str, help: &str, value: impl Fn(&RoomView) -> f64) {
        self.family(name, kind, help);
        for r in rooms {
            self.sample(name, &[("room", &r.load.code)], value(r));
        }
    }

    /// A family with one sample per participant of every room.
    fn participants(
        &mut self,
        rooms: &[RoomView],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(Option<&Counters>, &ParticipantLoad) -> f64,
    ) {
        self.family(name, kind, help);
        for r in rooms {
            for p in &r.load.participants {
                self.sample(name, &[("room", &r.load.code), ("participant", &p.id)], value(r.participant(p), p));
            }
        }
    }
}

/// `{a="x",b="y"}` (with `le` last when given); nothing for no labels.
fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (name, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        out.push_str(&escape_label(value));
        out.push('"');
    }
    out.push('}');
}

/// A label value as the format writes it: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value or `le` bound: Go's float syntax, with `+Inf`, `-Inf` and `NaN` spelled so.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v == 0.0 {
        // Negative zero too (an empty `f64` sum is −0).
        "0".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("ROOM01"), "ROOM01");
        assert_eq!(escape_help("one\\two\nthree \"q\""), "one\\\\two\\nthree \"q\"");
        let mut out = String::new();
        write_labels(&mut out, &[("room", "A\"B"), ("participant", "w\\1")], Some("+Inf"));
        assert_eq!(out, r#"{room="A\"B",participant="w\\1",le="+Inf"}"#);
        let mut none = String::new();
        write_labels(&mut none, &[], None);
        assert_eq!(none, "");
    }

    #[test]
    fn numbers_use_the_formats_spelling() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(-0.0), "0");
    }

    #[test]
    fn buckets_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new(&[0.1, 1.0, 10.0]);
        for v in [0.05, 0.1, 0.5, 2.0, 50.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let buckets: Vec<(f64, u64)> = h.cumulative().collect();
        // 0.05, 0.1, NaN→0 and −1→0 are ≤ 0.1; 0.5 ≤ 1; 2 ≤ 10; 50 only in +Inf.
        assert_eq!(buckets, vec![(0.1, 4), (1.0, 5), (10.0, 6), (f64::INFINITY, 7)]);
        assert_eq!(h.count(), 7);
        assert!((h.sum() - 52.65).abs() < 1e-9, "{}", h.sum());
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));

        let mut out = Exposition::default();
        out.family("x_seconds", "histogram", "X.");
        out.histogram("x_seconds", &[("room", "R")], &h);
        let text = out.text;
        assert!(text.starts_with("# HELP x_seconds X.\n# TYPE x_seconds histogram\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{room=\"R\",le=\"0.1\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{room=\"R\",le=\"+Inf\"} 7\n"), "{text}");
        assert!(text.contains("x_seconds_count{room=\"R\"} 7\n"), "{text}");
        assert!(text.contains("x_seconds_sum{room=\"R\"} 52.65"), "{text}");
    }

    #[test]
    fn unknown_stages_are_other() {
        assert_eq!(STAGES[stage_index("status")], "status");
        assert_eq!(STAGES[stage_index("tunnel")], "tunnel");
        assert_eq!(STAGES[stage_index("a participant's own \"word\"")], "other");
    }

    #[test]
    fn a_room_and_its_participants_render_every_family_once() {
        let mut counters = RoomCounters::default();
        let mut served = Counters { requests: 3, completed: 2, ..Counters::default() };
        served.errors[stage_index("status")] = 1;
        served.ttft.observe(0.2);
        served.ttft.observe(0.3);
        served.tokens_per_second = Some(12.5);
        counters.total = served.clone();
        counters.participants.insert("w-1".into(), served);
        let load = RoomLoad {
            code: "ROOM23".into(),
            participants: vec![
                ParticipantLoad { id: "w-1".into(), in_flight: 1, max_concurrency: 2, connected: true },
                ParticipantLoad { id: "w-2".into(), in_flight: 0, max_concurrency: 1, connected: false },
            ],
            queued: 4,
        };
        let text = render_text(None, &[RoomView { load, counters }]);
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "each family once: {text}");
        assert!(!text.contains("gambi_hub_"), "no hub-wide gauges without the hub's scope");
        for line in [
            "gambi_room_queue_depth{room=\"ROOM23\"} 4",
            "gambi_room_in_flight{room=\"ROOM23\"} 1",
            "gambi_participant_errors_total{room=\"ROOM23\",participant=\"w-1\",stage=\"status\"} 1",
            "gambi_participant_errors_total{room=\"ROOM23\",participant=\"w-2\",stage=\"status\"} 0",
            "gambi_participant_connected{room=\"ROOM23\",participant=\"w-2\"} 0",
            "gambi_participant_ttft_seconds_count{room=\"ROOM23\",participant=\"w-1\"} 2",
            "gambi_participant_ttft_seconds_count{room=\"ROOM23\",participant=\"w-2\"} 0",
            "gambi_participant_tokens_per_second{room=\"ROOM23\",participant=\"w-1\"} 12.5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("tokens_per_second{room=\"ROOM23\",participant=\"w-2\"}"), "no speed before any");
    }
}
