//! Protected rooms protect inference too (issue 6, acceptance 4): `/rooms/:code/v1/*` of a room with
//! a password needs `Authorization: Bearer <room password>`, what every OpenAI client sends as its
//! API key; without it, or with a wrong one, an OpenAI-shaped 401. Open rooms are unchanged.

use serde_json::{json, Value};

use crate::fake_provider::{echo, FakeOptions, FakeProvider};
use crate::inference::share_with;
use crate::util::{call, gambi_async, http, TestHub};

const PASSWORD: &str = "room-key-Pa55";

fn chat(text: &str) -> Value {
    json!({"model": "*", "messages": [{"role": "user", "content": text}]})
}

fn assert_openai_401(status: u16, v: &Value, what: &str) {
    assert_eq!(status, 401, "{what}: {v}");
    let error = &v["error"];
    assert_eq!(error["type"], "authentication_error", "{what}: {v}");
    assert_eq!(error["code"], "invalid_api_key", "{what}: {v}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("password")), "{what}: {v}");
    assert_eq!(error.as_object().unwrap().len(), 3, "exactly message, type and code: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_rooms_models_need_its_key_and_open_rooms_need_none() {
    let hub = TestHub::start().await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let (locked, _) = hub.room("Locked", Some(PASSWORD)).await;
    let (open, _) = hub.room("Open", None).await;
    let _a = share_with(&hub, &locked, "locked-1", &provider, "llama3", |o| o.password = Some(PASSWORD.into())).await;
    let _b = share_with(&hub, &open, "open-1", &provider, "llama3", |_| {}).await;
    let base = |code: &str| hub.at(&format!("/rooms/{code}/v1"));

    // Without the key, or with a wrong one: 401 on every call of the plane, before any provider call.
    provider.clear_requests();
    let calls = [
        ("chat, no key", http().post(format!("{}/chat/completions", base(&locked))).json(&chat("x"))),
        (
            "chat, wrong key",
            http().post(format!("{}/chat/completions", base(&locked))).bearer_auth("not-it").json(&chat("x")),
        ),
        (
            "chat, empty bearer",
            http().post(format!("{}/chat/completions", base(&locked))).header("authorization", "Bearer "),
        ),
        (
            "responses, no key",
            http().post(format!("{}/responses", base(&locked))).json(&json!({"model": "*", "input": "x"})),
        ),
        ("models, no key", http().get(format!("{}/models", base(&locked)))),
        ("models, basic auth", http().get(format!("{}/models", base(&locked))).basic_auth("u", Some(PASSWORD))),
        ("stored response, no key", http().get(format!("{}/responses/resp_1", base(&locked)))),
        ("lower-case code, no key", http().get(format!("{}/models", base(&locked.to_ascii_lowercase())))),
    ];
    for (what, req) in calls {
        let (status, _, v) = call(req).await;
        assert_openai_401(status, &v, what);
    }
    assert!(provider.requests_to("/v1/chat/completions").is_empty(), "refused calls never reach a participant");

    // With the key: served, as any OpenAI client would send it.
    let (status, _, v) =
        call(http().post(format!("{}/chat/completions", base(&locked))).bearer_auth(PASSWORD).json(&chat("hi"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], echo("hi"));
    let (status, _, v) = call(http().get(format!("{}/models", base(&locked))).bearer_auth(PASSWORD)).await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["llama3", "*", "locked-1"], "{v}");
    let (status, _, v) = call(
        http()
            .post(format!("{}/chat/completions", base(&locked)))
            .header("authorization", format!("bearer  {PASSWORD} "))
            .json(&chat("case")),
    )
    .await;
    assert_eq!(status, 200, "the scheme is case-insensitive and spaces are trimmed: {v}");

    // An open room: with no key, and with any key, exactly as before.
    for req in [
        http().post(format!("{}/chat/completions", base(&open))).json(&chat("open")),
        http().post(format!("{}/chat/completions", base(&open))).bearer_auth("sk-anything").json(&chat("open")),
    ] {
        let (status, _, v) = call(req).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], echo("open"));
    }
    // An unknown room is still a 404, key or not.
    let (status, _, v) = call(http().get(hub.at("/rooms/ZZZZZ9/v1/models"))).await;
    assert_eq!(status, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn room_get_shows_the_key_to_use_with_the_base_url() {
    let hub = TestHub::start().await;
    let (locked, _) = hub.room("Locked", Some(PASSWORD)).await;
    let (open, _) = hub.room("Open", None).await;

    let (exit, stdout, stderr) =
        gambi_async(&["room", "get", &locked, "--hub", &hub.url, "--format", "text"], &[]).await;
    assert_eq!(exit, 0, "{stderr}");
    assert!(stdout.contains(&format!("{}/rooms/{locked}/v1", hub.url)), "{stdout}");
    assert!(stdout.contains("API key") && stdout.contains("the room password"), "{stdout}");

    let args = ["room", "get", &locked, "--password", PASSWORD, "--hub", &hub.url, "--format", "text"];
    let (exit, stdout, stderr) = gambi_async(&args, &[]).await;
    assert_eq!(exit, 0, "{stderr}");
    let line = stdout.lines().find(|l| l.contains("API key")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(PASSWORD), "{line}");
    let args = ["room", "get", &locked, "--password", PASSWORD, "--hub", &hub.url, "--format", "json"];
    let (exit, stdout, _) = gambi_async(&args, &[]).await;
    assert_eq!(exit, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["apiKey"], PASSWORD);
    assert_eq!(v["code"], locked.as_str());

    let (exit, stdout, _) = gambi_async(&["room", "get", &open, "--hub", &hub.url, "--format", "text"], &[]).await;
    assert_eq!(exit, 0);
    assert!(stdout.contains("no password"), "{stdout}");
}
