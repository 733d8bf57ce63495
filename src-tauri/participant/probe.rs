//! Probing a provider before registering: which models it serves (OpenAI `/v1/models`, else
//! Ollama `/api/tags`) and which endpoints it has (`capabilities`: chat completions, Responses,
//! embeddings, legacy completions, Anthropic Messages, and whether it is Ollama with its native
//! API: `/api/version` answers `{"version"}`, and `/api/tags` then tells the shared model's size
//! and details). The POST probes send an empty body, which any real server refuses at once without generating anything: a 404, 405 or
//! 501 means the surface is missing, any other answer means it is there.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::protocol::{Capabilities, Capability, Endpoint, ModelDetails};

/// How long one probe may take: a local server answers in milliseconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub models: Vec<String>,
    pub capabilities: Capabilities,
    /// What an Ollama provider tells of the model (its `/api/tags` `size` and `details`).
    pub model_details: Option<ModelDetails>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach the model server at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the model server at {endpoint} does not serve '{model}' (it serves: {})", list(.available))]
    ModelNotServed { endpoint: String, model: String, available: Vec<String> },
}

fn list(models: &[String]) -> String {
    if models.is_empty() {
        "nothing".into()
    } else {
        models.join(", ")
    }
}

/// Builds the headers a participant adds to every provider call; invalid names or values are
/// refused here, before anything is registered.
pub fn auth_header_map(auth: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in auth {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("invalid header name {k:?}"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("invalid value for header {k}"))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// True when `served` names `asked` (Ollama's `name` and `name:latest` are one model).
pub fn same_model(served: &str, asked: &str) -> bool {
    let strip = |m: &str| m.strip_suffix(":latest").unwrap_or(m).to_ascii_lowercase();
    served == asked || strip(served) == strip(asked)
}

async fn models(http: &reqwest::Client, endpoint: &str, auth: &HeaderMap) -> Result<Vec<String>, String> {
    let mut last = String::from("no answer");
    let openai = http.get(format!("{endpoint}/v1/models")).headers(auth.clone()).timeout(PROBE_TIMEOUT).send().await;
    match openai {
        Ok(r) if r.status().is_success() => {
            if let Ok(v) = r.json::<Value>().await {
                let ids: Vec<String> = v["data"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                if !ids.is_empty() {
                    return Ok(ids);
                }
            }
        }
        Ok(r) => last = format!("HTTP {} on /v1/models", r.status().as_u16()),
        Err(e) => last = if e.is_connect() { "connection refused".into() } else { e.to_string() },
    }
    let ollama = http.get(format!("{endpoint}/api/tags")).headers(auth.clone()).timeout(PROBE_TIMEOUT).send().await;
    if let Ok(r) = ollama {
        if r.status().is_success() {
            if let Ok(v) = r.json::<Value>().await {
                return Ok(v["models"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|m| m["name"].as_str().map(str::to_string)).collect())
                    .unwrap_or_default());
            }
        }
    }
    Err(last)
}

async fn surface(http: &reqwest::Client, endpoint: &str, path: &str, auth: &HeaderMap) -> Capability {
    let answer = http
        .post(format!("{endpoint}{path}"))
        .headers(auth.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}")
        .timeout(PROBE_TIMEOUT)
        .send()
        .await;
    match answer {
        Ok(r) if matches!(r.status().as_u16(), 404 | 405 | 501) => Capability::Unsupported,
        Ok(_) => Capability::Supported,
        Err(_) => Capability::Unknown,
    }
}

/// An answer of `/api/version` that only Ollama gives: `{"version": "0.6.0"}`. (llama-server and
/// others answer `/api/tags` and even `/api/chat` in their own shapes, so those prove nothing.)
pub fn is_ollama_version(answer: &Value) -> bool {
    answer.as_object().is_some_and(|o| o.get("version").and_then(Value::as_str).is_some_and(|v| !v.trim().is_empty()))
}

/// What Ollama's `/api/tags` tells of `model`: its `size` and `details` (format, family,
/// families, parameter size, quantization), the empty strings left out.
pub fn details_from_tags(tags: &Value, model: &str) -> Option<ModelDetails> {
    let entry = tags["models"].as_array()?.iter().find(|m| {
        [&m["name"], &m["model"]].into_iter().filter_map(Value::as_str).any(|name| same_model(name, model))
    })?;
    let details = &entry["details"];
    let text = |key: &str| details[key].as_str().map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
    let families = details["families"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .filter(|f| !f.is_empty());
    let found = ModelDetails {
        size: entry["size"].as_u64(),
        format: text("format"),
        family: text("family"),
        families,
        parameter_size: text("parameter_size"),
        quantization_level: text("quantization_level"),
    };
    (!found.is_empty()).then_some(found)
}

/// Whether the provider is Ollama, and what it tells of `model`.
async fn ollama(
    http: &reqwest::Client,
    endpoint: &str,
    model: &str,
    auth: &HeaderMap,
) -> (Capability, Option<ModelDetails>) {
    let get = |path: &str| {
        let request = http.get(format!("{endpoint}{path}")).headers(auth.clone()).timeout(PROBE_TIMEOUT);
        async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            }
        }
    };
    if !get("/api/version").await.as_ref().is_some_and(is_ollama_version) {
        return (Capability::Unknown, None);
    }
    (Capability::Supported, get("/api/tags").await.as_ref().and_then(|t| details_from_tags(t, model)))
}

/// Probes `endpoint` and checks it serves `model`.
pub async fn probe(http: &reqwest::Client, endpoint: &str, model: &str, auth: &HeaderMap) -> Result<Probe, ProbeError> {
    let endpoint = endpoint.trim_end_matches('/');
    let models = models(http, endpoint, auth)
        .await
        .map_err(|reason| ProbeError::Unreachable { endpoint: endpoint.into(), reason })?;
    if !models.iter().any(|m| same_model(m, model)) {
        return Err(ProbeError::ModelNotServed { endpoint: endpoint.into(), model: model.into(), available: models });
    }
    // All at once: each is one refused empty body, so together they take one round trip.
    let (responses, chat, embeddings, completions, messages, (ollama, model_details)) = tokio::join!(
        surface(http, endpoint, Endpoint::Responses.path(), auth),
        surface(http, endpoint, Endpoint::ChatCompletions.path(), auth),
        surface(http, endpoint, Endpoint::Embeddings.path(), auth),
        surface(http, endpoint, Endpoint::Completions.path(), auth),
        surface(http, endpoint, Endpoint::Messages.path(), auth),
        ollama(http, endpoint, model, auth),
    );
    let capabilities =
        Capabilities { open_responses: responses, chat_completions: chat, embeddings, completions, messages, ollama };
    Ok(Probe { models, capabilities, model_details })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_ollama_s_version_answer_says_ollama() {
        assert!(is_ollama_version(&json!({"version": "0.6.0"})));
        assert!(!is_ollama_version(&json!({"version": ""})));
        assert!(!is_ollama_version(&json!({"error": "not found"})));
        assert!(!is_ollama_version(&json!("0.6.0")));
    }

    #[test]
    fn details_come_from_the_shared_model_s_tags_entry() {
        let tags = json!({"models": [
            {"name": "qwen2:7b", "size": 1, "details": {"family": "qwen2"}},
            {"name": "llama3:latest", "model": "llama3:latest", "size": 4_661_224_676u64, "details": {
                "parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "8.0B", "quantization_level": "Q4_0"}}
        ]});
        let d = details_from_tags(&tags, "llama3").unwrap();
        assert_eq!(d.size, Some(4_661_224_676));
        assert_eq!(d.format.as_deref(), Some("gguf"));
        assert_eq!(d.family.as_deref(), Some("llama"));
        assert_eq!(d.families, Some(vec!["llama".to_string()]));
        assert_eq!(d.parameter_size.as_deref(), Some("8.0B"));
        assert_eq!(d.quantization_level.as_deref(), Some("Q4_0"));
        assert_eq!(details_from_tags(&tags, "mistral"), None);
        assert_eq!(details_from_tags(&json!({"models": [{"name": "m", "details": {"family": ""}}]}), "m"), None);
        assert_eq!(details_from_tags(&json!({}), "m"), None);
    }
}
