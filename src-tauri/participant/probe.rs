//! Probing a provider before registering: which models it serves (OpenAI `/v1/models`, else
//! Ollama `/api/tags`) and which endpoints it has (`capabilities`: chat completions, Responses,
//! embeddings, legacy completions, Anthropic Messages). The POST probes send an
//! empty body, which any real server refuses at once without generating anything: a 404, 405 or
//! 501 means the surface is missing, any other answer means it is there.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::protocol::{Capabilities, Capability, Endpoint};

/// How long one probe may take: a local server answers in milliseconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub models: Vec<String>,
    pub capabilities: Capabilities,
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
    let (responses, chat, embeddings, completions, messages) = tokio::join!(
        surface(http, endpoint, Endpoint::Responses.path(), auth),
        surface(http, endpoint, Endpoint::ChatCompletions.path(), auth),
        surface(http, endpoint, Endpoint::Embeddings.path(), auth),
        surface(http, endpoint, Endpoint::Completions.path(), auth),
        surface(http, endpoint, Endpoint::Messages.path(), auth),
    );
    let capabilities =
        Capabilities { open_responses: responses, chat_completions: chat, embeddings, completions, messages };
    Ok(Probe { models, capabilities })
}
