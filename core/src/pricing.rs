//! Prices and cost. Prices are configured in USD per 1M tokens and held as integer pico-dollars per
//! token (1 USD/1M tokens = 1,000,000 pico-dollars/token), so cost arithmetic is exact integers.
//! A model without a price is *unpriced*: its cost is [`Cost::Unpriced`], never zero.

use serde::{Deserialize, Serialize};

use crate::event::{Cost, Tokens};

/// Pico-dollars per token for each disjoint token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// Converts USD per 1M tokens to pico-dollars per token; `None` for negative or non-finite input.
pub fn usd_per_million_to_pico(usd: f64) -> Option<u64> {
    if !(0.0..=1.0e9).contains(&usd) {
        return None;
    }
    Some((usd * 1_000_000.0).round() as u64)
}

impl Price {
    /// Cost of the given tokens in micro-dollars, rounded to the nearest micro-dollar.
    pub fn cost_micros(&self, t: &Tokens) -> u64 {
        let pico = u128::from(t.input) * u128::from(self.input)
            + u128::from(t.output) * u128::from(self.output)
            + u128::from(t.cached_read) * u128::from(self.cached_read)
            + u128::from(t.cache_write) * u128::from(self.cache_write)
            + u128::from(t.reasoning) * u128::from(self.reasoning);
        u64::try_from((pico + 500_000) / 1_000_000).unwrap_or(u64::MAX)
    }
}

/// Cost of `tokens` at `price`; unpriced when there is no price.
pub fn cost(price: Option<&Price>, tokens: &Tokens) -> Cost {
    match price {
        Some(p) => Cost::Micros(p.cost_micros(tokens)),
        None => Cost::Unpriced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_per_bucket_and_unpriced_is_not_zero() {
        let p = Price {
            input: usd_per_million_to_pico(0.15).unwrap_or(0),
            output: usd_per_million_to_pico(0.60).unwrap_or(0),
            cached_read: usd_per_million_to_pico(0.075).unwrap_or(0),
            cache_write: 0,
            reasoning: usd_per_million_to_pico(0.60).unwrap_or(0),
        };
        let t = Tokens {
            input: 1_000_000,
            output: 500_000,
            cached_read: 2_000_000,
            cache_write: 7,
            reasoning: 0,
        };
        // 0.15 + 0.30 + 0.15 USD
        assert_eq!(cost(Some(&p), &t), Cost::Micros(600_000));
        assert_eq!(cost(None, &t), Cost::Unpriced);
        assert_eq!(cost(Some(&p), &Tokens::default()), Cost::Micros(0));
        assert_eq!(usd_per_million_to_pico(-1.0), None);
        assert_eq!(usd_per_million_to_pico(f64::NAN), None);
    }
}
