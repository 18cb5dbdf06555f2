//! Strict durability on a failing disk (issue 11): an answer is an acknowledgement, so in `strict`
//! mode no request whose events were not all committed may succeed: a plain answer becomes 503
//! `event_log_unavailable`, a stream ends with an in-band error instead of `[DONE]`. Uses the
//! fault-injecting storage backend (`omniroute_core::log::faults`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use omniroute_core::event::Event;
use omniroute_core::log::Log;
use serde_json::{Value, json};
use support::*;

fn strict(a: &Fake, b: &Fake, on_failure: &str) -> String {
    two_upstreams(
        a,
        b,
        &format!(
            "[log]\ndurability = \"strict\"\non_failure = \"{on_failure}\"\n\n[resilience]\nmax_retries = 0\n"
        ),
    )
}

async fn wait_writable(log: &Log) -> bool {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.wait_writable(Duration::from_secs(20)))
        .await
        .unwrap()
}

/// Whole body of a response as text.
async fn text(r: reqwest::Response) -> String {
    let mut s = r.bytes_stream();
    let mut out = Vec::new();
    while let Some(Ok(b)) = s.next().await {
        out.extend_from_slice(&b);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_answers_are_withheld_when_the_requests_events_did_not_commit() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::stream(&["x", "y"], Duration::ZERO)).await;
    // `serve` lets the request in although the disk is full, so only the acknowledgement rule
    // stands between it and a 200.
    let (gw, faults) = Gateway::start_with_faults(&strict(&a, &b, "serve")).await;
    faults.disk_full();

    let r = gw
        .chat(json!({ "model": "model-a", "messages": user("plain") }))
        .await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "event_log_unavailable", "{v}");
    assert_eq!(
        a.calls(),
        1,
        "the upstream did answer; the answer was withheld"
    );

    let r = gw
        .chat(json!({ "model": "model-b", "stream": true, "messages": user("stream") }))
        .await;
    assert_eq!(
        r.status(),
        200,
        "a stream's status goes out with its first piece"
    );
    let body = text(r).await;
    assert!(!body.contains("[DONE]"), "{body}");
    assert!(body.contains("event_log_unavailable"), "{body}");

    // Space returns: the same requests succeed, with no restart.
    faults.return_space();
    assert!(wait_writable(&gw.log).await);
    let r = gw
        .chat(json!({ "model": "model-a", "messages": user("plain") }))
        .await;
    assert_eq!(r.status(), 200);
    let r = gw
        .chat(json!({ "model": "model-b", "stream": true, "messages": user("stream") }))
        .await;
    assert!(text(r).await.ends_with("data: [DONE]\n\n"));
    gw.verify();
}

/// What a client saw: the request id and whether the answer succeeded.
async fn one(gw: &Gateway, stream: bool) -> Option<(String, bool)> {
    let model = if stream { "model-b" } else { "model-a" };
    let r = Gateway::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({ "model": model, "stream": stream, "messages": user("fill") }))
        .send()
        .await
        .ok()?;
    let id = r
        .headers()
        .get("x-omniroute-request-id")?
        .to_str()
        .ok()?
        .to_string();
    let status = r.status();
    let body = text(r).await;
    let ok = status == 200 && (!stream || body.ends_with("data: [DONE]\n\n"));
    Some((id, ok))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_filling_disk_every_strict_success_is_in_the_log() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::stream(&["x", "y"], Duration::ZERO)).await;
    let (gw, faults) = Gateway::start_with_faults(&strict(&a, &b, "refuse")).await;
    let (mut succeeded, mut withheld) = (Vec::new(), 0);
    // The disk fills at a different byte in each round, mid-traffic.
    for (round, budget) in [150_000u64, 500_000, 1_200_000, 2_500_000]
        .into_iter()
        .enumerate()
    {
        faults.fail_writes_after(budget);
        let mut tasks = Vec::new();
        for c in 0..8 {
            let gw = &gw;
            tasks.push(async move {
                let mut seen = Vec::new();
                for i in 0..12 {
                    if let Some(s) = one(gw, (c + i + round) % 2 == 0).await {
                        seen.push(s);
                    }
                }
                seen
            });
        }
        for seen in futures_util::future::join_all(tasks).await {
            for (id, ok) in seen {
                if ok {
                    succeeded.push(id);
                } else {
                    withheld += 1;
                }
            }
        }
        eprintln!(
            "disk full after {budget} bytes: {} succeeded, {withheld} not so far",
            succeeded.len()
        );
        faults.return_space();
        assert!(wait_writable(&gw.log).await);
    }
    assert!(withheld > 0, "the disk never filled mid-traffic");
    assert!(!succeeded.is_empty());
    for id in &succeeded {
        let events = gw.events(id);
        let done = events.iter().any(
            |e| matches!(e, Event::RequestCompleted(c) if c.status == 200 && c.error.is_none()),
        );
        assert!(
            matches!(events.first(), Some(Event::RequestReceived(_))) && done,
            "request {id} succeeded but the log has {:?}",
            events.iter().map(Event::kind).collect::<Vec<_>>()
        );
    }
    eprintln!(
        "{} succeeded, all recorded; {withheld} withheld or refused",
        succeeded.len()
    );
    gw.verify();
}
