//! omniroute-core: the pure heart of omniroute. No tokio, no network.
//!
//! - [`event`]: the event schema (rkyv), the contract every other part reads.
//! - [`record`]: the stored record layout (envelope + event) and the blake3 hash chain.
//! - [`log`]: the append-only redb event log: single writer thread with group commit, readers,
//!   verification and stats.

pub mod event;
pub mod log;
pub mod record;
pub mod sample;
