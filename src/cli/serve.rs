//! `omniroute serve`: the gateway. Zero configuration needed: without `--config` the built-in
//! default (mock providers) is used. SIGINT/SIGTERM stop accepting, let in-flight requests finish
//! (bounded), commit the log, and exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use omniroute_core::config::BUILTIN_NAME;
use omniroute_core::log::Log;

use super::{CliResult, DataArgs};
use crate::engine::Engine;

/// How long in-flight requests may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on [default: the config's server.listen, 127.0.0.1:20128]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

/// Resolves at the first SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: `serve` calls it before it says it is listening, so a signal
/// sent right after that line is handled (not the default action, which kills the process
/// without committing the log).
fn signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {}
                _ = wait(term) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(args: ServeArgs) -> CliResult {
    let config = args.data.load_config()?;
    let source = args
        .data
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| BUILTIN_NAME.to_string());
    let data_dir: PathBuf = args.data.data_dir()?;
    let listen = args.listen.unwrap_or(config.server.listen);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let log = Log::open_with(&data_dir, crate::engine::log_options(&config))
            .map_err(|e| e.to_string())?;
        let engine = Engine::start(config, &source, log.clone()).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop_signal = signal();
        // Other commands find this server's admin API through this file (DESIGN.md, process model).
        let addr_file = data_dir.join(super::ADMIN_ADDR_FILE);
        std::fs::write(&addr_file, addr.to_string())
            .map_err(|e| format!("cannot write {}: {e}", addr_file.display()))?;
        eprintln!(
            "omniroute listening on http://{addr} (config: {source}; data dir: {}; config_version {})",
            data_dir.display(),
            engine.config().version()
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|s| *s).await;
        };
        let server = crate::gateway::serve(listener, engine.clone(), shutdown);
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => r.map_err(|e| e.to_string())?,
            _ = stop_signal => {
                eprintln!("omniroute: shutting down, finishing in-flight requests");
                let _ = stop_tx.send(true);
                if tokio::time::timeout(GRACE, &mut server).await.is_err() {
                    eprintln!("omniroute: in-flight requests still running after {GRACE:?}; stopping anyway");
                }
            }
        }
        let _ = std::fs::remove_file(&addr_file);
        if let Err(e) = engine.projections.stop() {
            eprintln!("omniroute: the read models stopped early: {e}");
        }
        drop(engine);
        let head = log.sync().map_err(|e| e.to_string())?;
        eprintln!("omniroute: log committed up to seq {head}; bye");
        Ok::<_, String>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
