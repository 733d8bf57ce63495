//! Room stats: what each room and each participant has served, counted by the hub from the events
//! the inference plane already publishes (`llm.request`, `llm.complete`, `llm.error`), so a page
//! opened late still reads the truth ("Requests 2", not the requests since it opened), and a room
//! whose sharers have all left still knows that people shared there.
//!
//! The event bus hands every event to [`Stats::observe`] as it publishes it, before any stream sees
//! it: a reader told `llm.complete` finds it counted. Counting is a few additions under a lock of
//! its own, never held while the registry's is taken here. The counts live in memory only and
//! start again with the hub; a room's go when it is closed, a participant's when it leaves (the
//! room's totals keep what it served).
//!
//! The same tallies keep what `/metrics` shows beyond the wire's stats: failed tries by stage, and
//! histograms of time to first token and duration (and, per room, of waits in its queue); see
//! `hub::metrics`, which renders them.
//!
//! The wire types are in `protocol::stats`; which readers get them is the routes' business
//! (`Hub::check_reader`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::protocol::events::{EventKind, LlmMetrics};
use crate::protocol::stats::{
    ParticipantStats, RecentCaller, RoomStats, Usage, RECENT_CALLERS, RECENT_WINDOW_REQUESTS, RECENT_WINDOW_SECS,
};
use crate::protocol::{now_ms, ConnectionKind, Participant, ParticipantStatus};

use super::error::HubError;
use super::metrics::{stage_index, Histogram, DURATION_BUCKETS, QUEUE_WAIT_BUCKETS, STAGES, TTFT_BUCKETS};
use super::routes::ClientAddr;
use super::Hub;

const HOUR_MS: u64 = 3_600_000;
/// Request ids a room remembers, so a request that failed over to a second participant counts once.
const REMEMBERED_REQUESTS: usize = 64;
/// Different participant ids a room remembers for "N have shared here"; past it, new ones are
/// counted without being remembered (a rejoin may then count twice).
const REMEMBERED_SHARERS: usize = 10_000;
/// Participants with counters per room; one more shares the room's totals only.
const TRACKED_PARTICIPANTS: usize = 10_000;

tokio::task_local! {
    /// The caller of the inference request being handled, for its `llm.request` event.
    static CALLER: Option<String>;
    /// The name the request gave itself with `X-Gambi-Caller`, for fair turns.
    static TURN_KEY: Option<String>;
}

/// The header a client may send to name itself for fair turns (e.g. one per person behind one
/// address, or one per script).
pub const CALLER_HEADER: &str = "x-gambi-caller";

/// The `X-Gambi-Caller` name of the request this task is handling, if it sent one.
pub fn named_caller_key() -> Option<String> {
    TURN_KEY.try_with(Clone::clone).ok().flatten()
}

/// `work` with this task's caller and caller name, wherever it is polled (a response body is
/// polled outside the handler's task-locals).
pub fn carry_caller<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    CALLER.scope(caller(), TURN_KEY.scope(named_caller_key(), work))
}

/// A caller name as sent: short and printable, else ignored.
fn named_caller(value: &axum::http::HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?.trim();
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .then(|| format!("name:{s}"))
}

/// Who sent the inference request this task is handling: the client's address. `None` outside
/// the inference plane, or where the hub had no address for the client.
pub fn caller() -> Option<String> {
    CALLER.try_with(Clone::clone).ok().flatten()
}

/// Layer of the inference plane: keeps the client's address for [`caller`].
pub async fn caller_scope(ClientAddr(client): ClientAddr, req: Request, next: Next) -> Response {
    let label = client.map(|ip| super::quota::canonical(ip).to_string());
    let turn = req.headers().get(CALLER_HEADER).and_then(named_caller);
    CALLER.scope(label, TURN_KEY.scope(turn, next.run(req))).await
}

/// One finished request, for the recent averages.
struct Sample {
    at: u64,
    ttft_ms: f64,
    tokens_per_second: Option<f64>,
}

/// The counters of a room, or of one participant.
struct Tally {
    requests: u64,
    completed: u64,
    errors: u64,
    /// `errors` by stage, in the order of [`STAGES`].
    errors_by_stage: [u64; STAGES.len()],
    input_tokens: u64,
    output_tokens: u64,
    /// Requests per hour (hour number, count), the last 24 hours at most, oldest first.
    hours: VecDeque<(u64, u64)>,
    recent: VecDeque<Sample>,
    last_request_at: Option<u64>,
    /// Of completed requests, in seconds.
    ttft: Histogram,
    duration: Histogram,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            requests: 0,
            completed: 0,
            errors: 0,
            errors_by_stage: [0; STAGES.len()],
            input_tokens: 0,
            output_tokens: 0,
            hours: VecDeque::new(),
            recent: VecDeque::new(),
            last_request_at: None,
            ttft: Histogram::new(TTFT_BUCKETS),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

impl Tally {
    fn request(&mut self, now: u64) {
        self.requests += 1;
        self.last_request_at = Some(now);
        let hour = now / HOUR_MS;
        match self.hours.back_mut() {
            Some((h, count)) if *h == hour => *count += 1,
            _ => self.hours.push_back((hour, 1)),
        }
        while self.hours.front().is_some_and(|(h, _)| *h + 24 <= hour) || self.hours.len() > 24 {
            self.hours.pop_front();
        }
    }

    fn complete(&mut self, metrics: &LlmMetrics, now: u64) {
        self.completed += 1;
        self.input_tokens += metrics.input_tokens.unwrap_or(0);
        self.output_tokens += metrics.output_tokens.unwrap_or(0);
        self.ttft.observe(metrics.ttft_ms / 1000.0);
        self.duration.observe(metrics.duration_ms / 1000.0);
        let finite = |x: f64| x.is_finite().then_some(x.max(0.0));
        if let Some(ttft_ms) = finite(metrics.ttft_ms) {
            self.recent.push_back(Sample {
                at: now,
                ttft_ms,
                tokens_per_second: metrics.tokens_per_second.and_then(finite),
            });
        }
        while self.recent.len() > RECENT_WINDOW_REQUESTS {
            self.recent.pop_front();
        }
    }

    fn error(&mut self, stage: &str) {
        self.errors += 1;
        self.errors_by_stage[stage_index(stage)] += 1;
    }

    fn counters(&self, now: u64) -> Counters {
        Counters {
            requests: self.requests,
            completed: self.completed,
            errors: self.errors_by_stage,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            ttft: self.ttft.clone(),
            duration: self.duration.clone(),
            tokens_per_second: self.usage(now).avg_tokens_per_second,
        }
    }

    fn usage(&self, now: u64) -> Usage {
        let window_start = now.saturating_sub(RECENT_WINDOW_SECS * 1000);
        let recent: Vec<&Sample> = self.recent.iter().filter(|s| s.at >= window_start).collect();
        let average = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let hour = now / HOUR_MS;
        // The bucket of the hour 24 hours ago is partly outside; counted whole, the figure errs by
        // at most that hour's requests, and never forgets a request of the last 23 hours.
        let last_24h = self.hours.iter().filter(|(h, _)| h + 24 > hour).map(|(_, n)| n).sum();
        Usage {
            requests: self.requests,
            completed: self.completed,
            errors: self.errors,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            requests_last_24h: last_24h,
            avg_ttft_ms: average(recent.iter().map(|s| s.ttft_ms).collect()),
            avg_tokens_per_second: average(recent.iter().filter_map(|s| s.tokens_per_second).collect()),
            recent_completed: recent.len() as u64,
            last_request_at: self.last_request_at,
        }
    }
}

#[derive(Default)]
struct ParticipantTally {
    tally: Tally,
    /// Newest first.
    callers: VecDeque<RecentCaller>,
}

struct RoomTally {
    total: Tally,
    participants: HashMap<String, ParticipantTally>,
    recent_requests: VecDeque<String>,
    sharers: HashSet<String>,
    sharers_counted: u64,
    /// Waits in the room's queue, in seconds (the queue is the room's: a waiting request has no
    /// participant yet).
    queue_wait: Histogram,
}

impl Default for RoomTally {
    fn default() -> Self {
        RoomTally {
            total: Tally::default(),
            participants: HashMap::new(),
            recent_requests: VecDeque::new(),
            sharers: HashSet::new(),
            sharers_counted: 0,
            queue_wait: Histogram::new(QUEUE_WAIT_BUCKETS),
        }
    }
}

/// What `/metrics` shows of a room, or of one participant: copies of its counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    /// Each try (for a room: each request, once however many tries it took).
    pub requests: u64,
    pub completed: u64,
    /// Failed tries by stage, in the order of [`STAGES`].
    pub errors: [u64; STAGES.len()],
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub ttft: Histogram,
    pub duration: Histogram,
    /// Averaged over the recent window, as the stats' `avgTokensPerSecond`.
    pub tokens_per_second: Option<f64>,
}

impl Default for Counters {
    fn default() -> Self {
        Tally::default().counters(0)
    }
}

/// A room's [`Counters`], its queue's waits, and each participant's counters (those it tracks).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomCounters {
    pub total: Counters,
    pub queue_wait: Histogram,
    pub participants: HashMap<String, Counters>,
}

impl Default for RoomCounters {
    fn default() -> Self {
        RoomCounters {
            total: Counters::default(),
            queue_wait: Histogram::new(QUEUE_WAIT_BUCKETS),
            participants: HashMap::new(),
        }
    }
}

impl RoomTally {
    fn saw_sharer(&mut self, id: &str) {
        if self.sharers.contains(id) {
            return;
        }
        self.sharers_counted += 1;
        if self.sharers.len() < REMEMBERED_SHARERS {
            self.sharers.insert(id.to_string());
        }
    }
}

/// The hub's counters, for every room; cheap to clone.
#[derive(Clone)]
pub struct Stats {
    rooms: Arc<Mutex<HashMap<String, RoomTally>>>,
    /// When this hub started counting.
    started: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { rooms: Arc::default(), started: now_ms() }
    }
}

impl Stats {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, RoomTally>> {
        // Counters half-updated by a panic are still better than none.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one event of room `code`, published at `now`.
    pub fn observe(&self, code: &str, kind: &EventKind, now: u64) {
        let mut rooms = self.lock();
        if matches!(kind, EventKind::RoomClosed) {
            rooms.remove(code);
            return;
        }
        let room = rooms.entry(code.to_string()).or_default();
        match kind {
            EventKind::ParticipantJoined(p) | EventKind::ParticipantUpdated(p) => room.saw_sharer(&p.id),
            EventKind::ParticipantLeft { participant_id } => {
                room.participants.remove(participant_id);
            }
            EventKind::LlmRequest { request_id, participant_id, model, caller, .. } => {
                if !room.recent_requests.contains(request_id) {
                    room.total.request(now);
                    if room.recent_requests.len() >= REMEMBERED_REQUESTS {
                        room.recent_requests.pop_front();
                    }
                    room.recent_requests.push_back(request_id.clone());
                }
                room.saw_sharer(participant_id);
                let tracked = room.participants.len() < TRACKED_PARTICIPANTS;
                if let Some(p) = participant_entry(room, participant_id, tracked) {
                    p.tally.request(now);
                    p.callers.push_front(RecentCaller {
                        caller: caller.clone().unwrap_or_else(|| "unknown".into()),
                        model: model.clone(),
                        at: now,
                    });
                    p.callers.truncate(RECENT_CALLERS);
                }
            }
            EventKind::LlmComplete { participant_id, metrics, .. } => {
                room.total.complete(metrics, now);
                if let Some(p) = room.participants.get_mut(participant_id) {
                    p.tally.complete(metrics, now);
                }
            }
            EventKind::LlmError { participant_id, stage, .. } => {
                room.total.error(stage);
                if let Some(p) = room.participants.get_mut(participant_id) {
                    p.tally.error(stage);
                }
            }
            // A refused request was served by no one: the room's counts are of what it served.
            EventKind::RoomCreated(_)
            | EventKind::ParticipantOffline { .. }
            | EventKind::LlmRejected { .. }
            | EventKind::LlmQueued { .. }
            | EventKind::RoomClosed => {}
        }
    }

    /// A room's counters at `now`, and how many different participants have shared into it.
    pub fn room_usage(&self, code: &str, now: u64) -> (Usage, u64) {
        let rooms = self.lock();
        match rooms.get(code) {
            Some(room) => (room.total.usage(now), room.sharers_counted),
            None => (Usage::default(), 0),
        }
    }

    /// One participant's counters at `now` (zero for one that has served nothing yet).
    pub fn participant(&self, code: &str, id: &str, now: u64) -> ParticipantStats {
        let rooms = self.lock();
        rooms.get(code).and_then(|room| room.participants.get(id)).map(|p| stats_of(p, now)).unwrap_or_default()
    }

    /// The counters of every participant of room `code` that has served something.
    pub fn participants(&self, code: &str, now: u64) -> HashMap<String, ParticipantStats> {
        let rooms = self.lock();
        rooms
            .get(code)
            .map(|room| room.participants.iter().map(|(id, p)| (id.clone(), stats_of(p, now))).collect())
            .unwrap_or_default()
    }

    /// Counts one wait of `seconds` in room `code`'s queue (a room already gone is not brought back).
    pub fn queue_wait(&self, code: &str, seconds: f64) {
        if let Some(room) = self.lock().get_mut(code) {
            room.queue_wait.observe(seconds);
        }
    }

    /// Room `code`'s counters at `now`, for `/metrics` (zero for a room that has seen nothing).
    pub fn room_counters(&self, code: &str, now: u64) -> RoomCounters {
        let rooms = self.lock();
        let Some(room) = rooms.get(code) else { return RoomCounters::default() };
        RoomCounters {
            total: room.total.counters(now),
            queue_wait: room.queue_wait.clone(),
            participants: room.participants.iter().map(|(id, p)| (id.clone(), p.tally.counters(now))).collect(),
        }
    }

    /// When this hub started counting (epoch ms).
    pub fn started(&self) -> u64 {
        self.started
    }
}

fn participant_entry<'a>(room: &'a mut RoomTally, id: &str, may_add: bool) -> Option<&'a mut ParticipantTally> {
    if !may_add && !room.participants.contains_key(id) {
        return None;
    }
    Some(room.participants.entry(id.to_string()).or_default())
}

fn stats_of(p: &ParticipantTally, now: u64) -> ParticipantStats {
    ParticipantStats { usage: p.tally.usage(now), recent_callers: p.callers.iter().cloned().collect() }
}

/// Publishes `llm.rejected` in room `code` for a request asking for `model` that the inference
/// plane refused before routing it (no participant serves the model, every one that could is busy,
/// paused or unreachable), so the room's activity shows it with a sentence; returns `error`, for
/// `map_err`. A room that does not exist has no activity to show it in.
pub fn rejected(hub: &Hub, code: &str, model: &str, error: HubError) -> HubError {
    if !matches!(error, HubError::RoomNotFound { .. }) {
        // The model is the client's text, of any length: the room's recent events keep a short one.
        let model = clipped(model, MODEL_SHOWN);
        let model = model.as_str();
        let kind = EventKind::LlmRejected {
            request_id: super::request_id::current(),
            model: model.to_string(),
            status: error.status().as_u16(),
            code: error.code().to_string(),
            message: rejection_sentence(model, &error, |id| {
                hub.registry().participant(code, id).map_or_else(|_| id.to_string(), |p| p.public.nickname)
            }),
            caller: caller(),
        };
        hub.registry().bus().publish(code, kind);
    }
    error
}

/// A client's `model` as the room's events repeat it (cut short).
pub fn clipped_model(model: &str) -> String {
    clipped(model, MODEL_SHOWN)
}

/// The most of a refused request's `model` its event repeats (model names are short; a client may
/// send anything).
const MODEL_SHOWN: usize = 120;

/// `text` cut to `max` characters, with "…" where it was cut.
fn clipped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// What happened to a refused request, in the words of the room's activity: participants by
/// their nicknames (`name_of`).
fn rejection_sentence(model: &str, error: &HubError, name_of: impl Fn(&str) -> String) -> String {
    let any = matches!(model, "*" | "any");
    let asked = model.strip_prefix("model:").unwrap_or(model);
    match error {
        HubError::NoParticipant if any => "No one is sharing in this room right now, so no one could answer.".into(),
        HubError::NoParticipant => format!("No one in this room shares {asked} right now, so no one could answer."),
        HubError::Capacity { .. } if any => "Everyone sharing here was busy, so it was turned away.".into(),
        HubError::Capacity { .. } => format!("Everyone sharing {asked} was busy, so it was turned away."),
        HubError::ParticipantBusy { id } => format!("{} was busy, and the request asked for it alone.", name_of(id)),
        HubError::ParticipantUnavailable { id, reason } => format!("{} couldn't take it: {reason}.", name_of(id)),
        HubError::ParticipantPaused { id, reason } if reason != "paused" => {
            format!("{} is paused ({reason}), so it couldn't answer.", name_of(id))
        }
        HubError::ParticipantPaused { id, .. } => format!("{} is paused, so it couldn't answer.", name_of(id)),
        other => {
            let mut text = other.message();
            if !text.ends_with(['.', '!', '?']) {
                text.push('.');
            }
            text
        }
    }
}

/// Whether a participant can take requests now: online or busy, and reachable (its tunnel is
/// open, or the hub calls it directly).
pub fn is_online(p: &Participant) -> bool {
    matches!(p.status, ParticipantStatus::Online | ParticipantStatus::Busy)
        && (p.connection.connected || p.connection.kind == ConnectionKind::Direct)
}

/// The `stats` of room `code`: its counters, with who is in it now.
pub fn room_stats(hub: &Hub, code: &str) -> Result<RoomStats, HubError> {
    let summary = hub.registry().room(code)?;
    let participants = hub.registry().participants(code)?;
    let now = now_ms();
    let (usage, shared) = hub.stats().room_usage(code, now);
    Ok(RoomStats {
        usage,
        participants_online: participants.iter().filter(|p| is_online(p)).count(),
        participants_registered: participants.len(),
        // A hub restarted on its state file knows participants it has not seen join.
        participants_shared: shared.max(participants.len() as u64),
        since: hub.stats().started().max(summary.created_at),
    })
}

/// Splices `"stats": …` into a participant's cached JSON object (`{"id":"…",…}`), keyed by the id
/// it starts with; `None` (keep the piece as it is) for a participant that has served nothing, or
/// a piece that does not start that way. Only the pieces that get stats are copied, so a big room
/// still lists from its cached encodings.
pub fn with_stats(piece: &[u8], stats: &HashMap<String, ParticipantStats>) -> Option<Vec<u8>> {
    let stats = serde_json::to_vec(stats.get(leading_id(piece)?)?).ok()?;
    let body = piece.strip_suffix(b"}")?;
    let mut out = Vec::with_capacity(piece.len() + stats.len() + 10);
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"stats\":");
    out.extend_from_slice(&stats);
    out.push(b'}');
    Some(out)
}

/// The id of a participant's JSON, which serializes `id` first; ids never need escaping (see
/// `protocol::is_participant_id`), so the first quote after it ends it.
fn leading_id(piece: &[u8]) -> Option<&str> {
    let rest = piece.strip_prefix(b"{\"id\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let id = std::str::from_utf8(&rest[..end]).ok()?;
    crate::protocol::is_participant_id(id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, participant: &str, caller: Option<&str>) -> EventKind {
        EventKind::LlmRequest {
            request_id: id.into(),
            participant_id: participant.into(),
            model: "llama3".into(),
            operation: "chat.completions".into(),
            caller: caller.map(str::to_string),
            route: None,
        }
    }

    fn complete(id: &str, participant: &str, ttft_ms: f64, tps: f64) -> EventKind {
        EventKind::LlmComplete {
            request_id: id.into(),
            participant_id: participant.into(),
            model: "llama3".into(),
            metrics: LlmMetrics {
                ttft_ms,
                duration_ms: 100.0,
                input_tokens: Some(3),
                output_tokens: Some(7),
                total_tokens: Some(10),
                tokens_per_second: Some(tps),
            },
        }
    }

    fn error(id: &str, participant: &str) -> EventKind {
        EventKind::LlmError {
            request_id: id.into(),
            participant_id: participant.into(),
            model: "llama3".into(),
            stage: "connect".into(),
            error: "refused".into(),
        }
    }

    #[test]
    fn a_room_counts_requests_tokens_and_averages() {
        let stats = Stats::default();
        let now = 10 * HOUR_MS;
        stats.observe("ROOM01", &request("a", "w1", Some("10.0.0.2")), now);
        stats.observe("ROOM01", &complete("a", "w1", 100.0, 20.0), now);
        stats.observe("ROOM01", &request("b", "w1", None), now + 1);
        stats.observe("ROOM01", &complete("b", "w1", 300.0, 40.0), now + 1);
        let (usage, shared) = stats.room_usage("ROOM01", now + 2);
        assert_eq!((usage.requests, usage.completed, usage.errors), (2, 2, 0));
        assert_eq!((usage.input_tokens, usage.output_tokens), (6, 14));
        assert_eq!(usage.avg_ttft_ms, Some(200.0));
        assert_eq!(usage.avg_tokens_per_second, Some(30.0));
        assert_eq!(usage.requests_last_24h, 2);
        assert_eq!(shared, 1);
        let w1 = stats.participant("ROOM01", "w1", now + 2);
        assert_eq!(w1.usage.requests, 2);
        let callers: Vec<&str> = w1.recent_callers.iter().map(|c| c.caller.as_str()).collect();
        assert_eq!(callers, ["unknown", "10.0.0.2"], "newest first");
    }

    #[test]
    fn a_failed_over_request_counts_once_for_the_room_and_once_per_try() {
        let stats = Stats::default();
        stats.observe("ROOM01", &request("a", "w1", None), 1);
        stats.observe("ROOM01", &error("a", "w1"), 2);
        stats.observe("ROOM01", &request("a", "w2", None), 3);
        stats.observe("ROOM01", &complete("a", "w2", 50.0, 10.0), 4);
        let (usage, shared) = stats.room_usage("ROOM01", 5);
        assert_eq!((usage.requests, usage.completed, usage.errors), (1, 1, 1));
        assert_eq!(shared, 2);
        assert_eq!(stats.participant("ROOM01", "w1", 5).usage.errors, 1);
        assert_eq!(stats.participant("ROOM01", "w2", 5).usage.completed, 1);
    }

    #[test]
    fn metrics_counters_split_errors_by_stage_and_fill_the_histograms() {
        let stats = Stats::default();
        stats.observe("ROOM01", &EventKind::RoomCreated(room_summary("ROOM01")), 0);
        stats.observe("ROOM01", &request("a", "w1", None), 1);
        stats.observe("ROOM01", &complete("a", "w1", 300.0, 20.0), 2);
        stats.observe("ROOM01", &request("b", "w1", None), 3);
        stats.observe("ROOM01", &error("b", "w1"), 4);
        let mut odd = error("c", "w1");
        if let EventKind::LlmError { stage, .. } = &mut odd {
            *stage = "made up by a participant".into();
        }
        stats.observe("ROOM01", &odd, 5);
        stats.queue_wait("ROOM01", 0.2);
        stats.queue_wait("GONE99", 1.0);
        let counters = stats.room_counters("ROOM01", 6);
        let w1 = &counters.participants["w1"];
        assert_eq!((w1.requests, w1.completed), (2, 1));
        assert_eq!(w1.errors[stage_index("connect")], 1);
        assert_eq!(w1.errors[stage_index("other")], 1);
        assert_eq!(w1.errors.iter().sum::<u64>(), 2);
        assert_eq!((w1.ttft.count(), w1.duration.count()), (1, 1));
        assert!((w1.ttft.sum() - 0.3).abs() < 1e-9 && (w1.duration.sum() - 0.1).abs() < 1e-9);
        assert_eq!(w1.tokens_per_second, Some(20.0));
        assert_eq!(counters.total.errors, w1.errors);
        assert_eq!(counters.queue_wait.count(), 1);
        assert_eq!(stats.room_counters("GONE99", 6), RoomCounters::default(), "a wait does not make a room");
    }

    fn room_summary(code: &str) -> crate::protocol::RoomSummary {
        serde_json::from_value(serde_json::json!({
            "id": "r1", "code": code, "name": "Room", "hostId": "h", "createdAt": 0, "passwordProtected": false
        }))
        .unwrap()
    }

    #[test]
    fn the_room_keeps_what_a_participant_that_left_served() {
        let stats = Stats::default();
        stats.observe("ROOM01", &request("a", "w1", None), 1);
        stats.observe("ROOM01", &complete("a", "w1", 50.0, 10.0), 2);
        stats.observe("ROOM01", &EventKind::ParticipantLeft { participant_id: "w1".into() }, 3);
        let (usage, shared) = stats.room_usage("ROOM01", 4);
        assert_eq!((usage.requests, shared), (1, 1));
        assert_eq!(stats.participant("ROOM01", "w1", 4), ParticipantStats::default());
        stats.observe("ROOM01", &EventKind::RoomClosed, 5);
        assert_eq!(stats.room_usage("ROOM01", 6), (Usage::default(), 0), "a closed room's counts go with it");
    }

    #[test]
    fn averages_are_over_the_recent_window_and_the_day_rolls() {
        let stats = Stats::default();
        let start = 100 * HOUR_MS;
        stats.observe("ROOM01", &request("a", "w1", None), start);
        stats.observe("ROOM01", &complete("a", "w1", 1000.0, 5.0), start);
        let later = start + RECENT_WINDOW_SECS * 1000 + 1;
        let (usage, _) = stats.room_usage("ROOM01", later);
        assert_eq!((usage.avg_ttft_ms, usage.recent_completed), (None, 0), "an old request leaves the window");
        assert_eq!(usage.requests_last_24h, 1);
        let (usage, _) = stats.room_usage("ROOM01", start + 25 * HOUR_MS);
        assert_eq!((usage.requests, usage.requests_last_24h), (1, 0));
    }

    #[test]
    fn a_refusal_is_a_sentence_that_names_people_by_nickname() {
        let name = |id: &str| if id == "w-1" { "Alice".to_string() } else { id.to_string() };
        let say = |model: &str, e: HubError| rejection_sentence(model, &e, name);
        assert_eq!(
            say("qwen", HubError::NoParticipant),
            "No one in this room shares qwen right now, so no one could answer."
        );
        assert_eq!(
            say("any", HubError::NoParticipant),
            "No one is sharing in this room right now, so no one could answer."
        );
        let full = || HubError::Capacity { what: "the room's queue is full".into() };
        assert_eq!(say("model:llama3", full()), "Everyone sharing llama3 was busy, so it was turned away.");
        assert_eq!(
            say("w-1", HubError::ParticipantBusy { id: "w-1".into() }),
            "Alice was busy, and the request asked for it alone."
        );
        let paused = HubError::ParticipantPaused { id: "w-1".into(), reason: "model server stopped".into() };
        assert_eq!(say("w-1", paused), "Alice is paused (model server stopped), so it couldn't answer.");
        let away = HubError::ParticipantUnavailable { id: "w-2".into(), reason: "it is offline".into() };
        assert_eq!(say("w-2", away), "w-2 couldn't take it: it is offline.");
        assert!(say("*", HubError::ShuttingDown).ends_with('.'));
        assert_eq!(clipped("llama3", 120), "llama3");
        let long = "é".repeat(1000);
        assert_eq!(clipped(&long, 120).chars().count(), 121, "120 characters and the ellipsis");
    }

    #[test]
    fn stats_are_spliced_into_a_participants_json() {
        let participant: crate::protocol::Participant = serde_json::from_value(serde_json::json!({
            "id": "w-1", "nickname": "Alice", "model": "llama3", "endpoint": "http://127.0.0.1:9",
            "connection": {"kind": "tunnel", "connected": true},
            "status": "online", "joinedAt": 0, "lastSeen": 0, "updatedAt": 0
        }))
        .unwrap();
        let piece = serde_json::to_vec(&participant).unwrap();
        assert!(piece.starts_with(b"{\"id\":\"w-1\""), "the participant's JSON starts with its id");
        let mut all = HashMap::new();
        all.insert(
            "w-1".to_string(),
            ParticipantStats { usage: Usage { requests: 4, ..Usage::default() }, ..Default::default() },
        );
        let spliced: serde_json::Value = serde_json::from_slice(&with_stats(&piece, &all).unwrap()).unwrap();
        assert_eq!(spliced["nickname"], "Alice");
        assert_eq!(spliced["stats"]["requests"], 4);
        assert_eq!(spliced["stats"]["recentCallers"], serde_json::json!([]));
        assert_eq!(with_stats(b"[1]", &all), None);
        all.clear();
        assert_eq!(with_stats(&piece, &all), None, "one that served nothing is left as it is");
    }
}
