//! The discrete-event simulation (being written).

use omniroute_core::log::Reader;

use crate::report::{PlanSummary, ReplayReport};
use crate::{Filter, Plan, ReplayError};

pub fn run(
    _reader: &Reader,
    plan: &Plan,
    _filter: &Filter,
    _progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, ReplayError> {
    Ok(ReplayReport {
        plan: PlanSummary {
            description: plan.describe(),
            seed: plan.seed,
            runs: plan.runs,
            ..PlanSummary::default()
        },
        ..ReplayReport::default()
    })
}
