//! What keeps web pages from driving the hub. Any page a user opens can send requests to
//! `http://localhost:3000` or to the LAN hub; these layers decide what such requests may do.
//!
//! - **Host** (DNS rebinding): a hub bound to loopback answers only `localhost` (and `*.localhost`),
//!   `127.0.0.1` and `[::1]`; a hub on the LAN also answers IP literals, this machine's host name,
//!   `*.local` and the names given with `--allowed-host`. Any other `Host` is refused with 403.
//! - **Origin** (cross-site requests): a request whose `Origin` is neither the hub's own (the
//!   `Host` it was sent to) nor allowed with `--cors` is refused; so is a tunnel upgrade from such a
//!   page. The one exception is the inference plane of a room with a password: its key is the
//!   guard, so browser OpenAI clients on any origin keep working there (and get a CORS grant).
//! - **Headers**: every answer carries `X-Content-Type-Options: nosniff` and `X-Frame-Options:
//!   DENY`; every answer that does not set its own policy (the dashboard's pages do) gets `Content-Security-Policy: default-src
//!   'none'; sandbox`, so nothing the hub relays can run script on its origin.
//!
//! JSON bodies must say they are JSON (see `body.rs`), so a `text/plain` "simple request" cannot
//! skip the browser's preflight.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use super::error::{ApiError, ClassicError, HubError};
use super::Hub;

/// The policy of every answer that is not the dashboard's own page or file.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; sandbox";

/// The names and origins a hub accepts beyond its defaults.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Host names allowed with `--allowed-host` (lower case; `*.example.com` matches subdomains,
    /// `*` any name).
    pub allowed_hosts: Vec<String>,
    /// Origins allowed with `--cors` (`*`: any).
    pub cors_origins: Vec<String>,
    /// This machine's own names (its host name), allowed on a LAN hub.
    pub machine_names: Vec<String>,
}

impl BrowserPolicy {
    pub fn new(allowed_hosts: &[String], cors_origins: &[String]) -> Self {
        let mut machine_names = Vec::new();
        if let Ok(name) = sysinfo::System::host_name() {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if !name.is_empty() {
                machine_names.push(name);
            }
        }
        BrowserPolicy {
            allowed_hosts: allowed_hosts.iter().map(|h| normal_host(h)).filter(|h| !h.is_empty()).collect(),
            cors_origins: cors_origins.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).collect(),
            machine_names,
        }
    }

    fn any_origin(&self) -> bool {
        self.cors_origins.iter().any(|o| o == "*")
    }

    fn origin_listed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.any_origin() || self.cors_origins.contains(&origin)
    }

    /// True when a hub (bound to loopback or not) answers to `host` (the `Host` header, port and
    /// all).
    pub fn host_allowed(&self, host: &str, bound_to_loopback: bool) -> bool {
        let name = normal_host(host);
        if name.is_empty() {
            return false;
        }
        if is_loopback_name(&name) || self.listed(&name) {
            return true;
        }
        if bound_to_loopback {
            return false;
        }
        is_ip_literal(&name) || name.ends_with(".local") || self.machine_names.contains(&name)
    }

    fn listed(&self, name: &str) -> bool {
        self.allowed_hosts.iter().any(|allowed| {
            allowed == "*"
                || allowed == name
                || allowed.strip_prefix("*.").is_some_and(|base| name.ends_with(&format!(".{base}")))
        })
    }
}

/// A `Host` header (or `--allowed-host` value) reduced to its name: lower case, no port, no
/// trailing dot; IPv6 literals keep their brackets.
fn normal_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    let name = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => host[..=end].to_string(),
            None => return String::new(),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
            Some(_) => return String::new(),
            None => host,
        }
    };
    name.trim_end_matches('.').to_string()
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost") || name == "[::1]" || name == "127.0.0.1"
}

fn is_ip_literal(name: &str) -> bool {
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    bare.parse::<std::net::IpAddr>().is_ok()
}

/// True when `origin` is the hub's own: the scheme-less part equals the `Host` the request was
/// sent to.
fn same_origin(origin: &str, host: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let rest = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|authority| authority.trim_end_matches('/') == host.trim().to_ascii_lowercase())
}

/// The room code of an inference-plane path (`/rooms/CODE/v1/...`).
fn inference_room(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/rooms/")?;
    let (code, tail) = rest.split_once('/')?;
    (tail == "v1" || tail.starts_with("v1/")).then_some(code)
}

/// True when a request on `path` from a foreign origin is guarded by a room key: the inference
/// plane of a room that has a password.
fn key_guarded(hub: &Hub, path: &str) -> bool {
    inference_room(path)
        .and_then(|code| super::routes::room_code(code).ok())
        .and_then(|code| hub.registry().room(&code).ok())
        .is_some_and(|room| room.password_protected)
}

/// Renders `error` in the shape of the surface `path` belongs to.
fn refuse(path: &str, error: HubError) -> Response {
    if super::inference::routes::is_inference_path(path) {
        super::inference::routes::error_response(path, error)
    } else if path == "/v1" || path.starts_with("/v1/") {
        ApiError(error).into_response()
    } else {
        ClassicError(error).into_response()
    }
}

/// The Host and Origin checks, then the security headers on whatever is answered.
pub async fn middleware(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let policy = hub.browser_policy();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
    // HTTP/1.1 clients always send Host; browsers always do. A request with none (HTTP/1.0 tools)
    // cannot come from a rebinding page.
    if let Some(host) = &host {
        let loopback = hub.local_addr().is_some_and(|a| a.ip().is_loopback());
        if !policy.host_allowed(host, loopback) {
            let shown: String = normal_host(host).chars().take(100).collect();
            let shown = if shown.is_empty() { host.chars().take(100).collect() } else { shown };
            tracing::warn!(host = %shown.escape_debug(), "refused a request for a host name this hub does not answer to");
            return with_headers(refuse(&path, HubError::HostNotAllowed { host: shown }));
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null").to_string();
        let own = host.as_deref().is_some_and(|h| same_origin(&origin, h));
        if !own && !policy.origin_listed(&origin) && !key_guarded(&hub, &path) {
            let shown: String = origin.chars().take(100).collect();
            return with_headers(refuse(&path, HubError::OriginNotAllowed { origin: shown }));
        }
    }
    with_headers(next.run(req).await)
}

/// The security headers; a page that set its own policy (the dashboard's) keeps it.
fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CONTENT_SECURITY_POLICY));
    }
    response
}

/// CORS: no grant by default; the origins of `--cors`; any origin on the inference plane of a
/// room with a password (its key is the guard).
pub fn cors(hub: &Hub) -> CorsLayer {
    let hub = hub.clone();
    CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers([axum::http::HeaderName::from_static(super::request_id::HEADER)])
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, parts| {
            let origin = origin.to_str().unwrap_or("null");
            hub.browser_policy().origin_listed(origin) || key_guarded(&hub, parts.uri.path())
        }))
}

/// A `--cors` value: `*` or an origin (`http://` or `https://`, a host, an optional port).
pub fn parse_origin(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    if value == "*" {
        return Ok(value.to_string());
    }
    let bad = || format!("'{value}' is not an origin: give scheme, host and port, like http://localhost:5173");
    let url = reqwest::Url::parse(value).map_err(|_| bad())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !plain {
        return Err(bad());
    }
    Ok(value.to_ascii_lowercase())
}

/// An `--allowed-host` value: a host name (or `*.name`, or `*`), without scheme or port.
pub fn parse_host_name(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = value.strip_prefix("*.").unwrap_or(&value);
    let ok = value == "*"
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if ok {
        Ok(value)
    } else {
        Err(format!("'{value}' is not a host name: give just the name, like gambi.example.org (no scheme, no port)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], origins: &[&str]) -> BrowserPolicy {
        BrowserPolicy {
            allowed_hosts: hosts.iter().map(|h| normal_host(h)).collect(),
            cors_origins: origins.iter().map(|o| o.to_string()).collect(),
            machine_names: vec!["gpu-box".into()],
        }
    }

    #[test]
    fn a_loopback_hub_answers_only_loopback_names() {
        let p = policy(&[], &[]);
        for ok in ["localhost:3000", "127.0.0.1:3000", "[::1]:3000", "LOCALHOST", "app.localhost:1", "localhost."] {
            assert!(p.host_allowed(ok, true), "{ok}");
        }
        for bad in ["evil.example", "evil.example:3000", "192.168.1.2:3000", "gpu-box:3000", "x.local", "", "a:b:c"] {
            assert!(!p.host_allowed(bad, true), "{bad}");
        }
    }

    #[test]
    fn a_lan_hub_also_answers_addresses_its_names_and_dot_local() {
        let p = policy(&["hub.example.org", "*.corp.example"], &[]);
        for ok in [
            "192.168.1.2:3000",
            "[fe80::1]:3000",
            "gpu-box:3000",
            "GPU-BOX.local:3000",
            "hub.example.org",
            "a.corp.example:3000",
            "localhost:3000",
        ] {
            assert!(p.host_allowed(ok, false), "{ok}");
        }
        for bad in ["evil.example:3000", "corp.example.evil", "hub.example.org.evil:1", "1.2.3.4.evil"] {
            assert!(!p.host_allowed(bad, false), "{bad}");
        }
        assert!(policy(&["*"], &[]).host_allowed("anything.example", true));
        assert!(p.host_allowed("hub.example.org:3000", true), "--allowed-host counts on loopback too");
    }

    #[test]
    fn origins_are_the_hubs_own_or_listed() {
        assert!(same_origin("http://127.0.0.1:3000", "127.0.0.1:3000"));
        assert!(same_origin("http://Hub.local:3000", "hub.local:3000"));
        assert!(!same_origin("http://127.0.0.1:3001", "127.0.0.1:3000"));
        assert!(!same_origin("null", "127.0.0.1:3000"));
        let p = policy(&[], &["http://app.example:8080"]);
        assert!(p.origin_listed("http://app.example:8080"));
        assert!(p.origin_listed("HTTP://APP.EXAMPLE:8080/"));
        assert!(!p.origin_listed("http://app.example:8081"));
        assert!(policy(&[], &["*"]).origin_listed("http://any.example"));
    }

    #[test]
    fn inference_paths_name_their_room() {
        assert_eq!(inference_room("/rooms/ABC123/v1/chat/completions"), Some("ABC123"));
        assert_eq!(inference_room("/rooms/ABC123/v1"), Some("ABC123"));
        assert_eq!(inference_room("/rooms/ABC123/join"), None);
        assert_eq!(inference_room("/v1/rooms/ABC123"), None);
    }

    #[test]
    fn origins_and_host_names_are_checked_when_given() {
        assert_eq!(parse_origin("http://LOCALHOST:5173/").unwrap(), "http://localhost:5173");
        assert_eq!(parse_origin("*").unwrap(), "*");
        for bad in ["localhost:5173", "http://a.example/path", "ftp://a.example", "http://u:p@a.example", "nonsense"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_host_name("Hub.Example.org.").unwrap(), "hub.example.org");
        assert_eq!(parse_host_name("*.corp.example").unwrap(), "*.corp.example");
        for bad in ["http://hub.example", "hub.example:3000", "", "a..b", "hub example"] {
            assert!(parse_host_name(bad).is_err(), "{bad}");
        }
    }
}
