//! The MCP server (DESIGN.md section 7): `omniroute_*` tools over rmcp, served over streamable
//! HTTP at `/mcp` on the gateway and over stdio by `omniroute mcp`.
//!
//! Every tool first checks the caller's scopes with `ops::auth::authorize`; a denied call is a
//! tool error naming the missing scope (`isError: true`), never a protocol error. Over HTTP the
//! caller is authenticated per request by the gateway (a middleware in front of `/mcp`, so a
//! revoked key fails on its next call) and reaches the tools through the request's extensions;
//! over stdio it is fixed when the process starts. Outputs are JSON objects with declared output
//! schemas (rmcp's `Json<T>`).

use std::future::Future;
use std::sync::Arc;

use omniroute_core::config::{Capability, Config};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admin::{self, HealthView};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::audit;
use crate::ops::auth::{self, Caller, Scope};

/// The omniroute MCP server: one per MCP session.
#[derive(Clone)]
pub struct OmniMcp {
    engine: Arc<Engine>,
    /// The caller fixed for the whole connection (stdio). Over HTTP this is `None` and each
    /// request carries the caller the gateway authenticated.
    caller: Option<Caller>,
    tool_router: ToolRouter<Self>,
}

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
pub fn catalog(
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

/// A tool error: the message the admin API would give.
fn tool_error(e: ApiError) -> String {
    e.message()
}

fn to_value(v: impl Serialize) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot encode the answer: {e}"))
}

impl OmniMcp {
    /// A server for one connection. `caller` is the caller of every call (stdio); `None` makes
    /// each call use the caller the gateway put in the HTTP request's extensions.
    pub fn new(engine: Arc<Engine>, caller: Option<Caller>) -> OmniMcp {
        OmniMcp {
            engine,
            caller,
            tool_router: Self::tool_router(),
        }
    }

    /// The caller of this call.
    fn caller_of(&self, ctx: &RequestContext<RoleServer>) -> Option<Caller> {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>().cloned())
            .or_else(|| self.caller.clone())
    }

    /// Runs one tool call for a caller holding `scope` and records it, allowed or denied, as a
    /// `ToolCalled` event (`ops::audit`: the arguments hashed with the installation's key and
    /// previewed without contents).
    async fn audited<T: Serialize, F: Future<Output = Result<T, String>>>(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
        args: Value,
        scope: Scope,
        run: impl FnOnce() -> F,
    ) -> Result<Json<T>, String> {
        let started = std::time::Instant::now();
        let caller = self.caller_of(ctx);
        let result = match &caller {
            None => Err("no authenticated caller".to_string()),
            Some(c) => match auth::authorize(c, scope) {
                Err(e) => Err(tool_error(e)),
                Ok(()) => run().await,
            },
        };
        if let Some(c) = &caller {
            let out = match &result {
                Ok(v) => Ok(serde_json::to_value(v).unwrap_or(Value::Null)),
                Err(e) => Err(e.as_str()),
            };
            let event = audit::tool_called(
                tool,
                c,
                &args,
                &self.engine.audit_key(),
                started.elapsed(),
                out.as_ref().map_err(|e| *e),
            );
            // Not waited for: an audit record is batched like a request's own events.
            let _ = self.engine.record(event).await;
        }
        result.map(Json)
    }
}

#[tool_router]
impl OmniMcp {
    /// Gateway health: uptime, config version, the log's head and health, and the circuit state
    /// of every target. Needs `read:health`.
    #[tool(name = "omniroute_get_health")]
    async fn get_health(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<HealthView>, String> {
        let engine = &self.engine;
        self.audited(
            &ctx,
            "omniroute_get_health",
            Value::Null,
            Scope::ReadHealth,
            || async { Ok(admin::health(engine)) },
        )
        .await
    }

    /// The configured combos: strategy, targets, whether active, and (with `includeMetrics`)
    /// their metrics from the log. Needs `read:combos`.
    #[tool(name = "omniroute_list_combos")]
    async fn list_combos(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ListCombosArgs>,
    ) -> Result<Json<CombosOut>, String> {
        let args_v = to_value(&args)?;
        let engine = &self.engine;
        self.audited(
            &ctx,
            "omniroute_list_combos",
            args_v,
            Scope::ReadCombos,
            || async {
                engine.settled().await.map_err(tool_error)?;
                let cfg = engine.config();
                let views = engine.projections.read(|p| admin::combos(p, &cfg));
                let combos = views
                    .into_iter()
                    .map(|c| {
                        Ok(ComboOut {
                            id: c.id,
                            strategy: to_value(c.strategy)?,
                            active: c.active,
                            targets: c.targets,
                            metrics: if args.include_metrics {
                                Some(to_value(c.metrics)?)
                            } else {
                                None
                            },
                        })
                    })
                    .collect::<Result<_, String>>()?;
                Ok(CombosOut { combos })
            },
        )
        .await
    }

    /// Why a request went where it went: the explain read model, from the decision recorded in
    /// the log. Needs `read:usage`.
    #[tool(name = "omniroute_explain_route")]
    async fn explain_route(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ExplainArgs>,
    ) -> Result<Json<ExplainOut>, String> {
        let args_v = to_value(&args)?;
        let engine = &self.engine;
        self.audited(
            &ctx,
            "omniroute_explain_route",
            args_v,
            Scope::ReadUsage,
            || async {
                engine.settled().await.map_err(tool_error)?;
                let engine = Arc::clone(engine);
                let id = args.request_id.clone();
                // A read of the log: off the runtime.
                let x = tokio::task::spawn_blocking(move || {
                    let reader = engine
                        .log()
                        .reader()
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    admin::explain(&reader, &id)
                })
                .await
                .map_err(|e| format!("the explain read failed: {e}"))?
                .map_err(tool_error)?;
                Ok(ExplainOut {
                    request_id: args.request_id,
                    explain: to_value(x)?,
                })
            },
        )
        .await
    }

    /// The model catalog from the config: capabilities, tier, context window and pricing (USD
    /// per million tokens), optionally only one provider's or one capability's. Needs
    /// `read:models`.
    #[tool(name = "omniroute_list_models_catalog")]
    async fn list_models_catalog(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CatalogArgs>,
    ) -> Result<Json<CatalogOut>, String> {
        let args_v = to_value(&args)?;
        let engine = &self.engine;
        self.audited(
            &ctx,
            "omniroute_list_models_catalog",
            args_v,
            Scope::ReadModels,
            || async {
                let cfg = engine.config();
                catalog(&cfg, args.provider.as_deref(), args.capability.as_deref())
                    .map_err(tool_error)
            },
        )
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for OmniMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("omniroute", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "omniroute, an event-sourced AI gateway: read its health, combos, model catalog \
                 and why a request was routed where it was. Each tool needs a scope of the \
                 caller's API key.",
            )
    }
}
