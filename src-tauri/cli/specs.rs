//! `gambi specs`: what this machine reports to a room (the same figures a share sends).

use crate::cli::output::{self, Format, Output};
use crate::cli::Failure;

#[derive(Debug, Clone, clap::Args)]
pub struct SpecsArgs {
    /// Output format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
}

pub async fn show(args: SpecsArgs) -> Result<(), Failure> {
    let specs = crate::specs::collect().await;
    let rows = crate::specs::summary(&specs);
    Ok(Output::new(Format::resolve(args.format)).one(&specs, || {
        let pairs: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        output::fields(&pairs)
    })?)
}
