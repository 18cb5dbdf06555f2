//! Budgets (block, degrade, alert; no overspend under concurrency), API keys, and the Anthropic
//! provider, end to end against fake upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use omniroute_core::event::{BudgetAction, Event, Hash32, KeyCreated};
use serde_json::{Value, json};
use support::*;

/// A data dir whose log already holds one API key.
fn dir_with_key(key: &str, name: &str, scope: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = omniroute_core::log::Log::open(dir.path()).unwrap();
    let ev = Event::KeyCreated(Box::new(KeyCreated {
        key_id: Hash32::of(key.as_bytes()),
        name: name.into(),
        scopes: vec![scope.into()],
    }));
    log.append(&ev).unwrap().wait().unwrap();
    dir
}

async fn set_budget(gw: &Gateway, session: &str, body: Value) -> reqwest::Response {
    Gateway::client()
        .post(format!("{}/api/sessions/{session}/budget", gw.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn chat_in(gw: &Gateway, session: &str, model: &str) -> reqwest::Response {
    Gateway::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-omniroute-session", session)
        .json(&json!({ "model": model, "max_tokens": 100, "messages": user("0123456789012345") }))
        .send()
        .await
        .unwrap()
}

/// model-a: 1 USD/1M in, 2 USD/1M out; a request here estimates 8 prompt tokens + 100 output:
/// worst case 8 + 200 = 208 µ$. The fake answers 10 prompt + 5 completion tokens: 20 µ$.
const WORST_A: u64 = 208;
const ACTUAL_A: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_overspend_a_block_guard() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, "[[combos]]\nid = \"only-a\"\nstrategy = \"priority\"\ntargets = [{ model = \"model-a\" }]\n")).await;
    // 0.001 USD = 1000 µ$: room for a few requests' worst case, far fewer than 200.
    let r = set_budget(
        &gw,
        "s1",
        json!({ "max_cost_usd": 0.001, "action": "block" }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let gw = Arc::clone(&gw);
        tasks.push(tokio::spawn(async move {
            chat_in(&gw, "s1", "only-a").await.status().as_u16()
        }));
    }
    let mut ok = 0u64;
    let mut blocked = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => blocked += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok + blocked, 200);
    assert!(ok >= 1 && blocked >= 1, "ok {ok} blocked {blocked}");
    let g = gw.engine.guard("s1").unwrap();
    assert_eq!(g.reserved_micros, 0, "every reservation was settled");
    assert_eq!(g.spent_micros, ok * ACTUAL_A);
    assert!(g.spent_micros <= g.limit_micros + WORST_A, "{g:?}");
    // Every success called the upstream once. Under heavy load an attempt can also time out (2 s)
    // and its retry then be blocked by the guard: a call without a success.
    assert!(a.calls() as u64 >= ok, "{} calls, {ok} ok", a.calls());
    let exceeded = gw
        .all_events()
        .iter()
        .filter(|e| matches!(e, Event::BudgetExceeded(b) if b.action == BudgetAction::Block))
        .count();
    assert_eq!(exceeded as u64, blocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_degrade_and_alert_behave_as_specified() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    // A zero budget: every request exceeds it.
    set_budget(
        &gw,
        "blk",
        json!({ "max_cost_usd": 0.0, "action": "block" }),
    )
    .await;
    let r = chat_in(&gw, "blk", "ab").await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded");
    assert_eq!((a.calls(), b.calls()), (0, 0));

    // Degrade to tier 1: model-a (tier 2) is excluded for budget, model-b (tier 1) serves. The
    // degraded worst case must fit, so the budget allows model-b but not model-a.
    set_budget(
        &gw,
        "deg",
        json!({ "max_cost_usd": 0.00015, "action": "degrade", "degrade_to_tier": 1 }),
    )
    .await;
    let r = chat_in(&gw, "deg", "ab").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-omniroute-route"], "b/model-b; attempts=1");
    let ev = gw.events(&rid(&r));
    let Some(Event::RouteDecidedV2(d)) = ev.iter().find(|e| matches!(e, Event::RouteDecidedV2(_)))
    else {
        panic!()
    };
    let d = &d.decided;
    assert_eq!(
        d.candidates[0].excluded.as_ref().unwrap().reason,
        omniroute_core::event::ExclusionReason::Budget
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::BudgetExceeded(b) if b.outcome == "degraded to tier 1"))
    );

    set_budget(
        &gw,
        "alr",
        json!({ "max_cost_usd": 0.0, "action": "alert" }),
    )
    .await;
    let r = chat_in(&gw, "alr", "ab").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-omniroute-budget"], "exceeded");
    assert!(
        gw.events(&rid(&r))
            .iter()
            .any(|e| matches!(e, Event::BudgetExceeded(b) if b.outcome == "served with alert"))
    );

    // Bad budget bodies are refused.
    let r = set_budget(&gw, "x", json!({ "max_cost_usd": -1, "action": "block" })).await;
    assert_eq!(r.status(), 400);
    let r = set_budget(&gw, "x", json!({ "max_cost_usd": 1, "action": "degrade" })).await;
    assert_eq!(r.status(), 400);
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_the_api_needs_a_bearer_token() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let key = "omr-test-key-0123456789";
    let dir = dir_with_key(key, "t", "execute:completions");
    let mut gw = Gateway::start_in(&two_upstreams(&a, &b, ""), dir).await;
    let body = json!({ "model": "ab", "messages": user("hi") });
    let url = format!("{}/v1/chat/completions", gw.url);
    let r = Gateway::client()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = Gateway::client()
        .post(&url)
        .bearer_auth("omr-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = Gateway::client()
        .post(&url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ev = gw.events(&rid(&r));
    let Event::RequestReceived(rr) = &ev[0] else {
        panic!()
    };
    assert_eq!(rr.api_key_id, Some(Hash32::of(key.as_bytes())));
    assert_eq!(a.calls(), 1);
    gw.stop().await;
}

fn anthropic_config(fake: &Fake) -> String {
    format!(
        r#"
[[providers]]
id = "anth"
kind = "anthropic"
base_url = "{}"

[[models]]
id = "claude"
provider = "anth"
upstream = "claude-3-5-haiku-latest"
price = {{ input = 0.8, output = 4.0, cached_read = 0.08, cache_write = 1.0 }}
"#,
        fake.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_is_translated_both_ways_with_cache_tokens_in_their_buckets() {
    let reply = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-latest",
        "content": [{ "type": "text", "text": "Bonjour" }],
        "stop_reason": "end_turn",
        "usage": { "input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7 }
    });
    let fake = Fake::start(
        vec![],
        Step::Json {
            status: 200,
            body: reply,
            retry_after: None,
            delay: std::time::Duration::ZERO,
        },
    )
    .await;
    let mut gw = Gateway::start(&anthropic_config(&fake)).await;
    let r = gw.chat(json!({ "model": "claude", "messages": [{ "role": "system", "content": "be brief" }, { "role": "user", "content": "hello" }] })).await;
    assert_eq!(r.status(), 200);
    let id = rid(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(v["usage"]["prompt_tokens"], 119);
    let sent = &fake.bodies()[0];
    assert_eq!(sent["model"], "claude-3-5-haiku-latest");
    assert_eq!(sent["system"], "be brief");
    let ev = gw.events(&id);
    let Some(Event::RequestCompleted(rc)) = ev.last() else {
        panic!()
    };
    assert_eq!(
        (
            rc.tokens.input,
            rc.tokens.cached_read,
            rc.tokens.cache_write,
            rc.tokens.output
        ),
        (12, 100, 7, 3)
    );
    // 12*0.8 + 100*0.08 + 7*1.0 + 3*4.0 = 36.6 µ$ -> 37
    assert_eq!(rc.cost, omniroute_core::event::Cost::Micros(37));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streams_are_translated_to_openai_chunks() {
    let ev = |name: &str, data: Value| {
        (
            std::time::Duration::ZERO,
            format!("event: {name}\ndata: {data}\n\n"),
        )
    };
    let frames = vec![
        ev(
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":9,"output_tokens":1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}),
        ),
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        ev(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}),
        ),
        ev("message_stop", json!({"type":"message_stop"})),
    ];
    let fake = Fake::start(vec![], Step::Stream { frames, cut: false }).await;
    let mut gw = Gateway::start(&anthropic_config(&fake)).await;
    let started = std::time::Instant::now();
    let r = gw
        .chat(json!({ "model": "claude", "stream": true, "messages": user("hello") }))
        .await;
    let id = rid(&r);
    let (_, frames) = read_sse(r, started).await;
    let text = streamed_text(&frames);
    assert_eq!(text, "Hi there");
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    gw.completed(&id).await;
    let ev = gw.events(&id);
    let Some(Event::RequestCompleted(rc)) = ev.last() else {
        panic!()
    };
    assert_eq!((rc.tokens.input, rc.tokens.output), (9, 4));
    gw.stop().await;
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_guards_and_spending_survive_a_restart() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    set_budget(
        &gw,
        "keep",
        json!({ "max_cost_usd": 0.01, "action": "block" }),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(chat_in(&gw, "keep", "ab").await.status(), 200);
    }
    let before = gw.engine.guard("keep").unwrap();
    assert_eq!(before.spent_micros, 3 * ACTUAL_A);
    let mut gw = gw.restart().await;
    let after = gw.engine.guard("keep").unwrap();
    assert_eq!(
        (
            after.limit_micros,
            after.spent_micros,
            after.reserved_micros
        ),
        (10_000, 3 * ACTUAL_A, 0)
    );
    assert_eq!(after.action, BudgetAction::Block);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_the_completions_scope_is_refused_chat_but_may_list_models() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let key = "omr-readonly-key";
    let dir = dir_with_key(key, "ro", "read:*");
    let mut gw = Gateway::start_in(&two_upstreams(&a, &b, ""), dir).await;
    let r = Gateway::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .json(&json!({ "model": "ab", "messages": user("hi") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = Gateway::client()
        .get(format!("{}/v1/models", gw.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.calls(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_stored_content_addressed_only_when_asked() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    for store in [false, true] {
        let mut gw = Gateway::start(&two_upstreams(
            &a,
            &b,
            &format!("[log]\nstore_bodies = {store}\n"),
        ))
        .await;
        let raw = r#"{"model":"ab","messages":[{"role":"user","content":"keep me"}]}"#;
        let r = Gateway::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ev = gw.events(&rid(&r));
        let Event::RequestReceived(rr) = &ev[0] else {
            panic!()
        };
        assert_eq!(rr.body_hash, Hash32::of(raw.as_bytes()));
        assert_eq!(rr.body_stored, store);
        let blob = gw.log.reader().unwrap().blob(&rr.body_hash).unwrap();
        assert_eq!(
            blob.as_deref(),
            if store { Some(raw.as_bytes()) } else { None }
        );
        gw.stop().await;
    }
}
