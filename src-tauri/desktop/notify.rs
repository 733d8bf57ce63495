//! Desktop notifications: what is worth telling the person (a participant in a room this app hosts
//! or serves goes offline, comes back or joins; this machine's share drops, reconnects or
//! recovers), one notification per transition, and never a storm: transitions that arrive within
//! a short window are coalesced into one summary.
//!
//! The app shows them through the notification plugin; tests plug in a [`Notifier`] that records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::protocol::events::EventEnvelope;

/// Shows a notification. The app's implementation calls the OS; a test's records.
pub trait Notifier: Send + Sync + 'static {
    fn notify(&self, title: &str, body: &str);
}

/// One thing that changed, worth a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Offline {
        room: String,
        who: String,
    },
    Back {
        room: String,
        who: String,
    },
    Joined {
        room: String,
        who: String,
    },
    ShareDropped {
        reason: String,
    },
    ShareReconnecting {
        attempt: u32,
        room: String,
    },
    ShareRecovered {
        room: String,
    },
    /// This machine's model server stopped answering: the share is paused (`server`: "Ollama").
    SharePaused {
        server: String,
        room: String,
    },
    /// It answers again: the share is back on by itself.
    ShareResumed {
        server: String,
        room: String,
    },
}

impl Transition {
    fn alone(&self) -> (String, String) {
        match self {
            Transition::Offline { room, who } => (format!("{who} went offline"), format!("in room {room}")),
            Transition::Back { room, who } => (format!("{who} is back online"), format!("in room {room}")),
            Transition::Joined { room, who } => (format!("{who} joined"), format!("room {room}")),
            Transition::ShareDropped { reason } => ("Your share stopped".into(), reason.clone()),
            Transition::ShareReconnecting { attempt, room } => (
                format!("Your share lost the connection to {room}"),
                if *attempt > 1 {
                    format!("Still reconnecting (attempt {attempt})…")
                } else {
                    "Reconnecting by itself…".into()
                },
            ),
            Transition::ShareRecovered { room } => ("Your share is back".into(), format!("Serving room {room} again")),
            Transition::SharePaused { server, room } => (
                format!("{server} stopped — your share is paused"),
                format!("{room} gets it back as soon as {server} runs again"),
            ),
            Transition::ShareResumed { server, room } => {
                (format!("{server} is back — your share is on again"), format!("Serving {room} again"))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Transition::Offline { .. } => "went offline",
            Transition::Back { .. } => "came back",
            Transition::Joined { .. } => "joined",
            Transition::ShareDropped { .. }
            | Transition::ShareReconnecting { .. }
            | Transition::ShareRecovered { .. }
            | Transition::SharePaused { .. }
            | Transition::ShareResumed { .. } => "share",
        }
    }
}

/// The text of one notification for a batch of transitions that arrived together.
pub fn render(batch: &[Transition]) -> Option<(String, String)> {
    match batch {
        [] => None,
        [one] => Some(one.alone()),
        many => {
            // The share's own news is told first; people's changes are counted per kind.
            let mut counts: Vec<(&'static str, usize)> = Vec::new();
            let mut rooms: Vec<&str> = Vec::new();
            let mut share = None;
            for t in many {
                match t {
                    Transition::Offline { room, .. }
                    | Transition::Back { room, .. }
                    | Transition::Joined { room, .. } => {
                        if !rooms.contains(&room.as_str()) {
                            rooms.push(room);
                        }
                        match counts.iter_mut().find(|(k, _)| *k == t.kind()) {
                            Some((_, n)) => *n += 1,
                            None => counts.push((t.kind(), 1)),
                        }
                    }
                    _ => share = Some(t.alone()),
                }
            }
            let people: usize = counts.iter().map(|(_, n)| n).sum();
            let parts: Vec<String> = counts
                .iter()
                .map(|(kind, n)| format!("{n} {} {kind}", if *n == 1 { "participant" } else { "participants" }))
                .collect();
            let where_ = match rooms.as_slice() {
                [one] => format!(" in room {one}"),
                _ => format!(" in {} rooms", rooms.len()),
            };
            match (share, people) {
                (Some((title, body)), 0) => Some((title, body)),
                (Some((title, _)), _) => Some((title, format!("Also: {}{where_}", parts.join(", ")))),
                (None, _) => Some((format!("{people} changes in Gambi"), format!("{}{where_}", parts.join(", ")))),
            }
        }
    }
}

/// Collects transitions and shows them: the first opens a window of `window`; everything that
/// arrives before it closes goes out as one notification.
#[derive(Clone)]
pub struct Coalescer {
    tx: mpsc::UnboundedSender<Transition>,
}

impl Coalescer {
    /// Starts the collecting task on the current tokio runtime. `enabled` is read when a batch is
    /// about to be shown (the setting can change at any time).
    pub fn start(
        notifier: Arc<dyn Notifier>,
        window: Duration,
        enabled: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Coalescer {
        let (tx, mut rx) = mpsc::unbounded_channel::<Transition>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::sleep(window);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        next = rx.recv() => match next {
                            Some(t) => batch.push(t),
                            None => break,
                        },
                    }
                }
                if !enabled() {
                    continue;
                }
                if let Some((title, body)) = render(&batch) {
                    notifier.notify(&title, &body);
                }
            }
        });
        Coalescer { tx }
    }

    pub fn push(&self, transition: Transition) {
        let _ = self.tx.send(transition);
    }
}

/// Turns a room's events into transitions: remembers who is online so "back online" is told only
/// after an offline, and never tells this machine about its own participant.
#[derive(Default)]
pub struct PeopleTracker {
    /// Per room: participant id → (nickname, online).
    rooms: HashMap<String, HashMap<String, (String, bool)>>,
}

impl PeopleTracker {
    /// Learns who is in a room without notifying (the state when following starts).
    pub fn seed(&mut self, room: &str, participants: &[crate::protocol::Participant]) {
        let people = self.rooms.entry(room.to_string()).or_default();
        for p in participants {
            people.insert(p.id.clone(), (p.nickname.clone(), p.status.as_str() == "online"));
        }
    }

    /// The transition `event` is, if any. `own` is this machine's participant id.
    pub fn observe(&mut self, event: &EventEnvelope, own: Option<&str>) -> Option<Transition> {
        let room = event.room_code.clone()?;
        let data = &event.data;
        let id = data["id"].as_str().or_else(|| data["participantId"].as_str())?.to_string();
        let people = self.rooms.entry(room.clone()).or_default();
        let mine = own == Some(id.as_str());
        let nickname = |fallback: &str| data["nickname"].as_str().unwrap_or(fallback).to_string();
        match event.kind.as_str() {
            "participant.joined" => {
                let online = data["status"].as_str() != Some("offline");
                let who = nickname(&id);
                let known = people.insert(id, (who.clone(), online)).is_some();
                (!mine && !known).then_some(Transition::Joined { room, who })
            }
            "participant.updated" => {
                // Busy is alive too: it is serving a request.
                let online = matches!(data["status"].as_str(), Some("online" | "busy"));
                let who = nickname(&id);
                let was_online = people.insert(id, (who.clone(), online)).map(|(_, o)| o);
                (!mine && online && was_online == Some(false)).then_some(Transition::Back { room, who })
            }
            "participant.offline" => {
                let entry = people.entry(id.clone()).or_insert_with(|| (id.clone(), true));
                let was_online = std::mem::replace(&mut entry.1, false);
                let who = entry.0.clone();
                (!mine && was_online).then_some(Transition::Offline { room, who })
            }
            "participant.left" => {
                people.remove(&id);
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, data: serde_json::Value) -> EventEnvelope {
        EventEnvelope { kind: kind.into(), timestamp: 0, room_code: Some("ABC123".into()), data }
    }

    #[test]
    fn a_participant_is_told_once_per_transition() {
        let mut t = PeopleTracker::default();
        let joined = event("participant.joined", json!({"id": "p1", "nickname": "Bob", "status": "online"}));
        assert_eq!(t.observe(&joined, None), Some(Transition::Joined { room: "ABC123".into(), who: "Bob".into() }));
        assert_eq!(t.observe(&joined, None), None, "a re-registration is not a second join");
        let offline = event("participant.offline", json!({"participantId": "p1"}));
        assert_eq!(t.observe(&offline, None), Some(Transition::Offline { room: "ABC123".into(), who: "Bob".into() }));
        assert_eq!(t.observe(&offline, None), None);
        let online = event("participant.updated", json!({"id": "p1", "nickname": "Bob", "status": "online"}));
        assert_eq!(t.observe(&online, None), Some(Transition::Back { room: "ABC123".into(), who: "Bob".into() }));
        let busy = event("participant.updated", json!({"id": "p1", "nickname": "Bob", "status": "busy"}));
        assert_eq!(t.observe(&busy, None), None, "online → busy is not news");
        assert_eq!(t.observe(&online, None), None, "busy → online is not a comeback");
        t.observe(&offline, None);
        assert_eq!(t.observe(&busy, None), Some(Transition::Back { room: "ABC123".into(), who: "Bob".into() }));
        assert_eq!(t.observe(&offline, Some("p1")), None, "this machine's own participant is never told");
    }

    #[test]
    fn a_burst_renders_as_one_summary() {
        let batch: Vec<Transition> =
            (0..10).map(|i| Transition::Offline { room: "ABC123".into(), who: format!("p{i}") }).collect();
        let (title, body) = render(&batch).unwrap();
        assert_eq!(title, "10 changes in Gambi");
        assert_eq!(body, "10 participants went offline in room ABC123");
        let (title, body) = render(&batch[..1]).unwrap();
        assert_eq!((title.as_str(), body.as_str()), ("p0 went offline", "in room ABC123"));
    }
}
