//! `gambi events watch`: follows a room's `/v1` event stream and prints each event as it arrives —
//! a readable line for people, the event's envelope as one compact JSON line for scripts. A dropped
//! connection is resumed with `Last-Event-ID`, so the hub replays what was missed and nothing is
//! lost or printed twice. The SSE framing is the hub's own parser
//! ([`SseParser`](crate::hub::inference::sse_parse::SseParser)); what each event means is
//! [`crate::protocol::events`].

use std::collections::HashMap;

use futures_util::FutureExt as _;
use serde_json::Value;

use super::output::{self, Format, Output};
use super::serve::shutdown_signal;
use super::{Failure, HubOptions};
use crate::client::events::{FollowError, RoomEvents, StreamItem};
use crate::protocol::events::EventEnvelope;
use crate::protocol::{normalize_room_code, ROOM_CODE_SHAPE};

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The room's 6-character code.
    #[arg(long, value_name = "CODE", allow_hyphen_values = true)]
    pub room: String,
    /// The room's password (or its host token): a protected room's events need it.
    #[arg(long, value_name = "PASSWORD", env = "GAMBI_ROOM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
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
            Some(format!("Room codes are {ROOM_CODE_SHAPE}; see 'gambi room list'.")),
        )
    })?;
    let mut events = RoomEvents::new(&client, &code)?.with_key(args.password.clone());
    let mut printer = EventPrinter::new(args.hub.output());
    tokio::select! {
        _ = &mut signal => Ok(()),
        ended = follow(&mut events, &code, &mut printer) => ended,
    }
}

/// Prints the room's events, says on stderr when the stream drops and comes back, and ends only on
/// a failure that retrying cannot fix.
async fn follow(events: &mut RoomEvents, code: &str, printer: &mut EventPrinter) -> Result<(), Failure> {
    loop {
        match events.next().await {
            Ok(StreamItem::Event { name, data }) => printer.print(&name, &data)?,
            // On stderr, so stdout stays events only; it tells a person (or a test) that from now
            // on nothing is missed.
            Ok(StreamItem::Connected { reconnected: false, .. }) => {
                eprintln!("Watching room {code} on {} (Ctrl-C to stop).", events.hub_url())
            }
            Ok(StreamItem::Connected { resumed_after, .. }) => {
                let after = resumed_after.map(|id| format!(" after event {id}")).unwrap_or_default();
                eprintln!("Reconnected to room {code}; resuming{after}.");
            }
            Ok(StreamItem::Reconnecting { reason, retry_in, attempt }) => eprintln!(
                "Lost the event stream of room {code} ({}); reconnecting in {} s (attempt {attempt})...",
                output::sanitize(&reason),
                retry_in.as_secs()
            ),
            Err(FollowError::Refused(e)) => return Err(e.into()),
            Err(e @ FollowError::Unreachable { .. }) => {
                return Err(Failure::message(
                    3,
                    e.to_string(),
                    Some("Start one with 'gambi hub serve' or pass --hub / GAMBI_HUB.".into()),
                ))
            }
        }
    }
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
                let status = match (data["status"].as_str(), data["pausedReason"].as_str()) {
                    (Some("paused"), Some(reason)) => format!("paused ({reason})"),
                    _ => s("status"),
                };
                format!("{} {verb}: {}, {status}, {connection}", self.who(&id), s("model"))
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
        let paused = json!({
            "id": "alice-x7k2q9", "nickname": "alice", "model": "llama3", "status": "paused",
            "pausedReason": "model server stopped", "connection": {"kind": "tunnel", "connected": true},
        });
        assert!(printer
            .text(&envelope("participant.updated", paused))
            .unwrap()
            .ends_with("alice (alice-x7k2q9) updated: llama3, paused (model server stopped), tunnel connected"));
        let left = printer.text(&envelope("participant.left", json!({"participantId": "bob"}))).unwrap();
        assert!(left.ends_with("participant.left     bob left"), "{left}");
    }

    #[test]
    fn hostile_event_text_cannot_drive_the_terminal() {
        let mut printer = EventPrinter::new(Output::new(Format::Text));
        let line = printer.text(&envelope("participant.left", json!({"participantId": "x\u{1b}[2J\ny"}))).unwrap();
        assert!(!line.contains('\u{1b}') && !line.contains('\n'), "{line:?}");
    }
}
