//! Small conversions from archived (zero-copy) event fields to the owned values the read models
//! keep, so folds read records in place and allocate only for what they store.

use omniroute_core::event::{
    ArchivedCircuitState, ArchivedCost, CircuitState, Cost, ErrorClass, Tokens,
};

pub fn cost(c: &ArchivedCost) -> Cost {
    match c {
        ArchivedCost::Unpriced => Cost::Unpriced,
        ArchivedCost::Micros(m) => Cost::Micros(m.to_native()),
    }
}

pub fn add_tokens(into: &mut Tokens, t: &Tokens) {
    into.input += t.input;
    into.cached_read += t.cached_read;
    into.cache_write += t.cache_write;
    into.reasoning += t.reasoning;
    into.output += t.output;
}

pub fn total_tokens(t: &Tokens) -> u64 {
    t.input + t.cached_read + t.cache_write + t.reasoning + t.output
}

/// The snake_case name of an error class, as in JSON.
pub fn class_name(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Timeout => "timeout",
        ErrorClass::RateLimited => "rate_limited",
        ErrorClass::QuotaExhausted => "quota_exhausted",
        ErrorClass::Overloaded => "overloaded",
        ErrorClass::ServerError => "server_error",
        ErrorClass::ContextOverflow => "context_overflow",
        ErrorClass::Auth => "auth",
        ErrorClass::BadRequest => "bad_request",
        ErrorClass::Network => "network",
        ErrorClass::StreamCut => "stream_cut",
    }
}

pub fn circuit(c: &ArchivedCircuitState) -> CircuitState {
    match c {
        ArchivedCircuitState::Closed => CircuitState::Closed,
        ArchivedCircuitState::Open => CircuitState::Open,
        ArchivedCircuitState::HalfOpen => CircuitState::HalfOpen,
    }
}

/// Adds one to a named counter, allocating the name only the first time it is seen.
pub fn bump(map: &mut std::collections::BTreeMap<String, u64>, name: &str) {
    match map.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            map.insert(name.to_string(), 1);
        }
    }
}

/// Runs `f` on the entry for `name`, allocating the name only the first time it is seen.
pub fn with<V: Default>(
    map: &mut std::collections::BTreeMap<String, V>,
    name: &str,
    f: impl FnOnce(&mut V),
) {
    match map.get_mut(name) {
        Some(v) => f(v),
        None => f(map.entry(name.to_string()).or_default()),
    }
}
