//! The event bus: one broadcast channel for the whole hub, plus a ring of recent events per room so
//! a client reconnecting with `Last-Event-ID` gets exactly what it missed.
//!
//! Publishing assigns the id, appends to the room's ring and sends on the channel under one lock, and
//! subscribing snapshots the ring and subscribes under the same lock, so a subscriber never sees a
//! gap or a duplicate between its replay and the live events. Each event is serialized at most once
//! per surface, by the first reader that asks for it ([`Rendered`]): an event nobody reads (no
//! stream open on its room, none replaying it) is never serialized, and the bus's lock is never
//! held while one is. Fan-out only clones an `Arc`.
//!
//! A slow reader cannot hold anything up or grow memory: the channel has a fixed capacity and a
//! reader that falls behind it is `Lagged`. Such a reader then catches up from the ring, and only if
//! the ring has moved past it too is it told it missed events.
//!
//! Every event is also counted by `hub::stats` as it is published.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::broadcast;

use super::stats::Stats;
use crate::protocol::events::EventKind;
use crate::protocol::now_ms;

/// One published event: what happened (its [`EventSource`], read through `Deref`: `event.kind`,
/// `event.room_code`, `event.timestamp`) and its two renderings, each made once when first read.
#[derive(Debug)]
pub struct HubEvent {
    pub id: u64,
    source: Arc<EventSource>,
    /// `data:` of the `/v1` stream: the whole envelope.
    pub v1_json: Rendered,
    /// `data:` of the classic stream: the bare payload.
    pub classic_json: Rendered,
}

/// What an event says, shared by the event and its renderings.
#[derive(Debug)]
pub struct EventSource {
    pub timestamp: u64,
    pub room_code: String,
    pub kind: EventKind,
}

impl std::ops::Deref for HubEvent {
    type Target = EventSource;

    fn deref(&self) -> &EventSource {
        &self.source
    }
}

/// An event's JSON for one surface, written the first time it is read (as `&str`, through
/// `Deref`) and kept: every reader after that gets the same text.
pub struct Rendered {
    source: Arc<EventSource>,
    envelope: bool,
    text: OnceLock<String>,
}

impl Rendered {
    fn new(source: &Arc<EventSource>, envelope: bool) -> Self {
        Rendered { source: source.clone(), envelope, text: OnceLock::new() }
    }

    pub fn as_str(&self) -> &str {
        self.text.get_or_init(|| {
            let EventSource { timestamp, room_code, kind } = &*self.source;
            if self.envelope {
                serde_json::json!({
                    "type": kind.v1_name(),
                    "timestamp": timestamp,
                    "roomCode": room_code,
                    "data": kind.v1_data(),
                })
                .to_string()
            } else {
                kind.classic_data().to_string()
            }
        })
    }
}

impl std::ops::Deref for Rendered {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

struct Ring {
    events: VecDeque<Arc<HubEvent>>,
    /// Id of the newest event dropped from the front; a reader behind it has lost events.
    last_evicted: u64,
}

struct BusState {
    next_id: u64,
    rings: HashMap<String, Ring>,
}

struct BusInner {
    tx: broadcast::Sender<Arc<HubEvent>>,
    state: Mutex<BusState>,
    ring_capacity: usize,
    /// The first id of this process; a position before it comes from an earlier hub process.
    first_id: u64,
    /// Counts what the events tell (requests, tokens, who shared), before any stream sees them.
    stats: Stats,
}

/// Cheap to clone: a handle on the shared bus.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

/// What a new subscriber to a room gets: the events to replay first, whether some it asked for are
/// gone, the live receiver, and the stream position it starts at.
pub struct RoomSubscription {
    pub replay: Vec<Arc<HubEvent>>,
    pub missed: bool,
    pub receiver: broadcast::Receiver<Arc<HubEvent>>,
    pub position: u64,
}

impl EventBus {
    /// `channel_capacity` bounds the live channel (shared by all rooms); `ring_capacity` is how many
    /// recent events each room keeps for replay.
    pub fn new(channel_capacity: usize, ring_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(channel_capacity.max(16));
        // Ids start at the boot time in microseconds, so they keep growing across hub restarts and
        // an old `Last-Event-ID` never points past the new events.
        let next_id = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1))
        .max(1);
        EventBus {
            inner: Arc::new(BusInner {
                tx,
                state: Mutex::new(BusState { next_id, rings: HashMap::new() }),
                ring_capacity: ring_capacity.max(1),
                first_id: next_id,
                stats: Stats::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, BusState> {
        // A panic while holding this lock cannot leave the ring half-written in a way that matters
        // more than losing every event after it, so a poisoned lock is used as is.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes an event about a room and returns it.
    pub fn publish(&self, room_code: &str, kind: EventKind) -> Arc<HubEvent> {
        let timestamp = now_ms();
        // Counted before it is sent: whoever reads the room after seeing the event finds it counted.
        self.inner.stats.observe(room_code, &kind, timestamp);
        let closes = matches!(kind, EventKind::RoomClosed);
        // Built before the lock is taken: nothing is serialized here (see `Rendered`).
        let source = Arc::new(EventSource { timestamp, room_code: room_code.to_string(), kind });
        let (v1_json, classic_json) = (Rendered::new(&source, true), Rendered::new(&source, false));
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        let event = Arc::new(HubEvent { id, source, v1_json, classic_json });
        if closes {
            state.rings.remove(room_code);
        } else {
            let capacity = self.inner.ring_capacity;
            let ring = state
                .rings
                .entry(room_code.to_string())
                .or_insert_with(|| Ring { events: VecDeque::with_capacity(capacity.min(64)), last_evicted: 0 });
            if ring.events.len() >= capacity {
                if let Some(old) = ring.events.pop_front() {
                    ring.last_evicted = old.id;
                }
            }
            ring.events.push_back(event.clone());
        }
        // No receivers is fine: nobody is watching.
        let _ = self.inner.tx.send(event.clone());
        event
    }

    /// The counters the events feed.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Every event of every room, live, for in-process consumers (the desktop's notifications).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.inner.tx.subscribe()
    }

    /// Subscribes to one room, replaying what came after `last_event_id` when given.
    pub fn subscribe_room(&self, room_code: &str, last_event_id: Option<u64>) -> RoomSubscription {
        let state = self.state();
        let receiver = self.inner.tx.subscribe();
        let head = state.next_id.saturating_sub(1);
        match last_event_id {
            None => RoomSubscription { replay: Vec::new(), missed: false, receiver, position: head },
            // An id this hub never issued (an earlier process with a clock ahead of ours): taken
            // as the position, it would skip every live event as already seen. Start at the head
            // and say that what came before is unknown.
            Some(after) if after > head => {
                RoomSubscription { replay: Vec::new(), missed: true, receiver, position: head }
            }
            Some(after) => {
                let (replay, missed) = Self::replay_locked(&state, room_code, after);
                // From before a restart: what happened in between (participants dropped, at least)
                // is in no ring.
                let missed = missed || after.saturating_add(1) < self.inner.first_id;
                RoomSubscription { replay, missed, receiver, position: after }
            }
        }
    }

    /// The room's events after `after`, and whether some of them are no longer kept.
    pub fn replay(&self, room_code: &str, after: u64) -> (Vec<Arc<HubEvent>>, bool) {
        Self::replay_locked(&self.state(), room_code, after)
    }

    fn replay_locked(state: &BusState, room_code: &str, after: u64) -> (Vec<Arc<HubEvent>>, bool) {
        match state.rings.get(room_code) {
            None => (Vec::new(), false),
            Some(ring) => {
                let events: Vec<_> = ring.events.iter().filter(|e| e.id > after).cloned().collect();
                (events, ring.last_evicted > after)
            }
        }
    }

    /// Forgets a room's ring (after the room is gone and its streams are told).
    pub fn forget_room(&self, room_code: &str) {
        self.state().rings.remove(room_code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(id: &str) -> EventKind {
        EventKind::ParticipantLeft { participant_id: id.into() }
    }

    #[test]
    fn replay_returns_exactly_what_came_after() {
        let bus = EventBus::new(16, 8);
        let a = bus.publish("AAAAAA", left("1"));
        let _other = bus.publish("BBBBBB", left("x"));
        let b = bus.publish("AAAAAA", left("2"));
        let c = bus.publish("AAAAAA", left("3"));
        let (events, missed) = bus.replay("AAAAAA", a.id);
        assert!(!missed);
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b.id, c.id]);
    }

    #[test]
    fn ring_eviction_is_reported_as_missed() {
        let bus = EventBus::new(16, 2);
        let first = bus.publish("AAAAAA", left("1"));
        for i in 0..3 {
            bus.publish("AAAAAA", left(&i.to_string()));
        }
        let (events, missed) = bus.replay("AAAAAA", first.id);
        assert!(missed);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn envelopes_are_serialized_once_per_surface_when_first_read() {
        let bus = EventBus::new(16, 2);
        let e = bus.publish("AAAAAA", left("w1"));
        assert!(e.v1_json.text.get().is_none() && e.classic_json.text.get().is_none(), "nothing rendered unread");
        let v1: serde_json::Value = serde_json::from_str(&e.v1_json).unwrap();
        assert_eq!(v1["type"], "participant.left");
        assert_eq!(v1["roomCode"], "AAAAAA");
        assert_eq!(v1["timestamp"], e.timestamp);
        assert_eq!(v1["data"]["participantId"], "w1");
        assert_eq!(&*e.classic_json, r#"{"participantId":"w1"}"#);
        // The same text for every later reader.
        assert!(std::ptr::eq(e.v1_json.as_str(), e.v1_json.as_str()));
        assert!(e.classic_json.text.get().is_some());
    }

    #[tokio::test]
    async fn live_events_follow_the_snapshot_without_gap() {
        let bus = EventBus::new(16, 8);
        let first = bus.publish("AAAAAA", left("1"));
        let mut sub = bus.subscribe_room("AAAAAA", Some(0));
        assert_eq!(sub.replay.len(), 1);
        assert_eq!(sub.replay[0].id, first.id);
        let second = bus.publish("AAAAAA", left("2"));
        assert_eq!(sub.receiver.recv().await.unwrap().id, second.id);
    }
}
