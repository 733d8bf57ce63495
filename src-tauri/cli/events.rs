//! `gambi events watch`: follows a room's `/v1` event stream and prints each event as it arrives —
//! a readable line for people, the event's envelope as one compact JSON line for scripts. A dropped
//! connection is resumed with `Last-Event-ID`, so the hub replays what was missed and nothing is
//! lost or printed twice. The SSE framing is the hub's own parser
//! ([`SseParser`](crate::hub::inference::sse_parse::SseParser)); what each event means is
//! [`crate::protocol::events`].

use std::collections::HashMap;
use std::time::Duration;

use futures_util::FutureExt as _;
use serde_json::Value;

use super::output::{self, Format, Output};
use super::serve::shutdown_signal;
use super::{Failure, HubOptions};
use crate::client::{api_error, ClientError, CONNECT_TIMEOUT};
use crate::hub::inference::sse_parse::SseParser;
use crate::protocol::events::EventEnvelope;
use crate::protocol::normalize_room_code;

/// First pause before reconnecting; doubled after each failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Short enough that a watcher is back soon after a hub restart (missed events are replayed, so
/// waiting longer would only delay them).
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The hub sends a keep-alive comment every 15 s; three missed in a row is a dead connection (a
/// sleeping laptop, a vanished network) that TCP alone might not notice for minutes.
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// The most of an error answer read to find the hub's message.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The room's 6-character code.
    #[arg(long, value_name = "CODE")]
    pub room: String,
    #[command(flatten)]
    pub hub: HubOptions,
}

/// Follows the room until Ctrl-C or SIGTERM (exit 0) or until the room is gone (exit 4). The first
/// connection must succeed (exit 3 when the hub cannot be reached); later drops are retried.
pub async fn watch(args: WatchArgs) -> Result<(), Failure> {
    // Installed before the first byte is read, so an early Ctrl-C still exits 0.
    let mut signal = Box::pin(shutdown_signal());
    if (&mut signal).now_or_never().is_some() {
        return Ok(());
    }
    let client = args.hub.client()?;
    let code = normalize_room_code(&args.room).ok_or_else(|| {
        Failure::message(
            2,
            format!("{:?} is not a room code", output::sanitize(&args.room)),
            Some("Room codes are 6 letters or digits, like ABC123; see 'gambi room list'.".into()),
        )
    })?;
    let url = client.events_url(&code)?;
    // No overall timeout: the answer is a stream that lasts as long as the watch.
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("gambi/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("cannot set up the HTTP client")))?;
    let mut watcher = Watcher {
        http,
        url,
        hub_url: client.base_url().to_string(),
        code,
        printer: EventPrinter::new(args.hub.output()),
        last_id: None,
    };
    tokio::select! {
        _ = &mut signal => Ok(()),
        ended = watcher.follow() => ended,
    }
}

struct Watcher {
    http: reqwest::Client,
    url: reqwest::Url,
    hub_url: String,
    code: String,
    printer: EventPrinter,
    /// The id of the last event printed: sent as `Last-Event-ID` when reconnecting.
    last_id: Option<String>,
}

/// Why a connection to the stream ended, when it is worth trying again.
enum Dropped {
    Unreachable(String),
    Refused(ClientError),
    Ended(String),
}

impl Watcher {
    /// Connects, prints, and reconnects until a failure that retrying cannot fix.
    async fn follow(&mut self) -> Result<(), Failure> {
        let mut connected_once = false;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        loop {
            let dropped = match self.open().await {
                Ok(response) => {
                    if connected_once {
                        let after = self.last_id.as_deref().map(|id| format!(" after event {id}")).unwrap_or_default();
                        eprintln!("Reconnected to room {}; resuming{after}.", self.code);
                    } else {
                        // On stderr, so stdout stays events only; it tells a person (or a test)
                        // that from now on nothing is missed.
                        eprintln!("Watching room {} on {} (Ctrl-C to stop).", self.code, self.hub_url);
                    }
                    connected_once = true;
                    attempt = 0;
                    backoff = FIRST_BACKOFF;
                    self.read(response).await?
                }
                Err(dropped) => dropped,
            };
            let why = match dropped {
                // The room is gone (or never was), or the hub refuses us: waiting will not help.
                Dropped::Refused(e) if !connected_once || !is_transient(&e) => return Err(e.into()),
                Dropped::Refused(e) => e.to_string(),
                Dropped::Unreachable(reason) if !connected_once => {
                    return Err(Failure::message(
                        3,
                        format!("cannot reach the hub at {}: {reason}", self.hub_url),
                        Some("Start one with 'gambi hub serve' or pass --hub / GAMBI_HUB.".into()),
                    ))
                }
                Dropped::Unreachable(reason) => format!("cannot reach the hub: {reason}"),
                Dropped::Ended(reason) => reason,
            };
            attempt += 1;
            eprintln!(
                "Lost the event stream of room {} ({}); reconnecting in {} s (attempt {attempt})...",
                self.code,
                output::sanitize(&why),
                backoff.as_secs()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Opens the stream, resuming after the last event printed.
    async fn open(&self) -> Result<reqwest::Response, Dropped> {
        let mut request = self.http.get(self.url.clone()).header(reqwest::header::ACCEPT, "text/event-stream");
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

    /// Prints the stream's events until it ends; says why it ended.
    async fn read(&mut self, mut response: reqwest::Response) -> Result<Dropped, Failure> {
        let mut parser = SseParser::new();
        loop {
            let chunk = match tokio::time::timeout(IDLE_LIMIT, response.chunk()).await {
                Err(_) => return Ok(Dropped::Ended(format!("nothing from the hub for {} s", IDLE_LIMIT.as_secs()))),
                Ok(Err(e)) => return Ok(Dropped::Ended(format!("the connection broke: {}", transport_reason(&e)))),
                Ok(Ok(None)) => return Ok(Dropped::Ended("the hub ended the stream".into())),
                Ok(Ok(Some(chunk))) => chunk,
            };
            // Fed a line at a time: the parser records an `id:` as soon as it reads the line, and
            // the id to resume after must be that of the last event printed, not of one whose
            // frame is still incomplete when the connection drops.
            for line in chunk.split_inclusive(|b| *b == b'\n') {
                for frame in parser.push(line) {
                    self.printer.print(frame.event.as_deref().unwrap_or("message"), &frame.data)?;
                    self.last_id = parser.last_event_id().map(str::to_string);
                }
            }
        }
    }
}

/// A refusal that may go away by itself (an overloaded or restarting hub, or a proxy in front).
fn is_transient(e: &ClientError) -> bool {
    e.status().is_some_and(|s| s == 429 || s >= 500)
}

/// "connection refused", "timed out": the innermost cause, not reqwest's nested chain.
fn transport_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                _ => io.to_string(),
            };
        }
        reason = s.to_string();
        source = s.source();
    }
    reason
}

/// Prints events in one format, remembering nicknames so later lines can name people.
struct EventPrinter {
    out: Output,
    nicknames: HashMap<String, String>,
}

impl EventPrinter {
    fn new(out: Output) -> Self {
        EventPrinter { out, nicknames: HashMap::new() }
    }

    fn print(&mut self, event: &str, data: &str) -> Result<(), Failure> {
        match self.out.format {
            Format::Json | Format::Ndjson => {
                // Re-encoded compact, so one event is exactly one line whatever the hub sent.
                match serde_json::from_str::<Value>(data) {
                    Ok(value) => output::line(&serde_json::to_string(&value)?),
                    Err(e) => tracing::warn!(event, error = %e, "skipped an event that is not JSON"),
                }
            }
            Format::Text => {
                let Ok(envelope) = serde_json::from_str::<EventEnvelope>(data) else {
                    tracing::warn!(event, "skipped an event that is not an event envelope");
                    return Ok(());
                };
                if let Some(line) = self.text(&envelope) {
                    output::line(&line);
                }
            }
        }
        Ok(())
    }

    /// `12:34:56Z  participant.joined   alice (alice-x7k2q9) joined: llama3, online, tunnel connected`;
    /// `None` for events people do not need to see (`connected`).
    fn text(&mut self, event: &EventEnvelope) -> Option<String> {
        let data = &event.data;
        let s = |key: &str| data[key].as_str().unwrap_or("?").to_string();
        let details = match event.kind.as_str() {
            "connected" => return None,
            "participant.joined" | "participant.updated" => {
                let id = s("id");
                if let Some(nickname) = data["nickname"].as_str() {
                    self.nicknames.insert(id.clone(), nickname.to_string());
                }
                let verb = if event.kind == "participant.joined" { "joined" } else { "updated" };
                let connection = match (data["connection"]["kind"].as_str(), data["connection"]["connected"].as_bool())
                {
                    (Some("direct"), _) => "direct",
                    (_, Some(true)) => "tunnel connected",
                    _ => "tunnel not connected",
                };
                format!("{} {verb}: {}, {}, {connection}", self.who(&id), s("model"), s("status"))
            }
            "participant.left" => format!("{} left", self.who(&s("participantId"))),
            "participant.offline" => format!("{} went offline", self.who(&s("participantId"))),
            "llm.request" => {
                format!("{} {} → {} ({})", s("operation"), s("requestId"), self.who(&s("participantId")), s("model"))
            }
            "llm.complete" => {
                let m = &data["metrics"];
                let mut parts = vec![format!("ttft {} ms", number(&m["ttftMs"], 0))];
                parts.push(format!("total {} ms", number(&m["durationMs"], 0)));
                if let Some(tokens) = m["outputTokens"].as_u64() {
                    parts.push(format!("{tokens} tokens out"));
                }
                if !m["tokensPerSecond"].is_null() {
                    parts.push(format!("{} tokens/s", number(&m["tokensPerSecond"], 1)));
                }
                format!(
                    "{} done by {} ({}): {}",
                    s("requestId"),
                    self.who(&s("participantId")),
                    s("model"),
                    parts.join(", ")
                )
            }
            "llm.error" => format!(
                "{} failed on {} ({}) at {}: {}",
                s("requestId"),
                self.who(&s("participantId")),
                s("model"),
                s("stage"),
                s("error")
            ),
            "room.created" => format!("room {} created: {}", s("code"), s("name")),
            "stream.lagged" => {
                "some events may have been missed (the hub restarted, or this watcher fell behind)".into()
            }
            _ => output::truncate(&data.to_string(), 160),
        };
        let time = output::iso_time(event.timestamp);
        // `2024-01-02T12:34:56Z` → `12:34:56Z`: the date is rarely news while watching.
        let time = time.get(11..).unwrap_or(&time);
        Some(format!("{time}  {:<19}  {}", output::sanitize(&event.kind), output::sanitize(&details)))
    }

    /// `alice (alice-x7k2q9)` once the nickname is known, else the id.
    fn who(&self, id: &str) -> String {
        match self.nicknames.get(id) {
            Some(nickname) if nickname != id => format!("{nickname} ({id})"),
            _ => id.to_string(),
        }
    }
}

/// A JSON number with `decimals` places, `?` when absent.
fn number(value: &Value, decimals: usize) -> String {
    value.as_f64().map_or_else(|| "?".into(), |n| format!("{n:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(kind: &str, data: Value) -> EventEnvelope {
        EventEnvelope { kind: kind.into(), timestamp: 3_723_000, room_code: Some("ABC123".into()), data }
    }

    #[test]
    fn events_read_as_lines() {
        let mut printer = EventPrinter::new(Output::new(Format::Text));
        assert_eq!(printer.text(&envelope("connected", json!({"clientId": "c"}))), None);
        let joined = json!({
            "id": "alice-x7k2q9", "nickname": "alice", "model": "llama3", "status": "online",
            "connection": {"kind": "tunnel", "connected": true},
        });
        assert_eq!(
            printer.text(&envelope("participant.joined", joined)).unwrap(),
            "01:02:03Z  participant.joined   alice (alice-x7k2q9) joined: llama3, online, tunnel connected"
        );
        let done = json!({
            "requestId": "r1", "participantId": "alice-x7k2q9", "model": "llama3",
            "metrics": {"ttftMs": 120.4, "durationMs": 900.0, "outputTokens": 42, "tokensPerSecond": 35.14},
        });
        assert_eq!(
            printer.text(&envelope("llm.complete", done)).unwrap(),
            "01:02:03Z  llm.complete         r1 done by alice (alice-x7k2q9) (llama3): ttft 120 ms, total 900 ms, \
             42 tokens out, 35.1 tokens/s"
        );
        let left = printer.text(&envelope("participant.left", json!({"participantId": "bob"}))).unwrap();
        assert!(left.ends_with("participant.left     bob left"), "{left}");
    }

    #[test]
    fn hostile_event_text_cannot_drive_the_terminal() {
        let mut printer = EventPrinter::new(Output::new(Format::Text));
        let line = printer.text(&envelope("participant.left", json!({"participantId": "x\u{1b}[2J\ny"}))).unwrap();
        assert!(!line.contains('\u{1b}') && !line.contains('\n'), "{line:?}");
    }

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
