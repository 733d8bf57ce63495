//! What the hub sends a participant: the client's request with `model` rewritten to the
//! participant's real model, and runtime config merged in the order room defaults, then participant
//! config, then the request itself (the request wins). `instructions` becomes a leading system
//! message (chat) or the `instructions` field (responses) unless the request already has one.

use serde_json::{json, Map, Value};

use crate::protocol::{RuntimeConfig, Stop};

use super::request::RawObject;

/// Room defaults overlaid with the participant's config (the participant's values win).
pub fn layered(room: Option<&RuntimeConfig>, participant: &RuntimeConfig) -> RuntimeConfig {
    let base = room.cloned().unwrap_or_default();
    RuntimeConfig {
        temperature: participant.temperature.or(base.temperature),
        top_p: participant.top_p.or(base.top_p),
        max_tokens: participant.max_tokens.or(base.max_tokens),
        stop: participant.stop.clone().or(base.stop),
        frequency_penalty: participant.frequency_penalty.or(base.frequency_penalty),
        presence_penalty: participant.presence_penalty.or(base.presence_penalty),
        seed: participant.seed.or(base.seed),
        instructions: participant.instructions.clone().filter(|s| !s.is_empty()).or(base.instructions),
    }
}

/// A request body the merge can fill in: a value tree (the Responses fallback's settings) or the
/// raw fields of a request as the client sent it (see `request`).
pub trait Fields: Clone {
    /// The field is missing or `null`.
    fn absent(&self, key: &str) -> bool;
    fn put(&mut self, key: &str, value: Value);
    /// Some message of `messages` is a system or developer message.
    fn has_system_message(&self) -> bool;
    /// Puts `message` first in `messages`, if that is an array.
    fn prepend_message(&mut self, message: Value);
}

impl Fields for Map<String, Value> {
    fn absent(&self, key: &str) -> bool {
        self.get(key).is_none_or(Value::is_null)
    }
    fn put(&mut self, key: &str, value: Value) {
        self.insert(key.to_string(), value);
    }
    fn has_system_message(&self) -> bool {
        let Some(Value::Array(messages)) = self.get("messages") else { return false };
        messages.iter().any(|m| is_system(m.get("role").and_then(Value::as_str)))
    }
    fn prepend_message(&mut self, message: Value) {
        if let Some(Value::Array(messages)) = self.get_mut("messages") {
            messages.insert(0, message);
        }
    }
}

impl Fields for RawObject {
    fn absent(&self, key: &str) -> bool {
        RawObject::absent(self, key)
    }
    fn put(&mut self, key: &str, value: Value) {
        self.set(key, &value);
    }
    fn has_system_message(&self) -> bool {
        self.message_roles().iter().any(|r| is_system(r.as_deref()))
    }
    fn prepend_message(&mut self, message: Value) {
        RawObject::prepend_message(self, &message);
    }
}

fn is_system(role: Option<&str>) -> bool {
    matches!(role, Some("system") | Some("developer"))
}

fn set_default<F: Fields>(body: &mut F, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        if body.absent(key) {
            body.put(key, v);
        }
    }
}

fn stop_value(stop: &Stop) -> Value {
    match stop {
        Stop::One(s) => json!(s),
        Stop::Many(v) => json!(v),
    }
}

/// A chat completions body for `model`, with `config` filled in where the request is silent.
pub fn chat_body<F: Fields>(request: &F, model: &str, config: &RuntimeConfig) -> F {
    let mut body = request.clone();
    body.put("model", json!(model));
    set_default(&mut body, "temperature", config.temperature.map(Value::from));
    set_default(&mut body, "top_p", config.top_p.map(Value::from));
    if body.absent("max_completion_tokens") {
        set_default(&mut body, "max_tokens", config.max_tokens.map(Value::from));
    }
    set_default(&mut body, "stop", config.stop.as_ref().map(stop_value));
    set_default(&mut body, "frequency_penalty", config.frequency_penalty.map(Value::from));
    set_default(&mut body, "presence_penalty", config.presence_penalty.map(Value::from));
    set_default(&mut body, "seed", config.seed.map(Value::from));
    if let Some(instructions) = config.instructions.as_deref().filter(|s| !s.is_empty()) {
        if !body.has_system_message() {
            body.prepend_message(json!({"role": "system", "content": instructions}));
        }
    }
    body
}

/// A Responses body for `model`, with `config` filled in where the request is silent.
pub fn responses_body<F: Fields>(request: &F, model: &str, config: &RuntimeConfig) -> F {
    let mut body = request.clone();
    body.put("model", json!(model));
    set_default(&mut body, "temperature", config.temperature.map(Value::from));
    set_default(&mut body, "top_p", config.top_p.map(Value::from));
    set_default(&mut body, "max_output_tokens", config.max_tokens.map(Value::from));
    set_default(&mut body, "instructions", config.instructions.clone().filter(|s| !s.is_empty()).map(Value::from));
    body
}

/// A legacy completions body for `model`: the sampling settings of `config` where the request is
/// silent (a prompt has no place for `instructions`).
pub fn completions_body<F: Fields>(request: &F, model: &str, config: &RuntimeConfig) -> F {
    let mut body = request.clone();
    body.put("model", json!(model));
    set_default(&mut body, "temperature", config.temperature.map(Value::from));
    set_default(&mut body, "top_p", config.top_p.map(Value::from));
    set_default(&mut body, "max_tokens", config.max_tokens.map(Value::from));
    set_default(&mut body, "stop", config.stop.as_ref().map(stop_value));
    set_default(&mut body, "frequency_penalty", config.frequency_penalty.map(Value::from));
    set_default(&mut body, "presence_penalty", config.presence_penalty.map(Value::from));
    set_default(&mut body, "seed", config.seed.map(Value::from));
    body
}

/// An embeddings body for `model`: nothing of the runtime config applies to embeddings.
pub fn embeddings_body<F: Fields>(request: &F, model: &str, _config: &RuntimeConfig) -> F {
    let mut body = request.clone();
    body.put("model", json!(model));
    body
}

/// An Anthropic Messages body for `model`: the settings Messages has (`temperature`, `top_p`,
/// `max_tokens`, `stop` as `stop_sequences`) where the request is silent, and `instructions` as
/// `system` unless the request has one.
pub fn messages_body<F: Fields>(request: &F, model: &str, config: &RuntimeConfig) -> F {
    let mut body = request.clone();
    body.put("model", json!(model));
    set_default(&mut body, "temperature", config.temperature.map(Value::from));
    set_default(&mut body, "top_p", config.top_p.map(Value::from));
    set_default(&mut body, "max_tokens", config.max_tokens.map(Value::from));
    let stops = config.stop.as_ref().map(|s| match s {
        Stop::One(one) => json!([one]),
        Stop::Many(many) => json!(many),
    });
    set_default(&mut body, "stop_sequences", stops);
    set_default(&mut body, "system", config.instructions.clone().filter(|s| !s.is_empty()).map(Value::from));
    body
}

/// A native Ollama call (`/api/...` on an Ollama provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OllamaCall {
    Chat,
    Generate,
    Embed,
    Embeddings,
}

impl OllamaCall {
    /// The path on the provider.
    pub fn path(self) -> &'static str {
        match self {
            OllamaCall::Chat => "/api/chat",
            OllamaCall::Generate => "/api/generate",
            OllamaCall::Embed => "/api/embed",
            OllamaCall::Embeddings => "/api/embeddings",
        }
    }

    /// What the call is for, as the tunnel's `operation` says.
    pub fn operation(self) -> &'static str {
        match self {
            OllamaCall::Chat => "ollama.chat",
            OllamaCall::Generate => "ollama.generate",
            OllamaCall::Embed => "ollama.embed",
            OllamaCall::Embeddings => "ollama.embeddings",
        }
    }
}

/// An Ollama request for an Ollama provider's own endpoint: every field of the client's as it
/// came (`options`, `keep_alive`, `format`, `images`, `think`, `tools`...), `model` the
/// participant's, `stream` said when the client left it out (Ollama streams unless told, and the
/// hub relays what it expects), and for chat and generate the runtime config put in `options`
/// (`max_tokens` as `num_predict`) where the request is silent, `instructions` as a leading system
/// message (chat) or `system` (generate) unless the request has one. `options` is written anew
/// only when something is added to it.
pub fn ollama_body(
    request: &RawObject,
    model: &str,
    config: &RuntimeConfig,
    call: OllamaCall,
    stream: bool,
) -> RawObject {
    let mut body = request.clone();
    body.set("model", &json!(model));
    if matches!(call, OllamaCall::Embed | OllamaCall::Embeddings) {
        return body;
    }
    if body.absent("stream") {
        body.set("stream", &Value::Bool(stream));
    }
    let settings: [(&str, Option<Value>); 7] = [
        ("temperature", config.temperature.map(Value::from)),
        ("top_p", config.top_p.map(Value::from)),
        ("num_predict", config.max_tokens.map(Value::from)),
        (
            "stop",
            config.stop.as_ref().map(|s| match s {
                Stop::One(one) => json!([one]),
                Stop::Many(many) => json!(many),
            }),
        ),
        ("frequency_penalty", config.frequency_penalty.map(Value::from)),
        ("presence_penalty", config.presence_penalty.map(Value::from)),
        ("seed", config.seed.map(Value::from)),
    ];
    let mut options = body.field_object("options").unwrap_or_default();
    let mut added = false;
    for (key, value) in settings {
        if let Some(value) = value.filter(|_| options.absent(key)) {
            options.set(key, &value);
            added = true;
        }
    }
    if added {
        body.set_object("options", &options);
    }
    if let Some(instructions) = config.instructions.as_deref().filter(|s| !s.is_empty()) {
        match call {
            OllamaCall::Chat if !Fields::has_system_message(&body) => {
                body.prepend_message(&json!({"role": "system", "content": instructions}));
            }
            OllamaCall::Generate => body.set_default("system", Some(json!(instructions))),
            _ => {}
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_embeddings_and_messages_take_what_applies_to_them() {
        let config = RuntimeConfig {
            temperature: Some(0.5),
            max_tokens: Some(9),
            stop: Some(Stop::One("END".into())),
            seed: Some(3),
            instructions: Some("Be brief.".into()),
            ..Default::default()
        };
        let c = completions_body(&obj(json!({"model": "*", "prompt": "once", "seed": 1})), "m", &config);
        assert_eq!(
            Value::Object(c),
            json!({"model": "m", "prompt": "once", "seed": 1, "temperature": 0.5, "max_tokens": 9, "stop": "END"})
        );
        let e = embeddings_body(&obj(json!({"model": "*", "input": "x"})), "m", &config);
        assert_eq!(Value::Object(e), json!({"model": "m", "input": "x"}));
        let m = messages_body(&obj(json!({"model": "*", "messages": [], "max_tokens": 5})), "m", &config);
        assert_eq!(
            Value::Object(m),
            json!({"model": "m", "messages": [], "max_tokens": 5, "temperature": 0.5, "stop_sequences": ["END"], "system": "Be brief."})
        );
        let own = messages_body(&obj(json!({"system": "Mine."})), "m", &config);
        assert_eq!(own["system"], "Mine.");
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn request_wins_over_participant_over_room() {
        let room = RuntimeConfig { temperature: Some(0.1), top_p: Some(0.5), seed: Some(1), ..Default::default() };
        let participant = RuntimeConfig { temperature: Some(0.2), max_tokens: Some(100), ..Default::default() };
        let config = layered(Some(&room), &participant);
        let body =
            chat_body(&obj(json!({"model": "*", "messages": [], "top_p": 0.9, "seed": null})), "llama3", &config);
        assert_eq!(body["model"], "llama3");
        assert_eq!(body["temperature"], 0.2, "participant over room");
        assert_eq!(body["top_p"], 0.9, "request over all");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["seed"], 1, "null counts as absent");
    }

    #[test]
    fn instructions_become_a_system_message_unless_one_exists() {
        let config = RuntimeConfig { instructions: Some("Be brief.".into()), ..Default::default() };
        let body = chat_body(&obj(json!({"messages": [{"role": "user", "content": "hi"}]})), "m", &config);
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(body["messages"][1]["role"], "user");
        let own = chat_body(
            &obj(json!({"messages": [{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}]})),
            "m",
            &config,
        );
        assert_eq!(own["messages"].as_array().unwrap().len(), 2);
        assert_eq!(own["messages"][0]["content"], "Mine.");
    }

    #[test]
    fn responses_get_instructions_and_max_output_tokens() {
        let config =
            RuntimeConfig { instructions: Some("Be brief.".into()), max_tokens: Some(50), ..Default::default() };
        let body = responses_body(&obj(json!({"input": "hi"})), "m", &config);
        assert_eq!(body["instructions"], "Be brief.");
        assert_eq!(body["max_output_tokens"], 50);
        let own = responses_body(&obj(json!({"input": "hi", "instructions": "Mine."})), "m", &config);
        assert_eq!(own["instructions"], "Mine.");
    }

    #[test]
    fn raw_requests_merge_as_value_trees_do() {
        let config = RuntimeConfig {
            instructions: Some("Be brief.".into()),
            temperature: Some(0.5),
            max_tokens: Some(9),
            ..Default::default()
        };
        for request in [
            json!({"model": "*", "messages": [{"role": "user", "content": "hi"}], "seed": null}),
            json!({"model": "*", "messages": [{"role": "developer", "content": "x"}], "max_completion_tokens": 3}),
            json!({"model": "*", "messages": [], "temperature": 1}),
        ] {
            let raw = RawObject::parse(bytes::Bytes::from(request.to_string())).expect("object");
            let merged: Value = serde_json::from_slice(&chat_body(&raw, "m", &config).encode()).expect("JSON");
            assert_eq!(merged, Value::Object(chat_body(&obj(request.clone()), "m", &config)), "{request}");
            let merged: Value = serde_json::from_slice(&responses_body(&raw, "m", &config).encode()).expect("JSON");
            assert_eq!(merged, Value::Object(responses_body(&obj(request.clone()), "m", &config)), "{request}");
        }
    }

    fn ollama(request: Value, config: &RuntimeConfig, call: OllamaCall) -> Value {
        let raw = RawObject::parse(bytes::Bytes::from(request.to_string())).expect("object");
        serde_json::from_slice(&ollama_body(&raw, "llama3:latest", config, call, true).encode()).expect("JSON")
    }

    #[test]
    fn an_ollama_body_keeps_the_client_s_fields_and_fills_options_where_silent() {
        let request = json!({
            "model": "*", "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}],
            "keep_alive": "10m", "options": {"num_ctx": 8192, "temperature": 0.1}, "format": "json", "think": true
        });
        let same = ollama(request.clone(), &RuntimeConfig::default(), OllamaCall::Chat);
        let mut expected = request.clone();
        expected["model"] = json!("llama3:latest");
        expected["stream"] = json!(true);
        assert_eq!(same, expected, "nothing but model and stream changes without a config");
        let config = RuntimeConfig {
            temperature: Some(0.7),
            max_tokens: Some(64),
            stop: Some(Stop::One("END".into())),
            instructions: Some("Be brief.".into()),
            ..Default::default()
        };
        let merged = ollama(request.clone(), &config, OllamaCall::Chat);
        assert_eq!(merged["options"], json!({"num_ctx": 8192, "temperature": 0.1, "num_predict": 64, "stop": ["END"]}));
        assert_eq!(merged["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(merged["keep_alive"], "10m");
        assert_eq!(merged["images"], Value::Null);
        assert_eq!(merged["messages"][1]["images"], json!(["aGk="]));
        let told = ollama(json!({"model": "x", "prompt": "p", "stream": false}), &config, OllamaCall::Generate);
        assert_eq!(told["stream"], false, "the client's stream stays");
        assert_eq!(told["system"], "Be brief.");
        assert_eq!(told["options"]["temperature"], 0.7);
        let own = ollama(json!({"prompt": "p", "system": "Mine."}), &config, OllamaCall::Generate);
        assert_eq!(own["system"], "Mine.");
        let embed = ollama(
            json!({"model": "*", "input": ["a"], "keep_alive": 0, "truncate": false}),
            &config,
            OllamaCall::Embed,
        );
        assert_eq!(embed, json!({"model": "llama3:latest", "input": ["a"], "keep_alive": 0, "truncate": false}));
    }
}
