//! What a room and each of its participants have served: the `stats` field the hub adds to
//! `GET /v1/rooms/:code` and to each participant of `GET /v1/rooms/:code/participants` (additive;
//! for a protected room only to readers with its key). The counting lives in `hub::stats`.
//!
//! The totals count since the hub started (they are not kept in the state file). The averages are
//! over the recent window only, so one slow request an hour ago does not colour them for good.

use serde::{Deserialize, Serialize};

/// The recent window of the averages: completions of the last this many seconds...
pub const RECENT_WINDOW_SECS: u64 = 300;
/// ...and at most this many of them.
pub const RECENT_WINDOW_REQUESTS: usize = 50;
/// Callers kept per participant.
pub const RECENT_CALLERS: usize = 5;

/// Counters of requests routed to a room or to one participant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Requests routed. A room counts a request once even when it failed over to a second
    /// participant; each participant counts the tries it was given.
    pub requests: u64,
    /// Tries that answered (`llm.complete`).
    pub completed: u64,
    /// Tries that failed (`llm.error`), including ones the hub then failed over.
    pub errors: u64,
    /// Tokens as the providers reported them; answers without usage add nothing.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Requests routed in the last 24 hours.
    pub requests_last_24h: u64,
    /// Average time to first token over the recent window; absent when it holds no completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_ttft_ms: Option<f64>,
    /// Average tokens per second over the recent window, of the completions that reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_tokens_per_second: Option<f64>,
    /// Completions in the recent window (what the averages are over).
    pub recent_completed: u64,
    /// When the last request was routed (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_at: Option<u64>,
}

/// `stats` of a room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomStats {
    #[serde(flatten)]
    pub usage: Usage,
    /// Participants that can take requests now (online or busy, and reachable).
    pub participants_online: usize,
    /// Participants the hub knows in the room now, offline ones included.
    pub participants_registered: usize,
    /// Different participants that have shared into the room since the hub started, including
    /// the ones that have left: "3 people have shared here".
    pub participants_shared: u64,
    /// Since when the counters count (epoch ms): the hub's start, or the room's creation if later.
    pub since: u64,
}

/// `stats` of a participant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantStats {
    #[serde(flatten)]
    pub usage: Usage,
    /// The last few requests routed to it, newest first: who is using this machine.
    #[serde(default)]
    pub recent_callers: Vec<RecentCaller>,
}

/// One request's caller, as `llm.request` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentCaller {
    /// The client's address as the hub saw it (`"192.168.1.7"`); `"unknown"` when it had none.
    pub caller: String,
    pub model: String,
    pub at: u64,
}

/// `GET /v1/rooms/:code`: the room summary, and its `stats` where the reader may see them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomDetails {
    #[serde(flatten)]
    pub room: super::RoomSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<RoomStats>,
}

/// `GET /v1/rooms/:code/participants/:id`: the participant, and its `stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantDetails {
    #[serde(flatten)]
    pub participant: super::Participant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<ParticipantStats>,
}
