//! The admin API over the operations layer: the routes added for the MCP tools' operations
//! answer the same typed JSON over HTTP, with the same scopes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

async fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = Gateway::client().request(method, format!("{}{path}", gw.url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_operations_answer_over_http_with_their_scopes() {
    use reqwest::Method;
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let (admin, _) = gw
        .engine
        .create_key("admin", vec!["*".into()])
        .await
        .unwrap();
    let (reader, _) = gw
        .engine
        .create_key("reader", vec!["read:*".into()])
        .await
        .unwrap();
    let k = Some(admin.as_str());

    let (s, sim) = send(
        &gw,
        Method::POST,
        "/api/simulate",
        k,
        Some(json!({ "combo": "ab", "promptTokenEstimate": 100 })),
    )
    .await;
    assert_eq!(s, 200, "{sim}");
    assert_eq!(sim["plan"][0]["model"], "model-a", "{sim}");
    assert_eq!((a.calls(), b.calls()), (0, 0), "a simulation calls nothing");

    let (s, t) = send(
        &gw,
        Method::POST,
        "/api/combos/ab/test",
        k,
        Some(json!({ "testPrompt": "ping" })),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!((a.calls(), b.calls()), (1, 1), "{t}");

    let (s, r) = send(
        &gw,
        Method::PUT,
        "/api/combos/ab/routing",
        k,
        Some(json!({ "strategy": "weighted", "weights": { "model-a": 1, "model-b": 3 } })),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["combo"]["strategy"], "weighted", "{r}");
    assert_eq!(r["combo"]["targets"][1]["weight"], 3, "{r}");

    let (s, r) = send(
        &gw,
        Method::PUT,
        "/api/resilience",
        k,
        Some(json!({ "profile": "conservative" })),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["max_retries"], 2, "{r}");
    assert_eq!(gw.engine.config().resilience.max_retries, 2);

    let (s, q) = send(&gw, Method::GET, "/api/quota?provider=a", k, None).await;
    assert_eq!(s, 200, "{q}");
    let (s, m) = send(&gw, Method::GET, "/api/providers/a/metrics", k, None).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["provider"], "a", "{m}");
    let (s, best) = send(&gw, Method::GET, "/api/combos/best?taskType=chat", k, None).await;
    assert_eq!(s, 200, "{best}");
    let (s, cat) = send(
        &gw,
        Method::GET,
        "/api/models/catalog?capability=chat",
        k,
        None,
    )
    .await;
    assert_eq!(s, 200, "{cat}");
    assert_eq!(cat["models"].as_array().unwrap().len(), 2, "{cat}");

    // Bad input names the field; a write needs its scope.
    let (s, e) = send(
        &gw,
        Method::PUT,
        "/api/resilience",
        k,
        Some(json!({ "profile": "reckless" })),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("profile"),
        "{e}"
    );
    let (s, e) = send(
        &gw,
        Method::PUT,
        "/api/resilience",
        Some(&reader),
        Some(json!({ "profile": "aggressive" })),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write:resilience"),
        "{e}"
    );
    let (s, _) = send(&gw, Method::GET, "/api/quota", Some(&reader), None).await;
    assert_eq!(s, 200, "read:* reads the quota");
    gw.stop().await;
}
