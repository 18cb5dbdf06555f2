//! What to replay and under which plan: [`ReplayRequest`] is the user's input as the CLI and
//! `POST /api/replay` take it (strings, JSON); [`ReplayRequest::resolve`] checks it and turns it
//! into a [`Plan`] and a [`Filter`]. A plan rewrites each recorded config version: a strategy
//! (and weights) for one combo or all, or a whole alternative config in place of every version.

use std::collections::BTreeMap;

use omniroute_core::config::Config;
use omniroute_core::event::Strategy;
use omniroute_core::sample::STRATEGY_NAMES;
use serde::{Deserialize, Serialize};

use crate::ReplayError;

/// A replay as asked for (the body of `POST /api/replay`; the CLI builds the same).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// A strategy name (`priority`, `weighted`, `round-robin`, `least-latency`, `cost`,
    /// `least-busy`, `auto`, `tiered`) for `combo`, or for every combo when `combo` is absent.
    pub strategy: Option<String>,
    pub combo: Option<String>,
    /// Target weights for `weighted`, by model id (`{"a": 3, "b": 1}`); models left out keep
    /// their weight.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Target order (model ids, first tried first) for `combo` or every combo: the listed
    /// targets move to the front in this order, the rest keep theirs after them. It is the order
    /// `priority` tries and the tie-break of the other strategies.
    #[serde(default)]
    pub order: Vec<String>,
    /// A whole alternative config (TOML text) replacing every recorded config version.
    pub plan_config: Option<String>,
    /// The name of `plan_config` in messages (its file path).
    pub plan_config_name: Option<String>,
    /// Only requests decided at or after this time (unix ms or UTC `YYYY-MM-DD`)...
    pub from: Option<String>,
    /// ... and before this one.
    pub to: Option<String>,
    /// Only requests through this combo (as recorded).
    pub filter_combo: Option<String>,
    /// Only requests that asked for this model (or were recorded running on it).
    pub model: Option<String>,
    pub session: Option<String>,
    /// Only requests made with this API key id.
    pub key: Option<String>,
    /// Seed of the outcome estimates (default 0).
    pub seed: Option<u64>,
    /// Runs with seeds `seed, seed+1, ...` (default 1, at most 1000).
    pub runs: Option<u32>,
    /// How many changed routes to list (default 20).
    pub changed_limit: Option<u32>,
}

/// A checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub strategy: Option<Strategy>,
    pub combo: Option<String>,
    pub weights: Vec<(String, u32)>,
    pub order: Vec<String>,
    /// The alternative config and its name.
    pub config: Option<(String, Config)>,
    pub seed: u64,
    pub runs: u32,
    pub changed_limit: usize,
}

/// Which recorded requests are re-simulated; the others still happened, so their recorded
/// events are applied as recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub combo: Option<String>,
    pub model: Option<String>,
    pub session: Option<String>,
    pub key: Option<String>,
}

pub fn strategy_by_name(name: &str) -> Option<Strategy> {
    let i = STRATEGY_NAMES.iter().position(|s| *s == name)?;
    [
        Strategy::Priority,
        Strategy::Weighted,
        Strategy::RoundRobin,
        Strategy::LeastLatency,
        Strategy::Cost,
        Strategy::LeastBusy,
        Strategy::Auto,
        Strategy::Tiered,
    ]
    .get(i)
    .copied()
}

pub fn strategy_name(s: Strategy) -> &'static str {
    STRATEGY_NAMES
        .get(s as usize)
        .copied()
        .unwrap_or("priority")
}

impl ReplayRequest {
    /// Checks names and values that need no log (strategy, times, runs, the plan config's
    /// syntax); combos and models are checked against the log's configs by [`Plan::check`].
    pub fn resolve(&self) -> Result<(Plan, Filter), ReplayError> {
        let strategy = match &self.strategy {
            None => None,
            Some(s) => Some(strategy_by_name(s).ok_or_else(|| {
                ReplayError::Invalid(format!(
                    "unknown strategy {s:?}; valid strategies: {}",
                    STRATEGY_NAMES.join(", ")
                ))
            })?),
        };
        if self.combo.is_some()
            && strategy.is_none()
            && self.weights.is_empty()
            && self.order.is_empty()
        {
            return Err(ReplayError::Invalid(
                "a combo was named without a strategy, weights or order to give it; add \
                 --strategy S, --weights a=3,b=1 or --order a,b"
                    .into(),
            ));
        }
        if let Some(m) = self
            .order
            .iter()
            .enumerate()
            .find(|(i, m)| self.order[..*i].contains(m))
            .map(|(_, m)| m)
        {
            return Err(ReplayError::Invalid(format!(
                "{m:?} appears twice in the order; name each target once"
            )));
        }
        if let Some((m, _)) = self.weights.iter().find(|(_, w)| **w == 0) {
            return Err(ReplayError::Invalid(format!(
                "weight of {m:?} is 0; weights are positive integers (leave a model out to keep \
                 its weight)"
            )));
        }
        let config = match &self.plan_config {
            None => None,
            Some(toml) => {
                let name = self
                    .plan_config_name
                    .clone()
                    .unwrap_or_else(|| "plan config".into());
                if strategy.is_some() || !self.weights.is_empty() || !self.order.is_empty() {
                    return Err(ReplayError::Invalid(
                        "a plan config replaces the whole config: give either it or a strategy \
                         and weights, not both (put the strategy in the file)"
                            .into(),
                    ));
                }
                let cfg = Config::from_toml(toml, &name)
                    .map_err(|e| ReplayError::Invalid(e.to_string()))?;
                Some((name, cfg))
            }
        };
        let runs = self.runs.unwrap_or(1);
        if !(1..=1000).contains(&runs) {
            return Err(ReplayError::Invalid(format!(
                "runs = {runs}: give between 1 and 1000 runs"
            )));
        }
        let time = |s: &Option<String>, name: &str| {
            s.as_deref()
                .map(|v| {
                    omniroute_core::time::parse_time(v)
                        .map_err(|e| ReplayError::Invalid(format!("{name}: {e}")))
                })
                .transpose()
        };
        let filter = Filter {
            from_ms: time(&self.from, "from")?,
            to_ms: time(&self.to, "to")?,
            combo: self.filter_combo.clone(),
            model: self.model.clone(),
            session: self.session.clone(),
            key: self.key.clone(),
        };
        if let (Some(f), Some(t)) = (filter.from_ms, filter.to_ms)
            && t <= f
        {
            return Err(ReplayError::Invalid(format!(
                "to ({t}) is not after from ({f}): the time range is empty"
            )));
        }
        let plan = Plan {
            strategy,
            combo: self.combo.clone(),
            weights: self.weights.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            order: self.order.clone(),
            config,
            seed: self.seed.unwrap_or(0),
            runs,
            changed_limit: self.changed_limit.unwrap_or(20) as usize,
        };
        Ok((plan, filter))
    }
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_identity(&self) -> bool {
        self.strategy.is_none()
            && self.weights.is_empty()
            && self.order.is_empty()
            && self.config.is_none()
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        if let Some((name, _)) = &self.config {
            return format!("config file {name}");
        }
        if self.is_identity() {
            return "the recorded plan (nothing changed)".into();
        }
        let whom = match &self.combo {
            Some(c) => format!("combo {c}"),
            None => "every combo".into(),
        };
        let mut s = match self.strategy {
            Some(st) => format!("strategy {} for {whom}", strategy_name(st)),
            None => format!("recorded strategy for {whom}"),
        };
        if !self.weights.is_empty() {
            let w: Vec<String> = self
                .weights
                .iter()
                .map(|(m, w)| format!("{m}={w}"))
                .collect();
            s.push_str(&format!(", weights {}", w.join(",")));
        }
        if !self.order.is_empty() {
            s.push_str(&format!(", order {}", self.order.join(",")));
        }
        s
    }

    /// Checks the plan's combo and weighted models against a recorded config (the last one):
    /// an unknown name is an error that lists the valid ones.
    pub fn check(&self, config: &Config) -> Result<(), ReplayError> {
        let combos: Vec<&str> = config.combos.iter().map(|c| c.id.as_str()).collect();
        if let Some(c) = &self.combo
            && config.combo_index(c).is_none()
        {
            return Err(ReplayError::Invalid(format!(
                "unknown combo {c:?}; the recorded config has: {}",
                list(&combos)
            )));
        }
        let named = self
            .weights
            .iter()
            .map(|(m, _)| (m, "--weights"))
            .chain(self.order.iter().map(|m| (m, "--order")));
        for (m, flag) in named {
            let Some(mi) = config.model_index(m) else {
                let models: Vec<&str> = config.models.iter().map(|m| m.id.as_str()).collect();
                return Err(ReplayError::Invalid(format!(
                    "unknown model {m:?} in {flag}; the recorded config has: {}",
                    list(&models)
                )));
            };
            let in_some = config
                .combos
                .iter()
                .filter(|c| self.combo.as_deref().is_none_or(|id| id == c.id))
                .any(|c| c.targets.iter().any(|t| t.model == mi));
            if !in_some {
                return Err(ReplayError::Invalid(format!(
                    "model {m:?} ({flag}) is not a target of {}; weights and order apply to a \
                     combo's targets",
                    self.combo
                        .as_deref()
                        .map(|c| format!("combo {c:?}"))
                        .unwrap_or_else(|| "any combo".into())
                )));
            }
        }
        Ok(())
    }

    /// The config the plan runs where the recording ran `recorded`.
    pub fn apply(&self, recorded: &Config) -> Config {
        if let Some((_, c)) = &self.config {
            return c.clone();
        }
        let mut c = recorded.clone();
        if self.is_identity() {
            return c;
        }
        let weights: Vec<(usize, u32)> = self
            .weights
            .iter()
            .filter_map(|(m, w)| Some((recorded.model_index(m)?, *w)))
            .collect();
        let order: Vec<usize> = self
            .order
            .iter()
            .filter_map(|m| recorded.model_index(m))
            .collect();
        for combo in c
            .combos
            .iter_mut()
            .filter(|x| self.combo.as_deref().is_none_or(|id| id == x.id))
        {
            if let Some(s) = self.strategy {
                combo.strategy = s;
            }
            for t in combo.targets.iter_mut() {
                if let Some((_, w)) = weights.iter().find(|(m, _)| *m == t.model) {
                    t.weight = *w;
                }
            }
            // Listed targets first, in the listed order; the others after them, as they were.
            combo.targets.sort_by_key(|t| {
                order
                    .iter()
                    .position(|&m| m == t.model)
                    .unwrap_or(usize::MAX)
            });
        }
        c.reindex();
        c
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}
