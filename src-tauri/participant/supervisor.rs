//! Keeps a participant session alive: when the tunnel closes or the heartbeat fails (a hub restart,
//! a network blip, a laptop waking up), it registers again with the same participant id after a
//! backoff (1 s doubling to 30 s), or at once when the hub that did not answer answers again (it
//! is asked every 2 s while the share waits) or when asked to ([`Supervisor::retry_now`]).
//! Re-registering the same id is an update on the hub, so no duplicate participant is ever left
//! behind. While a session runs, its provider watch may pause the
//! share (the model server stopped answering) and resume it, without a new registration. Each
//! transition is published as a [`ShareState`] the CLI and the desktop app show.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::client::HubClient;
use crate::protocol::PauseReason;

use super::provider_watch::ProviderHealth;
use super::session::{CloseReason, ParticipantSession, SessionError, SessionOptions};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// While the share waits to retry a hub that did not answer, how often it asks whether it is back:
/// a hub that answers again is retried at once, however long the backoff has grown.
const HUB_BACK_POLL: Duration = Duration::from_secs(2);

/// Where a supervised share stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ShareState {
    Starting,
    #[serde(rename_all = "camelCase")]
    Live {
        room_code: String,
        participant_id: String,
        hub_url: String,
        model: String,
    },
    /// Registered and connected, but the room does not route to it (`status: "paused"` on the hub):
    /// the model server stopped answering. It goes back to `Live` by itself when it answers again
    /// (that change is the "resumed" moment), with no new registration.
    #[serde(rename_all = "camelCase")]
    Paused {
        room_code: String,
        participant_id: String,
        hub_url: String,
        model: String,
        reason: PauseReason,
        /// What the last look at the model server got ("connection refused").
        error: String,
    },
    #[serde(rename_all = "camelCase")]
    Reconnecting {
        attempt: u32,
        retry_in_ms: u64,
        error: String,
    },
    Stopped,
    Failed {
        error: String,
        /// The hub's HTTP status when the hub itself refused the share (401 a wrong password, 400
        /// a bad registration); absent when the refusal came from here (model not served, bad
        /// options). The CLI picks its exit code from it and a UI its words, without parsing text.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
}

impl ShareState {
    /// This state as the provider watch sees it: a live share whose model server does not answer
    /// (`error`) is paused; any other state is as it is.
    pub fn watched(&self, health: &ProviderHealth) -> ShareState {
        match (self, health) {
            (
                ShareState::Live { room_code, participant_id, hub_url, model },
                ProviderHealth::NotAnswering { error },
            ) => ShareState::Paused {
                room_code: room_code.clone(),
                participant_id: participant_id.clone(),
                hub_url: hub_url.clone(),
                model: model.clone(),
                reason: PauseReason::Provider,
                error: error.clone(),
            },
            _ => self.clone(),
        }
    }
}

/// A supervised share.
pub struct Supervisor {
    state: watch::Receiver<ShareState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The participant token from the latest registration: each attempt proves the id with it,
    /// and whoever removes the participant by hand between attempts needs it.
    token: Arc<Mutex<Option<String>>>,
    /// Cuts the wait before the next attempt short ("Retry now").
    retry: Arc<Notify>,
}

impl Supervisor {
    /// Starts sharing; returns at once, the state says how it goes.
    pub fn start(options: SessionOptions) -> Supervisor {
        let (tx, state) = watch::channel(ShareState::Starting);
        let stop = CancellationToken::new();
        let token = Arc::new(Mutex::new(options.participant_token.clone()));
        let retry = Arc::new(Notify::new());
        let task = tokio::spawn(run(options, tx, stop.clone(), token.clone(), retry.clone()));
        Supervisor { state, stop, task, token, retry }
    }

    /// Retries at once when the share is waiting to reconnect; does nothing otherwise (a live
    /// share has nothing to retry, and no later wait is cut short by it).
    pub fn retry_now(&self) -> bool {
        let waiting = matches!(self.state(), ShareState::Reconnecting { .. });
        if waiting {
            self.retry.notify_one();
        }
        waiting
    }

    /// The participant token the hub gave this share (latest registration), if any.
    pub fn participant_token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn state(&self) -> ShareState {
        self.state.borrow().clone()
    }

    /// Follows the state as it changes.
    pub fn subscribe(&self) -> watch::Receiver<ShareState> {
        self.state.clone()
    }

    /// Waits until the share is live (or paused: registered all the same), stopped or failed, up
    /// to `timeout`.
    pub async fn wait_live(&self, timeout: Duration) -> ShareState {
        let mut rx = self.state.clone();
        let _ = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| {
                matches!(
                    s,
                    ShareState::Live { .. }
                        | ShareState::Paused { .. }
                        | ShareState::Stopped
                        | ShareState::Failed { .. }
                )
            }),
        )
        .await;
        self.state()
    }

    /// Stops sharing: the session leaves its room cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Waits until the share ends by itself (a permanent failure).
    pub async fn finished(&mut self) -> ShareState {
        let _ = self.state.wait_for(|s| matches!(s, ShareState::Stopped | ShareState::Failed { .. })).await;
        self.state()
    }
}

/// Publishes a live session's states (live, paused, live again) until it ends: `None` when it
/// should not be retried (asked to stop, and closed here), else why it ended.
async fn follow(
    session: &ParticipantSession,
    tx: &watch::Sender<ShareState>,
    stop: &CancellationToken,
) -> Option<String> {
    let room_code = session.room_code().to_string();
    let participant_id = session.participant().id.clone();
    let hub_url = session.hub_url().to_string();
    let model = session.participant().model.clone();
    let live = ShareState::Live {
        room_code: room_code.clone(),
        participant_id: participant_id.clone(),
        hub_url: hub_url.clone(),
        model: model.clone(),
    };
    let mut health = session.provider_health();
    let mut watching = true;
    loop {
        let state = live.watched(&health.borrow_and_update());
        tx.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
        tokio::select! {
            _ = stop.cancelled() => {
                session.close().await;
                return None;
            }
            event = session.wait_until_closed() => {
                if event.reason == CloseReason::Closed {
                    return None;
                }
                let why = match event.reason {
                    CloseReason::TunnelClosed => "the tunnel closed",
                    _ => "the hub stopped answering heartbeats",
                };
                return Some(match event.error {
                    Some(e) => format!("{why}: {e}"),
                    None => why.to_string(),
                });
            }
            changed = health.changed(), if watching => watching = changed.is_ok(),
        }
    }
}

/// `id` with its random suffix (see `cli::participant::generated_participant_id`) replaced, or one
/// added: still readable in listings, new to the hub.
fn renamed(id: &str) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..6).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    let base = match id.rsplit_once('-') {
        Some((base, tail)) if tail.len() == 6 && !base.is_empty() => base,
        _ => id,
    };
    let base: String = base.chars().take(40).collect();
    format!("{base}-{suffix}")
}

/// Returns once the hub at `hub_url` answers again after not answering; never when it answers now
/// (then the hub is not what failed, and the backoff stands).
async fn hub_back(hub_url: &str) {
    async fn answers(client: &HubClient) -> bool {
        matches!(tokio::time::timeout(HUB_BACK_POLL, client.health()).await, Ok(Ok(_)))
    }
    let Ok(client) = HubClient::new(hub_url) else { return std::future::pending().await };
    if answers(&client).await {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(HUB_BACK_POLL).await;
        if answers(&client).await {
            return;
        }
    }
}

async fn run(
    mut options: SessionOptions,
    tx: watch::Sender<ShareState>,
    stop: CancellationToken,
    token: Arc<Mutex<Option<String>>>,
    retry: Arc<Notify>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        let error = tokio::select! {
            _ = stop.cancelled() => break,
            started = ParticipantSession::start(options.clone()) => match started {
                Ok(session) => {
                    options.participant_token = session.participant_token().map(str::to_string);
                    *token.lock().unwrap_or_else(|p| p.into_inner()) = options.participant_token.clone();
                    attempt = 0;
                    backoff = FIRST_BACKOFF;
                    match follow(&session, &tx, &stop).await {
                        Some(error) => error,
                        None => break,
                    }
                }
                Err(SessionError::Hub(e))
                    if options.rename_on_conflict
                        && options.participant_token.is_none()
                        && e.code() == Some("PARTICIPANT_CONFLICT") =>
                {
                    let fresh = renamed(&options.participant_id);
                    tracing::info!(old = %options.participant_id, new = %fresh, "participant id taken; sharing under a fresh one");
                    options.participant_id = fresh;
                    continue;
                }
                Err(e) if e.is_permanent() => {
                    let status = match &e {
                        SessionError::Hub(hub) => hub.status(),
                        _ => None,
                    };
                    let _ = tx.send(ShareState::Failed { error: e.to_string(), status });
                    return;
                }
                Err(e) => e.to_string(),
            },
        };
        attempt += 1;
        tracing::warn!(attempt, retry_in = ?backoff, %error, "share interrupted; reconnecting");
        let _ = tx.send(ShareState::Reconnecting { attempt, retry_in_ms: backoff.as_millis() as u64, error });
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
            _ = retry.notified() => tracing::info!(attempt, "retrying now, as asked"),
            _ = hub_back(&options.hub_url) => tracing::info!(attempt, "the hub answers again; retrying now"),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    let _ = tx.send(ShareState::Stopped);
}
