//! Where the hub itself may connect: the endpoints of `direct` participants (classic `join`).
//!
//! A direct endpoint is a base URL (scheme, host, port, optional path prefix) and the hub joins the
//! OpenAI paths onto it as URL path segments. What it may point at depends on who registered it:
//! a registration that comes from this machine (loopback source) may point at this machine's
//! loopback and link-local addresses; one from the LAN may point at the LAN only. Cloud metadata
//! addresses are never called. The check is made on the address the hub actually connects to: names
//! are resolved by [`GuardedResolver`], which drops every address the policy refuses, so a name that
//! rebinds to `127.0.0.1` after registration connects nowhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::hub::error::HubError;
use crate::hub::quota::canonical;

/// Who registered an endpoint, which bounds where it may point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// Registered from another machine: LAN and public addresses only.
    #[default]
    Lan,
    /// Registered from this machine: its loopback and link-local addresses too.
    Local,
}

impl Reach {
    /// The reach of a registration made from `source` (unknown sources are treated as remote).
    pub fn of_source(source: Option<IpAddr>) -> Reach {
        match source.map(canonical) {
            Some(ip) if ip.is_loopback() => Reach::Local,
            _ => Reach::Lan,
        }
    }
}

/// Why an address may not be called, as a sentence for the person who registered it.
fn refusal(ip: IpAddr, reach: Reach) -> Option<&'static str> {
    let ip = canonical(ip);
    if is_metadata(ip) {
        return Some("it is a cloud metadata address, which the hub never calls");
    }
    if ip.is_multicast() || is_broadcast(ip) {
        return Some("it is a multicast or broadcast address");
    }
    let local_only = ip.is_loopback() || ip.is_unspecified() || is_link_local(ip);
    if local_only && reach == Reach::Lan {
        return Some("it is on the hub machine itself (loopback or link-local), which only a participant on that machine may register");
    }
    None
}

/// True when the hub may connect to `ip` for an endpoint of `reach`.
pub fn allowed(ip: IpAddr, reach: Reach) -> bool {
    refusal(ip, reach).is_none()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The instance metadata services of the big clouds (AWS, GCP, Azure, OpenStack; AWS's IPv6 one;
/// Alibaba's; ECS task metadata).
fn is_metadata(ip: IpAddr) -> bool {
    const V4: [Ipv4Addr; 3] =
        [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(169, 254, 170, 2), Ipv4Addr::new(100, 100, 100, 200)];
    const V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];
    match ip {
        IpAddr::V4(v4) => V4.contains(&v4),
        IpAddr::V6(v6) => V6.contains(&v6),
    }
}

/// Names that mean this machine or a metadata service whatever DNS says.
fn name_refusal(host: &str, reach: Reach) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "metadata.google.internal" || host == "metadata" || host == "instance-data" {
        return Some("it is a cloud metadata address, which the hub never calls");
    }
    if (host == "localhost" || host.ends_with(".localhost")) && reach == Reach::Lan {
        return Some("it is on the hub machine itself (loopback or link-local), which only a participant on that machine may register");
    }
    None
}

/// A registration's `endpoint` as a base URL: `http`/`https`, a host, an optional port and path
/// prefix; no user name or password, query or fragment. Returned without a trailing slash.
pub fn base_url(endpoint: &str) -> Result<Url, HubError> {
    let bad = |why: &str| {
        HubError::invalid(
            format!("'endpoint' must be the base URL of the model server: {why}."),
            "Give just the server's address, like http://192.168.1.20:11434 (a path prefix such as /v1 is fine).",
        )
    };
    let url = Url::parse(endpoint.trim()).map_err(|_| bad("it is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("it must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it carries a user name or password, which must stay on the participant's machine"));
    }
    if url.query().is_some() {
        return Err(bad("it carries a query ('?...')"));
    }
    if url.fragment().is_some() {
        return Err(bad("it carries a fragment ('#...')"));
    }
    Ok(url)
}

/// Checks, at registration, a direct endpoint whose host can be judged without DNS (an address or
/// a name that always means this machine or a metadata service). Names are checked again, on the
/// addresses they resolve to, at every connection.
pub fn check_direct(url: &Url, reach: Reach) -> Result<(), HubError> {
    let why = match host_of(url) {
        Some(Host::Ip(ip)) => refusal(ip, reach),
        Some(Host::Name(name)) => name_refusal(name, reach),
        None => Some("it has no host"),
    };
    match why {
        None => Ok(()),
        Some(why) => Err(HubError::invalid(
            format!("The hub will not call this endpoint: {why}."),
            "Register with the model server's LAN address, or share it through a tunnel (gambi participant join), which never needs the hub to reach it.",
        )),
    }
}

enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// The URL's host: the parser has already turned every way of writing an address (`2130706433`,
/// `0x7f.1`) into its plain form.
fn host_of(url: &Url) -> Option<Host<'_>> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host),
    })
}

/// `base` with `path` (like `/v1/responses/ID`) appended as URL path segments: nothing in it can
/// add a query, a fragment or climb above the prefix.
pub fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        // Each segment is percent-encoded (`?`, `#` and `%` included); `.` and `..` are dropped.
        segments.pop_if_empty().extend(path.split('/').filter(|s| !s.is_empty()));
    }
    url
}

/// The one sentence a direct participant's failure is told in: it says what failed without telling
/// open, closed and non-HTTP ports of the target apart.
pub const NOT_OPENAI: &str = "the model server did not answer like an OpenAI-compatible server";

/// The resolver of one [`Reach`]: system DNS, then only the addresses the policy allows.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    reach: Reach,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.reach;
        Box::pin(async move {
            let host = name.as_str().to_string();
            if let Some(why) = name_refusal(&host, reach) {
                return Err(why.into());
            }
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept: Vec<SocketAddr> = found.filter(|a| allowed(a.ip(), reach)).collect();
            if kept.is_empty() {
                return Err("the endpoint's name resolves to no address the hub may call".into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The two HTTP clients for direct participants, one per [`Reach`]: no redirects (a redirect could
/// point anywhere), no proxy from the environment (the check must see the real address), names
/// resolved through [`GuardedResolver`].
#[derive(Clone)]
pub struct DirectClients {
    lan: reqwest::Client,
    local: reqwest::Client,
}

impl DirectClients {
    pub fn new() -> Self {
        let build = |reach: Reach| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(90))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver { reach }))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        };
        DirectClients { lan: build(Reach::Lan), local: build(Reach::Local) }
    }

    pub fn get(&self, reach: Reach) -> &reqwest::Client {
        match reach {
            Reach::Lan => &self.lan,
            Reach::Local => &self.local,
        }
    }
}

impl Default for DirectClients {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks the address literal of `url` (literals never reach the resolver) before a connection.
pub fn check_literal(url: &Url, reach: Reach) -> Result<(), &'static str> {
    let Some(Host::Ip(ip)) = host_of(url) else {
        return Ok(());
    };
    match refusal(ip, reach) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_and_link_local_only_from_this_machine_metadata_never() {
        for local_only in
            ["127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "169.254.10.1", "fe80::1", "::ffff:127.0.0.1"]
        {
            assert!(!allowed(ip(local_only), Reach::Lan), "{local_only} from the LAN");
            assert!(allowed(ip(local_only), Reach::Local), "{local_only} from this machine");
        }
        for metadata in
            ["169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "::ffff:169.254.169.254"]
        {
            assert!(!allowed(ip(metadata), Reach::Lan), "{metadata}");
            assert!(!allowed(ip(metadata), Reach::Local), "{metadata}");
        }
        for lan in ["192.168.1.20", "10.0.0.5", "172.16.3.4", "fd12:3456::1", "8.8.8.8"] {
            assert!(allowed(ip(lan), Reach::Lan), "{lan}");
            assert!(allowed(ip(lan), Reach::Local), "{lan}");
        }
        assert!(!allowed(ip("224.0.0.251"), Reach::Local));
        assert!(!allowed(ip("255.255.255.255"), Reach::Local));
    }

    #[test]
    fn a_registration_source_on_loopback_is_local() {
        assert_eq!(Reach::of_source(Some(ip("127.0.0.1"))), Reach::Local);
        assert_eq!(Reach::of_source(Some(ip("::ffff:127.0.0.1"))), Reach::Local);
        assert_eq!(Reach::of_source(Some(ip("192.168.1.2"))), Reach::Lan);
        assert_eq!(Reach::of_source(None), Reach::Lan);
    }

    #[test]
    fn an_endpoint_is_a_base_url_without_credentials_query_or_fragment() {
        assert!(base_url("http://192.168.1.20:11434").is_ok());
        assert!(base_url("https://models.example/openai/").is_ok());
        for (bad, says) in [
            ("http://user:pw@127.0.0.1:3202/", "user name or password"),
            ("http://user@10.0.0.2/", "user name or password"),
            ("http://10.0.0.2/containers/create?name=pwn&x=", "query"),
            ("http://10.0.0.2/#frag", "fragment"),
            ("ftp://10.0.0.2/", "http://"),
            ("not a url", "not a URL"),
        ] {
            let err = base_url(bad).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn registration_refuses_what_it_can_judge_without_dns() {
        let url = |s: &str| base_url(s).unwrap();
        assert!(check_direct(&url("http://127.0.0.1:11434"), Reach::Lan).is_err());
        assert!(check_direct(&url("http://localhost:11434"), Reach::Lan).is_err());
        assert!(check_direct(&url("http://a.localhost:11434"), Reach::Lan).is_err());
        assert!(check_direct(&url("http://[::1]:11434"), Reach::Lan).is_err());
        assert!(check_direct(&url("http://127.0.0.1:11434"), Reach::Local).is_ok());
        assert!(check_direct(&url("http://localhost:11434"), Reach::Local).is_ok());
        assert!(check_direct(&url("http://169.254.169.254/latest"), Reach::Local).is_err());
        assert!(check_direct(&url("http://metadata.google.internal/"), Reach::Local).is_err());
        assert!(check_direct(&url("http://192.168.1.20:11434"), Reach::Lan).is_ok());
        assert!(check_direct(&url("http://gpu-box.local:11434"), Reach::Lan).is_ok());
        // A literal written another way is still judged as the address it is.
        assert!(check_direct(&url("http://2130706433:11434"), Reach::Lan).is_err());
        assert!(check_direct(&url("http://0x7f.1:11434"), Reach::Lan).is_err());
    }

    #[test]
    fn paths_are_joined_as_segments_never_as_strings() {
        let base = base_url("http://10.0.0.2:8080/prefix/").unwrap();
        assert_eq!(join(&base, "/v1/chat/completions").as_str(), "http://10.0.0.2:8080/prefix/v1/chat/completions");
        let bare = base_url("http://10.0.0.2:8080").unwrap();
        assert_eq!(join(&bare, "/v1/models").as_str(), "http://10.0.0.2:8080/v1/models");
        let evil = join(&bare, "/v1/responses/x?y=1#z");
        assert_eq!(evil.query(), None);
        assert_eq!(evil.fragment(), None);
        assert_eq!(evil.path(), "/v1/responses/x%3Fy=1%23z");
        let climb = join(&base, "/v1/responses/../../../containers/create");
        assert!(climb.path().starts_with("/prefix/v1/responses/"), "{climb}");
        assert!(!climb.path().contains("/../"), "{climb}");
    }

    #[tokio::test]
    async fn the_resolver_drops_addresses_the_policy_refuses() {
        let lan = GuardedResolver { reach: Reach::Lan };
        let name: Name = "localhost".parse().unwrap();
        assert!(lan.resolve(name).await.is_err(), "localhost from the LAN");
        let local = GuardedResolver { reach: Reach::Local };
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = local.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
