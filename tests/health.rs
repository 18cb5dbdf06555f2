//! Health that load balancers understand: `/health` (liveness) is 200 while the process serves;
//! `/ready` (readiness) is 503 while the log is failing or no target can serve; `/api/health`
//! keeps its JSON and answers 503 when degraded. The first two need no key and have tiny bodies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use omniroute_core::log::Log;
use serde_json::json;
use support::*;

const PATIENCE: Duration = Duration::from_secs(20);

async fn get(gw: &Gateway, path: &str) -> (u16, String) {
    let r = Gateway::client()
        .get(format!("{}{path}", gw.url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Off the runtime: these block on the log's writer.
async fn sync(log: &Log) -> bool {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.sync().is_ok())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_api_health_answer_503_while_the_log_fails_and_liveness_stays_200() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let extra = "[log]\ndurability = \"batched\"\non_failure = \"serve\"\n";
    let (gw, faults) = Gateway::start_with_faults(&two_upstreams(&a, &b, extra)).await;
    assert_eq!(get(&gw, "/health").await, (200, "ok\n".into()));
    assert_eq!(get(&gw, "/ready").await, (200, "ok\n".into()));
    assert_eq!(get(&gw, "/api/health").await.0, 200);

    faults.disk_full();
    let r = gw
        .chat(json!({ "model": "ab", "messages": user("x") }))
        .await;
    assert_eq!(r.status(), 200);
    assert!(!sync(&gw.log).await, "a commit succeeded on a full disk");

    assert_eq!(get(&gw, "/health").await, (200, "ok\n".into()));
    let (code, body) = get(&gw, "/ready").await;
    assert_eq!((code, body.as_str()), (503, "event log failing\n"));
    let (code, body) = get(&gw, "/api/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"status\":\"degraded\""), "{body}");

    faults.return_space();
    let log = gw.log.clone();
    assert!(
        tokio::task::spawn_blocking(move || log.wait_writable(PATIENCE))
            .await
            .unwrap()
    );
    assert_eq!(get(&gw, "/ready").await, (200, "ok\n".into()));
    assert_eq!(get(&gw, "/api/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_every_target_cools_down_and_needs_no_key() {
    let limited = || Step::Json {
        status: 429,
        body: json!({ "error": { "message": "slow down", "type": "rate_limit" } }),
        retry_after: Some("600".into()),
        delay: Duration::ZERO,
    };
    let a = Fake::start(vec![], limited()).await;
    let b = Fake::start(vec![], limited()).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, "[resilience]\nmax_retries = 0\n")).await;
    assert_eq!(get(&gw, "/ready").await, (200, "ok\n".into()));

    let r = gw
        .chat(json!({ "model": "ab", "messages": user("x") }))
        .await;
    assert_ne!(r.status(), 200);
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(
        get(&gw, "/ready").await,
        (503, "no target can serve\n".into())
    );

    // Once a key exists every admin caller needs one, loopback included; these two do not.
    let r = Gateway::client()
        .post(format!("{}/api/keys", gw.url))
        .json(&json!({ "name": "ops", "scopes": ["*"] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert_eq!(get(&gw, "/api/health").await.0, 401);
    assert_eq!(get(&gw, "/health").await, (200, "ok\n".into()));
    assert_eq!(
        get(&gw, "/ready").await,
        (503, "no target can serve\n".into())
    );
}
