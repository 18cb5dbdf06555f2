//! Dry runs of the router (`omniroute_simulate_route`): its real decision on a copy of the live
//! Health, priced from the config; no provider is called and nothing is recorded.

use omniroute_core::config::Config;
use omniroute_core::flow::{self, Facts, Routed};
use omniroute_core::router::RouteError;
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{Need, estimate_usd};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::auth::{Caller, Scope};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulateArgs {
    /// A model id or combo id to route (give this or `combo`).
    pub model: Option<String>,
    /// A combo id to route; overrides `model`.
    pub combo: Option<String>,
    /// Input tokens of the simulated request.
    pub prompt_token_estimate: u32,
    /// Output tokens of the simulated request (default: the config's
    /// `router.default_output_tokens`).
    pub max_tokens: Option<u32>,
    /// Capabilities the request needs.
    #[serde(default)]
    pub capabilities: Vec<Need>,
    /// Seed of the decision (a `weighted` strategy draws its first target with it; default 0).
    pub seed: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SimulateOut {
    /// The combo (or the model requested directly).
    pub requested: String,
    /// `priority`, `weighted`, `round-robin`, `least-latency`, `cost`, `least-busy`, `auto` or
    /// `tiered`.
    pub strategy: String,
    /// The flow's time the decision was made at (unix ms).
    pub now_ms: u64,
    /// The targets in the order they would be tried.
    pub plan: Vec<PlanStep>,
    /// Targets left out, and why.
    pub exclusions: Vec<ExclusionOut>,
    /// Probability with which the strategy picked the first step.
    pub propensity: f64,
    /// Estimated cost when the first step succeeds (`null`: no plan, or it is unpriced).
    pub best_case_usd: Option<f64>,
    /// Estimated cost if every step is tried and each returns its full answer (`null` when a step
    /// is unpriced or there is no plan).
    pub worst_case_usd: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PlanStep {
    /// The provider id.
    pub provider: String,
    /// The model id.
    pub model: String,
    /// Its tier (0 cheapest to 3 strongest).
    pub tier: u8,
    /// `promptTokenEstimate` input and `maxTokens` output tokens at the model's price; `null`
    /// when the model has no price.
    pub est_cost_usd: Option<f64>,
    /// The strategy's score (higher is tried first).
    pub score: f64,
    /// The score's inputs.
    pub factors: Vec<FactorOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct FactorOut {
    /// The factor's name (`cost`, `latency`, `position`, ...).
    pub name: String,
    /// Its value (normalised to 0..=1 for `auto`).
    pub value: f64,
    /// Its weight in the score.
    pub weight: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExclusionOut {
    /// The provider id.
    pub provider: String,
    /// The model id.
    pub model: String,
    /// `circuit_open`, `cooling_down`, `budget`, `quota`, `capability`, `context_window`,
    /// `inactive` or `disabled`.
    pub reason: String,
    /// The router's explanation.
    pub detail: String,
    /// When the exclusion ends (unix ms), when it is timed.
    pub until_ms: Option<u64>,
}

/// `omniroute_simulate_route`: the router's real decision for a synthetic request, on a copy of
/// the current Health. Calls no provider, records nothing, changes no state.
pub fn simulate_route(
    engine: &Engine,
    caller: &Caller,
    args: &SimulateArgs,
) -> Result<SimulateOut, ApiError> {
    caller.require(&[Scope::ReadHealth, Scope::ReadCombos])?;
    let requested = args
        .combo
        .as_deref()
        .or(args.model.as_deref())
        .ok_or_else(|| {
            ApiError::bad(
                "give `model` (a model or combo id) or `combo`",
                Some("model"),
            )
        })?;
    let cfg = engine.config();
    let (state, now) = engine.routing_snapshot();
    simulate_on(&cfg, &state, now, requested, args)
}

pub(super) fn simulate_on(
    cfg: &Config,
    state: &flow::State,
    now: u64,
    requested: &str,
    args: &SimulateArgs,
) -> Result<SimulateOut, ApiError> {
    let field = if args.combo.is_some() {
        "combo"
    } else {
        "model"
    };
    let required = args
        .capabilities
        .iter()
        .fold(0u8, |acc, n| acc | n.capability().bit());
    let output = args.max_tokens.unwrap_or(cfg.router.default_output_tokens);
    let facts = Facts {
        requested,
        est_prompt_tokens: args.prompt_token_estimate,
        max_tokens: Some(output),
        min_tier: None,
        session: None,
        required,
    };
    // No session: no guard is read or reserved; the digest is not needed for a dry run.
    let derived = match flow::derive_with(&facts, args.seed.unwrap_or(0), now, state, cfg, false) {
        Ok(d) => d,
        Err(Routed::Unroutable {
            error: RouteError::Unknown(m),
            ..
        }) => {
            let ids: Vec<&str> = cfg
                .combos
                .iter()
                .map(|c| c.id.as_str())
                .chain(cfg.models.iter().map(|m| m.id.as_str()))
                .collect();
            return Err(ApiError::bad(
                format!(
                    "unknown model or combo {m:?}; valid ids: {}",
                    ids.join(", ")
                ),
                Some(field),
            ));
        }
        Err(Routed::Unroutable {
            error: RouteError::Inactive(c),
            ..
        }) => return Err(ApiError::ComboInactive(c)),
        Err(_) => return Err(ApiError::Internal("a dry run met a budget guard".into())),
    };
    let d = &derived.decision;
    let target = |m: usize| {
        cfg.model(m)
            .map(|model| omniroute_core::router::event_target(cfg, model))
            .unwrap_or_default()
    };
    let plan: Vec<PlanStep> = d
        .plan
        .iter()
        .filter_map(|&i| d.candidates.get(usize::from(i)))
        .map(|c| {
            let t = target(c.model);
            let m = cfg.model(c.model);
            PlanStep {
                provider: t.provider,
                model: t.model,
                tier: m.map_or(0, |m| m.tier),
                est_cost_usd: m.and_then(|m| estimate_usd(m, args.prompt_token_estimate, output)),
                score: c.score,
                factors: c
                    .factors
                    .as_slice()
                    .iter()
                    .map(|f| FactorOut {
                        name: f.name.to_string(),
                        value: f.value,
                        weight: f.weight,
                    })
                    .collect(),
            }
        })
        .collect();
    let exclusions = d
        .candidates
        .iter()
        .filter_map(|c| {
            let e = c.excluded?;
            let t = target(c.model);
            Some(ExclusionOut {
                provider: t.provider,
                model: t.model,
                reason: serde_json::to_value(e.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                detail: e.detail.to_string(),
                until_ms: e.until_ms,
            })
        })
        .collect();
    let costs: Option<Vec<f64>> = plan.iter().map(|s| s.est_cost_usd).collect();
    Ok(SimulateOut {
        requested: requested.to_string(),
        strategy: serde_json::to_value(d.strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        now_ms: now,
        best_case_usd: plan.first().and_then(|s| s.est_cost_usd),
        worst_case_usd: costs.filter(|c| !c.is_empty()).map(|c| c.iter().sum()),
        propensity: d.propensity,
        plan,
        exclusions,
    })
}
