//! The schema v1 fixture: `fixtures/logs/v1/omniroute.redb` was written by schema v1 and is
//! committed. This test stays forever: every later build must decode every record of it exactly.
//!
//! Regenerate (only ever for a new fixture version, never to paper over a decoding change):
//! `OMNIROUTE_WRITE_FIXTURE=1 cargo test -p omniroute-core --test fixture_v1`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use omniroute_core::event::*;
use omniroute_core::log::{LOG_FILE, Log};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/logs/v1")
}

fn t(p: &str, m: &str) -> Target {
    Target {
        provider: p.into(),
        model: m.into(),
    }
}

/// Frozen: the events the v1 fixture holds, one or more of every kind, with optional fields both
/// set and unset.
fn v1_events() -> Vec<Event> {
    let id = RequestId(0x0197_0000_0000_0000_0000_0000_0000_0001);
    let id2 = RequestId(0x0197_0000_0000_0000_0000_0000_0000_0002);
    let cv = Hash32([7; 32]);
    let key = Hash32([9; 32]);
    vec![
        Event::ConfigChanged(Box::new(ConfigChanged {
            actor: "startup".into(),
            kind: ConfigChangeKind::Loaded,
            detail: "built-in default config".into(),
            previous_version: None,
            config_version: cv,
        })),
        Event::KeyCreated(Box::new(KeyCreated {
            key_id: key,
            name: "ci".into(),
            scopes: vec!["read:*".into(), "execute:completions".into()],
        })),
        Event::BudgetGuardSet(Box::new(BudgetGuardSet {
            session_id: "s-1".into(),
            limit: Cost::Micros(50_000),
            action: BudgetAction::Degrade,
            degrade_to_tier: Some(0),
            actor: "admin-api".into(),
        })),
        Event::RequestReceived(Box::new(RequestReceived {
            request_id: id,
            config_version: cv,
            session_id: Some("s-1".into()),
            api_key_id: Some(key),
            endpoint: "/v1/chat/completions".into(),
            requested: "default".into(),
            stream: true,
            est_prompt_tokens: 812,
            max_tokens: Some(256),
            body_hash: Hash32([3; 32]),
            body_stored: true,
            task_hint: Some("code".into()),
            min_tier: Some(1),
        })),
        Event::RouteDecided(Box::new(RouteDecided {
            request_id: id,
            config_version: cv,
            combo: "default".into(),
            strategy: Strategy::Weighted,
            seed: 0xDEAD_BEEF,
            candidates: vec![
                Candidate {
                    target: t("openai", "gpt-4o-mini"),
                    tier: 1,
                    score: 0.75,
                    factors: vec![Factor {
                        name: "weight".into(),
                        value: 3.0,
                        weight: 1.0,
                    }],
                    excluded: None,
                },
                Candidate {
                    target: t("anthropic", "claude-haiku"),
                    tier: 1,
                    score: 0.25,
                    factors: vec![],
                    excluded: None,
                },
                Candidate {
                    target: t("groq", "llama"),
                    tier: 0,
                    score: 0.0,
                    factors: vec![],
                    excluded: Some(Exclusion {
                        reason: ExclusionReason::CircuitOpen,
                        detail: "open since seq 2".into(),
                    }),
                },
            ],
            plan: vec![0, 1],
            propensity: 0.75,
        })),
        Event::AttemptStarted(Box::new(AttemptStarted {
            request_id: id,
            config_version: cv,
            attempt: 1,
            target: t("openai", "gpt-4o-mini"),
            upstream_model: "gpt-4o-mini-2024-07-18".into(),
            timeout_ms: 60_000,
        })),
        Event::AttemptFinished(Box::new(AttemptFinished {
            request_id: id,
            config_version: cv,
            attempt: 1,
            target: t("openai", "gpt-4o-mini"),
            status: Some(429),
            latency_us: 31_000,
            ttft_us: None,
            tokens: Tokens::default(),
            cost: Cost::Unpriced,
            error: Some(AttemptError {
                class: ErrorClass::RateLimited,
                retry_after_ms: Some(2_000),
                message: "rate limited".into(),
            }),
        })),
        Event::FallbackTriggered(Box::new(FallbackTriggered {
            request_id: id,
            config_version: cv,
            attempt: 1,
            from: t("openai", "gpt-4o-mini"),
            to: t("anthropic", "claude-haiku"),
            reason: ErrorClass::RateLimited,
        })),
        Event::CircuitChanged(Box::new(CircuitChanged {
            config_version: cv,
            provider: "openai".into(),
            model: Some("gpt-4o-mini".into()),
            from: CircuitState::Closed,
            to: CircuitState::Open,
            reason: "5 failures in 30s".into(),
            request_id: Some(id),
        })),
        Event::AttemptStarted(Box::new(AttemptStarted {
            request_id: id,
            config_version: cv,
            attempt: 2,
            target: t("anthropic", "claude-haiku"),
            upstream_model: "claude-3-5-haiku-latest".into(),
            timeout_ms: 30_000,
        })),
        Event::AttemptFinished(Box::new(AttemptFinished {
            request_id: id,
            config_version: cv,
            attempt: 2,
            target: t("anthropic", "claude-haiku"),
            status: Some(200),
            latency_us: 640_000,
            ttft_us: Some(210_000),
            tokens: Tokens {
                input: 500,
                cached_read: 300,
                cache_write: 12,
                reasoning: 0,
                output: 140,
            },
            cost: Cost::Micros(1_234),
            error: None,
        })),
        Event::CacheHit(Box::new(CacheHit {
            request_id: id2,
            config_version: cv,
            cache_kind: "exact".into(),
            key_hash: Hash32([5; 32]),
        })),
        Event::BudgetExceeded(Box::new(BudgetExceeded {
            request_id: id,
            config_version: cv,
            session_id: "s-1".into(),
            limit: Cost::Micros(50_000),
            spent: Cost::Micros(49_900),
            reserved: Cost::Micros(800),
            action: BudgetAction::Degrade,
            outcome: "degraded to tier 0".into(),
        })),
        Event::RequestCompleted(Box::new(RequestCompleted {
            request_id: id,
            config_version: cv,
            status: 200,
            target: Some(t("anthropic", "claude-haiku")),
            error: None,
            total_latency_us: 690_000,
            ttft_us: Some(260_000),
            tokens: Tokens {
                input: 500,
                cached_read: 300,
                cache_write: 12,
                reasoning: 0,
                output: 140,
            },
            cost: Cost::Micros(1_234),
            attempts: 2,
        })),
        Event::RequestCompleted(Box::new(RequestCompleted {
            request_id: id2,
            config_version: cv,
            status: 503,
            target: None,
            error: Some(FinalError {
                code: "all_targets_failed".into(),
                class: Some(ErrorClass::Timeout),
                message: "every target failed: timeout".into(),
            }),
            total_latency_us: 30_000_000,
            ttft_us: None,
            tokens: Tokens::default(),
            cost: Cost::Micros(0),
            attempts: 1,
        })),
        Event::ToolCalled(Box::new(ToolCalled {
            tool: "omniroute_explain".into(),
            caller_key_id: Some(key),
            scopes: vec!["read:usage".into()],
            args_hash: Hash32([1; 32]),
            args_preview: "{\"request_id\":\"…\"}".into(),
            duration_us: 420,
            ok: false,
            error: Some("unknown request".into()),
            output_preview: String::new(),
        })),
        Event::KeyRevoked(Box::new(KeyRevoked {
            key_id: key,
            actor: "cli".into(),
        })),
    ]
}

const BLOB: &[u8] =
    b"{\"model\":\"default\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

fn write_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    {
        let log = Log::open(&dir).unwrap();
        log.put_blob(BLOB.to_vec()).unwrap().1.wait().unwrap();
        for (i, e) in v1_events().iter().enumerate() {
            log.append_at(1_790_000_000_000 + i as u64 * 250, e)
                .unwrap()
                .wait()
                .unwrap();
        }
    }
    let mut db = redb::Database::open(dir.join(LOG_FILE)).unwrap();
    while db.compact().unwrap() {}
}

#[test]
fn every_record_of_the_v1_fixture_decodes() {
    if std::env::var_os("OMNIROUTE_WRITE_FIXTURE").is_some() {
        write_fixture();
    }
    // Work on a copy: opening a log may write to it, and the fixture must stay as committed.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fixture_dir().join(LOG_FILE), tmp.path().join(LOG_FILE)).unwrap();
    let log = Log::open(tmp.path()).unwrap();
    let reader = log.reader().unwrap();
    let report = reader.verify().unwrap().unwrap();
    let expected = v1_events();
    assert_eq!(report.events, expected.len() as u64);
    let mut kinds = std::collections::BTreeSet::new();
    for (i, item) in reader.range(..).unwrap().enumerate() {
        let stored = item.unwrap();
        let rec = stored.record().unwrap();
        assert_eq!(rec.schema, SCHEMA_V1);
        assert_eq!(rec.ts_ms, 1_790_000_000_000 + i as u64 * 250);
        let event = rec.event.to_owned_event().unwrap();
        assert_eq!(event, expected[i], "seq {}", rec.seq);
        kinds.insert(event.kind());
    }
    assert_eq!(
        kinds.len(),
        EVENT_KINDS_V1,
        "the fixture must hold every kind"
    );
    assert_eq!(reader.blob(&Hash32::of(BLOB)).unwrap().unwrap(), BLOB);
    let id = RequestId(0x0197_0000_0000_0000_0000_0000_0000_0001);
    assert_eq!(reader.request(id).unwrap().len(), 10);
}
