//! Per-session budget guards. Before dispatch a request reserves its worst-case cost (prompt
//! estimate + max_tokens at the dearest allowed target's price) under one lock, so concurrent
//! requests can never overspend a guard by more than one request's worst case; after the answer
//! the reservation is replaced by the actual cost.

use std::collections::HashMap;
use std::sync::Mutex;

use omniroute_core::event::BudgetAction;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Guard {
    pub limit_micros: u64,
    pub action: BudgetAction,
    pub degrade_to_tier: Option<u8>,
    pub spent_micros: u64,
    pub reserved_micros: u64,
}

/// What the guard says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No guard on this session.
    Unguarded,
    /// Within budget; `reserved` is held until settled.
    Reserved { reserved: u64 },
    /// Would exceed the budget: refuse.
    Blocked(Guard),
    /// Would exceed the budget at full tier: route at or below `tier`.
    Degrade {
        tier: u8,
        reserved: u64,
        guard: Guard,
    },
    /// Would exceed the budget: serve anyway and flag it.
    Alert { reserved: u64, guard: Guard },
}

impl Verdict {
    pub fn reserved(&self) -> u64 {
        match *self {
            Verdict::Reserved { reserved }
            | Verdict::Degrade { reserved, .. }
            | Verdict::Alert { reserved, .. } => reserved,
            Verdict::Unguarded | Verdict::Blocked(_) => 0,
        }
    }
}

#[derive(Default)]
pub struct Budgets {
    guards: Mutex<HashMap<String, Guard>>,
}

impl Budgets {
    /// Budgets as restored from the log.
    pub fn restored(guards: HashMap<String, Guard>) -> Self {
        Self {
            guards: Mutex::new(guards),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Guard>> {
        super::lock(&self.guards)
    }

    /// Sets (or replaces) a session's guard, keeping what was already spent and reserved.
    pub fn set(&self, session: &str, limit_micros: u64, action: BudgetAction, tier: Option<u8>) {
        let mut g = self.lock();
        let e = g.entry(session.to_string()).or_insert(Guard {
            limit_micros,
            action,
            degrade_to_tier: tier,
            spent_micros: 0,
            reserved_micros: 0,
        });
        e.limit_micros = limit_micros;
        e.action = action;
        e.degrade_to_tier = tier;
    }

    pub fn get(&self, session: &str) -> Option<Guard> {
        self.lock().get(session).copied()
    }

    /// Checks and reserves atomically. `worst` is the worst case at full tier; `worst_at` gives it
    /// for targets at or below a tier (for `degrade`).
    pub fn reserve(
        &self,
        session: Option<&str>,
        worst: u64,
        worst_at: impl Fn(u8) -> u64,
    ) -> Verdict {
        let Some(session) = session else {
            return Verdict::Unguarded;
        };
        let mut guards = self.lock();
        let Some(g) = guards.get_mut(session) else {
            return Verdict::Unguarded;
        };
        let fits = |g: &Guard, w: u64| {
            g.spent_micros
                .saturating_add(g.reserved_micros)
                .saturating_add(w)
                <= g.limit_micros
        };
        if fits(g, worst) {
            g.reserved_micros += worst;
            return Verdict::Reserved { reserved: worst };
        }
        match (g.action, g.degrade_to_tier) {
            (BudgetAction::Alert, _) => {
                g.reserved_micros += worst;
                Verdict::Alert {
                    reserved: worst,
                    guard: *g,
                }
            }
            (BudgetAction::Degrade, Some(tier)) if fits(g, worst_at(tier)) => {
                let w = worst_at(tier);
                g.reserved_micros += w;
                Verdict::Degrade {
                    tier,
                    reserved: w,
                    guard: *g,
                }
            }
            _ => Verdict::Blocked(*g),
        }
    }

    /// Replaces a reservation by the actual cost.
    pub fn settle(&self, session: Option<&str>, reserved: u64, actual: u64) {
        let Some(session) = session else { return };
        if let Some(g) = self.lock().get_mut(session) {
            g.reserved_micros = g.reserved_micros.saturating_sub(reserved);
            g.spent_micros = g.spent_micros.saturating_add(actual);
        }
    }
}
