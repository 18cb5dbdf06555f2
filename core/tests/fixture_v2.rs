//! The schema v2 fixture: `fixtures/logs/v2/omniroute.redb` was written by schema v2 and is
//! committed. This test stays forever: every later build must decode every record of it exactly,
//! and must still read the v1 fixture (`fixtures/logs/v1`, checked in full by `fixture_v1.rs`).
//!
//! Regenerate (only ever for a new fixture version, never to paper over a decoding change):
//! `OMNIROUTE_WRITE_FIXTURE_V2=1 cargo test -p omniroute-core --test fixture_v2`
//! (its own variable: regenerating this fixture never rewrites the v1 one, nor the reverse).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use omniroute_core::config::{self, Config};
use omniroute_core::event::*;
use omniroute_core::log::{LOG_FILE, Log, Reader};

/// Timestamp of the record at index `i` of [`v2_events`].
fn ts(i: u64) -> u64 {
    1_800_000_000_000 + i * 250
}

/// How many kinds schema v2 has (the first ones of [`EVENT_KINDS`]); every one is in the fixture.
const EVENT_KINDS_V2: usize = 16;

/// `config_version` of the built-in default config when the fixture was written: the hash of the
/// first config blob.
const V_FILE: &str = "a401431ebfc1671e26401b88ecd4e279d8465b35cc09978da8372da380e514ad";
/// The same config with `combos.default.strategy` set to `round-robin` at runtime: the hash of
/// the second config blob.
const V_RR: &str = "7c529cd320b35be6f1ab9bf3ec1b57ef19770c0e21f91a76f5a165e0768de797";

/// The body of request 1, stored as a blob under its `body_hash`.
const BODY: &[u8] = b"{\"model\":\"default\",\"messages\":[{\"role\":\"user\",\"content\":\"say \\\"hi\\\"\"}],\"max_tokens\":256}";

fn v_file() -> Hash32 {
    Hash32::parse_hex(V_FILE).unwrap()
}

fn v_rr() -> Hash32 {
    Hash32::parse_hex(V_RR).unwrap()
}

const ID1: RequestId = RequestId(0x0198_0000_0000_0000_0000_0000_0000_0001);
const ID2: RequestId = RequestId(0x0198_0000_0000_0000_0000_0000_0000_0002);
const ID3: RequestId = RequestId(0x0198_0000_0000_0000_0000_0000_0000_0003);

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/logs/v2")
}

fn v1_fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/logs/v1")
}

fn t(p: &str, m: &str) -> Target {
    Target {
        provider: p.into(),
        model: m.into(),
    }
}

fn change(path: &str, from: Option<&str>, to: Option<&str>) -> ConfigFieldChange {
    ConfigFieldChange {
        path: path.into(),
        from: from.map(Into::into),
        to: to.map(Into::into),
    }
}

/// Frozen: the events the v2 fixture holds, one or more of every kind of schema v2, with optional
/// fields both set and unset. Three requests: `ID1` (budget-guarded, a fallback, a `RouteDecidedV2`
/// with a budget), `ID2` (a cache hit that failed, a `RouteDecidedV2` without one), `ID3` (a v1
/// `RouteDecided`, which schema 2 can still hold).
fn v2_events() -> Vec<Event> {
    let key = Hash32([9; 32]);
    let fast = || t("mock", "mock/fast");
    let slow = || t("mock", "mock/slow");
    let tokens = Tokens {
        input: 500,
        cached_read: 300,
        cache_write: 12,
        reasoning: 7,
        output: 140,
    };
    vec![
        // 0: a process start: nothing carried, no previous version.
        Event::ConfigChangedV2(Box::new(ConfigChangedV2 {
            actor: "startup".into(),
            kind: ConfigChangeKind::Loaded,
            detail: "built-in default config".into(),
            previous_version: None,
            config_version: v_file(),
            file_version: v_file(),
            changes: vec![],
            kept: vec![],
            dropped: vec![],
        })),
        // 1: the v1 form, still a kind schema 2 can hold.
        Event::ConfigChanged(Box::new(ConfigChanged {
            actor: "admin-api".into(),
            kind: ConfigChangeKind::StrategySet,
            detail: "combo default: strategy priority -> round-robin".into(),
            previous_version: Some(v_file()),
            config_version: v_rr(),
        })),
        // 2: a restart: a runtime change kept, others dropped because the file changed them. Shaped
        // like a real restart's record, not derived from one (only the two versions are real).
        Event::ConfigChangedV2(Box::new(ConfigChangedV2 {
            actor: "startup".into(),
            kind: ConfigChangeKind::Loaded,
            detail: "config file reloaded; 1 runtime change kept, 2 dropped".into(),
            previous_version: Some(v_file()),
            config_version: v_rr(),
            file_version: v_file(),
            changes: vec![
                change(
                    "combos.default.strategy",
                    Some("\"priority\""),
                    Some("\"round-robin\""),
                ),
                change(
                    "combos.nightly",
                    Some(
                        "{\"id\":\"nightly\",\"strategy\":\"least-latency\",\"targets\":[{\"model\":1,\"weight\":1}],\"active\":true}",
                    ),
                    None,
                ),
                change("models.\"gpt-4.1\".price.input", Some("2.0"), Some("2.5")),
            ],
            kept: vec![change(
                "combos.default.strategy",
                Some("\"priority\""),
                Some("\"round-robin\""),
            )],
            dropped: vec![
                change("combos.nightly.strategy", Some("\"least-latency\""), None),
                change("combos.balanced.active", Some("false"), Some("true")),
            ],
        })),
        // 3
        Event::KeyCreated(Box::new(KeyCreated {
            key_id: key,
            name: "ci \"nightly\"".into(),
            scopes: vec!["read:*".into(), "execute:completions".into()],
        })),
        // 4
        Event::BudgetGuardSet(Box::new(BudgetGuardSet {
            session_id: "s-1".into(),
            limit: Cost::Micros(50_000),
            action: BudgetAction::Degrade,
            degrade_to_tier: Some(0),
            actor: "admin-api".into(),
        })),
        // 5
        Event::BudgetGuardSet(Box::new(BudgetGuardSet {
            session_id: "s-2".into(),
            limit: Cost::Micros(10_000),
            action: BudgetAction::Block,
            degrade_to_tier: None,
            actor: "cli".into(),
        })),
        // 6: request 1.
        Event::RequestReceived(Box::new(RequestReceived {
            request_id: ID1,
            config_version: v_rr(),
            session_id: Some("s-1".into()),
            api_key_id: Some(key),
            endpoint: "/v1/chat/completions".into(),
            requested: "default".into(),
            stream: true,
            est_prompt_tokens: 812,
            max_tokens: Some(256),
            body_hash: Hash32::of(BODY),
            body_stored: true,
            task_hint: Some("code".into()),
            min_tier: Some(0),
        })),
        // 7
        Event::RouteDecidedV2(Box::new(RouteDecidedV2 {
            decided: RouteDecided {
                request_id: ID1,
                config_version: v_rr(),
                combo: "default".into(),
                strategy: Strategy::RoundRobin,
                seed: 0x0123_4567_89AB_CDEF,
                candidates: vec![
                    Candidate {
                        target: fast(),
                        tier: 0,
                        score: 1.0,
                        factors: vec![Factor {
                            name: "cursor".into(),
                            value: 4.0,
                            weight: 1.0,
                        }],
                        excluded: None,
                    },
                    Candidate {
                        target: slow(),
                        tier: 1,
                        score: 0.0,
                        factors: vec![],
                        excluded: Some(Exclusion {
                            reason: ExclusionReason::Budget,
                            detail: "above tier 0 allowed by the guard of s-1".into(),
                        }),
                    },
                ],
                plan: vec![0],
                propensity: 1.0,
            },
            input: RouteInputRecord {
                requested: "default".into(),
                est_prompt_tokens: 812,
                max_tokens: Some(256),
                required: 0b0000_0011,
                min_tier: Some(0),
                max_tier: Some(0),
                budget_left_micros: Some(100),
            },
            now_ms: ts(7),
            health_digest: Hash32([0xA5; 32]),
            budget: Some(BudgetSeen {
                session_id: "s-1".into(),
                limit_micros: 50_000,
                action: BudgetAction::Degrade,
                degrade_to_tier: Some(0),
                spent_micros: 49_100,
                reserved_micros: 800,
                worst_micros: 4_200,
                reserved_now_micros: 100,
            }),
        })),
        // 8
        Event::AttemptStarted(Box::new(AttemptStarted {
            request_id: ID1,
            config_version: v_rr(),
            attempt: 1,
            target: fast(),
            upstream_model: "fast".into(),
            timeout_ms: 60_000,
        })),
        // 9
        Event::AttemptFinished(Box::new(AttemptFinished {
            request_id: ID1,
            config_version: v_rr(),
            attempt: 1,
            target: fast(),
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
        // 10
        Event::CircuitChanged(Box::new(CircuitChanged {
            config_version: v_rr(),
            provider: "mock".into(),
            model: Some("mock/fast".into()),
            from: CircuitState::Closed,
            to: CircuitState::Open,
            reason: "5 failures in 30s".into(),
            request_id: Some(ID1),
        })),
        // 11
        Event::FallbackTriggered(Box::new(FallbackTriggered {
            request_id: ID1,
            config_version: v_rr(),
            attempt: 1,
            from: fast(),
            to: slow(),
            reason: ErrorClass::RateLimited,
        })),
        // 12
        Event::AttemptStarted(Box::new(AttemptStarted {
            request_id: ID1,
            config_version: v_rr(),
            attempt: 2,
            target: slow(),
            upstream_model: "slow".into(),
            timeout_ms: 30_000,
        })),
        // 13
        Event::AttemptFinished(Box::new(AttemptFinished {
            request_id: ID1,
            config_version: v_rr(),
            attempt: 2,
            target: slow(),
            status: Some(200),
            latency_us: 640_000,
            ttft_us: Some(210_000),
            tokens,
            cost: Cost::Micros(1_234),
            error: None,
        })),
        // 14
        Event::BudgetExceeded(Box::new(BudgetExceeded {
            request_id: ID1,
            config_version: v_rr(),
            session_id: "s-1".into(),
            limit: Cost::Micros(50_000),
            spent: Cost::Micros(49_900),
            reserved: Cost::Micros(800),
            action: BudgetAction::Degrade,
            outcome: "degraded to tier 0".into(),
        })),
        // 15
        Event::RequestCompleted(Box::new(RequestCompleted {
            request_id: ID1,
            config_version: v_rr(),
            status: 200,
            target: Some(slow()),
            error: None,
            total_latency_us: 690_000,
            ttft_us: Some(260_000),
            tokens,
            cost: Cost::Micros(1_234),
            attempts: 2,
        })),
        // 16: request 2: no session, no key, nothing optional.
        Event::RequestReceived(Box::new(RequestReceived {
            request_id: ID2,
            config_version: v_rr(),
            session_id: None,
            api_key_id: None,
            endpoint: "/v1/completions".into(),
            requested: "mock/premium".into(),
            stream: false,
            est_prompt_tokens: 0,
            max_tokens: None,
            body_hash: Hash32([3; 32]),
            body_stored: false,
            task_hint: None,
            min_tier: None,
        })),
        // 17
        Event::RouteDecidedV2(Box::new(RouteDecidedV2 {
            decided: RouteDecided {
                request_id: ID2,
                config_version: v_rr(),
                combo: String::new(),
                strategy: Strategy::Priority,
                seed: 0,
                candidates: vec![],
                plan: vec![],
                propensity: 0.0,
            },
            input: RouteInputRecord {
                requested: "mock/premium".into(),
                est_prompt_tokens: 0,
                max_tokens: None,
                required: 0,
                min_tier: None,
                max_tier: None,
                budget_left_micros: None,
            },
            now_ms: ts(17),
            health_digest: Hash32::default(),
            budget: None,
        })),
        // 18
        Event::CacheHit(Box::new(CacheHit {
            request_id: ID2,
            config_version: v_rr(),
            cache_kind: "exact".into(),
            key_hash: Hash32([5; 32]),
        })),
        // 19
        Event::RequestCompleted(Box::new(RequestCompleted {
            request_id: ID2,
            config_version: v_rr(),
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
            attempts: 0,
        })),
        // 20: request 3, routed with the v1 decision form.
        Event::RequestReceived(Box::new(RequestReceived {
            request_id: ID3,
            config_version: v_file(),
            session_id: Some("s-2".into()),
            api_key_id: None,
            endpoint: "/v1/chat/completions".into(),
            requested: "balanced".into(),
            stream: false,
            est_prompt_tokens: 40,
            max_tokens: Some(16),
            body_hash: Hash32([4; 32]),
            body_stored: false,
            task_hint: None,
            min_tier: None,
        })),
        // 21
        Event::RouteDecided(Box::new(RouteDecided {
            request_id: ID3,
            config_version: v_file(),
            combo: "balanced".into(),
            strategy: Strategy::Weighted,
            seed: 0xDEAD_BEEF,
            candidates: vec![
                Candidate {
                    target: fast(),
                    tier: 0,
                    score: 0.75,
                    factors: vec![Factor {
                        name: "weight".into(),
                        value: 3.0,
                        weight: 1.0,
                    }],
                    excluded: None,
                },
                Candidate {
                    target: slow(),
                    tier: 1,
                    score: 0.25,
                    factors: vec![Factor {
                        name: "weight".into(),
                        value: 1.0,
                        weight: 1.0,
                    }],
                    excluded: None,
                },
            ],
            plan: vec![0, 1],
            propensity: 0.75,
        })),
        // 22
        Event::RequestCompleted(Box::new(RequestCompleted {
            request_id: ID3,
            config_version: v_file(),
            status: 402,
            target: None,
            error: Some(FinalError {
                code: "budget_exceeded".into(),
                class: None,
                message: "session \"s-2\" would exceed its budget".into(),
            }),
            total_latency_us: 90,
            ttft_us: None,
            tokens: Tokens::default(),
            cost: Cost::Unpriced,
            attempts: 0,
        })),
        // 23: provider-wide, not caused by a request.
        Event::CircuitChanged(Box::new(CircuitChanged {
            config_version: v_rr(),
            provider: "mock".into(),
            model: None,
            from: CircuitState::HalfOpen,
            to: CircuitState::Closed,
            reason: "probe succeeded".into(),
            request_id: None,
        })),
        // 24
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
        // 25
        Event::ToolCalled(Box::new(ToolCalled {
            tool: "omniroute_status".into(),
            caller_key_id: None,
            scopes: vec![],
            args_hash: Hash32([2; 32]),
            args_preview: "{}".into(),
            duration_us: 55,
            ok: true,
            error: None,
            output_preview: "{\"log\":\"ok\"}".into(),
        })),
        // 26
        Event::KeyRevoked(Box::new(KeyRevoked {
            key_id: key,
            actor: "cli".into(),
        })),
    ]
}

/// The two configs whose canonical JSON the fixture stores as blobs: the built-in default, and
/// the same with the runtime change that events 1 and 2 record.
fn configs() -> (Config, Config) {
    let file = Config::builtin().unwrap();
    let rr = config::set_path(
        &file,
        "combos.default.strategy",
        &serde_json::json!("round-robin"),
    )
    .unwrap();
    (file, rr)
}

fn write_fixture() {
    let (file, rr) = configs();
    // The frozen events name these versions; if the built-in config changed since, the fixture
    // cannot be written as frozen (and must not be: it is never regenerated to make a change pass).
    assert_eq!(
        (file.version().to_string(), rr.version().to_string()),
        (V_FILE.to_string(), V_RR.to_string()),
        "the built-in config no longer has the versions the frozen events name"
    );
    let diff = config::diff(&file, &rr);
    assert_eq!(diff.len(), 1);
    assert_eq!(diff[0].path, "combos.default.strategy");
    assert_eq!(
        diff[0].to.as_ref().map(|v| v.to_string()).as_deref(),
        Some("\"round-robin\"")
    );

    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    {
        let log = Log::open(&dir).unwrap();
        for blob in [file.canonical_json(), rr.canonical_json(), BODY.to_vec()] {
            log.put_blob(blob).unwrap().1.wait().unwrap();
        }
        for (i, e) in v2_events().iter().enumerate() {
            log.append_at(ts(i as u64), e).unwrap().wait().unwrap();
        }
    }
    let mut db = redb::Database::open(dir.join(LOG_FILE)).unwrap();
    while db.compact().unwrap() {}
}

/// Opens a copy of a committed fixture: opening a log may write to it, and the fixture must stay
/// as committed.
fn open_copy(dir: PathBuf) -> (tempfile::TempDir, Log) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join(LOG_FILE), tmp.path().join(LOG_FILE)).unwrap();
    let log = Log::open(tmp.path()).unwrap();
    (tmp, log)
}

fn request_kinds(reader: &Reader, id: RequestId) -> Vec<&'static str> {
    reader
        .request(id)
        .unwrap()
        .iter()
        .map(|s| s.record().unwrap().event.kind())
        .collect()
}

#[test]
fn every_record_of_the_v2_fixture_decodes() {
    if std::env::var_os("OMNIROUTE_WRITE_FIXTURE_V2").is_some() {
        write_fixture();
    }
    let (_tmp, log) = open_copy(fixture_dir());
    let reader = log.reader().unwrap();
    let report = reader.verify().unwrap().unwrap();
    let expected = v2_events();
    assert_eq!(expected.len(), 27);
    assert_eq!(report.events, expected.len() as u64);
    assert_eq!(reader.len().unwrap(), expected.len() as u64);

    let mut kinds = BTreeSet::new();
    let mut seen = 0;
    for (i, item) in reader.range(..).unwrap().enumerate() {
        let stored = item.unwrap();
        let rec = stored.record().unwrap();
        assert_eq!(rec.schema, SCHEMA_V2, "seq {}", rec.seq);
        assert_eq!(rec.seq, i as u64 + 1);
        assert_eq!(rec.ts_ms, ts(i as u64), "seq {}", rec.seq);
        let event = rec.event.to_owned_event().unwrap();
        assert_eq!(event, expected[i], "seq {}", rec.seq);
        kinds.insert(event.kind());

        // `route_decided` reads the inner decision of either version in place.
        let inner = rec
            .event
            .route_decided()
            .map(|d| rkyv::deserialize::<RouteDecided, rkyv::rancor::Error>(d).unwrap());
        match &expected[i] {
            Event::RouteDecided(d) => assert_eq!(inner.as_ref(), Some(&**d)),
            Event::RouteDecidedV2(d) => {
                assert_eq!(inner.as_ref(), Some(&d.decided));
                // `decide` ran at the record's own time.
                assert_eq!(d.now_ms, rec.ts_ms);
            }
            _ => assert!(inner.is_none(), "seq {}", rec.seq),
        }
        seen += 1;
    }
    assert_eq!(seen, expected.len());
    let all: BTreeSet<&str> = EVENT_KINDS[..EVENT_KINDS_V2].iter().copied().collect();
    assert_eq!(kinds, all, "the fixture must hold every kind");

    // The blobs: both config versions the events name rebuild into exactly those configs, and
    // request 1's body is there under its `body_hash`.
    for v in [v_file(), v_rr()] {
        let blob = reader.blob(&v).unwrap().expect("config blob");
        assert_eq!(Hash32::of(&blob), v);
        assert_eq!(Config::from_canonical(&blob).unwrap().version(), v);
    }
    assert_eq!(reader.blob(&Hash32::of(BODY)).unwrap().unwrap(), BODY);

    // The request index covers every request-scoped kind, `RouteDecidedV2` included.
    assert_eq!(
        request_kinds(&reader, ID1),
        [
            "RequestReceived",
            "RouteDecidedV2",
            "AttemptStarted",
            "AttemptFinished",
            "CircuitChanged",
            "FallbackTriggered",
            "AttemptStarted",
            "AttemptFinished",
            "BudgetExceeded",
            "RequestCompleted",
        ]
    );
    assert_eq!(
        request_kinds(&reader, ID2),
        [
            "RequestReceived",
            "RouteDecidedV2",
            "CacheHit",
            "RequestCompleted"
        ]
    );
    assert_eq!(
        request_kinds(&reader, ID3),
        ["RequestReceived", "RouteDecided", "RequestCompleted"]
    );
    for id in [ID1, ID2, ID3] {
        let got: Vec<Event> = reader
            .request(id)
            .unwrap()
            .iter()
            .map(|s| s.record().unwrap().event.to_owned_event().unwrap())
            .collect();
        let want: Vec<Event> = expected
            .iter()
            .filter(|e| e.request_id() == Some(id))
            .cloned()
            .collect();
        assert_eq!(got, want, "request {id}");
    }
}

/// The v1 fixture still reads with this build, and keeps its schema number: a build writing v2
/// never rewrites old records. (`fixture_v1.rs` checks every field of it.)
#[test]
fn the_v1_fixture_still_decodes_as_schema_1() {
    let (_tmp, log) = open_copy(v1_fixture_dir());
    let reader = log.reader().unwrap();
    let report = reader.verify().unwrap().unwrap();
    assert!(report.events > 0);
    let mut kinds = BTreeSet::new();
    let mut n = 0;
    for item in reader.range(..).unwrap() {
        let stored = item.unwrap();
        let rec = stored.record().unwrap();
        assert_eq!(rec.schema, SCHEMA_V1, "seq {}", rec.seq);
        let event = rec.event.to_owned_event().unwrap();
        assert!(event.kind_index() < EVENT_KINDS_V1, "seq {}", rec.seq);
        kinds.insert(event.kind());
        n += 1;
    }
    assert_eq!(n, report.events);
    assert_eq!(kinds.len(), EVENT_KINDS_V1);
}
