//! The router: for one request, which targets to try and in what order. Pure and deterministic:
//! `decide(input, health, config, now_ms, rng)` reads nothing else, so the same inputs and seed give
//! the same [`Decision`], bit for bit, live and in replay. The decision is recorded whole in
//! `RouteDecided` and `explain` reads it back, never recomputing it.
//!
//! Strategies (details and the `auto` weights in `docs/routing.md`): `priority`, `weighted`,
//! `round-robin`, `least-latency`, `cost`, `least-busy`, `auto`, `tiered`.

pub mod classify;
pub mod health;

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use crate::config::{AutoWeights, Config, Model};
use crate::event::{
    self, CircuitState, ExclusionReason, Hash32, RequestId, RouteDecided, Strategy,
};
pub use health::{AttemptOutcome, CircuitTransition, Health};

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// The client's `model`: a combo id or a model id.
    pub requested: &'a str,
    pub est_prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    /// Capabilities the request needs (bit set of `Capability::bit`).
    pub required: u8,
    /// The request asks for at least this tier.
    pub min_tier: Option<u8>,
    /// A budget guard in `degrade` mode allows at most this tier.
    pub max_tier: Option<u8>,
    /// What a session's budget guard has left, in micro-dollars; targets whose worst-case cost
    /// exceeds it are excluded.
    pub budget_left_micros: Option<u64>,
    /// Seed of the RNG passed to `decide`; recorded in the decision.
    pub seed: u64,
}

impl<'a> RouteInput<'a> {
    pub fn new(requested: &'a str, est_prompt_tokens: u32, seed: u64) -> Self {
        Self {
            requested,
            est_prompt_tokens,
            max_tokens: None,
            required: 0,
            min_tier: None,
            max_tier: None,
            budget_left_micros: None,
            seed,
        }
    }
}

impl event::RouteInputRecord {
    /// The router's view of a recorded input.
    pub fn route_input(&self, seed: u64) -> RouteInput<'_> {
        RouteInput {
            requested: &self.requested,
            est_prompt_tokens: self.est_prompt_tokens,
            max_tokens: self.max_tokens,
            required: self.required,
            min_tier: self.min_tier,
            max_tier: self.max_tier,
            budget_left_micros: self.budget_left_micros,
            seed,
        }
    }
}

/// Why a request could not be routed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown model or combo {0:?}")]
    Unknown(String),
    #[error("combo {0:?} is not active")]
    Inactive(String),
}

/// One named input of a score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor {
    pub name: &'static str,
    pub value: f64,
    pub weight: f64,
}

const MAX_FACTORS: usize = 5;

/// A candidate's factors, inline (no allocation on the hot path).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    len: u8,
    items: [Factor; MAX_FACTORS],
}

impl Factors {
    const EMPTY: Factor = Factor {
        name: "",
        value: 0.0,
        weight: 0.0,
    };

    fn new() -> Self {
        Self {
            len: 0,
            items: [Self::EMPTY; MAX_FACTORS],
        }
    }

    fn one(name: &'static str, value: f64) -> Self {
        let mut f = Self::new();
        f.push(name, value, 1.0);
        f
    }

    fn push(&mut self, name: &'static str, value: f64, weight: f64) {
        if let Some(slot) = self.items.get_mut(self.len as usize) {
            *slot = Factor {
                name,
                value,
                weight,
            };
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[Factor] {
        &self.items[..self.len as usize]
    }
}

/// Why a candidate was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excluded {
    pub reason: ExclusionReason,
    pub detail: &'static str,
    /// When the exclusion ends (circuit half-open, cooldown over), if it is timed.
    pub until_ms: Option<u64>,
}

/// One target of the combo, scored or excluded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Index into `Config::models`.
    pub model: usize,
    pub score: f64,
    pub factors: Factors,
    pub excluded: Option<Excluded>,
}

/// The router's answer, recorded whole in `RouteDecided`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into `Config::combos`; `None` when a model was requested directly.
    pub combo: Option<usize>,
    pub strategy: Strategy,
    pub seed: u64,
    /// Every target, in the combo's order.
    pub candidates: Vec<Scored>,
    /// The order to try, as indexes into `candidates`. Empty when every target is excluded.
    pub plan: Vec<u16>,
    /// Probability with which the strategy picked `plan[0]`.
    pub propensity: f64,
}

impl Decision {
    /// Model indexes in plan order.
    pub fn targets(&self) -> impl Iterator<Item = usize> + '_ {
        self.plan
            .iter()
            .filter_map(|&i| self.candidates.get(usize::from(i)).map(|c| c.model))
    }

    /// The event that records this decision.
    pub fn to_event(
        &self,
        request_id: RequestId,
        config_version: Hash32,
        requested: &str,
        config: &Config,
    ) -> RouteDecided {
        let candidates = self
            .candidates
            .iter()
            .map(|c| {
                let (target, tier) = match config.model(c.model) {
                    Some(m) => (event_target(config, m), m.tier),
                    None => (event::Target::default(), 0),
                };
                event::Candidate {
                    target,
                    tier,
                    score: c.score,
                    factors: c
                        .factors
                        .as_slice()
                        .iter()
                        .map(|f| event::Factor {
                            name: f.name.to_string(),
                            value: f.value,
                            weight: f.weight,
                        })
                        .collect(),
                    excluded: c.excluded.map(|e| event::Exclusion {
                        reason: e.reason,
                        detail: match e.until_ms {
                            Some(t) => format!("{} (until unix ms {t})", e.detail),
                            None => e.detail.to_string(),
                        },
                    }),
                }
            })
            .collect();
        RouteDecided {
            request_id,
            config_version,
            combo: match self.combo.and_then(|c| config.combos.get(c)) {
                Some(c) => c.id.clone(),
                None => requested.to_string(),
            },
            strategy: self.strategy,
            seed: self.seed,
            candidates,
            plan: self.plan.clone(),
            propensity: self.propensity,
        }
    }
}

impl Decision {
    /// Whether `e` records exactly this decision: every field [`Decision::to_event`] would write,
    /// compared with the stored one (strings and integers exactly, floats by their bits), so it
    /// agrees with comparing the encodings, without building the event. `scratch` is a reused
    /// buffer. Keep it in step with `to_event`.
    pub fn matches_event(
        &self,
        e: &event::ArchivedRouteDecided,
        request_id: RequestId,
        config_version: Hash32,
        requested: &str,
        config: &Config,
        scratch: &mut String,
    ) -> bool {
        use std::fmt::Write as _;
        let combo = match self.combo.and_then(|c| config.combos.get(c)) {
            Some(c) => c.id.as_str(),
            None => requested,
        };
        if e.request_id.get() != request_id
            || e.config_version.get() != config_version
            || e.combo.as_str() != combo
            || e.strategy.get() != self.strategy
            || e.seed.to_native() != self.seed
            || e.propensity.to_native().to_bits() != self.propensity.to_bits()
            || e.plan.len() != self.plan.len()
            || e.candidates.len() != self.candidates.len()
        {
            return false;
        }
        if !e
            .plan
            .iter()
            .zip(&self.plan)
            .all(|(a, b)| a.to_native() == *b)
        {
            return false;
        }
        self.candidates
            .iter()
            .zip(e.candidates.iter())
            .all(|(c, a)| {
                let (provider, model, tier) = match config.model(c.model) {
                    Some(m) => (
                        config.provider_of(m).map_or("", |p| p.id.as_str()),
                        m.id.as_str(),
                        m.tier,
                    ),
                    None => ("", "", 0),
                };
                let factors = c.factors.as_slice();
                let same = a.target.provider.as_str() == provider
                    && a.target.model.as_str() == model
                    && a.tier == tier
                    && a.score.to_native().to_bits() == c.score.to_bits()
                    && a.factors.len() == factors.len()
                    && a.factors.iter().zip(factors).all(|(x, f)| {
                        x.name.as_str() == f.name
                            && x.value.to_native().to_bits() == f.value.to_bits()
                            && x.weight.to_native().to_bits() == f.weight.to_bits()
                    });
                same && match (a.excluded.as_ref(), c.excluded) {
                    (None, None) => true,
                    (Some(x), Some(ex)) => {
                        x.reason.get() == ex.reason
                            && match ex.until_ms {
                                None => x.detail.as_str() == ex.detail,
                                Some(t) => {
                                    scratch.clear();
                                    let _ = write!(scratch, "{} (until unix ms {t})", ex.detail);
                                    x.detail.as_str() == scratch.as_str()
                                }
                            }
                    }
                    _ => false,
                }
            })
    }
}

/// The event form of a model target.
pub fn event_target(config: &Config, m: &Model) -> event::Target {
    event::Target {
        provider: config
            .provider_of(m)
            .map(|p| p.id.clone())
            .unwrap_or_default(),
        model: m.id.clone(),
    }
}

/// Estimated cost in micro-dollars (fractional) of `input` prompt tokens and `output` completion
/// tokens at a model's price; `None` when unpriced.
fn estimate_micros(m: &Model, input: u32, output: u32) -> Option<f64> {
    m.price.as_ref().map(|p| {
        (f64::from(input) * p.input as f64 + f64::from(output) * p.output as f64) / 1_000_000.0
    })
}

/// A uniform draw in [0, 1) from the RNG's next 53 bits.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn exclusion(
    input: &RouteInput<'_>,
    m: &Model,
    health: &Health,
    model: usize,
    config: &Config,
    now_ms: u64,
) -> Option<Excluded> {
    let ex = |reason, detail| {
        Some(Excluded {
            reason,
            detail,
            until_ms: None,
        })
    };
    let provider_enabled = config.provider_of(m).is_some_and(|p| p.enabled);
    if !m.enabled || !provider_enabled {
        return ex(
            ExclusionReason::Inactive,
            "model or provider disabled in config",
        );
    }
    if m.capabilities & input.required != input.required {
        return ex(
            ExclusionReason::Capability,
            "lacks a capability the request needs",
        );
    }
    if input.min_tier.is_some_and(|t| m.tier < t) {
        return ex(
            ExclusionReason::Capability,
            "below the tier the request asks for",
        );
    }
    let needed = u64::from(input.est_prompt_tokens) + u64::from(input.max_tokens.unwrap_or(0));
    if needed > u64::from(m.context_window) {
        return ex(
            ExclusionReason::ContextWindow,
            "prompt plus max_tokens exceed the context window",
        );
    }
    if input.max_tier.is_some_and(|t| m.tier > t) {
        return ex(
            ExclusionReason::Budget,
            "above the tier the session's budget allows",
        );
    }
    if let Some(left) = input.budget_left_micros {
        let out = input
            .max_tokens
            .unwrap_or(config.router.default_output_tokens);
        if estimate_micros(m, input.est_prompt_tokens, out).is_some_and(|c| c > left as f64) {
            return ex(
                ExclusionReason::Budget,
                "worst-case cost exceeds the budget left",
            );
        }
    }
    let t = health.target(model)?;
    let r = health.resilience();
    match t.breaker.state_at(now_ms, r) {
        CircuitState::Open => {
            return Some(Excluded {
                reason: ExclusionReason::CircuitOpen,
                detail: "circuit open",
                until_ms: Some(t.breaker.open_until(r)),
            });
        }
        CircuitState::HalfOpen if t.breaker.probe_in_flight() => {
            return ex(
                ExclusionReason::CircuitOpen,
                "half-open: its one probe is in flight",
            );
        }
        _ => {}
    }
    if t.cooldown_until_ms > now_ms {
        return Some(Excluded {
            reason: ExclusionReason::CoolingDown,
            detail: "cooling down after a rate limit",
            until_ms: Some(t.cooldown_until_ms),
        });
    }
    None
}

/// Sorts `plan` by score, highest first; ties keep the combo's order (stable sort).
fn by_score_desc(plan: &mut [u16], cands: &[Scored]) {
    plan.sort_by(|&a, &b| {
        let (sa, sb) = (cands[usize::from(a)].score, cands[usize::from(b)].score);
        sb.total_cmp(&sa)
    });
}

/// Decides the targets of one request. See the module docs.
pub fn decide(
    input: &RouteInput<'_>,
    health: &Health,
    config: &Config,
    now_ms: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Decision, RouteError> {
    let direct;
    let (combo, strategy, targets, auto) = match config.combo_index(input.requested) {
        Some(ci) => {
            let c = &config.combos[ci];
            if !c.active {
                return Err(RouteError::Inactive(c.id.clone()));
            }
            (Some(ci), c.strategy, c.targets.as_slice(), c.auto_weights)
        }
        None => match config.model_index(input.requested) {
            Some(m) => {
                direct = [crate::config::Target {
                    model: m,
                    weight: 1,
                }];
                (
                    None,
                    Strategy::Priority,
                    &direct[..],
                    config.router.auto_weights,
                )
            }
            None => return Err(RouteError::Unknown(input.requested.to_string())),
        },
    };

    let mut candidates: Vec<Scored> = Vec::with_capacity(targets.len());
    let mut plan: Vec<u16> = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let excluded = match config.model(t.model) {
            Some(m) => exclusion(input, m, health, t.model, config, now_ms),
            None => Some(Excluded {
                reason: ExclusionReason::Inactive,
                detail: "model missing from config",
                until_ms: None,
            }),
        };
        if excluded.is_none() {
            plan.push(i as u16);
        }
        candidates.push(Scored {
            model: t.model,
            score: 0.0,
            factors: Factors::new(),
            excluded,
        });
    }

    let mut propensity = 1.0;
    match strategy {
        Strategy::Priority => {
            let n = targets.len() as f64;
            for (i, c) in candidates.iter_mut().enumerate() {
                c.factors = Factors::one("position", i as f64);
                c.score = n - i as f64;
            }
        }
        Strategy::Weighted => {
            let total: f64 = plan
                .iter()
                .map(|&i| f64::from(targets[usize::from(i)].weight))
                .sum();
            for (c, t) in candidates.iter_mut().zip(targets) {
                let w = f64::from(t.weight);
                c.factors = Factors::one("weight", w);
                c.score = if total > 0.0 { w / total } else { 0.0 };
            }
            // Draw the first in proportion to weight (walking in combo order), then the rest by
            // weight.
            let drawn = if plan.is_empty() {
                None
            } else if total > 0.0 {
                let mut r = unit(rng) * total;
                let mut pick = None;
                for &i in &plan {
                    let w = f64::from(targets[usize::from(i)].weight);
                    if w > 0.0 {
                        pick = Some(i);
                        if r < w {
                            break;
                        }
                        r -= w;
                    }
                }
                pick.map(|i| (i, f64::from(targets[usize::from(i)].weight) / total))
            } else {
                let k = ((unit(rng) * plan.len() as f64) as usize).min(plan.len() - 1);
                Some((plan[k], 1.0 / plan.len() as f64))
            };
            by_score_desc(&mut plan, &candidates);
            if let Some((pick, p)) = drawn {
                if let Some(pos) = plan.iter().position(|&i| i == pick) {
                    plan[..=pos].rotate_right(1);
                }
                propensity = p;
            }
        }
        Strategy::RoundRobin => {
            let cursor = combo.map(|c| health.cursor(c)).unwrap_or(0);
            for c in candidates.iter_mut() {
                c.factors = Factors::one("cursor", cursor as f64);
            }
            if !plan.is_empty() {
                let k = (cursor % plan.len() as u64) as usize;
                plan.rotate_left(k);
                let n = plan.len() as f64;
                for (rank, &i) in plan.iter().enumerate() {
                    candidates[usize::from(i)].score = n - rank as f64;
                }
            }
        }
        Strategy::LeastLatency => {
            for c in candidates.iter_mut() {
                let est = health.target(c.model).and_then(|t| t.latency_ewma_us);
                // Unknown targets are explored first: they score above any measured one.
                let (value, score) = match est {
                    Some(us) => (us / 1000.0, 1.0 / (1.0 + us / 1000.0)),
                    None => (-1.0, 2.0),
                };
                c.factors = Factors::one("latency_ms", value);
                c.score = score;
            }
            by_score_desc(&mut plan, &candidates);
        }
        Strategy::Cost => {
            let out = input
                .max_tokens
                .unwrap_or(config.router.default_output_tokens);
            for c in candidates.iter_mut() {
                let est = config
                    .model(c.model)
                    .and_then(|m| estimate_micros(m, input.est_prompt_tokens, out));
                // Unpriced targets go last: their cost cannot be bounded.
                let (value, score) = match est {
                    Some(micros) => (micros / 1_000_000.0, 1.0 / (1.0 + micros)),
                    None => (-1.0, -1.0),
                };
                c.factors = Factors::one("est_cost_usd", value);
                c.score = score;
            }
            by_score_desc(&mut plan, &candidates);
        }
        Strategy::LeastBusy => {
            for c in candidates.iter_mut() {
                let n = health.target(c.model).map(|t| t.in_flight).unwrap_or(0);
                c.factors = Factors::one("in_flight", f64::from(n));
                c.score = 1.0 / (1.0 + f64::from(n));
            }
            by_score_desc(&mut plan, &candidates);
        }
        Strategy::Auto => {
            score_auto(input, health, config, now_ms, &auto, &mut candidates);
            by_score_desc(&mut plan, &candidates);
        }
        Strategy::Tiered => {
            for c in candidates.iter_mut() {
                let tier = config.model(c.model).map(|m| m.tier).unwrap_or(0);
                c.factors = Factors::one("tier", f64::from(tier));
                c.score = 4.0 - f64::from(tier);
            }
            by_score_desc(&mut plan, &candidates);
        }
    }

    Ok(Decision {
        combo,
        strategy,
        seed: input.seed,
        candidates,
        plan,
        propensity,
    })
}

/// `auto`: a weighted sum of factors each normalised to 0..=1 (higher is better) across the
/// combo's targets: cost (cheapest 1, dearest 0, unpriced 0), latency (fastest 1, slowest 0,
/// unknown 0.5), success (1 - recent error rate), circuit (closed 1, half-open 0.5) and quota
/// headroom (1 when unknown).
fn score_auto(
    input: &RouteInput<'_>,
    health: &Health,
    config: &Config,
    now_ms: u64,
    w: &AutoWeights,
    candidates: &mut [Scored],
) {
    let out = input
        .max_tokens
        .unwrap_or(config.router.default_output_tokens);
    let cost = |c: &Scored| {
        config
            .model(c.model)
            .and_then(|m| estimate_micros(m, input.est_prompt_tokens, out))
    };
    let lat = |c: &Scored| health.target(c.model).and_then(|t| t.latency_ewma_us);
    let range = |vals: &mut dyn Iterator<Item = f64>| {
        vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
    };
    // Normalised over all the combo's targets, excluded ones too, so every factor stays in 0..=1
    // and an explanation can compare any two candidates.
    let (cmin, cmax) = range(&mut candidates.iter().filter_map(cost));
    let (lmin, lmax) = range(&mut candidates.iter().filter_map(lat));
    let norm = |v: f64, lo: f64, hi: f64| {
        if hi > lo {
            1.0 - (v - lo) / (hi - lo)
        } else {
            1.0
        }
    };
    let r = health.resilience();
    for c in candidates.iter_mut() {
        let t = health.target(c.model);
        let fc = cost(c).map(|v| norm(v, cmin, cmax)).unwrap_or(0.0);
        let fl = lat(c).map(|v| norm(v, lmin, lmax)).unwrap_or(0.5);
        let fs = t.map(|t| 1.0 - t.error_rate).unwrap_or(1.0);
        let fcirc = match t.map(|t| t.breaker.state_at(now_ms, r)) {
            Some(CircuitState::Closed) | None => 1.0,
            Some(CircuitState::HalfOpen) => 0.5,
            Some(CircuitState::Open) => 0.0,
        };
        let fq = t.and_then(|t| t.quota_headroom).unwrap_or(1.0);
        let mut f = Factors::new();
        f.push("cost", fc, w.cost);
        f.push("latency", fl, w.latency);
        f.push("success", fs, w.success);
        f.push("circuit", fcirc, w.circuit);
        f.push("quota", fq, w.quota);
        c.score = fc * w.cost + fl * w.latency + fs * w.success + fcirc * w.circuit + fq * w.quota;
        c.factors = f;
    }
}

/// Decides with a fresh ChaCha8 RNG seeded from `input.seed` (what the engine and replay do).
pub fn decide_seeded(
    input: &RouteInput<'_>,
    health: &Health,
    config: &Config,
    now_ms: u64,
) -> Result<Decision, RouteError> {
    use rand_core::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(input.seed);
    decide(input, health, config, now_ms, &mut rng)
}

#[cfg(test)]
mod tests;
