//! The hub as an attacker on the LAN would use it: as a proxy into its own machine's loopback, as a
//! server of whatever a participant answers, and as a target of other web pages (Host and Origin).
//! Each test registers or calls exactly what the attack did and checks it no longer goes through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::util::{call, http, BinHub, TestHub};

/// A machine on the LAN, as the hub sees the source of a request.
const LAN_PEER: &str = "192.168.1.50:50123";

/// Sends `body` to `path` through the hub's router as if it came from `from`: the real router and
/// handlers, with the connection's source address set (the only thing loopback cannot give).
async fn from_peer(th: &TestHub, from: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let peer: SocketAddr = from.parse().unwrap();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, th.url.trim_start_matches("http://"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = th.hub.router().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A TCP service on this machine's loopback that counts the connections it gets (and answers
/// nothing useful): what the hub must never be made to call.
struct LoopbackService {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl LoopbackService {
    async fn start(bind: &str, answer: &'static [u8]) -> LoopbackService {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(answer).await;
                });
            }
        });
        LoopbackService { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A name that the system resolver maps to a loopback address without DNS (this machine's own
/// host name in /etc/hosts, or Debian's `ip6-localhost` for ::1): a stand-in for a name that
/// rebinds to the hub's own machine after registration.
async fn loopback_name() -> (String, std::net::IpAddr) {
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    for name in [own.as_str(), "ip6-localhost", "ip6-loopback"].into_iter().filter(|n| !n.is_empty()) {
        if let Ok(mut found) = tokio::net::lookup_host((name, 0)).await {
            if let Some(addr) = found.find(|a| a.ip().is_loopback()) {
                return (name.to_string(), addr.ip());
            }
        }
    }
    panic!("no name resolves to a loopback address here (expected this host name or ip6-localhost in /etc/hosts)");
}

fn join_body(id: &str, endpoint: &str) -> Value {
    json!({"id": id, "nickname": id, "model": id, "endpoint": endpoint})
}

async fn chat(th: &TestHub, code: &str, model: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "my private prompt"}]});
    call(http().post(th.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&body)).await
}

#[tokio::test]
async fn a_lan_peer_cannot_point_the_hub_at_its_own_machine() {
    let th = TestHub::start().await;
    let (code, _) = th.room("Egress", None).await;
    let service = LoopbackService::start(
        "127.0.0.1:0",
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    let port = service.addr.port();
    let join = format!("/rooms/{code}/join");

    // The endpoint of the report: credentials, a path and a query that swallowed the OpenAI path.
    let docker = format!("http://user:pw@127.0.0.1:{port}/containers/create?name=pwn&x=");
    let (status, body) = from_peer(&th, "127.0.0.1:40000", "POST", &join, join_body("pwn", &docker)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("user name or password"), "{body}");
    let query = format!("http://127.0.0.1:{port}/containers/create?name=pwn&x=");
    let (status, body) = from_peer(&th, "127.0.0.1:40000", "POST", &join, join_body("pwn", &query)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("query"), "{body}");
    let fragment = format!("http://127.0.0.1:{port}/#x");
    assert_eq!(from_peer(&th, "127.0.0.1:40000", "POST", &join, join_body("pwn", &fragment)).await.0, 400);

    // From the LAN: nothing on the hub machine itself, however it is written.
    for endpoint in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
        format!("http://2130706433:{port}"),
        format!("http://0.0.0.0:{port}"),
        "http://169.254.1.1:80".to_string(),
    ] {
        let (status, body) = from_peer(&th, LAN_PEER, "POST", &join, join_body("lan", &endpoint)).await;
        assert_eq!(status, 400, "{endpoint}: {body}");
        assert!(body["error"].as_str().unwrap().contains("hub machine itself"), "{endpoint}: {body}");
    }
    // Metadata addresses: never, not even from this machine.
    for from in [LAN_PEER, "127.0.0.1:40000"] {
        let (status, body) =
            from_peer(&th, from, "POST", &join, join_body("meta", "http://169.254.169.254/latest/meta-data")).await;
        assert_eq!(status, 400, "{from}: {body}");
        assert!(body["error"].as_str().unwrap().contains("metadata"), "{body}");
    }
    // LAN addresses stay allowed: that is what a direct participant is for.
    let (status, body) =
        from_peer(&th, LAN_PEER, "POST", &join, join_body("lan-ok", "http://192.168.1.77:11434")).await;
    assert_eq!(status, 200, "{body}");

    // A name the hub cannot judge at registration is judged on the address it connects to: one
    // that resolves to this machine connects nowhere.
    let (name, ip) = loopback_name().await;
    let six = LoopbackService::start(&SocketAddr::new(ip, 0).to_string(), b"HTTP/1.1 200 OK\r\n\r\n").await;
    let rebinding = format!("http://{name}:{}", six.addr.port());
    let (status, body) = from_peer(&th, LAN_PEER, "POST", &join, join_body("rebind", &rebinding)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, answer) = chat(&th, &code, "rebind").await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "The participant's model server failed (connect): the model server did not answer like an OpenAI-compatible server"
    );
    assert_eq!(six.connections(), 0, "the hub connected to its own loopback for a LAN registration");
    assert_eq!(service.connections(), 0, "the hub connected to its own loopback for a LAN registration");

    // The same loopback service registered from this machine is reachable (that is the local use).
    let local = format!("http://127.0.0.1:{port}");
    let (status, body) = from_peer(&th, "127.0.0.1:40000", "POST", &join, join_body("local", &local)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, answer) = chat(&th, &code, "local").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(service.connections(), 1);
}

#[tokio::test]
async fn paths_are_joined_as_paths_and_failures_do_not_fingerprint_the_target() {
    let th = TestHub::start().await;
    let (code, _) = th.room("Paths", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    // A path prefix is kept and the OpenAI path goes under it.
    let prefixed = format!("{}/prefix/", provider.at(""));
    let (status, _, _) =
        call(http().post(th.at(&format!("/rooms/{code}/join"))).json(&join_body("p", &prefixed))).await;
    assert_eq!(status, 200);
    let _ = chat(&th, &code, "p").await;
    let paths: Vec<String> = provider.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/prefix/v1/chat/completions"]);
    assert!(provider.requests().iter().all(|r| r.query.is_none() && r.header("authorization").is_none()));

    // A closed port, a port that speaks something else, and an HTTP server that is not an OpenAI
    // one all fail with the same words.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ssh = LoopbackService::start("127.0.0.1:0", b"SSH-2.0-OpenSSH_9.2\r\n").await;
    let html = LoopbackService::start(
        "127.0.0.1:0",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 21\r\n\r\n<h1>admin panel</h1>\n",
    )
    .await;
    let mut messages = Vec::new();
    for (id, port) in [("closed", closed), ("ssh", ssh.addr.port()), ("html", html.addr.port())] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let (status, _, _) =
            call(http().post(th.at(&format!("/rooms/{code}/join"))).json(&join_body(id, &endpoint))).await;
        assert_eq!(status, 200);
        let (status, headers, answer) = chat(&th, &code, id).await;
        assert_eq!(status, 502, "{id}: {answer}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"), "{id}");
        let message = answer["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("did not answer like an OpenAI-compatible server"), "{id}: {message}");
        assert!(!message.contains("admin panel") && !message.contains("SSH"), "{id}: {message}");
        messages.push(message);
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "the failures tell the targets apart: {messages:?}");
}

/// A participant's model server that answers with markup and script where JSON belongs.
async fn evil_provider() -> (String, tokio::task::JoinHandle<()>) {
    let page = || {
        (
            [(header::CONTENT_TYPE, "text/html")],
            "<script>fetch('/v1/rooms').then(r => r.text()).then(t => parent.postMessage(t, '*'))</script>",
        )
            .into_response()
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(move || async move { page() }))
        .route(
            "/v1/responses",
            post(|| async {
                axum::Json(json!({"id": "resp_evil", "object": "response", "status": "completed", "output": []}))
            }),
        )
        .route("/v1/responses/{id}", get(move || async move { page() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test]
async fn relayed_answers_are_json_or_events_and_cannot_run_script_on_the_hub() {
    let th = TestHub::start().await;
    let (code, _) = th.room("Relay", None).await;
    let (evil, _task) = evil_provider().await;
    let (status, _, _) = call(http().post(th.at(&format!("/rooms/{code}/join"))).json(&join_body("evil", &evil))).await;
    assert_eq!(status, 200);

    let (status, headers, answer) = chat(&th, &code, "evil").await;
    assert_eq!(status, 502, "{answer}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert!(!answer.to_string().contains("<script>"), "{answer}");

    // The report's path: a response made there, then read back as HTML from the hub's origin.
    let body = json!({"model": "evil", "input": "hi"});
    let (status, _, made) = call(http().post(th.at(&format!("/rooms/{code}/v1/responses"))).json(&body)).await;
    assert_eq!(status, 200, "{made}");
    let res = http().get(th.at(&format!("/rooms/{code}/v1/responses/resp_evil"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let h = res.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "default-src 'none'; sandbox");
    let text = res.text().await.unwrap();
    assert!(!text.contains("<script>"), "{text}");

    // Every API answer carries the same two headers; the dashboard keeps its own policy and may
    // not be framed.
    for path in ["/v1/health", "/rooms", &format!("/rooms/{code}/v1/models"), "/v1/no-such-thing"] {
        let res = http().get(th.at(path)).send().await.unwrap();
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(res.headers()["content-security-policy"], "default-src 'none'; sandbox", "{path}");
    }
    let res = http().get(th.at("/")).send().await.unwrap();
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert!(res.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn the_models_list_never_shows_where_a_participant_s_server_lives() {
    let th = TestHub::start().await;
    let (code, _) = th.room("Models", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let endpoint = provider.at("");
    let (status, _, _) =
        call(http().post(th.at(&format!("/rooms/{code}/join"))).json(&join_body("llama3", &endpoint))).await;
    assert_eq!(status, 200);
    let (status, _, models) = call(http().get(th.at(&format!("/rooms/{code}/v1/models")))).await;
    assert_eq!(status, 200);
    // The participant's own entry (the model it serves has one too, with the same id).
    let entry =
        models["data"].as_array().unwrap().iter().find(|m| m["id"] == "llama3" && m["gambi"]["nickname"].is_string());
    let entry = entry.unwrap_or_else(|| panic!("no participant entry in {models}"));
    assert_eq!(entry["gambi"]["nickname"], "llama3");
    assert!(entry["gambi"].get("endpoint").is_none(), "{entry}");
    assert!(!models.to_string().contains(&endpoint), "{models}");
}

#[tokio::test]
async fn a_web_page_on_another_origin_or_host_cannot_drive_the_hub() {
    let hub = BinHub::start(&["--allowed-host", "hub.example.org", "--cors", "http://app.example:8080"]);
    let (status, _, created) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Mine"}))).await;
    assert_eq!(status, 201);
    let code = created["data"]["room"]["code"].as_str().unwrap().to_string();
    let host = created["data"]["hostToken"].as_str().unwrap().to_string();

    // DNS rebinding: a request for a name the hub does not answer to.
    let (status, _, body) = call(http().get(hub.at("/v1/rooms")).header(header::HOST, "evil.example")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "HOST_NOT_ALLOWED");
    assert!(body["error"]["hint"].as_str().unwrap().contains("--allowed-host evil.example"), "{body}");
    let (status, _, body) = call(http().get(hub.at("/")).header(header::HOST, "evil.example:3000")).await;
    assert_eq!(status, 403, "the dashboard too: {body}");
    let (status, _, _) = call(http().get(hub.at("/v1/rooms")).header(header::HOST, "hub.example.org:3000")).await;
    assert_eq!(status, 200, "a name given with --allowed-host");
    let (status, _, _) = call(http().get(hub.at("/v1/rooms")).header(header::HOST, "192.168.1.2:3000")).await;
    assert_eq!(status, 403, "a hub on loopback answers no LAN address");

    // Cross-site: every state-changing call from another origin is refused and changes nothing.
    let evil = "http://evil.example";
    let refused = [
        http().post(hub.at("/v1/rooms")).json(&json!({"name": "Evil"})),
        http().post(hub.at("/rooms")).json(&json!({"name": "Evil"})),
        http().delete(hub.at(&format!("/v1/rooms/{code}"))).bearer_auth(&host),
        http()
            .put(hub.at(&format!("/v1/rooms/{code}/participants/evil")))
            .json(&json!({"nickname": "e", "model": "m", "endpoint": "http://10.0.0.9:1"})),
        http()
            .post(hub.at(&format!("/rooms/{code}/join")))
            .json(&json!({"nickname": "e", "model": "m", "endpoint": "http://10.0.0.9:1"})),
        http()
            .post(hub.at(&format!("/rooms/{code}/v1/chat/completions")))
            .json(&json!({"model": "*", "messages": [{"role": "user", "content": "hi"}]})),
        http().get(hub.at(&format!("/v1/rooms/{code}/events"))),
    ];
    for req in refused {
        let (status, headers, body) = call(req.header(header::ORIGIN, evil)).await;
        assert_eq!(status, 403, "{body}");
        assert!(!headers.contains_key("access-control-allow-origin"), "{body}");
        assert!(body.to_string().contains("--cors http://evil.example"), "{body}");
    }
    let (_, _, rooms) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(rooms["data"].as_array().unwrap().len(), 1, "{rooms}");
    assert_eq!(rooms["data"][0]["participantCount"], 0, "{rooms}");

    // The hub's own pages and the origins of --cors may; a CORS grant names the origin, never `*`.
    let own = hub.url.clone();
    let (status, headers, _) =
        call(http().post(hub.at("/v1/rooms")).header(header::ORIGIN, own).json(&json!({"name": "Own"}))).await;
    assert_eq!(status, 201);
    assert!(!headers.contains_key("access-control-allow-origin"));
    let (status, headers, _) = call(
        http()
            .post(hub.at("/v1/rooms"))
            .header(header::ORIGIN, "http://app.example:8080")
            .json(&json!({"name": "App"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(headers["access-control-allow-origin"], "http://app.example:8080");
    // A preflight from another origin gets no grant.
    let res = http()
        .request(reqwest::Method::OPTIONS, hub.at("/v1/rooms"))
        .header(header::ORIGIN, evil)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));

    // A room with a password: its key guards the inference plane, so a browser client anywhere works.
    let (status, _, locked) =
        call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Locked", "password": "room-key-1"}))).await;
    assert_eq!(status, 201);
    let locked = locked["data"]["room"]["code"].as_str().unwrap().to_string();
    let res = http()
        .request(reqwest::Method::OPTIONS, hub.at(&format!("/rooms/{locked}/v1/models")))
        .header(header::ORIGIN, evil)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], evil);
    let (status, headers, body) = call(
        http()
            .get(hub.at(&format!("/rooms/{locked}/v1/models")))
            .header(header::ORIGIN, evil)
            .bearer_auth("room-key-1"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["access-control-allow-origin"], evil);
    let (status, _, _) =
        call(http().get(hub.at(&format!("/rooms/{locked}/v1/models"))).header(header::ORIGIN, evil)).await;
    assert_eq!(status, 401, "the key is still needed");

    // A JSON body must say it is JSON: a text/plain "simple request" skips the preflight.
    let (status, _, body) =
        call(http().post(hub.at("/v1/rooms")).header(header::CONTENT_TYPE, "text/plain").body(r#"{"name": "Plain"}"#))
            .await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_protected_room_shows_who_is_in_it_only_to_those_with_its_password() {
    let th = TestHub::start().await;
    let (code, host) = th.room("Locked", Some("room-pw-7")).await;
    let joined = th.participant(&code, "w1", Some("room-pw-7")).await;
    let own = joined["data"]["participantToken"].as_str().unwrap().to_string();
    let reads = [
        format!("/rooms/{code}/participants"),
        format!("/v1/rooms/{code}/participants"),
        format!("/v1/rooms/{code}/participants/w1"),
        format!("/rooms/{code}/events"),
        format!("/v1/rooms/{code}/events"),
    ];
    for path in &reads {
        let res = http().get(th.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path} without the password");
        let body: Value = res.json().await.unwrap();
        assert!(body.to_string().contains("password"), "{path}: {body}");
        assert!(!body.to_string().contains("w1"), "{path} told who is in the room: {body}");
        if path.starts_with("/v1/") {
            assert_eq!(body["error"]["code"], "ROOM_PASSWORD_REQUIRED", "{path}");
        }
        // A wrong password is a guess like any other (and guesses are rate-limited): two of them.
        if path.ends_with("/participants") {
            let res = http().get(th.at(path)).bearer_auth("wrong").send().await.unwrap();
            assert_eq!(res.status(), 401, "{path} with a wrong password");
        }
        for key in ["room-pw-7", host.as_str()] {
            let res = http().get(th.at(path)).bearer_auth(key).timeout(Duration::from_secs(5)).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path} with the password or the host token");
        }
    }
    // A participant reads its own record with its own token.
    let res = http().get(th.at(&format!("/v1/rooms/{code}/participants/w1"))).bearer_auth(&own).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // The room list still says the room exists, its name, and that it is protected.
    let (_, _, rooms) = call(http().get(th.at("/v1/rooms"))).await;
    let entry = rooms["data"].as_array().unwrap().iter().find(|r| r["code"] == code.as_str()).unwrap().clone();
    assert_eq!((entry["name"].clone(), entry["passwordProtected"].clone()), (json!("Locked"), json!(true)));
    let (status, _, summary) = call(http().get(th.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(status, 200);
    assert!(!summary.to_string().contains("w1"), "{summary}");

    // --compat keeps the seed's open reads.
    let compat = TestHub::with_config(gambi::hub::HubConfig { compat: true, ..Default::default() }).await;
    let (code, _) = compat.room("Open reads", Some("room-pw-8")).await;
    for path in [format!("/rooms/{code}/participants"), format!("/v1/rooms/{code}/participants")] {
        let res = http().get(compat.at(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path} on a --compat hub");
    }
}
