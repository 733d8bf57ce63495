//! What `/metrics` reads of the registry: each room's participants with their requests in flight,
//! copied in one pass under the registry's lock (a few words per participant, never a record's
//! config), so a scrape of a big hub holds the lock for as long as the copy takes and no longer.
//! The counters themselves are `hub::stats`'; the rendering is `hub::metrics`'.

use super::Registry;

/// One participant's place in its room now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantLoad {
    pub id: String,
    /// Requests holding one of its places now.
    pub in_flight: u32,
    pub max_concurrency: u32,
    /// Its tunnel is open (a direct participant: always).
    pub connected: bool,
}

/// One room now: its participants in listing order and the requests waiting in its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLoad {
    pub code: String,
    pub participants: Vec<ParticipantLoad>,
    pub queued: usize,
}

impl Registry {
    /// Every room (or only those in `only`), by code, with its participants' loads.
    pub fn loads(&self, only: Option<&[String]>) -> Vec<RoomLoad> {
        let mut rooms: Vec<RoomLoad> = {
            let state = self.state();
            state
                .rooms
                .iter()
                .filter(|(code, _)| only.is_none_or(|only| only.contains(code)))
                .map(|(code, room)| RoomLoad {
                    code: code.clone(),
                    participants: room
                        .participants
                        .values()
                        .map(|r| ParticipantLoad {
                            id: r.public.id.clone(),
                            in_flight: r.in_flight,
                            max_concurrency: r.public.max_concurrency,
                            connected: r.public.connection.connected,
                        })
                        .collect(),
                    queued: 0,
                })
                .collect()
        };
        // The queue is read through its own accessor, after the copy: whatever shape the queue
        // takes, `queued` is what it holds.
        for room in &mut rooms {
            room.queued = self.queued(&room.code);
        }
        rooms.sort_by(|a, b| a.code.cmp(&b.code));
        rooms
    }
}
