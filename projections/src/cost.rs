//! Cost: totals and breakdowns by provider, model, combo, key and session, per UTC hour (so any
//! period or explicit range resolves to the hour) and per session. Cost is attributed per attempt,
//! to the target that was attempted (a failed or cut attempt can still bill tokens); requests are
//! counted at their completion. Unpriced usage is counted, never added as $0.
//!
//! Re-pricing: a `CostModel` built with [`CostModel::repriced`] ignores recorded costs and prices
//! each attempt's tokens with another price table, to answer "what would this have cost".

use std::collections::BTreeMap;

use omniroute_core::event::{ArchivedEvent, Cost, Tokens};
use omniroute_core::pricing::Price;
use omniroute_core::time::{civil_from_days, days_from_civil};
use serde::{Deserialize, Serialize};

use crate::Rec;
use crate::arch::{self, add_tokens, total_tokens};

pub const HOUR_MS: u64 = 3_600_000;

/// What a breakdown can be grouped by.
pub const DIMS: [&str; 5] = ["provider", "model", "combo", "key", "session"];

/// The label of requests without a session, key or combo.
pub const NONE: &str = "(none)";

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Cell {
    /// Requests completed.
    pub requests: u64,
    /// Requests whose cost is not wholly known (some attempt used an unpriced model).
    pub unpriced_requests: u64,
    pub attempts: u64,
    /// Attempts that used tokens of an unpriced model.
    pub unpriced_attempts: u64,
    /// Priced cost, micro-dollars.
    pub cost_micros: u64,
    pub tokens: Tokens,
}

impl Cell {
    fn add(&mut self, o: &Cell) {
        self.requests += o.requests;
        self.unpriced_requests += o.unpriced_requests;
        self.attempts += o.attempts;
        self.unpriced_attempts += o.unpriced_attempts;
        self.cost_micros += o.cost_micros;
        add_tokens(&mut self.tokens, &o.tokens);
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Breakdown {
    pub total: Cell,
    /// One map per entry of [`DIMS`].
    pub by: [BTreeMap<String, Cell>; 5],
}

impl Breakdown {
    fn update(&mut self, labels: [&str; 5], f: impl Fn(&mut Cell)) {
        f(&mut self.total);
        for (map, label) in self.by.iter_mut().zip(labels) {
            arch::with(map, label, &f);
        }
    }

    fn merge(&mut self, o: &Breakdown) {
        self.total.add(&o.total);
        for (mine, theirs) in self.by.iter_mut().zip(&o.by) {
            for (k, c) in theirs {
                arch::with(mine, k, |m| m.add(c));
            }
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CostModel {
    /// By UTC hour (unix ms / 3,600,000).
    pub hours: BTreeMap<u64, Breakdown>,
    pub sessions: BTreeMap<String, Breakdown>,
    /// Prices by model id, when re-pricing.
    #[serde(skip)]
    reprice: Option<BTreeMap<String, Price>>,
}

impl CostModel {
    /// A model that prices every attempt with `prices` (by model id) instead of the recorded cost.
    pub fn repriced(prices: BTreeMap<String, Price>) -> Self {
        Self {
            reprice: Some(prices),
            ..Self::default()
        }
    }

    pub(crate) fn apply(&mut self, r: &Rec<'_>) {
        let open = r.open;
        let session = open.and_then(|o| o.session.as_deref()).unwrap_or(NONE);
        let key = open.and_then(|o| o.key.as_deref()).unwrap_or(NONE);
        let combo = open.and_then(|o| o.combo.as_deref()).unwrap_or(NONE);
        let hour = r.ts_ms / HOUR_MS;
        match r.event {
            ArchivedEvent::AttemptFinished(a) => {
                let tokens = a.tokens.get();
                let model = a.target.model.as_str();
                let cost = match &self.reprice {
                    None => arch::cost(&a.cost),
                    Some(prices) => omniroute_core::pricing::cost(prices.get(model), &tokens),
                };
                let cell = Cell {
                    attempts: 1,
                    unpriced_attempts: u64::from(
                        cost == Cost::Unpriced && total_tokens(&tokens) > 0,
                    ),
                    cost_micros: match cost {
                        Cost::Micros(m) => m,
                        Cost::Unpriced => 0,
                    },
                    tokens,
                    ..Cell::default()
                };
                let labels = [a.target.provider.as_str(), model, combo, key, session];
                self.record(hour, session, labels, &cell);
            }
            ArchivedEvent::RequestCompleted(c) => {
                let unpriced = match &self.reprice {
                    None => arch::cost(&c.cost) == Cost::Unpriced,
                    // Re-priced requests are unpriced when any of their attempts was: that is
                    // counted per attempt above, so only requests are counted here.
                    Some(_) => false,
                };
                let cell = Cell {
                    requests: 1,
                    unpriced_requests: u64::from(unpriced),
                    ..Cell::default()
                };
                let (provider, model) = match c.target.as_ref() {
                    Some(t) => (t.provider.as_str(), t.model.as_str()),
                    None => (NONE, NONE),
                };
                self.record(hour, session, [provider, model, combo, key, session], &cell);
            }
            _ => {}
        }
    }

    fn record(&mut self, hour: u64, session: &str, labels: [&str; 5], cell: &Cell) {
        let add = |c: &mut Cell| c.add(cell);
        self.hours.entry(hour).or_default().update(labels, add);
        arch::with(&mut self.sessions, session, |b| b.update(labels, add));
    }

    /// Sums the hours in `[from_ms, to_ms)` (rounded out to whole hours).
    pub fn range(&self, from_ms: u64, to_ms: u64) -> Breakdown {
        let mut out = Breakdown::default();
        let (from, to) = (from_ms / HOUR_MS, to_ms.div_ceil(HOUR_MS));
        for (_, b) in self.hours.range(from..to) {
            out.merge(b);
        }
        out
    }

    /// Builds the report for a query.
    pub fn report(&self, q: &Query) -> Result<Report, String> {
        let dim = match &q.group_by {
            None => None,
            Some(g) => Some(DIMS.iter().position(|d| d == g).ok_or_else(|| {
                format!("cannot group by {g:?}; use one of: provider, model, combo, key, session")
            })?),
        };
        let (b, from_ms, to_ms) = match &q.window {
            Window::Session(id) => (
                self.sessions
                    .get(id)
                    .cloned()
                    .ok_or_else(|| format!("no cost recorded for session {id:?}"))?,
                None,
                None,
            ),
            Window::Range { from_ms, to_ms } => {
                (self.range(*from_ms, *to_ms), Some(*from_ms), Some(*to_ms))
            }
        };
        let mut groups: Vec<Group> = match dim {
            None => Vec::new(),
            Some(i) => b.by[i]
                .iter()
                .map(|(k, c)| Group {
                    name: k.clone(),
                    cell: *c,
                })
                .collect(),
        };
        groups.sort_by(|a, b| {
            b.cell
                .cost_micros
                .cmp(&a.cell.cost_micros)
                .then(a.name.cmp(&b.name))
        });
        Ok(Report {
            period: q.period.clone(),
            from_ms,
            to_ms,
            group_by: q.group_by.clone(),
            repriced: q.repriced.clone(),
            total: b.total,
            groups,
        })
    }
}

/// Which events a cost report covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Window {
    Session(String),
    Range { from_ms: u64, to_ms: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// As asked: "day", "week", "month", "session" or "range".
    pub period: String,
    pub window: Window,
    pub group_by: Option<String>,
    /// The price table used instead of recorded costs, if any (shown in the report).
    pub repriced: Option<String>,
}

impl Query {
    /// Resolves `period` (`day`, `week`, `month`: the current UTC calendar day, ISO week or month
    /// up to `now_ms`; `session` with `session`) or an explicit `from`..`to` (unix ms).
    pub fn resolve(
        period: Option<&str>,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        session: Option<&str>,
        group_by: Option<&str>,
        now_ms: u64,
    ) -> Result<Query, String> {
        let day = 86_400_000u64;
        let start_of_day = now_ms - now_ms % day;
        let window = match (period, from_ms, to_ms) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("give either a period or from/to, not both".into());
            }
            (None, Some(f), t) => Window::Range {
                from_ms: f,
                to_ms: t.unwrap_or(now_ms + 1),
            },
            (None, None, Some(_)) => return Err("`to` needs a `from`".into()),
            (None, None, None) | (Some("day"), None, None) => Window::Range {
                from_ms: start_of_day,
                to_ms: now_ms + 1,
            },
            (Some("week"), None, None) => {
                // 1970-01-01 was a Thursday: days since the last Monday.
                let days = (now_ms / day + 3) % 7;
                Window::Range {
                    from_ms: start_of_day - days * day,
                    to_ms: now_ms + 1,
                }
            }
            (Some("month"), None, None) => Window::Range {
                from_ms: month_start(now_ms),
                to_ms: now_ms + 1,
            },
            (Some("session"), None, None) => match session {
                Some(s) => Window::Session(s.to_string()),
                None => return Err("period `session` needs a session id".into()),
            },
            (Some(p), None, None) => {
                return Err(format!(
                    "unknown period {p:?}; use day, week, month or session, or give from/to"
                ));
            }
        };
        if let Window::Range { from_ms, to_ms } = window
            && from_ms >= to_ms
        {
            return Err(format!(
                "empty range: from {from_ms} is not before to {to_ms}"
            ));
        }
        let period = match (&window, period) {
            (_, Some(p)) => p.to_string(),
            (Window::Range { .. }, None) if from_ms.is_some() => "range".into(),
            _ => "day".into(),
        };
        Ok(Query {
            period,
            window,
            group_by: group_by.map(str::to_string),
            repriced: None,
        })
    }
}

/// Start of the UTC calendar month containing `ms`.
fn month_start(ms: u64) -> u64 {
    let (y, m, _) = civil_from_days((ms / 86_400_000) as i64);
    (days_from_civil(y, m, 1) as u64) * 86_400_000
}

/// `GET /api/usage/cost` and `omniroute report cost`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub period: String,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub group_by: Option<String>,
    pub repriced: Option<String>,
    pub total: Cell,
    pub groups: Vec<Group>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    #[serde(flatten)]
    pub cell: Cell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_and_week_starts() {
        // 2026-11-21T10:00:00Z is a Saturday.
        let now = 1_795_255_200_000u64;
        assert_eq!(month_start(now), 1_793_491_200_000); // 2026-11-01
        let q = Query::resolve(Some("week"), None, None, None, None, now);
        assert_eq!(
            q.map(|q| q.window),
            Ok(Window::Range {
                from_ms: 1_794_787_200_000, // Monday 2026-11-16
                to_ms: now + 1
            })
        );
        assert_eq!(month_start(951_782_400_000), 949_363_200_000); // 2000-02-29 -> 2000-02-01
    }
}
