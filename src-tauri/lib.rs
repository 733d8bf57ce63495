//! Gambi: pool the local LLM servers of everyone on one network.
//!
//! A map of the crate:
//! - [`protocol`]: wire types only (rooms, participants, envelopes, events, constants).
//! - [`hub`]: the axum hub: registry, health sweep, event bus, the classic and `/v1` surfaces.
//! - [`participant`]: the participant runtime: session, tunnel client, supervisor.
//! - [`client`]: a typed HTTP client of the management plane (CLI, desktop app, participants).
//! - [`discovery`]: mDNS advertising and browsing of hubs on the LAN.
//! - [`specs`]: what this machine reports (CPU, RAM, GPUs, VRAM).
//! - [`provider`]: finding and probing the local model server (Ollama, LM Studio).
//! - [`cli`]: the `gambi` command line: clap definitions, dispatch and output.
//!
//! The desktop shell (feature `desktop`) sits on top of these and nothing here depends on it.

pub mod cli;
pub mod client;
#[cfg(feature = "desktop")]
pub mod desktop;
pub mod discovery;
pub mod hub;
pub mod participant;
pub mod protocol;
pub mod provider;
pub mod specs;
