//! `gambi hub serve` (and the seed's `gambi serve`): binds, prints where the hub listens, serves
//! until Ctrl-C or SIGTERM, then shuts down gracefully and exits 0.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, HubConfig};

/// Parses durations like `30s`, `10m`, `1h 30m`, `250ms`.
/// A `--room-ttl`: a duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

pub fn parse_ttl(s: &str) -> Result<Ttl, String> {
    match s.trim() {
        "off" | "never" | "none" => Ok(Ttl(None)),
        other => parse_duration(other).map(|d| Ttl(Some(d))),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (try 30s, 10m or 1h)"))
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0: every interface, so the LAN can reach the hub).
    #[arg(long, default_value = "0.0.0.0", env = "GAMBI_HOST")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, short = 'p', default_value_t = crate::protocol::DEFAULT_PORT, env = "GAMBI_PORT")]
    pub port: u16,
    /// Keep rooms (not participants) in this file across restarts.
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Expire rooms that have had no participant for this long (`off`: keep them forever).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
    pub room_ttl: Ttl,
    /// Remove offline participants after this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub offline_retention: Duration,
    /// Mark a participant offline after this long without a heartbeat.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub participant_timeout: Duration,
    /// How often to sweep for silent participants.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Let web pages on this origin call the hub (repeatable), e.g. http://localhost:5173; `*`
    /// lets any page. Without it only the hub's own pages may (and, on a room with a password,
    /// any page that sends its key).
    #[arg(long = "cors", value_name = "ORIGIN", value_parser = crate::hub::browser::parse_origin)]
    pub cors: Vec<String>,
    /// Answer requests sent to this host name too (repeatable; `*.example.com` for its
    /// subdomains). By default a hub on loopback answers localhost, 127.0.0.1 and [::1]; a hub on
    /// the LAN also its IP addresses, this machine's name and *.local names.
    #[arg(long = "allowed-host", value_name = "NAME", value_parser = crate::hub::browser::parse_host_name)]
    pub allowed_hosts: Vec<String>,
    /// Largest request body on the classic and /v1 surfaces, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// How long in-flight requests may finish after Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Largest request body on the inference plane (/rooms/CODE/v1), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024 * 1024)]
    pub inference_body_limit: usize,
    /// Requests that may wait per room while every matching participant is busy.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub queue_depth: usize,
    /// How long a request may wait for a free participant before a 503.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub queue_wait: Duration,
    /// How a room chooses among the participants that can serve a request: `expected` (the
    /// earliest expected completion, from what the room has measured) or `least-loaded` (the
    /// least loaded free one, ties at random: the first wave's rule).
    #[arg(long, value_name = "RULE", default_value = "expected", value_parser = ["expected", "least-loaded"])]
    pub routing: String,
    /// How long a participant's model server may take to start answering.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub first_byte_timeout: Duration,
    /// Longest silence inside a streamed answer before it is ended with an error.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Advertise the hub on the LAN over mDNS (_gambi._tcp.local.), so `gambi discover` and the
    /// desktop app find it.
    #[arg(long)]
    pub mdns: bool,
    /// The hub's name shown to people discovering it (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Accept clients that predate participant tokens (the TypeScript CLI): anyone who can reach
    /// the hub may then remove, replace or re-tunnel any participant.
    #[arg(long)]
    pub compat: bool,
    /// Room password guesses allowed per room per second (checks of a key not yet verified);
    /// more get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub guesses_per_room: u32,
    /// Room password guesses allowed per client address per second.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub guesses_per_address: u32,
    /// How long a client may take to send a request's headers before it is cut off.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Most headers in one request (more: 431).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_headers: usize,
    /// Most bytes of one request's line and headers (more: 431).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Most rooms on the hub.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_rooms: usize,
    /// Most participants in one room.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_participants: usize,
    /// Most open event streams (SSE) per room, both surfaces together.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_sse_clients: usize,
    /// Most open event streams of one client address (this machine's are not counted).
    #[arg(long = "max-sse-per-address", value_name = "N", default_value_t = 32)]
    pub max_sse_per_address: usize,
    /// Most open event streams in all [default: from the open-file limit].
    #[arg(long = "max-sse-total", value_name = "N")]
    pub max_sse_total: Option<usize>,
    /// Most open connections of one client address (this machine's are not counted).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections_per_address: usize,
    /// Most open connections in all [default: from the open-file limit].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Rooms one client address may create a minute (in a burst of --rooms-burst).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub rooms_per_minute: u32,
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rooms_burst: u32,
    /// Memory all request bodies may hold at once, read and parsed, in bytes (a quarter of it per
    /// client address).
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024 * 1024)]
    pub body_memory: usize,
    /// Count this machine's own addresses (loopback) per address too, like any other client.
    #[arg(long)]
    pub limit_loopback: bool,
    /// Most requests in flight on one participant's tunnel.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_in_flight_per_tunnel: usize,
    /// Malformed tunnel frames tolerated per 10 s; one more closes that tunnel.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub malformed_frame_limit: u32,
    /// Most bytes of the Responses-API answers the hub translated itself (for model servers without
    /// /v1/responses) kept for later reads, all rooms together; one room may hold a quarter, the
    /// oldest go first. 0 keeps none.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub responses_memory: usize,
}

impl ServeArgs {
    pub fn config(&self) -> HubConfig {
        HubConfig {
            sweep_interval: self.sweep_interval.max(Duration::from_millis(10)),
            participant_timeout: self.participant_timeout,
            offline_retention: self.offline_retention,
            room_ttl: self.room_ttl.0,
            state_path: self.state.clone(),
            cors_origins: self.cors.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            management_body_limit: self.body_limit,
            shutdown_grace: self.shutdown_grace,
            inference_body_limit: self.inference_body_limit,
            queue_depth: self.queue_depth,
            queue_wait: self.queue_wait,
            routing: if self.routing == "least-loaded" {
                crate::hub::scheduler::Policy::LeastLoaded
            } else {
                crate::hub::scheduler::Policy::Expected
            },
            first_byte_timeout: self.first_byte_timeout,
            idle_timeout: self.idle_timeout,
            compat: self.compat,
            guesses_per_room: self.guesses_per_room,
            guesses_per_address: self.guesses_per_address,
            header_read_timeout: self.header_read_timeout,
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
            max_rooms: self.max_rooms,
            max_participants_per_room: self.max_participants,
            max_sse_clients_per_room: self.max_sse_clients,
            max_sse_clients_per_address: self.max_sse_per_address,
            max_sse_clients_total: self.max_sse_total,
            max_connections_per_address: self.max_connections_per_address,
            max_connections: self.max_connections,
            rooms_per_minute: self.rooms_per_minute,
            rooms_burst: self.rooms_burst,
            limit_loopback: self.limit_loopback,
            body_memory: self.body_memory,
            max_in_flight_per_tunnel: self.max_in_flight_per_tunnel,
            malformed_frame_limit: self.malformed_frame_limit,
            responses_store_bytes: self.responses_memory,
            ..HubConfig::default()
        }
    }
}

/// glibc's malloc raises its mmap threshold to the size of the largest block freed (up to 32 MiB)
/// and then keeps up to twice that per arena instead of giving it back: after a few 32 MiB bodies
/// (the inference limit) or 16 MiB tunnel frames a hub would hold a few hundred MiB it no longer
/// uses. A fixed threshold (8 MiB) keeps large buffers in their own mappings, returned when freed.
/// The tunable is read at process start, so the hub (and the app, whose hub it is) re-executes
/// itself once with it set, unless the person running it chose a value. Only where the binary
/// allocates with glibc's malloc: the desktop build (the headless one allocates with mimalloc, see
/// `main.rs`). Measured with the hostile suite against a glibc hub: +122 MiB over two passes
/// without it, +1.7 MiB with it.
#[cfg(all(target_os = "linux", target_env = "gnu", feature = "desktop"))]
pub fn return_large_buffers_to_the_system() {
    use std::os::unix::process::CommandExt as _;
    const TUNABLE: &str = "MALLOC_MMAP_THRESHOLD_";
    if std::env::var_os(TUNABLE).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let error = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(TUNABLE, "8388608").exec();
    // Only reached if exec failed: serve as we are.
    eprintln!("note: could not re-execute with a fixed mmap threshold: {error}");
}

/// Resolves when Ctrl-C or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn shown_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// Runs a hub until a signal. Logs go to stderr; stdout gets one line saying where it listens.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // One descriptor per connection: start from the most the system allows this process.
    let fd_limit = crate::hub::quota::raise_fd_limit();
    tracing::debug!(?fd_limit, "open-file limit");
    let hub = Hub::new(args.config())?;
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another hub running? pick another port with --port)"))?;
    let local = listener.local_addr()?;
    let url = shown_url(local);
    let note = if local.ip().is_unspecified() { " (all interfaces)" } else { "" };
    crate::cli::output::line(&format!("Gambi hub listening on {url}{note}"));
    tracing::info!(%local, rooms = hub.registry().room_count(), "hub started");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        trigger.cancel();
    });
    let advertiser = if args.mdns {
        let options =
            crate::discovery::AdvertiseOptions { name: args.name.clone(), listen: local.ip(), ..Default::default() };
        let advertiser = crate::discovery::Advertiser::start(&hub, local.port(), options)
            .context("cannot advertise the hub on the LAN (mDNS)")?;
        crate::cli::output::line(&format!("Advertised on the LAN as {}", advertiser.instance()));
        Some(advertiser)
    } else {
        None
    };
    // The advertisement goes as soon as shutdown begins (browsers drop the hub at once), not
    // after the grace period for in-flight requests; a hub that stops on its own withdraws too.
    let withdraw = async {
        if let Some(advertiser) = advertiser {
            advertiser.shutdown_when(shutdown.clone()).await;
        }
    };
    let serving = async {
        let result = hub.serve(listener, shutdown.clone()).await;
        shutdown.cancel();
        result
    };
    let (result, ()) = tokio::join!(serving, withdraw);
    result?;
    tracing::info!("hub stopped");
    Ok(())
}
