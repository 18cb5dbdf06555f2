//! After a failed attempt, what next: retry the same target after a backoff, fall back to the
//! next planned target, return the upstream's refusal, or give up. Pure; the backoff's jitter
//! draws from a ChaCha8 RNG seeded from the request's recorded seed, so the delays are
//! reproducible too.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::config::Resilience;
use crate::event::ErrorClass;
use crate::router::classify::policy;

/// What the engine does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the same target again after this many milliseconds.
    Retry { after_ms: u64 },
    /// Move on to the next target of the plan.
    FallBack,
    /// The failure is the client's (another target would refuse it too): return it as is.
    Refuse,
    /// No target left.
    Exhausted,
}

/// The RNG the backoff jitter of a request draws from.
pub fn jitter_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x6a09_e667_f3bc_c908)
}

/// The step after an attempt failed with `class`, when `retries` retries of this target were
/// already made and `more` targets remain in the plan.
pub fn next(
    class: ErrorClass,
    retries: u32,
    more: bool,
    r: &Resilience,
    jitter: &mut ChaCha8Rng,
) -> Next {
    let p = policy(class);
    if p.retry_same && retries < r.max_retries {
        return Next::Retry {
            after_ms: backoff_ms(r, retries + 1, jitter),
        };
    }
    if !p.fallback {
        return Next::Refuse;
    }
    if more {
        Next::FallBack
    } else {
        Next::Exhausted
    }
}

/// Exponential backoff for the `retry`-th retry (1-based), with jitter between half and all of it.
pub fn backoff_ms(r: &Resilience, retry: u32, rng: &mut ChaCha8Rng) -> u64 {
    let exp = r
        .backoff_base_ms
        .saturating_mul(1u64 << retry.saturating_sub(1).min(20))
        .min(r.backoff_max_ms);
    let frac = 0.5 + (rng.next_u32() as f64 / u32::MAX as f64) * 0.5;
    (exp as f64 * frac) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Profile, Resilience};

    #[test]
    fn retry_then_fall_back_then_exhausted() {
        let r = Resilience::profile(Profile::Balanced);
        let mut rng = jitter_rng(7);
        let first = next(ErrorClass::ServerError, 0, true, &r, &mut rng);
        let Next::Retry { after_ms } = first else {
            unreachable!("a server error is retried once under balanced: {first:?}")
        };
        assert!((r.backoff_base_ms / 2..=r.backoff_base_ms).contains(&after_ms));
        assert_eq!(
            next(ErrorClass::ServerError, 1, true, &r, &mut rng),
            Next::FallBack
        );
        assert_eq!(
            next(ErrorClass::ServerError, 1, false, &r, &mut rng),
            Next::Exhausted
        );
        assert_eq!(
            next(ErrorClass::BadRequest, 0, true, &r, &mut rng),
            Next::Refuse
        );
        assert_eq!(
            next(ErrorClass::RateLimited, 0, true, &r, &mut rng),
            Next::FallBack
        );
    }

    #[test]
    fn jitter_is_reproducible_from_the_seed() {
        let r = Resilience::profile(Profile::Conservative);
        let a: Vec<u64> = {
            let mut g = jitter_rng(42);
            (1..=4).map(|i| backoff_ms(&r, i, &mut g)).collect()
        };
        let mut g = jitter_rng(42);
        let b: Vec<u64> = (1..=4).map(|i| backoff_ms(&r, i, &mut g)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&d| d <= r.backoff_max_ms));
    }
}
