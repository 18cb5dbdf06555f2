//! `omniroute mcp`: the MCP server over stdio (DESIGN.md section 7), for agents that start
//! omniroute as a subprocess (Claude Desktop, Cursor, VS Code). stdout carries the protocol only;
//! everything else goes to stderr.
//!
//! Per the process model, when `omniroute serve` owns the data dir this command is a bridge:
//! stdio on one side, the server's streamable HTTP endpoint (`http://<admin.addr>/mcp`) on the
//! other. The tools are then the server's, and the server authenticates and audits each call
//! with the key given by `--key` or `OMNIROUTE_API_KEY`, or, without one, with the server's
//! owner token (whoever can read the data dir is its owner, as for every CLI command).
//!
//! When no server owns the data dir, this process runs its own engine on it (checking the log's
//! chain first, as `serve` does) and serves the tools from it, with the same caller rule.

use std::path::Path;
use std::process::ExitCode;

use omniroute_core::log::{LOG_FILE, Log, LogError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{Peer, RequestContext, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

use super::{CliResult, DataArgs};
use crate::engine::Engine;
use crate::mcp::OmniMcp;
use crate::ops::auth;

#[derive(clap::Args)]
pub struct McpArgs {
    #[command(flatten)]
    data: DataArgs,
    /// API key the tools are called with (its scopes decide what they may do) [env:
    /// OMNIROUTE_API_KEY; default: the owner of the data dir]
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
}

/// The env variable a key can be given in (it stays out of the process list).
const KEY_ENV: &str = "OMNIROUTE_API_KEY";

pub fn run(args: McpArgs) -> CliResult {
    let config = args.data.load_config()?;
    let source = args.data.config_name();
    let data_dir = args.data.data_dir()?;
    let key = args
        .key
        .or_else(|| std::env::var(KEY_ENV).ok())
        .filter(|k| !k.trim().is_empty());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    if let Some(addr) = running_server(&data_dir) {
        runtime.block_on(bridge(&addr, &data_dir, key))?;
        return Ok(ExitCode::SUCCESS);
    }
    let verified = super::serve::check_chain(&data_dir).map_err(|e| match in_use(&data_dir) {
        true => running(&data_dir, e),
        false => e,
    })?;
    runtime.block_on(async move {
        let log = match Log::open_with(&data_dir, crate::engine::log_options(&config)) {
            Ok(log) => log,
            Err(e @ LogError::InUse { .. }) => return Err(running(&data_dir, e.to_string())),
            Err(e) => return Err(e.to_string()),
        };
        super::serve::record_verified(&log, verified)?;
        let engine = Engine::start(config, &source, log.clone()).await?;
        // This process owns the data dir: without a key its caller is the owner, named by a
        // token only it knows.
        let owner = crate::engine::keys::generate()?;
        let _ = engine.owner_token.set(owner.clone());
        if key.is_some() && !engine.keys.any_active() {
            return Err(format!(
                "--key / {KEY_ENV} given, but no API key exists in {}: drop it to run as the \
                 owner, or create one with `omniroute keys create`",
                data_dir.display()
            ));
        }
        let bearer = format!("Bearer {}", key.as_deref().unwrap_or(&owner));
        let caller = auth::authenticate(&engine.keys, Some(&owner), Some(&bearer), true)
            .map_err(|e| format!("--key / {KEY_ENV}: {}", e.message()))?;
        eprintln!(
            "omniroute mcp: serving MCP over stdio as {} (data dir: {}; config_version {})",
            caller.name,
            data_dir.display(),
            engine.config().version()
        );
        let r = serve_stdio(OmniMcp::new(engine.clone(), Some(caller))).await;
        if let Err(e) = engine.checkpoint() {
            eprintln!("omniroute mcp: could not checkpoint the routing state: {e}");
        }
        if let Err(e) = engine.projections.stop() {
            eprintln!("omniroute mcp: the read models stopped early: {e}");
        }
        drop(engine);
        log.sync().map_err(|e| e.to_string())?;
        r
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The error when another process owns the data dir but this one cannot bridge to it (`why`
/// is what opening it said): it publishes no address (not a `serve`, or one still starting), or
/// it started after this command looked.
fn running(dir: &Path, why: String) -> String {
    format!(
        "{why}: another process owns {} and publishes no admin address in {} to bridge to (an \
         `omniroute serve` that is still starting writes it once it listens; run this command \
         again then)",
        dir.join(LOG_FILE).display(),
        dir.join(super::ADMIN_ADDR_FILE).display()
    )
}

/// The address of the `omniroute serve` that owns `dir`: the log is held by another process and
/// the address file is there. (A leftover address file of a killed server does not count: the
/// log is then free.)
fn running_server(dir: &Path) -> Option<String> {
    if !in_use(dir) {
        return None;
    }
    std::fs::read_to_string(dir.join(super::ADMIN_ADDR_FILE))
        .ok()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
}

/// Whether another process holds the log in `dir`.
fn in_use(dir: &Path) -> bool {
    matches!(
        omniroute_core::log::open_read_only(dir),
        Err(LogError::InUse { .. })
    )
}

/// Serves stdio by forwarding to the MCP endpoint of the server at `addr` until the stdio client
/// leaves. The upstream session is opened first, so a key the server refuses ends this command
/// with the server's reason before any stdio client waits on it.
async fn bridge(addr: &str, dir: &Path, key: Option<String>) -> Result<(), String> {
    let url = format!("http://{addr}/mcp");
    // While no key exists the server takes any caller on loopback as the owner, so a key given
    // here would be ignored, not checked: refused instead, as without a server.
    if key.is_some()
        && let Some(owner) = owner_token(dir)
        && no_keys(addr, &owner).await
    {
        return Err(format!(
            "--key / {KEY_ENV} given, but the server that owns {} has no API key: drop it to \
             run as the owner, or create one with `omniroute keys create`",
            dir.display()
        ));
    }
    let (token, who) = match key {
        Some(k) => (Some(k), format!("--key / {KEY_ENV}")),
        None => (
            owner_token(dir),
            format!(
                "the owner token in {}",
                dir.join(super::source::OWNER_TOKEN_FILE).display()
            ),
        ),
    };
    let upstream = connect(&url, token.as_deref())
        .await
        .map_err(|e| format!("cannot open an MCP session at {url} with {who}: {e}"))?;
    let info = reflect(upstream.peer_info().as_deref());
    eprintln!(
        "omniroute mcp: bridging stdio to {url} (the server that owns {})",
        dir.display()
    );
    let r = serve_stdio(Bridge {
        upstream: upstream.peer().clone(),
        info,
    })
    .await;
    // Ends the server's session (an HTTP DELETE) instead of leaving it to time out.
    if let Err(e) = upstream.cancel().await {
        eprintln!("omniroute mcp: closing the session at {url} failed: {e}");
    }
    r
}

/// Whether the server at `addr` certainly holds no active key (asked as the owner; when it
/// cannot be told, the server's own authentication decides).
async fn no_keys(addr: &str, owner: &str) -> bool {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/api/keys"))
        .bearer_auth(owner)
        .send()
        .await;
    let Ok(resp) = resp.and_then(|r| r.error_for_status()) else {
        return false;
    };
    match resp.json::<Vec<serde_json::Value>>().await {
        Ok(keys) => keys.iter().all(|k| k["revoked"] == true),
        Err(_) => false,
    }
}

/// The owner token `omniroute serve` wrote in `dir`, when this user can read it.
fn owner_token(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(super::source::OWNER_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// An MCP client session at `url`, with `token` as the bearer token. When the server refuses it,
/// the error is the server's own reason (its 401/403 body), not a transport error.
async fn connect(
    url: &str,
    token: Option<&str>,
) -> Result<RunningService<RoleClient, ClientConfig>, String> {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(t) = token {
        cfg = cfg.auth_header(t);
    }
    let http = reqwest::Client::new();
    let transport = StreamableHttpClientTransport::with_client(http.clone(), cfg);
    let me = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("omniroute-mcp-bridge", env!("CARGO_PKG_VERSION")),
    );
    match me.serve(transport).await {
        Ok(s) => Ok(s),
        Err(e) => Err(refusal(&http, url, token)
            .await
            .unwrap_or_else(|| e.to_string())),
    }
}

/// Why the server refuses `token` at `url`, when it does: the gateway authenticates every `/mcp`
/// request before rmcp sees it and answers a refusal with an error body naming the reason.
async fn refusal(http: &reqwest::Client, url: &str, token: Option<&str>) -> Option<String> {
    let req = http.post(url).json(&serde_json::json!({}));
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = req.send().await.ok()?;
    let status = resp.status();
    if status != reqwest::StatusCode::UNAUTHORIZED && status != reqwest::StatusCode::FORBIDDEN {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    body["error"]["message"]
        .as_str()
        .map(|m| format!("the server refused it ({status}): {m}"))
}

/// The server's identity, instructions and tools capability, as this bridge presents them to the
/// stdio client (only tools are forwarded, so only tools are advertised).
fn reflect(upstream: Option<&rmcp::model::ServerPeerInfo>) -> ServerConfig {
    let mut caps = ServerCapabilities::default();
    caps.tools = upstream.and_then(|u| u.capabilities.tools.clone());
    let mut info = ServerConfig::new(caps).with_server_info(
        upstream
            .and_then(|u| u.server_info.clone())
            .unwrap_or_else(|| Implementation::new("omniroute", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(i) = upstream.and_then(|u| u.instructions.clone()) {
        info = info.with_instructions(i);
    }
    info
}

/// The stdio side of the bridge: each tools request goes upstream as it came and its answer
/// comes back as it went (tool errors stay tool errors; the server's audit records the call).
struct Bridge {
    upstream: Peer<RoleClient>,
    info: ServerConfig,
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.upstream
            .list_tools(request)
            .await
            .map_err(upstream_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.upstream
            .call_tool_once(request)
            .await
            .map_err(upstream_error)
    }
}

/// A failure to reach the server (or a protocol error it sent) for the stdio client: the
/// server's own JSON-RPC errors pass through unchanged.
fn upstream_error(e: rmcp::ServiceError) -> ErrorData {
    match e {
        rmcp::ServiceError::McpError(d) => d,
        e => ErrorData::internal_error(format!("the omniroute server did not answer: {e}"), None),
    }
}

/// Serves `handler` over stdio until the client ends the session.
async fn serve_stdio<S: rmcp::ServerHandler>(handler: S) -> Result<(), String> {
    match handler.serve(rmcp::transport::stdio()).await {
        Ok(service) => service
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| format!("the MCP session failed: {e}")),
        Err(e) => Err(format!(
            "no MCP session started (stdin must carry an MCP client's `initialize`): {e}"
        )),
    }
}
