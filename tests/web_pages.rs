//! Web pages against the hub, in headless Chromium: an attacker's page on another origin (another
//! port on 127.0.0.1 is another origin), the same page on a name that rebinds to the hub's address
//! (`--host-resolver-rules`, with a proxy script that fetches only the page itself from the
//! attacker, as DNS would before rebinding), the same page once its origin is given with `--cors`,
//! and a protected room in the dashboard, which asks for the password once.

use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use crate::ui::{create_room, register, Browser};
use crate::util::{call, http, BinHub};

/// What the attacker's page tries against the hub at `hub` (empty: its own origin) and room
/// `code`, with the room's host token stolen somewhere else; each outcome lands in
/// `window.results`, and `window.results.done` once everything has settled.
const ATTACK: &str = r#"<!doctype html><meta charset="utf-8"><title>cute cats</title>
<iframe name="sink" style="display:none"></iframe>
<script>
const q = new URLSearchParams(location.search);
const hub = q.get("hub") || "";
const code = q.get("code");
const token = q.get("token");
const results = (window.results = {});
const text = async (r) => `${r.status} ${await r.text()}`;
const attempt = async (name, f) => {
  try { results[name] = await f(); } catch (e) { results[name] = `blocked: ${e}`; }
};
(async () => {
  await attempt("json", async () => text(await fetch(`${hub}/v1/rooms`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "Evil JSON" }) })));
  await attempt("plain", async () => {
    const r = await fetch(`${hub}/v1/rooms`, { method: "POST", mode: "no-cors",
      headers: { "Content-Type": "text/plain" }, body: JSON.stringify({ name: "Evil plain" }) });
    return r.type === "opaque" ? "sent, unreadable" : text(r);
  });
  await attempt("join", async () => {
    const r = await fetch(`${hub}/rooms/${code}/join`, { method: "POST", mode: "no-cors",
      headers: { "Content-Type": "text/plain" },
      body: JSON.stringify({ id: "evil", nickname: "evil", model: "m", endpoint: "http://10.0.0.9:1" }) });
    return r.type === "opaque" ? "sent, unreadable" : text(r);
  });
  await attempt("read", async () => text(await fetch(`${hub}/v1/rooms/${code}/participants`)));
  const form = document.createElement("form");
  form.method = "POST"; form.action = `${hub}/rooms`; form.enctype = "text/plain"; form.target = "sink";
  const field = document.createElement("input");
  field.name = '{"name": "Evil form", "x": "'; field.value = '"}';
  form.appendChild(field); document.body.appendChild(form); form.submit();
  results.form = "submitted";
  await new Promise((done) => {
    const es = new EventSource(`${hub}/v1/rooms/${code}/events`);
    es.addEventListener("connected", () => { results.events = "read"; es.close(); done(); });
    es.onerror = () => { results.events = results.events || "refused"; es.close(); done(); };
    setTimeout(() => { results.events = results.events || "silent"; es.close(); done(); }, 5000);
  });
  await new Promise((done) => {
    const base = (hub || location.origin).replace(/^http/, "ws");
    const ws = new WebSocket(`${base}/v1/rooms/${code}/participants/evil/tunnel?token=stolen`);
    ws.onopen = () => { results.tunnel = "opened"; ws.close(); done(); };
    ws.onerror = () => { results.tunnel = results.tunnel || "refused"; done(); };
    setTimeout(() => { results.tunnel = results.tunnel || "silent"; done(); }, 5000);
  });
  await attempt("delete", async () => text(await fetch(`${hub}/v1/rooms/${code}`, {
    method: "DELETE", headers: { Authorization: `Bearer ${token}` } })));
  setTimeout(() => { results.done = true; }, 500);
})();
</script>"#;

/// The attacker's web server: `/attack.html` (also when asked as a proxy, with an absolute URL).
async fn attacker() -> (u16, tokio::task::JoinHandle<()>) {
    let page = || async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], ATTACK).into_response() };
    let app = Router::new().route("/attack.html", get(page));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// The rooms of the hub, by name, and how many participants room `code` has.
async fn hub_state(hub: &BinHub, code: &str) -> (Vec<String>, Value) {
    let (_, _, rooms) = call(http().get(hub.at("/v1/rooms"))).await;
    let names = rooms["data"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    let count =
        rooms["data"].as_array().unwrap().iter().find(|r| r["code"] == code).map(|r| r["participantCount"].clone());
    (names, count.unwrap_or(Value::Null))
}

async fn run_attack(browser: &Browser, url: &str) -> Value {
    browser.goto(url).await;
    browser.until("the attack to settle", "return window.results && window.results.done === true", vec![]).await;
    browser.js("return window.results", vec![]).await
}

/// Nothing the page tried got through: no room created or deleted, nobody joined, nothing read.
async fn assert_untouched(hub: &BinHub, code: &str, results: &Value, what: &str) {
    // The form post and the no-cors requests have no answer the page can read; give the hub a
    // moment to have done whatever it would do with them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (names, count) = hub_state(hub, code).await;
    assert_eq!(names, ["Mine"], "{what}: the page changed the hub's rooms; the page saw {results}");
    assert_eq!(count, 0, "{what}: someone joined; the page saw {results}");
    for key in ["json", "read", "delete"] {
        let r = results[key].as_str().unwrap_or_default();
        assert!(r.starts_with("blocked") || r.starts_with("403"), "{what}: {key} got through: {r}");
        assert!(!r.contains("hostId") && !r.contains("\"data\""), "{what}: {key} read the hub: {r}");
    }
    assert_ne!(results["events"], "read", "{what}: the page read the room's events: {results}");
    assert_ne!(results["tunnel"], "opened", "{what}: the page opened a tunnel: {results}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_on_another_origin_or_a_rebinding_name_drives_nothing() {
    let hub = BinHub::start(&[]);
    let (status, _, created) = call(http().post(hub.at("/v1/rooms")).json(&json!({"name": "Mine"}))).await;
    assert_eq!(status, 201);
    let code = created["data"]["room"]["code"].as_str().unwrap().to_string();
    let token = created["data"]["hostToken"].as_str().unwrap().to_string();
    let (page_port, _server) = attacker().await;
    let query = |hub_url: &str| format!("hub={hub_url}&code={code}&token={token}");

    // Another origin.
    let browser = Browser::start().await;
    let results = run_attack(&browser, &format!("http://127.0.0.1:{page_port}/attack.html?{}", query(&hub.url))).await;
    assert_untouched(&hub, &code, &results, "another origin").await;
    browser.close().await;

    // A rebinding name: the page comes from the attacker, then everything else on that origin
    // goes to the hub's address, as after a DNS rebind; only the Host header tells.
    let hub_port = port_of(&hub.url);
    let pac = format!(
        "function FindProxyForURL(url, host) {{ return url.indexOf('/attack.html') >= 0 ? 'PROXY 127.0.0.1:{page_port}' : 'DIRECT'; }}"
    );
    let pac = base64::engine::general_purpose::STANDARD.encode(pac);
    let browser = Browser::start_with(&[
        "--host-resolver-rules=MAP rebind.example 127.0.0.1".to_string(),
        format!("--proxy-pac-url=data:application/x-ns-proxy-autoconfig;base64,{pac}"),
    ])
    .await;
    let results = run_attack(&browser, &format!("http://rebind.example:{hub_port}/attack.html?{}", query(""))).await;
    assert!(
        results["json"].as_str().unwrap_or_default().contains("HOST_NOT_ALLOWED"),
        "the page was not on the hub's address, or the hub answered it: {results}"
    );
    assert_untouched(&hub, &code, &results, "a rebinding name").await;
    browser.close().await;

    // The same page, once its origin is allowed: the operator's choice, and then it works.
    let allowed = format!("http://127.0.0.1:{page_port}");
    let open = BinHub::start(&["--cors", &allowed]);
    let (_, _, created) = call(http().post(open.at("/v1/rooms")).json(&json!({"name": "Mine"}))).await;
    let code = created["data"]["room"]["code"].as_str().unwrap().to_string();
    let token = created["data"]["hostToken"].as_str().unwrap().to_string();
    register(&open.url, &code, "w1", json!({"nickname": "w1", "model": "m", "endpoint": "http://127.0.0.1:9"})).await;
    let browser = Browser::start().await;
    let url = format!("http://127.0.0.1:{page_port}/attack.html?hub={}&code={code}&token={token}", open.url);
    let results = run_attack(&browser, &url).await;
    assert!(results["json"].as_str().unwrap_or_default().starts_with("201"), "{results}");
    assert!(results["read"].as_str().unwrap_or_default().contains("\"w1\""), "{results}");
    assert_eq!(results["events"], "read", "{results}");
    assert!(results["delete"].as_str().unwrap_or_default().starts_with("200"), "{results}");
    let (names, _) = hub_state(&open, &code).await;
    assert!(names.contains(&"Evil JSON".to_string()) && !names.contains(&"Mine".to_string()), "{names:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_asks_once_for_a_protected_room_s_password() {
    let hub = BinHub::start(&[]);
    let code = create_room(&hub.url, "Locked room", Some("s3cret-pw")).await;
    let body =
        json!({"nickname": "Alice", "model": "llama3", "endpoint": "http://127.0.0.1:9", "password": "s3cret-pw"});
    register(&hub.url, &code, "alice", body).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/room/{code}", hub.url)).await;
    // Nobody is shown before the password; the page asks for it.
    browser.element("#unlock-room").await;
    let shown = browser.js("return document.querySelector('#participants').textContent", vec![]).await;
    assert!(!shown.as_str().unwrap_or_default().contains("Alice"), "{shown}");
    // A wrong password is told, and asked again.
    browser.element("#room-password").await.send_keys("wrong").await;
    browser.element("#unlock-room button").await.click().await;
    browser
        .until(
            "the wrong password to be told",
            "const b = document.querySelector('.banner-slot'); return b && b.textContent.includes('Wrong password')",
            vec![],
        )
        .await;
    browser.element("#room-password").await.send_keys("s3cret-pw").await;
    browser.element("#unlock-room button").await.click().await;
    browser
        .until(
            "Alice to be shown",
            "return document.querySelector('#participants').textContent.includes('Alice')",
            vec![],
        )
        .await;
    browser
        .until("the stream to be live", "return document.querySelector('#live-state').dataset.state === 'live'", vec![])
        .await;

    // Kept for the tab: a reload does not ask again, and live events still arrive.
    browser.goto(&format!("{}/#/", hub.url)).await;
    browser.goto(&format!("{}/#/room/{code}", hub.url)).await;
    browser
        .until(
            "Alice after a reload",
            "return document.querySelector('#participants').textContent.includes('Alice')",
            vec![],
        )
        .await;
    assert_eq!(browser.js("return document.querySelector('#unlock-room') === null", vec![]).await, json!(true));
    let bob = json!({"nickname": "Bob", "model": "qwen", "endpoint": "http://127.0.0.1:9", "password": "s3cret-pw"});
    register(&hub.url, &code, "bob", bob).await;
    browser
        .until(
            "Bob to appear live",
            "return document.querySelector('#participants').textContent.includes('Bob')",
            vec![],
        )
        .await;
    browser.close().await;
}
