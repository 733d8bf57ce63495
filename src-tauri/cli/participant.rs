//! `gambi participant join|leave|heartbeat` and the seed's short form `gambi join CODE`: sharing
//! this machine's model server into a room from a terminal. `join` runs a
//! [`Supervisor`](crate::participant::Supervisor) (or, with `--no-reconnect`, one
//! [`ParticipantSession`]) and prints each state it goes through; the session logic itself lives in
//! [`crate::participant`], and nothing here talks to the tunnel. `leave` and `heartbeat` are one
//! [`HubClient`](crate::client::HubClient) call each, for scripts and for cleaning up by hand.

use std::time::Duration;

use futures_util::FutureExt as _;
use serde_json::Value;

use super::output::{self, Format, Output};
use super::serve::{parse_duration, shutdown_signal};
use super::{Failure, HubOptions};
use crate::client::{ClientError, HubClient};
use crate::discovery::known::{self, KnownHubs, Sighting};
use crate::discovery::{FoundHub, RoomClaim};
use crate::participant::probe::{self, ProbeError};
use crate::participant::{
    CloseEvent, CloseReason, ParticipantSession, SessionError, SessionOptions, ShareState, Supervisor,
};
use crate::protocol::{is_participant_id, normalize_room_code, ROOM_CODE_SHAPE};
use crate::provider::ProviderKind;

/// Where Ollama listens out of the box: the model server most people share.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:11434";

/// The nickname when the machine's host name cannot be found.
const FALLBACK_NICKNAME: &str = "gambi";

/// The hub keeps nicknames to this many characters (see `hub::validate`).
const MAX_NICKNAME: usize = 64;

/// How long the best-effort leave after a Ctrl-C may take: the person asked to stop, so a hub that
/// does not answer must not keep the terminal.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How this machine shares its model server: the same for `participant join` and `gambi join`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShareOptions {
    /// The model to share, as the model server names it (e.g. llama3) [default: the model the
    /// server has loaded, else its only model; asks when there are several].
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// The model server's base URL: Ollama, LM Studio, or any OpenAI-compatible server. It may be
    /// localhost: the hub reaches it through this process, never directly [default: Ollama on
    /// localhost:11434, else LM Studio on localhost:1234, whichever answers].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Don't send this machine's specs (CPU, RAM, GPU, VRAM) to the room.
    #[arg(long)]
    pub no_specs: bool,
    /// The name the room sees [default: this machine's host name].
    #[arg(long, value_name = "NAME")]
    pub nickname: Option<String>,
    /// This participant's id in the room; also the `model` value that routes to it
    /// [default: <nickname>-<6 random characters>, new for each run].
    #[arg(long, value_name = "ID")]
    pub participant_id: Option<String>,
    /// The room's password, when it has one.
    #[arg(long, value_name = "PASSWORD", env = "GAMBI_ROOM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// How many requests this machine serves at once [hub default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: Option<u32>,
    /// Pause sharing while I use my model server myself: when it is busy with requests that did not
    /// come from the room (llama-server's /slots, Ollama's /api/ps), take no new ones until it has
    /// been quiet for 30 s; those in flight finish. Not detectable on LM Studio.
    #[arg(long)]
    pub pause_while_owner_busy: bool,
    /// Stop at the first lost connection (exit 3) instead of reconnecting by itself.
    #[arg(long)]
    pub no_reconnect: bool,
    /// How often to tell the hub this participant is alive; keep it well under the hub's
    /// --participant-timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_interval)]
    pub heartbeat_interval: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// The room's 6-character code.
    #[arg(long, value_name = "CODE", allow_hyphen_values = true)]
    pub room: String,
    #[command(flatten)]
    pub share: ShareOptions,
    #[command(flatten)]
    pub hub: HubOptions,
}

/// `gambi join CODE`: the seed's form, with the room code as a positional argument.
#[derive(Debug, Clone, clap::Args)]
pub struct ShortJoinArgs {
    /// The room's 6-character code.
    #[arg(value_name = "CODE", allow_hyphen_values = true)]
    pub room: String,
    #[command(flatten)]
    pub share: ShareOptions,
    #[command(flatten)]
    pub hub: HubOptions,
}

impl From<ShortJoinArgs> for JoinArgs {
    fn from(a: ShortJoinArgs) -> Self {
        JoinArgs { room: a.room, share: a.share, hub: a.hub }
    }
}

/// A participant named by room and id: what `leave` and `heartbeat` act on.
#[derive(Debug, Clone, clap::Args)]
pub struct ParticipantArgs {
    /// The room's 6-character code.
    #[arg(long, value_name = "CODE", allow_hyphen_values = true)]
    pub room: String,
    /// The participant's id in that room.
    #[arg(long, value_name = "ID")]
    pub participant_id: String,
    /// For `leave`: the participant's token (from its registration) or the room's host token.
    /// A hub without --compat refuses to remove a participant without one.
    #[arg(long, value_name = "TOKEN", env = "GAMBI_PARTICIPANT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub hub: HubOptions,
}

/// `--heartbeat-interval`: a duration, not so short that the loop would hammer the hub (and never
/// zero, which a timer cannot tick at).
fn parse_interval(raw: &str) -> Result<Duration, String> {
    let interval = parse_duration(raw)?;
    if interval < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(interval)
}

/// This machine's host name, as the default nickname: what people in the room recognise.
pub fn host_name() -> String {
    let candidates = [
        std::env::var("HOSTNAME").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|text| text.lines().next().map(|line| clean_nickname(line.trim())))
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| FALLBACK_NICKNAME.into())
}

/// A nickname the hub accepts: no control characters, at most [`MAX_NICKNAME`] characters.
fn clean_nickname(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(MAX_NICKNAME).collect::<String>().trim().to_string()
}

/// `<slug of the nickname>-<6 random characters>`: readable in listings, different on each run so
/// two people with the same host name never take each other's place, and stable for this run so
/// every reconnection updates the same participant instead of adding one.
pub fn generated_participant_id(nickname: &str) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..6).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    format!("{}-{suffix}", slug(nickname))
}

/// Lower case letters, digits, `.`, `_` and single dashes; at most 40 characters; never empty.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_matches(|c| c == '-' || c == '.');
    if trimmed.is_empty() {
        "participant".into()
    } else {
        trimmed.to_string()
    }
}

fn room_code(raw: &str) -> Result<String, Failure> {
    normalize_room_code(raw).ok_or_else(|| {
        Failure::message(
            2,
            format!("{:?} is not a room code", output::sanitize(raw)),
            Some(format!("Room codes are {ROOM_CODE_SHAPE}; see 'gambi room list'.")),
        )
    })
}

/// `gambi participant join` and `gambi join`: shares until Ctrl-C or SIGTERM (exit 0), or until a
/// failure nothing can fix by retrying (exit 2, 3 or 4 as the product defines them). With
/// `--format json|ndjson` every state is one JSON line, failures included, so a script can follow.
pub async fn join(args: JoinArgs) -> Result<(), Failure> {
    let format = args.hub.output().format;
    let result = join_inner(args).await;
    if let (Err(failure), Format::Json | Format::Ndjson) = (&result, format) {
        let failed = serde_json::json!({
            "state": "failed",
            "error": failure.to_string(),
            "exitCode": failure.exit_code(),
        });
        output::line(&failed.to_string());
    }
    result
}

async fn join_inner(args: JoinArgs) -> Result<(), Failure> {
    // Polled once now so the signal handlers are installed before anything is printed: a Ctrl-C
    // that comes early still leaves cleanly instead of killing the process mid-registration.
    let mut signal = Box::pin(shutdown_signal());
    if (&mut signal).now_or_never().is_some() {
        return Ok(());
    }
    let code = room_code(&args.room)?;
    let client = match args.hub.hub {
        Some(_) => args.hub.client()?,
        None => find_hub(&code).await?,
    };
    let share = args.share;
    let nickname = match &share.nickname {
        Some(given) => clean_nickname(given),
        None => host_name(),
    };
    if nickname.is_empty() {
        return Err(Failure::message(2, "the nickname is empty".into(), Some("Pass --nickname NAME.".into())));
    }
    let id = match &share.participant_id {
        Some(id) if is_participant_id(id) => id.clone(),
        Some(id) => {
            return Err(Failure::message(
                2,
                format!("{:?} is not a valid participant id", output::sanitize(id)),
                Some("Use 1 to 128 letters, digits or . _ - ~ @ +, like alice-laptop.".into()),
            ))
        }
        None => generated_participant_id(&nickname),
    };
    let (endpoint, model, provider) = resolve_provider(&share).await?;
    let mut options = SessionOptions::new(client.base_url(), &code, &id, &endpoint, &model);
    options.auto_specs = !share.no_specs;
    options.nickname = nickname.clone();
    options.password = share.password.clone();
    options.max_concurrency = share.max_concurrency;
    options.pause_while_owner_busy = share.pause_while_owner_busy;
    // Only the heartbeat follows the flag: the tunnel's pings keep their default pace, which the
    // hub's limit on a silent tunnel (30 s) is built around.
    options.heartbeat_interval = share.heartbeat_interval;
    let mut view = ShareView {
        out: args.hub.output(),
        openai_url: client.inference_url(&code),
        hub_url: client.base_url().to_string(),
        room: code.clone(),
        id: id.clone(),
        nickname,
        model,
        endpoint,
        provider,
        was_live: false,
        last: None,
    };
    if share.no_reconnect {
        run_once(options, &mut view, signal).await
    } else {
        let room_checked = preflight(&client, &options).await?;
        run_supervised(&client, options, room_checked, &mut view, signal).await
    }
}

/// The hub holding room `code` when no hub was named: the one on this machine if it has the room,
/// else the one on the LAN that answers for it over mDNS. Says which it picked. Never guesses:
/// when several hubs claim the room (an impostor can copy a hub's name and a room's code), it
/// lists them and asks for `--hub` before anything, the password above all, is sent anywhere.
async fn find_hub(code: &str) -> Result<HubClient, Failure> {
    let local = HubClient::new(crate::cli::DEFAULT_HUB_URL)?.with_request_timeout(Duration::from_millis(800));
    if local.get_room(code).await.is_ok() {
        return Ok(local.with_request_timeout(crate::client::REQUEST_TIMEOUT));
    }
    eprintln!("Looking for room {code} on the LAN...");
    let claims = match crate::discovery::find_room_all(code, DISCOVERY_WINDOW, crate::discovery::SERVICE_TYPE).await {
        Ok(claims) => claims,
        Err(e) => {
            return Err(Failure::message(
                3,
                format!("Can't look for hubs on this network: {e}"),
                Some("Pass the hub's address with --hub (or GAMBI_HUB).".into()),
            ))
        }
    };
    let hub = match claims.as_slice() {
        [] => {
            return Err(Failure::message(
                4,
                format!("No hub on this machine or this network holds room {code}."),
                Some("Check the code, or pass the hub's address with --hub (or GAMBI_HUB).".into()),
            ))
        }
        [one] => &one.hub,
        many => return Err(ambiguous(code, many)),
    };
    eprintln!("Found room {code} on {} at {}.", output::sanitize(&hub.name), output::sanitize(&hub.url));
    remember(hub);
    Ok(HubClient::new(&hub.url)?)
}

/// How long `join` browses the LAN for the room's hub: all of it, to hear every claimant.
const DISCOVERY_WINDOW: Duration = Duration::from_secs(3);

/// The refusal when several hubs claim the room: each one, and how to pick.
fn ambiguous(code: &str, claims: &[RoomClaim]) -> Failure {
    let list: Vec<String> = claims.iter().map(|c| output::sanitize(&c.to_string())).collect();
    Failure::message(
        2,
        format!(
            "{} hubs on this network claim room {code}: {}. Not joining any of them: one may be posing as another.",
            claims.len(),
            list.join(", ")
        ),
        // No address is suggested: the first in the list is as likely to be the impostor.
        Some("Ask the room's host which address is their hub's and pass it with --hub URL (or GAMBI_HUB).".into()),
    )
}

/// Remembers `hub` in the known hubs, and warns on stderr when a hub of its name was last used at
/// another address. Never fails the join: a file that cannot be read is replaced, one that
/// cannot be written is only worth a warning.
fn remember(hub: &FoundHub) {
    let Some(dir) = crate::cli::config_dir() else {
        tracing::debug!("no config folder: known hubs are not remembered");
        return;
    };
    let path = dir.join(known::FILE_NAME);
    let mut hubs = match known::load(&path) {
        Ok(hubs) => hubs,
        Err(e) => {
            eprintln!("warning: {}; starting a new one.", output::sanitize(&e.to_string()));
            KnownHubs::default()
        }
    };
    if let Sighting::Moved { was } = hubs.record(&hub.name, &hub.url, crate::protocol::now_ms()) {
        eprintln!("{}", moved_warning(&hub.name, &was, &hub.url));
    }
    if let Err(e) = known::save(&path, &hubs) {
        eprintln!("warning: {}", output::sanitize(&e.to_string()));
    }
}

fn moved_warning(name: &str, was: &str, now: &str) -> String {
    let clean = output::sanitize;
    format!(
        "warning: hub '{}' was at {}, now answers at {}. If it did not move, another machine may be using \
         its name: stop sharing (Ctrl-C) and join again with --hub and the address its host gives you.",
        clean(name),
        clean(was),
        clean(now)
    )
}

/// The model server and model to share, and what kind of server it is when that was looked at:
/// as given, or found on this machine. Says on stderr what it picked, so a person knows what they
/// are sharing.
async fn resolve_provider(share: &ShareOptions) -> Result<(String, String, Option<ProviderKind>), Failure> {
    if let (Some(endpoint), Some(model)) = (&share.endpoint, &share.model) {
        return Ok((endpoint.clone(), model.clone(), None));
    }
    let found = match &share.endpoint {
        Some(url) => {
            crate::provider::probe(url).await.map_err(|e| Failure::message(3, e.to_string(), Some(endpoint_hint())))?
        }
        None => {
            let detection = crate::provider::detect(None).await;
            let message = detection.message();
            match detection.found {
                Some(provider) => {
                    eprintln!("{}", output::sanitize(&message));
                    provider
                }
                None => return Err(Failure::message(3, message, Some(endpoint_hint()))),
            }
        }
    };
    let model = match crate::provider::pick_model(&found, share.model.as_deref()) {
        Ok(model) => model,
        Err(e) => match ask_model(e.choices()) {
            Some(model) => model,
            None => {
                return Err(Failure::message(
                    2,
                    e.to_string(),
                    Some("Pass --model NAME with one of the models listed.".into()),
                ))
            }
        },
    };
    if share.model.is_none() {
        eprintln!("Sharing {} from {}.", output::sanitize(&model), output::sanitize(&found.endpoint));
    }
    Ok((found.endpoint, model, Some(found.kind)))
}

/// Asks which model to share when a person is at the terminal; `None` when nobody can answer.
fn ask_model(choices: &[String]) -> Option<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if choices.is_empty() || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
    let mut err = std::io::stderr();
    let _ = writeln!(err, "Which model do you want to share?");
    for (i, c) in choices.iter().enumerate() {
        let _ = writeln!(err, "  {}. {}", i + 1, output::sanitize(c));
    }
    let _ = write!(err, "Number [1]: ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    let n = match line.trim() {
        "" => 1,
        t => t.parse::<usize>().ok()?,
    };
    choices.get(n.checked_sub(1)?).cloned()
}

/// What the supervisor would only find out by retrying forever, checked once before it starts:
/// a model server that is not there (fail fast: nothing will start it for us), a model it does not
/// serve, a room that does not exist. An unreachable hub is not checked here: the supervisor
/// retries it, and says so. True when the room was found.
async fn preflight(client: &HubClient, options: &SessionOptions) -> Result<bool, Failure> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("cannot set up the HTTP client")))?;
    probe::probe(&http, &options.endpoint, &options.model, &reqwest::header::HeaderMap::new())
        .await
        .map_err(probe_failure)?;
    match client.get_room(&options.room_code).await {
        Ok(_) => Ok(true),
        // Transient: the supervisor's first attempt reports it and keeps trying.
        Err(ClientError::Unreachable { .. }) => Ok(false),
        Err(e) if e.status().is_some_and(|s| s == 429 || s >= 500) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// After a failed attempt, before the share was ever live: once the hub answers, a room it does
/// not have is a typo, not a blip, and retrying forever would hide it. (Once live, the supervisor
/// keeps trying: a hub restarting with its --state brings the room back.)
async fn room_missing(client: &HubClient, code: &str) -> Option<ClientError> {
    match tokio::time::timeout(LEAVE_TIMEOUT, client.get_room(code)).await {
        Ok(Err(e)) if e.status() == Some(404) => Some(e),
        _ => None,
    }
}

/// Supervised: retries lost connections by itself; ends on a signal or a permanent failure.
async fn run_supervised(
    client: &HubClient,
    options: SessionOptions,
    room_checked: bool,
    view: &mut ShareView,
    mut signal: std::pin::Pin<Box<impl std::future::Future<Output = ()>>>,
) -> Result<(), Failure> {
    let supervisor = Supervisor::start(options);
    let mut states = supervisor.subscribe();
    let first = states.borrow_and_update().clone();
    view.show(&first)?;
    loop {
        tokio::select! {
            _ = &mut signal => {
                let last = view.last.clone();
                view.note(&format!("Leaving room {}...", view.room));
                let token = supervisor.participant_token();
                supervisor.stop().await;
                // Between two attempts there is no session to leave through, but the hub may still
                // list this participant from before the connection broke: remove it by hand.
                if view.was_live && !matches!(last, Some(ShareState::Live { .. } | ShareState::Paused { .. })) {
                    let leave = client.leave_as(&view.room, &view.id, token.as_deref());
                    let _ = tokio::time::timeout(LEAVE_TIMEOUT, leave).await;
                }
                view.show(&ShareState::Stopped)?;
                return Ok(());
            }
            changed = states.changed() => {
                let state = states.borrow_and_update().clone();
                match state {
                    ShareState::Failed { error, status } => return Err(share_failure(error, status)),
                    ShareState::Stopped => {
                        view.show(&ShareState::Stopped)?;
                        return Ok(());
                    }
                    ShareState::Reconnecting { .. } if !room_checked && !view.was_live => {
                        view.show(&state)?;
                        if let Some(missing) = room_missing(client, &view.room).await {
                            supervisor.stop().await;
                            return Err(missing.into());
                        }
                    }
                    other => view.show(&other)?,
                }
                if changed.is_err() {
                    // The supervisor's task is gone without a final state: nothing left to follow.
                    return Err(Failure::Internal(anyhow::anyhow!("the share stopped unexpectedly")));
                }
            }
        }
    }
}

/// `--no-reconnect`: one session; any end but a requested one is a failure (exit 3).
async fn run_once(
    options: SessionOptions,
    view: &mut ShareView,
    mut signal: std::pin::Pin<Box<impl std::future::Future<Output = ()>>>,
) -> Result<(), Failure> {
    view.show(&ShareState::Starting)?;
    let session = tokio::select! {
        _ = &mut signal => {
            view.show(&ShareState::Stopped)?;
            return Ok(());
        }
        started = ParticipantSession::start(options) => started.map_err(session_failure)?,
    };
    let live = ShareState::Live {
        room_code: session.room_code().to_string(),
        participant_id: session.participant().id.clone(),
        hub_url: session.hub_url().to_string(),
        model: session.participant().model.clone(),
    };
    let mut health = session.provider_health();
    let mut watching = true;
    loop {
        // The provider watch pauses and resumes the share; the session goes on either way.
        let state = live.watched(&health.borrow_and_update());
        view.show(&state)?;
        tokio::select! {
            changed = health.changed(), if watching => watching = changed.is_ok(),
            _ = &mut signal => break,
            event = session.wait_until_closed() => return once_ended(event, view),
        }
    }
    view.note(&format!("Leaving room {}...", view.room));
    session.close().await;
    view.show(&ShareState::Stopped)?;
    Ok(())
}

/// How a `--no-reconnect` session that ended by itself ends the command.
fn once_ended(event: CloseEvent, view: &mut ShareView) -> Result<(), Failure> {
    let why = match event.reason {
        CloseReason::Closed => {
            view.show(&ShareState::Stopped)?;
            return Ok(());
        }
        CloseReason::TunnelClosed => "the tunnel to the hub closed",
        CloseReason::HeartbeatFailed => "the hub stopped answering heartbeats",
    };
    let detail = event.error.map(|e| format!(": {e}")).unwrap_or_default();
    Err(Failure::message(
        3,
        format!("the share ended: {why}{detail}"),
        Some("Run without --no-reconnect to reconnect by itself.".into()),
    ))
}

/// The exit code and words for a session that could not start.
fn session_failure(error: SessionError) -> Failure {
    match error {
        SessionError::Probe(e) => probe_failure(e),
        SessionError::Hub(ClientError::Api { status: 401, message, .. }) => {
            Failure::message(3, message, Some(password_hint()))
        }
        SessionError::Hub(e) => e.into(),
        SessionError::Tunnel(reason) => Failure::message(
            3,
            format!("cannot open the tunnel to the hub: {reason}"),
            Some("Check that nothing between here and the hub (a proxy, a firewall) blocks WebSockets.".into()),
        ),
        SessionError::Invalid(reason) => Failure::message(2, reason, None),
    }
}

/// A permanent failure the supervisor reported. With the hub's status it ends as that status
/// would; without one the refusal came from this side (model not served, bad options): bad usage.
fn share_failure(error: String, status: Option<u16>) -> Failure {
    match status {
        Some(401) => Failure::message(3, error, Some(password_hint())),
        Some(status) => {
            let exit = ClientError::Api { status, code: String::new(), message: String::new(), hint: None }.exit_code();
            Failure::message(exit, error, None)
        }
        None => Failure::message(2, error, None),
    }
}

fn password_hint() -> String {
    "Pass the room's password with --password (ask the room's host for it).".into()
}

fn probe_failure(error: ProbeError) -> Failure {
    match error {
        // The server answered, but not with a model list: probably the wrong port or path.
        ProbeError::Unreachable { endpoint, reason } if reason.starts_with("HTTP ") => Failure::message(
            3,
            format!("the server at {endpoint} does not look like a model server ({reason})"),
            Some(endpoint_hint()),
        ),
        ProbeError::Unreachable { endpoint, reason } => Failure::message(
            3,
            format!("Can't reach the model server at {endpoint} — is Ollama running? ({reason})"),
            Some(endpoint_hint()),
        ),
        e @ ProbeError::ModelNotServed { .. } => Failure::message(
            2,
            e.to_string(),
            Some("Pass one of the models it serves with --model (with Ollama, 'ollama pull MODEL' first).".into()),
        ),
    }
}

fn endpoint_hint() -> String {
    format!(
        "Start the model server ('ollama serve', or LM Studio's local server), or point --endpoint at it \
         (Ollama: {DEFAULT_ENDPOINT}, LM Studio: http://localhost:1234)."
    )
}

/// Prints a share's states: a sentence each for people, one JSON object per line for scripts.
struct ShareView {
    out: Output,
    openai_url: String,
    hub_url: String,
    room: String,
    id: String,
    nickname: String,
    model: String,
    endpoint: String,
    /// What kind of model server it is, when that was looked at: its name reads better than a URL.
    provider: Option<ProviderKind>,
    /// Whether the share has been live once: a reconnection reads differently from a first join.
    was_live: bool,
    last: Option<ShareState>,
}

impl ShareView {
    fn show(&mut self, state: &ShareState) -> Result<(), Failure> {
        // A watch may report the same state twice; people only need to hear it once.
        if self.last.as_ref() == Some(state) {
            return Ok(());
        }
        match self.out.format {
            Format::Text => output::line(&self.text(state)),
            Format::Json | Format::Ndjson => {
                let mut value = serde_json::to_value(state)?;
                if let (ShareState::Live { .. }, Value::Object(map)) = (state, &mut value) {
                    // What a script needs to use the share, beyond the state itself.
                    map.insert("openaiBaseUrl".into(), Value::String(self.openai_url.clone()));
                    map.insert("nickname".into(), Value::String(self.nickname.clone()));
                    map.insert("endpoint".into(), Value::String(self.endpoint.clone()));
                }
                output::line(&serde_json::to_string(&value)?);
            }
        }
        if matches!(state, ShareState::Live { .. }) {
            self.was_live = true;
        }
        self.last = Some(state.clone());
        Ok(())
    }

    /// A line for people only (json output carries the states alone).
    fn note(&self, text: &str) {
        if self.out.format == Format::Text {
            output::line(text);
        }
    }

    /// The model server, as a sentence starts with it: "Ollama", or "The model server at URL".
    fn provider_name(&self) -> String {
        match self.provider {
            Some(kind @ (ProviderKind::Ollama | ProviderKind::LmStudio)) => kind.to_string(),
            _ => format!("The model server at {}", output::sanitize(&self.endpoint)),
        }
    }

    fn text(&self, state: &ShareState) -> String {
        let clean = output::sanitize;
        match state {
            ShareState::Paused { .. } => {
                format!("{} stopped answering — your share is paused until it is back.", self.provider_name())
            }
            ShareState::Live { .. } if matches!(self.last, Some(ShareState::Paused { .. })) => {
                format!("{} is answering again — your share is back on.", self.provider_name())
            }
            ShareState::Starting => format!(
                "Joining room {} on {} as {} ({}), sharing {} from {}...",
                self.room,
                clean(&self.hub_url),
                self.id,
                clean(&self.nickname),
                clean(&self.model),
                clean(&self.endpoint)
            ),
            ShareState::Live { room_code, participant_id, model, .. } if self.was_live => format!(
                "Back online: sharing {} in room {} as {} again.",
                clean(model),
                clean(room_code),
                clean(participant_id)
            ),
            ShareState::Live { room_code, participant_id, model, .. } => format!(
                "Sharing {} in room {} as {}.\nOpenAI base URL: {}\nPress Ctrl-C to stop sharing and leave the room.",
                clean(model),
                clean(room_code),
                clean(participant_id),
                clean(&self.openai_url)
            ),
            ShareState::Reconnecting { attempt, retry_in_ms, error } => {
                let wait = wait_text(*retry_in_ms);
                let error = clean(error);
                match &self.last {
                    Some(ShareState::Live { .. } | ShareState::Paused { .. }) => {
                        format!("Connection lost ({error}); reconnecting in {wait} (attempt {attempt})...")
                    }
                    _ if !self.was_live => {
                        format!("Can't join yet ({error}); retrying in {wait} (attempt {attempt})...")
                    }
                    _ => format!("Still not connected ({error}); retrying in {wait} (attempt {attempt})..."),
                }
            }
            ShareState::Stopped => format!("Stopped sharing; left room {}.", self.room),
            ShareState::Failed { error, .. } => format!("Failed: {}", clean(error)),
        }
    }
}

/// `500 ms`, `2 s`, `1.5 s`.
fn wait_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// `gambi participant leave`: removes a participant from its room.
pub async fn leave(args: ParticipantArgs) -> Result<(), Failure> {
    let client = args.hub.client()?;
    let done = client.leave_as(&args.room, &args.participant_id, args.token.as_deref()).await?;
    let code = normalize_room_code(&args.room).unwrap_or(args.room);
    Ok(args.hub.output().one(&done, || format!("{} left room {code}.", output::sanitize(&args.participant_id)))?)
}

/// `gambi participant heartbeat`: tells the hub a participant is alive, once.
pub async fn heartbeat(args: ParticipantArgs) -> Result<(), Failure> {
    let client = args.hub.client()?;
    let beat = client.heartbeat(&args.room, &args.participant_id, None).await?;
    let code = normalize_room_code(&args.room).unwrap_or(args.room);
    Ok(args.hub.output().one(&beat, || {
        format!(
            "Heartbeat sent for {} in room {code}: {} (last seen {}).",
            output::sanitize(&args.participant_id),
            beat.status.as_str(),
            output::iso_time(beat.last_seen)
        )
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_readable() {
        for nickname in ["Alice's MacBook Pro", "ünïcødé", "", "---", "a.b_c", &"x".repeat(200)] {
            let id = generated_participant_id(nickname);
            assert!(is_participant_id(&id), "{nickname:?} -> {id:?}");
            assert!(id.len() <= 40 + 7, "{id}");
        }
        assert!(generated_participant_id("Alice's MacBook Pro").starts_with("alice-s-macbook-pro-"));
        assert!(generated_participant_id("---").starts_with("participant-"));
        assert_ne!(generated_participant_id("a"), generated_participant_id("a"));
    }

    #[test]
    fn nicknames_are_cleaned() {
        assert_eq!(clean_nickname(" my\u{1b}host "), "myhost");
        assert_eq!(clean_nickname(&"n".repeat(100)).len(), MAX_NICKNAME);
        assert!(!host_name().is_empty());
    }

    #[test]
    fn waits_read_well() {
        assert_eq!(wait_text(500), "500 ms");
        assert_eq!(wait_text(2000), "2 s");
        assert_eq!(wait_text(1500), "1.5 s");
    }

    #[test]
    fn permanent_failures_get_the_products_exit_codes() {
        assert_eq!(share_failure("Wrong password for this room.".into(), Some(401)).exit_code(), 3);
        assert_eq!(share_failure("bad".into(), Some(400)).exit_code(), 2);
        assert_eq!(share_failure("gone".into(), Some(404)).exit_code(), 4);
        assert_eq!(share_failure("does not serve 'x'".into(), None).exit_code(), 2);
        let not_served = ProbeError::ModelNotServed {
            endpoint: "http://localhost:11434".into(),
            model: "x".into(),
            available: vec!["llama3".into(), "qwen".into()],
        };
        let failure = probe_failure(not_served);
        assert_eq!(failure.exit_code(), 2);
        assert!(failure.to_string().contains("llama3, qwen"), "{failure}");
        let down =
            ProbeError::Unreachable { endpoint: "http://localhost:1".into(), reason: "connection refused".into() };
        let failure = probe_failure(down);
        assert_eq!(failure.exit_code(), 3);
        assert!(failure.to_string().starts_with("Can't reach the model server at http://localhost:1"), "{failure}");
    }

    #[test]
    fn several_claimants_are_refused_by_name_and_address() {
        let claim = |name: &str, url: &str| {
            let hub: crate::discovery::FoundHub = serde_json::from_value(serde_json::json!({
                "instance": "i", "name": name, "url": url, "addresses": [], "host": "h.local.", "port": 3000,
                "version": null, "protocol": null, "roomsTxt": null, "rooms": [], "hubVersion": null
            }))
            .unwrap();
            let room = serde_json::from_value(serde_json::json!({
                "id": "r", "code": "ABC234", "name": "R", "hostId": "h", "createdAt": 0, "passwordProtected": true
            }))
            .unwrap();
            RoomClaim { hub, room }
        };
        let failure = ambiguous(
            "ABC234",
            &[claim("Lab Hub", "http://10.0.0.1:3000"), claim("Lab\u{1b}Hub", "http://10.0.0.2:3000")],
        );
        assert_eq!(failure.exit_code(), 2);
        let message = failure.to_string();
        assert!(
            message.starts_with("2 hubs on this network claim room ABC234: 'Lab Hub' at http://10.0.0.1:3000, "),
            "{message}"
        );
        assert!(
            message.contains("'Lab\u{fffd}Hub' at http://10.0.0.2:3000"),
            "names from the network are sanitized: {message}"
        );
        assert!(failure.hint().unwrap().contains("--hub URL"));
    }

    #[test]
    fn a_moved_hub_is_named_with_both_addresses() {
        let warning = moved_warning("Lab Hub", "http://10.0.0.1:3000", "http://10.0.0.2:3000");
        assert!(warning
            .starts_with("warning: hub 'Lab Hub' was at http://10.0.0.1:3000, now answers at http://10.0.0.2:3000."));
    }

    #[test]
    fn states_read_as_sentences() {
        let mut view = ShareView {
            out: Output::new(Format::Text),
            openai_url: "http://h:1/rooms/ABC123/v1".into(),
            hub_url: "http://h:1".into(),
            room: "ABC123".into(),
            id: "alice-x7k2q9".into(),
            nickname: "alice".into(),
            model: "llama3".into(),
            endpoint: DEFAULT_ENDPOINT.into(),
            provider: Some(ProviderKind::Ollama),
            was_live: false,
            last: None,
        };
        let live = ShareState::Live {
            room_code: "ABC123".into(),
            participant_id: "alice-x7k2q9".into(),
            hub_url: "http://h:1".into(),
            model: "llama3".into(),
        };
        let first = view.text(&live);
        assert!(first.starts_with("Sharing llama3 in room ABC123 as alice-x7k2q9."), "{first}");
        assert!(first.contains("OpenAI base URL: http://h:1/rooms/ABC123/v1"), "{first}");
        view.was_live = true;
        view.last = Some(live.clone());
        let lost = ShareState::Reconnecting { attempt: 2, retry_in_ms: 2000, error: "the tunnel closed".into() };
        assert_eq!(view.text(&lost), "Connection lost (the tunnel closed); reconnecting in 2 s (attempt 2)...");
        view.last = Some(lost.clone());
        assert!(view.text(&lost).starts_with("Still not connected"));
        assert!(view.text(&live).starts_with("Back online"));
        let paused = ShareState::Paused {
            room_code: "ABC123".into(),
            participant_id: "alice-x7k2q9".into(),
            hub_url: "http://h:1".into(),
            model: "llama3".into(),
            reason: crate::protocol::PauseReason::Provider,
            error: "connection refused".into(),
        };
        assert_eq!(view.text(&paused), "Ollama stopped answering — your share is paused until it is back.");
        view.last = Some(paused);
        assert_eq!(view.text(&live), "Ollama is answering again — your share is back on.");
        view.provider = None;
        assert!(view.text(&live).starts_with("The model server at http://localhost:11434 is answering again"));
    }
}
