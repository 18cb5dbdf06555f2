//! Hard limits at the client-facing edge (issue 15): nothing large from outside reaches the
//! append-only log, session ids are validated on every surface, and slow clients are cut by the
//! header and body read timeouts while other clients are served. The timeouts are set small in
//! the config; the tests wait for events (a read returning 0 when the server closes a socket),
//! never for timers, and bound each wait generously only so that a regression fails instead of
//! hanging.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use omniroute_core::config::Config;
use omniroute_core::event::Event;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The read timeouts used here: small, so the tests are quick.
const TIMEOUT_MS: u64 = 300;

fn config(extra_server: &str) -> String {
    format!(
        r#"
[server]
max_body_bytes = 8388608
header_read_timeout_ms = {TIMEOUT_MS}
body_read_timeout_ms = {TIMEOUT_MS}
{extra_server}
{MODELS}"#
    )
}

const MODELS: &str = r#"
[[providers]]
id = "mock"
kind = "mock"

[[models]]
id = "mock/fast"
provider = "mock"
tier = 0
price = { input = 0.10, output = 0.40 }
"#;

fn log_size(gw: &Gateway) -> u64 {
    gw.log.sync().unwrap();
    std::fs::metadata(gw.dir.path().join(omniroute_core::log::LOG_FILE))
        .unwrap()
        .len()
}

/// Asserts a 4xx in the OpenAI error shape and returns its `error` object.
async fn openai_error(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.unwrap();
    let e = body["error"].clone();
    assert!(e["message"].is_string() && e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    e
}

/// Reads until the server closes the connection (0, or a reset); returns what was read. Fails
/// if the server keeps the connection open for `bound`.
async fn until_closed(r: &mut (impl AsyncReadExt + Unpin), bound: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read_all)
        .await
        .expect("the server kept a stalled connection open");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_twenty_4mb_model_names_grow_the_log_by_almost_nothing() {
    let mut gw = Gateway::start(&config("")).await;
    let ok = gw
        .chat(json!({ "model": "mock/fast", "messages": user("hi") }))
        .await;
    assert_eq!(ok.status(), 200);
    let before = log_size(&gw);
    let huge = "m".repeat(4 * 1024 * 1024);
    for _ in 0..20 {
        let resp = gw
            .chat(json!({ "model": huge, "messages": user("hi") }))
            .await;
        let e = openai_error(resp, 400).await;
        assert_eq!(e["param"], "model");
        assert_eq!(e["type"], "invalid_request_error");
        assert!(e["message"].as_str().unwrap().len() < 1000, "{e}");
    }
    let grown = log_size(&gw).saturating_sub(before);
    assert!(grown <= 16 * 1024, "the log grew by {grown} bytes");
    let stored = gw
        .all_events()
        .iter()
        .filter(|e| matches!(e, Event::RequestReceived(_)))
        .count();
    assert_eq!(stored, 1, "a refused request records nothing");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_message_count_and_header_values_are_capped() {
    let mut gw = Gateway::start(&config("")).await;
    let many: Vec<Value> = (0..omniroute::limits::MAX_MESSAGES + 1)
        .map(|_| json!({ "role": "user", "content": "x" }))
        .collect();
    let resp = gw
        .chat(json!({ "model": "mock/fast", "messages": many }))
        .await;
    assert_eq!(openai_error(resp, 400).await["param"], "messages");
    let resp = Gateway::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-omniroute-task", "t".repeat(1000))
        .json(&json!({ "model": "mock/fast", "messages": user("hi") }))
        .send()
        .await
        .unwrap();
    assert_eq!(openai_error(resp, 400).await["param"], "x-omniroute-task");
    for bad in ["a\tb", &"s".repeat(129)] {
        let resp = Gateway::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-omniroute-session", bad)
            .json(&json!({ "model": "mock/fast", "messages": user("hi") }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            openai_error(resp, 400).await["param"],
            "x-omniroute-session"
        );
    }
    let stored = gw
        .all_events()
        .iter()
        .filter(|e| matches!(e, Event::RequestReceived(_)))
        .count();
    assert_eq!(stored, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_session_ids_in_paths_are_validated_like_the_header() {
    let mut gw = Gateway::start(&config("")).await;
    let c = Gateway::client();
    let budget = json!({ "max_cost_usd": 1.0, "action": "block" });
    let long = "s".repeat(129);
    for id in ["a%0D%0AX-Injected:%201", "a%00b", long.as_str()] {
        let resp = c
            .post(format!("{}/api/sessions/{id}/budget", gw.url))
            .json(&budget)
            .send()
            .await
            .unwrap();
        let e = openai_error(resp, 400).await;
        assert_eq!(e["param"], "id", "{id}: {e}");
        let resp = c
            .get(format!("{}/api/sessions/{id}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(openai_error(resp, 400).await["param"], "id");
    }
    let resp = c
        .post(format!("{}/api/sessions/user-42/budget", gw.url))
        .json(&budget)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let guards: Vec<String> = gw
        .all_events()
        .iter()
        .filter_map(|e| match e {
            Event::BudgetGuardSet(g) => Some(g.session_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(guards, ["user-42"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_slowloris_headers_are_cut_while_others_are_served() {
    let mut gw = Gateway::start(&config("")).await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let (mut rd, mut wr) = TcpStream::connect(&addr).await.unwrap().into_split();
    // One byte every 100 ms, forever: a header line that never ends.
    let drip = tokio::spawn(async move {
        let head = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            tick.tick().await;
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
        }
    });
    // Served while the slow client holds its connection.
    let other = Gateway::client()
        .get(format!("{}/api/health", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS));
    until_closed(&mut rd, Duration::from_secs(10)).await;
    let cut_after = started.elapsed();
    assert!(
        cut_after >= Duration::from_millis(TIMEOUT_MS),
        "{cut_after:?}"
    );
    drip.abort();
    // A connection that sends nothing at all is cut too.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    until_closed(&mut silent, Duration::from_secs(10)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_a_body_that_stops_midway_gets_408() {
    let mut gw = Gateway::start(&config("")).await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let got = until_closed(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_connections_over_the_limit_wait_for_a_free_slot() {
    // One slot, held by a client that never finishes its headers: a second client is answered
    // only once the header timeout has freed the slot, not before.
    let mut gw = Gateway::start(&config("max_connections = 1")).await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut hog = TcpStream::connect(&addr).await.unwrap();
    hog.write_all(b"GET /api/health HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        Gateway::client()
            .get(format!("{}/api/health", gw.url))
            .send(),
    )
    .await
    .expect("the second client was never served")
    .unwrap();
    assert_eq!(second.status(), 200);
    let served_after = started.elapsed();
    assert!(
        served_after >= Duration::from_millis(TIMEOUT_MS),
        "served after {served_after:?}, while the only slot was held"
    );
    until_closed(&mut hog, Duration::from_secs(10)).await;
    gw.stop().await;
}

#[test]
fn edge_read_timeouts_and_connection_limit_are_validated() {
    for (line, key) in [
        (
            "header_read_timeout_ms = 0",
            "server.header_read_timeout_ms",
        ),
        (
            "body_read_timeout_ms = 600001",
            "server.body_read_timeout_ms",
        ),
        ("max_connections = 0", "server.max_connections"),
    ] {
        let toml = format!("[server]\n{line}\n{}", MODELS);
        let e = Config::from_toml(&toml, "t").unwrap_err();
        assert!(e.problems.iter().any(|p| p.key == key), "{line}: {e}");
    }
    // Unset, the defaults apply and the config's version is that of a config without them.
    let c = Config::from_toml(MODELS, "t").unwrap();
    assert_eq!(c.server.header_read_timeout(), Duration::from_secs(10));
    assert_eq!(c.server.max_connections(), 1024);
}
