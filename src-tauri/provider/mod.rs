//! Finding and probing the local model server (the provider) a participant shares: Ollama on
//! `localhost:11434`, else LM Studio on `localhost:1234`, else an OpenAI-compatible endpoint the
//! user names; what kind it is, its version, the models it has and the ones loaded in memory with
//! the VRAM they hold. Also the choice of which model to share ([`pick_model`]) and the
//! `loadedModels` refresh for the heartbeat ([`loaded_models`]).
//!
//! Registration, the capability probe before it and the tunnel are the participant's
//! (`participant::probe`); interactive questions and printing are the CLI's.
//!
//! Every HTTP probe has a hard 1 s limit on connecting and on the whole answer, and the default
//! locations are probed concurrently, so detection returns in about a second whatever listens
//! (or hangs) there.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tracing::debug;

use crate::participant::probe::same_model;
use crate::protocol::LoadedModel;
use crate::specs::bytes_to_gib;

/// Where Ollama listens unless told otherwise.
pub const OLLAMA_URL: &str = "http://localhost:11434";
/// Where LM Studio's server listens unless told otherwise.
pub const LMSTUDIO_URL: &str = "http://localhost:1234";
/// The limit of one probe request, connection included: a local server answers in milliseconds,
/// and "Share my Ollama" must not sit waiting on a port that accepts and never answers.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which server answered; serialized as the CLI's json shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProviderKind {
    #[serde(rename = "ollama")]
    Ollama,
    #[serde(rename = "lmstudio")]
    LmStudio,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Ollama => "Ollama",
            ProviderKind::LmStudio => "LM Studio",
            ProviderKind::OpenAiCompatible => "OpenAI-compatible server",
        })
    }
}

/// One model the provider has. Sizes in GiB like the wire; everything but the name is what the
/// provider chose to tell (Ollama tells all, an OpenAI `/v1/models` nothing).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_gib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

impl ModelInfo {
    fn named(name: impl Into<String>) -> Self {
        ModelInfo { name: name.into(), size_gib: None, quantization: None, parameter_size: None, family: None }
    }
}

/// A model server found and probed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    pub kind: ProviderKind,
    /// Base URL, no trailing slash and no `/v1`: what a participant registers as its `endpoint`.
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub models: Vec<ModelInfo>,
    /// Models held in memory (Ollama `/api/ps`, LM Studio `/api/v0/models` state), the wire's
    /// `loadedModels`.
    pub loaded: Vec<LoadedModel>,
}

/// What [`detect`] found, and why each location ranked before it (all of them, when nothing was
/// found) was not it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub found: Option<Provider>,
    /// `(url, why not)`, in the order the locations rank.
    pub tried: Vec<(String, String)>,
    /// The same failures in full, for [`Detection::message`] and callers that want sentences.
    #[serde(skip)]
    errors: Vec<ProbeError>,
}

impl Detection {
    /// The failures behind `tried`, as full sentences ("Ollama isn't running at …").
    pub fn errors(&self) -> &[ProbeError] {
        &self.errors
    }

    /// One human line: what was found, or "Nothing found: no Ollama on localhost:11434, no LM
    /// Studio on localhost:1234".
    pub fn message(&self) -> String {
        if let Some(provider) = &self.found {
            let version = provider.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
            let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
            return format!(
                "Found {}{version} at {} ({}, {} loaded)",
                provider.kind,
                provider.endpoint,
                plural(provider.models.len(), "model"),
                provider.loaded.len()
            );
        }
        let misses: Vec<String> = self
            .errors
            .iter()
            .map(|error| match error.kind() {
                Some(ProviderKind::OpenAiCompatible) | None => format!("no model server at {}", error.url()),
                Some(kind) => format!("no {kind} on {}", host_port(error.url())),
            })
            .collect();
        if misses.is_empty() {
            "Nothing found".to_owned()
        } else {
            format!("Nothing found: {}", misses.join(", "))
        }
    }
}

/// Why a location did not turn out to be a model server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Nothing accepted the connection (refused, unreachable, or no connection within 1 s).
    #[error("{} isn't running at {url} — start it, then try again", subject(*.kind))]
    NotRunning { kind: ProviderKind, url: String, reason: String },
    /// Something accepted the connection and then said nothing within 1 s.
    #[error("{} at {url} accepted the connection but didn't answer within 1 s — is it stuck?", subject(*.kind))]
    NoAnswer { kind: ProviderKind, url: String },
    /// Something answered, but not as this kind of server does.
    #[error("{url} answered, but not as {}: {reason}", object(*.kind))]
    Unexpected { kind: ProviderKind, url: String, reason: String },
    #[error("{url} isn't a usable address: {reason}")]
    BadUrl { url: String, reason: String },
}

fn subject(kind: ProviderKind) -> String {
    match kind {
        ProviderKind::OpenAiCompatible => "The model server".to_owned(),
        kind => kind.to_string(),
    }
}

fn object(kind: ProviderKind) -> String {
    match kind {
        ProviderKind::OpenAiCompatible => "an OpenAI-compatible model server".to_owned(),
        kind => kind.to_string(),
    }
}

impl ProbeError {
    pub fn url(&self) -> &str {
        match self {
            ProbeError::NotRunning { url, .. }
            | ProbeError::NoAnswer { url, .. }
            | ProbeError::Unexpected { url, .. }
            | ProbeError::BadUrl { url, .. } => url,
        }
    }

    fn kind(&self) -> Option<ProviderKind> {
        match self {
            ProbeError::NotRunning { kind, .. }
            | ProbeError::NoAnswer { kind, .. }
            | ProbeError::Unexpected { kind, .. } => Some(*kind),
            ProbeError::BadUrl { .. } => None,
        }
    }

    /// The short "why not" of [`Detection::tried`]: "connection refused", "no answer within 1 s".
    pub fn reason(&self) -> String {
        match self {
            ProbeError::NotRunning { reason, .. } | ProbeError::Unexpected { reason, .. } => reason.clone(),
            ProbeError::NoAnswer { .. } => "no answer within 1 s".to_owned(),
            ProbeError::BadUrl { reason, .. } => format!("not a usable address: {reason}"),
        }
    }
}

/// Why no model could be chosen; [`PickError::choices`] is what the CLI offers (or lists when it
/// cannot ask).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("{kind} at {endpoint} has no models yet — {}", no_models_hint(*.kind))]
    NoModels { kind: ProviderKind, endpoint: String },
    #[error("{kind} at {endpoint} doesn't serve '{wanted}'; it serves: {}", .choices.join(", "))]
    NotServed { kind: ProviderKind, endpoint: String, wanted: String, choices: Vec<String> },
    #[error("{kind} at {endpoint} has several models; choose one of: {}", .choices.join(", "))]
    Ambiguous { kind: ProviderKind, endpoint: String, choices: Vec<String> },
}

fn no_models_hint(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Ollama => "pull one first (for example `ollama pull llama3.2`)",
        ProviderKind::LmStudio => "download one in LM Studio first",
        ProviderKind::OpenAiCompatible => "load one first",
    }
}

impl PickError {
    /// The models to choose from (loaded ones first); empty for [`PickError::NoModels`].
    pub fn choices(&self) -> &[String] {
        match self {
            PickError::NoModels { .. } => &[],
            PickError::NotServed { choices, .. } | PickError::Ambiguous { choices, .. } => choices,
        }
    }
}

/// Finds the local model server at its default locations, then at `custom` (any OpenAI-compatible
/// base URL, or an Ollama on another port). About 1 s at worst; never hangs.
pub async fn detect(custom: Option<&str>) -> Detection {
    let ollama = ollama_url_from(std::env::var("OLLAMA_HOST").ok().as_deref());
    detect_at(&ollama, LMSTUDIO_URL, custom).await
}

/// Where Ollama listens: `OLLAMA_HOST` (the variable Ollama itself reads, as `host:port` or a URL)
/// when set, else [`OLLAMA_URL`]. A bind-everything host means this machine.
pub fn ollama_url_from(ollama_host: Option<&str>) -> String {
    let Some(raw) = ollama_host.map(str::trim).filter(|h| !h.is_empty()) else {
        return OLLAMA_URL.to_string();
    };
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    let Ok(mut url) = reqwest::Url::parse(&with_scheme) else {
        return OLLAMA_URL.to_string();
    };
    if matches!(url.host_str(), Some("0.0.0.0") | Some("[::]") | Some("::")) {
        let _ = url.set_host(Some("127.0.0.1"));
    }
    if url.port().is_none() && url.scheme() == "http" && !raw.contains("://") {
        let _ = url.set_port(Some(11434));
    }
    url.as_str().trim_end_matches('/').to_string()
}

/// [`detect`] with the default locations given, so tests point it at their own servers. All
/// locations are probed at once; the first in rank order (Ollama, LM Studio, custom) that answers
/// wins.
pub async fn detect_at(ollama: &str, lmstudio: &str, custom: Option<&str>) -> Detection {
    let client = match http_client() {
        Ok(client) => client,
        Err(reason) => {
            let errors: Vec<ProbeError> = [Some(ollama), Some(lmstudio), custom]
                .into_iter()
                .flatten()
                .map(|url| ProbeError::BadUrl { url: url.to_owned(), reason: reason.clone() })
                .collect();
            return detection(None, errors);
        }
    };
    let custom_probe = async {
        match custom {
            Some(url) => Some(probe_any_with(&client, url).await),
            None => None,
        }
    };
    let (ollama, lmstudio, custom) = tokio::join!(
        probe_ollama_with(&client, ollama),
        probe_openai_with(&client, lmstudio, ProviderKind::LmStudio),
        custom_probe
    );
    let mut errors = Vec::new();
    for result in [Some(ollama), Some(lmstudio), custom].into_iter().flatten() {
        match result {
            Ok(provider) => return detection(Some(provider), errors),
            Err(error) => errors.push(error),
        }
    }
    detection(None, errors)
}

fn detection(found: Option<Provider>, errors: Vec<ProbeError>) -> Detection {
    let tried = errors.iter().map(|error| (error.url().to_owned(), error.reason())).collect();
    if let Some(provider) = &found {
        debug!(kind = %provider.kind, endpoint = %provider.endpoint, models = provider.models.len(), "provider found");
    } else {
        debug!(?tried, "no provider found");
    }
    Detection { found, tried, errors }
}

/// Probes `url` as an Ollama: `/api/tags` must answer with a model list; `/api/version` and
/// `/api/ps` add the version and the loaded models when they answer.
pub async fn probe_ollama(url: &str) -> Result<Provider, ProbeError> {
    let client = http_client().map_err(|reason| ProbeError::BadUrl { url: url.to_owned(), reason })?;
    probe_ollama_with(&client, url).await
}

/// Probes a user-given `url` (a base URL, with or without `/v1`): an Ollama on any port (its
/// `/api/tags`), an LM Studio (its `/api/v0/models`), else any OpenAI-compatible server
/// (`/v1/models`). About 1 s at worst.
pub async fn probe(url: &str) -> Result<Provider, ProbeError> {
    let client = http_client().map_err(|reason| ProbeError::BadUrl { url: url.to_owned(), reason })?;
    probe_any_with(&client, url).await
}

/// The models an Ollama at `endpoint` holds in memory now (`/api/ps`), for the heartbeat's
/// `loadedModels` refresh; `None` when it does not answer as an Ollama within 1 s.
pub async fn loaded_models(endpoint: &str) -> Option<Vec<LoadedModel>> {
    let base = normalize(endpoint).ok()?;
    let client = http_client().ok()?;
    match get_json(&client, &base, "/api/ps").await {
        Ok(body) => parse_ps(&body),
        Err(failure) => {
            debug!(endpoint = %base, ?failure, "no loaded models from /api/ps");
            None
        }
    }
}

/// The model to share: `wanted` when the provider serves it (Ollama's `name` and `name:latest`
/// are one model; the provider's own spelling is returned), else the one loaded model, else the
/// only model, else an error listing the choices.
pub fn pick_model(provider: &Provider, wanted: Option<&str>) -> Result<String, PickError> {
    let kind = provider.kind;
    let endpoint = provider.endpoint.clone();
    // Loaded first: they are the warm choice the CLI should offer on top.
    let mut choices: Vec<String> = Vec::new();
    for name in provider.loaded.iter().map(|m| &m.name).chain(provider.models.iter().map(|m| &m.name)) {
        if !choices.iter().any(|known| same_model(known, name)) {
            choices.push(name.clone());
        }
    }
    if choices.is_empty() {
        return Err(PickError::NoModels { kind, endpoint });
    }
    if let Some(wanted) = wanted.map(str::trim).filter(|w| !w.is_empty()) {
        // Exact spelling first, so `llama3` and `llama3:latest` served side by side keep theirs.
        if let Some(exact) = choices.iter().find(|name| *name == wanted) {
            return Ok(exact.clone());
        }
        return match choices.iter().find(|name| same_model(name, wanted)) {
            Some(served) => Ok(served.clone()),
            None => Err(PickError::NotServed { kind, endpoint, wanted: wanted.to_owned(), choices }),
        };
    }
    match (provider.loaded.as_slice(), choices.as_slice()) {
        ([loaded], _) => Ok(loaded.name.clone()),
        (_, [only]) => Ok(only.clone()),
        _ => Err(PickError::Ambiguous { kind, endpoint, choices }),
    }
}

// ---------------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------------

async fn probe_any_with(client: &reqwest::Client, url: &str) -> Result<Provider, ProbeError> {
    let (ollama, openai) =
        tokio::join!(probe_ollama_with(client, url), probe_openai_with(client, url, ProviderKind::OpenAiCompatible));
    match (ollama, openai) {
        (Ok(provider), _) | (Err(_), Ok(provider)) => Ok(provider),
        (Err(_), Err(error)) => Err(error),
    }
}

/// One client per detection: probes need no connection reuse, and a client kept across calls
/// would hold pooled connections tied to whichever tokio runtime made them.
fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        // A desktop's HTTP_PROXY must not swallow probes of localhost and the LAN.
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))
}

async fn probe_ollama_with(client: &reqwest::Client, url: &str) -> Result<Provider, ProbeError> {
    let kind = ProviderKind::Ollama;
    let base = normalize(url).map_err(|reason| ProbeError::BadUrl { url: url.to_owned(), reason })?;
    let (version, tags, ps) = tokio::join!(
        get_json(client, &base, "/api/version"),
        get_json(client, &base, "/api/tags"),
        get_json(client, &base, "/api/ps"),
    );
    let tags = tags.map_err(|failure| failure.into_error(kind, &base, "/api/tags"))?;
    let models = parse_tags(&tags).ok_or_else(|| ProbeError::Unexpected {
        kind,
        url: base.clone(),
        reason: "/api/tags has no model list".to_owned(),
    })?;
    let version = version.ok().and_then(|v| v.get("version").and_then(Value::as_str).map(str::to_owned));
    let loaded = ps.ok().as_ref().and_then(parse_ps).unwrap_or_default();
    Ok(Provider { kind, endpoint: base, version, models, loaded })
}

/// `/v1/models` is the proof; `/api/v0/models` (LM Studio's own API) adds quantization,
/// architecture and load state where it exists, and names the server LM Studio.
async fn probe_openai_with(client: &reqwest::Client, url: &str, kind: ProviderKind) -> Result<Provider, ProbeError> {
    let base = normalize(url).map_err(|reason| ProbeError::BadUrl { url: url.to_owned(), reason })?;
    let (models, lmstudio) =
        tokio::join!(get_json(client, &base, "/v1/models"), get_json(client, &base, "/api/v0/models"));
    let models = models.map_err(|failure| failure.into_error(kind, &base, "/v1/models"))?;
    let names = parse_openai_models(&models).ok_or_else(|| ProbeError::Unexpected {
        kind,
        url: base.clone(),
        reason: "/v1/models has no model list".to_owned(),
    })?;
    let details = lmstudio.ok().as_ref().and_then(parse_lmstudio_models);
    let kind = if details.is_some() { ProviderKind::LmStudio } else { kind };
    let mut models: Vec<ModelInfo> = names.into_iter().map(ModelInfo::named).collect();
    let mut loaded = Vec::new();
    for detail in details.unwrap_or_default() {
        if detail.loaded {
            loaded.push(LoadedModel { name: detail.info.name.clone(), vram: None, size: None });
        }
        match models.iter_mut().find(|model| model.name == detail.info.name) {
            Some(model) => {
                model.quantization = detail.info.quantization;
                model.family = detail.info.family;
            }
            // `/v1/models` may list only loaded models (JIT off); the rest are installed too.
            None => models.push(detail.info),
        }
    }
    Ok(Provider { kind, endpoint: base, version: None, models, loaded })
}

/// How one GET failed, before it is told which server and path it was.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Timeout,
    Status(u16),
    NotJson,
}

impl Failure {
    fn into_error(self, kind: ProviderKind, url: &str, path: &str) -> ProbeError {
        let url = url.to_owned();
        match self {
            Failure::Connect(reason) => ProbeError::NotRunning { kind, url, reason },
            Failure::Timeout => ProbeError::NoAnswer { kind, url },
            Failure::Status(status) => ProbeError::Unexpected { kind, url, reason: format!("HTTP {status} on {path}") },
            Failure::NotJson => ProbeError::Unexpected { kind, url, reason: format!("{path} did not answer JSON") },
        }
    }
}

async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> Result<Value, Failure> {
    let request = async {
        let response = client.get(format!("{base}{path}")).send().await.map_err(classify)?;
        if !response.status().is_success() {
            return Err(Failure::Status(response.status().as_u16()));
        }
        let body = response.bytes().await.map_err(classify)?;
        serde_json::from_slice::<Value>(&body).map_err(|_| Failure::NotJson)
    };
    // reqwest's own timeout covers connect + headers + body; this outer one is the guarantee that
    // nothing (a slow resolver included) makes a probe outlive its second.
    tokio::time::timeout(PROBE_TIMEOUT + Duration::from_millis(100), request).await.unwrap_or(Err(Failure::Timeout))
}

fn classify(error: reqwest::Error) -> Failure {
    if error.is_connect() {
        // A connect that timed out is as good as nothing listening (a blackholed address).
        let reason = if error.is_timeout() { "no connection within 1 s".to_owned() } else { connect_reason(&error) };
        Failure::Connect(reason)
    } else if error.is_timeout() {
        Failure::Timeout
    } else if error.is_decode() || error.is_body() {
        Failure::NotJson
    } else {
        Failure::Connect(connect_reason(&error))
    }
}

/// The innermost cause ("Connection refused (os error 111)") reads better than reqwest's
/// "error sending request for url (…)".
fn connect_reason(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    let text = source.to_string();
    if text.to_ascii_lowercase().contains("connection refused") {
        "connection refused".to_owned()
    } else {
        text
    }
}

/// `localhost:8080`, `http://host:8080/`, `http://host:8080/v1` all become `http://host:8080`:
/// the participant's `endpoint` is the base, and it appends `/v1/…` itself.
fn normalize(url: &str) -> Result<String, String> {
    let trimmed = url.trim();
    let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("http://{trimmed}") };
    let parsed = reqwest::Url::parse(&with_scheme).map_err(|error| error.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("the scheme must be http or https, not {}", parsed.scheme()));
    }
    if parsed.host_str().is_none() {
        return Err("there is no host".to_owned());
    }
    let base = with_scheme.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    Ok(base.trim_end_matches('/').to_owned())
}

/// `localhost:11434` out of `http://localhost:11434`, for the one-line message.
fn host_port(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => url.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Response shapes. Parsed from `Value` field by field rather than with strict structs: a missing
// or odd field loses that field, not the whole model list.
// ---------------------------------------------------------------------------------------------

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn gib(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_u64).map(bytes_to_gib)
}

/// The model's name: Ollama sends `name` and `model` (the same); older versions only `name`.
fn ollama_name(model: &Value) -> Option<String> {
    text(model, "name").or_else(|| text(model, "model"))
}

/// Ollama `GET /api/tags`: `{"models": [{name, model, size, digest, details: {family,
/// parameter_size, quantization_level, …}}]}`.
fn parse_tags(body: &Value) -> Option<Vec<ModelInfo>> {
    let models = body.get("models")?.as_array()?;
    Some(
        models
            .iter()
            .filter_map(|model| {
                let details = model.get("details").unwrap_or(&Value::Null);
                Some(ModelInfo {
                    name: ollama_name(model)?,
                    size_gib: gib(model, "size"),
                    quantization: text(details, "quantization_level"),
                    parameter_size: text(details, "parameter_size"),
                    family: text(details, "family"),
                })
            })
            .collect(),
    )
}

/// Ollama `GET /api/ps`: `{"models": [{name, model, size, size_vram, expires_at, …}]}`; `size` is
/// the whole footprint, `size_vram` the part in GPU memory (0 when it runs on the CPU).
fn parse_ps(body: &Value) -> Option<Vec<LoadedModel>> {
    let models = body.get("models")?.as_array()?;
    Some(
        models
            .iter()
            .filter_map(|model| {
                Some(LoadedModel { name: ollama_name(model)?, vram: gib(model, "size_vram"), size: gib(model, "size") })
            })
            .collect(),
    )
}

/// OpenAI `GET /v1/models`: `{"object": "list", "data": [{"id", …}]}`.
fn parse_openai_models(body: &Value) -> Option<Vec<String>> {
    let data = body.get("data")?.as_array()?;
    Some(data.iter().filter_map(|model| text(model, "id")).collect())
}

struct LmStudioModel {
    info: ModelInfo,
    loaded: bool,
}

/// LM Studio `GET /api/v0/models`: `{"data": [{id, type, arch, quantization, state: "loaded" |
/// "not-loaded", …}]}`.
fn parse_lmstudio_models(body: &Value) -> Option<Vec<LmStudioModel>> {
    let data = body.get("data")?.as_array()?;
    let models: Vec<LmStudioModel> = data
        .iter()
        .filter_map(|model| {
            let name = text(model, "id")?;
            // `state` is what tells LM Studio's API from a look-alike `data` list.
            let state = text(model, "state")?;
            Some(LmStudioModel {
                info: ModelInfo {
                    name,
                    size_gib: None,
                    quantization: text(model, "quantization"),
                    parameter_size: None,
                    family: text(model, "arch"),
                },
                loaded: state == "loaded",
            })
        })
        .collect();
    (!models.is_empty() || data.is_empty()).then_some(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_host_is_honoured() {
        assert_eq!(ollama_url_from(None), OLLAMA_URL);
        assert_eq!(ollama_url_from(Some("")), OLLAMA_URL);
        assert_eq!(ollama_url_from(Some("127.0.0.1:5000")), "http://127.0.0.1:5000");
        assert_eq!(ollama_url_from(Some("0.0.0.0")), "http://127.0.0.1:11434");
        assert_eq!(ollama_url_from(Some("http://gpu-box:11434/")), "http://gpu-box:11434");
    }
    use serde_json::json;

    #[test]
    fn normalize_accepts_what_people_type() {
        assert_eq!(normalize("http://localhost:11434").unwrap(), "http://localhost:11434");
        assert_eq!(normalize("localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(normalize(" http://10.0.0.5:8000/v1/ ").unwrap(), "http://10.0.0.5:8000");
        assert_eq!(normalize("https://box.lan/llm/v1").unwrap(), "https://box.lan/llm");
        assert!(normalize("ftp://x").is_err());
        assert!(normalize("http://").is_err());
        assert_eq!(host_port("http://localhost:11434"), "localhost:11434");
    }

    #[test]
    fn ollama_shapes() {
        let tags = json!({"models": [
            {"name": "llama3:latest", "model": "llama3:latest", "size": 4_661_224_676_u64,
             "details": {"family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_0"}},
            {"model": "old:7b"},
            {"size": 3}
        ]});
        let models = parse_tags(&tags).unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].size_gib, Some(4.3));
        assert_eq!(models[0].quantization.as_deref(), Some("Q4_0"));
        assert_eq!(models[1], ModelInfo::named("old:7b"));
        assert_eq!(parse_tags(&json!({"error": "x"})), None);

        let ps = json!({"models": [{"name": "llama3:latest", "size": 6_000_000_000_u64, "size_vram": 0}]});
        assert_eq!(
            parse_ps(&ps).unwrap(),
            [LoadedModel { name: "llama3:latest".into(), vram: Some(0.0), size: Some(5.6) }]
        );
    }

    #[test]
    fn lmstudio_shapes() {
        let body = json!({"object": "list", "data": [
            {"id": "qwen2-vl-7b-instruct", "type": "vlm", "arch": "qwen2_vl", "quantization": "4bit", "state": "not-loaded"},
            {"id": "meta-llama-3.1-8b-instruct", "arch": "llama", "quantization": "Q4_K_M", "state": "loaded"}
        ]});
        let models = parse_lmstudio_models(&body).unwrap();
        assert!(!models[0].loaded && models[1].loaded);
        assert_eq!(models[1].info.family.as_deref(), Some("llama"));
        // An OpenAI list without `state` is not LM Studio's.
        assert!(parse_lmstudio_models(&json!({"data": [{"id": "x"}]})).is_none());
    }

    #[test]
    fn messages() {
        let refused =
            |kind, url: &str| ProbeError::NotRunning { kind, url: url.into(), reason: "connection refused".into() };
        let error = refused(ProviderKind::Ollama, OLLAMA_URL);
        assert_eq!(error.to_string(), "Ollama isn't running at http://localhost:11434 — start it, then try again");
        let detection = detection(
            None,
            vec![
                error,
                refused(ProviderKind::LmStudio, LMSTUDIO_URL),
                ProbeError::NoAnswer { kind: ProviderKind::OpenAiCompatible, url: "http://box:8000".into() },
            ],
        );
        assert_eq!(
            detection.message(),
            "Nothing found: no Ollama on localhost:11434, no LM Studio on localhost:1234, no model server at http://box:8000"
        );
        assert_eq!(detection.tried[2], ("http://box:8000".to_owned(), "no answer within 1 s".to_owned()));
    }
}
