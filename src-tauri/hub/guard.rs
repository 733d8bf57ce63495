//! Password guessing: token buckets per room and per client address, and a small cache of keys
//! already verified, so a right key costs a hash lookup instead of an argon2 run.
//!
//! Only checks that need argon2 take from the buckets: a guess costs a token from its room's bucket
//! and from its address's bucket, and is refused (429 with `Retry-After`) when either is empty.
//! A key already verified for a room passes without a token, so a flood of wrong guesses cannot
//! lock out the people who know the password once they have used it. Nor those who have not used
//! it yet: part of each room's rate is kept for addresses that have not guessed wrong lately, so
//! addresses flooding wrong guesses empty only the rest (and their own buckets). The argon2 work
//! itself is capped in `hub::password`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Most buckets kept per kind; past this, full (idle) buckets are dropped, and if none is idle the
/// oldest are, so an address scan cannot grow the map without bound.
const MAX_BUCKETS: usize = 8192;
/// Most rooms whose verified key is remembered.
const MAX_VERIFIED: usize = 4096;
/// How long an address that guessed wrong counts as a guesser.
const FAILED_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by `K`: `rate` tokens a second, at most `rate` held (one second's worth).
struct Buckets<K> {
    rate: f64,
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: u32) -> Self {
        Buckets { rate: f64::from(rate.max(1)), map: HashMap::new() }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.rate);
        bucket.at = now;
    }

    /// Seconds until `key` has a token (0 when it has one now).
    fn wait(&mut self, key: &K, now: Instant) -> f64 {
        let Some(mut bucket) = self.map.get(key).copied() else { return 0.0 };
        self.refill(&mut bucket, now);
        self.map.insert(key.clone(), bucket);
        if bucket.tokens >= 1.0 {
            0.0
        } else {
            (1.0 - bucket.tokens) / self.rate
        }
    }

    fn take(&mut self, key: &K, now: Instant) {
        if !self.map.contains_key(key) && self.map.len() >= MAX_BUCKETS {
            self.prune(now);
        }
        let rate = self.rate;
        let mut bucket = self.map.get(key).copied().unwrap_or(Bucket { tokens: rate, at: now });
        self.refill(&mut bucket, now);
        bucket.tokens -= 1.0;
        self.map.insert(key.clone(), bucket);
    }

    fn prune(&mut self, now: Instant) {
        let rate = self.rate;
        self.map.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < rate);
        if self.map.len() >= MAX_BUCKETS {
            let mut ages: Vec<Instant> = self.map.values().map(|b| b.at).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            self.map.retain(|_, b| b.at > cut);
        }
    }
}

struct State {
    /// The part of each room's rate any address may use.
    rooms: Buckets<String>,
    /// The part kept for addresses that have not guessed wrong within [`FAILED_MEMORY`].
    reserved: Buckets<String>,
    /// When each address last guessed wrong.
    failed: HashMap<IpAddr, Instant>,
    addresses: Buckets<IpAddr>,
    /// Per stored password hash (unique per room: it has a random salt), SHA-256 of the key last
    /// verified against it. Keyed by hash, not code, so a code reused by a new room never inherits
    /// the old room's key.
    verified: HashMap<String, [u8; 32]>,
}

/// The hub's guard against password guessing.
pub struct Guard {
    state: Mutex<State>,
}

impl Guard {
    /// `per_room` and `per_address` guesses a second (each also the burst). Half the room's rate
    /// (at least one a second) is kept for addresses that have not guessed wrong lately.
    pub fn new(per_room: u32, per_address: u32) -> Self {
        let reserved = (per_room / 2).max(1);
        let shared = per_room.saturating_sub(reserved).max(1);
        Guard {
            state: Mutex::new(State {
                rooms: Buckets::new(shared),
                reserved: Buckets::new(reserved),
                failed: HashMap::new(),
                addresses: Buckets::new(per_address),
                verified: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when `key` is the key last verified against `hash`.
    pub fn is_verified(&self, hash: &str, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.state().verified.get(hash).is_some_and(|known| bool::from(known.ct_eq(&digest)))
    }

    /// Remembers that `key` verified against `hash`.
    pub fn remember(&self, hash: &str, key: &str) {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut state = self.state();
        if state.verified.len() >= MAX_VERIFIED && !state.verified.contains_key(hash) {
            state.verified.clear();
        }
        state.verified.insert(hash.to_string(), digest);
    }

    /// Takes one guess for `room` from `address`, or says how many whole seconds to wait. The
    /// address's own bucket first; then the room's shared part, or, for an address with no recent
    /// wrong guess, the room's reserved part.
    pub fn take(&self, room: &str, address: Option<IpAddr>) -> Result<(), u64> {
        self.take_at(room, address, Instant::now())
    }

    fn take_at(&self, room: &str, address: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let mut state = self.state();
        let room_key = room.to_string();
        if let Some(a) = address {
            let wait = state.addresses.wait(&a, now);
            if wait > 0.0 {
                return Err((wait.ceil() as u64).max(1));
            }
        }
        let clean = address
            .is_some_and(|a| state.failed.get(&a).is_none_or(|at| now.saturating_duration_since(*at) >= FAILED_MEMORY));
        let shared_wait = state.rooms.wait(&room_key, now);
        let from_reserve = shared_wait > 0.0 && clean;
        if shared_wait > 0.0 && !from_reserve {
            return Err((shared_wait.ceil() as u64).max(1));
        }
        if from_reserve {
            let wait = state.reserved.wait(&room_key, now);
            if wait > 0.0 {
                return Err((wait.min(shared_wait).ceil() as u64).max(1));
            }
            state.reserved.take(&room_key, now);
        } else {
            state.rooms.take(&room_key, now);
        }
        if let Some(a) = address {
            state.addresses.take(&a, now);
        }
        Ok(())
    }

    /// Notes that `address` guessed wrong: for a while it draws only on the rooms' shared part.
    pub fn failed(&self, address: Option<IpAddr>) {
        self.failed_at(address, Instant::now());
    }

    fn failed_at(&self, address: Option<IpAddr>, now: Instant) {
        let Some(address) = address else { return };
        let mut state = self.state();
        if state.failed.len() >= MAX_BUCKETS && !state.failed.contains_key(&address) {
            state.failed.retain(|_, at| now.saturating_duration_since(*at) < FAILED_MEMORY);
            if state.failed.len() >= MAX_BUCKETS {
                state.failed.clear();
            }
        }
        state.failed.insert(address, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refuse() {
        let guard = Guard::new(10, 5);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..5 {
            assert!(guard.take("ROOM01", Some(a)).is_ok());
        }
        assert_eq!(guard.take("ROOM01", Some(a)), Err(1), "the address is out of guesses");
        for _ in 0..5 {
            assert!(guard.take("ROOM01", Some(b)).is_ok());
        }
        let c: IpAddr = [10, 0, 0, 3].into();
        assert!(guard.take("ROOM01", Some(c)).is_err(), "the room is out of guesses, whoever asks");
        assert!(guard.take("ROOM02", Some(c)).is_ok(), "other rooms are not affected");
    }

    #[test]
    fn a_flood_of_wrong_guesses_leaves_room_for_an_address_that_never_guessed_wrong() {
        let guard = Guard::new(10, 5);
        let start = Instant::now();
        let attackers: Vec<IpAddr> = (1..=20u8).map(|i| [10, 0, 0, i].into()).collect();
        let mut admitted_after_first_second = 0;
        // Twenty addresses guess wrong as fast as they are let, for five seconds.
        for tick in 0..50u32 {
            let now = start + std::time::Duration::from_millis(100 * u64::from(tick));
            for a in &attackers {
                if guard.take_at("ROOM01", Some(*a), now).is_ok() {
                    guard.failed_at(Some(*a), now);
                    if tick >= 10 {
                        admitted_after_first_second += 1;
                    }
                }
            }
            // Once every guesser has guessed wrong (each had one clean try), people who know the
            // password (and have never guessed wrong) come along.
            if tick >= 30 && tick % 5 == 0 {
                let person: IpAddr = [192, 168, 1, tick as u8].into();
                assert!(guard.take_at("ROOM01", Some(person), now).is_ok(), "locked out at tick {tick}");
            }
        }
        // The guessers still get the shared part: about 5 a second.
        assert!((15..=35).contains(&admitted_after_first_second), "{admitted_after_first_second}");
    }

    #[test]
    fn verified_keys_are_remembered_per_hash() {
        let guard = Guard::new(1, 1);
        guard.remember("$argon2id$one", "secret");
        assert!(guard.is_verified("$argon2id$one", "secret"));
        assert!(!guard.is_verified("$argon2id$one", "Secret"));
        assert!(!guard.is_verified("$argon2id$two", "secret"), "another room's hash knows nothing");
    }

    #[test]
    fn buckets_stay_bounded() {
        let guard = Guard::new(10, 5);
        for i in 0..(MAX_BUCKETS as u32 + 100) {
            let addr: IpAddr = std::net::Ipv4Addr::from(i).into();
            let _ = guard.take(&format!("R{i}"), Some(addr));
        }
        assert!(guard.state().addresses.map.len() <= MAX_BUCKETS);
        assert!(guard.state().rooms.map.len() <= MAX_BUCKETS);
    }
}
