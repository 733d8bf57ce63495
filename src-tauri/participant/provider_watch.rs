//! The provider watch: while a session shares, it asks the provider (the local model server) every
//! couple of seconds whether it still answers, and publishes what it finds as a
//! [`ProviderHealth`]. The session turns a change into a heartbeat at once (the hub pauses or
//! resumes the participant), and the supervisor into a [`super::ShareState`] for the CLI and the
//! app. Deciding what "answering" means lives here; telling the hub lives in the session.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// How often a session looks at its provider.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long one look may take: a local server lists its models in milliseconds, so one that takes
/// longer is stuck (a port that accepts and never answers).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Looks in a row that must fail before the share is paused: one stray failure (a keep-alive
/// connection the server had just closed) must not pause a share.
pub const FAILURES_TO_PAUSE: u32 = 2;
/// After a first failure the next look comes this soon, so a provider that died is confirmed in
/// well under a second more rather than a whole interval.
pub const CONFIRM_AFTER: Duration = Duration::from_millis(500);

/// What the watch last found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProviderHealth {
    /// The provider answers (the probe before registering found it so, and every look since).
    Answering,
    /// [`FAILURES_TO_PAUSE`] looks in a row got no answer; `error` is the last one's.
    NotAnswering { error: String },
}

impl ProviderHealth {
    pub fn is_answering(&self) -> bool {
        matches!(self, ProviderHealth::Answering)
    }
}

/// One look: `GET /v1/models`, the listing the probe already reads. Any HTTP answer, even an error
/// status, means the server is there; only no answer at all (refused, reset, timed out) counts as
/// down, since that is what a stopped Ollama or LM Studio gives.
pub async fn check(http: &reqwest::Client, endpoint: &str, auth: &HeaderMap) -> Result<(), String> {
    let url = format!("{}/v1/models", endpoint.trim_end_matches('/'));
    match http.get(url).headers(auth.clone()).timeout(CHECK_TIMEOUT).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.is_timeout() => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        Err(e) if e.is_connect() => Err("connection refused".into()),
        Err(e) => Err(format!("the connection failed ({})", plain(&e))),
    }
}

/// The innermost cause, without reqwest's URL-laden outer words.
fn plain(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// Looks at the provider every `every` (and at once when `trouble` is notified: a call just failed
/// to reach it) until `stop`, publishing each change of health on `health`.
pub async fn run(
    http: reqwest::Client,
    endpoint: String,
    auth: HeaderMap,
    every: Duration,
    trouble: Arc<Notify>,
    health: watch::Sender<ProviderHealth>,
    stop: CancellationToken,
) {
    let every = every.max(Duration::from_millis(100));
    let mut failures = 0u32;
    let mut wait = every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = trouble.notified() => {}
        }
        let looked = tokio::select! {
            _ = stop.cancelled() => return,
            looked = check(&http, &endpoint, &auth) => looked,
        };
        match looked {
            Ok(()) => {
                failures = 0;
                wait = every;
                let back = health.send_if_modified(|h| {
                    let changed = !h.is_answering();
                    *h = ProviderHealth::Answering;
                    changed
                });
                if back {
                    tracing::info!(%endpoint, "the model server answers again; resuming the share");
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures < FAILURES_TO_PAUSE {
                    wait = CONFIRM_AFTER.min(every);
                    continue;
                }
                wait = every;
                let stopped = health.send_if_modified(|h| {
                    let changed = h.is_answering();
                    if changed {
                        *h = ProviderHealth::NotAnswering { error: error.clone() };
                    }
                    changed
                });
                if stopped {
                    tracing::warn!(%endpoint, %error, "the model server stopped answering; pausing the share");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_not_answering_and_any_http_answer_is() {
        let http = reqwest::Client::new();
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let down = check(&http, &format!("http://127.0.0.1:{closed}"), &HeaderMap::new()).await;
        assert_eq!(down, Err("connection refused".to_string()));

        // A server that answers 404 to everything is still there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, axum::Router::new()).await;
        });
        assert_eq!(check(&http, &url, &HeaderMap::new()).await, Ok(()));
        server.abort();
    }
}
