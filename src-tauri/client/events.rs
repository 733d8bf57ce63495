//! Following a room's `/v1` event stream over HTTP: connects, parses the SSE frames, and when the
//! connection drops reconnects with backoff and resumes after the last event handed out
//! (`Last-Event-ID`, so the hub replays what was missed). `gambi events watch` prints what it
//! yields; the desktop app forwards it to its window and its notifications.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::Url;

use super::{api_error, transport_reason, ClientError, HubClient, CONNECT_TIMEOUT};
use crate::hub::inference::sse_parse::SseParser;

/// First pause before reconnecting; doubled after each failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Short enough that a follower is back soon after a hub restart (missed events are replayed, so
/// waiting longer would only delay them).
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The hub sends a keep-alive comment every 15 s; three missed in a row is a dead connection (a
/// sleeping laptop, a vanished network) that TCP alone might not notice for minutes.
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// The most of an error answer read to find the hub's message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What [`RoomEvents::next`] hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The stream is open. `resumed_after` is the id of the last event handed out before a
    /// reconnection (the hub replays from there); `None` on the first connection.
    Connected { reconnected: bool, resumed_after: Option<String> },
    /// One event: its SSE name and its `data:` (the `/v1` envelope as JSON text).
    Event { name: String, data: String },
    /// The connection dropped; the next call waits `retry_in`, then tries again.
    Reconnecting { reason: String, retry_in: Duration, attempt: u32 },
}

/// Why following stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The first connection found no hub: nothing has been followed yet.
    #[error("cannot reach the hub at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The hub refused the stream (the room is gone or never was, or access is denied) — waiting
    /// will not change that.
    #[error(transparent)]
    Refused(#[from] ClientError),
}

/// A room's event stream that survives dropped connections.
pub struct RoomEvents {
    http: reqwest::Client,
    url: Url,
    hub_url: String,
    parser: SseParser,
    response: Option<reqwest::Response>,
    /// Frames parsed but not handed out yet, each with the stream position after it.
    pending: VecDeque<(String, String, Option<String>)>,
    /// The id of the last event handed out: sent as `Last-Event-ID` when reconnecting.
    last_id: Option<String>,
    connected_once: bool,
    /// The room's password (or host token), sent on every connection: a protected room's events
    /// need it.
    key: Option<String>,
    attempt: u32,
    backoff: Duration,
    wait: Option<Duration>,
}

impl RoomEvents {
    /// Follows room `code` on the hub `client` talks to. Nothing is sent until [`Self::next`].
    pub fn new(client: &HubClient, code: &str) -> Result<RoomEvents, ClientError> {
        let url = client.events_url(code)?;
        // No overall timeout: the answer is a stream that lasts as long as the follower.
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("gambi/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Unreachable { url: url.to_string(), source })?;
        Ok(RoomEvents {
            http,
            url,
            hub_url: client.base_url().to_string(),
            parser: SseParser::new(),
            response: None,
            pending: VecDeque::new(),
            last_id: None,
            connected_once: false,
            key: None,
            attempt: 0,
            backoff: FIRST_BACKOFF,
            wait: None,
        })
    }

    /// Sends `key` (the room's password or host token) with every connection.
    pub fn with_key(mut self, key: Option<String>) -> RoomEvents {
        self.key = key.filter(|k| !k.is_empty());
        self
    }

    /// The hub's address, as given.
    pub fn hub_url(&self) -> &str {
        &self.hub_url
    }

    /// The id of the last event handed out.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The next thing that happens on the stream. Errors are final; everything that retrying can
    /// fix comes back as [`StreamItem::Reconnecting`].
    pub async fn next(&mut self) -> Result<StreamItem, FollowError> {
        loop {
            if let Some((name, data, position)) = self.pending.pop_front() {
                self.last_id = position;
                return Ok(StreamItem::Event { name, data });
            }
            let Some(response) = self.response.as_mut() else {
                if let Some(wait) = self.wait.take() {
                    tokio::time::sleep(wait).await;
                }
                return match self.open().await {
                    Ok(response) => {
                        self.response = Some(response);
                        self.parser = SseParser::new();
                        let reconnected = self.connected_once;
                        self.connected_once = true;
                        self.attempt = 0;
                        self.backoff = FIRST_BACKOFF;
                        Ok(StreamItem::Connected { reconnected, resumed_after: self.last_id.clone() })
                    }
                    Err(Dropped::Refused(e)) if !self.connected_once || !is_transient(&e) => {
                        Err(FollowError::Refused(e))
                    }
                    Err(Dropped::Unreachable(reason)) if !self.connected_once => {
                        Err(FollowError::Unreachable { url: self.hub_url.clone(), reason })
                    }
                    Err(Dropped::Refused(e)) => Ok(self.retry(e.to_string())),
                    Err(Dropped::Unreachable(reason)) => Ok(self.retry(format!("cannot reach the hub: {reason}"))),
                };
            };
            let chunk = match tokio::time::timeout(IDLE_LIMIT, response.chunk()).await {
                Err(_) => Err(format!("nothing from the hub for {} s", IDLE_LIMIT.as_secs())),
                Ok(Err(e)) => Err(format!("the connection broke: {}", transport_reason(&e))),
                Ok(Ok(None)) => Err("the hub ended the stream".to_string()),
                Ok(Ok(Some(chunk))) => Ok(chunk),
            };
            match chunk {
                Err(reason) => {
                    self.response = None;
                    return Ok(self.retry(reason));
                }
                // Fed a line at a time: the parser records an `id:` as soon as it reads the line,
                // and the position to resume after must be that of the last event handed out, not
                // of one whose frame is still incomplete when the connection drops.
                Ok(chunk) => {
                    for line in chunk.split_inclusive(|b| *b == b'\n') {
                        for frame in self.parser.push(line) {
                            let position = self.parser.last_event_id().map(str::to_string);
                            self.pending.push_back((
                                frame.event.unwrap_or_else(|| "message".into()),
                                frame.data,
                                position,
                            ));
                        }
                    }
                }
            }
        }
    }

    fn retry(&mut self, reason: String) -> StreamItem {
        self.attempt += 1;
        let retry_in = self.backoff;
        self.wait = Some(retry_in);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        StreamItem::Reconnecting { reason, retry_in, attempt: self.attempt }
    }

    /// Opens the stream, resuming after the last event handed out.
    async fn open(&self) -> Result<reqwest::Response, Dropped> {
        let mut request = self.http.get(self.url.clone()).header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(id) = &self.last_id {
            request = request.header("last-event-id", id.as_str());
        }
        let mut response = request.send().await.map_err(|e| Dropped::Unreachable(transport_reason(&e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ERROR_BODY {
                break;
            }
        }
        Err(Dropped::Refused(api_error(status, &body)))
    }
}

/// Why a connection attempt failed.
enum Dropped {
    Unreachable(String),
    Refused(ClientError),
}

/// A refusal that may go away by itself (an overloaded or restarting hub, or a proxy in front).
fn is_transient(e: &ClientError) -> bool {
    e.status().is_some_and(|s| s == 429 || s >= 500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_hubs_words_and_codes() {
        let body = br#"{"error":{"code":"ROOM_NOT_FOUND","message":"Room ABC123 isn't on this hub."},"meta":{"requestId":"r"}}"#;
        let e = api_error(reqwest::StatusCode::NOT_FOUND, body);
        assert_eq!(e.exit_code(), 4);
        assert_eq!(e.to_string(), "Room ABC123 isn't on this hub.");
        assert!(!is_transient(&e));
        assert!(is_transient(&api_error(reqwest::StatusCode::BAD_GATEWAY, b"<html>")));
    }
}
