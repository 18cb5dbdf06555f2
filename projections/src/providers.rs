//! Provider metrics, per provider and per model: attempts, success rate, error classes, latency and
//! time-to-first-token percentiles (HdrHistogram), stream cuts, and circuit state with its recent
//! history (from `CircuitChanged`).

use std::collections::BTreeMap;

use omniroute_core::event::{ArchivedEvent, CircuitState, ErrorClass};
use serde::{Deserialize, Serialize};

use crate::Rec;
use crate::arch::{self, bump};
use crate::hist::{Latency, Percentiles};

/// How many circuit transitions each target keeps.
pub const HISTORY: usize = 20;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Providers {
    pub providers: BTreeMap<String, Provider>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Provider {
    pub stats: Stats,
    pub models: BTreeMap<String, Stats>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub attempts: u64,
    pub ok: u64,
    /// Failed attempts by error class (snake_case names).
    pub errors: BTreeMap<String, u64>,
    pub stream_cuts: u64,
    pub latency: Latency,
    pub ttft: Latency,
    pub circuit: Option<CircuitState>,
    pub circuit_history: Vec<Transition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Transition {
    pub ts_ms: u64,
    pub from: CircuitState,
    pub to: CircuitState,
    pub reason: String,
}

impl Stats {
    fn attempt(&mut self, latency_us: u64, ttft_us: Option<u64>, error: Option<ErrorClass>) {
        self.attempts += 1;
        self.latency.record(latency_us);
        if let Some(t) = ttft_us {
            self.ttft.record(t);
        }
        match error {
            None => self.ok += 1,
            Some(c) => {
                if c == ErrorClass::StreamCut {
                    self.stream_cuts += 1;
                }
                bump(&mut self.errors, arch::class_name(c));
            }
        }
    }

    fn circuit(&mut self, t: Transition) {
        self.circuit = Some(t.to);
        if self.circuit_history.len() == HISTORY {
            self.circuit_history.remove(0);
        }
        self.circuit_history.push(t);
    }

    pub fn view(&self, name: &str) -> StatsView {
        StatsView {
            name: name.to_string(),
            attempts: self.attempts,
            ok: self.ok,
            success_rate: if self.attempts == 0 {
                None
            } else {
                Some(self.ok as f64 / self.attempts as f64)
            },
            errors: self.errors.clone(),
            stream_cuts: self.stream_cuts,
            stream_cut_rate: if self.attempts == 0 {
                None
            } else {
                Some(self.stream_cuts as f64 / self.attempts as f64)
            },
            latency: self.latency.percentiles(),
            ttft: self.ttft.percentiles(),
            circuit: self.circuit,
            circuit_history: self.circuit_history.clone(),
        }
    }
}

impl Providers {
    pub(crate) fn apply(&mut self, r: &Rec<'_>) {
        match r.event {
            ArchivedEvent::AttemptFinished(a) => {
                let latency = a.latency_us.to_native();
                let ttft = a.ttft_us.as_ref().map(|t| t.to_native());
                let error = a.error.as_ref().map(|e| e.class.get());
                arch::with(&mut self.providers, a.target.provider.as_str(), |p| {
                    p.stats.attempt(latency, ttft, error);
                    arch::with(&mut p.models, a.target.model.as_str(), |m| {
                        m.attempt(latency, ttft, error)
                    });
                });
            }
            ArchivedEvent::CircuitChanged(c) => {
                let t = Transition {
                    ts_ms: r.ts_ms,
                    from: arch::circuit(&c.from),
                    to: arch::circuit(&c.to),
                    reason: c.reason.as_str().to_string(),
                };
                arch::with(&mut self.providers, c.provider.as_str(), |p| {
                    match c.model.as_ref() {
                        Some(m) => arch::with(&mut p.models, m.as_str(), |s| s.circuit(t)),
                        None => p.stats.circuit(t),
                    }
                });
            }
            _ => {}
        }
    }

    /// `GET /api/providers/metrics` and `omniroute providers`.
    pub fn view(&self) -> Vec<ProviderView> {
        self.providers
            .iter()
            .map(|(name, p)| ProviderView {
                stats: p.stats.view(name),
                models: p.models.iter().map(|(m, s)| s.view(m)).collect(),
            })
            .collect()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProviderView {
    #[serde(flatten)]
    pub stats: StatsView,
    pub models: Vec<StatsView>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StatsView {
    pub name: String,
    pub attempts: u64,
    pub ok: u64,
    pub success_rate: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub stream_cuts: u64,
    pub stream_cut_rate: Option<f64>,
    pub latency: Percentiles,
    pub ttft: Percentiles,
    pub circuit: Option<CircuitState>,
    pub circuit_history: Vec<Transition>,
}
