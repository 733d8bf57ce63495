//! A request id for every response: taken from a sane incoming `x-request-id` or made fresh, kept
//! in a task-local for the handler (so any error rendered deep inside can put it in `meta`), and
//! echoed as the `x-request-id` response header.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const HEADER: &str = "x-request-id";

/// The current request's id, or a fresh one outside a request.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| fresh())
}

/// `work` with this task's request id, wherever it is polled (a response body is polled outside
/// the handler's task-locals).
pub fn carry<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    REQUEST_ID.scope(current(), work)
}

fn fresh() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// Accept a caller's id only if it is short and plain, so it can be logged and echoed safely.
fn sane(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')))
    .then(|| s.to_string())
}

pub async fn middleware(req: Request, next: Next) -> Response {
    let id = req.headers().get(HEADER).and_then(sane).unwrap_or_else(fresh);
    let method = req.method().clone();
    // Only the path is logged: queries may carry tunnel tokens.
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    tracing::info!(
        target: "gambi::http",
        request_id = %id,
        %method,
        path = %path.escape_debug(),
        status = response.status().as_u16(),
        ms = format_args!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}
