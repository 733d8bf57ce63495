//! Which calls the hub may have this participant make on its model server through the tunnel:
//! the inference endpoints a room serves, and nothing else. The model server listens on this
//! machine's loopback, often with a management API beside inference (Ollama's `/api/pull`,
//! `/api/delete`, `/api/create`; LM Studio's model loading); a hub, or anyone who took it over,
//! must not reach those through a share.

/// Whether the hub may ask for `method path` on the model server.
pub fn allowed(method: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        (
            "POST",
            ["v1", "chat", "completions"]
            | ["v1", "responses"]
            | ["v1", "completions"]
            | ["v1", "embeddings"]
            | ["v1", "messages"]
            | ["api", "chat" | "generate" | "embed" | "embeddings"],
        ) => true,
        ("GET" | "DELETE", ["v1", "responses", id]) => plain_id(id),
        ("POST", ["v1", "responses", id, "cancel"]) | ("GET", ["v1", "responses", id, "input_items"]) => plain_id(id),
        _ => false,
    }
}

/// A stored response's id as the hub forwards it: letters, digits and `_ - . :`, never `.`/`..`.
fn plain_id(id: &str) -> bool {
    (1..=200).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn the_room_s_inference_calls_are_allowed() {
        for path in ["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings", "/v1/messages"] {
            assert!(allowed("POST", path), "{path}");
        }
        for path in ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"] {
            assert!(allowed("POST", path), "{path}");
        }
        assert!(allowed("GET", "/v1/responses/resp_abc-1"));
        assert!(allowed("DELETE", "/v1/responses/resp_abc-1"));
        assert!(allowed("POST", "/v1/responses/resp_abc-1/cancel"));
        assert!(allowed("GET", "/v1/responses/resp_abc-1/input_items"));
    }

    #[test]
    fn management_other_methods_and_odd_paths_are_refused() {
        for path in ["/api/pull", "/api/delete", "/api/create", "/api/copy", "/api/push", "/api/blobs/sha256:x"] {
            assert!(!allowed("POST", path), "{path}");
            assert!(!allowed("DELETE", path), "{path}");
        }
        for path in ["/api/v0/models/load", "/v1/models", "/", "", "v1/chat/completions", "//evil/v1/chat/completions"]
        {
            assert!(!allowed("POST", path), "{path:?}");
        }
        assert!(!allowed("GET", "/v1/chat/completions"));
        assert!(!allowed("PUT", "/v1/chat/completions"));
        assert!(!allowed("POST", "/v1/chat/completions/"));
        assert!(!allowed("POST", "/v1/chat/completions?x=1"));
        assert!(!allowed("GET", "/v1/responses/.."));
        assert!(!allowed("GET", "/v1/responses/a/../../api/pull"));
        assert!(!allowed("GET", "/v1/responses/a%2F..%2Fb"));
        assert!(!allowed("POST", "/v1/responses/x/input_items"));
        assert!(!allowed("DELETE", "/v1/responses/x/cancel"));
    }
}
