//! Socket options on every connection that carries a stream (issue 10). Without `TCP_NODELAY` a
//! keep-alive client waits for its own delayed ACK (~40 ms) at the end of every streamed answer:
//! the last small writes sit in the kernel behind Nagle's algorithm. Timing would make a flaky
//! test, so this one looks at the sockets themselves: after streamed and plain requests over
//! keep-alive connections, every TCP socket this process holds that the gateway accepted, or
//! that the gateway opened to its upstream, must have `TCP_NODELAY` set.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde_json::json;
use support::*;

/// One TCP socket of this process: (local address, peer address, TCP_NODELAY).
fn tcp_sockets() -> Vec<(SocketAddr, SocketAddr, bool)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Some(fd) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only duplicated (fcntl F_DUPFD_CLOEXEC), never closed here; if
        // it was closed (or reused) since the listing, the dup fails or names another file, and a
        // file that is not a connected TCP socket is skipped below.
        let Ok(owned) = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() else {
            continue;
        };
        let s = TcpStream::from(owned);
        if let (Ok(local), Ok(peer), Ok(nodelay)) = (s.local_addr(), s.peer_addr(), s.nodelay()) {
            out.push((local, peer, nodelay));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_and_upstream_connections_have_tcp_nodelay() {
    let a = Fake::start(
        vec![],
        Step::stream(&["Hel", "lo", " world"], Duration::ZERO),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, "[resilience]\nmax_retries = 0\n")).await;
    let gw_port: u16 = gw.url.rsplit(':').next().unwrap().parse().unwrap();
    // One keep-alive client, as the official SDKs are: its connection stays open in its pool.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let resp = client
            .post(format!("{}/v1/chat/completions", gw.url))
            .json(&json!({ "model": "ab", "stream": true, "messages": user("hi") }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.unwrap();
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    let health = client
        .get(format!("{}/api/health", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let sockets = tcp_sockets();
    let accepted: Vec<_> = sockets
        .iter()
        .filter(|(local, _, _)| local.port() == gw_port)
        .collect();
    let upstream: Vec<_> = sockets
        .iter()
        .filter(|(local, peer, _)| peer.port() == a.addr.port() && local.port() != a.addr.port())
        .collect();
    assert!(
        !accepted.is_empty(),
        "no accepted connection found: {sockets:?}"
    );
    assert!(
        !upstream.is_empty(),
        "no upstream connection found: {sockets:?}"
    );
    for (local, peer, nodelay) in accepted.iter().chain(&upstream) {
        assert!(nodelay, "{local} <-> {peer} has TCP_NODELAY off");
    }
}
