//! Acceptance 2: the classic flows through the `/v1` management plane — envelopes, codes, hints and
//! request ids, the idempotent upsert, the `/v1` event stream — and the two surfaces seeing and
//! removing each other's participants. Also host deletion of a room.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::util::{call, http, Sse, TestHub};

/// Checks a success envelope (status, `data`, `meta.requestId` == `x-request-id`) and returns `data`.
fn data(status: u16, headers: &HeaderMap, body: &Value, expected: u16) -> Value {
    assert_eq!(status, expected, "{body}");
    assert!(body.get("data").is_some(), "no data: {body}");
    assert!(body.get("error").is_none(), "{body}");
    assert_request_id(headers, body);
    body["data"].clone()
}

/// `meta.requestId` is set and equals the `x-request-id` response header.
fn assert_request_id(headers: &HeaderMap, body: &Value) {
    let id = body["meta"]["requestId"].as_str().unwrap_or_else(|| panic!("no meta.requestId: {body}"));
    assert!(!id.is_empty());
    let header = headers.get("x-request-id").unwrap_or_else(|| panic!("no x-request-id header for {body}"));
    assert_eq!(header.to_str().unwrap(), id);
}

/// Checks an error envelope (status, code, message, hint, request id).
fn assert_error(status: u16, headers: &HeaderMap, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "message: {body}");
    assert!(error["hint"].as_str().is_some_and(|h| !h.is_empty()), "hint: {body}");
    assert!(body.get("data").is_none(), "{body}");
    assert_request_id(headers, body);
}

fn worker(nickname: &str) -> Value {
    json!({"nickname": nickname, "model": "llama3", "endpoint": "http://localhost:11434"})
}

/// `POST /v1/rooms`; returns `data`.
async fn create(hub: &TestHub, body: Value) -> Value {
    let (status, headers, body) = call(http().post(hub.at("/v1/rooms")).json(&body)).await;
    data(status, &headers, &body, 201)
}

async fn put(hub: &TestHub, code: &str, id: &str, body: &Value) -> (u16, HeaderMap, Value) {
    call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/{id}"))).json(body)).await
}

/// Reads the `/v1` stream's next event and checks its envelope; returns it.
async fn next_v1(sse: &mut Sse, code: &str, name: &str) -> Value {
    let event = sse.next().await;
    assert_eq!(event.event, name, "{}", event.data);
    let v = event.json();
    assert_eq!(v["type"], name, "{v}");
    assert_eq!(v["roomCode"], code, "{v}");
    assert!(v["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{v}");
    assert!(v.get("data").is_some(), "{v}");
    if name != "connected" {
        assert!(event.id.is_some(), "room events carry an id");
    }
    v
}

#[tokio::test]
async fn health_is_ok_with_a_timestamp() {
    let hub = TestHub::start().await;
    let (status, headers, body) = call(http().get(hub.at("/v1/health"))).await;
    let d = data(status, &headers, &body, 200);
    assert_eq!(d["status"], "ok");
    assert!(d["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{d}");
}

#[tokio::test]
async fn rooms_are_created_listed_and_got() {
    let hub = TestHub::start().await;
    let (status, headers, body) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(data(status, &headers, &body, 200), json!([]));

    let created =
        create(&hub, json!({"name": "My AI Room", "defaults": {"temperature": 0.3, "instructions": "be brief"}})).await;
    let room = &created["room"];
    let code = room["code"].as_str().unwrap();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{code}");
    assert!(room["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(room["name"], "My AI Room");
    assert_eq!(room["passwordProtected"], false);
    assert!(room["createdAt"].as_u64().is_some_and(|t| t > 1_600_000_000_000));
    assert_eq!(room["hostId"], created["hostId"]);
    assert!(created["hostToken"].as_str().is_some_and(|t| t.len() >= 16), "{created}");
    assert_eq!(room["defaults"]["temperature"].as_f64(), Some(0.3));
    assert_eq!(room["defaults"]["hasInstructions"], true);
    assert!(!created.to_string().contains("be brief"), "instructions stay on the hub");

    let other = create(&hub, json!({"name": "Private Room", "password": "secret123"})).await;
    assert_eq!(other["room"]["passwordProtected"], true);
    let (status, _, _) = put(&hub, code, "w1", &worker("w1")).await;
    assert_eq!(status, 201);

    let (status, headers, body) = call(http().get(hub.at("/v1/rooms"))).await;
    let list = data(status, &headers, &body, 200);
    let list = list.as_array().unwrap_or_else(|| panic!("data is an array: {body}"));
    assert_eq!(list.len(), 2);
    let summary = list.iter().find(|r| r["code"] == code).unwrap();
    for key in ["id", "code", "name", "hostId", "createdAt", "passwordProtected"] {
        assert_eq!(summary[key], room[key], "{key}");
    }
    assert_eq!(summary["participantCount"], 1);
    assert!(summary.get("hostToken").is_none(), "the host token is returned once, at creation");
    let private = list.iter().find(|r| r["code"] == other["room"]["code"]).unwrap();
    assert_eq!(private["participantCount"], 0);

    // Lower case codes work too.
    let (status, headers, body) = call(http().get(hub.at(&format!("/v1/rooms/{}", code.to_ascii_lowercase())))).await;
    let mut got = data(status, &headers, &body, 200);
    // The summary, with the room's stats added (see room_stats.rs).
    assert_eq!(got["stats"]["requests"], 0, "{got}");
    got.as_object_mut().unwrap().remove("stats");
    assert_eq!(&got, summary);
    assert!(!body.to_string().contains("hostToken") && !body.to_string().contains("$argon2"));
}

#[tokio::test]
async fn upsert_is_idempotent_and_announced() {
    let hub = TestHub::start().await;
    let created = create(&hub, json!({"name": "Room"})).await;
    let code = created["room"]["code"].as_str().unwrap();
    let mut sse = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    let connected = next_v1(&mut sse, code, "connected").await;
    assert!(connected["data"]["clientId"].as_str().is_some_and(|s| !s.is_empty()), "{connected}");

    let body = json!({
        "nickname": "Alice", "model": "llama3", "endpoint": "http://localhost:11434",
        "specs": {"gpu": "NVIDIA RTX 4090", "vram": 24}, "config": {"temperature": 0.7},
        "capabilities": {"openResponses": "supported", "chatCompletions": "supported"}
    });
    let (status, headers, resp) = put(&hub, code, "worker-1", &body).await;
    let first = data(status, &headers, &resp, 201);
    let participant_token = first["participantToken"].as_str().unwrap().to_string();
    let p = &first["participant"];
    assert_eq!(p["id"], "worker-1");
    assert_eq!(p["nickname"], "Alice");
    assert_eq!(p["model"], "llama3");
    assert_eq!(p["endpoint"], "http://localhost:11434");
    assert_eq!(p["specs"]["gpu"], "NVIDIA RTX 4090");
    assert_eq!(p["config"]["temperature"].as_f64(), Some(0.7));
    assert_eq!(p["capabilities"], json!({"openResponses": "supported", "chatCompletions": "supported"}));
    assert_eq!(p["connection"]["kind"], "tunnel");
    assert_eq!(p["status"], "online");
    for key in ["joinedAt", "lastSeen", "updatedAt"] {
        assert!(p[key].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{key}: {p}");
    }
    assert_eq!(first["roomId"], created["room"]["id"]);
    let host = hub.url.strip_prefix("http://").unwrap();
    assert_eq!(first["tunnel"]["url"], format!("ws://{host}/v1/rooms/{code}/participants/worker-1/tunnel"));
    assert!(!first["tunnel"]["url"].as_str().unwrap().contains('?'), "the tunnel url has no query");
    let token = first["tunnel"]["token"].as_str().unwrap();
    assert!(token.len() >= 16, "{token}");

    let event = next_v1(&mut sse, code, "participant.joined").await;
    assert_eq!(event["data"], first["participant"]);

    // The same id again: an update, not a second participant.
    let mut again = body.clone();
    again["nickname"] = json!("Alice 2");
    let (status, headers, resp) = call(
        http()
            .put(hub.at(&format!("/v1/rooms/{code}/participants/worker-1")))
            .bearer_auth(&participant_token)
            .json(&again),
    )
    .await;
    let second = data(status, &headers, &resp, 200);
    assert_eq!(second["participant"]["nickname"], "Alice 2");
    assert_eq!(second["participant"]["joinedAt"], p["joinedAt"], "an update keeps joinedAt");
    assert_eq!(second["roomId"], created["room"]["id"]);
    assert!(second["tunnel"]["token"].as_str().is_some_and(|t| !t.is_empty()));
    let event = next_v1(&mut sse, code, "participant.updated").await;
    assert_eq!(event["data"]["id"], "worker-1");
    assert_eq!(event["data"]["nickname"], "Alice 2");

    let (status, headers, resp) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    let list = data(status, &headers, &resp, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["nickname"], "Alice 2");
    let (status, headers, resp) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(data(status, &headers, &resp, 200)["participantCount"], 1);
}

#[tokio::test]
async fn heartbeat_and_delete_of_a_participant() {
    let hub = TestHub::start().await;
    let code = create(&hub, json!({"name": "Room"})).await["room"]["code"].as_str().unwrap().to_string();
    let mut sse = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    next_v1(&mut sse, &code, "connected").await;
    let (status, _, resp) = put(&hub, &code, "w1", &worker("Alice")).await;
    assert_eq!(status, 201);
    let joined_at = resp["data"]["participant"]["joinedAt"].as_u64().unwrap();
    let token = resp["data"]["participantToken"].as_str().unwrap().to_string();
    assert!(token.starts_with("gp_"), "a new participant gets its token: {resp}");
    next_v1(&mut sse, &code, "participant.joined").await;

    tokio::time::sleep(Duration::from_millis(5)).await;
    let heartbeat = hub.at(&format!("/v1/rooms/{code}/participants/w1/heartbeat"));
    let (status, headers, resp) = call(http().post(&heartbeat)).await;
    let hb = data(status, &headers, &resp, 200);
    assert_eq!(hb["success"], true);
    assert_eq!(hb["status"], "online");
    assert!(hb["lastSeen"].as_u64().is_some_and(|t| t > joined_at), "{hb}");
    // With a JSON body too.
    let (status, headers, resp) = call(http().post(&heartbeat).json(&json!({}))).await;
    assert_eq!(data(status, &headers, &resp, 200)["success"], true);

    let (status, headers, resp) =
        call(http().delete(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).bearer_auth(&token)).await;
    assert_eq!(data(status, &headers, &resp, 200), json!({"success": true}));
    let event = next_v1(&mut sse, &code, "participant.left").await;
    assert_eq!(event["data"], json!({"participantId": "w1"}));

    let (status, headers, resp) = call(http().post(&heartbeat)).await;
    assert_error(status, &headers, &resp, 404, "PARTICIPANT_NOT_FOUND");
    let (status, headers, resp) = call(http().delete(hub.at(&format!("/v1/rooms/{code}/participants/w1")))).await;
    assert_error(status, &headers, &resp, 404, "PARTICIPANT_NOT_FOUND");
    let (status, headers, resp) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(data(status, &headers, &resp, 200), json!([]));
}

#[tokio::test]
async fn errors_have_codes_messages_and_hints() {
    let hub = TestHub::start().await;
    let code = create(&hub, json!({"name": "Room"})).await["room"]["code"].as_str().unwrap().to_string();
    let private = create(&hub, json!({"name": "Private", "password": "secret123"})).await;
    let private = private["room"]["code"].as_str().unwrap().to_string();
    let missing = "ZZZ000";

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("get an unknown room", http().get(hub.at(&format!("/v1/rooms/{missing}"))), 404, "ROOM_NOT_FOUND"),
        (
            "participants of an unknown room",
            http().get(hub.at(&format!("/v1/rooms/{missing}/participants"))),
            404,
            "ROOM_NOT_FOUND",
        ),
        (
            "upsert into an unknown room",
            http().put(hub.at(&format!("/v1/rooms/{missing}/participants/w1"))).json(&worker("a")),
            404,
            "ROOM_NOT_FOUND",
        ),
        (
            "events of an unknown room",
            http().get(hub.at(&format!("/v1/rooms/{missing}/events"))),
            404,
            "ROOM_NOT_FOUND",
        ),
        (
            "heartbeat of an unknown participant",
            http().post(hub.at(&format!("/v1/rooms/{code}/participants/ghost/heartbeat"))),
            404,
            "PARTICIPANT_NOT_FOUND",
        ),
        (
            "delete of an unknown participant",
            http().delete(hub.at(&format!("/v1/rooms/{code}/participants/ghost"))),
            404,
            "PARTICIPANT_NOT_FOUND",
        ),
        ("create without a name", http().post(hub.at("/v1/rooms")).json(&json!({})), 400, "INVALID_REQUEST"),
        (
            "upsert without an endpoint",
            http()
                .put(hub.at(&format!("/v1/rooms/{code}/participants/w1")))
                .json(&json!({"nickname": "a", "model": "m"})),
            400,
            "INVALID_REQUEST",
        ),
        (
            "a body that is not JSON",
            http().post(hub.at("/v1/rooms")).header("content-type", "application/json").body("{\"name\":"),
            400,
            "INVALID_REQUEST",
        ),
        (
            "a wrong password",
            http().put(hub.at(&format!("/v1/rooms/{private}/participants/w1"))).json(&json!({
                "nickname": "a", "model": "m", "endpoint": "http://localhost:1", "password": "nope"
            })),
            401,
            "INVALID_PASSWORD",
        ),
        (
            "a missing password",
            http().put(hub.at(&format!("/v1/rooms/{private}/participants/w1"))).json(&worker("a")),
            401,
            "INVALID_PASSWORD",
        ),
    ];
    for (what, req, status_expected, code_expected) in cases {
        let (status, headers, body) = call(req).await;
        assert_eq!(status, status_expected, "{what}: {body}");
        assert_error(status, &headers, &body, status_expected, code_expected);
    }
}

#[tokio::test]
async fn request_ids_are_on_every_response_and_echoed() {
    let hub = TestHub::start().await;
    let code = create(&hub, json!({"name": "Room"})).await["room"]["code"].as_str().unwrap().to_string();

    let mut seen = std::collections::HashSet::new();
    for req in [
        http().get(hub.at("/v1/health")),
        http().get(hub.at("/v1/rooms")),
        http().get(hub.at(&format!("/v1/rooms/{code}"))),
        http().get(hub.at("/v1/rooms/ZZZ000")),
        http().post(hub.at("/v1/rooms")).json(&json!({"name": 5})),
        http().get(hub.at("/v1/nowhere")),
    ] {
        let (_, headers, body) = call(req).await;
        assert_request_id(&headers, &body);
        assert!(seen.insert(body["meta"]["requestId"].as_str().unwrap().to_string()), "request ids are fresh");
    }

    // A sane incoming id is kept, on success and on error alike.
    for (req, id) in [
        (http().get(hub.at("/v1/rooms")), "trace-abc_123"),
        (http().get(hub.at("/v1/rooms/ZZZ000")), "req:42.b"),
        (http().put(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).json(&json!({})), "client-7"),
    ] {
        let (_, headers, body) = call(req.header("x-request-id", id)).await;
        assert_eq!(headers["x-request-id"], id);
        assert_eq!(body["meta"]["requestId"], id, "{body}");
    }

    // One that is not sane (too long, or with characters unfit for a log line) is replaced.
    for id in ["x".repeat(300), "has spaces in it".to_string(), "a\"b{}".to_string()] {
        let (_, headers, body) = call(http().get(hub.at("/v1/rooms")).header("x-request-id", &id)).await;
        assert_request_id(&headers, &body);
        assert_ne!(body["meta"]["requestId"], json!(id));
    }
}

#[tokio::test]
async fn classic_participants_are_visible_and_removable_through_v1() {
    let hub = TestHub::start().await;
    let code = create(&hub, json!({"name": "Room"})).await["room"]["code"].as_str().unwrap().to_string();
    let mut sse = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    next_v1(&mut sse, &code, "connected").await;

    let (status, _, joined) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(
        &json!({"id": "classic-1", "nickname": "Alice", "model": "llama3", "endpoint": "http://192.168.1.50:11434"}),
    ))
    .await;
    assert_eq!(status, 200, "{joined}");
    let event = next_v1(&mut sse, &code, "participant.joined").await;
    assert_eq!(event["data"]["id"], "classic-1");

    let (status, headers, resp) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    let list = data(status, &headers, &resp, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], "classic-1");
    assert_eq!(list[0]["endpoint"], "http://192.168.1.50:11434");
    assert_eq!(list[0]["connection"]["kind"], "direct");
    let (status, headers, resp) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(data(status, &headers, &resp, 200)["participantCount"], 1);

    // Heartbeat through /v1 for a classic participant works too.
    let (status, headers, resp) =
        call(http().post(hub.at(&format!("/v1/rooms/{code}/participants/classic-1/heartbeat")))).await;
    assert_eq!(data(status, &headers, &resp, 200)["success"], true);

    let token = joined["participantToken"].as_str().unwrap();
    let (status, headers, resp) =
        call(http().delete(hub.at(&format!("/v1/rooms/{code}/participants/classic-1"))).bearer_auth(token)).await;
    assert_eq!(data(status, &headers, &resp, 200), json!({"success": true}));
    assert_eq!(next_v1(&mut sse, &code, "participant.left").await["data"]["participantId"], "classic-1");
    let (_, _, body) = call(http().get(hub.at(&format!("/rooms/{code}/participants")))).await;
    assert_eq!(body, json!({"participants": []}));
}

#[tokio::test]
async fn v1_participants_are_visible_and_removable_through_classic() {
    let hub = TestHub::start().await;
    let code = create(&hub, json!({"name": "Room"})).await["room"]["code"].as_str().unwrap().to_string();
    let mut classic = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;
    assert_eq!(classic.next().await.event, "connected");

    let (status, _, resp) = put(&hub, &code, "tunnel-1", &worker("Bob")).await;
    assert_eq!(status, 201, "{resp}");
    let event = classic.next().await;
    assert_eq!(event.event, "participant:joined");
    assert_eq!(event.json(), resp["data"]["participant"], "the classic stream carries the bare participant");

    let (status, _, body) = call(http().get(hub.at(&format!("/rooms/{code}/participants")))).await;
    assert_eq!(status, 200);
    let list = body["participants"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], "tunnel-1");
    assert_eq!(list[0]["nickname"], "Bob");
    assert_eq!(list[0]["connection"]["kind"], "tunnel");
    let (_, _, rooms) = call(http().get(hub.at("/rooms"))).await;
    assert_eq!(rooms["rooms"][0]["participantCount"], 1);

    // The classic health check works for a /v1 participant.
    let (status, _, body) =
        call(http().post(hub.at(&format!("/rooms/{code}/health"))).json(&json!({"id": "tunnel-1"}))).await;
    assert_eq!((status, &body["success"], &body["status"]), (200, &json!(true), &json!("online")), "{body}");

    let token = resp["data"]["participantToken"].as_str().unwrap();
    let (status, _, body) =
        call(http().delete(hub.at(&format!("/rooms/{code}/leave/tunnel-1"))).bearer_auth(token)).await;
    assert_eq!((status, body), (200, json!({"success": true})));
    let event = classic.next().await;
    assert_eq!(event.event, "participant:left");
    assert_eq!(event.json(), json!({"participantId": "tunnel-1"}));
    let (status, headers, resp) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(data(status, &headers, &resp, 200), json!([]));
}

#[tokio::test]
async fn auth_headers_are_refused_and_unknown_fields_ignored() {
    let hub = TestHub::start().await;
    let code = create(&hub, json!({"name": "Room"})).await["room"]["code"].as_str().unwrap().to_string();

    let mut body = worker("Alice");
    body["authHeaders"] = json!({"Authorization": "Bearer sk-provider-secret"});
    let (status, headers, resp) = put(&hub, &code, "w1", &body).await;
    assert_error(status, &headers, &resp, 400, "INVALID_REQUEST");
    assert!(!resp.to_string().contains("sk-provider-secret"), "{resp}");
    let (status, _, resp) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 400, "the classic join refuses them too: {resp}");
    assert!(resp["error"].is_string(), "{resp}");
    let (status, headers, resp) = call(http().get(hub.at(&format!("/v1/rooms/{code}/participants")))).await;
    assert_eq!(data(status, &headers, &resp, 200), json!([]), "a refused registration registers nobody");

    // Unknown fields, at the top and nested, are ignored on both surfaces.
    let created =
        create(&hub, json!({"name": "Extra", "colour": "blue", "future": {"nested": [1, 2, 3]}, "hostToken": "mine"}))
            .await;
    assert_eq!(created["room"]["name"], "Extra");
    assert_ne!(created["hostToken"], "mine");
    let mut body = worker("Alice");
    body["someFutureField"] = json!({"x": 1});
    body["specs"] = json!({"gpu": "RTX", "vram": 8, "npu": "yes"});
    body["config"] = json!({"temperature": 0.5, "mirostat": 2});
    body["id"] = json!("ignored-on-v1");
    let (status, headers, resp) = put(&hub, &code, "w2", &body).await;
    let d = data(status, &headers, &resp, 201);
    assert_eq!(d["participant"]["id"], "w2", "the path names the participant");
    assert!(d["participant"]["specs"].get("npu").is_none());
    let (status, _, resp) = call(
        http()
            .post(hub.at(&format!("/rooms/{code}/join")))
            .json(&json!({"nickname": "C", "model": "m", "endpoint": "http://localhost:1", "wat": true})),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn the_host_deletes_a_room_with_its_token() {
    let hub = TestHub::start().await;
    let created = create(&hub, json!({"name": "Room"})).await;
    let code = created["room"]["code"].as_str().unwrap().to_string();
    let token = created["hostToken"].as_str().unwrap().to_string();
    for id in ["w1", "w2"] {
        assert_eq!(put(&hub, &code, id, &worker(id)).await.0, 201);
    }
    let mut v1 = Sse::connect(&hub.at(&format!("/v1/rooms/{code}/events")), None).await;
    next_v1(&mut v1, &code, "connected").await;
    let mut classic = Sse::connect(&hub.at(&format!("/rooms/{code}/events")), None).await;
    assert_eq!(classic.next().await.event, "connected");
    let room = hub.at(&format!("/v1/rooms/{code}"));

    let (status, headers, body) = call(http().delete(&room)).await;
    assert_eq!(status, 401, "no token: {body}");
    assert_error(status, &headers, &body, 401, body["error"]["code"].as_str().unwrap());
    let (status, headers, body) = call(http().delete(&room).bearer_auth("gh_not-the-token")).await;
    assert_eq!(status, 403, "wrong token: {body}");
    assert_error(status, &headers, &body, 403, body["error"]["code"].as_str().unwrap());
    let (status, headers, body) = call(http().delete(&room).header("authorization", "Basic Zm9vOmJhcg==")).await;
    assert!(status == 401 || status == 403, "not a bearer token: {status} {body}");
    assert_request_id(&headers, &body);
    // The room survived every refusal, participants and all.
    let (status, headers, body) = call(http().get(&room)).await;
    assert_eq!(data(status, &headers, &body, 200)["participantCount"], 2);
    assert!(v1.next_within(Duration::from_millis(200)).await.is_none(), "refusals publish nothing");

    let (status, headers, body) = call(http().delete(&room).bearer_auth(&token)).await;
    assert_eq!(data(status, &headers, &body, 200), json!({"success": true}));
    let (status, headers, body) = call(http().get(&room)).await;
    assert_error(status, &headers, &body, 404, "ROOM_NOT_FOUND");
    let (status, _, body) = call(http().get(hub.at(&format!("/rooms/{code}/participants")))).await;
    assert_eq!((status, body), (404, json!({"error": "Room not found"})));
    let (status, headers, body) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(data(status, &headers, &body, 200), json!([]));

    let mut left = Vec::new();
    for _ in 0..2 {
        left.push(
            next_v1(&mut v1, &code, "participant.left").await["data"]["participantId"].as_str().unwrap().to_string(),
        );
    }
    left.sort();
    assert_eq!(left, ["w1", "w2"]);
    assert!(v1.ended_within(Duration::from_secs(5)).await, "the /v1 stream ends with the room");
    let mut left = Vec::new();
    for _ in 0..2 {
        let event = classic.next().await;
        assert_eq!(event.event, "participant:left");
        left.push(event.json()["participantId"].as_str().unwrap().to_string());
    }
    left.sort();
    assert_eq!(left, ["w1", "w2"]);
    assert!(classic.ended_within(Duration::from_secs(5)).await, "the classic stream ends with the room");

    // The same token cannot delete it twice.
    let (status, headers, body) = call(http().delete(&room).bearer_auth(&token)).await;
    assert_error(status, &headers, &body, 404, "ROOM_NOT_FOUND");
}
