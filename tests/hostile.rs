//! Acceptance 8: a table of hostile requests against a real hub, sent as hand-made HTTP/1.1 over raw
//! TCP so that anything can be said (invalid UTF-8 in a path or a body, no body at all, bodies over
//! the limit). Every case must get a 4xx in its surface's own error shape, and the hub must keep
//! serving and must not have created anything.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{call, http, rss_kib, TestHub};

/// Which error shape a case must be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{"error": "message"}`.
    Classic,
    /// `{"error": {"code", "message", ...}, "meta": {"requestId"}}`.
    V1,
    /// The inference plane's OpenAI shape: `{"error": {"message", "type", "code"}}`.
    OpenAi,
    /// Garbage at the HTTP protocol level (a request line that is not HTTP, bytes a URI cannot hold):
    /// the HTTP parser refuses it before any route, and so before any surface, sees it. A 4xx with
    /// no particular body is all there can be.
    Protocol,
}

struct Case {
    name: String,
    shape: Shape,
    method: String,
    path: Vec<u8>,
    content_type: Option<String>,
    body: Vec<u8>,
    /// The status the contract names for this case, when it names one.
    status: Option<u16>,
    /// A whole request, sent as is instead of being built from the fields above.
    raw: Option<Vec<u8>>,
}

impl Case {
    fn new(
        shape: Shape,
        name: impl Into<String>,
        method: &str,
        path: impl Into<Vec<u8>>,
        body: impl Into<Vec<u8>>,
    ) -> Case {
        let body = body.into();
        Case {
            name: name.into(),
            shape,
            method: method.into(),
            path: path.into(),
            content_type: (!body.is_empty()).then(|| "application/json".to_string()),
            body,
            status: None,
            raw: None,
        }
    }

    fn status(mut self, status: u16) -> Case {
        self.status = Some(status);
        self
    }

    fn content_type(mut self, ct: Option<&str>) -> Case {
        self.content_type = ct.map(str::to_string);
        self
    }

    fn request(&self, host: &str) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut req = Vec::new();
        req.extend_from_slice(self.method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(&self.path);
        req.extend_from_slice(format!(" HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n").as_bytes());
        if let Some(ct) = &self.content_type {
            req.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        req.extend_from_slice(&self.body);
        req
    }
}

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends `request` on a fresh connection and reads the response until the hub closes it. The request
/// is written from another task, so a hub that answers before reading a huge body (413) is heard.
async fn send_raw(addr: &str, request: Vec<u8>) -> RawResponse {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The write half is kept open until the answer is read: closing it early would tell the hub the
    // client left.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        let _ = done_rx.await;
        drop(writer);
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let _ = done_tx.send(());
    write.abort();
    assert!(read.is_ok(), "the hub did not answer and close within 20 s; got {:?}", String::from_utf8_lossy(&buf));
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status =
        status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{status_line}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok());
        rest[..len.unwrap_or(rest.len()).min(rest.len())].to_vec()
    };
    RawResponse { status, headers, body }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..pos]).split(';').next().unwrap().trim(), 16)
            .unwrap_or(0);
        rest = &rest[pos + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Checks one answer against its case; returns a description of what is wrong, if anything.
fn check(case: &Case, res: &RawResponse) -> Result<(), String> {
    if !(400..500).contains(&res.status) {
        return Err(format!("status {} is not a 4xx", res.status));
    }
    if let Some(status) = case.status {
        if res.status != status {
            return Err(format!("status {} instead of {status}", res.status));
        }
    }
    let body = res.json();
    if case.shape != Shape::Protocol {
        if !res.header("content-type").is_some_and(|ct| ct.starts_with("application/json")) {
            return Err(format!("content-type {:?} is not JSON", res.header("content-type")));
        }
        if res.header("x-request-id").is_none_or(str::is_empty) {
            return Err("no x-request-id header".into());
        }
    }
    match case.shape {
        Shape::Protocol => Ok(()),
        Shape::OpenAi => {
            let Some(v) = body else {
                return Err(format!("not JSON: {:?}", String::from_utf8_lossy(&res.body)));
            };
            let e = &v["error"];
            let ok = ["message", "type", "code"].iter().all(|k| e[k].as_str().is_some_and(|s| !s.is_empty()));
            if ok {
                Ok(())
            } else {
                Err(format!("not the OpenAI error shape: {v}"))
            }
        }
        Shape::Classic => match &body {
            Some(Value::Object(o)) if o.get("error").is_some_and(Value::is_string) => {
                if o["error"].as_str().is_some_and(str::is_empty) {
                    Err("empty error message".into())
                } else {
                    Ok(())
                }
            }
            _ => Err(format!("not the classic error shape: {:?}", String::from_utf8_lossy(&res.body))),
        },
        Shape::V1 => {
            let Some(v) = body else {
                return Err(format!("not JSON: {:?}", String::from_utf8_lossy(&res.body)));
            };
            let code_ok = v["error"]["code"].as_str().is_some_and(|c| !c.is_empty());
            let message_ok = v["error"]["message"].as_str().is_some_and(|m| !m.is_empty());
            let id = v["meta"]["requestId"].as_str();
            if !(code_ok && message_ok && id.is_some_and(|i| !i.is_empty())) {
                return Err(format!("not the /v1 error envelope: {v}"));
            }
            if res.header("x-request-id") != id {
                return Err(format!("meta.requestId {id:?} != x-request-id {:?}", res.header("x-request-id")));
            }
            if res.status == 413 && v["error"]["code"] != "PAYLOAD_TOO_LARGE" {
                return Err(format!("413 without PAYLOAD_TOO_LARGE: {v}"));
            }
            Ok(())
        }
    }
}

fn table(code: &str) -> Vec<Case> {
    use Shape::{Classic as C, Protocol as P, V1 as V};
    let join = format!("/rooms/{code}/join");
    let health = format!("/rooms/{code}/health");
    let put = format!("/v1/rooms/{code}/participants/w1");
    let heartbeat = format!("/v1/rooms/{code}/participants/w1/heartbeat");
    let ok = |extra: Value| {
        let mut body = json!({"nickname": "A", "model": "llama3", "endpoint": "http://127.0.0.1:9"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body.to_string()
    };
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let huge_name = json!({"name": "n".repeat(10_000)}).to_string();
    let huge_nick = ok(json!({"nickname": "k".repeat(100 * 1024)}));
    let two_mib = json!({"name": "x", "padding": "p".repeat(2 * 1024 * 1024)}).to_string();
    let two_mib_put = ok(json!({"padding": "p".repeat(2 * 1024 * 1024)}));
    let long_id = "i".repeat(200);

    let mut cases = vec![
        // Bad JSON.
        Case::new(C, "truncated JSON (classic create)", "POST", "/rooms", r#"{"name": "x""#).status(400),
        Case::new(V, "truncated JSON (v1 create)", "POST", "/v1/rooms", r#"{"name": "x""#).status(400),
        Case::new(C, "trailing garbage (classic join)", "POST", join.as_str(), format!("{} garbage", ok(json!({}))))
            .status(400),
        Case::new(V, "trailing garbage (v1 upsert)", "PUT", put.as_str(), format!("{}}}", ok(json!({})))).status(400),
        Case::new(C, "an array, not an object (classic create)", "POST", "/rooms", "[1, 2]").status(400),
        Case::new(V, "a string, not an object (v1 create)", "POST", "/v1/rooms", r#""My room""#).status(400),
        Case::new(C, "a number, not an object (classic join)", "POST", join.as_str(), "42").status(400),
        Case::new(V, "null, not an object (v1 create)", "POST", "/v1/rooms", "null").status(400),
        Case::new(V, "null, not an object (v1 upsert)", "PUT", put.as_str(), "null").status(400),
        Case::new(C, "an array, not an object (classic health)", "POST", health.as_str(), "[]").status(400),
        Case::new(V, "an array as a heartbeat body", "POST", heartbeat.as_str(), "[1]").status(400),
        Case::new(V, "single quotes (v1 create)", "POST", "/v1/rooms", "{'name': 'x'}").status(400),
        Case::new(C, "a lone surrogate escape (classic create)", "POST", "/rooms", r#"{"name": "\ud800"}"#).status(400),
        Case::new(
            V,
            "a number out of range (v1 create)",
            "POST",
            "/v1/rooms",
            r#"{"name": "x", "defaults": {"temperature": 1e400}}"#,
        )
        .status(400),
        // Wrong types.
        Case::new(C, "name: 5 (classic create)", "POST", "/rooms", r#"{"name": 5}"#).status(400),
        Case::new(V, "name: 5 (v1 create)", "POST", "/v1/rooms", r#"{"name": 5}"#).status(400),
        Case::new(V, "name: {} (v1 create)", "POST", "/v1/rooms", r#"{"name": {}}"#).status(400),
        Case::new(V, "password: 12 (v1 create)", "POST", "/v1/rooms", r#"{"name": "x", "password": 12}"#).status(400),
        Case::new(
            C,
            "password of 2,000 characters (classic create)",
            "POST",
            "/rooms",
            json!({"name": "x", "password": "p".repeat(2000)}).to_string(),
        )
        .status(400),
        Case::new(
            V,
            "password of 2,000 characters (v1 upsert)",
            "PUT",
            put.as_str(),
            ok(json!({"password": "p".repeat(2000)})),
        )
        .status(400),
        Case::new(C, "defaults: \"warm\" (classic create)", "POST", "/rooms", r#"{"name": "x", "defaults": "warm"}"#)
            .status(400),
        Case::new(C, "nickname: [] (classic join)", "POST", join.as_str(), ok(json!({"nickname": []}))).status(400),
        Case::new(V, "nickname: [] (v1 upsert)", "PUT", put.as_str(), ok(json!({"nickname": []}))).status(400),
        Case::new(C, "specs: \"x\" (classic join)", "POST", join.as_str(), ok(json!({"specs": "x"}))).status(400),
        Case::new(V, "specs: \"x\" (v1 upsert)", "PUT", put.as_str(), ok(json!({"specs": "x"}))).status(400),
        Case::new(
            C,
            "config.temperature: \"hot\" (classic join)",
            "POST",
            join.as_str(),
            ok(json!({"config": {"temperature": "hot"}})),
        )
        .status(400),
        Case::new(
            V,
            "config.temperature: \"hot\" (v1 upsert)",
            "PUT",
            put.as_str(),
            ok(json!({"config": {"temperature": "hot"}})),
        )
        .status(400),
        Case::new(V, "maxConcurrency: -1", "PUT", put.as_str(), ok(json!({"maxConcurrency": -1}))).status(400),
        Case::new(V, "maxConcurrency: 0", "PUT", put.as_str(), ok(json!({"maxConcurrency": 0}))).status(400),
        Case::new(V, "maxConcurrency: \"a\"", "PUT", put.as_str(), ok(json!({"maxConcurrency": "a"}))).status(400),
        Case::new(C, "specs.vram: \"24\" (classic join)", "POST", join.as_str(), ok(json!({"specs": {"vram": "24"}})))
            .status(400),
        Case::new(V, "specs.vram: -8 (v1 upsert)", "PUT", put.as_str(), ok(json!({"specs": {"vram": -8}}))).status(400),
        Case::new(
            V,
            "capabilities.openResponses: \"maybe\"",
            "PUT",
            put.as_str(),
            ok(json!({"capabilities": {"openResponses": "maybe"}})),
        )
        .status(400),
        Case::new(C, "id: 5 (classic join)", "POST", join.as_str(), ok(json!({"id": 5}))).status(400),
        Case::new(C, "id: 5 (classic health)", "POST", health.as_str(), r#"{"id": 5}"#).status(400),
        Case::new(
            C,
            "endpoint: javascript: (classic join)",
            "POST",
            join.as_str(),
            ok(json!({"endpoint": "javascript:alert(1)"})),
        )
        .status(400),
        Case::new(
            V,
            "endpoint: file:// (v1 upsert)",
            "PUT",
            put.as_str(),
            ok(json!({"endpoint": "file:///etc/passwd"})),
        )
        .status(400),
        // Missing fields.
        Case::new(C, "{} (classic create)", "POST", "/rooms", "{}").status(400),
        Case::new(V, "{} (v1 create)", "POST", "/v1/rooms", "{}").status(400),
        Case::new(C, "nickname only (classic join)", "POST", join.as_str(), r#"{"nickname": "A"}"#).status(400),
        Case::new(V, "model only (v1 upsert)", "PUT", put.as_str(), r#"{"model": "m"}"#).status(400),
        Case::new(C, "{} (classic health)", "POST", health.as_str(), "{}").status(400),
        // Huge strings.
        Case::new(C, "name of 10,000 characters (classic create)", "POST", "/rooms", huge_name.clone()).status(400),
        Case::new(V, "name of 10,000 characters (v1 create)", "POST", "/v1/rooms", huge_name).status(400),
        Case::new(C, "nickname of 100 KiB (classic join)", "POST", join.as_str(), huge_nick.clone()).status(400),
        Case::new(V, "nickname of 100 KiB (v1 upsert)", "PUT", put.as_str(), huge_nick).status(400),
        // Bodies over the 1 MiB limit.
        Case::new(C, "2 MiB body (classic create)", "POST", "/rooms", two_mib.clone()).status(413),
        Case::new(V, "2 MiB body (v1 create)", "POST", "/v1/rooms", two_mib).status(413),
        Case::new(V, "2 MiB body (v1 upsert)", "PUT", put.as_str(), two_mib_put).status(413),
        // Invalid room codes in paths.
        Case::new(C, "room code too short", "GET", "/rooms/ABC/participants", "").status(404),
        Case::new(V, "room code too long", "GET", "/v1/rooms/ABCDEFG", "").status(404),
        Case::new(C, "room code ../ (classic join)", "POST", "/rooms/../join", ok(json!({}))).status(404),
        Case::new(V, "room code %2e%2e", "GET", "/v1/rooms/%2e%2e/participants", "").status(404),
        Case::new(V, "room code %2e%2e%2f%2e%2e", "GET", "/v1/rooms/%2e%2e%2f%2e%2e", "").status(404),
        Case::new(V, "unicode room code", "GET", "/v1/rooms/%E4%BC%9A%E8%AE%AE%E5%AE%A4A", "").status(404),
        Case::new(C, "room code with %00", "GET", "/rooms/ABC%0023/participants", "").status(404),
        Case::new(C, "room code of six spaces (classic events)", "GET", "/rooms/%20%20%20%20%20%20/events", "")
            .status(404),
        Case::new(V, "room code with percent-encoded invalid UTF-8", "GET", "/v1/rooms/%FF%FE%FD%FC%FB%FA", ""),
        Case::new(C, "room code of 300 characters", "GET", format!("/rooms/{}/participants", "A".repeat(300)), "")
            .status(404),
        // Invalid participant ids in paths.
        Case::new(V, "participant id ..", "PUT", format!("/v1/rooms/{code}/participants/.."), ok(json!({})))
            .status(400),
        Case::new(V, "participant id a%2Fb", "PUT", format!("/v1/rooms/{code}/participants/a%2Fb"), ok(json!({})))
            .status(400),
        Case::new(
            V,
            "participant id of 200 characters",
            "PUT",
            format!("/v1/rooms/{code}/participants/{long_id}"),
            ok(json!({})),
        )
        .status(400),
        Case::new(
            V,
            "participant id with spaces",
            "PUT",
            format!("/v1/rooms/{code}/participants/a%20b"),
            ok(json!({})),
        )
        .status(400),
        Case::new(V, "participant id with %00", "PUT", format!("/v1/rooms/{code}/participants/a%00b"), ok(json!({})))
            .status(400),
        Case::new(C, "leave of id ..", "DELETE", format!("/rooms/{code}/leave/.."), "").status(404),
        Case::new(C, "leave of id a%2Fb", "DELETE", format!("/rooms/{code}/leave/a%2Fb"), "").status(404),
        Case::new(
            V,
            "heartbeat of id with spaces",
            "POST",
            format!("/v1/rooms/{code}/participants/a%20b/heartbeat"),
            "",
        )
        .status(404),
        Case::new(
            V,
            "delete of an id of 200 characters",
            "DELETE",
            format!("/v1/rooms/{code}/participants/{long_id}"),
            "",
        )
        .status(404),
        Case::new(C, "join with id ../etc in the body", "POST", join.as_str(), ok(json!({"id": "../etc"}))).status(400),
        // Unicode and control characters in names.
        Case::new(C, "NUL in a room name (classic)", "POST", "/rooms", json!({"name": "a\u{0}b"}).to_string())
            .status(400),
        Case::new(V, "newline in a room name (v1)", "POST", "/v1/rooms", json!({"name": "a\nb"}).to_string())
            .status(400),
        Case::new(
            V,
            "bidi override in a room name (v1)",
            "POST",
            "/v1/rooms",
            json!({"name": "invoice\u{202E}fdp.exe"}).to_string(),
        )
        .status(400),
        Case::new(
            C,
            "escape sequence in a room name (classic)",
            "POST",
            "/rooms",
            json!({"name": "\u{1b}[31mred"}).to_string(),
        )
        .status(400),
        Case::new(C, "only whitespace in a room name", "POST", "/rooms", json!({"name": " \t "}).to_string())
            .status(400),
        Case::new(
            C,
            "bidi override in a nickname (classic join)",
            "POST",
            join.as_str(),
            ok(json!({"nickname": "\u{202E}evil"})),
        )
        .status(400),
        Case::new(V, "BEL in a nickname (v1 upsert)", "PUT", put.as_str(), ok(json!({"nickname": "bell\u{7}"})))
            .status(400),
        Case::new(
            V,
            "isolate in a model name (v1 upsert)",
            "PUT",
            put.as_str(),
            ok(json!({"model": "llama\u{2066}3"})),
        )
        .status(400),
        // Invalid UTF-8 in a body.
        Case::new(
            C,
            "invalid UTF-8 in the body (classic create)",
            "POST",
            "/rooms",
            b"{\"name\": \"\xff\xfe\xfd\"}".to_vec(),
        )
        .status(400),
        Case::new(
            V,
            "invalid UTF-8 in the body (v1 upsert)",
            "PUT",
            put.as_str(),
            b"{\"nickname\": \"\xc3\x28\", \"model\": \"m\", \"endpoint\": \"http://x\"}".to_vec(),
        )
        .status(400),
        // Deep nesting.
        Case::new(C, "10,000 nested arrays (classic create)", "POST", "/rooms", nested(10_000)).status(400),
        Case::new(
            V,
            "10,000 nested arrays in a field (v1 upsert)",
            "PUT",
            put.as_str(),
            format!(r#"{{"nickname": {}}}"#, nested(10_000)),
        )
        .status(400),
        // Bodies that do not say they are JSON: 415, whatever they hold (a browser sends text/plain
        // and forms cross-site without a preflight).
        Case::new(C, "form-encoded body (classic create)", "POST", "/rooms", "name=My+room")
            .content_type(Some("application/x-www-form-urlencoded"))
            .status(415),
        Case::new(V, "XML body (v1 create)", "POST", "/v1/rooms", "<room name=\"x\"/>")
            .content_type(Some("application/xml"))
            .status(415),
        Case::new(V, "form-encoded body (v1 upsert)", "PUT", put.as_str(), "nickname=a&model=b&endpoint=http://x")
            .content_type(Some("application/x-www-form-urlencoded"))
            .status(415),
        Case::new(
            C,
            "multipart body (classic join)",
            "POST",
            join.as_str(),
            "--b\r\nContent-Disposition: form-data; name=\"nickname\"\r\n\r\nA\r\n--b--\r\n",
        )
        .content_type(Some("multipart/form-data; boundary=b"))
        .status(415),
        Case::new(V, "JSON sent as text/plain (v1 create)", "POST", "/v1/rooms", r#"{"name": "x"}"#)
            .content_type(Some("text/plain"))
            .status(415),
        Case::new(
            C,
            "JSON sent as text/plain (classic join)",
            "POST",
            join.as_str(),
            r#"{"nickname": "a", "model": "m", "endpoint": "http://10.0.0.9:1"}"#,
        )
        .content_type(Some("text/plain;charset=UTF-8"))
        .status(415),
        Case::new(V, "JSON with no content type (v1 create)", "POST", "/v1/rooms", r#"{"name": "x"}"#)
            .content_type(None)
            .status(415),
        // Empty bodies.
        Case::new(C, "empty body (classic create)", "POST", "/rooms", "").status(400),
        Case::new(V, "empty body (v1 create)", "POST", "/v1/rooms", "").status(400),
        Case::new(C, "empty body (classic join)", "POST", join.as_str(), "").status(400),
        Case::new(V, "empty body (v1 upsert)", "PUT", put.as_str(), "").status(400),
        Case::new(C, "whitespace body (classic health)", "POST", health.as_str(), "  \n ").status(400),
        // Unknown methods on known paths.
        Case::new(C, "PATCH /rooms", "PATCH", "/rooms", "{}").status(405),
        Case::new(C, "PUT /rooms/:code/join", "PUT", join.as_str(), ok(json!({}))).status(405),
        Case::new(C, "GET /rooms/:code/leave/:id", "GET", format!("/rooms/{code}/leave/w1"), "").status(405),
        Case::new(C, "an invented method on /rooms", "BREW", "/rooms", "").status(405),
        Case::new(V, "PATCH /v1/rooms", "PATCH", "/v1/rooms", "{}").status(405),
        Case::new(V, "POST /v1/health", "POST", "/v1/health", "{}").status(405),
        Case::new(V, "DELETE /v1/rooms", "DELETE", "/v1/rooms", "").status(405),
        Case::new(V, "PUT /v1/rooms/:code/events", "PUT", format!("/v1/rooms/{code}/events"), "{}").status(405),
        // Unknown paths.
        Case::new(C, "an unknown top-level path", "GET", "/nope", "").status(404),
        Case::new(C, "a doubled slash", "GET", "//rooms", "").status(404),
        Case::new(C, "an unknown room sub-path", "GET", format!("/rooms/{code}/secrets"), "").status(404),
        Case::new(V, "an unknown /v1 path", "GET", "/v1/nope", "").status(404),
        Case::new(V, "bare /v1", "GET", "/v1", "").status(404),
        Case::new(
            V,
            "an unknown participant sub-path",
            "POST",
            format!("/v1/rooms/{code}/participants/w1/explode"),
            "{}",
        )
        .status(404),
    ];

    // A chunked body over the limit: no Content-Length to refuse it by, the limit holds while reading.
    let mut chunked = Case::new(V, "2 MiB chunked body without Content-Length (v1 create)", "", "", "").status(413);
    let mut raw = concat!(
        "POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .as_bytes()
    .to_vec();
    let piece = format!("{{\"name\": \"x\", \"pad\": \"{}", "p".repeat(64 * 1024 - 22));
    for i in 0..32 {
        let data = if i == 0 { piece.clone() } else { "p".repeat(64 * 1024) };
        raw.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
    }
    raw.extend_from_slice(b"2\r\n\"}\r\n0\r\n\r\n");
    chunked.raw = Some(raw);
    cases.push(chunked);

    // Raw protocol garbage: the HTTP parser answers, no surface does.
    let mut garbage = Case::new(P, "a request line that is not HTTP", "", "", "").status(400);
    garbage.raw = Some(b"HELLO THERE\r\n\r\n".to_vec());
    cases.push(garbage);
    let mut raw_path = Case::new(P, "raw invalid UTF-8 bytes in the path", "", "", "");
    raw_path.raw =
        Some(b"GET /v1/rooms/\xff\xfe\x80AB HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec());
    cases.push(raw_path);
    let mut raw_ctl = Case::new(P, "a raw control character in the path", "", "", "");
    raw_ctl.raw =
        Some(b"GET /rooms/AB\x01CDE/participants HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec());
    cases.push(raw_ctl);
    let mut huge_header = Case::new(P, "a header of 1 MiB", "", "", "");
    huge_header.raw = Some(
        format!(
            "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Junk: {}\r\nConnection: close\r\n\r\n",
            "j".repeat(1024 * 1024)
        )
        .into_bytes(),
    );
    cases.push(huge_header);
    cases
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_in_the_surface_shape_and_the_hub_keeps_serving() {
    let hub = TestHub::start().await;
    let addr = hub.url.strip_prefix("http://").unwrap().to_string();
    let (code, _) = hub.room("Target", None).await;

    let cases = table(&code);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let res = send_raw(&addr, case.request(&addr)).await;
        if let Err(why) = check(case, &res) {
            failures.push(format!(
                "{} ({:?} {} {}): {why}",
                case.name,
                case.shape,
                case.method,
                String::from_utf8_lossy(&case.path).chars().take(80).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // The hub still serves, and no case created or registered anything.
    let (status, _, body) = call(http().get(hub.at("/v1/health"))).await;
    assert_eq!((status, &body["data"]["status"]), (200, &json!("ok")), "{body}");
    let (status, _, body) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(status, 200);
    let rooms = body["data"].as_array().unwrap();
    assert_eq!(rooms.len(), 1, "only the target room exists: {body}");
    assert_eq!(rooms[0]["code"], code.as_str());
    assert_eq!(rooms[0]["participantCount"], 0, "no hostile registration got through: {body}");
    let (status, _, body) = call(http().post(hub.at("/rooms")).json(&json!({"name": "Still here"}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = call(
        http()
            .post(hub.at(&format!("/rooms/{code}/join")))
            .json(&json!({"nickname": "A", "model": "llama3", "endpoint": "http://127.0.0.1:9"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn legitimate_unicode_names_are_accepted() {
    let hub = TestHub::start().await;
    let name = "Café ☕ 会议";
    for path in ["/rooms", "/v1/rooms"] {
        let (status, _, body) = call(http().post(hub.at(path)).json(&json!({"name": name}))).await;
        assert_eq!(status, 201, "{path}: {body}");
        let room = if path == "/rooms" { &body["room"] } else { &body["data"]["room"] };
        assert_eq!(room["name"], name, "kept exactly");
    }
    // The same through raw bytes, with the name's UTF-8 as is.
    let addr = hub.url.strip_prefix("http://").unwrap().to_string();
    let body = format!(r#"{{"name": "{name}"}}"#);
    let res = send_raw(&addr, Case::new(Shape::V1, "", "POST", "/v1/rooms", body).request(&addr)).await;
    assert_eq!(res.status, 201);
    assert_eq!(res.json().unwrap()["data"]["room"]["name"], name);

    let (code, _) = hub.room("Room", None).await;
    let (status, _, body) = call(
        http()
            .put(hub.at(&format!("/v1/rooms/{code}/participants/w1")))
            .json(&json!({"nickname": "Zoë 🚀 ユーザー", "model": "llama3", "endpoint": "http://127.0.0.1:9"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["participant"]["nickname"], "Zoë 🚀 ユーザー");
    let (_, _, list) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 4);
}

/// Issue 6's additions to [`table`]: the inference plane (open and protected rooms), path tricks in
/// codes and ids on every surface, and header tricks. `open` is a room without participants,
/// `locked` one with a password.
fn wide_table(open: &str, locked: &str) -> Vec<Case> {
    use Shape::{Classic as C, OpenAi as O, Protocol as P, V1 as V};
    let nested_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested_objects = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated JSON", br#"{"model": "*", "messages": ["#.to_vec()),
        ("an array", b"[1, 2, 3]".to_vec()),
        ("a string", br#""hello""#.to_vec()),
        ("null", b"null".to_vec()),
        ("a number", b"42".to_vec()),
        ("10,000 nested arrays", nested_arrays.into_bytes()),
        ("10,000 nested objects", nested_objects.into_bytes()),
        ("invalid UTF-8", b"{\"model\": \"\xff\xfe\x80\", \"messages\": []}".to_vec()),
        ("a lone surrogate escape", br#"{"model": "\ud800", "messages": []}"#.to_vec()),
        ("a raw control character in a string", b"{\"model\": \"a\x01b\", \"messages\": []}".to_vec()),
        ("model: 5", br#"{"model": 5, "messages": []}"#.to_vec()),
        ("no model", br#"{"messages": [{"role": "user", "content": "hi"}]}"#.to_vec()),
        ("messages: \"x\"", br#"{"model": "*", "messages": "x"}"#.to_vec()),
        ("model: \"\"", br#"{"model": "", "messages": []}"#.to_vec()),
        ("an empty body", Vec::new()),
        ("a 2 MiB model name", format!(r#"{{"model": "{}", "messages": []}}"#, "m".repeat(2 << 20)).into_bytes()),
        ("a number out of range", br#"{"model": "*", "temperature": 1e400}"#.to_vec()),
        ("trailing garbage", br#"{"model": "*", "messages": []} trailing"#.to_vec()),
        ("a byte-order mark", b"\xef\xbb\xbf{\"model\": \"*\"}".to_vec()),
        ("model: an object", br#"{"model": {"$ne": null}, "messages": []}"#.to_vec()),
    ];
    let mut cases = Vec::new();
    for endpoint in ["chat/completions", "responses"] {
        for (name, body) in &bodies {
            cases.push(Case::new(
                O,
                format!("{name} (inference {endpoint})"),
                "POST",
                format!("/rooms/{open}/v1/{endpoint}"),
                body.clone(),
            ));
        }
    }
    // A protected room's inference plane without its key.
    let chat = format!("/rooms/{locked}/v1/chat/completions");
    let models = format!("/rooms/{locked}/v1/models");
    for (name, auth) in [
        ("no key", None),
        ("a wrong key", Some("Bearer wrong".to_string())),
        ("basic auth", Some("Basic dTpw".to_string())),
        ("an empty bearer", Some("Bearer ".to_string())),
        ("a 10 KiB key", Some(format!("Bearer {}", "k".repeat(10 * 1024)))),
    ] {
        for (path, method, body) in [(&chat, "POST", r#"{"model": "*", "messages": []}"#), (&models, "GET", "")] {
            let mut case =
                Case::new(O, format!("{name} ({method} locked inference)"), method, path.as_str(), body).status(401);
            if let Some(auth) = &auth {
                let mut raw = case.request("localhost");
                let at = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
                let header = format!("Authorization: {auth}\r\n");
                raw.splice(at..at, header.into_bytes());
                case.raw = Some(raw);
            }
            cases.push(case);
        }
    }
    // Path tricks in room codes, on each surface.
    let long = "A".repeat(300);
    for code in [
        "..",
        "%2e%2e",
        "ABC%2F12",
        "ABC12",
        "ABCDEFG",
        "%00ABCDE",
        "%C3%84BC123",
        "ABC123%20",
        "ABC123%3Fx=1",
        "%FF%FE",
        long.as_str(),
        "ABC123;x",
        "ABC123%0d%0a",
    ] {
        cases.push(Case::new(
            C,
            format!("code {code:.20} (classic)"),
            "GET",
            format!("/rooms/{code}/participants"),
            "",
        ));
        cases.push(Case::new(V, format!("code {code:.20} (/v1)"), "GET", format!("/v1/rooms/{code}"), ""));
        cases.push(Case::new(O, format!("code {code:.20} (inference)"), "GET", format!("/rooms/{code}/v1/models"), ""));
    }
    // Path tricks in participant ids.
    let long = "i".repeat(300);
    for id in ["..", "%2e%2e", "a%2Fb", "a%00b", "%FF", long.as_str(), "a%20b", "a%0d%0ab", "%C3%A9", "a%3Fb"] {
        cases.push(Case::new(
            V,
            format!("id {id:.20} (/v1 get)"),
            "GET",
            format!("/v1/rooms/{open}/participants/{id}"),
            "",
        ));
        cases.push(Case::new(
            V,
            format!("id {id:.20} (/v1 heartbeat)"),
            "POST",
            format!("/v1/rooms/{open}/participants/{id}/heartbeat"),
            "",
        ));
        cases.push(Case::new(
            C,
            format!("id {id:.20} (classic leave)"),
            "DELETE",
            format!("/rooms/{open}/leave/{id}"),
            "",
        ));
    }
    // Header tricks, each a whole raw request.
    let raw = |name: &str, shape: Shape, status: Option<u16>, request: Vec<u8>| {
        let mut case = Case::new(shape, name, "", "", "");
        case.status = status;
        case.raw = Some(request);
        case
    };
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    cases.extend([
        raw(
            "150 headers",
            P,
            Some(431),
            format!("GET /v1/health HTTP/1.1\r\nHost: localhost\r\n{many}Connection: close\r\n\r\n").into_bytes(),
        ),
        raw(
            "a 100 KiB header",
            P,
            Some(431),
            format!("GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "b".repeat(100 << 10))
                .into_bytes(),
        ),
        raw(
            "Content-Length and Transfer-Encoding both",
            P,
            None,
            b"POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        raw(
            "two different Content-Lengths",
            P,
            None,
            b"POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{}".to_vec(),
        ),
        raw(
            "Content-Length: -1",
            P,
            None,
            b"POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        raw(
            "a NUL in a header value",
            P,
            None,
            b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Nul: a\x00b\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        raw(
            "a header name with a space",
            P,
            None,
            b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nBad Name: v\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        raw(
            "a UTF-16 body (/v1 create)",
            V,
            Some(400),
            [
                &b"POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json; charset=utf-16\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"[..],
                &[0xff, 0xfe, b'{', 0, b'}', 0, b' ', 0, b' ', 0, b' ', 0][..],
            ]
            .concat(),
        ),
        raw(
            "a declared 100 MiB body, never sent (inference)",
            O,
            Some(413),
            format!(
                "POST /rooms/{open}/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
                100u64 << 20
            )
            .into_bytes(),
        ),
        raw(
            "a declared 100 MiB body, never sent (/v1)",
            V,
            Some(413),
            format!(
                "POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
                100u64 << 20
            )
            .into_bytes(),
        ),
        raw(
            "an absurd Content-Length",
            P,
            None,
            b"POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n".to_vec(),
        ),
    ]);
    // 100 MiB really sent, as one body, to the inference plane: refused after 32 MiB.
    let mut huge = format!(
        "POST /rooms/{open}/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let piece = vec![b' '; 1 << 20];
    for _ in 0..100 {
        huge.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        huge.extend_from_slice(&piece);
        huge.extend_from_slice(b"\r\n");
    }
    huge.extend_from_slice(b"0\r\n\r\n");
    cases.push(raw("100 MiB chunked body (inference)", O, Some(413), huge));
    cases
}

/// Tunnel cases: refused upgrades, then garbage frames on an open tunnel, each followed by a ping
/// that must still be answered; an oversize frame must end in a clean close. Returns the cases run.
async fn tunnel_cases(url: &str, code: &str, pass: usize, failures: &mut Vec<String>) -> usize {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    use crate::tunnel::{dial, register, register_as};
    let mut n = 0;
    let mut expect = |name: &str, ok: bool, detail: String| {
        n += 1;
        if !ok {
            failures.push(format!("tunnel: {name}: {detail}"));
        }
    };
    // Ids of their own in each pass: an id stays its first registrant's.
    let (a_id, b_id) = (format!("tun-a{pass}"), format!("tun-b{pass}"));
    let a = register(url, code, &a_id).await;
    let b = register(url, code, &b_id).await;
    // A later registration's tunnel token: its upgrade needs the participant token too.
    let later = register_as(url, code, &a_id, Some(&a.participant_token)).await;
    let a_path = format!("/{a_id}/");
    for (name, dial_url, token, participant, want) in [
        ("no tunnel token", a.url.clone(), String::new(), Some(a.participant_token.clone()), 401),
        ("a wrong tunnel token", a.url.clone(), "gt_wrong".into(), Some(a.participant_token.clone()), 401),
        ("another participant's tunnel token", a.url.clone(), b.token.clone(), Some(a.participant_token.clone()), 401),
        ("no participant token for a later tunnel", a.url.clone(), later.token.clone(), None, 401),
        ("a wrong participant token", a.url.clone(), later.token.clone(), Some("gp_wrong".into()), 403),
        ("an unknown participant", a.url.replace(&a_path, "/ghost/"), a.token.clone(), None, 404),
        ("an unknown room", a.url.replace(code, "ZZZZZ9"), a.token.clone(), None, 404),
        ("an id with a path trick", a.url.replace(&a_path, "/%2e%2e/"), a.token.clone(), None, 404),
    ] {
        let got = dial(&dial_url, &token, participant.as_deref()).await.err();
        expect(name, got == Some(want), format!("{got:?} instead of {want}"));
    }
    let plain = http().get(format!("{}?token=x", a.url.replace("ws://", "http://"))).send().await.unwrap();
    expect(
        "a plain GET of the tunnel route",
        plain.status() == 401 || plain.status() == 400,
        format!("{}", plain.status()),
    );

    let fresh = register_as(url, code, &a_id, Some(&a.participant_token)).await;
    let mut ws = dial(&fresh.url, &fresh.token, Some(&a.participant_token)).await.unwrap();
    let big_text = format!("{{\"type\":\"tunnel.ping\",\"pad\":\"{}\"}}", "p".repeat(1 << 20));
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let frames: Vec<(&str, Message)> = vec![
        ("a binary frame", Message::Binary(vec![0, 159, 146, 150].into())),
        ("not JSON", Message::Text("nope".into())),
        ("a JSON array", Message::Text("[]".into())),
        ("an unknown type", Message::Text(r#"{"type":"tunnel.evil","x":1}"#.into())),
        (
            "a chunk for an unknown request",
            Message::Text(r#"{"type":"tunnel.response.chunk","requestId":"x","chunk":"aGk="}"#.into()),
        ),
        (
            "a chunk that is not base64",
            Message::Text(r#"{"type":"tunnel.response.chunk","requestId":"x","chunk":"%%%"}"#.into()),
        ),
        (
            "a start with status 99999",
            Message::Text(r#"{"type":"tunnel.response.start","requestId":"x","status":99999}"#.into()),
        ),
        (
            "a request sent by a participant",
            Message::Text(
                r#"{"type":"tunnel.request","requestId":"x","operation":"o","method":"GET","path":"/"}"#.into(),
            ),
        ),
        ("a 1 MiB frame", Message::Text(big_text.into())),
        ("10,000 nested arrays", Message::Text(nested.into())),
        ("control characters", Message::Text("{\"type\":\"tunnel.ping\u{1}\u{7f}\"}".into())),
    ];
    for (name, frame) in frames {
        let sent = ws.send(frame).await.is_ok();
        let ping = ws.send(Message::Text(r#"{"type":"tunnel.ping","timestamp":9}"#.into())).await.is_ok();
        let pong = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.contains("tunnel.pong") => return true,
                    Some(Ok(_)) => continue,
                    _ => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        expect(name, sent && ping && pong, "the tunnel did not survive it".into());
    }
    // A frame over the 16 MiB limit: the hub closes the tunnel, cleanly.
    let oversize = Message::Binary(vec![0u8; 17 << 20].into());
    let _ = ws.send(oversize).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    expect("a 17 MiB frame", closed, "the tunnel stayed open".into());
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn over_200_hostile_cases_against_the_binary_and_its_memory_stays_put() {
    let hub = crate::util::BinHub::start_with_env(&["--header-read-timeout", "1s"], &[("RUST_LOG", "info")]);
    let addr = hub.url.strip_prefix("http://").unwrap().to_string();
    let create = |name: &str, password: Option<&str>| {
        let mut body = json!({"name": name});
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        let url = hub.at("/v1/rooms");
        async move {
            let (status, _, v) = call(http().post(url).json(&body)).await;
            assert_eq!(status, 201, "{v}");
            v["data"]["room"]["code"].as_str().unwrap().to_string()
        }
    };
    let target = create("Target", None).await;
    let open = create("Open", None).await;
    let locked = create("Locked", Some("hostile-suite-pw")).await;
    let mut cases = table(&target);
    cases.extend(wide_table(&open, &locked));

    // The whole suite twice, measuring the hub's memory before and after each pass. (The hub's
    // allocator, mimalloc, gives freed memory back to the system: see the binary's `main.rs`.)
    let mut rss = Vec::new();
    let mut failures = Vec::new();
    let mut total = 0;
    rss.push(rss_kib(hub.child.id()));
    for pass in 0..2 {
        failures.clear();
        for case in &cases {
            let res = send_raw(&addr, case.request(&addr)).await;
            if let Err(why) = check(case, &res) {
                failures.push(format!("{} ({:?}): {why}", case.name, case.shape));
            }
        }
        total = cases.len();
        total += tunnel_cases(&hub.url, &open, pass, &mut failures).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss.push(rss_kib(hub.child.id()));
    }
    let (before, first) = (rss[0], rss[1]);

    // Slowloris: a request whose headers never finish is cut off at the deadline (1 s here).
    total += 1;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
    let mut buf = [0u8; 256];
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    if cut.is_err() {
        failures.push("slowloris: the connection stayed open past the header deadline".into());
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(hub.child.id());
    eprintln!(
        "hostile suite: {total} cases per pass against the binary, {} failed; hub RSS {before} KiB before, \
         {first} KiB after one pass, {after} KiB after two ({:+} KiB)",
        failures.len(),
        after as i64 - before as i64
    );
    assert!(total >= 200, "only {total} cases");
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(after <= before + 10 * 1024, "RSS grew from {before} KiB to {after} KiB");

    // Still serving, nothing created by the suite, no crash.
    let (status, _, body) = call(http().get(hub.at("/v1/health"))).await;
    assert_eq!(status, 200, "{body}");
    let (_, _, rooms) = call(http().get(hub.at("/v1/rooms"))).await;
    assert_eq!(rooms["data"].as_array().unwrap().len(), 3, "{rooms}");
    let log = hub.log();
    assert!(!log.contains("panicked"), "the hub panicked:\n{log}");
    assert!(!log.contains("hostile-suite-pw"), "the room password reached the log");
}
