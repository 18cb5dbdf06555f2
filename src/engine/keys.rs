//! API keys. A key is shown once when created; only its blake3 hash is ever stored (as a
//! `KeyCreated` event). The gateway's key set is rebuilt from the log at start-up.

use std::sync::RwLock;

use omniroute_core::event::{Event, Hash32};
use omniroute_core::log::{LogError, Reader};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: Hash32,
    pub name: String,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

/// Reads every key event of the log, in order.
pub fn load(reader: &Reader) -> Result<Vec<KeyEntry>, LogError> {
    let mut keys: Vec<KeyEntry> = Vec::new();
    for item in reader.range(..)? {
        let stored = item?;
        let rec = stored.record()?;
        match rec.event.kind() {
            "KeyCreated" | "KeyRevoked" => {}
            _ => continue,
        }
        match rec.event.to_owned_event() {
            Ok(Event::KeyCreated(k)) => keys.push(KeyEntry {
                id: k.key_id,
                name: k.name,
                scopes: k.scopes,
                revoked: false,
            }),
            Ok(Event::KeyRevoked(k)) => {
                for e in keys.iter_mut().filter(|e| e.id == k.key_id) {
                    e.revoked = true;
                }
            }
            _ => {}
        }
    }
    Ok(keys)
}

/// Equality that takes the same time wherever the first difference is.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Default)]
pub struct KeyStore {
    keys: RwLock<Vec<KeyEntry>>,
}

impl KeyStore {
    pub fn new(keys: Vec<KeyEntry>) -> Self {
        Self {
            keys: RwLock::new(keys),
        }
    }

    pub fn any_active(&self) -> bool {
        self.keys
            .read()
            .map(|k| k.iter().any(|e| !e.revoked))
            .unwrap_or(true)
    }

    /// The active key matching `token`, compared against every key in constant time.
    pub fn find(&self, token: &str) -> Option<KeyEntry> {
        let hash = Hash32::of(token.as_bytes());
        let keys = self.keys.read().ok()?;
        let mut found = None;
        for e in keys.iter() {
            if ct_eq(&e.id.0, &hash.0) && !e.revoked {
                found = Some(e.clone());
            }
        }
        found
    }
}

/// A new random key: `omr-` and 48 hex digits (192 bits).
pub fn generate() -> Result<String, String> {
    use rand_core::TryRngCore;
    let mut bytes = [0u8; 24];
    rand_core::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(format!(
        "omr-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}
