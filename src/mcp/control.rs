//! Control tools: combo switches, routing strategies and weights, budget guards, resilience
//! profiles, and the quota read that goes with them. Each is one call into `crate::ops::control`.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, tool, tool_router};

use super::OmniMcp;
use crate::ops::control::{
    self, BudgetGuardOut, CheckQuotaArgs, ComboChangeOut, QuotaOut, ResilienceOut,
    SetBudgetGuardArgs, SetResilienceArgs, SetRoutingStrategyArgs, SwitchComboArgs,
};

// The return types are spelled out: rmcp declares an output schema only when it sees
// `Result<Json<T>, _>` in the signature.
#[tool_router(router = control_tools, vis = "pub(super)")]
impl OmniMcp {
    /// Activates or deactivates a combo. Recorded as a config change (`combo_switched`) and
    /// durable before the answer; answers the combo as it now routes and the new config version.
    /// Needs `write:combos`.
    #[tool(name = "omniroute_switch_combo")]
    async fn switch_combo(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SwitchComboArgs>,
    ) -> Result<Json<ComboChangeOut>, String> {
        self.audited(
            &ctx,
            "omniroute_switch_combo",
            args,
            |e, c, args| async move { control::switch_combo(&e, &c, args).await },
        )
        .await
    }

    /// Changes a combo's routing strategy at runtime and, with `weighted`, its targets' weights
    /// (`{modelId: weight}`). The next request routes under it. Recorded as a config change
    /// (`strategy_set`) and durable before the answer. Needs `write:combos`.
    #[tool(name = "omniroute_set_routing_strategy")]
    async fn set_routing_strategy(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SetRoutingStrategyArgs>,
    ) -> Result<Json<ComboChangeOut>, String> {
        self.audited(
            &ctx,
            "omniroute_set_routing_strategy",
            args,
            |e, c, args| async move { control::set_routing_strategy(&e, &c, args).await },
        )
        .await
    }

    /// Per provider (or the one asked): requests, tokens and USD used in the quota's current
    /// UTC window (from the log), the configured limits, percent remaining, when the window
    /// resets, and any rate-limit cooldown. Reports only: routing does not enforce quotas.
    /// Needs `read:quota`.
    #[tool(name = "omniroute_check_quota")]
    async fn check_quota(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CheckQuotaArgs>,
    ) -> Result<Json<QuotaOut>, String> {
        self.audited(
            &ctx,
            "omniroute_check_quota",
            args,
            |e, c, args| async move { control::check_quota(&e, &c, args).await },
        )
        .await
    }

    /// Sets a session's budget guard, which the gateway enforces on the session's next request
    /// (block, degrade to a tier, or alert). Recorded (`BudgetGuardSet`) and durable before the
    /// answer; answers the guard: limit, spent, reserved, left, action, tier. Needs
    /// `write:budget`.
    #[tool(name = "omniroute_set_budget_guard")]
    async fn set_budget_guard(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SetBudgetGuardArgs>,
    ) -> Result<Json<BudgetGuardOut>, String> {
        self.audited(
            &ctx,
            "omniroute_set_budget_guard",
            args,
            |e, c, args| async move { control::set_budget_guard(&e, &c, args).await },
        )
        .await
    }

    /// Applies a resilience profile (`aggressive`, `balanced`, `conservative`) to the running
    /// gateway: breaker, retry and timeout numbers. Recorded as a config change
    /// (`resilience_profile`); answers every number now in force. Needs `write:resilience`.
    #[tool(name = "omniroute_set_resilience_profile")]
    async fn set_resilience_profile(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SetResilienceArgs>,
    ) -> Result<Json<ResilienceOut>, String> {
        self.audited(
            &ctx,
            "omniroute_set_resilience_profile",
            args,
            |e, c, args| async move { control::set_resilience_profile(&e, &c, args).await },
        )
        .await
    }
}
