//! Aggregates of replayed requests (recorded or simulated) and the inverse-propensity sums,
//! turned into the report's [`Metrics`] and [`Ips`].

use hdrhistogram::Histogram;

use crate::report::{Estimate, Ips, Metrics, Percentiles, Share};
use crate::source::Targets;

const LOW: u64 = 1;
const HIGH: u64 = 3_600_000_000;

/// Bucket upper bounds of the latency chart, in milliseconds.
pub const BUCKETS_MS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    30_000.0, 60_000.0,
];

/// How one request went, recorded or simulated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Result {
    /// 0: not simulated to the end (a target without any recorded outcome).
    pub status: u16,
    /// The target that answered (2xx).
    pub target: Option<u32>,
    pub attempts: u32,
    pub fallbacks: u32,
    pub retries: u32,
    pub circuit_opens: u32,
    pub cost_micros: u64,
    pub unpriced: bool,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub blocked: bool,
    pub degraded: bool,
    /// What each attempt cost, by target.
    pub costs: Vec<(u32, u64)>,
}

impl Result {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Acc {
    requests: u64,
    unknown: u64,
    succeeded: u64,
    blocked: u64,
    degraded: u64,
    attempts: u64,
    fallbacks: u64,
    retries: u64,
    circuit_opens: u64,
    cost: u64,
    unpriced: u64,
    latency: Option<Histogram<u64>>,
    ttft: Option<Histogram<u64>>,
    /// Per target id: (served, cost).
    targets: Vec<(u64, u64)>,
    pub buckets: Vec<u64>,
}

fn record(h: &mut Option<Histogram<u64>>, us: u64) {
    if h.is_none() {
        *h = Histogram::new_with_bounds(LOW, HIGH, 3).ok();
    }
    if let Some(h) = h {
        let _ = h.record(us.clamp(LOW, HIGH));
    }
}

fn pcts(h: &Option<Histogram<u64>>) -> Percentiles {
    let q = |q: f64| {
        h.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    Percentiles {
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
    }
}

impl Acc {
    pub fn add(&mut self, r: &Result) {
        self.requests += 1;
        if r.status == 0 {
            self.unknown += 1;
            return;
        }
        if r.ok() {
            self.succeeded += 1;
        }
        self.blocked += u64::from(r.blocked);
        self.degraded += u64::from(r.degraded);
        self.attempts += u64::from(r.attempts);
        self.fallbacks += u64::from(r.fallbacks);
        self.retries += u64::from(r.retries);
        self.circuit_opens += u64::from(r.circuit_opens);
        self.cost += r.cost_micros;
        self.unpriced += u64::from(r.unpriced);
        record(&mut self.latency, r.latency_us);
        if let Some(t) = r.ttft_us {
            record(&mut self.ttft, t);
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS_MS.len() + 1];
        }
        let ms = r.latency_us as f64 / 1000.0;
        let b = BUCKETS_MS.partition_point(|&ub| ub < ms);
        if let Some(x) = self.buckets.get_mut(b) {
            *x += 1;
        }
        for &(t, c) in &r.costs {
            let t = t as usize;
            if self.targets.len() <= t {
                self.targets.resize(t + 1, (0, 0));
            }
            self.targets[t].1 += c;
        }
        if let Some(t) = r.target.filter(|_| r.ok()) {
            let t = t as usize;
            if self.targets.len() <= t {
                self.targets.resize(t + 1, (0, 0));
            }
            self.targets[t].0 += 1;
        }
    }

    pub fn metrics(&self, names: &Targets) -> Metrics {
        let known = self.requests - self.unknown;
        let mut shares: Vec<Share> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, (s, c))| *s > 0 || *c > 0)
            .map(|(i, &(served, cost))| {
                let (provider, _) = names.names.get(i).cloned().unwrap_or_default();
                Share {
                    target: names.name(i as u32),
                    provider,
                    served,
                    share: ratio(served, self.requests),
                    cost_micros: cost,
                }
            })
            .collect();
        shares.sort_by(|a, b| b.served.cmp(&a.served).then(a.target.cmp(&b.target)));
        Metrics {
            requests: self.requests,
            not_simulated: self.unknown,
            succeeded: self.succeeded,
            success_rate: ratio(self.succeeded, known),
            budget_blocked: self.blocked,
            budget_degraded: self.degraded,
            attempts: self.attempts,
            fallbacks: self.fallbacks,
            retries: self.retries,
            circuit_opens: self.circuit_opens,
            cost_micros: self.cost,
            cost_per_request_micros: if known == 0 {
                0.0
            } else {
                self.cost as f64 / known as f64
            },
            unpriced: self.unpriced,
            latency_ms: pcts(&self.latency),
            ttft_ms: self.ttft.as_ref().map(|_| pcts(&self.ttft)),
            shares,
        }
    }
}

pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Sums of one self-normalised estimate: `sum w r`, and what its standard error needs.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    wr: f64,
    w2r: f64,
    w2r2: f64,
}

impl Sums {
    fn add(&mut self, w: f64, r: f64) {
        self.wr += w * r;
        self.w2r += w * w * r;
        self.w2r2 += w * w * r * r;
    }

    /// `sum w r / sum w`, with the delta-method standard error
    /// `sqrt(sum w^2 (r - v)^2) / sum w`.
    fn estimate(&self, sw: f64, sw2: f64) -> Estimate {
        let v = self.wr / sw;
        let var = (self.w2r2 - 2.0 * v * self.w2r + v * v * sw2).max(0.0);
        let se = var.sqrt() / sw;
        Estimate {
            value: v,
            std_error: se,
            low: v - 1.96 * se,
            high: v + 1.96 * se,
        }
    }
}

/// Inverse-propensity sums over the requests whose recorded first choice was random.
#[derive(Debug, Clone, Default)]
pub struct IpsAcc {
    n: u64,
    sw: f64,
    sw2: f64,
    unsupported: f64,
    success: Sums,
    cost: Sums,
    latency: Sums,
    sim_n: u64,
    sim_success: f64,
    sim_cost: f64,
    sim_latency: f64,
    /// Requests the plan refused outright (blocked, unroutable): no first choice to weigh.
    skipped: u64,
}

/// Unsupported probability mass above which no estimate is printed (percent).
pub const MAX_UNSUPPORTED_PCT: f64 = 1.0;
/// Effective sample size below which no estimate is printed.
pub const MIN_ESS: f64 = 10.0;

impl IpsAcc {
    /// One request: the plan's probability `pi` of the recorded first choice, the recorded
    /// propensity `p`, the plan's mass on choices the recording could not make, the recorded
    /// and simulated results.
    pub fn add(&mut self, pi: f64, p: f64, unsupported: f64, rec: &Result, sim: &Result) {
        self.n += 1;
        self.unsupported += unsupported;
        let w = pi / p;
        self.sw += w;
        self.sw2 += w * w;
        self.success.add(w, f64::from(u8::from(rec.ok())));
        self.cost.add(w, rec.cost_micros as f64);
        self.latency.add(w, rec.latency_us as f64 / 1000.0);
        if sim.status != 0 {
            self.sim_n += 1;
            self.sim_success += f64::from(u8::from(sim.ok()));
            self.sim_cost += sim.cost_micros as f64;
            self.sim_latency += sim.latency_us as f64 / 1000.0;
        }
    }

    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    pub fn report(&self) -> Ips {
        let n = self.sim_n.max(1) as f64;
        let mut ips = Ips {
            requests: self.n,
            simulated_success_rate: self.sim_success / n,
            simulated_cost_per_request_micros: self.sim_cost / n,
            simulated_latency_ms: self.sim_latency / n,
            ..Ips::default()
        };
        if self.n == 0 {
            ips.reason = Some(if self.skipped > 0 {
                format!(
                    "the plan refused all {} requests with random recorded first choices",
                    self.skipped
                )
            } else {
                "no recorded first choice was random (every propensity is 1): the recording \
                 supports only the choices it made, so there is nothing to reweigh"
                    .into()
            });
            return ips;
        }
        ips.unsupported_pct = self.unsupported * 100.0 / self.n as f64;
        if self.sw > 0.0 {
            ips.effective_sample_size = self.sw * self.sw / self.sw2;
        }
        if ips.unsupported_pct > MAX_UNSUPPORTED_PCT {
            ips.reason = Some(format!(
                "{:.1}% of the plan's choices fall on first choices or fallback orders the \
                 recording could not have made: no support for an estimate",
                ips.unsupported_pct
            ));
            return ips;
        }
        if self.sw <= 0.0 || ips.effective_sample_size < MIN_ESS {
            ips.reason = Some(format!(
                "the plan's first choices match too few recorded ones (effective sample size \
                 {:.1} < {MIN_ESS})",
                ips.effective_sample_size
            ));
            return ips;
        }
        ips.available = true;
        ips.success_rate = Some(self.success.estimate(self.sw, self.sw2));
        ips.cost_per_request_micros = Some(self.cost.estimate(self.sw, self.sw2));
        ips.latency_ms = Some(self.latency.estimate(self.sw, self.sw2));
        ips
    }
}

/// The `q` quantile (0..=1) of `v`, interpolated linearly between order statistics.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (a, b) = (s[lo.min(s.len() - 1)], s[hi.min(s.len() - 1)]);
    a + (b - a) * (pos - lo as f64)
}
