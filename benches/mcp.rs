//! `mcp`: the round trip of a read tool, from an rmcp client's `call_tool` to its parsed answer,
//! for `omniroute_get_health` and `omniroute_explain_route` (on a request recorded before the
//! measurement). Two ways in: in-process over an in-memory duplex pipe (`OmniMcp` with the owner
//! as its fixed caller, as `omniroute mcp` runs it: the cost of rmcp, the operation and the
//! audit record), and over the gateway's streamable HTTP `/mcp` on 127.0.0.1:0 with one
//! keep-alive reqwest client (plus the HTTP session, authentication middleware and SSE framing).
//! The engine runs the built-in default config (the deterministic `mock` provider, no network)
//! with durable logging (`batched`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use omniroute::engine::Engine;
use omniroute::mcp::OmniMcp;
use omniroute::ops::auth;
use omniroute_core::config::Config;
use omniroute_core::log::Log;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

type Client = RunningService<RoleClient, ()>;

/// A running gateway on the built-in default config, and the id of one request it recorded.
async fn gateway(dir: &std::path::Path) -> (Arc<Engine>, String, String) {
    let config = Config::builtin().unwrap();
    let log = Log::open_with(dir, omniroute::engine::log_options(&config)).unwrap();
    let engine = Engine::start(config, "bench", log).await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let e = Arc::clone(&engine);
    tokio::spawn(async move { omniroute::gateway::serve(l, e, std::future::pending()).await });
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({ "model": "default", "messages": [{ "role": "user", "content": "hello" }] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let rid = r.headers()["x-omniroute-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    (engine, url, rid)
}

/// An rmcp client talking to `OmniMcp` through an in-memory pipe, as the owner.
async fn in_process(engine: &Arc<Engine>) -> Client {
    let owner = auth::authenticate(&engine.keys, None, None, true).unwrap();
    let (server_end, client_end) = tokio::io::duplex(256 * 1024);
    let server = OmniMcp::new(Arc::clone(engine), Some(owner));
    tokio::spawn(async move {
        let running = server.serve(tokio::io::split(server_end)).await.unwrap();
        let _ = running.waiting().await;
    });
    ().serve(tokio::io::split(client_end)).await.unwrap()
}

/// An rmcp client on the gateway's `/mcp` (loopback, no key exists: the owner).
async fn over_http(url: &str) -> Client {
    let cfg = StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp"));
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), cfg);
    ().serve(transport).await.unwrap()
}

/// One call whose answer must be a success with structured content.
async fn call(client: &Client, tool: &'static str, args: &Map<String, Value>) {
    let r = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args.clone()))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{tool}: {r:?}");
    assert!(r.structured_content.is_some(), "{tool}: {r:?}");
}

fn bench(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, url, rid) = rt.block_on(gateway(dir.path()));
    let (local, http) = rt.block_on(async { (in_process(&engine).await, over_http(&url).await) });
    let none = Map::new();
    let explain = match json!({ "requestId": rid }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    // The operations alone (no protocol, no audit record): what the round trips above add to.
    let owner = auth::authenticate(&engine.keys, None, None, true).unwrap();
    let mut g = c.benchmark_group("mcp_operation_only");
    g.bench_function("get_health", |b| {
        b.iter(|| omniroute::ops::read::health(&engine, &owner).unwrap())
    });
    g.bench_function("explain_route", |b| {
        b.to_async(&rt).iter(|| async {
            omniroute::ops::read::explain(&engine, &owner, &rid)
                .await
                .unwrap()
        })
    });
    g.finish();
    for (name, client) in [("in_process", &local), ("http", &http)] {
        let mut g = c.benchmark_group(format!("mcp_{name}"));
        g.bench_function("get_health", |b| {
            b.to_async(&rt)
                .iter(|| call(client, "omniroute_get_health", &none))
        });
        g.bench_function("explain_route", |b| {
            b.to_async(&rt)
                .iter(|| call(client, "omniroute_explain_route", &explain))
        });
        g.finish();
    }
    rt.block_on(async {
        local.cancel().await.unwrap();
        http.cancel().await.unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
