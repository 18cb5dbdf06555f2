//! Renderings of a [`ReplayReport`] for people and programs: an aligned terminal table,
//! Markdown (pull requests, notes), CSV (spreadsheets) and pretty JSON (the API's own shape).
//! The table, the Markdown and the HTML page ([`crate::html`]) all print one document model
//! built by [`document`], so they say the same things in the same order and a change to the
//! wording is made once.

use std::fmt::Write as _;

use crate::report::{Estimate, Metrics, ReplayReport, Share};

/// An output format of `omniroute replay --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
    Csv,
}

/// The names [`Format::parse`] accepts, in the order the help lists them.
pub const FORMAT_NAMES: [&str; 4] = ["table", "json", "markdown", "csv"];

impl Format {
    /// A format by name; the error lists the valid names.
    pub fn parse(name: &str) -> Result<Format, String> {
        match name {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "markdown" => Ok(Format::Markdown),
            "csv" => Ok(Format::Csv),
            _ => Err(format!(
                "unknown format {name:?}; valid formats: {}",
                FORMAT_NAMES.join(", ")
            )),
        }
    }
}

/// The report in `format`.
pub fn render(report: &ReplayReport, format: Format) -> String {
    match format {
        Format::Table => text(&document(report)),
        Format::Markdown => markdown(&document(report)),
        Format::Csv => csv(report),
        Format::Json => json(report),
    }
}

/// Pretty JSON, the shape `POST /api/replay` answers with. The report holds only structs and
/// vectors (no hash maps), so equal reports give equal bytes.
fn json(report: &ReplayReport) -> String {
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        // Plain data cannot fail to serialise; should it ever, the output still says why in
        // the format that was asked for.
        serde_json::json!({ "error": e.to_string() }).to_string()
    });
    s.push('\n');
    s
}

// ---- the document model ---------------------------------------------------------------------

/// One piece of the document the text formats print.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Block {
    /// A heading: level 1 for the document, 2 for a section.
    Title(u8, String),
    /// `name: value` lines.
    Fields(Vec<(String, String)>),
    /// A paragraph.
    Text(String),
    /// Something the reader must not miss (the report's message, targets not simulated).
    Note(String),
    Table(Table),
}

/// A table of text cells; `right[i]` aligns column `i` to the right (numbers).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Table {
    pub head: Vec<String>,
    pub right: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str], right: &[bool]) -> Table {
        Table {
            head: head.iter().map(|h| h.to_string()).collect(),
            right: right.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// The report as a document: header, comparison, per target, outcomes, fidelity, changed
/// routes, spread, inverse-propensity check.
pub(crate) fn document(r: &ReplayReport) -> Vec<Block> {
    let mut d = vec![
        Block::Title(1, "omniroute replay".into()),
        Block::Fields(vec![
            ("plan".into(), plan_line(r)),
            ("filter".into(), filter_line(r)),
            ("requests".into(), requests_line(r)),
        ]),
    ];
    if let Some(m) = &r.message {
        d.push(Block::Note(m.clone()));
        // Nothing was compared: the message is the answer, and a table of zeros would only
        // hide it.
        if r.requests == 0 {
            return d;
        }
    }
    d.push(Block::Title(2, "recorded vs simulated".into()));
    d.push(Block::Table(comparison_table(r)));
    d.push(Block::Title(2, "traffic per target".into()));
    d.push(shares_block(r));
    outcomes(r, &mut d);
    if let Some(f) = &r.fidelity {
        d.push(Block::Title(2, "fidelity".into()));
        d.push(Block::Text(format!(
            "plan equals the recording: {:.2}% of decisions and {:.2}% of outcomes reproduced \
             ({} of {} decisions, {} of {} outcomes)",
            f.decisions_pct,
            f.outcomes_pct,
            f.decisions_reproduced,
            f.decisions,
            f.outcomes_reproduced,
            f.requests
        )));
    }
    changed(r, &mut d);
    spread(r, &mut d);
    ips(r, &mut d);
    d
}

fn plan_line(r: &ReplayReport) -> String {
    let p = &r.plan;
    let mut s = p.description.clone();
    if p.runs > 1 {
        let last = p.seed.saturating_add(u64::from(p.runs) - 1);
        let _ = write!(s, "; {} runs, seeds {}..={}", p.runs, p.seed, last);
    } else {
        let _ = write!(s, "; seed {}", p.seed);
    }
    if p.equals_recording {
        s.push_str(" (equals the recording)");
    }
    s
}

fn filter_line(r: &ReplayReport) -> String {
    if r.filter.is_empty() {
        "all recorded requests".into()
    } else {
        r.filter.clone()
    }
}

fn requests_line(r: &ReplayReport) -> String {
    let mut s = format!("{} re-simulated", r.requests);
    if r.background > 0 {
        let _ = write!(
            s,
            "; {} applied as recorded in the background",
            r.background
        );
        if r.incomplete > 0 {
            let _ = write!(s, " ({} of them never completed)", r.incomplete);
        }
    }
    s
}

// ---- values and their units -------------------------------------------------------------------

/// How a number reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Count,
    /// A fraction (0..=1), shown in percent; differences in percentage points.
    Rate,
    /// Micro-dollars, shown in dollars.
    Usd,
    Ms,
    /// Anything else (spread metrics this renderer does not know).
    Plain,
}

impl Unit {
    /// The unit of a spread metric, from its name (`success_rate`, `cost_micros`,
    /// `latency_p95_ms`, ...).
    pub(crate) fn of_metric(name: &str) -> Unit {
        if name.ends_with("_ms") {
            Unit::Ms
        } else if name.contains("micros") {
            Unit::Usd
        } else if name.ends_with("rate") {
            Unit::Rate
        } else if matches!(
            name,
            "requests"
                | "succeeded"
                | "not_simulated"
                | "attempts"
                | "fallbacks"
                | "retries"
                | "circuit_opens"
                | "budget_blocked"
                | "budget_degraded"
                | "unpriced"
        ) {
            Unit::Count
        } else {
            Unit::Plain
        }
    }

    /// `v` as a value (`97.30%`, `$0.001200`, `812.4 ms`).
    pub(crate) fn value(self, v: f64) -> String {
        match self {
            Unit::Count => count(v),
            Unit::Rate => format!("{:.2}%", v * 100.0),
            Unit::Usd => usd(v),
            Unit::Ms => ms(v),
            Unit::Plain => format!("{v:.3}"),
        }
    }

    /// `v` as a signed difference (`+0.80 pp`, `-$0.000100`, `+3.1 ms`).
    pub(crate) fn delta(self, v: f64) -> String {
        // No change reads as one plain 0 in every unit, not `+0.00 pp` or `+$0.000000`.
        if v == 0.0 {
            return "0".into();
        }
        let sign = if v < 0.0 { "-" } else { "+" };
        let a = v.abs();
        match self {
            Unit::Count => format!("{sign}{}", count(a)),
            Unit::Rate => format!("{sign}{:.2} pp", a * 100.0),
            Unit::Usd => format!("{sign}{}", usd(a)),
            Unit::Ms => format!("{sign}{}", ms(a)),
            Unit::Plain => format!("{sign}{a:.3}"),
        }
    }

    /// The number a chart plots for `v` (percent for rates, dollars for money).
    pub(crate) fn scale(self, v: f64) -> f64 {
        match self {
            Unit::Rate => v * 100.0,
            Unit::Usd => v / 1e6,
            _ => v,
        }
    }

    /// The axis caption of [`Unit::scale`]d values.
    pub(crate) fn axis(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Rate => "percentage points",
            Unit::Usd => "$",
            Unit::Ms => "ms",
            Unit::Plain => "",
        }
    }
}

/// Micro-dollars as dollars: six decimals like `report cost`, more for fractions of a micro-dollar.
pub(crate) fn usd(micros: f64) -> String {
    let d = micros / 1e6;
    let a = d.abs();
    // Six decimals (micro-dollars) show every recorded cost exactly. Averages and percentiles
    // fall between micro-dollars, and for cheap models they are a few micro-dollars, so those
    // under $0.001 keep three significant digits (down to nano-dollars) instead of reading
    // $0.000010 +- $0.000000.
    let decimals = if a >= 1e-3 || micros.fract() == 0.0 || !a.is_finite() {
        6
    } else {
        ((-a.log10()).floor() as usize + 3).clamp(6, 9)
    };
    format!("${d:.decimals$}")
}

/// A count; percentiles over runs can fall between whole numbers, so those keep one decimal.
fn count(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Milliseconds: one decimal, two under 10 ms (local and mock upstreams answer in fractions of
/// one, where one decimal would read 0.0).
fn ms(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// One row of the comparison: a metric, recorded and simulated.
#[derive(Debug, Clone)]
pub(crate) struct Cmp {
    pub label: &'static str,
    /// The CSV name, with its unit (`cost_micros`, `latency_p95_ms`).
    pub key: &'static str,
    pub unit: Unit,
    pub recorded: Option<f64>,
    pub simulated: Option<f64>,
}

impl Cmp {
    fn difference(&self) -> Option<f64> {
        Some(self.simulated? - self.recorded?)
    }

    /// The difference with, where it means something, the relative change.
    fn difference_cell(&self) -> String {
        let Some(d) = self.difference() else {
            return "-".into();
        };
        let mut s = self.unit.delta(d);
        if let Some(rec) = self.recorded
            && rec > 0.0
            && d != 0.0
            && matches!(self.unit, Unit::Count | Unit::Usd | Unit::Ms)
            && !(self.unit == Unit::Count && d.abs() < 0.5)
        {
            let _ = write!(s, " ({:+.1}%)", d / rec * 100.0);
        }
        s
    }
}

pub(crate) fn comparisons(r: &ReplayReport) -> Vec<Cmp> {
    let (a, b) = (&r.recorded, &r.simulated);
    let both = |label, key, unit, f: fn(&Metrics) -> f64| Cmp {
        label,
        key,
        unit,
        recorded: Some(f(a)),
        simulated: Some(f(b)),
    };
    let mut v = vec![
        both("requests", "requests", Unit::Count, |m| m.requests as f64),
        both("not simulated", "not_simulated", Unit::Count, |m| {
            m.not_simulated as f64
        }),
        both("succeeded", "succeeded", Unit::Count, |m| {
            m.succeeded as f64
        }),
        both("success rate", "success_rate", Unit::Rate, |m| {
            m.success_rate
        }),
        both("fallbacks", "fallbacks", Unit::Count, |m| {
            m.fallbacks as f64
        }),
        both("retries", "retries", Unit::Count, |m| m.retries as f64),
        both("attempts", "attempts", Unit::Count, |m| m.attempts as f64),
        both("circuit opens", "circuit_opens", Unit::Count, |m| {
            m.circuit_opens as f64
        }),
        both("total cost", "cost_micros", Unit::Usd, |m| {
            m.cost_micros as f64
        }),
        both(
            "cost per request",
            "cost_per_request_micros",
            Unit::Usd,
            |m| m.cost_per_request_micros,
        ),
        both("unpriced requests", "unpriced", Unit::Count, |m| {
            m.unpriced as f64
        }),
        both("latency p50", "latency_p50_ms", Unit::Ms, |m| {
            m.latency_ms.p50
        }),
        both("latency p95", "latency_p95_ms", Unit::Ms, |m| {
            m.latency_ms.p95
        }),
        both("latency p99", "latency_p99_ms", Unit::Ms, |m| {
            m.latency_ms.p99
        }),
    ];
    if a.ttft_ms.is_some() || b.ttft_ms.is_some() {
        let ttft = |label, key, f: fn(&crate::report::Percentiles) -> f64| Cmp {
            label,
            key,
            unit: Unit::Ms,
            recorded: a.ttft_ms.as_ref().map(f),
            simulated: b.ttft_ms.as_ref().map(f),
        };
        v.push(ttft("TTFT p50", "ttft_p50_ms", |p| p.p50));
        v.push(ttft("TTFT p95", "ttft_p95_ms", |p| p.p95));
        v.push(ttft("TTFT p99", "ttft_p99_ms", |p| p.p99));
    }
    v.push(both("budget blocks", "budget_blocked", Unit::Count, |m| {
        m.budget_blocked as f64
    }));
    v.push(both(
        "budget degrades",
        "budget_degraded",
        Unit::Count,
        |m| m.budget_degraded as f64,
    ));
    v
}

pub(crate) fn comparison_table(r: &ReplayReport) -> Table {
    let mut t = Table::new(
        &["metric", "recorded", "simulated", "difference"],
        &[false, true, true, true],
    );
    for c in comparisons(r) {
        let cell = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| c.unit.value(v));
        t.row(vec![
            c.label.into(),
            cell(c.recorded),
            cell(c.simulated),
            c.difference_cell(),
        ]);
    }
    t
}

// ---- per target ---------------------------------------------------------------------------------

/// A target's recorded and simulated share (either may be absent).
pub(crate) struct TargetRow<'a> {
    pub target: &'a str,
    pub provider: &'a str,
    pub recorded: Option<&'a Share>,
    pub simulated: Option<&'a Share>,
}

/// Every target of either side: the recorded ones in their order (largest first), then those
/// only the simulation used.
pub(crate) fn target_rows(r: &ReplayReport) -> Vec<TargetRow<'_>> {
    let find = |shares: &'_ [Share], t: &str| -> Option<usize> {
        shares.iter().position(|s| s.target == t)
    };
    let mut rows: Vec<TargetRow<'_>> = r
        .recorded
        .shares
        .iter()
        .map(|s| TargetRow {
            target: &s.target,
            provider: &s.provider,
            recorded: Some(s),
            simulated: find(&r.simulated.shares, &s.target).and_then(|i| r.simulated.shares.get(i)),
        })
        .collect();
    for s in &r.simulated.shares {
        if find(&r.recorded.shares, &s.target).is_none() {
            rows.push(TargetRow {
                target: &s.target,
                provider: &s.provider,
                recorded: None,
                simulated: Some(s),
            });
        }
    }
    rows
}

fn shares_block(r: &ReplayReport) -> Block {
    let rows = target_rows(r);
    if rows.is_empty() {
        return Block::Text("no target served a request, recorded or simulated".into());
    }
    let mut t = Table::new(
        &[
            "target",
            "recorded served",
            "simulated served",
            "change",
            "recorded cost",
            "simulated cost",
        ],
        &[false, true, true, true, true, true],
    );
    let served = |s: Option<&Share>| {
        s.map_or_else(
            || "-".into(),
            |s| format!("{} ({:.1}%)", s.served, s.share * 100.0),
        )
    };
    let cost = |s: Option<&Share>| s.map_or_else(|| "-".into(), |s| usd(s.cost_micros as f64));
    for row in rows {
        let share = |s: Option<&Share>| s.map_or(0.0, |s| s.share);
        t.row(vec![
            row.target.into(),
            served(row.recorded),
            served(row.simulated),
            Unit::Rate.delta(share(row.simulated) - share(row.recorded)),
            cost(row.recorded),
            cost(row.simulated),
        ]);
    }
    Block::Table(t)
}

// ---- outcomes, changed routes, spread, IPS --------------------------------------------------

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn outcomes(r: &ReplayReport, d: &mut Vec<Block>) {
    let o = &r.outcomes;
    d.push(Block::Title(2, "simulated outcomes".into()));
    d.push(Block::Text(format!(
        "{} simulated attempts: {} exact ({:.1}%), {} estimated, {} unknown",
        o.exact + o.estimated + o.unknown,
        o.exact,
        o.exact_pct,
        o.estimated,
        o.unknown
    )));
    d.push(Block::Text(
        "exact: the recording attempted that target for that request, so its recorded outcome \
         is used; estimated: sampled from the target's recorded outcomes nearest in time"
            .into(),
    ));
    if o.requests_with_unknown > 0 || !o.unknown_targets.is_empty() {
        let targets = if o.unknown_targets.is_empty() {
            "(not named)".to_string()
        } else {
            o.unknown_targets.join(", ")
        };
        d.push(Block::Note(format!(
            "{} targets never seen in the recording: {targets}; not simulated (they count as \
             neither succeeded nor failed)",
            if o.requests_with_unknown == 1 {
                "1 request needs".to_string()
            } else {
                format!("{} requests need", o.requests_with_unknown)
            }
        )));
    }
}

fn changed(r: &ReplayReport, d: &mut Vec<Block>) {
    let c = &r.changed;
    d.push(Block::Title(2, "changed routes".into()));
    if c.count == 0 {
        d.push(Block::Text(
            "no request was routed differently from the recording".into(),
        ));
        return;
    }
    let shown = c.first.len() as u64;
    let mut s = format!(
        "{} routed differently from the recording",
        plural(c.count, "request was", "requests were")
    );
    match shown {
        0 => {}
        1 if c.count > 1 => s.push_str("; the first one below"),
        n if n < c.count => {
            let _ = write!(s, "; the first {n} below");
        }
        _ => {}
    }
    s.push_str(" (`omniroute explain <id>` shows a request's recorded story)");
    d.push(Block::Text(s));
    if c.first.is_empty() {
        return;
    }
    let mut t = Table::new(
        &[
            "request",
            "recorded route",
            "simulated route",
            "status",
            "cost",
        ],
        &[false, false, false, false, false],
    );
    for x in &c.first {
        let sim_status = if x.simulated_status == 0 {
            "not simulated".to_string()
        } else {
            x.simulated_status.to_string()
        };
        t.row(vec![
            x.request_id.clone(),
            x.recorded.clone(),
            x.simulated.clone(),
            format!("{} -> {sim_status}", x.recorded_status),
            format!(
                "{} -> {}",
                usd(x.recorded_cost_micros as f64),
                usd(x.simulated_cost_micros as f64)
            ),
        ]);
    }
    d.push(Block::Table(t));
}

fn spread(r: &ReplayReport, d: &mut Vec<Block>) {
    let Some(s) = &r.spread else { return };
    d.push(Block::Title(2, format!("spread over {} seeds", s.runs)));
    let seeds = match (s.seeds.first(), s.seeds.last()) {
        (Some(a), Some(b)) if a != b => format!("seeds {a}..={b}"),
        (Some(a), _) => format!("seed {a}"),
        _ => "no seeds".into(),
    };
    d.push(Block::Text(format!(
        "the difference simulated - recorded of each metric over {seeds}: the outcome \
         estimates' own noise"
    )));
    let mut t = Table::new(&["metric", "p5", "p50", "p95"], &[false, true, true, true]);
    for row in &s.rows {
        let u = Unit::of_metric(&row.metric);
        t.row(vec![
            row.metric.clone(),
            u.delta(row.p5),
            u.delta(row.p50),
            u.delta(row.p95),
        ]);
    }
    d.push(Block::Table(t));
}

/// `value ± half-width` and the interval, in `unit`.
fn estimate_cells(e: &Estimate, unit: Unit) -> (String, String) {
    let half = (e.high - e.low) / 2.0;
    let pm = match unit {
        Unit::Rate => format!("{:.2} pp", half * 100.0),
        _ => unit.value(half),
    };
    (
        format!("{} ± {pm}", unit.value(e.value)),
        format!("{} .. {}", unit.value(e.low), unit.value(e.high)),
    )
}

fn ips(r: &ReplayReport, d: &mut Vec<Block>) {
    let i = &r.ips;
    d.push(Block::Title(2, "inverse-propensity check".into()));
    if !i.available {
        d.push(Block::Text(format!(
            "not available: {}",
            i.reason.as_deref().unwrap_or("no reason given")
        )));
        return;
    }
    d.push(Block::Text(format!(
        "a model-free estimate of the plan from the {} whose recorded first choice was \
         random: effective sample size {:.1}; {:.1}% of the plan's probability falls on first \
         choices or fallback orders the recording could not have made (unsupported)",
        plural(i.requests, "request", "requests"),
        i.effective_sample_size,
        i.unsupported_pct
    )));
    let mut t = Table::new(
        &["metric", "estimate", "95% interval", "simulation"],
        &[false, true, true, true],
    );
    let rows: [(&str, Unit, Option<&Estimate>, f64); 3] = [
        (
            "success rate",
            Unit::Rate,
            i.success_rate.as_ref(),
            i.simulated_success_rate,
        ),
        (
            "cost per request",
            Unit::Usd,
            i.cost_per_request_micros.as_ref(),
            i.simulated_cost_per_request_micros,
        ),
        (
            "latency",
            Unit::Ms,
            i.latency_ms.as_ref(),
            i.simulated_latency_ms,
        ),
    ];
    for (label, unit, est, sim) in rows {
        let Some(e) = est else { continue };
        let (value, interval) = estimate_cells(e, unit);
        t.row(vec![label.into(), value, interval, unit.value(sim)]);
    }
    if !t.rows.is_empty() {
        d.push(Block::Table(t));
    }
}

// ---- text and Markdown ----------------------------------------------------------------------

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize, right: bool) -> String {
    let fill = " ".repeat(w.saturating_sub(width(s)));
    if right {
        format!("{fill}{s}")
    } else {
        format!("{s}{fill}")
    }
}

fn widths(t: &Table) -> Vec<usize> {
    let mut w: Vec<usize> = t.head.iter().map(|h| width(h)).collect();
    for row in &t.rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(width(c));
            } else {
                w.push(width(c));
            }
        }
    }
    w
}

fn text(doc: &[Block]) -> String {
    let mut o = String::new();
    for b in doc {
        match b {
            Block::Title(1, t) => {
                let _ = writeln!(o, "{t}");
            }
            Block::Title(_, t) => {
                let _ = writeln!(o, "\n{t}");
            }
            Block::Fields(f) => {
                let w = f.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
                for (k, v) in f {
                    let _ = writeln!(o, "  {}  {v}", pad(k, w, false));
                }
            }
            Block::Text(t) => {
                let _ = writeln!(o, "  {t}");
            }
            Block::Note(t) => {
                let _ = writeln!(o, "  note: {t}");
            }
            Block::Table(t) => {
                let w = widths(t);
                let line = |cells: &[String]| {
                    let cols: Vec<String> = cells
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let right = t.right.get(i).copied().unwrap_or(false);
                            pad(c, w.get(i).copied().unwrap_or(0), right)
                        })
                        .collect();
                    format!("  {}", cols.join("  ").trim_end())
                };
                let _ = writeln!(o, "{}", line(&t.head));
                let rule: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
                let _ = writeln!(o, "{}", line(&rule));
                for row in &t.rows {
                    let _ = writeln!(o, "{}", line(row));
                }
            }
        }
    }
    o
}

/// A Markdown table cell: pipes would end the cell.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(doc: &[Block]) -> String {
    let mut o = String::new();
    for b in doc {
        match b {
            Block::Title(level, t) => {
                let _ = writeln!(o, "{} {t}\n", "#".repeat(usize::from(*level).max(1)));
            }
            Block::Fields(f) => {
                for (k, v) in f {
                    let _ = writeln!(o, "- **{k}:** {v}");
                }
                o.push('\n');
            }
            Block::Text(t) => {
                let _ = writeln!(o, "{t}\n");
            }
            Block::Note(t) => {
                let _ = writeln!(o, "> **Note:** {t}\n");
            }
            Block::Table(t) => {
                let w = widths(t);
                let line = |cells: &[String]| {
                    let cols: Vec<String> = cells
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let right = t.right.get(i).copied().unwrap_or(false);
                            pad(&md_cell(c), w.get(i).copied().unwrap_or(0), right)
                        })
                        .collect();
                    format!("| {} |", cols.join(" | "))
                };
                let _ = writeln!(o, "{}", line(&t.head));
                let rule: Vec<String> = w
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let dashes = "-".repeat((*n).max(3));
                        if t.right.get(i).copied().unwrap_or(false) {
                            format!("{}:", &dashes[1..])
                        } else {
                            dashes
                        }
                    })
                    .collect();
                let _ = writeln!(o, "| {} |", rule.join(" | "));
                for row in &t.rows {
                    let _ = writeln!(o, "{}", line(row));
                }
                o.push('\n');
            }
        }
    }
    // One trailing newline, not the blank line every block leaves.
    while o.ends_with("\n\n") {
        o.pop();
    }
    o
}

// ---- CSV --------------------------------------------------------------------------------------

/// The CSV header; every row has these six fields.
pub const CSV_HEADER: &str = "section,metric,key,recorded,simulated,difference";

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break, with quotes
/// doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A number as CSV writes it: Rust's shortest round-trip form, so the file reads back exactly;
/// nothing for a missing value.
fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

struct Csv(String);

impl Csv {
    fn row(&mut self, section: &str, metric: &str, key: &str, cols: [String; 3]) {
        let fields = [section, metric, key, &cols[0], &cols[1], &cols[2]];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        self.0.push_str(&line.join(","));
        self.0.push('\n');
    }

    /// A row of numbers; the difference is computed when both sides are there.
    fn nums(&mut self, section: &str, metric: &str, key: &str, rec: Option<f64>, sim: Option<f64>) {
        // Rounded to 1e-9 so a difference of fractions reads 0.008, not 0.008000000000000007
        // (far below any unit here: micro-dollars, milliseconds, fractions of requests).
        let diff = rec.zip(sim).map(|(a, b)| ((b - a) * 1e9).round() / 1e9);
        self.row(section, metric, key, [num(rec), num(sim), num(diff)]);
    }
}

/// Every number of the report, one per row, in the report's own units (fractions, micro-dollars,
/// milliseconds), so a spreadsheet needs no parsing of `$` or `%`.
fn csv(r: &ReplayReport) -> String {
    let mut c = Csv(format!("{CSV_HEADER}\n"));
    let n = |v: u64| Some(v as f64);
    // What is replayed: background requests are recorded facts, applied as recorded.
    c.row(
        "replay",
        "plan",
        "",
        [r.plan.description.clone(), String::new(), String::new()],
    );
    c.row(
        "replay",
        "filter",
        "",
        [filter_line(r), String::new(), String::new()],
    );
    c.nums("replay", "seed", "", None, Some(r.plan.seed as f64));
    c.nums("replay", "runs", "", None, n(u64::from(r.plan.runs)));
    c.nums("replay", "background", "", n(r.background), None);
    c.nums("replay", "incomplete", "", n(r.incomplete), None);
    if let Some(m) = &r.message {
        c.row(
            "replay",
            "message",
            "",
            [String::new(), m.clone(), String::new()],
        );
    }
    for cmp in comparisons(r) {
        c.nums("summary", cmp.key, "", cmp.recorded, cmp.simulated);
    }
    for t in target_rows(r) {
        let f = |s: Option<&Share>, g: fn(&Share) -> f64| s.map(g);
        c.nums(
            "target",
            "served",
            t.target,
            f(t.recorded, |s| s.served as f64),
            f(t.simulated, |s| s.served as f64),
        );
        c.nums(
            "target",
            "share",
            t.target,
            Some(f(t.recorded, |s| s.share).unwrap_or(0.0)),
            Some(f(t.simulated, |s| s.share).unwrap_or(0.0)),
        );
        c.nums(
            "target",
            "cost_micros",
            t.target,
            f(t.recorded, |s| s.cost_micros as f64),
            f(t.simulated, |s| s.cost_micros as f64),
        );
    }
    let o = &r.outcomes;
    c.nums("outcomes", "exact", "", None, n(o.exact));
    c.nums("outcomes", "estimated", "", None, n(o.estimated));
    c.nums("outcomes", "unknown", "", None, n(o.unknown));
    c.nums("outcomes", "exact_pct", "", None, Some(o.exact_pct));
    c.nums(
        "outcomes",
        "requests_with_unknown",
        "",
        None,
        n(o.requests_with_unknown),
    );
    for t in &o.unknown_targets {
        c.row(
            "outcomes",
            "unknown_target",
            t,
            [String::new(), String::new(), String::new()],
        );
    }
    if let Some(f) = &r.fidelity {
        // Recorded = what there was to reproduce, simulated = what was reproduced.
        c.nums(
            "fidelity",
            "decisions",
            "",
            n(f.decisions),
            n(f.decisions_reproduced),
        );
        c.nums("fidelity", "decisions_pct", "", None, Some(f.decisions_pct));
        c.nums(
            "fidelity",
            "outcomes",
            "",
            n(f.requests),
            n(f.outcomes_reproduced),
        );
        c.nums("fidelity", "outcomes_pct", "", None, Some(f.outcomes_pct));
    }
    c.nums("changed", "count", "", None, n(r.changed.count));
    for x in &r.changed.first {
        let id = &x.request_id;
        c.row(
            "changed",
            "route",
            id,
            [x.recorded.clone(), x.simulated.clone(), String::new()],
        );
        c.nums(
            "changed",
            "status",
            id,
            n(u64::from(x.recorded_status)),
            n(u64::from(x.simulated_status)),
        );
        c.nums(
            "changed",
            "cost_micros",
            id,
            n(x.recorded_cost_micros),
            n(x.simulated_cost_micros),
        );
    }
    if let Some(s) = &r.spread {
        // Only differences exist per seed: they go in the difference column.
        for row in &s.rows {
            let m = &row.metric;
            let d = |v: f64| [String::new(), String::new(), v.to_string()];
            c.row("spread", m, "p5", d(row.p5));
            c.row("spread", m, "p50", d(row.p50));
            c.row("spread", m, "p95", d(row.p95));
            for (seed, v) in s.seeds.iter().zip(&row.values) {
                c.row("spread", m, &format!("seed {seed}"), d(*v));
            }
        }
    }
    let i = &r.ips;
    let available = if i.available { 1 } else { 0 };
    c.row(
        "ips",
        "available",
        i.reason.as_deref().unwrap_or(""),
        [String::new(), available.to_string(), String::new()],
    );
    if i.available {
        c.nums("ips", "requests", "", n(i.requests), None);
        c.nums(
            "ips",
            "effective_sample_size",
            "",
            None,
            Some(i.effective_sample_size),
        );
        c.nums("ips", "unsupported_pct", "", None, Some(i.unsupported_pct));
        let est = [
            ("success_rate", &i.success_rate, i.simulated_success_rate),
            (
                "cost_per_request_micros",
                &i.cost_per_request_micros,
                i.simulated_cost_per_request_micros,
            ),
            ("latency_ms", &i.latency_ms, i.simulated_latency_ms),
        ];
        // Simulated = the simulation's value; the estimate's parts go beside it in `recorded`
        // (IPS estimates the plan from recorded choices alone).
        for (m, e, sim) in est {
            let Some(e) = e else { continue };
            c.nums("ips", m, "estimate", Some(e.value), Some(sim));
            c.nums("ips", m, "std_error", Some(e.std_error), None);
            c.nums("ips", m, "low", Some(e.low), None);
            c.nums("ips", m, "high", Some(e.high), None);
        }
    }
    let h = &r.latency_histogram;
    for (i, label) in bucket_labels(h).iter().enumerate() {
        c.nums(
            "latency_histogram",
            "requests",
            label,
            h.recorded.get(i).map(|v| *v as f64),
            h.simulated.get(i).map(|v| *v as f64),
        );
    }
    c.0
}

/// A label per histogram bucket: `<= 250 ms` for the bounded ones, `> 5000 ms` for the last,
/// open-ended one (whether or not `bounds_ms` lists a bound for it).
pub(crate) fn bucket_labels(h: &crate::report::LatencyHistogram) -> Vec<String> {
    let n = h.recorded.len().max(h.simulated.len());
    let b = &h.bounds_ms;
    (0..n)
        .map(|i| {
            let last = i + 1 == n;
            match (last, b.get(i)) {
                (false, Some(x)) => format!("<= {x} ms"),
                (true, Some(x)) if b.len() > n => format!("<= {x} ms"),
                _ => match i.checked_sub(1).and_then(|j| b.get(j)) {
                    Some(prev) => format!("> {prev} ms"),
                    None => "all".into(),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::report::{
        ChangedRoute, Fidelity, Ips, OutcomeShares, Percentiles, Spread, SpreadRow,
    };

    /// A report with every section filled.
    fn full() -> ReplayReport {
        let mut r = ReplayReport {
            filter: "combo default, from 2026-01-01".into(),
            requests: 1000,
            background: 12,
            incomplete: 3,
            ..ReplayReport::default()
        };
        r.plan.description = "strategy cost for every combo".into();
        r.plan.strategy = Some("cost".into());
        r.plan.runs = 3;
        r.plan.seed = 7;
        let shares = |a: u64, b: u64| {
            vec![
                Share {
                    target: "openai/gpt-4o-mini".into(),
                    provider: "openai".into(),
                    served: a,
                    share: a as f64 / 1000.0,
                    cost_micros: a * 150,
                },
                Share {
                    target: "groq/llama, \"big\"".into(),
                    provider: "groq".into(),
                    served: b,
                    share: b as f64 / 1000.0,
                    cost_micros: b * 40,
                },
            ]
        };
        r.recorded = Metrics {
            requests: 1000,
            succeeded: 973,
            success_rate: 0.973,
            attempts: 1100,
            fallbacks: 80,
            retries: 20,
            circuit_opens: 2,
            cost_micros: 123_456,
            cost_per_request_micros: 123.456,
            latency_ms: Percentiles {
                p50: 420.0,
                p95: 1200.5,
                p99: 2500.0,
            },
            ttft_ms: Some(Percentiles {
                p50: 120.0,
                p95: 300.0,
                p99: 500.0,
            }),
            shares: shares(700, 273),
            ..Metrics::default()
        };
        r.simulated = Metrics {
            requests: 1000,
            succeeded: 981,
            success_rate: 0.981,
            attempts: 1050,
            fallbacks: 40,
            cost_micros: 61_000,
            cost_per_request_micros: 61.0,
            budget_blocked: 4,
            latency_ms: Percentiles {
                p50: 380.0,
                p95: 1000.0,
                p99: 2000.0,
            },
            shares: shares(200, 781),
            ..Metrics::default()
        };
        r.outcomes = OutcomeShares {
            exact: 900,
            estimated: 150,
            unknown: 5,
            exact_pct: 85.71,
            requests_with_unknown: 5,
            unknown_targets: vec!["mistral/large".into()],
        };
        r.fidelity = Some(Fidelity {
            decisions: 1000,
            decisions_reproduced: 1000,
            requests: 1000,
            outcomes_reproduced: 998,
            decisions_pct: 100.0,
            outcomes_pct: 99.8,
        });
        r.changed.count = 612;
        r.changed.first = vec![ChangedRoute {
            request_id: "01KAJBCHXV00000000000000NV".into(),
            recorded: "openai/gpt-4o-mini".into(),
            simulated: "groq/llama -> openai/gpt-4o-mini".into(),
            recorded_status: 200,
            simulated_status: 200,
            recorded_cost_micros: 150,
            simulated_cost_micros: 40,
        }];
        r.spread = Some(Spread {
            runs: 3,
            seeds: vec![7, 8, 9],
            rows: vec![SpreadRow {
                metric: "latency_p95_ms".into(),
                p5: -210.0,
                p50: -200.0,
                p95: -150.0,
                values: vec![-210.0, -200.0, -150.0],
            }],
        });
        r.ips = Ips {
            available: true,
            requests: 800,
            effective_sample_size: 512.3,
            unsupported_pct: 2.5,
            success_rate: Some(Estimate {
                value: 0.979,
                std_error: 0.004,
                low: 0.971,
                high: 0.987,
            }),
            simulated_success_rate: 0.981,
            ..Ips::default()
        };
        r.latency_histogram.bounds_ms = vec![100.0, 500.0];
        r.latency_histogram.recorded = vec![10, 600, 390];
        r.latency_histogram.simulated = vec![20, 650, 330];
        r
    }

    #[test]
    fn formats_parse_by_name_and_the_error_lists_them() {
        assert_eq!(Format::parse("csv").unwrap(), Format::Csv);
        assert_eq!(Format::parse("markdown").unwrap(), Format::Markdown);
        let e = Format::parse("nope").unwrap_err();
        assert!(
            e.contains("\"nope\"") && e.contains("table, json, markdown, csv"),
            "{e}"
        );
    }

    #[test]
    fn json_is_deterministic_and_reads_back() {
        let r = full();
        let a = render(&r, Format::Json);
        assert_eq!(a, render(&r.clone(), Format::Json));
        let back: ReplayReport = serde_json::from_str(&a).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn table_has_the_key_lines() {
        let t = render(&full(), Format::Table);
        for want in [
            "plan      strategy cost for every combo; 3 runs, seeds 7..=9",
            "filter    combo default, from 2026-01-01",
            "1000 re-simulated; 12 applied as recorded in the background (3 of them never completed)",
            "success rate",
            "97.30%",
            "+0.80 pp",
            "$0.123456",
            "-$0.062456 (-50.6%)",
            "TTFT p95",
            "budget blocks",
            "5 requests need targets never seen in the recording: mistral/large; not simulated",
            "plan equals the recording: 100.00% of decisions and 99.80% of outcomes reproduced",
            "612 requests were routed differently",
            "`omniroute explain <id>`",
            "groq/llama -> openai/gpt-4o-mini",
            "200 -> 200",
            "spread over 3 seeds",
            "latency_p95_ms",
            "-200.0 ms",
            "97.90% ± 0.80 pp",
            "effective sample size 512.3",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // Columns line up: every row of the comparison ends where its header does.
        let lines: Vec<&str> = t.lines().collect();
        let head = lines.iter().position(|l| l.contains("difference")).unwrap();
        let end = lines[head].len();
        for l in &lines[head + 1..head + 5] {
            assert!(l.len() >= end - 1, "{l:?}");
        }
    }

    #[test]
    fn markdown_has_sections_and_tables() {
        let m = render(&full(), Format::Markdown);
        for want in [
            "# omniroute replay",
            "- **plan:** strategy cost for every combo",
            "## recorded vs simulated",
            "| metric ",
            "---: |",
            "## changed routes",
            "> **Note:** 5 requests need targets never seen in the recording",
            "## inverse-propensity check",
        ] {
            assert!(m.contains(want), "missing {want:?} in\n{m}");
        }
        assert!(m.ends_with("|\n") && !m.ends_with("\n\n"));
    }

    #[test]
    fn a_message_without_requests_is_the_answer() {
        let r = ReplayReport {
            message: Some("the filter matched no request".into()),
            filter: "session s-404".into(),
            ..ReplayReport::default()
        };
        for f in [Format::Table, Format::Markdown] {
            let out = render(&r, f);
            assert!(out.contains("the filter matched no request"), "{out}");
            assert!(!out.contains("recorded vs simulated"), "{out}");
        }
        let csv = render(&r, Format::Csv);
        assert!(csv.contains("replay,message,,,the filter matched no request,"));
    }

    #[test]
    fn ips_not_available_says_why() {
        let mut r = full();
        r.ips = Ips {
            available: false,
            reason: Some("no recorded choice was random".into()),
            ..Ips::default()
        };
        let t = render(&r, Format::Table);
        assert!(
            t.contains("not available: no recorded choice was random"),
            "{t}"
        );
    }

    /// A minimal RFC 4180 reader: fields of one record.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (_, c) => field.push(c),
            }
        }
        rows
    }

    #[test]
    fn csv_has_the_header_quotes_fields_and_six_columns() {
        let c = render(&full(), Format::Csv);
        assert!(c.starts_with("section,metric,key,recorded,simulated,difference\n"));
        // A target with a comma and quotes is one quoted field, quotes doubled.
        assert!(
            c.contains("target,served,\"groq/llama, \"\"big\"\"\",273,781,508\n"),
            "{c}"
        );
        let rows = parse_csv(&c);
        assert!(rows.iter().all(|r| r.len() == 6), "{rows:?}");
        let find = |s: &str, m: &str, k: &str| {
            rows.iter()
                .find(|r| r[0] == s && r[1] == m && r[2] == k)
                .unwrap_or_else(|| panic!("no row {s},{m},{k}"))
                .clone()
        };
        assert_eq!(
            find("summary", "success_rate", "")[3..5],
            ["0.973", "0.981"]
        );
        assert_eq!(
            find("summary", "cost_micros", "")[3..],
            ["123456", "61000", "-62456"]
        );
        assert_eq!(find("target", "served", "groq/llama, \"big\"")[3], "273");
        assert_eq!(
            find("spread", "latency_p95_ms", "seed 8")[3..],
            ["", "", "-200"]
        );
        assert_eq!(
            find("ips", "success_rate", "estimate")[3..5],
            ["0.979", "0.981"]
        );
        assert_eq!(
            find("latency_histogram", "requests", "> 500 ms")[3..5],
            ["390", "330"]
        );
        assert_eq!(
            find("changed", "route", "01KAJBCHXV00000000000000NV")[4],
            "groq/llama -> openai/gpt-4o-mini"
        );
    }

    #[test]
    fn bucket_labels_read_both_bound_conventions() {
        let mut h = crate::report::LatencyHistogram {
            bounds_ms: vec![100.0, 500.0],
            recorded: vec![1, 2, 3],
            simulated: vec![1, 2, 3],
        };
        assert_eq!(bucket_labels(&h), ["<= 100 ms", "<= 500 ms", "> 500 ms"]);
        h.bounds_ms.push(f64::INFINITY);
        assert_eq!(bucket_labels(&h), ["<= 100 ms", "<= 500 ms", "> 500 ms"]);
        assert!(bucket_labels(&crate::report::LatencyHistogram::default()).is_empty());
    }
}
