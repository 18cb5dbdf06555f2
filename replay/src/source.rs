//! Recorded requests, gathered from the streamed log: each request's facts, decision, attempts and
//! completion, released in the order the simulation needs them (by the record that routed them)
//! once they are complete. Memory holds the requests in flight in the recording, not the log.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use omniroute_core::event::{
    ArchivedCircuitState, ArchivedConfigChangeKind, ArchivedCost, ArchivedEvent,
    ArchivedRouteDecided, ArchivedTarget, BudgetAction, ErrorClass, Hash32, RequestId, Strategy,
    Tokens,
};
use omniroute_core::record::RecordRef;

/// A position in the recording: record time, then log order.
pub type Key = (u64, u64);

/// Targets by model id, interned: the simulation, the estimates and the report share the ids.
#[derive(Debug, Default)]
pub struct Targets {
    ids: FxHashMap<String, u32>,
    /// `(provider, model)` of each id.
    pub names: Vec<(String, String)>,
}

impl Targets {
    pub fn id(&mut self, provider: &str, model: &str) -> u32 {
        if let Some(&i) = self.ids.get(model) {
            return i;
        }
        let i = self.names.len() as u32;
        self.ids.insert(model.to_string(), i);
        self.names.push((provider.to_string(), model.to_string()));
        i
    }

    /// `provider/model`, or the model id alone when it already names its provider
    /// (`mock/fast`).
    pub fn name(&self, id: u32) -> String {
        match self.names.get(id as usize) {
            Some((p, m))
                if m.strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/')) =>
            {
                m.clone()
            }
            Some((p, m)) => format!("{p}/{m}"),
            None => "?".into(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// One attempt's outcome as recorded (exact) or sampled (estimated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Time the attempt held its target, on the log's clock (finish - start).
    pub dur_ms: u64,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub error: Option<ErrorClass>,
    pub retry_after_ms: Option<u64>,
    pub status: Option<u16>,
    pub tokens: Tokens,
}

#[derive(Debug, Clone)]
pub struct RecAttempt {
    pub target: u32,
    pub number: u16,
    pub start: Key,
    pub finish: Option<Key>,
    pub outcome: Option<Outcome>,
    /// What the recording charged for it.
    pub cost_micros: u64,
}

#[derive(Debug, Clone)]
pub struct RecDecision {
    pub seed: u64,
    pub required: u8,
    pub config_version: Hash32,
    pub combo: String,
    pub strategy: Strategy,
    /// Planned targets in order.
    pub plan: Vec<u32>,
    pub propensity: f64,
    /// Targets the strategy could have picked first (not excluded).
    pub eligible: Vec<u32>,
    /// The guarded session's reservation.
    pub reservation: Option<(String, u64)>,
}

#[derive(Debug, Clone)]
pub struct RecCompleted {
    pub key: Key,
    pub status: u16,
    pub target: Option<u32>,
    pub cost_micros: u64,
    pub unpriced: bool,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub tokens: Tokens,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub rid: RequestId,
    pub requested: String,
    pub est_prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    pub min_tier: Option<u8>,
    pub session: Option<String>,
    pub key_id: Option<Hash32>,
    pub stream: bool,
    pub decision: Option<RecDecision>,
    /// Refused by a `block` guard.
    pub blocked: bool,
    /// Served under a `degrade` guard's tier.
    pub degraded: bool,
    pub attempts: Vec<RecAttempt>,
    pub circuit_opens: u32,
    pub completed: Option<RecCompleted>,
    /// The record that routed it (decision, budget block, or the completion of an unroutable
    /// request): when the simulation routes it.
    pub arrival: Key,
    /// Never completed: cut by a restart or by the end of the log.
    pub dead: bool,
}

impl Recorded {
    /// The attempted targets, in order.
    pub fn path(&self) -> impl Iterator<Item = u32> + '_ {
        self.attempts.iter().map(|a| a.target)
    }

    /// Input tokens of the answer (what an estimated attempt is charged for), else the estimate.
    pub fn input_tokens(&self) -> Tokens {
        match &self.completed {
            Some(c) if (200..300).contains(&c.status) && c.tokens.input > 0 => Tokens {
                input: c.tokens.input,
                cached_read: c.tokens.cached_read,
                cache_write: c.tokens.cache_write,
                ..Tokens::default()
            },
            _ => Tokens {
                input: u64::from(self.est_prompt_tokens),
                ..Tokens::default()
            },
        }
    }
}

/// What the simulation takes from the recording, in order.
#[derive(Debug)]
pub enum Item {
    Request(Box<Recorded>),
    Config {
        version: Hash32,
        loaded: bool,
    },
    Guard {
        session: String,
        limit_micros: u64,
        action: BudgetAction,
        tier: Option<u8>,
    },
}

struct Entry {
    key: Key,
    item: Item,
    ready: bool,
}

/// Gathers requests from records and releases them in arrival order once complete.
#[derive(Default)]
pub struct Collector {
    /// Received, not yet routed.
    pending: FxHashMap<u128, Box<Recorded>>,
    queue: VecDeque<Entry>,
    /// Absolute position of `queue[0]`.
    base: u64,
    /// Request id -> absolute position in `queue`.
    index: FxHashMap<u128, u64>,
    /// Requests received but never routed (their process stopped first).
    pub unrouted: u64,
}

/// A recorded decision, its targets interned.
fn decision(
    d: &ArchivedRouteDecided,
    required: u8,
    reservation: Option<(String, u64)>,
    targets: &mut Targets,
) -> RecDecision {
    let propensity = d.propensity.to_native();
    let mut id = |t: &ArchivedTarget| targets.id(&t.provider, &t.model);
    RecDecision {
        seed: d.seed.to_native(),
        required,
        config_version: d.config_version.get(),
        combo: d.combo.to_string(),
        strategy: d.strategy.get(),
        plan: d
            .plan
            .iter()
            .filter_map(|&i| d.candidates.get(usize::from(i.to_native())))
            .map(|c| id(&c.target))
            .collect(),
        propensity,
        // Only random first choices are reweighed (IPS): the others need no eligible set.
        eligible: if propensity < 1.0 {
            d.candidates
                .iter()
                .filter(|c| c.excluded.is_none())
                .map(|c| id(&c.target))
                .collect()
        } else {
            Vec::new()
        },
        reservation,
    }
}

pub fn micros(c: &ArchivedCost) -> (u64, bool) {
    match c {
        ArchivedCost::Micros(m) => (m.to_native(), false),
        ArchivedCost::Unpriced => (0, true),
    }
}

impl Collector {
    fn queued(&mut self, rid: u128) -> Option<&mut Recorded> {
        let pos = *self.index.get(&rid)?;
        match &mut self.queue.get_mut((pos - self.base) as usize)?.item {
            Item::Request(r) => Some(r),
            _ => None,
        }
    }

    fn push(&mut self, key: Key, item: Item, ready: bool) {
        if let Item::Request(r) = &item {
            self.index
                .insert(r.rid.0, self.base + self.queue.len() as u64);
        }
        self.queue.push_back(Entry { key, item, ready });
    }

    fn arrive(&mut self, rid: RequestId, key: Key) -> Box<Recorded> {
        let mut r = self.pending.remove(&rid.0).unwrap_or_else(|| {
            // Routed without a `RequestReceived` (a damaged or partial log): facts unknown.
            Box::new(Recorded {
                rid,
                requested: String::new(),
                est_prompt_tokens: 0,
                max_tokens: None,
                min_tier: None,
                session: None,
                key_id: None,
                stream: false,
                decision: None,
                blocked: false,
                degraded: false,
                attempts: Vec::new(),
                circuit_opens: 0,
                completed: None,
                arrival: key,
                dead: false,
            })
        });
        r.arrival = key;
        r
    }

    /// Takes one record. Returns the outcome of an attempt that finished, for the estimates.
    pub fn apply(&mut self, rec: &RecordRef<'_>, targets: &mut Targets) -> Option<(u32, Outcome)> {
        let key = (rec.ts_ms, rec.seq);
        match rec.event {
            ArchivedEvent::RequestReceived(r) => {
                let rid = r.request_id.get();
                self.pending.insert(
                    rid.0,
                    Box::new(Recorded {
                        rid,
                        requested: r.requested.to_string(),
                        est_prompt_tokens: r.est_prompt_tokens.to_native(),
                        max_tokens: r.max_tokens.as_ref().map(|m| m.to_native()),
                        min_tier: r.min_tier.as_ref().copied(),
                        session: r.session_id.as_ref().map(|s| s.to_string()),
                        key_id: r.api_key_id.as_ref().map(|k| k.get()),
                        stream: r.stream,
                        decision: None,
                        blocked: false,
                        degraded: false,
                        attempts: Vec::new(),
                        circuit_opens: 0,
                        completed: None,
                        arrival: key,
                        dead: false,
                    }),
                );
            }
            ArchivedEvent::RouteDecidedV2(d) => {
                let reservation = d
                    .budget
                    .as_ref()
                    .map(|b| (b.session_id.to_string(), b.reserved_now_micros.to_native()));
                let decision = decision(&d.decided, d.input.required, reservation, targets);
                self.decided(d.decided.request_id.get(), key, decision);
            }
            ArchivedEvent::RouteDecided(d) => {
                // Schema 1: no inputs recorded; replayed with what there is.
                let decision = decision(d, 0, None, targets);
                self.decided(d.request_id.get(), key, decision);
            }
            ArchivedEvent::BudgetExceeded(b) => {
                let rid = b.request_id.get();
                if b.outcome.as_str() == "blocked" {
                    let mut r = self.arrive(rid, key);
                    r.blocked = true;
                    self.push(key, Item::Request(r), false);
                } else if b.outcome.starts_with("degraded")
                    && let Some(r) = self.pending.get_mut(&rid.0)
                {
                    r.degraded = true;
                }
            }
            ArchivedEvent::AttemptStarted(a) => {
                let target = targets.id(&a.target.provider, &a.target.model);
                if let Some(r) = self.queued(a.request_id.get().0) {
                    r.attempts.push(RecAttempt {
                        target,
                        number: a.attempt.to_native(),
                        start: key,
                        finish: None,
                        outcome: None,
                        cost_micros: 0,
                    });
                }
            }
            ArchivedEvent::AttemptFinished(a) => {
                let target = targets.id(&a.target.provider, &a.target.model);
                let number = a.attempt.to_native();
                let error = a.error.as_ref();
                let mut outcome = Outcome {
                    dur_ms: 0,
                    latency_us: a.latency_us.to_native(),
                    ttft_us: a.ttft_us.as_ref().map(|t| t.to_native()),
                    error: error.map(|e| e.class.get()),
                    retry_after_ms: error
                        .and_then(|e| e.retry_after_ms.as_ref().map(|r| r.to_native())),
                    status: a.status.as_ref().map(|s| s.to_native()),
                    tokens: a.tokens.get(),
                };
                let r = self.queued(a.request_id.get().0)?;
                let at = r
                    .attempts
                    .iter_mut()
                    .rev()
                    .find(|x| x.number == number && x.target == target)?;
                outcome.dur_ms = rec.ts_ms.saturating_sub(at.start.0);
                at.finish = Some(key);
                at.outcome = Some(outcome);
                at.cost_micros = micros(&a.cost).0;
                return Some((target, outcome));
            }
            ArchivedEvent::CircuitChanged(c) => {
                if c.to == ArchivedCircuitState::Open
                    && let Some(rid) = c.request_id.as_ref()
                    && let Some(r) = self.queued(rid.get().0)
                {
                    r.circuit_opens += 1;
                }
            }
            ArchivedEvent::RequestCompleted(c) => {
                let rid = c.request_id.get();
                let (cost_micros, unpriced) = micros(&c.cost);
                let completed = RecCompleted {
                    key,
                    status: c.status.to_native(),
                    target: c.target.as_ref().map(|t| targets.id(&t.provider, &t.model)),
                    cost_micros,
                    unpriced,
                    latency_us: c.total_latency_us.to_native(),
                    ttft_us: c.ttft_us.as_ref().map(|t| t.to_native()),
                    tokens: c.tokens.get(),
                };
                if let Some(&pos) = self.index.get(&rid.0) {
                    if let Some(e) = self.queue.get_mut((pos - self.base) as usize)
                        && let Item::Request(r) = &mut e.item
                    {
                        r.completed = Some(completed);
                        e.ready = true;
                    }
                } else if self.pending.contains_key(&rid.0) {
                    // Unroutable (unknown model, inactive combo): routed and answered at once.
                    let mut r = self.arrive(rid, key);
                    // A block recorded without its `BudgetExceeded` (older or simulated logs).
                    r.blocked |= completed.status == 402;
                    r.completed = Some(completed);
                    self.push(key, Item::Request(r), true);
                }
            }
            ArchivedEvent::ConfigChanged(c) => {
                let loaded = c.kind == ArchivedConfigChangeKind::Loaded;
                self.config(key, c.config_version.get(), loaded);
            }
            ArchivedEvent::ConfigChangedV2(c) => {
                let loaded = c.kind == ArchivedConfigChangeKind::Loaded;
                self.config(key, c.config_version.get(), loaded);
            }
            ArchivedEvent::BudgetGuardSet(g) => {
                let item = Item::Guard {
                    session: g.session_id.to_string(),
                    limit_micros: micros(&g.limit).0,
                    action: g.action.get(),
                    tier: g.degrade_to_tier.as_ref().copied(),
                };
                self.push(key, item, true);
            }
            _ => {}
        }
        None
    }

    fn decided(&mut self, rid: RequestId, key: Key, decision: RecDecision) {
        let mut r = self.arrive(rid, key);
        r.decision = Some(decision);
        self.push(key, Item::Request(r), false);
    }

    fn config(&mut self, key: Key, version: Hash32, loaded: bool) {
        if loaded {
            // A process start: what the previous process had in flight never completes.
            self.cut();
        }
        self.push(key, Item::Config { version, loaded }, true);
    }

    /// Marks every request in flight as dead (it will never complete).
    pub fn cut(&mut self) {
        self.unrouted += self.pending.len() as u64;
        self.pending.clear();
        for e in self.queue.iter_mut().filter(|e| !e.ready) {
            if let Item::Request(r) = &mut e.item {
                r.dead = true;
            }
            e.ready = true;
        }
    }

    /// The next item whose record is complete, in arrival order.
    pub fn pop(&mut self) -> Option<(Key, Item)> {
        if !self.queue.front()?.ready {
            return None;
        }
        let e = self.queue.pop_front()?;
        self.base += 1;
        if let Item::Request(r) = &e.item {
            self.index.remove(&r.rid.0);
        }
        Some((e.key, e.item))
    }
}
