//! Clients that go away (issue 11): a request whose client disconnects, mid-stream or while a
//! plain answer is still being produced, still completes in the log (`client_closed`, with what
//! was spent), settles its budget reservation and releases Health's in-flight count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use omniroute_core::event::{BudgetAction, Cost, Event, RequestCompleted};
use serde_json::json;
use support::*;

const NO_RETRY: &str = "[resilience]\nmax_retries = 0\n";

/// Waits (on the log's commit notifications, not on a clock) for the first `RequestCompleted`.
async fn first_completion(gw: &Gateway) -> RequestCompleted {
    let mut sub = gw.log.subscribe(0);
    let wait = async {
        loop {
            let range = sub.next_range().await.expect("the log closed");
            let reader = gw.log.reader().unwrap();
            for s in reader.range(range).unwrap() {
                if let Event::RequestCompleted(c) =
                    s.unwrap().record().unwrap().event.to_owned_event().unwrap()
                {
                    return *c;
                }
            }
        }
    };
    // A generous bound so a regression fails instead of hanging; nothing waits on it otherwise.
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("no RequestCompleted was recorded")
}

async fn guarded(gw: &Gateway) {
    gw.engine
        .set_budget("S1", 1.0, BudgetAction::Block, None, "test")
        .await
        .unwrap();
}

fn assert_settled(gw: &Gateway, c: &RequestCompleted) {
    assert_eq!(c.status, 499, "{c:?}");
    assert_eq!(
        c.error.as_ref().map(|e| e.code.as_str()),
        Some("client_closed")
    );
    assert_eq!(c.attempts, 1, "no further attempt after the client left");
    let g = gw.engine.guard("S1").unwrap();
    assert_eq!(g.reserved_micros, 0, "the reservation is settled");
    let Cost::Micros(cost) = c.cost else {
        panic!("priced model")
    };
    assert_eq!(g.spent_micros, cost, "what was spent is what was recorded");
    assert_eq!(gw.engine.in_flight("model-a"), Some((0, false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_answer_is_completed_settled_and_released() {
    // The upstream takes a while; the client gives up long before.
    let a = Fake::start(
        vec![Step::slow(Duration::from_millis(1_500))],
        Step::ok("a"),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    guarded(&gw).await;
    let err = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-omniroute-session", "S1")
        .timeout(Duration::from_millis(200))
        .json(&json!({ "model": "ab", "messages": user("hi") }))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let c = first_completion(&gw).await;
    assert_settled(&gw, &c);
    // The answer the upstream produced was paid for, so it is recorded with its tokens.
    assert_eq!((c.tokens.input, c.tokens.output), (10, 5));
    assert_eq!((a.calls(), b.calls()), (1, 0));
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_stream_is_completed_at_once_settled_and_released() {
    // One piece, then a long silence: the client reads the piece and leaves.
    let a = Fake::start(
        vec![Step::Stream {
            frames: vec![
                (Duration::ZERO, chunk("Hel")),
                (Duration::from_secs(60), chunk("lo")),
            ],
            cut: false,
        }],
        Step::ok("a"),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    // A long upstream idle limit: the request must end because the client left, not because
    // the upstream went quiet.
    let toml = two_upstreams(&a, &b, NO_RETRY).replace("timeout_ms = 2000", "timeout_ms = 60000");
    let gw = Gateway::start(&toml).await;
    guarded(&gw).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-omniroute-session", "S1")
        .json(&json!({ "model": "ab", "stream": true, "messages": user("hi") }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    drop(body);
    let c = first_completion(&gw).await;
    assert_settled(&gw, &c);
    gw.verify();
}
