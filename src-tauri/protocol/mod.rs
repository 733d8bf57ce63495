//! Wire types only: rooms, participants, runtime config, envelopes, events and constants, exactly as
//! `PROTOCOL.md` spells them. No I/O lives here; the hub, the participant runtime, the client and the
//! desktop app all read and write these same types, so a field renamed here is renamed everywhere.

pub mod events;
pub mod stats;
pub mod tunnel;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Participants heartbeat this often, and the hub sweeps for stale participants this often.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// No heartbeat for this long marks a participant `offline`.
pub const PARTICIPANT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a tunnel bootstrap token stays valid (it is also single use).
pub const TUNNEL_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Room codes are this many characters from `A-Z0-9`.
pub const ROOM_CODE_LEN: usize = 6;
/// Default port of a hub.
pub const DEFAULT_PORT: u16 = 3000;

/// Milliseconds since the Unix epoch: every time on the wire is one of these.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Numbers people typed as whole numbers (`"vram": 24`, `"temperature": 1`) go back out as whole
/// numbers, not `24.0`, so answers read like the requests and the seed's examples.
pub mod number {
    use serde::Serializer;

    pub fn opt<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => s.serialize_i64(*v as i64),
            Some(v) => s.serialize_f64(*v),
            None => s.serialize_none(),
        }
    }
}

/// `stop` is a string or a list of strings in OpenAI's API; both are kept as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Runtime config of a room (`defaults`) or a participant (`config`). `instructions` is a system
/// prompt: it stays on the hub, and public forms carry `hasInstructions` instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

impl RuntimeConfig {
    /// The form every response, listing and event carries: the prompt itself never leaves the hub.
    pub fn public(&self) -> PublicRuntimeConfig {
        PublicRuntimeConfig {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
            has_instructions: self.instructions.as_deref().is_some_and(|s| !s.is_empty()),
        }
    }
}

/// Public form of [`RuntimeConfig`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublicRuntimeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(rename = "hasInstructions", default)]
    pub has_instructions: bool,
}

/// One GPU of a machine; `vram` in GiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub vram: Option<f64>,
}

/// What a participant's machine reports. `vram` and `ram` are GiB. Every field is optional: the
/// seed's clients send any subset. `gpu`/`vram` describe the main GPU; `gpus` lists all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpecs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub vram: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub ram: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<GpuSpec>>,
}

/// Whether a participant's provider serves an API surface, as its probe found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Supported,
    Unsupported,
    #[default]
    Unknown,
}

impl Capability {
    pub fn is_unknown(&self) -> bool {
        *self == Capability::Unknown
    }
}

/// Which OpenAI-style endpoints a participant's provider serves. `openResponses` and
/// `chatCompletions` are the original contract and always on the wire; the others are additive
/// and left out while `unknown`, so peers that predate them see the shape they know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub open_responses: Capability,
    #[serde(default)]
    pub chat_completions: Capability,
    /// `/v1/embeddings` (additive).
    #[serde(default, skip_serializing_if = "Capability::is_unknown")]
    pub embeddings: Capability,
    /// The legacy `/v1/completions` (additive).
    #[serde(default, skip_serializing_if = "Capability::is_unknown")]
    pub completions: Capability,
    /// Anthropic's `/v1/messages` (additive).
    #[serde(default, skip_serializing_if = "Capability::is_unknown")]
    pub messages: Capability,
    /// The provider is Ollama and serves its native API (`/api/chat`, `/api/generate`,
    /// `/api/embed`, `/api/embeddings`), which a room's Ollama surface forwards as it is (additive;
    /// the probe finds it on `/api/version`).
    #[serde(default, skip_serializing_if = "Capability::is_unknown")]
    pub ollama: Capability,
}

/// A provider endpoint the hub may call, one per field of [`Capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
    Completions,
    Messages,
    /// Ollama's native API (`/api/chat` and its siblings).
    Ollama,
}

impl Endpoint {
    /// The path on an OpenAI-compatible (or Anthropic-compatible) provider.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Ollama => "/api/chat",
        }
    }
}

impl Capabilities {
    /// What is known about `endpoint`.
    pub fn of(&self, endpoint: Endpoint) -> Capability {
        match endpoint {
            Endpoint::ChatCompletions => self.chat_completions,
            Endpoint::Responses => self.open_responses,
            Endpoint::Embeddings => self.embeddings,
            Endpoint::Completions => self.completions,
            Endpoint::Messages => self.messages,
            Endpoint::Ollama => self.ollama,
        }
    }

    /// The same capabilities with `endpoint` set to `capability`.
    pub fn with(mut self, endpoint: Endpoint, capability: Capability) -> Capabilities {
        let field = match endpoint {
            Endpoint::ChatCompletions => &mut self.chat_completions,
            Endpoint::Responses => &mut self.open_responses,
            Endpoint::Embeddings => &mut self.embeddings,
            Endpoint::Completions => &mut self.completions,
            Endpoint::Messages => &mut self.messages,
            Endpoint::Ollama => &mut self.ollama,
        };
        *field = capability;
        self
    }

    /// Not known to lack `endpoint` (supported, or not found out yet).
    pub fn may_serve(&self, endpoint: Endpoint) -> bool {
        self.of(endpoint) != Capability::Unsupported
    }
}

/// How the hub reaches a participant: through its WebSocket tunnel, or over HTTP to its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    Tunnel,
    Direct,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub kind: ConnectionKind,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tunnel_seen_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantStatus {
    Online,
    Busy,
    Offline,
    /// Additive: registered and alive, but not routable (its model server stopped answering, or
    /// its owner asked for the machine); `pausedReason` says why.
    Paused,
}

impl ParticipantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantStatus::Online => "online",
            ParticipantStatus::Busy => "busy",
            ParticipantStatus::Offline => "offline",
            ParticipantStatus::Paused => "paused",
        }
    }
}

/// Why a participant paused itself, as its heartbeat says (`pauseReason`). A code, not words: the
/// hub turns it into the sentence every listing shows (`pausedReason`), so no participant can put
/// text of its choosing in front of the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseReason {
    /// Its model server stopped answering.
    Provider,
    /// Its owner asked for the machine.
    Owner,
    /// A reason this hub does not know (a newer participant): shown in general words.
    #[serde(other)]
    Other,
}

impl PauseReason {
    /// The code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            PauseReason::Provider => "provider",
            PauseReason::Owner => "owner",
            PauseReason::Other => "other",
        }
    }

    /// The words listings show as `pausedReason`.
    pub fn describe(self) -> &'static str {
        match self {
            PauseReason::Provider => "model server stopped",
            PauseReason::Owner => "its owner is using the machine",
            PauseReason::Other => "paused by its owner",
        }
    }
}

/// A model the provider holds in memory (from Ollama's `/api/ps`); `vram` in GiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub vram: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "number::opt")]
    pub size: Option<f64>,
}

/// What a provider tells of the model a participant shares (Ollama's `/api/tags` `size` and
/// `details`), so a room's `/api/tags`, `/api/show` and `/api/ps` can say it. Every field is
/// optional; `size` is in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub families: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_level: Option<String>,
}

impl ModelDetails {
    pub fn is_empty(&self) -> bool {
        *self == ModelDetails::default()
    }
}

/// Public form of a participant, as every listing, response and event carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub id: String,
    pub nickname: String,
    pub model: String,
    pub endpoint: String,
    #[serde(default)]
    pub specs: MachineSpecs,
    #[serde(default)]
    pub config: PublicRuntimeConfig,
    #[serde(default)]
    pub capabilities: Capabilities,
    pub connection: Connection,
    pub status: ParticipantStatus,
    pub joined_at: u64,
    pub last_seen: u64,
    pub updated_at: u64,
    /// Additive: requests served at once (default 1).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Additive: models loaded in the provider's memory, refreshed on heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loaded_models: Vec<LoadedModel>,
    /// Additive: why the participant is paused, in words (see [`PauseReason::describe`]); present
    /// only while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Additive: what the provider tells of `model` (size, family, quantization), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_details: Option<ModelDetails>,
}

pub fn default_max_concurrency() -> u32 {
    1
}

/// Public form of a room. `participantCount` is present in listings and summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    pub id: String,
    pub code: String,
    pub name: String,
    pub host_id: String,
    pub created_at: u64,
    pub password_protected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<PublicRuntimeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_count: Option<usize>,
}

/// `POST /v1/rooms` and `POST /rooms` answer: the room, its host id, and (once) the host token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedRoom {
    pub room: RoomSummary,
    pub host_id: String,
    /// Additive: the secret that deletes the room. Returned only here, never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_token: Option<String>,
}

/// Where and how a participant dials its tunnel. `url` carries no query; `token` goes in `?token=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelBootstrap {
    pub url: String,
    pub token: String,
}

/// `PUT /v1/rooms/:code/participants/:id` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub participant: Participant,
    pub room_id: String,
    pub tunnel: TunnelBootstrap,
    /// Additive: the secret that proves this participant, returned when the hub creates it (or
    /// hands it to a new owner). Leaving, re-registering while its tunnel is live and opening a
    /// tunnel send it as `Authorization: Bearer`. Absent when the caller already holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_token: Option<String>,
}

/// `POST /v1/rooms/:code/participants/:id/heartbeat` body. Every field is optional and a heartbeat
/// without news has no body at all. News changes what the room routes on, so under strict rules it
/// needs the participant's token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatNews {
    /// The models the provider holds in memory now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_models: Option<Vec<LoadedModel>>,
    /// Additive: `true` pauses the participant (not routable, `status: "paused"`), `false` resumes
    /// it; absent changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Additive, with `paused: true`: why (`provider` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<PauseReason>,
}

impl HeartbeatNews {
    pub fn is_empty(&self) -> bool {
        self.loaded_models.is_none() && self.paused.is_none()
    }
}

/// Heartbeat answer on both surfaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResult {
    pub success: bool,
    pub status: ParticipantStatus,
    pub last_seen: u64,
}

/// `{success: true}` of the leave and delete calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Success {
    pub success: bool,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub timestamp: u64,
    /// Additive: the hub's version, so clients can tell what they talk to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Management-plane envelope metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub request_id: String,
}

/// Management-plane success envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    pub meta: Meta,
}

/// Management-plane error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Management-plane error envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ApiErrorBody,
    pub meta: Meta,
}

/// True when `code` has the shape of a room code (after upper-casing): 6 of `A-Z 0-9 - _`. Our hub
/// only makes codes of letters and digits without look-alikes, but the TypeScript hub makes them
/// with `nanoid(6).toUpperCase()`, whose alphabet has `-` and `_` too (`B--JWY`, `MA_TPG`), and
/// any code a hub hands out must be one a participant can join and a watcher can follow. Neither
/// character can leave a path segment, so accepting them opens no path trick.
pub fn is_room_code(code: &str) -> bool {
    code.len() == ROOM_CODE_LEN
        && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What a room code looks like, for the hints of messages that refuse one.
pub const ROOM_CODE_SHAPE: &str = "6 letters or digits (or - and _), like ABC123";

/// Room codes are typed by people: accept lower case, compare upper case.
pub fn normalize_room_code(code: &str) -> Option<String> {
    let upper = code.trim().to_ascii_uppercase();
    is_room_code(&upper).then_some(upper)
}

/// Participant ids appear in paths and as `model` values: letters, digits and `. _ - ~ @ +`, at most
/// 128 characters, so no id can smuggle a path separator, a query or a control character.
pub fn is_participant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~' | b'@' | b'+'))
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_codes_are_six_of_upper_alnum_dash_underscore() {
        assert!(is_room_code("ABC123"));
        assert!(!is_room_code("abc123"));
        assert!(!is_room_code("ABC12"));
        assert!(!is_room_code("ABC1234"));
        assert!(!is_room_code("ABC/23"));
        assert_eq!(normalize_room_code(" abc123 ").as_deref(), Some("ABC123"));
        assert_eq!(normalize_room_code("../../"), None);
        // Codes the TypeScript hub hands out (nanoid's alphabet, upper-cased).
        for code in ["B--JWY", "MA_TPG", "PKUH_T", "------", "_A1-b2"] {
            assert!(normalize_room_code(code).is_some(), "{code}");
        }
        assert_eq!(normalize_room_code("ma_tpg").as_deref(), Some("MA_TPG"));
        for not in ["AB.C12", "AB C12", "AB%2F1", "ABC-1", "ÄBC123", "AB+C12", "AB~C12"] {
            assert_eq!(normalize_room_code(not), None, "{not}");
        }
    }

    #[test]
    fn participant_ids_refuse_path_tricks() {
        assert!(is_participant_id("worker-1"));
        assert!(is_participant_id("3f2c1e4a-9b7d-4c1e-8f00-1234567890ab"));
        for bad in ["", ".", "..", "a/b", "a b", "a?b", "a%2Fb", "a\nb", &"x".repeat(129)] {
            assert!(!is_participant_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn public_config_hides_instructions() {
        let config =
            RuntimeConfig { temperature: Some(0.5), instructions: Some("be terse".into()), ..Default::default() };
        let public = serde_json::to_value(config.public()).unwrap();
        assert_eq!(public, serde_json::json!({"temperature": 0.5, "hasInstructions": true}));
    }

    #[test]
    fn participant_round_trips_in_camel_case() {
        let p = Participant {
            id: "w1".into(),
            nickname: "Alice".into(),
            model: "llama3".into(),
            endpoint: "http://localhost:11434".into(),
            specs: MachineSpecs { gpu: Some("RTX".into()), vram: Some(24.0), ..Default::default() },
            config: PublicRuntimeConfig::default(),
            capabilities: Capabilities::default(),
            connection: Connection { kind: ConnectionKind::Tunnel, connected: false, last_tunnel_seen_at: None },
            status: ParticipantStatus::Online,
            joined_at: 1,
            last_seen: 2,
            updated_at: 3,
            max_concurrency: 1,
            loaded_models: vec![],
            paused_reason: None,
            model_details: None,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["joinedAt"], 1);
        assert_eq!(v["capabilities"]["openResponses"], "unknown");
        assert!(v["capabilities"].get("embeddings").is_none(), "additive capabilities are left out while unknown");
        assert_eq!(v["connection"]["kind"], "tunnel");
        let back: Participant = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }
}

#[cfg(test)]
mod capability_tests {
    use super::*;

    #[test]
    fn additive_capabilities_appear_once_known_and_old_shapes_still_read() {
        let caps = Capabilities::default().with(Endpoint::Embeddings, Capability::Unsupported);
        assert_eq!(
            serde_json::to_value(caps).unwrap(),
            serde_json::json!({"openResponses": "unknown", "chatCompletions": "unknown", "embeddings": "unsupported"})
        );
        let old: Capabilities = serde_json::from_str(r#"{"openResponses": "supported"}"#).unwrap();
        assert_eq!(old.of(Endpoint::Responses), Capability::Supported);
        assert_eq!(old.of(Endpoint::Messages), Capability::Unknown);
        assert!(old.may_serve(Endpoint::Messages));
        assert!(!caps.may_serve(Endpoint::Embeddings));
        let back: Capabilities = serde_json::from_value(serde_json::to_value(caps).unwrap()).unwrap();
        assert_eq!(back, caps);
        let ollama = Capabilities::default().with(Endpoint::Ollama, Capability::Supported);
        assert_eq!(serde_json::to_value(ollama).unwrap()["ollama"], "supported");
        assert_eq!(ollama.of(Endpoint::Ollama), Capability::Supported);
    }

    #[test]
    fn model_details_are_additive_and_camel_case() {
        let details = ModelDetails {
            size: Some(4_661_224_676),
            family: Some("llama".into()),
            parameter_size: Some("8.0B".into()),
            quantization_level: Some("Q4_0".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&details).unwrap(),
            serde_json::json!({"size": 4_661_224_676u64, "family": "llama", "parameterSize": "8.0B", "quantizationLevel": "Q4_0"})
        );
        let old: Participant = serde_json::from_value(serde_json::json!({
            "id": "w1", "nickname": "A", "model": "m", "endpoint": "http://x",
            "connection": {"kind": "tunnel", "connected": true}, "status": "online",
            "joinedAt": 1, "lastSeen": 1, "updatedAt": 1
        }))
        .unwrap();
        assert_eq!(old.model_details, None);
        assert!(ModelDetails::default().is_empty());
    }
}

#[cfg(test)]
mod pause_tests {
    use super::*;

    #[test]
    fn pause_news_is_additive_and_unknown_reasons_are_kept_general() {
        let news =
            HeartbeatNews { paused: Some(true), pause_reason: Some(PauseReason::Provider), ..Default::default() };
        assert_eq!(
            serde_json::to_value(&news).unwrap(),
            serde_json::json!({"paused": true, "pauseReason": "provider"})
        );
        let newer: HeartbeatNews = serde_json::from_str(r#"{"paused": true, "pauseReason": "gaming"}"#).unwrap();
        assert_eq!(newer.pause_reason, Some(PauseReason::Other));
        assert!(HeartbeatNews::default().is_empty());
        assert_eq!(serde_json::to_value(ParticipantStatus::Paused).unwrap(), "paused");
    }
}

#[cfg(test)]
mod number_tests {
    use super::*;

    #[test]
    fn whole_numbers_stay_whole_on_the_wire() {
        let specs = MachineSpecs { vram: Some(24.0), ram: Some(15.5), ..Default::default() };
        assert_eq!(serde_json::to_string(&specs).unwrap(), r#"{"vram":24,"ram":15.5}"#);
        let config = RuntimeConfig { temperature: Some(0.7), top_p: Some(1.0), ..Default::default() };
        assert_eq!(serde_json::to_value(&config).unwrap(), serde_json::json!({"temperature": 0.7, "top_p": 1}));
    }
}
