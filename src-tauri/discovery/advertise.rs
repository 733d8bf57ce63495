//! Advertising a running hub on the LAN: one DNS-SD service, its TXT record kept current as rooms
//! come and go, and a goodbye on shutdown so browsers drop the hub at once.
//!
//! The advertiser owns its own mDNS daemon (a thread inside `mdns-sd`), so stopping it never
//! disturbs a browser running in the same process. It learns about rooms from the hub's event bus
//! ([`Hub::subscribe`]) and never touches the hub otherwise: the hub does not know it is
//! advertised.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::txt::HubTxt;
use super::{validate_service_type, DiscoveryError, SERVICE_TYPE};
use crate::hub::Hub;
use crate::protocol::events::EventKind;

/// Rooms created or closed within this long of each other are published as one TXT update: a
/// burst (a state file loading, a script creating rooms) must not flood the LAN with multicast.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// The least time between two TXT updates. A browser's cache keeps an older TXT record beside a
/// newer one when the older was heard less than a second before (RFC 6762 §10.2), and `mdns-sd`
/// repeats each announcement 1.1 s later; so a value published again before the previous one has
/// been flushed and expired (`rooms=1`, `rooms=2`, `rooms=1` within two seconds) only refreshes
/// the stale copy and browsers never see the change. Spacing updates this far apart rules it out.
const MIN_TXT_SPACING: Duration = Duration::from_millis(2500);
/// How long to wait for the daemon to take the unregister and to stop.
const DAEMON_ANSWER: Duration = Duration::from_secs(1);
/// `mdns-sd` repeats a goodbye 120 ms after the first one, in case a peer missed it; stopping the
/// daemon before then would drop the repeat.
const GOODBYE_REPEAT: Duration = Duration::from_millis(200);
/// DNS labels (instance and host names) are at most 63 bytes.
const MAX_LABEL: usize = 63;

/// How a hub is advertised. `Default` is what `gambi hub serve --mdns` does.
#[derive(Debug, Clone)]
pub struct AdvertiseOptions {
    /// The hub's human name (TXT `name`); the host name when `None`.
    pub name: Option<String>,
    /// The DNS-SD service type; [`SERVICE_TYPE`] unless a test wants a type of its own.
    pub service_type: String,
    /// The instance name; `gambi-hub-<port>-<host>` when `None`.
    pub instance: Option<String>,
    /// The address the hub listens on, which decides what is advertised: `0.0.0.0` (the default)
    /// every IPv4 address of this machine, followed as interfaces come and go; `::` every IPv4
    /// and IPv6 address; a specific address only that one. An IPv4-only hub must not advertise
    /// IPv6 addresses: a browser would dial an address where nothing answers.
    pub listen: IpAddr,
}

impl Default for AdvertiseOptions {
    fn default() -> Self {
        AdvertiseOptions {
            name: None,
            service_type: SERVICE_TYPE.to_string(),
            instance: None,
            listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// Everything needed to build the service record again when the room count changes.
#[derive(Debug, Clone)]
struct Record {
    service_type: String,
    instance: String,
    /// The SRV target, `<host>.local.`.
    host: String,
    port: u16,
    name: String,
    listen: IpAddr,
}

impl Record {
    fn service_info(&self, rooms: usize, probe: bool) -> Result<ServiceInfo, mdns_sd::Error> {
        let properties = HubTxt::for_hub(&self.name, rooms).to_properties();
        let specific = !self.listen.is_unspecified();
        let mut info = if specific {
            ServiceInfo::new(&self.service_type, &self.instance, &self.host, self.listen, self.port, &properties[..])?
        } else {
            ServiceInfo::new(&self.service_type, &self.instance, &self.host, (), self.port, &properties[..])?
                .enable_addr_auto()
        };
        match self.listen {
            _ if specific => info.set_interfaces(vec![IfKind::Addr(self.listen)]),
            IpAddr::V4(_) => info.set_interfaces(vec![IfKind::IPv4]),
            IpAddr::V6(_) => info.set_interfaces(vec![IfKind::All]),
        }
        // The name was probed (RFC 6762 §8.1) when the service was first registered; probing it
        // again for a new TXT would hold the update back for most of a second.
        info.set_requires_probe(probe);
        Ok(info)
    }
}

/// A hub advertised on the LAN. Dropping it withdraws the advertisement on a best-effort basis;
/// [`Advertiser::shutdown`] does it properly and waits for the goodbye to go out.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
    instance: String,
    stop: CancellationToken,
    watcher: Option<JoinHandle<()>>,
    withdrawn: bool,
}

impl Advertiser {
    /// Advertises `hub`, listening on `port`, and keeps the TXT room count current until shut
    /// down. Must be called inside a tokio runtime. Fails when the service type or the names are
    /// not valid DNS-SD, or when the mDNS daemon cannot start.
    pub fn start(hub: &Hub, port: u16, options: AdvertiseOptions) -> Result<Advertiser, DiscoveryError> {
        validate_service_type(&options.service_type)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::NoRuntime)?;
        let host_label = host_label(&machine_host_name());
        let name = options.name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).unwrap_or_else(default_name);
        let instance = match options.instance {
            Some(instance) if !instance.trim().is_empty() => truncate_label(instance.trim()).to_string(),
            _ => default_instance(port, &host_label),
        };
        let record = Record {
            service_type: options.service_type,
            instance,
            host: format!("{host_label}.local."),
            port,
            name,
            listen: options.listen,
        };
        let rooms = hub.registry().room_count();
        let info = record.service_info(rooms, true)?;
        let fullname = info.get_fullname().to_string();
        let daemon = ServiceDaemon::new()?;
        let monitor = daemon.monitor()?;
        // Subscribe before registering, so a room created in between is not missed.
        let events = hub.subscribe();
        if let Err(e) = daemon.register(info) {
            let _ = daemon.shutdown();
            return Err(e.into());
        }
        tracing::info!(instance = %record.instance, service_type = %record.service_type, port, name = %record.name, rooms, "advertising the hub on the LAN");
        let stop = CancellationToken::new();
        let published = TxtState { rooms, at: tokio::time::Instant::now() };
        let watcher = runtime.spawn(keep_current(
            hub.clone(),
            events,
            daemon.clone(),
            monitor,
            record.clone(),
            published,
            stop.clone(),
        ));
        Ok(Advertiser { daemon, fullname, instance: record.instance, stop, watcher: Some(watcher), withdrawn: false })
    }

    /// The instance name as registered (`mdns-sd` may still rename it if another host on the LAN
    /// claims the same one; that is logged).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// `<instance>.<service type>`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the advertisement: sends the goodbye packets, waits until they are out, and
    /// stops the mDNS daemon. Browsers drop the hub within about a second.
    pub async fn shutdown(mut self) {
        self.withdraw().await;
    }

    /// Waits for `token`, then [`Advertiser::shutdown`]: the advertisement goes the moment the hub
    /// begins to shut down, not after its grace period for in-flight requests.
    pub async fn shutdown_when(self, token: CancellationToken) {
        token.cancelled().await;
        self.shutdown().await;
    }

    async fn withdraw(&mut self) {
        if self.withdrawn {
            return;
        }
        self.withdrawn = true;
        self.stop.cancel();
        // The watcher must be gone before the goodbye: a late re-registration would bring the
        // service back.
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.await;
        }
        match self.daemon.unregister(&self.fullname) {
            Ok(status) => match tokio::time::timeout(DAEMON_ANSWER, status.recv_async()).await {
                Ok(Ok(_)) => tokio::time::sleep(GOODBYE_REPEAT).await,
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(instance = %self.instance, "the mDNS daemon did not confirm the goodbye")
                }
            },
            Err(e) => tracing::warn!(instance = %self.instance, error = %e, "cannot withdraw the mDNS advertisement"),
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(DAEMON_ANSWER, status.recv_async()).await;
        }
        tracing::info!(instance = %self.instance, "mDNS advertisement withdrawn");
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        if self.withdrawn {
            return;
        }
        self.stop.cancel();
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        // The daemon runs commands in order and sends the first goodbye as it takes the
        // unregister, so queueing both still says goodbye once; only the repeat is lost.
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// The room count last published, and when.
#[derive(Debug, Clone, Copy)]
struct TxtState {
    rooms: usize,
    at: tokio::time::Instant,
}

/// Re-registers the service with a new TXT whenever the hub's room count changes.
async fn keep_current(
    hub: Hub,
    mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::hub::HubEvent>>,
    daemon: ServiceDaemon,
    monitor: mdns_sd::Receiver<DaemonEvent>,
    record: Record,
    mut published: TxtState,
    stop: CancellationToken,
) {
    let mut monitoring = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => match event {
                Ok(event) if matches!(event.kind, EventKind::RoomCreated(_) | EventKind::RoomClosed) => {}
                Ok(_) => continue,
                // Missed events may have been rooms: count again.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            event = monitor.recv_async(), if monitoring => {
                match event {
                    Ok(DaemonEvent::NameChange(change)) => tracing::warn!(
                        original = %change.original, new = %change.new_name,
                        "another host on the LAN uses this mDNS name; advertising under a new one"
                    ),
                    Ok(DaemonEvent::Error(e)) => tracing::warn!(error = %e, "mDNS daemon error"),
                    Ok(_) => {}
                    Err(_) => monitoring = false,
                }
                continue;
            }
        }
        let not_before = (tokio::time::Instant::now() + DEBOUNCE).max(published.at + MIN_TXT_SPACING);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(not_before) => {}
        }
        // Events that came while waiting are covered by this count; drop them so they do not
        // start another wait for nothing.
        while events.try_recv().is_ok() {}
        let rooms = hub.registry().room_count();
        if rooms == published.rooms {
            continue;
        }
        match record.service_info(rooms, false).map(|info| daemon.register(info)) {
            Ok(Ok(())) => {
                tracing::debug!(rooms, "mDNS TXT updated");
                published = TxtState { rooms, at: tokio::time::Instant::now() };
            }
            Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, rooms, "cannot update the mDNS TXT record"),
        }
    }
}

/// The default human name: the machine's host name, as people on the LAN know it.
fn default_name() -> String {
    let host = machine_host_name();
    if host.is_empty() {
        "Gambi hub".into()
    } else {
        host
    }
}

/// This machine's host name, empty when it has none.
fn machine_host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// `gambi-hub-<port>-<host>`. The host name is always part of it: two machines running hubs on
/// the default port is the common case on a LAN, and a name that is unique from the start avoids
/// the probe-and-rename dance (and the `(2)` suffixes) entirely.
fn default_instance(port: u16, host_label: &str) -> String {
    truncate_label(&format!("gambi-hub-{port}-{host_label}")).to_string()
}

/// A host name made fit for one DNS label: the first label of the name, letters, digits and `-`
/// only (anything else becomes `-`), at most 63 bytes, never empty.
pub(crate) fn host_label(host: &str) -> String {
    let first = host.trim().split('.').next().unwrap_or_default();
    let mapped: String = first.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let trimmed = truncate_label(mapped.trim_matches('-')).trim_end_matches('-');
    if trimmed.is_empty() {
        "gambi".into()
    } else {
        trimmed.to_string()
    }
}

fn truncate_label(label: &str) -> &str {
    if label.len() <= MAX_LABEL {
        return label;
    }
    let mut end = MAX_LABEL;
    while end > 0 && !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_single_dns_labels() {
        assert_eq!(host_label("box.lan"), "box");
        assert_eq!(host_label("Ana's MacBook"), "Ana-s-MacBook");
        assert_eq!(host_label("--"), "gambi");
        assert_eq!(host_label(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn the_default_instance_carries_the_port_and_the_host() {
        assert_eq!(default_instance(3000, "box"), "gambi-hub-3000-box");
        assert!(default_instance(3000, &"x".repeat(63)).len() <= 63);
    }

    #[test]
    fn an_ipv4_hub_advertises_ipv4_only_and_a_specific_address_only_itself() {
        let record = Record {
            service_type: SERVICE_TYPE.into(),
            instance: "gambi-hub-3000-box".into(),
            host: "box.local.".into(),
            port: 3000,
            name: "Box".into(),
            listen: "0.0.0.0".parse().unwrap(),
        };
        let info = record.service_info(1, true).unwrap();
        assert!(info.is_addr_auto());
        assert_eq!(info.get_fullname(), "gambi-hub-3000-box._gambi._tcp.local.");
        assert_eq!(info.get_property_val_str("rooms"), Some("1"));
        assert_eq!(info.get_property_val_str("version"), Some("1.0"));
        assert_eq!(info.get_property_val_str("protocol"), Some("http"));
        let fixed = Record { listen: "10.1.2.3".parse().unwrap(), ..record }.service_info(0, false).unwrap();
        assert!(!fixed.is_addr_auto());
        assert!(!fixed.requires_probe());
        assert_eq!(fixed.get_addresses_v4().into_iter().map(|a| a.to_string()).collect::<Vec<_>>(), ["10.1.2.3"]);
    }
}
