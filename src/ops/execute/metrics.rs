//! A provider's measured metrics (`omniroute_get_provider_metrics`): the providers read model
//! and the live circuits.

use std::collections::BTreeMap;
use std::sync::Arc;

use omniroute_core::event::CircuitState;
use omniroute_projections::hist::Percentiles;
use omniroute_projections::providers::Stats;
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::circuit_name;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::auth::{Caller, Scope};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderMetricsArgs {
    /// A provider id of the config.
    pub provider: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ProviderMetricsOut {
    /// The provider id.
    pub provider: String,
    /// Every attempt on the provider, all its models together.
    pub totals: MetricsOut,
    /// Per model, with each model's live circuit state.
    pub models: Vec<ModelMetricsOut>,
    /// Circuit transitions the log recorded for the provider's models, oldest first (at most
    /// 50; each model keeps its last 20).
    pub circuit_history: Vec<TransitionOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct MetricsOut {
    /// Attempts recorded.
    pub attempts: u64,
    /// Attempts that succeeded.
    pub ok: u64,
    /// `null` without attempts.
    pub success_rate: Option<f64>,
    /// Failed attempts by error class (`rate_limited`, `server_error`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Streams cut after they started.
    pub stream_cuts: u64,
    /// Attempt latency percentiles (`null` without attempts).
    pub latency: Option<QuantilesOut>,
    /// Time-to-first-token percentiles of streams (`null` without streamed attempts).
    pub ttft: Option<QuantilesOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct QuantilesOut {
    /// Samples.
    pub count: u64,
    /// The 50th percentile.
    pub p50_ms: f64,
    /// The 95th percentile.
    pub p95_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The slowest sample.
    pub max_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelMetricsOut {
    /// The model id.
    pub model: String,
    /// The live circuit state: `closed`, `open` or `half_open`.
    pub circuit: String,
    /// Its recorded metrics.
    pub metrics: MetricsOut,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TransitionOut {
    /// When the log recorded it (unix ms).
    pub ts_ms: u64,
    /// The model whose circuit changed (`null`: the provider's as a whole).
    pub model: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub from: String,
    /// `closed`, `open` or `half_open`.
    pub to: String,
    /// Why (as the breaker recorded it).
    pub reason: String,
}

fn quantiles(p: Percentiles) -> Option<QuantilesOut> {
    let ms = |us: u64| us as f64 / 1000.0;
    (p.count > 0).then(|| QuantilesOut {
        count: p.count,
        p50_ms: ms(p.p50_us),
        p95_ms: ms(p.p95_us),
        p99_ms: ms(p.p99_us),
        max_ms: ms(p.max_us),
    })
}

fn metrics(s: &Stats) -> MetricsOut {
    let v = s.view("");
    MetricsOut {
        attempts: v.attempts,
        ok: v.ok,
        success_rate: v.success_rate,
        errors: v.errors,
        stream_cuts: v.stream_cuts,
        latency: quantiles(v.latency),
        ttft: quantiles(v.ttft),
    }
}

/// How many circuit transitions a provider's answer carries.
const HISTORY: usize = 50;

/// `omniroute_get_provider_metrics`: latency and TTFT quantiles, error classes, live circuits and
/// their recorded history, from the providers read model.
pub async fn provider_metrics(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: ProviderMetricsArgs,
) -> Result<ProviderMetricsOut, ApiError> {
    caller.require(&[Scope::ReadHealth])?;
    let cfg = engine.config();
    if !cfg.providers.iter().any(|p| p.id == args.provider) {
        let ids: Vec<&str> = cfg.providers.iter().map(|p| p.id.as_str()).collect();
        return Err(ApiError::bad(
            format!(
                "unknown provider {:?}; valid provider ids: {}",
                args.provider,
                ids.join(", ")
            ),
            Some("provider"),
        ));
    }
    engine.settled().await?;
    let recorded = engine
        .projections
        .read(|p| p.providers.providers.get(&args.provider).cloned())
        .unwrap_or_default();
    let live: Vec<(String, CircuitState)> = engine
        .circuits()
        .into_iter()
        .filter(|(p, _, _)| *p == args.provider)
        .map(|(_, m, s)| (m, s))
        .collect();
    let empty = Stats::default();
    let models = live
        .iter()
        .map(|(m, s)| ModelMetricsOut {
            model: m.clone(),
            circuit: circuit_name(*s),
            metrics: metrics(recorded.models.get(m).unwrap_or(&empty)),
        })
        .collect();
    let transitions = |model: Option<&String>, s: &Stats| {
        s.circuit_history
            .iter()
            .map(|t| TransitionOut {
                ts_ms: t.ts_ms,
                model: model.cloned(),
                from: circuit_name(t.from),
                to: circuit_name(t.to),
                reason: t.reason.clone(),
            })
            .collect::<Vec<_>>()
    };
    // The provider's own transitions (recorded without a model) and each model's.
    let mut history: Vec<TransitionOut> = std::iter::once(transitions(None, &recorded.stats))
        .chain(recorded.models.iter().map(|(m, s)| transitions(Some(m), s)))
        .flatten()
        .collect();
    // Newest last; a stable sort keeps each model's own order within one millisecond.
    history.sort_by_key(|t| t.ts_ms);
    let drop = history.len().saturating_sub(HISTORY);
    history.drain(..drop);
    Ok(ProviderMetricsOut {
        provider: args.provider,
        totals: metrics(&recorded.stats),
        models,
        circuit_history: history,
    })
}
