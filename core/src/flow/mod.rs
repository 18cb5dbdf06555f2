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
use crate::event::{BudgetSeen, RequestId, RouteDecidedV2, RouteInputRecord};
use crate::router::{self, Decision, Health, RouteError, RouteInput};
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
    let worst = budget::worst_case(config, facts, None);
    let guard = facts.session.and_then(|s| state.budgets.get(s));
    let verdict = match guard {
        None => Verdict::Unguarded,
        Some(g) => budget::verdict(&g, worst, |t| budget::worst_case(config, facts, Some(t))),
    };
    let (max_tier, left) = match verdict {
        Verdict::Blocked(guard) => return Routed::Blocked { guard, worst },
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
    let ri = RouteInput {
        requested: facts.requested,
        est_prompt_tokens: input.est_prompt_tokens,
        max_tokens: input.max_tokens,
        required: input.required,
        min_tier: input.min_tier,
        max_tier: input.max_tier,
        budget_left_micros: input.budget_left_micros,
        seed,
    };
    let decision = match router::decide_seeded(&ri, &state.health, config, now_ms) {
        Ok(d) => d,
        Err(error) => return Routed::Unroutable { error, verdict },
    };
    let health_digest = state
        .health
        .digest(decision.candidates.iter().map(|c| c.model), decision.combo);
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
    let decided = decision.to_event(rid, config.version(), facts.requested, config);
    Routed::Decided {
        event: Box::new(RouteDecidedV2 {
            decided,
            input,
            now_ms,
            health_digest,
            budget,
        }),
        decision,
        verdict,
    }
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
