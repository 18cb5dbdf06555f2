//! The error classification table: one place that maps an upstream result (HTTP status, the
//! Retry-After header, a signal in the body, or a transport failure) to an [`ErrorClass`], and each
//! class to what the engine does about it.
//!
//! | class            | retry same target | fall back | counts against breaker | cooldown                  |
//! |------------------|-------------------|-----------|------------------------|---------------------------|
//! | timeout          | yes               | yes       | yes                    | -                         |
//! | rate_limited     | no                | yes       | no                     | Retry-After, else profile |
//! | quota_exhausted  | no                | yes       | no                     | max(Retry-After, 60 s)    |
//! | overloaded       | yes               | yes       | yes                    | Retry-After if sent       |
//! | server_error     | yes               | yes       | yes                    | -                         |
//! | context_overflow | no                | yes       | no                     | -                         |
//! | auth             | no                | yes       | yes                    | -                         |
//! | bad_request      | no                | no        | no                     | -                         |
//! | network          | yes               | yes       | yes                    | -                         |
//! | stream_cut       | no                | no        | yes                    | -                         |
//!
//! A bad request is the client's fault: another target would refuse it too, so it is returned as is.
//! A cut stream has already reached the client, so it can be neither retried nor moved.

use crate::config::Resilience;
use crate::event::ErrorClass;

/// What the engine does about one class of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub class: ErrorClass,
    pub retry_same: bool,
    pub fallback: bool,
    pub counts_against_breaker: bool,
    cooldown: Cooldown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cooldown {
    None,
    /// Retry-After, or the profile's default when absent.
    RetryAfterOrDefault,
    /// Retry-After, at least this long.
    AtLeast(u64),
    /// Retry-After when sent, else none.
    RetryAfterOnly,
}

impl Policy {
    /// How long the target should get no new attempts, if at all.
    pub fn cooldown_ms(&self, retry_after_ms: Option<u64>, r: &Resilience) -> Option<u64> {
        match self.cooldown {
            Cooldown::None => None,
            Cooldown::RetryAfterOrDefault => Some(retry_after_ms.unwrap_or(r.default_cooldown_ms)),
            Cooldown::AtLeast(min) => Some(retry_after_ms.unwrap_or(0).max(min)),
            Cooldown::RetryAfterOnly => retry_after_ms,
        }
    }
}

/// The table.
pub const fn policy(class: ErrorClass) -> Policy {
    use Cooldown as C;
    use ErrorClass as E;
    let (retry_same, fallback, counts_against_breaker, cooldown) = match class {
        E::Timeout => (true, true, true, C::None),
        E::RateLimited => (false, true, false, C::RetryAfterOrDefault),
        E::QuotaExhausted => (false, true, false, C::AtLeast(60_000)),
        E::Overloaded => (true, true, true, C::RetryAfterOnly),
        E::ServerError => (true, true, true, C::None),
        E::ContextOverflow => (false, true, false, C::None),
        E::Auth => (false, true, true, C::None),
        E::BadRequest => (false, false, false, C::None),
        E::Network => (true, true, true, C::None),
        E::StreamCut => (false, false, true, C::None),
    };
    Policy {
        class,
        retry_same,
        fallback,
        counts_against_breaker,
        cooldown,
    }
}

/// A failure below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No response (or no first byte) within the limit.
    Timeout,
    /// Connection refused, reset, DNS, TLS.
    Network,
    /// The response stream broke after it had started.
    StreamCut,
}

/// What came back from an upstream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upstream<'a> {
    pub status: Option<u16>,
    /// A failure before (or instead of) a status.
    pub transport: Option<Transport>,
    /// The error body (or its first bytes), searched for provider signals.
    pub body: &'a str,
}

fn has(body: &str, needles: &[&str]) -> bool {
    let lower = body.to_ascii_lowercase();
    needles.iter().any(|n| lower.contains(n))
}

/// Classifies an upstream result; `None` means success (2xx with no transport failure).
pub fn classify(u: &Upstream<'_>) -> Option<ErrorClass> {
    if let Some(t) = u.transport {
        return Some(match t {
            Transport::Timeout => ErrorClass::Timeout,
            Transport::Network => ErrorClass::Network,
            Transport::StreamCut => ErrorClass::StreamCut,
        });
    }
    let status = u.status?;
    let context = [
        "context_length_exceeded",
        "maximum context length",
        "prompt is too long",
        "too many tokens",
    ];
    Some(match status {
        200..=299 => return None,
        408 => ErrorClass::Timeout,
        429 if has(
            u.body,
            &[
                "insufficient_quota",
                "quota exceeded",
                "exceeded your current quota",
                "billing",
            ],
        ) =>
        {
            ErrorClass::QuotaExhausted
        }
        429 => ErrorClass::RateLimited,
        402 => ErrorClass::QuotaExhausted,
        401 | 403 => ErrorClass::Auth,
        413 => ErrorClass::ContextOverflow,
        400 | 422 if has(u.body, &context) => ErrorClass::ContextOverflow,
        529 => ErrorClass::Overloaded,
        503 if has(u.body, &["overloaded", "capacity"]) => ErrorClass::Overloaded,
        500..=599 => ErrorClass::ServerError,
        _ => ErrorClass::BadRequest,
    })
}

/// Parses a Retry-After value given in seconds (integer or decimal) into milliseconds. HTTP-date
/// values are not understood and give `None` (the profile's default cooldown applies).
pub fn parse_retry_after(value: &str) -> Option<u64> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64)
}
