//! The gateway end to end against fake upstreams on 127.0.0.1: retries, fallbacks, cooldowns,
//! timeouts, breakers, streaming, budgets, keys and bad input. Tests count upstream calls and
//! assert each request's event sequence in the log, not only the final status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use omniroute_core::event::{ErrorClass, Event, ExclusionReason};
use serde_json::{Value, json};
use support::*;

const NO_RETRY: &str = "[resilience]\nmax_retries = 0\n";

const FELL_BACK_ONCE: [&str; 8] = [
    "RequestReceived",
    "RouteDecidedV2",
    "AttemptStarted",
    "AttemptFinished",
    "FallbackTriggered",
    "AttemptStarted",
    "AttemptFinished",
    "RequestCompleted",
];

fn attempt_errors(events: &[Event]) -> Vec<Option<ErrorClass>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptFinished(a) => Some(a.error.as_ref().map(|x| x.class)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_on_the_same_target_then_succeeds() {
    let a = Fake::start(vec![Step::status(500, "boom")], Step::ok("hi from a")).await;
    let b = Fake::start(vec![], Step::ok("hi from b")).await;
    let mut gw = Gateway::start(&two_upstreams(
        &a,
        &b,
        "[resilience]\nmax_retries = 1\nbackoff_base_ms = 1\n",
    ))
    .await;
    let resp = gw
        .chat(json!({ "model": "ab", "messages": user("hello"), "temperature": 0.5 }))
        .await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    assert_eq!(resp.headers()["x-omniroute-route"], "a/model-a; attempts=2");
    // The upstream got the client's body with only `model` changed (to the target's name).
    let sent = &a.bodies()[0];
    assert_eq!(
        sent,
        &json!({ "model": "model-a", "messages": user("hello"), "temperature": 0.5 })
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hi from a");
    assert_eq!((a.calls(), b.calls()), (2, 0));
    assert_eq!(
        gw.kinds(&id),
        [
            "RequestReceived",
            "RouteDecidedV2",
            "AttemptStarted",
            "AttemptFinished",
            "AttemptStarted",
            "AttemptFinished",
            "RequestCompleted"
        ]
    );
    assert_eq!(
        attempt_errors(&gw.events(&id)),
        [Some(ErrorClass::ServerError), None]
    );
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_falls_back_and_its_retry_after_is_honoured_as_a_cooldown() {
    let a = Fake::start(
        vec![Step::Json {
            status: 429,
            body: json!({"error": {"message": "slow down"}}),
            retry_after: Some("60".into()),
            delay: Duration::ZERO,
        }],
        Step::ok("a"),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    let r1 = gw
        .chat(json!({ "model": "ab", "messages": user("one") }))
        .await;
    assert_eq!(r1.status(), 200);
    let id1 = rid(&r1);
    let r2 = gw
        .chat(json!({ "model": "ab", "messages": user("two") }))
        .await;
    assert_eq!(r2.status(), 200);
    let id2 = rid(&r2);
    // a was asked once: the second request skipped it while it cools down.
    assert_eq!((a.calls(), b.calls()), (1, 2));
    assert_eq!(gw.kinds(&id1), FELL_BACK_ONCE);
    let ev1 = gw.events(&id1);
    let Event::FallbackTriggered(f) = &ev1[4] else {
        panic!()
    };
    assert_eq!(
        (f.reason, f.from.model.as_str(), f.to.model.as_str()),
        (ErrorClass::RateLimited, "model-a", "model-b")
    );
    let Event::AttemptFinished(af) = &ev1[3] else {
        panic!()
    };
    assert_eq!(af.error.as_ref().unwrap().retry_after_ms, Some(60_000));
    let ev2 = gw.events(&id2);
    let Event::RouteDecidedV2(d) = &ev2[1] else {
        panic!()
    };
    let d = &d.decided;
    assert_eq!(
        d.candidates[0].excluded.as_ref().unwrap().reason,
        ExclusionReason::CoolingDown
    );
    assert_eq!(
        gw.kinds(&id2),
        [
            "RequestReceived",
            "RouteDecidedV2",
            "AttemptStarted",
            "AttemptFinished",
            "RequestCompleted"
        ]
    );
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_falls_back() {
    let a = Fake::start(vec![], Step::slow(Duration::from_secs(3))).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let cfg = two_upstreams(&a, &b, NO_RETRY).replacen("timeout_ms = 2000", "timeout_ms = 200", 1);
    let mut gw = Gateway::start(&cfg).await;
    let resp = gw
        .chat(json!({ "model": "ab", "messages": user("hi") }))
        .await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    assert_eq!((a.calls(), b.calls()), (1, 1));
    gw.completed(&id).await;
    assert_eq!(
        attempt_errors(&gw.events(&id)),
        [Some(ErrorClass::Timeout), None]
    );
    assert_eq!(gw.kinds(&id), FELL_BACK_ONCE);
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_returned_without_fallback() {
    let a = Fake::start(vec![], Step::status(400, "your request is bad")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    let resp = gw
        .chat(json!({ "model": "ab", "messages": user("hi") }))
        .await;
    assert_eq!(resp.status(), 400);
    let id = rid(&resp);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your request is bad"),
        "{body}"
    );
    assert_eq!((a.calls(), b.calls()), (1, 0));
    assert_eq!(
        gw.kinds(&id),
        [
            "RequestReceived",
            "RouteDecidedV2",
            "AttemptStarted",
            "AttemptFinished",
            "RequestCompleted"
        ]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_skips_the_target_and_a_half_open_probe_closes_it() {
    let a = Fake::start(
        vec![
            Step::status(500, "down"),
            Step::status(500, "down"),
            Step::status(500, "down"),
        ],
        Step::ok("a is back"),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let extra = "[resilience]\nmax_retries = 0\nbreaker_failures = 3\nbreaker_window_ms = 60000\nbreaker_cooldown_ms = 300\n";
    let (mut gw, clock) =
        Gateway::start_clocked(&two_upstreams(&a, &b, extra), 1_800_000_000_000).await;
    for _ in 0..3 {
        assert_eq!(
            gw.chat(json!({ "model": "ab", "messages": user("x") }))
                .await
                .status(),
            200
        );
    }
    assert_eq!((a.calls(), b.calls()), (3, 3));
    let opened = gw.all_events().iter().any(|e| matches!(e, Event::CircuitChanged(c) if c.to == omniroute_core::event::CircuitState::Open));
    assert!(opened);
    // Open: a is skipped.
    let r = gw
        .chat(json!({ "model": "ab", "messages": user("x") }))
        .await;
    let ev = gw.events(&rid(&r));
    let Event::RouteDecidedV2(d) = &ev[1] else {
        panic!()
    };
    let d = &d.decided;
    assert_eq!(
        d.candidates[0].excluded.as_ref().unwrap().reason,
        ExclusionReason::CircuitOpen
    );
    assert_eq!((a.calls(), b.calls()), (3, 4));
    // Still open a moment before the cooldown ends (the flow's clock is the test's).
    clock.advance(299);
    let r = gw
        .chat(json!({ "model": "ab", "messages": user("x") }))
        .await;
    assert_eq!(r.headers()["x-omniroute-route"], "b/model-b; attempts=1");
    assert_eq!((a.calls(), b.calls()), (3, 5));
    // After the cooldown, one probe goes to a and closes the circuit.
    clock.advance(1);
    let r = gw
        .chat(json!({ "model": "ab", "messages": user("x") }))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "a is back");
    assert_eq!((a.calls(), b.calls()), (4, 5));
    let changes: Vec<(String, String)> = gw
        .all_events()
        .iter()
        .filter_map(|e| match e {
            Event::CircuitChanged(c) => Some((format!("{:?}", c.from), format!("{:?}", c.to))),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("Closed".into(), "Open".into()),
            ("Open".into(), "HalfOpen".into()),
            ("HalfOpen".into(), "Closed".into())
        ]
    );
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_targets_failing_gives_503_with_every_reason() {
    let a = Fake::start(vec![], Step::status(500, "a exploded")).await;
    let b = Fake::start(vec![], Step::status(503, "b is overloaded")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    let resp = gw
        .chat(json!({ "model": "ab", "messages": user("hi") }))
        .await;
    assert_eq!(resp.status(), 503);
    let id = rid(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "all_targets_failed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("a exploded") && msg.contains("b is overloaded"),
        "{msg}"
    );
    assert!(
        msg.contains("ServerError") && msg.contains("Overloaded"),
        "{msg}"
    );
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(gw.kinds(&id), FELL_BACK_ONCE);
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_reach_the_client_before_the_upstream_finishes() {
    let a = Fake::start(
        vec![],
        Step::stream(&["Hel", "lo", " world"], Duration::from_millis(600)),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    let started = Instant::now();
    let resp = gw
        .chat(json!({ "model": "ab", "stream": true, "messages": user("hi") }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let id = rid(&resp);
    let (first, frames) = read_sse(resp, started).await;
    let total = started.elapsed();
    // The upstream needs 1.2 s for the whole stream; the first chunk is not held back for it.
    assert!(total >= Duration::from_millis(1_200), "{total:?}");
    assert!(
        first < Duration::from_millis(600),
        "first chunk after {first:?}"
    );
    let text = streamed_text(&frames);
    assert_eq!(text, "Hello world");
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    // The client did not ask for usage, so the usage-only chunk is not passed on...
    assert!(!frames.iter().any(|f| f.contains("\"usage\"")));
    // ...but it was captured.
    gw.completed(&id).await;
    let ev = gw.events(&id);
    let Some(Event::RequestCompleted(rc)) = ev.last() else {
        panic!()
    };
    assert_eq!((rc.tokens.input, rc.tokens.output), (10, 3));
    assert!(rc.ttft_us.unwrap() < 600_000);
    // The upstream was asked for usage.
    assert_eq!(a.bodies()[0]["stream_options"]["include_usage"], true);
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_fails_over_before_the_first_byte() {
    let silent = Step::Stream {
        frames: vec![(Duration::from_secs(3), chunk("too late"))],
        cut: false,
    };
    let a = Fake::start(vec![], silent).await;
    let b = Fake::start(vec![], Step::stream(&["from ", "b"], Duration::ZERO)).await;
    let extra = "[resilience]\nmax_retries = 0\nttft_timeout_ms = 300\n";
    let mut gw = Gateway::start(&two_upstreams(&a, &b, extra)).await;
    let started = Instant::now();
    let resp = gw
        .chat(json!({ "model": "ab", "stream": true, "messages": user("hi") }))
        .await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let (_, frames) = read_sse(resp, started).await;
    let all = frames.join("\n");
    assert!(all.contains("from ") && !all.contains("too late"), "{all}");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    gw.completed(&id).await;
    assert_eq!(
        attempt_errors(&gw.events(&id)),
        [Some(ErrorClass::Timeout), None]
    );
    assert_eq!(gw.kinds(&id), FELL_BACK_ONCE);
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_ends_with_an_in_band_error_and_is_recorded() {
    let cut = Step::Stream {
        frames: vec![
            (Duration::ZERO, chunk("partial ")),
            (Duration::from_millis(50), chunk("answer")),
        ],
        cut: true,
    };
    let a = Fake::start(vec![], cut).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    let started = Instant::now();
    let resp = gw
        .chat(json!({ "model": "ab", "stream": true, "messages": user("hi") }))
        .await;
    let id = rid(&resp);
    let (_, frames) = read_sse(resp, started).await;
    assert!(frames[0].contains("partial"));
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut");
    assert!(!frames.iter().any(|f| f == "[DONE]"));
    // Nothing was retried or moved after bytes reached the client.
    assert_eq!((a.calls(), b.calls()), (1, 0));
    // The in-band error reaches the client before the completion is recorded.
    gw.completed(&id).await;
    let ev = gw.events(&id);
    assert_eq!(attempt_errors(&ev), [Some(ErrorClass::StreamCut)]);
    assert_eq!(
        gw.kinds(&id),
        [
            "RequestReceived",
            "RouteDecidedV2",
            "AttemptStarted",
            "AttemptFinished",
            "RequestCompleted"
        ]
    );
    let Some(Event::RequestCompleted(rc)) = ev.last() else {
        panic!()
    };
    assert_eq!(rc.error.as_ref().unwrap().code, "stream_cut");
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_errors_and_records_nothing_wrongly() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    let head = gw.log.sync().unwrap();
    let url = format!("{}/v1/chat/completions", gw.url);
    let send = |body: Vec<u8>| {
        let url = url.clone();
        async move {
            let r = Gateway::client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let cases: Vec<(Vec<u8>, u16, Option<&str>)> = vec![
        (b"{not json".to_vec(), 400, None),
        (br#"{"model":"ab"}"#.to_vec(), 400, Some("messages")),
        (vec![b'{', 0xff, 0xfe, b'}'], 400, None),
        (
            br#"{"model":"ab","messages":"hi"}"#.to_vec(),
            400,
            Some("messages"),
        ),
        (
            br#"{"model":3,"messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            400,
            Some("model"),
        ),
        (
            br#"{"model":"ab","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#.to_vec(),
            400,
            Some("stream"),
        ),
        (
            br#"{"model":"ab","messages":[{"role":"user","content":"x"}],"bogus":1}"#.to_vec(),
            400,
            Some("bogus"),
        ),
        (
            br#"{"model":"ab","messages":[{"role":"wizard","content":"x"}]}"#.to_vec(),
            400,
            Some("messages[0].role"),
        ),
        (
            br#"{"model":"ab","messages":[{"role":"user","content":"x"}],"max_tokens":-5}"#
                .to_vec(),
            400,
            Some("max_tokens"),
        ),
        (
            format!(
                r#"{{"model":"ab","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(70_000)
            )
            .into_bytes(),
            413,
            None,
        ),
    ];
    for (body, status, param) in cases {
        let (got, v) = send(body).await;
        assert_eq!(got, status, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(
            v["error"]["type"].is_string() && v["error"].get("code").is_some(),
            "{v}"
        );
        assert_eq!(v["error"]["param"].as_str(), param, "{v}");
    }
    // Rejected before the engine: nothing was recorded, no upstream was called.
    assert_eq!(gw.log.committed_seq(), head);
    assert_eq!(gw.log.sync().unwrap(), head);
    // An unknown model is a request: recorded, answered 404, no upstream call.
    let (status, v) =
        send(br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#.to_vec()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert_eq!((a.calls(), b.calls()), (0, 0));
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_health() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, NO_RETRY)).await;
    let v: Value = Gateway::client()
        .get(format!("{}/v1/models", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["model-a", "model-b", "ab"]);
    let h: Value = Gateway::client()
        .get(format!("{}/api/health", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["targets"][0]["circuit"], "closed");
    assert!(h["log"]["head"]["seq"].as_u64().unwrap() >= 1);
    gw.stop().await;
}
