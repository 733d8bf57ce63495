//! Finding hubs on the LAN with mDNS / DNS-SD, wire-compatible with the original TypeScript hub
//! (service type `_gambi._tcp.local.`, TXT `version=1.0`, `protocol=http`).
//!
//! - [`Advertiser`] (in `advertise`): a running hub's advertisement, TXT kept current with its room
//!   count, withdrawn with goodbye packets on shutdown.
//! - [`browse`] / [`Browser`] (in `browse`): a stream of [`HubChange`]s, each hub confirmed with
//!   `GET /v1/health` and its rooms fetched before it is reported.
//! - [`discover`] and [`find_room_all`]: the one-call forms the command line uses (`gambi discover`,
//!   joining a room by code with no hub given).
//! - [`room_claims`]: which hubs claim a room. A name and a room code on the LAN prove nothing (any
//!   machine can advertise both), so a caller that must pick one hub gets every claimant and
//!   refuses to guess when there are several.
//! - `known`: the hubs `join` has used, by name and address, to warn when a name moves.
//! - `srv_fallback`: a hub mDNS finds but cannot resolve (its SRV target has no address record),
//!   asked for its records directly and resolved through the system resolver.
//! - `txt` and `address`: the pure rules (what a TXT record says, which addresses to dial).
//!
//! Nothing here prints; the hub itself never knows it is advertised (the advertiser reads the
//! hub's event bus).

pub mod address;
pub mod advertise;
pub mod browse;
pub mod known;
pub mod srv_fallback;
pub mod txt;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use address::{rank_addresses, Candidate, HubAddress};
pub use advertise::{AdvertiseOptions, Advertiser};
pub use browse::{browse, BrowseOptions, Browser, FoundHub, HubChange};
pub use txt::{HubTxt, TXT_PROTOCOL, TXT_VERSION};

use crate::protocol::RoomSummary;

/// The DNS-SD service type of Gambi hubs.
pub const SERVICE_TYPE: &str = "_gambi._tcp.local.";

/// What discovery can fail with. Finding nothing is not an error.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The service type is not a DNS-SD type `mdns-sd` accepts.
    #[error("invalid mDNS service type {service_type:?}: {reason}")]
    ServiceType { service_type: String, reason: String },
    /// The mDNS daemon could not start or refused a command.
    #[error("mDNS is not available: {0}")]
    Mdns(#[from] mdns_sd::Error),
    /// The HTTP client that confirms hubs could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    /// Advertising and browsing spawn tasks, so they need a tokio runtime.
    #[error("mDNS discovery must run inside a tokio runtime")]
    NoRuntime,
}

/// Checks a service type the way `mdns-sd` will (it reports some problems only to a monitor
/// channel, long after the call that caused them): `_<name>._tcp.local.`, where the name has 1 to
/// 15 letters, digits and `-`, at least one letter, no `--`, and no `-` at either end (RFC 6763
/// §7.2).
pub fn validate_service_type(service_type: &str) -> Result<(), DiscoveryError> {
    let refuse =
        |reason: &str| DiscoveryError::ServiceType { service_type: service_type.into(), reason: reason.into() };
    let Some(name) = service_type.strip_suffix("._tcp.local.") else {
        return Err(refuse("hubs are TCP services: it must end with ._tcp.local."));
    };
    let Some(name) = name.strip_prefix('_') else {
        return Err(refuse("the service name must start with _"));
    };
    if name.is_empty() || name.len() > 15 {
        return Err(refuse("the service name must have 1 to 15 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(refuse("the service name may only hold letters, digits and -"));
    }
    if !name.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(refuse("the service name must hold a letter"));
    }
    if name.contains("--") || name.starts_with('-') || name.ends_with('-') {
        return Err(refuse("the service name may not start or end with - nor hold --"));
    }
    Ok(())
}

/// Every hub that answers on the LAN within `timeout` (what `gambi discover --timeout 2s` shows),
/// sorted by name. Hubs that withdrew within the window are left out.
pub async fn discover(timeout: Duration, service_type: &str) -> Result<Vec<FoundHub>, DiscoveryError> {
    let mut browser = browse(BrowseOptions::new(service_type))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut hubs: Vec<FoundHub> = Vec::new();
    while let Ok(Some(change)) = tokio::time::timeout_at(deadline, browser.next()).await {
        match change {
            HubChange::Appeared(hub) | HubChange::Updated(hub) => {
                hubs.retain(|h| h.instance != hub.instance);
                hubs.push(hub);
            }
            HubChange::Gone { instance } => hubs.retain(|h| h.instance != instance),
        }
    }
    browser.stop().await;
    hubs.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then_with(|| a.url.cmp(&b.url)));
    Ok(hubs)
}

/// A hub that claims to hold a room, and the room as that hub describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomClaim {
    pub hub: FoundHub,
    pub room: RoomSummary,
}

impl std::fmt::Display for RoomClaim {
    /// `'Lab Hub' at http://10.0.0.2:3000`: what tells two claimants apart for a person.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' at {}", self.hub.name, self.hub.url)
    }
}

/// The claims on room `code` (any case) among `hubs`: one per hub URL, the last one seen for each,
/// sorted by name then URL. Two claims are two hubs however alike their names are: telling the
/// real one from an impostor is for a person, with `--hub`.
pub fn room_claims<'a>(code: &str, hubs: impl IntoIterator<Item = &'a FoundHub>) -> Vec<RoomClaim> {
    let mut claims: Vec<RoomClaim> = Vec::new();
    for hub in hubs {
        let Some(room) = hub.room(code) else { continue };
        claims.retain(|c| c.hub.url != hub.url);
        claims.push(RoomClaim { hub: hub.clone(), room: room.clone() });
    }
    claims.sort_by(|a, b| {
        a.hub.name.to_lowercase().cmp(&b.hub.name.to_lowercase()).then_with(|| a.hub.url.cmp(&b.hub.url))
    });
    claims
}

/// Every hub on the LAN that claims room `code` (any case) within `timeout`: the whole window is
/// browsed, never only until a first claimant, since the first to answer is whoever is fastest,
/// not whoever is genuine. A hub that claimed the room and then withdrew within the window still
/// counts: a goodbye is as unauthenticated as an announcement, and an impostor could send one for
/// the real hub. Empty when no hub holds the room.
pub async fn find_room_all(
    code: &str,
    timeout: Duration,
    service_type: &str,
) -> Result<Vec<RoomClaim>, DiscoveryError> {
    let mut browser = browse(BrowseOptions::new(service_type))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut claimants: Vec<FoundHub> = Vec::new();
    while let Ok(Some(change)) = tokio::time::timeout_at(deadline, browser.next()).await {
        if let HubChange::Appeared(hub) | HubChange::Updated(hub) = change {
            if hub.room(code).is_some() {
                claimants.push(hub);
            }
        }
    }
    browser.stop().await;
    Ok(room_claims(code, &claimants))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_types_are_checked_before_mdns_sees_them() {
        assert!(validate_service_type(SERVICE_TYPE).is_ok());
        assert!(validate_service_type("_gt-1a2b3c._tcp.local.").is_ok());
        for bad in [
            "_gambi._udp.local.",
            "gambi._tcp.local.",
            "_._tcp.local.",
            "_abcdefghijklmnop._tcp.local.",
            "_12._tcp.local.",
            "_a--b._tcp.local.",
            "_-ab._tcp.local.",
            "_a b._tcp.local.",
        ] {
            assert!(validate_service_type(bad).is_err(), "{bad}");
        }
    }

    fn hub(name: &str, url: &str, codes: &[&str]) -> FoundHub {
        FoundHub {
            instance: format!("gambi-hub-3000-{name}"),
            name: name.into(),
            url: url.into(),
            addresses: Vec::new(),
            host: format!("{name}.local."),
            port: 3000,
            version: Some("1.0".into()),
            protocol: Some("http".into()),
            rooms_txt: Some(codes.len()),
            rooms: codes
                .iter()
                .map(|code| RoomSummary {
                    id: format!("id-{code}"),
                    code: code.to_string(),
                    name: "Room".into(),
                    host_id: "host".into(),
                    created_at: 0,
                    password_protected: true,
                    defaults: None,
                    participant_count: Some(0),
                })
                .collect(),
            hub_version: None,
        }
    }

    #[test]
    fn every_hub_claiming_a_room_is_a_claimant_once() {
        let real = hub("Lab Hub", "http://10.0.0.1:3000", &["ABC234"]);
        let rogue = hub("Lab Hub", "http://10.0.0.2:3000", &["ABC234", "XYZ789"]);
        let other = hub("Other", "http://10.0.0.3:3000", &["XYZ789"]);
        // The same hub seen twice (appeared, then updated) is one claimant, as last seen.
        let mut updated = real.clone();
        updated.rooms_txt = Some(1);
        let claims = room_claims("abc234", [&rogue, &real, &other, &updated]);
        let urls: Vec<_> = claims.iter().map(|c| c.hub.url.as_str()).collect();
        assert_eq!(urls, ["http://10.0.0.1:3000", "http://10.0.0.2:3000"]);
        assert_eq!(claims[0].hub, updated);
        assert_eq!(claims[0].room.code, "ABC234");
        assert_eq!(claims[1].to_string(), "'Lab Hub' at http://10.0.0.2:3000");
        assert_eq!(room_claims("XYZ789", [&real, &rogue, &other]).len(), 2);
        assert!(room_claims("QQQ222", [&real, &rogue, &other]).is_empty());
        let one = room_claims("ABC234", [&real]);
        assert_eq!(one.len(), 1);
    }
}
