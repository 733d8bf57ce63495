//! The inference plane: `/rooms/:code/v1/*`, OpenAI-compatible (chat completions, Responses,
//! legacy completions, embeddings, models) and Anthropic-compatible (Messages). The endpoint
//! table (`op`), routing, capacity and queueing (`proxy`), the relay of answers (`relay`), the
//! proxy to tunnel and direct participants (`upstream`), and the translations for providers that
//! lack an endpoint (`responses_compat`, `messages_compat`, `json_stream`). The Ollama API
//! (`/rooms/:code/api/*`) is translated onto it (`ollama_compat`, `ollama_routes`).

pub mod answer_head;
pub mod json_stream;
pub mod merge;
pub mod messages_compat;
pub mod models;
pub mod ollama_compat;
pub mod ollama_routes;
pub mod op;
pub mod proxy;
pub mod queued;
pub mod relay;
pub mod request;
pub mod responses_compat;
pub mod responses_index;
pub mod routes;
pub mod sse_parse;
pub mod stored;
pub mod upstream;

pub use op::Op;
