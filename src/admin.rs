//! The answers of the admin API and the post-mortem CLI, computed from the read models, the log and
//! the config. The gateway serves them as JSON; the CLI either fetches that JSON from the server that
//! owns the data dir or calls these same functions on the data dir itself, so both print the same.

use std::collections::BTreeMap;

use omniroute_core::config::{Config, OnFailure};
use omniroute_core::event::{CircuitState, Event, Hash32, RequestId, Strategy};
use omniroute_core::flow::fold::DecisionReport;
use omniroute_core::log::Reader;
use omniroute_projections::audit::AuditView;
use omniroute_projections::combos::ComboMetrics;
use omniroute_projections::cost::{CostModel, Query, Report};
use omniroute_projections::explain::Explain;
use omniroute_projections::providers::ProviderView;
use omniroute_projections::sessions::SessionView;
use omniroute_projections::{Mask, Projections};
use omniroute_replay::{ReplayError, ReplayReport, ReplayRequest};
use rmcp::schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::ApiError;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A failed read of the log: its message names the file and seq, and is shown to the caller.
fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::LogUnreadable(e.to_string())
}

/// Parses a request id, with an error that says what one looks like.
pub fn parse_request_id(s: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(s).map_err(|_| {
        ApiError::bad(
            format!(
                "{s:?} is not a request id: expected the 26-character ULID of the \
                 `x-omniroute-request-id` response header"
            ),
            Some("id"),
        )
    })
}

pub fn explain(reader: &Reader, id: &str) -> Result<Explain, ApiError> {
    let rid = parse_request_id(id)?;
    omniroute_projections::explain::explain(reader, rid)
        .map_err(unreadable)?
        .ok_or_else(|| ApiError::NotFound(format!("no request {rid} in the log")))
}

pub fn session(p: &Projections, id: &str, reserved_micros: u64) -> Result<SessionView, ApiError> {
    p.sessions
        .view(id, reserved_micros)
        .ok_or_else(|| ApiError::NotFound(format!("no session {id:?} in the log")))
}

/// The period of a cost report.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, clap::ValueEnum,
)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// The current UTC calendar day.
    Day,
    /// The current ISO week (from Monday, UTC).
    Week,
    /// The current UTC calendar month.
    Month,
    /// One session's whole life (with `session`).
    Session,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Session => "session",
        }
    }
}

/// What a cost report groups by.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, clap::ValueEnum,
)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Provider,
    Model,
    Combo,
    Key,
    Session,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Provider => "provider",
            GroupBy::Model => "model",
            GroupBy::Combo => "combo",
            GroupBy::Key => "key",
            GroupBy::Session => "session",
        }
    }
}

/// The query string of `GET /api/usage/cost` (and the body of its re-pricing `POST`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CostParams {
    /// [default: day]
    pub period: Option<Period>,
    /// Unix ms, or a UTC date `YYYY-MM-DD`.
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<GroupBy>,
    /// The session, for `period=session`.
    pub session: Option<String>,
    /// Re-pricing only: an omniroute config (TOML text) whose model prices replace the recorded
    /// costs, and the name to show for it.
    pub pricing_toml: Option<String>,
    pub pricing_name: Option<String>,
}

/// Unix ms from `1763700000000` or `2025-11-21`.
fn parse_time(s: &str, param: &str) -> Result<u64, ApiError> {
    omniroute_core::time::parse_time(s)
        .map_err(|e| ApiError::bad(format!("{param}={e}"), Some(param)))
}

fn query(params: &CostParams, now_ms: u64) -> Result<Query, ApiError> {
    let from = params
        .from
        .as_deref()
        .map(|s| parse_time(s, "from"))
        .transpose()?;
    let to = params
        .to
        .as_deref()
        .map(|s| parse_time(s, "to"))
        .transpose()?;
    Query::resolve(
        params.period.map(Period::as_str),
        from,
        to,
        params.session.as_deref(),
        params.group_by.map(GroupBy::as_str),
        now_ms,
    )
    .map_err(|m| ApiError::bad(m, Some("period")))
}

pub fn cost(p: &Projections, params: &CostParams, now_ms: u64) -> Result<Report, ApiError> {
    if params.pricing_toml.is_some() {
        return Err(ApiError::bad(
            "re-pricing is a POST to /api/usage/cost/reprice",
            Some("pricing_toml"),
        ));
    }
    p.cost
        .report(&query(params, now_ms)?)
        .map_err(|m| ApiError::bad(m, Some("group_by")))
}

/// Folds the whole log again with the prices of another config instead of the recorded costs.
pub fn reprice(reader: &Reader, params: &CostParams, now_ms: u64) -> Result<Report, ApiError> {
    let name = params.pricing_name.as_deref().unwrap_or("pricing");
    let toml = params.pricing_toml.as_deref().ok_or_else(|| {
        ApiError::bad(
            "pricing_toml is missing: the text of a config whose model prices to use",
            Some("pricing_toml"),
        )
    })?;
    let prices_from = Config::from_toml(toml, name)
        .map_err(|e| ApiError::bad(e.to_string(), Some("pricing_toml")))?;
    let prices: BTreeMap<_, _> = prices_from
        .models
        .iter()
        .filter_map(|m| m.price.map(|p| (m.id.clone(), p)))
        .collect();
    let mut q = query(params, now_ms)?;
    q.repriced = Some(name.to_string());
    let mut p = Projections {
        cost: CostModel::repriced(prices),
        ..Projections::default()
    };
    let mask = Mask::named("cost").map_err(internal)?;
    p.catch_up(reader, mask, |_| {}).map_err(unreadable)?;
    p.cost
        .report(&q)
        .map_err(|m| ApiError::bad(m, Some("group_by")))
}

pub fn providers(p: &Projections) -> Vec<ProviderView> {
    p.providers.view()
}

pub fn audit(p: &Projections) -> AuditView {
    p.audit.view()
}

/// `GET /api/health` and the MCP tool `omniroute_get_health`: uptime, config version, the log's head
/// and health, and the circuit of every target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct HealthView {
    /// `ok` while the log is written; `failing` when requests are refused meanwhile
    /// (`log.on_failure = "refuse"`), `degraded` when they are served unrecorded (`"serve"`).
    pub status: String,
    pub uptime_s: u64,
    pub config_version: String,
    pub log: LogHealthView,
    pub targets: Vec<TargetHealth>,
}

impl HealthView {
    /// Whether the log is being written (`status` is `ok`).
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct LogHealthView {
    /// The last committed record (`null` when the log cannot be read).
    pub head: Option<HeadView>,
    pub failing: bool,
    /// `refuse` or `serve`.
    #[schemars(with = "String")]
    pub on_failure: OnFailure,
    pub failed_events: u64,
    pub unrecorded_events: u64,
    pub reopen_attempts: u64,
    pub recoveries: u64,
    pub last_error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct HeadView {
    pub seq: u64,
    pub hash: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct TargetHealth {
    pub provider: String,
    pub model: String,
    /// `closed`, `open` or `half_open`.
    #[schemars(with = "String")]
    pub circuit: CircuitState,
    /// While the target cools down after a rate limit: no new attempt before this time (unix
    /// ms), and how long that is from now.
    pub cooldown_until_ms: Option<u64>,
    pub cooldown_remaining_ms: Option<u64>,
    /// Attempts running on it now.
    pub in_flight: u32,
}

pub fn health(engine: &Engine) -> HealthView {
    let log = engine.log().health();
    let on_failure = engine.config().log.on_failure;
    let head = engine
        .log()
        .reader()
        .and_then(|r| r.head())
        .ok()
        .map(|h| HeadView {
            seq: h.seq,
            hash: h.hash.to_string(),
        });
    let targets = engine
        .targets()
        .into_iter()
        .map(|t| TargetHealth {
            provider: t.provider,
            model: t.model,
            circuit: t.circuit,
            cooldown_until_ms: t.cooldown_until_ms,
            cooldown_remaining_ms: t.cooldown_remaining_ms,
            in_flight: t.in_flight,
        })
        .collect();
    let status = match (log.failing || log.closed, on_failure) {
        (false, _) => "ok",
        (true, OnFailure::Refuse) => "failing",
        (true, OnFailure::Serve) => "degraded",
    };
    HealthView {
        status: status.into(),
        uptime_s: engine.uptime_s(),
        config_version: engine.config().version().to_string(),
        log: LogHealthView {
            head,
            failing: log.failing,
            on_failure,
            failed_events: log.failed_events,
            unrecorded_events: engine.unrecorded(),
            reopen_attempts: log.reopen_attempts,
            recoveries: log.recoveries,
            last_error: log.last_error,
        },
        targets,
    }
}

/// A configured combo with its metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ComboView {
    pub id: String,
    pub strategy: Strategy,
    pub active: bool,
    /// Model ids, in the combo's order.
    pub targets: Vec<String>,
    pub metrics: ComboMetrics,
}

pub fn combos(p: &Projections, cfg: &Config) -> Vec<ComboView> {
    cfg.combos
        .iter()
        .map(|c| ComboView {
            id: c.id.clone(),
            strategy: c.strategy,
            active: c.active,
            targets: c
                .targets
                .iter()
                .filter_map(|t| cfg.model(t.model).map(|m| m.id.clone()))
                .collect(),
            metrics: p.combos.view(&c.id),
        })
        .collect()
}

/// The read models restored from the reader's checkpoint and caught up to its head, in memory
/// (the CLI's path when no server owns the data dir; nothing is written back).
pub fn load(reader: &Reader) -> Result<Projections, ApiError> {
    Projections::load(reader).map_err(unreadable)
}

// ---- the log itself: `log stats | verify | tail`, `keys list` ----

/// `GET /api/log/stats`: size and contents of the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LogStatsView {
    /// The redb file (on the machine that read it).
    pub path: String,
    pub events: u64,
    pub record_bytes: u64,
    pub event_bytes: u64,
    pub file_bytes: u64,
    pub disk_bytes: u64,
    pub head_seq: u64,
    pub head_hash: Hash32,
    pub invalid_records: u64,
    /// (kind, count) in schema order, every kind included.
    pub per_kind: Vec<(String, u64)>,
}

pub fn log_stats(reader: &Reader) -> Result<LogStatsView, ApiError> {
    let s = reader.stats().map_err(unreadable)?;
    Ok(LogStatsView {
        path: reader.path().display().to_string(),
        events: s.events,
        record_bytes: s.record_bytes,
        event_bytes: s.event_bytes,
        file_bytes: s.file_bytes,
        disk_bytes: s.disk_bytes,
        head_seq: s.head_seq,
        head_hash: s.head_hash,
        invalid_records: s.invalid,
        per_kind: s
            .per_kind
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect(),
    })
}

/// `GET /api/log/verify`: the chain recomputed from seq 1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LogVerifyView {
    pub path: String,
    /// Records checked (up to the break, if there is one).
    pub events: u64,
    pub head_seq: u64,
    pub head_hash: Option<Hash32>,
    /// The first place the chain does not hold; `None` when it is intact.
    pub broken: Option<BreakView>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BreakView {
    pub seq: u64,
    pub reason: String,
}

pub fn log_verify(reader: &Reader) -> Result<LogVerifyView, ApiError> {
    let path = reader.path().display().to_string();
    Ok(match reader.verify().map_err(unreadable)? {
        Ok(r) => LogVerifyView {
            path,
            events: r.events,
            head_seq: r.head_seq,
            head_hash: Some(r.head_hash),
            broken: None,
        },
        Err(b) => LogVerifyView {
            path,
            events: b.seq.saturating_sub(1),
            head_seq: reader.head().map_err(unreadable)?.seq,
            head_hash: None,
            broken: Some(BreakView {
                seq: b.seq,
                reason: b.reason,
            }),
        },
    })
}

/// `GET /api/log/decisions`: every recorded decision derived again from the log alone
/// (`omniroute_core::flow::fold`); `progress(done, total)` follows the fold.
pub fn log_verify_decisions(
    reader: &Reader,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DecisionReport, ApiError> {
    omniroute_core::flow::fold::verify_decisions(reader, progress).map_err(unreadable)
}

/// `POST /api/replay` and `omniroute replay`: the log rerun under another routing plan
/// (DESIGN.md section 6); `progress(done, total)` follows the runs through the log.
pub fn replay(
    reader: &Reader,
    req: &ReplayRequest,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, ApiError> {
    omniroute_replay::replay(reader, req, progress).map_err(|e| match e {
        // The message names the field and lists the valid values; it is the caller's to fix.
        ReplayError::Invalid(m) => ApiError::bad(m, None),
        ReplayError::Log(e) => unreadable(e),
    })
}

/// The query of `GET /api/log/tail`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TailParams {
    /// The last `n` records [default 20] (ignored with `after`).
    pub n: Option<u64>,
    /// Records after this seq instead (to follow the log: pass the last seq you have).
    pub after: Option<u64>,
    /// At most this many records after `after` [default and most: 1000].
    pub limit: Option<u64>,
    /// With `after`: wait up to this long (ms, at most 10000) for a record after it. Only the
    /// server waits; a data dir read without a server has no writer to wait for.
    pub wait_ms: Option<u64>,
}

/// Most records one tail answer holds.
pub const TAIL_MAX: u64 = 100_000;
/// Most records one `after` page holds.
pub const TAIL_PAGE: u64 = 1_000;
/// Longest wait of a follow request.
pub const TAIL_WAIT_MAX_MS: u64 = 10_000;

/// One record as `log tail --json` prints it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TailRecord {
    pub seq: u64,
    pub ts_ms: u64,
    pub schema: u16,
    pub hash: Hash32,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TailView {
    /// The last stored seq when this was read.
    pub last_seq: u64,
    pub records: Vec<TailRecord>,
}

pub fn log_tail(reader: &Reader, p: &TailParams) -> Result<TailView, ApiError> {
    let last = reader.last_seq().map_err(unreadable)?;
    let range = match p.after {
        Some(after) => {
            let limit = p.limit.unwrap_or(TAIL_PAGE).clamp(1, TAIL_PAGE);
            after.saturating_add(1)..=after.saturating_add(limit).min(last)
        }
        None => {
            let n = p.n.unwrap_or(20);
            if n > TAIL_MAX {
                return Err(ApiError::bad(
                    format!("n={n}: at most {TAIL_MAX} records at once"),
                    Some("n"),
                ));
            }
            last.saturating_sub(n) + 1..=last
        }
    };
    let mut records = Vec::new();
    if range.start() <= range.end() {
        for item in reader.range(range).map_err(unreadable)? {
            let stored = item.map_err(unreadable)?;
            let rec = stored.record().map_err(unreadable)?;
            let event = rec.event.to_owned_event().map_err(|e| {
                unreadable(format!(
                    "{}: record {}: {e}",
                    reader.path().display(),
                    rec.seq
                ))
            })?;
            records.push(TailRecord {
                seq: rec.seq,
                ts_ms: rec.ts_ms,
                schema: rec.schema,
                hash: Hash32(*rec.hash),
                event,
            });
        }
    }
    Ok(TailView {
        last_seq: last,
        records,
    })
}

/// `GET /api/keys`: every key ever created (id = blake3 of the key; the key itself is never
/// stored), in creation order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyView {
    pub id: Hash32,
    pub name: String,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

impl From<crate::engine::keys::KeyEntry> for KeyView {
    fn from(k: crate::engine::keys::KeyEntry) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            scopes: k.scopes,
            revoked: k.revoked,
        }
    }
}

/// `POST /api/keys`: what to create.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
}

/// The answer to `POST /api/keys`: the key itself, shown this once.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}

pub fn keys(reader: &Reader) -> Result<Vec<KeyView>, ApiError> {
    Ok(crate::engine::restore::keys(reader)
        .map_err(unreadable)?
        .into_iter()
        .map(KeyView::from)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates_and_millis_parse_and_nonsense_is_refused() {
        assert_eq!(parse_time("2026-11-21", "from").unwrap(), 1_795_219_200_000);
        assert_eq!(parse_time("2000-02-29", "from").unwrap(), 951_782_400_000);
        assert_eq!(parse_time("12345", "from").unwrap(), 12_345);
        for bad in ["2026-13-01", "yesterday", "2026-11", "-5"] {
            assert!(parse_time(bad, "from").is_err(), "{bad}");
        }
    }
}
