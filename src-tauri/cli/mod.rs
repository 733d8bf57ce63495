//! The `gambi` command line: clap definitions and dispatch. Output goes through [`output`]; each
//! command is a thin call into the library ([`crate::hub`] to serve, [`crate::client`] to manage,
//! [`crate::participant`] to share a model server).
//! Failures are printed here, once, as `error:` and `hint:` lines on stderr, and become the exit
//! codes of the product: 0 success, 1 internal failure, 2 bad usage or 400, 3 hub unreachable or
//! 401/403/503, 4 404/409.

pub mod discover;
pub mod events;
mod log_writer;
pub mod output;
pub mod participant;
pub mod room;
pub mod serve;
pub mod specs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{ClientError, HubClient};
use crate::protocol::ROOM_CODE_SHAPE;
use output::{Format, Output};

/// Where operational commands look for a hub when neither `--hub` nor `GAMBI_HUB` says.
pub const DEFAULT_HUB_URL: &str = "http://localhost:3000";

/// Overrides [`config_dir`] (tests, and people who keep their files elsewhere).
pub const CONFIG_DIR_ENV: &str = "GAMBI_CONFIG_DIR";

/// The folder where the command line keeps what it remembers between runs (the known hubs):
/// `GAMBI_CONFIG_DIR` when set, else the platform's per-user config folder with `gambi` in it
/// (`$XDG_CONFIG_HOME/gambi` or `~/.config/gambi` on Linux, `~/Library/Application Support/gambi`
/// on macOS, `%APPDATA%\gambi` on Windows). `None` when there is no home to put it in.
pub fn config_dir() -> Option<PathBuf> {
    config_dir_from(|name| std::env::var_os(name))
}

/// [`config_dir`] with the environment given, for its tests.
fn config_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CONFIG_DIR_ENV) {
        return Some(dir);
    }
    let base = if cfg!(windows) {
        var("APPDATA")?
    } else if cfg!(target_os = "macos") {
        var("HOME")?.join("Library").join("Application Support")
    } else {
        // The XDG spec ignores a relative XDG_CONFIG_HOME.
        match var("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
            Some(dir) => dir,
            None => var("HOME")?.join(".config"),
        }
    };
    Some(base.join("gambi"))
}

#[derive(Debug, Parser)]
#[command(name = "gambi", version, about = "Pool the local LLM servers of everyone on one network.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no command: open the app's window (else it starts in the tray, after the first launch).
    #[arg(long)]
    pub show: bool,
    /// With no command: ask a running app to quit (it leaves its room and stops its hub first).
    #[arg(long, conflicts_with = "show")]
    pub quit: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or manage a hub.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Run a hub (short for `gambi hub serve`).
    Serve(serve::ServeArgs),
    /// Create, list, inspect and delete rooms on a hub.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Create a room (short for `gambi room create --name NAME`).
    Create(room::ShortCreateArgs),
    /// List the rooms on a hub (short for `gambi room list`).
    List(room::ListArgs),
    /// Share this machine's model server into a room, and manage participants.
    #[command(subcommand)]
    Participant(ParticipantCommand),
    /// Share this machine's model server into a room (short for `gambi participant join --room CODE`).
    Join(participant::ShortJoinArgs),
    /// Follow what happens in a room.
    #[command(subcommand)]
    Events(EventsCommand),
    /// What this machine reports to a room: CPU, cores, RAM, OS, GPUs and VRAM.
    Specs(specs::SpecsArgs),
    /// The Gambi hubs on this network and their rooms (mDNS).
    Discover(discover::DiscoverArgs),
}

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Serve a hub on this machine.
    Serve(serve::ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room; prints its code and the host token that deletes it.
    Create(room::CreateArgs),
    /// List the rooms on a hub.
    List(room::ListArgs),
    /// Show one room.
    Get(room::GetArgs),
    /// Delete a room (needs the host token printed when it was created).
    Delete(room::DeleteArgs),
}

#[derive(Debug, Subcommand)]
pub enum ParticipantCommand {
    /// Share a model into a room until Ctrl-C; prints the room's OpenAI base URL once live, and
    /// reconnects by itself when the hub or the network goes away for a while.
    Join(participant::JoinArgs),
    /// Remove a participant from a room.
    Leave(participant::ParticipantArgs),
    /// Send one heartbeat for a participant (keeps it online for another timeout).
    Heartbeat(participant::ParticipantArgs),
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print a room's events as they happen, until Ctrl-C (text, or one JSON object per line).
    Watch(events::WatchArgs),
}

/// The options every command that talks to a hub takes.
#[derive(Debug, Clone, clap::Args)]
pub struct HubOptions {
    /// The hub to talk to (a bare host:port means http://) [default: http://localhost:3000;
    /// `participant join` without it finds the room's hub on the LAN].
    #[arg(long, value_name = "URL", env = "GAMBI_HUB")]
    pub hub: Option<String>,
    /// Output format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
}

impl HubOptions {
    pub fn client(&self) -> Result<HubClient, Failure> {
        Ok(HubClient::new(self.hub.as_deref().unwrap_or(DEFAULT_HUB_URL))?)
    }

    pub fn output(&self) -> Output {
        Output::new(Format::resolve(self.format))
    }
}

/// Why a command failed, and so which exit code and words it ends with.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// A failure this side found (a model server that is down, a bad argument, a share that
    /// ended), with the exit code it maps to and what to do about it.
    #[error("{message}")]
    Message { exit_code: u8, message: String, hint: Option<String> },
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Internal(anyhow::Error::new(e).context("cannot encode the output"))
    }
}

impl Failure {
    pub fn message(exit_code: u8, message: String, hint: Option<String>) -> Failure {
        Failure::Message { exit_code, message, hint }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(e) => e.exit_code(),
            Failure::Internal(_) => 1,
            Failure::Message { exit_code, .. } => *exit_code,
        }
    }

    /// What to do next: the hub's own hint when it gave one, else advice for the CLI user.
    pub fn hint(&self) -> Option<String> {
        match self {
            Failure::Client(ClientError::Unreachable { .. }) => {
                Some("Start one with 'gambi hub serve' or pass --hub / GAMBI_HUB.".into())
            }
            Failure::Client(ClientError::InvalidUrl { .. }) => {
                Some("Pass the hub's address, like --hub http://192.168.1.10:3000.".into())
            }
            Failure::Client(ClientError::InvalidInput { .. }) => {
                Some(format!("Room codes are {ROOM_CODE_SHAPE}; see 'gambi room list'."))
            }
            Failure::Client(ClientError::Decode { .. }) => {
                Some("Check that --hub (or GAMBI_HUB) points at a Gambi hub.".into())
            }
            Failure::Client(e) => e.hint().map(str::to_string),
            Failure::Internal(_) => None,
            Failure::Message { hint, .. } => hint.clone(),
        }
    }

    /// Prints the failure on stderr: `error: ...`, then `hint: ...` when there is one.
    pub fn report(&self) {
        match self {
            Failure::Client(e) => eprintln!("error: {}", output::sanitize(&e.to_string())),
            Failure::Message { message, .. } => eprintln!("error: {}", output::sanitize(message)),
            // The whole cause chain, as the edge of the program should.
            Failure::Internal(e) => eprintln!("error: {e:#}"),
        }
        if let Some(hint) = self.hint() {
            eprintln!("hint: {}", output::sanitize(&hint));
        }
    }
}

/// The log goes to stderr. A hub writes it from a thread of its own, a batch of lines at a time
/// (`log_writer`: a line per request costs no thread wake-up and no `write` of its own): a reader
/// that falls behind (a paused terminal, a slow pipe, a busy journald) must never hold up the
/// requests being logged, so past a buffer of lines the newest are dropped and counted instead.
/// The app keeps the plain writer: its event loop ends the process without returning here, which
/// would lose what is still buffered.
fn init_logging(off_thread: bool) -> Option<LogFlush> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    if !off_thread {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return None;
    }
    let Ok((writer, flush)) = log_writer::batched(std::io::stderr(), LOG_BUFFERED_LINES, "gambi-log") else {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return None;
    };
    builder.with_writer(writer).try_init().ok()?;
    Some(LogFlush(Some(flush)))
}

/// Log lines held for a stalled stderr before new ones are dropped.
const LOG_BUFFERED_LINES: usize = 64 * 1024;

/// Writes out what the log thread still holds when the command ends, and says how many lines a
/// stalled stderr cost, if any.
struct LogFlush(Option<log_writer::LogFlush>);

impl Drop for LogFlush {
    fn drop(&mut self) {
        let Some(flush) = self.0.take() else { return };
        let dropped = flush.finish();
        if dropped > 0 {
            eprintln!("warning: {dropped} log lines were dropped because stderr was not being read fast enough");
        }
    }
}

async fn run(command: Option<Command>) -> Result<(), Failure> {
    match command {
        Some(Command::Hub(HubCommand::Serve(args))) | Some(Command::Serve(args)) => Ok(serve::run(args).await?),
        Some(Command::Room(RoomCommand::Create(args))) => room::create(args).await,
        Some(Command::Create(args)) => room::create(args.into()).await,
        Some(Command::Room(RoomCommand::List(args))) | Some(Command::List(args)) => room::list(args).await,
        Some(Command::Room(RoomCommand::Get(args))) => room::get(args).await,
        Some(Command::Room(RoomCommand::Delete(args))) => room::delete(args).await,
        Some(Command::Participant(ParticipantCommand::Join(args))) => participant::join(args).await,
        Some(Command::Join(args)) => participant::join(args.into()).await,
        Some(Command::Participant(ParticipantCommand::Leave(args))) => participant::leave(args).await,
        Some(Command::Participant(ParticipantCommand::Heartbeat(args))) => participant::heartbeat(args).await,
        Some(Command::Events(EventsCommand::Watch(args))) => events::watch(args).await,
        Some(Command::Specs(args)) => specs::show(args).await,
        Some(Command::Discover(args)) => discover::run(args).await,
        None => Err(Failure::message(
            2,
            "this gambi was built without the desktop app".into(),
            Some("Run a hub with 'gambi hub serve', or see 'gambi --help'.".into()),
        )),
    }
}

/// Entry point of the `gambi` binary. Usage errors exit 2 from clap itself.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The app and the hub (a hub either way) keep memory only while they use it.
    #[cfg(all(target_os = "linux", target_env = "gnu", feature = "desktop"))]
    if matches!(cli.command, None | Some(Command::Hub(HubCommand::Serve(_))) | Some(Command::Serve(_))) {
        serve::return_large_buffers_to_the_system();
    }
    #[cfg(feature = "desktop")]
    if cli.command.is_none() {
        // The app owns the main thread (its event loop) and starts its own runtime.
        init_logging(false);
        return crate::desktop::run(cli.show, cli.quit);
    }
    // Dropped last (after the runtime), so everything logged on the way out is written.
    let _log = init_logging(true);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn short_forms_parse_like_the_long_ones() {
        let cli = Cli::try_parse_from(["gambi", "create", "My Room", "--password", "p", "--hub", "h:1"]).unwrap();
        let Some(Command::Create(args)) = cli.command else { panic!("{cli:?}") };
        let args: room::CreateArgs = args.into();
        assert_eq!(args.name, "My Room");
        assert_eq!(args.room.password.as_deref(), Some("p"));
        assert_eq!(args.hub.hub.as_deref(), Some("h:1"));

        let cli = Cli::try_parse_from([
            "gambi",
            "join",
            "abc123",
            "--nickname",
            "N",
            "--model",
            "m",
            "--endpoint",
            "http://e:1",
            "--password",
            "p",
        ])
        .unwrap();
        let Some(Command::Join(args)) = cli.command else { panic!("{cli:?}") };
        let args: participant::JoinArgs = args.into();
        assert_eq!(args.room, "abc123");
        assert_eq!(args.share.nickname.as_deref(), Some("N"));
        assert_eq!(args.share.endpoint.as_deref(), Some("http://e:1"));
        assert_eq!(args.share.password.as_deref(), Some("p"));
        assert!(!args.share.no_reconnect);

        let cli = Cli::try_parse_from(["gambi", "participant", "join", "--room", "ABC123", "--model", "m"]).unwrap();
        let Some(Command::Participant(ParticipantCommand::Join(args))) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.share.endpoint, None, "found by detection when not given");
        assert_eq!(args.share.heartbeat_interval, std::time::Duration::from_secs(10));
        for bad in [&["--max-concurrency", "0"][..], &["--heartbeat-interval", "0s"]] {
            let mut argv = vec!["gambi", "participant", "join", "--room", "ABC123", "--model", "m"];
            argv.extend_from_slice(bad);
            assert_eq!(Cli::try_parse_from(argv).unwrap_err().exit_code(), 2, "{bad:?}");
        }

        let cli = Cli::try_parse_from(["gambi", "list", "--format", "ndjson"]).unwrap();
        let Some(Command::List(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.hub.format, Some(Format::Ndjson));
    }

    /// The TypeScript hub's codes may start with `-` (`-B_JWY`): a code is read as the value it is
    /// wherever one is asked for, and the flags around it still parse.
    #[test]
    fn a_room_code_may_start_with_a_dash() {
        let cli = Cli::try_parse_from(["gambi", "participant", "join", "--room", "-B_JWY", "--model", "m"]).unwrap();
        let Some(Command::Participant(ParticipantCommand::Join(args))) = cli.command else { panic!("{cli:?}") };
        assert_eq!((args.room.as_str(), args.share.model.as_deref()), ("-B_JWY", Some("m")));

        let cli = Cli::try_parse_from(["gambi", "join", "-B_JWY", "--nickname", "N", "--hub", "http://h:1"]).unwrap();
        let Some(Command::Join(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!((args.room.as_str(), args.share.nickname.as_deref()), ("-B_JWY", Some("N")));
        let cli = Cli::try_parse_from(["gambi", "join", "--nickname", "N", "ABC123"]).unwrap();
        let Some(Command::Join(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!((args.room.as_str(), args.share.nickname.as_deref()), ("ABC123", Some("N")));
        let cli = Cli::try_parse_from(["gambi", "join", "--nickname", "N", "--", "--MA_T"]).unwrap();
        let Some(Command::Join(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.room, "--MA_T");

        let cli = Cli::try_parse_from(["gambi", "events", "watch", "--room", "--MA_T", "--format", "ndjson"]).unwrap();
        let Some(Command::Events(EventsCommand::Watch(args))) = cli.command else { panic!("{cli:?}") };
        assert_eq!((args.room.as_str(), args.hub.format), ("--MA_T", Some(Format::Ndjson)));

        let cli = Cli::try_parse_from(["gambi", "room", "get", "-PKUH_", "--format", "json"]).unwrap();
        let Some(Command::Room(RoomCommand::Get(args))) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.code, "-PKUH_");
    }

    #[test]
    fn defaults_must_be_a_json_object_of_runtime_config() {
        let parse = |json: &str| Cli::try_parse_from(["gambi", "room", "create", "--name", "n", "--defaults", json]);
        assert!(parse(r#"{"temperature": 0.5, "max_tokens": 10}"#).is_ok());
        for bad in ["{bad", "[1]", "3", r#"{"temperature": "hot"}"#, r#"{"temprature": 0.5}"#] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn the_config_folder_follows_the_override_then_the_platform() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| std::ffi::OsString::from(v))
        };
        let dir = config_dir_from(env(&[(CONFIG_DIR_ENV, "/tmp/g"), ("HOME", "/home/a")]));
        assert_eq!(dir, Some(PathBuf::from("/tmp/g")));
        assert_eq!(config_dir_from(env(&[])), None);
        if cfg!(all(unix, not(target_os = "macos"))) {
            let home = config_dir_from(env(&[(CONFIG_DIR_ENV, ""), ("HOME", "/home/a")]));
            assert_eq!(home, Some(PathBuf::from("/home/a/.config/gambi")), "an empty override is no override");
            let xdg = config_dir_from(env(&[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "/x")]));
            assert_eq!(xdg, Some(PathBuf::from("/x/gambi")));
            let relative = config_dir_from(env(&[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "x")]));
            assert_eq!(relative, Some(PathBuf::from("/home/a/.config/gambi")));
        }
    }
}
