#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use omniroute_core::event::*;
use omniroute_core::log::Log;
use proptest::prelude::*;
use proptest::strategy::Strategy;

use super::*;

fn target(p: u8, m: u8) -> Target {
    Target {
        provider: format!("p{p}"),
        model: format!("p{p}/m{m}"),
    }
}

/// One random happening: a request story (with 0-2 fallbacks, maybe failing, priced or not), a
/// circuit change, a budget guard, a tool call or a key.
#[derive(Debug, Clone)]
enum Op {
    Request {
        n: u64,
        session: Option<u8>,
        key: Option<u8>,
        combo: u8,
        fails: u8,
        ok: bool,
        priced: bool,
        latency: u64,
        exceeded: bool,
    },
    Circuit(u8, u8, bool),
    Guard(u8, u64),
    Tool(u8, bool, u64),
    Key(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u64>(), prop::option::of(0u8..4), prop::option::of(0u8..2), 0u8..3, 0u8..3,
              any::<bool>(), any::<bool>(), 1u64..5_000_000, any::<bool>())
            .prop_map(|(n, session, key, combo, fails, ok, priced, latency, exceeded)| Op::Request {
                n, session, key, combo, fails, ok, priced, latency, exceeded
            }),
        1 => (0u8..3, 0u8..2, any::<bool>()).prop_map(|(p, m, open)| Op::Circuit(p, m, open)),
        1 => (0u8..4, 0u64..5000).prop_map(|(s, l)| Op::Guard(s, l)),
        1 => (0u8..3, any::<bool>(), 0u64..100_000).prop_map(|(t, ok, d)| Op::Tool(t, ok, d)),
        1 => (0u8..2).prop_map(Op::Key),
    ]
}

fn key_id(k: u8) -> Hash32 {
    Hash32::of(&[k])
}

/// The events of `ops`, each with a timestamp (spread over a few hours so cost buckets differ).
fn events(ops: &[Op]) -> Vec<(u64, Event)> {
    let cv = Hash32::of(b"cfg");
    let mut out = Vec::new();
    let mut ts = 1_763_700_000_000u64;
    for (i, op) in ops.iter().enumerate() {
        ts += 600_000 + (i as u64 % 7) * 1000;
        match op.clone() {
            Op::Request {
                n,
                session,
                key,
                combo,
                fails,
                ok,
                priced,
                latency,
                exceeded,
            } => {
                let id = RequestId((u128::from(ts) << 80) | u128::from(n));
                let session_id = session.map(|s| format!("s{s}"));
                out.push((
                    ts,
                    Event::RequestReceived(Box::new(RequestReceived {
                        request_id: id,
                        config_version: cv,
                        session_id: session_id.clone(),
                        api_key_id: key.map(key_id),
                        endpoint: "/v1/chat/completions".into(),
                        requested: format!("c{combo}"),
                        stream: n % 2 == 0,
                        est_prompt_tokens: 10,
                        max_tokens: None,
                        body_hash: Hash32::of(&n.to_le_bytes()),
                        body_stored: false,
                        task_hint: None,
                        min_tier: None,
                    })),
                ));
                if let (true, Some(s)) = (exceeded, session_id.clone()) {
                    out.push((
                        ts,
                        Event::BudgetExceeded(Box::new(BudgetExceeded {
                            request_id: id,
                            config_version: cv,
                            session_id: s,
                            limit: Cost::Micros(1),
                            spent: Cost::Micros(2),
                            reserved: Cost::Micros(0),
                            action: BudgetAction::Alert,
                            outcome: "served with alert".into(),
                        })),
                    ));
                }
                out.push((
                    ts,
                    Event::RouteDecided(Box::new(RouteDecided {
                        request_id: id,
                        config_version: cv,
                        combo: format!("c{combo}"),
                        strategy: omniroute_core::event::Strategy::Priority,
                        seed: n,
                        candidates: vec![],
                        plan: vec![],
                        propensity: 1.0,
                    })),
                ));
                let mut cost = if priced {
                    Cost::Micros(0)
                } else {
                    Cost::Unpriced
                };
                let attempts = u16::from(fails) + 1;
                for a in 1..=attempts {
                    let t = target((combo + a as u8) % 3, a as u8 % 2);
                    let last = a == attempts;
                    let tokens = Tokens {
                        input: n % 1000,
                        output: n % 300,
                        ..Tokens::default()
                    };
                    let c = if priced {
                        Cost::Micros(n % 977)
                    } else {
                        Cost::Unpriced
                    };
                    if let (Cost::Micros(total), Cost::Micros(m)) = (&mut cost, c) {
                        *total += m;
                    }
                    let error = (!last || !ok).then(|| AttemptError {
                        class: if a % 2 == 0 {
                            ErrorClass::StreamCut
                        } else {
                            ErrorClass::RateLimited
                        },
                        retry_after_ms: None,
                        message: "x".into(),
                    });
                    out.push((
                        ts + 1,
                        Event::AttemptStarted(Box::new(AttemptStarted {
                            request_id: id,
                            config_version: cv,
                            attempt: a,
                            target: t.clone(),
                            upstream_model: t.model.clone(),
                            timeout_ms: 1000,
                        })),
                    ));
                    out.push((
                        ts + 2,
                        Event::AttemptFinished(Box::new(AttemptFinished {
                            request_id: id,
                            config_version: cv,
                            attempt: a,
                            target: t.clone(),
                            status: Some(200),
                            latency_us: latency / u64::from(a),
                            ttft_us: (n % 3 == 0).then_some(latency / 3),
                            tokens,
                            cost: c,
                            error,
                        })),
                    ));
                    if !last {
                        out.push((
                            ts + 2,
                            Event::FallbackTriggered(Box::new(FallbackTriggered {
                                request_id: id,
                                config_version: cv,
                                attempt: a,
                                from: t.clone(),
                                to: target((combo + a as u8 + 1) % 3, 0),
                                reason: ErrorClass::RateLimited,
                            })),
                        ));
                    }
                }
                out.push((
                    ts + 3,
                    Event::RequestCompleted(Box::new(RequestCompleted {
                        request_id: id,
                        config_version: cv,
                        status: if ok { 200 } else { 503 },
                        target: ok
                            .then(|| target((combo + attempts as u8) % 3, attempts as u8 % 2)),
                        error: (!ok).then(|| FinalError {
                            code: "all_targets_failed".into(),
                            class: None,
                            message: "x".into(),
                        }),
                        total_latency_us: latency,
                        ttft_us: None,
                        tokens: Tokens::default(),
                        cost,
                        attempts,
                    })),
                ));
            }
            Op::Circuit(p, m, open) => out.push((
                ts,
                Event::CircuitChanged(Box::new(CircuitChanged {
                    config_version: cv,
                    provider: format!("p{p}"),
                    model: (m == 1).then(|| format!("p{p}/m1")),
                    from: CircuitState::Closed,
                    to: if open {
                        CircuitState::Open
                    } else {
                        CircuitState::Closed
                    },
                    reason: "r".into(),
                    request_id: None,
                })),
            )),
            Op::Guard(s, limit) => out.push((
                ts,
                Event::BudgetGuardSet(Box::new(BudgetGuardSet {
                    session_id: format!("s{s}"),
                    limit: Cost::Micros(limit),
                    action: BudgetAction::Block,
                    degrade_to_tier: None,
                    actor: "t".into(),
                })),
            )),
            Op::Tool(t, ok, d) => out.push((
                ts,
                Event::ToolCalled(Box::new(ToolCalled {
                    tool: format!("tool{t}"),
                    caller_key_id: None,
                    scopes: vec![],
                    args_hash: Hash32::default(),
                    args_preview: String::new(),
                    duration_us: d,
                    ok,
                    error: None,
                    output_preview: String::new(),
                })),
            )),
            Op::Key(k) => out.push((
                ts,
                Event::KeyCreated(Box::new(KeyCreated {
                    key_id: key_id(k),
                    name: format!("key{k}"),
                    scopes: vec![],
                })),
            )),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// DESIGN.md section 5's invariant: folding incrementally with checkpoints written and restored
    /// at random points gives exactly the state of one fold from seq 1 (and so does rebuilding one
    /// read model by name).
    #[test]
    fn checkpoints_at_any_point_equal_one_fold(
        ops in prop::collection::vec(op(), 1..60),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        rebuild in 0usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let evs = events(&ops);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(evs.len() + 1)).collect();
        cuts.push(evs.len());
        cuts.sort_unstable();
        let mut at = 0;
        for cut in cuts {
            for (ts, e) in &evs[at..cut] {
                drop(log.append_at(*ts, e).unwrap());
            }
            at = cut;
            log.sync().unwrap();
            // Restore whatever checkpoint there is, catch up, and checkpoint again here.
            let p = Projections::load(&log.reader().unwrap()).unwrap();
            prop_assert_eq!(p.seq, log.committed_seq());
            log.put_checkpoint(CHECKPOINT, p.encode()).unwrap().wait().unwrap();
        }
        let reader = log.reader().unwrap();
        let incremental = Projections::load(&reader).unwrap();
        let mut one = Projections::default();
        one.catch_up(&reader, Mask::ALL, |_| {}).unwrap();
        prop_assert_eq!(&incremental, &one);
        let decoded = Projections::decode(&one.encode());
        prop_assert_eq!(decoded.as_ref(), Some(&one));

        let mut rebuilt = incremental.clone();
        rebuilt.rebuild(&reader, Mask::named(NAMES[rebuild]).unwrap(), |_| {}).unwrap();
        prop_assert_eq!(&rebuilt, &one);
    }
}

#[test]
fn unknown_names_and_bad_checkpoints_are_refused() {
    assert!(matches!(Mask::named("nope"), Err(Error::UnknownName(_))));
    assert_eq!(Projections::decode(b"not json"), None);
    assert_eq!(Projections::decode(br#"{"version":999,"state":{}}"#), None);
    assert_eq!(usd(345), "$0.000345");
    assert_eq!(usd(12_000_001), "$12.000001");
}
