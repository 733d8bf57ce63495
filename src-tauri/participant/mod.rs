//! The participant runtime: shares this machine's model server into a room. [`session`] is one
//! registration with its tunnel and loops; [`supervisor`] keeps one alive across hub restarts and
//! network blips; [`probe`] checks the provider first and [`provider_watch`] keeps checking it while
//! sharing; [`tunnel_client`] serves the hub's requests, those [`tunnel_calls`] allows.

pub mod owner_watch;
pub mod probe;
pub mod provider_watch;
pub mod session;
pub mod supervisor;
pub mod tunnel_calls;
pub mod tunnel_client;

pub use provider_watch::ProviderHealth;
pub use session::{CloseEvent, CloseReason, ParticipantSession, SessionError, SessionOptions};
pub use supervisor::{ShareState, Supervisor};
