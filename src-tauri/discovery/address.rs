//! Which of the addresses a service was resolved at a browser may report and dial, best first.
//!
//! mDNS hands back every address a hub published, on every interface it was heard on, and it can
//! resolve a service with only a link-local IPv6 address before the IPv4 one arrives. The rules
//! here: IPv4 first (hubs listen on `0.0.0.0` by default, so IPv4 is what answers), then routable
//! IPv6; a link-local IPv6 address is only meaningful with the interface it belongs to, so one
//! without a scope is dropped, and one with a scope is reported but never dialled (a URL cannot
//! carry the zone). Pure data: no I/O.

use std::net::IpAddr;

/// One address a service was resolved at, as mDNS reported it: for IPv6, the interface it was
/// heard on (its name, or its index as text when the name is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub ip: IpAddr,
    pub scope: Option<String>,
}

impl Candidate {
    pub fn new(ip: IpAddr, scope: Option<String>) -> Candidate {
        Candidate { ip, scope: scope.filter(|s| !s.is_empty() && s != "0") }
    }
}

/// An address a browser may report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    pub ip: IpAddr,
    /// The zone of a link-local IPv6 address; `None` for every other address.
    pub scope: Option<String>,
    /// Lower is better: the order addresses are tried in.
    rank: u8,
}

impl HubAddress {
    /// How the address is shown: IPv4 as is, IPv6 in brackets (with `%zone` when it has one).
    pub fn text(&self) -> String {
        match (self.ip, &self.scope) {
            (IpAddr::V4(v4), _) => v4.to_string(),
            (IpAddr::V6(v6), Some(zone)) => format!("[{v6}%{zone}]"),
            (IpAddr::V6(v6), None) => format!("[{v6}]"),
        }
    }

    /// True when a client can dial the address through a URL.
    pub fn dialable(&self) -> bool {
        self.scope.is_none()
    }

    /// `scheme://<address>:<port>`, for a dialable address.
    pub fn url(&self, scheme: &str, port: u16) -> Option<String> {
        self.dialable().then(|| format!("{scheme}://{}:{port}", self.text()))
    }
}

/// The addresses worth reporting, best first, without duplicates. An IPv4 address embedded in
/// IPv6 (`::ffff:a.b.c.d`) counts as the IPv4 address.
pub fn rank_addresses<I>(candidates: I) -> Vec<HubAddress>
where
    I: IntoIterator<Item = Candidate>,
{
    let mut out: Vec<HubAddress> = Vec::new();
    for candidate in candidates {
        let ip = match candidate.ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let Some((rank, scope)) = classify(ip, candidate.scope) else { continue };
        let address = HubAddress { ip, scope, rank };
        if !out.iter().any(|a| a.ip == address.ip && a.scope == address.scope) {
            out.push(address);
        }
    }
    out.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.ip.cmp(&b.ip)).then_with(|| a.scope.cmp(&b.scope)));
    out
}

/// The rank of an address and the scope it keeps, or `None` when it must not be reported.
fn classify(ip: IpAddr, scope: Option<String>) -> Option<(u8, Option<String>)> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
                None
            } else if v4.is_loopback() {
                // Only useful to a browser on the hub's own machine, so after every LAN address.
                Some((2, None))
            } else if v4.is_link_local() {
                Some((1, None))
            } else {
                Some((0, None))
            }
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            if v6.is_unspecified() || v6.is_multicast() {
                None
            } else if link_local {
                // Without its interface, a link-local address names no host at all.
                scope.map(|zone| (5, Some(zone)))
            } else if v6.is_loopback() {
                Some((4, None))
            } else {
                Some((3, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ip: &str, scope: Option<&str>) -> Candidate {
        Candidate::new(ip.parse().unwrap(), scope.map(str::to_string))
    }

    fn texts(addresses: &[HubAddress]) -> Vec<String> {
        addresses.iter().map(HubAddress::text).collect()
    }

    #[test]
    fn ipv4_comes_first_then_routable_ipv6_then_scoped_link_local() {
        let ranked = rank_addresses([
            c("fe80::1", Some("eth0")),
            c("2001:db8::5", None),
            c("127.0.0.1", None),
            c("10.0.0.7", None),
            c("169.254.3.4", None),
        ]);
        assert_eq!(texts(&ranked), ["10.0.0.7", "169.254.3.4", "127.0.0.1", "[2001:db8::5]", "[fe80::1%eth0]"]);
    }

    #[test]
    fn a_link_local_ipv6_without_a_scope_is_refused() {
        assert!(rank_addresses([c("fe80::1", None)]).is_empty());
        // An index 0 is no scope either: it names no interface.
        assert!(rank_addresses([c("fe80::1", Some("0"))]).is_empty());
    }

    #[test]
    fn a_scoped_link_local_ipv6_is_reported_but_never_dialled() {
        let ranked = rank_addresses([c("fe80::1", Some("eth0"))]);
        assert_eq!(ranked.len(), 1);
        assert!(!ranked[0].dialable());
        assert_eq!(ranked[0].url("http", 3000), None);
    }

    #[test]
    fn urls_bracket_ipv6() {
        let ranked = rank_addresses([c("2001:db8::5", None), c("192.168.1.2", None)]);
        let urls: Vec<_> = ranked.iter().filter_map(|a| a.url("http", 3000)).collect();
        assert_eq!(urls, ["http://192.168.1.2:3000", "http://[2001:db8::5]:3000"]);
    }

    #[test]
    fn unusable_and_duplicate_addresses_are_dropped() {
        let ranked = rank_addresses([
            c("0.0.0.0", None),
            c("224.0.0.251", None),
            c("ff02::fb", Some("eth0")),
            c("::", None),
            c("10.0.0.7", None),
            c("::ffff:10.0.0.7", None),
        ]);
        assert_eq!(texts(&ranked), ["10.0.0.7"]);
    }
}
