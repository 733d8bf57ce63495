//! Browsing the LAN for hubs: a stream of hubs appearing, changing and disappearing, each one
//! confirmed over HTTP before it is reported.
//!
//! mDNS says what *claims* to be a hub; only `GET /v1/health` says a hub answers there. So every
//! resolved service is confirmed (health, then `GET /v1/rooms`) before it is reported, confirmed
//! again on every change of its record, and re-checked periodically: a hub that stops answering
//! is reported gone at once, and `mdns-sd` is asked to verify its records, so an advertiser that
//! was killed (and never said goodbye) is flushed in seconds instead of lingering for its 120 s
//! TTL. Browsing owns its own mDNS daemon, stopped with the browser.
//!
//! A service mDNS finds but does not resolve within [`RESOLVE_GRACE`] (its SRV target has no
//! address record, as the TypeScript hub's may not) is looked up by `srv_fallback` instead: its
//! records asked for directly, its target resolved through the system resolver, and then
//! confirmed like the rest; asked again at every re-check until it resolves one way or the other.

use std::collections::HashMap;
use std::time::Duration;

use mdns_sd::{ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::address::{rank_addresses, Candidate, HubAddress};
use super::srv_fallback;
use super::txt::HubTxt;
use super::{validate_service_type, DiscoveryError, SERVICE_TYPE};
use crate::client::HubClient;
use crate::protocol::RoomSummary;

/// How long a browser waits for `mdns-sd` to flush the records of a hub that stopped answering
/// HTTP. RFC 6762 §10.4 suggests ten seconds for a hint from nowhere; here HTTP has already
/// failed, so a shorter wait only shortens how long a dead hub stays in the cache.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(3);
/// Changes waiting for a slow reader; beyond this the browse loop waits for the reader.
const CHANNEL: usize = 64;
/// How long a service mDNS found may stay unresolved before `srv_fallback` looks it up: an
/// advertisement with addresses resolves well within this, usually from the packet that found it.
const RESOLVE_GRACE: Duration = Duration::from_millis(500);
/// How long `srv_fallback` listens for the answers to its query.
const FALLBACK_LISTEN: Duration = Duration::from_secs(1);

/// How to browse. `BrowseOptions::new(SERVICE_TYPE)` (or `Default`) is what `gambi discover` does.
#[derive(Debug, Clone)]
pub struct BrowseOptions {
    /// The DNS-SD service type to look for.
    pub service_type: String,
    /// How long one hub may take to answer its health check and its room list.
    pub confirm_timeout: Duration,
    /// How often hubs already seen are asked again: drops hubs that stopped answering, and keeps
    /// their room lists current.
    pub recheck_interval: Duration,
}

impl BrowseOptions {
    pub fn new(service_type: &str) -> BrowseOptions {
        BrowseOptions {
            service_type: service_type.to_string(),
            confirm_timeout: Duration::from_secs(2),
            recheck_interval: Duration::from_secs(5),
        }
    }
}

impl Default for BrowseOptions {
    fn default() -> Self {
        BrowseOptions::new(SERVICE_TYPE)
    }
}

/// A hub found on the LAN and confirmed to answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FoundHub {
    /// The DNS-SD instance name (`gambi-hub-3000-box`): what identifies the hub across changes.
    pub instance: String,
    /// The hub's human name (TXT `name`), or the instance name for hubs that publish none.
    pub name: String,
    /// `http://<address>:<port>`, at the best address that answered.
    pub url: String,
    /// Every address the hub was advertised at that may be shown, best first (IPv6 in brackets).
    pub addresses: Vec<String>,
    /// The mDNS host name in its SRV record (`box.local.`).
    pub host: String,
    pub port: u16,
    /// TXT `version`: the wire contract's version (`1.0`).
    pub version: Option<String>,
    /// TXT `protocol` (`http`).
    pub protocol: Option<String>,
    /// TXT `rooms`: the room count the hub last advertised (absent on the original hub).
    pub rooms_txt: Option<usize>,
    /// The rooms, from `GET /v1/rooms` when the hub was confirmed.
    pub rooms: Vec<RoomSummary>,
    /// The hub program's version, from its health answer, when it says.
    pub hub_version: Option<String>,
}

impl FoundHub {
    /// The room with this code (any case), if the hub holds it.
    pub fn room(&self, code: &str) -> Option<&RoomSummary> {
        let code = code.trim();
        self.rooms.iter().find(|r| r.code.eq_ignore_ascii_case(code))
    }
}

/// One change seen by a [`Browser`].
#[derive(Debug, Clone, PartialEq)]
pub enum HubChange {
    /// A hub answered for the first time (or again, after it was reported gone).
    Appeared(FoundHub),
    /// A hub already reported changed: its TXT (room count, name), its addresses or its rooms.
    Updated(FoundHub),
    /// A hub withdrew its advertisement or stopped answering.
    Gone { instance: String },
}

/// A running browse. Dropping it stops browsing.
pub struct Browser {
    changes: mpsc::Receiver<HubChange>,
    daemon: ServiceDaemon,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Starts browsing for hubs of `options.service_type`. Must be called inside a tokio runtime.
pub fn browse(options: BrowseOptions) -> Result<Browser, DiscoveryError> {
    validate_service_type(&options.service_type)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::NoRuntime)?;
    let daemon = ServiceDaemon::new()?;
    let events = match daemon.browse(&options.service_type) {
        Ok(events) => events,
        Err(e) => {
            let _ = daemon.shutdown();
            return Err(e.into());
        }
    };
    let http = reqwest::Client::builder()
        .connect_timeout(options.confirm_timeout)
        .user_agent(concat!("gambi/", env!("CARGO_PKG_VERSION")))
        // A hub on the LAN is reached directly; an HTTP proxy from the environment would either
        // fail to reach it or answer for it.
        .no_proxy()
        .build()
        .map_err(|e| DiscoveryError::Http(e.to_string()))?;
    let (tx, changes) = mpsc::channel(CHANNEL);
    let stop = CancellationToken::new();
    tracing::debug!(service_type = %options.service_type, "browsing for hubs");
    let task = runtime.spawn(run(daemon.clone(), events, options, http, tx, stop.clone()));
    Ok(Browser { changes, daemon, stop, task: Some(task) })
}

impl Browser {
    /// The next change, or `None` once browsing has stopped (the mDNS daemon died).
    pub async fn next(&mut self) -> Option<HubChange> {
        self.changes.recv().await
    }

    /// Stops browsing and waits until the mDNS daemon is told to stop.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop.cancel();
        // The browse task stops the daemon as it ends; this covers a runtime that is going away
        // and will never run it again. A second shutdown is refused harmlessly.
        if self.task.is_some() {
            let _ = self.daemon.shutdown();
        }
    }
}

/// A service as mDNS resolved it.
#[derive(Debug, Clone)]
struct Resolution {
    fullname: String,
    instance: String,
    host: String,
    port: u16,
    addresses: Vec<HubAddress>,
    txt: HubTxt,
}

impl Resolution {
    fn new(service: &ResolvedService, service_type: &str) -> Resolution {
        let candidates = service.get_addresses().iter().map(|ip| match ip {
            ScopedIp::V6(v6) => {
                let zone = v6.scope_id();
                let scope = if zone.name.is_empty() { zone.index.to_string() } else { zone.name.clone() };
                Candidate::new(std::net::IpAddr::V6(*v6.addr()), Some(scope))
            }
            other => Candidate::new(other.to_ip_addr(), None),
        });
        let txt = HubTxt::parse(service.get_properties().iter().map(|p| (p.key(), p.val())));
        Resolution {
            fullname: service.get_fullname().to_string(),
            instance: instance_name(service.get_fullname(), service_type),
            host: service.get_hostname().to_string(),
            port: service.get_port(),
            addresses: rank_addresses(candidates),
            txt,
        }
    }
}

impl Resolution {
    /// A service mDNS found but could not resolve, from the records `srv_fallback` heard and the
    /// addresses the system resolver gives its target. `None` when nothing answered for it, or the
    /// resolver knows no address for the target.
    async fn looked_up(fullname: &str, service_type: &str, timeout: Duration) -> Option<Resolution> {
        let records = srv_fallback::lookup(fullname, FALLBACK_LISTEN).await?;
        let (host, port) = records.target?;
        let ips = srv_fallback::resolve_target(&host, port, timeout).await;
        let addresses = rank_addresses(ips.into_iter().map(|ip| Candidate::new(ip, None)));
        if addresses.is_empty() {
            tracing::debug!(fullname, host, "no address for the hub's SRV target, from mDNS or the system resolver");
            return None;
        }
        let txt = HubTxt::parse(records.txt.iter().flatten().map(|(k, v)| (k.as_str(), v.as_deref())));
        tracing::debug!(
            fullname, host, port, addresses = ?addresses.iter().map(HubAddress::text).collect::<Vec<_>>(),
            "hub advertisement resolved through the system resolver"
        );
        Some(Resolution {
            fullname: fullname.to_string(),
            instance: instance_name(fullname, service_type),
            host,
            port,
            addresses,
            txt,
        })
    }
}

/// A service this browser knows of.
struct Known {
    resolution: Resolution,
    /// Which confirmation is the current one: a newer resolution makes older answers stale.
    generation: u64,
    in_flight: bool,
    /// What was last reported, if the hub is currently reported as present.
    reported: Option<FoundHub>,
}

/// The browse loop: turns mDNS events into confirmed changes.
async fn run(
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    options: BrowseOptions,
    http: reqwest::Client,
    tx: mpsc::Sender<HubChange>,
    stop: CancellationToken,
) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut confirms: JoinSet<(String, u64, Option<FoundHub>)> = JoinSet::new();
    // Services found but not resolved, and their look-ups by `srv_fallback`.
    let mut unresolved: HashMap<String, Unresolved> = HashMap::new();
    let mut lookups: JoinSet<(String, Option<Resolution>)> = JoinSet::new();
    let mut generation = 0u64;
    let recheck = options.recheck_interval.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(Instant::now() + recheck, recheck);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let confirm_with = |key: String, generation: u64, resolution: Resolution| {
        let http = http.clone();
        let timeout = options.confirm_timeout;
        async move { (key, generation, confirm(http, resolution, timeout).await) }
    };
    let look_up = |key: String, fullname: String, wait: Duration| {
        let service_type = options.service_type.clone();
        let timeout = options.confirm_timeout;
        async move {
            tokio::time::sleep(wait).await;
            let resolution = Resolution::looked_up(&fullname, &service_type, timeout).await;
            (key, resolution)
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tx.closed() => break,
            event = events.recv_async() => {
                let Ok(event) = event else {
                    tracing::warn!("the mDNS daemon stopped; browsing ends");
                    break;
                };
                match event {
                    ServiceEvent::ServiceResolved(service) => {
                        let resolution = Resolution::new(&service, &options.service_type);
                        tracing::debug!(
                            instance = %resolution.instance, port = resolution.port,
                            addresses = ?resolution.addresses.iter().map(HubAddress::text).collect::<Vec<_>>(),
                            "hub advertisement resolved"
                        );
                        forget(&mut unresolved, &resolution.fullname.to_lowercase());
                        let (key, generation) = follow(&mut known, &mut generation, &resolution);
                        confirms.spawn(confirm_with(key, generation, resolution));
                    }
                    ServiceEvent::ServiceFound(_, fullname) => {
                        let key = fullname.to_lowercase();
                        if !known.contains_key(&key) && !unresolved.contains_key(&key) {
                            let lookup = lookups.spawn(look_up(key.clone(), fullname.clone(), RESOLVE_GRACE));
                            unresolved.insert(key, Unresolved { fullname, lookup: Some(lookup) });
                        }
                    }
                    ServiceEvent::ServiceRemoved(_, fullname) => {
                        forget(&mut unresolved, &fullname.to_lowercase());
                        if let Some(gone) = known.remove(&fullname.to_lowercase()) {
                            tracing::debug!(instance = %gone.resolution.instance, "hub advertisement withdrawn");
                            if gone.reported.is_some()
                                && tx.send(HubChange::Gone { instance: gone.resolution.instance }).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some(done) = confirms.join_next() => {
                // A confirmation that panicked is treated like one that is still out: the next
                // tick asks again.
                let Ok((key, confirmed_generation, found)) = done else { continue };
                let Some(entry) = known.get_mut(&key) else { continue };
                if entry.generation != confirmed_generation {
                    continue;
                }
                entry.in_flight = false;
                let change = match (found, entry.reported.take()) {
                    (Some(hub), None) => {
                        entry.reported = Some(hub.clone());
                        Some(HubChange::Appeared(hub))
                    }
                    (Some(hub), Some(old)) => {
                        entry.reported = Some(hub.clone());
                        (hub != old).then_some(HubChange::Updated(hub))
                    }
                    (None, reported) => {
                        // Nothing answers where the hub said it was: ask mDNS whether its
                        // advertiser is still there, so a dead one is flushed now rather than
                        // at the end of its TTL.
                        if entry.resolution.addresses.iter().any(HubAddress::dialable) {
                            let _ = daemon.verify(entry.resolution.fullname.clone(), VERIFY_TIMEOUT);
                        }
                        reported.map(|_| HubChange::Gone { instance: entry.resolution.instance.clone() })
                    }
                };
                if let Some(change) = change {
                    if tx.send(change).await.is_err() {
                        break;
                    }
                }
            }
            Some(done) = lookups.join_next() => {
                let Ok((key, resolution)) = done else { continue };
                // Withdrawn meanwhile, or resolved by mDNS after all: nothing more to do.
                if !unresolved.contains_key(&key) || known.contains_key(&key) {
                    forget(&mut unresolved, &key);
                    continue;
                }
                match resolution {
                    Some(resolution) => {
                        unresolved.remove(&key);
                        let (key, generation) = follow(&mut known, &mut generation, &resolution);
                        confirms.spawn(confirm_with(key, generation, resolution));
                    }
                    // Asked again at the next re-check.
                    None => {
                        if let Some(entry) = unresolved.get_mut(&key) {
                            entry.lookup = None;
                        }
                    }
                }
            }
            _ = tick.tick() => {
                for (key, entry) in unresolved.iter_mut().filter(|(k, u)| u.lookup.is_none() && !known.contains_key(*k)) {
                    entry.lookup = Some(lookups.spawn(look_up(key.clone(), entry.fullname.clone(), Duration::ZERO)));
                }
                for (key, entry) in known.iter_mut().filter(|(_, k)| !k.in_flight) {
                    generation += 1;
                    entry.generation = generation;
                    entry.in_flight = true;
                    confirms.spawn(confirm_with(key.clone(), generation, entry.resolution.clone()));
                }
            }
        }
    }
    confirms.abort_all();
    lookups.abort_all();
    let _ = daemon.stop_browse(&options.service_type);
    if let Ok(status) = daemon.shutdown() {
        let _ = tokio::time::timeout(Duration::from_secs(1), status.recv_async()).await;
    }
}

/// A service mDNS found and has not resolved.
struct Unresolved {
    fullname: String,
    /// The look-up under way, if one is: stopped (before its query, while it waits out
    /// [`RESOLVE_GRACE`]) when mDNS resolves the service after all or it is withdrawn.
    lookup: Option<AbortHandle>,
}

/// Drops the unresolved service `key` and its look-up, if any.
fn forget(unresolved: &mut HashMap<String, Unresolved>, key: &str) {
    if let Some(lookup) = unresolved.remove(key).and_then(|u| u.lookup) {
        lookup.abort();
    }
}

/// Starts following `resolution` (new, or newer than the one known): the key it is known by and
/// the generation its confirmation must carry to count.
fn follow(known: &mut HashMap<String, Known>, generation: &mut u64, resolution: &Resolution) -> (String, u64) {
    *generation += 1;
    let key = resolution.fullname.to_lowercase();
    let entry = known.entry(key.clone()).or_insert_with(|| Known {
        resolution: resolution.clone(),
        generation: *generation,
        in_flight: false,
        reported: None,
    });
    entry.resolution = resolution.clone();
    entry.generation = *generation;
    entry.in_flight = true;
    (key, *generation)
}

/// Confirms a resolved service: the best address whose `GET /v1/health` answers, then its rooms.
/// `None` when nothing answers within `timeout`, or the service is not something to dial.
async fn confirm(http: reqwest::Client, resolution: Resolution, timeout: Duration) -> Option<FoundHub> {
    let scheme = resolution.txt.scheme()?;
    let urls: Vec<String> = resolution.addresses.iter().filter_map(|a| a.url(scheme, resolution.port)).collect();
    if urls.is_empty() {
        // Typically a first resolution with only a link-local IPv6 address: the IPv4 one comes
        // with a later resolution, which is confirmed then.
        return None;
    }
    let deadline = Instant::now() + timeout;
    // Every address is asked at once: a dead first address must not hold up a live second one.
    // The best address that answers wins, once every better one has failed.
    let mut checks = JoinSet::new();
    for (rank, url) in urls.iter().enumerate() {
        let Ok(client) = HubClient::with_http_client(url, http.clone()) else { continue };
        let client = client.with_request_timeout(timeout);
        checks.spawn(async move {
            let health = tokio::time::timeout_at(deadline, client.health()).await;
            (rank, client, health)
        });
    }
    let mut settled = vec![false; urls.len()];
    let mut best: Option<(usize, HubClient, crate::protocol::Health)> = None;
    while let Some(done) = checks.join_next().await {
        let Ok((rank, client, health)) = done else { continue };
        settled[rank] = true;
        match health {
            Ok(Ok(health)) => {
                if best.as_ref().is_none_or(|(b, _, _)| rank < *b) {
                    best = Some((rank, client, health));
                }
            }
            Ok(Err(e)) => tracing::debug!(url = %urls[rank], error = %e, "no hub answers there"),
            Err(_) => tracing::debug!(url = %urls[rank], "no hub answered in time"),
        }
        if let Some((b, _, _)) = &best {
            if settled[..*b].iter().all(|s| *s) {
                break;
            }
        }
    }
    checks.abort_all();
    let (_, client, health) = best?;
    let rooms = match tokio::time::timeout_at(deadline, client.list_rooms()).await {
        Ok(Ok(rooms)) => rooms,
        Ok(Err(e)) => {
            tracing::debug!(url = %client.base_url(), error = %e, "the hub answers its health check but not its room list");
            return None;
        }
        Err(_) => return None,
    };
    Some(FoundHub {
        name: resolution.txt.name.clone().unwrap_or_else(|| resolution.instance.clone()),
        instance: resolution.instance,
        url: client.base_url().to_string(),
        addresses: resolution.addresses.iter().map(HubAddress::text).collect(),
        host: resolution.host,
        port: resolution.port,
        version: resolution.txt.version,
        protocol: resolution.txt.protocol,
        rooms_txt: resolution.txt.rooms,
        rooms,
        hub_version: health.version,
    })
}

/// The instance part of `<instance>.<service type>`, with DNS escapes (`\.`, `\\`) undone.
pub(crate) fn instance_name(fullname: &str, service_type: &str) -> String {
    let suffix = format!(".{service_type}");
    let cut = fullname.len().saturating_sub(suffix.len());
    let raw = match (fullname.get(..cut), fullname.get(cut..)) {
        (Some(instance), Some(tail)) if !instance.is_empty() && tail.eq_ignore_ascii_case(&suffix) => instance,
        _ => fullname,
    };
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_lose_the_type_and_their_escapes() {
        assert_eq!(instance_name("gambi-hub-3000-box._gambi._tcp.local.", SERVICE_TYPE), "gambi-hub-3000-box");
        assert_eq!(instance_name("Ana\\.s hub._GAMBI._tcp.local.", SERVICE_TYPE), "Ana.s hub");
        assert_eq!(instance_name("odd", SERVICE_TYPE), "odd");
    }
}
