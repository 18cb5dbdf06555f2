//! omniroute-core: the pure heart of omniroute. No tokio, no network.
//!
//! - [`event`]: the event schema (rkyv), the contract every other part reads.
//! - [`record`]: the stored record layout (envelope + event) and the blake3 hash chain.
//! - [`log`]: the append-only redb event log: single writer thread with group commit, readers,
//!   verification and stats.
//! - [`config`]: `omniroute.toml`, strict parse then validation into the runtime config.
//! - [`router`]: the pure, deterministic router, `Health` (a fold of outcomes) and the error
//!   classification table.
//! - [`pricing`]: prices in integer pico-dollars per token; cost in micro-dollars or unpriced.

pub mod config;
pub mod event;
pub mod flow;
pub mod log;
pub mod pricing;
pub mod record;
pub mod router;
pub mod sample;
pub mod time;
