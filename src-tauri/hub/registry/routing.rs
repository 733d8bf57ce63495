//! Routing inside a room: which participant a request wants ([`Selector`], [`Need`]), taking a
//! place there ([`Slot`]) or waiting in the room's queue ([`WaitTicket`]), and handing freed places
//! to waiters by turns between callers. The choice itself is `hub::scheduler`'s: this module builds
//! its candidates from the records, under the registry's lock, and keeps what it learns (each
//! participant's measured speed, the room's usual answer length).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{oneshot, watch};

use crate::hub::error::HubError;
use crate::hub::scheduler::{self, Ask, Candidate, Decision, Loaded, Policy, Rule, Speed};
use crate::protocol::events::{EventKind, RouteReason};
use crate::protocol::{now_ms, Capabilities, Endpoint, ParticipantStatus, PauseReason, RuntimeConfig};

/// Callers whose last turn a room remembers; older ones count as never served.
const MAX_REMEMBERED_TURNS: usize = 1024;

use super::{not_found, placeholder_participant, ParticipantRecord, Registry, RoomRecord, State, Waiter};

/// Which participant a request wants, read from its `model` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `*` or `any`: whoever is free.
    Any,
    /// `model:<name>`: a participant serving that model.
    Model(String),
    /// Anything else: the participant with this id if there is one, else one serving this model.
    Named(String),
}

impl Selector {
    pub fn parse(model: &str) -> Selector {
        let m = model.trim();
        if m == "*" || m.eq_ignore_ascii_case("any") {
            Selector::Any
        } else if let Some(name) = m.strip_prefix("model:") {
            Selector::Model(name.trim().to_string())
        } else {
            Selector::Named(m.to_string())
        }
    }

    /// True when the request named one participant, whose busy answer is 409, not 503.
    fn is_specific(&self, room: &RoomRecord) -> bool {
        matches!(self, Selector::Named(n) if room.participants.contains_key(n.as_str()))
    }
}

/// Which endpoint a request needs from a participant's provider: routing skips participants known
/// to lack it. `or_chat`: the hub can translate the request into a chat completion (Responses,
/// Messages), so a participant that serves chat will do too. Ollama's native API is needed only
/// by a request no translation can carry, and only a provider known to be Ollama serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub endpoint: Option<Endpoint>,
    pub or_chat: bool,
}

impl Need {
    /// Any participant will do (the original routing).
    pub const ANY: Need = Need { endpoint: None, or_chat: false };

    pub fn met_by(&self, capabilities: &Capabilities) -> bool {
        match self.endpoint {
            None => true,
            Some(Endpoint::Ollama) => capabilities.of(Endpoint::Ollama) == crate::protocol::Capability::Supported,
            Some(e) => capabilities.may_serve(e) || (self.or_chat && capabilities.may_serve(Endpoint::ChatCompletions)),
        }
    }

    fn not_served(&self, participant: Option<String>) -> HubError {
        let path = self.endpoint.map_or("this endpoint", Endpoint::path);
        HubError::NotServed { path: path.to_string(), participant }
    }
}

/// Ollama names `llama3` and `llama3:latest` the same model.
fn same_model(served: &str, asked: &str) -> bool {
    let strip = |m: &str| m.strip_suffix(":latest").unwrap_or(m).to_ascii_lowercase();
    served == asked || strip(served) == strip(asked)
}

/// A place held at a participant for one request. Dropping it frees the place and hands it to the
/// next waiter, so a request that ends in any way (done, failed, client gone) never keeps it.
pub struct Slot {
    registry: Registry,
    code: String,
    participant: Arc<ParticipantRecord>,
    armed: bool,
    route: RouteReason,
}

impl Slot {
    /// The participant as it was when the slot was taken.
    pub fn participant(&self) -> &ParticipantRecord {
        &self.participant
    }

    /// The same record, shared (no copy of it is made).
    pub fn participant_shared(&self) -> Arc<ParticipantRecord> {
        self.participant.clone()
    }

    pub fn room_code(&self) -> &str {
        &self.code
    }

    /// Why this participant was chosen (for `llm.request`).
    pub fn route(&self) -> &RouteReason {
        &self.route
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.registry.release(&self.code, &self.participant.public.id);
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("code", &self.code).field("participant", &self.participant.public.id).finish()
    }
}

/// A request waiting in its room's queue. Dropping it leaves the queue.
pub struct WaitTicket {
    registry: Registry,
    code: String,
    id: u64,
    specific: Option<String>,
    rx: oneshot::Receiver<Slot>,
    position: watch::Receiver<u32>,
}

impl WaitTicket {
    /// Its place in line now (1 = next to be served).
    pub fn position(&self) -> u32 {
        *self.position.borrow()
    }

    /// Its place in line as it changes (callers join ahead by turns, others leave or are served);
    /// closed once it has left the queue.
    pub fn positions(&self) -> watch::Receiver<u32> {
        self.position.clone()
    }

    /// Waits for a slot up to `timeout`. Running out of time is 503 (409 `PARTICIPANT_BUSY` when one
    /// participant was asked for); the participants it could use all leaving is 404.
    pub async fn wait(mut self, timeout: Duration) -> Result<Slot, HubError> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(match self.specific.take() {
                Some(id) => HubError::ParticipantUnavailable { id, reason: "it is no longer available".into() },
                None => HubError::NoParticipant,
            }),
            Err(_) => Err(match self.specific.take() {
                Some(id) => HubError::ParticipantBusy { id },
                None => HubError::Capacity { what: "every matching participant stayed busy".into() },
            }),
        }
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        self.registry.cancel_wait(&self.code, self.id);
    }
}

/// What asking for a slot gave.
pub enum Acquire {
    Ready(Slot),
    Wait(WaitTicket),
}

enum Choice {
    Free(String, RouteReason),
    Busy,
}

fn available(r: &ParticipantRecord) -> bool {
    !matches!(r.public.status, ParticipantStatus::Offline | ParticipantStatus::Paused) && r.public.connection.connected
}

fn paused_error(r: &ParticipantRecord) -> HubError {
    HubError::ParticipantPaused {
        id: r.public.id.clone(),
        reason: r.paused.map_or("paused", PauseReason::describe).to_string(),
    }
}

/// How [`choose`] chooses.
#[derive(Clone, Copy)]
struct Mode {
    policy: Policy,
    /// Requests waiting before this one in the room's queue.
    ahead: usize,
    /// A free place now or none (failover): no waiting for a better one.
    now_only: bool,
}

fn choose(
    room: &RoomRecord,
    selector: &Selector,
    need: Need,
    exclude: &[String],
    mode: Mode,
) -> Result<Choice, HubError> {
    if let Selector::Named(name) = selector {
        if let Some(r) = room.participants.get(name.as_str()) {
            let id = r.public.id.clone();
            if exclude.contains(&id) {
                return Err(HubError::NoParticipant);
            }
            if !need.met_by(&r.public.capabilities) {
                return Err(need.not_served(Some(id)));
            }
            if r.public.status == ParticipantStatus::Offline {
                return Err(HubError::ParticipantUnavailable { id, reason: "it is offline".into() });
            }
            if r.public.status == ParticipantStatus::Paused {
                return Err(paused_error(r));
            }
            if !r.public.connection.connected {
                return Err(HubError::ParticipantUnavailable { id, reason: "its tunnel is not connected".into() });
            }
            let route = RouteReason { rule: Rule::Named, loaded: r.loaded().known(), ..RouteReason::default() };
            return Ok(if r.in_flight < r.public.max_concurrency { Choice::Free(id, route) } else { Choice::Busy });
        }
    }
    let model = match selector {
        Selector::Any => None,
        Selector::Model(m) | Selector::Named(m) => Some(m.as_str()),
    };
    let matching = || {
        room.participants
            .values()
            .filter(|r| model.is_none_or(|m| same_model(&r.public.model, m)))
            .filter(|r| !exclude.contains(&r.public.id))
    };
    let usable: Vec<&ParticipantRecord> =
        matching().filter(|r| available(r) && need.met_by(&r.public.capabilities)).collect();
    if usable.is_empty() {
        // Say so when some could serve the model but none has the endpoint.
        if matching().any(available) {
            return Err(need.not_served(None));
        }
        // Say why when the only ones that could serve are paused: they come back by themselves.
        let paused = matching().find(|r| r.public.status == ParticipantStatus::Paused && r.public.connection.connected);
        return Err(paused.map_or(HubError::NoParticipant, paused_error));
    }
    let usable: Vec<&ParticipantRecord> = if mode.now_only {
        usable.into_iter().filter(|r| r.in_flight < r.public.max_concurrency).collect()
    } else {
        usable
    };
    if usable.is_empty() {
        return Ok(Choice::Busy);
    }
    let candidates: Vec<Candidate> = usable
        .iter()
        .map(|r| Candidate {
            in_flight: r.in_flight,
            max_concurrency: r.public.max_concurrency,
            loaded: r.loaded(),
            speed: r.speed,
        })
        .collect();
    let ask = Ask { tokens: room.typical_tokens.unwrap_or(scheduler::DEFAULT_OUTPUT_TOKENS), ahead: mode.ahead };
    match scheduler::decide(mode.policy, &candidates, &ask, &mut |n| rand::rng().random_range(0..n)) {
        Decision::Take { index, rule, expected_ms } => {
            let r = usable[index];
            let route = RouteReason {
                rule,
                loaded: candidates[index].loaded.known(),
                expected_ms: expected_ms.map(|e| (e * 10.0).round() / 10.0),
                queue_position: None,
            };
            Ok(Choice::Free(r.public.id.clone(), route))
        }
        Decision::Wait => Ok(Choice::Busy),
    }
}

impl Registry {
    /// Takes a slot at a participant matching `selector`, or a place in the room's queue when every
    /// match is busy. Errors: no room, no participant that could ever serve it, the one asked for is
    /// offline or unreachable, or the queue is full.
    pub fn acquire(&self, code: &str, selector: &Selector) -> Result<Acquire, HubError> {
        self.acquire_for(code, selector, Need::ANY)
    }

    /// [`Registry::acquire`] among the participants not known to lack what `need` says.
    pub fn acquire_for(&self, code: &str, selector: &Selector, need: Need) -> Result<Acquire, HubError> {
        self.acquire_as(code, selector, need, None)
    }

    /// [`Registry::acquire_for`] for a request from `caller` (who takes turns in the queue).
    pub fn acquire_as(
        &self,
        code: &str,
        selector: &Selector,
        need: Need,
        caller: Option<&str>,
    ) -> Result<Acquire, HubError> {
        let policy = self.policy();
        let mut state = self.state();
        let ahead = state.waiters.get(code).map_or(0, VecDeque::len);
        let room = state.rooms.get(code).ok_or_else(|| not_found(code))?;
        let specific = selector.is_specific(room).then(|| match selector {
            Selector::Named(n) => n.clone(),
            _ => String::new(),
        });
        match choose(room, selector, need, &[], Mode { policy, ahead, now_only: false })? {
            Choice::Free(id, route) => {
                // Its turn counts as taken, so a burst that filled the places waits its turn after.
                let caller = caller.unwrap_or_default();
                state.turn += 1;
                let turn = state.turn;
                // Keys are allocated only for a room or caller seen for the first time.
                if !state.turns.contains_key(code) {
                    state.turns.insert(code.to_string(), Default::default());
                }
                let Some(turns) = state.turns.get_mut(code) else { unreachable!("inserted above") };
                match turns.get_mut(caller) {
                    Some(last) => *last = turn,
                    None => {
                        turns.insert(caller.to_string(), turn);
                    }
                }
                if turns.len() > MAX_REMEMBERED_TURNS {
                    turns.retain(|_, t| *t + MAX_REMEMBERED_TURNS as u64 > turn);
                }
                Ok(Acquire::Ready(self.take_locked(&mut state, code, &id, route)))
            }
            Choice::Busy => {
                let depth = self.inner.queue_depth.load(Ordering::Relaxed);
                let queue = state.waiters.entry(code.to_string()).or_default();
                queue.retain(|w| !w.tx.is_closed());
                if queue.len() >= depth {
                    return Err(match specific {
                        Some(id) => HubError::ParticipantBusy { id },
                        None => HubError::Capacity { what: "the room's queue is full".into() },
                    });
                }
                let (tx, rx) = oneshot::channel();
                let (position_tx, position) = watch::channel(0);
                state.next_waiter += 1;
                let id = state.next_waiter;
                state.waiters.entry(code.to_string()).or_default().push_back(Waiter {
                    id,
                    selector: selector.clone(),
                    need,
                    caller: caller.unwrap_or_default().to_string(),
                    tx,
                    position: position_tx,
                });
                tell_positions(&state, code);
                Ok(Acquire::Wait(WaitTicket {
                    registry: self.clone(),
                    code: code.to_string(),
                    id,
                    specific,
                    rx,
                    position,
                }))
            }
        }
    }

    /// Takes a free slot now or not at all, never at a participant in `exclude` (failover).
    pub fn try_acquire(&self, code: &str, selector: &Selector, exclude: &[String]) -> Option<Slot> {
        self.try_acquire_for(code, selector, Need::ANY, exclude)
    }

    /// [`Registry::try_acquire`] among the participants not known to lack what `need` says.
    pub fn try_acquire_for(&self, code: &str, selector: &Selector, need: Need, exclude: &[String]) -> Option<Slot> {
        let mut state = self.state();
        let room = state.rooms.get(code)?;
        let mode = Mode { policy: self.policy(), ahead: 0, now_only: true };
        match choose(room, selector, need, exclude, mode) {
            Ok(Choice::Free(id, route)) => Some(self.take_locked(&mut state, code, &id, route)),
            _ => None,
        }
    }

    fn take_locked(&self, state: &mut State, code: &str, id: &str, route: RouteReason) -> Slot {
        let mut snapshot = None;
        if let Some(r) = state.rooms.get_mut(code).and_then(|room| room.participants.get_mut(id)) {
            r.in_flight += 1;
            let status = r.live_status();
            if r.public.status != status && r.public.status != ParticipantStatus::Offline {
                r.public.status = status;
                r.public.updated_at = now_ms();
                r.refresh();
                self.inner.bus.publish(code, EventKind::ParticipantUpdated(r.public.clone()));
            }
            snapshot = Some(r.clone());
        }
        // `choose` only names participants that exist, under the same lock, so the snapshot is
        // always there; an unarmed slot is the harmless answer if that ever changes.
        let armed = snapshot.is_some();
        let participant = Arc::new(
            snapshot.unwrap_or_else(|| ParticipantRecord::new(placeholder_participant(id), RuntimeConfig::default())),
        );
        Slot { registry: self.clone(), code: code.to_string(), participant, armed, route }
    }

    fn release(&self, code: &str, id: &str) {
        let mut state = self.state();
        self.release_locked(&mut state, code, id);
        self.dispatch_locked(&mut state, code);
    }

    pub(super) fn release_locked(&self, state: &mut State, code: &str, id: &str) {
        if let Some(r) = state.rooms.get_mut(code).and_then(|room| room.participants.get_mut(id)) {
            r.in_flight = r.in_flight.saturating_sub(1);
            let status = r.live_status();
            if r.public.status == ParticipantStatus::Busy && status != ParticipantStatus::Busy {
                r.public.status = status;
                r.public.updated_at = now_ms();
                r.refresh();
                self.inner.bus.publish(code, EventKind::ParticipantUpdated(r.public.clone()));
            }
        }
    }

    fn cancel_wait(&self, code: &str, id: u64) {
        let mut state = self.state();
        if let Some(queue) = state.waiters.get_mut(code) {
            let before = queue.len();
            queue.retain(|w| w.id != id);
            if queue.is_empty() {
                state.waiters.remove(code);
            } else if queue.len() != before {
                tell_positions(&state, code);
            }
        }
    }

    /// Hands free slots to waiters, oldest first; drops waiters nobody can ever serve now (their
    /// request fails at once instead of timing out).
    pub(super) fn dispatch_locked(&self, state: &mut State, code: &str) {
        let Some(queue) = state.waiters.remove(code) else { return };
        let policy = self.policy();
        let mut waiters: Vec<Option<Waiter>> = queue.into_iter().filter(|w| !w.tx.is_closed()).map(Some).collect();
        // By turns between callers: whoever was served longest ago goes first.
        let callers: Vec<&str> = waiters.iter().flatten().map(|w| w.caller.as_str()).collect();
        let turns = state.turns.remove(code).unwrap_or_default();
        let order = scheduler::fair_order(&callers, |c| turns.get(*c).copied());
        let mut turns = turns;
        let mut ahead = 0;
        for (position, i) in order.into_iter().enumerate() {
            let Some(waiter) = waiters[i].take() else { continue };
            let Some(room) = state.rooms.get(code) else { continue };
            match choose(room, &waiter.selector, waiter.need, &[], Mode { policy, ahead, now_only: false }) {
                Ok(Choice::Free(id, mut route)) => {
                    route.queue_position = Some(u32::try_from(position + 1).unwrap_or(u32::MAX));
                    let slot = self.take_locked(state, code, &id, route);
                    if let Err(mut slot) = waiter.tx.send(slot) {
                        slot.armed = false;
                        self.release_locked(state, code, &id);
                    } else {
                        state.turn += 1;
                        turns.insert(waiter.caller.clone(), state.turn);
                    }
                }
                Ok(Choice::Busy) => {
                    ahead += 1;
                    waiters[i] = Some(waiter);
                }
                // Nobody can serve it any more: dropping its sender answers it at once.
                Err(_) => {}
            }
        }
        let kept: VecDeque<Waiter> = waiters.into_iter().flatten().collect();
        if turns.len() > MAX_REMEMBERED_TURNS {
            let newest = state.turn;
            turns.retain(|caller, t| {
                *t + MAX_REMEMBERED_TURNS as u64 > newest || kept.iter().any(|w| &w.caller == caller)
            });
        }
        if !turns.is_empty() {
            state.turns.insert(code.to_string(), turns);
        }
        if !kept.is_empty() {
            state.waiters.insert(code.to_string(), kept);
            tell_positions(state, code);
        }
    }

    /// Requests waiting in a room's queue.
    pub fn queued(&self, code: &str) -> usize {
        self.state().waiters.get(code).map_or(0, VecDeque::len)
    }

    /// How the hub's rooms choose (`--routing`).
    pub fn set_policy(&self, policy: Policy) {
        self.inner.policy.store(matches!(policy, Policy::LeastLoaded) as u8, Ordering::Relaxed);
    }

    fn policy(&self) -> Policy {
        if self.inner.policy.load(Ordering::Relaxed) == 1 {
            Policy::LeastLoaded
        } else {
            Policy::Expected
        }
    }

    /// Learns from a finished request at participant `id`: its time to first token and speed
    /// (`cold`: the model was not loaded when the request was sent, so the first token waited for
    /// the load), and the room's usual answer length.
    pub fn observe_speed(
        &self,
        code: &str,
        id: &str,
        ttft_ms: f64,
        tokens_per_second: Option<f64>,
        output_tokens: Option<u64>,
        cold: bool,
    ) {
        let mut state = self.state();
        let Some(room) = state.rooms.get_mut(code) else { return };
        if let Some(tokens) = output_tokens.filter(|&t| t > 0) {
            let t = tokens as f64;
            room.typical_tokens = Some(room.typical_tokens.map_or(t, |old| old + 0.1 * (t - old)));
        }
        if let Some(r) = room.participants.get_mut(id) {
            match r.speed.as_mut() {
                Some(speed) => speed.observe(ttft_ms, tokens_per_second, cold),
                None if cold => r.speed = Some(Speed::first_cold(ttft_ms, tokens_per_second)),
                None => r.speed = Some(Speed::first(ttft_ms, tokens_per_second)),
            }
        }
    }
}

/// Tells each request waiting in room `code` its place in line, in the order freed places go
/// out (by turns between callers, see [`scheduler::fair_order`]); only changed places are sent.
fn tell_positions(state: &State, code: &str) {
    let Some(queue) = state.waiters.get(code) else { return };
    let callers: Vec<&str> = queue.iter().map(|w| w.caller.as_str()).collect();
    let turns = state.turns.get(code);
    let order = scheduler::fair_order(&callers, |c| turns.and_then(|t| t.get(*c).copied()));
    for (place, i) in order.into_iter().enumerate() {
        let place = u32::try_from(place + 1).unwrap_or(u32::MAX);
        queue[i].position.send_if_modified(|p| std::mem::replace(p, place) != place);
    }
}

impl ParticipantRecord {
    /// Whether the participant has its model loaded, from its heartbeats' `loadedModels`.
    pub fn loaded(&self) -> Loaded {
        if self.public.loaded_models.is_empty() {
            Loaded::Unknown
        } else if self.public.loaded_models.iter().any(|m| same_model(&m.name, &self.public.model)) {
            Loaded::Yes
        } else {
            Loaded::No
        }
    }
}
