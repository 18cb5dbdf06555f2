//! A second Ctrl-C ends `serve` at once: with an upstream that hangs for minutes, the first SIGINT
//! starts the graceful shutdown (which would wait up to its grace period), the second stops it
//! now, and the log is still committed and verifies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::cli::KillOnDrop;
use support::*;

fn signal(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// The next stderr line containing `what` (bounded, so a regression fails instead of hanging).
fn line_with(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect(what);
        if line.contains(what) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_stops_at_once_and_the_log_verifies() {
    let up = Fake::start(vec![], Step::slow(Duration::from_secs(300))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("omniroute.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nid = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\ntimeout_ms = 600000\n\n[[models]]\nid = \"hung\"\nprovider = \"up\"\n",
            up.base_url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut child = KillOnDrop(child);
    let line = line_with(&rx, "listening on http://");
    let addr = line.split("listening on http://").nth(1).unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        addr.split_whitespace().next().unwrap()
    );

    let hung = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&json!({ "model": "hung", "messages": user("wait") }))
            .send()
            .await
    });
    // The request is in flight once the upstream has it.
    let until = Instant::now() + Duration::from_secs(20);
    while up.calls() == 0 {
        assert!(
            Instant::now() < until,
            "the request never reached the upstream"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let pid = child.0.id();
    signal(pid, "INT");
    line_with(&rx, "shutting down");
    let t0 = Instant::now();
    signal(pid, "INT");
    let status = tokio::task::spawn_blocking(move || {
        let s = child.0.wait().unwrap();
        (s, child)
    });
    let (status, _child) = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("serve did not exit after the second SIGINT")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    hung.abort();

    let v = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["log", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
}
