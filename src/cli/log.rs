//! `omniroute log verify | tail | stats | salvage | generate`. The first three only read: they ask
//! the server that owns the data dir, or open it read-only (see [`super::source`]); both paths
//! compute their answer with the same functions of [`crate::admin`].

use crate::ops::routes;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use omniroute_core::event::{Cost, Event, Target};
use omniroute_core::flow::fold::DecisionReport;
use omniroute_core::log::LOG_FILE;

use super::source::{Failure, Source, api_message, call};
use super::{CliResult, DataArgs};
use crate::admin::{self, LogStatsView, LogVerifyView, TailParams, TailRecord, TailView};
use omniroute_core::time::rfc3339_ms;

#[derive(Subcommand)]
pub enum LogCommand {
    /// Recompute the hash chain from seq 1; exit 1 naming the first bad seq. With
    /// `--decisions`, derive every recorded routing decision again from the log alone instead;
    /// exit 1 naming the first request that diverges and the field that differs.
    Verify {
        #[command(flatten)]
        data: DataArgs,
        /// Re-derive every recorded `RouteDecided` (budget verdict, inputs, Health, plan) from
        /// the log alone and compare byte for byte.
        #[arg(long)]
        decisions: bool,
        /// With `--decisions`: print the report as JSON (same exit codes).
        #[arg(long, requires = "decisions")]
        json: bool,
    },
    /// Print the last events.
    Tail {
        #[command(flatten)]
        data: DataArgs,
        /// How many events to print.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        n: u64,
        /// Keep printing events as they are committed (until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Append synthetic request stories (5 events each), for trying the log before real traffic.
    Generate {
        #[command(flatten)]
        data: DataArgs,
        /// How many synthetic requests to record.
        #[arg(long, default_value_t = 1000)]
        requests: u64,
    },
    /// Events, bytes on disk, bytes per event, head, events per kind.
    Stats {
        #[command(flatten)]
        data: DataArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy the longest valid prefix of a damaged log's chain into a new data dir, and report what
    /// was left behind. The damaged log is only read.
    Salvage {
        #[command(flatten)]
        data: DataArgs,
        /// The new data dir (created; it must not hold a log yet).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
}

pub fn run(cmd: LogCommand) -> CliResult {
    match cmd {
        LogCommand::Verify {
            data,
            decisions,
            json,
        } => {
            if decisions {
                verify_decisions(&data, json)
            } else {
                verify(&data)
            }
        }
        LogCommand::Tail {
            data,
            n,
            follow,
            json,
        } => tail(&data, n, follow, json),
        LogCommand::Stats { data, json } => stats(&data, json),
        LogCommand::Generate { data, requests } => generate(&data, requests),
        LogCommand::Salvage { data, to } => salvage(&data, &to),
    }
}

fn verify(data: &DataArgs) -> CliResult {
    let src = Source::open(data)?;
    let started = std::time::Instant::now();
    let v: LogVerifyView = src.get_log(routes::LOG_VERIFY.path, admin::log_verify)?;
    match &v.broken {
        None => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "ok: {} events, chain intact, head seq {} hash {} ({:.0} events/s)",
                v.events,
                v.head_seq,
                v.head_hash.map(|h| h.to_string()).unwrap_or_default(),
                v.events as f64 / secs.max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(b) => {
            println!("broken: seq {}: {} in {}", b.seq, b.reason, v.path);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn verify_decisions(data: &DataArgs, json: bool) -> CliResult {
    use std::io::IsTerminal;
    let src = Source::open(data)?;
    let started = std::time::Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "re-deriving decisions [{bar:40}] {pos}/{len} events ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if matches!(src, Source::Remote { .. }) {
        // The server folds; there is no position to show, only that it is working.
        bar.set_message("asking the server to re-derive decisions");
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let r: DecisionReport = src.get_log(routes::LOG_DECISIONS.path, |reader| {
        admin::log_verify_decisions(reader, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
    })?;
    bar.finish_and_clear();
    let failed = r.first_divergence.is_some();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
        );
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let skipped = if r.unverifiable > 0 {
        format!(
            "; {} could not be re-derived ({})",
            r.unverifiable,
            r.first_unverifiable
                .as_deref()
                .unwrap_or("no inputs recorded")
        )
    } else {
        String::new()
    };
    match &r.first_divergence {
        None => {
            println!(
                "ok: {} of {} decisions re-derived from the log alone and reproduced byte for byte ({:.2}%){skipped}; {} events folded ({:.0} decisions/s)",
                r.reproduced,
                r.checked,
                r.reproduced_pct(),
                r.events,
                r.checked as f64 / secs
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(d) => {
            println!(
                "diverged: {} of {} decisions reproduced ({:.2}%), {} differ{skipped}\nfirst: seq {} request {}: field `{}` recorded {} but derived {}",
                r.reproduced,
                r.checked,
                r.reproduced_pct(),
                r.divergences,
                d.seq,
                d.request_id,
                d.field,
                d.recorded,
                d.derived
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_record(out: &mut impl Write, r: &TailRecord, json: bool) -> Result<(), String> {
    let line = if json {
        serde_json::to_string(r).map_err(|e| e.to_string())?
    } else {
        text_line(r.seq, r.ts_ms, &r.event)
    };
    writeln!(out, "{line}").map_err(|e| e.to_string())
}

fn print_all(records: &[TailRecord], json: bool) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    for r in records {
        print_record(&mut out, r, json)?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// The `GET /api/log/tail` path for these parameters.
fn tail_path(p: &TailParams) -> String {
    let q: Vec<String> = [
        ("n", p.n),
        ("after", p.after),
        ("limit", p.limit),
        ("wait_ms", p.wait_ms),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect();
    format!("{}?{}", routes::LOG_TAIL.path, q.join("&"))
}

fn tail(data: &DataArgs, n: u64, follow: bool, json: bool) -> CliResult {
    let src = Source::open(data)?;
    let first = TailParams {
        n: Some(n),
        ..TailParams::default()
    };
    let v: TailView = src.get_log(&tail_path(&first), |r| admin::log_tail(r, &first))?;
    print_all(&v.records, json)?;
    if follow {
        let dir = data.data_dir()?;
        let after = v.records.last().map_or(v.last_seq, |r| r.seq);
        drop(src);
        self::follow(data, &dir, after, json)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// How often a follow without a server looks at the file for a change.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// How long one follow request to a server waits for new records.
const FOLLOW_WAIT_MS: u64 = 5_000;

/// Prints records after `after` as they are committed, until interrupted. While a server owns the
/// data dir its admin API is long-polled; otherwise the file is watched and read (read-only)
/// when it changes. No handle is kept open between reads, so a server can start meanwhile (and is
/// then followed through its API).
fn follow(data: &DataArgs, dir: &Path, mut after: u64, json: bool) -> Result<(), String> {
    let file = dir.join(LOG_FILE);
    let stamp = |f: &Path| {
        std::fs::metadata(f)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut seen = stamp(&file);
    loop {
        let src = match Source::open(data) {
            Ok(s) => s,
            // A server may be between taking the file and publishing its address.
            Err(_) => {
                std::thread::sleep(FOLLOW_POLL);
                continue;
            }
        };
        let p = TailParams {
            after: Some(after),
            wait_ms: Some(FOLLOW_WAIT_MS),
            ..TailParams::default()
        };
        let page: Result<TailView, Failure> = match &src {
            Source::Local { log } => log
                .reader()
                .map_err(|e| e.to_string())
                .and_then(|r| admin::log_tail(&r, &p).map_err(api_message))
                .map_err(Failure::Answer),
            Source::Remote { base, token } => call(base, token.as_deref(), &tail_path(&p), None),
        };
        let local = matches!(src, Source::Local { .. });
        drop(src);
        let mut unreachable = false;
        match page {
            Ok(v) => {
                print_all(&v.records, json)?;
                if let Some(last) = v.records.last() {
                    after = last.seq;
                    continue;
                }
            }
            Err(Failure::Unreachable(_)) => unreachable = true,
            Err(Failure::Answer(m)) => return Err(m),
        }
        if local {
            // Nothing new, and no writer: wait until the file changes (a server starting, or
            // one appending after this read).
            loop {
                std::thread::sleep(FOLLOW_POLL);
                let now = stamp(&file);
                if now != seen {
                    seen = now;
                    break;
                }
            }
        } else if unreachable {
            // The server went away (or is still starting): look again shortly.
            std::thread::sleep(FOLLOW_POLL);
        }
        // A server's empty answer already waited for news: ask again at once.
    }
}

pub(super) fn t(target: &Target) -> String {
    format!("{}/{}", target.provider, target.model)
}

pub(super) fn cost(c: &Cost) -> String {
    match c {
        Cost::Unpriced => "unpriced".into(),
        Cost::Micros(m) => format!("${}.{:06}", m / 1_000_000, m % 1_000_000),
    }
}

fn ms(us: u64) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}

fn decided_line(e: &omniroute_core::event::RouteDecided) -> String {
    let plan: Vec<String> = e
        .plan
        .iter()
        .filter_map(|&i| e.candidates.get(usize::from(i)))
        .map(|c| t(&c.target))
        .collect();
    let excluded = e.candidates.iter().filter(|c| c.excluded.is_some()).count();
    format!(
        "combo={} strategy={:?} plan=[{}] excluded={excluded} seed={}",
        e.combo,
        e.strategy,
        plan.join(", "),
        e.seed
    )
}

/// One human line: seq, time, kind, request id, and the few fields that tell the story.
fn text_line(seq: u64, ts_ms: u64, event: &Event) -> String {
    let rid = event
        .request_id()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into());
    let detail = match event {
        Event::RequestReceived(e) => format!(
            "model={} stream={} session={} est_tokens={}",
            e.requested,
            e.stream,
            e.session_id.as_deref().unwrap_or("-"),
            e.est_prompt_tokens
        ),
        Event::RouteDecided(e) => decided_line(e),
        Event::RouteDecidedV2(e) => format!(
            "{} max_tokens={} max_tier={}",
            decided_line(&e.decided),
            e.input
                .max_tokens
                .map_or_else(|| "-".into(), |m| m.to_string()),
            e.input
                .max_tier
                .map_or_else(|| "-".into(), |m| m.to_string())
        ),
        Event::AttemptStarted(e) => format!("#{} {}", e.attempt, t(&e.target)),
        Event::AttemptFinished(e) => {
            let outcome = match &e.error {
                None => "ok".to_string(),
                Some(err) => format!("{:?}", err.class),
            };
            format!(
                "#{} {} {} status={} {} cost={}",
                e.attempt,
                t(&e.target),
                outcome,
                e.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                ms(e.latency_us),
                cost(&e.cost)
            )
        }
        Event::FallbackTriggered(e) => {
            format!("{} -> {} ({:?})", t(&e.from), t(&e.to), e.reason)
        }
        Event::RequestCompleted(e) => format!(
            "status={} via={} attempts={} {} cost={}",
            e.status,
            e.target.as_ref().map(t).unwrap_or_else(|| "-".into()),
            e.attempts,
            ms(e.total_latency_us),
            cost(&e.cost)
        ),
        Event::CircuitChanged(e) => format!(
            "{}/{} {:?} -> {:?} ({})",
            e.provider,
            e.model.as_deref().unwrap_or("*"),
            e.from,
            e.to,
            e.reason
        ),
        Event::BudgetGuardSet(e) => format!(
            "session={} limit={} action={:?}",
            e.session_id,
            cost(&e.limit),
            e.action
        ),
        Event::BudgetExceeded(e) => format!(
            "session={} spent={} limit={} -> {}",
            e.session_id,
            cost(&e.spent),
            cost(&e.limit),
            e.outcome
        ),
        Event::ConfigChanged(e) => format!("{:?} by {}: {}", e.kind, e.actor, e.detail),
        Event::ConfigChangedV2(e) => format!(
            "{:?} by {}: {} (version {}, {} field(s) changed)",
            e.kind,
            e.actor,
            e.detail,
            e.config_version,
            e.changes.len()
        ),
        Event::ToolCalled(e) => format!("{} ok={} {}", e.tool, e.ok, ms(e.duration_us)),
        Event::CacheHit(e) => format!("{} {}", e.cache_kind, e.key_hash),
        Event::KeyCreated(e) => format!("{} scopes={}", e.name, e.scopes.join(",")),
        Event::KeyRevoked(e) => format!("{} by {}", e.key_id, e.actor),
    };
    format!(
        "{:>8}  {}  {:<17}  {:<26}  {}",
        seq,
        rfc3339_ms(ts_ms),
        event.kind(),
        rid,
        detail
    )
}

fn stats(data: &DataArgs, json: bool) -> CliResult {
    let s: LogStatsView = Source::open(data)?.get_log(routes::LOG_STATS.path, admin::log_stats)?;
    let per_event = |b: u64| {
        if s.events == 0 {
            0.0
        } else {
            b as f64 / s.events as f64
        }
    };
    let ratio = |of: u64| {
        if of == 0 {
            0.0
        } else {
            s.disk_bytes as f64 / of as f64
        }
    };
    if json {
        let per_kind: serde_json::Map<String, serde_json::Value> = s
            .per_kind
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let v = serde_json::json!({
            "path": s.path,
            "events": s.events,
            "record_bytes": s.record_bytes,
            "event_bytes": s.event_bytes,
            "file_bytes": s.file_bytes,
            "disk_bytes": s.disk_bytes,
            "disk_bytes_per_event": per_event(s.disk_bytes),
            "record_bytes_per_event": per_event(s.record_bytes),
            "disk_to_event_bytes": ratio(s.event_bytes),
            "disk_to_record_bytes": ratio(s.record_bytes),
            "head_seq": s.head_seq,
            "head_hash": s.head_hash.to_string(),
            "invalid_records": s.invalid_records,
            "per_kind": per_kind,
        });
        println!("{v}");
    } else {
        println!("log        {}", s.path);
        println!("events     {}", s.events);
        println!(
            "on disk    {} bytes ({:.1} per event, index included): {:.2}x the event bytes, {:.2}x the record bytes",
            s.disk_bytes,
            per_event(s.disk_bytes),
            ratio(s.event_bytes),
            ratio(s.record_bytes),
        );
        println!(
            "file       {} bytes long (redb grows it in doublings; the unused tail is sparse)",
            s.file_bytes
        );
        println!(
            "records    {:.1} bytes per event ({:.1} event bytes + envelope)",
            per_event(s.record_bytes),
            per_event(s.event_bytes)
        );
        println!("head       seq {} hash {}", s.head_seq, s.head_hash);
        if s.invalid_records > 0 {
            println!(
                "invalid    {} records fail validation (run `omniroute log verify`)",
                s.invalid_records
            );
        }
        println!("per kind");
        for (k, v) in s.per_kind.iter().filter(|(_, v)| *v > 0) {
            println!("  {k:<18} {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Synthetic traffic never goes into the live, append-only log (where its cost would stay in every
/// report): only into a data dir named with `--data-dir` that is not the config's `data_dir`.
fn generate(data: &DataArgs, requests: u64) -> CliResult {
    let Some(dir) = &data.data_dir else {
        return Err(
            "log generate writes synthetic traffic and needs a scratch data dir named \
            explicitly: pass --data-dir DIR (never the live one)"
                .into(),
        );
    };
    let live = data.load_config()?.server.data_dir;
    // Compared as resolved paths: `./x`, `x` and a symlink to it are the same dir.
    let same = |a: &std::path::Path, b: &std::path::Path| {
        let resolve = |p: &std::path::Path| {
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        resolve(a) == resolve(b)
    };
    if same(dir, &live) {
        return Err(format!(
            "log generate refuses to write synthetic traffic into {}: it is the configured \
             data dir (server.data_dir), whose append-only log would keep it in every report; \
             pass --data-dir with a scratch directory",
            dir.display()
        ));
    }
    let log = data.open_log()?;
    let first = log.committed_seq();
    for n in 0..requests {
        for event in omniroute_core::sample::request_story(first + n) {
            // Batched mode: the handle is dropped; `sync` below waits for all of them at once.
            drop(log.append(&event).map_err(|e| e.to_string())?);
        }
    }
    let head = log.sync().map_err(|e| e.to_string())?;
    println!(
        "appended {} events ({requests} requests); head seq {head}",
        head - first
    );
    Ok(ExitCode::SUCCESS)
}

fn salvage(data: &DataArgs, to: &Path) -> CliResult {
    let dir = data.data_dir()?;
    let log = omniroute_core::log::open_read_only(&dir).map_err(|e| match e {
        omniroute_core::log::LogError::InUse { .. } => {
            format!("{e} (salvage reads the file itself: stop the server first)")
        }
        e => e.to_string(),
    })?;
    let reader = log.reader().map_err(|e| e.to_string())?;
    let r = omniroute_core::log::salvage(&reader, to).map_err(|e| e.to_string())?;
    println!(
        "salvaged {} into {}",
        log.path().display(),
        r.path.display()
    );
    if r.head.seq == 0 {
        println!("kept       nothing: not even seq 1 could be copied");
    } else {
        println!(
            "kept       seq 1..={} (head seq {} hash {})",
            r.head.seq, r.head.seq, r.head.hash
        );
    }
    match &r.left_behind {
        None if r.source_head.seq > r.head.seq => println!(
            "left       the old log's head record said seq {}, but its records end at seq {}",
            r.source_head.seq, r.head.seq
        ),
        None => println!("left       nothing: the chain holds to its last record"),
        Some(l) => {
            println!(
                "left       everything from seq {}: {}",
                l.from_seq, l.reason
            );
            println!(
                "           after it: {} readable record(s), {} damaged{}",
                l.readable_after,
                l.damaged_after,
                l.scan_error
                    .as_ref()
                    .map(|e| format!("; the scan stopped early: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    println!(
        "blobs      {} copied, {} unreadable or damaged; checkpoints not copied (read models rebuild)",
        r.blobs_copied, r.blobs_lost
    );
    println!(
        "next       omniroute log verify --data-dir {}; then serve from that data dir",
        to.display()
    );
    Ok(ExitCode::SUCCESS)
}
