//! `omniroute mcp`: the MCP server over stdio (DESIGN.md section 7), for agents that start
//! omniroute as a subprocess (Claude Desktop, Cursor, VS Code). stdout carries the protocol only;
//! everything else goes to stderr.
//!
//! When no server owns the data dir, this process runs its own engine on it (checking the log's
//! chain first, as `serve` does) and serves the tools from it. Its caller is the key given by
//! `--key` or `OMNIROUTE_API_KEY`, authenticated against the data dir's keys; without one it is
//! the owner, as every CLI command on a data dir it can open is. Driving a running server over
//! stdio is not supported yet: this command then says so and points at the server's `/mcp`.

use std::process::ExitCode;

use omniroute_core::config::BUILTIN_NAME;
use omniroute_core::log::{LOG_FILE, Log, LogError};
use rmcp::ServiceExt;

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
    let source = args
        .data
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| BUILTIN_NAME.to_string());
    let data_dir = args.data.data_dir()?;
    let key = args
        .key
        .or_else(|| std::env::var(KEY_ENV).ok())
        .filter(|k| !k.trim().is_empty());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let verified = super::serve::check_chain(&data_dir).map_err(|e| running(&data_dir, e))?;
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
        let served = OmniMcp::new(engine.clone(), Some(caller))
            .serve(rmcp::transport::stdio())
            .await;
        let r = match served {
            Ok(service) => service
                .waiting()
                .await
                .map(|_| ())
                .map_err(|e| format!("the MCP session failed: {e}")),
            Err(e) => Err(format!(
                "no MCP session started (stdin must carry an MCP client's `initialize`): {e}"
            )),
        };
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

/// The error when another process owns the data dir (`why` is what opening it said).
fn running(dir: &std::path::Path, why: String) -> String {
    let addr = std::fs::read_to_string(dir.join(super::ADMIN_ADDR_FILE)).ok();
    match addr {
        Some(a) => format!(
            "{why}: a server owns {} and driving a running server over stdio is not supported \
             yet; connect your MCP client to its streamable HTTP endpoint instead: http://{}/mcp \
             (with `Authorization: Bearer <key>` once keys exist)",
            dir.join(LOG_FILE).display(),
            a.trim()
        ),
        None => why,
    }
}
