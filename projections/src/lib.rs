//! omniroute's read models (DESIGN.md section 5). Each is a fold over the event log: `sessions`,
//! `cost`, `providers`, `combos` and `audit`, folded together by [`Projections`] because they share
//! one piece of per-request context (a request's session, key and combo are recorded once, at its
//! start, and needed again by its later events). `explain` is not a fold: it reads one request's
//! events through `request_index`.
//!
//! The invariant, guarded by a property test: folding incrementally, with checkpoints written and
//! restored at any points, gives exactly the state of one fold from seq 1.

pub mod arch;
pub mod audit;
pub mod combos;
pub mod context;
pub mod cost;
pub mod explain;
pub mod hist;
pub mod providers;
pub mod runner;
pub mod sessions;

use omniroute_core::event::ArchivedEvent;
use omniroute_core::log::{LogError, Reader};
use serde::{Deserialize, Serialize};

pub use context::Open;

/// The read models that can be rebuilt by name.
pub const NAMES: [&str; 5] = ["sessions", "cost", "providers", "combos", "audit"];

/// Name of the checkpoint (in the log's `checkpoints` table) holding the whole set.
pub const CHECKPOINT: &str = "projections";

/// Bumped whenever a read model's state changes shape; an older checkpoint is then ignored and the
/// set is refolded from seq 1.
pub const STATE_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "unknown projection {0:?}; the projections are: sessions, cost, providers, combos, audit"
    )]
    UnknownName(String),
}

/// One event as a read model sees it: where it sits in the log, and the context of its request.
pub struct Rec<'a> {
    pub seq: u64,
    pub ts_ms: u64,
    pub event: &'a ArchivedEvent,
    /// The request this event belongs to, while it is open (from `RequestReceived` up to and
    /// including its `RequestCompleted`).
    pub open: Option<&'a Open>,
}

/// Every read model, folded together, and the seq they are valid at.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct Projections {
    /// The last seq folded in (0: nothing yet).
    pub seq: u64,
    pub context: context::Context,
    pub sessions: sessions::Sessions,
    pub cost: cost::CostModel,
    pub providers: providers::Providers,
    pub combos: combos::Combos,
    pub audit: audit::Audit,
}

/// Which read models a fold updates (the context is always updated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mask(u8);

impl Mask {
    pub const ALL: Mask = Mask(0b11111);

    /// The mask of one read model, by its name in [`NAMES`].
    pub fn named(name: &str) -> Result<Mask, Error> {
        NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Mask(1 << i))
            .ok_or_else(|| Error::UnknownName(name.to_string()))
    }

    fn has(self, i: u8) -> bool {
        self.0 & (1 << i) != 0
    }
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    state: Projections,
}

impl Projections {
    /// Folds one record in. Records must come in seq order, each exactly once.
    pub fn apply(&mut self, seq: u64, ts_ms: u64, event: &ArchivedEvent) {
        self.apply_masked(Mask::ALL, seq, ts_ms, event);
    }

    /// Folds one record into the context and the read models in `mask`.
    pub fn apply_masked(&mut self, mask: Mask, seq: u64, ts_ms: u64, event: &ArchivedEvent) {
        let closing = self.context.before(event);
        let rec = Rec {
            seq,
            ts_ms,
            event,
            open: self.context.open_of(event),
        };
        if mask.has(0) {
            self.sessions.apply(&rec);
        }
        if mask.has(1) {
            self.cost.apply(&rec);
        }
        if mask.has(2) {
            self.providers.apply(&rec);
        }
        if mask.has(3) {
            self.combos.apply(&rec);
        }
        if mask.has(4) {
            self.audit.apply(&rec);
        }
        if let Some(id) = closing {
            self.context.close(id);
        }
        self.seq = seq;
    }

    /// Folds every record after `self.seq` up to the reader's head; calls `progress` with the seq
    /// reached every 64k records. Returns the number of records folded.
    pub fn catch_up(
        &mut self,
        reader: &Reader,
        mask: Mask,
        progress: impl FnMut(u64),
    ) -> Result<u64, Error> {
        self.fold(reader, self.seq + 1..=u64::MAX, mask, progress)
    }

    fn fold(
        &mut self,
        reader: &Reader,
        range: std::ops::RangeInclusive<u64>,
        mask: Mask,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, Error> {
        let mut n = 0u64;
        for item in reader.range(range)? {
            let stored = item?;
            let rec = stored.record()?;
            self.apply_masked(mask, rec.seq, rec.ts_ms, rec.event);
            n += 1;
            if n.is_multiple_of(65_536) {
                progress(rec.seq);
            }
        }
        Ok(n)
    }

    /// The checkpoint bytes of this state.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct CheckpointRef<'a> {
            version: u32,
            state: &'a Projections,
        }
        serde_json::to_vec(&CheckpointRef {
            version: STATE_VERSION,
            state: self,
        })
        .unwrap_or_default()
    }

    /// A state from checkpoint bytes; `None` when they are unreadable or of another version (the
    /// caller then refolds from seq 1, which gives the same state, only slower).
    pub fn decode(bytes: &[u8]) -> Option<Projections> {
        serde_json::from_slice::<Checkpoint>(bytes)
            .ok()
            .filter(|c| c.version == STATE_VERSION)
            .map(|c| c.state)
    }

    /// The state of the reader's checkpoint; empty when there is none usable (unreadable, of
    /// another version, or ahead of the log's head).
    pub fn restore(reader: &Reader) -> Result<Projections, Error> {
        let head = reader.head()?.seq;
        Ok(reader
            .checkpoint(CHECKPOINT)?
            .and_then(|b| Projections::decode(&b))
            .filter(|p| p.seq <= head)
            .unwrap_or_default())
    }

    /// The state restored from the reader's checkpoint (or empty), caught up to the reader's head.
    pub fn load(reader: &Reader) -> Result<Projections, Error> {
        let mut p = Projections::restore(reader)?;
        p.catch_up(reader, Mask::ALL, |_| {})?;
        Ok(p)
    }

    /// Resets the read models in `mask` and refolds them (and only them) from seq 1 up to the
    /// current seq, leaving the others as they are.
    pub fn rebuild(
        &mut self,
        reader: &Reader,
        mask: Mask,
        progress: impl FnMut(u64),
    ) -> Result<(), Error> {
        let mut fresh = Projections::default();
        if self.seq > 0 {
            fresh.fold(reader, 1..=self.seq, mask, progress)?;
        }
        if mask.has(0) {
            self.sessions = fresh.sessions;
        }
        if mask.has(1) {
            self.cost = fresh.cost;
        }
        if mask.has(2) {
            self.providers = fresh.providers;
        }
        if mask.has(3) {
            self.combos = fresh.combos;
        }
        if mask.has(4) {
            self.audit = fresh.audit;
        }
        self.context = fresh.context;
        Ok(())
    }
}

/// Micro-dollars as dollars, to the micro-dollar (`$0.000345`).
pub fn usd(micros: u64) -> String {
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[cfg(test)]
mod tests;
