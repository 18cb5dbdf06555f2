//! `gateway`: what omniroute adds in front of an upstream, measured in one run on one runtime:
//! the same mock upstream called directly, through a bare axum+reqwest pass-through proxy (the
//! baseline), and through omniroute with durable logging (`batched`, and `strict`).
//! Latency at concurrency 1 (criterion median; p50/p99 printed from 2000 timed requests) and
//! throughput at concurrency 32, for plain and streamed answers (an instant five-chunk SSE body),
//! all over keep-alive connections as the official SDKs use them. Then chunk pacing: an upstream
//! that sends a chunk every 20 ms, each stamped with the time it was written; the client reports
//! how late each chunk arrives (p50/p99) directly, through the proxy and through omniroute, and the
//! time to first byte. Also `omniroute serve` start-up on an empty data dir, and the plain c=1
//! round trip through omniroute (`batched`) with and without an MCP client calling read tools in
//! a loop over the same gateway's `/mcp` (tool calls must not hold up the request path).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omniroute::engine::Engine;
use omniroute_core::config::Config;
use omniroute_core::log::Log;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio::runtime::Runtime;

const BODY: &str = r#"{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark, briefly."}]}"#;
const STREAM_BODY: &str = r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark, briefly."}]}"#;
const PACED_BODY: &str = r#"{"model":"paced","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark, slowly."}]}"#;
/// Chunks of a paced stream, and the gap between them.
const PACED_CHUNKS: usize = 10;
const PACE: Duration = Duration::from_millis(20);
/// Paced streams per target (4 at a time): 400 chunks timed per target.
const PACED_STREAMS: usize = 40;
const ANSWER: &str = r#"{"id":"up","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}"#;
const CONCURRENCY: usize = 32;
const PER_ROUND: usize = 1_024;

/// The upstream and the bare proxy set `TCP_NODELAY` as omniroute does, so that no side of the
/// comparison waits on Nagle's algorithm.
async fn listen(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let l = l.tap_io(|s| s.set_nodelay(true).unwrap());
    tokio::spawn(async move {
        axum::serve(
            l,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    url
}

/// The time base that paced chunks are stamped with (one process, so one clock).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn sse_frame(content: &str) -> String {
    format!(
        "data: {{\"id\":\"up\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    )
}

const USAGE_FRAME: &str = "data: {\"id\":\"up\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}\n\ndata: [DONE]\n\n";

fn sse(body: Body) -> Response {
    ([("content-type", "text/event-stream")], body).into_response()
}

/// Answers from the request body: plain JSON; an instant five-chunk SSE body (one write, as an
/// nginx serving a file would); or, for model `paced`, a chunk every `PACE`, each carrying the
/// microseconds since `epoch()` at which it was written.
async fn upstream() -> String {
    async fn answer(body: Bytes) -> Response {
        let has = |s: &[u8]| body.windows(s.len()).any(|w| w == s);
        if !has(b"\"stream\":true") {
            return ([("content-type", "application/json")], ANSWER).into_response();
        }
        if !has(b"\"paced\"") {
            let mut all: String = ["Hello", ",", " bench", "mark", "."]
                .iter()
                .map(|p| sse_frame(p))
                .collect();
            all.push_str(USAGE_FRAME);
            return sse(Body::from(all));
        }
        let chunks = futures_util::stream::unfold(0usize, |i| async move {
            if i > PACED_CHUNKS {
                return None;
            }
            if i == PACED_CHUNKS {
                return Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(USAGE_FRAME)),
                    i + 1,
                ));
            }
            if i > 0 {
                tokio::time::sleep(PACE).await;
            }
            let stamp = epoch().elapsed().as_micros().to_string();
            Some((Ok(Bytes::from(sse_frame(&stamp))), i + 1))
        });
        sse(Body::from_stream(chunks))
    }
    listen(Router::new().route("/v1/chat/completions", post(answer))).await
}

/// The baseline: forward the body with reqwest, return the upstream's bytes.
async fn bare_proxy(upstream: String) -> String {
    #[derive(Clone)]
    struct S {
        http: reqwest::Client,
        url: String,
    }
    async fn forward(State(s): State<S>, body: Bytes) -> Response {
        let stream = body.windows(13).any(|w| w == b"\"stream\":true");
        let r = s
            .http
            .post(&s.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        if stream {
            return sse(Body::from_stream(r.bytes_stream()));
        }
        (
            [("content-type", "application/json")],
            r.bytes().await.unwrap(),
        )
            .into_response()
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
[[models]]
id = "paced"
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

/// One request, its whole answer read. A streamed answer must end with `[DONE]`.
async fn one(http: &reqwest::Client, url: &str, body: &'static str) {
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let b = r.bytes().await.unwrap();
    if body == STREAM_BODY {
        assert!(b.ends_with(b"data: [DONE]\n\n"));
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn percentiles(
    rt: &Runtime,
    http: &reqwest::Client,
    url: &str,
    body: &'static str,
) -> (Duration, Duration) {
    let mut lat: Vec<Duration> = rt.block_on(async {
        for _ in 0..200 {
            one(http, url, body).await;
        }
        let mut v = Vec::with_capacity(2_000);
        for _ in 0..2_000 {
            let t = Instant::now();
            one(http, url, body).await;
            v.push(t.elapsed());
        }
        v
    });
    lat.sort();
    (quantile(&lat, 0.5), quantile(&lat, 0.99))
}

/// One paced stream: how late each chunk arrived after the upstream wrote it, and the time to
/// the first byte of the answer.
async fn paced(http: &reqwest::Client, url: &str) -> (Vec<Duration>, Duration) {
    use futures_util::StreamExt;
    let t0 = Instant::now();
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(PACED_BODY)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut body = r.bytes_stream();
    let (mut ttfb, mut late, mut buf) = (None, Vec::new(), Vec::<u8>::new());
    while let Some(b) = body.next().await {
        let now = epoch().elapsed();
        ttfb.get_or_insert_with(|| t0.elapsed());
        buf.extend_from_slice(&b.unwrap());
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            let text = std::str::from_utf8(&frame).unwrap();
            let Some(json) = text.strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(json.trim()) else {
                continue;
            };
            if let Some(stamp) = v["choices"][0]["delta"]["content"]
                .as_str()
                .and_then(|c| c.parse::<u64>().ok())
            {
                late.push(now.saturating_sub(Duration::from_micros(stamp)));
            }
        }
    }
    assert_eq!(late.len(), PACED_CHUNKS);
    (late, ttfb.unwrap())
}

/// Chunk pacing through each target: per-chunk lateness and time to first byte, p50/p99.
fn pacing(rt: &Runtime, http: &reqwest::Client, targets: &[(&str, &String)]) {
    let mut direct: Option<(Duration, Duration, Duration)> = None;
    for (name, url) in targets {
        let (mut late, mut ttfb) = rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (http, url) = (http.clone(), url.to_string());
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    for _ in 0..PACED_STREAMS / 4 {
                        out.push(paced(&http, &url).await);
                    }
                    out
                }));
            }
            let (mut late, mut ttfb) = (Vec::new(), Vec::new());
            for t in tasks {
                for (l, f) in t.await.unwrap() {
                    late.extend(l);
                    ttfb.push(f);
                }
            }
            (late, ttfb)
        });
        late.sort();
        ttfb.sort();
        let (l50, l99, f50) = (
            quantile(&late, 0.5),
            quantile(&late, 0.99),
            quantile(&ttfb, 0.5),
        );
        let base = *direct.get_or_insert((l50, l99, f50));
        eprintln!(
            "gateway/pacing/{name}: chunk lateness p50 {l50:?} p99 {l99:?} (added over direct: p50 {:?} p99 {:?}); \
             time to first byte p50 {f50:?} p99 {:?} (added p50 {:?}); {} chunks",
            l50.saturating_sub(base.0),
            l99.saturating_sub(base.1),
            quantile(&ttfb, 0.99),
            f50.saturating_sub(base.2),
            late.len()
        );
    }
}

/// c=1 latency (criterion, plus p50/p99 printed) and c=32 throughput of one kind of request.
fn latency_and_throughput(
    c: &mut Criterion,
    rt: &Runtime,
    http: &reqwest::Client,
    targets: &[(&str, &String)],
    kind: &str,
    body: &'static str,
) {
    let mut p = Vec::new();
    for (name, url) in targets {
        let (p50, p99) = percentiles(rt, http, url, body);
        p.push((name, p50, p99));
    }
    let direct = p[0];
    for (name, p50, p99) in &p {
        eprintln!(
            "gateway{kind}/c1/{name}: p50 {p50:?} p99 {p99:?}; added over direct: p50 {:?} p99 {:?}",
            p50.saturating_sub(direct.1),
            p99.saturating_sub(direct.2)
        );
    }

    let mut g = c.benchmark_group(format!("gateway{kind}_c1"));
    for (name, url) in targets {
        g.bench_function(*name, |b| b.to_async(rt).iter(|| one(http, url, body)));
    }
    g.finish();

    let mut g = c.benchmark_group(format!("gateway{kind}_c32"));
    g.throughput(Throughput::Elements(PER_ROUND as u64));
    g.sample_size(10);
    for (name, url) in targets {
        g.bench_function(*name, |b| {
            b.to_async(rt).iter(|| async {
                let mut tasks = Vec::with_capacity(CONCURRENCY);
                for _ in 0..CONCURRENCY {
                    let (http, url) = (http.clone(), url.to_string());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..PER_ROUND / CONCURRENCY {
                            one(&http, &url, body).await;
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
    // `OMNIROUTE_BENCH_CPU_ONLY=1`: just the CPU cost (for before/after comparisons).
    if std::env::var_os("OMNIROUTE_BENCH_CPU_ONLY").is_none() {
        latency_and_throughput(c, &rt, &http, &targets, "", BODY);
        latency_and_throughput(c, &rt, &http, &targets, "_stream", STREAM_BODY);
        pacing(&rt, &http, &targets);
        beside_mcp(c, &rt, &http, &gw_batched);
    }
    cpu(&rt, &http, &targets[1..3]);
}

/// The plain c=1 round trip through omniroute (`batched`), alone and then with a background
/// task that calls MCP read tools (`get_health`, `list_combos`) back to back over the same
/// gateway's `/mcp` (its own keep-alive client and MCP session), in one group so the medians
/// compare. Every tool call also appends a `ToolCalled` record to the same log.
fn beside_mcp(c: &mut Criterion, rt: &Runtime, http: &reqwest::Client, url: &str) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut g = c.benchmark_group("gateway_beside_mcp_c1");
    g.bench_function("plain", |b| b.to_async(rt).iter(|| one(http, url, BODY)));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let looping = rt.spawn({
        let (stop, calls, url) = (Arc::clone(&stop), Arc::clone(&calls), url.to_string());
        async move {
            let cfg = StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp"));
            let t = StreamableHttpClientTransport::with_client(reqwest::Client::new(), cfg);
            let client = ().serve(t).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                for tool in ["omniroute_get_health", "omniroute_list_combos"] {
                    let r = client
                        .call_tool(CallToolRequestParams::new(tool))
                        .await
                        .unwrap();
                    assert_ne!(r.is_error, Some(true), "{tool}: {r:?}");
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }
            client.cancel().await.unwrap();
        }
    });
    g.bench_function("with_mcp_read_loop", |b| {
        b.to_async(rt).iter(|| one(http, url, BODY))
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    rt.block_on(looping).unwrap();
    let n = calls.load(Ordering::Relaxed);
    eprintln!(
        "gateway_beside_mcp_c1: the MCP loop made {n} tool calls in {:.1?} ({:.0}/s)",
        started.elapsed(),
        n as f64 / started.elapsed().as_secs_f64()
    );
}

/// CPU time of this whole process (all threads: client, upstream, proxy or gateway, log
/// writer), in microseconds, from `/proc/self/stat` (utime + stime, in ticks of 1/100 s).
fn process_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and
    // 13th of them.
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0] + f[1]) * 10_000
}

/// CPU per request at concurrency 32, plain answers: the bare proxy against omniroute
/// (`batched`), interleaved over five rounds of 8192 requests; medians. Everything runs in this
/// process, so the difference is what omniroute costs over a pass-through (routing, recording,
/// the log writer).
fn cpu(rt: &Runtime, http: &reqwest::Client, targets: &[(&str, &String)]) {
    const N: usize = 8_192;
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..5 {
        for (i, (_, url)) in targets.iter().enumerate() {
            let before = process_cpu_us();
            rt.block_on(async {
                let mut tasks = Vec::with_capacity(CONCURRENCY);
                for _ in 0..CONCURRENCY {
                    let (http, url) = (http.clone(), url.to_string());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..N / CONCURRENCY {
                            one(&http, &url, BODY).await;
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
            per[i].push((process_cpu_us() - before) as f64 / N as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m: Vec<f64> = per.iter_mut().map(median).collect();
    for ((name, _), us) in targets.iter().zip(&m) {
        eprintln!("gateway_cpu/{name}: {us:.1} µs CPU per request (whole process, c=32)");
    }
    if m.len() == 2 {
        eprintln!(
            "gateway_cpu: {} adds {:.1} µs CPU per request over {}",
            targets[1].0,
            m[1] - m[0],
            targets[0].0
        );
    }
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
