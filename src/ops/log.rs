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

#[derive(Debug, serde::Serialize, serde::Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "camelCase")]
pub struct VerifyArgs {
    /// Also derive every recorded routing decision again from the log alone and compare (a
    /// whole-log fold: seconds on a large log).
    #[serde(default)]
    pub decisions: bool,
}

/// `omniroute_verify_log`: the chain, and the decisions' fidelity when asked.
#[derive(Debug, serde::Serialize, serde::Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct VerifyOut {
    /// Whether the chain holds from seq 1 to the head (and, when checked, every decision
    /// derives again to the recorded one).
    pub ok: bool,
    /// `GET /api/log/verify`: records checked, head, and the first break if any.
    pub chain: crate::ops::read::Answer,
    /// `GET /api/log/decisions` (only with `decisions: true`).
    pub decisions: Option<crate::ops::read::Answer>,
}

pub async fn verify_all(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: VerifyArgs,
) -> Result<VerifyOut, ApiError> {
    use crate::ops::read::Answer;
    let chain = verify(engine, caller).await?;
    let mut ok = chain.broken.is_none();
    let decisions = if args.decisions {
        let d = decisions(engine, caller).await?;
        ok &= d.divergences == 0;
        Some(Answer::of(d)?)
    } else {
        None
    };
    Ok(VerifyOut {
        ok,
        chain: Answer::of(chain)?,
        decisions,
    })
}

/// `omniroute_replay_strategy`: what the recorded traffic would have done under another plan.
#[derive(Debug, serde::Serialize, serde::Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayArgs {
    /// The strategy to replay under: `priority`, `weighted`, `round-robin`, `least-latency`,
    /// `cost`, `least-busy`, `auto` or `tiered`.
    pub strategy: Option<String>,
    /// Only change this combo (every combo when absent).
    pub combo: Option<String>,
    /// Target weights for `weighted`, by model id: `{"gpt-4o": 3, "claude": 1}`.
    #[serde(default)]
    pub weights: std::collections::BTreeMap<String, u32>,
    /// Only requests from this time: unix ms or a UTC date `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Only requests before this time.
    pub to: Option<String>,
    /// Seed of the simulation's draws (same seed, same report). [default: 0]
    pub seed: Option<u64>,
    /// Runs with seeds seed..seed+runs, for the spread of each difference. [default: 1]
    pub runs: Option<u32>,
}

impl From<ReplayArgs> for ReplayRequest {
    fn from(a: ReplayArgs) -> ReplayRequest {
        ReplayRequest {
            strategy: a.strategy,
            combo: a.combo,
            weights: a.weights,
            from: a.from,
            to: a.to,
            seed: a.seed,
            runs: a.runs,
            ..ReplayRequest::default()
        }
    }
}
