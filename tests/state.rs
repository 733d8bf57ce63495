//! Room lifecycle through the real `gambi` binary (acceptance 6): the host token deletes a room and
//! nothing else does; `--state PATH` keeps room codes, names, ids, passwords and host tokens (never
//! participants) across restarts, written on every change and holding no plaintext secret; a
//! corrupt state file stops the hub with a clear message and is left as it was; one hub at a time
//! on a state file (a second refuses to start, naming the first one's pid), and the temp files a
//! killed writer left are removed at start; SIGTERM exits 0.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{call, http, BinHub, Sse, BIN, PATIENCE};

const PASSWORD: &str = "correct horse battery staple";

/// Creates a room through `/v1` (or the classic API); returns (room, hostToken).
async fn create(hub: &BinHub, name: &str, password: Option<&str>, classic: bool) -> (Value, String) {
    let mut body = json!({ "name": name });
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let path = if classic { "/rooms" } else { "/v1/rooms" };
    let (status, _, res) = call(http().post(hub.at(path)).json(&body)).await;
    assert_eq!(status, 201, "{res}");
    let created = if classic { res } else { res["data"].clone() };
    let token = created["hostToken"].as_str().unwrap_or_else(|| panic!("no hostToken in {created}"));
    assert!(!token.is_empty());
    (created["room"].clone(), token.to_string())
}

/// The rooms as `/v1` lists them, by code, with the fields that must survive a restart.
async fn rooms(hub: &BinHub) -> Vec<Value> {
    let (status, _, res) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(status, 200, "{res}");
    let mut rooms: Vec<Value> = res["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!({"id": r["id"], "code": r["code"], "name": r["name"], "hostId": r["hostId"],
                "createdAt": r["createdAt"], "passwordProtected": r["passwordProtected"]})
        })
        .collect();
    rooms.sort_by_key(|r| r["code"].as_str().unwrap().to_string());
    rooms
}

fn public(room: &Value) -> Value {
    json!({"id": room["id"], "code": room["code"], "name": room["name"], "hostId": room["hostId"],
        "createdAt": room["createdAt"], "passwordProtected": room["passwordProtected"]})
}

async fn join(hub: &BinHub, code: &str, id: &str, password: Option<&str>) -> (u16, Value) {
    let mut body = json!({"id": id, "nickname": id, "model": "llama3", "endpoint": "http://127.0.0.1:9"});
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let (status, _, res) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    (status, res)
}

async fn upsert(hub: &BinHub, code: &str, id: &str, password: Option<&str>) -> (u16, Value) {
    let mut body = json!({"nickname": id, "model": "llama3", "endpoint": "http://127.0.0.1:9"});
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let (status, _, res) = call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/{id}"))).json(&body)).await;
    (status, res)
}

async fn delete_room(hub: &BinHub, code: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http().delete(hub.at(&format!("/v1/rooms/{code}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let (status, _, res) = call(req).await;
    (status, res)
}

fn terminate_ok(hub: &mut BinHub) {
    let started = Instant::now();
    let status = hub.terminate();
    assert!(status.success(), "SIGTERM: exit {status:?}; log:\n{}", hub.log());
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < PATIENCE, "shutdown took {:?}", started.elapsed());
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    names
}

fn no_temp_files_beside(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(
        names_in(path.parent().unwrap()),
        [name.clone(), format!("{name}.lock")],
        "only the state file and its lock are left"
    );
}

/// The lock file beside a state file holds a pid and nothing else.
fn lock_holds_a_pid(state: &Path) {
    let lock = format!("{}.lock", state.display());
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.trim().parse::<u32>().is_ok(), "{lock}: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_token_deletes_the_room_and_nothing_else_does() {
    let hub = BinHub::start(&[]);
    let (room, token) = create(&hub, "Mine", None, false).await;
    let code = room["code"].as_str().unwrap();
    let (other, other_token) = create(&hub, "Theirs", None, true).await;
    let other_code = other["code"].as_str().unwrap();
    join(&hub, code, "w1", None).await;
    let mut events = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    assert_eq!(events.next().await.event, "connected");

    let (status, res) = delete_room(&hub, code, None).await;
    assert_eq!(status, 401, "missing token: {res}");
    assert_eq!(res["error"]["code"], "HOST_TOKEN_REQUIRED");
    assert!(res["error"]["hint"].is_string(), "{res}");
    for wrong in ["gh_wrong", other_token.as_str(), "", "   "] {
        let (status, res) = delete_room(&hub, code, Some(wrong)).await;
        let want = if wrong.trim().is_empty() { 401 } else { 403 };
        assert_eq!(status, want, "token {wrong:?}: {res}");
        if want == 403 {
            assert_eq!(res["error"]["code"], "INVALID_HOST_TOKEN");
        }
    }
    let (status, _, res) =
        call(http().delete(hub.at(&format!("/v1/rooms/{code}"))).header("authorization", &token)).await;
    assert_eq!(status, 401, "a token without the Bearer scheme is not a token: {res}");
    let (status, _, _) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(status, 200, "refused deletions leave the room alone");
    assert!(events.next_within(Duration::from_millis(300)).await.is_none(), "and say nothing");

    // The right token, in lower case code too.
    let (status, res) = delete_room(&hub, &code.to_lowercase(), Some(&token)).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["data"], json!({"success": true}));
    let left = events.next().await;
    assert_eq!(left.event, "participant.left");
    assert!(events.ended_within(PATIENCE).await);
    let (status, _, _) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(status, 404);
    let (status, res) = delete_room(&hub, code, Some(&token)).await;
    assert_eq!(status, 404, "{res}");
    assert_eq!(res["error"]["code"], "ROOM_NOT_FOUND");
    let (status, _, _) = call(http().get(hub.at(&format!("/v1/rooms/{other_code}")))).await;
    assert_eq!(status, 200, "the other room is untouched");
    // The classic API's hostToken deletes its room as well.
    let (status, _) = delete_room(&hub, other_code, Some(&other_token)).await;
    assert_eq!(status, 200);
    assert!(!hub.log().contains(&token), "the host token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_keeps_codes_and_passwords_across_restarts_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hub-state.json");
    let state_arg = state.to_str().unwrap();

    // First life: two rooms, one protected, and participants.
    let mut hub = BinHub::start(&["--state", state_arg]);
    let (open, open_token) = create(&hub, "Open room", None, false).await;
    let (locked, locked_token) = create(&hub, "Locked room", Some(PASSWORD), true).await;
    let open_code = open["code"].as_str().unwrap().to_string();
    let locked_code = locked["code"].as_str().unwrap().to_string();
    // Names no hash, salt or digest in the file can spell by chance (base64 can spell "w1").
    assert_eq!(join(&hub, &open_code, "first-worker", None).await.0, 200);
    assert_eq!(upsert(&hub, &locked_code, "second-worker", Some(PASSWORD)).await.0, 201);
    let before = rooms(&hub).await;
    let mut expected = vec![public(&open), public(&locked)];
    expected.sort_by_key(|r| r["code"].as_str().unwrap().to_string());
    assert_eq!(before, expected);
    terminate_ok(&mut hub);

    // The file: the rooms, an argon2id hash, a digest of the host token; no plaintext secret.
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains(&open_code) && text.contains(&locked_code), "{text}");
    assert!(!text.contains(PASSWORD), "plaintext password in the state file");
    assert!(!text.contains(&open_token) && !text.contains(&locked_token), "plaintext host token in the state file");
    assert!(text.contains("$argon2id$"), "the password is kept as an argon2id hash");
    // Participants are not kept, only their ids bound to token digests (see the restart test below).
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    for room in file["rooms"].as_array().unwrap() {
        let tokens = room["participantTokens"].as_object();
        assert!(tokens.is_some_and(|t| t.len() == 1 && t.values().all(|d| d.as_str().unwrap().len() == 64)), "{room}");
        assert!(!room.to_string().contains("nickname") && !room.to_string().contains("endpoint"), "{room}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the state file is private to its owner ({mode:o})");
    }
    no_temp_files_beside(&state);

    // Second life: same rooms, same password, no participants, the old host token still works.
    let mut hub = BinHub::start(&["--state", state_arg]);
    assert_eq!(rooms(&hub).await, before, "codes, names, ids, host ids and creation times survive");
    for code in [&open_code, &locked_code] {
        let (status, _, res) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
        assert_eq!(status, 200);
        assert_eq!(res["data"]["participantCount"], 0, "participants are not kept");
        let key = if code == &locked_code { locked_token.as_str() } else { open_token.as_str() };
        let (_, _, list) = call(http().get(hub.at(&format!("/rooms/{code}/participants"))).bearer_auth(key)).await;
        assert_eq!(list, json!({"participants": []}));
    }
    for wrong in [Some("wrong password"), None] {
        let (status, res) = join(&hub, &locked_code, "w3", wrong).await;
        assert_eq!((status, res), (401, json!({"error": "Invalid password"})), "classic join with {wrong:?}");
        let (status, res) = upsert(&hub, &locked_code, "w3", wrong).await;
        assert_eq!(status, 401, "/v1 upsert with {wrong:?}: {res}");
        assert_eq!(res["error"]["code"], "INVALID_PASSWORD");
    }
    let (status, res) = join(&hub, &locked_code, "w3", Some(PASSWORD)).await;
    assert_eq!(status, 200, "the right password still opens the room: {res}");
    assert_eq!(res["participant"]["id"], "w3");
    assert_eq!(upsert(&hub, &locked_code, "w4", Some(PASSWORD)).await.0, 201);
    assert_eq!(join(&hub, &open_code, "w5", None).await.0, 200, "the open room is still open");
    let (status, _) = delete_room(&hub, &open_code, Some(&locked_token)).await;
    assert_eq!(status, 403, "another room's token does not delete it");
    let (status, res) = delete_room(&hub, &open_code, Some(&open_token)).await;
    assert_eq!(status, 200, "the host token from before the restart still works: {res}");
    let (status, _, _) = call(http().get(hub.at(&format!("/v1/rooms/{open_code}")))).await;
    assert_eq!(status, 404);
    terminate_ok(&mut hub);

    // Third life: the deletion was kept.
    let mut hub = BinHub::start(&["--state", state_arg]);
    let now = rooms(&hub).await;
    assert_eq!(now, vec![public(&locked)], "only the locked room is left");
    assert_eq!(join(&hub, &locked_code, "w6", Some("nope")).await.0, 401);
    terminate_ok(&mut hub);
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(!text.contains(&open_code), "the deleted room is gone from the file");
    assert!(!text.contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_written_on_every_change_not_only_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nested").join("rooms.json");
    let state_arg = state.to_str().unwrap();
    let mut hub = BinHub::start(&["--state", state_arg]);
    let (kept, _) = create(&hub, "Kept", Some(PASSWORD), false).await;
    let (gone, gone_token) = create(&hub, "Gone", None, false).await;
    assert_eq!(delete_room(&hub, gone["code"].as_str().unwrap(), Some(&gone_token)).await.0, 200);
    // Killed, not asked to stop: only what was written as things happened survives.
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    no_temp_files_beside(&state);

    let mut hub = BinHub::start(&["--state", state_arg]);
    assert_eq!(rooms(&hub).await, vec![public(&kept)]);
    let code = kept["code"].as_str().unwrap();
    assert_eq!(join(&hub, code, "w1", Some(PASSWORD)).await.0, 200);
    assert_eq!(join(&hub, code, "w2", Some("wrong")).await.0, 401);
    terminate_ok(&mut hub);
}

/// Runs `gambi hub serve --state PATH`, which must exit on its own; returns (code, stderr).
fn serve_expecting_exit(state: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["hub", "serve", "--host", "127.0.0.1", "--port", "0", "--state"])
        .arg(state)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gambi hub serve kept running with the state file {}", state.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn a_corrupt_state_file_stops_the_hub_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("garbage.json", b"{ this is not json"),
        ("truncated.json", br#"{"version": 1, "rooms": [{"id": "x", "code": "ABC"#),
        ("future.json", br#"{"version": 99, "rooms": []}"#),
        ("binary.json", &[0xff, 0xfe, 0x00, 0x01, 0x02]),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, stderr) = serve_expecting_exit(&path);
        assert_ne!(code, Some(0), "{name}: the hub must not start");
        assert!(code.is_some(), "{name}: exits, not killed by a signal");
        assert!(stderr.contains(&path.display().to_string()), "{name}: the message names the file: {stderr}");
        let lower = stderr.to_lowercase();
        assert!(
            lower.contains("not a gambi state file") || lower.contains("cannot read the state file"),
            "{name}: the message says what is wrong: {stderr}"
        );
        assert!(!lower.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{name}: no panic: {stderr}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: the file is left as it was");
    }
    // Beside each file only its lock (taken before the file is read), holding the pid of a hub gone.
    let names = names_in(dir.path());
    let files = ["binary.json", "future.json", "garbage.json", "truncated.json"];
    let want: Vec<String> = files.iter().flat_map(|f| [f.to_string(), format!("{f}.lock")]).collect();
    assert_eq!(names, want, "no other files written beside");
    for f in files {
        lock_holds_a_pid(&dir.path().join(f));
    }

    // A folder where the file should be cannot be read either.
    let (code, stderr) = serve_expecting_exit(dir.path());
    assert_ne!(code, Some(0));
    assert!(stderr.contains("state file"), "{stderr}");
}

/// A temp file named as the state file's writer names them (`.NAME.PID.tmp`), by a writer killed
/// mid-write; the pid is past any Linux pid, so no running process can be writing it.
fn plant_stale_temp(state: &Path) -> std::path::PathBuf {
    let name = state.file_name().unwrap().to_string_lossy();
    let stale = state.with_file_name(format!(".{name}.999999999.tmp"));
    std::fs::write(&stale, r#"{"version": 1, "rooms": [{"passwordHash": "$argon2id$v=19$half a write"#).unwrap();
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hub_on_one_state_file_refuses_to_start_and_the_first_keeps_its_rooms() {
    // Regression (issue 11): two hubs on one --state file both ran, and the last to write won,
    // silently dropping the other's rooms.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rooms.json");
    let state_arg = state.to_str().unwrap();
    let mut first = BinHub::start(&["--state", state_arg]);
    let (kept, _) = create(&first, "First hub's room", Some(PASSWORD), false).await;
    let written = std::fs::read(&state).unwrap();
    let stale = plant_stale_temp(&state);

    for attempt in 0..2 {
        let (code, stderr) = serve_expecting_exit(&state);
        assert!(code.is_some_and(|c| c != 0), "attempt {attempt}: the second hub must exit non-zero: {code:?}");
        assert!(stderr.contains(&state.display().to_string()), "the message names the file: {stderr}");
        assert!(stderr.contains("in use by another Gambi hub"), "the message says why: {stderr}");
        assert!(stderr.contains(&format!("(pid {})", first.child.id())), "and names the first hub's pid: {stderr}");
        assert!(!stderr.to_lowercase().contains("panicked"), "{stderr}");
        assert_eq!(std::fs::read(&state).unwrap(), written, "the refused hub wrote nothing");
        assert!(stale.exists(), "the refused hub removed nothing either");
    }
    lock_holds_a_pid(&state);

    // The first hub keeps serving, and keeps writing its file.
    let (status, _, _) = call(http().get(first.at(&format!("/v1/rooms/{}", kept["code"].as_str().unwrap())))).await;
    assert_eq!(status, 200);
    let (later, _) = create(&first, "Made after the refusal", None, true).await;
    let mut expected = vec![public(&kept), public(&later)];
    expected.sort_by_key(|r| r["code"].as_str().unwrap().to_string());
    assert_eq!(rooms(&first).await, expected);
    terminate_ok(&mut first);

    // Stopped, it has let the file go: a new hub starts on it, with both rooms.
    let mut next = BinHub::start(&["--state", state_arg]);
    assert_eq!(rooms(&next).await, expected, "the first hub's rooms survive its restart");
    assert_eq!(join(&next, kept["code"].as_str().unwrap(), "w1", Some(PASSWORD)).await.0, 200);
    // Killed, the operating system frees the lock all the same.
    next.child.kill().unwrap();
    next.child.wait().unwrap();
    let mut last = BinHub::start(&["--state", state_arg]);
    assert_eq!(rooms(&last).await, expected);
    terminate_ok(&mut last);
    no_temp_files_beside(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_temp_files_of_the_state_file_are_removed_at_start_and_no_other_file() {
    // Regression (issue 11): a hub killed during a write left `.NAME.PID.tmp` (with password
    // hashes) beside its state file for good.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rooms.json");
    let state_arg = state.to_str().unwrap();
    let mut hub = BinHub::start(&["--state", state_arg]);
    let (room, _) = create(&hub, "Kept", Some(PASSWORD), false).await;
    terminate_ok(&mut hub);

    let stale = plant_stale_temp(&state);
    let unrelated = [
        "notes.txt",
        ".other.json.999999999.tmp",
        ".rooms.json.tmp",
        ".rooms.json.999999999.tmp.bak",
        "rooms.json.999999999.tmp",
        ".rooms.json.old.999999999.tmp",
    ];
    for name in unrelated {
        std::fs::write(dir.path().join(name), name).unwrap();
    }
    let mut hub = BinHub::start(&["--state", state_arg]);
    assert!(!stale.exists(), "the stale temp file is gone");
    for name in unrelated {
        assert_eq!(std::fs::read_to_string(dir.path().join(name)).unwrap(), name, "{name} is left as it was");
    }
    assert_eq!(rooms(&hub).await, vec![public(&room)], "the state file itself is read as before");
    terminate_ok(&mut hub);
    let mut want: Vec<String> = unrelated.iter().map(|s| s.to_string()).collect();
    want.extend(["rooms.json".to_string(), "rooms.json.lock".to_string()]);
    want.sort();
    assert_eq!(names_in(dir.path()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_promptly_even_with_open_streams() {
    let mut hub = BinHub::start(&[]);
    let (room, _) = create(&hub, "Streaming", None, false).await;
    let code = room["code"].as_str().unwrap();
    join(&hub, code, "w1", None).await;
    let mut v1 = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let mut classic = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;
    assert_eq!(v1.next().await.event, "connected");
    assert_eq!(classic.next().await.event, "connected");
    terminate_ok(&mut hub);
    assert!(v1.ended_within(PATIENCE).await && classic.ended_within(PATIENCE).await);
    assert!(hub.log().contains("shutting down"), "{}", hub.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_across_a_restart_is_told_it_missed_events() {
    // Regression: the participants of the first hub are gone after a restart, without a
    // `participant.left` anyone could replay. A client resuming with its Last-Event-ID from the
    // earlier process used to be resumed silently, keeping a stale view; it is told it lagged.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    let mut hub = BinHub::start(&["--state", state_arg]);
    let (room, _) = create(&hub, "Resumed", None, false).await;
    let code = room["code"].as_str().unwrap().to_string();
    let mut last_ids = Vec::new();
    for path in [format!("/v1/rooms/{code}/events"), format!("/rooms/{code}/events")] {
        let mut sse = Sse::connect(&hub.at(&path), None).await;
        assert_eq!(sse.next().await.event, "connected");
        assert_eq!(join(&hub, &code, &format!("w{}", last_ids.len()), None).await.0, 200);
        let joined = sse.next().await;
        assert!(joined.event.starts_with("participant") && joined.event.ends_with("joined"), "{joined:?}");
        last_ids.push((path, joined.id.unwrap()));
    }
    terminate_ok(&mut hub);

    let mut hub = BinHub::start(&["--state", state_arg]);
    for (path, last_id) in &last_ids {
        let mut sse = Sse::connect(&hub.at(path), Some(last_id)).await;
        assert_eq!(sse.next().await.event, "connected");
        let lagged = sse.next_within(Duration::from_secs(2)).await;
        let name = lagged.as_ref().map(|e| e.event.as_str());
        assert!(
            matches!(name, Some("stream.lagged" | "stream:lagged")),
            "{path}: resumed after a restart without being told; got {lagged:?}"
        );
        assert_eq!(join(&hub, &code, &format!("again-{}", path.len()), None).await.0, 200);
        let live = sse.next().await;
        assert!(live.event.ends_with("joined"), "{path}: live events follow: {live:?}");
    }
    terminate_ok(&mut hub);
}
