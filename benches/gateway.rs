//! `gateway`: what omniroute adds in front of an upstream, measured in one run on one runtime:
//! the same mock upstream called directly, through a bare axum+reqwest pass-through proxy (the
//! baseline), and through omniroute with durable logging (`batched`, and `strict`).
//! Latency at concurrency 1 (criterion median; p50/p99 printed from 2000 timed requests) and
//! throughput at concurrency 32. Also `omniroute serve` start-up on an empty data dir.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omniroute::engine::Engine;
use omniroute_core::config::Config;
use omniroute_core::log::Log;
use tokio::runtime::Runtime;

const BODY: &str = r#"{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark, briefly."}]}"#;
const ANSWER: &str = r#"{"id":"up","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}"#;
const CONCURRENCY: usize = 32;
const PER_ROUND: usize = 1_024;

async fn listen(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            l,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    url
}

async fn upstream() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|| async { ([("content-type", "application/json")], ANSWER) }),
    );
    listen(app).await
}

/// The baseline: forward the body with reqwest, return the upstream's bytes.
async fn bare_proxy(upstream: String) -> String {
    #[derive(Clone)]
    struct S {
        http: reqwest::Client,
        url: String,
    }
    async fn forward(
        State(s): State<S>,
        body: Bytes,
    ) -> ([(&'static str, &'static str); 1], Bytes) {
        let r = s
            .http
            .post(&s.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (
            [("content-type", "application/json")],
            r.bytes().await.unwrap(),
        )
    }
    let s = S {
        http: reqwest::Client::new(),
        url: format!("{upstream}/v1/chat/completions"),
    };
    listen(
        Router::new()
            .route("/v1/chat/completions", post(forward))
            .with_state(s),
    )
    .await
}

async fn gateway(upstream: &str, durability: &str, dir: &std::path::Path) -> String {
    let toml = format!(
        r#"
[log]
durability = "{durability}"
[[providers]]
id = "up"
kind = "openai"
base_url = "{upstream}/v1"
[[models]]
id = "bench"
provider = "up"
price = {{ input = 0.15, output = 0.60 }}
"#
    );
    let config = Config::from_toml(&toml, "bench").unwrap();
    let log = Log::open_with(dir, omniroute::engine::log_options(&config)).unwrap();
    let engine: Arc<Engine> = Engine::start(config, "bench", log).await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { omniroute::gateway::serve(l, engine, std::future::pending()).await });
    url
}

async fn one(http: &reqwest::Client, url: &str) {
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    r.bytes().await.unwrap();
}

fn percentiles(rt: &Runtime, http: &reqwest::Client, url: &str) -> (Duration, Duration) {
    let mut lat: Vec<Duration> = rt.block_on(async {
        for _ in 0..200 {
            one(http, url).await;
        }
        let mut v = Vec::with_capacity(2_000);
        for _ in 0..2_000 {
            let t = Instant::now();
            one(http, url).await;
            v.push(t.elapsed());
        }
        v
    });
    lat.sort();
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let dir_s = tempfile::tempdir().unwrap();
    let (up, proxy, gw_batched, gw_strict) = rt.block_on(async {
        let up = upstream().await;
        let proxy = bare_proxy(up.clone()).await;
        let b = gateway(&up, "batched", dir_b.path()).await;
        let s = gateway(&up, "strict", dir_s.path()).await;
        (up, proxy, b, s)
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let targets = [
        ("direct", &up),
        ("bare_proxy", &proxy),
        ("omniroute_batched", &gw_batched),
        ("omniroute_strict", &gw_strict),
    ];

    let mut p = Vec::new();
    for (name, url) in targets {
        let (p50, p99) = percentiles(&rt, &http, url);
        p.push((name, p50, p99));
    }
    let direct = p[0];
    for (name, p50, p99) in &p {
        eprintln!(
            "gateway/c1/{name}: p50 {p50:?} p99 {p99:?}; added over direct: p50 {:?} p99 {:?}",
            p50.saturating_sub(direct.1),
            p99.saturating_sub(direct.2)
        );
    }

    let mut g = c.benchmark_group("gateway_c1");
    for (name, url) in targets {
        g.bench_function(name, |b| b.to_async(&rt).iter(|| one(&http, url)));
    }
    g.finish();

    let mut g = c.benchmark_group("gateway_c32");
    g.throughput(Throughput::Elements(PER_ROUND as u64));
    g.sample_size(10);
    for (name, url) in targets {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let mut tasks = Vec::with_capacity(CONCURRENCY);
                for _ in 0..CONCURRENCY {
                    let (http, url) = (http.clone(), url.clone());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..PER_ROUND / CONCURRENCY {
                            one(&http, &url).await;
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
    }
    g.finish();
}

/// `omniroute serve` on an empty data dir: from spawn to the "listening" line on stderr.
fn startup(c: &mut Criterion) {
    use std::io::{BufRead, BufReader};
    let exe = env!("CARGO_BIN_EXE_omniroute");
    let mut g = c.benchmark_group("serve");
    g.sample_size(10);
    g.bench_function("startup_empty_data_dir", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let t = Instant::now();
                let mut child = std::process::Command::new(exe)
                    .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                    .arg(dir.path().join("d"))
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let stderr = child.stderr.take().unwrap();
                let mut lines = BufReader::new(stderr).lines();
                while let Some(Ok(l)) = lines.next() {
                    if l.contains("listening on") {
                        break;
                    }
                }
                total += t.elapsed();
                child.kill().unwrap();
                child.wait().unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench, startup);
criterion_main!(benches);
