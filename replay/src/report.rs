//! The replay report: recorded and simulated traffic side by side, how much of the simulation is
//! exact, which routes changed, the spread over seeds, and the model-free inverse-propensity
//! check. Plain data (serde), so the CLI, `POST /api/replay` and the renderers share one shape;
//! money is in micro-dollars, times in milliseconds (latencies as percentiles of microsecond
//! histograms, converted once here).

use serde::{Deserialize, Serialize};

/// The whole answer of one replay (one or more runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// What was replayed under which plan.
    pub plan: PlanSummary,
    /// The filter, in words (`all recorded requests` when none).
    pub filter: String,
    /// Set when there is nothing to compare (e.g. the filter matched no request), saying why.
    pub message: Option<String>,
    /// Requests re-simulated (those the filter selected and that completed in the recording).
    pub requests: u64,
    /// Requests whose recorded events were applied as recorded but not re-simulated: outside the
    /// filter, or never completed in the recording (cut by a restart or the end of the log).
    pub background: u64,
    /// Of `background`: requests that never completed in the recording.
    pub incomplete: u64,
    pub recorded: Metrics,
    /// The first run's simulation (seed `plan.seed`).
    pub simulated: Metrics,
    pub outcomes: OutcomeShares,
    /// Present when the plan equals the recording: how much of it the simulation reproduced.
    pub fidelity: Option<Fidelity>,
    pub changed: ChangedRoutes,
    /// With more than one run: the spread of each difference (simulated - recorded) over seeds.
    pub spread: Option<Spread>,
    pub ips: Ips,
    /// Latency distributions for charts (milliseconds, shared bucket bounds).
    pub latency_histogram: LatencyHistogram,
}

/// The plan, as the user gave it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// One line, e.g. `strategy cost for every combo` or `config file plan.toml`.
    pub description: String,
    pub strategy: Option<String>,
    pub combo: Option<String>,
    /// `model=weight` pairs given with the plan.
    pub weights: Vec<(String, u32)>,
    /// The alternative config file's path, when the plan is a whole config.
    pub plan_config: Option<String>,
    pub seed: u64,
    pub runs: u32,
    /// The plan changes nothing: the simulation must reproduce the recording.
    pub equals_recording: bool,
}

/// Aggregates over the replayed requests, recorded or simulated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub requests: u64,
    /// Requests the simulation could not finish (they needed a target with no recorded outcome):
    /// left out of the rates and percentiles below. Always 0 on the recorded side.
    pub not_simulated: u64,
    /// Answered 2xx.
    pub succeeded: u64,
    /// `succeeded / (requests - not_simulated)` (0 when there are none).
    pub success_rate: f64,
    /// Refused by a budget guard in `block` mode.
    pub budget_blocked: u64,
    /// Routed under a `degrade` guard's lower tier.
    pub budget_degraded: u64,
    pub attempts: u64,
    /// Moves to the next planned target after a failure.
    pub fallbacks: u64,
    /// Retries of the same target.
    pub retries: u64,
    /// Breaker transitions to open, all targets together.
    pub circuit_opens: u64,
    pub cost_micros: u64,
    pub cost_per_request_micros: f64,
    /// Requests that ran on a target without a price (their cost counts as 0).
    pub unpriced: u64,
    /// End-to-end latency of the requests, 2xx or not.
    pub latency_ms: Percentiles,
    /// Time to first token of the streamed requests that got one (`None` when there are none).
    pub ttft_ms: Option<Percentiles>,
    /// Requests and cost per target that served them (`provider/model`), largest share first.
    pub shares: Vec<Share>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// One target's part of the traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// `provider/model`.
    pub target: String,
    pub provider: String,
    /// Requests this target answered (2xx).
    pub served: u64,
    /// `served / requests` of the whole replay.
    pub share: f64,
    /// Everything spent on this target (its failed attempts too).
    pub cost_micros: u64,
}

/// How the simulated attempts got their outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeShares {
    /// The target was attempted for that request in the recording: its recorded outcome.
    pub exact: u64,
    /// Sampled from the target's recorded outcomes nearest in time.
    pub estimated: u64,
    /// The target has no recorded outcome anywhere in the log: not simulated.
    pub unknown: u64,
    /// `exact / (exact + estimated)`, in percent (100 when there are none).
    pub exact_pct: f64,
    /// Requests that needed an unknown target; their simulation stops there and they count as
    /// neither succeeded nor failed in `simulated` (they are in `requests`).
    pub requests_with_unknown: u64,
    /// The unknown targets (`provider/model`), sorted.
    pub unknown_targets: Vec<String>,
}

/// How much of the recording a plan equal to it reproduced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Requests with a recorded decision.
    pub decisions: u64,
    /// ... decided the same way (combo, strategy, planned targets in order, propensity, budget
    /// verdict).
    pub decisions_reproduced: u64,
    pub requests: u64,
    /// ... with the same outcome (status, serving target, attempts, cost, latency).
    pub outcomes_reproduced: u64,
    pub decisions_pct: f64,
    pub outcomes_pct: f64,
}

/// Requests routed differently by the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangedRoutes {
    /// Requests whose attempted targets (in order) differ from the recording.
    pub count: u64,
    /// The first ones, in recorded order (ids work with `omniroute explain`).
    pub first: Vec<ChangedRoute>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangedRoute {
    pub request_id: String,
    /// Attempted targets in order, e.g. `a/fast -> b/cheap` (`(none)` when nothing was tried).
    pub recorded: String,
    pub simulated: String,
    pub recorded_status: u16,
    /// 0 when the simulation could not finish the request (unknown target).
    pub simulated_status: u16,
    pub recorded_cost_micros: u64,
    pub simulated_cost_micros: u64,
}

/// The spread of each difference over the runs' seeds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub runs: u32,
    pub seeds: Vec<u64>,
    pub rows: Vec<SpreadRow>,
}

/// One metric's difference (simulated - recorded) over the runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpreadRow {
    /// e.g. `success_rate`, `cost_micros`, `latency_p95_ms`.
    pub metric: String,
    pub p5: f64,
    pub p50: f64,
    pub p95: f64,
    /// Each run's difference, in seed order.
    pub values: Vec<f64>,
}

/// Self-normalised inverse-propensity estimates of the plan's value from the recorded random
/// first choices: a check that uses no outcome model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ips {
    /// Estimates were computed (otherwise `reason` says why not).
    pub available: bool,
    pub reason: Option<String>,
    /// Requests whose recorded first choice was random (propensity < 1).
    pub requests: u64,
    /// Effective sample size `(sum w)^2 / sum w^2`.
    pub effective_sample_size: f64,
    /// Share of the plan's probability that fell on first choices the recording could not have
    /// made, or on fallback orders it did not follow, in percent.
    pub unsupported_pct: f64,
    pub success_rate: Option<Estimate>,
    pub cost_per_request_micros: Option<Estimate>,
    pub latency_ms: Option<Estimate>,
    /// The simulation's values over the same requests, for comparison.
    pub simulated_success_rate: f64,
    pub simulated_cost_per_request_micros: f64,
    pub simulated_latency_ms: f64,
}

/// An estimate with its standard error and 95% interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub std_error: f64,
    pub low: f64,
    pub high: f64,
}

/// Request latencies in buckets, for the HTML chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Upper bounds of the buckets, in milliseconds (the last bucket is open-ended).
    pub bounds_ms: Vec<f64>,
    pub recorded: Vec<u64>,
    pub simulated: Vec<u64>,
}
