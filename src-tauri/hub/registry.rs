//! The registry: rooms, their participants, host tokens and tunnel bootstrap tokens, and the health
//! sweep's rules. A cheap cloneable handle around one `std::sync::Mutex`; every method is synchronous
//! and never holds the lock across an `.await` (password checks happen before, in `hub::password`).
//!
//! Every change is published on the event bus while the lock is still held, so the order of events
//! is the order of changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indexmap::IndexMap;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::protocol::events::EventKind;
use crate::protocol::{
    is_participant_id, now_ms, Capabilities, Capability, Connection, ConnectionKind, CreatedRoom, Endpoint,
    HeartbeatNews, HeartbeatResult, LoadedModel, MachineSpecs, Participant, ParticipantStatus, PauseReason,
    RoomSummary, RuntimeConfig, ROOM_CODE_LEN, TUNNEL_TOKEN_TTL,
};

mod routing;

pub use routing::{Acquire, Need, Selector, Slot, WaitTicket};

use super::error::HubError;
use super::events::EventBus;

pub mod loads;

/// Room codes avoid the look-alikes `0 O 1 I`, so a code read aloud or copied by hand works.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// The timing rules of the health sweep.
#[derive(Debug, Clone)]
pub struct HealthRules {
    /// No heartbeat for this long: `offline`.
    pub participant_timeout: Duration,
    /// Offline for this long: removed.
    pub offline_retention: Duration,
    /// Without participants for this long: the room expires. `None` keeps rooms forever.
    pub room_ttl: Option<Duration>,
}

/// A room as `--state` keeps it. Participants are not kept: they re-register after a restart. Their
/// token digests are, so a restarted hub still binds each id it knew to its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRoom {
    pub id: String,
    pub code: String,
    pub name: String,
    pub host_id: String,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<RuntimeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// SHA-256 (hex) of the host token: the token itself is shown once and kept nowhere.
    pub host_token_sha256: String,
    /// Participant id → SHA-256 (hex) of its participant token, for every participant the hub knew
    /// when it wrote the file. Filled only when writing; in memory the live records hold them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub participant_tokens: BTreeMap<String, String>,
}

impl StoredRoom {
    fn summary(&self, participant_count: Option<usize>) -> RoomSummary {
        RoomSummary {
            id: self.id.clone(),
            code: self.code.clone(),
            name: self.name.clone(),
            host_id: self.host_id.clone(),
            created_at: self.created_at,
            password_protected: self.password_hash.is_some(),
            defaults: self.defaults.as_ref().map(RuntimeConfig::public),
            participant_count,
        }
    }
}

/// A participant's registration, validated (see `hub::validate`).
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub nickname: String,
    pub model: String,
    pub endpoint: String,
    pub specs: MachineSpecs,
    pub config: RuntimeConfig,
    pub capabilities: Option<Capabilities>,
    pub max_concurrency: Option<u32>,
    pub loaded_models: Option<Vec<LoadedModel>>,
    /// What the provider tells of the model (additive `modelDetails`).
    pub model_details: Option<crate::protocol::ModelDetails>,
    /// Where a direct participant's endpoint may point, by where its registration came from.
    pub reach: crate::hub::egress::Reach,
}

/// A participant with what the hub keeps beside its public form.
#[derive(Debug, Clone)]
pub struct ParticipantRecord {
    pub public: Participant,
    /// The full config, `instructions` included (the public form only says whether there are any).
    pub config: RuntimeConfig,
    offline_since: Option<u64>,
    /// Requests being served now; `status` is `busy` while this equals `max_concurrency`.
    pub in_flight: u32,
    /// Why the participant paused itself (its heartbeat said so), if it did. Kept apart from
    /// `status` because `status` is recomputed as requests come and go, and a pause outlives that
    /// (and an offline spell).
    paused: Option<PauseReason>,
    /// Its tunnel closed and no registration or tunnel has come since: it is offline for that, and
    /// a heartbeat alone (a session that has not noticed yet) does not make it routable again.
    tunnel_lost: bool,
    /// `public` as JSON, redone on every change of it: listing 10,000 participants then copies
    /// bytes under the lock instead of serializing them there.
    json: bytes::Bytes,
    /// SHA-256 (hex) of the participant token: the token itself is handed out once and kept nowhere.
    token_sha256: String,
    /// Where the hub may connect for it (direct participants), from its latest registration.
    pub reach: crate::hub::egress::Reach,
    /// `public.endpoint` parsed (direct participants), once per registration rather than per call.
    pub base_url: Option<reqwest::Url>,
    /// What the room has measured of its answers (first token, speed, load), for routing.
    pub speed: Option<crate::hub::scheduler::Speed>,
}

impl ParticipantRecord {
    fn new(public: Participant, config: RuntimeConfig) -> Self {
        let mut record = ParticipantRecord {
            public,
            config,
            offline_since: None,
            in_flight: 0,
            paused: None,
            tunnel_lost: false,
            json: bytes::Bytes::new(),
            token_sha256: String::new(),
            reach: crate::hub::egress::Reach::default(),
            base_url: None,
            speed: None,
        };
        record.parse_endpoint();
        record.refresh();
        record
    }

    /// True when `token` is this participant's token (constant time).
    fn token_matches(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| digest_matches(t, &self.token_sha256))
    }

    /// Gives the participant a fresh token and returns it.
    fn issue_token(&mut self) -> String {
        let token = random_token("gp_", 24);
        self.token_sha256 = sha256_hex(&token);
        token
    }

    /// What `status` is while the participant is not offline: paused, busy (every place taken) or
    /// online.
    fn live_status(&self) -> ParticipantStatus {
        if self.paused.is_some() {
            ParticipantStatus::Paused
        } else if self.in_flight >= self.public.max_concurrency {
            ParticipantStatus::Busy
        } else {
            ParticipantStatus::Online
        }
    }

    /// Parses `public.endpoint` for the calls to a direct participant; called when it changes.
    fn parse_endpoint(&mut self) {
        let endpoint = &self.public.endpoint;
        self.base_url = (!endpoint.is_empty()).then(|| crate::hub::egress::base_url(endpoint).ok()).flatten();
    }

    /// Re-encodes the cached JSON; called after every change of `public`.
    fn refresh(&mut self) {
        self.json = serde_json::to_vec(&self.public)
            .map(bytes::Bytes::from)
            .unwrap_or_else(|_| bytes::Bytes::from_static(b"null"));
    }
}

struct RoomRecord {
    stored: StoredRoom,
    participants: IndexMap<String, ParticipantRecord>,
    /// When the room last became empty (creation counts); `None` while it has participants.
    empty_since: Option<u64>,
    /// Ids a previous run of the hub knew (from `--state`) that have not registered again since:
    /// each stays bound to its owner's token until it comes back or the retention rule frees it.
    bound: HashMap<String, Binding>,
    /// Output tokens of the room's answers (a running average), for routing's estimates.
    typical_tokens: Option<f64>,
}

/// An id bound to a token digest without a live record (see [`RoomRecord::bound`]).
struct Binding {
    token_sha256: String,
    /// When this run of the hub learnt of it: the retention clock runs from there.
    since: u64,
}

impl RoomRecord {
    fn new(stored: StoredRoom, now: u64) -> Self {
        let mut stored = stored;
        let bound = std::mem::take(&mut stored.participant_tokens)
            .into_iter()
            .filter(|(id, digest)| is_participant_id(id) && digest.len() == 64)
            .map(|(id, token_sha256)| (id, Binding { token_sha256, since: now }))
            .collect();
        RoomRecord { stored, participants: IndexMap::new(), empty_since: Some(now), bound, typical_tokens: None }
    }

    /// True when `token` is this room's host token (constant time).
    fn is_host_token(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| bool::from(sha256_hex(t).as_bytes().ct_eq(self.stored.host_token_sha256.as_bytes())))
    }

    /// Whether `token` proves the id `id` in this room: its participant's token, or, for an id
    /// only bound from a previous run, the token it was bound to. `None` when the id is free.
    fn proves(&self, id: &str, token: Option<&str>) -> Option<bool> {
        if let Some(record) = self.participants.get(id) {
            return Some(record.token_matches(token));
        }
        self.bound.get(id).map(|b| token.is_some_and(|t| digest_matches(t, &b.token_sha256)))
    }
}

impl RoomRecord {
    fn summary(&self) -> RoomSummary {
        self.stored.summary(Some(self.participants.len()))
    }
}

struct TunnelGrant {
    room_code: String,
    participant_id: String,
    expires_at: u64,
    /// Issued with the participant's token itself (see [`Registry::issue_tunnel_token`]).
    first: bool,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, RoomRecord>,
    tunnel_grants: HashMap<String, TunnelGrant>,
    /// Per room, the requests waiting for a free participant, oldest first.
    waiters: HashMap<String, VecDeque<Waiter>>,
    next_waiter: u64,
    /// Per room with a queue, when each caller in it last got a place (in `turn`s).
    turns: HashMap<String, HashMap<String, u64>>,
    turn: u64,
}

struct Waiter {
    id: u64,
    selector: Selector,
    need: Need,
    /// Who sent it (fair turns); empty when unknown.
    caller: String,
    tx: oneshot::Sender<Slot>,
    /// Its place in line (1 = next), told to the request while it waits.
    position: tokio::sync::watch::Sender<u32>,
}

struct Inner {
    state: Mutex<State>,
    bus: EventBus,
    rules: HealthRules,
    /// How many requests may wait per room for a free participant.
    queue_depth: AtomicUsize,
    /// The rooms' routing rule: 0 expected completion, 1 least loaded (`Registry::set_policy`).
    policy: std::sync::atomic::AtomicU8,
    /// How long a tunnel bootstrap token stays valid, in ms.
    tunnel_token_ttl_ms: AtomicU64,
    /// Most rooms, and most participants per room (unlimited unless set).
    max_rooms: AtomicUsize,
    max_participants: AtomicUsize,
}

/// Cheap to clone: a handle on the shared registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// The outcome of an upsert.
pub struct Upserted {
    pub participant: Participant,
    pub created: bool,
    pub room_id: String,
    /// A token handed out by this registration (a new participant, or a new owner of the id);
    /// `None` when the caller already holds the current one.
    pub participant_token: Option<String>,
}

/// Who is asking to change a participant, and how strictly the hub checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim<'a> {
    /// The bearer token the caller sent, if any.
    pub token: Option<&'a str>,
    /// Strict (the default hub): tokens are checked. `--compat` turns this off for clients that
    /// predate participant tokens.
    pub strict: bool,
}

/// What one sweep changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub went_offline: usize,
    pub purged: usize,
    pub rooms_expired: usize,
    /// (room code, participant id) of each participant removed.
    pub purged_ids: Vec<(String, String)>,
    /// Codes of the rooms that expired.
    pub expired_codes: Vec<String>,
    /// Ids bound from a previous run (`--state`) freed by the retention rule.
    pub unbound: usize,
}

fn random_token(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    format!("{prefix}{}", hex::encode(buf))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// True when `token` hashes to `digest` (constant time); an empty digest matches nothing.
fn digest_matches(token: &str, digest: &str) -> bool {
    !digest.is_empty() && bool::from(sha256_hex(token).as_bytes().ct_eq(digest.as_bytes()))
}

impl Registry {
    pub fn new(bus: EventBus, rules: HealthRules, rooms: Vec<StoredRoom>) -> Self {
        let now = now_ms();
        let rooms = rooms.into_iter().map(|stored| (stored.code.clone(), RoomRecord::new(stored, now))).collect();
        Registry {
            inner: Arc::new(Inner {
                state: Mutex::new(State { rooms, ..State::default() }),
                bus,
                rules,
                queue_depth: AtomicUsize::new(256),
                policy: std::sync::atomic::AtomicU8::new(0),
                tunnel_token_ttl_ms: AtomicU64::new(TUNNEL_TOKEN_TTL.as_millis() as u64),
                max_rooms: AtomicUsize::new(usize::MAX),
                max_participants: AtomicUsize::new(usize::MAX),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every method leaves the state consistent before it can panic (they only panic on bugs),
        // so a poisoned lock is taken over rather than turning one bug into a dead hub.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    fn new_code(state: &State) -> String {
        let mut rng = rand::rng();
        loop {
            let code: String =
                (0..ROOM_CODE_LEN).map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char).collect();
            if !state.rooms.contains_key(&code) {
                return code;
            }
        }
    }

    /// Creates a room unless the hub already has its most rooms (`Capacity`).
    pub fn try_create_room(
        &self,
        name: String,
        defaults: Option<RuntimeConfig>,
        password_hash: Option<String>,
    ) -> Result<CreatedRoom, HubError> {
        let limit = self.inner.max_rooms.load(Ordering::Relaxed);
        let mut state = self.state();
        if state.rooms.len() >= limit {
            return Err(HubError::Capacity { what: format!("the hub already has {limit} rooms (--max-rooms)") });
        }
        Ok(self.create_room_locked(&mut state, name, defaults, password_hash))
    }

    /// Creates a room, whatever the limit. `password_hash` is already an argon2id PHC string.
    pub fn create_room(
        &self,
        name: String,
        defaults: Option<RuntimeConfig>,
        password_hash: Option<String>,
    ) -> CreatedRoom {
        let mut state = self.state();
        self.create_room_locked(&mut state, name, defaults, password_hash)
    }

    fn create_room_locked(
        &self,
        state: &mut State,
        name: String,
        defaults: Option<RuntimeConfig>,
        password_hash: Option<String>,
    ) -> CreatedRoom {
        let host_token = random_token("gh_", 24);
        let code = Self::new_code(state);
        let now = now_ms();
        let stored = StoredRoom {
            id: uuid::Uuid::new_v4().to_string(),
            code: code.clone(),
            name,
            host_id: uuid::Uuid::new_v4().to_string(),
            created_at: now,
            defaults,
            password_hash,
            host_token_sha256: sha256_hex(&host_token),
            participant_tokens: BTreeMap::new(),
        };
        let record = RoomRecord::new(stored, now);
        let summary = record.summary();
        let host_id = record.stored.host_id.clone();
        state.rooms.insert(code.clone(), record);
        self.inner.bus.publish(&code, EventKind::RoomCreated(summary.clone()));
        CreatedRoom { room: summary, host_id, host_token: Some(host_token) }
    }

    pub fn list_rooms(&self) -> Vec<RoomSummary> {
        let state = self.state();
        let mut rooms: Vec<_> = state.rooms.values().map(RoomRecord::summary).collect();
        rooms.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.code.cmp(&b.code)));
        rooms
    }

    pub fn room(&self, code: &str) -> Result<RoomSummary, HubError> {
        self.state().rooms.get(code).map(RoomRecord::summary).ok_or_else(|| not_found(code))
    }

    pub fn room_count(&self) -> usize {
        self.state().rooms.len()
    }

    /// The room's password hash (`None` for an open room), to verify off the lock.
    pub fn password_hash(&self, code: &str) -> Result<Option<String>, HubError> {
        self.state().rooms.get(code).map(|r| r.stored.password_hash.clone()).ok_or_else(|| not_found(code))
    }

    /// The room's defaults with `instructions`, for the inference plane.
    pub fn room_defaults(&self, code: &str) -> Result<Option<RuntimeConfig>, HubError> {
        self.state().rooms.get(code).map(|r| r.stored.defaults.clone()).ok_or_else(|| not_found(code))
    }

    /// True when `token` is room `code`'s host token (constant time).
    pub fn holds_host_token(&self, code: &str, token: Option<&str>) -> bool {
        self.state().rooms.get(code).is_some_and(|room| room.is_host_token(token))
    }

    /// Deletes a room if `host_token` is its host token: everyone in it is told they left, and its
    /// event streams end.
    pub fn delete_room(&self, code: &str, host_token: Option<&str>) -> Result<(), HubError> {
        let mut state = self.state();
        let room = state.rooms.get(code).ok_or_else(|| not_found(code))?;
        let token = host_token.ok_or(HubError::HostTokenRequired)?;
        let given = sha256_hex(token);
        if !bool::from(given.as_bytes().ct_eq(room.stored.host_token_sha256.as_bytes())) {
            return Err(HubError::HostTokenInvalid);
        }
        if let Some(room) = state.rooms.remove(code) {
            self.close_room_locked(&mut state, room);
        }
        Ok(())
    }

    fn close_room_locked(&self, state: &mut State, room: RoomRecord) {
        let code = room.stored.code.clone();
        for id in room.participants.keys() {
            self.inner.bus.publish(&code, EventKind::ParticipantLeft { participant_id: id.clone() });
        }
        state.tunnel_grants.retain(|_, g| g.room_code != code);
        // Dropping the waiters' senders fails their requests at once.
        state.waiters.remove(&code);
        state.turns.remove(&code);
        self.inner.bus.publish(&code, EventKind::RoomClosed);
    }

    /// Registers or updates a participant without checking tokens (compat rules).
    pub fn upsert(&self, code: &str, id: &str, reg: Registration, kind: ConnectionKind) -> Result<Upserted, HubError> {
        self.upsert_as(code, id, reg, kind, Claim::default())
    }

    /// Registers or updates a participant. The caller has checked the password (or holds the
    /// participant's token, see [`Registry::proves_participant`]). A new participant gets a token.
    /// Under strict rules the token binds the id for as long as the hub knows it — online or
    /// offline, tunnel open or not, and across restarts with `--state` — so registering a known id
    /// again needs its token or the room's host token: without one `PARTICIPANT_CONFLICT`, with a
    /// wrong one `INVALID_PARTICIPANT_TOKEN`. The host token makes the caller the id's new owner,
    /// with a new token. Under compat rules anyone may replace anyone.
    pub fn upsert_as(
        &self,
        code: &str,
        id: &str,
        reg: Registration,
        kind: ConnectionKind,
        claim: Claim<'_>,
    ) -> Result<Upserted, HubError> {
        let mut state = self.state();
        let room = state.rooms.get_mut(code).ok_or_else(|| not_found(code))?;
        let now = now_ms();
        let room_id = room.stored.id.clone();
        let created = !room.participants.contains_key(id);
        let limit = self.inner.max_participants.load(Ordering::Relaxed);
        if created && room.participants.len() >= limit {
            return Err(HubError::Capacity {
                what: format!("room {code} already has {limit} participants (--max-participants)"),
            });
        }
        let mut participant_token = None;
        let mut host_takeover = false;
        if claim.strict && room.proves(id, claim.token) == Some(false) {
            host_takeover = true;
            if !room.is_host_token(claim.token) {
                return Err(match claim.token {
                    None => HubError::ParticipantConflict { id: id.into() },
                    Some(_) => HubError::ParticipantTokenInvalid,
                });
            }
            // The host takes the id over: whoever held it loses it.
            if let Some(existing) = room.participants.get_mut(id) {
                participant_token = Some(existing.issue_token());
            }
        }
        if let Some(existing) = room.participants.get_mut(id) {
            if !claim.strict && existing.token_sha256.is_empty() {
                participant_token = Some(existing.issue_token());
            }
        }
        // A bound id that comes back keeps the token it was bound to (its owner still holds it),
        // unless the host took it over.
        let rebound = room.bound.remove(id).filter(|_| claim.strict && !host_takeover);
        let record = match room.participants.get_mut(id) {
            Some(existing) => {
                let p = &mut existing.public;
                p.nickname = reg.nickname;
                p.model = reg.model;
                p.endpoint = reg.endpoint;
                p.specs = reg.specs;
                p.config = reg.config.public();
                if let Some(c) = reg.capabilities {
                    p.capabilities = c;
                }
                if let Some(m) = reg.max_concurrency {
                    p.max_concurrency = m;
                }
                if let Some(l) = reg.loaded_models {
                    p.loaded_models = l;
                }
                // What the provider tells of the model it shares now (the model may have changed).
                p.model_details = reg.model_details;
                if p.connection.kind != kind {
                    p.connection = fresh_connection(kind);
                }
                // A registration comes after its session found the provider answering: whatever
                // paused it is over. Routing still waits for its tunnel.
                p.paused_reason = None;
                p.last_seen = now;
                p.updated_at = now;
                existing.paused = None;
                existing.tunnel_lost = false;
                existing.public.status = existing.live_status();
                existing.config = reg.config;
                existing.reach = reg.reach;
                existing.offline_since = None;
                existing.parse_endpoint();
                existing.refresh();
                existing.clone()
            }
            None => {
                let mut record = ParticipantRecord::new(
                    Participant {
                        id: id.to_string(),
                        nickname: reg.nickname,
                        model: reg.model,
                        endpoint: reg.endpoint,
                        specs: reg.specs,
                        config: reg.config.public(),
                        capabilities: reg.capabilities.unwrap_or_default(),
                        connection: fresh_connection(kind),
                        status: ParticipantStatus::Online,
                        joined_at: now,
                        last_seen: now,
                        updated_at: now,
                        max_concurrency: reg.max_concurrency.unwrap_or(1),
                        loaded_models: reg.loaded_models.unwrap_or_default(),
                        paused_reason: None,
                        model_details: reg.model_details,
                    },
                    reg.config,
                );
                record.reach = reg.reach;
                match rebound {
                    Some(binding) => record.token_sha256 = binding.token_sha256,
                    None => participant_token = Some(record.issue_token()),
                }
                room.participants.insert(id.to_string(), record.clone());
                room.empty_since = None;
                record
            }
        };
        let participant = record.public;
        let kind = if created {
            EventKind::ParticipantJoined(participant.clone())
        } else {
            EventKind::ParticipantUpdated(participant.clone())
        };
        self.inner.bus.publish(code, kind);
        self.dispatch_locked(&mut state, code);
        Ok(Upserted { participant, created, room_id, participant_token })
    }

    /// Records a heartbeat (as the seed has it, an empty one needs no token); an offline
    /// participant comes back online.
    pub fn heartbeat(
        &self,
        code: &str,
        id: &str,
        loaded_models: Option<Vec<LoadedModel>>,
    ) -> Result<HeartbeatResult, HubError> {
        self.heartbeat_as(code, id, loaded_models, Claim::default())
    }

    /// Records a heartbeat that may carry news about the loaded models (see [`Registry::heartbeat_news`]).
    pub fn heartbeat_as(
        &self,
        code: &str,
        id: &str,
        loaded_models: Option<Vec<LoadedModel>>,
        claim: Claim<'_>,
    ) -> Result<HeartbeatResult, HubError> {
        self.heartbeat_news(code, id, HeartbeatNews { loaded_models, ..HeartbeatNews::default() }, claim)
    }

    /// Records a heartbeat. One that carries news about the participant (its loaded models, a
    /// pause or its end) changes what the room routes on, so under strict rules it needs the
    /// participant's token. An offline participant comes back, unless it went offline because its
    /// tunnel closed: only a registration or a new tunnel brings that one back.
    pub fn heartbeat_news(
        &self,
        code: &str,
        id: &str,
        news: HeartbeatNews,
        claim: Claim<'_>,
    ) -> Result<HeartbeatResult, HubError> {
        let mut state = self.state();
        let room = state.rooms.get_mut(code).ok_or_else(|| not_found(code))?;
        let record = room.participants.get_mut(id).ok_or_else(|| HubError::ParticipantNotFound { id: id.into() })?;
        if claim.strict && !news.is_empty() && !record.token_matches(claim.token) {
            return Err(match claim.token {
                None => HubError::ParticipantTokenRequired,
                Some(_) => HubError::ParticipantTokenInvalid,
            });
        }
        let now = now_ms();
        record.public.last_seen = now;
        let mut changed = false;
        if let Some(paused) = news.paused {
            let reason = paused.then(|| news.pause_reason.unwrap_or(PauseReason::Provider));
            if reason != record.paused {
                record.paused = reason;
                record.public.paused_reason = reason.map(|r| r.describe().to_string());
                if record.public.status != ParticipantStatus::Offline {
                    record.public.status = record.live_status();
                }
                changed = true;
            }
        }
        if record.public.status == ParticipantStatus::Offline && !record.tunnel_lost {
            record.public.status = record.live_status();
            record.offline_since = None;
            changed = true;
        }
        let p = &mut record.public;
        if let Some(models) = news.loaded_models {
            if models != p.loaded_models {
                p.loaded_models = models;
                changed = true;
            }
        }
        let result = HeartbeatResult { success: true, status: p.status, last_seen: now };
        if changed {
            p.updated_at = now;
        }
        record.refresh();
        if changed {
            let public = record.public.clone();
            self.inner.bus.publish(code, EventKind::ParticipantUpdated(public));
            self.dispatch_locked(&mut state, code);
        }
        Ok(result)
    }

    /// Removes a participant (it left), without checking tokens.
    pub fn leave(&self, code: &str, id: &str) -> Result<(), HubError> {
        self.leave_as(code, id, Claim::default())
    }

    /// Removes a participant. Under strict rules the claim must carry the participant's token or
    /// the room's host token (the host may remove anyone from its room).
    pub fn leave_as(&self, code: &str, id: &str, claim: Claim<'_>) -> Result<(), HubError> {
        let mut state = self.state();
        let room = state.rooms.get_mut(code).ok_or_else(|| not_found(code))?;
        let record = room.participants.get(id).ok_or_else(|| HubError::ParticipantNotFound { id: id.into() })?;
        if claim.strict && !record.token_matches(claim.token) && !room.is_host_token(claim.token) {
            return Err(match claim.token {
                None => HubError::ParticipantTokenRequired,
                Some(_) => HubError::ParticipantTokenInvalid,
            });
        }
        room.participants.shift_remove(id).ok_or_else(|| HubError::ParticipantNotFound { id: id.into() })?;
        if room.participants.is_empty() {
            room.empty_since = Some(now_ms());
        }
        state.tunnel_grants.retain(|_, g| !(g.room_code == code && g.participant_id == id));
        self.inner.bus.publish(code, EventKind::ParticipantLeft { participant_id: id.into() });
        self.dispatch_locked(&mut state, code);
        Ok(())
    }

    pub fn participant(&self, code: &str, id: &str) -> Result<ParticipantRecord, HubError> {
        let state = self.state();
        let room = state.rooms.get(code).ok_or_else(|| not_found(code))?;
        room.participants.get(id).cloned().ok_or_else(|| HubError::ParticipantNotFound { id: id.into() })
    }

    pub fn participants(&self, code: &str) -> Result<Vec<Participant>, HubError> {
        let state = self.state();
        let room = state.rooms.get(code).ok_or_else(|| not_found(code))?;
        Ok(room.participants.values().map(|r| r.public.clone()).collect())
    }

    /// The room's participants as their cached JSON objects, in listing order: what a listing
    /// joins into its array (see [`crate::hub::json_list::JsonList`]), without copying any of them.
    pub fn participant_pieces(&self, code: &str) -> Result<Vec<bytes::Bytes>, HubError> {
        let state = self.state();
        let room = state.rooms.get(code).ok_or_else(|| not_found(code))?;
        Ok(room.participants.values().map(|r| r.json.clone()).collect())
    }

    /// The room's participants as a JSON array. Only the cached encodings are copied under the
    /// lock (reference counts, not bytes), and the array is assembled after it is released, so a
    /// room of 10,000 lists in a few milliseconds without holding up anyone else.
    pub fn participants_json(&self, code: &str) -> Result<Vec<u8>, HubError> {
        let pieces = self.participant_pieces(code)?;
        let mut out = Vec::with_capacity(2 + pieces.iter().map(|p| p.len() + 1).sum::<usize>());
        out.push(b'[');
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(piece);
        }
        out.push(b']');
        Ok(out)
    }

    /// Whether `token` proves this participant id (its token, or the one a bound id is bound to):
    /// a share that re-registers with it needs no password check.
    pub fn proves_participant(&self, code: &str, id: &str, token: Option<&str>) -> bool {
        let state = self.state();
        state.rooms.get(code).and_then(|room| room.proves(id, token)).unwrap_or(false)
    }

    /// A single-use token that opens one tunnel for this participant within [`TUNNEL_TOKEN_TTL`].
    /// `first` says the registration that asked for it also handed the caller the participant's
    /// token (a new participant, or a new owner): that answer went to the opener alone, so the
    /// tunnel token proves the opener by itself, as clients that predate participant tokens expect.
    pub fn issue_tunnel_token(&self, code: &str, id: &str, first: bool) -> String {
        let token = random_token("gt_", 24);
        let grant = TunnelGrant {
            room_code: code.into(),
            participant_id: id.into(),
            expires_at: now_ms() + self.inner.tunnel_token_ttl_ms.load(Ordering::Relaxed),
            first,
        };
        self.state().tunnel_grants.insert(token.clone(), grant);
        token
    }

    /// Spends a tunnel token for this participant. It must have been issued for it, be unused and
    /// unexpired (`TunnelTokenInvalid`). Under strict rules a tunnel after the first one of a
    /// registration also needs the participant's token; a claim that lacks it is refused without
    /// spending the tunnel token.
    pub fn redeem_tunnel_token(&self, code: &str, id: &str, token: &str, claim: Claim<'_>) -> Result<(), HubError> {
        let mut state = self.state();
        let first = match state.tunnel_grants.get(token) {
            Some(g) if g.room_code == code && g.participant_id == id => {
                if g.expires_at <= now_ms() {
                    state.tunnel_grants.remove(token);
                    return Err(HubError::TunnelTokenInvalid);
                }
                g.first
            }
            _ => return Err(HubError::TunnelTokenInvalid),
        };
        if claim.strict && !first {
            let room = state.rooms.get(code).ok_or_else(|| not_found(code))?;
            let record = room.participants.get(id).ok_or_else(|| HubError::ParticipantNotFound { id: id.into() })?;
            if !record.token_matches(claim.token) {
                return Err(match claim.token {
                    None => HubError::ParticipantTokenRequired,
                    Some(_) => HubError::ParticipantTokenInvalid,
                });
            }
        }
        state.tunnel_grants.remove(token);
        Ok(())
    }

    /// One pass of the health rules at time `now` (ms): silent participants go offline (one event),
    /// long-offline ones are removed, and empty rooms past their TTL expire.
    pub fn sweep(&self, now: u64) -> SweepReport {
        let rules = &self.inner.rules;
        let timeout = rules.participant_timeout.as_millis() as u64;
        let retention = rules.offline_retention.as_millis() as u64;
        let mut report = SweepReport::default();
        let mut state = self.state();
        let mut expired = Vec::new();
        for (code, room) in state.rooms.iter_mut() {
            let mut purge = Vec::new();
            for (id, record) in room.participants.iter_mut() {
                let p = &mut record.public;
                match record.offline_since {
                    None if now.saturating_sub(p.last_seen) >= timeout => {
                        p.status = ParticipantStatus::Offline;
                        p.updated_at = now;
                        record.offline_since = Some(now);
                        record.refresh();
                        report.went_offline += 1;
                        self.inner.bus.publish(code, EventKind::ParticipantOffline { participant_id: id.clone() });
                    }
                    Some(since) if now.saturating_sub(since) >= retention => purge.push(id.clone()),
                    _ => {}
                }
            }
            let before = room.bound.len();
            room.bound.retain(|_, b| now.saturating_sub(b.since) < retention);
            report.unbound += before - room.bound.len();
            for id in purge {
                room.participants.shift_remove(&id);
                report.purged += 1;
                report.purged_ids.push((code.clone(), id.clone()));
                self.inner.bus.publish(code, EventKind::ParticipantLeft { participant_id: id });
            }
            if room.participants.is_empty() {
                let since = *room.empty_since.get_or_insert(now);
                if let Some(ttl) = rules.room_ttl {
                    if now.saturating_sub(since) >= ttl.as_millis() as u64 {
                        expired.push(code.clone());
                    }
                }
            } else {
                room.empty_since = None;
            }
        }
        for code in expired {
            if let Some(room) = state.rooms.remove(&code) {
                report.rooms_expired += 1;
                report.expired_codes.push(code.clone());
                self.close_room_locked(&mut state, room);
            }
        }
        state.tunnel_grants.retain(|_, g| g.expires_at > now);
        if report.went_offline + report.purged > 0 {
            let codes: Vec<String> = state.waiters.keys().cloned().collect();
            for code in codes {
                self.dispatch_locked(&mut state, &code);
            }
        }
        report
    }

    /// Every room as `--state` keeps it.
    pub fn stored_rooms(&self) -> Vec<StoredRoom> {
        let state = self.state();
        let mut rooms: Vec<_> = state
            .rooms
            .values()
            .map(|r| {
                let mut stored = r.stored.clone();
                stored.participant_tokens = r
                    .bound
                    .iter()
                    .map(|(id, b)| (id.clone(), b.token_sha256.clone()))
                    .chain(
                        r.participants
                            .iter()
                            .filter(|(_, p)| !p.token_sha256.is_empty())
                            .map(|(id, p)| (id.clone(), p.token_sha256.clone())),
                    )
                    .collect();
                stored
            })
            .collect();
        rooms.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.code.cmp(&b.code)));
        rooms
    }
}

impl Registry {
    /// How long tunnel bootstrap tokens stay valid (default 60 s).
    pub fn set_tunnel_token_ttl(&self, ttl: Duration) {
        self.inner.tunnel_token_ttl_ms.store(ttl.as_millis() as u64, Ordering::Relaxed);
    }

    /// Most rooms on the hub, and most participants per room.
    pub fn set_limits(&self, max_rooms: usize, max_participants: usize) {
        self.inner.max_rooms.store(max_rooms, Ordering::Relaxed);
        self.inner.max_participants.store(max_participants, Ordering::Relaxed);
    }

    /// How many requests may wait per room (default 256).
    pub fn set_queue_depth(&self, depth: usize) {
        self.inner.queue_depth.store(depth, Ordering::Relaxed);
    }

    /// A tunnel opened or closed for a participant: updates `connection` and tells the room. False
    /// when the room has no such participant (it left, or was removed, while its tunnel opened).
    ///
    /// A tunnel participant has no other way to serve, so the moment its tunnel closes it is
    /// `offline` (`participant.offline`), not left `online` until its heartbeats run out; the
    /// retention rule counts from there. Its tunnel opening again brings it back.
    pub fn set_tunnel(&self, code: &str, id: &str, connected: bool) -> bool {
        let mut state = self.state();
        let Some(r) = state.rooms.get_mut(code).and_then(|room| room.participants.get_mut(id)) else { return false };
        let now = now_ms();
        r.public.connection.connected = connected;
        r.public.updated_at = now;
        let kind = if connected {
            r.public.connection.last_tunnel_seen_at = Some(now);
            r.tunnel_lost = false;
            if r.public.status == ParticipantStatus::Offline {
                r.public.status = r.live_status();
                r.offline_since = None;
            }
            EventKind::ParticipantUpdated(r.public.clone())
        } else if r.public.connection.kind == ConnectionKind::Tunnel {
            r.tunnel_lost = true;
            if r.public.status == ParticipantStatus::Offline {
                EventKind::ParticipantUpdated(r.public.clone())
            } else {
                r.public.status = ParticipantStatus::Offline;
                r.offline_since = Some(now);
                EventKind::ParticipantOffline { participant_id: id.to_string() }
            }
        } else {
            EventKind::ParticipantUpdated(r.public.clone())
        };
        r.refresh();
        self.inner.bus.publish(code, kind);
        self.dispatch_locked(&mut state, code);
        true
    }

    /// The tunnel was heard from (a ping): refreshes `lastTunnelSeenAt` without an event.
    pub fn touch_tunnel(&self, code: &str, id: &str) {
        let mut state = self.state();
        if let Some(r) = state.rooms.get_mut(code).and_then(|room| room.participants.get_mut(id)) {
            r.public.connection.last_tunnel_seen_at = Some(now_ms());
            r.refresh();
        }
    }

    /// Updates a participant's capabilities (e.g. the proxy found `/v1/responses` missing).
    pub fn set_capabilities(&self, code: &str, id: &str, capabilities: Capabilities) {
        let mut state = self.state();
        if let Some(r) = state.rooms.get_mut(code).and_then(|room| room.participants.get_mut(id)) {
            r.public.capabilities = capabilities;
            r.refresh();
        }
    }

    /// Sets what is known of one endpoint of a participant's provider, leaving the others as they
    /// are (two requests learning different endpoints at once both count). Waiters that can no
    /// longer be served by anyone are answered at once.
    pub fn learn_capability(&self, code: &str, id: &str, endpoint: Endpoint, capability: Capability) {
        let mut state = self.state();
        if let Some(r) = state.rooms.get_mut(code).and_then(|room| room.participants.get_mut(id)) {
            r.public.capabilities = r.public.capabilities.with(endpoint, capability);
            r.refresh();
        }
        self.dispatch_locked(&mut state, code);
    }
}

fn placeholder_participant(id: &str) -> Participant {
    Participant {
        id: id.to_string(),
        nickname: String::new(),
        model: String::new(),
        endpoint: String::new(),
        specs: MachineSpecs::default(),
        config: RuntimeConfig::default().public(),
        capabilities: Capabilities::default(),
        connection: Connection { kind: ConnectionKind::Direct, connected: false, last_tunnel_seen_at: None },
        status: ParticipantStatus::Offline,
        joined_at: 0,
        last_seen: 0,
        updated_at: 0,
        max_concurrency: 1,
        loaded_models: Vec::new(),
        paused_reason: None,
        model_details: None,
    }
}

fn fresh_connection(kind: ConnectionKind) -> Connection {
    // A direct participant is reached over HTTP whenever asked; a tunnel participant is reachable
    // only once its tunnel is open.
    Connection { kind, connected: kind == ConnectionKind::Direct, last_tunnel_seen_at: None }
}

fn not_found(code: &str) -> HubError {
    HubError::RoomNotFound { code: code.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(timeout_ms: u64, retention_ms: u64, ttl_ms: Option<u64>) -> Registry {
        Registry::new(
            EventBus::new(64, 64),
            HealthRules {
                participant_timeout: Duration::from_millis(timeout_ms),
                offline_retention: Duration::from_millis(retention_ms),
                room_ttl: ttl_ms.map(Duration::from_millis),
            },
            vec![],
        )
    }

    fn reg(nick: &str) -> Registration {
        Registration {
            nickname: nick.into(),
            model: "llama3".into(),
            endpoint: "http://localhost:11434".into(),
            ..Registration::default()
        }
    }

    const STRICT: Claim<'static> = Claim { token: None, strict: true };

    #[test]
    fn participant_tokens_guard_a_participant_tunnels_and_leaving() {
        let r = registry(30_000, 60_000, None);
        let created = r.create_room("x".into(), None, None);
        let code = created.room.code;
        let first = r.upsert_as(&code, "w1", reg("A"), ConnectionKind::Tunnel, STRICT).unwrap();
        let token = first.participant_token.expect("a new participant gets a token");
        assert!(token.starts_with("gp_"));
        // Replacing needs the token; with it, the token is kept (none issued).
        assert!(r.set_tunnel(&code, "w1", true));
        assert!(!r.set_tunnel(&code, "nobody", true), "no participant, no tunnel to mark");
        let err = r.upsert_as(&code, "w1", reg("B"), ConnectionKind::Tunnel, STRICT).err();
        assert!(matches!(err, Some(HubError::ParticipantConflict { .. })), "{err:?}");
        let wrong = Claim { token: Some("gp_wrong"), strict: true };
        let err = r.upsert_as(&code, "w1", reg("B"), ConnectionKind::Tunnel, wrong).err();
        assert!(matches!(err, Some(HubError::ParticipantTokenInvalid)), "{err:?}");
        let owner = Claim { token: Some(&token), strict: true };
        let again = r.upsert_as(&code, "w1", reg("B"), ConnectionKind::Tunnel, owner).unwrap();
        assert!(again.participant_token.is_none());
        assert!(r.proves_participant(&code, "w1", Some(&token)));
        assert!(!r.proves_participant(&code, "w1", Some("gp_wrong")) && !r.proves_participant(&code, "w1", None));
        // The first tunnel of a registration that handed out the token needs nothing more; a
        // later one needs the token, and a refused claim does not spend the tunnel token.
        let t = r.issue_tunnel_token(&code, "w1", true);
        assert!(r.redeem_tunnel_token(&code, "w1", &t, STRICT).is_ok());
        assert!(matches!(r.redeem_tunnel_token(&code, "w1", &t, owner), Err(HubError::TunnelTokenInvalid)));
        let t = r.issue_tunnel_token(&code, "w1", false);
        assert!(matches!(r.redeem_tunnel_token(&code, "w1", &t, STRICT), Err(HubError::ParticipantTokenRequired)));
        assert!(matches!(r.redeem_tunnel_token(&code, "w1", &t, wrong), Err(HubError::ParticipantTokenInvalid)));
        assert!(matches!(r.redeem_tunnel_token(&code, "w2", &t, owner), Err(HubError::TunnelTokenInvalid)));
        assert!(r.redeem_tunnel_token(&code, "w1", &t, owner).is_ok());
        // A heartbeat with news needs the token; an empty one does not.
        let loaded = Some(vec![LoadedModel { name: "m".into(), ..Default::default() }]);
        let err = r.heartbeat_as(&code, "w1", loaded.clone(), STRICT).err();
        assert!(matches!(err, Some(HubError::ParticipantTokenRequired)), "{err:?}");
        assert!(r.heartbeat_as(&code, "w1", loaded.clone(), wrong).is_err());
        assert!(r.heartbeat_as(&code, "w1", None, STRICT).is_ok());
        assert!(r.heartbeat_as(&code, "w1", loaded, owner).is_ok());
        assert_eq!(r.participant(&code, "w1").unwrap().public.loaded_models.len(), 1);
        // Leaving: the token, or the room's host token.
        assert!(matches!(r.leave_as(&code, "w1", STRICT), Err(HubError::ParticipantTokenRequired)));
        assert!(matches!(r.leave_as(&code, "w1", wrong), Err(HubError::ParticipantTokenInvalid)));
        let host = created.host_token.unwrap();
        assert!(r.leave_as(&code, "w1", Claim { token: Some(&host), strict: true }).is_ok());
        // Compat: nothing is checked.
        r.upsert_as(&code, "w2", reg("C"), ConnectionKind::Tunnel, STRICT).unwrap();
        r.set_tunnel(&code, "w2", true);
        let compat = Claim::default();
        assert!(r.upsert_as(&code, "w2", reg("D"), ConnectionKind::Tunnel, compat).is_ok());
        let t = r.issue_tunnel_token(&code, "w2", false);
        assert!(r.redeem_tunnel_token(&code, "w2", &t, compat).is_ok());
        assert!(r.leave_as(&code, "w2", compat).is_ok());
    }

    /// The reconnect hijack: a participant whose tunnel closed (or that went offline) used to be
    /// free for anyone to register again without its token.
    #[test]
    fn a_participant_whose_tunnel_closed_or_that_went_offline_stays_bound_to_its_token() {
        let r = registry(100, 60_000, None);
        let created = r.create_room("x".into(), None, None);
        let code = created.room.code;
        let token = r.upsert_as(&code, "w1", reg("A"), ConnectionKind::Tunnel, STRICT).unwrap().participant_token;
        let token = token.unwrap();
        r.set_tunnel(&code, "w1", true);
        r.set_tunnel(&code, "w1", false);
        let err = r.upsert_as(&code, "w1", reg("B"), ConnectionKind::Tunnel, STRICT).err();
        assert!(matches!(err, Some(HubError::ParticipantConflict { .. })), "{err:?}");
        // Offline too; and a direct participant likewise.
        r.upsert_as(&code, "d1", reg("D"), ConnectionKind::Direct, STRICT).unwrap();
        let t = r.participant(&code, "d1").unwrap().public.last_seen;
        r.sweep(t + 150);
        assert_eq!(r.participant(&code, "w1").unwrap().public.status, ParticipantStatus::Offline);
        for id in ["w1", "d1"] {
            let err = r.upsert_as(&code, id, reg("E"), ConnectionKind::Direct, STRICT).err();
            assert!(matches!(err, Some(HubError::ParticipantConflict { .. })), "{id}: {err:?}");
        }
        assert_eq!(r.participant(&code, "w1").unwrap().public.nickname, "A", "nothing changed");
        // Its owner comes back with the token; the host may take the id over (new token).
        let owner = Claim { token: Some(&token), strict: true };
        assert!(r.upsert_as(&code, "w1", reg("A"), ConnectionKind::Tunnel, owner).unwrap().participant_token.is_none());
        let host = created.host_token.unwrap();
        let host = Claim { token: Some(&host), strict: true };
        let new = r.upsert_as(&code, "d1", reg("H"), ConnectionKind::Direct, host).unwrap().participant_token;
        assert!(new.is_some());
    }

    /// With `--state`, a restarted hub still binds the ids it knew: only their tokens register
    /// them again, until the retention rule frees them.
    #[test]
    fn ids_known_before_a_restart_stay_bound_until_retention_frees_them() {
        let r = registry(30_000, 1_000, None);
        let code = r.create_room("x".into(), None, None).room.code;
        let token = r.upsert_as(&code, "w1", reg("A"), ConnectionKind::Tunnel, STRICT).unwrap().participant_token;
        let token = token.unwrap();
        let stored = r.stored_rooms();
        assert_eq!(stored[0].participant_tokens.len(), 1);
        assert!(!serde_json::to_string(&stored).unwrap().contains(&token), "only the digest is kept");
        let restarted = Registry::new(
            EventBus::new(64, 64),
            HealthRules {
                participant_timeout: Duration::from_secs(30),
                offline_retention: Duration::from_secs(1),
                room_ttl: None,
            },
            stored,
        );
        assert!(restarted.participants(&code).unwrap().is_empty(), "participants re-register after a restart");
        let err = restarted.upsert_as(&code, "w1", reg("X"), ConnectionKind::Tunnel, STRICT).err();
        assert!(matches!(err, Some(HubError::ParticipantConflict { .. })), "{err:?}");
        let wrong = Claim { token: Some("gp_nope"), strict: true };
        assert!(restarted.upsert_as(&code, "w1", reg("X"), ConnectionKind::Tunnel, wrong).is_err());
        assert!(restarted.upsert_as(&code, "w2", reg("Y"), ConnectionKind::Tunnel, STRICT).is_ok(), "other ids");
        let owner = Claim { token: Some(&token), strict: true };
        assert!(restarted.proves_participant(&code, "w1", Some(&token)));
        let back = restarted.upsert_as(&code, "w1", reg("A"), ConnectionKind::Tunnel, owner).unwrap();
        assert!(back.participant_token.is_none(), "the owner keeps its token");
        assert!(restarted.leave_as(&code, "w1", owner).is_ok());
        // Bound but never back: freed once the retention has passed since the restart.
        let again = Registry::new(
            EventBus::new(64, 64),
            HealthRules {
                participant_timeout: Duration::from_secs(30),
                offline_retention: Duration::from_secs(1),
                room_ttl: None,
            },
            r.stored_rooms(),
        );
        assert_eq!(again.sweep(now_ms() + 2_000).unbound, 1);
        assert!(again
            .upsert_as(&code, "w1", reg("Z"), ConnectionKind::Tunnel, STRICT)
            .unwrap()
            .participant_token
            .is_some());
    }

    /// Issue 12, false statement 3: a participant killed with `kill -9` stayed "online" (and was
    /// routed to) for ~26 s, until its heartbeats ran out.
    #[test]
    fn a_tunnel_that_closes_takes_its_participant_offline_at_once_until_it_reopens() {
        let r = registry(30_000, 1_000, None);
        let code = r.create_room("x".into(), None, None).room.code;
        r.upsert(&code, "w1", reg("A"), ConnectionKind::Tunnel).unwrap();
        r.set_tunnel(&code, "w1", true);
        assert!(r.try_acquire(&code, &Selector::Any, &[]).is_some());
        let mut events = r.bus().subscribe();
        r.set_tunnel(&code, "w1", false);
        let closed = r.participant(&code, "w1").unwrap();
        assert_eq!(closed.public.status, ParticipantStatus::Offline);
        assert!(!closed.public.connection.connected);
        assert!(matches!(events.try_recv().unwrap().kind, EventKind::ParticipantOffline { .. }));
        assert!(r.try_acquire(&code, &Selector::Any, &[]).is_none());
        assert!(matches!(
            r.acquire(&code, &Selector::Named("w1".into())),
            Err(HubError::ParticipantUnavailable { .. })
        ));
        // A heartbeat from a session that has not noticed yet does not make it routable again.
        assert_eq!(r.heartbeat(&code, "w1", None).unwrap().status, ParticipantStatus::Offline);
        // Its tunnel opening again does.
        r.set_tunnel(&code, "w1", true);
        assert_eq!(r.participant(&code, "w1").unwrap().public.status, ParticipantStatus::Online);
        assert!(matches!(events.try_recv().unwrap().kind, EventKind::ParticipantUpdated(_)));
        // And a closed tunnel left so is the retention rule's, counted from the close.
        r.set_tunnel(&code, "w1", false);
        assert_eq!(r.sweep(now_ms() + 1_500).purged, 1);
        // A direct participant has no tunnel to lose.
        r.upsert(&code, "d1", reg("D"), ConnectionKind::Direct).unwrap();
        r.set_tunnel(&code, "d1", false);
        assert_eq!(r.participant(&code, "d1").unwrap().public.status, ParticipantStatus::Online);
        assert_cache_fresh(&r, &code);
    }

    #[test]
    fn routing_passes_by_participants_known_to_lack_the_endpoint() {
        let r = registry(30_000, 60_000, None);
        let code = r.create_room("x".into(), None, None).room.code;
        r.upsert(&code, "chat", reg("A"), ConnectionKind::Direct).unwrap();
        r.upsert(&code, "full", reg("B"), ConnectionKind::Direct).unwrap();
        let embeddings = Need { endpoint: Some(Endpoint::Embeddings), or_chat: false };
        let messages = Need { endpoint: Some(Endpoint::Messages), or_chat: true };
        r.learn_capability(&code, "chat", Endpoint::Embeddings, Capability::Unsupported);
        r.learn_capability(&code, "chat", Endpoint::Messages, Capability::Unsupported);
        assert_eq!(r.participant(&code, "chat").unwrap().public.capabilities.chat_completions, Capability::Unknown);
        for _ in 0..20 {
            let slot = r.try_acquire_for(&code, &Selector::Any, embeddings, &[]).unwrap();
            assert_eq!(slot.participant().public.id, "full");
        }
        // Named, it says it does not serve the endpoint; one the hub can translate it still takes.
        assert!(matches!(
            r.acquire_for(&code, &Selector::Named("chat".into()), embeddings),
            Err(HubError::NotServed { participant: Some(_), .. })
        ));
        assert!(r.try_acquire_for(&code, &Selector::Named("chat".into()), messages, &[]).is_some());
        // Nobody left: a clear answer, not "no participant".
        r.learn_capability(&code, "full", Endpoint::Embeddings, Capability::Unsupported);
        assert!(matches!(
            r.acquire_for(&code, &Selector::Model("llama3".into()), embeddings),
            Err(HubError::NotServed { participant: None, .. })
        ));
        assert!(matches!(
            r.acquire_for(&code, &Selector::Model("qwen".into()), embeddings),
            Err(HubError::NoParticipant)
        ));
        assert!(r.try_acquire_for(&code, &Selector::Any, Need::ANY, &[]).is_some(), "chat goes anywhere");
        assert_cache_fresh(&r, &code);
    }

    fn pause(paused: bool) -> HeartbeatNews {
        HeartbeatNews {
            paused: Some(paused),
            pause_reason: paused.then_some(PauseReason::Provider),
            ..Default::default()
        }
    }

    /// Issue 12, false statement 2: a share whose model server died still showed "Online" and took
    /// requests that all failed.
    #[test]
    fn a_paused_participant_is_not_routed_and_says_why_until_it_resumes() {
        let r = registry(100, 60_000, None);
        let code = r.create_room("x".into(), None, None).room.code;
        let token = r.upsert_as(&code, "w1", reg("A"), ConnectionKind::Tunnel, STRICT).unwrap().participant_token;
        let owner = Claim { token: token.as_deref(), strict: true };
        r.set_tunnel(&code, "w1", true);
        // Pausing changes what the room routes on: under strict rules only the owner may.
        let err = r.heartbeat_news(&code, "w1", pause(true), STRICT).err();
        assert!(matches!(err, Some(HubError::ParticipantTokenRequired)), "{err:?}");
        let mut events = r.bus().subscribe();
        assert_eq!(r.heartbeat_news(&code, "w1", pause(true), owner).unwrap().status, ParticipantStatus::Paused);
        let EventKind::ParticipantUpdated(public) = events.try_recv().unwrap().kind.clone() else {
            panic!("a pause is a participant.updated")
        };
        assert_eq!(
            (public.status, public.paused_reason.as_deref()),
            (ParticipantStatus::Paused, Some("model server stopped"))
        );
        assert_cache_fresh(&r, &code);
        assert!(r.try_acquire(&code, &Selector::Any, &[]).is_none());
        for selector in [Selector::Named("w1".into()), Selector::Model("llama3".into()), Selector::Any] {
            let err = r.acquire(&code, &selector).err();
            let Some(HubError::ParticipantPaused { id, reason }) = err else { panic!("{selector:?}: {err:?}") };
            assert_eq!((id.as_str(), reason.as_str()), ("w1", "model server stopped"));
        }
        // Another participant of the model takes the room's requests meanwhile.
        let t2 = r.upsert_as(&code, "w2", reg("B"), ConnectionKind::Tunnel, STRICT).unwrap().participant_token;
        r.set_tunnel(&code, "w2", true);
        let slot = r.try_acquire(&code, &Selector::Model("llama3".into()), &[]).unwrap();
        assert_eq!(slot.participant().public.id, "w2");
        drop(slot);
        // The same news twice is no news.
        while events.try_recv().is_ok() {}
        assert!(r.heartbeat_news(&code, "w1", pause(true), owner).is_ok());
        assert!(events.try_recv().is_err());
        // Offline and back: still paused.
        let t = r.participant(&code, "w1").unwrap().public.last_seen;
        r.heartbeat(&code, "w2", None).unwrap();
        r.sweep(t + 150);
        assert_eq!(r.participant(&code, "w1").unwrap().public.status, ParticipantStatus::Offline);
        assert_eq!(r.heartbeat(&code, "w1", None).unwrap().status, ParticipantStatus::Paused);
        // Resumed: routable again, the reason gone.
        assert_eq!(r.heartbeat_news(&code, "w1", pause(false), owner).unwrap().status, ParticipantStatus::Online);
        assert_eq!(r.participant(&code, "w1").unwrap().public.paused_reason, None);
        let slot = r.try_acquire(&code, &Selector::Named("w1".into()), &[]).unwrap();
        // Paused while busy: paused it stays when the request ends.
        r.heartbeat_news(&code, "w1", pause(true), owner).unwrap();
        drop(slot);
        assert_eq!(r.participant(&code, "w1").unwrap().public.status, ParticipantStatus::Paused);
        // A registration (its session found the provider answering) ends the pause.
        let again = r.upsert_as(&code, "w1", reg("A"), ConnectionKind::Tunnel, owner).unwrap();
        assert_eq!((again.participant.status, again.participant.paused_reason), (ParticipantStatus::Online, None));
        let _ = t2;
        assert_cache_fresh(&r, &code);
    }

    #[test]
    fn room_and_participant_caps() {
        let r = registry(30_000, 60_000, None);
        r.set_limits(1, 1);
        let code = r.try_create_room("x".into(), None, None).unwrap().room.code;
        assert!(matches!(r.try_create_room("y".into(), None, None), Err(HubError::Capacity { .. })));
        r.upsert(&code, "w1", reg("A"), ConnectionKind::Tunnel).unwrap();
        assert!(matches!(r.upsert(&code, "w2", reg("B"), ConnectionKind::Tunnel), Err(HubError::Capacity { .. })));
        assert!(r.upsert(&code, "w1", reg("A2"), ConnectionKind::Tunnel).is_ok(), "an update takes no new place");
    }

    /// Every operation that changes a participant must leave its cached JSON equal to a fresh
    /// encoding, or listings would show stale participants.
    fn assert_cache_fresh(r: &Registry, code: &str) {
        let listed: serde_json::Value = serde_json::from_slice(&r.participants_json(code).unwrap()).unwrap();
        let fresh = serde_json::to_value(r.participants(code).unwrap()).unwrap();
        assert_eq!(listed, fresh);
    }

    #[test]
    fn the_cached_listing_follows_every_change() {
        let r = registry(100, 200, None);
        let code = r.create_room("x".into(), None, None).room.code;
        r.upsert(&code, "w1", reg("A"), ConnectionKind::Tunnel).unwrap();
        r.upsert(&code, "w2", reg("B"), ConnectionKind::Direct).unwrap();
        assert_cache_fresh(&r, &code);
        r.upsert(&code, "w1", Registration { max_concurrency: Some(2), ..reg("A2") }, ConnectionKind::Tunnel).unwrap();
        assert_cache_fresh(&r, &code);
        r.set_tunnel(&code, "w1", true);
        assert_cache_fresh(&r, &code);
        r.touch_tunnel(&code, "w1");
        assert_cache_fresh(&r, &code);
        let slot = r.try_acquire(&code, &Selector::Named("w2".into()), &[]).unwrap();
        assert_eq!(r.participant(&code, "w2").unwrap().public.status, ParticipantStatus::Busy);
        assert_cache_fresh(&r, &code);
        drop(slot);
        assert_cache_fresh(&r, &code);
        r.set_capabilities(
            &code,
            "w1",
            Capabilities { open_responses: crate::protocol::Capability::Unsupported, ..Default::default() },
        );
        assert_cache_fresh(&r, &code);
        let t = r.participant(&code, "w2").unwrap().public.last_seen;
        r.sweep(t + 150);
        assert_eq!(r.participant(&code, "w2").unwrap().public.status, ParticipantStatus::Offline);
        assert_cache_fresh(&r, &code);
        r.heartbeat(&code, "w2", Some(vec![LoadedModel { name: "m".into(), ..Default::default() }])).unwrap();
        assert_cache_fresh(&r, &code);
        r.leave(&code, "w1").unwrap();
        assert_cache_fresh(&r, &code);
    }

    #[test]
    fn codes_are_unique_and_readable() {
        let r = registry(1000, 1000, None);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let c = r.create_room("x".into(), None, None).room.code;
            assert!(crate::protocol::is_room_code(&c));
            assert!(!c.contains(['0', 'O', '1', 'I']));
            assert!(seen.insert(c));
        }
    }

    #[test]
    fn upsert_creates_then_updates() {
        let r = registry(1000, 1000, None);
        let code = r.create_room("x".into(), None, None).room.code;
        assert!(r.upsert(&code, "w1", reg("A"), ConnectionKind::Tunnel).unwrap().created);
        let second = r.upsert(&code, "w1", reg("B"), ConnectionKind::Tunnel).unwrap();
        assert!(!second.created);
        assert_eq!(second.participant.nickname, "B");
        assert_eq!(r.participants(&code).unwrap().len(), 1);
    }

    #[test]
    fn sweep_marks_offline_once_then_purges() {
        let r = registry(100, 200, None);
        let code = r.create_room("x".into(), None, None).room.code;
        r.upsert(&code, "w1", reg("A"), ConnectionKind::Direct).unwrap();
        let joined = r.participant(&code, "w1").unwrap().public.last_seen;
        assert_eq!(r.sweep(joined + 50), SweepReport::default());
        assert_eq!(r.sweep(joined + 100).went_offline, 1);
        assert_eq!(r.sweep(joined + 150), SweepReport::default(), "offline is reported once");
        assert_eq!(r.sweep(joined + 300).purged, 1);
        assert!(r.participants(&code).unwrap().is_empty());
    }

    #[test]
    fn host_token_deletes_and_wrong_token_does_not() {
        let r = registry(1000, 1000, None);
        let created = r.create_room("x".into(), None, None);
        let code = created.room.code;
        assert!(matches!(r.delete_room(&code, None), Err(HubError::HostTokenRequired)));
        assert!(matches!(r.delete_room(&code, Some("gh_nope")), Err(HubError::HostTokenInvalid)));
        r.delete_room(&code, created.host_token.as_deref()).unwrap();
        assert!(r.room(&code).is_err());
    }

    #[test]
    fn empty_rooms_expire_after_ttl() {
        let r = registry(1000, 1000, Some(500));
        let created = r.create_room("x".into(), None, None);
        let now = created.room.created_at;
        assert_eq!(r.sweep(now + 100).rooms_expired, 0);
        assert_eq!(r.sweep(now + 600).rooms_expired, 1);
        assert_eq!(r.room_count(), 0);
    }

    #[test]
    fn tunnel_tokens_are_single_use_and_bound() {
        let r = registry(1000, 1000, None);
        let code = r.create_room("x".into(), None, None).room.code;
        let t = r.issue_tunnel_token(&code, "w1", true);
        assert!(r.redeem_tunnel_token(&code, "w2", &t, STRICT).is_err(), "bound to its participant");
        let t = r.issue_tunnel_token(&code, "w1", true);
        assert!(r.redeem_tunnel_token(&code, "w1", &t, STRICT).is_ok());
        assert!(r.redeem_tunnel_token(&code, "w1", &t, STRICT).is_err(), "single use");
    }
}
