//! What of an upstream's error text reaches the log (DESIGN.md section 8). An upstream's error
//! message can quote the prompt ("... this message: <the user's text>"), so unless
//! `log.store_bodies` is on it is never stored as text: `AttemptFinished` and `RequestCompleted`
//! keep its kind (the upstream's type/code), the HTTP status and a keyed blake3 hash of the text.
//! The hash lets an operator who holds the installation's audit key (`audit.key`) check whether
//! a given text was the error, without the log alone revealing it or allowing guesses to be
//! tested. Messages in the gateway's own words (timeouts, "stream ended before any data") are
//! stored as they are: they say what went wrong and contain nothing from outside.

use crate::providers::Failure;

/// Longest upstream text kept when bodies are stored (as before this module).
const KEPT: usize = 200;
/// Hex digits of the keyed hash kept (128 bits: enough to match a text, short in `explain`).
const HASH_HEX: usize = 32;

/// The message of `f` as it may be stored: the text itself when it is the gateway's own or when
/// `store_bodies` is on, otherwise what kind of error it was and the text's keyed hash.
pub fn stored_message(f: &Failure, store_bodies: bool, key: &[u8; 32]) -> String {
    match &f.upstream_kind {
        Some(kind) if !store_bodies => withheld(kind, f.status, &f.message, key),
        _ => f.message.chars().take(KEPT).collect(),
    }
}

/// The keyed blake3 of `text`, as stored in its place: hex, the first 128 bits.
pub fn digest(key: &[u8; 32], text: &str) -> String {
    let hash = blake3::keyed_hash(key, text.as_bytes()).to_hex();
    hash.get(..HASH_HEX).unwrap_or_default().to_string()
}

fn withheld(kind: &str, status: Option<u16>, text: &str, key: &[u8; 32]) -> String {
    let hash = digest(key, text);
    let mut out = String::from("upstream error");
    if !kind.is_empty() {
        out.push(' ');
        out.push_str(kind);
    }
    if let Some(s) = status {
        out.push_str(&format!(" (HTTP {s})"));
    }
    out.push_str(&format!(
        "; text not stored (log.store_bodies = false), keyed blake3 {hash}"
    ));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use omniroute_core::event::ErrorClass;
    use serde_json::json;

    use super::*;
    use crate::providers::http_failure;

    const KEY: [u8; 32] = [7; 32];

    fn quoted() -> Failure {
        let body = json!({ "error": {
            "message": "this prompt is not allowed: my secret plan",
            "type": "invalid_request_error",
            "code": "content_policy_violation" } });
        http_failure(400, None, &body.to_string())
    }

    #[test]
    fn privacy_upstream_text_is_withheld_but_its_kind_kept() {
        let m = stored_message(&quoted(), false, &KEY);
        assert!(!m.contains("secret"), "{m}");
        assert!(
            m.starts_with(
                "upstream error invalid_request_error/content_policy_violation (HTTP 400)"
            ),
            "{m}"
        );
        // The hash is keyed: another installation's key gives another hash.
        assert_ne!(m, stored_message(&quoted(), false, &[8; 32]));
        assert_eq!(m, stored_message(&quoted(), false, &KEY));
    }

    #[test]
    fn privacy_text_is_kept_with_store_bodies_and_for_the_gateways_own_words() {
        assert!(stored_message(&quoted(), true, &KEY).contains("my secret plan"));
        let own = Failure::new(ErrorClass::Timeout, None, "no response within the timeout");
        assert_eq!(
            stored_message(&own, false, &KEY),
            "no response within the timeout"
        );
    }

    #[test]
    fn privacy_a_kind_that_is_not_an_identifier_is_dropped() {
        let body = json!({ "error": {
            "message": "x", "type": "quote: my secret plan", "code": 42 } });
        let m = stored_message(&http_failure(400, None, &body.to_string()), false, &KEY);
        assert!(m.starts_with("upstream error 42 (HTTP 400);"), "{m}");
        let plain = http_failure(502, None, "<html>bad gateway: my secret plan</html>");
        let m = stored_message(&plain, false, &KEY);
        assert!(m.starts_with("upstream error (HTTP 502);"), "{m}");
        assert!(!m.contains("secret"), "{m}");
    }
}
