//! The post-mortem commands: `explain`, `report cost`, `sessions show`, `providers`, and
//! `projections rebuild`. Each prints a readable report, or with `--json` the admin API's JSON.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use omniroute_projections::cost::Report;
use omniroute_projections::explain::Explain;
use omniroute_projections::hist::Percentiles;
use omniroute_projections::providers::{ProviderView, StatsView};
use omniroute_projections::sessions::SessionView;
use omniroute_projections::{Mask, NAMES, Projections, usd};
use serde::Serialize;

use super::log::{cost, t};
use super::source::{Source, api_message, enc};
use super::{CliResult, DataArgs};
use crate::admin::{self, CostParams, GroupBy, Period};
use crate::ops::routes;
use omniroute_core::time::rfc3339_ms;

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The request id (the `x-omniroute-request-id` response header).
    id: String,
    /// Print the JSON of `GET /api/requests/{id}/explain`.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Cost totals and breakdowns (unpriced usage counted apart, never as $0).
    Cost(CostArgs),
}

#[derive(clap::Args)]
pub struct CostArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The current UTC calendar period, or a session's whole life [default: day]
    #[arg(long, conflicts_with_all = ["from", "to"])]
    period: Option<Period>,
    /// Start, as unix ms or a UTC date YYYY-MM-DD (resolved to the hour).
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive) [default: now]
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Group the totals by
    #[arg(long, value_name = "G")]
    group_by: Option<GroupBy>,
    /// The session, for `--period session`.
    #[arg(long)]
    session: Option<String>,
    /// Price the recorded tokens with this config's model prices instead ("what would it have cost").
    #[arg(long, value_name = "FILE")]
    pricing: Option<PathBuf>,
    /// Print the JSON of `GET /api/usage/cost` instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// One session's snapshot: activity, requests, errors, fallbacks, tokens, cost, budget.
    Show {
        #[command(flatten)]
        data: DataArgs,
        /// The session id (the `x-omniroute-session` header of its requests).
        id: String,
        /// Print the JSON of `GET /api/sessions/{id}` instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct ProvidersArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Print the JSON of `GET /api/providers/metrics` instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ProjectionsCommand {
    /// Refold read models from seq 1 and checkpoint them (all, or the one named).
    Rebuild {
        #[command(flatten)]
        data: DataArgs,
        /// sessions, cost, providers, combos or audit
        name: Option<String>,
    },
}

fn print<T: Serialize>(value: &T, json: bool, text: impl FnOnce(&T) -> String) -> CliResult {
    if json {
        let s = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        println!("{s}");
    } else {
        print!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn explain(args: ExplainArgs) -> CliResult {
    // Refuse a malformed id before touching the data dir.
    admin::parse_request_id(&args.id).map_err(api_message)?;
    let src = Source::open(&args.data)?;
    let x: Explain = src.get_log(&routes::EXPLAIN.at(&[&args.id]), |reader| {
        admin::explain(reader, &args.id)
    })?;
    print(&x, args.json, render_explain)
}

pub fn report(cmd: ReportCommand) -> CliResult {
    let ReportCommand::Cost(a) = cmd;
    let src = Source::open(&a.data)?;
    let mut params = CostParams::from(crate::ops::read::CostArgs {
        period: a.period,
        group_by: a.group_by,
        from: a.from,
        to: a.to,
        session: a.session,
    });
    let now = omniroute_core::log::now_ms();
    let report: Report = match &a.pricing {
        Some(file) => {
            params.pricing_toml = Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
            );
            params.pricing_name = Some(file.display().to_string());
            let body = serde_json::to_value(&params).map_err(|e| e.to_string())?;
            src.post(routes::REPRICE.path, body, |reader| {
                admin::reprice(reader, &params, now)
            })?
        }
        None => {
            let mut q = Vec::new();
            for (k, v) in [
                ("period", params.period.map(Period::as_str)),
                ("from", params.from.as_deref()),
                ("to", params.to.as_deref()),
                ("group_by", params.group_by.map(GroupBy::as_str)),
                ("session", params.session.as_deref()),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(v)));
                }
            }
            src.get(&format!("{}?{}", routes::COST.path, q.join("&")), |p| {
                admin::cost(p, &params, now)
            })?
        }
    };
    print(&report, a.json, render_cost)
}

pub fn sessions(cmd: SessionsCommand) -> CliResult {
    let SessionsCommand::Show { data, id, json } = cmd;
    let src = Source::open(&data)?;
    // Reservations live only in a running server; with none, nothing is reserved.
    let v: SessionView = src.get(&routes::SESSION.at(&[&id]), |p| admin::session(p, &id, 0))?;
    print(&v, json, render_session)
}

pub fn providers(args: ProvidersArgs) -> CliResult {
    let src = Source::open(&args.data)?;
    let v: Vec<ProviderView> = src.get(routes::PROVIDERS.path, |p| Ok(admin::providers(p)))?;
    print(&v, args.json, |v| render_providers(v))
}

pub fn projections(cmd: ProjectionsCommand) -> CliResult {
    let ProjectionsCommand::Rebuild { data, name } = cmd;
    let mask = match &name {
        Some(n) => Mask::named(n).map_err(|e| e.to_string())?,
        None => Mask::ALL,
    };
    let log = data.open_log().map_err(|e| {
        format!("{e} (rebuilding needs the data dir to itself: stop the server first)")
    })?;
    let reader = log.reader().map_err(|e| e.to_string())?;
    let head = reader.head().map_err(|e| e.to_string())?.seq;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(head)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("rebuilding {}", name.as_deref().unwrap_or("all")));
    let started = std::time::Instant::now();
    let mut p = match &name {
        // One model: keep the others as checkpointed, refold just it.
        Some(_) => {
            let mut p = Projections::load(&reader).map_err(|e| e.to_string())?;
            p.rebuild(&reader, mask, |seq| bar.set_position(seq))
                .map_err(|e| e.to_string())?;
            p
        }
        None => Projections::default(),
    };
    p.catch_up(&reader, Mask::ALL, |seq| bar.set_position(seq))
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    log.put_checkpoint(omniroute_projections::CHECKPOINT, p.encode())
        .and_then(|h| h.wait())
        .map_err(|e| e.to_string())?;
    println!(
        "rebuilt {} from {} events in {:.2?}; checkpoint at seq {}",
        name.as_deref()
            .map_or_else(|| NAMES.join(", "), str::to_string),
        head,
        started.elapsed(),
        p.seq
    );
    Ok(ExitCode::SUCCESS)
}

// ---- rendering ------------------------------------------------------------------------------

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn render_explain(x: &Explain) -> String {
    let mut o = String::new();
    let at = |ms: Option<u64>| ms.map_or_else(|| "?".into(), rfc3339_ms);
    let _ = writeln!(
        o,
        "request {}  received {}",
        x.request_id,
        at(x.received_ms)
    );
    if let Some(r) = &x.request {
        let _ = writeln!(
            o,
            "  asked for   {} ({}, ~{} prompt tokens, max_tokens {})",
            r.requested,
            if r.stream {
                "streaming"
            } else {
                "not streaming"
            },
            r.est_prompt_tokens,
            opt(r.max_tokens)
        );
        let _ = writeln!(
            o,
            "  session     {}   key {}   task {}   min tier {}",
            opt(r.session_id.as_deref()),
            r.api_key_id
                .map_or_else(|| "-".into(), |k| k.to_string()[..12].to_string()),
            opt(r.task_hint.as_deref()),
            opt(r.min_tier)
        );
        let _ = writeln!(o, "  config      {}", r.config_version);
    }
    if let Some(d) = &x.route {
        let _ = writeln!(
            o,
            "  route       {} via {}, seed {}, propensity {:.3}",
            d.combo,
            json_name(&d.strategy),
            d.seed,
            d.propensity
        );
        if let Some(i) = &x.route_input {
            let caps: Vec<&str> = [
                (omniroute_core::config::Capability::Tools, "tools"),
                (omniroute_core::config::Capability::Vision, "vision"),
                (omniroute_core::config::Capability::Json, "json"),
                (omniroute_core::config::Capability::Reasoning, "reasoning"),
            ]
            .iter()
            .filter(|(c, _)| i.required & c.bit() != 0)
            .map(|(_, n)| *n)
            .collect();
            let _ = writeln!(
                o,
                "  inputs      max_tokens {}, needs [{}], tiers {}..={}, budget left {}",
                opt(i.max_tokens),
                caps.join(", "),
                i.min_tier.unwrap_or(0),
                i.max_tier.unwrap_or(3),
                i.budget_left_micros
                    .map_or_else(|| "-".into(), |m| format!("${:.6}", m as f64 / 1e6))
            );
        }
        let _ = writeln!(o, "\ncandidates");
        let _ = writeln!(
            o,
            "  {:<3} {:<32} {:>4} {:>8}  {:<40} outcome",
            "#", "target", "tier", "score", "factors (value x weight)"
        );
        for (i, c) in d.candidates.iter().enumerate() {
            let factors: Vec<String> = c
                .factors
                .iter()
                .map(|f| format!("{}={:.3}x{:.2}", f.name, f.value, f.weight))
                .collect();
            let outcome = match (
                &c.excluded,
                d.plan.iter().position(|p| usize::from(*p) == i),
            ) {
                (Some(e), _) => format!("excluded: {} ({})", json_name(&e.reason), e.detail),
                (None, Some(k)) => format!("plan #{}", k + 1),
                (None, None) => "not planned".into(),
            };
            let _ = writeln!(
                o,
                "  {:<3} {:<32} {:>4} {:>8.3}  {:<40} {}",
                i + 1,
                t(&c.target),
                c.tier,
                c.score,
                factors.join(" "),
                outcome
            );
        }
    }
    let _ = writeln!(o, "\nattempts");
    let start = x.received_ms.unwrap_or(0);
    for a in &x.attempts {
        let offset = a.started_ms.map_or_else(
            || "?".into(),
            |s| format!("+{} ms", s.saturating_sub(start)),
        );
        let outcome = match &a.finished {
            None => "no AttemptFinished recorded".into(),
            Some(f) => {
                let head = match &f.error {
                    None => format!("ok {}", opt(f.status)),
                    Some(e) => format!(
                        "{} (status {}){}: {}",
                        json_name(&e.class),
                        opt(f.status),
                        e.retry_after_ms
                            .map_or_else(String::new, |r| format!(", retry after {r} ms")),
                        e.message
                    ),
                };
                format!(
                    "{head}; latency {}, ttft {}, tokens in {} out {}, cost {}",
                    ms(f.latency_us),
                    f.ttft_us.map_or_else(|| "-".into(), ms),
                    f.tokens.input + f.tokens.cached_read + f.tokens.cache_write,
                    f.tokens.output + f.tokens.reasoning,
                    cost(&f.cost)
                )
            }
        };
        let _ = writeln!(
            o,
            "  {:<3} {:<32} {:<8} {}",
            a.attempt,
            t(&a.target),
            offset,
            outcome
        );
        for f in x.fallbacks.iter().filter(|f| f.attempt == a.attempt) {
            let _ = writeln!(
                o,
                "      fallback -> {} because {}",
                t(&f.to),
                json_name(&f.reason)
            );
        }
    }
    for c in &x.circuits {
        let _ = writeln!(
            o,
            "  circuit {}{}: {} -> {} ({})",
            c.change.provider,
            c.change
                .model
                .as_deref()
                .map_or_else(String::new, |m| format!(" {m}")),
            json_name(&c.change.from),
            json_name(&c.change.to),
            c.change.reason
        );
    }
    for b in &x.budget {
        let _ = writeln!(
            o,
            "  budget of session {}: limit {}, spent {}, reserved {}: {}",
            b.session_id,
            cost(&b.limit),
            cost(&b.spent),
            cost(&b.reserved),
            b.outcome
        );
    }
    if let Some(c) = &x.completed {
        let tk = &c.tokens;
        let _ = writeln!(
            o,
            "\ncompleted   status {} after {} attempt(s), {} (ttft {})",
            c.status,
            c.attempts,
            ms(c.total_latency_us),
            c.ttft_us.map_or_else(|| "-".into(), ms)
        );
        let _ = writeln!(
            o,
            "  tokens    input {} cached_read {} cache_write {} reasoning {} output {}",
            tk.input, tk.cached_read, tk.cache_write, tk.reasoning, tk.output
        );
        let _ = writeln!(o, "  cost      {}", cost(&c.cost));
    }
    let _ = writeln!(o, "\nverdict: {}", x.verdict);
    o
}

/// The JSON (snake_case) name of a unit enum value.
fn json_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn render_cost(r: &Report) -> String {
    let mut o = String::new();
    let window = match (r.from_ms, r.to_ms) {
        (Some(f), Some(t)) => format!("{} .. {}", rfc3339_ms(f), rfc3339_ms(t)),
        _ => "the whole session".into(),
    };
    let _ = writeln!(o, "cost, period {} ({window})", r.period);
    if let Some(p) = &r.repriced {
        let _ = writeln!(o, "re-priced with {p} (recorded costs ignored)");
    }
    let row = |o: &mut String, name: &str, c: &omniroute_projections::cost::Cell| {
        let _ = writeln!(
            o,
            "  {:<34} {:>14} {:>9} {:>9} {:>9} {:>9} {:>12}",
            name,
            usd(c.cost_micros),
            c.requests,
            c.unpriced_requests,
            c.attempts,
            c.unpriced_attempts,
            c.tokens.input
                + c.tokens.cached_read
                + c.tokens.cache_write
                + c.tokens.reasoning
                + c.tokens.output
        );
    };
    let _ = writeln!(
        o,
        "  {:<34} {:>14} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "", "cost", "requests", "unpriced", "attempts", "unpriced", "tokens"
    );
    row(&mut o, "total", &r.total);
    if let Some(g) = &r.group_by {
        let _ = writeln!(o, "by {g}");
        for grp in &r.groups {
            row(&mut o, &grp.name, &grp.cell);
        }
    }
    if r.total.unpriced_requests > 0 {
        let _ = writeln!(
            o,
            "note: {} request(s) used unpriced models; their cost is not in the totals",
            r.total.unpriced_requests
        );
    }
    o
}

fn render_session(s: &SessionView) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "session {}", s.id);
    let _ = writeln!(
        o,
        "  active      {} .. {}",
        rfc3339_ms(s.first_ms),
        rfc3339_ms(s.last_ms)
    );
    let _ = writeln!(
        o,
        "  requests    {} ({} errors, {} fallbacks)",
        s.requests, s.errors, s.fallbacks
    );
    let tk = &s.tokens;
    let _ = writeln!(
        o,
        "  tokens      input {} cached_read {} cache_write {} reasoning {} output {}",
        tk.input, tk.cached_read, tk.cache_write, tk.reasoning, tk.output
    );
    let _ = writeln!(
        o,
        "  cost        {} (+{} unpriced requests)",
        usd(s.cost_micros),
        s.unpriced_requests
    );
    let list = |v: &[omniroute_projections::sessions::Count]| {
        v.iter()
            .map(|c| format!("{} ({})", c.name, c.requests))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(o, "  models      {}", list(&s.top_models));
    let _ = writeln!(o, "  providers   {}", list(&s.top_providers));
    match &s.budget {
        None => {
            let _ = writeln!(o, "  budget      none");
        }
        Some(b) => {
            let _ = writeln!(
                o,
                "  budget      limit {}, spent {}, reserved {}, remaining {}, action {}{}, exceeded {} time(s)",
                usd(b.limit_micros),
                usd(b.spent_micros),
                usd(b.reserved_micros),
                usd(b.remaining_micros),
                json_name(&b.action),
                b.degrade_to_tier
                    .map_or_else(String::new, |t| format!(" to tier {t}")),
                b.exceeded
            );
        }
    }
    o
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn lat(p: &Percentiles) -> String {
    if p.count == 0 {
        return "-".into();
    }
    format!("{}/{}/{}", ms(p.p50_us), ms(p.p95_us), ms(p.p99_us))
}

fn render_providers(v: &[ProviderView]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<34} {:>8} {:>8} {:>8} {:<30} {:<30} {:<9} errors",
        "provider / model",
        "attempts",
        "success",
        "cut",
        "latency p50/p95/p99",
        "ttft p50/p95/p99",
        "circuit"
    );
    let row = |o: &mut String, name: &str, s: &StatsView| {
        let errors: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let _ = writeln!(
            o,
            "{:<34} {:>8} {:>8} {:>8} {:<30} {:<30} {:<9} {}",
            name,
            s.attempts,
            pct(s.success_rate),
            pct(s.stream_cut_rate),
            lat(&s.latency),
            lat(&s.ttft),
            s.circuit.as_ref().map_or_else(|| "-".into(), json_name),
            errors.join(" ")
        );
    };
    for p in v {
        row(&mut o, &p.stats.name, &p.stats);
        for m in &p.models {
            row(&mut o, &format!("  {}", m.name), m);
        }
    }
    if v.is_empty() {
        let _ = writeln!(o, "(no attempts recorded)");
    }
    o
}
