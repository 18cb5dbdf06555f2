//! Whole-log checks: `verify` recomputes the hash chain over the exact stored bytes and reports the
//! first break; `stats` summarises size and contents.

use super::{LogError, Reader};
use crate::event::{EVENT_KINDS, Hash32};
use crate::record;

/// A verified log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub head_seq: u64,
    pub head_hash: Hash32,
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: String,
}

/// Size and contents of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    /// Sum of stored record lengths (envelope + event bytes).
    pub record_bytes: u64,
    /// Sum of the rkyv event bytes alone.
    pub event_bytes: u64,
    /// Size of the redb file.
    pub file_bytes: u64,
    pub head_seq: u64,
    pub head_hash: Hash32,
    /// (kind, count), in schema order; kinds with no events are included with 0.
    pub per_kind: Vec<(&'static str, u64)>,
    /// Records that failed validation (counted, not fatal, so stats works on a damaged log).
    pub invalid: u64,
}

impl Reader {
    /// Recomputes the chain from seq 1. `Ok(Err(break))` when the log is readable but not intact.
    pub fn verify(&self) -> Result<Result<VerifyReport, ChainBreak>, LogError> {
        let mut expected = 1u64;
        let mut prev = [0u8; 32];
        let brk = |seq, reason: String| Ok(Err(ChainBreak { seq, reason }));
        for item in self.range(..)? {
            let stored = item?;
            let seq = stored.seq;
            if seq != expected {
                return brk(
                    expected,
                    format!("missing record (the next stored record is seq {seq})"),
                );
            }
            let env = match record::envelope(stored.bytes()) {
                Ok(env) => env,
                Err(e) => return brk(seq, e.to_string()),
            };
            if env.prev_hash != &prev {
                return brk(
                    seq,
                    "prev_hash does not match the hash of the previous record".into(),
                );
            }
            if &record::recompute(seq, &env) != env.hash {
                return brk(seq, "hash mismatch: the record's bytes were altered".into());
            }
            if let Err(e) = stored.record() {
                return brk(seq, e.to_string());
            }
            prev = *env.hash;
            expected += 1;
        }
        let last = expected - 1;
        let head = self.head()?;
        if head.seq != last {
            return brk(
                last + 1,
                format!(
                    "the log ends at seq {last} but its head record says {}: records were removed",
                    head.seq
                ),
            );
        }
        if head.hash.0 != prev {
            return brk(
                last,
                "the head record's hash differs from the last record's".into(),
            );
        }
        Ok(Ok(VerifyReport {
            events: last,
            head_seq: head.seq,
            head_hash: head.hash,
        }))
    }

    /// Counts events per kind and bytes; `file_bytes` is taken from the file system.
    pub fn stats(&self) -> Result<Stats, LogError> {
        let mut per_kind = [0u64; EVENT_KINDS.len()];
        let (mut events, mut record_bytes, mut event_bytes, mut invalid) = (0, 0, 0, 0);
        for item in self.range(..)? {
            let stored = item?;
            events += 1;
            record_bytes += stored.bytes().len() as u64;
            match stored.record() {
                Ok(r) => {
                    event_bytes += r.event_bytes.len() as u64;
                    if let Some(c) = per_kind.get_mut(r.event.kind_index()) {
                        *c += 1;
                    }
                }
                Err(_) => invalid += 1,
            }
        }
        let file_bytes = std::fs::metadata(self.path()).map(|m| m.len()).unwrap_or(0);
        let head = self.head()?;
        Ok(Stats {
            events,
            record_bytes,
            event_bytes,
            file_bytes,
            head_seq: head.seq,
            head_hash: head.hash,
            per_kind: EVENT_KINDS.iter().copied().zip(per_kind).collect(),
            invalid,
        })
    }
}
