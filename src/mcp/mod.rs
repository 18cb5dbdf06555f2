//! The MCP server (DESIGN.md section 7): `omniroute_*` tools over rmcp, served over streamable
//! HTTP at `/mcp` on the gateway and over stdio by `omniroute mcp`.
//!
//! Each tool is one call into the operations layer (`crate::ops`), which checks the caller's
//! scopes; a denied call is a tool error naming the missing scope (`isError: true`), never a
//! protocol error. Over HTTP the caller is authenticated per request by the gateway (a
//! middleware in front of `/mcp`, so a revoked key fails on its next call) and reaches the tools
//! through the request's extensions; over stdio it is fixed when the process starts. Outputs are
//! JSON objects with declared output schemas (rmcp's `Json<T>`). The tools are grouped by what
//! they do: [`read`] (health, combos, usage, the log), [`control`] (writes to routing, budgets and
//! resilience) and [`execute`] (real and simulated completions).

mod control;
mod execute;
mod read;

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Json, RoleServer, ServerHandler, tool_handler};
use serde::Serialize;
use serde_json::Value;

use omniroute_projections::audit::DENIED;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::audit;
use crate::ops::auth::Caller;

/// Tools whose answers carry what an upstream said (completions, their errors).
const CALLS_UPSTREAM: [&str; 2] = ["omniroute_route_request", "omniroute_test_combo"];

tokio::task_local! {
    /// Set by [`OmniMcp::audited`] within one `call_tool`: whether a tool ran (and recorded
    /// the call).
    static RECORDED: Cell<bool>;
}

/// The omniroute MCP server: one per MCP session.
#[derive(Clone)]
pub struct OmniMcp {
    engine: Arc<Engine>,
    /// The caller fixed for the whole connection (stdio). Over HTTP this is `None` and each
    /// request carries the caller the gateway authenticated.
    caller: Option<Caller>,
    tool_router: ToolRouter<Self>,
}

impl OmniMcp {
    /// A server for one connection. `caller` is the caller of every call (stdio); `None` makes
    /// each call use the caller the gateway put in the HTTP request's extensions.
    pub fn new(engine: Arc<Engine>, caller: Option<Caller>) -> OmniMcp {
        OmniMcp {
            engine,
            caller,
            tool_router: Self::read_tools() + Self::control_tools() + Self::execute_tools(),
        }
    }

    /// The caller of this call.
    fn caller_of(&self, ctx: &RequestContext<RoleServer>) -> Option<Caller> {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>().cloned())
            .or_else(|| self.caller.clone())
            .map(|c| Caller { mcp: true, ..c })
    }

    /// Runs one tool call, `run(engine, caller, args)` (an operation of `crate::ops`, which checks the
    /// caller's scopes), and records it, allowed or denied, as a `ToolCalled` event
    /// (`ops::audit`: the arguments hashed with the installation's key and previewed without
    /// contents).
    async fn audited<T, A, F, Fut>(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
        args: A,
        run: F,
    ) -> Result<Json<T>, String>
    where
        T: Serialize,
        A: Serialize,
        F: FnOnce(Arc<Engine>, Caller, A) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let started = std::time::Instant::now();
        let Some(caller) = self.caller_of(ctx) else {
            return Err("no authenticated caller".to_string());
        };
        // This call is recorded here; `call_tool` records only the calls no tool ran.
        let _ = RECORDED.try_with(|r| r.set(true));
        let args_v = serde_json::to_value(&args).unwrap_or(Value::Null);
        let result = run(Arc::clone(&self.engine), caller.clone(), args)
            .await
            .map_err(|e| match e {
                // Counted apart by the audit read model.
                ApiError::Forbidden(_) => format!("{DENIED}{}", e.message()),
                e => e.message(),
            });
        let out = match &result {
            Ok(v) => Ok(serde_json::to_value(v).unwrap_or(Value::Null)),
            Err(e) => Err(e.as_str()),
        };
        self.record_call(tool, &caller, &args_v, started, out).await;
        result.map(Json)
    }

    /// Records one call as a `ToolCalled` event. Not waited for: an audit record is batched like
    /// a request's own events.
    async fn record_call(
        &self,
        tool: &str,
        caller: &Caller,
        args: &Value,
        started: std::time::Instant,
        out: Result<Value, &str>,
    ) {
        let key = self.engine.audit_key();
        // A completion's output, and its errors (which quote upstream error text), can hold the
        // prompt: stored only as a keyed hash unless bodies are stored (DESIGN.md section 8).
        let withheld = (CALLS_UPSTREAM.contains(&tool) && !self.engine.config().log.store_bodies)
            .then(|| {
                let text = match &out {
                    Ok(v) => v.to_string(),
                    Err(e) => (*e).to_string(),
                };
                format!(
                    "not stored (log.store_bodies = false), keyed blake3 {}",
                    crate::engine::privacy::digest(&key, &text)
                )
            });
        let error_text: String;
        let out = match (withheld, out) {
            (Some(w), Ok(_)) => Ok(Value::String(format!("output {w}"))),
            (Some(w), Err(_)) => {
                error_text = format!("error text {w}");
                Err(error_text.as_str())
            }
            (None, out) => out,
        };
        let event = audit::tool_called(
            tool,
            caller,
            args,
            &key,
            started.elapsed(),
            out.as_ref().map_err(|e| *e),
        );
        let _ = self.engine.record(event).await;
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for OmniMcp {
    /// The router's call, plus an audit record of each call no tool ran: an unknown tool, or
    /// arguments that do not match the tool's input schema, are refused by rmcp before
    /// [`OmniMcp::audited`] (which records every call a tool handles).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = std::time::Instant::now();
        // The name comes from the client: stored at most 100 characters of it.
        let tool: String = request.name.chars().take(100).collect();
        let args = request.arguments.clone().map_or(Value::Null, Value::Object);
        let caller = self.caller_of(&context);
        let call = self
            .tool_router
            .call(ToolCallContext::new(self, request, context));
        let (r, ran) = RECORDED
            .scope(Cell::new(false), async {
                let r = call.await;
                (r, RECORDED.with(Cell::get))
            })
            .await;
        if let (false, Some(c)) = (ran, &caller) {
            let why = match &r {
                Err(e) => e.message.to_string(),
                Ok(CallToolResponse::Complete(res)) => {
                    serde_json::to_string(&res.content).unwrap_or_else(|_| "refused".to_string())
                }
                Ok(_) => "refused".to_string(),
            };
            self.record_call(&tool, c, &args, started, Err(&why)).await;
        }
        r
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("omniroute", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "omniroute, an event-sourced AI gateway: read its health, combos, costs and \
                 why a request was routed where it was; change routing, budgets and resilience; \
                 simulate and send completions; replay recorded traffic under another plan. \
                 Each tool needs a scope of the caller's API key.",
            )
    }
}
