//! What a command answers when it fails: a sentence the window shows as is, and what to do.

use serde::Serialize;

use crate::client::ClientError;

/// The code of the failure "no model server runs on this computer".
pub const NO_MODEL_SERVER: &str = "NO_MODEL_SERVER";

/// A failure a command reports: a sentence the window shows as is, and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The hub's error code, when the hub refused (the window tells a locked room by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl AppError {
    pub fn new(message: impl Into<String>) -> AppError {
        AppError { message: message.into(), hint: None, code: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> AppError {
        self.hint = Some(hint.into());
        self
    }

    /// A hub client's failure in the words the window uses. `code` is the room it was about.
    pub(super) fn with_code(mut self, code: &str) -> AppError {
        self.code = Some(code.to_string());
        self
    }

    pub fn from_client(error: &ClientError, code: Option<&str>) -> AppError {
        match error {
            ClientError::Unreachable { url, .. } => AppError::new(format!("The hub at {url} isn't answering."))
                .hint("Check that it is still running and that this computer is on the same network."),
            ClientError::Api { code: api_code, message, hint, .. } => match api_code.as_str() {
                "ROOM_NOT_FOUND" => AppError::new(match code {
                    Some(code) => format!("Room {code} isn't on this hub — check the code."),
                    None => "That room isn't on this hub — check the code.".into(),
                })
                .hint("Room codes are 6 letters, digits, - or _, like K7QX2M. The room may also have been deleted."),
                "INVALID_PASSWORD" => AppError::new("Wrong password.").hint("Ask the room's host for the password."),
                "INVALID_HOST_TOKEN" | "HOST_TOKEN_REQUIRED" => {
                    AppError::new("Only the room's host can delete it.").hint("This app doesn't hold its host token.")
                }
                _ => AppError { message: sentence(message), hint: hint.clone(), code: None },
            }
            .with_code(api_code),
            ClientError::InvalidInput { .. } => {
                AppError::new("That isn't a room code.").hint("Room codes are 6 letters, digits, - or _, like K7QX2M.")
            }
            ClientError::InvalidUrl { url, .. } => AppError::new(format!("{url} isn't a hub address."))
                .hint("Use an address like http://192.168.1.20:3000."),
            ClientError::Decode { url, .. } => AppError::new(format!("{url} doesn't answer like a Gambi hub."))
                .hint("Check the hub's address and port."),
        }
    }
}

/// Capitalised and ending with a full stop, whatever the source wrote.
pub(super) fn sentence(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return "Something went wrong.".into(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}
