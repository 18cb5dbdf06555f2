//! The flow's state as a fold of the log, and the check that every recorded decision can be
//! derived again from it (`omniroute log verify --decisions`).
//!
//! Events apply in log order with their recorded time, through the same [`State`] methods the
//! live engine calls in the critical section that records them:
//!
//! | event | effect |
//! | --- | --- |
//! | `ConfigChanged` (v1, v2) | Health follows the config stored under its version; kind `Loaded` is a process start: nothing is in flight any more |
//! | `BudgetGuardSet` | the session's guard is set |
//! | `RouteDecided` (v1, v2) | the combo's round-robin cursor moves on; v2: the session's reservation is held |
//! | `AttemptStarted` | the target has one more attempt in flight (a half-open breaker lets its probe through) |
//! | `AttemptFinished` | the outcome is folded into the target's breaker, cooldown, latency and error rate |
//! | `RequestCompleted` | the reservation is replaced by the actual cost |
//!
//! Before a `RouteDecidedV2` applies, the folder (when verifying) derives the decision again with
//! [`super::route`] from the request's `RequestReceived`, the recorded capabilities and seed, the
//! record's time, the config stored under the recorded version and the folded state, encodes it,
//! and compares the bytes with the recorded ones. The first difference is reported by the path of
//! the field that differs.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Facts, Routed, State, StateSnapshot};
use crate::config::Config;
use crate::event::{ArchivedConfigChangeKind, ArchivedEvent, Event, Hash32, RequestId, SCHEMA_V1};
use crate::log::{LogError, Reader};
use crate::record::RecordRef;
use crate::router::AttemptOutcome;

/// What `RequestReceived` said, kept until the request is decided.
#[derive(Debug, Clone)]
struct OwnedFacts {
    requested: String,
    est_prompt_tokens: u32,
    max_tokens: Option<u32>,
    min_tier: Option<u8>,
    session: Option<String>,
}

/// The first recorded decision that the re-derivation does not reproduce.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Divergence {
    pub seq: u64,
    pub request_id: RequestId,
    /// Path of the first field that differs, e.g. `decided.plan` or `health_digest`.
    pub field: String,
    pub recorded: String,
    pub derived: String,
}

/// The outcome of re-deriving every recorded decision.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecisionReport {
    /// Records folded.
    pub events: u64,
    /// `RouteDecided` records of any version.
    pub decisions: u64,
    /// Decisions re-derived (v2 records whose config is stored).
    pub checked: u64,
    /// ... and reproduced byte for byte.
    pub reproduced: u64,
    /// Decisions that cannot be re-derived: v1 records (written before their inputs were
    /// recorded), or a config version missing from the blobs.
    pub unverifiable: u64,
    pub divergences: u64,
    pub first_divergence: Option<Divergence>,
    /// Why the first unverifiable decision could not be checked.
    pub first_unverifiable: Option<String>,
}

impl DecisionReport {
    /// Share of checked decisions reproduced, in percent (100 when none were checked).
    pub fn reproduced_pct(&self) -> f64 {
        if self.checked == 0 {
            100.0
        } else {
            self.reproduced as f64 * 100.0 / self.checked as f64
        }
    }
}

/// Folds records into the flow's [`State`]; optionally checks each decision.
pub struct Folder {
    state: Option<State>,
    /// Budget guards folded before any config is known (logs written before configs were
    /// stored): they need no config, and join the state once it exists.
    budgets: super::Budgets,
    config: Option<Arc<Config>>,
    configs: HashMap<Hash32, Arc<Config>>,
    facts: HashMap<u128, OwnedFacts>,
    verify: bool,
    /// Compare encodings instead of fields (slower; tests check that both agree).
    exact: bool,
    report: DecisionReport,
    buf: Vec<u8>,
    scratch: String,
}

/// Where the folder finds stored configs: the log's blobs.
pub trait Blobs {
    fn blob(&self, hash: &Hash32) -> Result<Option<Vec<u8>>, LogError>;
}

impl Blobs for Reader {
    fn blob(&self, hash: &Hash32) -> Result<Option<Vec<u8>>, LogError> {
        Reader::blob(self, hash)
    }
}

fn micros(c: &crate::event::ArchivedCost) -> u64 {
    match c {
        crate::event::ArchivedCost::Micros(m) => m.to_native(),
        crate::event::ArchivedCost::Unpriced => 0,
    }
}

impl Folder {
    /// An empty fold; with `verify`, each `RouteDecidedV2` is checked before it applies.
    pub fn new(verify: bool) -> Self {
        Self {
            state: None,
            budgets: super::Budgets::default(),
            config: None,
            configs: HashMap::new(),
            facts: HashMap::new(),
            verify,
            exact: false,
            report: DecisionReport::default(),
            buf: Vec::new(),
            scratch: String::new(),
        }
    }

    /// A verifying fold that compares each re-derived decision's encoding with the stored bytes
    /// (the definition of "byte for byte"); the default compares field by field, which agrees
    /// with it and builds no event.
    pub fn exact() -> Self {
        Self {
            exact: true,
            ..Self::new(true)
        }
    }

    /// A fold resumed from a checkpoint taken under `config_version`.
    pub fn resume(
        snapshot: StateSnapshot,
        config_version: Hash32,
        blobs: &dyn Blobs,
    ) -> Result<Option<Self>, LogError> {
        let mut f = Self::new(false);
        let Some(cfg) = f.config(&config_version, blobs)? else {
            return Ok(None);
        };
        let Some(state) = State::from_snapshot(snapshot, &cfg) else {
            return Ok(None);
        };
        f.state = Some(state);
        f.config = Some(cfg);
        Ok(Some(f))
    }

    fn budgets(&mut self) -> &mut super::Budgets {
        match &mut self.state {
            Some(s) => &mut s.budgets,
            None => &mut self.budgets,
        }
    }

    pub fn report(&self) -> &DecisionReport {
        &self.report
    }

    /// The folded state and the config it follows (`None` before the first `ConfigChanged`).
    pub fn into_parts(self) -> (Option<State>, Option<Arc<Config>>) {
        (self.state, self.config)
    }

    /// Budget guards folded while no config was known (see [`Folder::into_parts`]).
    pub fn orphan_budgets(&self) -> &super::Budgets {
        &self.budgets
    }

    /// The config stored under `version`, parsed once.
    fn config(
        &mut self,
        version: &Hash32,
        blobs: &dyn Blobs,
    ) -> Result<Option<Arc<Config>>, LogError> {
        if let Some(c) = self.configs.get(version) {
            return Ok(Some(Arc::clone(c)));
        }
        let Some(bytes) = blobs.blob(version)? else {
            return Ok(None);
        };
        let Ok(cfg) = Config::from_canonical(&bytes) else {
            return Ok(None);
        };
        let cfg = Arc::new(cfg);
        self.configs.insert(*version, Arc::clone(&cfg));
        Ok(Some(cfg))
    }

    fn config_changed(
        &mut self,
        version: &Hash32,
        loaded: bool,
        blobs: &dyn Blobs,
    ) -> Result<(), LogError> {
        let cfg = self.config(version, blobs)?;
        if let Some(state) = &mut self.state {
            if loaded {
                state.restart();
            }
            if let Some(c) = &cfg {
                state.health.reconfigure(c);
            }
        } else if let Some(c) = &cfg {
            let mut state = State::new(c);
            state.budgets = std::mem::take(&mut self.budgets);
            if loaded {
                state.budgets.restart();
            }
            self.state = Some(state);
        } else if loaded {
            self.budgets.restart();
        }
        if loaded {
            self.facts.clear();
        }
        self.config = cfg.or(self.config.take());
        Ok(())
    }

    /// Applies one record (and, verifying, checks it first if it is a decision).
    pub fn apply(&mut self, rec: &RecordRef<'_>, blobs: &dyn Blobs) -> Result<(), LogError> {
        self.report.events += 1;
        let ts = rec.ts_ms;
        match rec.event {
            ArchivedEvent::ConfigChanged(c) => {
                let loaded = c.kind == ArchivedConfigChangeKind::Loaded;
                self.config_changed(&c.config_version.get(), loaded, blobs)?;
            }
            ArchivedEvent::ConfigChangedV2(c) => {
                let loaded = c.kind == ArchivedConfigChangeKind::Loaded;
                self.config_changed(&c.config_version.get(), loaded, blobs)?;
            }
            ArchivedEvent::BudgetGuardSet(g) => {
                self.budgets().set(
                    &g.session_id,
                    micros(&g.limit),
                    g.action.get(),
                    g.degrade_to_tier.as_ref().copied(),
                );
            }
            // Schema 1 recorded no reservation with its decisions: a guarded session's request
            // is opened when received, so that its cost counts against the guard when it
            // completes (as the gateway counted it before schema 2).
            ArchivedEvent::RequestReceived(r) if rec.schema == SCHEMA_V1 => {
                if let Some(session) = r.session_id.as_ref().map(|s| s.as_str())
                    && self.budgets().get(session).is_some()
                {
                    let rid = r.request_id.get();
                    self.budgets().reserve(rid, session, 0);
                }
            }
            ArchivedEvent::RequestReceived(r) if self.verify => {
                self.facts.insert(
                    r.request_id.get().0,
                    OwnedFacts {
                        requested: r.requested.to_string(),
                        est_prompt_tokens: r.est_prompt_tokens.to_native(),
                        max_tokens: r.max_tokens.as_ref().map(|m| m.to_native()),
                        min_tier: r.min_tier.as_ref().copied(),
                        session: r.session_id.as_ref().map(|s| s.to_string()),
                    },
                );
            }
            ArchivedEvent::RouteDecided(d) => {
                self.report.decisions += 1;
                self.report.unverifiable += 1;
                if self.report.first_unverifiable.is_none() {
                    self.report.first_unverifiable = Some(format!(
                        "seq {}: a v1 RouteDecided (written before decisions recorded their inputs)",
                        rec.seq
                    ));
                }
                let rid = d.request_id.get();
                self.facts.remove(&rid.0);
                if let Some(s) = &mut self.state {
                    s.apply_decided(rid, &d.combo, None);
                }
            }
            ArchivedEvent::RouteDecidedV2(d) => {
                self.report.decisions += 1;
                let rid = d.decided.request_id.get();
                if self.verify {
                    self.check(rec, blobs)?;
                    self.facts.remove(&rid.0);
                }
                if let Some(s) = &mut self.state {
                    let budget = d
                        .budget
                        .as_ref()
                        .map(|b| (b.session_id.as_str(), b.reserved_now_micros.to_native()));
                    s.apply_decided(rid, &d.decided.combo, budget);
                }
            }
            ArchivedEvent::AttemptStarted(a) => {
                if let Some(s) = &mut self.state
                    && let Some(m) = s.health.model_index(&a.target.model)
                {
                    s.health.start(m, ts);
                }
            }
            ArchivedEvent::AttemptFinished(a) => {
                if let Some(s) = &mut self.state
                    && let Some(m) = s.health.model_index(&a.target.model)
                {
                    let error = a.error.as_ref();
                    s.health.observe(
                        &AttemptOutcome {
                            model: m,
                            latency_us: a.latency_us.to_native(),
                            error: error.map(|e| e.class.get()),
                            retry_after_ms: error
                                .and_then(|e| e.retry_after_ms.as_ref().map(|r| r.to_native())),
                        },
                        ts,
                    );
                }
            }
            ArchivedEvent::RequestCompleted(c) => {
                let rid = c.request_id.get();
                self.facts.remove(&rid.0);
                self.budgets().settle(rid, micros(&c.cost));
            }
            _ => {}
        }
        Ok(())
    }

    fn unverifiable(&mut self, why: String) {
        self.report.unverifiable += 1;
        if self.report.first_unverifiable.is_none() {
            self.report.first_unverifiable = Some(why);
        }
    }

    fn diverged(&mut self, d: Divergence) {
        self.report.divergences += 1;
        if self.report.first_divergence.is_none() {
            self.report.first_divergence = Some(d);
        }
    }

    /// Derives a recorded `RouteDecidedV2` again and compares.
    fn check(&mut self, rec: &RecordRef<'_>, blobs: &dyn Blobs) -> Result<(), LogError> {
        let ArchivedEvent::RouteDecidedV2(d) = rec.event else {
            return Ok(());
        };
        let rid = d.decided.request_id.get();
        let version = d.decided.config_version.get();
        let Some(config) = self.config(&version, blobs)? else {
            self.unverifiable(format!(
                "seq {}: config version {version} is not stored in the log",
                rec.seq
            ));
            return Ok(());
        };
        self.report.checked += 1;
        let diverge = |field: &str, recorded: String, derived: String| Divergence {
            seq: rec.seq,
            request_id: rid,
            field: field.to_string(),
            recorded,
            derived,
        };
        let (Some(state), Some(facts)) = (&self.state, self.facts.get(&rid.0)) else {
            let d = diverge(
                "request",
                "a decision".into(),
                "no RequestReceived before it (or no config loaded)".into(),
            );
            self.diverged(d);
            return Ok(());
        };
        let f = Facts {
            requested: &facts.requested,
            est_prompt_tokens: facts.est_prompt_tokens,
            max_tokens: facts.max_tokens,
            min_tier: facts.min_tier,
            session: facts.session.as_deref(),
            required: d.input.required,
        };
        let derived = match super::derive(&f, d.decided.seed.to_native(), rec.ts_ms, state, &config)
        {
            Ok(derived) => derived,
            Err(Routed::Blocked { .. }) => {
                let d = diverge("outcome", "decided".into(), "blocked by the budget".into());
                self.diverged(d);
                return Ok(());
            }
            Err(Routed::Unroutable { error, .. }) => {
                let d = diverge("outcome", "decided".into(), error.to_string());
                self.diverged(d);
                return Ok(());
            }
            Err(Routed::Decided { .. }) => return Ok(()),
        };
        if self.exact {
            // The slow path, for tests: encode and compare the bytes.
            let event = Event::RouteDecidedV2(Box::new(derived.event(rid, &config)));
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            match rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&event, buf) {
                Ok(bytes) => {
                    let same = bytes.as_slice() == rec.event_bytes;
                    self.buf = bytes;
                    if same {
                        self.report.reproduced += 1;
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.diverged(diverge("(encoding)", String::new(), e.to_string()));
                    return Ok(());
                }
            }
            let (field, recorded, derived) = first_difference(rec, &event)
                .unwrap_or_else(|| ("(encoding)".into(), String::new(), String::new()));
            self.diverged(diverge(&field, recorded, derived));
            return Ok(());
        }
        if derived.matches(d, rid, &config, &mut self.scratch) {
            self.report.reproduced += 1;
            return Ok(());
        }
        let event = Event::RouteDecidedV2(Box::new(derived.event(rid, &config)));
        let (field, recorded, derived) = first_difference(rec, &event)
            .unwrap_or_else(|| ("(unknown)".into(), String::new(), String::new()));
        self.diverged(diverge(&field, recorded, derived));
        Ok(())
    }
}

/// The path of the first field where the recorded and derived events differ, with both values.
fn first_difference(rec: &RecordRef<'_>, derived: &Event) -> Option<(String, String, String)> {
    let recorded = rec.event.to_owned_event().ok()?;
    let (Event::RouteDecidedV2(r), Event::RouteDecidedV2(d)) = (&recorded, derived) else {
        return None;
    };
    let a = serde_json::to_value(r).ok()?;
    let b = serde_json::to_value(d).ok()?;
    walk(&a, &b, String::new())
}

fn walk(a: &Value, b: &Value, path: String) -> Option<(String, String, String)> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = walk(va, vb, join(k)) {
                            return Some(d);
                        }
                    }
                    None => return Some((join(k), va.to_string(), "(absent)".into())),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| walk(va, vb, format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some((path, a.to_string(), b.to_string())),
    }
}

/// Re-derives every recorded decision of the log; `progress(done, total)` is called as records
/// are folded.
pub fn verify_decisions(
    reader: &Reader,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DecisionReport, LogError> {
    fold_log(reader, Folder::new(true), progress)
}

/// Folds a whole log through `folder`; its report at the end.
pub fn fold_log(
    reader: &Reader,
    mut folder: Folder,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DecisionReport, LogError> {
    let total = reader.last_seq()?;
    for item in reader.range(..)? {
        let stored = item?;
        let rec = stored.record()?;
        folder.apply(&rec, reader)?;
        if rec.seq % 65_536 == 0 {
            progress(rec.seq, total);
        }
    }
    progress(total, total);
    Ok(folder.report)
}
