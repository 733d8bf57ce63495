//! Open WebUI pointed at a room, as an OpenAI connection (`http://HUB/rooms/CODE/v1`) and as an
//! Ollama connection (`http://HUB/rooms/CODE`): its backend's requests replayed as its source
//! sends them (`backend/open_webui/routers/openai.py`, `routers/ollama.py`, `routers/tasks.py`,
//! `retrieval/utils.py`): method, path, headers (its HTTP client's defaults, the room password as
//! the Bearer key, the `X-OpenWebUI-User-*` headers it forwards), and the body as Python's
//! `json.dumps` writes it. Each answer is read the way Open WebUI reads it. A real hub, real
//! tunnel participants, the fake provider (see [`Room`]).

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{json, Value};

use crate::fake_provider::surfaces::embedding_of;
use crate::fake_provider::FakeOptions;
use crate::ollama_api::{dimensions, ndjson_lines, same_vectors, Room};
use crate::util::http;

const PASSWORD: &str = "s3cret-pass";
const CHAT_ID: &str = "5f0c1f4e-9a57-4b7e-8d39-0f6a3c2b1d11";

/// JSON as Python's `json.dumps` writes it (what `aiohttp`'s `data=json.dumps(payload)` and
/// `requests`' `json=` send): `", "` and `": "` between items, every non-ASCII character as a
/// `\uXXXX` escape (two, a surrogate pair, past the BMP).
fn python_json(value: &Value) -> String {
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, Spaced)).unwrap();
    let mut ascii = String::new();
    for c in String::from_utf8(out).unwrap().chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    ascii
}

#[test]
fn python_json_writes_as_json_dumps() {
    let v = json!({"a": [1, "Olá 📝"], "b": {"c": null}});
    assert_eq!(python_json(&v), r#"{"a": [1, "Ol\u00e1 \ud83d\udcdd"], "b": {"c": null}}"#);
    assert_eq!(serde_json::from_str::<Value>(&python_json(&v)).unwrap(), v);
}

fn header_map(pairs: Vec<(&str, String)>) -> HeaderMap {
    pairs
        .into_iter()
        .map(|(name, value)| (HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(&value).unwrap()))
        .collect()
}

/// What `aiohttp` adds to every request Open WebUI's routers send.
fn aiohttp(mut pairs: Vec<(&'static str, String)>) -> HeaderMap {
    pairs.extend([
        ("User-Agent", "Python/3.11 aiohttp/3.11.11".to_owned()),
        ("Accept", "*/*".to_owned()),
        ("Accept-Encoding", "gzip, deflate".to_owned()),
    ]);
    header_map(pairs)
}

/// What `requests` adds (the embeddings of `retrieval/utils.py` go through it).
fn requests(mut pairs: Vec<(&'static str, String)>) -> HeaderMap {
    pairs.extend([
        ("User-Agent", "python-requests/2.32.3".to_owned()),
        ("Accept-Encoding", "gzip, deflate".to_owned()),
        ("Accept", "*/*".to_owned()),
        ("Connection", "keep-alive".to_owned()),
    ]);
    header_map(pairs)
}

/// The user headers Open WebUI forwards with ENABLE_FORWARD_USER_INFO_HEADERS on (the name
/// URL-quoted, spaces kept).
fn user_headers() -> Vec<(&'static str, String)> {
    vec![
        ("X-OpenWebUI-User-Name", "Ana L%C3%BAcia".to_owned()),
        ("X-OpenWebUI-User-Id", "8c3f6a52-2d1e-4f7b-9a0c-5e4d3b2a1f00".to_owned()),
        ("X-OpenWebUI-User-Email", "ana@example.com".to_owned()),
        ("X-OpenWebUI-User-Role", "admin".to_owned()),
    ]
}

/// `Authorization: Bearer KEY` only when the connection has a key (`if token:`).
fn bearer_if(key: &str) -> Vec<(&'static str, String)> {
    if key.is_empty() {
        Vec::new()
    } else {
        vec![("Authorization", format!("Bearer {key}"))]
    }
}

/// `get_headers_and_cookies` of routers/openai.py: every call of an OpenAI connection but the model
/// list (verify, chat, Open WebUI's own embeddings endpoint).
fn openai_headers(key: &str, chat_id: Option<&str>) -> HeaderMap {
    let mut pairs = vec![("Content-Type", "application/json".to_owned())];
    pairs.extend(user_headers());
    if let Some(id) = chat_id {
        pairs.push(("X-OpenWebUI-Chat-Id", id.to_owned()));
    }
    pairs.extend(bearer_if(key));
    aiohttp(pairs)
}

/// A streamed answer read as Open WebUI reads it: each `data: ` line but `[DONE]` is JSON; the
/// text is the `choices[].delta.content`, `usage` is kept for its token accounting. Returns (text,
/// last usage, whether `[DONE]` came).
fn read_openai_stream(body: &str) -> (String, Option<Value>, bool) {
    let (mut text, mut usage, mut done) = (String::new(), None, false);
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data.trim() == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    (text, usage, done)
}

/// Open WebUI's OpenAI connection at `{room}/v1` with `key` (empty: no key).
async fn replay_openai_connection(room: &Room, key: &str) {
    let url = format!("{}/v1", room.base());

    // verify_connection: GET {url}/models with get_headers_and_cookies' headers; a 200 whose JSON
    // it hands back as is.
    let res = http().get(format!("{url}/models")).headers(openai_headers(key, None)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let verified: Value = res.json().await.unwrap();
    assert!(verified["data"].is_array(), "{verified}");

    // get_all_models → send_get_request: GET {url}/models, the key only when set, no content
    // type; `data[]`, each kept when it has an `id` (or a `name`), listed under `name` or `id`.
    let mut pairs = bearer_if(key);
    pairs.extend(user_headers());
    let res = http().get(format!("{url}/models")).headers(aiohttp(pairs)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let listed: Value = res.json().await.unwrap();
    let models: Vec<(String, String)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("id").is_some_and(|id| !id.is_null()) || m.get("name").is_some_and(|n| !n.is_null()))
        .map(|m| {
            let id = m["id"].as_str().unwrap().to_owned();
            let name = m.get("name").and_then(Value::as_str).map_or(id.clone(), str::to_owned);
            (id, name)
        })
        .collect();
    let ids: Vec<&str> = models.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(&ids[..3], ["llama3", "nomic-embed-text", "*"], "the models first in its picker: {ids:?}");
    assert!(ids.contains(&"alice") && ids.contains(&"bob"), "{ids:?}");

    // generate_chat_completion for a message typed in a chat: `metadata` popped, the chat's params
    // applied, `stream_options.include_usage` added, the last message's text as a part with an
    // ephemeral `cache_control`; sent as json.dumps text.
    let chat = json!({
        "stream": true,
        "model": "llama3",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "text", "text": "Olá from Open WebUI", "cache_control": {"type": "ephemeral"}}]},
        ],
        "temperature": 0.8,
        "max_tokens": 256,
        "stream_options": {"include_usage": true},
    });
    let res = http()
        .post(format!("{url}/chat/completions"))
        .headers(openai_headers(key, Some(CHAT_ID)))
        .body(python_json(&chat))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.contains("text/event-stream"), "Open WebUI streams only an SSE answer: {content_type}");
    let (text, usage, done) = read_openai_stream(&res.text().await.unwrap());
    assert_eq!(text, "echo: Olá from Open WebUI");
    let usage = usage.expect("the usage chunk Open WebUI asked for");
    assert!(usage["prompt_tokens"].is_u64() && usage["completion_tokens"].as_u64() > Some(0), "{usage}");
    assert!(done, "the stream ends with [DONE]");
    // The provider got the chat as sent; Open WebUI's user headers stay at the hub.
    let sent = room.chat.requests_to("/v1/chat/completions").pop().unwrap();
    let got = sent.json();
    assert_eq!(
        (&got["messages"], &got["temperature"], &got["max_tokens"]),
        (&chat["messages"], &json!(0.8), &json!(256))
    );
    assert_eq!(got["stream_options"]["include_usage"], true);
    assert!(sent.headers.iter().all(|(name, _)| !name.starts_with("x-openwebui")), "{:?}", sent.headers);

    // Title and tags (routers/tasks.py → generate_chat_completion): one user message holding the
    // task's prompt, not streamed (the title with max_completion_tokens); it reads
    // choices[0].message.content.
    let title = "### Task:\nGenerate a concise, 3-5 word title with an emoji 📝 summarizing the chat history.\n\
                 ### Chat History:\n<chat_history>\nUSER: Olá from Open WebUI\n</chat_history>";
    let tags = "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history.\n\
                ### Output:\nJSON format: { \"tags\": [\"tag1\", \"tag2\", \"tag3\"] }";
    for (prompt, limit) in [(title, Some(1000)), (tags, None)] {
        let mut task = json!({
            "model": "llama3",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": prompt, "cache_control": {"type": "ephemeral"}}]}],
            "stream": false,
        });
        if let Some(limit) = limit {
            task["max_completion_tokens"] = json!(limit);
        }
        let res = http()
            .post(format!("{url}/chat/completions"))
            .headers(openai_headers(key, None))
            .body(python_json(&task))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], format!("echo: {prompt}"), "{v}");
        assert!(v["usage"].is_object(), "its token accounting reads usage: {v}");
    }

    // generate_openai_batch_embeddings (retrieval/utils.py, through `requests`): POST
    // {url}/embeddings, `Authorization: Bearer {key}` even with no key; data[].embedding.
    let texts = ["Gambi pools the models of a room.", "Ollá, Open WebUI"];
    let mut pairs = vec![("Content-Type", "application/json".to_owned()), ("Authorization", format!("Bearer {key}"))];
    pairs.extend(user_headers());
    let batch = json!({"input": texts, "model": "nomic-embed-text"});
    let res = http()
        .post(format!("{url}/embeddings"))
        .headers(requests(pairs))
        .body(python_json(&batch))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let vectors: Value = v["data"].as_array().unwrap().iter().map(|e| e["embedding"].clone()).collect();
    let want: Vec<Vec<f32>> = texts.iter().map(|t| embedding_of(t, dimensions())).collect();
    assert!(same_vectors(&vectors, &want), "{v}");
    // Open WebUI's own embeddings endpoint (routers/openai.py `embeddings`) relays a client's body
    // with get_headers_and_cookies' headers.
    let res = http()
        .post(format!("{url}/embeddings"))
        .headers(openai_headers(key, None))
        .body(python_json(&json!({"model": "nomic-embed-text", "input": "one"})))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert!(same_vectors(&json!([v["data"][0]["embedding"]]), &[embedding_of("one", dimensions())]), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_webuis_openai_connection_works_against_a_room() {
    let room = Room::start(FakeOptions::default(), None).await;
    replay_openai_connection(&room, "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn open_webuis_openai_connection_works_against_a_protected_room_with_its_password_as_the_key() {
    let room = Room::start(FakeOptions::default(), Some(PASSWORD)).await;
    // Verify with no key: a 401 whose JSON Open WebUI shows as it is.
    let res = http().get(format!("{}/v1/models", room.base())).headers(openai_headers("", None)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("password")), "{v}");
    replay_openai_connection(&room, PASSWORD).await;
}

/// Open WebUI's Ollama connection at the room with `key` (empty: no key), replayed as
/// `routers/ollama.py` and `retrieval/utils.py` send it: verify (`/api/version`), the model list
/// (`/api/tags`, then `/api/ps` for expiry), chat (`/api/chat`, the model as listed, NDJSON
/// relayed), embeddings (`/api/embed`, `Bearer {key}` even with no key), and its OpenAI-style
/// calls under the same URL.
async fn replay_ollama_connection(room: &Room, key: &str) {
    let url = room.base();
    // verify_connection: GET {url}/api/version; a version it can read as numbers.
    let mut pairs = bearer_if(key);
    pairs.extend(user_headers());
    let res = http().get(format!("{url}/api/version")).headers(aiohttp(pairs)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let version = v["version"].as_str().unwrap();
    let numeric = version.trim_start_matches('v').split('-').next().unwrap();
    assert!(numeric.split('.').all(|n| n.parse::<u32>().is_ok()), "{version}");
    // get_all_models → send_get_request: GET {url}/api/tags, keyed by `model`; then /api/ps, keyed
    // by `name`.
    let get_headers = || {
        let mut pairs = vec![("Content-Type", "application/json".to_owned())];
        pairs.extend(bearer_if(key));
        pairs.extend(user_headers());
        aiohttp(pairs)
    };
    let res = http().get(format!("{url}/api/tags")).headers(get_headers()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let tags: Value = res.json().await.unwrap();
    let models: Vec<String> =
        tags["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap().to_owned()).collect();
    assert!(models.iter().all(|m| m.contains(':')), "Open WebUI looks models up with a tag: {models:?}");
    let res = http().get(format!("{url}/api/ps")).headers(get_headers()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ps: Value = res.json().await.unwrap();
    assert!(ps["models"].as_array().unwrap().iter().all(|m| models.contains(&m["name"].as_str().unwrap().to_owned())));
    // generate_chat_completion → send_post_request: the model as listed, stream true, its options,
    // an image.
    let payload = json!({
        "model": "llama3:latest",
        "messages": [{"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hello from Open WebUI", "images": ["iVBORw0KGgo="]}],
        "stream": true,
        "options": {"temperature": 0.8, "num_ctx": 2048},
    });
    let mut post_headers = vec![("Content-Type", "application/json".to_owned())];
    post_headers.extend(bearer_if(key));
    post_headers.extend(user_headers());
    post_headers.push(("X-OpenWebUI-Chat-Id", CHAT_ID.to_owned()));
    let res = http()
        .post(format!("{url}/api/chat"))
        .headers(aiohttp(post_headers.clone()))
        .body(python_json(&payload))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let lines = ndjson_lines(res).await;
    let text: String = lines.iter().filter_map(|(_, v)| v["message"]["content"].as_str()).collect();
    assert_eq!(text, "echo: Hello from Open WebUI");
    assert_eq!(lines.last().unwrap().1["done"], true);
    // generate_ollama_batch_embeddings (through `requests`): POST {url}/api/embed.
    let mut pairs = vec![("Content-Type", "application/json".to_owned()), ("Authorization", format!("Bearer {key}"))];
    pairs.extend(user_headers());
    let body = json!({"input": ["doc one", "doc two"], "model": "nomic-embed-text:latest"});
    let res =
        http().post(format!("{url}/api/embed")).headers(requests(pairs)).body(python_json(&body)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let want = [embedding_of("doc one", dimensions()), embedding_of("doc two", dimensions())];
    assert!(same_vectors(&v["embeddings"], &want), "{v}");
    // Its OpenAI-style calls go to {url}/v1: the room's OpenAI plane, the same names.
    let res = http()
        .post(format!("{url}/v1/chat/completions"))
        .headers(aiohttp(post_headers))
        .body(python_json(&json!({"model": "llama3:latest", "messages": [{"role": "user", "content": "hi"}]})))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_webuis_ollama_connection_works_against_a_room() {
    let room = Room::start(FakeOptions::default(), None).await;
    replay_ollama_connection(&room, "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn open_webuis_ollama_connection_works_against_a_protected_room_with_its_password_as_the_key() {
    let room = Room::start(FakeOptions::default(), Some(PASSWORD)).await;
    replay_ollama_connection(&room, PASSWORD).await;
}
