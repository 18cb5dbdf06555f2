//! The gateway on a log whose disk fills up (the fault-injecting backend, `log::faults`): while the
//! log cannot be written `/api/health` answers 503, `on_failure = "refuse"` refuses requests with
//! 503 `event_log_unavailable` and `"serve"` serves them while counting what went unrecorded; when
//! the space returns the gateway recovers by itself, with no restart, and loses nothing it had
//! committed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use omniroute_core::event::Event;
use omniroute_core::log::Log;
use serde_json::{Value, json};
use support::*;

/// Generous upper bound for things that happen in milliseconds; only reached when broken.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(a: &Fake, b: &Fake, on_failure: &str) -> String {
    two_upstreams(
        a,
        b,
        &format!(
            "[log]\ndurability = \"batched\"\non_failure = \"{on_failure}\"\n\n[resilience]\nmax_retries = 0\n"
        ),
    )
}

async fn ask(gw: &Gateway, text: &str) -> reqwest::Response {
    gw.chat(json!({ "model": "ab", "messages": user(text) }))
        .await
}

async fn health(gw: &Gateway) -> (u16, Value) {
    let r = Gateway::client()
        .get(format!("{}/api/health", gw.url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Off the runtime: these block on the log's writer.
async fn sync(log: &Log) -> bool {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.sync().is_ok())
        .await
        .unwrap()
}

async fn wait_writable(log: &Log) -> bool {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.wait_writable(PATIENCE))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_answers_503_while_the_disk_is_full_and_recovers_without_a_restart() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let (mut gw, faults) = Gateway::start_with_faults(&config(&a, &b, "refuse")).await;
    let before = ask(&gw, "before").await;
    assert_eq!(before.status(), 200);
    let before = rid(&before);
    assert!(sync(&gw.log).await);
    assert_eq!(health(&gw).await.0, 200);

    faults.disk_full();
    // Batched mode: this one is answered before its events reach the disk, and they do not.
    assert_eq!(ask(&gw, "as it fills").await.status(), 200);
    assert!(!sync(&gw.log).await, "a commit succeeded on a full disk");
    assert!(gw.log.is_failing());

    let calls = a.calls();
    let refused = ask(&gw, "while full").await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "event_log_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("log.on_failure"), "{message}");
    assert_eq!(a.calls(), calls, "a refused request reached an upstream");
    let (code, h) = health(&gw).await;
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["status"], "failing");
    assert_eq!(h["log"]["failing"], true);
    assert!(
        h["log"]["last_error"]
            .as_str()
            .unwrap()
            .contains("omniroute.redb"),
        "{h}"
    );

    faults.return_space();
    assert!(wait_writable(&gw.log).await, "{:?}", gw.log.health());
    let (code, h) = health(&gw).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h}");
    let after = ask(&gw, "after").await;
    assert_eq!(after.status(), 200);
    let after = rid(&after);
    gw.stop().await;
    assert!(gw.kinds(&before).contains(&"RequestCompleted"));
    assert!(gw.kinds(&after).contains(&"RequestCompleted"));
    gw.verify();

    // And a restart (through the plain file path) finds the same log.
    let gw = gw.restart().await;
    assert!(gw.kinds(&before).contains(&"RequestCompleted"));
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mode_serves_while_the_disk_is_full_and_counts_the_unrecorded_events() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let (mut gw, faults) = Gateway::start_with_faults(&config(&a, &b, "serve")).await;
    let first = ask(&gw, "before").await;
    assert_eq!(first.status(), 200);
    let per_request = gw.kinds(&rid(&first)).len() as u64;
    assert!(per_request >= 4);

    faults.disk_full();
    let mut served = Vec::new();
    for i in 0..3 {
        let r = ask(&gw, &format!("while full {i}")).await;
        assert_eq!(r.status(), 200, "serve mode refused a request");
        served.push(rid(&r));
    }
    // Everything recorded before this barrier has been dealt with (failed) when it returns.
    assert!(!sync(&gw.log).await);
    let (code, h) = health(&gw).await;
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["log"]["unrecorded_events"], 3 * per_request, "{h}");
    assert_eq!(h["log"]["failed_events"], 3 * per_request, "{h}");

    faults.return_space();
    assert!(wait_writable(&gw.log).await, "{:?}", gw.log.health());
    let after = ask(&gw, "after").await;
    assert_eq!(after.status(), 200);
    let after = rid(&after);
    let (code, h) = health(&gw).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h}");
    // The count is since start: what was lost stays counted.
    assert_eq!(h["log"]["unrecorded_events"], 3 * per_request, "{h}");
    gw.stop().await;
    for rid in &served {
        assert!(gw.kinds(rid).is_empty(), "{rid} was recorded after all");
    }
    assert_eq!(gw.kinds(&after).len() as u64, per_request);
    gw.verify();
}

/// A control write whose commit fails: acknowledged exactly when it is in the log, and in effect
/// exactly then. A failed fsync may or may not leave the batch on disk (the writer finds it when it
/// reopens); a full disk never does. Either way the decisions that follow re-derive from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_control_write_is_in_effect_exactly_when_it_is_in_the_log() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let (gw, faults) = Gateway::start_with_faults(&config(&a, &b, "refuse")).await;
    let set = |session: &'static str| {
        let url = format!("{}/api/sessions/{session}/budget", gw.url);
        async move {
            Gateway::client()
                .post(url)
                .json(&json!({ "max_cost_usd": 1.0, "action": "block" }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    faults.fail_next_sync();
    let after_sync_failure = set("s1").await;
    faults.disk_full();
    let while_full = set("s2").await;
    assert_eq!(while_full, 503);
    faults.heal();
    assert!(wait_writable(&gw.log).await);
    assert!(sync(&gw.log).await);
    let logged = |session: &str| {
        gw.all_events()
            .iter()
            .any(|e| matches!(e, Event::BudgetGuardSet(g) if g.session_id == session))
    };
    for (session, status) in [("s1", after_sync_failure), ("s2", while_full)] {
        let acknowledged = status == 200;
        assert_eq!(logged(session), acknowledged, "{session}: {status}");
        assert_eq!(
            gw.engine.guard(session).is_some(),
            acknowledged,
            "{session}: {status}"
        );
    }
    for session in ["s1", "s2"] {
        let r = Gateway::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-omniroute-session", session)
            .json(&json!({ "model": "ab", "messages": [{ "role": "user", "content": "x" }], "max_tokens": 5 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(sync(&gw.log).await);
    let r = omniroute_core::flow::fold::verify_decisions(&gw.log.reader().unwrap(), &mut |_, _| {})
        .unwrap();
    assert!(r.checked >= 2 && r.reproduced == r.checked, "{r:?}");
}
