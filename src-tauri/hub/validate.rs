//! Turns untrusted JSON bodies into validated requests. Every rule lives here, so both surfaces
//! refuse the same things; each refusal names the field and says what is expected. Unknown fields are
//! ignored, `null` counts as absent.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::protocol::{
    Capabilities, HeartbeatNews, LoadedModel, MachineSpecs, ModelDetails, PauseReason, RuntimeConfig,
};

use super::error::HubError;
use super::registry::Registration;

pub const MAX_ROOM_NAME: usize = 100;
pub const MAX_NICKNAME: usize = 64;
pub const MAX_MODEL: usize = 256;
pub const MAX_ENDPOINT: usize = 2048;
pub const MAX_PASSWORD: usize = 1024;
pub const MAX_INSTRUCTIONS: usize = 64 * 1024;
/// `stop`: at most 4 sequences, as OpenAI takes, each of bounded length.
pub const MAX_STOPS: usize = 4;
pub const MAX_STOP_BYTES: usize = 1024;
/// The largest `max_tokens` a room or participant may set.
pub const MAX_MAX_TOKENS: u64 = 10_000_000;
/// A `defaults` or `config` object as shown to anyone: 16 KiB at most.
pub const MAX_PUBLIC_CONFIG: usize = 16 * 1024;
pub const MAX_SPEC_TEXT: usize = 256;
pub const MAX_CONCURRENCY: u32 = 1024;
pub const MAX_LOADED_MODELS: usize = 64;

/// Characters that make text lie about itself: controls, and the bidi overrides used to spoof.
fn has_forbidden_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

fn object(body: &Value) -> Result<&Map<String, Value>, HubError> {
    body.as_object().ok_or_else(|| {
        HubError::invalid("The body must be a JSON object.", "Send a JSON object, like {\"name\": \"My room\"}.")
    })
}

/// A field, with `null` read as absent.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// A text field: `Ok(None)` when absent, an error when present but not a string.
fn opt_text<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, HubError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => {
            Err(HubError::invalid(format!("'{name}' must be a string."), format!("Send '{name}' as a JSON string.")))
        }
    }
}

/// Trimmed, 1..=max characters, no control or bidi-override characters.
fn clean_text(name: &str, value: &str, max: usize) -> Result<String, HubError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(HubError::invalid(format!("'{name}' must not be empty."), format!("Give a {name}.")));
    }
    if trimmed.chars().count() > max {
        return Err(HubError::invalid(
            format!("'{name}' is too long (at most {max} characters)."),
            format!("Use a shorter {name}."),
        ));
    }
    if has_forbidden_chars(trimmed) {
        return Err(HubError::invalid(
            format!("'{name}' contains control characters."),
            format!("Use plain text for the {name}."),
        ));
    }
    Ok(trimmed.to_string())
}

fn typed<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str, expected: &str) -> Result<Option<T>, HubError> {
    match field(obj, name) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| HubError::InvalidRequest {
            message: format!("'{name}' is invalid: {e}."),
            hint: Some(format!("Send '{name}' as {expected}.")),
        }),
    }
}

fn runtime_config(obj: &Map<String, Value>, name: &str) -> Result<Option<RuntimeConfig>, HubError> {
    let config: Option<RuntimeConfig> = typed(
        obj,
        name,
        "an object with temperature, top_p, max_tokens, stop, frequency_penalty, presence_penalty, seed, instructions",
    )?;
    if let Some(c) = &config {
        if c.instructions.as_ref().is_some_and(|i| i.len() > MAX_INSTRUCTIONS) {
            return Err(HubError::invalid(
                format!("'{name}.instructions' is too long (at most {MAX_INSTRUCTIONS} bytes)."),
                "Use shorter instructions.",
            ));
        }
        // The ranges OpenAI accepts.
        for (key, value, low, high) in [
            ("temperature", c.temperature, 0.0, 2.0),
            ("top_p", c.top_p, 0.0, 1.0),
            ("frequency_penalty", c.frequency_penalty, -2.0, 2.0),
            ("presence_penalty", c.presence_penalty, -2.0, 2.0),
        ] {
            if value.is_some_and(|v| !v.is_finite() || v < low || v > high) {
                return Err(HubError::invalid(
                    format!("'{name}.{key}' must be a number from {low} to {high}."),
                    "Send a number in that range.",
                ));
            }
        }
        if c.max_tokens.is_some_and(|m| m == 0 || m > MAX_MAX_TOKENS) {
            return Err(HubError::invalid(
                format!("'{name}.max_tokens' must be a whole number from 1 to {MAX_MAX_TOKENS}."),
                "Send a smaller number.",
            ));
        }
        let stops: Vec<&String> = match &c.stop {
            None => Vec::new(),
            Some(crate::protocol::Stop::One(s)) => vec![s],
            Some(crate::protocol::Stop::Many(v)) => v.iter().collect(),
        };
        if stops.len() > MAX_STOPS || stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(HubError::invalid(
                format!("'{name}.stop' takes at most {MAX_STOPS} strings of at most {MAX_STOP_BYTES} bytes each."),
                "Send up to four short stop sequences, as OpenAI does.",
            ));
        }
        // What is shown to anyone (everything but the instructions, which stay on the hub).
        let public = serde_json::to_vec(&c.public()).map(|v| v.len()).unwrap_or(usize::MAX);
        if public > MAX_PUBLIC_CONFIG {
            return Err(HubError::invalid(
                format!("'{name}' is too large (at most {MAX_PUBLIC_CONFIG} bytes besides 'instructions')."),
                "Send a smaller object.",
            ));
        }
    }
    Ok(config)
}

/// `POST /rooms` and `POST /v1/rooms`.
pub struct CreateRoom {
    pub name: String,
    pub password: Option<String>,
    pub defaults: Option<RuntimeConfig>,
}

pub fn create_room(body: &Value) -> Result<CreateRoom, HubError> {
    let obj = object(body)?;
    let name = opt_text(obj, "name")?
        .ok_or(HubError::MissingFields { fields: "name", hint: "Give the room a name via the 'name' field." })?;
    let name = clean_text("name", name, MAX_ROOM_NAME)?;
    let password = password(obj)?;
    let defaults = runtime_config(obj, "defaults")?;
    Ok(CreateRoom { name, password, defaults })
}

/// The optional password of a body: an empty string means none.
pub fn password(obj: &Map<String, Value>) -> Result<Option<String>, HubError> {
    match opt_text(obj, "password")? {
        None | Some("") => Ok(None),
        Some(p) if p.len() > MAX_PASSWORD => Err(HubError::invalid(
            format!("'password' is too long (at most {MAX_PASSWORD} bytes)."),
            "Use a shorter password.",
        )),
        Some(p) => Ok(Some(p.to_string())),
    }
}

/// The password field of any body (used where the body was parsed elsewhere).
pub fn password_of(body: &Value) -> Result<Option<String>, HubError> {
    password(object(body)?)
}

/// Which surface a registration came through: the classic one names `id` among its required fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Classic,
    V1,
}

/// A participant registration (classic `join` or `/v1` upsert). Returns the registration and, for
/// the classic surface, the `id` the body carried.
pub fn registration(body: &Value, surface: Surface) -> Result<(Registration, Option<String>), HubError> {
    let obj = object(body)?;
    let missing = match surface {
        Surface::Classic => HubError::MissingFields {
            fields: "id, nickname, model, endpoint",
            hint: "Send nickname, model and endpoint (id is optional: the hub makes one).",
        },
        Surface::V1 => HubError::MissingFields {
            fields: "nickname, model, endpoint",
            hint: "Provide nickname, model, and endpoint.",
        },
    };
    let nickname = opt_text(obj, "nickname")?.filter(|s| !s.trim().is_empty());
    let model = opt_text(obj, "model")?.filter(|s| !s.trim().is_empty());
    let endpoint = opt_text(obj, "endpoint")?.filter(|s| !s.trim().is_empty());
    let (Some(nickname), Some(model), Some(endpoint)) = (nickname, model, endpoint) else {
        return Err(missing);
    };
    if field(obj, "authHeaders").is_some() {
        return Err(HubError::invalid(
            "Provider credentials ('authHeaders') are refused: they must stay on the participant's machine.",
            "Remove 'authHeaders'; the participant adds them itself when it calls its provider.",
        ));
    }
    let id = match surface {
        Surface::Classic => match opt_text(obj, "id")? {
            None | Some("") => None,
            Some(id) if crate::protocol::is_participant_id(id) => Some(id.to_string()),
            Some(_) => return Err(invalid_id()),
        },
        Surface::V1 => None,
    };
    let nickname = clean_text("nickname", nickname, MAX_NICKNAME)?;
    let model = clean_text("model", model, MAX_MODEL)?;
    let endpoint = endpoint_url(endpoint)?;
    let specs: MachineSpecs =
        typed(obj, "specs", "an object like {\"gpu\": \"RTX 4090\", \"vram\": 24}")?.unwrap_or_default();
    for (key, text) in [("specs.gpu", &specs.gpu), ("specs.cpu", &specs.cpu), ("specs.os", &specs.os)] {
        if let Some(t) = text {
            clean_text(key, t, MAX_SPEC_TEXT)?;
        }
    }
    for (key, n) in [("specs.vram", specs.vram), ("specs.ram", specs.ram)] {
        if n.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(HubError::invalid(format!("'{key}' must be a non-negative number of GiB."), "Send a number."));
        }
    }
    let config = runtime_config(obj, "config")?.unwrap_or_default();
    let capabilities: Option<Capabilities> = typed(
        obj,
        "capabilities",
        "{\"openResponses\": \"supported\"|\"unsupported\"|\"unknown\", \"chatCompletions\": ...}",
    )?;
    let max_concurrency: Option<u32> = typed(obj, "maxConcurrency", "a whole number from 1")?;
    if let Some(m) = max_concurrency {
        if m == 0 || m > MAX_CONCURRENCY {
            return Err(HubError::invalid(
                format!("'maxConcurrency' must be between 1 and {MAX_CONCURRENCY}."),
                "Send how many requests this participant serves at once.",
            ));
        }
    }
    let loaded_models = loaded_models(obj)?;
    let model_details = model_details(obj)?;
    let registration = Registration {
        nickname,
        model,
        endpoint,
        specs,
        config,
        capabilities,
        max_concurrency,
        loaded_models,
        model_details,
        reach: Default::default(),
    };
    Ok((registration, id))
}

/// Longest text kept of a model's details (`family`, `quantizationLevel`...).
pub const MAX_DETAIL_TEXT: usize = 64;
/// Most `families` kept.
pub const MAX_FAMILIES: usize = 16;

/// The optional `modelDetails` of a registration: what the provider tells of the model. A field
/// that is not short plain text is left out rather than refusing the participant (it comes from
/// the provider, not from the person sharing); nothing left is no details.
pub fn model_details(obj: &Map<String, Value>) -> Result<Option<ModelDetails>, HubError> {
    let details: Option<ModelDetails> =
        typed(obj, "modelDetails", "an object like {\"family\": \"llama\", \"parameterSize\": \"8.0B\"}")?;
    let keep = |text: Option<String>| text.and_then(|t| clean_text("modelDetails", &t, MAX_DETAIL_TEXT).ok());
    Ok(details
        .map(|d| ModelDetails {
            size: d.size,
            format: keep(d.format),
            family: keep(d.family),
            families: d
                .families
                .map(|f| f.into_iter().filter_map(|t| keep(Some(t))).take(MAX_FAMILIES).collect::<Vec<_>>())
                .filter(|f| !f.is_empty()),
            parameter_size: keep(d.parameter_size),
            quantization_level: keep(d.quantization_level),
        })
        .filter(|d| !d.is_empty()))
}

/// The optional `loadedModels` of a registration or heartbeat body.
pub fn loaded_models(obj: &Map<String, Value>) -> Result<Option<Vec<LoadedModel>>, HubError> {
    let models: Option<Vec<LoadedModel>> = typed(obj, "loadedModels", "a list of {\"name\", \"vram\"}")?;
    if let Some(m) = &models {
        if m.len() > MAX_LOADED_MODELS {
            return Err(HubError::invalid(
                format!("'loadedModels' lists too many models (at most {MAX_LOADED_MODELS})."),
                "Send only the loaded models.",
            ));
        }
        for model in m {
            clean_text("loadedModels.name", &model.name, MAX_MODEL)?;
        }
    }
    Ok(models)
}

/// A heartbeat's optional body: the loaded models, and (additive) `paused` with its `pauseReason`.
pub fn heartbeat(body: Option<&Value>) -> Result<HeartbeatNews, HubError> {
    let Some(v) = body else { return Ok(HeartbeatNews::default()) };
    let obj = object(v)?;
    Ok(HeartbeatNews {
        loaded_models: loaded_models(obj)?,
        paused: typed(obj, "paused", "true (pause the participant) or false (resume it)")?,
        // Any code is taken: one this hub does not know reads as a pause in general words.
        pause_reason: typed::<PauseReason>(obj, "pauseReason", "a reason code such as \"provider\"")?,
    })
}

pub fn invalid_id() -> HubError {
    HubError::invalid(
        "The participant id is invalid: use 1 to 128 letters, digits or . _ - ~ @ +.",
        "Pick a simple id like 'worker-1', or leave it out and let the hub make one.",
    )
}

fn endpoint_url(endpoint: &str) -> Result<String, HubError> {
    let endpoint = endpoint.trim();
    if endpoint.len() > MAX_ENDPOINT || has_forbidden_chars(endpoint) {
        return Err(HubError::invalid(
            format!("'endpoint' must be an http:// or https:// URL (got {:?}).", truncate(endpoint, 80)),
            "Give the address of the model server, like http://localhost:11434.",
        ));
    }
    crate::hub::egress::base_url(endpoint)?;
    // Kept as given (minus a trailing slash), so the participant sees back what it sent.
    Ok(endpoint.trim_end_matches('/').to_string())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_details_keep_short_plain_text_and_drop_the_rest() {
        let body = json!({"modelDetails": {
            "size": 4_661_224_676u64, "family": "llama", "families": ["llama", "", "x\u{7}"],
            "parameterSize": "8.0B", "quantizationLevel": "Q".repeat(65), "format": ""
        }});
        let details = model_details(body.as_object().unwrap()).unwrap().unwrap();
        assert_eq!(details.size, Some(4_661_224_676));
        assert_eq!(details.family.as_deref(), Some("llama"));
        assert_eq!(details.families, Some(vec!["llama".to_string()]));
        assert_eq!(details.parameter_size.as_deref(), Some("8.0B"));
        assert_eq!(details.quantization_level, None, "too long");
        assert_eq!(details.format, None, "empty");
        let empty = json!({"modelDetails": {"family": ""}});
        assert_eq!(model_details(empty.as_object().unwrap()).unwrap(), None);
        assert_eq!(model_details(json!({}).as_object().unwrap()).unwrap(), None);
        assert!(model_details(json!({"modelDetails": "llama"}).as_object().unwrap()).is_err());
    }

    #[test]
    fn room_defaults_and_participant_config_are_bounded_as_openai_does() {
        let ok = json!({"name": "x", "defaults": {"stop": ["\n", "END", "###", "</s>"], "temperature": 0.7, "max_tokens": 512}});
        assert!(create_room(&ok).is_ok());
        let big_stop = "s".repeat(836 * 1024);
        for bad in [
            json!({"name": "x", "defaults": {"stop": ["a", "b", "c", "d", "e"]}}),
            json!({"name": "x", "defaults": {"stop": [big_stop]}}),
            json!({"name": "x", "defaults": {"stop": "x".repeat(2000)}}),
            json!({"name": "x", "defaults": {"temperature": 3}}),
            json!({"name": "x", "defaults": {"top_p": -0.1}}),
            json!({"name": "x", "defaults": {"presence_penalty": 2.5}}),
            json!({"name": "x", "defaults": {"max_tokens": 0}}),
        ] {
            let err = create_room(&bad).err().unwrap_or_else(|| panic!("accepted {bad:.80}"));
            assert!(err.to_string().contains("defaults"), "{err}");
        }
        let config = json!({"nickname": "A", "model": "m", "endpoint": "http://x", "config": {"stop": ["a", "b", "c", "d", "e"]}});
        assert!(registration(&config, Surface::V1).is_err());
    }

    #[test]
    fn room_names_are_trimmed_and_bounded() {
        assert_eq!(create_room(&json!({"name": "  My room "})).unwrap().name, "My room");
        assert_eq!(create_room(&json!({"name": "Café ☕ 会议"})).unwrap().name, "Café ☕ 会议");
        assert!(create_room(&json!({"name": "x".repeat(100)})).is_ok());
        for bad in [
            json!({}),
            json!({"name": ""}),
            json!({"name": "   "}),
            json!({"name": 5}),
            json!({"name": "x".repeat(101)}),
            json!({"name": "a\u{0000}b"}),
            json!({"name": "a\nb"}),
            json!({"name": "a\u{202E}b"}),
            json!([1]),
            json!("name"),
        ] {
            assert!(create_room(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_password_means_none() {
        assert!(create_room(&json!({"name": "x", "password": ""})).unwrap().password.is_none());
        assert!(create_room(&json!({"name": "x", "password": 12})).is_err());
    }

    #[test]
    fn registrations_check_every_field() {
        let ok = json!({"nickname": "A", "model": "m", "endpoint": "http://localhost:11434/"});
        let (reg, id) = registration(&ok, Surface::Classic).unwrap();
        assert_eq!(reg.endpoint, "http://localhost:11434");
        assert_eq!(id, None);
        let missing = registration(&json!({"nickname": "A"}), Surface::Classic).unwrap_err();
        assert_eq!(missing.classic_message(), "Missing required fields: id, nickname, model, endpoint");
        for bad in [
            json!({"nickname": "A", "model": "m", "endpoint": "ftp://x"}),
            json!({"nickname": "A", "model": "m", "endpoint": "not a url"}),
            json!({"nickname": "A", "model": "m", "endpoint": "http://x", "specs": "big"}),
            json!({"nickname": "A", "model": "m", "endpoint": "http://x", "specs": {"vram": "24"}}),
            json!({"nickname": "A", "model": "m", "endpoint": "http://x", "config": {"temperature": "hot"}}),
            json!({"nickname": "A", "model": "m", "endpoint": "http://x", "maxConcurrency": 0}),
            json!({"nickname": "A", "model": "m", "endpoint": "http://x", "authHeaders": {"Authorization": "k"}}),
            json!({"nickname": "A", "model": "m", "endpoint": "http://x", "id": "../etc"}),
            json!({"nickname": 1, "model": "m", "endpoint": "http://x"}),
        ] {
            assert!(registration(&bad, Surface::Classic).is_err(), "{bad}");
        }
    }
}
