//! The stored record: a fixed little-endian envelope followed by the rkyv bytes of one [`Event`].
//!
//! ```text
//! offset  size  field
//!      0     2  schema      u16 LE
//!      2     8  ts_ms       u64 LE (unix milliseconds)
//!     10    32  prev_hash   hash of the record at seq - 1 (zeros for seq 1)
//!     42    32  hash        blake3(prev_hash || seq LE || ts_ms LE || schema LE || event bytes)
//!     74     …  event       rkyv archive of `Event` (unaligned format, root at the end)
//! ```
//!
//! The sequence number is the table key, not part of the value, but it is part of the hash. The hash
//! covers the exact stored bytes, never a re-encoding, so any flipped byte shows up in `log verify`.

use crate::event::{ArchivedEvent, Event, SCHEMA, SCHEMA_V1};

pub const HEADER_LEN: usize = 74;
const TS: usize = 2;
const PREV: usize = 10;
const HASH: usize = 42;

/// Why a stored value is not a readable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its {HEADER_LEN}-byte envelope")]
    TooShort(usize),
    #[error("record has schema version {0}, which this build cannot read (it reads 1 to {SCHEMA})")]
    UnknownSchema(u16),
    #[error("event bytes fail validation: {0}")]
    Invalid(String),
    #[error("hash mismatch: the record's bytes were altered")]
    HashMismatch,
}

/// A validated, zero-copy view of one stored record.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub ts_ms: u64,
    pub schema: u16,
    pub prev_hash: &'a [u8; 32],
    pub hash: &'a [u8; 32],
    pub event: &'a ArchivedEvent,
    /// The stored event bytes (after the envelope).
    pub event_bytes: &'a [u8],
}

/// The envelope fields of a stored record, read without validating the event.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub schema: u16,
    pub ts_ms: u64,
    pub prev_hash: &'a [u8; 32],
    pub hash: &'a [u8; 32],
    pub event_bytes: &'a [u8],
}

fn array32(bytes: &[u8], at: usize) -> &[u8; 32] {
    // The caller checked `bytes.len() >= HEADER_LEN`, so this conversion cannot fail; the fallback
    // keeps the function total without a panic path.
    bytes
        .get(at..at + 32)
        .and_then(|s| s.try_into().ok())
        .unwrap_or(&[0; 32])
}

/// Splits a stored value into its envelope fields.
pub fn envelope(bytes: &[u8]) -> Result<Envelope<'_>, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::TooShort(bytes.len()));
    }
    let schema = u16::from_le_bytes([bytes[0], bytes[1]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&bytes[TS..TS + 8]);
    Ok(Envelope {
        schema,
        ts_ms: u64::from_le_bytes(ts),
        prev_hash: array32(bytes, PREV),
        hash: array32(bytes, HASH),
        event_bytes: &bytes[HEADER_LEN..],
    })
}

/// Validates a stored value and returns a zero-copy view of it.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<RecordRef<'_>, RecordError> {
    let env = envelope(bytes)?;
    if !(SCHEMA_V1..=SCHEMA).contains(&env.schema) {
        return Err(RecordError::UnknownSchema(env.schema));
    }
    let event = rkyv::access::<ArchivedEvent, rkyv::rancor::Error>(env.event_bytes)
        .map_err(|e| RecordError::Invalid(e.to_string()))?;
    Ok(RecordRef {
        seq,
        ts_ms: env.ts_ms,
        schema: env.schema,
        prev_hash: env.prev_hash,
        hash: env.hash,
        event,
        event_bytes: env.event_bytes,
    })
}

/// The chain hash of a record.
pub fn chain_hash(
    prev: &[u8; 32],
    seq: u64,
    ts_ms: u64,
    schema: u16,
    event_bytes: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(&seq.to_le_bytes());
    h.update(&ts_ms.to_le_bytes());
    h.update(&schema.to_le_bytes());
    h.update(event_bytes);
    *h.finalize().as_bytes()
}

/// Checks that a stored value's own hash covers its bytes (it says nothing about the link to the
/// previous record: that is `log verify`'s job).
pub fn check_hash(seq: u64, bytes: &[u8]) -> Result<(), RecordError> {
    let env = envelope(bytes)?;
    if &recompute(seq, &env) == env.hash {
        Ok(())
    } else {
        Err(RecordError::HashMismatch)
    }
}

/// Recomputes the hash of a stored value from its own bytes.
pub fn recompute(seq: u64, env: &Envelope<'_>) -> [u8; 32] {
    chain_hash(env.prev_hash, seq, env.ts_ms, env.schema, env.event_bytes)
}

/// Encodes an event into a new record buffer whose chain fields are still zero; [`seal`] fills them
/// once the writer knows the sequence number. Encoding happens on the producer's thread.
pub fn encode(event: &Event, ts_ms: u64) -> Result<Vec<u8>, rkyv::rancor::Error> {
    let mut buf = Vec::with_capacity(HEADER_LEN + 256);
    buf.extend_from_slice(&SCHEMA.to_le_bytes());
    buf.extend_from_slice(&ts_ms.to_le_bytes());
    buf.resize(HEADER_LEN, 0);
    // rkyv positions are relative, and the unaligned format never pads, so the envelope prefix
    // does not disturb the archive that follows it.
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(event, buf)
}

/// Sets the time of an encoded record whose chain fields are still zero (before [`seal`]).
pub fn stamp(buf: &mut [u8], ts_ms: u64) {
    if let Some(t) = buf.get_mut(TS..TS + 8) {
        t.copy_from_slice(&ts_ms.to_le_bytes());
    }
}

/// Fills `prev_hash` and `hash` of an encoded record for position `seq`; returns the hash.
pub fn seal(buf: &mut [u8], seq: u64, prev: &[u8; 32]) -> Result<[u8; 32], RecordError> {
    let env = envelope(buf)?;
    let hash = chain_hash(prev, seq, env.ts_ms, env.schema, env.event_bytes);
    buf[PREV..PREV + 32].copy_from_slice(prev);
    buf[HASH..HASH + 32].copy_from_slice(&hash);
    Ok(hash)
}
