//! Audit records of tool calls (DESIGN.md section 8): every MCP tool call, allowed or denied, is
//! a `ToolCalled` event with the caller's key id and scopes, a keyed blake3 hash of the arguments
//! and a redacted preview of them (never message contents), its duration, and the start of its
//! output. The hash key is a per-installation secret (`audit.key` in the data dir, readable only
//! by its user), so the log alone cannot be used to test guesses of what was asked.

use std::path::Path;
use std::time::Duration;

use omniroute_core::event::{Event, Hash32, ToolCalled};
use serde_json::Value;

use super::auth::Caller;

/// The file in the data dir holding the audit hash key.
pub const AUDIT_KEY_FILE: &str = "audit.key";
/// Longest previews kept, in characters.
const PREVIEW: usize = 200;
/// Argument names whose values are contents (prompts, messages), never previewed.
const CONTENT: [&str; 6] = [
    "messages",
    "content",
    "prompt",
    "testPrompt",
    "input",
    "system",
];

/// The installation's audit key: read from the data dir, or created there (mode 0600) on first
/// use.
pub fn key(dir: &Path) -> Result<[u8; 32], String> {
    let file = dir.join(AUDIT_KEY_FILE);
    let parse = |s: &str| -> Option<[u8; 32]> {
        let s = s.trim();
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    };
    if let Ok(s) = std::fs::read_to_string(&file) {
        return parse(&s).ok_or_else(|| {
            format!(
                "{} is not 64 hex digits; remove it to have a new audit key made (earlier \
                 argument hashes will no longer match new ones)",
                file.display()
            )
        });
    }
    let token = crate::engine::keys::generate()?;
    let key = Hash32::of(token.as_bytes()).0;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    super::write_private(&file, hex.as_bytes())?;
    Ok(key)
}

/// Keeps the shape of the arguments and short values, not contents: strings under content names
/// become `<N chars>`, long strings are cut, arrays under content names become `<N items>`.
pub fn redact(args: &Value) -> Value {
    fn walk(v: &Value, content: bool) -> Value {
        match v {
            Value::String(s) if content => Value::String(format!("<{} chars>", s.chars().count())),
            Value::String(s) if s.chars().count() > 40 => {
                Value::String(format!("{}...", s.chars().take(40).collect::<String>()))
            }
            Value::Array(a) if content => Value::String(format!("<{} items>", a.len())),
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, false)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), walk(x, content || CONTENT.contains(&k.as_str()))))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    walk(args, false)
}

fn cut(s: &str) -> String {
    s.chars().take(PREVIEW).collect()
}

/// The record of one tool call. `result` is the output (JSON) or the error message.
pub fn tool_called(
    tool: &str,
    caller: &Caller,
    args: &Value,
    key: &[u8; 32],
    duration: Duration,
    result: Result<&Value, &str>,
) -> Event {
    // serde_json writes object keys in order (a BTreeMap without `preserve_order`), so equal
    // arguments hash equally.
    let bytes = serde_json::to_vec(args).unwrap_or_default();
    let args_hash = Hash32(*blake3::keyed_hash(key, &bytes).as_bytes());
    let (ok, error, output) = match result {
        Ok(v) => (true, None, v.to_string()),
        Err(e) => (false, Some(cut(e)), String::new()),
    };
    Event::ToolCalled(Box::new(ToolCalled {
        tool: cut(tool),
        caller_key_id: caller.key,
        scopes: caller.scopes.clone(),
        args_hash,
        args_preview: cut(&redact(args).to_string()),
        duration_us: duration.as_micros() as u64,
        ok,
        error,
        output_preview: cut(&output),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn previews_keep_the_shape_never_the_contents() {
        let args = json!({
            "model": "fast",
            "messages": [{ "role": "user", "content": "my secret prompt" }],
            "testPrompt": "another secret",
            "note": "x".repeat(100),
        });
        let p = redact(&args).to_string();
        assert!(!p.contains("secret"), "{p}");
        assert!(
            p.contains("\"model\":\"fast\"") && p.contains("<1 items>"),
            "{p}"
        );
        assert!(p.contains("<14 chars>") && p.contains("..."), "{p}");
    }

    #[test]
    fn the_hash_is_keyed_and_the_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = key(dir.path()).unwrap();
        assert_eq!(key(dir.path()).unwrap(), k1, "read back, not made again");
        let caller = Caller {
            key: None,
            name: "t".into(),
            scopes: vec!["*".into()],
            loopback: true,
            mcp: true,
        };
        let args = json!({ "requestId": "r1" });
        let hash =
            |k: &[u8; 32]| match tool_called("t", &caller, &args, k, Duration::ZERO, Err("no")) {
                Event::ToolCalled(t) => t.args_hash,
                _ => panic!(),
            };
        assert_eq!(hash(&k1), hash(&k1));
        assert_ne!(hash(&k1), hash(&[7; 32]));
        assert_ne!(hash(&k1), Hash32::of(&serde_json::to_vec(&args).unwrap()));
        std::fs::write(dir.path().join(AUDIT_KEY_FILE), "zz").unwrap();
        assert!(key(dir.path()).unwrap_err().contains("64 hex digits"));
    }
}
