//! `omniroute serve`: the gateway. Zero configuration needed: without `--config` the built-in
//! default (mock providers) is used. Before it appends anything it checks the log's hash chain
//! (from the point verified at the last start to the head) and refuses a broken one. SIGINT/SIGTERM
//! stop accepting, let in-flight requests finish (bounded), commit the log, and exit 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use omniroute_core::event::Hash32;
use omniroute_core::log::{Head, LOG_FILE, Log, LogError, Reader, VERIFIED_CHECKPOINT};

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

/// SIGINT and SIGTERM. The handlers are installed when this is made, not when first polled:
/// `serve` makes it before it says it is listening, so a signal sent right after that line is
/// handled (not the default action, which kills the process without committing the log). The
/// first signal starts the graceful shutdown; a second one cuts it short.
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves at the next SIGINT or SIGTERM (never, if neither handler could be installed).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = one(&mut self.int) => {}
                _ = one(&mut self.term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub fn run(args: ServeArgs) -> CliResult {
    let config = args.data.load_config()?;
    let source = args.data.config_name();
    for w in super::missing_keys(&config) {
        eprintln!("{w}");
    }
    let data_dir: PathBuf = args.data.data_dir()?;
    let listen = args.listen.unwrap_or(config.server.listen);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    // Checked read-only first: a damaged file is refused before anything opens it for writing.
    let verified = check_chain(&data_dir)?;
    runtime.block_on(async move {
        let log = Log::open_with(&data_dir, crate::engine::log_options(&config))
            .map_err(|e| e.to_string())?;
        record_verified(&log, verified)?;
        let engine = Engine::start(config, &source, log.clone()).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut signals = Signals::install();
        // Other commands find this server's admin API through this file (DESIGN.md, process model).
        let addr_file = data_dir.join(super::ADMIN_ADDR_FILE);
        std::fs::write(&addr_file, addr.to_string())
            .map_err(|e| format!("cannot write {}: {e}", addr_file.display()))?;
        // ... and whoever can read this one (its user) is the owner of this server.
        let token = crate::engine::keys::generate()?;
        super::source::write_owner_token(&data_dir, &token)?;
        let _ = engine.owner_token.set(token);
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
            _ = signals.next() => {
                eprintln!("omniroute: shutting down, finishing in-flight requests (a second Ctrl-C stops at once)");
                let _ = stop_tx.send(true);
                tokio::select! {
                    r = tokio::time::timeout(GRACE, &mut server) => if r.is_err() {
                        eprintln!("omniroute: in-flight requests still running after {GRACE:?}; stopping anyway");
                    },
                    // What was acknowledged is committed below (`log.sync`) all the same.
                    _ = signals.next() => {
                        eprintln!("omniroute: second signal: stopping now, without waiting for in-flight requests");
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&addr_file);
        // The next start folds only what comes after this (breakers and cooldowns survive).
        if let Err(e) = engine.checkpoint() {
            eprintln!("omniroute: could not checkpoint the routing state: {e}");
        }
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

/// What `serve` says when it will not append to a log.
fn refuse(dir: &Path, why: impl std::fmt::Display, first_bad: Option<u64>) -> String {
    let keep = match first_bad {
        Some(seq) if seq > 1 => format!(" (it keeps seq 1..={})", seq - 1),
        Some(_) => " (nothing before the break can be kept)".to_string(),
        None => String::new(),
    };
    format!(
        "refusing to serve: {why}. Appending would build on a log that `omniroute log verify` \
         rejects. Copy the valid prefix of the chain into a new data dir with `omniroute log \
         salvage --data-dir {} --to NEW_DIR`{keep}, then serve from NEW_DIR",
        dir.display()
    )
}

/// Verifies the log of `dir` read-only, from the point verified at the last start (or seq 1) to
/// the head. `Ok(None)`: there is no log yet (serve creates it).
pub(super) fn check_chain(dir: &Path) -> Result<Option<Head>, String> {
    let file = dir.join(LOG_FILE);
    match std::fs::metadata(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        // redb writes a header as soon as it creates a file: an empty one is a log that lost its
        // contents, and starting a new chain in it would hide that.
        Ok(m) if m.len() == 0 => {
            return Err(format!(
                "refusing to serve: {} is empty (0 bytes): the log lost its contents. Move it \
                 away (or delete it) to start a new log in {}",
                file.display(),
                dir.display()
            ));
        }
        Ok(_) => {}
    }
    let log = omniroute_core::log::open_read_only(dir).map_err(|e| match e {
        LogError::InUse { .. } => e.to_string(),
        e => refuse(dir, e, None),
    })?;
    let reader = log.reader().map_err(|e| refuse(dir, e, None))?;
    let started = std::time::Instant::now();
    // A missing, unreadable or stale point only means checking from seq 1.
    let from = reader.verified_point().ok().flatten();
    let head = verify_from(dir, &reader, from)?;
    eprintln!(
        "omniroute: log chain verified from seq {} to {} in {:.1?}",
        from.map_or(1, |p| p.seq + 1),
        head.seq,
        started.elapsed()
    );
    Ok(Some(head))
}

fn verify_from(dir: &Path, reader: &Reader, from: Option<Head>) -> Result<Head, String> {
    let from = from.unwrap_or(Head {
        seq: 0,
        hash: Hash32::default(),
    });
    match reader.verify_from(from) {
        Ok(Ok(r)) => Ok(Head {
            seq: r.head_seq,
            hash: r.head_hash,
        }),
        Ok(Err(brk)) => Err(refuse(
            dir,
            format!(
                "the hash chain of {} is broken at seq {}: {}",
                reader.path().display(),
                brk.seq,
                brk.reason
            ),
            Some(brk.seq),
        )),
        Err(e) => Err(refuse(dir, e, None)),
    }
}

/// Stores the verified head as the point the next start verifies from. If the log moved between
/// the read-only check and this open (another process appended in between), the difference is
/// verified first.
pub(super) fn record_verified(log: &Log, verified: Option<Head>) -> Result<(), String> {
    let reader = log.reader().map_err(|e| e.to_string())?;
    let head = reader.head().map_err(|e| e.to_string())?;
    let head = match verified {
        Some(v) if v == head => v,
        v => verify_from(log.dir(), &reader, v)?,
    };
    drop(reader);
    if head.seq == 0 {
        return Ok(());
    }
    log.put_checkpoint(VERIFIED_CHECKPOINT, head.encode())
        .and_then(|h| h.wait())
        .map(|_| ())
        .map_err(|e| format!("cannot record the verified point of the log: {e}"))
}
