//! The tunnel server: participants dial `GET /v1/rooms/:code/participants/:id/tunnel?token=…` and
//! the hub sends them requests over that WebSocket. One task owns each socket; the proxy reaches it
//! through [`TunnelConn`]: frames go out on an `mpsc` channel, and each request in flight has its
//! own channel keyed by request id, fed by the socket task as answer frames arrive.
//!
//! The socket task never waits on a slow client: each request's channel is unbounded but its queued
//! bytes are counted, and a request whose client lets more than [`MAX_QUEUED_BYTES`] pile up is failed.
//! A request whose consumer goes away sends `tunnel.cancel` so the participant aborts its provider
//! call. When the socket closes, every request still in flight fails at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::now_ms;
use crate::protocol::tunnel::{decode_chunk, Decoded, TunnelMessage};

use super::Hub;

/// A tunnel silent for this long is closed (participants ping every 10 s).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes an unread answer may queue before its request is failed.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// Largest frame accepted from a participant.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Requests a tunnel remembers after they end, so the frames a participant was already sending
/// when the hub cancelled one are dropped quietly instead of counted as malformed.
pub const RETIRED_KEPT: usize = 256;

/// One step of an answer coming back through a tunnel.
#[derive(Debug)]
pub enum TunnelEvent {
    Start {
        status: u16,
        headers: Vec<(String, String)>,
    },
    Chunk(Bytes),
    End,
    /// The participant reported a failure, or the tunnel went away (`stage` = `tunnel`).
    Error {
        stage: String,
        message: String,
    },
}

struct Pending {
    tx: mpsc::UnboundedSender<TunnelEvent>,
    queued: Arc<AtomicUsize>,
}

/// The hub's side of one participant's open tunnel.
pub struct TunnelConn {
    generation: u64,
    outgoing: mpsc::Sender<Message>,
    pending: Mutex<HashMap<String, Pending>>,
    /// The most recent requests that ended, oldest first (at most [`RETIRED_KEPT`]).
    retired: Mutex<std::collections::VecDeque<String>>,
    closed: CancellationToken,
    malformed: AtomicU64,
    /// Most requests in flight at once on this tunnel.
    max_in_flight: usize,
}

impl TunnelConn {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a request that ended: a participant still streaming it has not yet seen the
    /// cancel, and its late frames are no sign of a broken peer.
    fn retire(&self, request_id: String) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        if retired.len() >= RETIRED_KEPT {
            retired.pop_front();
        }
        retired.push_back(request_id);
    }

    fn was_retired(&self, request_id: &str) -> bool {
        self.retired.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|r| r == request_id)
    }

    /// Frames that did not parse or named no request in flight (nor one that just ended).
    pub fn malformed_frames(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.pending().len()
    }

    /// Sends a `tunnel.request` and returns the stream of its answer. Dropping the [`TunnelReply`]
    /// before its end cancels the request on the participant.
    pub async fn send(self: &Arc<Self>, request: TunnelMessage) -> Result<TunnelReply, String> {
        let request_id = request.request_id().unwrap_or_default().to_string();
        self.send_text(request_id, request.encode()).await
    }

    /// Sends a `tunnel.request` frame already written as `text` (with its body's text in place).
    pub async fn send_text(self: &Arc<Self>, request_id: String, text: String) -> Result<TunnelReply, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        if self.closed.is_cancelled() {
            return Err("the participant's tunnel is closed".into());
        }
        {
            let mut pending = self.pending();
            if pending.len() >= self.max_in_flight {
                return Err(format!("its tunnel already has {} requests in flight", self.max_in_flight));
            }
            pending.insert(request_id.clone(), Pending { tx, queued: queued.clone() });
        }
        let reply = TunnelReply { conn: self.clone(), request_id, rx, queued, finished: false };
        if self.outgoing.send(Message::Text(text.into())).await.is_err() {
            return Err("the participant's tunnel is closed".into());
        }
        Ok(reply)
    }

    fn close(&self) {
        self.closed.cancel();
    }
}

/// The answer to one tunnelled request, step by step.
pub struct TunnelReply {
    conn: Arc<TunnelConn>,
    request_id: String,
    rx: mpsc::UnboundedReceiver<TunnelEvent>,
    queued: Arc<AtomicUsize>,
    finished: bool,
}

impl TunnelReply {
    /// The next step; `None` only if the tunnel vanished without saying so (treated as an error).
    pub async fn next(&mut self) -> Option<TunnelEvent> {
        let event = self.rx.recv().await;
        match &event {
            Some(TunnelEvent::Chunk(b)) => {
                self.queued.fetch_sub(b.len(), Ordering::Relaxed);
            }
            Some(TunnelEvent::End) | Some(TunnelEvent::Error { .. }) | None => self.finished = true,
            Some(TunnelEvent::Start { .. }) => {}
        }
        event
    }
}

impl Drop for TunnelReply {
    fn drop(&mut self) {
        let was_pending = self.conn.pending().remove(&self.request_id).is_some();
        if was_pending {
            self.conn.retire(self.request_id.clone());
        }
        if !self.finished && was_pending {
            let cancel = TunnelMessage::Cancel { request_id: self.request_id.clone() };
            // Best effort: a full or closed tunnel has bigger problems than one stray request.
            let _ = self.conn.outgoing.try_send(Message::Text(cancel.encode().into()));
        }
    }
}

type TunnelMap = HashMap<(String, String), Arc<TunnelConn>>;

/// Every open tunnel of the hub, by room code and participant id.
#[derive(Clone, Default)]
pub struct Tunnels {
    map: Arc<Mutex<TunnelMap>>,
    generations: Arc<AtomicU64>,
}

impl Tunnels {
    fn map(&self) -> std::sync::MutexGuard<'_, TunnelMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, code: &str, id: &str) -> Option<Arc<TunnelConn>> {
        self.map().get(&(code.to_string(), id.to_string())).cloned()
    }

    /// Closes a participant's tunnel (it left, or was removed).
    pub fn close(&self, code: &str, id: &str) {
        if let Some(conn) = self.map().remove(&(code.to_string(), id.to_string())) {
            conn.close();
        }
    }

    /// Closes every tunnel of a room (it was deleted or expired).
    pub fn close_room(&self, code: &str) {
        let mut map = self.map();
        map.retain(|(c, _), conn| {
            if c == code {
                conn.close();
                false
            } else {
                true
            }
        });
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Tells every participant the hub is shutting down (`tunnel.shutdown`).
    pub fn announce_shutdown(&self, grace: Duration) {
        let frame = TunnelMessage::Shutdown { grace_ms: grace.as_millis() as u64 }.encode();
        for conn in self.map().values() {
            let _ = conn.outgoing.try_send(Message::Text(frame.clone().into()));
        }
    }

    /// Closes every tunnel (the hub is stopping).
    pub fn close_all(&self) {
        for (_, conn) in self.map().drain() {
            conn.close();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs one upgraded tunnel until it closes.
pub async fn run(hub: Hub, code: String, id: String, socket: WebSocket) {
    let tunnels = hub.tunnels().clone();
    let (outgoing, mut outbox) = mpsc::channel::<Message>(256);
    let conn = Arc::new(TunnelConn {
        generation: tunnels.generations.fetch_add(1, Ordering::Relaxed),
        outgoing: outgoing.clone(),
        pending: Mutex::new(HashMap::new()),
        retired: Mutex::new(std::collections::VecDeque::with_capacity(RETIRED_KEPT)),
        // Not a child of the hub's shutdown token: at shutdown, requests in flight on the tunnel
        // finish first (see `Tunnels::announce_shutdown` and `Tunnels::close_all`).
        closed: CancellationToken::new(),
        malformed: AtomicU64::new(0),
        max_in_flight: hub.config().max_in_flight_per_tunnel.max(1),
    });
    if let Some(old) = tunnels.map().insert((code.clone(), id.clone()), conn.clone()) {
        // A participant that reconnects replaces its old tunnel.
        old.close();
    }
    // The tunnel is in the map before the registry is asked, so a participant removed at any
    // moment is either seen gone here or has its tunnel closed by the removal.
    if hub.registry().set_tunnel(&code, &id, true) {
        tracing::info!(%code, participant = %id, "tunnel open");
    } else {
        tracing::info!(%code, participant = %id, "the participant left while its tunnel opened; closing it");
        conn.close();
    }

    let (mut sink, mut stream) = socket.split();
    let closed = conn.closed.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                message = outbox.recv() => match message {
                    Some(m) => {
                        // Queue what is already waiting and flush once per burst.
                        if sink.feed(m).await.is_err() { break }
                        while let Ok(more) = outbox.try_recv() {
                            if sink.feed(more).await.is_err() { break }
                        }
                        if sink.flush().await.is_err() { break }
                    }
                    None => break,
                },
                _ = closed.cancelled() => {
                    // Drain what was queued (cancels, a last pong), then say goodbye.
                    while let Ok(m) = outbox.try_recv() {
                        if sink.send(m).await.is_err() { break; }
                    }
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            }
        }
    });

    // Malformed frames are ignored and counted, as the contract says; but a peer that sends more
    // than the limit within one window is broken or hostile, and its tunnel is closed (1008).
    let limit = u64::from(hub.config().malformed_frame_limit);
    let window = hub.config().malformed_frame_window;
    let mut window_start = tokio::time::Instant::now();
    let mut window_base = 0u64;
    let reason = loop {
        let malformed = conn.malformed.load(Ordering::Relaxed);
        if window_start.elapsed() >= window {
            window_start = tokio::time::Instant::now();
            window_base = malformed;
        } else if malformed - window_base > limit {
            let frame = axum::extract::ws::CloseFrame { code: 1008, reason: "too many malformed frames".into() };
            let _ = conn.outgoing.try_send(Message::Close(Some(frame)));
            break "closed by the hub: too many malformed frames";
        }
        let frame = tokio::select! {
            _ = conn.closed.cancelled() => break "closed by the hub",
            r = tokio::time::timeout(SILENCE_TIMEOUT, stream.next()) => match r {
                Err(_) => break "silent for too long",
                Ok(None) => break "closed by the participant",
                Ok(Some(Err(_))) => break "connection error",
                Ok(Some(Ok(frame))) => frame,
            },
        };
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(_) => break "closed by the participant",
            // WebSocket-level pings are answered by the library; binary frames are not part of the
            // contract.
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Binary(_) => {
                conn.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        handle_frame(&hub, &code, &id, &conn, text.as_str());
    };

    conn.close();
    {
        let mut map = tunnels.map();
        let key = (code.clone(), id.clone());
        if map.get(&key).is_some_and(|c| c.generation == conn.generation) {
            map.remove(&key);
        }
    }
    let failed: Vec<Pending> = conn.pending().drain().map(|(_, p)| p).collect();
    for p in failed {
        let _ = p.tx.send(TunnelEvent::Error { stage: "tunnel".into(), message: format!("the tunnel {reason}") });
    }
    if tunnels.get(&code, &id).is_none() {
        hub.registry().set_tunnel(&code, &id, false);
    }
    let _ = writer.await;
    tracing::info!(%code, participant = %id, reason, malformed = conn.malformed_frames(), "tunnel closed");
}

fn handle_frame(hub: &Hub, code: &str, id: &str, conn: &Arc<TunnelConn>, text: &str) {
    let message = match TunnelMessage::decode(text) {
        Decoded::Message(m) => m,
        Decoded::Ignored { reason } => {
            let n = conn.malformed.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(%code, participant = %id, %reason, count = n, "tunnel frame ignored");
            return;
        }
    };
    let (request_id, event) = match message {
        TunnelMessage::Ping { timestamp } => {
            hub.registry().touch_tunnel(code, id);
            let pong = TunnelMessage::Pong { timestamp: if timestamp == 0 { now_ms() } else { timestamp } };
            let _ = conn.outgoing.try_send(Message::Text(pong.encode().into()));
            return;
        }
        TunnelMessage::ResponseStart { request_id, status, headers } => {
            (request_id, TunnelEvent::Start { status, headers: headers.into_iter().collect() })
        }
        TunnelMessage::ResponseChunk { request_id, chunk } => match decode_chunk(&chunk) {
            Some(bytes) => (request_id, TunnelEvent::Chunk(Bytes::from(bytes))),
            None => {
                conn.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        TunnelMessage::ResponseEnd { request_id } => (request_id, TunnelEvent::End),
        TunnelMessage::ResponseError { request_id, stage, message } => {
            (request_id, TunnelEvent::Error { stage, message })
        }
        // Messages a participant has no business sending.
        TunnelMessage::Request { .. }
        | TunnelMessage::Pong { .. }
        | TunnelMessage::Cancel { .. }
        | TunnelMessage::Shutdown { .. } => {
            conn.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let terminal = matches!(event, TunnelEvent::End | TunnelEvent::Error { .. });
    let mut pending = conn.pending();
    let Some(entry) = pending.get(&request_id) else {
        if conn.was_retired(&request_id) {
            tracing::trace!(%code, participant = %id, %request_id, "late frame of an ended request dropped");
        } else {
            conn.malformed.fetch_add(1, Ordering::Relaxed);
        }
        return;
    };
    if let TunnelEvent::Chunk(b) = &event {
        let queued = entry.queued.fetch_add(b.len(), Ordering::Relaxed) + b.len();
        if queued > MAX_QUEUED_BYTES {
            let _ = entry.tx.send(TunnelEvent::Error {
                stage: "stream".into(),
                message: "the client is not reading the answer".into(),
            });
            pending.remove(&request_id);
            conn.retire(request_id.clone());
            let cancel = TunnelMessage::Cancel { request_id };
            let _ = conn.outgoing.try_send(Message::Text(cancel.encode().into()));
            return;
        }
    }
    if entry.tx.send(event).is_err() || terminal {
        pending.remove(&request_id);
        conn.retire(request_id);
    }
}
