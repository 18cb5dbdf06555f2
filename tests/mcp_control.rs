//! The MCP control tools (issue 14): rmcp's client against `/mcp` on an in-process gateway with
//! fake upstreams. Each write is checked three ways: the read tools see it, the gateway then
//! routes (or retries, or budgets) differently, and the log holds it as the right event with the
//! caller as actor. A caller without the scope gets a tool error naming it and nothing changes;
//! bad input is a tool error naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use omniroute_core::event::{
    BudgetAction, ConfigChangeKind, ConfigChangedV2, Event, RouteDecided, Strategy,
};
use serde_json::{Value, json};
use support::mcp::Mcp;
use support::*;

const TOOLS: [&str; 5] = [
    "omniroute_switch_combo",
    "omniroute_set_routing_strategy",
    "omniroute_check_quota",
    "omniroute_set_budget_guard",
    "omniroute_set_resilience_profile",
];

/// The runtime config changes in the log (not the start-up's).
fn config_changes(gw: &Gateway) -> Vec<ConfigChangedV2> {
    gw.all_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ConfigChangedV2(c) if c.kind != ConfigChangeKind::Loaded => Some(*c),
            _ => None,
        })
        .collect()
}

/// The recorded decision of one request.
fn decision(gw: &Gateway, rid: &str) -> RouteDecided {
    gw.events(rid)
        .into_iter()
        .find_map(|e| match e {
            Event::RouteDecidedV2(d) => Some(d.decided),
            _ => None,
        })
        .unwrap()
}

/// A chat on combo `ab`: (status, the target that answered, request id).
async fn chat_ab(gw: &Gateway) -> (u16, String, String) {
    let r = gw
        .chat(json!({ "model": "ab", "messages": user("hello") }))
        .await;
    let status = r.status().as_u16();
    let route = r
        .headers()
        .get("x-omniroute-route")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let id = rid(&r);
    gw.completed(&id).await;
    (status, route, id)
}

#[tokio::test]
async fn switching_a_combo_is_recorded_seen_and_enforced() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = Mcp::connect(&gw, None).await;
    for t in TOOLS {
        assert!(mcp.tool(t).output_schema.is_some(), "{t}");
    }
    // Closed sets are enums in the input schemas, so an agent sees the valid values.
    for (tool, values) in [
        (
            "omniroute_set_routing_strategy",
            ["priority", "round-robin", "tiered"],
        ),
        ("omniroute_set_budget_guard", ["block", "degrade", "alert"]),
        (
            "omniroute_set_resilience_profile",
            ["aggressive", "balanced", "conservative"],
        ),
    ] {
        let schema = serde_json::to_string(&mcp.tool(tool).input_schema).unwrap();
        for v in values {
            assert!(schema.contains(&format!("\"{v}\"")), "{tool}: {schema}");
        }
    }

    let before = gw.engine.config().version().to_string();
    let out = mcp
        .ok(
            "omniroute_switch_combo",
            json!({ "comboId": "ab", "active": false }),
        )
        .await;
    assert_eq!(out["combo"]["id"], "ab");
    assert_eq!(out["combo"]["active"], false);
    assert_eq!(out["combo"]["strategy"], "priority");
    assert_eq!(
        out["combo"]["targets"],
        json!([{ "model": "model-a", "provider": "a", "weight": 1 },
               { "model": "model-b", "provider": "b", "weight": 1 }])
    );
    let version = out["config_version"].as_str().unwrap().to_string();
    assert_ne!(version, before);
    // Durable before the answer: the log holds it now, without waiting.
    let changes = config_changes(&gw);
    assert_eq!(changes.len(), 1);
    let c = &changes[0];
    assert_eq!(c.kind, ConfigChangeKind::ComboSwitched);
    assert_eq!(c.config_version.to_string(), version);
    assert_eq!(c.previous_version.unwrap().to_string(), before);
    assert_eq!(c.changes[0].path, "combos.ab.active");
    assert!(
        c.actor.contains("owner") || c.actor.contains("loopback"),
        "{}",
        c.actor
    );

    let combos = mcp.ok("omniroute_list_combos", json!({})).await;
    assert_eq!(combos["combos"][0]["active"], false, "{combos}");
    let h = mcp.ok("omniroute_get_health", json!({})).await;
    assert_eq!(h["config_version"], version.as_str());
    let r = gw
        .chat(json!({ "model": "ab", "messages": user("hello") }))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "combo_inactive");
    assert_eq!((a.calls(), b.calls()), (0, 0));

    mcp.ok(
        "omniroute_switch_combo",
        json!({ "comboId": "ab", "active": true }),
    )
    .await;
    let (status, _, _) = chat_ab(&gw).await;
    assert_eq!(status, 200);

    // An unknown combo names the field and the valid combos; nothing is recorded.
    let e = mcp
        .err(
            "omniroute_switch_combo",
            json!({ "comboId": "nope", "active": true }),
        )
        .await;
    assert!(e.contains("comboId") && e.contains("ab"), "{e}");
    assert_eq!(config_changes(&gw).len(), 2);
    mcp.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_strategy_and_weights_change_the_next_route() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = Mcp::connect(&gw, None).await;

    let (_, route, id) = chat_ab(&gw).await;
    assert!(route.starts_with("a/model-a"), "{route}");
    assert_eq!(decision(&gw, &id).strategy, Strategy::Priority);

    // `cost`: model-b is the cheaper, so it leads, deterministically.
    let out = mcp
        .ok(
            "omniroute_set_routing_strategy",
            json!({ "comboId": "ab", "strategy": "cost" }),
        )
        .await;
    assert_eq!(out["combo"]["strategy"], "cost");
    let (_, route, id) = chat_ab(&gw).await;
    assert!(route.starts_with("b/model-b"), "{route}");
    let d = decision(&gw, &id);
    assert_eq!(d.strategy, Strategy::Cost);
    assert_eq!(d.config_version.to_string(), out["config_version"]);

    // `weighted` with model-a at 0: model-b is drawn first every time.
    let out = mcp
        .ok(
            "omniroute_set_routing_strategy",
            json!({ "comboId": "ab", "strategy": "weighted", "weights": { "model-a": 0, "model-b": 3 } }),
        )
        .await;
    assert_eq!(out["combo"]["targets"][0]["weight"], 0, "{out}");
    assert_eq!(out["combo"]["targets"][1]["weight"], 3, "{out}");
    let listed = mcp.ok("omniroute_list_combos", json!({})).await;
    assert_eq!(listed["combos"][0]["strategy"], "weighted", "{listed}");
    for _ in 0..5 {
        let (_, route, id) = chat_ab(&gw).await;
        assert!(route.starts_with("b/model-b"), "{route}");
        assert_eq!(decision(&gw, &id).strategy, Strategy::Weighted);
    }
    let changes = config_changes(&gw);
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|c| c.kind == ConfigChangeKind::StrategySet)
    );
    let paths: Vec<&str> = changes[1].changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["combos.ab.strategy", "combos.ab.targets"]);

    // Bad weights and unknown combos name the field; nothing changes.
    let version = gw.engine.config().version();
    for (args, field, also) in [
        (
            json!({ "comboId": "ab", "strategy": "weighted", "weights": { "model-z": 1 } }),
            "weights",
            "model-a, model-b",
        ),
        (
            json!({ "comboId": "ab", "strategy": "weighted", "weights": { "model-a": 0, "model-b": 0 } }),
            "weights",
            "above 0",
        ),
        (
            json!({ "comboId": "ab", "strategy": "priority", "weights": { "model-a": 2 } }),
            "weights",
            "weighted",
        ),
        (
            json!({ "comboId": "zz", "strategy": "priority" }),
            "comboId",
            "ab",
        ),
    ] {
        let e = mcp
            .err("omniroute_set_routing_strategy", args.clone())
            .await;
        assert!(e.contains(field) && e.contains(also), "{args}: {e}");
    }
    assert_eq!(gw.engine.config().version(), version);
    assert_eq!(config_changes(&gw).len(), 2);

    // An unknown strategy is refused before the tool runs, with the valid values.
    let r = mcp
        .client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("omniroute_set_routing_strategy")
                .with_arguments(
                    json!({ "comboId": "ab", "strategy": "fastest" })
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
        )
        .await;
    let text = support::mcp::error_text(&r.unwrap());
    assert!(
        text.contains("strategy: unknown variant `fastest`") && text.contains("round-robin"),
        "{text}"
    );
    assert_eq!(gw.engine.config().version(), version);
    mcp.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_resilience_profile_changes_how_often_a_failing_target_is_retried() {
    // model-a always fails with a 500 (retryable on the same target); model-b answers.
    let a = Fake::start(vec![], Step::status(500, "boom")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = Mcp::connect(&gw, None).await;

    let out = mcp
        .ok(
            "omniroute_set_resilience_profile",
            json!({ "profile": "aggressive" }),
        )
        .await;
    assert_eq!(out["profile"], "aggressive");
    assert_eq!(out["max_retries"], 0);
    assert_eq!(out["breaker_failures"], 3);
    let (status, route, _) = chat_ab(&gw).await;
    assert_eq!(status, 200);
    assert!(route.starts_with("b/model-b"), "{route}");
    assert_eq!(a.calls(), 1, "aggressive: no retry");

    let out = mcp
        .ok(
            "omniroute_set_resilience_profile",
            json!({ "profile": "conservative" }),
        )
        .await;
    assert_eq!(out["max_retries"], 2);
    assert_eq!(out["breaker_failures"], 10);
    assert_eq!(out["ttft_timeout_ms"], 30_000);
    let (status, _, _) = chat_ab(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(
        a.calls(),
        1 + 3,
        "conservative: the first call and 2 retries"
    );

    let h = mcp.ok("omniroute_get_health", json!({})).await;
    assert_eq!(h["config_version"], out["config_version"]);
    let e = mcp
        .err(
            "omniroute_set_resilience_profile",
            json!({ "profile": "reckless" }),
        )
        .await;
    assert!(
        e.contains("profile: unknown variant") && e.contains("conservative"),
        "{e}"
    );
    let changes = config_changes(&gw);
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|c| c.kind == ConfigChangeKind::ResilienceProfile)
    );
    assert!(
        changes[1]
            .changes
            .iter()
            .any(|c| c.path == "resilience.max_retries"
                && c.from.as_deref() == Some("0")
                && c.to.as_deref() == Some("2")),
        "{:?}",
        changes[1].changes
    );
    mcp.close().await;
    gw.stop().await;
}

async fn chat_in(gw: &Gateway, session: &str) -> reqwest::Response {
    Gateway::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-omniroute-session", session)
        .json(&json!({ "model": "ab", "max_tokens": 100, "messages": user("0123456789012345") }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_budget_guard_set_over_mcp_is_what_the_gateway_enforces() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = Mcp::connect(&gw, None).await;

    let g = mcp
        .ok(
            "omniroute_set_budget_guard",
            json!({ "sessionId": "blk", "maxCostUsd": 0.0, "action": "block" }),
        )
        .await;
    assert_eq!(g["session_id"], "blk");
    assert_eq!(g["limit_usd"], 0.0);
    assert_eq!(g["spent_usd"], 0.0);
    assert_eq!(g["action"], "block");
    assert_eq!(g["degrade_to_tier"], Value::Null);
    let r = chat_in(&gw, "blk").await;
    assert_eq!(r.status(), 429);
    assert_eq!((a.calls(), b.calls()), (0, 0));

    // Degrade to tier 1: model-a (tier 2) does not fit the budget, model-b (tier 1) serves.
    let g = mcp
        .ok(
            "omniroute_set_budget_guard",
            json!({ "sessionId": "deg", "maxCostUsd": 0.00015, "action": "degrade", "degradeToTier": 1 }),
        )
        .await;
    assert_eq!(g["limit_usd"], 0.00015);
    assert_eq!(g["degrade_to_tier"], 1);
    let r = chat_in(&gw, "deg").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-omniroute-route"], "b/model-b; attempts=1");

    let guards: Vec<_> = gw
        .all_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::BudgetGuardSet(g) => Some(*g),
            _ => None,
        })
        .collect();
    assert_eq!(guards.len(), 2);
    assert_eq!(guards[0].action, BudgetAction::Block);
    assert_eq!(guards[1].session_id, "deg");
    assert_eq!(guards[1].degrade_to_tier, Some(1));

    // Bad input names the field; nothing is recorded.
    for (args, field) in [
        (
            json!({ "sessionId": "x", "maxCostUsd": -1.0, "action": "block" }),
            "maxCostUsd",
        ),
        (
            json!({ "sessionId": "x", "maxCostUsd": 1.0, "action": "degrade" }),
            "degradeToTier",
        ),
        (
            json!({ "sessionId": "x", "maxCostUsd": 1.0, "action": "degrade", "degradeToTier": 7 }),
            "degradeToTier",
        ),
        (
            json!({ "sessionId": "", "maxCostUsd": 1.0, "action": "block" }),
            "sessionId",
        ),
        (
            json!({ "sessionId": "x", "maxCostUsd": 1.0, "action": "panic" }),
            "action: unknown variant",
        ),
    ] {
        let e = mcp.err("omniroute_set_budget_guard", args.clone()).await;
        assert!(e.contains(field), "{args}: {e}");
    }
    assert!(gw.engine.guard("x").is_none());
    mcp.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn quota_reports_the_window_usage_limits_and_cooldowns() {
    // 2026-02-14T13:00:00Z
    let start = 1_771_074_000_000;
    let a = Fake::start(vec![], Step::status(429, "slow down")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let toml = two_upstreams(&a, &b, "").replace(
        "id = \"b\"\nkind = \"openai\"",
        "id = \"b\"\nkind = \"openai\"\nquota = { requests = 4, tokens = 60, usd = 0.0001, window = \"day\" }",
    );
    let (mut gw, clock) = Gateway::start_clocked(&toml, start).await;
    let mcp = Mcp::connect(&gw, None).await;

    // model-a is rate limited (cooling down for the balanced default of 5 s); model-b serves
    // 10 prompt + 5 completion tokens at 0.5 and 1.0 USD/1M: 10 µ$.
    let (status, route, _) = chat_ab(&gw).await;
    assert_eq!(status, 200);
    assert!(route.starts_with("b/model-b"), "{route}");

    let q = mcp.ok("omniroute_check_quota", json!({})).await;
    assert_eq!(q["now_ms"], start);
    let ps = q["providers"].as_array().unwrap();
    assert_eq!(ps.len(), 2, "{q}");
    let pa = &ps[0];
    assert_eq!(pa["provider"], "a");
    assert_eq!(pa["configured"], false);
    assert_eq!(
        pa["limits"],
        json!({ "requests": null, "tokens": null, "usd": null })
    );
    assert_eq!(pa["used"]["requests"], 1, "{pa}");
    assert_eq!(pa["cooldown_until_ms"], start + 5_000, "{pa}");
    assert_eq!(pa["cooldown_until"], "2026-02-14T13:00:05.000Z");

    let pb = mcp
        .ok("omniroute_check_quota", json!({ "provider": "b" }))
        .await;
    assert_eq!(pb["providers"].as_array().unwrap().len(), 1);
    let pb = &pb["providers"][0];
    assert_eq!(pb["configured"], true);
    assert_eq!(pb["window"], "day");
    assert_eq!(
        pb["used"],
        json!({ "requests": 1, "tokens": 15, "usd": 0.00001 })
    );
    assert_eq!(pb["limits"]["requests"], 4);
    assert_eq!(pb["percent_remaining"]["requests"], 75.0);
    assert_eq!(pb["percent_remaining"]["tokens"], 75.0);
    assert_eq!(pb["percent_remaining"]["usd"], 90.0);
    assert_eq!(pb["resets_at"], "2026-02-15T00:00:00.000Z");
    assert_eq!(pb["resets_at_ms"], 1_771_113_600_000u64);
    assert_eq!(pb["cooldown_until_ms"], Value::Null);

    // The cooldown ends and a new day starts: nothing used in this window.
    clock.advance(11 * 3_600_000);
    let q = mcp
        .ok("omniroute_check_quota", json!({ "provider": "b" }))
        .await;
    let pb = &q["providers"][0];
    assert_eq!(pb["used"]["requests"], 0, "{pb}");
    assert_eq!(pb["percent_remaining"]["requests"], 100.0);
    assert_eq!(pb["resets_at"], "2026-02-16T00:00:00.000Z");
    let q = mcp
        .ok("omniroute_check_quota", json!({ "provider": "a" }))
        .await;
    assert_eq!(q["providers"][0]["cooldown_until_ms"], Value::Null);

    let e = mcp
        .err("omniroute_check_quota", json!({ "provider": "zz" }))
        .await;
    assert!(e.contains("provider") && e.contains("a, b"), "{e}");
    mcp.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn writes_need_their_scope_and_name_the_caller() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let (reader, _) = gw
        .engine
        .create_key("reader", vec!["read:*".into()])
        .await
        .unwrap();
    let (writer, _) = gw
        .engine
        .create_key("ops-agent", vec!["write:*".into(), "read:quota".into()])
        .await
        .unwrap();
    let version = gw.engine.config().version();

    let mcp = Mcp::connect(&gw, Some(&reader)).await;
    for (tool, args, scope) in [
        (
            "omniroute_switch_combo",
            json!({ "comboId": "ab", "active": false }),
            "write:combos",
        ),
        (
            "omniroute_set_routing_strategy",
            json!({ "comboId": "ab", "strategy": "cost" }),
            "write:combos",
        ),
        (
            "omniroute_set_budget_guard",
            json!({ "sessionId": "s", "maxCostUsd": 1.0, "action": "block" }),
            "write:budget",
        ),
        (
            "omniroute_set_resilience_profile",
            json!({ "profile": "aggressive" }),
            "write:resilience",
        ),
    ] {
        let e = mcp.err(tool, args).await;
        assert!(e.contains(scope), "{tool}: {e}");
    }
    // `read:*` grants read:quota.
    mcp.ok("omniroute_check_quota", json!({})).await;
    mcp.close().await;
    assert_eq!(gw.engine.config().version(), version);
    assert!(gw.engine.guard("s").is_none());
    assert!(config_changes(&gw).is_empty());

    let mcp = Mcp::connect(&gw, Some(&writer)).await;
    let e = mcp.err("omniroute_list_combos", json!({})).await;
    assert!(e.contains("read:combos"), "{e}");
    mcp.ok(
        "omniroute_switch_combo",
        json!({ "comboId": "ab", "active": false }),
    )
    .await;
    mcp.ok(
        "omniroute_set_resilience_profile",
        json!({ "profile": "conservative" }),
    )
    .await;
    mcp.ok(
        "omniroute_set_budget_guard",
        json!({ "sessionId": "s", "maxCostUsd": 1.0, "action": "alert" }),
    )
    .await;
    mcp.close().await;
    gw.stop().await;

    let changes = config_changes(&gw);
    assert_eq!(changes.len(), 2);
    assert!(
        changes.iter().all(|c| c.actor.contains("ops-agent")),
        "{changes:?}"
    );
    let guard = gw
        .all_events()
        .into_iter()
        .find_map(|e| match e {
            Event::BudgetGuardSet(g) => Some(*g),
            _ => None,
        })
        .unwrap();
    assert!(guard.actor.contains("ops-agent"), "{}", guard.actor);
}
