//! Test support: scriptable fake upstreams (OpenAI-compatible and Anthropic) on 127.0.0.1:0 that
//! count their calls, and an in-process gateway on port 0 with its own data dir.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cli;
pub mod mcp;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use omniroute::engine::Engine;
use omniroute_core::config::Config;
use omniroute_core::event::{Event, RequestCompleted, RequestId};
use omniroute_core::flow::{Clock, ManualClock, SystemClock};
use omniroute_core::log::faults::Faults;
use omniroute_core::log::{Backoff, Log, LogOptions};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Step {
    Json {
        status: u16,
        body: Value,
        retry_after: Option<String>,
        delay: Duration,
    },
    /// SSE frames, each sent after its delay; `cut` aborts the connection after the last one.
    Stream {
        frames: Vec<(Duration, String)>,
        cut: bool,
    },
}

impl Step {
    pub fn ok(text: &str) -> Step {
        Step::Json {
            status: 200,
            body: completion(text, 10, 5),
            retry_after: None,
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16, message: &str) -> Step {
        Step::Json {
            status,
            body: json!({ "error": { "message": message, "type": "test" } }),
            retry_after: None,
            delay: Duration::ZERO,
        }
    }
    pub fn slow(delay: Duration) -> Step {
        match Step::ok("slow") {
            Step::Json {
                status,
                body,
                retry_after,
                ..
            } => Step::Json {
                status,
                body,
                retry_after,
                delay,
            },
            s => s,
        }
    }
    /// A complete OpenAI stream of `pieces`, with usage and `[DONE]`.
    pub fn stream(pieces: &[&str], gap: Duration) -> Step {
        let mut frames: Vec<(Duration, String)> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (if i == 0 { Duration::ZERO } else { gap }, chunk(p)))
            .collect();
        frames.push((Duration::ZERO, usage_chunk(10, pieces.len() as u64)));
        frames.push((Duration::ZERO, "data: [DONE]\n\n".into()));
        Step::Stream { frames, cut: false }
    }
}

pub fn completion(text: &str, prompt: u64, completion: u64) -> Value {
    json!({
        "id": "up-1", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion }
    })
}

pub fn chunk(text: &str) -> String {
    let v = json!({ "id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "up",
        "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": null }] });
    format!("data: {v}\n\n")
}

pub fn usage_chunk(prompt: u64, completion: u64) -> String {
    let v = json!({ "id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": [],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion } });
    format!("data: {v}\n\n")
}

#[derive(Clone)]
struct FakeState {
    script: Arc<Mutex<VecDeque<Step>>>,
    fallback: Step,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

/// A fake upstream answering `POST /v1/chat/completions` and `POST /v1/messages` from its script
/// (then `fallback` forever).
pub struct Fake {
    pub addr: SocketAddr,
    state: FakeState,
    _stop: oneshot::Sender<()>,
}

impl Fake {
    pub async fn start(script: Vec<Step>, fallback: Step) -> Fake {
        let state = FakeState {
            script: Arc::new(Mutex::new(script.into())),
            fallback,
            calls: Arc::new(AtomicUsize::new(0)),
            bodies: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(answer))
            .route("/v1/messages", post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Fake {
            addr,
            state,
            _stop: tx,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// The request bodies received, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().unwrap().clone()
    }

    pub fn push(&self, step: Step) {
        self.state.script.lock().unwrap().push_back(step);
    }
}

async fn answer(State(s): State<FakeState>, Json(body): Json<Value>) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    s.bodies.lock().unwrap().push(body);
    let step = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.fallback.clone());
    match step {
        Step::Json {
            status,
            body,
            retry_after,
            delay,
        } => {
            tokio::time::sleep(delay).await;
            let mut r = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
            if let Some(ra) = retry_after {
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_str(&ra).unwrap());
            }
            r
        }
        Step::Stream { frames, cut } => {
            let stream = futures_util::stream::unfold(
                (frames.into_iter(), cut),
                |(mut it, cut)| async move {
                    match it.next() {
                        Some((delay, f)) => {
                            tokio::time::sleep(delay).await;
                            Some((Ok::<Bytes, std::io::Error>(Bytes::from(f)), (it, cut)))
                        }
                        None if cut => Some((Err(std::io::Error::other("cut")), (it, false))),
                        None => None,
                    }
                },
            );
            let mut r = Body::from_stream(stream).into_response();
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            r
        }
    }
}

/// A gateway running in-process on 127.0.0.1:0.
pub struct Gateway {
    pub url: String,
    toml: String,
    pub engine: Arc<Engine>,
    pub log: Log,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn start(toml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(toml, dir).await
    }

    pub async fn start_in(toml: &str, dir: tempfile::TempDir) -> Gateway {
        let config = Config::from_toml(toml, "test config").unwrap();
        let log = Log::open_with(dir.path(), omniroute::engine::log_options(&config)).unwrap();
        Self::start_on(toml, config, log, dir).await
    }

    /// A gateway whose log reaches its file through the fault-injecting backend: the returned
    /// handle fills the disk, fails fsync and returns the space (`omniroute_core::log::faults`).
    /// To make the next commit fail: `faults.disk_full()`. The writer retries a failed log every
    /// millisecond or two here, so tests wait for recovery (`log.wait_writable`), not for a timer.
    /// A restart reopens the data dir through the plain file path.
    pub async fn start_with_faults(toml: &str) -> (Gateway, Faults) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(toml, "test config").unwrap();
        let faults = Faults::new();
        let opts = LogOptions {
            reopen_backoff: Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            ..omniroute::engine::log_options(&config)
        };
        let log = Log::open_with_backend(dir.path(), opts, faults.factory(dir.path())).unwrap();
        (Self::start_on(toml, config, log, dir).await, faults)
    }

    /// A gateway whose flow reads a manual clock (breaker windows and cooldowns, cooldowns after
    /// rate limits, decision times): tests move time with `clock.advance(ms)` instead of sleeping.
    pub async fn start_clocked(toml: &str, start_ms: u64) -> (Gateway, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(toml, "test config").unwrap();
        let log = Log::open_with(dir.path(), omniroute::engine::log_options(&config)).unwrap();
        let clock = Arc::new(ManualClock::new(start_ms));
        let gw = Self::start_with(toml, config, log, dir, clock.clone()).await;
        (gw, clock)
    }

    async fn start_on(toml: &str, config: Config, log: Log, dir: tempfile::TempDir) -> Gateway {
        Self::start_with(toml, config, log, dir, Arc::new(SystemClock)).await
    }

    async fn start_with(
        toml: &str,
        config: Config,
        log: Log,
        dir: tempfile::TempDir,
        clock: Arc<dyn Clock>,
    ) -> Gateway {
        let engine = Engine::start_with_clock(config, "test config", log.clone(), clock)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let e = Arc::clone(&engine);
        let task = tokio::spawn(async move {
            let _ = omniroute::gateway::serve(listener, e, async {
                let _ = rx.await;
            })
            .await;
        });
        Gateway {
            url,
            toml: toml.to_string(),
            engine,
            log,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server (in-flight requests finish), checkpoints the flow state and commits the
    /// log, as `serve` does on SIGTERM.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
            // As `serve`: refused (and left to the fold) when events went unrecorded.
            let e = Arc::clone(&self.engine);
            let _ = tokio::task::spawn_blocking(move || e.checkpoint())
                .await
                .unwrap();
        }
        self.log.sync().unwrap();
    }

    /// Stops this gateway and starts a new one on the same data dir and config.
    pub async fn restart(mut self) -> Gateway {
        self.stop().await;
        let Gateway {
            toml,
            dir,
            engine,
            log,
            ..
        } = self;
        drop(engine);
        drop(log);
        Self::start_in(&toml, dir).await
    }

    pub fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        Self::client()
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Every event of one request, in order (read through the request index).
    pub fn events(&self, rid: &str) -> Vec<Event> {
        self.log.sync().unwrap();
        let id = RequestId::parse(rid).unwrap();
        let reader = self.log.reader().unwrap();
        reader
            .request(id)
            .unwrap()
            .iter()
            .map(|s| s.record().unwrap().event.to_owned_event().unwrap())
            .collect()
    }

    /// Waits (on the log's commit notifications, not on a clock) until request `rid` has its
    /// `RequestCompleted` in the log, and returns it. A stream's last frame reaches the client
    /// before the gateway records the completion, so a test that reads a request's events right
    /// after reading its answer waits for this first.
    pub async fn completed(&self, rid: &str) -> RequestCompleted {
        let id = RequestId::parse(rid).unwrap();
        let mut sub = self.log.subscribe(0);
        let wait = async {
            loop {
                let range = sub.next_range().await.expect("the log closed");
                let reader = self.log.reader().unwrap();
                for s in reader.range(range).unwrap() {
                    if let Event::RequestCompleted(c) =
                        s.unwrap().record().unwrap().event.to_owned_event().unwrap()
                        && c.request_id == id
                    {
                        return *c;
                    }
                }
            }
        };
        // A generous bound so a regression fails instead of hanging; nothing waits on it otherwise.
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("the request never completed in the log")
    }

    pub fn kinds(&self, rid: &str) -> Vec<&'static str> {
        self.events(rid).iter().map(Event::kind).collect()
    }

    /// Every event in the log.
    pub fn all_events(&self) -> Vec<Event> {
        self.log.sync().unwrap();
        let reader = self.log.reader().unwrap();
        reader
            .range(..)
            .unwrap()
            .map(|s| s.unwrap().record().unwrap().event.to_owned_event().unwrap())
            .collect()
    }

    pub fn verify(&self) {
        self.log.sync().unwrap();
        self.log.reader().unwrap().verify().unwrap().unwrap();
    }
}

/// A config with two OpenAI-compatible providers `a` and `b` (models `model-a`, `model-b`,
/// priced) and a priority combo `ab`; `extra` is appended (resilience overrides, more combos).
pub fn two_upstreams(a: &Fake, b: &Fake, extra: &str) -> String {
    format!(
        r#"
[server]
max_body_bytes = 65536

[[providers]]
id = "a"
kind = "openai"
base_url = "{}"
timeout_ms = 2000

[[providers]]
id = "b"
kind = "openai"
base_url = "{}"
timeout_ms = 2000

[[models]]
id = "model-a"
provider = "a"
tier = 2
price = {{ input = 1.0, output = 2.0 }}

[[models]]
id = "model-b"
provider = "b"
tier = 1
price = {{ input = 0.5, output = 1.0 }}

[[combos]]
id = "ab"
strategy = "priority"
targets = [{{ model = "model-a" }}, {{ model = "model-b" }}]

{extra}
"#,
        a.base_url(),
        b.base_url()
    )
}

pub fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

pub fn rid(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-omniroute-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_string()
}

/// The assistant text carried by OpenAI stream frames, concatenated.
pub fn streamed_text(frames: &[String]) -> String {
    frames
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Reads an SSE response to the end: (time to the first frame, frames).
pub async fn read_sse(
    resp: reqwest::Response,
    started: std::time::Instant,
) -> (Duration, Vec<String>) {
    use futures_util::StreamExt;
    let mut first = None;
    let mut buf = String::new();
    let mut s = resp.bytes_stream();
    while let Some(item) = s.next().await {
        let Ok(b) = item else { break };
        if first.is_none() {
            first = Some(started.elapsed());
        }
        buf.push_str(&String::from_utf8_lossy(&b));
    }
    let frames = buf
        .split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| f.trim_start_matches("data: ").to_string())
        .collect();
    (first.unwrap_or_default(), frames)
}
