//! Replay: recorded traffic rerun under another routing plan, without calling any provider
//! (DESIGN.md section 6). `omniroute replay` and `POST /api/replay` call [`replay`].
//!
//! Each recorded request goes through the same core request flow the gateway runs
//! (`omniroute_core::flow`: budget verdict, `decide`, retry and fallback steps) against a
//! simulated Health and budget state that is the same fold, fed with simulated outcomes, in a
//! discrete-event simulation ordered by (time, recorded order). An attempt's outcome is exact
//! when the recording attempted that target for that request, and otherwise sampled with a
//! seeded RNG from that target's recorded outcomes nearest in time. The log is streamed: memory
//! holds the requests in flight, not the log.
//!
//! No HTTP client and no network anywhere in this crate's dependency tree (a test checks).

mod estimate;
pub mod html;
pub mod plan;
pub mod render;
pub mod report;
mod sim;
mod source;
mod stats;

use omniroute_core::log::{LogError, Reader};

pub use plan::{Filter, Plan, ReplayRequest};
pub use report::ReplayReport;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request is wrong (unknown strategy, combo or model, bad time, bad plan config): the
    /// caller's to fix (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Replays the log `reader` reads under `request`'s plan. `progress(done, total)` is called with
/// log positions (records) as the runs advance.
pub fn replay(
    reader: &Reader,
    request: &ReplayRequest,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, ReplayError> {
    let (plan, filter) = request.resolve()?;
    sim::run(reader, &plan, &filter, progress)
}

#[cfg(test)]
mod tests;
