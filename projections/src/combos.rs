//! Combo metrics: requests, success and fallback rates, the share each target served, cost and
//! end-to-end latency percentiles. A model requested directly is folded under its own id, like a
//! one-target combo; views list what the caller asks for (the configured combos).

use std::collections::BTreeMap;

use omniroute_core::event::{ArchivedEvent, Cost};
use serde::{Deserialize, Serialize};

use crate::Rec;
use crate::arch::{self, bump};
use crate::hist::{Latency, Percentiles};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Combos {
    pub combos: BTreeMap<String, ComboStats>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ComboStats {
    pub requests: u64,
    pub ok: u64,
    /// Requests that needed at least one fallback.
    pub fell_back: u64,
    pub fallbacks: u64,
    /// Requests served, by "provider/model".
    pub served: BTreeMap<String, u64>,
    pub cost_micros: u64,
    pub unpriced_requests: u64,
    pub latency: Latency,
}

impl Combos {
    pub(crate) fn apply(&mut self, r: &Rec<'_>) {
        let ArchivedEvent::RequestCompleted(c) = r.event else {
            return;
        };
        let Some(open) = r.open else { return };
        let Some(combo) = open.combo.as_deref() else {
            return;
        };
        arch::with(&mut self.combos, combo, |s| {
            s.requests += 1;
            if c.error.is_none() {
                s.ok += 1;
            }
            if open.fallbacks > 0 {
                s.fell_back += 1;
            }
            s.fallbacks += u64::from(open.fallbacks);
            if let Some(t) = c.target.as_ref() {
                bump(
                    &mut s.served,
                    &format!("{}/{}", t.provider.as_str(), t.model.as_str()),
                );
            }
            match arch::cost(&c.cost) {
                Cost::Micros(m) => s.cost_micros += m,
                Cost::Unpriced => s.unpriced_requests += 1,
            }
            s.latency.record(c.total_latency_us.to_native());
        });
    }

    pub fn view(&self, id: &str) -> ComboMetrics {
        let s = self.combos.get(id).cloned().unwrap_or_default();
        let rate = |n: u64| (s.requests > 0).then(|| n as f64 / s.requests as f64);
        ComboMetrics {
            requests: s.requests,
            success_rate: rate(s.ok),
            fallback_rate: rate(s.fell_back),
            fallbacks: s.fallbacks,
            share: s
                .served
                .iter()
                .map(|(t, n)| (t.clone(), *n as f64 / s.requests.max(1) as f64))
                .collect(),
            cost_micros: s.cost_micros,
            unpriced_requests: s.unpriced_requests,
            latency: s.latency.percentiles(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ComboMetrics {
    pub requests: u64,
    pub success_rate: Option<f64>,
    /// Share of requests that fell back at least once.
    pub fallback_rate: Option<f64>,
    pub fallbacks: u64,
    /// Share of requests each target served.
    pub share: BTreeMap<String, f64>,
    pub cost_micros: u64,
    pub unpriced_requests: u64,
    pub latency: Percentiles,
}
