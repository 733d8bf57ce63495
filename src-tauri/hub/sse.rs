//! The two per-room SSE streams. Both read the same bus; they differ in names (`participant.joined`
//! vs `participant:joined`) and payloads (envelope vs bare). A stream starts with `connected`,
//! replays what a `Last-Event-ID` missed, then follows live events until the room closes or the hub
//! stops. A reader that falls behind catches up from the room's ring, and is sent a `stream.lagged`
//! event (`stream:lagged` on the classic stream) only when events it should have had are gone.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::protocol::events::EventKind;
use crate::protocol::now_ms;

use super::events::HubEvent;
use super::validate::Surface;
use super::Hub;

/// `Last-Event-ID` as the stream position to resume after; anything unreadable starts fresh.
pub fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers.get("last-event-id")?.to_str().ok()?.trim().parse().ok()
}

fn render(event: &HubEvent, surface: Surface) -> Event {
    let (name, data) = match surface {
        Surface::V1 => (event.kind.v1_name(), event.v1_json.as_str()),
        Surface::Classic => (event.kind.classic_name(), event.classic_json.as_str()),
    };
    Event::default().event(name).id(event.id.to_string()).data(data)
}

/// An event of this stream only (not part of the room's history): `connected` or `stream.lagged`.
fn local_event(
    surface: Surface,
    code: &str,
    v1_name: &str,
    classic_name: &str,
    data: serde_json::Value,
    id: Option<u64>,
) -> Event {
    let (name, payload) = match surface {
        Surface::V1 => {
            (v1_name, json!({"type": v1_name, "timestamp": now_ms(), "roomCode": code, "data": data}).to_string())
        }
        Surface::Classic => (classic_name, data.to_string()),
    };
    let event = Event::default().event(name).data(payload);
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

struct StreamState {
    hub: Hub,
    code: String,
    surface: Surface,
    pending: VecDeque<Event>,
    receiver: tokio::sync::broadcast::Receiver<Arc<HubEvent>>,
    last_sent: u64,
    /// This stream's place in its room's count of open streams, given back when the stream ends.
    _ticket: super::StreamTicket,
}

fn lagged(surface: Surface, code: &str) -> Event {
    local_event(
        surface,
        code,
        "stream.lagged",
        "stream:lagged",
        json!({"missed": true, "hint": "Some events were dropped because this reader fell behind; reload the room's state."}),
        None,
    )
}

async fn next_event(mut st: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    let shutdown = st.hub.shutdown_token();
    loop {
        if let Some(event) = st.pending.pop_front() {
            return Some((Ok(event), st));
        }
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            r = st.receiver.recv() => r,
        };
        match received {
            Ok(event) => {
                if event.room_code != st.code || event.id <= st.last_sent {
                    continue;
                }
                if matches!(event.kind, EventKind::RoomClosed) {
                    return None;
                }
                st.last_sent = event.id;
                return Some((Ok(render(&event, st.surface)), st));
            }
            Err(RecvError::Lagged(_)) => {
                if st.hub.registry().room(&st.code).is_err() {
                    return None;
                }
                let (events, missed) = st.hub.registry().bus().replay(&st.code, st.last_sent);
                if missed {
                    st.pending.push_back(lagged(st.surface, &st.code));
                }
                for event in events {
                    st.last_sent = event.id;
                    st.pending.push_back(render(&event, st.surface));
                }
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// The SSE response for a room; the caller has checked that the room exists.
pub fn room_stream(
    hub: Hub,
    code: String,
    last_event_id: Option<u64>,
    surface: Surface,
    ticket: super::StreamTicket,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let sub = hub.registry().bus().subscribe_room(&code, last_event_id);
    let client_id = uuid::Uuid::new_v4().to_string();
    let mut pending = VecDeque::with_capacity(sub.replay.len() + 2);
    pending.push_back(local_event(
        surface,
        &code,
        "connected",
        "connected",
        json!({"clientId": client_id}),
        Some(sub.position),
    ));
    if sub.missed {
        pending.push_back(lagged(surface, &code));
    }
    let mut last_sent = sub.position;
    for event in &sub.replay {
        last_sent = event.id;
        pending.push_back(render(event, surface));
    }
    let keep_alive = hub.config().keep_alive;
    let state = StreamState { hub, code, surface, pending, receiver: sub.receiver, last_sent, _ticket: ticket };
    Sse::new(futures_util::stream::unfold(state, next_event))
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
}
