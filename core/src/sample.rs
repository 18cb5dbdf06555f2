//! Realistic, deterministic events for tests and benchmarks: the story of one request as the gateway
//! records it. Not used by the running system.

use crate::event::*;

fn target(provider: &str, model: &str) -> Target {
    Target {
        provider: provider.into(),
        model: model.into(),
    }
}

/// Request id `n` of a synthetic run (ULID-shaped: a millisecond prefix and a counter).
pub fn request_id(n: u64) -> RequestId {
    RequestId(((1_763_700_000_000u128 + n as u128) << 80) | n as u128)
}

pub fn config_version() -> Hash32 {
    Hash32::of(b"omniroute sample config")
}

/// An `AttemptFinished` of about 300 encoded bytes: the typical size of a log record.
pub fn attempt_finished(n: u64) -> Event {
    Event::AttemptFinished(Box::new(AttemptFinished {
        request_id: request_id(n),
        config_version: config_version(),
        attempt: 1,
        target: target("openai", "gpt-4o-mini"),
        status: Some(200),
        latency_us: 412_000 + n % 1000,
        ttft_us: Some(180_000),
        tokens: Tokens {
            input: 1200,
            cached_read: 300,
            cache_write: 0,
            reasoning: 0,
            output: 250 + n % 50,
        },
        cost: Cost::Micros(345),
        error: Some(AttemptError {
            class: ErrorClass::RateLimited,
            retry_after_ms: Some(2000),
            message: "upstream 429: rate limit reached for requests per minute, retry later".into(),
        })
        .filter(|_| n % 7 == 3),
    }))
}

/// The full event sequence of request `n`: received, decided, one attempt, completed.
pub fn request_story(n: u64) -> Vec<Event> {
    let id = request_id(n);
    let cv = config_version();
    let cand = |p: &str, m: &str, score: f64, excluded: Option<Exclusion>| Candidate {
        target: target(p, m),
        tier: 1,
        score,
        factors: vec![Factor {
            name: "priority".into(),
            value: score,
            weight: 1.0,
        }],
        excluded,
    };
    vec![
        Event::RequestReceived(Box::new(RequestReceived {
            request_id: id,
            config_version: cv,
            session_id: Some(format!("session-{}", n % 16)),
            api_key_id: None,
            endpoint: "/v1/chat/completions".into(),
            requested: "default".into(),
            stream: n.is_multiple_of(2),
            est_prompt_tokens: 1500,
            max_tokens: Some(512),
            body_hash: Hash32::of(&n.to_le_bytes()),
            body_stored: false,
            task_hint: None,
            min_tier: None,
        })),
        Event::RouteDecided(Box::new(RouteDecided {
            request_id: id,
            config_version: cv,
            combo: "default".into(),
            strategy: Strategy::Priority,
            seed: n,
            candidates: vec![
                cand("openai", "gpt-4o-mini", 1.0, None),
                cand("anthropic", "claude-haiku", 0.5, None),
                cand(
                    "groq",
                    "llama-3.1-8b",
                    0.0,
                    Some(Exclusion {
                        reason: ExclusionReason::CircuitOpen,
                        detail: "open until half-open probe".into(),
                    }),
                ),
            ],
            plan: vec![0, 1],
            propensity: 1.0,
        })),
        Event::AttemptStarted(Box::new(AttemptStarted {
            request_id: id,
            config_version: cv,
            attempt: 1,
            target: target("openai", "gpt-4o-mini"),
            upstream_model: "gpt-4o-mini".into(),
            timeout_ms: 60_000,
        })),
        attempt_finished(n),
        Event::RequestCompleted(Box::new(RequestCompleted {
            request_id: id,
            config_version: cv,
            status: 200,
            target: Some(target("openai", "gpt-4o-mini")),
            error: None,
            total_latency_us: 413_000,
            ttft_us: Some(181_000),
            tokens: Tokens {
                input: 1200,
                cached_read: 300,
                cache_write: 0,
                reasoning: 0,
                output: 250,
            },
            cost: Cost::Micros(345),
            attempts: 1,
        })),
    ]
}

/// The strategies as written in config files, in schema order.
pub const STRATEGY_NAMES: [&str; 8] = [
    "priority",
    "weighted",
    "round-robin",
    "least-latency",
    "cost",
    "least-busy",
    "auto",
    "tiered",
];

/// A config with `n` mock models over four providers and one combo per strategy (named after it)
/// over all of them. Models repeat a pattern of eight: tiers 0,1,2,3,0,1,2,3; model 6 of every
/// eight is unpriced; even models have the `tools` capability.
pub fn router_config(n: usize) -> Result<crate::config::Config, crate::config::ConfigError> {
    use std::fmt::Write as _;
    const PRICES: [Option<(f64, f64)>; 8] = [
        Some((0.10, 0.40)),
        Some((0.50, 1.50)),
        Some((1.00, 3.00)),
        Some((3.00, 15.0)),
        Some((0.05, 0.20)),
        Some((0.30, 1.20)),
        None,
        Some((2.50, 10.0)),
    ];
    let mut s = String::new();
    for p in 0..4 {
        let _ = write!(s, "[[providers]]\nid = \"p{p}\"\nkind = \"mock\"\n\n");
    }
    for i in 0..n {
        let _ = write!(
            s,
            "[[models]]\nid = \"m{i}\"\nprovider = \"p{}\"\ntier = {}\ncapabilities = [\"chat\"{}]\n",
            i % 4,
            i % 4,
            if i % 2 == 0 { ", \"tools\"" } else { "" }
        );
        if let Some((input, output)) = PRICES[i % 8] {
            let _ = writeln!(s, "price = {{ input = {input}, output = {output} }}");
        }
        s.push('\n');
    }
    for st in STRATEGY_NAMES {
        let _ = write!(
            s,
            "[[combos]]\nid = \"{st}\"\nstrategy = \"{st}\"\ntargets = ["
        );
        for i in 0..n {
            let _ = write!(s, "{{ model = \"m{i}\", weight = {} }}, ", i + 1);
        }
        s.push_str("]\n\n");
    }
    crate::config::Config::from_toml(&s, "sample router config")
}
