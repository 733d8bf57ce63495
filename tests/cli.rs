//! Acceptance 7: the real `gambi` binary against a real hub — `room create` and `gambi create`,
//! `room list` and `gambi list`, `room get`, `room delete`, each in text and json — plus the exit
//! codes of the product (2 usage or 400, 3 unreachable or refused, 4 not found), `GAMBI_HUB`,
//! ndjson, and the typed client the CLI is built on.

use serde_json::Value;

use crate::util::{self, call, http, TestHub};
use gambi::client::{ClientError, HubClient, Registration};
use gambi::protocol::{LoadedModel, ParticipantStatus, RuntimeConfig};

/// Runs the real binary off the async threads, so the in-process hub keeps serving meanwhile.
async fn gambi(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    util::gambi_async(args, env).await
}

/// Runs `gambi <args> --hub <hub>` and insists on exit 0; returns stdout.
async fn ok(hub: &TestHub, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--hub", &hub.url]);
    let (code, stdout, stderr) = gambi(&all, &[]).await;
    assert_eq!(code, 0, "gambi {all:?}\nstdout: {stdout}\nstderr: {stderr}");
    stdout
}

/// Runs `gambi <args> --hub <hub>` expecting a failure; returns (exit code, stdout, stderr).
async fn fails(hub: &TestHub, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--hub", &hub.url]);
    let out = gambi(&all, &[]).await;
    assert_ne!(out.0, 0, "gambi {all:?} should fail; stdout: {}", out.1);
    out
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
}

/// The hub's own view of its rooms (`GET /v1/rooms`), not the CLI's.
async fn hub_rooms(hub: &TestHub) -> Vec<Value> {
    let (status, _, body) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// The code of the only room on the hub called `name`.
async fn code_of(hub: &TestHub, name: &str) -> String {
    let rooms = hub_rooms(hub).await;
    let found: Vec<&Value> = rooms.iter().filter(|r| r["name"] == name).collect();
    assert_eq!(found.len(), 1, "rooms named {name:?}: {rooms:?}");
    found[0]["code"].as_str().unwrap().to_string()
}

async fn room_status(hub: &TestHub, code: &str) -> u16 {
    call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await.0
}

/// A port nothing listens on: bound by the OS, then released.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

fn assert_no_hash(texts: &[&str]) {
    for text in texts {
        assert!(!text.contains("$argon2"), "a password hash leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn room_create_long_form_in_text() {
    let hub = TestHub::start().await;
    let out = ok(&hub, &["room", "create", "--name", "Long Text Room", "--format", "text"]).await;
    let code = code_of(&hub, "Long Text Room").await;
    assert!(out.contains(&format!("Created room {code}")), "{out}");
    assert!(out.contains("Long Text Room"), "{out}");
    assert!(out.contains(&format!("{}/rooms/{code}/v1", hub.url)), "OpenAI base URL missing: {out}");
    assert!(out.contains("Host token") && out.contains("shown only this once"), "{out}");
    // The printed token is the real one: it deletes the room.
    let token = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Host token"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("no host token line: {out}"));
    assert!(out.contains(&format!("gambi room delete {code} --host-token {token} --hub {}", hub.url)), "{out}");
    let (status, _, body) = call(http().delete(hub.at(&format!("/v1/rooms/{code}"))).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn room_create_long_form_in_json() {
    let hub = TestHub::start().await;
    let out = ok(
        &hub,
        &["room", "create", "--name", "Long Json Room", "--defaults", r#"{"temperature": 0.3}"#, "--format", "json"],
    )
    .await;
    let data = json(&out);
    assert!(data.get("meta").is_none() && data.get("data").is_none(), "the payload, not the envelope: {data}");
    let code = data["room"]["code"].as_str().unwrap();
    assert!(gambi::protocol::is_room_code(code), "{data}");
    assert_eq!(data["room"]["name"], "Long Json Room");
    assert_eq!(data["room"]["passwordProtected"], false);
    assert_eq!(data["room"]["defaults"]["temperature"], 0.3);
    assert_eq!(data["hostId"], data["room"]["hostId"]);
    assert!(data["hostToken"].as_str().is_some_and(|t| !t.is_empty()), "{data}");
    assert_eq!(code_of(&hub, "Long Json Room").await, code);
}

#[tokio::test(flavor = "multi_thread")]
async fn short_create_in_text_and_json() {
    let hub = TestHub::start().await;
    let out = ok(&hub, &["create", "Short Text Room", "--format", "text"]).await;
    let code = code_of(&hub, "Short Text Room").await;
    assert!(out.contains(&format!("Created room {code}")), "{out}");
    assert!(out.contains(&format!("{}/rooms/{code}/v1", hub.url)), "{out}");

    let data = json(&ok(&hub, &["create", "Short Json Room", "--format", "json"]).await);
    assert_eq!(data["room"]["name"], "Short Json Room");
    assert_eq!(data["room"]["code"].as_str().unwrap(), code_of(&hub, "Short Json Room").await);
    assert!(data["hostToken"].is_string(), "{data}");
}

#[tokio::test(flavor = "multi_thread")]
async fn password_protected_create_never_shows_the_hash() {
    let hub = TestHub::start().await;
    let (c1, text, e1) =
        gambi(&["create", "Locked Text", "--password", "secret123", "--format", "text", "--hub", &hub.url], &[]).await;
    assert_eq!(c1, 0, "{e1}");
    assert!(text.lines().any(|l| l.split_whitespace().eq(["Password", "yes"])), "{text}");
    let (c2, out, e2) = gambi(
        &["room", "create", "--name", "Locked Json", "--password", "secret123", "--format", "json", "--hub", &hub.url],
        &[],
    )
    .await;
    assert_eq!(c2, 0, "{e2}");
    let data = json(&out);
    assert_eq!(data["room"]["passwordProtected"], true);
    let code = data["room"]["code"].as_str().unwrap().to_string();
    let listed = ok(&hub, &["list", "--format", "json"]).await;
    assert!(json(&listed).as_array().unwrap().iter().all(|r| r["passwordProtected"] == true), "{listed}");
    let got_text = ok(&hub, &["room", "get", &code, "--format", "text"]).await;
    let got_json = ok(&hub, &["room", "get", &code, "--format", "json"]).await;
    assert_eq!(json(&got_json)["passwordProtected"], true);
    assert_no_hash(&[&text, &e1, &out, &e2, &listed, &got_text, &got_json]);
    assert!(!out.contains("secret123") && !text.contains("secret123"), "the password is echoed back");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_long_and_short_forms_in_text_and_json() {
    let hub = TestHub::start().await;
    let (a, _) = hub.room("Alpha Room", None).await;
    let (b, _) = hub.room("Beta Room", Some("pw")).await;
    hub.participant(&a, "worker-1", None).await;

    for form in [&["room", "list"][..], &["list"][..]] {
        let text = ok(&hub, &[form, &["--format", "text"]].concat()).await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["CODE", "NAME", "PARTICIPANTS", "PROTECTED", "CREATED"]
        );
        let alpha = lines.iter().find(|l| l.starts_with(&a)).unwrap_or_else(|| panic!("{a} missing: {text}"));
        assert!(alpha.contains("Alpha Room") && alpha.contains(" 1 ") && alpha.contains(" no "), "{alpha}");
        let beta = lines.iter().find(|l| l.starts_with(&b)).unwrap_or_else(|| panic!("{b} missing: {text}"));
        assert!(beta.contains("Beta Room") && beta.contains(" 0 ") && beta.contains(" yes "), "{beta}");
        // Columns are aligned: every NAME cell starts at the same offset.
        let name_at = lines[0].find("NAME").unwrap();
        assert!(lines[1..].iter().all(|l| l[name_at..].starts_with(['A', 'B'])), "{text}");

        let data = json(&ok(&hub, &[form, &["--format", "json"]].concat()).await);
        let rooms = data.as_array().unwrap_or_else(|| panic!("not an array: {data}"));
        assert_eq!(rooms.len(), 2, "{data}");
        let alpha = rooms.iter().find(|r| r["code"] == a.as_str()).unwrap();
        assert_eq!(alpha["name"], "Alpha Room");
        assert_eq!(alpha["participantCount"], 1);
        let beta = rooms.iter().find(|r| r["code"] == b.as_str()).unwrap();
        assert_eq!(beta["passwordProtected"], true);
        assert_eq!(beta["participantCount"], 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_list_is_friendly_in_text_and_empty_in_json() {
    let hub = TestHub::start().await;
    let text = ok(&hub, &["room", "list", "--format", "text"]).await;
    assert!(text.starts_with(&format!("No rooms on {} yet.", hub.url)), "{text}");
    assert!(text.contains("gambi room create --name"), "{text}");
    assert_eq!(json(&ok(&hub, &["list", "--format", "json"]).await), serde_json::json!([]));
    assert_eq!(ok(&hub, &["list", "--format", "ndjson"]).await, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_list_is_one_object_per_line() {
    let hub = TestHub::start().await;
    let mut codes = Vec::new();
    for name in ["One", "Two", "Three"] {
        codes.push(hub.room(name, None).await.0);
    }
    let out = ok(&hub, &["room", "list", "--format", "ndjson"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let mut seen: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v["code"].as_str().unwrap().to_string()
        })
        .collect();
    seen.sort();
    codes.sort();
    assert_eq!(seen, codes);

    // A single object is one line too.
    let one = ok(&hub, &["room", "get", &codes[0], "--format", "ndjson"]).await;
    assert_eq!(one.lines().count(), 1, "{one}");
    assert_eq!(json(&one)["code"], codes[0].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn get_in_text_and_json() {
    let hub = TestHub::start().await;
    let created = json(
        &ok(
            &hub,
            &[
                "create",
                "Get Room",
                "--defaults",
                r#"{"temperature": 0.5, "instructions": "be brief"}"#,
                "--format",
                "json",
            ],
        )
        .await,
    );
    let code = created["room"]["code"].as_str().unwrap().to_string();
    hub.participant(&code, "w1", None).await;
    hub.participant(&code, "w2", None).await;

    // Lower case works: codes are typed by people.
    let text = ok(&hub, &["room", "get", &code.to_lowercase(), "--format", "text"]).await;
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {label} in {text}"))
    };
    assert_eq!(field("Code"), code);
    assert_eq!(field("Name"), "Get Room");
    assert_eq!(field("Participants"), "2");
    assert_eq!(field("Password"), "no");
    assert_eq!(field("OpenAI URL"), format!("{}/rooms/{code}/v1", hub.url));
    assert_eq!(field("Defaults"), "temperature=0.5, instructions set");
    assert!(field("Created").ends_with("(just now)") || field("Created").contains("ago"), "{text}");
    assert!(!text.contains("be brief"), "the system prompt never leaves the hub: {text}");

    let data = json(&ok(&hub, &["room", "get", &code, "--format", "json"]).await);
    assert_eq!(data["code"], code.as_str());
    assert_eq!(data["name"], "Get Room");
    assert_eq!(data["participantCount"], 2);
    assert_eq!(data["id"], created["room"]["id"]);
    assert_eq!(data["defaults"], serde_json::json!({"temperature": 0.5, "hasInstructions": true}));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_in_text_and_json() {
    let hub = TestHub::start().await;
    let (code, token) = hub.room("Doomed Text", None).await;
    let out = ok(&hub, &["room", "delete", &code, "--host-token", &token, "--format", "text"]).await;
    assert!(out.contains(&format!("Deleted room {code}")), "{out}");
    assert_eq!(room_status(&hub, &code).await, 404, "the room is still there");

    let created = json(&ok(&hub, &["room", "create", "--name", "Doomed Json", "--format", "json"]).await);
    let code = created["room"]["code"].as_str().unwrap();
    let token = created["hostToken"].as_str().unwrap();
    assert_eq!(room_status(&hub, code).await, 200);
    let out = ok(&hub, &["room", "delete", code, "--host-token", token, "--format", "json"]).await;
    assert_eq!(json(&out), serde_json::json!({"success": true}));
    assert_eq!(room_status(&hub, code).await, 404, "the room is still there");
    assert!(hub_rooms(&hub).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_a_wrong_host_token_exits_3_and_keeps_the_room() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Kept", None).await;
    let (exit, stdout, stderr) = fails(&hub, &["room", "delete", &code, "--host-token", "not-the-token"]).await;
    assert_eq!(exit, 3, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.starts_with("error: ") && stderr.contains("host token"), "{stderr}");
    assert!(stderr.contains("\nhint: "), "{stderr}");
    assert_eq!(room_status(&hub, &code).await, 200);

    // The token can come from the environment, so it stays out of shell history.
    let (exit, _, stderr) =
        gambi(&["room", "delete", &code, "--hub", &hub.url], &[("GAMBI_HOST_TOKEN", "still-wrong")]).await;
    assert_eq!(exit, 3, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_room_exits_4() {
    let hub = TestHub::start().await;
    let (exit, stdout, stderr) = fails(&hub, &["room", "get", "ZZZZZZ"]).await;
    assert_eq!(exit, 4, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.starts_with("error: ") && stderr.contains("ZZZZZZ"), "{stderr}");
    assert!(stderr.contains("hint: ") && stderr.contains("gambi room list"), "{stderr}");

    let (exit, _, stderr) = fails(&hub, &["room", "delete", "ZZZZZZ", "--host-token", "t"]).await;
    assert_eq!(exit, 4, "{stderr}");
    // A path trick is just an unknown room, never another endpoint.
    let (exit, _, stderr) = fails(&hub, &["room", "get", "../v1/health"]).await;
    assert_eq!(exit, 4, "{stderr}");
    // `..` alone would be dropped from the path by the URL parser: refused before any call.
    let (exit, _, stderr) = fails(&hub, &["room", "get", ".."]).await;
    assert_eq!(exit, 2, "{stderr}");
    assert!(stderr.contains("not a valid room code"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_hub_exits_3_with_a_hint() {
    let url = format!("http://127.0.0.1:{}", dead_port());
    for args in [&["room", "list"][..], &["create", "X"][..], &["room", "get", "ABC123"][..]] {
        let (exit, stdout, stderr) = gambi(&[args, &["--hub", &url]].concat(), &[]).await;
        assert_eq!(exit, 3, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(&format!("error: cannot reach the hub at {url}: connection refused")), "{stderr}");
        assert!(stderr.contains("hint: Start one with 'gambi hub serve' or pass --hub / GAMBI_HUB"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_2() {
    let hub = TestHub::start().await;
    let cases: &[&[&str]] = &[
        &["room", "create"],
        &["room", "get"],
        &["room", "delete", "ABC123"],
        &["room", "frobnicate"],
        &["create"],
        &["list", "--format", "xml"],
        &["list", "--no-such-flag"],
    ];
    for args in cases {
        let (exit, stdout, stderr) = fails(&hub, args).await;
        assert_eq!(exit, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(!stderr.is_empty(), "{args:?}: no explanation");
    }
    // A hub address that is not one.
    let (exit, _, stderr) = gambi(&["list", "--hub", "ftp://example.org"], &[]).await;
    assert_eq!(exit, 2, "{stderr}");
    assert!(stderr.contains("error: invalid hub URL"), "{stderr}");
    // The hub's own 400 (a name over 100 characters) is bad usage too, with the hub's message.
    let long = "x".repeat(101);
    let (exit, _, stderr) = fails(&hub, &["create", &long]).await;
    assert_eq!(exit, 2, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("name"), "{stderr}");
    assert!(hub_rooms(&hub).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_defaults_json_exits_2_before_calling_the_hub() {
    let hub = TestHub::start().await;
    for bad in ["{bad", "[1, 2]", r#"{"temperature": "hot"}"#, r#"{"temprature": 0.5}"#] {
        let (exit, stdout, stderr) = fails(&hub, &["room", "create", "--name", "D", "--defaults", bad]).await;
        assert_eq!(exit, 2, "{bad}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("--defaults"), "{bad}: {stderr}");
    }
    let (_, _, stderr) = fails(&hub, &["room", "create", "--name", "D", "--defaults", "{bad"]).await;
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    assert!(hub_rooms(&hub).await.is_empty(), "no room may be created from a bad command");
}

#[tokio::test(flavor = "multi_thread")]
async fn gambi_hub_env_is_honoured_and_hub_flag_wins() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Env Room", None).await;
    let (exit, out, stderr) = gambi(&["list", "--format", "json"], &[("GAMBI_HUB", &hub.url)]).await;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(json(&out)[0]["code"], code.as_str());

    // A bare host:port is fine.
    let bare = hub.url.trim_start_matches("http://");
    let (exit, out, stderr) = gambi(&["room", "get", &code, "--format", "json"], &[("GAMBI_HUB", bare)]).await;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(json(&out)["name"], "Env Room");

    // --hub overrides GAMBI_HUB.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let (exit, _, stderr) = gambi(&["list", "--hub", &hub.url], &[("GAMBI_HUB", &dead)]).await;
    assert_eq!(exit, 0, "{stderr}");
    let (exit, _, stderr) = gambi(&["list", "--hub", &dead], &[("GAMBI_HUB", &hub.url)]).await;
    assert_eq!(exit, 3, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_is_the_default_when_stdout_is_not_a_terminal() {
    let hub = TestHub::start().await;
    hub.room("Piped", None).await;
    let out = ok(&hub, &["list"]).await;
    assert_eq!(json(&out)[0]["name"], "Piped");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_arguments_points_to_hub_serve() {
    // This is the headless build: with no command there is no app to start.
    let (exit, stdout, stderr) = gambi(&[], &[]).await;
    assert_eq!(exit, 2, "{stderr}");
    assert!(stderr.contains("built without the desktop app"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("gambi hub serve"), "{stderr}");
}

/// Both ends real: `gambi hub serve` in one process, the CLI in others.
#[test]
fn cli_against_the_real_binary_hub() {
    let hub = util::BinHub::start(&[]);
    let (exit, out, stderr) = util::gambi(&["create", "Binary Room", "--format", "json", "--hub", &hub.url], &[]);
    assert_eq!(exit, 0, "{stderr}");
    let created = json(&out);
    let code = created["room"]["code"].as_str().unwrap();
    let token = created["hostToken"].as_str().unwrap();
    let (exit, out, stderr) = util::gambi(&["list", "--format", "text"], &[("GAMBI_HUB", &hub.url)]);
    assert_eq!(exit, 0, "{stderr}");
    assert!(out.lines().any(|l| l.starts_with(code) && l.contains("Binary Room")), "{out}");
    let (exit, _, stderr) = util::gambi(&["room", "delete", code, "--host-token", token, "--hub", &hub.url], &[]);
    assert_eq!(exit, 0, "{stderr}");
    let (exit, _, stderr) = util::gambi(&["room", "get", code, "--hub", &hub.url], &[]);
    assert_eq!(exit, 4, "{stderr}");
}

/// The typed client the CLI (and later the participant runtime and the app) is built on, through
/// every call of the management plane.
#[tokio::test(flavor = "multi_thread")]
async fn client_speaks_the_whole_management_plane() {
    let hub = TestHub::start().await;
    let client = HubClient::new(&format!("{}/", hub.url)).unwrap();
    assert_eq!(client.base_url(), hub.url);
    assert_eq!(client.health().await.unwrap().status, "ok");
    assert!(client.list_rooms().await.unwrap().is_empty());

    let defaults = RuntimeConfig { temperature: Some(0.2), ..Default::default() };
    let created = client.create_room("Client Room", Some("pw"), Some(defaults)).await.unwrap();
    let code = created.room.code.clone();
    assert!(created.room.password_protected);
    assert_eq!(created.room.defaults.as_ref().and_then(|d| d.temperature), Some(0.2));
    let token = created.host_token.clone().unwrap();
    assert_eq!(client.get_room(&code.to_lowercase()).await.unwrap().name, "Client Room");
    assert_eq!(client.list_rooms().await.unwrap().len(), 1);

    let mut registration = Registration {
        nickname: "Alice".into(),
        model: "llama3".into(),
        endpoint: "http://localhost:11434".into(),
        password: Some("pw".into()),
        max_concurrency: Some(2),
        ..Default::default()
    };
    let (registered, created_now) = client.upsert_participant(&code, "worker-1", &registration).await.unwrap();
    assert!(created_now);
    assert_eq!(registered.participant.id, "worker-1");
    assert_eq!(registered.participant.max_concurrency, 2);
    assert_eq!(registered.room_id, created.room.id);
    assert!(registered.tunnel.url.starts_with("ws://") && !registered.tunnel.token.is_empty());
    registration.model = "qwen3".into();
    let owner = registered.participant_token.clone();
    let (again, created_now) =
        client.upsert_participant_as(&code, "worker-1", &registration, owner.as_deref()).await.unwrap();
    assert!(!created_now, "the second upsert updates");
    assert_eq!(again.participant.model, "qwen3");

    let news = Some(vec![LoadedModel { name: "qwen3".into(), vram: Some(4.5), size: None }]);
    assert!(client.heartbeat(&code, "worker-1", news.clone()).await.is_err(), "news needs the participant's token");
    let beat = client.heartbeat_as(&code, "worker-1", news, owner.as_deref()).await.unwrap();
    assert!(beat.success);
    assert_eq!(beat.status, ParticipantStatus::Online);
    assert!(client.heartbeat(&code, "worker-1", None).await.unwrap().success);
    // A protected room's participants are read with its password.
    let err = client.list_participants(&code).await.unwrap_err();
    assert_eq!(err.code(), Some("ROOM_PASSWORD_REQUIRED"), "{err:?}");
    let p = client.get_participant_as(&code, "worker-1", Some("pw")).await.unwrap();
    assert_eq!(p.loaded_models.first().map(|m| m.name.as_str()), Some("qwen3"));
    assert_eq!(client.list_participants_as(&code, Some("pw")).await.unwrap().len(), 1);
    // The update kept the owner's token: the id stays bound to it.
    assert_eq!(again.participant_token, None, "an update by the owner hands out no new token");
    let participant_token = owner.expect("a registration hands out a participant token");
    assert!(client.leave(&code, "worker-1").await.is_err(), "leaving needs the participant's token");
    assert!(client.leave_as(&code, "worker-1", Some(&participant_token)).await.unwrap().success);
    assert!(client.list_participants_as(&code, Some("pw")).await.unwrap().is_empty());

    // Errors carry the hub's status, code, message and hint, and map to the product's exit codes.
    registration.password = Some("wrong".into());
    let err = client.upsert_participant(&code, "worker-2", &registration).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 401, .. }), "{err:?}");
    assert_eq!(err.code(), Some("INVALID_PASSWORD"));
    assert_eq!(err.exit_code(), 3);
    let err = client.get_participant_as(&code, "nobody", Some("pw")).await.unwrap_err();
    assert_eq!((err.status(), err.code(), err.exit_code()), (Some(404), Some("PARTICIPANT_NOT_FOUND"), 4));
    assert!(err.hint().is_some());
    let err = client.delete_room(&code, "wrong").await.unwrap_err();
    assert_eq!((err.status(), err.exit_code()), (Some(403), 3));
    let err = client.create_room("", None, None).await.unwrap_err();
    assert_eq!((err.status(), err.code(), err.exit_code()), (Some(400), Some("INVALID_REQUEST"), 2));

    assert!(client.delete_room(&code, &token).await.unwrap().success);
    let err = client.get_room(&code).await.unwrap_err();
    assert_eq!((err.code(), err.exit_code()), (Some("ROOM_NOT_FOUND"), 4));

    // Something that is not a hub, and nothing at all.
    let not_a_hub = not_a_hub().await;
    let err = HubClient::new(&not_a_hub).unwrap().list_rooms().await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { status: 200, .. }), "{err:?}");
    assert_eq!(err.exit_code(), 1);
    let dead = HubClient::new(&format!("127.0.0.1:{}", dead_port())).unwrap();
    let err = dead.health().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().ends_with("connection refused"), "{err}");
    assert_eq!(err.exit_code(), 3);
}

/// A server that answers every request `200 OK` with an HTML page: not a hub.
async fn not_a_hub() -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let page = "<html>hello</html>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}
