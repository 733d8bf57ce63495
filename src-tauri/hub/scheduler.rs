//! Which participant serves a request, and in what order waiting requests are served.
//!
//! The rule (the README's "How a room chooses"): for every participant that could serve the
//! request, the hub estimates when the request would be done there — the time until a place is
//! free there, plus loading the model if it is not loaded, plus the participant's measured time to
//! first token and generation speed for that model — and sends the request to the earliest. A
//! request whose best participant is busy waits for it rather than taking a free one that would
//! finish later; as the queue grows, the wait estimates grow with it, so a slow machine is still
//! used when the fast ones are full. A participant with no measurements for the model is tried
//! once, when it has nothing to do (a little exploration). Waiting requests are served by turns
//! between callers, so one script's burst cannot starve a person's single chat.
//!
//! Everything here is pure: the registry builds [`Candidate`]s from its records under its lock, and
//! the scheduling bench (`benches/scheduling.rs`) drives the same functions in a simulated room.

use std::collections::HashMap;
use std::hash::Hash;

/// Weight of a new measurement in the running averages.
const ALPHA: f64 = 0.3;
/// Output tokens assumed for a request before the room has measured any answer.
pub const DEFAULT_OUTPUT_TOKENS: f64 = 256.0;
/// Time assumed to load a model that is not loaded, before one has been measured.
pub const DEFAULT_LOAD_MS: f64 = 10_000.0;

/// What the hub has measured of one participant serving one model (exponentially weighted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed {
    pub ttft_ms: f64,
    pub tokens_per_second: f64,
    /// Time a load of the model took here (first token of a cold request minus a warm one's).
    pub load_ms: Option<f64>,
    pub samples: u32,
    /// Whether `ttft_ms` comes from a warm request yet (a first answer may have waited for a load).
    pub warm: bool,
}

impl Speed {
    /// The first measurement. `tokens_per_second` may be unknown (an answer without usage).
    pub fn first(ttft_ms: f64, tokens_per_second: Option<f64>) -> Speed {
        Speed {
            ttft_ms: ttft_ms.max(0.0),
            tokens_per_second: tokens_per_second.filter(|t| t.is_finite() && *t > 0.0).unwrap_or(0.0),
            load_ms: None,
            samples: 1,
            warm: true,
        }
    }

    /// The first measurement of a request that waited for the model to load: it teaches the load
    /// time (`ttft_ms` less a warm first token, not known yet) and the speed, not the first token.
    pub fn first_cold(ttft_ms: f64, tokens_per_second: Option<f64>) -> Speed {
        Speed { load_ms: Some(ttft_ms.max(0.0)), warm: false, ..Speed::first(0.0, tokens_per_second) }
    }

    /// Folds in one finished request. A cold one (the model was not loaded when it was sent)
    /// teaches the load time, not the time to first token.
    pub fn observe(&mut self, ttft_ms: f64, tokens_per_second: Option<f64>, cold: bool) {
        let ttft_ms = if ttft_ms.is_finite() { ttft_ms.max(0.0) } else { return };
        if cold {
            let load = (ttft_ms - self.ttft_ms).max(0.0);
            self.load_ms = Some(self.load_ms.map_or(load, |l| ewma(l, load)));
        } else if self.warm {
            self.ttft_ms = ewma(self.ttft_ms, ttft_ms);
        } else {
            self.ttft_ms = ttft_ms;
            self.warm = true;
            self.load_ms = self.load_ms.map(|l| (l - ttft_ms).max(0.0));
        }
        if let Some(tps) = tokens_per_second.filter(|t| t.is_finite() && *t > 0.0) {
            self.tokens_per_second = if self.tokens_per_second > 0.0 { ewma(self.tokens_per_second, tps) } else { tps };
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// Expected time to serve `tokens` output tokens once a place is free and the model is loaded.
    pub fn service_ms(&self, tokens: f64) -> f64 {
        let generation = if self.tokens_per_second > 0.0 { tokens / self.tokens_per_second * 1000.0 } else { 0.0 };
        self.ttft_ms + generation
    }
}

fn ewma(old: f64, new: f64) -> f64 {
    old + ALPHA * (new - old)
}

/// Whether a participant has the requested model in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Yes,
    No,
    /// The participant reports nothing about what is loaded.
    Unknown,
}

impl Loaded {
    /// `Some(loaded)` when the participant reports what it has loaded.
    pub fn known(self) -> Option<bool> {
        match self {
            Loaded::Yes => Some(true),
            Loaded::No => Some(false),
            Loaded::Unknown => None,
        }
    }
}

/// One participant that could serve the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub in_flight: u32,
    pub max_concurrency: u32,
    pub loaded: Loaded,
    /// Its measurements for this model; `None` before its first answer.
    pub speed: Option<Speed>,
}

impl Candidate {
    fn free(&self) -> bool {
        self.in_flight < self.max_concurrency.max(1)
    }
}

/// How the room chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The earliest expected completion (this module's rule).
    #[default]
    Expected,
    /// The least loaded free participant, ties broken at random (the first wave's rule, kept for
    /// comparison).
    LeastLoaded,
}

/// Why a participant was chosen, as `llm.request` tells it (a wire type: `protocol::events`).
pub use crate::protocol::events::RouteRule as Rule;

/// What the scheduler decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Send it to candidate `index` now.
    Take { index: usize, rule: Rule, expected_ms: Option<f64> },
    /// Keep it waiting: the best candidate is busy (or every one is).
    Wait,
}

/// The request as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    /// Output tokens expected: the request's `max_tokens` bounded by what answers in the room
    /// usually take.
    pub tokens: f64,
    /// Requests waiting ahead of this one that compete for the same places.
    pub ahead: usize,
}

/// When a request sent to `c` would be done, in ms from now; `None` without measurements.
/// `room_rate` is how many requests the candidates start per ms between them (their places over
/// their service times): the requests ahead of this one in the queue go first, at that rate.
pub fn expected_ms(c: &Candidate, ask: &Ask, room_rate: f64) -> Option<f64> {
    let speed = c.speed?;
    let service = speed.service_ms(ask.tokens);
    let load = match c.loaded {
        Loaded::No => speed.load_ms.unwrap_or(DEFAULT_LOAD_MS),
        Loaded::Yes | Loaded::Unknown => 0.0,
    };
    // A free place is this request's now: the requests ahead of it passed it by, waiting for
    // better ones. A busy participant is free again when one of its requests ends (half a service
    // time over its places on average), and the queue ahead goes first.
    let wait = if c.free() {
        0.0
    } else {
        let places = f64::from(c.max_concurrency.max(1));
        let over = f64::from(c.in_flight + 1) - places;
        let queue = if room_rate > 0.0 { ask.ahead as f64 / room_rate } else { 0.0 };
        service * (over.max(0.0) + 0.5) / places + queue
    };
    Some(wait + load + service)
}

/// Requests per ms the measured candidates start between them, for [`expected_ms`].
pub fn room_rate(candidates: &[Candidate], ask: &Ask) -> f64 {
    candidates
        .iter()
        .filter_map(|c| c.speed.map(|s| f64::from(c.max_concurrency.max(1)) / s.service_ms(ask.tokens).max(1.0)))
        .sum()
}

/// Chooses among `candidates` (all able to serve the request: right model, online, not paused).
/// `pick_random` picks an index below its argument (the least-loaded policy's tie-break).
pub fn decide(
    policy: Policy,
    candidates: &[Candidate],
    ask: &Ask,
    pick_random: &mut dyn FnMut(usize) -> usize,
) -> Decision {
    match policy {
        Policy::LeastLoaded => least_loaded(candidates, pick_random),
        Policy::Expected => earliest(candidates, ask),
    }
}

fn least_loaded(candidates: &[Candidate], pick_random: &mut dyn FnMut(usize) -> usize) -> Decision {
    let load = |c: &Candidate| f64::from(c.in_flight) / f64::from(c.max_concurrency.max(1));
    let Some(least) = candidates.iter().filter(|c| c.free()).map(load).min_by(f64::total_cmp) else {
        return Decision::Wait;
    };
    let ties: Vec<usize> =
        (0..candidates.len()).filter(|&i| candidates[i].free() && load(&candidates[i]) <= least).collect();
    let index = ties[pick_random(ties.len()).min(ties.len() - 1)];
    Decision::Take { index, rule: Rule::LeastLoaded, expected_ms: None }
}

fn earliest(candidates: &[Candidate], ask: &Ask) -> Decision {
    // Exploration first: a participant never measured for this model, idle, with the model not
    // known to be missing, gets this request; the first waiter in line only, so a queue does not
    // pour into an unknown machine.
    if ask.ahead == 0 {
        if let Some(index) = candidates
            .iter()
            .position(|c| c.speed.is_none() && c.in_flight == 0 && c.max_concurrency > 0 && c.loaded != Loaded::No)
        {
            return Decision::Take { index, rule: Rule::Explore, expected_ms: None };
        }
    }
    let rate = room_rate(candidates, ask);
    let best = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| expected_ms(c, ask, rate).map(|e| (i, e)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| candidates[a.0].in_flight.cmp(&candidates[b.0].in_flight)));
    match best {
        Some((index, expected)) if candidates[index].free() => {
            Decision::Take { index, rule: Rule::Fastest, expected_ms: Some(expected) }
        }
        Some(_) => Decision::Wait,
        // Nothing measured and nothing idle to explore: the least loaded free one, else wait.
        None => match candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.free())
            .min_by_key(|(_, c)| (c.loaded == Loaded::No, c.in_flight))
        {
            Some((index, _)) => Decision::Take { index, rule: Rule::Explore, expected_ms: None },
            None => Decision::Wait,
        },
    }
}

/// The order in which waiting requests are offered a place: by turns between callers. `callers`
/// holds each waiting request's caller, oldest request first; `last_served` gives the turn at which
/// a caller last got a place (callers never served come first). The first request of every caller
/// comes before any caller's second, and so on.
pub fn fair_order<K: Eq + Hash>(callers: &[K], last_served: impl Fn(&K) -> Option<u64>) -> Vec<usize> {
    let mut rank: HashMap<&K, usize> = HashMap::new();
    let mut keyed: Vec<(usize, u64, usize, usize)> = Vec::with_capacity(callers.len());
    for (i, caller) in callers.iter().enumerate() {
        let nth = rank.entry(caller).or_insert(0);
        let turn = last_served(caller).unwrap_or(0);
        keyed.push((*nth, turn, i, i));
        *nth += 1;
    }
    // Within a round, callers served longest ago first; ties by the age of the request.
    keyed.sort_by_key(|&(nth, turn, age, _)| (nth, turn, age));
    keyed.into_iter().map(|(_, _, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(ttft_ms: f64, tps: f64) -> Option<Speed> {
        Some(Speed { ttft_ms, tokens_per_second: tps, load_ms: None, samples: 5, warm: true })
    }

    fn cand(in_flight: u32, max: u32, loaded: Loaded, speed: Option<Speed>) -> Candidate {
        Candidate { in_flight, max_concurrency: max, loaded, speed }
    }

    fn ask() -> Ask {
        Ask { tokens: 200.0, ahead: 0 }
    }

    fn never(_: usize) -> usize {
        0
    }

    #[test]
    fn the_fast_machine_gets_the_request_while_it_has_a_place() {
        let fast = cand(3, 4, Loaded::Yes, measured(30.0, 80.0));
        let slow = cand(0, 1, Loaded::Yes, measured(600.0, 8.0));
        let d = decide(Policy::Expected, &[slow, fast], &ask(), &mut never);
        assert!(matches!(d, Decision::Take { index: 1, rule: Rule::Fastest, .. }), "{d:?}");
    }

    #[test]
    fn a_request_waits_for_the_fast_machine_rather_than_take_the_slow_one() {
        // 200 tokens: 2.5 s on the fast one, 25.6 s on the slow one; a place at the fast one frees
        // in about a second.
        let fast = cand(4, 4, Loaded::Yes, measured(30.0, 80.0));
        let slow = cand(0, 1, Loaded::Yes, measured(600.0, 8.0));
        assert_eq!(decide(Policy::Expected, &[fast, slow], &ask(), &mut never), Decision::Wait);
        // The least-loaded rule sends it to the slow one at once.
        let d = decide(Policy::LeastLoaded, &[fast, slow], &ask(), &mut never);
        assert!(matches!(d, Decision::Take { index: 1, .. }));
    }

    #[test]
    fn a_long_queue_spills_over_to_the_slow_machine() {
        let fast = cand(4, 4, Loaded::Yes, measured(30.0, 80.0));
        let slow = cand(0, 1, Loaded::Yes, measured(600.0, 8.0));
        let d = decide(Policy::Expected, &[fast, slow], &Ask { tokens: 200.0, ahead: 60 }, &mut never);
        assert!(matches!(d, Decision::Take { index: 1, rule: Rule::Fastest, .. }), "{d:?}");
    }

    #[test]
    fn the_machine_with_the_model_loaded_wins_over_a_faster_cold_one() {
        let cold_fast = cand(0, 4, Loaded::No, measured(30.0, 80.0));
        let warm_medium = cand(0, 2, Loaded::Yes, measured(150.0, 30.0));
        let d = decide(Policy::Expected, &[cold_fast, warm_medium], &ask(), &mut never);
        assert!(matches!(d, Decision::Take { index: 1, .. }), "{d:?}");
    }

    #[test]
    fn a_new_participant_is_tried_once_when_idle() {
        let fast = cand(0, 4, Loaded::Yes, measured(30.0, 80.0));
        let new = cand(0, 1, Loaded::Unknown, None);
        let d = decide(Policy::Expected, &[fast, new], &ask(), &mut never);
        assert_eq!(d, Decision::Take { index: 1, rule: Rule::Explore, expected_ms: None });
        // While it serves that one it is not tried again.
        let trying = cand(1, 1, Loaded::Unknown, None);
        let d = decide(Policy::Expected, &[fast, trying], &ask(), &mut never);
        assert!(matches!(d, Decision::Take { index: 0, .. }));
    }

    #[test]
    fn measurements_converge_and_cold_requests_teach_the_load_time() {
        let mut s = Speed::first(40.0, Some(70.0));
        for _ in 0..20 {
            s.observe(30.0, Some(80.0), false);
        }
        assert!((s.ttft_ms - 30.0).abs() < 0.1 && (s.tokens_per_second - 80.0).abs() < 0.1, "{s:?}");
        s.observe(10_030.0, Some(80.0), true);
        assert!((s.ttft_ms - 30.0).abs() < 0.1, "a cold start is not a slow first token");
        assert!(s.load_ms.is_some_and(|l| (l - 10_000.0).abs() < 1.0));
        s.observe(f64::NAN, None, false);
        assert_eq!(s.samples, 22);
        // A first answer that waited for a load: the next warm one sets the first token.
        let mut s = Speed::first_cold(10_050.0, Some(40.0));
        s.observe(50.0, Some(40.0), false);
        assert!(s.warm && (s.ttft_ms - 50.0).abs() < 0.1 && s.load_ms.is_some_and(|l| (l - 10_000.0).abs() < 0.1));
    }

    #[test]
    fn waiting_requests_take_turns_between_callers() {
        let callers = ["script", "script", "script", "person", "script", "app"];
        let order = fair_order(&callers, |_| None);
        let who: Vec<&str> = order.iter().map(|&i| callers[i]).collect();
        assert_eq!(who, ["script", "person", "app", "script", "script", "script"]);
        // The script was served a moment ago, the person long ago: the person goes first.
        let served = HashMap::from([("script", 10), ("person", 2)]);
        let order = fair_order(&callers[..4], |c| served.get(c).copied());
        assert_eq!(order[0], 3);
    }
}
