//! Read operations: health, combos, the model catalog and explain. Each checks the caller's
//! scopes first, then answers from the engine, the read models or the log; the admin API, the
//! CLI and the MCP tools all call these (issue 14: one operations layer).

use std::sync::Arc;

use omniroute_core::config::{Capability, Config};
use omniroute_projections::explain::Explain;
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use omniroute_projections::audit::AuditView;
use omniroute_projections::cost::Report as CostReport;
use omniroute_projections::providers::ProviderView;
use omniroute_projections::sessions::SessionView;

use crate::admin::{self, CostParams, HealthView};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::auth::{Caller, Scope};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListCombosArgs {
    /// Include each combo's metrics (requests, successes, cost, latency) from the combos read model.
    #[serde(default)]
    pub include_metrics: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CombosOut {
    pub combos: Vec<ComboOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ComboOut {
    pub id: String,
    /// `priority`, `weighted`, `round_robin`, `least_latency`, `cost_optimized` or `auto`.
    pub strategy: Value,
    pub active: bool,
    /// Model ids, in the combo's order.
    pub targets: Vec<String>,
    /// The combos read model for this combo (only with `includeMetrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainArgs {
    /// The request id: the 26-character ULID of the `x-omniroute-request-id` response header.
    pub request_id: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExplainOut {
    pub request_id: String,
    /// The explain read model, from the recorded decision (what `GET
    /// /api/requests/{id}/explain` returns).
    pub explain: Value,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CatalogArgs {
    /// Only the models of this provider id.
    pub provider: Option<String>,
    /// Only the models with this capability: `chat`, `tools`, `vision`, `json` or `reasoning`.
    pub capability: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CatalogOut {
    pub models: Vec<ModelOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelOut {
    pub id: String,
    pub provider: String,
    /// The model name sent upstream.
    pub upstream: String,
    pub tier: u8,
    pub context_window: u32,
    pub capabilities: Vec<String>,
    pub enabled: bool,
    /// USD per million tokens; `null` when the model has no price configured.
    pub pricing: Option<PricingOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PricingOut {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub cached_read_usd_per_mtok: f64,
    pub cache_write_usd_per_mtok: f64,
    pub reasoning_usd_per_mtok: f64,
}

const CAPABILITIES: [(Capability, &str); 5] = [
    (Capability::Chat, "chat"),
    (Capability::Tools, "tools"),
    (Capability::Vision, "vision"),
    (Capability::Json, "json"),
    (Capability::Reasoning, "reasoning"),
];

/// Pico-dollars per token to USD per million tokens.
fn usd_per_mtok(pico: u64) -> f64 {
    pico as f64 / 1e6
}

/// The model catalog of `cfg`, filtered.
fn catalog_of(
    cfg: &Config,
    provider: Option<&str>,
    capability: Option<&str>,
) -> Result<CatalogOut, ApiError> {
    let cap = match capability {
        None => None,
        Some(c) => Some(
            CAPABILITIES
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(c))
                .map(|(cap, _)| *cap)
                .ok_or_else(|| {
                    ApiError::bad(
                        format!(
                            "unknown capability {c:?}; valid: chat, tools, vision, json, reasoning"
                        ),
                        Some("capability"),
                    )
                })?,
        ),
    };
    let models = cfg
        .models
        .iter()
        .filter_map(|m| {
            let p = cfg.provider_of(m).map(|p| p.id.clone()).unwrap_or_default();
            if provider.is_some_and(|want| want != p) {
                return None;
            }
            if cap.is_some_and(|c| m.capabilities & c.bit() == 0) {
                return None;
            }
            Some(ModelOut {
                id: m.id.clone(),
                provider: p,
                upstream: m.upstream.clone(),
                tier: m.tier,
                context_window: m.context_window,
                capabilities: CAPABILITIES
                    .iter()
                    .filter(|(c, _)| m.capabilities & c.bit() != 0)
                    .map(|(_, n)| (*n).to_string())
                    .collect(),
                enabled: m.enabled,
                pricing: m.price.map(|p| PricingOut {
                    input_usd_per_mtok: usd_per_mtok(p.input),
                    output_usd_per_mtok: usd_per_mtok(p.output),
                    cached_read_usd_per_mtok: usd_per_mtok(p.cached_read),
                    cache_write_usd_per_mtok: usd_per_mtok(p.cache_write),
                    reasoning_usd_per_mtok: usd_per_mtok(p.reasoning),
                }),
            })
        })
        .collect();
    Ok(CatalogOut { models })
}

/// `GET /ready` (no auth: load balancers): why the gateway should get no traffic now, if so:
/// while the event log cannot be written, or while no target can serve (every circuit open or
/// cooling down). Times are the engine's clock, so an open circuit whose wait is over counts as
/// able to serve (its probe) and readiness comes back without traffic.
pub fn not_ready(engine: &Engine) -> Option<&'static str> {
    let log = engine.log().health();
    if log.failing || log.closed {
        return Some("event log failing");
    }
    let serving = engine.targets().iter().any(|t| {
        t.circuit != omniroute_core::event::CircuitState::Open && t.cooldown_until_ms.is_none()
    });
    (!serving).then_some("no target can serve")
}

/// `GET /api/health`, `omniroute_get_health`.
pub fn health(engine: &Engine, caller: &Caller) -> Result<HealthView, ApiError> {
    caller.require(&[Scope::ReadHealth])?;
    Ok(admin::health(engine))
}

/// `GET /api/combos`, `omniroute_list_combos`: every combo, with its metrics when asked.
pub async fn list_combos(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: ListCombosArgs,
) -> Result<CombosOut, ApiError> {
    let combos = combos(engine, caller)
        .await?
        .into_iter()
        .map(|c| {
            Ok(ComboOut {
                id: c.id,
                strategy: json(c.strategy)?,
                active: c.active,
                targets: c.targets,
                metrics: if args.include_metrics {
                    Some(json(c.metrics)?)
                } else {
                    None
                },
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(CombosOut { combos })
}

/// `GET /api/requests/{id}/explain`, `omniroute_explain_route`: why a request went where it
/// went, from its recorded decision.
pub async fn explain(engine: &Arc<Engine>, caller: &Caller, id: &str) -> Result<Explain, ApiError> {
    caller.require(&[Scope::ReadUsage])?;
    engine.settled().await?;
    let id = id.to_string();
    blocking(engine, move |reader| admin::explain(reader, &id)).await
}

/// `GET /api/models/catalog`, `omniroute_list_models_catalog`.
pub fn catalog(
    engine: &Engine,
    caller: &Caller,
    args: &CatalogArgs,
) -> Result<CatalogOut, ApiError> {
    caller.require(&[Scope::ReadModels])?;
    catalog_of(
        &engine.config(),
        args.provider.as_deref(),
        args.capability.as_deref(),
    )
}

/// Runs a read of the log off the runtime, on a fresh snapshot.
pub async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&omniroute_core::log::Reader) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let e = Arc::clone(engine);
    tokio::task::spawn_blocking(move || {
        let reader = e
            .log()
            .reader()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        f(&reader)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a read of the log failed: {e}")))?
}

/// Any answer as a JSON value (for the parts of an output whose schema is open).
pub fn json(v: impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v)
        .map_err(|e| ApiError::Internal(format!("cannot encode the answer: {e}")))
}

/// `GET /api/combos`: every combo with its metrics.
pub async fn combos(
    engine: &Arc<Engine>,
    caller: &Caller,
) -> Result<Vec<admin::ComboView>, ApiError> {
    caller.require(&[Scope::ReadCombos])?;
    engine.settled().await?;
    let cfg = engine.config();
    Ok(engine.projections.read(|p| admin::combos(p, &cfg)))
}

/// `GET /api/sessions/{id}`, `omniroute_get_session_snapshot`: the sessions read model, with
/// what the session's guard holds reserved right now.
pub async fn session(
    engine: &Arc<Engine>,
    caller: &Caller,
    id: &str,
) -> Result<SessionView, ApiError> {
    caller.require(&[Scope::ReadUsage])?;
    crate::limits::session_id(id, "sessionId")?;
    engine.settled().await?;
    let reserved = engine.guard(id).map_or(0, |g| g.reserved_micros);
    engine.projections.read(|p| admin::session(p, id, reserved))
}

/// `GET /api/usage/cost`, `omniroute_cost_report`: the cost read model over a period.
pub async fn cost(
    engine: &Arc<Engine>,
    caller: &Caller,
    params: &CostParams,
) -> Result<CostReport, ApiError> {
    caller.require(&[Scope::ReadUsage])?;
    engine.settled().await?;
    let now = omniroute_core::log::now_ms();
    engine.projections.read(|p| admin::cost(p, params, now))
}

/// `POST /api/usage/cost/reprice`: the whole log folded again with another config's prices.
pub async fn reprice(
    engine: &Arc<Engine>,
    caller: &Caller,
    params: CostParams,
) -> Result<CostReport, ApiError> {
    caller.require(&[Scope::ReadUsage])?;
    engine.settled().await?;
    let now = omniroute_core::log::now_ms();
    blocking(engine, move |r| admin::reprice(r, &params, now)).await
}

/// `GET /api/providers/metrics`: the providers read model.
pub async fn providers(
    engine: &Arc<Engine>,
    caller: &Caller,
) -> Result<Vec<ProviderView>, ApiError> {
    caller.require(&[Scope::ReadHealth])?;
    engine.settled().await?;
    Ok(engine.projections.read(admin::providers))
}

/// `GET /api/audit/stats`, `omniroute_audit_stats`: the audit read model.
pub async fn audit(engine: &Arc<Engine>, caller: &Caller) -> Result<AuditView, ApiError> {
    caller.require(&[Scope::ReadUsage])?;
    engine.settled().await?;
    Ok(engine.projections.read(admin::audit))
}

/// `GET /v1/models`: the enabled models and active combos, in the OpenAI list shape.
pub fn models(engine: &Engine, caller: &Caller) -> Result<Value, ApiError> {
    caller.require(&[Scope::ReadModels])?;
    let cfg = engine.config();
    let mut data: Vec<Value> = cfg
        .models
        .iter()
        .filter(|m| m.enabled)
        .map(|m| {
            let owner = cfg.provider_of(m).map(|p| p.id.as_str()).unwrap_or("");
            serde_json::json!({ "id": m.id, "object": "model", "created": 0, "owned_by": owner, "tier": m.tier })
        })
        .collect();
    data.extend(cfg.combos.iter().filter(|c| c.active).map(|c| {
        serde_json::json!({ "id": c.id, "object": "model", "created": 0, "owned_by": "omniroute", "combo": true, "strategy": c.strategy })
    }));
    Ok(serde_json::json!({ "object": "list", "data": data }))
}

/// A read model or report as a JSON object: the same JSON the admin API answers with (its fields
/// are documented in `docs/`); its schema is an open object.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Answer(pub Value);

impl JsonSchema for Answer {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Answer".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "The admin API's JSON answer for the same question."
        })
    }
}

impl Answer {
    pub fn of(v: impl Serialize) -> Result<Answer, ApiError> {
        json(v).map(Answer)
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComboArgs {
    /// The combo's id (as in `omniroute_list_combos`).
    pub combo_id: String,
}

/// `omniroute_get_combo_metrics`: one combo as `GET /api/combos` shows it (strategy, active,
/// targets, and its metrics from the combos read model).
pub async fn combo(engine: &Arc<Engine>, caller: &Caller, id: &str) -> Result<Answer, ApiError> {
    let all = combos(engine, caller).await?;
    let valid: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
    let c = all.into_iter().find(|c| c.id == id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no combo {id:?} in the config; the combos are: {}",
            valid.join(", ")
        ))
    })?;
    Answer::of(c)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostArgs {
    /// The current UTC calendar period, or a session's whole life (with `session`); leave out
    /// with `from`/`to`. [default: day]
    pub period: Option<admin::Period>,
    /// Group the totals by.
    pub group_by: Option<admin::GroupBy>,
    /// Start: unix ms or a UTC date `YYYY-MM-DD` (instead of `period`).
    pub from: Option<String>,
    /// End (exclusive): unix ms or a UTC date. [default: now]
    pub to: Option<String>,
    /// The session, for `period: "session"`.
    pub session: Option<String>,
}

impl From<CostArgs> for CostParams {
    fn from(a: CostArgs) -> CostParams {
        CostParams {
            period: a.period,
            from: a.from,
            to: a.to,
            group_by: a.group_by,
            session: a.session,
            pricing_toml: None,
            pricing_name: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionArgs {
    /// The session id (the `x-omniroute-session` header of its requests).
    pub session_id: String,
}
