//! The MCP server (issue 14, first slice): rmcp's own client against `/mcp` on an in-process
//! gateway (streamable HTTP on 127.0.0.1:0) and against `omniroute mcp` over stdio. Every tool is
//! listed and called and its structured output parsed; a missing scope is a tool error naming
//! it; with a key present, `/mcp` without one is a 401 before rmcp sees the request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::mcp::{Mcp, error_text};
use support::*;

const TOOLS: [&str; 10] = [
    "omniroute_get_combo_metrics",
    "omniroute_cost_report",
    "omniroute_get_session_snapshot",
    "omniroute_replay_strategy",
    "omniroute_verify_log",
    "omniroute_audit_stats",
    "omniroute_get_health",
    "omniroute_list_combos",
    "omniroute_explain_route",
    "omniroute_list_models_catalog",
];

#[tokio::test]
async fn every_tool_answers_over_streamable_http() {
    let a = Fake::start(vec![], Step::ok("hi from a")).await;
    let b = Fake::start(vec![], Step::ok("hi from b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let resp = gw
        .chat(json!({ "model": "ab", "messages": user("hello") }))
        .await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    gw.completed(&id).await;

    // No key exists: loopback is the owner.
    let client = Mcp::connect(&gw, None).await;
    let tools = &client.tools;
    for name in TOOLS {
        let t = tools.iter().find(|t| t.name == name);
        let t = t.unwrap_or_else(|| panic!("{name} not listed"));
        assert!(
            t.output_schema.is_some(),
            "{name} declares no output schema"
        );
    }

    let h = client.ok("omniroute_get_health", json!({})).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["log"]["head"]["seq"].as_u64().unwrap() > 0, "{h}");
    assert_eq!(h["log"]["failing"], false);
    assert!(h["targets"].as_array().unwrap().len() >= 2, "{h}");
    assert!(h["config_version"].is_string());

    let c = client
        .ok("omniroute_list_combos", json!({ "includeMetrics": true }))
        .await;
    let ab = &c["combos"][0];
    assert_eq!(ab["id"], "ab", "{c}");
    assert_eq!(ab["strategy"], "priority");
    assert_eq!(ab["targets"], json!(["model-a", "model-b"]));
    assert!(ab["metrics"].is_object(), "{c}");
    let c = client.ok("omniroute_list_combos", json!({})).await;
    assert!(c["combos"][0].get("metrics").is_none(), "{c}");

    let x = client
        .ok("omniroute_explain_route", json!({ "requestId": id }))
        .await;
    assert_eq!(x["request_id"], id);
    assert!(x["explain"].is_object(), "{x}");
    let bad = client
        .call("omniroute_explain_route", json!({ "requestId": "nope" }))
        .await;
    assert!(error_text(&bad).contains("not a request id"));

    let m = client.ok("omniroute_list_models_catalog", json!({})).await;
    let models = m["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{m}");
    let ma = models.iter().find(|x| x["id"] == "model-a").unwrap();
    assert_eq!(ma["provider"], "a");
    assert_eq!(ma["tier"], 2);
    assert_eq!(ma["pricing"]["input_usd_per_mtok"], 1.0);
    assert_eq!(ma["pricing"]["output_usd_per_mtok"], 2.0);
    let only_b = client
        .ok("omniroute_list_models_catalog", json!({ "provider": "b" }))
        .await;
    assert_eq!(only_b["models"].as_array().unwrap().len(), 1);
    assert_eq!(only_b["models"][0]["id"], "model-b");
    let bad = client
        .call(
            "omniroute_list_models_catalog",
            json!({ "capability": "telepathy" }),
        )
        .await;
    assert!(error_text(&bad).contains("unknown capability"));

    client.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn scopes_come_from_the_key_and_keys_end_anonymous_access() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let (health_only, _) = gw
        .engine
        .create_key("monitor", vec!["read:health".into()])
        .await
        .unwrap();

    // A key exists: no Authorization header is a 401 at /mcp, before rmcp sees the request.
    let r = reqwest::Client::new()
        .post(format!("{}/mcp", gw.url))
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "t", "version": "0" } } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");

    let client = Mcp::connect(&gw, Some(&health_only)).await;
    let h = client.ok("omniroute_get_health", json!({})).await;
    assert_eq!(h["status"], "ok");
    let denied = client
        .call(
            "omniroute_explain_route",
            json!({ "requestId": "01ARZ3NDEKTSV4RRFFQ69G5FAV" }),
        )
        .await;
    let text = error_text(&denied);
    assert!(text.contains("read:usage"), "{text}");
    let denied = client.call("omniroute_list_combos", json!({})).await;
    assert!(error_text(&denied).contains("read:combos"));
    // Scopes claimed in the request's `_meta` grant nothing: they come from the key alone.
    let claimed: rmcp::model::CallToolRequestParams = serde_json::from_value(json!({
        "name": "omniroute_list_combos", "arguments": {},
        "_meta": { "scopes": ["*"], "omniroute/scopes": ["read:combos"], "role": "owner" }
    }))
    .unwrap();
    let denied = client.client.call_tool(claimed).await.unwrap();
    assert!(error_text(&denied).contains("read:combos"));
    client.close().await;

    // Every call, allowed or denied, is audited with the key that made it; the audit read model
    // counts them, denials apart, per tool and per caller.
    let (admin_key, _) = gw
        .engine
        .create_key("admin", vec!["*".into()])
        .await
        .unwrap();
    let admin = Mcp::connect(&gw, Some(&admin_key)).await;
    let stats = admin.ok("omniroute_audit_stats", json!({})).await;
    let tool = |name: &str| {
        stats["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tool"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {stats}"))
    };
    assert_eq!(tool("omniroute_list_combos")["calls"], 2, "{stats}");
    assert_eq!(tool("omniroute_list_combos")["denied"], 2, "{stats}");
    assert_eq!(tool("omniroute_get_health")["denied"], 0, "{stats}");
    let monitor_id = omniroute_core::event::Hash32::of(health_only.as_bytes()).to_string();
    let by_monitor = stats["callers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tool"] == monitor_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no caller {monitor_id} in {stats}"));
    assert_eq!(by_monitor["calls"], 4, "{stats}");
    assert_eq!(by_monitor["denied"], 3, "{stats}");
    admin.close().await;
    gw.stop().await;
    let monitor = omniroute_core::event::Hash32::of(health_only.as_bytes());
    let calls: Vec<_> = gw
        .all_events()
        .into_iter()
        .filter_map(|e| match e {
            omniroute_core::event::Event::ToolCalled(t) => Some(*t),
            _ => None,
        })
        .collect();
    let seen: Vec<(&str, bool)> = calls
        .iter()
        .filter(|t| t.caller_key_id == Some(monitor))
        .map(|t| (t.tool.as_str(), t.ok))
        .collect();
    assert_eq!(
        seen,
        [
            ("omniroute_get_health", true),
            ("omniroute_explain_route", false),
            ("omniroute_list_combos", false),
            ("omniroute_list_combos", false)
        ]
    );
    let calls: Vec<_> = calls
        .into_iter()
        .filter(|t| t.caller_key_id == Some(monitor))
        .collect();
    assert!(calls.iter().all(|t| t.scopes == ["read:health"]));
    let explain = &calls[1];
    assert!(
        explain.args_preview.contains("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        "{explain:?}"
    );
    assert!(
        explain
            .error
            .as_deref()
            .unwrap_or("")
            .contains("read:usage"),
        "{explain:?}"
    );
    // The output's first 200 characters.
    let out = &calls[0].output_preview;
    assert!(
        out.starts_with("{\"config_version\"") && out.chars().count() == 200,
        "{out}"
    );
}

#[tokio::test]
async fn omniroute_mcp_serves_the_tools_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let client = Mcp::stdio(dir.path(), None).await;
    let tools = &client.tools;
    for name in TOOLS {
        assert!(tools.iter().any(|t| t.name == name), "{name} not listed");
    }
    let h = client.ok("omniroute_get_health", json!({})).await;
    assert_eq!(h["status"], "ok", "{h}");
    let m = client.ok("omniroute_list_models_catalog", json!({})).await;
    assert!(!m["models"].as_array().unwrap().is_empty(), "{m}");
    let c = client.ok("omniroute_list_combos", json!({})).await;
    assert!(c["combos"].is_array(), "{c}");
    client.close().await;
}

#[test]
fn omniroute_mcp_refuses_a_key_the_data_dir_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let o = support::cli::run(&["mcp", "--key", "sk-nope"], dir.path());
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("no API key exists"), "{o:?}");
}

#[tokio::test]
async fn omniroute_mcp_calls_with_the_scopes_of_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let o = support::cli::run(
        &[
            "keys",
            "create",
            "--name",
            "agent",
            "--scopes",
            "read:health",
        ],
        dir.path(),
    );
    assert!(o.ok(), "{o:?}");
    let key = o.stdout.trim().to_string();
    let client = Mcp::stdio(dir.path(), Some(&key)).await;
    client.ok("omniroute_get_health", json!({})).await;
    let denied = client
        .call("omniroute_list_models_catalog", json!({}))
        .await;
    let text = error_text(&denied);
    assert!(text.contains("read:models"), "{text}");
    client.close().await;
}

/// An `initialize` POST to `/mcp` with the given `Host` header and key.
async fn raw_initialize(gw: &Gateway, host: &str, key: Option<&str>) -> reqwest::StatusCode {
    let mut req = reqwest::Client::new()
        .post(format!("{}/mcp", gw.url))
        .header("host", host)
        .header("accept", "application/json, text/event-stream");
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.json(
        &json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "t", "version": "0" } } }),
    )
    .send()
    .await
    .unwrap()
    .status()
}

#[tokio::test]
async fn only_key_holders_may_name_a_non_loopback_host() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    // No key: the loopback owner, but not through a foreign name (DNS rebinding).
    assert_eq!(raw_initialize(&gw, "localhost:1", None).await, 200);
    assert_eq!(raw_initialize(&gw, "[::1]:1", None).await, 200);
    assert_eq!(raw_initialize(&gw, "evil.example:1", None).await, 403);
    // A key holder reaches the gateway by whatever name it has.
    let (key, _) = gw
        .engine
        .create_key("remote", vec!["read:*".into()])
        .await
        .unwrap();
    assert_eq!(
        raw_initialize(&gw, "gateway.internal:20128", Some(&key)).await,
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn delete_ends_an_mcp_session() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp", gw.url);
    let r = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "t", "version": "0" } } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let r = http
        .delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .json(&json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an ended session is unknown");
    gw.stop().await;
}

#[tokio::test]
async fn the_usage_and_log_tools_answer_from_the_read_models_and_the_log() {
    let a = Fake::start(vec![], Step::ok("hi from a")).await;
    let b = Fake::start(vec![], Step::ok("hi from b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = Gateway::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-omniroute-session", "s-42")
            .json(&json!({ "model": "ab", "messages": user("hello") }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        ids.push(rid(&resp));
    }
    for id in &ids {
        gw.completed(id).await;
    }
    let mcp = Mcp::connect(&gw, None).await;

    let c = mcp
        .ok("omniroute_get_combo_metrics", json!({ "comboId": "ab" }))
        .await;
    assert_eq!(c["id"], "ab", "{c}");
    assert_eq!(c["metrics"]["requests"], 3, "{c}");
    let e = mcp
        .err("omniroute_get_combo_metrics", json!({ "comboId": "nope" }))
        .await;
    assert!(e.contains("the combos are: ab"), "{e}");

    let cost = mcp
        .ok(
            "omniroute_cost_report",
            json!({ "period": "day", "groupBy": "model" }),
        )
        .await;
    assert_eq!(cost["total"]["requests"], 3, "{cost}");
    assert_eq!(cost["total"]["unpriced_requests"], 0, "{cost}");
    assert_eq!(cost["groups"][0]["name"], "model-a", "{cost}");
    // The price is real: 10 input tokens at $1/M and 5 output at $2/M, three times.
    assert_eq!(cost["total"]["cost_micros"], 60, "{cost}");
    let e = mcp
        .err("omniroute_cost_report", json!({ "period": "fortnight" }))
        .await;
    assert!(e.contains("fortnight") && e.contains("week"), "{e}");

    let s = mcp
        .ok(
            "omniroute_get_session_snapshot",
            json!({ "sessionId": "s-42" }),
        )
        .await;
    assert_eq!(s["requests"], 3, "{s}");
    let e = mcp
        .err(
            "omniroute_get_session_snapshot",
            json!({ "sessionId": "nobody" }),
        )
        .await;
    assert!(e.contains("no session"), "{e}");

    let v = mcp.ok("omniroute_verify_log", json!({})).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["chain"]["events"].as_u64().unwrap() > 0, "{v}");
    assert!(v["decisions"].is_null(), "{v}");
    let v = mcp
        .ok("omniroute_verify_log", json!({ "decisions": true }))
        .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["decisions"]["decisions"], 3, "{v}");
    assert_eq!(v["decisions"]["reproduced"], 3, "{v}");

    // The recorded plan replayed: every route as recorded. Another strategy: a report too.
    let r = mcp
        .ok(
            "omniroute_replay_strategy",
            json!({ "strategy": "priority", "combo": "ab" }),
        )
        .await;
    assert!(r.is_object() && r.get("recorded").is_some(), "{r}");
    let r2 = mcp
        .ok(
            "omniroute_replay_strategy",
            json!({ "strategy": "round-robin", "seed": 7 }),
        )
        .await;
    assert_ne!(r, r2);
    let e = mcp
        .err(
            "omniroute_replay_strategy",
            json!({ "strategy": "psychic" }),
        )
        .await;
    assert!(e.contains("psychic"), "{e}");

    // The calls above are in the audit read model, per tool.
    let audit = mcp.ok("omniroute_audit_stats", json!({})).await;
    let text = audit.to_string();
    assert!(
        text.contains("omniroute_cost_report") && text.contains("omniroute_replay_strategy"),
        "{audit}"
    );
    mcp.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn health_shows_a_rate_limited_targets_cooldown() {
    let a = Fake::start(
        vec![Step::Json {
            status: 429,
            body: json!({ "error": { "message": "slow down", "type": "rate_limit" } }),
            retry_after: Some("120".into()),
            delay: std::time::Duration::ZERO,
        }],
        Step::ok("a"),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = Mcp::connect(&gw, None).await;
    let before = mcp.ok("omniroute_get_health", json!({})).await;
    assert!(
        before["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["cooldown_until_ms"].is_null()),
        "{before}"
    );
    let resp = gw
        .chat(json!({ "model": "ab", "messages": user("hello") }))
        .await;
    assert_eq!(resp.status(), 200, "b serves it");
    gw.completed(&rid(&resp)).await;
    let h = mcp.ok("omniroute_get_health", json!({})).await;
    let t = h["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["model"] == "model-a")
        .unwrap()
        .clone();
    let left = t["cooldown_remaining_ms"].as_u64().unwrap();
    assert!(left > 100_000 && left <= 120_000, "{t}");
    assert!(t["cooldown_until_ms"].as_u64().is_some(), "{t}");
    mcp.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_revoked_key_fails_on_its_next_mcp_call() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let (key, entry) = gw
        .engine
        .create_key("agent", vec!["read:*".into()])
        .await
        .unwrap();
    let mcp = Mcp::connect(&gw, Some(&key)).await;
    mcp.ok("omniroute_get_health", json!({})).await;
    gw.engine
        .revoke_key(&entry.id.to_string(), "test")
        .await
        .unwrap();
    // Same MCP session, next call: the gateway authenticates every request, so it is refused
    // before rmcp sees it.
    let r = mcp
        .client
        .call_tool(rmcp::model::CallToolRequestParams::new(
            "omniroute_get_health",
        ))
        .await;
    let e = format!("{r:?}");
    assert!(r.is_err(), "{e}");
    assert!(e.contains("401") || e.contains("revoked"), "{e}");
    gw.stop().await;
}

#[test]
fn the_schema_check_can_fail() {
    let schema = serde_json::json!({
        "type": "object", "required": ["a"],
        "properties": { "a": { "type": "integer" }, "b": { "$ref": "#/$defs/B" } },
        "$defs": { "B": { "type": "string", "enum": ["x", "y"] } }
    });
    let ok = serde_json::json!({ "a": 1, "b": "x" });
    assert!(support::mcp::conforms(&ok, &schema, &schema, "$").is_ok());
    for bad in [
        serde_json::json!({ "b": "x" }),
        serde_json::json!({ "a": "1" }),
        serde_json::json!({ "a": 1, "b": "z" }),
    ] {
        assert!(
            support::mcp::conforms(&bad, &schema, &schema, "$").is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn calls_no_tool_ran_are_audited_too() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = Mcp::connect(&gw, None).await;
    // Arguments that do not match the input schema (a tool error) and a tool that does not exist
    // (a protocol error): rmcp refuses both before any tool runs, and each is still in the log.
    let bad_args = mcp
        .err("omniroute_explain_route", json!({ "requestId": 42 }))
        .await;
    assert!(bad_args.contains("expected a string"), "{bad_args}");
    assert!(
        mcp.client
            .call_tool(rmcp::model::CallToolRequestParams::new("omniroute_nope"))
            .await
            .is_err()
    );
    mcp.close().await;
    gw.stop().await;
    let calls: Vec<(String, bool, Option<String>)> = gw
        .all_events()
        .into_iter()
        .filter_map(|e| match e {
            omniroute_core::event::Event::ToolCalled(t) => Some((t.tool, t.ok, t.error)),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, "omniroute_explain_route");
    assert_eq!(calls[1].0, "omniroute_nope");
    assert!(calls.iter().all(|c| !c.1 && c.2.is_some()), "{calls:?}");
}
