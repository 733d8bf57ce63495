//! What one client may hold of the hub: open connections, open event streams and new rooms, counted
//! per client address and in total, so a single client on the LAN can never spend the hub's file
//! descriptors or its room slots. Past a cap the client gets 503 (connections, streams) or 429
//! (room creation) with `Retry-After`; everyone else is served as before.
//!
//! Addresses of this machine (loopback) are the hub's own user — the desktop app, local scripts and
//! tools — and are not limited per address unless `limit_loopback` is set (tests do, to play
//! several clients from 127.0.0.x); the totals bind everyone. Web pages on this machine are kept
//! out by the Origin check (`hub::browser`), not by these counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::HubError;

/// The caps, as configured (see `HubConfig`).
#[derive(Debug, Clone, Copy)]
pub struct QuotaConfig {
    pub connections_per_address: usize,
    pub connections_total: usize,
    pub streams_per_address: usize,
    pub streams_total: usize,
    /// Rooms one address may create a minute, and in a burst.
    pub rooms_per_minute: u32,
    pub rooms_burst: u32,
    pub limit_loopback: bool,
}

/// Counts of things held, per address and in total.
#[derive(Default)]
struct Held {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Which count a [`Slot`] holds a place in.
#[derive(Clone, Copy)]
enum Kind {
    Connection,
    Stream,
}

struct Counts {
    connections: Held,
    streams: Held,
    /// Room-creation buckets: tokens and when they were last refilled.
    creations: HashMap<IpAddr, (f64, Instant)>,
}

/// The hub's quotas; cheap to clone.
#[derive(Clone)]
pub struct Quotas {
    config: QuotaConfig,
    counts: Arc<Mutex<Counts>>,
}

/// Most addresses whose creation bucket is remembered; full (idle) buckets go first.
const MAX_CREATION_BUCKETS: usize = 8192;

/// A place held in a count; dropping it gives the place back.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    kind: Kind,
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = match self.kind {
            Kind::Connection => &mut counts.connections,
            Kind::Stream => &mut counts.streams,
        };
        held.total = held.total.saturating_sub(1);
        if let Some(a) = self.address {
            if let Some(n) = held.per_address.get_mut(&a) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.per_address.remove(&a);
                }
            }
        }
    }
}

impl Quotas {
    pub fn new(config: QuotaConfig) -> Self {
        Quotas {
            config,
            counts: Arc::new(Mutex::new(Counts {
                connections: Held::default(),
                streams: Held::default(),
                creations: HashMap::new(),
            })),
        }
    }

    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// Open connections and open event streams, in all (for `/metrics`).
    pub fn open(&self) -> (usize, usize) {
        let counts = self.counts();
        (counts.connections.total, counts.streams.total)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn counted(&self, address: Option<IpAddr>) -> Option<IpAddr> {
        per_address(address, self.config.limit_loopback)
    }

    fn take(&self, kind: Kind, address: Option<IpAddr>) -> Result<Slot, &'static str> {
        let (per_address, total) = match kind {
            Kind::Connection => (self.config.connections_per_address, self.config.connections_total),
            Kind::Stream => (self.config.streams_per_address, self.config.streams_total),
        };
        let counted = self.counted(address);
        let mut counts = self.counts();
        let held = match kind {
            Kind::Connection => &mut counts.connections,
            Kind::Stream => &mut counts.streams,
        };
        if held.total >= total {
            return Err("total");
        }
        if let Some(a) = counted {
            let n = held.per_address.entry(a).or_insert(0);
            if *n >= per_address {
                return Err("address");
            }
            *n += 1;
        }
        held.total += 1;
        drop(counts);
        Ok(Slot { counts: self.counts.clone(), kind, address: counted })
    }

    /// A place for one more connection from `address`, or `None` past a cap.
    pub fn connection(&self, address: IpAddr) -> Option<Slot> {
        self.take(Kind::Connection, Some(address)).ok()
    }

    /// A place for one more event stream from `address`.
    pub fn stream(&self, address: Option<IpAddr>) -> Result<Slot, HubError> {
        self.take(Kind::Stream, address).map_err(|which| {
            let what = match which {
                "address" => format!(
                    "this address already has {} open event streams (--max-sse-per-address)",
                    self.config.streams_per_address
                ),
                _ => format!("the hub already has {} open event streams (--max-sse-total)", self.config.streams_total),
            };
            HubError::Capacity { what }
        })
    }

    /// One room creation for `address`: a token bucket of `rooms_per_minute`, holding
    /// `rooms_burst`. Refused with how long to wait.
    pub fn create_room(&self, address: Option<IpAddr>) -> Result<(), HubError> {
        let Some(address) = self.counted(address) else { return Ok(()) };
        let rate = f64::from(self.config.rooms_per_minute.max(1)) / 60.0;
        let burst = f64::from(self.config.rooms_burst.max(1));
        let now = Instant::now();
        let mut counts = self.counts();
        if counts.creations.len() >= MAX_CREATION_BUCKETS && !counts.creations.contains_key(&address) {
            counts
                .creations
                .retain(|_, (tokens, at)| *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
            if counts.creations.len() >= MAX_CREATION_BUCKETS {
                counts.creations.clear();
            }
        }
        let (tokens, at) = counts.creations.get(&address).copied().unwrap_or((burst, now));
        let tokens = (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst);
        if tokens < 1.0 {
            let wait = ((1.0 - tokens) / rate).ceil() as u64;
            counts.creations.insert(address, (tokens, now));
            return Err(HubError::RateLimited { retry_after_secs: wait.max(1) });
        }
        counts.creations.insert(address, (tokens - 1.0, now));
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The address a per-address count is kept for: none for an unknown source, and none for this
/// machine's own addresses unless `limit_loopback`.
pub(crate) fn per_address(address: Option<IpAddr>, limit_loopback: bool) -> Option<IpAddr> {
    let address = address.map(canonical)?;
    (limit_loopback || !address.is_loopback()).then_some(address)
}

/// This process's open-file limit (the soft one), raised first to the hard limit: a hub holds one
/// descriptor per connection, and desktops often start programs at 1,024.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::debug!(error = %e, "the open-file limit could not be raised");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}

/// The totals that fit in `fd_limit` descriptors: connections get most of them, event streams
/// (each a connection) half, with room kept for the state file, logs, the tunnels' model-server
/// calls and the listener itself.
pub fn totals_for(fd_limit: u64) -> (usize, usize) {
    let usable = fd_limit.saturating_sub(128).max(64);
    let connections = usize::try_from(usable * 3 / 4).unwrap_or(usize::MAX).max(32);
    let streams = (connections / 2).max(16);
    (connections, streams)
}

/// How long a client refused at the connection cap is told to wait.
pub const CONNECTION_RETRY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(limit_loopback: bool) -> Quotas {
        Quotas::new(QuotaConfig {
            connections_per_address: 3,
            connections_total: 5,
            streams_per_address: 2,
            streams_total: 3,
            rooms_per_minute: 10,
            rooms_burst: 5,
            limit_loopback,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn streams_are_capped_per_address_and_in_total_and_given_back() {
        let q = quotas(false);
        let a1 = q.stream(Some(ip("10.0.0.1"))).unwrap();
        let _a2 = q.stream(Some(ip("10.0.0.1"))).unwrap();
        assert!(q.stream(Some(ip("10.0.0.1"))).is_err(), "per address");
        let _b = q.stream(Some(ip("10.0.0.2"))).unwrap();
        let err = q.stream(Some(ip("10.0.0.3"))).err().unwrap();
        assert!(err.to_string().contains("open event streams"), "{err}");
        drop(a1);
        assert!(q.stream(Some(ip("10.0.0.3"))).is_ok(), "a place given back is free again");
    }

    #[test]
    fn this_machine_is_not_limited_per_address_but_counts_in_the_total() {
        let q = quotas(false);
        let held: Vec<Slot> = (0..3).map(|_| q.stream(Some(ip("127.0.0.1"))).unwrap()).collect();
        assert!(q.stream(Some(ip("10.0.0.1"))).is_err(), "the total binds");
        drop(held);
        let strict = quotas(true);
        let _one = strict.stream(Some(ip("127.0.0.2"))).unwrap();
        let _two = strict.stream(Some(ip("::ffff:127.0.0.2"))).unwrap();
        assert!(strict.stream(Some(ip("127.0.0.2"))).is_err(), "mapped addresses count as theirs");
    }

    #[test]
    fn connections_are_capped_like_streams() {
        let q = quotas(false);
        let held: Vec<Slot> = (0..3).filter_map(|_| q.connection(ip("10.0.0.1"))).collect();
        assert_eq!(held.len(), 3);
        assert!(q.connection(ip("10.0.0.1")).is_none());
        assert!(q.connection(ip("10.0.0.2")).is_some());
    }

    #[test]
    fn room_creation_is_a_burst_then_a_rate() {
        let q = quotas(false);
        for _ in 0..5 {
            assert!(q.create_room(Some(ip("10.0.0.1"))).is_ok());
        }
        match q.create_room(Some(ip("10.0.0.1"))) {
            Err(HubError::RateLimited { retry_after_secs }) => assert!((1..=6).contains(&retry_after_secs)),
            other => panic!("{other:?}"),
        }
        assert!(q.create_room(Some(ip("10.0.0.2"))).is_ok(), "another address has its own bucket");
        for _ in 0..50 {
            assert!(q.create_room(Some(ip("127.0.0.1"))).is_ok(), "this machine is not limited");
        }
    }

    #[test]
    fn totals_follow_the_descriptor_limit() {
        let (conns, streams) = totals_for(1024);
        assert!(conns < 1024 && streams < conns, "{conns} {streams}");
        let (conns, _) = totals_for(20_000);
        assert!(conns > 10_000);
        assert!(totals_for(0).0 >= 32);
    }
}
