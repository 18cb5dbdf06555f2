//! Which combo for a task (`omniroute_best_combo_for_task`): measured cost and latency from the
//! combos read model, priced estimates from the router's own plan where there is no traffic.

use std::sync::Arc;

use omniroute_core::config::{Combo, Config};
use omniroute_core::flow;
use omniroute_projections::combos::ComboMetrics;
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::simulate::{SimulateArgs, simulate_on};
use super::{Need, usd};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::auth::{Caller, Scope};

/// Prompt tokens of the typical request a combo without traffic is priced for.
pub const TYPICAL_PROMPT_TOKENS: u32 = 1000;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestComboArgs {
    /// The capability the task needs.
    pub task_type: Need,
    /// The most USD a request may cost.
    pub budget_constraint: Option<f64>,
    /// The most p95 end-to-end latency, in milliseconds.
    pub latency_constraint: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BestComboOut {
    /// The combo recommended, with its figures (`null` when none meets the constraints).
    pub recommendation: Option<ComboAssessment>,
    /// Why, in words.
    pub reason: String,
    /// Every other combo, in config order, and why it lost or failed a constraint.
    pub alternatives: Vec<ComboAssessment>,
}

/// Where a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From the combo's recorded requests.
    Measured,
    /// From the configured prices of the target the router would try first, for a typical
    /// request (`TYPICAL_PROMPT_TOKENS` in, `router.default_output_tokens` out).
    Estimated,
    /// Not known (no traffic, or unpriced).
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ComboAssessment {
    /// The combo id.
    pub combo: String,
    /// Expected USD per request.
    pub cost_usd: Option<f64>,
    /// Where `cost_usd` comes from.
    pub cost_source: Source,
    /// Measured p95 end-to-end latency in ms (`null` without traffic).
    pub p95_latency_ms: Option<f64>,
    /// Measured share of requests that succeeded (`null` without traffic).
    pub success_rate: Option<f64>,
    /// Requests the combo has served.
    pub requests: u64,
    /// Whether it can serve the task and meets both constraints.
    pub qualifies: bool,
    /// Why it qualifies, or what it fails.
    pub verdict: String,
}

/// `omniroute_best_combo_for_task`: the cheapest combo that can serve the task and meets both
/// constraints (ties by p95 latency), from measured metrics and prices.
pub async fn best_combo_for_task(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: BestComboArgs,
) -> Result<BestComboOut, ApiError> {
    caller.require(&[Scope::ReadCombos, Scope::ReadHealth])?;
    for (v, field) in [
        (args.budget_constraint, "budgetConstraint"),
        (args.latency_constraint, "latencyConstraint"),
    ] {
        if v.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
            return Err(ApiError::bad(
                format!("`{field}` must be a number, 0 or more"),
                Some(field),
            ));
        }
    }
    engine.settled().await?;
    let cfg = engine.config();
    let metrics: Vec<_> = engine
        .projections
        .read(|p| cfg.combos.iter().map(|c| p.combos.view(&c.id)).collect());
    let (state, now) = engine.routing_snapshot();
    let assessed: Vec<ComboAssessment> = cfg
        .combos
        .iter()
        .zip(metrics)
        .map(|(c, m)| assess(&cfg, &state, now, c, &m, &args))
        .collect();
    Ok(recommend(assessed, &args))
}

fn assess(
    cfg: &Config,
    state: &flow::State,
    now: u64,
    combo: &Combo,
    m: &ComboMetrics,
    args: &BestComboArgs,
) -> ComboAssessment {
    let priced = m.requests.saturating_sub(m.unpriced_requests);
    let (mut cost_usd, mut cost_source) = if priced > 0 {
        (Some(usd(m.cost_micros) / priced as f64), Source::Measured)
    } else {
        (None, Source::Unknown)
    };
    let p95 = (m.latency.count > 0).then(|| m.latency.p95_us as f64 / 1000.0);
    let mut out = ComboAssessment {
        combo: combo.id.clone(),
        cost_usd,
        cost_source,
        p95_latency_ms: p95,
        success_rate: m.success_rate,
        requests: m.requests,
        qualifies: false,
        verdict: String::new(),
    };
    if !combo.active {
        out.verdict = "inactive".into();
        return out;
    }
    // The router's own decision for a typical request of this task, on the live Health: which
    // targets can serve it now, and which one it would try first.
    let sim = SimulateArgs {
        model: None,
        combo: Some(combo.id.clone()),
        prompt_token_estimate: TYPICAL_PROMPT_TOKENS,
        max_tokens: None,
        capabilities: vec![args.task_type],
        seed: None,
    };
    let plan = match simulate_on(cfg, state, now, &combo.id, &sim) {
        Ok(s) => s,
        Err(e) => {
            out.verdict = format!("cannot be routed: {}", e.message());
            return out;
        }
    };
    let Some(first) = plan.plan.first() else {
        let why: Vec<String> = plan
            .exclusions
            .iter()
            .map(|e| format!("{}: {}", e.model, e.detail))
            .collect();
        out.verdict = format!(
            "no target can serve a {} task now ({})",
            args.task_type.name(),
            why.join("; ")
        );
        return out;
    };
    if cost_source == Source::Unknown && first.est_cost_usd.is_some() {
        cost_usd = first.est_cost_usd;
        cost_source = Source::Estimated;
        out.cost_usd = cost_usd;
        out.cost_source = cost_source;
    }
    let mut fails = Vec::new();
    if let Some(b) = args.budget_constraint {
        match cost_usd {
            Some(c) if c <= b => {}
            Some(c) => fails.push(format!(
                "costs ${c:.6} per request, over the ${b:.6} budget"
            )),
            None => fails.push(
                "its cost is unknown (unpriced), so it cannot be shown to meet the budget".into(),
            ),
        }
    }
    if let Some(l) = args.latency_constraint {
        match p95 {
            Some(p) if p <= l => {}
            Some(p) => fails.push(format!("p95 latency {p:.1} ms is over {l} ms")),
            None => fails.push(
                "no traffic yet, so its p95 latency is unknown and cannot be shown to meet the latency constraint"
                    .into(),
            ),
        }
    }
    out.qualifies = fails.is_empty();
    out.verdict = if fails.is_empty() {
        "meets the constraints".into()
    } else {
        fails.join("; ")
    };
    out
}

/// The rule: among the combos that qualify, the cheapest; ties by p95 latency (unknown last).
fn recommend(assessed: Vec<ComboAssessment>, args: &BestComboArgs) -> BestComboOut {
    let key = |a: &ComboAssessment| {
        (
            a.cost_usd.unwrap_or(f64::INFINITY),
            a.p95_latency_ms.unwrap_or(f64::INFINITY),
        )
    };
    let best = assessed
        .iter()
        .filter(|a| a.qualifies)
        .min_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        })
        .cloned();
    let constraints = match (args.budget_constraint, args.latency_constraint) {
        (None, None) => "no constraints".to_string(),
        (Some(b), None) => format!("a budget of ${b} per request"),
        (None, Some(l)) => format!("a p95 latency of at most {l} ms"),
        (Some(b), Some(l)) => {
            format!("a budget of ${b} per request and a p95 latency of at most {l} ms")
        }
    };
    let source = |s: Source| match s {
        Source::Measured => "measured",
        Source::Estimated => "estimated from prices",
        Source::Unknown => "unknown",
    };
    let alternatives = assessed
        .into_iter()
        .filter(|a| best.as_ref().is_none_or(|b| b.combo != a.combo))
        .map(|mut a| {
            if let (true, Some(b)) = (a.qualifies, &best) {
                a.verdict = format!(
                    "meets the constraints but lost to {}: {}",
                    b.combo,
                    if a.cost_usd.is_none() {
                        "its cost is unknown (unpriced)"
                    } else if key(&a).0 > key(b).0 {
                        "it costs more"
                    } else {
                        "same cost, slower (or unknown) p95"
                    }
                );
            }
            a
        })
        .collect();
    let reason = match &best {
        Some(b) => format!(
            "{} is the cheapest combo that can serve a {} task within {constraints}: ${:.6} per \
             request ({}), p95 {}, success rate {}",
            b.combo,
            args.task_type.name(),
            b.cost_usd.unwrap_or(0.0),
            source(b.cost_source),
            b.p95_latency_ms
                .map_or("unknown (no traffic)".into(), |p| format!("{p:.1} ms")),
            b.success_rate
                .map_or("unknown".into(), |s| format!("{:.1}%", s * 100.0)),
        ),
        None => format!(
            "no combo can serve a {} task within {constraints}; see each alternative's verdict",
            args.task_type.name()
        ),
    };
    BestComboOut {
        recommendation: best,
        reason,
        alternatives,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn combo(id: &str, cost: Option<f64>, p95: Option<f64>, qualifies: bool) -> ComboAssessment {
        ComboAssessment {
            combo: id.into(),
            cost_usd: cost,
            cost_source: if cost.is_some() {
                Source::Measured
            } else {
                Source::Unknown
            },
            p95_latency_ms: p95,
            success_rate: None,
            requests: 1,
            qualifies,
            verdict: if qualifies { "meets" } else { "fails" }.into(),
        }
    }

    fn args() -> BestComboArgs {
        BestComboArgs {
            task_type: Need::Chat,
            budget_constraint: None,
            latency_constraint: None,
        }
    }

    #[test]
    fn execute_recommends_the_cheapest_qualifier_ties_by_latency() {
        let out = recommend(
            vec![
                combo("dear", Some(0.2), Some(10.0), true),
                combo("slow", Some(0.1), Some(900.0), true),
                combo("fast", Some(0.1), Some(50.0), true),
                combo("unknown", None, Some(1.0), true),
                combo("cheapest_but_fails", Some(0.01), Some(1.0), false),
            ],
            &args(),
        );
        assert_eq!(out.recommendation.unwrap().combo, "fast");
        let verdict = |id: &str| {
            out.alternatives
                .iter()
                .find(|a| a.combo == id)
                .unwrap()
                .verdict
                .clone()
        };
        assert!(
            verdict("slow").contains("same cost, slower"),
            "{}",
            verdict("slow")
        );
        assert!(verdict("dear").contains("costs more"));
        assert!(verdict("unknown").contains("cost is unknown"));
        assert_eq!(verdict("cheapest_but_fails"), "fails");
        let none = recommend(vec![combo("x", Some(0.1), None, false)], &args());
        assert!(none.recommendation.is_none());
        assert!(none.reason.starts_with("no combo"), "{}", none.reason);
    }
}
