//! The Ollama API of a room (`/rooms/CODE/api/*`) end to end: a real hub, real participant
//! sessions dialing real tunnels, the fake provider (which speaks only the OpenAI endpoints, so
//! every call goes through the translation) and the official `ollama` Python client. Open WebUI's
//! Ollama connection is replayed in `open_webui.rs`, on the same [`Room`].

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gambi::protocol::LoadedModel;
use serde_json::{json, Value};

use crate::fake_provider::surfaces::embedding_of;
use crate::fake_provider::{FakeOptions, FakeProvider, Mode};
use crate::inference::{share, share_with, wait_for};
use crate::util::{call, http, Sse, TestHub, PATIENCE};

/// A room with a chat participant (`llama3`, holding it in memory) and an embeddings participant
/// (`nomic-embed-text`); the sessions end when the room is dropped.
pub(crate) struct Room {
    pub(crate) hub: TestHub,
    pub(crate) code: String,
    pub(crate) chat: FakeProvider,
    pub(crate) embed: FakeProvider,
    _sessions: Vec<gambi::participant::ParticipantSession>,
}

impl Room {
    pub(crate) async fn start(chat: FakeOptions, password: Option<&str>) -> Room {
        let hub = TestHub::start().await;
        let chat = FakeProvider::start(chat).await;
        let embed =
            FakeProvider::start(FakeOptions { models: vec!["nomic-embed-text".into()], ..FakeOptions::default() })
                .await;
        let (code, _) = hub.room("Ollama", password).await;
        let key = password.map(str::to_owned);
        let with_key = |o: &mut gambi::participant::SessionOptions| o.password = key.clone();
        let a = share_with(&hub, &code, "alice", &chat, "llama3", |o| {
            with_key(o);
            o.loaded_models =
                Some(vec![LoadedModel { name: "llama3:latest".into(), vram: Some(4.0), size: Some(4.5) }]);
        })
        .await;
        let b = share_with(&hub, &code, "bob", &embed, "nomic-embed-text", with_key).await;
        Room { hub, code, chat, embed, _sessions: vec![a, b] }
    }

    /// The room, as an Ollama client's base URL.
    pub(crate) fn base(&self) -> String {
        self.hub.at(&format!("/rooms/{}", self.code))
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/{path}", self.base())
    }
}

/// The Python interpreter with the `ollama` client: `GAMBI_TEST_PYTHON_OLLAMA`, else
/// `GAMBI_TEST_PYTHON` (scripts/test's venv, from tests/python/requirements.txt), else `python3`.
fn python_with_ollama() -> String {
    let python = std::env::var("GAMBI_TEST_PYTHON_OLLAMA")
        .or_else(|_| std::env::var("GAMBI_TEST_PYTHON"))
        .unwrap_or_else(|_| "python3".into());
    let ok =
        std::process::Command::new(&python).args(["-c", "import ollama"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the `ollama` Python client is missing from {python}: install tests/python/requirements.txt \
         (`{python} -m pip install -r tests/python/requirements.txt`) or point GAMBI_TEST_PYTHON_OLLAMA at a \
         Python that has it"
    );
    python
}

pub async fn run_ollama_client(args: Vec<String>) -> String {
    let python = python_with_ollama();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ollama_client.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).args(args).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the ollama Python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    stdout
}

/// NDJSON lines of a streamed answer, each with when it arrived.
pub(crate) async fn ndjson_lines(res: reqwest::Response) -> Vec<(Instant, Value)> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    let mut body = res.bytes_stream();
    while let Some(piece) = body.next().await {
        pending.push_str(&String::from_utf8_lossy(&piece.unwrap()));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            lines.push((Instant::now(), serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))));
        }
    }
    assert!(pending.trim().is_empty(), "a line without its newline: {pending}");
    lines
}

/// The calls a provider received on `path`, without the participant's capability probe (an
/// empty body).
fn calls_to(provider: &FakeProvider, path: &str) -> Vec<crate::fake_provider::Recorded> {
    provider.requests_to(path).into_iter().filter(|r| r.json() != json!({})).collect()
}

/// `got` holds the vectors `want`, number for number (the provider's `f32`s, written as JSON text
/// and read back as `f64`s, within an `f32`'s precision).
pub(crate) fn same_vectors(got: &Value, want: &[Vec<f32>]) -> bool {
    let Some(got) = got.as_array() else { return false };
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            g.as_array().is_some_and(|g| {
                g.len() == w.len()
                    && g.iter().zip(w).all(|(a, b)| a.as_f64().is_some_and(|a| (a - f64::from(*b)).abs() < 1e-6))
            })
        })
}

/// The length of the fake provider's vectors unless a request asks for others.
pub(crate) fn dimensions() -> usize {
    FakeOptions::default().embedding_dimensions
}

fn chat_body(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "stream": stream})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_ollama_python_client_works_against_a_room() {
    let room = Room::start(FakeOptions::default(), None).await;
    let out = run_ollama_client(vec![room.base(), "llama3".into(), "nomic-embed-text".into()]).await;
    eprintln!("{out}");
    // Everything reached the providers as OpenAI calls: the fake knows nothing else.
    let chat = calls_to(&room.chat, "/v1/chat/completions");
    assert!(chat.len() >= 7, "{} chat calls", chat.len());
    assert!(chat.iter().all(|r| r.json()["model"] == "llama3"), "the participant's own model name");
    let streamed = chat.iter().filter(|r| r.json()["stream"] == true).count();
    assert!(streamed >= 3, "{streamed} streamed");
    assert!(chat
        .iter()
        .filter(|r| r.json()["stream"] == true)
        .all(|r| r.json()["stream_options"]["include_usage"] == true));
    let raw = calls_to(&room.chat, "/v1/completions");
    assert_eq!(raw.len(), 1, "the raw generate ran as a legacy completion");
    assert_eq!(raw[0].json()["prompt"], "<|user|>raw prompt<|assistant|>");
    let embeds = calls_to(&room.embed, "/v1/embeddings");
    assert_eq!(embeds.len(), 3, "embed twice, embeddings once");
    assert_eq!(embeds[0].json()["input"], json!(["first text", "second text"]));
    assert!(room.chat.requests_to("/api/pull").is_empty() && room.chat.requests_to("/api/chat").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_room_takes_its_password_as_the_bearer_key() {
    let room = Room::start(FakeOptions::default(), Some("s3cret-pass")).await;
    for req in [
        http().get(room.api("tags")),
        http().get(room.api("tags")).bearer_auth("wrong"),
        http().post(room.api("chat")).json(&chat_body("llama3", "hi", false)),
    ] {
        let (status, _, v) = call(req).await;
        assert_eq!(status, 401, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("password")), "Ollama's shape: {v}");
    }
    let (status, _, v) = call(http().get(room.api("tags")).bearer_auth("s3cret-pass")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["models"].as_array().map(Vec::len), Some(2));
    let (status, _, v) = call(http().get(room.api("tags")).header("x-api-key", "s3cret-pass")).await;
    assert_eq!(status, 200, "the key as x-api-key, as on /v1: {v}");
    run_ollama_client(vec![room.base(), "llama3".into(), "nomic-embed-text".into(), "s3cret-pass".into()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ndjson_stream_sends_each_line_as_its_chunk_arrives() {
    let slow = FakeOptions { stream_chunks: 4, chunk_delay: Duration::from_millis(300), ..FakeOptions::default() };
    let room = Room::start(slow, None).await;
    for (path, body) in [
        ("chat", chat_body("llama3", "slow words here", true)),
        ("generate", json!({"model": "llama3", "prompt": "slow words here"})),
    ] {
        let res = http().post(room.api(path)).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        let lines = ndjson_lines(res).await;
        let text = |v: &Value| v["message"]["content"].as_str().or(v["response"].as_str()).unwrap_or("").to_owned();
        let content: Vec<&(Instant, Value)> = lines.iter().filter(|(_, v)| !text(v).is_empty()).collect();
        assert_eq!(content.len(), 4, "one line per chunk: {lines:?}");
        assert_eq!(content.iter().map(|(_, v)| text(v)).collect::<String>(), "echo: slow words here");
        // The provider waits 300 ms before each chunk but the first: each line comes when its chunk
        // does, not all at the end.
        for pair in content.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap >= Duration::from_millis(200), "{path}: lines {gap:?} apart");
        }
        let (last_at, last) = lines.last().unwrap();
        assert!(*last_at - content[0].0 >= Duration::from_millis(800), "{path}: the first line came at once");
        assert_eq!(last["done"], true, "{last}");
        assert_eq!(last["done_reason"], "stop");
        assert!(last["eval_count"].as_u64().unwrap() > 0 && last["prompt_eval_count"].as_u64().unwrap() > 0, "{last}");
        let ns = |k: &str| last[k].as_u64().unwrap_or_else(|| panic!("{k}: {last}"));
        assert!(ns("total_duration") >= 900_000_000, "{last}");
        assert!(ns("eval_duration") >= 800_000_000 && ns("prompt_eval_duration") > 0, "{last}");
        assert_eq!(ns("load_duration"), 0);
        assert!(lines[..lines.len() - 1].iter().all(|(_, v)| v["done"] == false));
        assert!(lines.iter().all(|(_, v)| humantime::parse_rfc3339(v["created_at"].as_str().unwrap()).is_ok()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_and_generate_answer_whole_with_ollamas_fields() {
    let room = Room::start(FakeOptions::default(), None).await;
    let (status, headers, v) = call(http().post(room.api("chat")).json(&chat_body("llama3:latest", "hi", false))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(v["model"], "llama3:latest");
    assert_eq!(v["message"], json!({"role": "assistant", "content": "echo: hi"}));
    assert_eq!((v["done"].clone(), v["done_reason"].clone()), (json!(true), json!("stop")));
    assert_eq!(v["eval_count"], 2);
    assert_eq!(v["prompt_eval_count"], 1);
    for k in ["total_duration", "load_duration", "prompt_eval_duration", "eval_duration"] {
        assert!(v[k].is_u64(), "{k}: {v}");
    }
    let body = json!({"model": "llama3", "prompt": "why?", "system": "Be brief.", "stream": false});
    let (status, _, v) = call(http().post(room.api("generate")).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"], "echo: why?");
    assert_eq!(
        room.chat.last_body("/v1/chat/completions").unwrap()["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "why?"}])
    );
    // Nothing to generate: Ollama's "loaded", and no participant is asked.
    let calls = calls_to(&room.chat, "/v1/chat/completions").len();
    let (status, _, v) =
        call(http().post(room.api("generate")).json(&json!({"model": "llama3", "stream": false}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["done"].clone(), v["done_reason"].clone()), (json!(true), json!("load")));
    let (status, _, v) = call(http().post(room.api("chat")).json(&json!({"model": "llama3", "messages": []}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"]["content"], "");
    assert_eq!(calls_to(&room.chat, "/v1/chat/completions").len(), calls);
    // Every routing form of the room works here too.
    let (status, _, v) = call(http().post(room.api("chat")).json(&chat_body("*", "x", false))).await;
    assert_eq!(status, 200, "{v}");
    for model in ["model:llama3", "alice", "LLAMA3"] {
        let (status, _, v) = call(http().post(room.api("chat")).json(&chat_body(model, "x", false))).await;
        assert_eq!(status, 200, "{model}: {v}");
        assert_eq!(v["model"], "llama3:latest", "the model that answered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn options_format_images_and_tools_reach_the_provider_as_openai_fields() {
    let room = Room::start(FakeOptions::default(), None).await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let body = json!({
        "model": "llama3",
        "stream": false,
        "format": schema,
        "keep_alive": "10m",
        "options": {"temperature": 0.1, "top_p": 0.8, "top_k": 20, "seed": 42, "num_predict": 64,
            "stop": ["###"], "repeat_penalty": 1.2, "presence_penalty": 0.3, "frequency_penalty": 0.4, "num_ctx": 4096},
        "messages": [{"role": "user", "content": "describe", "images": ["iVBORw0KGgoAAAANSUhEUg=="]}],
    });
    let (status, _, v) = call(http().post(room.api("chat")).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    let sent = room.chat.last_body("/v1/chat/completions").unwrap();
    assert_eq!(
        sent["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}})
    );
    for (k, want) in [
        ("temperature", json!(0.1)),
        ("top_p", json!(0.8)),
        ("top_k", json!(20)),
        ("seed", json!(42)),
        ("max_tokens", json!(64)),
        ("stop", json!(["###"])),
        ("repeat_penalty", json!(1.2)),
        ("presence_penalty", json!(0.3)),
        ("frequency_penalty", json!(0.4)),
    ] {
        assert_eq!(sent[k], want, "{k}: {sent}");
    }
    assert!(
        sent.get("num_ctx").is_none() && sent.get("options").is_none() && sent.get("keep_alive").is_none(),
        "{sent}"
    );
    assert_eq!(
        sent["messages"][0]["content"],
        json!([{"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}}])
    );
    let (status, _, _) = call(http().post(room.api("chat")).json(&json!({"model": "llama3", "stream": false,
        "format": "json", "messages": [{"role": "user", "content": "x"}]})))
    .await;
    assert_eq!(status, 200);
    assert_eq!(room.chat.last_body("/v1/chat/completions").unwrap()["response_format"], json!({"type": "json_object"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_and_embeddings_answer_the_providers_vectors() {
    let room = Room::start(FakeOptions::default(), None).await;
    let (status, _, v) =
        call(http().post(room.api("embed")).json(&json!({"model": "nomic-embed-text", "input": ["a b", "c"]}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "nomic-embed-text:latest");
    let want = [embedding_of("a b", dimensions()), embedding_of("c", dimensions())];
    assert!(same_vectors(&v["embeddings"], &want), "{v}");
    assert_eq!(v["prompt_eval_count"], 3);
    let (status, _, v) =
        call(http().post(room.api("embed")).json(&json!({"model": "nomic-embed-text", "input": "c", "dimensions": 3})))
            .await;
    assert_eq!(status, 200, "{v}");
    assert!(same_vectors(&v["embeddings"], &[embedding_of("c", 3)]), "{v}");
    let (status, _, v) =
        call(http().post(room.api("embeddings")).json(&json!({"model": "nomic-embed-text", "prompt": "c"}))).await;
    assert_eq!(status, 200, "{v}");
    assert!(same_vectors(&json!([v["embedding"]]), &[embedding_of("c", dimensions())]), "{v}");
    let (status, _, v) =
        call(http().post(room.api("embeddings")).json(&json!({"model": "nomic-embed-text", "prompt": ""}))).await;
    assert_eq!((status, v), (200, json!({"embedding": []})), "as Ollama answers an empty prompt");
    let (status, _, v) =
        call(http().post(room.api("embed")).json(&json!({"model": "nomic-embed-text", "input": []}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["embeddings"], json!([]));
    assert_eq!(calls_to(&room.embed, "/v1/embeddings").len(), 3, "the empty ones asked nobody");
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_ps_show_and_version_describe_the_room() {
    let room = Room::start(FakeOptions::default(), None).await;
    let (status, _, v) = call(http().get(room.api("version"))).await;
    assert_eq!((status, v["version"].is_string()), (200, true), "{v}");
    let (status, _, tags) = call(http().get(room.api("tags"))).await;
    assert_eq!(status, 200, "{tags}");
    let names: Vec<&str> = tags["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["llama3:latest", "nomic-embed-text:latest"]);
    let llama = &tags["models"][0];
    assert_eq!(llama["size"], 4_831_838_208u64, "the 4.5 GiB alice reports");
    assert_eq!(llama["gambi"]["participants"], json!(["alice"]));
    let (status, _, ps) = call(http().get(room.api("ps"))).await;
    assert_eq!(status, 200, "{ps}");
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(1), "{ps}");
    assert_eq!(ps["models"][0]["size_vram"], 4u64 << 30);
    let (status, _, shown) = call(http().post(room.api("show")).json(&json!({"model": "llama3"}))).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["model_info"], json!({}));
    let (status, _, shown) =
        call(http().post(room.api("show")).json(&json!({"name": "nomic-embed-text:latest"}))).await;
    assert_eq!(status, 200, "the older `name` works: {shown}");
    // What Ollama's own client checks first.
    let res = http().head(format!("{}/", room.base())).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = http().get(format!("{}/", room.base())).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "Ollama is running");
    // A participant that leaves takes its model with it.
    for session in &room._sessions {
        session.close().await;
    }
    wait_for(|| async {
        let (_, _, tags) = call(http().get(room.api("tags"))).await;
        tags["models"] == json!([])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn model_management_answers_403_in_ollamas_shape() {
    let room = Room::start(FakeOptions::default(), None).await;
    let refused = |v: &Value| v["error"].as_str().is_some_and(|e| e.contains("does not manage"));
    for (method, path, body) in [
        (reqwest::Method::POST, "pull", json!({"model": "llama3"})),
        (reqwest::Method::POST, "push", json!({"model": "llama3"})),
        (reqwest::Method::POST, "create", json!({"model": "mine", "from": "llama3"})),
        (reqwest::Method::POST, "copy", json!({"source": "llama3", "destination": "copy"})),
        (reqwest::Method::DELETE, "delete", json!({"model": "llama3"})),
        (reqwest::Method::POST, "blobs/sha256:0123abcd", json!({})),
        // Open WebUI's unload: an empty generate with keep_alive 0.
        (reqwest::Method::POST, "generate", json!({"model": "llama3", "keep_alive": 0, "prompt": ""})),
    ] {
        let (status, _, v) = call(http().request(method.clone(), room.api(path)).json(&body)).await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert!(refused(&v), "{path}: {v}");
    }
    let res = http().head(room.api("blobs/sha256:0123abcd")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    // Only the participant's probe asked anything of Ollama's API (`GET /api/version`: is it Ollama?).
    assert!(
        room.chat
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/api/") || (r.method == "GET" && r.path == "/api/version")),
        "nothing reached a member"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_unknown_models_and_rooms_answer_in_ollamas_shape() {
    let room = Room::start(FakeOptions::default(), None).await;
    let shaped = |v: &Value| v.as_object().is_some_and(|o| o.len() == 1 && o["error"].is_string());
    for (path, body, status, words) in [
        ("chat", chat_body("nope", "hi", false), 404, "model 'nope' not found"),
        ("chat", chat_body("nope", "hi", true), 404, "model 'nope' not found"),
        ("generate", json!({"model": "nope", "prompt": "x"}), 404, "model 'nope' not found"),
        ("generate", json!({"model": "nope"}), 404, "model 'nope' not found"),
        ("embed", json!({"model": "nope", "input": "x"}), 404, "model 'nope' not found"),
        ("show", json!({"model": "nope"}), 404, "model 'nope' not found"),
        ("chat", json!({"messages": []}), 400, "model"),
        ("chat", json!({"model": "llama3", "messages": "hi"}), 400, "messages"),
        (
            "chat",
            json!({"model": "llama3", "messages": [{"role": "user", "content": "x"}], "stream": 1}),
            400,
            "stream",
        ),
        ("generate", json!({"model": "llama3", "prompt": "def f(", "suffix": "return 1"}), 400, "suffix"),
        ("generate", json!({"model": "llama3", "prompt": "x", "raw": true, "system": "Be brief."}), 400, "system"),
        ("embed", json!({"model": "nomic-embed-text", "input": 5}), 400, "input"),
    ] {
        let (got, _, v) = call(http().post(room.api(path)).json(&body)).await;
        assert_eq!(got, status, "{path} {body}: {v}");
        assert!(shaped(&v) && v["error"].as_str().unwrap().contains(words), "{path} {body}: {v}");
    }
    let (status, _, v) =
        call(http().post(room.api("chat")).header("content-type", "application/json").body("{oops")).await;
    assert_eq!(status, 400, "{v}");
    assert!(shaped(&v), "{v}");
    let (status, _, v) = call(http().post(room.api("chat")).body("{}")).await;
    assert_eq!(status, 415, "a body that does not say it is JSON: {v}");
    assert!(shaped(&v), "{v}");
    let (status, _, v) = call(http().get(room.api("chat"))).await;
    assert_eq!(status, 405, "{v}");
    assert!(shaped(&v), "{v}");
    for url in
        [room.api("nothing-here"), room.hub.at("/rooms/ZZZZZZ/api/tags"), room.hub.at("/rooms/ZZZZZZ/api/version")]
    {
        let (status, _, v) = call(http().get(&url)).await;
        assert_eq!(status, 404, "{url}: {v}");
        assert!(shaped(&v), "{url}: {v}");
    }
    let (status, _, v) =
        call(http().post(room.hub.at("/rooms/ZZZZZZ/api/chat")).json(&chat_body("llama3", "x", false))).await;
    assert_eq!(status, 404, "{v}");
    assert!(shaped(&v), "{v}");
    // A provider's own failure, in the same shape.
    room.chat.set_mode(Mode::Fail500);
    let (status, _, v) = call(http().post(room.api("chat")).json(&chat_body("llama3", "x", false))).await;
    assert_eq!(status, 500, "{v}");
    assert!(shaped(&v) && v["error"].as_str().unwrap().contains("Mode::Fail500"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_requests_queue_for_a_busy_participant_and_are_counted_by_the_room() {
    let hub = TestHub::start().await;
    let slow =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(300), ..FakeOptions::default() })
            .await;
    let (code, _) = hub.room("Busy", None).await;
    let _s = share(&hub, &code, "slow", &slow, "llama3").await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let url = hub.at(&format!("/rooms/{code}/api/chat"));
    // Three at once on a participant that serves one at a time: they wait their turn.
    let calls: Vec<_> = (0..3)
        .map(|i| tokio::spawn(call(http().post(&url).json(&chat_body("llama3", &format!("n{i}"), i == 2)))))
        .collect();
    for c in calls {
        let (status, _, v) = c.await.unwrap();
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(slow.completed(), 3);
    let (mut requests, mut complete) = (0, 0);
    while let Some(e) = events.next_within(Duration::from_millis(500)).await {
        let data = e.json()["data"].clone();
        match e.event.as_str() {
            "llm.request" => {
                assert_eq!(data["participantId"], "slow");
                requests += 1;
            }
            "llm.complete" => {
                let m = &data["metrics"];
                assert!(m["inputTokens"].as_u64().unwrap() > 0 && m["outputTokens"].as_u64().unwrap() > 0, "{m}");
                complete += 1;
            }
            _ => {}
        }
    }
    assert_eq!((requests, complete), (3, 3), "each Ollama call is a request of the room");
    let (_, _, room) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(room["data"]["stats"]["completed"], 3, "{room}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ollama_request_fails_over_before_its_first_byte() {
    let hub = TestHub::start().await;
    let good =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(500), ..FakeOptions::default() })
            .await;
    let broken = FakeProvider::start(FakeOptions { mode: Mode::Fail500, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("Failover", None).await;
    let _g = share_with(&hub, &code, "good", &good, "llama3", |o| o.max_concurrency = Some(4)).await;
    let _b = share(&hub, &code, "broken", &broken, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/api/chat"));
    // One call keeps `good` a quarter busy, so the next goes to the idle `broken` first.
    let first = tokio::spawn(call(http().post(&url).json(&chat_body("good", "one", false))));
    assert!(good.wait_in_flight(1, PATIENCE).await);
    let (status, _, v) = call(http().post(&url).json(&chat_body("llama3", "two", true))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(calls_to(&broken, "/v1/chat/completions").len(), 1, "tried first");
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(good.completed(), 2, "and served by the other");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_drops_an_ndjson_stream_cancels_the_provider() {
    let slow = FakeOptions { stream_chunks: 20, chunk_delay: Duration::from_millis(200), ..FakeOptions::default() };
    let room = Room::start(slow, None).await;
    let res =
        http().post(room.api("chat")).json(&chat_body("llama3", "a long answer please", true)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"done\":false"));
    drop(body);
    assert!(room.chat.wait_cancelled(1, PATIENCE).await, "the provider's call was cancelled");
    // The participant is free again at once.
    let (status, _, v) = call(http().post(room.api("chat")).json(&chat_body("llama3", "next", false))).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_inference_limit_is_413_in_ollamas_shape() {
    let hub = TestHub::with_config(gambi::hub::HubConfig { inference_body_limit: 4096, ..Default::default() }).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (code, _) = hub.room("Small", None).await;
    let _s = share(&hub, &code, "only", &provider, "llama3").await;
    let big = chat_body("llama3", &"x".repeat(10_000), false);
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/api/chat"))).json(&big)).await;
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("too large")), "{v}");
    assert!(calls_to(&provider, "/v1/chat/completions").is_empty());
}

/// A raw `/api/generate` (a prompt already templated) runs as a legacy completion on
/// `/v1/completions`, the prompt as it is, stream and not; with no participant of the model
/// serving that endpoint (or `/v1/embeddings`, for `embed`), a clear 404 in Ollama's shape that
/// names it, and nothing sent anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_raw_generate_runs_as_a_legacy_completion() {
    let slow = FakeOptions { stream_chunks: 3, chunk_delay: Duration::from_millis(200), ..FakeOptions::default() };
    let room = Room::start(slow, None).await;
    let prompt = "<|user|>tell a story<|assistant|>";
    let body = json!({"model": "llama3", "prompt": prompt, "raw": true, "stream": false,
        "options": {"temperature": 0.5, "num_predict": 32, "stop": ["<|user|>"]}});
    let (status, headers, v) = call(http().post(room.api("generate")).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(v["response"], format!("echo: {prompt}"), "{v}");
    assert_eq!((v["done"].clone(), v["done_reason"].clone()), (json!(true), json!("stop")));
    assert_eq!((v["prompt_eval_count"].clone(), v["eval_count"].clone()), (json!(3), json!(4)), "{v}");
    let sent = room.chat.last_body("/v1/completions").unwrap();
    assert_eq!(
        sent,
        json!({"model": "llama3", "prompt": prompt, "stream": false, "temperature": 0.5, "max_tokens": 32,
            "stop": ["<|user|>"]})
    );
    let chats = calls_to(&room.chat, "/v1/chat/completions").len();
    // Streamed: one NDJSON line per chunk, as it arrives, and the counts on the last.
    let res = http().post(room.api("generate")).json(&json!({"model": "llama3", "prompt": prompt, "raw": true})).send();
    let res = res.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson_lines(res).await;
    let content: Vec<&(Instant, Value)> =
        lines.iter().filter(|(_, v)| v["response"].as_str().is_some_and(|r| !r.is_empty())).collect();
    assert_eq!(content.len(), 3, "{lines:?}");
    assert_eq!(
        content.iter().map(|(_, v)| v["response"].as_str().unwrap()).collect::<String>(),
        format!("echo: {prompt}")
    );
    assert!(content[2].0 - content[0].0 >= Duration::from_millis(300), "lines as their chunks came");
    let last = &lines.last().unwrap().1;
    assert_eq!((last["done"].clone(), last["eval_count"].clone()), (json!(true), json!(4)), "{last}");
    assert_eq!(calls_to(&room.chat, "/v1/chat/completions").len(), chats, "no chat completion was asked");
    // A room whose only participant of the model has no /v1/completions (nor /v1/embeddings).
    let hub = TestHub::start().await;
    let chat_only =
        FakeProvider::start(FakeOptions { completions: false, embeddings: false, ..FakeOptions::default() }).await;
    let (code, _) = hub.room("NoRaw", None).await;
    let _s = share(&hub, &code, "chat-only", &chat_only, "llama3").await;
    let url = hub.at(&format!("/rooms/{code}/api/generate"));
    let (status, _, v) = call(http().post(&url).json(&json!({"model": "llama3", "prompt": "x", "raw": true}))).await;
    assert_eq!(status, 404, "{v}");
    let error = v["error"].as_str().unwrap_or_else(|| panic!("Ollama's shape: {v}"));
    assert!(error.contains("/v1/completions"), "{v}");
    assert!(
        calls_to(&chat_only, "/v1/completions").is_empty() && calls_to(&chat_only, "/v1/chat/completions").is_empty()
    );
    let embed = hub.at(&format!("/rooms/{code}/api/embed"));
    let (status, _, v) = call(http().post(&embed).json(&json!({"model": "llama3", "input": "x"}))).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("/v1/embeddings")), "{v}");
    assert!(calls_to(&chat_only, "/v1/embeddings").is_empty());
    // Without `raw`, the same room answers from chat.
    let (status, _, v) =
        call(http().post(&url).json(&json!({"model": "llama3", "prompt": "x", "stream": false}))).await;
    assert_eq!((status, v["response"].clone()), (200, json!("echo: x")), "{v}");
}
