//! The execution and metrics tools of the MCP server (issue 14): rmcp's client over `/mcp` on an
//! in-process gateway, fake upstreams on 127.0.0.1:0. Every output is checked against the tool's
//! declared schema (`Mcp::ok`); completions are real, recorded and attributed; a simulation
//! touches neither the upstreams nor the flow state, and the next real request follows it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use omniroute_core::event::{Event, ExclusionReason};
use serde_json::{Value, json};
use support::mcp::Mcp;
use support::*;

const BREAKER: &str = "[resilience]\nmax_retries = 0\nbreaker_failures = 3\nbreaker_window_ms = 60000\nbreaker_cooldown_ms = 600000\n";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[tokio::test]
async fn route_request_is_a_recorded_completion_attributed_to_the_key() {
    let a = Fake::start(vec![], Step::ok("hi from a")).await;
    let b = Fake::start(vec![], Step::ok("hi from b")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let (key, entry) = gw
        .engine
        .create_key(
            "agent",
            vec!["execute:completions".into(), "read:usage".into()],
        )
        .await
        .unwrap();
    let mcp = Mcp::connect(&gw, Some(&key)).await;
    let out = mcp
        .ok(
            "omniroute_route_request",
            json!({ "model": "nope", "combo": "ab", "messages": user("hello"), "session": "s-1" }),
        )
        .await;
    assert_eq!(out["content"], "hi from a", "{out}");
    assert_eq!(out["finish_reason"], "stop");
    assert_eq!(
        out["usage"],
        json!({ "prompt_tokens": 10, "completion_tokens": 5 })
    );
    // 10 tokens in at $1/M and 5 out at $2/M.
    assert!(close(out["cost_usd"].as_f64().unwrap(), 0.00002), "{out}");
    assert_eq!(
        out["route"],
        json!({ "provider": "a", "model": "model-a", "attempts": 1, "fallbacks": 0 })
    );
    assert_eq!((a.calls(), b.calls()), (1, 0));

    let id = out["request_id"].as_str().unwrap().to_string();
    gw.completed(&id).await;
    let x = mcp
        .ok("omniroute_explain_route", json!({ "requestId": id }))
        .await;
    assert_eq!(x["explain"]["route"]["combo"], "ab", "{x}");
    let received = gw
        .events(&id)
        .into_iter()
        .find_map(|e| match e {
            Event::RequestReceived(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(received.api_key_id, Some(entry.id));
    assert_eq!(received.session_id.as_deref(), Some("s-1"));
    assert_eq!(received.endpoint, "/v1/chat/completions");
    assert!(!received.stream);

    // Validated like the HTTP path: a bad message is a 4xx naming the field.
    let e = mcp
        .err(
            "omniroute_route_request",
            json!({ "model": "ab", "messages": [{ "role": "robot", "content": "x" }] }),
        )
        .await;
    assert!(e.contains("messages[0].role"), "{e}");
    mcp.close().await;

    let (reader, _) = gw
        .engine
        .create_key("reader", vec!["read:*".into()])
        .await
        .unwrap();
    let mcp = Mcp::connect(&gw, Some(&reader)).await;
    let e = mcp
        .err(
            "omniroute_route_request",
            json!({ "model": "ab", "messages": user("hello") }),
        )
        .await;
    assert!(e.contains("execute:completions"), "{e}");
    let e = mcp
        .err(
            "omniroute_test_combo",
            json!({ "comboId": "ab", "testPrompt": "ping" }),
        )
        .await;
    assert!(e.contains("execute:completions"), "{e}");
    assert_eq!(
        (a.calls(), b.calls()),
        (1, 0),
        "a denied call reaches no upstream"
    );
    mcp.close().await;
}

/// The events after the first `n`.
fn since(gw: &Gateway, n: usize) -> Vec<Event> {
    gw.all_events().into_iter().skip(n).collect()
}

#[tokio::test]
async fn simulate_follows_health_without_touching_it_and_the_next_request_follows_the_plan() {
    let a = Fake::start(vec![], Step::status(500, "down")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let (gw, _clock) =
        Gateway::start_clocked(&two_upstreams(&a, &b, BREAKER), 1_800_000_000_000).await;
    let mcp = Mcp::connect(&gw, None).await;
    let args = json!({ "combo": "ab", "promptTokenEstimate": 1000, "maxTokens": 500 });

    let before = gw.all_events().len();
    let s = mcp.ok("omniroute_simulate_route", args.clone()).await;
    assert_eq!(s["strategy"], "priority", "{s}");
    let plan: Vec<&str> = s["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["model"].as_str().unwrap())
        .collect();
    assert_eq!(plan, ["model-a", "model-b"]);
    // 1000 in and 500 out: a at $1/M and $2/M, b at $0.5/M and $1/M.
    assert!(close(s["plan"][0]["est_cost_usd"].as_f64().unwrap(), 0.002));
    assert!(close(s["best_case_usd"].as_f64().unwrap(), 0.002), "{s}");
    assert!(close(s["worst_case_usd"].as_f64().unwrap(), 0.003), "{s}");
    assert_eq!(s["exclusions"], json!([]));
    assert_eq!(
        (a.calls(), b.calls()),
        (0, 0),
        "a simulation calls no provider"
    );
    let new = since(&gw, before);
    assert!(
        new.iter().all(|e| matches!(e, Event::ToolCalled(_))),
        "a simulation records only its audit record: {new:?}"
    );

    // Three server errors open a's circuit (breaker_failures = 3).
    for _ in 0..3 {
        let r = mcp
            .ok(
                "omniroute_route_request",
                json!({ "model": "ab", "messages": user("x") }),
            )
            .await;
        assert_eq!(r["route"]["model"], "model-b", "{r}");
        assert_eq!(r["route"]["fallbacks"], 1);
    }
    assert_eq!((a.calls(), b.calls()), (3, 3));

    // The provider's metrics show the open circuit, live and in its recorded history.
    let m = mcp
        .ok("omniroute_get_provider_metrics", json!({ "provider": "a" }))
        .await;
    assert_eq!(m["models"][0]["circuit"], "open", "{m}");
    assert_eq!(m["totals"]["errors"], json!({ "server_error": 3 }));
    let history = m["circuit_history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (&last["model"], &last["from"], &last["to"]),
        (&json!("model-a"), &json!("closed"), &json!("open")),
        "{m}"
    );

    let s = mcp.ok("omniroute_simulate_route", args.clone()).await;
    assert_eq!(s["plan"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["plan"][0]["model"], "model-b");
    assert_eq!(s["exclusions"][0]["model"], "model-a", "{s}");
    assert_eq!(s["exclusions"][0]["reason"], "circuit_open");
    assert!(s["exclusions"][0]["until_ms"].as_u64().is_some());
    assert!(close(s["best_case_usd"].as_f64().unwrap(), 0.001), "{s}");
    assert!(close(s["worst_case_usd"].as_f64().unwrap(), 0.001), "{s}");
    // The same simulation again: the dry run changed nothing it read.
    assert_eq!(
        mcp.ok("omniroute_simulate_route", args).await["plan"],
        s["plan"]
    );

    // The real next request follows the simulated plan, as its recorded decision shows.
    let r = mcp
        .ok(
            "omniroute_route_request",
            json!({ "model": "ab", "messages": user("x") }),
        )
        .await;
    assert_eq!((a.calls(), b.calls()), (3, 4));
    let id = r["request_id"].as_str().unwrap();
    let decided = gw
        .events(id)
        .into_iter()
        .find_map(|e| match e {
            Event::RouteDecidedV2(d) => Some(d),
            _ => None,
        })
        .unwrap();
    let d = &decided.decided;
    let recorded: Vec<&str> = d
        .plan
        .iter()
        .map(|&i| d.candidates[usize::from(i)].target.model.as_str())
        .collect();
    assert_eq!(recorded, ["model-b"]);
    assert_eq!(
        d.candidates[0].excluded.as_ref().unwrap().reason,
        ExclusionReason::CircuitOpen
    );

    // Capabilities and the context window exclude with their reasons.
    let s = mcp
        .ok(
            "omniroute_simulate_route",
            json!({ "model": "ab", "promptTokenEstimate": 10, "capabilities": ["vision"] }),
        )
        .await;
    assert_eq!(s["plan"], json!([]), "{s}");
    assert_eq!(s["best_case_usd"], Value::Null);
    let reasons: Vec<&str> = s["exclusions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["capability", "capability"]);
    let s = mcp
        .ok(
            "omniroute_simulate_route",
            json!({ "model": "model-b", "promptTokenEstimate": 200000 }),
        )
        .await;
    assert_eq!(s["exclusions"][0]["reason"], "context_window", "{s}");
    let e = mcp
        .err(
            "omniroute_simulate_route",
            json!({ "model": "nope", "promptTokenEstimate": 10 }),
        )
        .await;
    assert!(e.contains("valid ids: ab, model-a, model-b"), "{e}");
    let e = mcp
        .err(
            "omniroute_simulate_route",
            json!({ "model": "ab", "promptTokenEstimate": 10, "capabilities": ["telepathy"] }),
        )
        .await;
    assert!(e.contains("telepathy"), "{e}");
    mcp.close().await;
}

#[tokio::test]
async fn test_combo_calls_each_target_once() {
    let a = Fake::start(vec![], Step::slow(std::time::Duration::from_millis(300))).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = Mcp::connect(&gw, None).await;
    let t = mcp
        .ok(
            "omniroute_test_combo",
            json!({ "comboId": "ab", "testPrompt": "ping" }),
        )
        .await;
    assert_eq!((a.calls(), b.calls()), (1, 1), "{t}");
    let results = t["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (r, (model, provider)) in results.iter().zip([("model-a", "a"), ("model-b", "b")]) {
        assert_eq!(r["model"], model);
        assert_eq!(r["provider"], provider);
        assert_eq!(r["ok"], true, "{t}");
        assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
        let id = r["request_id"].as_str().unwrap();
        let c = gw.completed(id).await;
        assert_eq!(
            c.target.unwrap().model,
            model,
            "each call went to its target"
        );
    }
    assert!(results[0]["latency_ms"].as_f64().unwrap() >= 300.0, "{t}");
    // a: 10 in at $1/M + 5 out at $2/M; b: half that.
    assert!(close(results[0]["cost_usd"].as_f64().unwrap(), 0.00002));
    assert!(close(results[1]["cost_usd"].as_f64().unwrap(), 0.00001));
    assert_eq!(t["cheapest"], "model-b");
    assert_eq!(t["fastest"], "model-b");
    let e = mcp
        .err(
            "omniroute_test_combo",
            json!({ "comboId": "zz", "testPrompt": "ping" }),
        )
        .await;
    assert!(e.contains("valid combo ids: ab"), "{e}");
    mcp.close().await;
}

#[tokio::test]
async fn provider_metrics_and_the_best_combo_come_from_the_log_and_prices() {
    let a = Fake::start(vec![Step::status(500, "down")], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let extra = r#"
[resilience]
max_retries = 0

[[combos]]
id = "ba"
strategy = "priority"
targets = [{ model = "model-b" }, { model = "model-a" }]
"#;
    let gw = Gateway::start(&two_upstreams(&a, &b, extra)).await;
    for _ in 0..2 {
        let r = gw
            .chat(json!({ "model": "ab", "messages": user("x") }))
            .await;
        assert_eq!(r.status(), 200);
        gw.completed(&rid(&r)).await;
    }
    assert_eq!((a.calls(), b.calls()), (2, 1));
    let mcp = Mcp::connect(&gw, None).await;

    let m = mcp
        .ok("omniroute_get_provider_metrics", json!({ "provider": "a" }))
        .await;
    assert_eq!(m["provider"], "a");
    assert_eq!(m["totals"]["attempts"], 2, "{m}");
    assert_eq!(m["totals"]["ok"], 1);
    assert_eq!(m["totals"]["errors"], json!({ "server_error": 1 }));
    assert_eq!(m["totals"]["latency"]["count"], 2);
    assert!(m["totals"]["latency"]["p95_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(m["models"][0]["model"], "model-a");
    assert_eq!(m["models"][0]["circuit"], "closed");
    assert_eq!(m["circuit_history"], json!([]));
    let e = mcp
        .err("omniroute_get_provider_metrics", json!({ "provider": "c" }))
        .await;
    assert!(e.contains("valid provider ids: a, b"), "{e}");

    // ab has traffic: its mean recorded cost ($0.00001 by b, then $0.00002 by a); ba has none:
    // 1000 prompt tokens and the default 256 out at b's price.
    let best = mcp
        .ok(
            "omniroute_best_combo_for_task",
            json!({ "taskType": "chat" }),
        )
        .await;
    assert_eq!(best["recommendation"]["combo"], "ab", "{best}");
    assert_eq!(best["recommendation"]["cost_source"], "measured");
    assert!(close(
        best["recommendation"]["cost_usd"].as_f64().unwrap(),
        0.000015
    ));
    let ba = &best["alternatives"][0];
    assert_eq!(ba["combo"], "ba", "{best}");
    assert_eq!(ba["cost_source"], "estimated");
    assert!(close(ba["cost_usd"].as_f64().unwrap(), 0.000756), "{ba}");
    assert!(
        ba["verdict"].as_str().unwrap().contains("lost to ab"),
        "{ba}"
    );
    assert!(best["reason"].as_str().unwrap().contains("cheapest"));

    // Without traffic ba cannot be shown to meet a latency constraint.
    let best = mcp
        .ok(
            "omniroute_best_combo_for_task",
            json!({ "taskType": "chat", "budgetConstraint": 0.01, "latencyConstraint": 60000 }),
        )
        .await;
    assert_eq!(best["recommendation"]["combo"], "ab", "{best}");
    assert!(
        best["alternatives"][0]["verdict"]
            .as_str()
            .unwrap()
            .contains("unknown")
    );
    // A budget nothing meets: no recommendation, and why.
    let best = mcp
        .ok(
            "omniroute_best_combo_for_task",
            json!({ "taskType": "chat", "budgetConstraint": 0.000001 }),
        )
        .await;
    assert_eq!(best["recommendation"], Value::Null, "{best}");
    assert_eq!(best["alternatives"].as_array().unwrap().len(), 2);
    assert!(best["reason"].as_str().unwrap().starts_with("no combo"));
    // A task no target can serve.
    let best = mcp
        .ok(
            "omniroute_best_combo_for_task",
            json!({ "taskType": "vision" }),
        )
        .await;
    assert_eq!(best["recommendation"], Value::Null, "{best}");
    assert!(
        best["alternatives"][0]["verdict"]
            .as_str()
            .unwrap()
            .contains("no target can serve"),
        "{best}"
    );
    let e = mcp
        .err(
            "omniroute_best_combo_for_task",
            json!({ "taskType": "poetry" }),
        )
        .await;
    assert!(e.contains("poetry"), "{e}");
    mcp.close().await;
}
