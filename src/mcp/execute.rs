//! Execute tools: real completions, dry runs of the router, and the metrics and recommendations
//! a route is chosen with. Each is one call into `crate::ops::execute`.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, tool, tool_router};

use super::OmniMcp;
use crate::ops::execute::{
    self, BestComboArgs, BestComboOut, ProviderMetricsArgs, ProviderMetricsOut, RouteRequestArgs,
    RouteRequestOut, SimulateArgs, SimulateOut, TestComboArgs, TestComboOut,
};

// The return types are spelled out: rmcp declares an output schema only when it sees
// `Result<Json<T>, _>` in the signature.
#[tool_router(router = execute_tools, vis = "pub(super)")]
impl OmniMcp {
    /// A real, non-streaming chat completion through the gateway's own request flow (validated,
    /// budgeted, routed, retried and recorded exactly like `/v1/chat/completions`, attributed to
    /// the caller's key): the answer, token usage, recorded cost, the route taken and the request
    /// id (`omniroute_explain_route` explains it). Needs `execute:completions`.
    #[tool(name = "omniroute_route_request")]
    async fn route_request(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<RouteRequestArgs>,
    ) -> Result<Json<RouteRequestOut>, String> {
        self.audited(
            &ctx,
            "omniroute_route_request",
            args,
            |e, c, args| async move { execute::route_request(&e, &c, args).await },
        )
        .await
    }

    /// A dry run of the real router on the current health: the plan a request of
    /// `promptTokenEstimate` input and `maxTokens` output tokens needing `capabilities` would
    /// get now, each step's estimated cost from the configured prices, the targets excluded and
    /// why (circuit open, cooling down, lacks a capability, context window too small, ...), and
    /// the best case (the first step succeeds) and worst case (every step tried) cost. Calls no
    /// provider and records nothing. Needs `read:health` and `read:combos`.
    #[tool(name = "omniroute_simulate_route")]
    async fn simulate_route(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SimulateArgs>,
    ) -> Result<Json<SimulateOut>, String> {
        self.audited(
            &ctx,
            "omniroute_simulate_route",
            args,
            |e, c, args| async move { execute::simulate_route(&e, &c, &args) },
        )
        .await
    }

    /// One real, recorded call to each target of a combo (by model id, one after another) with
    /// `testPrompt`: each one's latency, cost, success and request id, and the fastest and
    /// cheapest successful target. Needs `execute:completions` and `read:combos`.
    #[tool(name = "omniroute_test_combo")]
    async fn test_combo(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<TestComboArgs>,
    ) -> Result<Json<TestComboOut>, String> {
        self.audited(
            &ctx,
            "omniroute_test_combo",
            args,
            |e, c, args| async move { execute::test_combo(&e, &c, args).await },
        )
        .await
    }

    /// A provider's measured metrics from the log: attempts, success rate, error classes,
    /// p50/p95/p99 latency and time to first token, overall and per model, with each model's live
    /// circuit state and the circuit transitions recorded (oldest first). Needs `read:health`.
    #[tool(name = "omniroute_get_provider_metrics")]
    async fn get_provider_metrics(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ProviderMetricsArgs>,
    ) -> Result<Json<ProviderMetricsOut>, String> {
        self.audited(
            &ctx,
            "omniroute_get_provider_metrics",
            args,
            |e, c, args| async move { execute::provider_metrics(&e, &c, args).await },
        )
        .await
    }

    /// Recommends a combo for a task (`taskType`: the capability it needs). Each active combo
    /// whose targets can serve the task now is assessed: expected cost per request (the measured
    /// mean when it has traffic, else estimated from the price of the target the router would
    /// try first for a typical request of 1000 prompt tokens and the default output tokens), its
    /// measured p95 latency and success rate. Rule: the cheapest combo meeting both
    /// `budgetConstraint` (USD per request) and `latencyConstraint` (p95 ms), ties broken by p95
    /// latency; a combo with an unknown cost or latency cannot be shown to meet that
    /// constraint. Gives the reason and every alternative with why it lost or failed; no
    /// recommendation when none qualifies. Needs `read:combos` and `read:health`.
    #[tool(name = "omniroute_best_combo_for_task")]
    async fn best_combo_for_task(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<BestComboArgs>,
    ) -> Result<Json<BestComboOut>, String> {
        self.audited(
            &ctx,
            "omniroute_best_combo_for_task",
            args,
            |e, c, args| async move { execute::best_combo_for_task(&e, &c, args).await },
        )
        .await
    }
}
