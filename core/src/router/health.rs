//! `Health`: what the router knows about each target, as a fold of events in log order. It
//! changes only through [`Health::start`] (an `AttemptStarted`), [`Health::observe`] (an
//! `AttemptFinished`), [`Health::advance`] (a `RouteDecided`), [`Health::reconfigure`] (a
//! `ConfigChanged`) and [`Health::restart`] (a process start), each with the event's recorded
//! time. The live engine applies them in the same critical section that stamps and enqueues the
//! event, and `log verify --decisions` and replay fold the log through the same methods, so all of
//! them see the same Health. Memory is fixed per target (a ring of failure times, a 64-bucket
//! latency sketch), never proportional to history.

use serde::{Deserialize, Serialize};

use crate::config::{Config, Resilience};
use crate::event::{CircuitState, ErrorClass, Hash32};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    state: CircuitState,
    #[serde(with = "array")]
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

    /// An attempt ended in a failure that says nothing about the target's health (a rate limit,
    /// a client error): a half-open breaker's probe is over without a verdict, so the next
    /// attempt may probe (after any cooldown the failure set).
    fn on_neutral(&mut self) {
        if self.state == CircuitState::HalfOpen {
            self.probe_in_flight = false;
        }
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySketch {
    #[serde(with = "array")]
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

/// Serde for fixed arrays longer than serde derives for (32).
mod array {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(
        c: &[T; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(c.iter())
    }

    pub fn deserialize<'de, D, T, const N: usize>(d: D) -> Result<[T; N], D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default + Copy,
    {
        let v = Vec::<T>::deserialize(d)?;
        let mut out = [T::default(); N];
        if v.len() != N {
            return Err(serde::de::Error::invalid_length(
                v.len(),
                &"a fixed-size array",
            ));
        }
        out.copy_from_slice(&v);
        Ok(out)
    }
}

/// Everything known about one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    targets: Vec<TargetHealth>,
    cursors: Vec<u64>,
    resilience: Resilience,
    /// Model and combo ids in config order: what `targets` and `cursors` are indexed by, so a
    /// new config (models added, removed or reordered) keeps each target's state by id.
    model_ids: Vec<String>,
    combo_ids: Vec<String>,
}

/// Health without its config-derived parts, for checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthSnapshot {
    targets: Vec<TargetHealth>,
    cursors: Vec<u64>,
    model_ids: Vec<String>,
    combo_ids: Vec<String>,
}

impl Health {
    pub fn new(config: &Config) -> Self {
        Self {
            targets: vec![TargetHealth::default(); config.models.len()],
            cursors: vec![0; config.combos.len()],
            resilience: config.resilience,
            model_ids: config.models.iter().map(|m| m.id.clone()).collect(),
            combo_ids: config.combos.iter().map(|c| c.id.clone()).collect(),
        }
    }

    /// Adapts to a new config (a `ConfigChanged`): each model's state and each combo's cursor is
    /// kept by id; new ones start fresh; the resilience numbers are the new config's.
    pub fn reconfigure(&mut self, config: &Config) {
        let same_models = self.model_ids.len() == config.models.len()
            && self
                .model_ids
                .iter()
                .zip(&config.models)
                .all(|(a, m)| *a == m.id);
        if !same_models {
            let mut old: std::collections::HashMap<String, TargetHealth> = self
                .model_ids
                .drain(..)
                .zip(self.targets.drain(..))
                .collect();
            self.targets = config
                .models
                .iter()
                .map(|m| old.remove(&m.id).unwrap_or_default())
                .collect();
            self.model_ids = config.models.iter().map(|m| m.id.clone()).collect();
        }
        let same_combos = self.combo_ids.len() == config.combos.len()
            && self
                .combo_ids
                .iter()
                .zip(&config.combos)
                .all(|(a, c)| *a == c.id);
        if !same_combos {
            let old: std::collections::HashMap<&str, u64> = self
                .combo_ids
                .iter()
                .map(String::as_str)
                .zip(self.cursors.iter().copied())
                .collect();
            self.cursors = config
                .combos
                .iter()
                .map(|c| old.get(c.id.as_str()).copied().unwrap_or(0))
                .collect();
            self.combo_ids = config.combos.iter().map(|c| c.id.clone()).collect();
        }
        self.resilience = config.resilience;
    }

    /// The process started again: attempts that were in flight died with the previous process,
    /// so nothing is in flight and no half-open probe is out.
    pub fn restart(&mut self) {
        for t in &mut self.targets {
            t.in_flight = 0;
            t.breaker.probe_in_flight = false;
        }
    }

    /// Index of a model id in the config Health follows.
    pub fn model_index(&self, id: &str) -> Option<usize> {
        self.model_ids.iter().position(|m| m == id)
    }

    /// Health's index of model `id`, which is `m` in the caller's config: checked first, since
    /// they agree unless the config changed while the caller's request was under way.
    pub fn resolve(&self, m: usize, id: &str) -> Option<usize> {
        match self.model_ids.get(m) {
            Some(x) if x == id => Some(m),
            _ => self.model_index(id),
        }
    }

    /// Index of a combo id in the config Health follows.
    pub fn combo_index(&self, id: &str) -> Option<usize> {
        self.combo_ids.iter().position(|c| c == id)
    }

    /// A digest of what `decide` reads for these models and this combo's cursor, recorded with
    /// each decision so that a re-derivation that saw a different Health is caught right there.
    /// Fields are fed in a fixed order as little-endian bytes (floats by their bits). The breaker's
    /// ring of failure times is left out: `decide` does not read it (it costs more to hash than
    /// the rest), and a difference in it shows as soon as it changes a breaker's state.
    pub fn digest(&self, models: impl Iterator<Item = usize>, combo: Option<usize>) -> Hash32 {
        let mut buf = [0u8; 512];
        let mut h = blake3::Hasher::new();
        let mut n = 0;
        let mut put = |bytes: &[u8], buf: &mut [u8; 512], h: &mut blake3::Hasher| {
            if n + bytes.len() > buf.len() {
                h.update(&buf[..n]);
                n = 0;
            }
            buf[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        };
        put(
            &combo.map_or(u64::MAX, |c| self.cursor(c)).to_le_bytes(),
            &mut buf,
            &mut h,
        );
        for m in models {
            let Some(t) = self.targets.get(m) else {
                put(&[0xff], &mut buf, &mut h);
                continue;
            };
            let b = &t.breaker;
            let state = match b.state {
                CircuitState::Closed => 0u8,
                CircuitState::Open => 1,
                CircuitState::HalfOpen => 2,
            };
            put(&[state, u8::from(b.probe_in_flight)], &mut buf, &mut h);
            for v in [
                b.opened_at_ms,
                t.cooldown_until_ms,
                t.latency_ewma_us.map_or(u64::MAX, f64::to_bits),
                t.error_rate.to_bits(),
                u64::from(t.in_flight),
                t.quota_headroom.map_or(u64::MAX, f64::to_bits),
                t.attempts,
            ] {
                put(&v.to_le_bytes(), &mut buf, &mut h);
            }
        }
        h.update(&buf[..n]);
        Hash32(*h.finalize().as_bytes())
    }

    /// The state to checkpoint.
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            targets: self.targets.clone(),
            cursors: self.cursors.clone(),
            model_ids: self.model_ids.clone(),
            combo_ids: self.combo_ids.clone(),
        }
    }

    /// Health from a checkpoint, following `config` from there on (as [`Health::reconfigure`]).
    pub fn from_snapshot(s: HealthSnapshot, config: &Config) -> Option<Self> {
        if s.targets.len() != s.model_ids.len() || s.cursors.len() != s.combo_ids.len() {
            return None;
        }
        // A damaged checkpoint must not index out of the failure ring later.
        if s.targets
            .iter()
            .any(|t| t.breaker.len > RING || t.breaker.next >= RING)
        {
            return None;
        }
        let mut h = Self {
            targets: s.targets,
            cursors: s.cursors,
            resilience: config.resilience,
            model_ids: s.model_ids,
            combo_ids: s.combo_ids,
        };
        h.reconfigure(config);
        Some(h)
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
        t.attempts = t.attempts.saturating_add(1);
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
                    t.breaker.on_neutral();
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
