//! `Health`: what the router knows about each target, as a fold of attempt outcomes. The live
//! engine and the replay engine feed it the same outcomes in the same order, so they see the same
//! health. Memory is fixed per target (a ring of failure times, a 64-bucket latency sketch), never
//! proportional to history.

use crate::config::{Config, Resilience};
use crate::event::{CircuitState, ErrorClass};

use super::classify::policy;

/// Most failure times a breaker remembers; `resilience.breaker_failures` is capped to this.
pub const RING: usize = crate::config::MAX_BREAKER_FAILURES as usize;
const BUCKETS: usize = 64;
/// Weight of the newest sample in the latency and error-rate moving averages.
const ALPHA: f64 = 0.2;

/// One attempt's outcome, as `Health` needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptOutcome {
    /// Index into `Config::models`.
    pub model: usize,
    pub latency_us: u64,
    /// `None` on success.
    pub error: Option<ErrorClass>,
    /// Retry-After the upstream sent, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

/// A circuit state change, to be recorded as a `CircuitChanged` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitTransition {
    pub model: usize,
    pub from: CircuitState,
    pub to: CircuitState,
    pub reason: &'static str,
}

/// A circuit breaker: closed -> open after N failures within a window -> half-open after a
/// cooldown (one probe) -> closed on the probe's success, open again on its failure.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: CircuitState,
    failures: [u64; RING],
    len: usize,
    next: usize,
    opened_at_ms: u64,
    probe_in_flight: bool,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: CircuitState::Closed,
            failures: [0; RING],
            len: 0,
            next: 0,
            opened_at_ms: 0,
            probe_in_flight: false,
        }
    }
}

impl Breaker {
    /// The state at `now_ms`: an open breaker whose cooldown has passed reads as half-open.
    pub fn state_at(&self, now_ms: u64, r: &Resilience) -> CircuitState {
        match self.state {
            CircuitState::Open if now_ms >= self.open_until(r) => CircuitState::HalfOpen,
            s => s,
        }
    }

    pub fn open_until(&self, r: &Resilience) -> u64 {
        self.opened_at_ms.saturating_add(r.breaker_cooldown_ms)
    }

    /// Whether a half-open breaker already let its one probe through.
    pub fn probe_in_flight(&self) -> bool {
        self.probe_in_flight
    }

    fn open(&mut self, now_ms: u64) {
        self.state = CircuitState::Open;
        self.opened_at_ms = now_ms;
        self.probe_in_flight = false;
        self.len = 0;
        self.next = 0;
    }

    fn on_start(&mut self, now_ms: u64, r: &Resilience) -> Option<(CircuitState, CircuitState)> {
        if self.state_at(now_ms, r) == CircuitState::HalfOpen && !self.probe_in_flight {
            let from = self.state;
            self.state = CircuitState::HalfOpen;
            self.probe_in_flight = true;
            return (from != CircuitState::HalfOpen).then_some((from, CircuitState::HalfOpen));
        }
        None
    }

    fn on_success(&mut self) -> Option<(CircuitState, CircuitState)> {
        if self.state == CircuitState::HalfOpen {
            self.state = CircuitState::Closed;
            self.probe_in_flight = false;
            self.len = 0;
            self.next = 0;
            return Some((CircuitState::HalfOpen, CircuitState::Closed));
        }
        None
    }

    fn on_failure(&mut self, now_ms: u64, r: &Resilience) -> Option<(CircuitState, CircuitState)> {
        match self.state_at(now_ms, r) {
            CircuitState::HalfOpen => {
                let from = self.state;
                self.open(now_ms);
                Some((from, CircuitState::Open))
            }
            // Failures of attempts that started before the circuit opened change nothing.
            CircuitState::Open => None,
            CircuitState::Closed => {
                self.failures[self.next] = now_ms;
                self.next = (self.next + 1) % RING;
                self.len = (self.len + 1).min(RING);
                let since = now_ms.saturating_sub(r.breaker_window_ms);
                let recent = self.failures[..self.len]
                    .iter()
                    .filter(|&&t| t >= since)
                    .count();
                if recent >= r.breaker_failures as usize {
                    self.open(now_ms);
                    return Some((CircuitState::Closed, CircuitState::Open));
                }
                None
            }
        }
    }
}

/// A small latency sketch: counts in buckets of sqrt(2) growth from 1 µs, halved when full so it
/// follows recent traffic. Quantiles are read as the bucket's upper bound (within a factor 1.42).
#[derive(Debug, Clone)]
pub struct LatencySketch {
    counts: [u16; BUCKETS],
    total: u32,
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

impl LatencySketch {
    fn bucket(us: u64) -> usize {
        // 2 * log2(us), via the bit length and the next bit for the half step.
        if us < 2 {
            return 0;
        }
        let bits = 63 - us.leading_zeros() as usize;
        let half = ((us >> (bits - 1)) & 1) as usize;
        (2 * bits + half).min(BUCKETS - 1)
    }

    fn upper_bound(bucket: usize) -> u64 {
        let bits = bucket / 2;
        let base = 1u64 << bits.min(62);
        if bucket.is_multiple_of(2) {
            base + base / 2
        } else {
            base * 2
        }
    }

    pub fn record(&mut self, us: u64) {
        if self.total >= 2048 {
            self.total = 0;
            for c in &mut self.counts {
                *c /= 2;
                self.total += u32::from(*c);
            }
        }
        let b = Self::bucket(us);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    /// The latency at quantile `q` (0..=1), if anything was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let want = (f64::from(self.total) * q).ceil().max(1.0) as u32;
        let mut seen = 0u32;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u32::from(*c);
            if seen >= want {
                return Some(Self::upper_bound(i));
            }
        }
        Some(Self::upper_bound(BUCKETS - 1))
    }
}

/// Everything known about one target.
#[derive(Debug, Clone, Default)]
pub struct TargetHealth {
    pub breaker: Breaker,
    /// No new attempts before this time (rate limits, Retry-After).
    pub cooldown_until_ms: u64,
    /// Moving average of successful attempts' latency; `None` until the first success.
    pub latency_ewma_us: Option<f64>,
    pub latency: LatencySketch,
    /// Moving average of failures that count against the target (0 = none fail).
    pub error_rate: f64,
    pub in_flight: u32,
    /// Share of the upstream's quota left (1.0 when unknown).
    pub quota_headroom: Option<f64>,
    pub attempts: u64,
}

/// Health of every target plus the round-robin cursors of every combo.
#[derive(Debug, Clone)]
pub struct Health {
    targets: Vec<TargetHealth>,
    cursors: Vec<u64>,
    resilience: Resilience,
}

impl Health {
    pub fn new(config: &Config) -> Self {
        Self {
            targets: vec![TargetHealth::default(); config.models.len()],
            cursors: vec![0; config.combos.len()],
            resilience: config.resilience,
        }
    }

    /// Adapts to a changed config (models or combos added, resilience changed), keeping state.
    pub fn reconfigure(&mut self, config: &Config) {
        self.targets
            .resize(config.models.len(), TargetHealth::default());
        self.cursors.resize(config.combos.len(), 0);
        self.resilience = config.resilience;
    }

    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    pub fn target(&self, model: usize) -> Option<&TargetHealth> {
        self.targets.get(model)
    }

    pub fn cursor(&self, combo: usize) -> u64 {
        self.cursors.get(combo).copied().unwrap_or(0)
    }

    /// Advances a combo's round-robin cursor; call once per decision made for that combo.
    pub fn advance(&mut self, combo: usize) {
        if let Some(c) = self.cursors.get_mut(combo) {
            *c = c.wrapping_add(1);
        }
    }

    /// An attempt on `model` starts: counts it in flight and, if its breaker is half-open, lets it
    /// through as the one probe.
    pub fn start(&mut self, model: usize, now_ms: u64) -> Option<CircuitTransition> {
        let r = self.resilience;
        let t = self.targets.get_mut(model)?;
        t.in_flight = t.in_flight.saturating_add(1);
        t.breaker
            .on_start(now_ms, &r)
            .map(|(from, to)| CircuitTransition {
                model,
                from,
                to,
                reason: "cooldown over: one probe let through",
            })
    }

    /// Folds one attempt outcome in.
    pub fn observe(&mut self, o: &AttemptOutcome, now_ms: u64) -> Option<CircuitTransition> {
        let r = self.resilience;
        let t = self.targets.get_mut(o.model)?;
        t.in_flight = t.in_flight.saturating_sub(1);
        t.attempts += 1;
        let change = match o.error {
            None => {
                t.latency.record(o.latency_us);
                let l = o.latency_us as f64;
                t.latency_ewma_us = Some(match t.latency_ewma_us {
                    Some(e) => e + ALPHA * (l - e),
                    None => l,
                });
                t.error_rate *= 1.0 - ALPHA;
                t.breaker.on_success().map(|c| (c, "probe succeeded"))
            }
            Some(class) => {
                let p = policy(class);
                if let Some(cool) = p.cooldown_ms(o.retry_after_ms, &r) {
                    t.cooldown_until_ms = t.cooldown_until_ms.max(now_ms.saturating_add(cool));
                }
                if p.counts_against_breaker {
                    t.error_rate += ALPHA * (1.0 - t.error_rate);
                    t.breaker.on_failure(now_ms, &r).map(|c| {
                        let why = if c.0 == CircuitState::Closed {
                            "failure threshold reached within the window"
                        } else {
                            "probe failed"
                        };
                        (c, why)
                    })
                } else {
                    None
                }
            }
        };
        change.map(|((from, to), reason)| CircuitTransition {
            model: o.model,
            from,
            to,
            reason,
        })
    }
}
