//! Which participant created which Responses-API response, so `GET`, `DELETE`, `cancel` and
//! `input_items` of a response id reach the machine that holds it. Responses the hub made itself
//! (translated from a chat completion, for providers without `/v1/responses`) are kept here whole.
//! Bounded: the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

#[derive(Debug, Clone)]
pub enum Owner {
    /// Created by this participant's provider: forward to it.
    Participant { code: String, participant_id: String },
    /// Translated by the hub: served from here.
    Local { code: String, response: Value, input_items: Vec<Value> },
}

impl Owner {
    pub fn room_code(&self) -> &str {
        match self {
            Owner::Participant { code, .. } | Owner::Local { code, .. } => code,
        }
    }
}

pub struct ResponsesIndex {
    inner: Mutex<(HashMap<String, Owner>, VecDeque<String>)>,
    capacity: usize,
}

impl ResponsesIndex {
    pub fn new(capacity: usize) -> Self {
        ResponsesIndex { inner: Mutex::new((HashMap::new(), VecDeque::new())), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Owner>, VecDeque<String>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn remember(&self, id: &str, owner: Owner) {
        if id.is_empty() || id.len() > 256 {
            return;
        }
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        if map.insert(id.to_string(), owner).is_none() {
            order.push_back(id.to_string());
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Owner> {
        self.lock().0.get(id).cloned()
    }

    pub fn forget(&self, id: &str) {
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        if map.remove(id).is_some() {
            order.retain(|x| x != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_entries_go_first() {
        let index = ResponsesIndex::new(2);
        for id in ["a", "b", "c"] {
            index.remember(id, Owner::Participant { code: "C".into(), participant_id: id.into() });
        }
        assert!(index.get("a").is_none());
        assert!(index.get("c").is_some());
        index.forget("c");
        assert!(index.get("c").is_none());
    }
}
