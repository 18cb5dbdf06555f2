//! The discrete-event simulation. Requests arrive at the time and log position of the record
//! that routed them; each simulated step (attempt start, attempt end, completion) is an event at
//! a simulated time, and every event applies to the simulated [`State`] in (time, order) order,
//! through the same `State`/`Health`/`Budgets` methods the gateway calls when it records it.
//!
//! While a simulated request follows its recorded path (same targets in the same order), its
//! events take the recorded times and log positions; a plan equal to the recording therefore
//! applies exactly the recorded sequence, and so reproduces every decision and outcome. Once a
//! request leaves its recorded path, its events are placed at simulated times: an attempt lasts
//! its (exact or estimated) duration, a retry waits its seeded backoff, a fallback starts at once.
//!
//! Requests outside the filter, and requests that never completed in the recording, are
//! background: their recorded events apply as recorded (they happened, and the state saw them).

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

use rustc_hash::FxHashMap;
use std::sync::Arc;

use omniroute_core::config::Config;
use omniroute_core::event::{CircuitState, ErrorClass, Hash32, Strategy, Tokens};
use omniroute_core::flow::{self, Budgets, Facts, Routed, State, Verdict, step};
use omniroute_core::log::{LogError, Reader};
use omniroute_core::router::AttemptOutcome;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::estimate::{Draw, Pool};
use crate::report::{
    ChangedRoute, ChangedRoutes, Fidelity, LatencyHistogram, OutcomeShares, PlanSummary,
    ReplayReport, Spread, SpreadRow,
};
use crate::source::{Collector, Item, Key, Outcome, Recorded, Targets};
use crate::stats::{self, Acc, IpsAcc};
use crate::{Filter, Plan, ReplayError};

/// A recorded config as the plan rewrites it, with its models' target ids.
struct Planned {
    cfg: Config,
    /// Model index -> target id.
    targets: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Finish,
    Complete,
    /// Background: the recorded attempt `i` starts / finishes.
    BgStart(u16),
    BgFinish(u16),
}

/// A scheduled event; the heap pops the smallest (time, order, insertion).
#[derive(Debug, PartialEq, Eq)]
struct Sched {
    t: u64,
    tie: u64,
    ctr: u64,
    slot: u32,
    kind: Kind,
}

impl Ord for Sched {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.tie, o.ctr).cmp(&(self.t, self.tie, self.ctr))
    }
}

impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The attempt under way.
struct Current {
    m: usize,
    target: u32,
    outcome: Outcome,
    exact: bool,
}

/// A request in flight in the simulation.
struct Flight {
    req: Box<Recorded>,
    planned: Arc<Planned>,
    background: bool,
    plan: Vec<usize>,
    ti: usize,
    retries: u32,
    jitter: Option<ChaCha8Rng>,
    /// Every step so far is the recorded one: events keep their recorded times.
    on_path: bool,
    current: Option<Current>,
    res: stats::Result,
    path: Vec<u32>,
    elapsed_us: u64,
    /// Order of the off-path events at equal times: the request's arrival position.
    tie: u64,
    decision_same: bool,
    /// (plan's probability of the recorded first choice, recorded propensity, unsupported mass).
    ips: Option<(f64, f64, f64)>,
    /// The recording's completion, once this simulation ends as recorded.
    as_recorded: bool,
}

/// What one run produced.
#[derive(Default)]
struct RunOut {
    rec: Acc,
    sim: Acc,
    requests: u64,
    background: u64,
    incomplete: u64,
    exact: u64,
    estimated: u64,
    unknown: u64,
    unknown_targets: BTreeSet<u32>,
    requests_with_unknown: u64,
    decisions: u64,
    decisions_same: u64,
    outcomes_same: u64,
    changed: u64,
    /// (arrival seq, route) of the first changed routes.
    first_changed: BinaryHeap<(u64, ChangedRouteOrd)>,
    ips: IpsAcc,
}

#[derive(PartialEq, Eq)]
struct ChangedRouteOrd(ChangedRouteKey);

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ChangedRouteKey {
    request_id: String,
    recorded: String,
    simulated: String,
    recorded_status: u16,
    simulated_status: u16,
    recorded_cost_micros: u64,
    simulated_cost_micros: u64,
}

impl Ord for ChangedRouteOrd {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.cmp(&o.0)
    }
}

impl PartialOrd for ChangedRouteOrd {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

struct Run<'r> {
    reader: &'r Reader,
    plan: &'r Plan,
    filter: &'r Filter,
    targets: Targets,
    pool: Pool<'r>,
    rng: ChaCha8Rng,
    state: Option<State>,
    orphan: Budgets,
    configs: FxHashMap<Hash32, Option<Arc<Planned>>>,
    plan_config: Option<Arc<Planned>>,
    current: Option<Arc<Planned>>,
    heap: BinaryHeap<Sched>,
    ctr: u64,
    flights: Vec<Option<Flight>>,
    free: Vec<u32>,
    read_seq: u64,
    /// The plan names a combo or model that the recorded configs have (or no check needed).
    plan_ok: bool,
    plan_error: Option<String>,
    details: bool,
    out: RunOut,
}

/// Runs the plan `plan.runs` times (seeds `seed`, `seed + 1`, ...) and reports.
pub fn run(
    reader: &Reader,
    plan: &Plan,
    filter: &Filter,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, ReplayError> {
    let total = reader.last_seq()?.max(1);
    let runs = u64::from(plan.runs.max(1));
    let mut first: Option<(RunOut, Targets)> = None;
    let mut diffs: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for k in 0..runs {
        let seed = plan.seed.wrapping_add(k);
        let mut run = Run::new(reader, plan, filter, seed, k == 0);
        run.go(&mut |done| progress(k * total + done, runs * total))?;
        if !run.plan_ok {
            return Err(ReplayError::Invalid(run.plan_error.unwrap_or_else(|| {
                "the log holds no recorded config to apply the plan to".into()
            })));
        }
        let rec = run.out.rec.metrics(&run.targets);
        let sim = run.out.sim.metrics(&run.targets);
        let rows: [(&'static str, f64); 9] = [
            ("success_rate", sim.success_rate - rec.success_rate),
            (
                "cost_micros",
                sim.cost_micros as f64 - rec.cost_micros as f64,
            ),
            (
                "cost_per_request_micros",
                sim.cost_per_request_micros - rec.cost_per_request_micros,
            ),
            ("fallbacks", sim.fallbacks as f64 - rec.fallbacks as f64),
            ("retries", sim.retries as f64 - rec.retries as f64),
            (
                "circuit_opens",
                sim.circuit_opens as f64 - rec.circuit_opens as f64,
            ),
            ("latency_p50_ms", sim.latency_ms.p50 - rec.latency_ms.p50),
            ("latency_p95_ms", sim.latency_ms.p95 - rec.latency_ms.p95),
            ("latency_p99_ms", sim.latency_ms.p99 - rec.latency_ms.p99),
        ];
        if diffs.is_empty() {
            diffs = rows.iter().map(|(n, _)| (*n, Vec::new())).collect();
        }
        for ((_, v), (_, d)) in diffs.iter_mut().zip(rows) {
            v.push(d);
        }
        if first.is_none() {
            first = Some((
                std::mem::take(&mut run.out),
                std::mem::take(&mut run.targets),
            ));
        }
    }
    let Some((out, targets)) = first else {
        return Err(ReplayError::Invalid("no run".into()));
    };
    Ok(report(plan, filter, out, &targets, diffs))
}

fn report(
    plan: &Plan,
    filter: &Filter,
    out: RunOut,
    targets: &Targets,
    diffs: Vec<(&'static str, Vec<f64>)>,
) -> ReplayReport {
    let recorded = out.rec.metrics(targets);
    let simulated = out.sim.metrics(targets);
    let attempts = out.exact + out.estimated;
    let filter_text = describe(filter);
    let message = (out.requests == 0).then(|| {
        if filter_text == "all recorded requests" {
            "the log holds no completed request to replay".to_string()
        } else {
            format!("no recorded request matches the filter ({filter_text})")
        }
    });
    let mut first: Vec<(u64, ChangedRouteOrd)> = out.first_changed.into_vec();
    first.sort_by_key(|(seq, _)| *seq);
    let spread = (plan.runs > 1).then(|| Spread {
        runs: plan.runs,
        seeds: (0..u64::from(plan.runs))
            .map(|k| plan.seed.wrapping_add(k))
            .collect(),
        rows: diffs
            .into_iter()
            .map(|(metric, values)| SpreadRow {
                metric: metric.to_string(),
                p5: stats::quantile(&values, 0.05),
                p50: stats::quantile(&values, 0.50),
                p95: stats::quantile(&values, 0.95),
                values,
            })
            .collect(),
    });
    ReplayReport {
        plan: PlanSummary {
            description: plan.describe(),
            strategy: plan
                .strategy
                .map(|s| crate::plan::strategy_name(s).to_string()),
            combo: plan.combo.clone(),
            weights: plan.weights.clone(),
            plan_config: plan.config.as_ref().map(|(n, _)| n.clone()),
            seed: plan.seed,
            runs: plan.runs,
            equals_recording: plan.is_identity(),
        },
        filter: filter_text,
        message,
        requests: out.requests,
        background: out.background,
        incomplete: out.incomplete,
        latency_histogram: LatencyHistogram {
            bounds_ms: stats::BUCKETS_MS.to_vec(),
            recorded: pad(out.rec.buckets.clone()),
            simulated: pad(out.sim.buckets.clone()),
        },
        recorded,
        simulated,
        outcomes: OutcomeShares {
            exact: out.exact,
            estimated: out.estimated,
            unknown: out.unknown,
            exact_pct: pct(out.exact, attempts),
            requests_with_unknown: out.requests_with_unknown,
            unknown_targets: out
                .unknown_targets
                .iter()
                .map(|&t| targets.name(t))
                .collect(),
        },
        fidelity: plan.is_identity().then(|| Fidelity {
            decisions: out.decisions,
            decisions_reproduced: out.decisions_same,
            requests: out.requests,
            outcomes_reproduced: out.outcomes_same,
            decisions_pct: pct(out.decisions_same, out.decisions),
            outcomes_pct: pct(out.outcomes_same, out.requests),
        }),
        changed: ChangedRoutes {
            count: out.changed,
            first: first
                .into_iter()
                .map(|(_, ChangedRouteOrd(c))| ChangedRoute {
                    request_id: c.request_id,
                    recorded: c.recorded,
                    simulated: c.simulated,
                    recorded_status: c.recorded_status,
                    simulated_status: c.simulated_status,
                    recorded_cost_micros: c.recorded_cost_micros,
                    simulated_cost_micros: c.simulated_cost_micros,
                })
                .collect(),
        },
        spread,
        ips: out.ips.report(),
    }
}

fn pad(mut v: Vec<u64>) -> Vec<u64> {
    v.resize(stats::BUCKETS_MS.len() + 1, 0);
    v
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

fn describe(f: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(t) = f.from_ms {
        parts.push(format!("from {}", omniroute_core::time::rfc3339_ms(t)));
    }
    if let Some(t) = f.to_ms {
        parts.push(format!("to {}", omniroute_core::time::rfc3339_ms(t)));
    }
    for (name, v) in [
        ("combo", &f.combo),
        ("model", &f.model),
        ("session", &f.session),
        ("key", &f.key),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    if parts.is_empty() {
        "all recorded requests".into()
    } else {
        parts.join(", ")
    }
}

fn route_text(targets: &Targets, path: impl Iterator<Item = u32>) -> String {
    let v: Vec<String> = path.map(|t| targets.name(t)).collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(" -> ")
    }
}

/// How a recorded request went.
fn recorded_result(r: &Recorded) -> stats::Result {
    let c = r.completed.as_ref();
    // A retry repeats the target; any other move is a fallback (the gateway records one
    // `FallbackTriggered` for each).
    let (mut retries, mut fallbacks) = (0, 0);
    for w in r.attempts.windows(2) {
        if w[0].target == w[1].target {
            retries += 1;
        } else {
            fallbacks += 1;
        }
    }
    stats::Result {
        status: c.map_or(0, |c| c.status),
        target: c.and_then(|c| c.target),
        attempts: r.attempts.len() as u32,
        fallbacks,
        retries,
        circuit_opens: r.circuit_opens,
        cost_micros: c.map_or(0, |c| c.cost_micros),
        unpriced: c.is_some_and(|c| c.unpriced),
        latency_us: c.map_or(0, |c| c.latency_us),
        ttft_us: c.and_then(|c| c.ttft_us),
        blocked: r.blocked,
        degraded: r.degraded,
        costs: r
            .attempts
            .iter()
            .map(|a| (a.target, a.cost_micros))
            .collect(),
    }
}

enum Flow {
    Go,
    Stop,
}

impl<'r> Run<'r> {
    fn new(
        reader: &'r Reader,
        plan: &'r Plan,
        filter: &'r Filter,
        seed: u64,
        details: bool,
    ) -> Self {
        Self {
            reader,
            plan,
            filter,
            targets: Targets::default(),
            pool: Pool::new(reader),
            rng: ChaCha8Rng::seed_from_u64(seed),
            state: None,
            orphan: Budgets::default(),
            configs: FxHashMap::default(),
            plan_config: None,
            current: None,
            heap: BinaryHeap::new(),
            ctr: 0,
            flights: Vec::new(),
            free: Vec::new(),
            read_seq: 0,
            plan_ok: plan.strategy.is_none() && plan.weights.is_empty() && plan.combo.is_none(),
            plan_error: None,
            details,
            out: RunOut::default(),
        }
    }

    fn go(&mut self, progress: &mut dyn FnMut(u64)) -> Result<(), ReplayError> {
        let mut collector = Collector::default();
        let reader = self.reader;
        'read: for item in reader.range(..)? {
            let stored = item?;
            let rec = stored.record()?;
            self.read_seq = rec.seq;
            if let Some((t, o)) = collector.apply(&rec, &mut self.targets) {
                self.pool.observe(t, rec.ts_ms, o);
            }
            while let Some((key, item)) = collector.pop() {
                if let Flow::Stop = self.item(key, item)? {
                    break 'read;
                }
            }
            if rec.seq % 65_536 == 0 {
                progress(rec.seq);
            }
        }
        collector.cut();
        while let Some((key, item)) = collector.pop() {
            if let Flow::Stop = self.item(key, item)? {
                break;
            }
        }
        self.drain(None)?;
        self.out.incomplete += collector.unrouted;
        self.out.background += collector.unrouted;
        progress(self.reader.last_seq()?);
        Ok(())
    }

    /// Applies every scheduled event before `until` (all of them with `None`).
    fn drain(&mut self, until: Option<Key>) -> Result<(), ReplayError> {
        while let Some(top) = self.heap.peek() {
            if until.is_some_and(|k| (top.t, top.tie) >= k) {
                break;
            }
            let Some(s) = self.heap.pop() else { break };
            self.event(s)?;
        }
        Ok(())
    }

    fn schedule(&mut self, t: u64, tie: u64, slot: u32, kind: Kind) {
        self.ctr += 1;
        self.heap.push(Sched {
            t,
            tie,
            ctr: self.ctr,
            slot,
            kind,
        });
    }

    fn item(&mut self, key: Key, item: Item) -> Result<Flow, ReplayError> {
        if let (Some(to), Item::Request(_)) = (self.filter.to_ms, &item)
            && key.0 >= to
        {
            return Ok(Flow::Stop);
        }
        self.drain(Some(key))?;
        match item {
            Item::Config { version, loaded } => self.config(&version, loaded)?,
            Item::Guard {
                session,
                limit_micros,
                action,
                tier,
            } => {
                let b = match &mut self.state {
                    Some(s) => &mut s.budgets,
                    None => &mut self.orphan,
                };
                b.set(&session, limit_micros, action, tier);
            }
            Item::Request(r) => self.arrive(key, r)?,
        }
        Ok(Flow::Go)
    }

    /// The recorded config `version` as the plan rewrites it (`None` when it is not stored).
    fn planned(&mut self, version: &Hash32) -> Result<Option<Arc<Planned>>, LogError> {
        if let Some(p) = self.configs.get(version) {
            return Ok(p.clone());
        }
        let recorded = match self.reader.blob(version)? {
            Some(bytes) => Config::from_canonical(&bytes).ok(),
            None => None,
        };
        let Some(recorded) = recorded else {
            self.configs.insert(*version, None);
            return Ok(None);
        };
        if !self.plan_ok {
            match self.plan.check(&recorded) {
                Ok(()) => self.plan_ok = true,
                Err(e) => {
                    if self.plan_error.is_none() {
                        self.plan_error = Some(e.to_string());
                    }
                }
            }
        }
        let p = match (&self.plan.config, &self.plan_config) {
            (Some(_), Some(p)) => Arc::clone(p),
            _ => {
                let cfg = self.plan.apply(&recorded);
                let targets = cfg
                    .models
                    .iter()
                    .map(|m| {
                        let provider = cfg
                            .provider_of(m)
                            .map(|p| p.id.as_str())
                            .unwrap_or_default();
                        self.targets.id(provider, &m.id)
                    })
                    .collect();
                let p = Arc::new(Planned { cfg, targets });
                if self.plan.config.is_some() {
                    self.plan_config = Some(Arc::clone(&p));
                }
                p
            }
        };
        self.configs.insert(*version, Some(Arc::clone(&p)));
        Ok(Some(p))
    }

    fn config(&mut self, version: &Hash32, loaded: bool) -> Result<(), ReplayError> {
        let p = self.planned(version)?;
        if let Some(state) = &mut self.state {
            if loaded {
                state.restart();
            }
            if let Some(p) = &p {
                state.health.reconfigure(&p.cfg);
            }
        } else if let Some(p) = &p {
            let mut state = State::new(&p.cfg);
            state.budgets = std::mem::take(&mut self.orphan);
            if loaded {
                state.budgets.restart();
            }
            self.state = Some(state);
        } else if loaded {
            self.orphan.restart();
        }
        if p.is_some() {
            self.current = p;
        }
        Ok(())
    }

    fn selected(&self, r: &Recorded, key: Key) -> bool {
        let f = self.filter;
        f.from_ms.is_none_or(|t| key.0 >= t)
            && f.to_ms.is_none_or(|t| key.0 < t)
            && f.combo.as_deref().is_none_or(|c| {
                r.decision
                    .as_ref()
                    .map_or(r.requested == c, |d| d.combo == c)
            })
            && f.model.as_deref().is_none_or(|m| {
                r.requested == m
                    || r.path().any(|t| {
                        self.targets
                            .names
                            .get(t as usize)
                            .is_some_and(|(_, model)| model == m)
                    })
            })
            && f.session
                .as_deref()
                .is_none_or(|s| r.session.as_deref() == Some(s))
            && f.key.as_deref().is_none_or(|k| {
                r.key_id
                    .as_ref()
                    .is_some_and(|id| id.to_string().starts_with(k))
            })
    }

    fn slot(&mut self, f: Flight) -> u32 {
        match self.free.pop() {
            Some(s) => {
                if let Some(x) = self.flights.get_mut(s as usize) {
                    *x = Some(f);
                }
                s
            }
            None => {
                self.flights.push(Some(f));
                (self.flights.len() - 1) as u32
            }
        }
    }

    fn arrive(&mut self, key: Key, req: Box<Recorded>) -> Result<(), ReplayError> {
        let planned = match &req.decision {
            Some(d) => self.planned(&d.config_version)?,
            None => None,
        }
        .or_else(|| self.current.clone());
        let background = req.dead || !self.selected(&req, key);
        let (Some(planned), Some(state)) = (planned, self.state.as_mut()) else {
            // Before any config: nothing to route with.
            self.out.background += 1;
            self.out.incomplete += u64::from(req.dead);
            return Ok(());
        };
        let mut f = Flight {
            req,
            planned: Arc::clone(&planned),
            background,
            plan: Vec::new(),
            ti: 0,
            retries: 0,
            jitter: None,
            on_path: true,
            current: None,
            res: stats::Result::default(),
            path: Vec::new(),
            elapsed_us: 0,
            tie: key.1,
            decision_same: false,
            ips: None,
            as_recorded: false,
        };
        if background {
            self.out.background += 1;
            self.out.incomplete += u64::from(f.req.dead);
            if let Some(d) = &f.req.decision {
                let reservation = d.reservation.as_ref().map(|(s, a)| (s.as_str(), *a));
                state.apply_decided(f.req.rid, &d.combo, reservation);
            }
            let events: Vec<(Key, Kind)> = f
                .req
                .attempts
                .iter()
                .enumerate()
                .flat_map(|(i, a)| {
                    let i = i as u16;
                    std::iter::once((a.start, Kind::BgStart(i)))
                        .chain(a.finish.map(|k| (k, Kind::BgFinish(i))))
                })
                .chain(f.req.completed.as_ref().map(|c| (c.key, Kind::Complete)))
                .collect();
            if events.is_empty() {
                return Ok(());
            }
            let slot = self.slot(f);
            for (k, kind) in events {
                self.schedule(k.0, k.1, slot, kind);
            }
            return Ok(());
        }
        self.out.requests += 1;
        let r = &f.req;
        let cfg = &planned.cfg;
        let required = r.decision.as_ref().map_or(0, |d| d.required);
        let facts = Facts {
            requested: &r.requested,
            est_prompt_tokens: r.est_prompt_tokens,
            max_tokens: r.max_tokens,
            min_tier: r.min_tier,
            session: r.session.as_deref(),
            required,
        };
        // The recorded seed, so a changed plan meets the same random draws (requests routed
        // without one, blocked or unroutable, take it from their id).
        let seed = r
            .decision
            .as_ref()
            .map_or(r.rid.0 as u64 ^ (r.rid.0 >> 64) as u64, |d| d.seed);
        let rid = r.rid;
        match flow::derive_with(&facts, seed, key.0, state, cfg, false) {
            Ok(d) => {
                let combo = d
                    .decision
                    .combo
                    .and_then(|c| cfg.combos.get(c))
                    .map(|c| c.id.as_str())
                    .unwrap_or(&r.requested);
                let reservation = facts.session.filter(|_| d.verdict != Verdict::Unguarded);
                state.apply_decided(rid, combo, reservation.map(|s| (s, d.verdict.reserved())));
                f.res.degraded = matches!(d.verdict, Verdict::Degrade { .. });
                f.plan = d.decision.targets().collect();
                let sim_plan: Vec<u32> = f
                    .plan
                    .iter()
                    .filter_map(|&m| planned.targets.get(m).copied())
                    .collect();
                if let Some(rd) = &r.decision {
                    f.decision_same = rd.combo == combo
                        && rd.strategy == d.decision.strategy
                        && rd.plan == sim_plan
                        && rd.propensity.to_bits() == d.decision.propensity.to_bits()
                        && r.degraded == f.res.degraded;
                    if self.details && rd.propensity < 1.0 {
                        f.ips = ips_weights(r, &d.decision, &planned);
                        if f.ips.is_none() {
                            self.out.ips.skip();
                        }
                    }
                }
                if f.plan.is_empty() {
                    // Every target excluded: the gateway answers 503 at once.
                    f.res.status = 503;
                    let slot = self.slot(f);
                    return self.complete_now(slot, key);
                }
                let slot = self.slot(f);
                self.next_start(slot, key.0)
            }
            Err(routed) => {
                if let Some(rd) = &r.decision
                    && self.details
                    && rd.propensity < 1.0
                {
                    self.out.ips.skip();
                }
                f.res.status = match routed {
                    Routed::Blocked { .. } => {
                        f.res.blocked = true;
                        f.decision_same = r.blocked;
                        402
                    }
                    _ => {
                        let unroutable = r.decision.is_none() && !r.blocked;
                        f.decision_same = unroutable;
                        match (&r.completed, unroutable) {
                            (Some(c), true) => c.status,
                            _ => 404,
                        }
                    }
                };
                let slot = self.slot(f);
                self.complete_now(slot, key)
            }
        }
    }

    fn flight(&mut self, slot: u32) -> Option<&mut Flight> {
        self.flights.get_mut(slot as usize)?.as_mut()
    }

    /// Ends a request at `key` (or as recorded, when it never left its recorded path).
    fn complete_now(&mut self, slot: u32, key: Key) -> Result<(), ReplayError> {
        let Some(f) = self.flight(slot) else {
            return Ok(());
        };
        let at = match (
            &f.req.completed,
            f.on_path && f.path.len() == f.req.attempts.len(),
        ) {
            (Some(c), true) => {
                f.as_recorded = true;
                c.key
            }
            _ => (key.0, f.tie),
        };
        self.schedule(at.0, at.1, slot, Kind::Complete);
        Ok(())
    }

    /// Schedules the next attempt on the plan at time `t` (or at its recorded time when the
    /// request is still on its recorded path and the recording made the same attempt next).
    fn next_start(&mut self, slot: u32, t: u64) -> Result<(), ReplayError> {
        let Some(f) = self.flight(slot) else {
            return Ok(());
        };
        let k = f.path.len();
        let target = f
            .plan
            .get(f.ti)
            .and_then(|&m| f.planned.targets.get(m))
            .copied();
        let recorded = f.req.attempts.get(k);
        f.on_path =
            f.on_path && recorded.is_some_and(|a| Some(a.target) == target && a.finish.is_some());
        let at = match (f.on_path, recorded) {
            (true, Some(a)) => a.start,
            _ => (t, f.tie),
        };
        self.schedule(at.0, at.1, slot, Kind::Start);
        Ok(())
    }

    fn event(&mut self, s: Sched) -> Result<(), ReplayError> {
        match s.kind {
            Kind::Start => self.start(s.slot, s.t),
            Kind::Finish => self.finish(s.slot, s.t),
            Kind::Complete => {
                self.complete(s.slot);
                Ok(())
            }
            Kind::BgStart(i) => {
                self.background_attempt(s.slot, i, s.t, false);
                Ok(())
            }
            Kind::BgFinish(i) => {
                self.background_attempt(s.slot, i, s.t, true);
                Ok(())
            }
        }
    }

    fn background_attempt(&mut self, slot: u32, i: u16, t: u64, finish: bool) {
        let Some(Some(f)) = self.flights.get(slot as usize) else {
            return;
        };
        let Some(a) = f.req.attempts.get(usize::from(i)) else {
            return;
        };
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let Some((_, model)) = self.targets.names.get(a.target as usize) else {
            return;
        };
        let Some(m) = state.health.model_index(model) else {
            return;
        };
        if !finish {
            state.health.start(m, t);
        } else if let Some(o) = &a.outcome {
            state.health.observe(
                &AttemptOutcome {
                    model: m,
                    latency_us: o.latency_us,
                    error: o.error,
                    retry_after_ms: o.retry_after_ms,
                },
                t,
            );
        }
    }

    fn start(&mut self, slot: u32, t: u64) -> Result<(), ReplayError> {
        let read_seq = self.read_seq;
        let Some(Some(f)) = self.flights.get_mut(slot as usize) else {
            return Ok(());
        };
        let Some(&m) = f.plan.get(f.ti) else {
            return Ok(());
        };
        let Some(&target) = f.planned.targets.get(m) else {
            return Ok(());
        };
        // The j-th attempt at this target is exact when the recording made a j-th one.
        let j = f.path.iter().filter(|&&x| x == target).count();
        let exact = f
            .req
            .attempts
            .iter()
            .filter(|a| a.target == target)
            .nth(j)
            .and_then(|a| a.outcome);
        let outcome = match exact {
            Some(o) => {
                self.out.exact += 1;
                Some((o, true))
            }
            None => match self
                .pool
                .draw(target, t, read_seq, &mut self.targets, &mut self.rng)?
            {
                Draw::Estimated(o) => {
                    self.out.estimated += 1;
                    Some((o, false))
                }
                Draw::Unknown => None,
            },
        };
        let Some(Some(f)) = self.flights.get_mut(slot as usize) else {
            return Ok(());
        };
        let Some((outcome, exact)) = outcome else {
            self.out.unknown += 1;
            self.out.unknown_targets.insert(target);
            self.out.requests_with_unknown += 1;
            f.res.status = 0;
            f.on_path = false;
            let tie = f.tie;
            return self.complete_now(slot, (t, tie));
        };
        if let Some(state) = self.state.as_mut()
            && let Some(model) = f.planned.cfg.model(m)
            && let Some(i) = state.health.resolve(m, &model.id)
        {
            state.health.start(i, t);
        }
        f.path.push(target);
        f.res.attempts += 1;
        let k = f.path.len() - 1;
        let at = match (f.on_path, f.req.attempts.get(k).and_then(|a| a.finish)) {
            (true, Some(k)) => k,
            _ => (t + outcome.dur_ms, f.tie),
        };
        f.current = Some(Current {
            m,
            target,
            outcome,
            exact,
        });
        self.schedule(at.0, at.1, slot, Kind::Finish);
        Ok(())
    }

    fn finish(&mut self, slot: u32, t: u64) -> Result<(), ReplayError> {
        let Some(Some(f)) = self.flights.get_mut(slot as usize) else {
            return Ok(());
        };
        let Some(cur) = f.current.take() else {
            return Ok(());
        };
        let o = cur.outcome;
        let cfg = &f.planned.cfg;
        let model = cfg.model(cur.m);
        if let Some(state) = self.state.as_mut()
            && let Some(model) = model
            && let Some(i) = state.health.resolve(cur.m, &model.id)
            && let Some(tr) = state.health.observe(
                &AttemptOutcome {
                    model: i,
                    latency_us: o.latency_us,
                    error: o.error,
                    retry_after_ms: o.retry_after_ms,
                },
                t,
            )
            && tr.to == CircuitState::Open
        {
            f.res.circuit_opens += 1;
        }
        // Charged like the gateway charges: the target's price on the attempt's tokens.
        let tokens = match (cur.exact, o.error) {
            (true, _) => o.tokens,
            (false, None) => Tokens {
                output: o.tokens.output,
                reasoning: o.tokens.reasoning,
                ..f.req.input_tokens()
            },
            (false, Some(_)) => Tokens::default(),
        };
        let price = model.and_then(|m| m.price.as_ref());
        let cost = price.map_or(0, |p| p.cost_micros(&tokens));
        if price.is_none() && total(&tokens) > 0 {
            f.res.unpriced = true;
        }
        f.res.cost_micros += cost;
        f.res.costs.push((cur.target, cost));
        let before_us = f.elapsed_us;
        f.elapsed_us += o.latency_us;
        let Some(class) = o.error else {
            f.res.status = 200;
            f.res.target = Some(cur.target);
            f.res.ttft_us = o.ttft_us.map(|x| before_us + x).filter(|_| f.req.stream);
            return self.complete_now(slot, (t, 0));
        };
        let k = f.path.len();
        if f.on_path && k == f.req.attempts.len() && f.req.completed.is_some() {
            // The recording stopped here (the client left, or the flow gave up): so does this.
            return self.complete_now(slot, (t, 0));
        }
        let more = f.ti + 1 < f.plan.len();
        let seed = f.req.decision.as_ref().map_or(0, |d| d.seed);
        let jitter = f.jitter.get_or_insert_with(|| step::jitter_rng(seed));
        match step::next(class, f.retries, more, &cfg.resilience, jitter) {
            step::Next::Retry { after_ms } => {
                f.retries += 1;
                f.res.retries += 1;
                f.elapsed_us += after_ms * 1000;
                self.next_start(slot, t + after_ms)
            }
            step::Next::FallBack => {
                f.ti += 1;
                f.retries = 0;
                f.res.fallbacks += 1;
                self.next_start(slot, t)
            }
            step::Next::Refuse => {
                f.res.status = o.status.filter(|s| (400..500).contains(s)).unwrap_or(502);
                self.complete_now(slot, (t, 0))
            }
            step::Next::Exhausted => {
                f.res.status = if class == ErrorClass::RateLimited {
                    429
                } else {
                    502
                };
                self.complete_now(slot, (t, 0))
            }
        }
    }

    fn complete(&mut self, slot: u32) {
        let Some(f) = self.flights.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        let rid = f.req.rid;
        if let Some(state) = self.state.as_mut() {
            let cost = if f.background {
                f.req.completed.as_ref().map_or(0, |c| c.cost_micros)
            } else {
                f.res.cost_micros
            };
            state.budgets.settle(rid, cost);
        }
        if f.background {
            return;
        }
        let rec = recorded_result(&f.req);
        let mut sim = f.res;
        if f.as_recorded && f.on_path {
            // Never left the recorded path: the recorded end-to-end figures are the simulated ones.
            if let Some(c) = &f.req.completed {
                sim.status = c.status;
                sim.latency_us = c.latency_us;
                sim.ttft_us = c.ttft_us;
                sim.target = c.target.filter(|_| sim.ok()).or(sim.target);
            }
        } else {
            sim.latency_us = f.elapsed_us;
        }
        self.out.rec.add(&rec);
        self.out.sim.add(&sim);
        if !self.details {
            return;
        }
        if f.req.decision.is_some() || f.req.blocked {
            self.out.decisions += 1;
            self.out.decisions_same += u64::from(f.decision_same);
        }
        if rec.status == sim.status
            && rec.target == sim.target
            && rec.attempts == sim.attempts
            && rec.cost_micros == sim.cost_micros
            && rec.latency_us == sim.latency_us
        {
            self.out.outcomes_same += 1;
        }
        if let Some((pi, p, unsupported)) = f.ips {
            self.out.ips.add(pi, p, unsupported, &rec, &sim);
        }
        if !f.req.path().eq(f.path.iter().copied()) {
            self.out.changed += 1;
            let seq = f.req.arrival.1;
            let limit = self.plan.changed_limit;
            let full = self.out.first_changed.len() >= limit;
            if limit > 0 && (!full || self.out.first_changed.peek().is_some_and(|(s, _)| seq < *s))
            {
                let entry = ChangedRouteKey {
                    request_id: rid.to_string(),
                    recorded: route_text(&self.targets, f.req.path()),
                    simulated: route_text(&self.targets, f.path.iter().copied()),
                    recorded_status: rec.status,
                    simulated_status: sim.status,
                    recorded_cost_micros: rec.cost_micros,
                    simulated_cost_micros: sim.cost_micros,
                };
                self.out.first_changed.push((seq, ChangedRouteOrd(entry)));
                if self.out.first_changed.len() > limit {
                    self.out.first_changed.pop();
                }
            }
        }
    }
}

fn total(t: &Tokens) -> u64 {
    t.input + t.cached_read + t.cache_write + t.reasoning + t.output
}

/// The plan's probability of the recorded route, the recorded propensity, and the plan's
/// probability mass the recording cannot speak for. `None` when the plan has no first choice
/// (every target excluded).
///
/// A recorded outcome is what the plan would have met only if the plan would have taken the same
/// route: the same first choice (drawn with the recorded propensity), then the same fallbacks up
/// to the target that ended the request. The recording's order after its first choice is fixed
/// (`weighted` tries the rest by weight), so the plan's probability of the recorded route is its
/// probability of that first choice when its own order after it matches, and 0 otherwise; the
/// mass of a first choice the recording could not make, or of an order it did not follow, is
/// unsupported.
fn ips_weights(
    req: &Recorded,
    d: &omniroute_core::router::Decision,
    planned: &Planned,
) -> Option<(f64, f64, f64)> {
    let rd = req.decision.as_ref()?;
    let recorded_first = *rd.plan.first()?;
    let target_of = |i: u16| {
        d.candidates
            .get(usize::from(i))
            .and_then(|c| planned.targets.get(c.model).copied())
    };
    let first = target_of(*d.plan.first()?);
    // The targets the recording tried, retries folded: the route its outcome belongs to.
    let mut route: Vec<u32> = Vec::new();
    for t in req.path() {
        if route.last() != Some(&t) {
            route.push(t);
        }
    }
    // The plan's order when its first choice is the recorded one.
    let order: Vec<Option<u32>> = if d.strategy == Strategy::Weighted {
        // `weighted` puts the drawn target first and the rest by weight (a stable sort of the
        // targets in combo order).
        let mut sorted: Vec<u16> = d.plan.clone();
        sorted.sort_unstable();
        sorted.sort_by(|&a, &b| {
            let score = |i: u16| d.candidates.get(usize::from(i)).map_or(0.0, |c| c.score);
            score(b).total_cmp(&score(a))
        });
        std::iter::once(Some(recorded_first))
            .chain(
                sorted
                    .iter()
                    .map(|&i| target_of(i))
                    .filter(|&t| t != Some(recorded_first)),
            )
            .collect()
    } else {
        d.plan.iter().map(|&i| target_of(i)).collect()
    };
    let same_route =
        route.len() <= order.len() && route.iter().zip(&order).all(|(r, o)| Some(*r) == *o);
    let (pi_first, outside) = if d.strategy == Strategy::Weighted {
        // `weighted` draws its first choice in proportion to weight among the targets not
        // excluded; their scores are those probabilities.
        let mut pi = 0.0;
        let mut outside = 0.0;
        for c in d.candidates.iter().filter(|c| c.excluded.is_none()) {
            let t = planned.targets.get(c.model).copied();
            if t == Some(recorded_first) {
                pi += c.score;
            }
            if !t.is_some_and(|t| rd.eligible.contains(&t)) {
                outside += c.score;
            }
        }
        (pi, outside)
    } else {
        (
            f64::from(u8::from(first == Some(recorded_first))),
            f64::from(u8::from(!first.is_some_and(|t| rd.eligible.contains(&t)))),
        )
    };
    let (pi, unsupported) = if same_route {
        (pi_first, outside)
    } else {
        (0.0, outside + pi_first)
    };
    Some((pi, rd.propensity, unsupported))
}
