//! `omniroute mcp` while `omniroute serve` owns the data dir (issue 14): the command bridges
//! stdio to the server's `/mcp`, so the tools are the server's and the server authenticates and
//! audits every call, with the key given to the bridge or, without one, the data dir's owner
//! token. A real `serve` on 127.0.0.1:0 and the real binary over stdio, as an agent starts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::cli::{Server, run};
use support::mcp::{Mcp, error_text};

/// The owner token the server wrote in its data dir.
fn owner_token(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// `GET path` on the server's admin API as the owner. Admin reads wait until everything recorded
/// so far is committed and folded, so a tool call answered before this is in the answer.
async fn admin_get(server: &Server, dir: &std::path::Path, path: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("http://{}{path}", server.addr))
        .bearer_auth(owner_token(dir))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Calls of `tool` in the server's audit read model.
fn audited_calls(stats: &Value, tool: &str) -> u64 {
    stats["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == tool)
        .map_or(0, |t| t["calls"].as_u64().unwrap())
}

/// A key with `scopes`, created through the running server.
fn create_key(dir: &std::path::Path, scopes: &str) -> String {
    let o = run(
        &["keys", "create", "--name", "agent", "--scopes", scopes],
        dir,
    );
    assert!(o.ok(), "{o:?}");
    o.stdout.trim().to_string()
}

/// The `ToolCalled` events of the server's log (read after an admin read settled it).
fn tool_calls(dir: &std::path::Path) -> Vec<Value> {
    let o = run(&["log", "tail", "-n", "50", "--json"], dir);
    assert!(o.ok(), "{o:?}");
    o.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "ToolCalled")
        .map(|v| v["event"].clone())
        .collect()
}

#[tokio::test]
async fn the_bridge_serves_the_running_servers_tools_and_the_server_audits_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).unwrap();
    let before = admin_get(&server, dir.path(), "/api/audit/stats").await;
    assert_eq!(audited_calls(&before, "omniroute_get_health"), 0);

    let bridged = Mcp::stdio(dir.path(), None).await;
    // The tools are the server's: the same list, schemas included, as its own `/mcp` gives.
    let direct = Mcp::over_http(
        &format!("http://{}/mcp", server.addr),
        Some(&owner_token(dir.path())),
    )
    .await;
    assert!(!bridged.tools.is_empty());
    assert_eq!(bridged.tools, direct.tools);
    direct.close().await;

    let health = bridged.ok("omniroute_get_health", json!({})).await;
    assert!(health.is_object(), "{health}");
    let after = admin_get(&server, dir.path(), "/api/audit/stats").await;
    assert_eq!(
        audited_calls(&after, "omniroute_get_health"),
        1,
        "the call is recorded by the server: {after}"
    );
    let calls = tool_calls(dir.path());
    let health_call = calls
        .iter()
        .find(|c| c["tool"] == "omniroute_get_health")
        .unwrap_or_else(|| panic!("no ToolCalled for get_health in {calls:?}"));
    assert_eq!(health_call["ok"], true, "{health_call}");
    // Without a key the bridge is the owner (it could read the owner token).
    assert!(health_call["caller_key_id"].is_null(), "{health_call}");
    bridged.close().await;
    server.stop();
}

#[tokio::test]
async fn the_bridge_calls_with_the_scopes_of_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).unwrap();
    let key = create_key(dir.path(), "read:health");

    let bridged = Mcp::stdio(dir.path(), Some(&key)).await;
    bridged.ok("omniroute_get_health", json!({})).await;
    let denied = error_text(
        &bridged
            .call("omniroute_list_models_catalog", json!({}))
            .await,
    );
    assert!(denied.contains("read:models"), "{denied}");

    let stats = admin_get(&server, dir.path(), "/api/audit/stats").await;
    assert_eq!(audited_calls(&stats, "omniroute_list_models_catalog"), 1);
    let calls = tool_calls(dir.path());
    let catalog = calls
        .iter()
        .find(|c| c["tool"] == "omniroute_list_models_catalog")
        .unwrap_or_else(|| panic!("no ToolCalled for the catalog in {calls:?}"));
    assert_eq!(catalog["ok"], false, "{catalog}");
    assert_eq!(catalog["scopes"], json!(["read:health"]), "{catalog}");
    assert!(!catalog["caller_key_id"].is_null(), "{catalog}");
    bridged.close().await;
    server.stop();
}

#[test]
fn the_bridge_refuses_a_key_the_server_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).unwrap();
    create_key(dir.path(), "read:health");
    // stdin is closed: the bridge must fail on the key before it waits for a client.
    let o = run(&["mcp", "--key", "sk-nope"], dir.path());
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("invalid or revoked API key")
            && o.stderr.contains(&format!("http://{}/mcp", server.addr))
            && o.stderr.contains("--key"),
        "{o:?}"
    );
    assert!(o.stdout.is_empty(), "stdout is the protocol only: {o:?}");
    server.stop();
}

#[test]
fn the_bridge_refuses_a_key_while_the_server_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).unwrap();
    // Without keys the server would take any loopback caller as the owner: the key would be
    // silently ignored.
    let o = run(&["mcp", "--key", "sk-typo"], dir.path());
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("has no API key"), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    server.stop();
}
