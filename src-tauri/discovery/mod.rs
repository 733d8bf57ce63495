//! Finding hubs on the LAN with mDNS / DNS-SD, wire-compatible with the original TypeScript hub
//! (service type `_gambi._tcp.local.`, TXT `version=1.0`, `protocol=http`).
//!
//! - [`Advertiser`] (in `advertise`): a running hub's advertisement, TXT kept current with its room
//!   count, withdrawn with goodbye packets on shutdown.
//! - [`browse`] / [`Browser`] (in `browse`): a stream of [`HubChange`]s, each hub confirmed with
//!   `GET /v1/health` and its rooms fetched before it is reported.
//! - [`discover`] and [`find_room`]: the one-call forms the command line uses (`gambi discover`,
//!   joining a room by code with no hub given).
//! - `txt` and `address`: the pure rules (what a TXT record says, which addresses to dial).
//!
//! Nothing here prints; the hub itself never knows it is advertised (the advertiser reads the
//! hub's event bus).

pub mod address;
pub mod advertise;
pub mod browse;
pub mod txt;

use std::time::Duration;

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

/// The hub on the LAN that holds room `code` (any case), and the room, as soon as one is found;
/// `None` when no hub answering within `timeout` holds it.
pub async fn find_room(
    code: &str,
    timeout: Duration,
    service_type: &str,
) -> Result<Option<(FoundHub, RoomSummary)>, DiscoveryError> {
    let mut browser = browse(BrowseOptions::new(service_type))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut found = None;
    while let Ok(Some(change)) = tokio::time::timeout_at(deadline, browser.next()).await {
        if let HubChange::Appeared(hub) | HubChange::Updated(hub) = change {
            if let Some(room) = hub.room(code).cloned() {
                found = Some((hub, room));
                break;
            }
        }
    }
    browser.stop().await;
    Ok(found)
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
}
