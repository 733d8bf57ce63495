//! Owner first: while a share runs with "pause sharing while I use my model server myself", this
//! watch looks at what the provider says it is doing and compares it with what the room asked of
//! it. Work the room did not send means the machine's owner is using the model server: the share
//! pauses (heartbeat `paused` with `pauseReason: owner`; the hub routes nothing new to it and lets
//! what is in flight finish) and resumes after a quiet period without such work.
//!
//! What can be seen, per provider:
//! - llama-server: `GET /slots`, the slots processing now (`is_processing`, or `state: 1` on older
//!   builds). More processing than the room's calls in flight is someone else's work (seen on two
//!   looks in a row: a call of ours may end between the two counts).
//! - Ollama: `GET /api/ps`, each loaded model's `expires_at`, which moves forward every time the
//!   model is used (last use plus keep-alive, written when the model's last request in flight
//!   ends: someone's long generation shows when it finishes). It moving while the room sent
//!   nothing (none in flight at either look, none started or ended since shortly before the
//!   previous look) means someone else used it.
//! - LM Studio and others: nothing cheap tells their activity, so nothing is detected; the share
//!   is never paused for its owner there.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::protocol::now_ms;

/// How long without foreign work before a paused share takes requests again.
pub const QUIET: Duration = Duration::from_secs(30);
/// A call of ours that ended this shortly before a look may still have moved Ollama's expiry.
const END_MARGIN_MS: u64 = 1000;

/// What the participant itself was asking of its provider at a look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ours {
    pub in_flight: usize,
    /// Calls started so far.
    pub started: u64,
    /// When the last call ended, ms since the epoch (0: none yet).
    pub last_end_ms: u64,
}

/// What one look at the provider found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// llama-server's slots processing now.
    Slots { processing: usize },
    /// Ollama's loaded models and when each expires (as it writes it).
    Expiries(BTreeMap<String, String>),
    /// The provider tells nothing about its activity.
    Blind,
}

/// Reads `/slots` (an array of slots) or `/api/ps` (`{"models": [...]}`) as a [`Look`].
pub fn read_slots(v: &Value) -> Option<Look> {
    let slots = v.as_array()?;
    let processing = slots
        .iter()
        .filter(|s| {
            s.get("is_processing")
                .and_then(Value::as_bool)
                .unwrap_or_else(|| s.get("state").and_then(Value::as_u64) == Some(1))
        })
        .count();
    Some(Look::Slots { processing })
}

pub fn read_ps(v: &Value) -> Option<Look> {
    let models = v.get("models")?.as_array()?;
    let expiries = models
        .iter()
        .filter_map(|m| {
            let name = m.get("name").or_else(|| m.get("model"))?.as_str()?;
            let expires = m.get("expires_at")?.as_str()?;
            Some((name.to_string(), expires.to_string()))
        })
        .collect();
    Some(Look::Expiries(expiries))
}

/// Decides, look after look, whether the provider does work the participant did not send.
#[derive(Debug, Default)]
pub struct Judge {
    previous: Option<(Look, Ours, u64)>,
    /// Slot looks in a row with more processing than ours.
    excess: u32,
}

impl Judge {
    /// Whether `look`, taken at `now` while the participant was doing `ours`, shows foreign work.
    pub fn foreign(&mut self, look: Look, ours: Ours, now: u64) -> bool {
        let found = match (&look, &self.previous) {
            (Look::Slots { processing }, _) => {
                self.excess = if *processing > ours.in_flight { self.excess + 1 } else { 0 };
                self.excess >= 2
            }
            (Look::Expiries(now_expiries), Some((Look::Expiries(before), was, at))) => {
                let moved = now_expiries.iter().any(|(m, e)| before.get(m).is_some_and(|b| b != e));
                let we_were_quiet = ours.in_flight == 0
                    && was.in_flight == 0
                    && ours.started == was.started
                    && ours.last_end_ms.saturating_add(END_MARGIN_MS) < *at;
                moved && we_were_quiet
            }
            _ => false,
        };
        self.previous = Some((look, ours, now));
        found
    }

    /// Whether a second look should come soon (one slot look showed more work than ours).
    pub fn confirming(&self) -> bool {
        self.excess == 1
    }
}

async fn get_json(http: &reqwest::Client, url: String, auth: &HeaderMap) -> Option<Value> {
    let res = http.get(url).headers(auth.clone()).timeout(super::provider_watch::CHECK_TIMEOUT).send().await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json().await.ok()
}

/// One look: llama-server's `/slots`, else Ollama's `/api/ps`, else [`Look::Blind`].
pub async fn look(http: &reqwest::Client, endpoint: &str, auth: &HeaderMap) -> Look {
    let base = endpoint.trim_end_matches('/');
    if let Some(look) = get_json(http, format!("{base}/slots"), auth).await.as_ref().and_then(read_slots) {
        return look;
    }
    if let Some(look) = get_json(http, format!("{base}/api/ps"), auth).await.as_ref().and_then(read_ps) {
        return look;
    }
    Look::Blind
}

/// The provider to watch.
pub struct Target {
    pub http: reqwest::Client,
    pub endpoint: String,
    pub auth: HeaderMap,
}

/// Looks every `every` until `stop`; sets `owner_busy` when foreign work is seen and clears it
/// after `quiet` without any. `ours` tells what the participant is asking of the provider.
pub async fn run(
    target: Target,
    every: Duration,
    quiet: Duration,
    ours: impl Fn() -> Ours + Send + 'static,
    owner_busy: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let Target { http, endpoint, auth } = target;
    let every = every.max(Duration::from_millis(100));
    let mut judge = Judge::default();
    let mut last_foreign: Option<tokio::time::Instant> = None;
    let mut said_blind = false;
    let mut wait = every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let before = ours();
        let seen = tokio::select! {
            _ = stop.cancelled() => return,
            seen = look(&http, &endpoint, &auth) => seen,
        };
        if seen == Look::Blind && !said_blind {
            said_blind = true;
            tracing::info!(%endpoint, "this model server does not tell what it is doing; the share will not pause for its owner");
        }
        // Ours as the look saw it: the most of before and after (a call starting meanwhile is ours).
        let after = ours();
        let ours_now = Ours { in_flight: before.in_flight.max(after.in_flight), ..after };
        let foreign = judge.foreign(seen, ours_now, now_ms());
        wait = if judge.confirming() { (every / 2).min(Duration::from_millis(500)) } else { every };
        let now = tokio::time::Instant::now();
        if foreign {
            last_foreign = Some(now);
        }
        let busy = last_foreign.is_some_and(|t| now.duration_since(t) < quiet);
        let changed = owner_busy.send_if_modified(|b| std::mem::replace(b, busy) != busy);
        if changed && busy {
            tracing::info!(%endpoint, "the model server is busy with work the room did not send; pausing the share");
        } else if changed {
            tracing::info!(%endpoint, "the owner's use of the model server stopped; sharing again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours(in_flight: usize, started: u64, last_end_ms: u64) -> Ours {
        Ours { in_flight, started, last_end_ms }
    }

    #[test]
    fn slots_busier_than_our_calls_twice_in_a_row_are_foreign() {
        let look = |v: Value| read_slots(&v).unwrap();
        assert_eq!(
            look(json!([{"id": 0, "is_processing": true}, {"id": 1, "is_processing": false}])),
            Look::Slots { processing: 1 }
        );
        assert_eq!(look(json!([{"id": 0, "state": 1}, {"id": 1, "state": 0}])), Look::Slots { processing: 1 });
        let mut j = Judge::default();
        // Our own call explains the busy slot.
        assert!(!j.foreign(Look::Slots { processing: 1 }, ours(1, 1, 0), 1000));
        assert!(!j.foreign(Look::Slots { processing: 1 }, ours(1, 1, 0), 2000));
        // One more than ours: confirmed on the next look.
        assert!(!j.foreign(Look::Slots { processing: 2 }, ours(1, 1, 0), 3000));
        assert!(j.confirming());
        assert!(j.foreign(Look::Slots { processing: 1 }, ours(0, 1, 2900), 3500));
        assert!(!j.foreign(Look::Slots { processing: 0 }, ours(0, 1, 2900), 4000));
    }

    #[test]
    fn an_ollama_expiry_moving_while_we_sent_nothing_is_foreign() {
        let ps = |e: &str| read_ps(&json!({"models": [{"name": "llama3:latest", "expires_at": e}]})).unwrap();
        let mut j = Judge::default();
        assert!(!j.foreign(ps("t1"), ours(0, 0, 0), 10_000), "a first look has nothing to compare");
        assert!(!j.foreign(ps("t1"), ours(0, 0, 0), 12_000));
        assert!(j.foreign(ps("t2"), ours(0, 0, 0), 14_000), "moved, and we sent nothing");
        // Moved by a call of ours: not foreign.
        assert!(!j.foreign(ps("t3"), ours(0, 1, 15_000), 16_000));
        assert!(!j.foreign(ps("t4"), ours(1, 2, 15_000), 18_000));
        assert!(!j.foreign(ps("t5"), ours(0, 2, 19_000), 20_000), "ours ended just before");
        assert!(!j.foreign(ps("t6"), ours(0, 2, 19_000), 22_000), "it ended within a second of the last look");
        assert!(j.foreign(ps("t7"), ours(0, 2, 19_000), 24_000));
        assert_eq!(read_ps(&json!({"data": []})), None);
        assert!(!Judge::default().foreign(Look::Blind, ours(0, 0, 0), 1));
    }
}
