//! Whole-log checks: `verify` recomputes the hash chain over the exact stored bytes and reports the
//! first break; `stats` summarises size and contents. `verify_from` checks only what follows a
//! point verified before (`serve` at start-up, with the point kept in [`VERIFIED_CHECKPOINT`]).

use super::{Head, LogError, Reader};
use crate::event::{EVENT_KINDS, Hash32};
use crate::record;

/// The checkpoint (in the `checkpoints` table) holding the last point of the chain that was
/// verified: seq (u64 LE) then hash (32 bytes). `serve` verifies from it to the head at start-up
/// and stores the head there once the check passes.
pub const VERIFIED_CHECKPOINT: &str = "log.verified";

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

const PREV_MISMATCH: &str = "prev_hash does not match the hash of the previous record";

/// What one verify thread found in its part of the log.
struct Segment {
    start: u64,
    /// `prev_hash` of the segment's first record, to check against the previous segment.
    first_prev: Option<[u8; 32]>,
    last_hash: Option<[u8; 32]>,
    brk: Option<ChainBreak>,
}

/// Why the record stored at `seq` (where `expected` should be) breaks the chain, if it does.
pub(crate) fn check_record(
    seq: u64,
    expected: u64,
    bytes: &[u8],
    prev: Option<&[u8; 32]>,
) -> Option<String> {
    if seq != expected {
        return Some(format!(
            "missing record (the next stored record is seq {seq})"
        ));
    }
    let env = match record::envelope(bytes) {
        Ok(env) => env,
        Err(e) => return Some(e.to_string()),
    };
    if prev.is_some_and(|p| p != env.prev_hash) {
        return Some(PREV_MISMATCH.into());
    }
    if &record::recompute(seq, &env) != env.hash {
        return Some(record::RecordError::HashMismatch.to_string());
    }
    record::decode(seq, bytes).err().map(|e| e.to_string())
}

/// Size and contents of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    /// Sum of stored record lengths (envelope + event bytes).
    pub record_bytes: u64,
    /// Sum of the rkyv event bytes alone.
    pub event_bytes: u64,
    /// Length of the redb file. redb grows it in doublings and the unused tail is sparse, so this
    /// overstates what the log occupies.
    pub file_bytes: u64,
    /// Bytes the file occupies on disk (allocated blocks); equals `file_bytes` where the platform
    /// does not report blocks.
    pub disk_bytes: u64,
    pub head_seq: u64,
    pub head_hash: Hash32,
    /// (kind, count), in schema order; kinds with no events are included with 0.
    pub per_kind: Vec<(&'static str, u64)>,
    /// Records that failed validation (counted, not fatal, so stats works on a damaged log).
    pub invalid: u64,
}

impl Head {
    /// The bytes of this point as stored in [`VERIFIED_CHECKPOINT`].
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.seq.to_le_bytes().to_vec();
        v.extend_from_slice(&self.hash.0);
        v
    }

    /// A point from [`Head::encode`] bytes; `None` when they are not 40 bytes.
    pub fn decode(bytes: &[u8]) -> Option<Head> {
        let (seq, hash) = bytes.split_first_chunk::<8>()?;
        Some(Head {
            seq: u64::from_le_bytes(*seq),
            hash: Hash32(hash.try_into().ok()?),
        })
    }
}

impl Reader {
    /// Recomputes the chain from seq 1. `Ok(Err(break))` when the log is readable but not intact.
    pub fn verify(&self) -> Result<Result<VerifyReport, ChainBreak>, LogError> {
        self.verify_from(Head {
            seq: 0,
            hash: Hash32::default(),
        })
    }

    /// The point stored in [`VERIFIED_CHECKPOINT`], if there is one and it still describes this
    /// log (its record is present with that hash). A missing, unreadable or stale point is `None`:
    /// verify from seq 1 then.
    pub fn verified_point(&self) -> Result<Option<Head>, LogError> {
        let Some(point) = self
            .checkpoint(VERIFIED_CHECKPOINT)?
            .and_then(|b| Head::decode(&b))
        else {
            return Ok(None);
        };
        let Some(stored) = self.get(point.seq)? else {
            return Ok(None);
        };
        let same = record::envelope(stored.bytes()).is_ok_and(|env| env.hash == &point.hash.0);
        Ok(same.then_some(point))
    }

    /// Recomputes the chain after `from` (a point already verified: the record at `from.seq`
    /// has hash `from.hash`; seq 0 and zeros for the whole log) up to the last record, and checks
    /// the head record in `meta` against it.
    ///
    /// Each record's hash covers its own stored `prev_hash`, so records can be re-hashed
    /// independently: the range is split across the available cores, each segment checks its own
    /// links, and the links between segments are checked after.
    pub fn verify_from(&self, from: Head) -> Result<Result<VerifyReport, ChainBreak>, LogError> {
        let last = self.last_seq()?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8) as u64;
        let start = from.seq + 1;
        let todo = (last + 1).saturating_sub(start);
        let per = todo.div_ceil(threads).max(1);
        let bounds: Vec<(u64, u64)> = (0..threads)
            .map(|i| (start + i * per, (start + (i + 1) * per).min(last + 1)))
            .filter(|(a, b)| a < b)
            .collect();
        let segments: Vec<Result<Segment, LogError>> = std::thread::scope(|s| {
            let handles: Vec<_> = bounds
                .iter()
                .map(|&(a, b)| s.spawn(move || self.check_segment(a, b)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LogError::Corrupt {
                            path: self.path().to_path_buf(),
                            reason: "a verify thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let mut carry = from.hash.0;
        for seg in segments {
            let seg = seg?;
            if let Some(first_prev) = seg.first_prev
                && first_prev != carry
            {
                return Ok(Err(ChainBreak {
                    seq: seg.start,
                    reason: PREV_MISMATCH.into(),
                }));
            }
            if let Some(brk) = seg.brk {
                return Ok(Err(brk));
            }
            carry = seg.last_hash.unwrap_or(carry);
        }
        let head = self.head()?;
        let brk = |seq, reason: String| Ok(Err(ChainBreak { seq, reason }));
        if last < from.seq {
            return brk(
                last + 1,
                format!(
                    "the log ends at seq {last}, before the point verified earlier (seq {}): \
                     records were removed",
                    from.seq
                ),
            );
        }
        if head.seq != last {
            return brk(
                last + 1,
                format!(
                    "the log ends at seq {last} but its head record says {}: records were removed",
                    head.seq
                ),
            );
        }
        if head.hash.0 != carry {
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

    /// Checks records `start..end`: presence, links inside the segment, hashes, validation.
    fn check_segment(&self, start: u64, end: u64) -> Result<Segment, LogError> {
        let mut seg = Segment {
            start,
            first_prev: None,
            last_hash: None,
            brk: None,
        };
        let mut expected = start;
        for item in self.range_with_gaps(start..end)? {
            let stored = item?;
            let (seq, bytes) = (stored.seq, stored.bytes());
            if let Some(reason) = check_record(seq, expected, bytes, seg.last_hash.as_ref()) {
                seg.brk = Some(ChainBreak {
                    seq: expected.min(seq),
                    reason,
                });
                return Ok(seg);
            }
            if let Ok(env) = record::envelope(bytes) {
                if seg.first_prev.is_none() {
                    seg.first_prev = Some(*env.prev_hash);
                }
                seg.last_hash = Some(*env.hash);
            }
            expected += 1;
        }
        if expected != end {
            seg.brk = Some(ChainBreak {
                seq: expected,
                reason: "missing record".into(),
            });
        }
        Ok(seg)
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
        let meta = std::fs::metadata(self.path()).ok();
        let file_bytes = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        #[cfg(unix)]
        let disk_bytes = meta
            .as_ref()
            .map(|m| std::os::unix::fs::MetadataExt::blocks(m) * 512)
            .unwrap_or(file_bytes);
        #[cfg(not(unix))]
        let disk_bytes = file_bytes;
        let head = self.head()?;
        Ok(Stats {
            events,
            record_bytes,
            event_bytes,
            file_bytes,
            disk_bytes,
            head_seq: head.seq,
            head_hash: head.hash,
            per_kind: EVENT_KINDS.iter().copied().zip(per_kind).collect(),
            invalid,
        })
    }
}
