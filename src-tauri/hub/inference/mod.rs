//! The inference plane: `/rooms/:code/v1/*`, OpenAI-compatible. Routing, capacity and queueing,
//! the proxy to tunnel and direct participants, and the Responses API fallback.

pub mod merge;
pub mod request;
pub mod responses_compat;
pub mod responses_index;
pub mod routes;
pub mod sse_parse;
pub mod upstream;
