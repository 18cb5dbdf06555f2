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

/// Simulated traffic through the request flow, without a network: `requests` requests over the
/// combos of `config` (one session in eight with a `degrade` guard, one in eight with a `block`
/// guard, one request in five needing `tools`), each step applied to a [`crate::flow::State`]
/// exactly as the engine applies it and its events handed to `emit(ts_ms, event)` in order.
/// Outcomes are drawn from a ChaCha8 RNG seeded with `seed`: target `i` fails with probability
/// `(i % 4) / 10`, as server errors, timeouts, or rate limits with a Retry-After. Time advances
/// 0..16 ms per request. The caller stores `config` (`canonical_json`) in the log's blobs.
/// Deterministic: the same arguments give the same events. Benchmarks of `log verify
/// --decisions` and tests of the fold use it.
pub fn traffic(
    config: &crate::config::Config,
    requests: u64,
    seed: u64,
    start_ms: u64,
    emit: &mut dyn FnMut(u64, Event),
) {
    use crate::flow::{self, Facts, Routed, State, Verdict, step};
    use crate::router::AttemptOutcome;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut state = State::new(config);
    let cv = config.version();
    let mut now = start_ms;
    state.restart();
    emit(
        now,
        Event::ConfigChangedV2(Box::new(ConfigChangedV2 {
            actor: "startup".into(),
            kind: ConfigChangeKind::Loaded,
            detail: "simulated traffic".into(),
            previous_version: None,
            config_version: cv,
            file_version: cv,
            changes: Vec::new(),
            kept: Vec::new(),
            dropped: Vec::new(),
        })),
    );
    for (session, action, tier, limit) in [
        ("degrade", BudgetAction::Degrade, Some(0), 50_000),
        ("block", BudgetAction::Block, None, 20_000),
    ] {
        state.budgets.set(session, limit, action, tier);
        emit(
            now,
            Event::BudgetGuardSet(Box::new(BudgetGuardSet {
                session_id: session.into(),
                limit: Cost::Micros(limit),
                action,
                degrade_to_tier: tier,
                actor: "simulation".into(),
            })),
        );
    }
    let combos: Vec<&str> = config.combos.iter().map(|c| c.id.as_str()).collect();
    for n in 0..requests {
        now += rng.next_u64() % 16;
        let rid = request_id(n);
        let session = match n % 8 {
            3 => Some("degrade"),
            5 => Some("block"),
            _ => None,
        };
        let requested = combos
            .get((rng.next_u64() % combos.len().max(1) as u64) as usize)
            .copied()
            .unwrap_or("default");
        let max_tokens = (n % 3 != 0).then_some(64 + (n % 512) as u32);
        let facts = Facts {
            requested,
            est_prompt_tokens: 100 + (n % 2_000) as u32,
            max_tokens,
            min_tier: None,
            session,
            required: if n % 5 == 0 {
                crate::config::Capability::Tools.bit()
            } else {
                0
            },
        };
        emit(
            now,
            Event::RequestReceived(Box::new(RequestReceived {
                request_id: rid,
                config_version: cv,
                session_id: session.map(str::to_string),
                api_key_id: None,
                endpoint: "/v1/chat/completions".into(),
                requested: requested.into(),
                stream: false,
                est_prompt_tokens: facts.est_prompt_tokens,
                max_tokens,
                body_hash: Hash32::of(&n.to_le_bytes()),
                body_stored: false,
                task_hint: None,
                min_tier: None,
            })),
        );
        let request_seed = rng.next_u64();
        let complete = |status: u16, target: Option<Target>, cost: Cost, attempts: u16| {
            Event::RequestCompleted(Box::new(RequestCompleted {
                request_id: rid,
                config_version: cv,
                status,
                target,
                error: None,
                total_latency_us: 0,
                ttft_us: None,
                tokens: Tokens::default(),
                cost,
                attempts,
            }))
        };
        let routed = flow::route_and_apply(&facts, rid, request_seed, now, &mut state, config);
        let (decision, event) = match routed {
            // Nothing was reserved: there is nothing to settle.
            Routed::Blocked { .. } | Routed::Unroutable { .. } => {
                emit(now, complete(402, None, Cost::Micros(0), 0));
                continue;
            }
            Routed::Decided {
                decision,
                event,
                verdict,
            } => {
                if let Verdict::Degrade { guard, .. } | Verdict::Alert { guard, .. } = verdict {
                    emit(
                        now,
                        Event::BudgetExceeded(Box::new(BudgetExceeded {
                            request_id: rid,
                            config_version: cv,
                            session_id: session.unwrap_or_default().into(),
                            limit: Cost::Micros(guard.limit_micros),
                            spent: Cost::Micros(guard.spent_micros),
                            reserved: Cost::Micros(guard.reserved_micros),
                            action: guard.action,
                            outcome: "degraded".into(),
                        })),
                    );
                }
                (decision, event)
            }
        };
        emit(now, Event::RouteDecidedV2(event));
        let plan: Vec<usize> = decision.targets().collect();
        let mut jitter = step::jitter_rng(request_seed);
        let (mut attempts, mut cost, mut served) = (0u16, 0u64, None);
        let mut unpriced = false;
        'targets: for (ti, &m) in plan.iter().enumerate() {
            let Some(model) = config.model(m) else { break };
            let target = crate::router::event_target(config, model);
            let mut retries = 0;
            loop {
                attempts += 1;
                state.health.start(m, now);
                emit(
                    now,
                    Event::AttemptStarted(Box::new(AttemptStarted {
                        request_id: rid,
                        config_version: cv,
                        attempt: attempts,
                        target: target.clone(),
                        upstream_model: model.upstream.clone(),
                        timeout_ms: 30_000,
                    })),
                );
                let latency_us = 20_000 + rng.next_u64() % 400_000;
                now += latency_us / 1000;
                let fails = rng.next_u64() % 10 < (m % 4) as u64;
                let (error, retry_after_ms) = match (fails, rng.next_u64() % 3) {
                    (false, _) => (None, None),
                    (true, 0) => (Some(ErrorClass::RateLimited), Some(1_000)),
                    (true, 1) => (Some(ErrorClass::Timeout), None),
                    (true, _) => (Some(ErrorClass::ServerError), None),
                };
                let tokens = Tokens {
                    input: u64::from(facts.est_prompt_tokens),
                    output: 50,
                    ..Tokens::default()
                };
                let this_cost = match (error, &model.price) {
                    (None, Some(p)) => p.cost_micros(&tokens),
                    _ => 0,
                };
                let change = state.health.observe(
                    &AttemptOutcome {
                        model: m,
                        latency_us,
                        error,
                        retry_after_ms,
                    },
                    now,
                );
                emit(
                    now,
                    Event::AttemptFinished(Box::new(AttemptFinished {
                        request_id: rid,
                        config_version: cv,
                        attempt: attempts,
                        target: target.clone(),
                        status: Some(if error.is_some() { 500 } else { 200 }),
                        latency_us,
                        ttft_us: None,
                        tokens: if error.is_some() {
                            Tokens::default()
                        } else {
                            tokens
                        },
                        cost: Cost::Micros(this_cost),
                        error: error.map(|class| AttemptError {
                            class,
                            retry_after_ms,
                            message: "simulated".into(),
                        }),
                    })),
                );
                if let Some(t) = change {
                    emit(
                        now,
                        Event::CircuitChanged(Box::new(CircuitChanged {
                            config_version: cv,
                            provider: target.provider.clone(),
                            model: Some(target.model.clone()),
                            from: t.from,
                            to: t.to,
                            reason: t.reason.to_string(),
                            request_id: Some(rid),
                        })),
                    );
                }
                cost += this_cost;
                unpriced |= error.is_none() && model.price.is_none();
                let Some(class) = error else {
                    served = Some(target);
                    break 'targets;
                };
                let more = ti + 1 < plan.len();
                match step::next(class, retries, more, &config.resilience, &mut jitter) {
                    step::Next::Retry { after_ms } => {
                        retries += 1;
                        now += after_ms;
                    }
                    step::Next::FallBack => break,
                    step::Next::Refuse | step::Next::Exhausted => break 'targets,
                }
            }
        }
        state.budgets.settle(rid, cost);
        let status = if served.is_some() { 200 } else { 502 };
        let cost = if unpriced {
            Cost::Unpriced
        } else {
            Cost::Micros(cost)
        };
        emit(now, complete(status, served, cost, attempts));
    }
}
