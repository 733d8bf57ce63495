//! The room's models as Ollama lists them (`/api/tags`, `/api/ps`, `/api/show`), from its
//! participant records: what they serve, what their providers tell of it (`modelDetails`: size,
//! family, parameter size, quantization; empty placeholders where nobody tells), and what they
//! report holding in memory.

use serde_json::{json, Value};

use crate::protocol::{Capability, Endpoint, ModelDetails, Participant, ParticipantStatus};

use super::{ollama_name, rfc3339_ms};

/// One distinct model served in the room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomModel {
    /// Ollama's form of the name (with a tag).
    pub name: String,
    /// The participants serving it, by id.
    pub participants: Vec<String>,
    /// Bytes, where a participant reports it (its `modelDetails`, else the `size` of its
    /// `loadedModels`).
    pub size: Option<u64>,
    /// What the first participant that tells says of it.
    pub details: Option<ModelDetails>,
    /// When the first of its participants joined, ms since the epoch.
    pub since_ms: u64,
    /// Some participant of it may chat (its probe did not find chat completions missing).
    pub completion: bool,
    /// Some participant's probe found it serves embeddings.
    pub embedding: bool,
}

/// `llama3` and `llama3:latest` are one model (as the room routes them).
fn same_key(model: &str) -> String {
    model.strip_suffix(":latest").unwrap_or(model).to_ascii_lowercase()
}

/// Serves requests now: what a listing offers is what a request can reach.
fn routable(p: &Participant) -> bool {
    matches!(p.status, ParticipantStatus::Online | ParticipantStatus::Busy) && p.connection.connected
}

fn gib_to_bytes(gib: f64) -> u64 {
    (gib * f64::from(1u32 << 30)).round().max(0.0) as u64
}

/// The distinct models the room's routable participants serve, by name.
pub fn room_models(participants: &[Participant]) -> Vec<RoomModel> {
    let mut models: Vec<RoomModel> = Vec::new();
    for p in participants.iter().filter(|p| routable(p)) {
        let key = same_key(&p.model);
        let details = p.model_details.clone().filter(|d| !d.is_empty());
        let loaded =
            p.loaded_models.iter().filter(|l| same_key(&l.name) == key).filter_map(|l| l.size).map(gib_to_bytes).max();
        let completion = p.capabilities.may_serve(Endpoint::ChatCompletions);
        let embedding = p.capabilities.of(Endpoint::Embeddings) == Capability::Supported;
        // The provider's own count of bytes is exact; a loaded size is GiB, rounded.
        let size = details.as_ref().and_then(|d| d.size).or(loaded);
        match models.iter_mut().find(|m| same_key(&m.name) == key) {
            Some(m) => {
                m.participants.push(p.id.clone());
                // A size a provider told wins over sizes loaded in memory.
                let told = details.as_ref().and_then(|d| d.size);
                m.size = match (m.details.as_ref().and_then(|d| d.size), told) {
                    (Some(first), _) | (None, Some(first)) => Some(first),
                    (None, None) => m.size.max(size),
                };
                if m.details.is_none() {
                    m.details = details;
                }
                m.since_ms = m.since_ms.min(p.joined_at);
                m.completion |= completion;
                m.embedding |= embedding;
            }
            None => models.push(RoomModel {
                name: ollama_name(&p.model),
                participants: vec![p.id.clone()],
                size,
                details,
                since_ms: p.joined_at,
                completion,
                embedding,
            }),
        }
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

/// The model a request names, among the room's: by name (with or without `:latest`),
/// `model:<name>`, a participant id, or `*` / `any` (the first model).
pub fn find_model(participants: &[Participant], asked: &str) -> Option<RoomModel> {
    let models = room_models(participants);
    let asked = asked.trim();
    if asked == "*" || asked.eq_ignore_ascii_case("any") {
        return models.into_iter().next();
    }
    let name = match asked.strip_prefix("model:") {
        Some(name) => name.trim().to_owned(),
        None => match participants.iter().find(|p| p.id == asked && routable(p)) {
            Some(p) => p.model.clone(),
            None => asked.to_owned(),
        },
    };
    let key = same_key(&name);
    models.into_iter().find(|m| same_key(&m.name) == key)
}

/// A stable digest for a model the hub lists (the members' servers hold the real ones).
fn digest(name: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(name.as_bytes()))
}

/// `details`, with what the room knows: what a participant's provider told, else empty.
fn details(told: Option<&ModelDetails>) -> Value {
    let text = |f: fn(&ModelDetails) -> &Option<String>| told.and_then(|d| f(d).clone()).unwrap_or_default();
    json!({
        "parent_model": "",
        "format": text(|d| &d.format),
        "family": text(|d| &d.family),
        "families": told.and_then(|d| d.families.clone()),
        "parameter_size": text(|d| &d.parameter_size),
        "quantization_level": text(|d| &d.quantization_level),
    })
}

/// `GET /api/tags`: every distinct model in the room.
pub fn tags(participants: &[Participant]) -> Value {
    let models: Vec<Value> = room_models(participants)
        .into_iter()
        .map(|m| {
            json!({
                "name": m.name,
                "model": m.name,
                "modified_at": rfc3339_ms(m.since_ms),
                "size": m.size.unwrap_or(0),
                "digest": digest(&m.name),
                "details": details(m.details.as_ref()),
                "gambi": {"participants": m.participants},
            })
        })
        .collect();
    json!({ "models": models })
}

/// `GET /api/ps`: the models the room's participants hold in memory, each once, with where.
pub fn ps(participants: &[Participant]) -> Value {
    struct Loaded {
        name: String,
        size: u64,
        vram: u64,
        participants: Vec<String>,
        details: Option<ModelDetails>,
    }
    let mut loaded: Vec<Loaded> = Vec::new();
    for p in participants.iter().filter(|p| routable(p)) {
        for l in &p.loaded_models {
            let (size, vram) = (l.size.map_or(0, gib_to_bytes), l.vram.map_or(0, gib_to_bytes));
            let key = same_key(&l.name);
            // What the provider told of the model the participant shares, when this is it.
            let told = p.model_details.clone().filter(|d| same_key(&p.model) == key && !d.is_empty());
            match loaded.iter_mut().find(|m| same_key(&m.name) == key) {
                Some(m) => {
                    m.size = m.size.max(size);
                    m.vram = m.vram.max(vram);
                    if !m.participants.contains(&p.id) {
                        m.participants.push(p.id.clone());
                    }
                    if m.details.is_none() {
                        m.details = told;
                    }
                }
                None => loaded.push(Loaded {
                    name: ollama_name(&l.name),
                    size,
                    vram,
                    participants: vec![p.id.clone()],
                    details: told,
                }),
            }
        }
    }
    loaded.sort_by(|a, b| a.name.cmp(&b.name));
    let models: Vec<Value> = loaded
        .into_iter()
        .map(|m| {
            json!({
                "name": m.name,
                "model": m.name,
                "size": m.size,
                "size_vram": m.vram,
                "digest": digest(&m.name),
                "details": details(m.details.as_ref()),
                "gambi": {"participants": m.participants},
            })
        })
        .collect();
    json!({ "models": models })
}

/// What a model can do, as Ollama's `show` names it: `completion` (chat and generate) and
/// `embedding`, from what its participants' probes found; `completion` when nothing is known.
fn capabilities(model: &RoomModel) -> Vec<&'static str> {
    let mut can = Vec::new();
    if model.completion {
        can.push("completion");
    }
    if model.embedding {
        can.push("embedding");
    }
    if can.is_empty() {
        can.push("completion");
    }
    can
}

/// `POST /api/show` for a model of the room.
pub fn show(model: &RoomModel) -> Value {
    json!({
        "license": "",
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details(model.details.as_ref()),
        "model_info": {},
        "capabilities": capabilities(model),
        "modified_at": rfc3339_ms(model.since_ms),
        "gambi": {"participants": model.participants},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Capabilities, Connection, ConnectionKind, LoadedModel};

    fn participant(id: &str, model: &str, joined_at: u64) -> Participant {
        Participant {
            id: id.into(),
            nickname: id.into(),
            model: model.into(),
            endpoint: "http://localhost:11434".into(),
            specs: Default::default(),
            config: Default::default(),
            capabilities: Default::default(),
            connection: Connection { kind: ConnectionKind::Tunnel, connected: true, last_tunnel_seen_at: None },
            status: ParticipantStatus::Online,
            joined_at,
            last_seen: joined_at,
            updated_at: joined_at,
            max_concurrency: 1,
            loaded_models: Vec::new(),
            paused_reason: None,
            model_details: None,
        }
    }

    fn room() -> Vec<Participant> {
        let mut alice = participant("alice", "llama3", 2_000);
        alice.loaded_models = vec![LoadedModel { name: "llama3:latest".into(), vram: Some(4.0), size: Some(4.5) }];
        let bob = participant("bob", "llama3:latest", 1_000);
        let mut carol = participant("carol", "qwen2:7b", 3_000);
        carol.status = ParticipantStatus::Busy;
        let mut gone = participant("gone", "mistral", 500);
        gone.status = ParticipantStatus::Offline;
        let mut paused = participant("paused", "phi3", 500);
        paused.status = ParticipantStatus::Paused;
        let mut cut = participant("cut", "gemma", 500);
        cut.connection.connected = false;
        vec![alice, bob, carol, gone, paused, cut]
    }

    #[test]
    fn one_model_per_name_from_the_participants_that_can_serve() {
        let models = room_models(&room());
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["llama3:latest", "qwen2:7b"], "offline, paused and unconnected members serve nothing");
        assert_eq!(models[0].participants, ["alice", "bob"]);
        assert_eq!(models[0].size, Some(4_831_838_208), "4.5 GiB, as alice reports it");
        assert_eq!(models[0].since_ms, 1_000, "since the first of them joined");
        assert_eq!(models[1].size, None, "nobody reported it");
    }

    #[test]
    fn a_model_is_found_by_any_name_the_room_routes_by() {
        let room = room();
        for asked in ["llama3", "llama3:latest", "LLAMA3", "model:llama3", "bob", "*", "any"] {
            assert_eq!(find_model(&room, asked).map(|m| m.name), Some("llama3:latest".into()), "{asked}");
        }
        assert_eq!(find_model(&room, "carol").map(|m| m.name), Some("qwen2:7b".into()));
        for asked in ["mistral", "gone", "qwen2", "model:nope"] {
            assert_eq!(find_model(&room, asked), None, "{asked}");
        }
        assert_eq!(find_model(&[], "*"), None);
    }

    #[test]
    fn tags_list_every_model_in_ollamas_shape() {
        let tags = tags(&room());
        let first = &tags["models"][0];
        assert_eq!(first["name"], "llama3:latest");
        assert_eq!(first["model"], "llama3:latest");
        assert_eq!(first["size"], 4_831_838_208u64);
        assert_eq!(first["digest"].as_str().map(str::len), Some(64));
        assert!(humantime::parse_rfc3339(first["modified_at"].as_str().unwrap()).is_ok());
        for key in ["parent_model", "format", "family", "families", "parameter_size", "quantization_level"] {
            assert!(first["details"].get(key).is_some(), "{key}");
        }
        assert_eq!(first["gambi"]["participants"], json!(["alice", "bob"]));
        assert_eq!(tags["models"][1]["size"], 0);
        assert_eq!(super::tags(&[]), json!({"models": []}));
    }

    #[test]
    fn what_a_provider_tells_of_its_model_is_listed_and_placeholders_stay_elsewhere() {
        let mut room = room();
        room[1].model_details = Some(ModelDetails {
            size: Some(4_661_224_676),
            format: Some("gguf".into()),
            family: Some("llama".into()),
            families: Some(vec!["llama".into()]),
            parameter_size: Some("8.0B".into()),
            quantization_level: Some("Q4_0".into()),
        });
        room[1].loaded_models = vec![LoadedModel { name: "llama3:latest".into(), vram: Some(4.0), size: Some(4.5) }];
        let tags = tags(&room);
        let llama = &tags["models"][0];
        assert_eq!(llama["size"], 4_661_224_676u64, "the provider's exact count over a loaded size in GiB");
        assert_eq!(
            llama["details"],
            json!({"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                   "parameter_size": "8.0B", "quantization_level": "Q4_0"})
        );
        assert_eq!(tags["models"][1]["details"]["family"], "", "nobody told of qwen2");
        assert_eq!(show(&room_models(&room)[0])["details"]["quantization_level"], "Q4_0");
        let ps = super::ps(&room);
        assert_eq!(ps["models"][0]["details"]["parameter_size"], "8.0B");
    }

    #[test]
    fn ps_says_what_is_loaded_where() {
        let mut room = room();
        room[2].loaded_models = vec![LoadedModel { name: "llama3".into(), vram: Some(8.0), size: Some(4.5) }];
        let ps = super::ps(&room);
        let models = ps["models"].as_array().unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0]["name"], "llama3:latest");
        assert_eq!(models[0]["size_vram"], 8u64 << 30, "the most any member holds");
        assert_eq!(models[0]["gambi"]["participants"], json!(["alice", "carol"]));
    }

    #[test]
    fn show_answers_what_the_room_knows() {
        let model = &room_models(&room())[0];
        let shown = show(model);
        assert_eq!(shown["model_info"], json!({}), "the official client requires model_info");
        assert_eq!(shown["capabilities"], json!(["completion"]));
        assert_eq!(shown["gambi"]["participants"], json!(["alice", "bob"]));
    }

    #[test]
    fn show_names_embedding_where_a_probe_found_embeddings() {
        let mut room = room();
        let chat_only = Capabilities::default()
            .with(Endpoint::ChatCompletions, Capability::Supported)
            .with(Endpoint::Embeddings, Capability::Unsupported);
        room[0].capabilities = chat_only;
        room[1].capabilities = chat_only.with(Endpoint::Embeddings, Capability::Supported);
        room[2].capabilities = Capabilities::default()
            .with(Endpoint::ChatCompletions, Capability::Unsupported)
            .with(Endpoint::Embeddings, Capability::Supported);
        let models = room_models(&room);
        assert_eq!(show(&models[0])["capabilities"], json!(["completion", "embedding"]), "one of them embeds");
        assert_eq!(show(&models[1])["capabilities"], json!(["embedding"]), "an embedding model only");
        room[1].capabilities = chat_only;
        assert_eq!(show(&room_models(&room)[0])["capabilities"], json!(["completion"]));
        room[2].capabilities = Capabilities::default().with(Endpoint::ChatCompletions, Capability::Unsupported);
        assert_eq!(show(&room_models(&room)[1])["capabilities"], json!(["completion"]), "neither found");
    }
}
