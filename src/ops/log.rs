//! Operations on the log itself: stats, chain and decision verification, tail, replay, and the
//! keys recorded in it. Each reads a fresh snapshot off the runtime.

use std::sync::Arc;

use omniroute_core::flow::fold::DecisionReport;
use omniroute_replay::{ReplayReport, ReplayRequest};

use crate::admin::{self, LogStatsView, LogVerifyView, TailParams, TailView};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::auth::{Caller, Scope};
use crate::ops::read::blocking;

/// `GET /api/log/stats`.
pub async fn stats(engine: &Arc<Engine>, caller: &Caller) -> Result<LogStatsView, ApiError> {
    caller.require(&[Scope::ReadHealth])?;
    blocking(engine, admin::log_stats).await
}

/// `GET /api/log/verify`: the hash chain recomputed from seq 1.
pub async fn verify(engine: &Arc<Engine>, caller: &Caller) -> Result<LogVerifyView, ApiError> {
    caller.require(&[Scope::ReadHealth])?;
    blocking(engine, admin::log_verify).await
}

/// `GET /api/log/decisions`: every recorded decision derived again from the log alone.
pub async fn decisions(engine: &Arc<Engine>, caller: &Caller) -> Result<DecisionReport, ApiError> {
    caller.require(&[Scope::ReadHealth])?;
    blocking(engine, |r| admin::log_verify_decisions(r, &mut |_, _| {})).await
}

/// `GET /api/log/tail`: the last records, or those after a seq; with `wait_ms`, an answer with
/// nothing after `after` first waits (at most 10 s) for the next commit.
pub async fn tail(
    engine: &Arc<Engine>,
    caller: &Caller,
    p: TailParams,
) -> Result<TailView, ApiError> {
    caller.require(&[Scope::ReadUsage])?;
    if let (Some(after), Some(wait)) = (p.after, p.wait_ms)
        && engine.log().committed_seq() <= after
    {
        let mut sub = engine.log().subscribe(after);
        let wait = std::time::Duration::from_millis(wait.min(admin::TAIL_WAIT_MAX_MS));
        // Either something was committed after `after`, or the wait is over: answer either way.
        let _ = tokio::time::timeout(wait, sub.next_range()).await;
    }
    blocking(engine, move |r| admin::log_tail(r, &p)).await
}

/// `POST /api/replay`, `omniroute_replay_strategy`: the log rerun under another routing plan.
/// A replay keeps a core busy for seconds: one at a time per process, so admin reads and the
/// request path keep the other core; a second one is told to come back rather than queued.
pub async fn replay(
    engine: &Arc<Engine>,
    caller: &Caller,
    req: ReplayRequest,
) -> Result<ReplayReport, ApiError> {
    caller.require(&[Scope::ReadUsage])?;
    static REPLAYS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    // Held by the blocking job itself, so a client that goes away does not free it early.
    let running = REPLAYS.try_acquire().map_err(|_| {
        ApiError::Busy(
            "a replay is already running on this server; retry when it has finished".into(),
        )
    })?;
    blocking(engine, move |r| {
        let _running = running;
        admin::replay(r, &req, &mut |_, _| {})
    })
    .await
}

/// `GET /api/keys`: every key ever created (owner only).
pub async fn keys(engine: &Arc<Engine>, caller: &Caller) -> Result<Vec<admin::KeyView>, ApiError> {
    caller.require(&[Scope::Owner])?;
    blocking(engine, admin::keys).await
}

/// `POST /api/keys` (owner only): the key, shown this once.
pub async fn create_key(
    engine: &Arc<Engine>,
    caller: &Caller,
    new: admin::NewKey,
) -> Result<admin::CreatedKey, ApiError> {
    caller.require(&[Scope::Owner])?;
    let (key, entry) = engine.create_key(&new.name, new.scopes).await?;
    Ok(admin::CreatedKey {
        key,
        view: entry.into(),
    })
}

/// `DELETE /api/keys/{id}` (owner only): the key whose id starts with `id` stops working at once.
pub async fn revoke_key(
    engine: &Arc<Engine>,
    caller: &Caller,
    id: &str,
) -> Result<admin::KeyView, ApiError> {
    caller.require(&[Scope::Owner])?;
    Ok(engine.revoke_key(id, &caller.actor()).await?.into())
}
