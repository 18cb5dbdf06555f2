//! The route-outcome status table: when no target served a request, what the client is told.
//! One function, [`unserved`], decides it from why each target did not serve (the router's
//! exclusion, or the last failure of its attempts), so the status tells the client what to do
//! (documented in docs/routing.md, "Statuses"):
//!
//! | every target that could serve is ... | status | type / code |
//! |---|---|---|
//! | none: no configured target could *ever* serve it (capability, tier, context window, disabled) | 400 | `invalid_request_error` / `invalid_request` (`context_length_exceeded` when the prompt alone is too long) |
//! | excluded by the session's budget | 429 | `insufficient_quota` / `budget_exceeded` |
//! | rate-limited or cooling down (some maybe over budget) | 429 + `Retry-After` | `rate_limit_error` / `rate_limit_exceeded` |
//! | otherwise (circuit open, 5xx, timeouts, network) | 503 | `api_error` / `no_target_available` or `all_targets_failed` |
//!
//! SDKs retry 5xx and 429 by themselves; a 400 tells them not to, so a client mistake must never
//! be a 503. Pure: time is the `now_ms` passed in.

use omniroute_core::config::{Capability, Config};
use omniroute_core::event::{ErrorClass, ExclusionReason};

use crate::error::ApiError;

/// Why one target did not serve the request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unserved {
    /// Left out by the router; `until_ms` is when a timed exclusion ends.
    Excluded {
        model: usize,
        reason: ExclusionReason,
        until_ms: Option<u64>,
    },
    /// Attempted, and its last attempt failed; `until_ms` is the target's cooldown end after it.
    Failed {
        model: usize,
        class: ErrorClass,
        until_ms: Option<u64>,
    },
}

/// How one target's not serving bears on the status.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bearing {
    /// It can never serve this request: the client must change it.
    Never,
    /// Over the session's budget.
    Budget,
    /// Rate-limited or cooling down, until then (if known).
    Wait(Option<u64>),
    /// Down for now (circuit open, server errors, timeouts).
    Down,
}

/// The table's first column, one exhaustive match per source (a new reason or class forces a
/// decision here).
fn bearing(u: &Unserved) -> Bearing {
    match *u {
        Unserved::Excluded {
            reason, until_ms, ..
        } => match reason {
            ExclusionReason::Capability
            | ExclusionReason::ContextWindow
            | ExclusionReason::Inactive
            | ExclusionReason::Disabled => Bearing::Never,
            ExclusionReason::Budget => Bearing::Budget,
            ExclusionReason::CoolingDown | ExclusionReason::Quota => Bearing::Wait(until_ms),
            ExclusionReason::CircuitOpen => Bearing::Down,
        },
        Unserved::Failed {
            class, until_ms, ..
        } => match class {
            ErrorClass::RateLimited | ErrorClass::QuotaExhausted => Bearing::Wait(until_ms),
            // The upstream measured the prompt itself: no target took it.
            ErrorClass::ContextOverflow => Bearing::Never,
            ErrorClass::Timeout
            | ErrorClass::Overloaded
            | ErrorClass::ServerError
            | ErrorClass::Auth
            | ErrorClass::BadRequest
            | ErrorClass::Network
            | ErrorClass::StreamCut => Bearing::Down,
        },
    }
}

/// What the request asked for, as far as the table needs it.
pub(crate) struct Asked<'a> {
    pub requested: &'a str,
    pub est_prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    pub required: u8,
    pub min_tier: Option<u8>,
}

/// The answer to a request no target served. `attempted` says whether any attempt was made;
/// `detail` is the per-target account for a 503 (kept as the messages were before).
pub(crate) fn unserved(
    targets: &[Unserved],
    asked: &Asked<'_>,
    cfg: &Config,
    now_ms: u64,
    attempted: bool,
    detail: Vec<String>,
) -> ApiError {
    let bearings: Vec<Bearing> = targets.iter().map(bearing).collect();
    let servable: Vec<Bearing> = bearings
        .iter()
        .copied()
        .filter(|b| *b != Bearing::Never)
        .collect();
    if servable.is_empty() {
        return never(targets, asked, cfg);
    }
    if servable.contains(&Bearing::Down) {
        return if attempted {
            ApiError::AllFailed { attempts: detail }
        } else {
            ApiError::NoTarget { reasons: detail }
        };
    }
    let soonest = servable
        .iter()
        .filter_map(|b| match b {
            Bearing::Wait(until) => Some(*until),
            _ => None,
        })
        .fold(None, |acc: Option<Option<u64>>, u| match (acc, u) {
            (None, u) => Some(u),
            (Some(Some(a)), Some(b)) => Some(Some(a.min(b))),
            (Some(a), None) => Some(a),
            (Some(None), b) => Some(b),
        });
    match soonest {
        // Only budget exclusions: the session's guard refuses, as a block does.
        None => ApiError::BudgetExceeded {
            message: format!(
                "session budget exceeded: every target of `{}` could cost more than the session's \
                 budget has left",
                asked.requested
            ),
        },
        Some(until) => {
            // Rounded up, and never 0: a client told to wait 0 s would ask again at once.
            let retry_after_s = until
                .map(|u| u.saturating_sub(now_ms).div_ceil(1000))
                .unwrap_or(1)
                .max(1);
            ApiError::RateLimited {
                message: format!(
                    "every target of `{}` that could serve this request is rate-limited or \
                     cooling down; retry after {retry_after_s} s",
                    asked.requested
                ),
                retry_after_s,
            }
        }
    }
}

/// Why one target can never serve this request, recomputed from the config in the router's order
/// (so a target that fails several checks names the first, as its exclusion did).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Never {
    /// Lacks these capability bits.
    Lacks(u8),
    Tier,
    /// The prompt plus `max_tokens` exceed its window; the prompt alone fits.
    MaxTokens,
    /// The prompt alone exceeds its window (estimated, or said by the upstream).
    Prompt,
    Disabled,
}

fn why_never(u: &Unserved, asked: &Asked<'_>, cfg: &Config) -> (usize, Never) {
    let (model, overflow) = match *u {
        Unserved::Excluded { model, .. } => (model, false),
        Unserved::Failed { model, class, .. } => (model, class == ErrorClass::ContextOverflow),
    };
    let Some(m) = cfg.model(model) else {
        return (model, Never::Disabled);
    };
    let why = if overflow {
        Never::Prompt
    } else if !m.enabled || !cfg.provider_of(m).is_some_and(|p| p.enabled) {
        Never::Disabled
    } else if m.capabilities & asked.required != asked.required {
        Never::Lacks(asked.required & !m.capabilities)
    } else if asked.min_tier.is_some_and(|t| m.tier < t) {
        Never::Tier
    } else if asked.est_prompt_tokens > m.context_window {
        Never::Prompt
    } else {
        Never::MaxTokens
    };
    (model, why)
}

const CAPABILITIES: [Capability; 5] = [
    Capability::Chat,
    Capability::Tools,
    Capability::Vision,
    Capability::Json,
    Capability::Reasoning,
];

/// A capability's config name, the request field that asks for it, and what in the request to
/// drop to do without it.
fn capability(c: Capability) -> (&'static str, &'static str, &'static str) {
    match c {
        Capability::Chat => ("chat", "messages", "nothing: every model needs chat"),
        Capability::Tools => ("tools", "tools", "`tools`"),
        Capability::Vision => (
            "vision (an image_url part)",
            "messages",
            "the image_url parts",
        ),
        Capability::Json => (
            "json (response_format)",
            "response_format",
            "`response_format`",
        ),
        Capability::Reasoning => ("reasoning", "model", "nothing"),
    }
}

/// Enabled models of the config that pass `ok`, by id (what a client can request).
fn models_where(cfg: &Config, ok: impl Fn(&omniroute_core::config::Model) -> bool) -> String {
    let ids: Vec<&str> = cfg
        .models
        .iter()
        .filter(|m| m.enabled && cfg.provider_of(m).is_some_and(|p| p.enabled) && ok(m))
        .map(|m| m.id.as_str())
        .collect();
    if ids.is_empty() {
        "none in this config".into()
    } else {
        ids.join(", ")
    }
}

/// The 400 of a request no configured target could ever serve: the message names each target's
/// reason and what would fix it; `param` and `code` follow the first reason in the order
/// capability, tier, max_tokens, prompt length, disabled.
fn never(targets: &[Unserved], asked: &Asked<'_>, cfg: &Config) -> ApiError {
    let whys: Vec<(usize, Never)> = targets.iter().map(|u| why_never(u, asked, cfg)).collect();
    let name = |m: usize| cfg.model(m).map(|x| x.id.as_str()).unwrap_or("?");
    let window = |m: usize| cfg.model(m).map(|x| x.context_window).unwrap_or(0);
    let largest = whys.iter().map(|&(m, _)| window(m)).max().unwrap_or(0);
    let each: Vec<String> = whys
        .iter()
        .map(|&(m, w)| {
            let why = match w {
                Never::Lacks(bits) => {
                    let names: Vec<&str> = CAPABILITIES
                        .iter()
                        .filter(|c| bits & c.bit() != 0)
                        .map(|&c| capability(c).0)
                        .collect();
                    format!("lacks {}", names.join(", "))
                }
                Never::Tier => format!("tier {}", cfg.model(m).map(|x| x.tier).unwrap_or_default()),
                Never::MaxTokens | Never::Prompt => {
                    format!("context window {} tokens", window(m))
                }
                Never::Disabled => "disabled in config".into(),
            };
            format!("{}: {why}", name(m))
        })
        .collect();
    let head = format!(
        "no target of `{}` can ever serve this request ({})",
        asked.requested,
        each.join("; ")
    );
    let has = |f: fn(&Never) -> bool| whys.iter().any(|(_, w)| f(w));
    if let Some(bits) = whys.iter().find_map(|(_, w)| match w {
        Never::Lacks(b) => Some(*b),
        _ => None,
    }) {
        let first = CAPABILITIES
            .iter()
            .copied()
            .find(|c| bits & c.bit() != 0)
            .unwrap_or(Capability::Chat);
        let (cap, param, drop) = capability(first);
        let required = asked.required;
        let with = models_where(cfg, |m| m.capabilities & required == required);
        return ApiError::bad(
            format!(
                "{head}. The request needs {cap}; models that have what it needs: {with}. \
                 Request one of them (or a combo with one), or drop {drop}"
            ),
            Some(param),
        );
    }
    if has(|w| *w == Never::Tier) {
        let tier = asked.min_tier.unwrap_or_default();
        let with = models_where(cfg, |m| m.tier >= tier);
        return ApiError::bad(
            format!(
                "{head}. x-omniroute-min-tier {tier} is above every target's tier; models of \
                 tier {tier} or above: {with}. Lower the header or request one of them"
            ),
            Some("x-omniroute-min-tier"),
        );
    }
    if has(|w| *w == Never::MaxTokens) {
        let room = largest.saturating_sub(asked.est_prompt_tokens);
        return ApiError::bad(
            format!(
                "{head}. max_tokens {} plus the prompt (about {} tokens) exceed every target's \
                 context window (the largest is {largest}); set max_tokens to at most {room}",
                asked.max_tokens.unwrap_or_default(),
                asked.est_prompt_tokens
            ),
            Some("max_tokens"),
        );
    }
    if has(|w| *w == Never::Prompt) {
        let with = models_where(cfg, |m| m.context_window > asked.est_prompt_tokens);
        return ApiError::ContextLengthExceeded {
            message: format!(
                "{head}. The prompt (about {} tokens, estimated) is longer than every target's \
                 context window (the largest is {largest} tokens); shorten the messages, or \
                 request a model with a larger window: {with}",
                asked.est_prompt_tokens
            ),
        };
    }
    ApiError::bad(
        format!("{head}. Enable one of them in the config, or request another model or combo"),
        Some("model"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[[providers]]
id = "p"
kind = "mock"

[[models]]
id = "small"
provider = "p"
tier = 1
context_window = 1000

[[models]]
id = "big"
provider = "p"
tier = 2
context_window = 4000
capabilities = ["chat", "vision"]
"#;

    fn cfg() -> Config {
        Config::from_toml(CFG, "test").unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn asked(est: u32, max: Option<u32>) -> Asked<'static> {
        Asked {
            requested: "c",
            est_prompt_tokens: est,
            max_tokens: max,
            required: Capability::Chat.bit(),
            min_tier: None,
        }
    }

    fn ex(model: usize, reason: ExclusionReason, until_ms: Option<u64>) -> Unserved {
        Unserved::Excluded {
            model,
            reason,
            until_ms,
        }
    }

    #[test]
    fn the_prompt_alone_too_long_everywhere_is_context_length_exceeded() {
        let t = [
            ex(0, ExclusionReason::ContextWindow, None),
            ex(1, ExclusionReason::ContextWindow, None),
        ];
        let e = unserved(&t, &asked(5000, None), &cfg(), 0, false, vec![]);
        assert_eq!(
            e.parts(),
            (400, "invalid_request_error", "context_length_exceeded")
        );
        // With room in the larger window, max_tokens is what to fix.
        let e = unserved(&t, &asked(2000, Some(9000)), &cfg(), 0, false, vec![]);
        assert_eq!(e.parts().2, "invalid_request");
        assert!(e.message().contains("at most 2000"), "{}", e.message());
    }

    #[test]
    fn waiting_wins_over_budget_and_never_and_the_soonest_end_rounds_up() {
        let t = [
            ex(0, ExclusionReason::Capability, None),
            ex(1, ExclusionReason::CoolingDown, Some(10_001)),
            Unserved::Failed {
                model: 1,
                class: ErrorClass::RateLimited,
                until_ms: Some(12_000),
            },
            ex(1, ExclusionReason::Budget, None),
        ];
        let e = unserved(&t, &asked(10, None), &cfg(), 5_000, true, vec![]);
        assert_eq!(e.parts().0, 429);
        assert_eq!(e.retry_after(), Some(6));
        // A cooldown already over (or unknown) still asks for a wait of 1 s, never 0.
        let t = [ex(1, ExclusionReason::CoolingDown, None)];
        let e = unserved(&t, &asked(10, None), &cfg(), 5_000, false, vec![]);
        assert_eq!(e.retry_after(), Some(1));
    }

    #[test]
    fn anything_down_is_503_and_budget_alone_is_budget_exceeded() {
        let t = [
            ex(0, ExclusionReason::CoolingDown, Some(9_000)),
            ex(1, ExclusionReason::CircuitOpen, Some(9_000)),
        ];
        let e = unserved(&t, &asked(10, None), &cfg(), 0, false, vec![]);
        assert_eq!(e.parts(), (503, "api_error", "no_target_available"));
        let t = [ex(0, ExclusionReason::Budget, None)];
        let e = unserved(&t, &asked(10, None), &cfg(), 0, false, vec![]);
        assert_eq!(e.parts(), (429, "insufficient_quota", "budget_exceeded"));
    }
}
