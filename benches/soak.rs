//! `soak`: memory over a long run (issue 11). Starts the `omniroute serve` binary on an empty data
//! dir with the built-in config (mock provider, `batched`), sends `SOAK_REQUESTS` (default 1M)
//! chat completions from 32 keep-alive clients, and prints the server's resident memory (VmRSS)
//! at the start and every tenth of the way, with the log's size. RSS must level off: the redb
//! cache is bounded (`log.cache_size_mb`) and nothing else grows per request.
//!
//! `cargo bench --bench soak` (about 2-4 minutes on 2 cores); `SOAK_REQUESTS=100000` for a
//! shorter run; `SOAK_DATA_DIR=DIR` keeps the data dir. Not a criterion bench: the figure is a
//! curve, not a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const CLIENTS: u64 = 32;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that does not name this bench skips it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"soak".contains(a.as_str()))
    {
        return;
    }
    let total: u64 = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    // `SOAK_DATA_DIR=DIR` keeps the log for a look afterwards (`omniroute log verify --decisions`).
    let data = std::env::var_os("SOAK_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("data"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let log_mib = || {
        std::fs::metadata(data.join("omniroute.redb"))
            .map(|m| m.len() as f64 / (1 << 20) as f64)
            .unwrap_or(0.0)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    eprintln!("soak: {total} requests, {CLIENTS} clients; serve pid {pid}");
    eprintln!("soak: 0 requests: RSS {} KiB", rss_kib(pid));
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = format!("{base}/v1/chat/completions");
        let body = r#"{"model":"default","messages":[{"role":"user","content":"soak"}]}"#;
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (http, url, done) = (http.clone(), url.clone(), Arc::clone(&done));
            tasks.push(tokio::spawn(async move {
                while done.fetch_add(1, Ordering::Relaxed) < total {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    r.bytes().await.unwrap();
                }
            }));
        }
        let step = (total / 10).max(1);
        let mut next = step;
        while next <= total {
            while done.load(Ordering::Relaxed) < next {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            eprintln!(
                "soak: {next} requests ({:.0}/s): RSS {} KiB, log {:.0} MiB",
                next as f64 / started.elapsed().as_secs_f64(),
                rss_kib(pid),
                log_mib()
            );
            next += step;
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let _ = child.kill();
    let _ = child.wait();
}
