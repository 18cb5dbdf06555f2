//! Issue 12: every recorded routing decision can be derived again, byte for byte, from the log
//! alone (`omniroute log verify --decisions`).
//!
//! - `fidelity`: 32 clients through the release-built binary against fake upstreams that fail,
//!   time out, rate-limit with Retry-After and recover (breakers open, half-open and close,
//!   cooldowns expire mid-traffic), sessions with `degrade` and `block` guards, a strategy switch
//!   and a combo deactivation mid-traffic, a graceful restart and a kill -9 in between. Then every
//!   `RouteDecidedV2` is reproduced, through the running server and from the files alone.
//! - `a_missing_or_perturbed_input_is_caught_where_it_matters`: the same check fails when one
//!   input is left out of the log (an attempt's outcome) or one recorded clock value is moved,
//!   and names the request and field where the derivation first differs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use omniroute_core::event::{CircuitState, ErrorClass, Event, Hash32};
use omniroute_core::flow::fold::verify_decisions;
use omniroute_core::log::Log;
use serde_json::{Value, json};
use support::{Fake, Gateway, Step, user};

const EXE: &str = env!("CARGO_BIN_EXE_omniroute");

/// Three upstreams behind eight combos of every strategy; breakers and cooldowns short enough
/// to open, half-open and close within a phase of traffic.
fn config(a: &Fake, b: &Fake, c: &Fake, d: &Fake, data: &Path) -> String {
    format!(
        r#"
[server]
data_dir = "{data}"

[log]
durability = "batched"

[resilience]
max_retries = 1
backoff_base_ms = 1
backoff_max_ms = 4
breaker_failures = 3
breaker_window_ms = 5000
breaker_cooldown_ms = 150
default_cooldown_ms = 100

[[providers]]
id = "a"
kind = "openai"
base_url = "{a}"
timeout_ms = 250

[[providers]]
id = "b"
kind = "openai"
base_url = "{b}"
timeout_ms = 2000

[[providers]]
id = "c"
kind = "openai"
base_url = "{c}"
timeout_ms = 2000

[[providers]]
id = "d"
kind = "openai"
base_url = "{d}"
timeout_ms = 2000

[[models]]
id = "model-d"
provider = "d"
tier = 1
price = {{ input = 0.2, output = 0.8 }}

[[combos]]
id = "streams"
strategy = "priority"
targets = [{{ model = "model-d" }}]

[[models]]
id = "model-a"
provider = "a"
tier = 2
capabilities = ["chat", "tools"]
price = {{ input = 3.0, output = 15.0 }}

[[models]]
id = "model-b"
provider = "b"
tier = 1
capabilities = ["chat", "tools", "json"]
price = {{ input = 0.5, output = 1.5 }}

[[models]]
id = "model-c"
provider = "c"
tier = 0
capabilities = ["chat"]
price = {{ input = 0.1, output = 0.4 }}

[[combos]]
id = "main"
strategy = "priority"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}, {{ model = "model-c" }}]

[[combos]]
id = "spread"
strategy = "weighted"
targets = [{{ model = "model-a", weight = 3 }}, {{ model = "model-b", weight = 2 }}, {{ model = "model-c", weight = 1 }}]

[[combos]]
id = "rr"
strategy = "round-robin"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}, {{ model = "model-c" }}]

[[combos]]
id = "fast"
strategy = "least-latency"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}, {{ model = "model-c" }}]

[[combos]]
id = "smart"
strategy = "auto"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}, {{ model = "model-c" }}]

[[combos]]
id = "cheap"
strategy = "cost"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}, {{ model = "model-c" }}]

[[combos]]
id = "tiers"
strategy = "tiered"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}, {{ model = "model-c" }}]

[[combos]]
id = "busy"
strategy = "least-busy"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}, {{ model = "model-c" }}]
"#,
        data = data.display(),
        a = a.base_url(),
        b = b.base_url(),
        c = c.base_url(),
        d = d.base_url(),
    )
}

fn serve(config: &Path) -> (Child, String) {
    support::cli::serve_with(config, None)
}

/// SIGTERM, then wait: in-flight requests finish and the state is checkpointed.
fn stop_gracefully(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

/// One client request of kind `k`: every strategy, guarded sessions, capabilities, direct models.
fn request(k: usize) -> (Value, Option<&'static str>) {
    let m = user("route me");
    match k % 11 {
        0 => (
            json!({ "model": "main", "messages": m, "max_tokens": 20 }),
            None,
        ),
        1 => (json!({ "model": "spread", "messages": m }), None),
        2 => (
            json!({ "model": "rr", "messages": m, "max_tokens": 30 }),
            None,
        ),
        3 => (json!({ "model": "fast", "messages": m }), None),
        4 => (
            json!({ "model": "smart", "messages": m, "max_tokens": 10 }),
            None,
        ),
        5 => (json!({ "model": "cheap", "messages": m }), Some("deg")),
        6 => (json!({ "model": "tiers", "messages": m }), Some("blk")),
        7 => (
            json!({ "model": "busy", "messages": m, "tools": [{ "type": "function",
                "function": { "name": "f", "parameters": { "type": "object" } } }] }),
            None,
        ),
        8 => (json!({ "model": "model-b", "messages": m }), Some("deg")),
        9 => (json!({ "model": "main", "messages": m }), Some("blk")),
        _ => (
            json!({ "model": "streams", "messages": m, "stream": true }),
            None,
        ),
    }
}

/// `clients` clients sending `per_client` requests each (until the server goes away); `sent`
/// counts answered requests and `tick` publishes the count.
async fn traffic(
    base: String,
    clients: usize,
    per_client: usize,
    sent: Arc<AtomicUsize>,
    tick: tokio::sync::watch::Sender<usize>,
) {
    let http = reqwest::Client::new();
    let tick = Arc::new(tick);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, sent, tick) = (http.clone(), base.clone(), sent.clone(), tick.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let (body, session) = request(c * 7 + i);
                let mut r = http.post(format!("{base}/v1/chat/completions")).json(&body);
                if let Some(s) = session {
                    r = r.header("x-omniroute-session", s);
                }
                let Ok(r) = r.send().await else { return };
                if r.bytes().await.is_err() {
                    return;
                }
                let n = sent.fetch_add(1, Ordering::SeqCst) + 1;
                tick.send_replace(n);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Pushes `n` copies of a step onto a fake's script.
fn push(f: &Fake, n: usize, step: Step) {
    for _ in 0..n {
        f.push(step.clone());
    }
}

fn rate_limited() -> Step {
    Step::Json {
        status: 429,
        body: json!({ "error": { "message": "slow down", "type": "rate_limit" } }),
        retry_after: Some("1".into()),
        delay: Duration::ZERO,
    }
}

async fn wait_for(rx: &mut tokio::sync::watch::Receiver<usize>, n: usize) {
    let _ = rx.wait_for(|v| *v >= n).await;
}

fn verify_cli(data: &Path) -> (bool, String) {
    let out = Command::new(EXE)
        .args(["log", "verify", "--decisions", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// "ok: N of M decisions ..." -> (N, M).
fn reproduced(text: &str) -> (u64, u64) {
    let rest = text
        .split("ok: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    let mut words = rest.split_whitespace();
    let n = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("of"));
    let m = words.next().unwrap().parse().unwrap();
    (n, m)
}

#[test]
fn fidelity() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg_path = tmp.path().join("omniroute.toml");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = Fake::start(vec![], Step::ok("a")).await;
        let b = Fake::start(vec![], Step::ok("b")).await;
        let c = Fake::start(vec![], Step::ok("c")).await;
        // Streams: complete, or cut after their first piece.
        let d = Fake::start(vec![], Step::stream(&["x", "y"], Duration::ZERO)).await;
        std::fs::write(&cfg_path, config(&a, &b, &c, &d, &data)).unwrap();
        let http = reqwest::Client::new();
        let sent = Arc::new(AtomicUsize::new(0));

        // Phase 1: guards, failures, rate limits, a strategy switch and a deactivation.
        let (child, base) = serve(&cfg_path);
        for (session, body) in [
            (
                "deg",
                json!({ "max_cost_usd": 0.002, "action": "degrade", "degrade_to_tier": 0 }),
            ),
            ("blk", json!({ "max_cost_usd": 0.004, "action": "block" })),
        ] {
            let r = http
                .post(format!("{base}/api/sessions/{session}/budget"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let (tick, mut rx) = tokio::sync::watch::channel(0);
        let load = tokio::spawn(traffic(base.clone(), 32, 40, sent.clone(), tick));
        wait_for(&mut rx, 100).await;
        push(&a, 8, Step::status(500, "down"));
        push(
            &d,
            6,
            Step::Stream {
                frames: vec![
                    (Duration::ZERO, support::chunk("x")),
                    (Duration::from_millis(20), support::chunk("y")),
                ],
                cut: true,
            },
        );
        wait_for(&mut rx, 300).await;
        push(&a, 6, Step::slow(Duration::from_millis(400)));
        // With `Retry-After: 1`, then without (the profile's default cooldown, 100 ms); each
        // cooldown expires mid-traffic or across the restart.
        push(&c, 2, rate_limited());
        push(&c, 3, Step::status(429, "slow down"));
        wait_for(&mut rx, 500).await;
        let r = http
            .patch(format!("{base}/api/combos/spread"))
            .json(&json!({ "strategy": "round-robin" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        push(&a, 8, Step::status(503, "overloaded"));
        wait_for(&mut rx, 800).await;
        let r = http
            .patch(format!("{base}/api/combos/cheap"))
            .json(&json!({ "active": false }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        load.await.unwrap();
        stop_gracefully(child);

        // Phase 2: the switch survived the restart; failures again; killed mid-traffic.
        let (mut child, base) = serve(&cfg_path);
        let combos: Value = http
            .get(format!("{base}/api/combos"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = combos.to_string();
        assert!(
            text.contains(r#""id":"spread","strategy":"round-robin""#)
                || text.contains(r#""strategy":"round-robin""#),
            "{text}"
        );
        let (tick, mut rx) = tokio::sync::watch::channel(0);
        let start = sent.load(Ordering::SeqCst);
        let load = tokio::spawn(traffic(base.clone(), 32, 40, sent.clone(), tick));
        push(&a, 8, Step::status(500, "down"));
        push(&c, 2, rate_limited());
        wait_for(&mut rx, 400).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = load.await;
        assert!(sent.load(Ordering::SeqCst) > start);

        // Phase 3: after the crash; checked through the running server, then stopped.
        let (child, base) = serve(&cfg_path);
        let (tick, _rx) = tokio::sync::watch::channel(0);
        push(&a, 5, Step::status(500, "down"));
        traffic(base.clone(), 32, 10, sent.clone(), tick).await;
        let (ok, text) = verify_cli(&data);
        assert!(ok, "through the server: {text}");
        let (n, m) = reproduced(&text);
        assert_eq!(n, m, "{text}");
        stop_gracefully(child);
    });

    // From the files alone.
    let (ok, text) = verify_cli(&data);
    assert!(ok, "{text}");
    let (n, m) = reproduced(&text);
    assert_eq!(n, m, "{text}");
    assert!(m > 1_000, "too few decisions checked: {text}");
    eprintln!("{text}");

    // Replay under the recorded plan reproduces this traffic too: concurrency, breakers, cooldowns,
    // guards, cut streams, runtime switches, a SIGTERM restart and a kill -9 (whose requests in
    // flight never completed and are replayed as recorded).
    let out = Command::new(EXE)
        .args(["replay", "--format", "json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: omniroute_replay::ReplayReport = serde_json::from_slice(&out.stdout).unwrap();
    let f = r.fidelity.clone().unwrap();
    assert_eq!(f.decisions_reproduced, f.decisions, "{f:?}");
    assert_eq!(f.outcomes_reproduced, f.requests, "{f:?}");
    assert!(f.requests > 1_000, "{f:?}");
    assert_eq!((r.outcomes.estimated, r.changed.count), (0, 0), "{r:?}");
    assert_eq!(r.recorded, r.simulated);
    eprintln!(
        "replay: {} requests reproduced, {} in the background ({} never completed)",
        r.requests, r.background, r.incomplete
    );

    // The traffic did what the test says it does.
    let log = Log::open(&data).unwrap();
    let reader = log.reader().unwrap();
    let mut seen = HashSet::new();
    let mut starts = 0;
    for s in reader.range(..).unwrap() {
        let e = s.unwrap().record().unwrap().event.to_owned_event().unwrap();
        match e {
            Event::CircuitChanged(c) => {
                seen.insert(format!("circuit {:?}", c.to));
            }
            Event::AttemptFinished(f) => {
                if let Some(err) = f.error {
                    if err.class == ErrorClass::RateLimited && err.retry_after_ms == Some(1000) {
                        seen.insert("rate limited with retry-after".into());
                    }
                    if err.class == ErrorClass::Timeout {
                        seen.insert("timeout".into());
                    }
                    if err.class == ErrorClass::StreamCut {
                        seen.insert("stream cut".into());
                    }
                }
            }
            Event::BudgetExceeded(b) => {
                seen.insert(b.outcome.split(' ').next().unwrap().to_string());
            }
            Event::RouteDecidedV2(d) => {
                if let Some(b) = d.budget {
                    seen.insert(format!("guarded {}", b.session_id));
                }
                let c = d
                    .decided
                    .candidates
                    .iter()
                    .find(|c| c.target.model == "model-c");
                match c.map(|c| c.excluded.as_ref()) {
                    Some(Some(e)) if e.detail.starts_with("cooling down") => {
                        seen.insert("cooling down".into());
                    }
                    Some(None) if seen.contains("cooling down") => {
                        seen.insert("cooldown expired".into());
                    }
                    _ => {}
                }
            }
            Event::ConfigChangedV2(c) if c.actor == "startup" => {
                starts += 1;
                if c.kept.iter().any(|k| k.path == "combos.spread.strategy")
                    && c.kept.iter().any(|k| k.path == "combos.cheap.active")
                {
                    seen.insert("runtime changes kept at start-up".into());
                }
            }
            _ => {}
        }
    }
    assert_eq!(starts, 3);
    for want in [
        format!("circuit {:?}", CircuitState::Open),
        format!("circuit {:?}", CircuitState::HalfOpen),
        format!("circuit {:?}", CircuitState::Closed),
        "rate limited with retry-after".into(),
        "timeout".into(),
        "stream cut".into(),
        "cooling down".into(),
        "cooldown expired".into(),
        "degraded".into(),
        "blocked".into(),
        "guarded deg".into(),
        "guarded blk".into(),
        "runtime changes kept at start-up".into(),
    ] {
        assert!(seen.contains(&want), "{want} never happened: {seen:?}");
    }
}

/// Copies a log record by record into `to`, with `edit` deciding each record's fate: `None`
/// leaves it out, `Some((ts, event))` writes it (possibly changed). Configs are copied too.
fn rewrite(
    from: &Log,
    to: &Path,
    mut edit: impl FnMut(u64, u64, Event) -> Option<(u64, Event)>,
) -> Log {
    from.sync().unwrap();
    let reader = from.reader().unwrap();
    let out = Log::open(to).unwrap();
    let mut configs = HashSet::new();
    for s in reader.range(..).unwrap() {
        let s = s.unwrap();
        let rec = s.record().unwrap();
        let event = rec.event.to_owned_event().unwrap();
        if let Event::ConfigChangedV2(c) = &event {
            for v in [c.config_version, c.file_version] {
                if configs.insert(v) {
                    let bytes: Vec<u8> = reader.blob(&v).unwrap().unwrap();
                    assert_eq!(Hash32::of(&bytes), v);
                    drop(out.put_blob(bytes).unwrap());
                }
            }
        }
        if let Some((ts, e)) = edit(rec.seq, rec.ts_ms, event) {
            drop(out.append_at(ts, &e).unwrap());
        }
    }
    out.sync().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_perturbed_input_is_caught_where_it_matters() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let extra = "[resilience]\nmax_retries = 0\nbreaker_failures = 3\nbreaker_window_ms = 60000\n\n[[combos]]\nid = \"lat\"\nstrategy = \"least-latency\"\ntargets = [{ model = \"model-a\" }, { model = \"model-b\" }]\n";
    let gw = Gateway::start(&support::two_upstreams(&a, &b, extra)).await;
    for i in 0..30 {
        if i == 10 {
            push(&a, 2, Step::status(500, "down"));
        }
        let model = if i % 2 == 0 { "ab" } else { "lat" };
        gw.chat(json!({ "model": model, "messages": user("x") }))
            .await
            .bytes()
            .await
            .unwrap();
    }
    gw.log.sync().unwrap();

    // Control: the untouched copy reproduces every decision.
    let tmp = tempfile::tempdir().unwrap();
    let same = rewrite(&gw.log, &tmp.path().join("same"), |_, ts, e| Some((ts, e)));
    let r = verify_decisions(&same.reader().unwrap(), &mut |_, _| {}).unwrap();
    assert_eq!((r.reproduced, r.checked), (30, 30), "{r:?}");
    assert!(r.first_divergence.is_none());

    // An input left out: the first failed attempt's outcome. Health differs from then on, and
    // the first decision over that target says so.
    let mut dropped = None;
    let lost = rewrite(&gw.log, &tmp.path().join("lost"), |seq, ts, e| match &e {
        Event::AttemptFinished(f) if f.error.is_some() && dropped.is_none() => {
            dropped = Some(seq);
            None
        }
        _ => Some((ts, e)),
    });
    let r = verify_decisions(&lost.reader().unwrap(), &mut |_, _| {}).unwrap();
    let d = r.first_divergence.clone().expect("a divergence");
    assert_eq!(d.field, "health_digest", "{r:?}");
    assert!(
        d.seq >= dropped.unwrap(),
        "{d:?} before the dropped seq {dropped:?}"
    );
    assert!(r.reproduced < r.checked);

    // One recorded clock value moved by a millisecond: caught at that very request.
    let mut n = 0;
    let mut moved = None;
    let shifted = rewrite(&gw.log, &tmp.path().join("clock"), |_, ts, e| {
        if let Event::RouteDecidedV2(d) = &e {
            n += 1;
            if n == 17 {
                moved = Some(d.decided.request_id);
                return Some((ts + 1, e));
            }
        }
        Some((ts, e))
    });
    let r = verify_decisions(&shifted.reader().unwrap(), &mut |_, _| {}).unwrap();
    let d = r.first_divergence.clone().expect("a divergence");
    assert_eq!(Some(d.request_id), moved, "{r:?}");
    assert_eq!(d.field, "now_ms");
    drop(shifted);

    // The command says so and fails.
    let (ok, text) = verify_cli(&tmp.path().join("clock"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("diverged") && text.contains("field `now_ms`"),
        "{text}"
    );
    assert!(text.contains(&moved.unwrap().to_string()), "{text}");
    let out = Command::new(EXE)
        .args(["log", "verify", "--decisions", "--json", "--data-dir"])
        .arg(tmp.path().join("clock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first_divergence"]["field"], "now_ms");
    assert_eq!(
        v["first_divergence"]["request_id"],
        moved.unwrap().to_string()
    );
    assert_eq!(v["checked"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_and_guards_survive_a_restart() {
    let a = Fake::start(vec![], Step::status(500, "down")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let extra = "[resilience]\nmax_retries = 0\nbreaker_failures = 3\nbreaker_window_ms = 600000\nbreaker_cooldown_ms = 600000\n";
    let mut gw = Gateway::start(&support::two_upstreams(&a, &b, extra)).await;
    for _ in 0..3 {
        gw.chat(json!({ "model": "ab", "messages": user("x") }))
            .await
            .bytes()
            .await
            .unwrap();
    }
    assert_eq!(a.calls(), 3);
    let r = Gateway::client()
        .post(format!("{}/api/sessions/s/budget", gw.url))
        .json(&json!({ "max_cost_usd": 1.0, "action": "block" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.chat(json!({ "model": "ab", "messages": user("x"), "max_tokens": 5 }))
        .await
        .bytes()
        .await
        .unwrap();
    let before = gw.engine.guard("s").unwrap();
    gw.stop().await;

    // The state restored at start-up (from the checkpoint written at stop) is exactly the fold
    // of the whole log.
    {
        let reader = gw.log.reader().unwrap();
        let restored = omniroute::engine::restore::restore(&reader).unwrap();
        assert!(restored.resumed_at > 0, "the checkpoint was used");
        let mut full = omniroute_core::flow::fold::Folder::new(false);
        for s in reader.range(..).unwrap() {
            let s = s.unwrap();
            full.apply(&s.record().unwrap(), &reader).unwrap();
        }
        let (state, _) = restored.state.unwrap();
        let (full, _) = full.into_parts();
        let full = full.unwrap();
        assert_eq!(state.health, full.health);
        assert_eq!(state.budgets, full.budgets);
    }

    let gw = gw.restart().await;
    // Still open after the restart: a is not called, and the decision says why.
    let r = gw
        .chat(json!({ "model": "ab", "messages": user("x") }))
        .await;
    let id = support::rid(&r);
    r.bytes().await.unwrap();
    assert_eq!(a.calls(), 3);
    let Event::RouteDecidedV2(d) = &gw.events(&id)[1] else {
        panic!()
    };
    let why = d.decided.candidates[0].excluded.as_ref().unwrap();
    assert_eq!(
        why.reason,
        omniroute_core::event::ExclusionReason::CircuitOpen
    );
    assert_eq!(
        gw.engine.guard("s").unwrap().limit_micros,
        before.limit_micros
    );
    assert_eq!(
        gw.engine.guard("s").unwrap().spent_micros,
        before.spent_micros
    );
}

/// A data dir written before schema 2 (the committed v1 fixture): the upgraded gateway keeps its
/// budget guards and spend, serves on it, and every decision it makes is re-derived; the v1
/// decision is reported as not re-derivable, not as a divergence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_v1_log_keeps_its_guards_and_new_decisions_verify() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/logs/v1/omniroute.redb"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture, dir.path().join("omniroute.redb")).unwrap();
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let gw = Gateway::start_in(&support::two_upstreams(&a, &b, ""), dir).await;
    let g = gw
        .engine
        .guard("s-1")
        .expect("the v1 guard survives the upgrade");
    assert_eq!(
        (g.limit_micros, g.spent_micros, g.reserved_micros),
        (50_000, 1_234, 0)
    );
    // The fixture's only key was revoked: keys have existed, so callers need one.
    let (key, _) = gw
        .engine
        .create_key("upgrade", vec!["*".into()])
        .await
        .unwrap();
    for i in 0..6 {
        let r = Gateway::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(&key)
            .header(
                "x-omniroute-session",
                if i % 2 == 0 { "s-1" } else { "other" },
            )
            .json(&json!({ "model": "ab", "messages": user("x"), "max_tokens": 5 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    gw.log.sync().unwrap();
    let r = verify_decisions(&gw.log.reader().unwrap(), &mut |_, _| {}).unwrap();
    assert_eq!(
        (r.checked, r.reproduced, r.unverifiable),
        (6, 6, 1),
        "{r:?}"
    );
    assert!(r.first_divergence.is_none());
    assert!(r.first_unverifiable.unwrap().contains("v1"));
}

/// A combo switched through the admin API stays switched after a restart; when the file itself
/// changed that field meanwhile, the file wins, and the start-up event says which change was
/// dropped and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_switches_survive_a_restart_unless_the_file_changed_them() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let extra = "[[combos]]\nid = \"other\"\nstrategy = \"priority\"\ntargets = [{ model = \"model-b\" }, { model = \"model-a\" }]\n";
    let toml = support::two_upstreams(&a, &b, extra);
    let mut gw = Gateway::start(&toml).await;
    for (combo, strategy) in [("ab", "weighted"), ("other", "cost")] {
        let r = Gateway::client()
            .patch(format!("{}/api/combos/{combo}", gw.url))
            .json(&json!({ "strategy": strategy }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    gw.stop().await;
    let Gateway {
        dir, engine, log, ..
    } = gw;
    drop((engine, log));

    // The file now sets `ab` to round-robin itself; `other` is untouched in the file.
    let edited = toml.replacen(
        "id = \"ab\"\nstrategy = \"priority\"",
        "id = \"ab\"\nstrategy = \"round-robin\"",
        1,
    );
    assert_ne!(edited, toml);
    let gw = Gateway::start_in(&edited, dir).await;
    let cfg = gw.engine.config();
    let strategy = |id: &str| cfg.combos[cfg.combo_index(id).unwrap()].strategy;
    use omniroute_core::event::Strategy;
    assert_eq!(strategy("ab"), Strategy::RoundRobin, "the file wins");
    assert_eq!(
        strategy("other"),
        Strategy::Cost,
        "the runtime switch is kept"
    );
    let start = gw
        .all_events()
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::ConfigChangedV2(c) if c.actor == "startup" => Some(c),
            _ => None,
        })
        .unwrap();
    assert_eq!(start.kept.len(), 1);
    assert_eq!(start.kept[0].path, "combos.other.strategy");
    assert_eq!(start.dropped.len(), 1);
    let d = &start.dropped[0];
    assert_eq!(
        (d.path.as_str(), d.from.as_deref(), d.to.as_deref()),
        (
            "combos.ab.strategy",
            Some("\"weighted\""),
            Some("\"round-robin\"")
        )
    );
    assert!(start.detail.contains("1 dropped"), "{}", start.detail);
    // And the decisions made under all of it re-derive.
    gw.chat(json!({ "model": "other", "messages": user("x") }))
        .await
        .bytes()
        .await
        .unwrap();
    gw.log.sync().unwrap();
    let r = verify_decisions(&gw.log.reader().unwrap(), &mut |_, _| {}).unwrap();
    assert_eq!((r.checked, r.reproduced), (1, 1), "{r:?}");
}
