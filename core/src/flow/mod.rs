//! The request flow's decisions, as pure functions over a [`State`] that is itself a fold of the
//! log: the budget verdict and reservation ([`budget`]), the `RouteInput` assembly and the route
//! ([`route`]), the retry/fallback step with seeded backoff ([`step`]), and the fold that rebuilds
//! the state from recorded events and checks every recorded decision against a re-derivation
//! ([`fold`]). The live engine (`src/engine`) drives these with I/O, timers and streams; replay
//! and `omniroute log verify --decisions` call the same code, so a decision recorded live can be
//! derived again, byte for byte, from the log alone.

pub mod budget;
pub mod fold;
pub mod step;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::event::{
    ArchivedRouteDecidedV2, BudgetSeen, Hash32, RequestId, RouteDecidedV2, RouteInputRecord,
};
use crate::router::{self, Decision, Health, RouteError};
pub use budget::{Budgets, Guard, Verdict};

/// Where the flow's time comes from: the system clock in `serve`, a manual clock in tests. The
/// engine reads it once per step, inside the critical section that records the step, and that
/// value is both the record's `ts_ms` and the time Health and the router use.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// Unix milliseconds from the system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::log::now_ms()
    }
}

/// A clock that moves only when told to (tests: breaker cooldowns without sleeping).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the flow decides from: Health and the budget guards, both folds of the log.
#[derive(Debug, Clone)]
pub struct State {
    pub health: Health,
    pub budgets: Budgets,
}

/// The state as checkpointed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateSnapshot {
    pub health: router::health::HealthSnapshot,
    pub budgets: Budgets,
}

impl State {
    pub fn new(config: &Config) -> Self {
        Self {
            health: Health::new(config),
            budgets: Budgets::default(),
        }
    }

    /// A process start (`ConfigChanged` of kind `Loaded`): what was in flight died with the
    /// previous process.
    pub fn restart(&mut self) {
        self.health.restart();
        self.budgets.restart();
    }

    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            health: self.health.snapshot(),
            budgets: self.budgets.clone(),
        }
    }

    pub fn from_snapshot(s: StateSnapshot, config: &Config) -> Option<Self> {
        Some(Self {
            health: Health::from_snapshot(s.health, config)?,
            budgets: s.budgets,
        })
    }

    /// Applies a recorded decision: the combo's round-robin cursor moves on, and a guarded
    /// session's reservation is held until the request completes.
    pub fn apply_decided(&mut self, rid: RequestId, combo: &str, budget: Option<(&str, u64)>) {
        if let Some(c) = self.health.combo_index(combo) {
            self.health.advance(c);
        }
        if let Some((session, amount)) = budget {
            self.budgets.reserve(rid, session, amount);
        }
    }
}

/// What a request asks for, as `RequestReceived` records it (plus the capabilities it needs,
/// read from the body and recorded in the decision's input).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub requested: &'a str,
    pub est_prompt_tokens: u32,
    /// The client's `max_tokens`.
    pub max_tokens: Option<u32>,
    pub min_tier: Option<u8>,
    pub session: Option<&'a str>,
    pub required: u8,
}

/// The outcome of the routing step.
#[derive(Debug, Clone)]
pub enum Routed {
    /// A budget guard in `block` mode refused it.
    Blocked { guard: Guard, worst: u64 },
    /// No route: unknown model or inactive combo. Nothing is reserved.
    Unroutable { error: RouteError, verdict: Verdict },
    /// Decided; `event` records it whole. Apply it with [`State::apply_decided`] (see
    /// [`Routed::effects`]).
    Decided {
        decision: Decision,
        event: Box<RouteDecidedV2>,
        verdict: Verdict,
    },
}

/// A decision and everything it read, before it is turned into its event.
#[derive(Debug, Clone)]
pub struct Derived {
    pub decision: Decision,
    pub input: RouteInputRecord,
    pub now_ms: u64,
    pub health_digest: Hash32,
    pub budget: Option<BudgetSeen>,
    pub verdict: Verdict,
}

impl Derived {
    /// The event that records it.
    pub fn event(&self, rid: RequestId, config: &Config) -> RouteDecidedV2 {
        let decided = self
            .decision
            .to_event(rid, config.version(), &self.input.requested, config);
        RouteDecidedV2 {
            decided,
            input: self.input.clone(),
            now_ms: self.now_ms,
            health_digest: self.health_digest,
            budget: self.budget.clone(),
        }
    }

    /// Whether `e` records exactly this (every field [`Derived::event`] would write; see
    /// [`Decision::matches_event`]), without building the event.
    pub fn matches(
        &self,
        e: &ArchivedRouteDecidedV2,
        rid: RequestId,
        config: &Config,
        scratch: &mut String,
    ) -> bool {
        let (i, a) = (&self.input, &e.input);
        let same_input = a.requested.as_str() == i.requested
            && a.est_prompt_tokens.to_native() == i.est_prompt_tokens
            && a.max_tokens.as_ref().map(|v| v.to_native()) == i.max_tokens
            && a.required == i.required
            && a.min_tier.as_ref().copied() == i.min_tier
            && a.max_tier.as_ref().copied() == i.max_tier
            && a.budget_left_micros.as_ref().map(|v| v.to_native()) == i.budget_left_micros;
        let same_budget = match (e.budget.as_ref(), &self.budget) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.session_id.as_str() == b.session_id
                    && a.limit_micros.to_native() == b.limit_micros
                    && a.action.get() == b.action
                    && a.degrade_to_tier.as_ref().copied() == b.degrade_to_tier
                    && a.spent_micros.to_native() == b.spent_micros
                    && a.reserved_micros.to_native() == b.reserved_micros
                    && a.worst_micros.to_native() == b.worst_micros
                    && a.reserved_now_micros.to_native() == b.reserved_now_micros
            }
            _ => false,
        };
        same_input
            && same_budget
            && e.now_ms.to_native() == self.now_ms
            && e.health_digest.get() == self.health_digest
            && self.decision.matches_event(
                &e.decided,
                rid,
                config.version(),
                &self.input.requested,
                config,
                scratch,
            )
    }
}

/// Budget verdict, `RouteInput` assembly and the router, for one request. Pure: reads `state`,
/// changes nothing (the caller applies the decision in the same critical section that records it).
pub fn route(
    facts: &Facts<'_>,
    rid: RequestId,
    seed: u64,
    now_ms: u64,
    state: &State,
    config: &Config,
) -> Routed {
    match derive(facts, seed, now_ms, state, config) {
        Ok(d) => Routed::Decided {
            event: Box::new(d.event(rid, config)),
            decision: d.decision,
            verdict: d.verdict,
        },
        Err(r) => r,
    }
}

/// The routing step as a driver takes it: [`route`], and a decision applied to `state` at once
/// (the round-robin cursor, the reservation; [`State::apply_decided`]), so that no driver can
/// record a decision it did not apply. The engine and the simulation call this.
pub fn route_and_apply(
    facts: &Facts<'_>,
    rid: RequestId,
    seed: u64,
    now_ms: u64,
    state: &mut State,
    config: &Config,
) -> Routed {
    let routed = route(facts, rid, seed, now_ms, state, config);
    if let Routed::Decided { event, .. } = &routed {
        state.apply_decided(rid, &event.decided.combo, event.reservation());
    }
    routed
}

/// [`route`] without building the event: the decision and what it read, or why there is none
/// (`Blocked` or `Unroutable`).
// Once per request, by value: boxing the error would allocate on the hot path for nothing.
#[allow(clippy::result_large_err)]
pub fn derive(
    facts: &Facts<'_>,
    seed: u64,
    now_ms: u64,
    state: &State,
    config: &Config,
) -> Result<Derived, Routed> {
    derive_with(facts, seed, now_ms, state, config, true)
}

/// [`derive`], with the Health digest only when `digest` is set: replay decides millions of
/// requests and compares plans, not digests, so it skips the hashing (the digest is then zero).
#[allow(clippy::result_large_err)]
pub fn derive_with(
    facts: &Facts<'_>,
    seed: u64,
    now_ms: u64,
    state: &State,
    config: &Config,
    digest: bool,
) -> Result<Derived, Routed> {
    let guard = facts.session.and_then(|s| state.budgets.get(s));
    // The worst case matters only to a guard: unguarded requests do not pay for it.
    let (verdict, worst) = match guard {
        None => (Verdict::Unguarded, 0),
        Some(g) => {
            let worst = budget::worst_case(config, facts, None);
            let v = budget::verdict(&g, worst, |t| budget::worst_case(config, facts, Some(t)));
            (v, worst)
        }
    };
    let (max_tier, left) = match verdict {
        Verdict::Blocked(guard) => return Err(Routed::Blocked { guard, worst }),
        Verdict::Unguarded | Verdict::Alert { .. } => (None, None),
        Verdict::Reserved { guard, .. } => (None, Some(guard.left())),
        Verdict::Degrade { tier, guard, .. } => (Some(tier), Some(guard.left())),
    };
    // A guarded request needs a bounded answer for its worst case to hold.
    let max_tokens = match (facts.max_tokens, verdict) {
        (None, v) if v != Verdict::Unguarded => Some(config.router.default_output_tokens),
        (m, _) => m,
    };
    let input = RouteInputRecord {
        requested: facts.requested.to_string(),
        est_prompt_tokens: facts.est_prompt_tokens,
        max_tokens,
        required: facts.required,
        min_tier: facts.min_tier,
        max_tier,
        budget_left_micros: left,
    };
    let ri = input.route_input(seed);
    let decision = match router::decide_seeded(&ri, &state.health, config, now_ms) {
        Ok(d) => d,
        Err(error) => return Err(Routed::Unroutable { error, verdict }),
    };
    let health_digest = if digest {
        state
            .health
            .digest(decision.candidates.iter().map(|c| c.model), decision.combo)
    } else {
        Hash32([0; 32])
    };
    let budget = guard.zip(facts.session).map(|(g, session)| BudgetSeen {
        session_id: session.to_string(),
        limit_micros: g.limit_micros,
        action: g.action,
        degrade_to_tier: g.degrade_to_tier,
        spent_micros: g.spent_micros,
        reserved_micros: g.reserved_micros,
        worst_micros: worst,
        reserved_now_micros: verdict.reserved(),
    });
    Ok(Derived {
        decision,
        input,
        now_ms,
        health_digest,
        budget,
        verdict,
    })
}

impl RouteDecidedV2 {
    /// What applying this decision reserves: the session and amount, when guarded.
    pub fn reservation(&self) -> Option<(&str, u64)> {
        self.budget
            .as_ref()
            .map(|b| (b.session_id.as_str(), b.reserved_now_micros))
    }
}

#[cfg(test)]
mod tests;
