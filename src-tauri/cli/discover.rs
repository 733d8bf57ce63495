//! `gambi discover`: the hubs on the LAN and their rooms, found over mDNS.

use std::time::Duration;

use crate::cli::output::{self, Format, Output};
use crate::cli::serve::parse_duration;
use crate::cli::Failure;
use crate::discovery::{self, FoundHub};

#[derive(Debug, Clone, clap::Args)]
pub struct DiscoverArgs {
    /// How long to listen for hubs.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
}

pub async fn run(args: DiscoverArgs) -> Result<(), Failure> {
    let hubs = discovery::discover(args.timeout, discovery::SERVICE_TYPE)
        .await
        .map_err(|e| Failure::message(1, format!("mDNS discovery is not available here: {e}"), Some(hint())))?;
    Ok(Output::new(Format::resolve(args.format)).list(&hubs, || text(&hubs, args.timeout))?)
}

fn hint() -> String {
    "Pass the hub's address with --hub (e.g. --hub http://192.168.1.20:3000) instead.".into()
}

fn text(hubs: &[FoundHub], timeout: Duration) -> String {
    if hubs.is_empty() {
        return format!(
            "No Gambi hub answered on this network within {}.\nStart one with: gambi hub serve --mdns",
            humantime::format_duration(timeout)
        );
    }
    let rows: Vec<Vec<String>> = hubs
        .iter()
        .flat_map(|hub| {
            let rooms: Vec<Vec<String>> = if hub.rooms.is_empty() {
                vec![vec![hub.name.clone(), hub.url.clone(), "-".into(), "(no rooms yet)".into(), String::new()]]
            } else {
                hub.rooms
                    .iter()
                    .map(|room| {
                        vec![
                            hub.name.clone(),
                            hub.url.clone(),
                            room.code.clone(),
                            output::truncate(&room.name, 40),
                            format!(
                                "{}{}",
                                room.participant_count.unwrap_or(0),
                                if room.password_protected { ", protected" } else { "" }
                            ),
                        ]
                    })
                    .collect()
            };
            rooms
        })
        .collect();
    output::table(&["HUB", "URL", "ROOM", "NAME", "PARTICIPANTS"], &rows)
}
