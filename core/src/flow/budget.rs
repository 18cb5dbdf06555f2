//! Per-session budget guards, as a fold: `BudgetGuardSet` sets a guard, a decision reserves the
//! request's worst-case cost, `RequestCompleted` replaces the reservation by the actual cost, and
//! a process start releases what died in flight. The verdict is a pure function of the guard and
//! the worst case: reservation happens in the same critical section as the decision, so
//! concurrent requests can never overspend a guard by more than one request's worst case.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Facts;
use crate::config::Config;
use crate::event::{BudgetAction, RequestId, Tokens};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub limit_micros: u64,
    pub action: BudgetAction,
    pub degrade_to_tier: Option<u8>,
    pub spent_micros: u64,
    pub reserved_micros: u64,
}

impl Guard {
    /// What is left once spend and reservations are counted.
    pub fn left(&self) -> u64 {
        self.limit_micros
            .saturating_sub(self.spent_micros.saturating_add(self.reserved_micros))
    }

    fn fits(&self, worst: u64) -> bool {
        self.spent_micros
            .saturating_add(self.reserved_micros)
            .saturating_add(worst)
            <= self.limit_micros
    }
}

/// What the guard says about one request. `guard` is the guard as the verdict saw it (before
/// this request's reservation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No guard on this session.
    Unguarded,
    /// Within budget; `reserved` is held until settled.
    Reserved { reserved: u64, guard: Guard },
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
            Verdict::Reserved { reserved, .. }
            | Verdict::Degrade { reserved, .. }
            | Verdict::Alert { reserved, .. } => reserved,
            Verdict::Unguarded | Verdict::Blocked(_) => 0,
        }
    }
}

/// The verdict of `guard` on a request whose worst case is `worst` at full tier; `worst_at`
/// gives it for targets at or below a tier (for `degrade`).
pub fn verdict(guard: &Guard, worst: u64, worst_at: impl Fn(u8) -> u64) -> Verdict {
    let g = *guard;
    if g.fits(worst) {
        return Verdict::Reserved {
            reserved: worst,
            guard: g,
        };
    }
    match (g.action, g.degrade_to_tier) {
        (BudgetAction::Alert, _) => Verdict::Alert {
            reserved: worst,
            guard: g,
        },
        (BudgetAction::Degrade, Some(tier)) if g.fits(worst_at(tier)) => Verdict::Degrade {
            tier,
            reserved: worst_at(tier),
            guard: g,
        },
        _ => Verdict::Blocked(g),
    }
}

/// Worst-case cost in micro-dollars of a request on the requested combo's (or model's) targets at
/// or below `max_tier` (unpriced targets count 0: they cannot be bounded).
pub fn worst_case(config: &Config, facts: &Facts<'_>, max_tier: Option<u8>) -> u64 {
    let out = facts
        .max_tokens
        .unwrap_or(config.router.default_output_tokens);
    let tokens = Tokens {
        input: u64::from(facts.est_prompt_tokens),
        output: u64::from(out),
        ..Tokens::default()
    };
    let direct;
    let models: &[crate::config::Target] = match config.combo_index(facts.requested) {
        Some(c) => &config.combos[c].targets,
        None => match config.model_index(facts.requested) {
            Some(model) => {
                direct = [crate::config::Target { model, weight: 1 }];
                &direct
            }
            None => &[],
        },
    };
    models
        .iter()
        .filter_map(|t| config.model(t.model))
        .filter(|m| max_tier.is_none_or(|t| m.tier <= t))
        .filter_map(|m| m.price.as_ref().map(|p| p.cost_micros(&tokens)))
        .max()
        .unwrap_or(0)
}

/// Every session's guard, and the reservations of requests still in flight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budgets {
    guards: HashMap<String, Guard>,
    /// Request id (as u128) -> (session, amount reserved).
    open: HashMap<u128, (String, u64)>,
}

impl Budgets {
    /// Sets (or replaces) a session's guard, keeping what was already spent and reserved.
    pub fn set(
        &mut self,
        session: &str,
        limit_micros: u64,
        action: BudgetAction,
        tier: Option<u8>,
    ) {
        let e = self.guards.entry(session.to_string()).or_insert(Guard {
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

    /// Puts a guard back as it was before a [`Budgets::set`] whose record failed (`None`: there
    /// was none), keeping what was spent and reserved meanwhile.
    pub fn put_back(&mut self, session: &str, before: Option<Guard>) {
        match (before, self.guards.get_mut(session)) {
            (Some(b), Some(g)) => {
                g.limit_micros = b.limit_micros;
                g.action = b.action;
                g.degrade_to_tier = b.degrade_to_tier;
            }
            (None, Some(_)) => {
                // Requests that reserved against the guard meanwhile reserved against nothing
                // the log knows of: they are forgotten with it.
                self.guards.remove(session);
                self.open.retain(|_, (s, _)| s != session);
            }
            _ => {}
        }
    }

    pub fn get(&self, session: &str) -> Option<Guard> {
        self.guards.get(session).copied()
    }

    /// Holds `amount` for request `rid` of a guarded session until [`Budgets::settle`].
    pub fn reserve(&mut self, rid: RequestId, session: &str, amount: u64) {
        let Some(g) = self.guards.get_mut(session) else {
            return;
        };
        g.reserved_micros = g.reserved_micros.saturating_add(amount);
        self.open.insert(rid.0, (session.to_string(), amount));
    }

    /// A request completed: its reservation is replaced by what it actually cost. Requests that
    /// reserved nothing (their session had no guard when they were decided) change nothing.
    pub fn settle(&mut self, rid: RequestId, actual: u64) {
        let Some((session, amount)) = self.open.remove(&rid.0) else {
            return;
        };
        if let Some(g) = self.guards.get_mut(&session) {
            g.reserved_micros = g.reserved_micros.saturating_sub(amount);
            g.spent_micros = g.spent_micros.saturating_add(actual);
        }
    }

    /// A process start: requests in flight died with the previous process; their reservations
    /// are released (what they spent upstream never reached a `RequestCompleted`).
    pub fn restart(&mut self) {
        for (_, (session, amount)) in self.open.drain() {
            if let Some(g) = self.guards.get_mut(&session) {
                g.reserved_micros = g.reserved_micros.saturating_sub(amount);
            }
        }
    }

    /// Every guard, for listings.
    pub fn guards(&self) -> impl Iterator<Item = (&str, &Guard)> {
        self.guards.iter().map(|(s, g)| (s.as_str(), g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: u64, action: BudgetAction, tier: Option<u8>) -> Guard {
        Guard {
            limit_micros: limit,
            action,
            degrade_to_tier: tier,
            spent_micros: 0,
            reserved_micros: 0,
        }
    }

    #[test]
    fn verdicts_follow_the_action() {
        let at = |_t: u8| 10;
        let g = guard(100, BudgetAction::Block, None);
        assert!(matches!(
            verdict(&g, 100, at),
            Verdict::Reserved { reserved: 100, .. }
        ));
        assert_eq!(verdict(&g, 101, at), Verdict::Blocked(g));
        let d = guard(100, BudgetAction::Degrade, Some(0));
        assert!(matches!(
            verdict(&d, 101, at),
            Verdict::Degrade {
                tier: 0,
                reserved: 10,
                ..
            }
        ));
        let a = guard(100, BudgetAction::Alert, None);
        assert!(matches!(
            verdict(&a, 500, at),
            Verdict::Alert { reserved: 500, .. }
        ));
    }

    #[test]
    fn reservations_settle_and_restart_releases_them() {
        let mut b = Budgets::default();
        b.set("s", 1_000, BudgetAction::Block, None);
        b.reserve(RequestId(1), "s", 300);
        b.reserve(RequestId(2), "s", 200);
        b.settle(RequestId(1), 120);
        let g = b.get("s").unwrap_or(guard(0, BudgetAction::Block, None));
        assert_eq!((g.spent_micros, g.reserved_micros), (120, 200));
        // Settling twice, or a request that reserved nothing, changes nothing.
        b.settle(RequestId(1), 120);
        b.settle(RequestId(9), 5);
        b.restart();
        let g = b.get("s").unwrap_or(guard(0, BudgetAction::Block, None));
        assert_eq!((g.spent_micros, g.reserved_micros), (120, 0));
    }
}
