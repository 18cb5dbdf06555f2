//! Latency histograms (HdrHistogram, 3 significant figures, 1 µs to 1 hour). Checkpointed as the
//! list of recorded (value, count) pairs, which restores exactly the same buckets.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const LOW: u64 = 1;
const HIGH: u64 = 3_600_000_000;
const SIGFIG: u8 = 3;

/// Microsecond values; anything above an hour is clamped to an hour.
#[derive(Clone, Debug, Default)]
pub struct Latency(Option<Histogram<u64>>);

/// Percentiles of a histogram, in microseconds (0 when empty).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn record(&mut self, us: u64) {
        if self.0.is_none() {
            // Fails only for invalid bounds, which are constants checked by the tests.
            self.0 = Histogram::new_with_bounds(LOW, HIGH, SIGFIG).ok();
        }
        if let Some(h) = &mut self.0 {
            h.saturating_record(us.clamp(LOW, HIGH));
        }
    }

    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, Histogram::len)
    }

    /// The value at quantile `q` (0..=1), in microseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        self.0
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0, |h| h.highest_equivalent(h.value_at_quantile(q)))
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            p50_us: self.quantile(0.50),
            p95_us: self.quantile(0.95),
            p99_us: self.quantile(0.99),
            max_us: self
                .0
                .as_ref()
                .filter(|h| !h.is_empty())
                .map_or(0, |h| h.highest_equivalent(h.max())),
        }
    }

    fn pairs(&self) -> Vec<(u64, u64)> {
        self.0.as_ref().map_or_else(Vec::new, |h| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        })
    }
}

impl PartialEq for Latency {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl Serialize for Latency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.pairs().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut out = Latency::default();
        if pairs.is_empty() {
            return Ok(out);
        }
        let mut h = Histogram::new_with_bounds(LOW, HIGH, SIGFIG)
            .map_err(|e| serde::de::Error::custom(format!("{e:?}")))?;
        for (v, n) in pairs {
            h.record_n(v.clamp(LOW, HIGH), n)
                .map_err(|e| serde::de::Error::custom(format!("{e:?}")))?;
        }
        out.0 = Some(h);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_are_within_precision_and_survive_a_checkpoint() {
        let mut h = Latency::default();
        for v in 1..=10_000u64 {
            h.record(v * 100);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 10_000);
        for (got, want) in [
            (p.p50_us, 500_000),
            (p.p95_us, 950_000),
            (p.p99_us, 990_000),
        ] {
            assert!(got.abs_diff(want) <= want / 1000, "{got} vs {want}");
        }
        let back: Latency = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.percentiles(), p);
        assert_eq!(Latency::default().percentiles(), Percentiles::default());
    }
}
