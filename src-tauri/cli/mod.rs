//! The `gambi` command line: clap definitions and dispatch. Output goes through [`output`]; each
//! command is a thin call into the library.

pub mod output;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "gambi", version, about = "Pool the local LLM servers of everyone on one network.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or manage a hub.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Run a hub (short for `gambi hub serve`).
    Serve(serve::ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Serve a hub on this machine.
    Serve(serve::ServeArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Entry point of the `gambi` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Hub(HubCommand::Serve(args))) | Some(Command::Serve(args)) => serve::run(args).await,
            None => {
                eprintln!("This gambi was built without the desktop app. Run a hub with: gambi hub serve");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
