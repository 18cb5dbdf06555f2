//! What the engine rebuilds from the log at start-up, in one pass: API keys, and the request
//! flow's state (Health and budget guards) as the fold of `omniroute_core::flow::fold`, resumed
//! from the newest state checkpoint when there is one. Also the last recorded config versions,
//! from which start-up carries runtime changes over.

use std::sync::Arc;

use omniroute_core::config::Config;
use omniroute_core::event::{ArchivedEvent, Hash32};
use omniroute_core::flow::fold::Folder;
use omniroute_core::flow::{State, StateSnapshot};
use omniroute_core::log::{LogError, Reader};
use serde::{Deserialize, Serialize};

use super::keys::KeyEntry;

/// Name of the flow state's checkpoint in the log's `checkpoints` table.
pub const STATE_CHECKPOINT: &str = "flow-state";

/// The flow state as of the record at `seq`, under config `config_version`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateCheckpoint {
    pub seq: u64,
    pub config_version: Hash32,
    pub state: StateSnapshot,
}

#[derive(Default)]
pub struct Restored {
    pub keys: Vec<KeyEntry>,
    /// The folded flow state and the config it follows (`None` for a log with no stored config:
    /// empty, or written before configs were stored).
    pub state: Option<(State, Arc<Config>)>,
    /// Budget guards of a log with no stored config (schema 1): they need none.
    pub budgets: omniroute_core::flow::Budgets,
    /// The last recorded effective config version, and the config file's version it was layered
    /// on (`None` for v1 records, which did not record it).
    pub last_config: Option<(Hash32, Option<Hash32>)>,
    /// Seq the fold resumed after (0: from the start).
    pub resumed_at: u64,
    /// Time of the last record (0 for an empty log): the flow's clock starts no earlier.
    pub last_ts_ms: u64,
}

/// Rebuilds keys only (`GET /api/keys`, `keys list`).
pub fn keys(reader: &Reader) -> Result<Vec<KeyEntry>, LogError> {
    let mut keys = Vec::new();
    for item in reader.range(..)? {
        let stored = item?;
        key_event(&mut keys, stored.record()?.event);
    }
    Ok(keys)
}

fn key_event(keys: &mut Vec<KeyEntry>, e: &ArchivedEvent) {
    match e {
        ArchivedEvent::KeyCreated(k) => keys.push(KeyEntry {
            id: k.key_id.get(),
            name: k.name.to_string(),
            scopes: k.scopes.iter().map(|s| s.to_string()).collect(),
            revoked: false,
        }),
        ArchivedEvent::KeyRevoked(k) => {
            let id = k.key_id.get();
            for e in keys.iter_mut().filter(|e| e.id == id) {
                e.revoked = true;
            }
        }
        _ => {}
    }
}

fn checkpoint(reader: &Reader, last: u64) -> Result<Option<(Folder, u64)>, LogError> {
    let Some(bytes) = reader.checkpoint(STATE_CHECKPOINT)? else {
        return Ok(None);
    };
    // A checkpoint that does not decode or lies beyond the log (a salvaged prefix) is ignored:
    // folding from the start gives the same state, only slower.
    let Ok(c) = serde_json::from_slice::<StateCheckpoint>(&bytes) else {
        return Ok(None);
    };
    if c.seq > last {
        return Ok(None);
    }
    Ok(Folder::resume(c.state, c.config_version, reader)?.map(|f| (f, c.seq)))
}

pub fn restore(reader: &Reader) -> Result<Restored, LogError> {
    let mut out = Restored::default();
    let last = reader.last_seq()?;
    let (mut folder, from) = checkpoint(reader, last)?.unwrap_or((Folder::new(false), 0));
    out.resumed_at = from;
    for item in reader.range(..)? {
        let stored = item?;
        let rec = stored.record()?;
        key_event(&mut out.keys, rec.event);
        out.last_ts_ms = out.last_ts_ms.max(rec.ts_ms);
        match rec.event {
            ArchivedEvent::ConfigChanged(c) => {
                out.last_config = Some((c.config_version.get(), None))
            }
            ArchivedEvent::ConfigChangedV2(c) => {
                out.last_config = Some((c.config_version.get(), Some(c.file_version.get())));
            }
            _ => {}
        }
        if rec.seq > from {
            folder.apply(&rec, reader)?;
        }
    }
    out.budgets = folder.orphan_budgets().clone();
    let (state, config) = folder.into_parts();
    out.state = state.zip(config);
    Ok(out)
}
