//! A hub that mDNS finds but cannot resolve: its SRV record names a target host with no address
//! record. The TypeScript hub's advertisement (bonjour-service) names the machine (`vm`) and may
//! publish no A record for it; its own SDK resolves the name through the system resolver. `mdns-sd`
//! reports such a service as found and never as resolved, and keeps its records to itself, so this
//! asks the LAN for the service's SRV and TXT records with one mDNS query of its own, and resolves
//! the target through the system resolver (`getaddrinfo`: the hosts file, DNS, nss-mdns). What it
//! finds is confirmed over HTTP like any other advertisement (`browse`), so a name that resolves
//! to the wrong machine reports nothing.
//!
//! The query leaves from a port of its own, which makes it a "legacy unicast" query (RFC 6762
//! §6.7): responders that follow the RFC (python-zeroconf, Avahi, Apple's) answer straight to that
//! port. Responders that always multicast (multicast-dns, under bonjour-service) answer to port
//! 5353, so a second socket listens there for the time of the query, beside the browser's own
//! daemon (address and port reuse, as `mdns-sd` binds it). IPv4 only, like the TypeScript hub's
//! advertisement.
//!
//! The packet code is the least that does the job: a query of two questions out; SRV and TXT
//! answers about one name in, with name compression. Anything else in a packet is skipped, and a
//! malformed packet is ignored as a whole.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

const MDNS_PORT: u16 = 5353;
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const TYPE_SRV: u16 = 33;
const TYPE_TXT: u16 = 16;
const CLASS_IN: u16 = 1;
/// A name is at most 255 bytes, so following more compression pointers than this is a loop.
const MAX_JUMPS: usize = 64;

/// What the LAN said about one service: where it is (SRV) and its TXT items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRecords {
    /// The SRV target (`vm.`) and port.
    pub target: Option<(String, u16)>,
    /// TXT items as `(key, value)`; `None` until a TXT record was heard.
    pub txt: Option<Vec<(String, Option<Vec<u8>>)>>,
}

impl ServiceRecords {
    fn complete(&self) -> bool {
        self.target.is_some() && self.txt.is_some()
    }
}

/// The labels of a DNS-SD full name as `mdns-sd` writes it (`Ana\.s hub._gambi._tcp.local.`): split
/// at unescaped dots, with `\.` and `\\` undone. `None` for a name no packet can carry.
pub fn labels(fullname: &str) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut label = Vec::new();
    let mut chars = fullname.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = chars.next()?;
                label.extend_from_slice(escaped.encode_utf8(&mut [0; 4]).as_bytes());
            }
            '.' => out.push(std::mem::take(&mut label)),
            c => label.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    if !label.is_empty() {
        out.push(label);
    }
    let fits =
        out.iter().all(|l| !l.is_empty() && l.len() <= 63) && out.iter().map(|l| l.len() + 1).sum::<usize>() < 255;
    (fits && !out.is_empty()).then_some(out)
}

/// An mDNS query (id 0 is fine for a legacy query: the answer echoes it) asking for the SRV and
/// the TXT record of `fullname`.
pub fn query(fullname: &str) -> Option<Vec<u8>> {
    let name = labels(fullname)?;
    let mut packet = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
    for kind in [TYPE_SRV, TYPE_TXT] {
        for label in &name {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label);
        }
        packet.push(0);
        packet.extend_from_slice(&kind.to_be_bytes());
        packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    }
    Some(packet)
}

/// A cursor over a packet; every read fails cleanly past its end.
struct Reader<'a> {
    packet: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.packet.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A (possibly compressed) name at the cursor; the cursor moves past its first part only.
    fn name(&mut self) -> Option<Vec<Vec<u8>>> {
        let mut labels = Vec::new();
        let mut at = self.at;
        let mut resume = None;
        let mut jumps = 0;
        loop {
            let len = *self.packet.get(at)? as usize;
            match len {
                0 => {
                    at += 1;
                    break;
                }
                l if l & 0xC0 == 0xC0 => {
                    let low = *self.packet.get(at + 1)? as usize;
                    resume.get_or_insert(at + 2);
                    jumps += 1;
                    if jumps > MAX_JUMPS {
                        return None;
                    }
                    at = ((l & 0x3F) << 8) | low;
                }
                l if l <= 63 => {
                    labels.push(self.packet.get(at + 1..at + 1 + l)?.to_vec());
                    at += 1 + l;
                }
                // 0x40 and 0x80 label types are obsolete or unassigned.
                _ => return None,
            }
        }
        self.at = resume.unwrap_or(at);
        Some(labels)
    }
}

fn same_name(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// A name as text, each label's dots escaped (`vm.`, `box.local.`).
fn name_text(labels: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for label in labels {
        out.push_str(&String::from_utf8_lossy(label).replace('\\', "\\\\").replace('.', "\\."));
        out.push('.');
    }
    out
}

/// Reads the SRV and TXT records about `name` from one mDNS response into `records`. Goodbyes
/// (TTL 0) are not records; queries and malformed packets add nothing.
pub fn read_answers(packet: &[u8], name: &[Vec<u8>], records: &mut ServiceRecords) {
    let _ = try_read_answers(packet, name, records);
}

fn try_read_answers(packet: &[u8], name: &[Vec<u8>], records: &mut ServiceRecords) -> Option<()> {
    let mut r = Reader { packet, at: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return None; // a query, not a response
    }
    let questions = r.u16()?;
    let records_count = [r.u16()?, r.u16()?, r.u16()?].iter().map(|&n| usize::from(n)).sum::<usize>();
    for _ in 0..questions {
        r.name()?;
        r.bytes(4)?;
    }
    // Everything is read before anything is kept: a packet that turns out malformed keeps nothing.
    let mut found = ServiceRecords::default();
    for _ in 0..records_count {
        let owner = r.name()?;
        let kind = r.u16()?;
        let _class = r.u16()?;
        let ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        let data_at = r.at;
        let data = r.bytes(len)?;
        if ttl == 0 || !same_name(&owner, name) {
            continue;
        }
        match kind {
            TYPE_SRV => {
                let mut srv = Reader { packet, at: data_at };
                let (_priority, _weight, port) = (srv.u16()?, srv.u16()?, srv.u16()?);
                let target = srv.name()?;
                if !target.is_empty() {
                    found.target = Some((name_text(&target), port));
                }
            }
            TYPE_TXT => {
                let mut items = Vec::new();
                let mut txt = Reader { packet: data, at: 0 };
                while txt.at < data.len() {
                    let n = usize::from(txt.bytes(1)?[0]);
                    let item = txt.bytes(n)?;
                    if item.is_empty() {
                        continue;
                    }
                    let text = String::from_utf8_lossy(item);
                    match text.split_once('=') {
                        Some((key, _)) => {
                            items.push((key.to_string(), Some(item[key.len() + 1..].to_vec())));
                        }
                        None => items.push((text.into_owned(), None)),
                    }
                }
                found.txt = Some(items);
            }
            _ => {}
        }
    }
    if found.target.is_some() {
        records.target = found.target;
    }
    if found.txt.is_some() {
        records.txt = found.txt;
    }
    Some(())
}

/// The socket that hears multicast answers on port 5353 beside the browser's daemon, if this
/// system lets it share the port.
fn multicast_listener() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    // The daemon already joined the group on every interface, which on Linux is enough for this
    // socket to hear it too; elsewhere the membership is this socket's own.
    let _ = socket.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Asks the LAN for `fullname`'s SRV and TXT records and listens for the answers until both came
/// or `within` passed. `None` when no SRV record was heard.
pub async fn lookup(fullname: &str, within: Duration) -> Option<ServiceRecords> {
    let name = labels(fullname)?;
    let packet = query(fullname)?;
    let sender = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    // mDNS packets are sent with TTL 255 (RFC 6762 §11); receivers may drop others.
    let _ = sender.set_multicast_ttl_v4(255);
    let listener = match multicast_listener() {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::debug!("cannot listen on port 5353 beside the mDNS daemon ({e}); unicast answers only");
            None
        }
    };
    if let Err(e) = sender.send_to(&packet, (GROUP, MDNS_PORT)).await {
        tracing::debug!(fullname, "cannot send the SRV query: {e}");
        return None;
    }
    let deadline = Instant::now() + within;
    let mut records = ServiceRecords::default();
    // The largest mDNS packet (RFC 6762 §17).
    let (mut unicast, mut multicast) = (vec![0u8; 9000], vec![0u8; 9000]);
    while !records.complete() {
        let heard = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            r = sender.recv_from(&mut unicast) => r.ok().map(|(n, _)| (false, n)),
            r = async {
                match &listener {
                    Some(l) => l.recv_from(&mut multicast).await,
                    None => std::future::pending().await,
                }
            } => r.ok().map(|(n, _)| (true, n)),
        };
        let before = records.clone();
        match heard {
            Some((false, n)) => read_answers(&unicast[..n], &name, &mut records),
            Some((true, n)) => read_answers(&multicast[..n], &name, &mut records),
            None => {}
        }
        if records != before {
            let via = if heard.is_some_and(|(multicast, _)| multicast) { "port 5353" } else { "unicast" };
            tracing::debug!(fullname, ?records, via, "records heard for an unresolved service");
        }
    }
    records.target.is_some().then_some(records)
}

/// The addresses the system resolver gives the SRV target `host` (`vm.` is asked as `vm`), within
/// `within`; empty when it knows none.
pub async fn resolve_target(host: &str, port: u16, within: Duration) -> Vec<IpAddr> {
    let host = host.strip_suffix('.').unwrap_or(host).replace("\\.", ".");
    if host.is_empty() {
        return Vec::new();
    }
    let answer = tokio::time::timeout(within, tokio::net::lookup_host((host.as_str(), port))).await;
    match answer {
        Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
        Ok(Err(e)) => {
            tracing::debug!(host, "the system resolver does not know the SRV target: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!(host, "the system resolver took too long for the SRV target");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Vec<Vec<u8>> {
        labels(text).expect("a name")
    }

    fn encode(labels: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in labels {
            out.push(l.len() as u8);
            out.extend_from_slice(l);
        }
        out.push(0);
        out
    }

    /// A response with `answers` as (owner bytes, type, ttl, rdata), after one question.
    fn response(question: &[u8], answers: &[(Vec<u8>, u16, u32, Vec<u8>)]) -> Vec<u8> {
        let mut p = vec![0, 0, 0x84, 0, 0, 1, 0, answers.len() as u8, 0, 0, 0, 0];
        p.extend_from_slice(question);
        p.extend_from_slice(&[0, 33, 0, 1]);
        for (owner, kind, ttl, data) in answers {
            p.extend_from_slice(owner);
            p.extend_from_slice(&kind.to_be_bytes());
            p.extend_from_slice(&[0x80, 1]);
            p.extend_from_slice(&ttl.to_be_bytes());
            p.extend_from_slice(&(data.len() as u16).to_be_bytes());
            p.extend_from_slice(data);
        }
        p
    }

    #[test]
    fn full_names_split_at_unescaped_dots() {
        assert_eq!(name("ts-hub._gambi._tcp.local."), [&b"ts-hub"[..], b"_gambi", b"_tcp", b"local"]);
        assert_eq!(name("Ana\\.s hub._gambi._tcp.local.")[0], b"Ana.s hub");
        assert_eq!(labels(""), None);
        assert_eq!(labels("a..b."), None, "an empty label");
        assert_eq!(labels(&format!("{}._gambi._tcp.local.", "x".repeat(64))), None, "a label past 63 bytes");
    }

    #[test]
    fn the_query_asks_for_srv_and_txt() {
        let q = query("ts-hub._gambi._tcp.local.").unwrap();
        assert_eq!(&q[..12], &[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
        let encoded = encode(&name("ts-hub._gambi._tcp.local."));
        assert_eq!(&q[12..12 + encoded.len()], &encoded[..]);
        assert_eq!(&q[12 + encoded.len()..16 + encoded.len()], &[0, 33, 0, 1]);
        assert!(q.ends_with(&[0, 16, 0, 1]));
        assert_eq!(q.len(), 12 + 2 * (encoded.len() + 4));
    }

    #[test]
    fn srv_and_txt_answers_are_read_with_compressed_names() {
        let service = name("ts-hub._gambi._tcp.local.");
        let question = encode(&service);
        // The answers name the service by a pointer to the question (offset 12); the SRV target
        // is a plain `vm` and the TXT holds the original hub's two keys and a bare flag.
        let pointer = vec![0xC0, 12];
        let mut srv = vec![0, 0, 0, 0, 0x0B, 0xB8];
        srv.extend_from_slice(&encode(&[b"vm".to_vec()]));
        let mut txt = Vec::new();
        for item in ["version=1.0", "protocol=http", "flag"] {
            txt.push(item.len() as u8);
            txt.extend_from_slice(item.as_bytes());
        }
        let packet = response(&question, &[(pointer.clone(), 33, 120, srv), (pointer, 16, 4500, txt)]);
        let mut records = ServiceRecords::default();
        read_answers(&packet, &service, &mut records);
        assert_eq!(records.target, Some(("vm.".to_string(), 3000)));
        assert_eq!(
            records.txt,
            Some(vec![
                ("version".to_string(), Some(b"1.0".to_vec())),
                ("protocol".to_string(), Some(b"http".to_vec())),
                ("flag".to_string(), None),
            ])
        );
        assert!(records.complete());
    }

    #[test]
    fn other_names_goodbyes_queries_and_broken_packets_add_nothing() {
        let service = name("ts-hub._gambi._tcp.local.");
        let other = encode(&name("other._gambi._tcp.local."));
        let mut srv = vec![0, 0, 0, 0, 0x0B, 0xB8];
        srv.extend_from_slice(&encode(&[b"vm".to_vec()]));
        let mut records = ServiceRecords::default();
        read_answers(&response(&other, &[(other.clone(), 33, 120, srv.clone())]), &service, &mut records);
        let own = encode(&service);
        read_answers(&response(&own, &[(own.clone(), 33, 0, srv.clone())]), &service, &mut records);
        let mut query_packet = response(&own, &[(own.clone(), 33, 120, srv.clone())]);
        query_packet[2] = 0;
        read_answers(&query_packet, &service, &mut records);
        assert_eq!(records, ServiceRecords::default());

        // Cut anywhere, a packet keeps nothing, and a pointer loop ends.
        let whole = response(&own, &[(own.clone(), 33, 120, srv)]);
        for cut in 0..whole.len() {
            read_answers(&whole[..cut], &service, &mut records);
        }
        assert_eq!(records, ServiceRecords::default());
        let looped = response(&[0xC0, 12], &[]);
        read_answers(&looped, &service, &mut records);
        read_answers(&whole, &service, &mut records);
        assert_eq!(records.target, Some(("vm.".to_string(), 3000)));
    }

    #[tokio::test]
    async fn the_system_resolver_knows_localhost_and_nothing_for_an_empty_target() {
        let found = resolve_target("localhost.", 3000, Duration::from_secs(5)).await;
        assert!(found.iter().any(|ip| ip.is_loopback()), "{found:?}");
        assert!(resolve_target(".", 3000, Duration::from_secs(1)).await.is_empty());
    }
}
