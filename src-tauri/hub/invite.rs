//! The invite: `GET /join/:code`, a page anyone handed the link can read — how to share a model
//! into the room, how to use it from code, and a QR code of the link for phones and laptops nearby —
//! and `GET /join/:code/qr.svg`, the QR code alone (the dashboard's Room screen shows it).
//!
//! Both are drawn here, on the hub: plain HTML with the dashboard's stylesheet and no script, and the
//! QR code as SVG (the `qrcode` crate), so nothing is fetched from anywhere else and the page works
//! under the dashboard's Content-Security-Policy. Every URL on the page is built from the `Host`
//! the page was asked for, which is the one address the reader is known to reach the hub by.
//!
//! Text from the network (the room's name) is escaped; a code that names no room gets a friendly
//! 404 page, and one that cannot be a code is not echoed back.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use super::routes::Params;
use super::Hub;
use crate::protocol::{normalize_room_code, RoomSummary};

pub fn router() -> Router<Hub> {
    Router::new().route("/join/{code}", get(page)).route("/join/{code}/qr.svg", get(qr))
}

/// `http://HOST:PORT` as the request reached the hub: its `Host` when it is a plain host name or
/// address, else the address the hub listens on. `https` behind a proxy that says so.
pub fn origin_of(hub: &Hub, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .map(str::to_string)
        .or_else(|| hub.local_addr().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let secure =
        headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if secure { "https" } else { "http" })
}

/// The QR code of `text` as an SVG document, black on white with the standard quiet zone. Medium
/// error correction: a phone still reads it from a screen at an angle.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color>()
            .min_dimensions(240, 240)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

/// Escapes text for HTML content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The room a path names, or the code to say is not here (`None`: it cannot be a code).
fn find_room(hub: &Hub, raw: &str) -> Result<RoomSummary, Option<String>> {
    let code = normalize_room_code(raw);
    match code.as_deref().map(|c| hub.registry().room(c)) {
        Some(Ok(room)) => Ok(room),
        _ => Err(code),
    }
}

async fn page(State(hub): State<Hub>, Params { 0: code, .. }: Params<String, Html404>, headers: HeaderMap) -> Response {
    let room = match find_room(&hub, &code) {
        Ok(room) => room,
        Err(code) => return not_found(code.as_deref()),
    };
    let origin = origin_of(&hub, &headers);
    html(StatusCode::OK, &invite_page(&room, &origin))
}

async fn qr(State(hub): State<Hub>, Params { 0: code, .. }: Params<String, Html404>, headers: HeaderMap) -> Response {
    let room = match find_room(&hub, &code) {
        Ok(room) => room,
        Err(code) => return not_found(code.as_deref()),
    };
    let link = format!("{}/join/{}", origin_of(&hub, &headers), room.code);
    match qr_svg(&link) {
        Some(svg) => {
            let mut response = (StatusCode::OK, svg).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The SVG of a QR code, ready to put inside a page: without its XML declaration, labelled.
fn inline_qr(link: &str) -> String {
    let Some(svg) = qr_svg(link) else { return String::new() };
    let svg = svg.find("<svg").map_or(svg.as_str(), |at| &svg[at..]).to_string();
    svg.replacen(
        "<svg ",
        &format!("<svg class=\"qr\" id=\"invite-qr\" role=\"img\" aria-label=\"QR code of {}\" ", escape(link)),
        1,
    )
}

fn invite_page(room: &RoomSummary, origin: &str) -> String {
    let code = &room.code;
    let name = escape(&room.name);
    let link = format!("{origin}/join/{code}");
    let base = format!("{origin}/rooms/{code}/v1");
    let (key, key_words) = if room.password_protected {
        ("ROOM_PASSWORD", "The API key is the room's password: ask the person who invited you for it.")
    } else {
        ("gambi", "This room has no password: any API key works.")
    };
    let curl = escape(&format!(
        "curl {base}/chat/completions \\\n  -H \"Content-Type: application/json\" \\\n  -H \"Authorization: Bearer {key}\" \\\n  -d '{{\"model\": \"*\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'"
    ));
    let python = escape(&format!(
        "from openai import OpenAI\n\nclient = OpenAI(base_url=\"{base}\", api_key=\"{key}\")\nreply = client.chat.completions.create(\n    model=\"*\",\n    messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}],\n)\nprint(reply.choices[0].message.content)"
    ));
    let password = if room.password_protected { " --password '<room password>'" } else { "" };
    let command = escape(&format!("gambi join {code} --hub {origin}{password}"));
    let lock = if room.password_protected {
        "<p class=\"help\">This room has a password. Whoever invited you can tell you it.</p>"
    } else {
        ""
    };
    let qr = inline_qr(&link);
    let link = escape(&link);
    let base = escape(&base);
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <meta name="referrer" content="no-referrer">
  <title>Join {name} · Gambi</title>
  <link rel="icon" href="/icon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/style.css">
</head>
<body>
  <header class="topbar">
    <div class="topbar-inner">
      <a class="brand" href="/" aria-label="Gambi home"><img src="/icon.svg" alt="" width="28" height="28"><span>Gambi</span></a>
    </div>
  </header>
  <main id="main" class="view invite-page">
    <div class="page-head">
      <div>
        <h1 class="page-title" id="invite-title">Join {name}</h1>
        <p class="page-sub">You're invited to a Gambi room: the computers in it pool their AI models, and the room answers like one OpenAI endpoint. Room code <span class="code-badge mono" id="invite-code">{code}</span></p>
        {lock}
      </div>
    </div>
    <div class="invite-layout">
      <section class="panel" aria-labelledby="share-title">
        <h2 class="panel-title" id="share-title">Share your model</h2>
        <ol class="steps">
          <li>Get the Gambi app on the computer that runs your model (Ollama or LM Studio).</li>
          <li>Open this link on that computer, or type the room code <strong class="mono">{code}</strong> in the app.</li>
          <li>Click <strong>Share</strong>. That's it: the room can use your model while the app is sharing.</li>
        </ol>
        <p class="help">Prefer a terminal? This does the same:</p>
        <div class="code"><pre tabindex="0"><code id="invite-command">{command}</code></pre></div>
        <p><a href="/#/room/{code}">See who is in the room and what it is doing</a></p>
      </section>
      <section class="panel invite-qr-panel" aria-labelledby="qr-title">
        <h2 class="panel-title" id="qr-title">Open on another device</h2>
        {qr}
        <p class="mono small invite-link" id="invite-link">{link}</p>
      </section>
    </div>
    <section class="panel" aria-labelledby="code-title">
      <h2 class="panel-title" id="code-title">Use the room from code</h2>
      <p>Any OpenAI client works. Base URL:</p>
      <div class="code"><pre tabindex="0"><code id="invite-base-url">{base}</code></pre></div>
      <p class="help">{key_words} Model <code>*</code> picks any model in the room, <code>model:NAME</code> one that serves that model.</p>
      <div class="code"><pre tabindex="0"><code id="invite-curl">{curl}</code></pre></div>
      <div class="code"><pre tabindex="0"><code id="invite-python">{python}</code></pre></div>
    </section>
  </main>
</body>
</html>
"##
    )
}

/// The page for a code that names no room here.
fn not_found(code: Option<&str>) -> Response {
    let what = match code {
        Some(code) => format!("There is no room {} on this Gambi.", escape(code)),
        None => format!("That isn't a room code: a code is {}.", crate::protocol::ROOM_CODE_SHAPE),
    };
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <title>Room not found · Gambi</title>
  <link rel="icon" href="/icon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/style.css">
</head>
<body>
  <header class="topbar">
    <div class="topbar-inner">
      <a class="brand" href="/" aria-label="Gambi home"><img src="/icon.svg" alt="" width="28" height="28"><span>Gambi</span></a>
    </div>
  </header>
  <main id="main" class="view">
    <div class="narrow">
      <div class="empty">
        <h1 class="empty-title" id="not-found">Room not found</h1>
        <p>{what}</p>
        <p class="muted">The room may have been closed, or the link may point to another computer's Gambi. Ask whoever sent it for a fresh invite.</p>
        <p><a class="btn btn-primary" href="/">See the rooms here</a></p>
      </div>
    </div>
  </main>
</body>
</html>
"#
    );
    html(StatusCode::NOT_FOUND, &body)
}

fn html(status: StatusCode, body: &str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The dashboard's own policy: its stylesheet and icon, no script at all, inline SVG is markup.
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(super::ui::CONTENT_SECURITY_POLICY));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// A path that does not parse (bad percent-encoding) gets the 404 page too.
pub struct Html404;

impl From<super::HubError> for Html404 {
    fn from(_: super::HubError) -> Self {
        Html404
    }
}

impl IntoResponse for Html404 {
    fn into_response(self) -> Response {
        not_found(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(escape(r#"<b onclick="x">&'"#), "&lt;b onclick=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_qr_code_is_an_svg_with_modules() {
        let svg = qr_svg("http://192.168.1.20:3000/join/K7QX2M").unwrap();
        assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
        let inline = inline_qr("http://192.168.1.20:3000/join/K7QX2M");
        assert!(inline.starts_with("<svg class=\"qr\""), "{inline}");
        assert!(!inline.contains("<?xml"));
    }

    #[test]
    fn the_page_names_the_room_its_link_and_base_url() {
        let room: RoomSummary = serde_json::from_value(serde_json::json!({
            "id": "r", "code": "K7QX2M", "name": "<Lab>", "hostId": "h", "createdAt": 0, "passwordProtected": false
        }))
        .unwrap();
        let page = invite_page(&room, "http://gpu-box.local:3000");
        assert!(page.contains("Join &lt;Lab&gt;"));
        assert!(!page.contains("<Lab>"));
        assert!(page.contains("http://gpu-box.local:3000/rooms/K7QX2M/v1"));
        assert!(page.contains("http://gpu-box.local:3000/join/K7QX2M"));
        assert!(!page.contains("<script"), "the page needs no script");
    }
}
