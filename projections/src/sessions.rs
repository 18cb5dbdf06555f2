//! Per-session snapshots: activity, requests, errors, fallbacks, tokens, cost, the models and
//! providers that served it, and its budget guard. Spending against a guard counts the priced cost
//! of requests received after the guard was set, as the live engine does when it restores guards.

use std::collections::{BTreeMap, BTreeSet};

use omniroute_core::event::{ArchivedEvent, BudgetAction, Cost, RequestId, Tokens};
use serde::{Deserialize, Serialize};

use crate::Rec;
use crate::arch::{self, add_tokens, bump};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Sessions {
    pub sessions: BTreeMap<String, Session>,
    /// Open requests of sessions that had a guard when the request arrived.
    guarded_open: BTreeSet<RequestId>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Session {
    /// Time of the session's first event (unix ms).
    pub first_ms: u64,
    pub last_ms: u64,
    pub requests: u64,
    pub errors: u64,
    pub fallbacks: u64,
    pub tokens: Tokens,
    /// Priced cost, micro-dollars.
    pub cost_micros: u64,
    /// Requests whose cost is not (wholly) known: some attempt used an unpriced model.
    pub unpriced_requests: u64,
    /// Requests served, by model and by provider.
    pub models: BTreeMap<String, u64>,
    pub providers: BTreeMap<String, u64>,
    pub guard: Option<Guard>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Guard {
    pub limit_micros: u64,
    pub action: BudgetAction,
    pub degrade_to_tier: Option<u8>,
    pub spent_micros: u64,
    /// `BudgetExceeded` events for this session.
    pub exceeded: u64,
}

impl Sessions {
    pub(crate) fn apply(&mut self, r: &Rec<'_>) {
        let session = r.open.and_then(|o| o.session.as_deref());
        match r.event {
            ArchivedEvent::RequestReceived(e) => {
                let Some(id) = session else { return };
                let guarded = self.touch(id, r.ts_ms, |s| s.requests += 1);
                if guarded {
                    self.guarded_open.insert(e.request_id.get());
                }
            }
            ArchivedEvent::FallbackTriggered(_) => {
                if let Some(id) = session {
                    self.touch(id, r.ts_ms, |s| s.fallbacks += 1);
                }
            }
            ArchivedEvent::RequestCompleted(c) => {
                let guarded = self.guarded_open.remove(&c.request_id.get());
                let Some(id) = session else { return };
                let cost = arch::cost(&c.cost);
                let tokens = c.tokens.get();
                self.touch(id, r.ts_ms, |s| {
                    if c.error.is_some() {
                        s.errors += 1;
                    }
                    add_tokens(&mut s.tokens, &tokens);
                    match cost {
                        Cost::Micros(m) => {
                            s.cost_micros += m;
                            if let Some(g) = s.guard.as_mut().filter(|_| guarded) {
                                g.spent_micros += m;
                            }
                        }
                        Cost::Unpriced => s.unpriced_requests += 1,
                    }
                    if let Some(t) = c.target.as_ref() {
                        bump(&mut s.models, t.model.as_str());
                        bump(&mut s.providers, t.provider.as_str());
                    }
                });
            }
            ArchivedEvent::BudgetGuardSet(g) => {
                let limit = match arch::cost(&g.limit) {
                    Cost::Micros(m) => m,
                    Cost::Unpriced => 0,
                };
                let action = g.action.get();
                let tier = g.degrade_to_tier.as_ref().copied();
                self.touch(g.session_id.as_str(), r.ts_ms, |s| match &mut s.guard {
                    Some(old) => {
                        old.limit_micros = limit;
                        old.action = action;
                        old.degrade_to_tier = tier;
                    }
                    None => {
                        s.guard = Some(Guard {
                            limit_micros: limit,
                            action,
                            degrade_to_tier: tier,
                            spent_micros: 0,
                            exceeded: 0,
                        })
                    }
                });
            }
            ArchivedEvent::BudgetExceeded(b) => {
                self.touch(b.session_id.as_str(), r.ts_ms, |s| {
                    if let Some(g) = &mut s.guard {
                        g.exceeded += 1;
                    }
                });
            }
            _ => {}
        }
    }

    /// Updates a session's activity and runs `f` on it; returns whether it has a guard.
    fn touch(&mut self, id: &str, ts_ms: u64, f: impl FnOnce(&mut Session)) -> bool {
        let mut guarded = false;
        arch::with(&mut self.sessions, id, |s| {
            if s.first_ms == 0 {
                s.first_ms = ts_ms;
            }
            s.last_ms = s.last_ms.max(ts_ms);
            f(s);
            guarded = s.guard.is_some();
        });
        guarded
    }

    /// The snapshot of one session, with `reserved_micros` (known only to the live engine) added.
    pub fn view(&self, id: &str, reserved_micros: u64) -> Option<SessionView> {
        let s = self.sessions.get(id)?;
        let top = |m: &BTreeMap<String, u64>| {
            let mut v: Vec<Count> = m
                .iter()
                .map(|(name, n)| Count {
                    name: name.clone(),
                    requests: *n,
                })
                .collect();
            v.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.name.cmp(&b.name)));
            v.truncate(5);
            v
        };
        Some(SessionView {
            id: id.to_string(),
            first_ms: s.first_ms,
            last_ms: s.last_ms,
            requests: s.requests,
            errors: s.errors,
            fallbacks: s.fallbacks,
            tokens: s.tokens,
            cost_micros: s.cost_micros,
            unpriced_requests: s.unpriced_requests,
            top_models: top(&s.models),
            top_providers: top(&s.providers),
            budget: s.guard.as_ref().map(|g| BudgetView {
                limit_micros: g.limit_micros,
                spent_micros: g.spent_micros,
                reserved_micros,
                remaining_micros: g
                    .limit_micros
                    .saturating_sub(g.spent_micros)
                    .saturating_sub(reserved_micros),
                action: g.action,
                degrade_to_tier: g.degrade_to_tier,
                exceeded: g.exceeded,
            }),
        })
    }
}

/// `GET /api/sessions/{id}` and `omniroute sessions show`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionView {
    pub id: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub requests: u64,
    pub errors: u64,
    pub fallbacks: u64,
    pub tokens: Tokens,
    pub cost_micros: u64,
    pub unpriced_requests: u64,
    pub top_models: Vec<Count>,
    pub top_providers: Vec<Count>,
    pub budget: Option<BudgetView>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Count {
    pub name: String,
    pub requests: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BudgetView {
    pub limit_micros: u64,
    pub spent_micros: u64,
    pub reserved_micros: u64,
    pub remaining_micros: u64,
    pub action: BudgetAction,
    pub degrade_to_tier: Option<u8>,
    pub exceeded: u64,
}
