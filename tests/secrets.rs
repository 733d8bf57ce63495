//! Acceptance 3: a protected room refuses a wrong or missing password on both surfaces, and neither
//! the password hash nor the password itself shows up in any response, event or log line.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{call, http, BinHub, Sse, SseEvent, TestHub};

#[tokio::test]
async fn protected_rooms_refuse_wrong_or_missing_passwords_on_both_surfaces() {
    // More guesses than the default limits allow in a burst: this test is about the refusals'
    // shapes; the limits have their own tests (brute_force).
    let hub = TestHub::with_config(gambi::hub::HubConfig {
        guesses_per_room: 100,
        guesses_per_address: 100,
        ..gambi::hub::HubConfig::default()
    })
    .await;
    let (code, host) = hub.room("Private Room", Some("secret123")).await;
    let worker = |password: Option<&str>| {
        let mut body = json!({"nickname": "Alice", "model": "llama3", "endpoint": "http://localhost:11434"});
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        body
    };
    let refused = [Some("wrong"), None, Some(""), Some("SECRET123"), Some("secret123 ")];

    // Classic: the seed's 401 and exact message.
    for password in refused {
        let (status, _, body) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&worker(password))).await;
        assert_eq!((status, body), (401, json!({"error": "Invalid password"})), "classic, password {password:?}");
    }
    // /v1: 401 INVALID_PASSWORD in the envelope, with a hint.
    for password in refused {
        let (status, headers, body) =
            call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).json(&worker(password))).await;
        assert_eq!(status, 401, "/v1, password {password:?}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_PASSWORD");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(body["error"]["hint"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(headers["x-request-id"].to_str().unwrap(), body["meta"]["requestId"].as_str().unwrap());
    }
    let (_, _, list) = call(http().get(hub.at(&format!("/rooms/{code}/participants"))).bearer_auth(&host)).await;
    assert_eq!(list, json!({"participants": []}), "refusals register nobody");

    // The right password gets in through both.
    let (status, _, body) =
        call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&worker(Some("secret123")))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) =
        call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).json(&worker(Some("secret123")))).await;
    assert_eq!(status, 201, "{body}");
    // And an update of a protected room's participant needs it again.
    let (status, _, body) =
        call(http().put(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).json(&worker(None))).await;
    assert_eq!(status, 401, "{body}");
    let (_, _, list) = call(http().get(hub.at(&format!("/rooms/{code}/participants"))).bearer_auth(&host)).await;
    assert_eq!(list["participants"].as_array().unwrap().len(), 2);

    // An open room lets anyone in, with or without a password field.
    let (open, _) = hub.room("Open Room", None).await;
    for password in [None, Some("anything")] {
        let (status, _, body) = call(http().post(hub.at(&format!("/rooms/{open}/join"))).json(&worker(password))).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Everything the hub said during a run: response bodies and SSE events.
#[derive(Default)]
struct Transcript {
    texts: Vec<String>,
    requests: usize,
}

impl Transcript {
    async fn call(&mut self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.unwrap();
        self.requests += 1;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        self.texts.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn event(&mut self, e: &SseEvent) {
        self.texts.push(format!("event: {}\nid: {:?}\ndata: {}", e.event, e.id, e.data));
    }
}

/// Reads events until one named `name` arrives (recording all of them); panics after a while.
async fn until(sse: &mut Sse, t: &mut Transcript, name: &str) -> SseEvent {
    loop {
        let e = sse.next().await;
        t.event(&e);
        if e.event == name {
            return e;
        }
    }
}

#[tokio::test]
async fn no_hash_and_no_password_in_any_response_event_or_log_line_of_the_real_binary() {
    const PASSWORD: &str = "hunter2-Pa55word-only-in-requests";
    let hub = BinHub::start(&[]);
    let mut t = Transcript::default();
    let participant = |password: &str| {
        json!({"nickname": "Alice", "model": "llama3", "endpoint": "http://127.0.0.1:9", "password": password,
               "specs": {"gpu": "RTX", "vram": 8}})
    };

    // Protected rooms through both surfaces.
    let (status, created) =
        t.call(http().post(hub.at("/rooms")).json(&json!({"name": "Classic", "password": PASSWORD}))).await;
    assert_eq!(status, 201, "{created}");
    let classic_code = created["room"]["code"].as_str().unwrap().to_string();
    let created_classic_host = created["hostToken"].as_str().unwrap().to_string();
    let (status, created) =
        t.call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Managed", "password": PASSWORD}))).await;
    assert_eq!(status, 201, "{created}");
    let code = created["data"]["room"]["code"].as_str().unwrap().to_string();
    let host_token = created["data"]["hostToken"].as_str().unwrap().to_string();
    assert_eq!(created["data"]["room"]["passwordProtected"], true);

    // Both streams of both rooms, opened before anything happens in them.
    let mut streams = Vec::new();
    // A protected room's streams need its password or host token: the host tokens, so no
    // password check is spent before the wrong guesses below.
    let classic_host = created_classic_host.clone();
    for (c, key) in [(&code, &host_token), (&classic_code, &classic_host)] {
        for path in [format!("/v1/rooms/{c}/events"), format!("/rooms/{c}/events")] {
            streams.push(Sse::connect_as(&hub.at(&path), None, Some(key)).await);
            t.requests += 1;
        }
    }

    // Wrong and missing passwords, both surfaces.
    for c in [&code, &classic_code] {
        for body in
            [participant("wrong-password"), json!({"nickname": "A", "model": "m", "endpoint": "http://127.0.0.1:9"})]
        {
            let (status, resp) = t.call(http().post(hub.at(&format!("/rooms/{c}/join"))).json(&body)).await;
            assert_eq!((status, resp), (401, json!({"error": "Invalid password"})));
            let (status, resp) =
                t.call(http().put(hub.at(&format!("/v1/rooms/{c}/participants/w9"))).json(&body)).await;
            assert_eq!(status, 401);
            assert_eq!(resp["error"]["code"], "INVALID_PASSWORD");
        }
    }

    // The right one: join, upsert (twice), heartbeats through both surfaces.
    let (status, joined) = t
        .call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&{
            let mut b = participant(PASSWORD);
            b["id"] = json!("classic-1");
            b
        }))
        .await;
    assert_eq!(status, 200, "{joined}");
    let mut participant_tokens = vec![joined["participantToken"].as_str().unwrap().to_string()];
    let mut w1_token: Option<String> = None;
    for expected in [201, 200] {
        let mut req = http().put(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).json(&participant(PASSWORD));
        if let Some(token) = &w1_token {
            req = req.bearer_auth(token);
        }
        let (status, resp) = t.call(req).await;
        assert_eq!(status, expected, "{resp}");
        if let Some(token) = resp["data"]["participantToken"].as_str() {
            participant_tokens.push(token.to_string());
            w1_token = Some(token.to_string());
        }
    }
    assert_eq!(participant_tokens.len(), 2, "a token at each first registration, none when re-registering with it");
    let w1_token = w1_token.unwrap();
    let (status, resp) =
        t.call(http().post(hub.at(&format!("/rooms/{code}/health"))).json(&json!({"id": "classic-1"}))).await;
    assert_eq!(status, 200, "{resp}");
    let (status, resp) = t.call(http().post(hub.at(&format!("/v1/rooms/{code}/participants/w1/heartbeat")))).await;
    assert_eq!(status, 200, "{resp}");

    // Every read of rooms and participants.
    for path in [
        "/rooms".to_string(),
        "/v1/rooms".to_string(),
        format!("/v1/rooms/{code}"),
        format!("/v1/rooms/{classic_code}"),
        format!("/rooms/{code}/participants"),
        format!("/v1/rooms/{code}/participants"),
        format!("/v1/rooms/{code}/participants/w1"),
        "/v1/health".to_string(),
    ] {
        // A protected room's participants are read with its password, which must not come back.
        let (status, resp) = t.call(http().get(hub.at(&path)).bearer_auth(PASSWORD)).await;
        assert_eq!(status, 200, "{path}: {resp}");
    }

    // Leave through both surfaces, then the host deletes the /v1 room (its streams end).
    let (status, _) = t
        .call(http().delete(hub.at(&format!("/rooms/{code}/leave/classic-1"))).bearer_auth(&participant_tokens[0]))
        .await;
    assert_eq!(status, 200);
    let (status, _) =
        t.call(http().delete(hub.at(&format!("/v1/rooms/{code}/participants/w1"))).bearer_auth(&w1_token)).await;
    assert_eq!(status, 200);
    let (status, resp) = t.call(http().delete(hub.at(&format!("/v1/rooms/{code}"))).bearer_auth(&host_token)).await;
    assert_eq!(status, 200, "{resp}");

    // Read what the streams of the deleted room said, to their end.
    for (i, sse) in streams.iter_mut().take(2).enumerate() {
        let left = if i == 0 { "participant.left" } else { "participant:left" };
        until(sse, &mut t, "connected").await;
        until(sse, &mut t, left).await;
        until(sse, &mut t, left).await;
        assert!(sse.ended_within(Duration::from_secs(5)).await, "the deleted room's stream ends");
    }
    for sse in streams.iter_mut().skip(2) {
        while let Some(e) = sse.next_within(Duration::from_millis(300)).await {
            t.event(&e);
        }
    }
    let events = t.texts.iter().filter(|s| s.starts_with("event: ")).count();
    assert!(events >= 10, "the streams said something ({events} events)");

    // Nothing the hub answered carries the hash, the password, or anything named after them.
    for text in &t.texts {
        assert!(!text.contains("$argon2"), "hash leaked: {text}");
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        assert!(!text.contains("wrong-password"), "a guessed password is echoed: {text}");
        assert!(!text.contains("passwordHash") && !text.contains("password_hash"), "{text}");
    }
    let all = t.texts.concat();
    assert_eq!(all.matches(&host_token).count(), 1, "the host token is returned once, at creation");
    for token in &participant_tokens {
        assert_eq!(all.matches(token.as_str()).count(), 1, "a participant token is returned once, at registration");
    }

    // The log: one line per request (the middleware's `gambi::http` line), and no secret.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = hub.log();
        let lines = log.lines().filter(|l| l.contains("gambi::http")).count();
        if lines >= t.requests || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!log.is_empty(), "the hub's log was captured");
    let request_lines: Vec<&str> = log.lines().filter(|l| l.contains("gambi::http")).collect();
    assert_eq!(request_lines.len(), t.requests, "one line per request:\n{}", request_lines.join("\n"));
    for path in [
        format!("/rooms/{code}/join"),
        format!("/v1/rooms/{code}/participants/w1"),
        format!("/v1/rooms/{code}/participants/w1/heartbeat"),
        format!("/rooms/{code}/events"),
        format!("/v1/rooms/{classic_code}/events"),
        "/v1/health".to_string(),
    ] {
        assert!(request_lines.iter().any(|l| l.contains(&path)), "no request line for {path}");
    }
    assert!(!log.contains("$argon2"), "hash in the log:\n{log}");
    assert!(!log.contains("argon2id"), "hash in the log:\n{log}");
    assert!(!log.contains(PASSWORD), "password in the log:\n{log}");
    assert!(!log.contains("wrong-password"), "a guessed password in the log:\n{log}");
    assert!(!log.contains(&host_token), "host token in the log:\n{log}");
    for token in &participant_tokens {
        assert!(!log.contains(token.as_str()), "participant token in the log:\n{log}");
    }
}

/// Issue 6, acceptance 7: every secret the hardened flows use (the room password as a join
/// password and as an inference key, wrong guesses, the host token, participant tokens, tunnel
/// tokens, the provider's credentials) against the real binary logging at `debug`: none of them in
/// any log line or event, and none in any answer beyond the one that hands it out.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_of_the_hardened_flows_in_any_log_line_event_or_answer() {
    use gambi::participant::{ParticipantSession, SessionOptions};

    use crate::fake_provider::{FakeOptions, FakeProvider};

    const PASSWORD: &str = "Room-Key-9f3a-only-in-requests";
    const PROVIDER_KEY: &str = "sk-provider-77c1-never-leaves";
    let hub = BinHub::start(&[]);
    let mut t = Transcript::default();
    let (status, created) =
        t.call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Vault", "password": PASSWORD}))).await;
    assert_eq!(status, 201, "{created}");
    let code = created["data"]["room"]["code"].as_str().unwrap().to_string();
    let host_token = created["data"]["hostToken"].as_str().unwrap().to_string();
    let mut streams = Vec::new();
    for path in [format!("/v1/rooms/{code}/events"), format!("/rooms/{code}/events")] {
        streams.push(Sse::connect_as(&hub.at(&path), None, Some(PASSWORD)).await);
        t.requests += 1;
    }

    // A tunnel participant whose provider needs credentials only it holds.
    let provider = FakeProvider::start(FakeOptions {
        required_headers: vec![("authorization".into(), format!("Bearer {PROVIDER_KEY}"))],
        ..FakeOptions::default()
    })
    .await;
    let mut options = SessionOptions::new(&hub.url, &code, "vaulted", &provider.url, "llama3");
    options.password = Some(PASSWORD.into());
    options.auto_specs = false;
    options.auth_headers.insert("Authorization".into(), format!("Bearer {PROVIDER_KEY}"));
    let session = ParticipantSession::start(options).await.unwrap();
    let session_token = session.participant_token().unwrap().to_string();

    // A classic participant: its token comes back once, in its join answer.
    let (status, joined) = t
        .call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&json!({
            "id": "direct-1", "nickname": "D", "model": "llama3", "endpoint": "http://127.0.0.1:9", "password": PASSWORD
        })))
        .await;
    assert_eq!(status, 200, "{joined}");
    let direct_token = joined["participantToken"].as_str().unwrap().to_string();

    // Inference with the room key, streamed and not; and with wrong keys.
    for stream in [false, true] {
        let body = json!({"model": "vaulted", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
        let (status, v) = t.call(http().post(&url).bearer_auth(PASSWORD).json(&body)).await;
        assert_eq!(status, 200, "{v}");
    }
    let mut guesses = Vec::new();
    for i in 0..12 {
        let guess = format!("guess-{i}-{PASSWORD}");
        let (status, _) = t.call(http().get(hub.at(&format!("/rooms/{code}/v1/models"))).bearer_auth(&guess)).await;
        assert!(status == 401 || status == 429, "{status}");
        guesses.push(guess);
    }
    // Refused removals with wrong tokens, then the real ones.
    let (status, _) = t
        .call(http().delete(hub.at(&format!("/v1/rooms/{code}/participants/vaulted"))).bearer_auth(&direct_token))
        .await;
    assert_eq!(status, 403);
    let (status, _) =
        t.call(http().delete(hub.at(&format!("/rooms/{code}/leave/direct-1"))).bearer_auth(&direct_token)).await;
    assert_eq!(status, 200);
    session.close().await;
    let (status, _) = t.call(http().delete(hub.at(&format!("/v1/rooms/{code}"))).bearer_auth(&host_token)).await;
    assert_eq!(status, 200);
    for sse in &mut streams {
        while let Some(e) = sse.next_within(Duration::from_millis(300)).await {
            t.event(&e);
        }
    }

    let all = t.texts.concat();
    let log = hub.log();
    assert!(log.contains("gambi::http"), "the log was captured");
    for (what, secret, answers_may_hold) in [
        ("the room password", PASSWORD.to_string(), 0),
        ("the provider's key", PROVIDER_KEY.to_string(), 0),
        ("the host token", host_token.clone(), 1),
        ("the session's participant token", session_token.clone(), 0),
        ("the direct participant's token", direct_token.clone(), 1),
    ] {
        assert_eq!(all.matches(secret.as_str()).count(), answers_may_hold, "{what} in the answers or events");
        assert!(!log.contains(secret.as_str()), "{what} in the log");
    }
    for guess in &guesses {
        assert!(!all.contains(guess.as_str()) && !log.contains(guess.as_str()), "a guessed key was echoed");
    }
    assert!(!log.contains("$argon2") && !all.contains("$argon2"), "a hash leaked");
    // No token of any kind (tunnel, participant, host) in the log, whoever it belonged to.
    for prefix in ["gt_", "gp_", "gh_"] {
        assert!(!log.contains(prefix), "a {prefix} token in the log:\n{log}");
    }
}
