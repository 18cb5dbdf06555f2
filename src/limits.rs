//! Hard limits on what comes from outside (DESIGN.md section 8), in one place: the longest model
//! name, session id, header value and message list a request may carry, and the longest text
//! from outside that is ever stored in the event log. The log is append-only and never shrinks,
//! so every string that reaches it must be small: a value over a limit is refused with a 400
//! before the request is recorded, and text that is only described (error messages quoting
//! upstream or client text) is cut to [`MAX_STORED_TEXT_BYTES`].
//!
//! The socket-level limits (header and body read timeouts, concurrent connections) are in the
//! config (`[server]`), since operators tune them; these are not, since no real client needs more.

use crate::error::ApiError;

/// Longest `model` a request may name, in bytes. Model and combo ids are short (the longest
/// OpenRouter ids are under 100 bytes); the name is stored in `RequestReceived`, so a longer
/// one is refused before anything is recorded.
pub const MAX_MODEL_BYTES: usize = 256;

/// Longest session id, in characters (`x-omniroute-session`, the `{id}` of the session routes,
/// the MCP `sessionId` arguments).
pub const MAX_SESSION_ID_CHARS: usize = 128;

/// Longest value of an `x-omniroute-*` request header, in bytes (the longest valid one, a
/// session id, is 128 bytes of visible ASCII).
pub const MAX_HEADER_VALUE_BYTES: usize = 256;

/// Most messages in one chat request. Real conversations are far shorter; the cap bounds the
/// work of validating and estimating a request whose body is within `server.max_body_bytes`.
pub const MAX_MESSAGES: usize = 10_000;

/// Longest description text stored in an event (a request's final error message), in bytes.
/// Enough for every message omniroute writes; the rest of a longer one (upstream text) is cut.
pub const MAX_STORED_TEXT_BYTES: usize = 1024;

/// The one validator of session ids: 1 to [`MAX_SESSION_ID_CHARS`] characters, none of them a
/// control character (CR, LF, NUL, tab, DEL, ...), so an id is safe to store, print and echo
/// in a header. `field` names where the id came from, for the 400.
pub fn session_id(id: &str, field: &str) -> Result<(), ApiError> {
    let n = id.chars().count();
    if n == 0 || n > MAX_SESSION_ID_CHARS {
        return Err(ApiError::bad(
            format!(
                "{field} must be 1 to {MAX_SESSION_ID_CHARS} characters (got {n}): \
                 printable text such as a ULID or \"user-42/chat-7\""
            ),
            Some(field),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::bad(
            format!(
                "{field} must be printable: no control characters (CR, LF, NUL, tab, ...); \
                 use 1 to {MAX_SESSION_ID_CHARS} printable characters"
            ),
            Some(field),
        ));
    }
    Ok(())
}

/// `text` cut to at most `max` bytes at a character boundary, marked with "..." when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn edge_session_ids_are_printable_and_short() {
        assert!(session_id("user-42/chat-7", "s").is_ok());
        assert!(session_id("é".repeat(128).as_str(), "s").is_ok());
        for bad in [
            String::new(),
            "a".repeat(129),
            "a\r\nb".into(),
            "a\0".into(),
            "a\tb".into(),
            "\u{7f}".into(),
        ] {
            match session_id(&bad, "sessionId") {
                Err(ApiError::BadRequest { param, message }) => {
                    assert_eq!(param.as_deref(), Some("sessionId"));
                    assert!(message.contains("128"), "{message}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn edge_clip_keeps_char_boundaries() {
        assert_eq!(clip("short", 10), "short");
        let c = clip(&"é".repeat(100), 10);
        assert!(c.len() <= 10 && c.ends_with("..."), "{c}");
        assert_eq!(clip(&"x".repeat(5000), MAX_STORED_TEXT_BYTES).len(), 1024);
    }
}
