//! The web dashboard: the files of `ui/`, embedded in the binary at build time, served at `/`
//! (`index.html`) and at their own paths (`/app.js`, `/style.css`, `/views/room.js`, ...). The
//! desktop app shows the same files in its window; this module is how every browser on the LAN
//! gets them from `gambi hub serve`.
//!
//! Only the files that exist get a route, so any other path still falls through to the hub's
//! fallback and keeps its surface's 404 shape. Every answer carries a strict Content-Security-Policy
//! (no inline script or style, nothing from another origin) and is revalidated on each load
//! (`no-cache` with an `ETag`), so a hub upgrade is never hidden behind a stale cached script.
//! The UI itself uses relative URLs only, so it works whichever host name or address reached the
//! hub.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir, File};
use sha2::{Digest, Sha256};

use super::Hub;

static UI: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/ui");

/// The policy of every UI answer. `connect-src 'self'` covers the API calls and the SSE stream.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// First path segments that belong to the API: a UI file there would shadow (or clash with) a route.
const RESERVED: &[&str] = &["rooms", "v1", "join"];

/// One embedded file, ready to serve.
#[derive(Clone)]
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

/// The routes of the dashboard, to merge into the hub's router before its fallback.
pub fn router() -> Router<Hub> {
    let mut router = Router::new();
    for (path, file) in files() {
        let asset = asset(&path, file);
        if path == "index.html" {
            let index = asset.clone();
            router = router.route("/", get(move |headers: HeaderMap| serve(index.clone(), headers)));
        }
        router = router.route(&format!("/{path}"), get(move |headers: HeaderMap| serve(asset.clone(), headers)));
    }
    router
}

/// Every servable file of `ui/` with its URL path (forward slashes, no leading one). Hidden files
/// and anything under a reserved first segment are left out.
fn files() -> Vec<(String, &'static File<'static>)> {
    let mut out = Vec::new();
    collect(&UI, &mut out);
    out.retain(|(path, _)| {
        let first = path.split('/').next().unwrap_or_default();
        !path.split('/').any(|part| part.starts_with('.') || part.is_empty()) && !RESERVED.contains(&first)
    });
    out
}

fn collect(dir: &'static Dir<'static>, out: &mut Vec<(String, &'static File<'static>)>) {
    for file in dir.files() {
        let parts: Vec<String> =
            file.path().components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        out.push((parts.join("/"), file));
    }
    for sub in dir.dirs() {
        collect(sub, out);
    }
}

fn asset(path: &str, file: &'static File<'static>) -> Asset {
    let body = file.contents();
    let digest = Sha256::digest(body);
    let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
        .unwrap_or_else(|_| HeaderValue::from_static("\"ui\""));
    Asset { body, content_type: content_type(path), etag }
}

/// The content type by extension. Module scripts must be served as JavaScript or the browser
/// refuses them (and `nosniff` forbids guessing).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn serve(asset: Asset, headers: HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == asset.etag.to_str().unwrap_or_default()));
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (StatusCode::OK, asset.body).into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::ETAG, asset.etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_scripts_are_embedded() {
        let paths: Vec<String> = files().into_iter().map(|(p, _)| p).collect();
        for wanted in ["index.html", "app.js", "backend.js", "dom.js", "style.css", "views/room.js"] {
            assert!(paths.iter().any(|p| p == wanted), "{wanted} missing from {paths:?}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("views/Room.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("icon.svg"), "image/svg+xml");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }

    #[test]
    fn no_ui_file_may_shadow_the_api() {
        for (path, _) in files() {
            let first = path.split('/').next().unwrap_or_default();
            assert!(!RESERVED.contains(&first), "{path}");
        }
    }
}
