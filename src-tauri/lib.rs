//! Gambi: pool the local LLM servers of everyone on one network.
//!
//! A map of the crate:
//! - [`protocol`]: wire types only (rooms, participants, envelopes, events, constants).
//! - [`hub`]: the axum hub: registry, health sweep, event bus, the classic and `/v1` surfaces.
//! - [`participant`]: the participant runtime: session, tunnel client, supervisor.
//! - [`client`]: a typed HTTP client of the management plane (CLI, desktop app, participants).
//! - [`cli`]: the `gambi` command line: clap definitions, dispatch and output.
//!
//! The desktop shell (feature `desktop`) sits on top of these and nothing here depends on it.

pub mod cli;
pub mod client;
pub mod hub;
pub mod participant;
pub mod protocol;
