//! Acceptance 1: every curl example of seed 000 against a real hub gives the seed's response shape,
//! and its error cases give the seed's status and exact message.

use serde_json::{json, Value};

use crate::util::{call, http, Sse, TestHub};

/// A room code as the seed promises it: 6 characters from `A-Z0-9`.
fn assert_room_code(code: &Value) {
    let code = code.as_str().unwrap_or_else(|| panic!("code is not a string: {code}"));
    assert_eq!(code.len(), 6, "{code}");
    assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{code}");
}

fn assert_time(v: &Value, what: &str) {
    let t = v.as_u64().unwrap_or_else(|| panic!("{what} is not a whole number: {v}"));
    // Epoch milliseconds of this century, not seconds.
    assert!(t > 1_600_000_000_000, "{what} = {t} is not epoch milliseconds");
}

/// `POST /rooms` through the seed's curl form; returns the whole body.
async fn create(hub: &TestHub, body: Value) -> Value {
    let (status, _, body) = call(http().post(hub.at("/rooms")).json(&body)).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// The seed's create response: `{"room": {id, code, name, hostId, createdAt}, "hostId"}`.
fn assert_created(body: &Value, name: &str) {
    let room = &body["room"];
    assert!(room["id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    assert_room_code(&room["code"]);
    assert_eq!(room["name"], name);
    assert!(room["hostId"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    assert_eq!(room["hostId"], body["hostId"], "room.hostId == hostId");
    assert_time(&room["createdAt"], "createdAt");
    let text = body.to_string();
    assert!(!text.contains("passwordHash") && !text.contains("$argon2"), "{text}");
}

/// The seed's participant object.
fn assert_participant(p: &Value, id: &str, nickname: &str, model: &str, endpoint: &str) {
    assert_eq!(p["id"], id, "{p}");
    assert_eq!(p["nickname"], nickname, "{p}");
    assert_eq!(p["model"], model, "{p}");
    assert_eq!(p["endpoint"], endpoint, "{p}");
    assert!(p["specs"].is_object(), "specs: {p}");
    assert!(p["config"].is_object(), "config: {p}");
    assert_eq!(p["status"], "online", "{p}");
    assert_time(&p["joinedAt"], "joinedAt");
    assert_time(&p["lastSeen"], "lastSeen");
}

async fn join(hub: &TestHub, code: &str, body: Value) -> Value {
    let (status, _, body) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn alice() -> Value {
    json!({"nickname": "Alice", "model": "llama3", "endpoint": "http://localhost:11434"})
}

#[tokio::test]
async fn create_with_and_without_password_has_the_seed_shape() {
    let hub = TestHub::start().await;
    let open = create(&hub, json!({"name": "My AI Room"})).await;
    assert_created(&open, "My AI Room");
    // The seed's curl example, password included.
    let protected = create(&hub, json!({"name": "My AI Room", "password": "secret123"})).await;
    assert_created(&protected, "My AI Room");
    assert!(!protected.to_string().contains("secret123"), "the password is never echoed: {protected}");
    // Extension (PROTOCOL.md): the creator's host token, returned once, here too.
    assert!(open["hostToken"].as_str().is_some_and(|t| !t.is_empty()), "{open}");
    assert_ne!(open["room"]["code"], protected["room"]["code"]);
    assert_ne!(open["room"]["id"], protected["room"]["id"]);
}

#[tokio::test]
async fn list_has_every_room_with_its_participant_count() {
    let hub = TestHub::start().await;
    let (status, _, body) = call(http().get(hub.at("/rooms"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"rooms": []}));

    let first = create(&hub, json!({"name": "My AI Room"})).await;
    let second = create(&hub, json!({"name": "Private Room", "password": "secret123"})).await;
    let code = first["room"]["code"].as_str().unwrap();
    for nick in ["a", "b", "c"] {
        join(&hub, code, json!({"nickname": nick, "model": "llama3", "endpoint": "http://localhost:11434"})).await;
    }

    let (status, _, body) = call(http().get(hub.at("/rooms"))).await;
    assert_eq!(status, 200);
    let rooms = body["rooms"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(rooms.len(), 2, "{body}");
    for (created, count) in [(&first, 3), (&second, 0)] {
        let listed = rooms.iter().find(|r| r["code"] == created["room"]["code"]).unwrap();
        for key in ["id", "code", "name", "hostId", "createdAt"] {
            assert_eq!(listed[key], created["room"][key], "{key} in {listed}");
        }
        assert_eq!(listed["participantCount"], count, "{listed}");
    }
    assert!(!body.to_string().contains("$argon2"));
}

#[tokio::test]
async fn join_with_custom_id_specs_and_config_is_the_seed_example() {
    let hub = TestHub::start().await;
    let created = create(&hub, json!({"name": "My AI Room", "password": "secret123"})).await;
    let code = created["room"]["code"].as_str().unwrap();
    // The seed's curl example, byte for byte.
    let body = join(
        &hub,
        code,
        json!({
            "id": "custom-id",
            "nickname": "Alice",
            "model": "llama3",
            "endpoint": "http://192.168.1.50:11434",
            "password": "secret123",
            "specs": {"gpu": "NVIDIA RTX 4090", "vram": 24},
            "config": {"temperature": 0.7}
        }),
    )
    .await;
    let p = &body["participant"];
    assert_participant(p, "custom-id", "Alice", "llama3", "http://192.168.1.50:11434");
    assert_eq!(p["specs"]["gpu"], "NVIDIA RTX 4090");
    assert_eq!(p["specs"]["vram"].as_f64(), Some(24.0));
    assert_eq!(p["config"]["temperature"].as_f64(), Some(0.7));
    assert_eq!(p["joinedAt"], p["lastSeen"], "a fresh participant was last seen when it joined");
    assert_eq!(body["roomId"], created["room"]["id"], "roomId is the room's id, not its code");
    assert!(!body.to_string().contains("secret123"));

    // The SDK's "with specs and config" example (no id: the hub makes one).
    let open = create(&hub, json!({"name": "Open"})).await;
    let open_code = open["room"]["code"].as_str().unwrap();
    let body = join(
        &hub,
        open_code,
        json!({
            "nickname": "Bob",
            "model": "gpt-4",
            "endpoint": "http://localhost:1234",
            "specs": {"gpu": "NVIDIA RTX 4090", "vram": 24, "ram": 64, "cpu": "AMD Ryzen 9 7950X"},
            "config": {"temperature": 0.7, "max_tokens": 2000}
        }),
    )
    .await;
    let p = &body["participant"];
    let id = p["id"].as_str().unwrap().to_string();
    assert_participant(p, &id, "Bob", "gpt-4", "http://localhost:1234");
    assert_eq!(p["specs"]["ram"].as_f64(), Some(64.0));
    assert_eq!(p["specs"]["cpu"], "AMD Ryzen 9 7950X");
    assert_eq!(p["config"]["max_tokens"], 2000);
    assert_eq!(body["roomId"], open["room"]["id"]);
}

#[tokio::test]
async fn join_without_id_gets_a_generated_one() {
    let hub = TestHub::start().await;
    let created = create(&hub, json!({"name": "My AI Room"})).await;
    let code = created["room"]["code"].as_str().unwrap();
    let first = join(&hub, code, alice()).await;
    let second = join(&hub, code, alice()).await;
    let a = first["participant"]["id"].as_str().unwrap();
    let b = second["participant"]["id"].as_str().unwrap();
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b, "each join without an id is a new participant");
    assert_participant(&first["participant"], a, "Alice", "llama3", "http://localhost:11434");
    assert_eq!(first["roomId"], created["room"]["id"]);

    let (_, _, list) = call(http().get(hub.at(&format!("/rooms/{code}/participants")))).await;
    assert_eq!(list["participants"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn health_participants_and_leave_have_the_seed_shapes() {
    let hub = TestHub::start().await;
    let created = create(&hub, json!({"name": "My AI Room"})).await;
    let code = created["room"]["code"].as_str().unwrap();
    let joined = join(
        &hub,
        code,
        json!({
            "id": "uuid-1", "nickname": "Alice", "model": "llama3", "endpoint": "http://192.168.1.50:11434",
            "specs": {"gpu": "RTX 4090", "vram": 24}, "config": {"temperature": 0.7}
        }),
    )
    .await;
    let joined_at = joined["participant"]["joinedAt"].as_u64().unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, _, body) =
        call(http().post(hub.at(&format!("/rooms/{code}/health"))).json(&json!({"id": "uuid-1"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["status"], "online");
    assert_time(&body["lastSeen"], "lastSeen");
    let last_seen = body["lastSeen"].as_u64().unwrap();
    assert!(last_seen > joined_at, "a health check moves lastSeen forward");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");

    let (status, _, body) = call(http().get(hub.at(&format!("/rooms/{code}/participants")))).await;
    assert_eq!(status, 200);
    let list = body["participants"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(list.len(), 1);
    assert_participant(&list[0], "uuid-1", "Alice", "llama3", "http://192.168.1.50:11434");
    assert_eq!(list[0]["specs"], json!({"gpu": "RTX 4090", "vram": 24}), "as the seed shows it");
    assert_eq!(list[0]["config"]["temperature"].as_f64(), Some(0.7));
    assert_eq!(list[0]["lastSeen"], last_seen);

    // Leaving proves the participant with the token its join returned.
    let token = joined["participantToken"].as_str().unwrap();
    let (status, _, body) =
        call(http().delete(hub.at(&format!("/rooms/{code}/leave/uuid-1"))).bearer_auth(token)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"success": true}));
    let (_, _, body) = call(http().get(hub.at(&format!("/rooms/{code}/participants")))).await;
    assert_eq!(body, json!({"participants": []}));
}

#[tokio::test]
async fn events_stream_connected_then_joined_then_left() {
    let hub = TestHub::start().await;
    let created = create(&hub, json!({"name": "My AI Room"})).await;
    let code = created["room"]["code"].as_str().unwrap();
    let mut sse = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;

    let connected = sse.next().await;
    assert_eq!(connected.event, "connected");
    assert!(connected.json()["clientId"].as_str().is_some_and(|s| !s.is_empty()), "{}", connected.data);

    let joined = join(
        &hub,
        code,
        json!({"id": "w1", "nickname": "Alice", "model": "llama3", "endpoint": "http://localhost:11434"}),
    )
    .await;
    let event = sse.next().await;
    assert_eq!(event.event, "participant:joined");
    assert!(event.id.is_some(), "every event has an id");
    // The bare participant object, as the seed's `JSON.parse(e.data).nickname` expects.
    assert_eq!(event.json(), joined["participant"]);
    assert_eq!(event.json()["nickname"], "Alice");

    let token = joined["participantToken"].as_str().unwrap();
    let (status, _, _) = call(http().delete(hub.at(&format!("/rooms/{code}/leave/w1"))).bearer_auth(token)).await;
    assert_eq!(status, 200);
    let event = sse.next().await;
    assert_eq!(event.event, "participant:left");
    assert_eq!(event.json(), json!({"participantId": "w1"}));
}

#[tokio::test]
async fn room_codes_are_case_insensitive_in_paths() {
    let hub = TestHub::start().await;
    let created = create(&hub, json!({"name": "My AI Room"})).await;
    let code = created["room"]["code"].as_str().unwrap();
    let lower = code.to_ascii_lowercase();
    assert_ne!(lower, code, "codes have letters");
    let mut sse = Sse::connect(&hub.at(&format!("/rooms/{lower}/events")), None).await;
    assert_eq!(sse.next().await.event, "connected");

    let body = join(
        &hub,
        &lower,
        json!({"id": "w1", "nickname": "Alice", "model": "llama3", "endpoint": "http://localhost:11434"}),
    )
    .await;
    assert_eq!(body["roomId"], created["room"]["id"]);
    let token = body["participantToken"].as_str().unwrap().to_string();
    assert_eq!(sse.next().await.event, "participant:joined");

    let (status, _, body) =
        call(http().post(hub.at(&format!("/rooms/{lower}/health"))).json(&json!({"id": "w1"}))).await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
    let (status, _, body) = call(http().get(hub.at(&format!("/rooms/{lower}/participants")))).await;
    assert_eq!(status, 200);
    assert_eq!(body["participants"][0]["id"], "w1");
    let (status, _, body) = call(http().delete(hub.at(&format!("/rooms/{lower}/leave/w1"))).bearer_auth(&token)).await;
    assert_eq!((status, body), (200, json!({"success": true})));
    assert_eq!(sse.next().await.event, "participant:left");
}

#[tokio::test]
async fn seed_error_cases_have_the_seed_status_and_message() {
    let hub = TestHub::start().await;
    let open = create(&hub, json!({"name": "My AI Room"})).await;
    let code = open["room"]["code"].as_str().unwrap().to_string();
    let private = create(&hub, json!({"name": "Private Room", "password": "secret123"})).await;
    let private_code = private["room"]["code"].as_str().unwrap().to_string();
    // A well-formed code no room has (codes avoid 0, O, 1 and I, so this one is never issued).
    let missing = "ZZZ000";

    let room_not_found = json!({"error": "Room not found"});
    let cases = vec![
        ("join an unknown room", http().post(hub.at(&format!("/rooms/{missing}/join"))).json(&alice())),
        (
            "health in an unknown room",
            http().post(hub.at(&format!("/rooms/{missing}/health"))).json(&json!({"id": "x"})),
        ),
        ("leave an unknown room", http().delete(hub.at(&format!("/rooms/{missing}/leave/x")))),
        ("participants of an unknown room", http().get(hub.at(&format!("/rooms/{missing}/participants")))),
        ("events of an unknown room", http().get(hub.at(&format!("/rooms/{missing}/events")))),
    ];
    for (what, req) in cases {
        let (status, _, body) = call(req).await;
        assert_eq!((status, &body), (404, &room_not_found), "{what}");
    }

    let invalid_password = json!({"error": "Invalid password"});
    let wrong = json!({"nickname": "Bob", "model": "gpt-4", "endpoint": "http://localhost:1234", "password": "nope"});
    let (status, _, body) = call(http().post(hub.at(&format!("/rooms/{private_code}/join"))).json(&wrong)).await;
    assert_eq!((status, &body), (401, &invalid_password), "wrong password");
    let (status, _, body) = call(http().post(hub.at(&format!("/rooms/{private_code}/join"))).json(&alice())).await;
    assert_eq!((status, &body), (401, &invalid_password), "missing password");
    // A protected room's list needs its password or host token (the guesses above are spent).
    let host = private["hostToken"].as_str().unwrap();
    let (_, _, list) = call(http().get(hub.at(&format!("/rooms/{private_code}/participants"))).bearer_auth(host)).await;
    assert_eq!(list, json!({"participants": []}), "a refused join registers nobody");

    let missing_fields = json!({"error": "Missing required fields: id, nickname, model, endpoint"});
    for body in [
        json!({}),
        json!({"nickname": "Alice"}),
        json!({"nickname": "Alice", "model": "llama3"}),
        json!({"id": "w1", "model": "llama3", "endpoint": "http://localhost:11434"}),
        json!({"nickname": "Alice", "model": "llama3", "endpoint": ""}),
    ] {
        let (status, _, got) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
        assert_eq!((status, &got), (400, &missing_fields), "{body}");
    }

    let participant_not_found = json!({"error": "Participant not found"});
    let (status, _, body) =
        call(http().post(hub.at(&format!("/rooms/{code}/health"))).json(&json!({"id": "ghost"}))).await;
    assert_eq!((status, &body), (404, &participant_not_found), "health of an unknown id");
    let (status, _, body) = call(http().delete(hub.at(&format!("/rooms/{code}/leave/ghost")))).await;
    assert_eq!((status, &body), (404, &participant_not_found), "leave of an unknown id");

    let invalid_json = json!({"error": "Invalid JSON body"});
    for (path, raw) in [
        ("/rooms".to_string(), "{\"name\": "),
        (format!("/rooms/{code}/join"), "{nickname: Alice}"),
        (format!("/rooms/{code}/health"), "not json"),
    ] {
        let req = http().post(hub.at(&path)).header("content-type", "application/json").body(raw);
        let (status, _, body) = call(req).await;
        assert_eq!((status, &body), (400, &invalid_json), "{path} {raw}");
    }

    // None of the failures above created anything.
    let (_, _, rooms) = call(http().get(hub.at("/rooms"))).await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 2);
    assert!(rooms["rooms"].as_array().unwrap().iter().all(|r| r["participantCount"] == 0), "{rooms}");
}
