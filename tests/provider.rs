//! Finding the local model server: `provider::detect_at` against fake Ollama and LM Studio servers
//! (the suite's `FakeProvider`, with Ollama's `/api/*` on or off) on random ports, a custom
//! endpoint, and the two ways of finding nothing (nothing listens; something accepts and never
//! answers), which must both come back within the 1 s probe limit. Plus `pick_model` and the
//! heartbeat's `loaded_models`.

use std::time::{Duration, Instant};

use gambi::protocol::LoadedModel;
use gambi::provider::{self, ModelInfo, PickError, Provider, ProviderKind};
use gambi::specs::bytes_to_gib;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::fake_provider::{ollama_size, FakeOptions, FakeProvider};

/// A URL where nothing listens: a port the OS just handed out and that was closed again.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// A server that accepts every connection and never answers a byte (a stuck process); holds the
/// sockets until dropped.
struct Hanging {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Hanging {
    async fn start() -> Hanging {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Hanging { url, task }
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_ollama(models: &[&str], loaded: &[&str]) -> FakeProvider {
    FakeProvider::start(FakeOptions {
        ollama: true,
        models: models.iter().map(|m| m.to_string()).collect(),
        loaded: loaded.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    })
    .await
}

/// LM Studio as its OpenAI surface shows it: `/v1/models`, and 404 on Ollama's routes.
async fn fake_lmstudio(models: &[&str]) -> FakeProvider {
    FakeProvider::start(FakeOptions { models: models.iter().map(|m| m.to_string()).collect(), ..Default::default() })
        .await
}

fn loaded(name: &str) -> LoadedModel {
    let gib = bytes_to_gib(ollama_size(name));
    LoadedModel { name: name.to_owned(), vram: Some(gib), size: Some(gib) }
}

#[tokio::test]
async fn finds_a_fake_ollama_with_models_sizes_and_the_loaded_model() {
    let ollama = fake_ollama(&["llama3:latest", "qwen2.5:7b"], &["qwen2.5:7b"]).await;
    let detection = provider::detect_at(&ollama.url, &closed_url(), None).await;
    let found = detection.found.clone().expect("the fake Ollama is found");
    assert_eq!(found.kind, ProviderKind::Ollama);
    assert_eq!(found.endpoint, ollama.url);
    assert_eq!(found.version.as_deref(), Some("0.6.0"));
    assert_eq!(
        found.models,
        [
            ModelInfo {
                name: "llama3:latest".into(),
                size_gib: Some(bytes_to_gib(ollama_size("llama3:latest"))),
                quantization: Some("Q4_K_M".into()),
                parameter_size: Some("8.0B".into()),
                family: Some("llama".into()),
            },
            ModelInfo {
                name: "qwen2.5:7b".into(),
                size_gib: Some(bytes_to_gib(ollama_size("qwen2.5:7b"))),
                quantization: Some("Q4_K_M".into()),
                parameter_size: Some("8.0B".into()),
                family: Some("qwen".into()),
            },
        ]
    );
    assert_eq!(found.loaded, [loaded("qwen2.5:7b")]);
    assert!(found.loaded[0].vram.unwrap() > 3.0, "VRAM in GiB, not bytes");
    assert!(detection.tried.is_empty(), "Ollama ranks first: nothing before it was tried");
    assert!(detection.message().starts_with("Found Ollama 0.6.0 at http://127.0.0.1:"), "{}", detection.message());

    // The json the CLI prints.
    let json = serde_json::to_value(&detection).unwrap();
    assert_eq!(json["found"]["kind"], "ollama");
    assert_eq!(json["found"]["models"][0]["quantization"], "Q4_K_M");
    assert!(json["found"]["models"][0]["sizeGib"].is_number());
    assert_eq!(json["found"]["loaded"][0]["name"], "qwen2.5:7b");
    assert!(json["found"]["loaded"][0]["vram"].is_number());
    assert_eq!(json["tried"], Value::Array(vec![]));

    // The probes asked what Ollama's API documents.
    for path in ["/api/version", "/api/tags", "/api/ps"] {
        assert_eq!(ollama.requests_to(path).len(), 1, "{path}");
    }
}

#[tokio::test]
async fn finds_a_fake_lmstudio_when_no_ollama_answers() {
    let no_ollama = closed_url();
    let lmstudio = fake_lmstudio(&["qwen2.5-7b-instruct", "llama-3.2-3b-instruct"]).await;
    let detection = provider::detect_at(&no_ollama, &lmstudio.url, None).await;
    let found = detection.found.clone().expect("the fake LM Studio is found");
    assert_eq!(found.kind, ProviderKind::LmStudio);
    assert_eq!(found.endpoint, lmstudio.url);
    assert_eq!(found.version, None);
    let names: Vec<&str> = found.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["qwen2.5-7b-instruct", "llama-3.2-3b-instruct"]);
    assert_eq!(found.models[0].size_gib, None);
    assert!(found.loaded.is_empty());
    assert_eq!(detection.tried, [(no_ollama.clone(), "connection refused".to_owned())]);
    assert_eq!(
        detection.errors()[0].to_string(),
        format!("Ollama isn't running at {no_ollama} — start it, then try again")
    );
    assert_eq!(serde_json::to_value(&detection).unwrap()["found"]["kind"], "lmstudio");
}

#[tokio::test]
async fn ollama_ranks_before_lmstudio_when_both_answer() {
    let ollama = fake_ollama(&["llama3"], &[]).await;
    let lmstudio = fake_lmstudio(&["other"]).await;
    let found = provider::detect_at(&ollama.url, &lmstudio.url, None).await.found.unwrap();
    assert_eq!(found.kind, ProviderKind::Ollama);
    assert_eq!(found.endpoint, ollama.url);
}

#[tokio::test]
async fn finds_a_custom_openai_compatible_endpoint() {
    let server = fake_lmstudio(&["mistral-7b"]).await;
    // As people paste it: the OpenAI base URL, with `/v1` and a trailing slash.
    let custom = format!("{}/v1/", server.url);
    let (no_ollama, no_lmstudio) = (closed_url(), closed_url());
    let detection = provider::detect_at(&no_ollama, &no_lmstudio, Some(&custom)).await;
    let found = detection.found.clone().expect("the custom endpoint is found");
    assert_eq!(found.kind, ProviderKind::OpenAiCompatible);
    assert_eq!(found.endpoint, server.url, "the endpoint is the base, without /v1");
    assert_eq!(
        found.models,
        [ModelInfo {
            name: "mistral-7b".into(),
            size_gib: None,
            quantization: None,
            parameter_size: None,
            family: None
        }]
    );
    let tried: Vec<&str> = detection.tried.iter().map(|(url, _)| url.as_str()).collect();
    assert_eq!(tried, [no_ollama.as_str(), no_lmstudio.as_str()]);
    assert_eq!(serde_json::to_value(&detection).unwrap()["found"]["kind"], "openai-compatible");

    // `probe` is the same check for an endpoint given outright.
    assert_eq!(provider::probe(&server.url).await.unwrap(), found);
}

#[tokio::test]
async fn a_custom_endpoint_can_be_an_ollama_on_another_port() {
    let ollama = fake_ollama(&["llama3:latest"], &["llama3:latest"]).await;
    let found = provider::detect_at(&closed_url(), &closed_url(), Some(&ollama.url)).await.found.unwrap();
    assert_eq!(found.kind, ProviderKind::Ollama);
    assert_eq!(found.loaded, [loaded("llama3:latest")]);
}

#[tokio::test]
async fn nothing_found_quickly_when_nothing_listens() {
    let (ollama, lmstudio, custom) = (closed_url(), closed_url(), closed_url());
    let started = Instant::now();
    let detection = provider::detect_at(&ollama, &lmstudio, Some(&custom)).await;
    let took = started.elapsed();
    eprintln!("nothing listening: detect_at took {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(detection.found, None);
    assert_eq!(
        detection.tried,
        [
            (ollama.clone(), "connection refused".to_owned()),
            (lmstudio.clone(), "connection refused".to_owned()),
            (custom.clone(), "connection refused".to_owned()),
        ]
    );
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    assert_eq!(
        detection.message(),
        format!(
            "Nothing found: no Ollama on {}, no LM Studio on {}, no model server at {custom}",
            host(&ollama),
            host(&lmstudio)
        )
    );
    assert_eq!(
        provider::probe(&custom).await.unwrap_err().to_string(),
        format!("The model server isn't running at {custom} — start it, then try again")
    );
    assert_eq!(serde_json::to_value(&detection).unwrap()["found"], Value::Null);
}

#[tokio::test]
async fn nothing_found_within_the_probe_limit_when_servers_accept_and_never_answer() {
    let (ollama, lmstudio, custom) = (Hanging::start().await, Hanging::start().await, Hanging::start().await);
    let started = Instant::now();
    let detection = provider::detect_at(&ollama.url, &lmstudio.url, Some(&custom.url)).await;
    let took = started.elapsed();
    eprintln!("hanging servers: detect_at took {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(took >= Duration::from_millis(900), "it did wait for an answer: {took:?}");
    assert_eq!(detection.found, None);
    assert_eq!(detection.tried.len(), 3);
    for (url, why) in &detection.tried {
        assert_eq!(why, "no answer within 1 s", "{url}");
    }
    assert!(detection.errors()[0].to_string().contains("accepted the connection but didn't answer within 1 s"));

    let started = Instant::now();
    assert_eq!(provider::loaded_models(&ollama.url).await, None);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn detect_at_the_default_locations_never_hangs() {
    // Whatever this machine runs on 11434 and 1234 (the CI VM: nothing), the answer is quick.
    let started = Instant::now();
    let detection = provider::detect(None).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    if detection.found.is_none() {
        assert_eq!(detection.message(), "Nothing found: no Ollama on localhost:11434, no LM Studio on localhost:1234");
    }
}

#[tokio::test]
async fn loaded_models_follow_ollama_ps() {
    let ollama = fake_ollama(&["llama3:latest", "qwen2.5:7b"], &["qwen2.5:7b"]).await;
    assert_eq!(provider::loaded_models(&ollama.url).await, Some(vec![loaded("qwen2.5:7b")]));
    ollama.update(|o| o.loaded = vec!["llama3:latest".into(), "qwen2.5:7b".into()]);
    assert_eq!(provider::loaded_models(&ollama.url).await, Some(vec![loaded("llama3:latest"), loaded("qwen2.5:7b")]));
    ollama.update(|o| o.loaded.clear());
    assert_eq!(provider::loaded_models(&ollama.url).await, Some(vec![]));

    // Not an Ollama, or nothing there: no refresh (the heartbeat keeps what it had).
    let lmstudio = fake_lmstudio(&["x"]).await;
    assert_eq!(provider::loaded_models(&lmstudio.url).await, None);
    let started = Instant::now();
    assert_eq!(provider::loaded_models(&closed_url()).await, None);
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn provider_with(kind: ProviderKind, models: &[&str], loaded: &[&str]) -> Provider {
    Provider {
        kind,
        endpoint: "http://localhost:11434".into(),
        version: None,
        models: models
            .iter()
            .map(|m| ModelInfo {
                name: m.to_string(),
                size_gib: None,
                quantization: None,
                parameter_size: None,
                family: None,
            })
            .collect(),
        loaded: loaded.iter().map(|m| LoadedModel { name: m.to_string(), vram: None, size: None }).collect(),
    }
}

#[test]
fn pick_model_prefers_wanted_then_loaded_then_the_only_one() {
    let ollama = provider_with(ProviderKind::Ollama, &["llama3:latest", "qwen2.5:7b", "phi3:mini"], &["qwen2.5:7b"]);
    // Wanted and served; `name` and `name:latest` are one model, the served spelling comes back.
    assert_eq!(provider::pick_model(&ollama, Some("phi3:mini")).unwrap(), "phi3:mini");
    assert_eq!(provider::pick_model(&ollama, Some("llama3")).unwrap(), "llama3:latest");
    // Nothing wanted: the loaded one.
    assert_eq!(provider::pick_model(&ollama, None).unwrap(), "qwen2.5:7b");
    // Nothing loaded, one model: that one.
    let single = provider_with(ProviderKind::LmStudio, &["mistral-7b"], &[]);
    assert_eq!(provider::pick_model(&single, None).unwrap(), "mistral-7b");
    let latest = provider_with(ProviderKind::Ollama, &["llama3"], &[]);
    assert_eq!(provider::pick_model(&latest, Some("llama3:latest")).unwrap(), "llama3");
}

#[test]
fn pick_model_errors_list_the_choices() {
    let ollama = provider_with(ProviderKind::Ollama, &["llama3:latest", "qwen2.5:7b", "phi3:mini"], &["phi3:mini"]);
    let error = provider::pick_model(&ollama, Some("gemma2")).unwrap_err();
    assert!(matches!(error, PickError::NotServed { .. }));
    // Loaded first: the warm choice on top.
    assert_eq!(error.choices(), ["phi3:mini", "llama3:latest", "qwen2.5:7b"]);
    assert_eq!(
        error.to_string(),
        "Ollama at http://localhost:11434 doesn't serve 'gemma2'; it serves: phi3:mini, llama3:latest, qwen2.5:7b"
    );

    let cold = provider_with(ProviderKind::Ollama, &["llama3:latest", "qwen2.5:7b"], &[]);
    let error = provider::pick_model(&cold, None).unwrap_err();
    assert!(matches!(error, PickError::Ambiguous { .. }));
    assert_eq!(error.choices(), ["llama3:latest", "qwen2.5:7b"]);

    let two_loaded = provider_with(ProviderKind::Ollama, &["a", "b", "c"], &["a", "b"]);
    assert_eq!(provider::pick_model(&two_loaded, None).unwrap_err().choices(), ["a", "b", "c"]);

    let empty = provider_with(ProviderKind::Ollama, &[], &[]);
    let error = provider::pick_model(&empty, None).unwrap_err();
    assert_eq!(error.choices(), [] as [String; 0]);
    assert_eq!(
        error.to_string(),
        "Ollama at http://localhost:11434 has no models yet — pull one first (for example `ollama pull llama3.2`)"
    );
    assert!(matches!(provider::pick_model(&empty, Some("llama3")), Err(PickError::NoModels { .. })));
}

#[tokio::test]
async fn pick_model_against_a_detected_fake_ollama() {
    let ollama = fake_ollama(&["llama3:latest", "qwen2.5:7b"], &["qwen2.5:7b"]).await;
    let found = provider::detect_at(&ollama.url, &closed_url(), None).await.found.unwrap();
    assert_eq!(provider::pick_model(&found, None).unwrap(), "qwen2.5:7b");
    assert_eq!(provider::pick_model(&found, Some("llama3")).unwrap(), "llama3:latest");
}
