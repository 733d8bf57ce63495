//! Which participant created which Responses-API response, so `GET`, `DELETE`, `cancel` and
//! `input_items` of a response id reach the machine that holds it. Responses the hub made itself
//! (translated from a chat completion, for providers without `/v1/responses`) are kept here whole,
//! as the JSON they are served as.
//!
//! Bounded twice, the oldest entries going first: at most `capacity` entries, and the hub's own
//! responses at most `bytes` in all (`--responses-memory`) and a quarter of that per room, so one
//! room's long conversations cannot push every other room's responses out. A response bigger than
//! a room's share is not kept at all; asking for it later finds nothing, as for any response gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;

/// A room may hold this fraction (1/N) of the store's bytes.
pub const ROOM_SHARE: usize = 4;

#[derive(Debug, Clone)]
pub enum Owner {
    /// Created by this participant's provider: forward to it.
    Participant { code: String, participant_id: String },
    /// Translated by the hub: served from here. Kept serialized (`Bytes`, shared, cheap to clone):
    /// what is served is what is counted, where a parsed `Value` costs several times its JSON.
    Local {
        code: String,
        /// The response object, as JSON.
        response: Bytes,
        /// The whole `input_items` list page, as JSON.
        input_items: Bytes,
    },
}

impl Owner {
    /// A response the hub translated: `response` as it was answered, and the items of its input.
    pub fn local(code: String, response: Bytes, input_items: &[Value]) -> Owner {
        #[derive(serde::Serialize)]
        struct Page<'a> {
            object: &'static str,
            data: &'a [Value],
            first_id: &'a Value,
            last_id: &'a Value,
            has_more: bool,
        }
        static NULL: Value = Value::Null;
        fn id_of(item: Option<&Value>) -> &Value {
            item.and_then(|i| i.get("id")).unwrap_or(&NULL)
        }
        let page = Page {
            object: "list",
            data: input_items,
            first_id: id_of(input_items.first()),
            last_id: id_of(input_items.last()),
            has_more: false,
        };
        // Serializing a `Value` into memory cannot fail (its keys are strings); should it, the page
        // is an empty one rather than nothing.
        let input_items = serde_json::to_vec(&page).map(Bytes::from).unwrap_or_else(|_| {
            Bytes::from_static(br#"{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}"#)
        });
        Owner::Local { code, response, input_items }
    }

    /// [`Owner::local`] with the input as the JSON text it came as (a string, or an array of
    /// items): the page is written around that text, the items never parsed as a whole.
    pub fn local_from_text(code: String, response: Bytes, input: Option<&str>) -> Owner {
        let input = input.map(str::trim_start).unwrap_or("null");
        if input.starts_with('"') {
            let text: String = serde_json::from_str(input).unwrap_or_default();
            let item = serde_json::json!({
                "id": format!("msg_{}", uuid::Uuid::new_v4().simple()),
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": text}],
            });
            return Owner::local(code, response, &[item]);
        }
        let items: Vec<&serde_json::value::RawValue> =
            if input.starts_with('[') { serde_json::from_str(input).unwrap_or_default() } else { Vec::new() };
        if items.is_empty() {
            return Owner::local(code, response, &[]);
        }
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(default)]
            id: Value,
        }
        let id_of = |raw: Option<&&serde_json::value::RawValue>| {
            raw.and_then(|r| serde_json::from_str::<Id>(r.get()).ok()).map(|i| i.id).unwrap_or(Value::Null)
        };
        let mut page = Vec::with_capacity(input.len() + 128);
        page.extend_from_slice(br#"{"object":"list","data":"#);
        page.extend_from_slice(input.trim_end().as_bytes());
        page.extend_from_slice(br#","first_id":"#);
        page.extend_from_slice(id_of(items.first()).to_string().as_bytes());
        page.extend_from_slice(br#","last_id":"#);
        page.extend_from_slice(id_of(items.last()).to_string().as_bytes());
        page.extend_from_slice(br#","has_more":false}"#);
        Owner::Local { code, response, input_items: Bytes::from(page) }
    }

    pub fn room_code(&self) -> &str {
        match self {
            Owner::Participant { code, .. } | Owner::Local { code, .. } => code,
        }
    }

    /// What the entry counts against the byte budgets: the hub's own responses their JSON; a
    /// participant's, a few short strings, bounded by the entry count instead.
    fn weight(&self) -> usize {
        match self {
            Owner::Participant { .. } => 0,
            Owner::Local { response, input_items, .. } => response.len() + input_items.len(),
        }
    }
}

struct Entry {
    owner: Owner,
    /// Its place in the orders below: later entries have larger numbers.
    seq: u64,
    weight: usize,
}

/// A room's responses that weigh something, oldest first, and what they weigh.
#[derive(Default)]
struct Room {
    heavy: BTreeMap<u64, String>,
    bytes: usize,
}

/// `BTreeMap`s keyed by insertion number rather than `VecDeque`s: an entry leaves from the middle
/// (deleted, replaced, or evicted from its room) in `O(log n)`, and the oldest is the first key.
#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    /// Every entry, oldest first (the count bound).
    order: BTreeMap<u64, String>,
    /// The entries that weigh something, oldest first (the total byte bound).
    heavy: BTreeMap<u64, String>,
    rooms: HashMap<String, Room>,
    bytes: usize,
    next_seq: u64,
}

impl Store {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.order.remove(&entry.seq);
        if entry.weight > 0 {
            self.heavy.remove(&entry.seq);
            self.bytes -= entry.weight;
            let code = entry.owner.room_code();
            if let Some(room) = self.rooms.get_mut(code) {
                room.heavy.remove(&entry.seq);
                room.bytes -= entry.weight;
                if room.heavy.is_empty() {
                    self.rooms.remove(code);
                }
            }
        }
        Some(entry)
    }

    fn insert(&mut self, id: String, owner: Owner, weight: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.clone());
        if weight > 0 {
            self.heavy.insert(seq, id.clone());
            self.bytes += weight;
            let room = self.rooms.entry(owner.room_code().to_string()).or_default();
            room.heavy.insert(seq, id.clone());
            room.bytes += weight;
        }
        self.entries.insert(id, Entry { owner, seq, weight });
    }

    fn oldest_in_room(&self, code: &str) -> Option<String> {
        self.rooms.get(code)?.heavy.first_key_value().map(|(_, id)| id.clone())
    }
}

pub struct ResponsesIndex {
    inner: Mutex<Store>,
    capacity: usize,
    /// Most bytes of the hub's own responses, all rooms together.
    bytes: usize,
}

impl ResponsesIndex {
    /// At most `capacity` entries, and `bytes` of the hub's own responses (a quarter of it per room).
    pub fn new(capacity: usize, bytes: usize) -> Self {
        ResponsesIndex { inner: Mutex::new(Store::default()), capacity: capacity.max(1), bytes }
    }

    /// Most bytes one room's responses may take.
    pub fn room_bytes(&self) -> usize {
        self.bytes / ROOM_SHARE
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `owner` under `id` as the newest entry (replacing one of the same id), then lets the
    /// oldest go until the room, the store and the count are within their bounds. A response that
    /// alone is over the room's share is not kept (nor is the older one of its id).
    pub fn remember(&self, id: &str, owner: Owner) {
        if id.is_empty() || id.len() > 256 {
            return;
        }
        let weight = owner.weight();
        let room_bytes = self.room_bytes();
        let mut store = self.lock();
        store.remove(id);
        if weight > room_bytes {
            tracing::debug!(id, bytes = weight, room_bytes, "a translated response too large to keep");
            return;
        }
        let code = owner.room_code().to_string();
        store.insert(id.to_string(), owner, weight);
        // The new entry is the newest and fits the room's share, itself within the total: the
        // loops below never reach it.
        while store.rooms.get(&code).is_some_and(|room| room.bytes > room_bytes) {
            let Some(old) = store.oldest_in_room(&code) else { break };
            store.remove(&old);
        }
        while store.bytes > self.bytes {
            let Some(old) = store.heavy.first_key_value().map(|(_, id)| id.clone()) else { break };
            store.remove(&old);
        }
        while store.entries.len() > self.capacity {
            let Some(old) = store.order.first_key_value().map(|(_, id)| id.clone()) else { break };
            store.remove(&old);
        }
    }

    pub fn get(&self, id: &str) -> Option<Owner> {
        self.lock().entries.get(id).map(|e| e.owner.clone())
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Bytes the hub's own responses take now, all rooms together.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn participant(code: &str, id: &str) -> Owner {
        Owner::Participant { code: code.into(), participant_id: id.into() }
    }

    /// A translated response in room `code` weighing exactly `weight` bytes.
    fn local(code: &str, weight: usize) -> Owner {
        let empty_page = Owner::local(code.into(), Bytes::new(), &[]).weight();
        Owner::local(code.into(), Bytes::from(vec![b' '; weight - empty_page]), &[])
    }

    fn kept(index: &ResponsesIndex, ids: &[&str]) -> Vec<String> {
        ids.iter().filter(|id| index.get(id).is_some()).map(|id| id.to_string()).collect()
    }

    #[test]
    fn oldest_entries_go_first() {
        let index = ResponsesIndex::new(2, 1 << 20);
        for id in ["a", "b", "c"] {
            index.remember(id, participant("C", id));
        }
        assert!(index.get("a").is_none());
        assert!(index.get("c").is_some());
        index.forget("c");
        assert!(index.get("c").is_none());
    }

    #[test]
    fn the_store_is_bounded_in_bytes_across_rooms_oldest_first() {
        // 4000 bytes in all, 1000 per room: four rooms of 1000 fill it; a fifth pushes out the oldest.
        let index = ResponsesIndex::new(100, 4000);
        for (id, room) in [("r1", "A"), ("r2", "B"), ("r3", "C"), ("r4", "D")] {
            index.remember(id, local(room, 1000));
        }
        assert_eq!(index.bytes(), 4000);
        index.remember("r5", local("E", 1000));
        assert_eq!(kept(&index, &["r1", "r2", "r3", "r4", "r5"]), ["r2", "r3", "r4", "r5"]);
        assert_eq!(index.bytes(), 4000);
        index.remember("r6", local("F", 600));
        index.remember("r7", local("G", 600));
        assert_eq!(kept(&index, &["r2", "r3", "r4", "r5", "r6", "r7"]), ["r4", "r5", "r6", "r7"]);
        assert!(index.bytes() <= 4000, "{}", index.bytes());
    }

    #[test]
    fn a_room_holds_a_quarter_of_the_store_and_evicts_its_own_oldest() {
        let index = ResponsesIndex::new(100, 4000);
        assert_eq!(index.room_bytes(), 1000);
        index.remember("other", local("B", 900));
        for id in ["a1", "a2", "a3", "a4"] {
            index.remember(id, local("A", 400));
        }
        // Room A keeps its two newest (800 bytes); room B's older response is not touched.
        assert_eq!(kept(&index, &["a1", "a2", "a3", "a4", "other"]), ["a3", "a4", "other"]);
        assert_eq!(index.bytes(), 1700);
    }

    #[test]
    fn eviction_follows_insertion_order_and_a_replaced_id_counts_as_new() {
        let index = ResponsesIndex::new(100, 4000);
        for id in ["x", "y", "z"] {
            index.remember(id, local("A", 300));
        }
        // "x" again: now the newest of the room, so "y" is the oldest.
        index.remember("x", local("A", 300));
        index.remember("w", local("A", 300));
        assert_eq!(kept(&index, &["x", "y", "z", "w"]), ["x", "z", "w"]);
        assert_eq!(index.bytes(), 900);
        // Forgetting gives the bytes back.
        index.forget("z");
        assert_eq!(index.bytes(), 600);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_response_over_a_rooms_share_is_not_kept_and_evicts_nothing() {
        let index = ResponsesIndex::new(100, 4000);
        index.remember("small", local("A", 500));
        index.remember("huge", local("A", 1001));
        assert!(index.get("huge").is_none());
        assert!(index.get("small").is_some(), "nothing was pushed out for it");
        assert_eq!(index.bytes(), 500);
        // A response of an id already kept that grows too large replaces nothing stale.
        index.remember("small", local("A", 2000));
        assert!(index.get("small").is_none());
        assert_eq!(index.bytes(), 0);
        // Exactly the share is kept.
        index.remember("just", local("A", 1000));
        assert!(index.get("just").is_some());
    }

    #[test]
    fn participants_entries_weigh_nothing_and_survive_byte_eviction() {
        let index = ResponsesIndex::new(100, 0);
        index.remember("p1", participant("A", "alice"));
        index.remember("l1", local("A", 100));
        assert!(index.get("p1").is_some(), "a participant's response is still routed");
        assert!(index.get("l1").is_none(), "--responses-memory 0 keeps no translated response");
        assert_eq!(index.bytes(), 0);
    }

    #[test]
    fn a_local_response_is_served_as_it_was_kept() {
        let items = [json!({"id": "msg_1", "type": "message"}), json!({"id": "msg_2", "type": "message"})];
        let Owner::Local { response, input_items, .. } =
            Owner::local("A".into(), Bytes::from_static(br#"{"id":"resp_1"}"#), &items)
        else {
            panic!("not local")
        };
        assert_eq!(&response[..], br#"{"id":"resp_1"}"#);
        let page: Value = serde_json::from_slice(&input_items).unwrap();
        assert_eq!(
            page,
            json!({"object": "list", "data": items, "first_id": "msg_1", "last_id": "msg_2", "has_more": false})
        );
        let Owner::Local { input_items, .. } = Owner::local("A".into(), Bytes::new(), &[]) else { panic!("not local") };
        let page: Value = serde_json::from_slice(&input_items).unwrap();
        assert_eq!(page, json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false}));
    }
}
