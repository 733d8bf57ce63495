//! Integration tests, compiled into one binary (one module per area, shared helpers in `util`).
//! Every test runs a real hub on `127.0.0.1:0` (in-process, or the real `gambi` binary) and talks
//! to it over real HTTP and SSE.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod util;

mod classic;
mod cli;
mod discovery;
mod events;
mod fake_provider;
mod faults;
mod health;
mod hostile;
mod identity;
mod inference;
mod limits;
mod metrics;
mod ollama_api;
mod ollama_native;
mod open_webui;
mod owner_first;
mod participant_cli;
mod properties;
mod provider;
mod provider_retry;
mod queueing;
mod real_model;
mod room_key;
mod room_stats;
mod scheduling;
mod secrets;
mod share_health;
mod shutdown;
mod specs;
mod state;
mod surfaces;
mod trust;
mod tunnel;
mod ui;
mod v1;
mod ways_down;
mod web_pages;
