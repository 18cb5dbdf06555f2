//! API keys. A key is shown once when created; only its blake3 hash is ever stored (as a
//! `KeyCreated` event). The gateway's key set is rebuilt from the log at start-up (`restore`), and
//! changed in place when a key is created or revoked through the running server.

use std::sync::RwLock;

use omniroute_core::event::Hash32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: Hash32,
    pub name: String,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

/// Equality that takes the same time wherever the first difference is.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether two secrets are equal, in time that does not depend on where they differ (compared
/// as hashes).
pub fn same_secret(a: &str, b: &str) -> bool {
    ct_eq(&Hash32::of(a.as_bytes()).0, &Hash32::of(b.as_bytes()).0)
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

    /// Whether a key was ever created (revoked ones count: revoking the last key must not
    /// reopen anonymous loopback access that creating keys closed).
    pub fn any(&self) -> bool {
        self.keys.read().map(|k| !k.is_empty()).unwrap_or(true)
    }

    /// Every key, revoked ones included.
    pub fn all(&self) -> Vec<KeyEntry> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn add(&self, k: KeyEntry) {
        if let Ok(mut keys) = self.keys.write() {
            keys.push(k);
        }
    }

    /// Marks the key revoked: it stops working on the next request.
    pub fn revoke(&self, id: &Hash32) {
        if let Ok(mut keys) = self.keys.write() {
            for k in keys.iter_mut().filter(|k| k.id == *id) {
                k.revoked = true;
            }
        }
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
