//! Room events: one typed kind, two renderings. The `/v1` stream names them with dots and wraps
//! them in `{type, timestamp, roomCode, data}`; the classic stream names them with colons and sends
//! the bare payload the seed documents.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Participant, RoomSummary};

/// Metrics of one routed LLM request, as carried by `llm.complete`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmMetrics {
    pub ttft_ms: f64,
    pub duration_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
}

/// What happened in a room.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    RoomCreated(RoomSummary),
    ParticipantJoined(Participant),
    ParticipantUpdated(Participant),
    ParticipantLeft {
        participant_id: String,
    },
    ParticipantOffline {
        participant_id: String,
    },
    LlmRequest {
        request_id: String,
        participant_id: String,
        model: String,
        operation: String,
        /// Additive: who sent the request (the client's address), for "who is using my GPU".
        /// Absent from the classic stream, whose payload the seeds fix.
        caller: Option<String>,
        /// Additive: why this participant was chosen. Absent from the classic stream.
        route: Option<RouteReason>,
    },
    LlmComplete {
        request_id: String,
        participant_id: String,
        model: String,
        metrics: LlmMetrics,
    },
    LlmError {
        request_id: String,
        participant_id: String,
        model: String,
        stage: String,
        error: String,
    },
    /// Additive: the hub refused a request before routing it to anyone (no participant serves the
    /// model asked for, every one that could is busy, paused or unreachable). Nothing was served,
    /// so no `llm.request` comes before it; `message` says what happened in a plain sentence.
    LlmRejected {
        /// The `x-request-id` of the refusal the client got.
        request_id: String,
        /// The `model` the request asked for, as it asked (`*`, `model:NAME`, a name or an id).
        model: String,
        /// The HTTP status the client got (404, 409 or 503).
        status: u16,
        /// The error's code (`MODEL_NOT_FOUND`, `CAPACITY_EXCEEDED`, ...).
        code: String,
        message: String,
        caller: Option<String>,
    },
    /// Additive: a request found every participant it could use busy and waits in the room's
    /// queue. Its `llm.request` (same `requestId`, `route.queuePosition`) follows when it gets a
    /// place; `llm.rejected` when its wait runs out.
    LlmQueued {
        request_id: String,
        /// The `model` the request asked for, as it asked.
        model: String,
        operation: String,
        /// Its place in line when it began to wait (1 = next to be served).
        position: u32,
        caller: Option<String>,
    },
    /// The room is gone (deleted by its host or expired): its streams end. Never sent to clients.
    RoomClosed,
}

impl EventKind {
    /// The `/v1` type, with a dot.
    pub fn v1_name(&self) -> &'static str {
        match self {
            EventKind::RoomCreated(_) => "room.created",
            EventKind::ParticipantJoined(_) => "participant.joined",
            EventKind::ParticipantUpdated(_) => "participant.updated",
            EventKind::ParticipantLeft { .. } => "participant.left",
            EventKind::ParticipantOffline { .. } => "participant.offline",
            EventKind::LlmRequest { .. } => "llm.request",
            EventKind::LlmComplete { .. } => "llm.complete",
            EventKind::LlmError { .. } => "llm.error",
            EventKind::LlmRejected { .. } => "llm.rejected",
            EventKind::LlmQueued { .. } => "llm.queued",
            EventKind::RoomClosed => "room.closed",
        }
    }

    /// The classic name, with a colon.
    pub fn classic_name(&self) -> &'static str {
        match self {
            EventKind::RoomCreated(_) => "room:created",
            EventKind::ParticipantJoined(_) => "participant:joined",
            EventKind::ParticipantUpdated(_) => "participant:updated",
            EventKind::ParticipantLeft { .. } => "participant:left",
            EventKind::ParticipantOffline { .. } => "participant:offline",
            EventKind::LlmRequest { .. } => "llm:request",
            EventKind::LlmComplete { .. } => "llm:complete",
            EventKind::LlmError { .. } => "llm:error",
            EventKind::LlmRejected { .. } => "llm:rejected",
            EventKind::LlmQueued { .. } => "llm:queued",
            EventKind::RoomClosed => "room:closed",
        }
    }

    /// `data` of the `/v1` envelope.
    pub fn v1_data(&self) -> Value {
        match self {
            EventKind::RoomCreated(room) => to_value(room),
            EventKind::ParticipantJoined(p) | EventKind::ParticipantUpdated(p) => to_value(p),
            EventKind::ParticipantLeft { participant_id } | EventKind::ParticipantOffline { participant_id } => {
                json!({ "participantId": participant_id })
            }
            EventKind::LlmRequest { request_id, participant_id, model, operation, caller, route } => {
                let mut data = json!({
                    "requestId": request_id, "participantId": participant_id, "model": model, "operation": operation,
                });
                if let Some(caller) = caller {
                    data["caller"] = json!(caller);
                }
                if let Some(route) = route {
                    data["route"] = to_value(route);
                }
                data
            }
            EventKind::LlmComplete { request_id, participant_id, model, metrics } => json!({
                "requestId": request_id, "participantId": participant_id, "model": model, "metrics": metrics,
            }),
            EventKind::LlmError { request_id, participant_id, model, stage, error } => json!({
                "requestId": request_id, "participantId": participant_id, "model": model,
                "stage": stage, "error": error,
            }),
            EventKind::LlmRejected { request_id, model, status, code, message, caller } => {
                let mut data = json!({
                    "requestId": request_id, "model": model, "status": status, "code": code, "message": message,
                });
                if let Some(caller) = caller {
                    data["caller"] = json!(caller);
                }
                data
            }
            EventKind::LlmQueued { request_id, model, operation, position, caller } => {
                let mut data = json!({
                    "requestId": request_id, "model": model, "operation": operation, "position": position,
                });
                if let Some(caller) = caller {
                    data["caller"] = json!(caller);
                }
                data
            }
            EventKind::RoomClosed => Value::Null,
        }
    }

    /// The classic stream's bare payload, as seeds 000 and 001 list them.
    pub fn classic_data(&self) -> Value {
        match self {
            EventKind::RoomCreated(room) => json!({ "room": room }),
            EventKind::LlmRequest { participant_id, model, .. } => {
                json!({ "participantId": participant_id, "model": model })
            }
            EventKind::LlmError { participant_id, error, .. } => {
                json!({ "participantId": participant_id, "error": error })
            }
            other => other.v1_data(),
        }
    }

    /// The participant this event is about, if any.
    pub fn participant_id(&self) -> Option<&str> {
        match self {
            EventKind::ParticipantJoined(p) | EventKind::ParticipantUpdated(p) => Some(&p.id),
            EventKind::ParticipantLeft { participant_id }
            | EventKind::ParticipantOffline { participant_id }
            | EventKind::LlmRequest { participant_id, .. }
            | EventKind::LlmComplete { participant_id, .. }
            | EventKind::LlmError { participant_id, .. } => Some(participant_id),
            EventKind::RoomCreated(_)
            | EventKind::LlmRejected { .. }
            | EventKind::LlmQueued { .. }
            | EventKind::RoomClosed => None,
        }
    }
}

/// Why the room sent a request to the participant it did (additive on `llm.request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteRule {
    /// The request named the participant.
    #[default]
    Named,
    /// Its expected completion was the earliest (time to a free place, loading, first token,
    /// generation at its measured speed).
    Fastest,
    /// It had no measurements yet and nothing to do: tried once.
    Explore,
    /// The least loaded free participant (`--routing least-loaded`).
    LeastLoaded,
}

/// `route` of `llm.request`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteReason {
    pub rule: RouteRule,
    /// Whether the participant had the model loaded, when it reports what it has loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<bool>,
    /// When the room expected the request to be done there, in ms from the choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<f64>,
    /// Where the request was in the room's queue when it got its place (1 = first), if it waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The `/v1` envelope of one event, as a client decodes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_code: Option<String>,
    #[serde(default)]
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_surface() {
        let left = EventKind::ParticipantLeft { participant_id: "w1".into() };
        assert_eq!(left.v1_name(), "participant.left");
        assert_eq!(left.classic_name(), "participant:left");
        assert_eq!(left.classic_data(), json!({"participantId": "w1"}));
    }

    #[test]
    fn classic_llm_payloads_are_the_seeds() {
        let req = EventKind::LlmRequest {
            request_id: "r".into(),
            participant_id: "w1".into(),
            model: "llama3".into(),
            operation: "chat.completions".into(),
            caller: Some("192.168.1.7".into()),
            route: Some(RouteReason {
                rule: RouteRule::Fastest,
                loaded: Some(true),
                expected_ms: Some(812.5),
                queue_position: None,
            }),
        };
        assert_eq!(req.classic_data(), json!({"participantId": "w1", "model": "llama3"}));
        assert_eq!(req.v1_data()["requestId"], "r");
        assert_eq!(req.v1_data()["caller"], "192.168.1.7");
        assert_eq!(req.v1_data()["route"], json!({"rule": "fastest", "loaded": true, "expectedMs": 812.5}));
    }
}
