//! The web dashboard in a real browser: Debian's headless Chromium, driven through chromedriver over the
//! W3C WebDriver protocol, against a real hub (the `gambi hub serve` binary, or a hub in this process when a
//! test needs short health timings). Nothing is mocked: rooms and participants are made through the
//! hub's API, completions go through the room's OpenAI endpoint to the fake provider, and the page
//! must follow along by itself over SSE.
//!
//! Chromium and chromedriver are required, not optional: if they are missing the tests fail and
//! say to install the Debian packages `chromium chromium-driver`. `CHROME` and `CHROMEDRIVER`
//! override where they are. Screenshots of Home, of a Room and of the invite page land in
//! `<target>/ui-screenshots/` for people (and the README) to look at.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use gambi::hub::HubConfig;
use serde_json::{json, Value};

use crate::fake_provider::{FakeOptions, FakeProvider};
use crate::util::{call, http, BinHub, TestHub};

/// How long the browser may take to show something on a slow 2-core machine.
const BROWSER_PATIENCE: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "install the Debian packages `chromium chromium-driver` \
     (sudo apt-get install -y chromium chromium-driver), or point CHROME / CHROMEDRIVER at them";

/// One browser at a time: each test starts its own chromedriver and Chromium, and several at once
/// would only fight over two cores.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn chrome_binary() -> PathBuf {
    let path = std::env::var_os("CHROME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(path.is_file(), "Chromium is not at {}: {INSTALL_HINT}", path.display());
    path
}

fn chromedriver_binary() -> PathBuf {
    let found = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).or_else(|| find_in_path("chromedriver"));
    match found {
        Some(path) if path.is_file() => path,
        Some(path) => panic!("chromedriver is not at {}: {INSTALL_HINT}", path.display()),
        None => panic!("chromedriver is not installed: {INSTALL_HINT}"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A chromedriver process on a free port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let binary = chromedriver_binary();
        let mut last_error = String::new();
        // The port is free when picked but could be taken before chromedriver binds it: retry.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}; {INSTALL_HINT}", binary.display()));
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("chromedriver exited with {status}");
                    break;
                }
                if let Ok(res) = http().get(format!("{url}/status")).send().await {
                    if let Ok(v) = res.json::<Value>().await {
                        if v["value"]["ready"] == true {
                            return Driver { child, url };
                        }
                    }
                }
                if Instant::now() > deadline {
                    last_error = "chromedriver did not answer /status within 20 s".into();
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("chromedriver did not start: {last_error}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A W3C WebDriver session in headless Chromium, with its driver and a throwaway profile.
///
/// The protocol is spoken directly over reqwest (a handful of JSON calls). fantoccini 0.22 was the
/// first choice, but with its `rustls-tls` feature it enables rustls' aws-lc-rs provider while
/// reqwest enables ring, and rustls then refuses to pick one and panics at session creation.
pub(crate) struct Browser {
    session: String,
    closed: bool,
    driver: Driver,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    pub(crate) async fn start() -> Browser {
        Self::start_with(&[]).await
    }

    /// A browser with more command-line switches (host resolver rules, a proxy script...).
    pub(crate) async fn start_with(extra: &[String]) -> Browser {
        let turn = ONE_BROWSER.lock().await;
        let chrome = chrome_binary();
        let driver = Driver::start().await;
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let args: Vec<String> = args.into_iter().chain(extra.iter().cloned()).collect();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chrome.to_string_lossy(), "args": args },
            // Alerts stay open for the test to find (the default would dismiss them silently).
            "unhandledPromptBehavior": "ignore",
        });
        let res = http()
            .post(format!("{}/session", driver.url))
            .json(&json!({ "capabilities": { "alwaysMatch": caps } }))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        let Some(session) = v["value"]["sessionId"].as_str() else {
            panic!("Chromium did not start through chromedriver ({}); {INSTALL_HINT}", v["value"]["message"]);
        };
        Browser { session: session.to_string(), closed: false, driver, _profile: profile, _turn: turn }
    }

    /// One WebDriver command: `Ok(value)`, or `Err((error, message))` as the driver reports it.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, (String, String)> {
        let url = format!("{}/session/{}{}", self.driver.url, self.session, path);
        let req = match method {
            "GET" => http().get(url),
            "DELETE" => http().delete(url),
            _ => http().post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let res = req.timeout(Duration::from_secs(60)).send().await.unwrap();
        let ok = res.status().is_success();
        let v: Value = res.json().await.unwrap();
        if ok {
            Ok(v["value"].clone())
        } else {
            let e = &v["value"];
            Err((
                e["error"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            ))
        }
    }

    async fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.command(method, path, body).await {
            Ok(v) => v,
            Err((error, message)) => panic!("WebDriver {method} {path}: {error}: {message}"),
        }
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn refresh(&self) {
        self.must("POST", "/refresh", None).await;
    }

    async fn set_window_size(&self, width: u32, height: u32) {
        self.must("POST", "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// The text of an open alert, if one is open.
    async fn alert_text(&self) -> Option<String> {
        match self.command("GET", "/alert/text", None).await {
            Ok(v) => Some(v.as_str().unwrap_or_default().to_string()),
            Err((error, _)) if error == "no such alert" => None,
            Err((error, message)) => panic!("WebDriver alert/text: {error}: {message}"),
        }
    }

    pub(crate) async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.must("POST", "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Waits until `script` (a function body returning a value) returns something truthy.
    pub(crate) async fn until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + BROWSER_PATIENCE;
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.js("return document.body ? document.body.innerText : ''", vec![]).await;
                panic!("timed out waiting for {what}; the page says:\n{}", text.as_str().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching `css`.
    pub(crate) async fn element(&self, css: &str) -> Element<'_> {
        self.until(&format!("`{css}`"), "return document.querySelector(arguments[0]) !== null", vec![json!(css)]).await;
        let v = self.must("POST", "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        Element { browser: self, id: v[ELEMENT].as_str().unwrap().to_string() }
    }

    /// The text of the first element matching `css` (as `textContent`, not as rendered).
    pub(crate) async fn text(&self, css: &str) -> String {
        self.element(css).await;
        let v = self.js("return document.querySelector(arguments[0]).textContent", vec![json!(css)]).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the first element matching `css` has exactly `expected` as its text.
    pub(crate) async fn until_text(&self, css: &str, expected: &str) {
        self.until(
            &format!("`{css}` to read {expected:?}"),
            "const e = document.querySelector(arguments[0]); return e !== null && e.textContent === arguments[1]",
            vec![json!(css), json!(expected)],
        )
        .await;
    }

    /// Saves a screenshot to `<target>/ui-screenshots/<name>` and checks it is a real picture.
    async fn screenshot(&self, name: &str) -> PathBuf {
        // Let fonts and the last frame settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = self.must("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &png).unwrap();
        check_png(&path);
        path
    }

    pub(crate) async fn close(mut self) {
        let _ = self.command("DELETE", "", None).await;
        self.closed = true;
    }
}

impl Drop for Browser {
    /// A test that panicked never reached `close`: end the session anyway, so Chromium quits
    /// before its driver is killed. Blocking and best-effort, with plain HTTP/1.1 on a socket,
    /// because no runtime can be relied on here.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if self.closed {
            return;
        }
        let Some(addr) = self.driver.url.strip_prefix("http://") else { return };
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    }
}

/// An element found on the page.
pub(crate) struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    pub(crate) async fn click(&self) {
        self.browser.must("POST", &format!("/element/{}/click", self.id), None).await;
    }

    pub(crate) async fn send_keys(&self, text: &str) {
        self.browser.must("POST", &format!("/element/{}/value", self.id), Some(json!({ "text": text }))).await;
    }
}

/// `<target>/ui-screenshots`, found from this test binary's own path (`<target>/<profile>/deps/`),
/// so `CARGO_TARGET_DIR` is respected.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).map(Path::to_path_buf);
    target.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")).join("ui-screenshots")
}

/// A PNG of at least 800×600 with more in it than a blank page: a blank 1280×1000 screenshot
/// compresses to a few kilobytes.
fn check_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let height = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    assert!(width >= 800 && height >= 600, "{}: {width}×{height} is too small", path.display());
    assert!(bytes.len() > 20_000, "{} is {} bytes: the page looks blank", path.display(), bytes.len());
}

pub(crate) async fn create_room(hub_url: &str, name: &str, password: Option<&str>) -> String {
    let mut body = json!({ "name": name });
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let (status, _, v) = call(http().post(format!("{hub_url}/v1/rooms")).json(&body)).await;
    assert_eq!(status, 201, "{v}");
    v["data"]["room"]["code"].as_str().unwrap().to_string()
}

pub(crate) async fn register(hub_url: &str, code: &str, id: &str, body: Value) {
    let (status, _, v) = call(http().put(format!("{hub_url}/v1/rooms/{code}/participants/{id}")).json(&body)).await;
    assert!(status == 200 || status == 201, "{status} {v}");
}

fn specs() -> Value {
    json!({ "gpu": "NVIDIA GeForce RTX 4090", "vram": 24, "ram": 64, "cpu": "AMD Ryzen 9 7950X", "cpuCores": 16 })
}

/// Waits until the room page's event stream is connected, so later changes arrive over SSE.
async fn until_live(browser: &Browser) {
    browser
        .until(
            "the live event stream",
            "return document.querySelector('#live-state[data-state=\"live\"]') !== null",
            vec![],
        )
        .await;
}

/// Sets a marker on the page's window: if the page reloads, the marker is gone.
async fn mark_page(browser: &Browser) {
    browser.js("window.__gambiSamePage = true", vec![]).await;
}

async fn assert_same_page(browser: &Browser) {
    let v = browser.js("return window.__gambiSamePage === true", vec![]).await;
    assert_eq!(v, json!(true), "the page reloaded; it should have updated live");
}

#[tokio::test]
async fn dashboard_lists_rooms() {
    let hub = BinHub::start(&[]);
    let browser = Browser::start().await;

    // The empty state first.
    browser.goto(&format!("{}/", hub.url)).await;
    let empty = browser.text("#rooms .empty-title").await;
    assert!(empty.contains("No rooms"), "{empty}");
    browser.until("the hub status", "return document.querySelector('#hub-pill').dataset.state === 'ok'", vec![]).await;
    browser.screenshot("home-empty.png").await;

    let open = create_room(&hub.url, "Friday hack night", None).await;
    let locked = create_room(&hub.url, "Research lab", Some("s3cret")).await;
    register(
        &hub.url,
        &open,
        "alice",
        json!({"nickname": "Alice", "model": "llama3", "endpoint": "http://127.0.0.1:9"}),
    )
    .await;

    browser.refresh().await;
    let open_card = format!(".room-card[data-code=\"{open}\"]");
    let locked_card = format!(".room-card[data-code=\"{locked}\"]");
    assert_eq!(browser.text(&format!("{open_card} .room-name")).await, "Friday hack night");
    assert_eq!(browser.text(&format!("{locked_card} .room-name")).await, "Research lab");
    assert_eq!(browser.text(&format!("{open_card} .code-badge")).await, open);
    assert_eq!(browser.text(&format!("{locked_card} .code-badge")).await, locked);
    assert!(browser.text(&format!("{open_card} .room-count")).await.contains("1 participant"));
    let locks = browser
        .js(
            "return [document.querySelector(arguments[0] + ' .lock') !== null, document.querySelector(arguments[1] + ' .lock') !== null]",
            vec![json!(locked_card), json!(open_card)],
        )
        .await;
    assert_eq!(locks, json!([true, false]), "only the protected room shows a lock");
    let status = browser.text("#hub-status").await;
    assert!(status.contains("2 rooms"), "{status}");
    browser.screenshot("home.png").await;

    // A room card opens its room.
    browser.element(&open_card).await.click().await;
    browser.until_text("h1", "Friday hack night").await;
    browser.close().await;
}

#[tokio::test]
async fn creating_a_room_through_the_form() {
    let hub = BinHub::start(&[]);
    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/create", hub.url)).await;

    // An empty name is refused in words, and nothing is created.
    browser.element("#create-submit").await.click().await;
    let error = browser.text("#create-form [role=alert]").await;
    assert!(error.contains("Give the room a name"), "{error}");

    browser.element("#room-name").await.send_keys("Design review").await;
    browser.element("#room-password").await.send_keys("hunter2").await;
    browser.element("#create-submit").await.click().await;
    let code = browser.text("#created-code").await;
    assert_eq!(code.len(), 6, "{code}");

    // It exists on the hub, protected.
    let (status, _, v) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["name"], "Design review");
    assert_eq!(v["data"]["passwordProtected"], true);

    // What to hand out: the base URL for this hub, and the invite with the code.
    let base = browser
        .js(
            "return [...document.querySelectorAll('input')].map(i => i.value).find(v => v.endsWith('/v1')) || ''",
            vec![],
        )
        .await;
    assert_eq!(base, json!(format!("{}/rooms/{code}/v1", hub.url)));
    let invite = browser.js("return document.querySelector('#invite-text').value", vec![]).await;
    assert!(invite.as_str().unwrap().contains(&format!("{}/join/{code}", hub.url)), "the invite is a link: {invite}");

    // In a browser tab the host token is shown once, with how to keep it (issue 12: "in a browser
    // tab, it says how to keep it").
    let panel = browser.text("#host-token-panel[data-kept=\"tab\"]").await;
    assert!(panel.contains("keep it to delete the room later"), "{panel}");
    assert!(panel.contains("password manager"), "{panel}");
    assert!(panel.contains(&format!("gambi room delete {code} --host-token")), "{panel}");
    browser.js("document.querySelector('#host-token-panel').scrollIntoView({ block: 'center' })", vec![]).await;
    browser.screenshot("room-created-host-token.png").await;

    // The host token is kept for this tab: the room page offers to delete the room, and does.
    browser.element("#open-created-room").await.click().await;
    browser.element("#delete-room").await.click().await;
    browser.element(".confirm .btn-danger").await.click().await;
    browser.until("the way back home", "return location.hash === '#/'", vec![]).await;
    let (status, _, _) = call(http().get(hub.at(&format!("/v1/rooms/{code}")))).await;
    assert_eq!(status, 404, "the room was deleted by its host");
    browser.close().await;
}

#[tokio::test]
async fn a_participant_goes_online_then_offline_without_a_reload() {
    let config = HubConfig {
        participant_timeout: Duration::from_secs(1),
        sweep_interval: Duration::from_millis(100),
        ..HubConfig::default()
    };
    let hub = TestHub::with_config(config).await;
    let (code, _) = hub.room("Live room", None).await;
    let browser = Browser::start().await;
    browser.goto(&hub.at(&format!("/#/room/{code}"))).await;
    until_live(&browser).await;
    mark_page(&browser).await;
    let empty = browser.text(".small-empty .empty-title").await;
    assert!(empty.contains("No one"), "{empty}");

    // Register and keep heartbeating.
    register(
        &hub.url,
        &code,
        "w-live",
        json!({"nickname": "Alice", "model": "llama3", "endpoint": "http://127.0.0.1:9", "specs": specs()}),
    )
    .await;
    let beat_url = hub.at(&format!("/v1/rooms/{code}/participants/w-live/heartbeat"));
    let beats = tokio::spawn(async move {
        loop {
            let _ = http().post(&beat_url).send().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let card = "[data-participant-id=\"w-live\"]";
    browser
        .until(
            "the participant online",
            &format!("return document.querySelector('{card}[data-status=\"online\"]') !== null"),
            vec![],
        )
        .await;
    // Registered and heartbeating, its tunnel not up (this test opens none): the room cannot send
    // it requests yet, and the card says so rather than "Online".
    assert_eq!(browser.text(&format!("{card} .status")).await, "Connecting…");
    assert_eq!(browser.text(&format!("{card} .nickname")).await, "Alice");
    let specs_text = browser.text(&format!("{card} .specs")).await;
    for part in ["NVIDIA GeForce RTX 4090", "24 GB", "64 GB", "AMD Ryzen 9 7950X"] {
        assert!(specs_text.contains(part), "{part} missing from {specs_text}");
    }
    let dot = browser.js(&format!("return document.querySelector('{card} .dot').className"), vec![]).await;
    assert!(dot.as_str().unwrap().contains("dot-paused"), "not green while it cannot serve: {dot}");

    // Stop heartbeating: the sweep marks it offline and the page shows it, live.
    beats.abort();
    browser
        .until(
            "the participant offline",
            &format!("return document.querySelector('{card}[data-status=\"offline\"]') !== null"),
            vec![],
        )
        .await;
    assert_eq!(browser.text(&format!("{card} .status")).await, "Offline");
    let dot = browser.js(&format!("return document.querySelector('{card} .dot').className"), vec![]).await;
    assert!(dot.as_str().unwrap().contains("dot-offline"), "{dot}");
    let log = browser.text("#event-log").await;
    assert!(log.contains("Alice went offline"), "{log}");
    assert_same_page(&browser).await;
    browser.close().await;
}

/// Issue 12, false statement 2: the room showed a share whose model server had died "Online".
#[tokio::test]
async fn a_paused_participant_says_why_and_comes_back_without_a_reload() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Paused room", None).await;
    let reg = crate::tunnel::register(&hub.url, &code, "alice-p").await;
    let browser = Browser::start().await;
    browser.goto(&hub.at(&format!("/#/room/{code}"))).await;
    until_live(&browser).await;
    mark_page(&browser).await;
    let card = "[data-participant-id=\"alice-p\"]";
    let beat = hub.at(&format!("/v1/rooms/{code}/participants/alice-p/heartbeat"));
    let tell = |body: Value| {
        let (beat, token) = (beat.clone(), reg.participant_token.clone());
        async move {
            let (status, _, v) = call(http().post(beat).bearer_auth(token).json(&body)).await;
            assert_eq!(status, 200, "{v}");
        }
    };

    tell(json!({"paused": true, "pauseReason": "provider"})).await;
    browser
        .until(
            "the participant paused",
            &format!("return document.querySelector('{card}[data-status=\"paused\"]') !== null"),
            vec![],
        )
        .await;
    assert_eq!(browser.text(&format!("{card} .status")).await, "Paused — model server stopped");
    let dot = browser.js(&format!("return document.querySelector('{card} .dot').className"), vec![]).await;
    assert!(dot.as_str().unwrap().contains("dot-paused"), "{dot}");
    assert!(browser.text("#event-log").await.contains("alice-p is paused (model server stopped)"));

    tell(json!({"paused": false})).await;
    browser
        .until(
            "the participant back",
            &format!("return document.querySelector('{card}[data-status=\"online\"]') !== null"),
            vec![],
        )
        .await;
    // Back from the pause, its tunnel still not up in this test: on its way, not "Online".
    assert_eq!(browser.text(&format!("{card} .status")).await, "Connecting…");
    assert!(browser.text("#event-log").await.contains("alice-p is serving again"));
    assert_same_page(&browser).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_waiting_for_a_place_shows_its_turn_then_its_answer() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("One place", None).await;
    let provider =
        FakeProvider::start(FakeOptions { first_byte_delay: Duration::from_millis(1500), ..FakeOptions::default() })
            .await;
    let _share =
        crate::inference::share_with(&hub, &code, "only", &provider, "llama3", |o| o.max_concurrency = Some(1)).await;
    let browser = Browser::start().await;
    browser.set_window_size(1280, 1400).await;
    browser.goto(&hub.at(&format!("/#/room/{code}"))).await;
    until_live(&browser).await;
    // A real share, its tunnel up: this one is "Online".
    browser.element("[data-participant-id=\"only\"][data-status=\"online\"]").await;
    assert_eq!(browser.text("[data-participant-id=\"only\"] .status").await, "Online");

    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let ask = |content: &'static str| {
        let url = url.clone();
        tokio::spawn(async move {
            let body = json!({"model": "llama3", "messages": [{"role": "user", "content": content}]});
            http().post(url).json(&body).send().await.unwrap().status()
        })
    };
    let first = ask("first");
    assert!(provider.wait_in_flight(1, Duration::from_secs(5)).await);
    let second = ask("second");

    // The second waits: a row of its own that says so, and a line in the log.
    let waiting = "#activity-rows tr[data-state=\"queued\"]";
    browser.element(waiting).await;
    assert_eq!(browser.text(&format!("{waiting} .who")).await, "Not yet");
    let badge = browser.text(&format!("{waiting} .badge")).await;
    assert_eq!(badge, "waiting · 1st in line");
    let log = browser.text("#event-log").await;
    assert!(log.contains("A request for llama3 from 127.0.0.1 waits for a free place (next)"), "{log}");
    assert!(!log.contains("llm."), "{log}");
    browser.screenshot("room-queued.png").await;

    // Both are answered; the waiting row became the second's answer, not a row more.
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    browser
        .until(
            "both requests done",
            "return document.querySelectorAll('#activity-rows tr[data-state=\"done\"]').length === 2",
            vec![],
        )
        .await;
    let rows =
        browser.js("return document.querySelectorAll('#activity-rows tr[data-request-id]').length", vec![]).await;
    assert_eq!(rows, json!(2), "one row per request");
    browser.until_text("#stat-requests", "2").await;
    browser.close().await;
}

#[tokio::test]
async fn the_room_shows_activity_after_a_completion() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Inference night", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let browser = Browser::start().await;
    browser.set_window_size(1280, 1500).await;
    browser.goto(&hub.at(&format!("/#/room/{code}"))).await;
    until_live(&browser).await;
    mark_page(&browser).await;

    // A direct participant whose endpoint is the fake provider, and a second one for company.
    let body = json!({
        "id": "w-direct", "nickname": "Bob", "model": "llama3", "endpoint": provider.url,
        "specs": { "gpu": "Apple M3 Max", "vram": 36, "ram": 36, "cpu": "Apple M3 Max", "cpuCores": 14 },
    });
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    register(
        &hub.url,
        &code,
        "alice-4090",
        json!({"nickname": "Alice", "model": "qwen2.5:14b", "endpoint": "http://127.0.0.1:9", "specs": specs(),
               "loadedModels": [{"name": "qwen2.5:14b", "vram": 9.7}]}),
    )
    .await;
    browser.element("[data-participant-id=\"w-direct\"][data-status=\"online\"]").await;
    // Alice registered for a tunnel that has not come up: she is on her way, not "Online".
    browser.element("[data-participant-id=\"alice-4090\"]").await;
    assert_eq!(browser.text("[data-participant-id=\"alice-4090\"] .status").await, "Connecting…");

    let chat = json!({"model": "model:llama3", "messages": [{"role": "user", "content": "Say hello to the room"}]});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat)).await;
    assert_eq!(status, 200, "{v}");

    let row = "#activity-rows tr[data-state=\"done\"]";
    browser.element(row).await;
    assert_eq!(browser.text(&format!("{row} .who")).await, "Bob");
    let ttft = browser.text(&format!("{row} .ttft")).await;
    assert!(ttft.ends_with(" ms") || ttft.ends_with(" s"), "time to first token: {ttft}");
    let tps = browser.text(&format!("{row} .tps")).await;
    assert!(tps.ends_with("tok/s"), "tokens per second: {tps}");
    assert_eq!(browser.text(&format!("{row} .caller")).await, "127.0.0.1", "who asked");
    // The card says what its participant served, from the hub's counters, without a reload.
    browser
        .until(
            "Bob's card to say what he served",
            "const e = document.querySelector('[data-participant-id=\"w-direct\"] .participant-served'); return e !== null && e.textContent.startsWith('Served 1 request')",
            vec![],
        )
        .await;
    browser.until_text("#stat-requests", "1").await;
    let log = browser.text("#event-log").await;
    // The log speaks words, not the events' wire names.
    assert!(log.contains("Request") && log.contains("Answered"), "{log}");
    assert!(!log.contains("llm."), "{log}");
    assert!(log.contains("Bob answered"), "{log}");
    assert_same_page(&browser).await;

    // The snippets point OpenAI clients at this room, with model "*".
    let snippet = browser.text("#snippet-python pre").await;
    assert!(snippet.contains(&format!("{}/rooms/{code}/v1", hub.url)), "{snippet}");
    assert!(snippet.contains("model=\"*\""), "{snippet}");

    assert_activity_not_cut(&browser, 1280).await;
    browser.screenshot("room.png").await;
    browser.close().await;
    provider.stop().await;
}

/// The activity table's whole width is on screen: nothing scrolls sideways.
async fn assert_activity_not_cut(browser: &Browser, width: u32) {
    let fits = browser
        .js(
            "const w = document.querySelector('#activity-panel .table-wrap'); return [w.scrollWidth, w.clientWidth]",
            vec![],
        )
        .await;
    let (scroll, client) = (fits[0].as_u64().unwrap(), fits[1].as_u64().unwrap());
    assert!(scroll <= client, "at {width} px the activity table is cut: {scroll} px wide in {client} px");
}

/// Issue 12, "Words and layout": at the app window's 980 px the live activity table is whole (it
/// was cut), a refused request (no one serves the model) is a row that says so in a sentence on a
/// line of its own (error text wrapped one word per line), and the sticky header is opaque (it was
/// see-through over the scrolled page).
#[tokio::test]
async fn at_980_px_the_activity_is_whole_and_a_refused_request_says_why() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Narrow window", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let body = json!({"id": "w-narrow", "nickname": "Bob", "model": "llama3", "endpoint": provider.url});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    let browser = Browser::start().await;
    browser.set_window_size(980, 1500).await;
    browser.goto(&hub.at(&format!("/#/room/{code}"))).await;
    until_live(&browser).await;
    browser.element("[data-participant-id=\"w-narrow\"][data-status=\"online\"]").await;

    let url = hub.at(&format!("/rooms/{code}/v1/chat/completions"));
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "Hello from a narrow window"}]});
    let (status, _, v) = call(http().post(&url).json(&chat("llama3"))).await;
    assert_eq!(status, 200, "{v}");
    let res = http().post(&url).json(&chat("mistral")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();

    let row = "#activity-rows tr[data-state=\"rejected\"]";
    browser.element(row).await;
    assert_eq!(browser.text(&format!("{row} .who")).await, "No one");
    assert_eq!(browser.text(&format!("{row} .model")).await, "mistral");
    assert_eq!(browser.text(&format!("{row} .caller")).await, "127.0.0.1");
    let note = format!("#activity-rows tr[data-note-for=\"{request_id}\"] .error-text");
    assert_eq!(browser.text(&note).await, "No one in this room shares mistral right now, so no one could answer.");
    browser.element("#activity-rows tr[data-state=\"done\"]").await;
    let log = browser.text("#event-log").await;
    assert!(log.contains("A request for mistral from 127.0.0.1 was turned away"), "{log}");
    assert!(!log.contains("llm."), "{log}");

    assert_activity_not_cut(&browser, 980).await;
    // The sentence reads on one or two lines, not a word per line.
    let lines =
        browser.js("return document.querySelector(arguments[0]).getClientRects().length", vec![json!(note)]).await;
    assert!(lines.as_u64().unwrap() <= 2, "the refusal's sentence takes {lines} lines");
    // "First token" and "speed" say what they are on hover.
    let titles = browser
        .js("return [...document.querySelectorAll('#activity abbr')].map(a => a.textContent + ': ' + a.title)", vec![])
        .await;
    assert_eq!(titles.as_array().unwrap().len(), 2, "{titles}");
    assert!(titles.as_array().unwrap().iter().all(|t| t.as_str().unwrap().len() > 30), "{titles}");
    // The header over the scrolled page hides what is under it.
    browser.js("document.querySelector('#activity-panel').scrollIntoView()", vec![]).await;
    let header = browser
        .js(
            "const s = getComputedStyle(document.querySelector('.topbar')); return [s.position, s.backgroundColor]",
            vec![],
        )
        .await;
    assert_eq!(header[0], "sticky");
    assert!(header[1].as_str().unwrap().starts_with("rgb("), "an opaque header: {header}");
    browser.screenshot("room-980-scrolled.png").await;
    browser.js("window.scrollTo(0, 0)", vec![]).await;
    browser.screenshot("room-980.png").await;
    browser.close().await;
    provider.stop().await;
}

/// Issue 12, "Room stats lie": a room that served 2 requests before the page opened says
/// "Requests 2" (not 0), "1 online of 2" when one of its two participants can take requests, and a
/// room whose sharers left says they shared; the Room screen hands out the invite link and its QR
/// code, and the invite page it points to works under the dashboard's policy.
#[tokio::test]
async fn the_room_shows_the_hubs_counts_and_its_invite() {
    let hub = TestHub::start().await;
    let (code, _) = hub.room("Counted room", None).await;
    let provider = FakeProvider::start(FakeOptions::default()).await;
    let body = json!({"id": "w-counted", "nickname": "Bob", "model": "llama3", "endpoint": provider.url});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    // Registered, but with no link to the hub: not one that can take requests.
    register(
        &hub.url,
        &code,
        "w-away",
        json!({"nickname": "Alice", "model": "qwen2.5:14b", "endpoint": "http://127.0.0.1:9", "specs": specs()}),
    )
    .await;
    for text in ["first question", "second question"] {
        let chat = json!({"model": "model:llama3", "messages": [{"role": "user", "content": text}]});
        let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{code}/v1/chat/completions"))).json(&chat)).await;
        assert_eq!(status, 200, "{v}");
    }

    let browser = Browser::start().await;
    browser.set_window_size(1280, 1600).await;
    browser.goto(&hub.at(&format!("/#/room/{code}"))).await;
    until_live(&browser).await;
    browser.until_text("#stat-requests", "2").await;
    browser.until_text("#stat-online", "1 online of 2").await;
    let ttft = browser.text("#stat-ttft").await;
    assert!(ttft.ends_with(" ms") || ttft.ends_with(" s"), "the hub's average first token: {ttft}");
    let served = browser.text("[data-participant-id=\"w-counted\"] .participant-served").await;
    assert!(served.starts_with("Served 2 requests") && served.contains("127.0.0.1"), "{served}");
    let hidden = browser.js("return document.querySelector('.small-empty').hidden", vec![]).await;
    assert_eq!(hidden, json!(true), "someone is sharing: no empty state");

    // The invite: the link, a copy button, and the QR code the hub drew.
    let link = browser
        .js(
            "return [...document.querySelectorAll('input')].map(i => i.value).find(v => v.includes('/join/')) || ''",
            vec![],
        )
        .await;
    assert_eq!(link, json!(format!("{}/join/{code}", hub.url)));
    browser.element("button[aria-label=\"Copy invite link\"]").await;
    browser
        .until(
            "the QR code drawn",
            "const q = document.querySelector('#room-qr'); return q !== null && !q.hidden && q.complete && q.naturalWidth > 100",
            vec![],
        )
        .await;
    browser.screenshot("room-stats.png").await;

    // The page the link opens: plain words, the base URL, the QR code, the dashboard's style.
    browser.goto(&format!("{}/join/{code}", hub.url)).await;
    browser.until_text("#invite-title", "Join Counted room").await;
    assert_eq!(browser.text("#invite-base-url").await, format!("{}/rooms/{code}/v1", hub.url));
    let styled = browser
        .js(
            "return [document.querySelector('svg.qr') !== null, getComputedStyle(document.querySelector('.topbar')).display !== 'inline']",
            vec![],
        )
        .await;
    assert_eq!(styled, json!([true, true]), "[inline QR code, the stylesheet applies]");
    browser.screenshot("invite.png").await;

    // A room whose only sharer has left says so, not "no one yet".
    let (left, _) = hub.room("Shared and left", None).await;
    let body = json!({"id": "w-left", "nickname": "Carol", "model": "llama3", "endpoint": provider.url});
    let (status, _, v) = call(http().post(hub.at(&format!("/rooms/{left}/join"))).json(&body)).await;
    assert_eq!(status, 200, "{v}");
    hub.hub.remove_participant(&left, "w-left").unwrap();
    browser.goto(&hub.at(&format!("/#/room/{left}"))).await;
    until_live(&browser).await;
    browser
        .until(
            "the empty state",
            "const e = document.querySelector('.small-empty'); return e !== null && !e.hidden && e.textContent.includes('1 person shared earlier')",
            vec![],
        )
        .await;
    browser.until_text("#stat-online", "0 online of 0").await;
    browser.close().await;
    provider.stop().await;
}

/// A code as the TypeScript hub makes them (`nanoid(6).toUpperCase()`, so `-` and `_` too) is a
/// room code wherever the page reads one: the share screen looks the room up and builds its
/// command, Home's "Open a room by code" opens it, and a code no hub knows gets the hub's answer,
/// not the format hint; its invite page opens too. The room comes from a state file, as a hub
/// restarted with `--state` loads it.
#[tokio::test]
async fn codes_with_dash_and_underscore_are_room_codes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hub-state.json");
    let room = json!({"id": "ts-room", "code": "B--JWY", "name": "TypeScript room", "hostId": "ts-host",
        "createdAt": 1_700_000_000_000u64, "hostTokenSha256": "0".repeat(64)});
    std::fs::write(&state, json!({"version": 1, "rooms": [room]}).to_string()).unwrap();
    let hub = TestHub::with_config(HubConfig { state_path: Some(state), ..HubConfig::default() }).await;
    // Its invite page, as the link the TypeScript hub's users pass around.
    let (status, _, page) = call(http().get(hub.at("/join/B--JWY"))).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.as_str().is_some_and(|p| p.contains("TypeScript room")), "{page}");
    let browser = Browser::start().await;

    browser.goto(&hub.at("/#/join")).await;
    browser.element("#join-code").await.send_keys("b--jwy").await;
    browser.until_text("#join-room-info", "Room \u{201c}TypeScript room\u{201d}.").await;
    let command = browser.text("pre[aria-label=\"share command\"]").await;
    assert!(command.contains("--room B--JWY"), "{command}");

    browser.goto(&hub.at("/#/join/MA_TPG")).await;
    browser.until_text("#join-room-info", "Room MA_TPG isn't on this hub \u{2014} check the code.").await;

    browser.goto(&hub.at("/")).await;
    browser.element("#open-code").await.send_keys("B--JWY").await;
    browser.element("form.inline-form button[type=submit]").await.click().await;
    browser.until_text("h1", "TypeScript room").await;
    assert_eq!(browser.js("return location.hash", vec![]).await, json!("#/room/B--JWY"));
    browser.close().await;
}

#[tokio::test]
async fn a_hostile_nickname_is_shown_as_text_and_runs_nothing() {
    const HOSTILE: &str = "<img src=x onerror=alert(1)>";
    const HOSTILE_MODEL: &str = "\"><svg onload=alert(2)>";
    let hub = TestHub::start().await;
    let (code, _) = hub.room("<script>alert(3)</script><b>room</b>", None).await;
    let browser = Browser::start().await;
    browser.goto(&hub.at(&format!("/#/room/{code}"))).await;
    until_live(&browser).await;
    // Anything that managed to call alert would be recorded here (and the real alert would stay
    // open for the driver to find).
    browser.js("window.__alerts = []; const real = window.alert; window.alert = (m) => { window.__alerts.push(String(m)); real.call(window, m); };", vec![]).await;

    register(
        &hub.url,
        &code,
        "w-xss",
        json!({"nickname": HOSTILE, "model": HOSTILE_MODEL, "endpoint": "http://127.0.0.1:9",
               "specs": {"gpu": "<b onmouseover=alert(4)>GPU</b>"}}),
    )
    .await;
    let card = "[data-participant-id=\"w-xss\"]";
    assert_eq!(browser.text(&format!("{card} .nickname")).await, HOSTILE);
    assert_eq!(browser.text(&format!("{card} .model")).await, HOSTILE_MODEL);
    browser.until_text("h1", "<script>alert(3)</script><b>room</b>").await;
    // Give a broken image time to fail and fire its handler, were there one.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let counts = browser
        .js(
            "return [document.querySelectorAll('#participants img').length, document.querySelectorAll('#participants svg:not(.icon)').length, document.querySelectorAll('main b, main script').length, window.__alerts.length]",
            vec![],
        )
        .await;
    assert_eq!(counts, json!([0, 0, 0, 0]), "[img, svg, b/script, alerts]");
    assert_eq!(browser.alert_text().await, None, "an alert is open");

    // Home lists the room by its hostile name, as text too.
    browser.goto(&hub.at("/")).await;
    assert_eq!(
        browser.text(&format!(".room-card[data-code=\"{code}\"] .room-name")).await,
        "<script>alert(3)</script><b>room</b>"
    );
    let scripts = browser.js("return document.querySelectorAll('main script, main b').length", vec![]).await;
    assert_eq!(scripts, json!(0));
    assert_eq!(browser.alert_text().await, None, "an alert is open");
    browser.close().await;
}

#[tokio::test]
async fn the_ui_is_served_with_its_security_headers() {
    let hub = BinHub::start(&[]);
    let res = http().get(hub.at("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("<script type=\"module\" src=\"app.js\"></script>"), "{html}");

    // Assets at their own paths, with types a browser accepts under nosniff.
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/views/room.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/icon.svg", "image/svg+xml"),
    ] {
        let res = http().get(hub.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert!(res.headers().contains_key("content-security-policy"), "{path}");
        // Revalidation answers 304 while the file is unchanged.
        let etag = res.headers()["etag"].clone();
        let again = http().get(hub.at(path)).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }

    // The API keeps its own answers, 404s included.
    let (status, _, v) = call(http().get(hub.at("/no-such-page"))).await;
    assert_eq!((status, v), (404, json!({"error": "Not found"})));
    let (status, _, v) = call(http().get(hub.at("/v1/no-such-thing"))).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "NOT_FOUND");
    let (status, _, v) = call(http().get(hub.at("/rooms"))).await;
    assert_eq!(status, 200);
    assert!(v["rooms"].is_array());
    let (status, _, v) = call(http().get(hub.at("/v1/health"))).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["status"], "ok");
}

/// The rule the XSS test checks at run time, checked in the sources too: nothing in `ui/` parses
/// markup from strings, and nothing needs `unsafe-inline` or `unsafe-eval`.
#[test]
fn ui_sources_never_parse_markup() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("backend.js")), "ui/backend.js is missing");
    for file in files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if name.ends_with(".js") {
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setHTMLUnsafe",
            ] {
                assert!(!text.contains(banned), "{name} uses {banned}");
            }
        }
        if name.ends_with(".html") {
            assert!(!text.contains(" style="), "{name} has an inline style");
            for (i, _) in text.match_indices("<script") {
                let tag_end = text[i..].find('>').unwrap() + i;
                assert!(text[i..tag_end].contains("src="), "{name} has an inline script");
                assert!(text[tag_end..].starts_with("></script>"), "{name} has an inline script");
            }
            assert!(!text.contains(" onclick=") && !text.contains(" onload="), "{name} has an inline handler");
        }
        if name.ends_with(".js") || name.ends_with(".html") {
            assert!(!text.contains("https://"), "{name} loads something from the internet");
        }
    }
}
