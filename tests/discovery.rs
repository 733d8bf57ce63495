//! LAN discovery across a real (virtual) network.
//!
//! Each test builds a lab of its own: a throwaway network namespace holding a bridge (the
//! "switch"), and one network namespace per test host, plugged into the bridge with a veth pair
//! (`10.77.0.1/24`, `10.77.0.2/24`, ...). Each host has a host name of its own too (`lab-host-0`,
//! ...: a UTS namespace), so two hubs in one lab advertise distinct instance and host names, as two
//! machines would. The test process itself never enters a namespace and never touches the machine's
//! interfaces: it starts every program of a host with `nsenter --net=/proc/<holder>/ns/net
//! --uts=/proc/<holder>/ns/uts`, where the holder is a `sh` started by `unshare --net --uts` that
//! keeps the namespaces alive. Every `gambi` of a lab keeps its files (the known hubs) in a temp
//! folder of the lab's own (`GAMBI_CONFIG_DIR`). Namespaces are anonymous (nothing named is
//! created; the one mount, a lab hosts file over `/etc/hosts`, is made in a mount namespace of its
//! own for one program), so runs cannot collide; they vanish with their last process, which
//! the guards kill when dropped and `setpriv --pdeathsig KILL` kills if the test itself dies.
//!
//! Browsers in the hosts are this very test binary, re-run inside the namespace for one "inner"
//! test (`inner_browse`, `inner_find`) with its orders in `GAMBI_DISCOVERY_INNER`; run without it
//! (as part of the suite) those tests return at once. They print one JSON line per event.
//!
//! Needs root, util-linux (`unshare`, `nsenter`, `setpriv`) and iproute2 (`ip`), as CI has; without
//! them the lab tests fail saying so. The python-zeroconf interop tests need `zeroconf` in the test
//! Python (`GAMBI_TEST_PYTHON`, from tests/python/requirements.txt).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use gambi::discovery::{
    browse, discover, find_room_all, rank_addresses, validate_service_type, BrowseOptions, Candidate, FoundHub,
    HubChange, HubTxt, RoomClaim, SERVICE_TYPE,
};
use serde_json::{json, Value};

use crate::util::BIN;

/// Where the inner tests read their orders.
const INNER_ENV: &str = "GAMBI_DISCOVERY_INNER";
/// Inner tests mark their event lines with this, so libtest's own output is told apart.
const MARK: &str = "GAMBI-DISCOVERY ";
/// The hubs' port inside the lab (each lab is a network of its own, so any port is free).
const PORT: u16 = 3000;
/// The acceptance bound for discovery and for removal after a graceful shutdown.
const TWO_SECONDS: Duration = Duration::from_secs(2);
/// How long a test waits for something that should happen well within the bounds above.
const WAIT: Duration = Duration::from_secs(10);
/// How long a service is left alone after a browser found it, before it is withdrawn. An answer
/// to the browser's query that a responder already queued (python-zeroconf aggregates answers for
/// up to 500 ms) but sends after its goodbye refreshes the record for its full TTL, and the hub
/// would then only go when a re-check finds it dead. A real hub is not withdrawn the instant it
/// is found; the test should not be either.
const SETTLE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// The lab

/// A namespace kept alive by a `sh` that waits on its stdin.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    /// A holder whose namespaces' host name is `host_name`.
    fn start(what: &str, host_name: &str) -> Holder {
        let mut child = Command::new("unshare")
            .args(["--net", "--uts", "--", "setpriv", "--pdeathsig", "KILL", "--", "sh", "-c"])
            .arg(format!("ip link set lo up && echo {host_name} > /proc/sys/kernel/hostname && echo ready && read _"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", no_lab(&format!("cannot run unshare: {e}"))));
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}", no_lab(&format!("cannot create the {what} network namespace: {}", err.trim())));
        }
        let stdin = child.stdin.take();
        let holder = Holder { child, stdin };
        // Never go on in the test's own namespace: everything below would touch real interfaces.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(std::fs::read_link(holder.ns()).unwrap(), own, "unshare did not give the {what} a namespace");
        holder
    }

    fn ns(&self) -> String {
        format!("/proc/{}/ns/net", self.child.id())
    }

    fn uts(&self) -> String {
        format!("/proc/{}/ns/uts", self.child.id())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn no_lab(detail: &str) -> String {
    format!(
        "the discovery tests need network namespaces: run them as root on Linux with util-linux \
         (unshare, nsenter, setpriv) and iproute2 (ip) installed. {detail}"
    )
}

/// A switch and `n` hosts plugged into it.
struct Lab {
    // Declared first so they are dropped first: hosts, then the switch.
    hosts: Vec<Holder>,
    switch: Holder,
    /// `GAMBI_CONFIG_DIR` of every program in the lab.
    config: tempfile::TempDir,
}

impl Lab {
    fn new(n: usize) -> Lab {
        let switch = Holder::start("switch", "lab-switch");
        let hosts: Vec<Holder> =
            (0..n).map(|i| Holder::start(&format!("host {i}"), &format!("lab-host-{i}"))).collect();
        let lab = Lab { hosts, switch, config: tempfile::tempdir().unwrap() };
        // Snooping off: the bridge floods mDNS (IPv4 and IPv6) to every port, like a plain switch.
        lab.sh_in(&lab.switch.ns(), "ip link add br0 type bridge mcast_snooping 0 && ip link set br0 up");
        for (i, host) in lab.hosts.iter().enumerate() {
            lab.sh_in(
                &lab.switch.ns(),
                &format!(
                    "ip link add port{i} type veth peer name eth0 netns {pid} && ip link set port{i} master br0 up",
                    pid = host.child.id()
                ),
            );
            lab.sh_in(
                &host.ns(),
                &format!(
                    "ip link set eth0 up && ip addr add {ip}/24 dev eth0 && ip route add 224.0.0.0/4 dev eth0",
                    ip = Lab::ip(i)
                ),
            );
        }
        lab
    }

    /// Host `i`'s address.
    fn ip(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    fn url(i: usize) -> String {
        format!("http://{}:{PORT}", Lab::ip(i))
    }

    fn sh_in(&self, ns: &str, script: &str) {
        let out = Command::new("nsenter").arg(format!("--net={ns}")).args(["--", "sh", "-c", script]).output().unwrap();
        assert!(out.status.success(), "lab setup `{script}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A command run inside host `i`, killed if this process dies.
    fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.hosts[i].ns()))
            .arg(format!("--uts={}", self.hosts[i].uts()))
            .args(["--", "setpriv", "--pdeathsig", "KILL", "--", program])
            .env("NO_COLOR", "1")
            .env("GAMBI_CONFIG_DIR", self.config.path())
            .env_remove("GAMBI_HUB")
            .env_remove("GAMBI_ROOM_PASSWORD")
            .env_remove(INNER_ENV);
        cmd
    }

    /// The known-hubs file the lab's `gambi participant join` keeps.
    fn known_hubs(&self) -> std::path::PathBuf {
        self.config.path().join("known-hubs.json")
    }

    /// Runs `program args` in host `i` to completion: (status, stdout, stderr).
    fn run(&self, i: usize, program: &str, args: &[&str]) -> (ExitStatus, String, String) {
        let out = self.command(i, program).args(args).stdin(Stdio::null()).output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `program args` in host `i` to completion with `names` in its `/etc/hosts` (a mount
    /// namespace of its own, where a lab file is bind-mounted over it): what the system resolver
    /// knows there, as a machine whose hosts file or DNS knows another by name.
    fn run_with_hosts(
        &self,
        i: usize,
        names: &[(&str, String)],
        program: &str,
        args: &[&str],
    ) -> (ExitStatus, String, String) {
        let hosts = self.config.path().join(format!("hosts-{i}"));
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, ip) in names {
            text.push_str(&format!("{ip} {name}\n"));
        }
        std::fs::write(&hosts, text).unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.hosts[i].ns()))
            .arg(format!("--uts={}", self.hosts[i].uts()))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec setpriv --pdeathsig KILL -- "$@""#)
            .arg(&hosts)
            .arg(program)
            .args(args)
            .env("NO_COLOR", "1")
            .env("GAMBI_CONFIG_DIR", self.config.path())
            .env("RUST_LOG", "gambi=debug")
            .env_remove("GAMBI_HUB")
            .env_remove(INNER_ENV);
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `program args` in host `i`, following its output.
    fn spawn(&self, i: usize, name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> LabProcess {
        let mut cmd = self.command(i, program);
        cmd.args(args).envs(env.iter().copied());
        LabProcess::spawn(name, cmd)
    }

    /// This test binary, in host `i`, running the inner test `test` with `orders`.
    fn spawn_inner(&self, i: usize, test: &str, orders: Value) -> LabProcess {
        let exe = std::env::current_exe().unwrap();
        let filter = format!("discovery::{test}");
        let mut cmd = self.command(i, exe.to_str().unwrap());
        cmd.args([filter.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(INNER_ENV, orders.to_string())
            .env("RUST_LOG", "gambi=debug");
        LabProcess::spawn(test, cmd)
    }

    /// Starts the real hub in host `i` on [`PORT`] with `extra` arguments and waits until it
    /// listens (and, with `--mdns`, advertises). Returns the process and the instance name.
    fn hub(&self, i: usize, extra: &[&str]) -> (LabProcess, Option<String>) {
        let port = PORT.to_string();
        let mut args = vec!["hub", "serve", "--host", "0.0.0.0", "--port", port.as_str()];
        args.extend_from_slice(extra);
        let mut hub = self.spawn(i, "hub", BIN, &args, &[("RUST_LOG", "gambi=debug")]);
        hub.line(|l| l.contains("listening on"), WAIT);
        let instance = extra.contains(&"--mdns").then(|| {
            let line = hub.line(|l| l.contains("Advertised on the LAN as"), WAIT);
            line.rsplit(' ').next().unwrap().trim().to_string()
        });
        (hub, instance)
    }

    /// Creates a room on the hub in host `hub` with the real CLI, run from host `from` (so the
    /// call crosses the lab network). Returns (code, host token).
    fn room(&self, from: usize, hub: usize, name: &str) -> (String, String) {
        self.room_with(from, hub, name, &[])
    }

    /// [`Lab::room`] with more `room create` arguments (`--password`).
    fn room_with(&self, from: usize, hub: usize, name: &str, extra: &[&str]) -> (String, String) {
        let url = Lab::url(hub);
        let mut args = vec!["room", "create", "--hub", url.as_str(), "--name", name, "--format", "json"];
        args.extend_from_slice(extra);
        let (status, out, err) = self.run(from, BIN, &args);
        assert!(status.success(), "gambi room create failed: {err}");
        let data: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        (data["room"]["code"].as_str().unwrap().to_string(), data["hostToken"].as_str().unwrap().to_string())
    }

    fn delete_room(&self, from: usize, hub: usize, code: &str, token: &str) {
        let url = Lab::url(hub);
        let (status, _, err) = self.run(from, BIN, &["room", "delete", code, "--host-token", token, "--hub", &url]);
        assert!(status.success(), "gambi room delete failed: {err}");
    }
}

/// A program running in a lab host: stdout lines arrive on a channel, stderr is kept for the
/// failure message. Killed when dropped.
struct LabProcess {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl LabProcess {
    fn spawn(name: &str, mut cmd: Command) -> LabProcess {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let seen = stdout.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        LabProcess { name: name.to_string(), child, lines, stdout, stderr }
    }

    /// Everything the process wrote on stderr so far (a hub's log).
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn report(&self) -> String {
        let stderr = self.stderr.lock().unwrap();
        let tail = &stderr[stderr.len().saturating_sub(6000)..];
        format!(
            "--- {} stdout:\n{}\n--- {} stderr (tail):\n{tail}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.name
        )
    }

    /// The next stdout line that satisfies `pred`, within `within`; the reason when none came.
    fn try_line(&mut self, pred: impl Fn(&str) -> bool, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: expected line not seen in time\n{}", self.name, self.report()))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited early\n{}", self.name, self.report()))
                }
            }
        }
    }

    fn line(&mut self, pred: impl Fn(&str) -> bool, within: Duration) -> String {
        self.try_line(pred, within).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next JSON line (an inner test's event or a python peer's) that satisfies `pred`.
    fn try_event(&mut self, pred: impl Fn(&Value) -> bool, within: Duration) -> Result<Value, String> {
        // libtest may print `test discovery::inner_find ... ` in front of the first line.
        let json = |l: &str| l.find(MARK).map_or(l, |at| &l[at + MARK.len()..]).to_string();
        let line = self.try_line(|l| serde_json::from_str::<Value>(&json(l)).is_ok_and(|v| pred(&v)), within)?;
        Ok(serde_json::from_str(&json(&line)).unwrap())
    }

    fn event(&mut self, pred: impl Fn(&Value) -> bool, within: Duration) -> Value {
        self.try_event(pred, within).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until the process has logged a line containing `needle`.
    fn logged(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(Instant::now() < deadline, "{}: never logged {needle:?}\n{}", self.name, self.report());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    fn close_stdin(&mut self) {
        self.child.stdin.take();
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit\n{}", self.name, self.report());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The python interpreter with the test packages, checked for zeroconf.
fn python_with_zeroconf() -> String {
    let python = std::env::var("GAMBI_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python).args(["-c", "import zeroconf"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python-zeroconf is missing from {python}: install tests/python/requirements.txt \
         (`{python} -m pip install -r tests/python/requirements.txt`) or point GAMBI_TEST_PYTHON at a Python that has it"
    );
    python
}

fn peer_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/zeroconf_peer.py")
}

fn found_hub(event: &Value) -> FoundHub {
    serde_json::from_value(event["hub"].clone()).unwrap_or_else(|e| panic!("not a FoundHub ({e}): {event}"))
}

fn ms(event: &Value) -> u64 {
    event["elapsedMs"].as_u64().unwrap()
}

fn is_change(v: &Value) -> bool {
    matches!(v["event"].as_str(), Some("appeared" | "updated"))
}

// ---------------------------------------------------------------------------------------------
// The inner tests: browsers run inside a lab host.

/// The orders for `test`, when this process was started as that inner test.
fn orders(test: &str) -> Option<Value> {
    let raw = std::env::var(INNER_ENV).ok()?;
    let orders: Value = serde_json::from_str(&raw).unwrap();
    if orders["test"] != test {
        return None;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    Some(orders)
}

/// An inner test's event line, for the outer test reading its stdout.
#[expect(clippy::print_stdout, reason = "stdout is how an inner test reports to the outer one")]
fn emit(value: Value) {
    println!("{MARK}{value}");
}

/// Browses and prints every change, until a hub is gone (`untilGone`) or the time is up.
#[tokio::test(flavor = "multi_thread")]
async fn inner_browse() {
    let Some(orders) = orders("inner_browse") else { return };
    let options = BrowseOptions {
        recheck_interval: Duration::from_millis(orders["recheckMs"].as_u64().unwrap_or(5000)),
        ..BrowseOptions::new(orders["serviceType"].as_str().unwrap())
    };
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(orders["timeoutMs"].as_u64().unwrap());
    let mut browser = browse(options).unwrap();
    emit(json!({ "event": "browsing" }));
    let mut seen = 0;
    while let Ok(change) = tokio::time::timeout_at(deadline, browser.next()).await {
        let elapsed = start.elapsed().as_millis() as u64;
        match change.expect("browsing stopped by itself") {
            HubChange::Appeared(hub) => {
                seen += 1;
                emit(json!({ "event": "appeared", "elapsedMs": elapsed, "hub": hub }));
            }
            HubChange::Updated(hub) => emit(json!({ "event": "updated", "elapsedMs": elapsed, "hub": hub })),
            HubChange::Gone { instance } => {
                emit(json!({ "event": "gone", "elapsedMs": elapsed, "instance": instance }));
                if orders["untilGone"] == true {
                    break;
                }
            }
        }
    }
    browser.stop().await;
    emit(json!({ "event": "done" }));
    assert!(seen > 0, "the browser in the test host found no hub");
}

/// `discover` for three seconds, then `find_room_all` for the room in the orders, and for a code no
/// hub holds.
#[tokio::test(flavor = "multi_thread")]
async fn inner_find() {
    let Some(orders) = orders("inner_find") else { return };
    let service_type = orders["serviceType"].as_str().unwrap();
    let code = orders["code"].as_str().unwrap();
    let start = Instant::now();
    // The hub announced a TXT change just before: RFC 6762 §6 forbids it to multicast the same
    // records again within a second, so the first query may go unanswered and the hub is found
    // with the next one, about a second later. Three seconds leave room for a loaded machine.
    let hubs = discover(Duration::from_secs(3), service_type).await.unwrap();
    emit(json!({ "event": "discovered", "elapsedMs": start.elapsed().as_millis() as u64, "hubs": hubs }));
    let start = Instant::now();
    let claims = find_room_all(&code.to_lowercase(), Duration::from_secs(3), service_type).await.unwrap();
    emit(json!({ "event": "found", "elapsedMs": start.elapsed().as_millis() as u64, "claims": claims }));
    let missing = find_room_all("ZZZZZZ", Duration::from_millis(1500), service_type).await.unwrap();
    emit(json!({ "event": "missing", "claims": missing.len() }));
    assert!(!hubs.is_empty() && missing.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Acceptance 1: advertised in one host, found from another, gone at once on shutdown.

#[test]
fn a_hub_in_one_host_is_found_from_another_with_its_txt_and_rooms_and_dropped_on_shutdown() {
    let lab = Lab::new(2);
    let (mut hub, instance) = lab.hub(0, &["--mdns", "--name", "Test Hub"]);
    let instance = instance.unwrap();
    assert!(instance.starts_with(&format!("gambi-hub-{PORT}-")), "{instance}");
    let (code, _) = lab.room(1, 0, "R");
    // The hub spaces TXT updates (up to 2.5 s after its first announcement); what is measured
    // here is discovery, so browsing starts once the advertisement counts the room.
    hub.logged("mDNS TXT updated rooms=1", WAIT);

    let mut browser = lab.spawn_inner(
        1,
        "inner_browse",
        json!({ "test": "inner_browse", "serviceType": SERVICE_TYPE, "timeoutMs": 20000, "untilGone": true }),
    );
    let event = browser.event(is_change, WAIT);
    let found = found_hub(&event);
    let discovery = ms(&event);
    eprintln!("discovery: hub with rooms=1 reported {discovery} ms after browse start");
    assert_eq!(found.instance, instance);
    assert_eq!(found.name, "Test Hub");
    assert_eq!(found.url, Lab::url(0));
    assert_eq!(found.addresses.first().map(String::as_str), Some(Lab::ip(0).as_str()), "{found:?}");
    assert_eq!(found.port, PORT);
    assert_eq!(found.version.as_deref(), Some("1.0"));
    assert_eq!(found.protocol.as_deref(), Some("http"));
    assert_eq!(found.rooms_txt, Some(1));
    assert_eq!(found.rooms.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(), [code.as_str()]);
    assert_eq!(found.rooms[0].name, "R");
    assert!(found.hub_version.is_some(), "{found:?}");
    assert!(discovery <= TWO_SECONDS.as_millis() as u64, "discovery took {discovery} ms");

    // A graceful shutdown says goodbye: the browser drops the hub without waiting for a TTL.
    std::thread::sleep(SETTLE);
    let sent = Instant::now();
    hub.signal("TERM");
    let gone = browser.event(|v| v["event"] == "gone", WAIT);
    let removal = sent.elapsed();
    eprintln!("removal: hub reported gone {} ms after SIGTERM", removal.as_millis());
    assert_eq!(gone["instance"], instance.as_str());
    assert!(removal <= TWO_SECONDS, "removal took {removal:?}");
    assert!(hub.wait(WAIT).success(), "{}", hub.report());
    assert!(browser.wait(WAIT).success(), "{}", browser.report());
}

// ---------------------------------------------------------------------------------------------
// Room count, find_room_all, discover, and a hub that dies without a goodbye.

#[test]
fn the_room_count_follows_the_rooms_and_find_room_points_at_the_hub() {
    let lab = Lab::new(2);
    let (hub, instance) = lab.hub(0, &["--mdns"]);
    let instance = instance.unwrap();
    let mut browser = lab.spawn_inner(
        1,
        "inner_browse",
        json!({ "test": "inner_browse", "serviceType": SERVICE_TYPE, "recheckMs": 1000, "timeoutMs": 40000, "untilGone": true }),
    );
    let first = found_hub(&browser.event(is_change, WAIT));
    assert_eq!(first.rooms_txt, Some(0));
    assert!(first.rooms.is_empty());
    // Without --name the hub is called after the machine.
    assert!(!first.name.is_empty() && first.name != instance, "{first:?}");

    let (one, token_one) = lab.room(1, 0, "One");
    let started = Instant::now();
    let after_one = found_hub(&browser.event(|v| is_change(v) && v["hub"]["roomsTxt"] == 1, WAIT));
    eprintln!("TXT rooms=1 seen {} ms after the room was created", started.elapsed().as_millis());
    assert_eq!(after_one.rooms.len(), 1);

    let (two, _) = lab.room(1, 0, "Two");
    let started = Instant::now();
    let after_two = found_hub(&browser.event(|v| is_change(v) && v["hub"]["roomsTxt"] == 2, WAIT));
    eprintln!("TXT rooms=2 seen {} ms after the room was created", started.elapsed().as_millis());
    let mut codes: Vec<_> = after_two.rooms.iter().map(|r| r.code.clone()).collect();
    codes.sort();
    let mut expected = vec![one.clone(), two.clone()];
    expected.sort();
    assert_eq!(codes, expected);

    lab.delete_room(1, 0, &one, &token_one);
    let after_delete = found_hub(&browser.event(|v| is_change(v) && v["hub"]["roomsTxt"] == 1, WAIT));
    assert_eq!(after_delete.rooms.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(), [two.as_str()]);

    // The one-call forms the command line uses.
    let mut finder =
        lab.spawn_inner(1, "inner_find", json!({ "test": "inner_find", "serviceType": SERVICE_TYPE, "code": two }));
    let discovered = finder.event(|v| v["event"] == "discovered", WAIT);
    let hubs: Vec<FoundHub> = serde_json::from_value(discovered["hubs"].clone()).unwrap();
    assert_eq!(hubs.len(), 1, "{discovered}");
    assert_eq!(hubs[0].url, Lab::url(0));
    assert_eq!(hubs[0].rooms.len(), 1);
    let found = finder.event(|v| v["event"] == "found", WAIT);
    eprintln!("find_room_all: room {two} looked for in {} ms", ms(&found));
    let claims: Vec<RoomClaim> = serde_json::from_value(found["claims"].clone()).unwrap();
    assert_eq!(claims.len(), 1, "{found}");
    assert_eq!(claims[0].hub.instance, instance);
    assert_eq!(claims[0].room.code, two);
    // Every claimant is heard: the whole window is browsed, not only until the first.
    assert!(ms(&found) >= 3000, "{found}");
    assert_eq!(finder.event(|v| v["event"] == "missing", WAIT)["claims"], 0);
    assert!(finder.wait(WAIT).success(), "{}", finder.report());

    // Killed: no goodbye. The periodic re-check notices at once instead of waiting out the TTL.
    let killed = Instant::now();
    hub.signal("KILL");
    let gone = browser.event(|v| v["event"] == "gone", WAIT);
    eprintln!("a killed hub was reported gone {} ms after SIGKILL", killed.elapsed().as_millis());
    assert_eq!(gone["instance"], instance.as_str());
    assert!(killed.elapsed() <= Duration::from_secs(4), "{:?}", killed.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Acceptance 2: python-zeroconf interoperates both ways.

#[test]
fn python_zeroconf_sees_our_advertisement_and_its_goodbye() {
    let python = python_with_zeroconf();
    let lab = Lab::new(2);
    let (mut hub, instance) = lab.hub(0, &["--mdns", "--name", "Interop Hub"]);
    let instance = instance.unwrap();
    let (_code, _) = lab.room(1, 0, "Py");
    hub.logged("mDNS TXT updated rooms=1", WAIT);

    let mut peer =
        lab.spawn(1, "python-zeroconf browser", &python, &[peer_script(), "browse", SERVICE_TYPE, "20"], &[]);
    let started = Instant::now();
    let found = peer.event(|v| v["event"] == "found" && v["properties"]["rooms"] == "1", WAIT);
    eprintln!("python-zeroconf resolved our service in {} ms", started.elapsed().as_millis());
    assert_eq!(found["type"], SERVICE_TYPE);
    assert_eq!(found["name"], format!("{instance}.{SERVICE_TYPE}"));
    assert_eq!(found["port"], PORT);
    assert_eq!(found["properties"]["version"], "1.0");
    assert_eq!(found["properties"]["protocol"], "http");
    assert_eq!(found["properties"]["name"], "Interop Hub");
    assert_eq!(found["addresses"], json!([Lab::ip(0)]), "{found}");
    assert!(found["server"].as_str().unwrap().ends_with(".local."), "{found}");

    std::thread::sleep(SETTLE);
    let sent = Instant::now();
    hub.signal("TERM");
    peer.event(|v| v["event"] == "removed", WAIT);
    eprintln!("python-zeroconf dropped our service {} ms after SIGTERM", sent.elapsed().as_millis());
    assert!(sent.elapsed() <= TWO_SECONDS, "{:?}", sent.elapsed());
    assert!(hub.wait(WAIT).success(), "{}", hub.report());
}

#[test]
fn our_browser_sees_a_service_python_zeroconf_registers() {
    let python = python_with_zeroconf();
    let lab = Lab::new(2);
    // A hub without --mdns: python-zeroconf advertises it instead, as the original TS hub would.
    let (_hub, _) = lab.hub(0, &[]);
    let (code, _) = lab.room(1, 0, "From Python");
    let port = PORT.to_string();
    let ip = Lab::ip(0);
    let mut peer = lab.spawn(
        0,
        "python-zeroconf advertiser",
        &python,
        &[
            peer_script(),
            "register",
            SERVICE_TYPE,
            "py-peer",
            "py-peer-host",
            &port,
            &ip,
            "version=1.0",
            "protocol=http",
        ],
        &[],
    );
    peer.event(|v| v["event"] == "registered", WAIT);

    let mut browser = lab.spawn_inner(
        1,
        "inner_browse",
        json!({ "test": "inner_browse", "serviceType": SERVICE_TYPE, "timeoutMs": 20000, "untilGone": true }),
    );
    let event = browser.event(|v| v["event"] == "appeared", WAIT);
    let found = found_hub(&event);
    eprintln!("our browser found python-zeroconf's service in {} ms", ms(&event));
    assert_eq!(found.instance, "py-peer");
    assert_eq!(found.name, "py-peer", "no name TXT: the instance name stands in");
    assert_eq!(found.host, "py-peer-host.local.");
    assert_eq!(found.url, Lab::url(0));
    assert_eq!(found.version.as_deref(), Some("1.0"));
    assert_eq!(found.protocol.as_deref(), Some("http"));
    assert_eq!(found.rooms_txt, None);
    assert_eq!(found.rooms.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(), [code.as_str()]);
    assert!(ms(&event) <= TWO_SECONDS.as_millis() as u64, "{event}");

    std::thread::sleep(SETTLE);
    let sent = Instant::now();
    peer.close_stdin();
    let gone = browser.try_event(|v| v["event"] == "gone", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", peer.report()));
    eprintln!("our browser dropped python-zeroconf's service {} ms after it unregistered", sent.elapsed().as_millis());
    assert_eq!(gone["instance"], "py-peer");
    assert!(sent.elapsed() <= TWO_SECONDS, "{:?}", sent.elapsed());
    peer.event(|v| v["event"] == "unregistered", WAIT);
}

/// Issue 13: the TypeScript hub (bonjour-service) names its SRV target after the machine (`vm`)
/// and may publish no address record for it; its own SDK resolves that name through the system
/// resolver. Our browser waited for mDNS to resolve an address that never came, so `gambi
/// discover` missed the hub. Now the target is looked up through the system resolver (here
/// `/etc/hosts`), then confirmed over HTTP as any hub is. `advertise` starts the advertiser in
/// host 0 for instance `ts-hub` and target `ts-vm`.
fn found_through_the_system_resolver(advertiser: &str, advertise: &[&str]) {
    let python = python_with_zeroconf();
    let lab = Lab::new(2);
    let (_hub, _) = lab.hub(0, &[]);
    let (code, _) = lab.room(1, 0, "From TypeScript");
    let mut peer = lab.spawn(0, advertiser, &python, advertise, &[]);
    peer.event(|v| v["event"] == "registered", WAIT);

    let started = Instant::now();
    let (status, out, err) =
        lab.run_with_hosts(1, &[("ts-vm", Lab::ip(0))], BIN, &["discover", "--timeout", "4s", "--format", "json"]);
    eprintln!("gambi discover took {} ms", started.elapsed().as_millis());
    for line in err.lines().filter(|l| l.contains("unresolved service") || l.contains("system resolver")) {
        eprintln!("{line}");
    }
    assert!(status.success(), "gambi discover failed: {err}");
    let hubs: Vec<FoundHub> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    let found = hubs
        .iter()
        .find(|h| h.instance == "ts-hub")
        .unwrap_or_else(|| panic!("not found: {out}\n{err}\n{}", peer.report()));
    assert_eq!(found.url, Lab::url(0), "{found:?}");
    assert_eq!(found.host, "ts-vm.");
    assert_eq!(found.port, PORT);
    assert_eq!(found.addresses, [Lab::ip(0)], "{found:?}");
    assert_eq!(found.version.as_deref(), Some("1.0"));
    assert_eq!(found.protocol.as_deref(), Some("http"));
    assert_eq!(found.rooms.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(), [code.as_str()]);

    // A target the resolver does not know either is no hub: nothing is reported, nothing hangs.
    let (status, out, err) = lab.run_with_hosts(1, &[], BIN, &["discover", "--timeout", "3s", "--format", "json"]);
    assert!(status.success(), "gambi discover failed: {err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]), "{err}");
    peer.close_stdin();
    peer.event(|v| v["event"] == "unregistered", WAIT);
}

/// An advertiser that follows RFC 6762 answers our query straight to its port (legacy unicast).
#[test]
fn a_hub_whose_srv_target_has_no_address_record_is_found_through_the_system_resolver() {
    let port = PORT.to_string();
    found_through_the_system_resolver(
        "python-zeroconf advertiser without an address record",
        &[peer_script(), "register", SERVICE_TYPE, "ts-hub", "ts-vm.", &port, "-", "version=1.0", "protocol=http"],
    );
}

/// An advertiser that answers only by multicast, as bonjour-service's multicast-dns does, with a
/// bare host name for a target: its answers are heard on port 5353.
#[test]
fn a_hub_advertised_like_bonjour_service_answering_only_by_multicast_is_found_too() {
    let port = PORT.to_string();
    let responder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/multicast_only_responder.py");
    found_through_the_system_resolver(
        "multicast-only responder",
        &[responder, SERVICE_TYPE, "ts-hub", "ts-vm", &port, "version=1.0", "protocol=http"],
    );
}

// ---------------------------------------------------------------------------------------------
// The pure rules, through the public API.

#[test]
fn txt_records_round_trip_and_tolerate_the_original_hub() {
    let published = HubTxt::for_hub("Lab", 2);
    let props = published.to_properties();
    assert_eq!(props[0], ("version".to_string(), "1.0".to_string()));
    assert_eq!(props[1], ("protocol".to_string(), "http".to_string()));
    let parsed = HubTxt::parse(props.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))));
    assert_eq!(parsed, published);
    let original = HubTxt::parse([("version", Some(&b"1.0"[..])), ("protocol", Some(&b"http"[..]))]);
    assert_eq!((original.name, original.rooms), (None, None));
}

#[test]
fn addresses_prefer_ipv4_and_refuse_unscoped_link_local_ipv6() {
    let c = |ip: &str, scope: Option<&str>| Candidate::new(ip.parse().unwrap(), scope.map(str::to_string));
    let ranked =
        rank_addresses([c("fe80::2", None), c("fe80::1", Some("eth0")), c("2001:db8::1", None), c("10.0.0.2", None)]);
    let texts: Vec<_> = ranked.iter().map(|a| a.text()).collect();
    assert_eq!(texts, ["10.0.0.2", "[2001:db8::1]", "[fe80::1%eth0]"]);
    assert_eq!(ranked[0].url("http", 3000).as_deref(), Some("http://10.0.0.2:3000"));
    assert_eq!(ranked[2].url("http", 3000), None, "a zone cannot go into a URL");
    assert!(rank_addresses([c("fe80::2", None)]).is_empty());
}

#[test]
fn service_types_are_validated_up_front() {
    assert!(validate_service_type(SERVICE_TYPE).is_ok());
    assert!(validate_service_type("_gambi._udp.local.").is_err());
    assert!(validate_service_type("_much-too-long-type._tcp.local.").is_err());
    let error = browse(BrowseOptions::new("no-underscore._tcp.local.")).err().unwrap();
    assert!(error.to_string().contains("must start with _"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Acceptance 3: the CLI finds hubs and rooms over mDNS.

/// A fake model server inside a lab host, until its stdin closes.
#[tokio::test(flavor = "multi_thread")]
async fn inner_provider() {
    let Some(_orders) = orders("inner_provider") else { return };
    let provider = crate::fake_provider::FakeProvider::start(crate::fake_provider::FakeOptions::default()).await;
    emit(json!({ "event": "provider", "url": provider.url }));
    // The outer test closes stdin (or kills this process) when it is done with the provider.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await;
    provider.stop().await;
}

#[test]
fn gambi_discover_lists_the_hub_and_join_finds_the_rooms_hub_by_itself() {
    let lab = Lab::new(2);
    let (hub, _) = lab.hub(0, &["--mdns", "--name", "Lab Hub"]);
    let (code, _) = lab.room(1, 0, "Discovered room");
    hub.logged("mDNS TXT updated rooms=1", WAIT);

    // `gambi discover` in the other host shows the hub and its room, as json and as a table.
    let (status, out, err) = lab.run(1, BIN, &["discover", "--timeout", "3s", "--format", "json"]);
    assert!(status.success(), "{err}");
    let hubs: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let found = hubs.as_array().unwrap().iter().find(|h| h["name"] == "Lab Hub").unwrap_or_else(|| panic!("{hubs}"));
    assert_eq!(found["url"], Lab::url(0).as_str());
    assert_eq!(found["rooms"][0]["code"], code.as_str());
    let (status, text, err) = lab.run(1, BIN, &["discover", "--timeout", "3s", "--format", "text"]);
    assert!(status.success(), "{err}");
    assert!(text.contains("Lab Hub") && text.contains(&code) && text.contains("Discovered room"), "{text}");

    // `participant join --room CODE` with no --hub and no GAMBI_HUB joins the right hub through mDNS.
    let mut provider = lab.spawn_inner(1, "inner_provider", json!({ "test": "inner_provider" }));
    let provider_url = provider.event(|v| v["event"] == "provider", WAIT)["url"].as_str().unwrap().to_string();
    let mut join = lab.spawn(
        1,
        "join",
        BIN,
        &[
            "participant",
            "join",
            "--room",
            &code.to_lowercase(),
            "--model",
            "llama3",
            "--endpoint",
            &provider_url,
            "--participant-id",
            "lab-1",
            "--format",
            "text",
        ],
        &[],
    );
    join.line(|l| l.starts_with("Sharing llama3 in room"), WAIT);
    join.logged(&format!("Found room {code} on Lab Hub at {}", Lab::url(0)), WAIT);
    let (status, out, err) = lab.run(1, BIN, &["room", "get", &code, "--hub", &Lab::url(0), "--format", "json"]);
    assert!(status.success(), "{err}");
    let room: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(room["participantCount"], 1, "{room}");
    join.signal("INT");
    assert!(join.wait(WAIT).success(), "{}", join.report());
    provider.close_stdin();
    assert!(provider.wait(WAIT).success(), "{}", provider.report());
}

// ---------------------------------------------------------------------------------------------
// Issue 10 §7, a rogue hub on the LAN: an impostor advertising the real hub's name and room code
// won the race for `join CODE` in up to half the runs, and got the room password.

/// `participant join --room CODE` with no --hub, in host `i`, sharing `provider`'s llama3 as `id`.
fn spawn_join(lab: &Lab, i: usize, code: &str, provider: &str, id: &str, extra: &[&str]) -> LabProcess {
    let mut args = vec![
        "participant",
        "join",
        "--room",
        code,
        "--model",
        "llama3",
        "--endpoint",
        provider,
        "--participant-id",
        id,
        "--format",
        "text",
    ];
    args.extend_from_slice(extra);
    lab.spawn(i, id, BIN, &args, &[])
}

/// The fake model server in host `i`, and its URL.
fn lab_provider(lab: &Lab, i: usize) -> (LabProcess, String) {
    let mut provider = lab.spawn_inner(i, "inner_provider", json!({ "test": "inner_provider" }));
    let url = provider.event(|v| v["event"] == "provider", WAIT)["url"].as_str().unwrap().to_string();
    (provider, url)
}

/// How many participants room `code` has on the hub in host `hub`, asked from host `from`.
fn participant_count(lab: &Lab, from: usize, hub: usize, code: &str) -> Value {
    let (status, out, err) = lab.run(from, BIN, &["room", "get", code, "--hub", &Lab::url(hub), "--format", "json"]);
    assert!(status.success(), "{err}");
    let room: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    room["participantCount"].clone()
}

#[test]
fn a_rogue_hub_with_the_same_name_and_room_code_makes_join_refuse_to_guess() {
    let lab = Lab::new(3);
    let state = tempfile::tempdir().unwrap();
    let real_state = state.path().join("real.json");
    let rogue_state = state.path().join("rogue.json");
    let real_state_arg = real_state.to_str().unwrap();
    let (real, _) = lab.hub(0, &["--mdns", "--name", "Lab Hub", "--state", real_state_arg]);
    let (code, _) = lab.room_with(2, 0, "Secret room", &["--password", "hunter2"]);
    real.logged("mDNS TXT updated rooms=1", WAIT);
    // The impostor: another real hub, on another machine, with the same name and the very same room
    // (code, name, password hash), copied from the real hub's state file.
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&real_state).is_ok_and(|t| t.contains(&code)) {
        assert!(Instant::now() < deadline, "the real hub never wrote room {code} to its state file");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::copy(&real_state, &rogue_state).unwrap();
    let (rogue, _) = lab.hub(1, &["--mdns", "--name", "Lab Hub", "--state", rogue_state.to_str().unwrap()]);
    assert_eq!(participant_count(&lab, 2, 1, &code), 0, "the impostor holds the room too");
    std::thread::sleep(SETTLE);

    // A provider that answers, so a join that went ahead would get as far as registering.
    let (mut provider, provider_url) = lab_provider(&lab, 2);
    let mut join = spawn_join(&lab, 2, &code, &provider_url, "lab-victim", &["--password", "hunter2"]);
    let status = join.wait(Duration::from_secs(20));
    let stderr = join.log();
    assert_eq!(status.code(), Some(2), "join must refuse to pick a hub\n{}", join.report());
    assert!(stderr.contains(&format!("2 hubs on this network claim room {code}")), "{stderr}");
    for url in [Lab::url(0), Lab::url(1)] {
        assert!(stderr.contains(&format!("'Lab Hub' at {url}")), "both claimants are listed: {stderr}");
    }
    assert!(stderr.contains("hint:") && stderr.contains("--hub"), "{stderr}");
    assert!(!stderr.contains("Found room"), "{stderr}");
    assert!(join.stdout.lock().unwrap().iter().all(|l| !l.starts_with("Sharing")), "{}", join.report());

    // Neither hub heard a registration: no password went anywhere.
    for (i, hub) in [(0, &real), (1, &rogue)] {
        assert_eq!(participant_count(&lab, 2, i, &code), 0, "hub {i}");
        let log = hub.log();
        assert!(!log.contains("/participants/") && !log.contains("/join"), "hub {i} was asked to register:\n{log}");
    }
    assert!(!lab.known_hubs().exists(), "a hub that was not used is not remembered");
    provider.close_stdin();
    assert!(provider.wait(WAIT).success(), "{}", provider.report());
}

#[test]
fn join_remembers_the_hub_it_used_and_warns_when_its_name_answers_elsewhere() {
    let lab = Lab::new(2);
    let (hub, _) = lab.hub(0, &["--mdns", "--name", "Lab Hub"]);
    let (code, _) = lab.room(1, 0, "Known room");
    hub.logged("mDNS TXT updated rooms=1", WAIT);
    std::thread::sleep(SETTLE);
    let (mut provider, provider_url) = lab_provider(&lab, 1);
    let known = lab.known_hubs();
    let read_known = || -> Value {
        let text = std::fs::read_to_string(&known).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    let share = |id: &str| -> String {
        let mut join = spawn_join(&lab, 1, &code, &provider_url, id, &[]);
        join.line(|l| l.starts_with("Sharing llama3 in room"), WAIT);
        join.signal("INT");
        assert!(join.wait(WAIT).success(), "{}", join.report());
        join.log()
    };

    // One claimant: the join goes ahead, and remembers the hub by name and address.
    let first = share("lab-first");
    assert!(first.contains(&format!("Found room {code} on Lab Hub at {}", Lab::url(0))), "{first}");
    assert!(!first.contains("warning"), "{first}");
    let file = read_known();
    assert_eq!(file["version"], 1, "{file}");
    assert_eq!(file["hubs"].as_array().unwrap().len(), 1, "{file}");
    assert_eq!(file["hubs"][0]["name"], "Lab Hub", "{file}");
    assert_eq!(file["hubs"][0]["url"], Lab::url(0).as_str(), "{file}");

    // The same name was last used elsewhere: a warning names both addresses; the join still goes
    // ahead (it is the only claimant), and the new address is remembered.
    let elsewhere = "http://10.77.0.99:3000";
    let seeded =
        json!({ "version": 1, "hubs": [{ "name": "Lab Hub", "url": elsewhere, "firstSeen": 1, "lastUsed": 1 }] });
    std::fs::write(&known, seeded.to_string()).unwrap();
    let moved = share("lab-moved");
    let warning = format!("warning: hub 'Lab Hub' was at {elsewhere}, now answers at {}", Lab::url(0));
    assert!(moved.contains(&warning), "{moved}");
    let file = read_known();
    assert_eq!(file["hubs"][0]["url"], Lab::url(0).as_str(), "{file}");
    assert_eq!(file["hubs"][0]["firstSeen"], 1, "{file}");

    // A damaged file is a warning and is replaced, never a failed join.
    std::fs::write(&known, "{ not json").unwrap();
    let damaged = share("lab-damaged");
    assert!(damaged.contains("warning: the list of known hubs") && damaged.contains("is damaged"), "{damaged}");
    let file = read_known();
    assert_eq!(file["hubs"][0]["url"], Lab::url(0).as_str(), "{file}");

    provider.close_stdin();
    assert!(provider.wait(WAIT).success(), "{}", provider.report());
}
