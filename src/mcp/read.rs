//! Read tools: health, combos, the model catalog, explain, usage and the log.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, tool, tool_router};

use super::OmniMcp;
use crate::admin::HealthView;
use crate::ops::read::{
    self, CatalogArgs, CatalogOut, CombosOut, ExplainArgs, ExplainOut, ListCombosArgs,
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
}
