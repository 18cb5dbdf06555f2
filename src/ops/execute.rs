//! Execution operations: real and simulated completions through the engine, and the metrics and
//! recommendations an agent picks a route with. Every answer comes from the real request flow,
//! the configured prices and the log (issue 14): a completion goes through the path
//! `/v1/chat/completions` takes and is read back from its recorded events; a simulation runs the
//! router's own decision on a copy of the live Health; metrics and recommendations read the
//! providers and combos read models.

mod complete;
mod metrics;
mod recommend;
mod simulate;

pub use complete::{
    RouteOut, RouteRequestArgs, RouteRequestOut, TargetTest, TestComboArgs, TestComboOut, UsageOut,
    route_request, test_combo,
};
pub use metrics::{
    MetricsOut, ModelMetricsOut, ProviderMetricsArgs, ProviderMetricsOut, QuantilesOut,
    TransitionOut, provider_metrics,
};
pub use recommend::{
    BestComboArgs, BestComboOut, ComboAssessment, Source, TYPICAL_PROMPT_TOKENS,
    best_combo_for_task,
};
pub use simulate::{ExclusionOut, FactorOut, PlanStep, SimulateArgs, SimulateOut, simulate_route};

use omniroute_core::config::{Capability, Model};
use omniroute_core::event::{CircuitState, Cost};
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

/// A capability a request (or a task) needs: `chat`, `tools` (function calls), `vision` (image
/// inputs), `json` (JSON output) or `reasoning`. (Variants carry no docs of their own, so the
/// schema stays a plain `enum` of the valid values.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    Chat,
    Tools,
    Vision,
    Json,
    Reasoning,
}

impl Need {
    fn capability(self) -> Capability {
        match self {
            Need::Chat => Capability::Chat,
            Need::Tools => Capability::Tools,
            Need::Vision => Capability::Vision,
            Need::Json => Capability::Json,
            Need::Reasoning => Capability::Reasoning,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Need::Chat => "chat",
            Need::Tools => "tools",
            Need::Vision => "vision",
            Need::Json => "json",
            Need::Reasoning => "reasoning",
        }
    }
}

/// USD of `micros` micro-dollars.
fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// A recorded cost in USD; `None` when unpriced.
fn cost_usd(c: &Cost) -> Option<f64> {
    match c {
        Cost::Micros(m) => Some(usd(*m)),
        Cost::Unpriced => None,
    }
}

/// Estimated cost in USD of `input` prompt and `output` completion tokens at a model's configured
/// price (exact pico-dollar arithmetic, as `pricing` does); `None` when the model is unpriced.
fn estimate_usd(m: &Model, input: u32, output: u32) -> Option<f64> {
    m.price.map(|p| {
        let pico =
            u128::from(input) * u128::from(p.input) + u128::from(output) * u128::from(p.output);
        pico as f64 / 1e12
    })
}

fn circuit_name(c: CircuitState) -> String {
    match c {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
    .to_string()
}
