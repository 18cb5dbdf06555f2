//! Read tools: health, combos, the model catalog, explain, usage and the log.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, tool, tool_router};

use super::OmniMcp;
use crate::admin::HealthView;
use crate::ops::log::{self, ReplayArgs, VerifyArgs, VerifyOut};
use crate::ops::read::{
    self, Answer, CatalogArgs, CatalogOut, ComboArgs, CombosOut, CostArgs, ExplainArgs, ExplainOut,
    ListCombosArgs, SessionArgs,
};

// The return types are spelled out: rmcp declares an output schema only when it sees
// `Result<Json<T>, _>` in the signature.
#[tool_router(router = read_tools, vis = "pub(super)")]
impl OmniMcp {
    /// Gateway health: uptime, config version, the log's head and health, and the circuit state
    /// of every target. Needs `read:health`.
    #[tool(name = "omniroute_get_health")]
    async fn get_health(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<HealthView>, String> {
        self.audited(&ctx, "omniroute_get_health", (), |e, c, ()| async move {
            read::health(&e, &c)
        })
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
        self.audited(
            &ctx,
            "omniroute_list_combos",
            args,
            |e, c, args| async move { read::list_combos(&e, &c, args).await },
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
        self.audited(
            &ctx,
            "omniroute_explain_route",
            args,
            |e, c, args| async move {
                let x = read::explain(&e, &c, &args.request_id).await?;
                Ok(ExplainOut {
                    request_id: args.request_id,
                    explain: read::json(x)?,
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
        self.audited(
            &ctx,
            "omniroute_list_models_catalog",
            args,
            |e, c, args| async move { read::catalog(&e, &c, &args) },
        )
        .await
    }

    /// One combo: strategy, active flag, targets, and its metrics from the combos read model
    /// (requests, successes, fallbacks, cost, latency per target). Needs `read:combos`.
    #[tool(name = "omniroute_get_combo_metrics")]
    async fn get_combo_metrics(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ComboArgs>,
    ) -> Result<Json<Answer>, String> {
        self.audited(
            &ctx,
            "omniroute_get_combo_metrics",
            args,
            |e, c, args| async move { read::combo(&e, &c, &args.combo_id).await },
        )
        .await
    }

    /// Spend from the cost read model over a period (today by default), optionally grouped by
    /// provider, model, combo, key or session; cost in micro-dollars, with requests and
    /// attempts whose model has no price counted apart (`unpriced_*`), never as $0. Needs
    /// `read:usage`.
    #[tool(name = "omniroute_cost_report")]
    async fn cost_report(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CostArgs>,
    ) -> Result<Json<Answer>, String> {
        self.audited(
            &ctx,
            "omniroute_cost_report",
            args,
            |e, c, args| async move { Answer::of(read::cost(&e, &c, &args.into()).await?) },
        )
        .await
    }

    /// One session from the sessions read model: requests, spend, tokens, models used, and its
    /// budget guard with what it holds reserved now. Needs `read:usage`.
    #[tool(name = "omniroute_get_session_snapshot")]
    async fn get_session_snapshot(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SessionArgs>,
    ) -> Result<Json<Answer>, String> {
        self.audited(
            &ctx,
            "omniroute_get_session_snapshot",
            args,
            |e, c, args| async move { Answer::of(read::session(&e, &c, &args.session_id).await?) },
        )
        .await
    }

    /// What if: reruns the recorded traffic under another strategy (or weights) without calling
    /// any provider, and reports recorded vs simulated success, cost, latency, fallbacks and
    /// the routes that changed (the report of `omniroute replay --format json`). One replay at a
    /// time per server. Needs `read:usage`.
    #[tool(name = "omniroute_replay_strategy")]
    async fn replay_strategy(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ReplayArgs>,
    ) -> Result<Json<Answer>, String> {
        self.audited(
            &ctx,
            "omniroute_replay_strategy",
            args,
            |e, c, args| async move { Answer::of(log::replay(&e, &c, args.into()).await?) },
        )
        .await
    }

    /// Verifies the log's hash chain from the first record to the head, and with
    /// `decisions: true` derives every recorded routing decision again from the log alone.
    /// Needs `read:health`.
    #[tool(name = "omniroute_verify_log")]
    async fn verify_log(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<VerifyArgs>,
    ) -> Result<Json<VerifyOut>, String> {
        self.audited(
            &ctx,
            "omniroute_verify_log",
            args,
            |e, c, args| async move { log::verify_all(&e, &c, args).await },
        )
        .await
    }

    /// The audit read model: config changes, key changes and MCP tool calls (per tool and per
    /// caller, allowed and denied). Needs `read:usage`.
    #[tool(name = "omniroute_audit_stats")]
    async fn audit_stats(&self, ctx: RequestContext<RoleServer>) -> Result<Json<Answer>, String> {
        self.audited(&ctx, "omniroute_audit_stats", (), |e, c, ()| async move {
            Answer::of(read::audit(&e, &c).await?)
        })
        .await
    }
}
