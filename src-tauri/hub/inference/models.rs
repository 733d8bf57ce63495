//! `GET /rooms/:code/v1/models` and `GET /rooms/:code/v1/models/:id`: what a client may put in
//! `model`. First one entry per distinct model the room's routable participants serve (`id` = the
//! model name, `gambi.participants` = who serves it), so model pickers show models; then `*`
//! (whoever is free); then one entry per routable participant (`id` = its id, as the TypeScript
//! hub lists them). Never a participant's local endpoint.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::hub::error::{HubError, OpenAiError};
use crate::hub::registry::Selector;
use crate::hub::routes::{room_code, Params};
use crate::hub::Hub;
use crate::protocol::{Participant, ParticipantStatus};

type P<T> = Params<T, OpenAiError>;

/// Ollama names `llama3` and `llama3:latest` the same model, as routing does.
fn model_key(name: &str) -> String {
    name.strip_suffix(":latest").unwrap_or(name).to_ascii_lowercase()
}

fn routable(p: &Participant) -> bool {
    !matches!(p.status, ParticipantStatus::Offline | ParticipantStatus::Paused) && p.connection.connected
}

/// The listing's entries, in order: models (by name), `*`, participants (as the room lists them).
pub fn entries(participants: &[Participant], room_created_at: u64) -> Vec<Value> {
    let routable: Vec<&Participant> = participants.iter().filter(|p| routable(p)).collect();
    // Each model once, named as its first participant spells it.
    let mut models: Vec<(String, &str, Vec<&Participant>)> = Vec::new();
    for p in &routable {
        let key = model_key(&p.model);
        match models.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, serving)) => serving.push(p),
            None => models.push((key, p.model.as_str(), vec![p])),
        }
    }
    models.sort_by(|a, b| a.0.cmp(&b.0));
    let ids = |serving: &[&Participant]| serving.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    let mut data = Vec::with_capacity(models.len() + 1 + routable.len());
    for (_, name, serving) in &models {
        data.push(json!({
            "id": name,
            "object": "model",
            "created": serving.iter().map(|p| p.joined_at).min().unwrap_or(0) / 1000,
            "owned_by": "gambi",
            "gambi": {"kind": "model", "participants": ids(serving)},
        }));
    }
    data.push(json!({
        "id": "*",
        "object": "model",
        "created": room_created_at / 1000,
        "owned_by": "gambi",
        "gambi": {"kind": "any", "participants": ids(&routable)},
    }));
    for p in routable {
        data.push(json!({
            "id": p.id,
            "object": "model",
            "created": p.joined_at / 1000,
            "owned_by": p.nickname,
            "gambi": {
                "kind": "participant",
                "nickname": p.nickname,
                "model": p.model,
                "capabilities": p.capabilities,
                "connection": p.connection,
                "status": p.status,
            },
        }));
    }
    data
}

/// The entry `id` names, as routing reads a `model` field: a participant id first, then a model
/// (`model:<name>` or the bare name), then `*` / `any`.
pub fn find(entries: &[Value], id: &str) -> Option<Value> {
    let kind = |e: &Value| e.pointer("/gambi/kind").and_then(Value::as_str).map(str::to_owned);
    let named = |wanted: &str, k: &str| {
        entries.iter().find(|e| kind(e).as_deref() == Some(k) && e["id"].as_str().is_some_and(|i| i == wanted))
    };
    let model = |name: &str| {
        entries.iter().find(|e| {
            kind(e).as_deref() == Some("model") && e["id"].as_str().is_some_and(|i| model_key(i) == model_key(name))
        })
    };
    let found = match Selector::parse(id) {
        Selector::Any => named("*", "any"),
        Selector::Model(name) => model(&name),
        Selector::Named(name) => named(&name, "participant").or_else(|| model(&name)),
    };
    found.cloned()
}

fn room_entries(hub: &Hub, code: &str) -> Result<Vec<Value>, HubError> {
    let code = room_code(code)?;
    let room = hub.registry().room(&code)?;
    let participants = hub.registry().participants(&code)?;
    Ok(entries(&participants, room.created_at))
}

pub(super) async fn list(State(hub): State<Hub>, P { 0: code, .. }: P<String>) -> Result<Json<Value>, OpenAiError> {
    let data = room_entries(&hub, &code)?;
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub(super) async fn retrieve(
    State(hub): State<Hub>,
    P { 0: (code, id), .. }: P<(String, String)>,
) -> Result<Json<Value>, OpenAiError> {
    let data = room_entries(&hub, &code)?;
    // As for a request naming it: 404 `model_not_found`.
    find(&data, &id).map(Json).ok_or(OpenAiError(HubError::NoParticipant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Capabilities, Connection, ConnectionKind, MachineSpecs, PublicRuntimeConfig};

    fn participant(id: &str, model: &str, status: ParticipantStatus, connected: bool) -> Participant {
        Participant {
            id: id.into(),
            nickname: format!("{id}-nick"),
            model: model.into(),
            endpoint: "http://localhost:11434".into(),
            specs: MachineSpecs::default(),
            config: PublicRuntimeConfig::default(),
            capabilities: Capabilities::default(),
            connection: Connection { kind: ConnectionKind::Tunnel, connected, last_tunnel_seen_at: None },
            status,
            joined_at: 5_000,
            last_seen: 0,
            updated_at: 0,
            max_concurrency: 1,
            loaded_models: vec![],
            paused_reason: None,
            model_details: None,
        }
    }

    #[test]
    fn models_come_first_then_any_then_participants() {
        let ps = vec![
            participant("b", "qwen2", ParticipantStatus::Online, true),
            participant("a", "llama3", ParticipantStatus::Busy, true),
            participant("c", "llama3:latest", ParticipantStatus::Online, true),
            participant("gone", "mistral", ParticipantStatus::Offline, false),
            participant("paused", "phi", ParticipantStatus::Paused, true),
        ];
        let data = entries(&ps, 1_000_000);
        let ids: Vec<&str> = data.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["llama3", "qwen2", "*", "b", "a", "c"]);
        assert_eq!(data[0]["gambi"], json!({"kind": "model", "participants": ["a", "c"]}));
        assert_eq!(data[2]["gambi"]["participants"], json!(["b", "a", "c"]));
        assert_eq!(data[2]["created"], 1000);
        assert_eq!(data[3]["owned_by"], "b-nick");
        assert_eq!(data[3]["gambi"]["model"], "qwen2");
        assert!(!serde_json::to_string(&data).unwrap().contains("11434"), "no endpoint");
        assert!(data.iter().all(|e| e["object"] == "model"));
    }

    #[test]
    fn an_id_finds_what_routing_would_use() {
        let ps = vec![
            participant("llama3", "qwen2", ParticipantStatus::Online, true),
            participant("w2", "llama3", ParticipantStatus::Online, true),
        ];
        let data = entries(&ps, 0);
        let kind = |id: &str| find(&data, id).map(|e| e["gambi"]["kind"].as_str().unwrap().to_owned());
        assert_eq!(kind("llama3").as_deref(), Some("participant"), "a participant id wins, as in routing");
        assert_eq!(kind("model:llama3").as_deref(), Some("model"));
        assert_eq!(find(&data, "model:LLAMA3:latest").unwrap()["id"], "llama3");
        assert_eq!(kind("qwen2").as_deref(), Some("model"));
        assert_eq!(kind("w2").as_deref(), Some("participant"));
        assert_eq!(kind("*").as_deref(), Some("any"));
        assert_eq!(kind("any").as_deref(), Some("any"));
        assert_eq!(kind("nope"), None);
    }
}
