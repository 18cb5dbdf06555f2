//! One chat completion, start to end: `RequestReceived` -> budget guard -> `decide` ->
//! `RouteDecided` -> for each planned target: `AttemptStarted` -> provider call -> `AttemptFinished`
//! -> retry, `FallbackTriggered` and the next target, or done -> `RequestCompleted` -> response.
//!
//! Streams are answered only once the first frame has arrived, so a target that fails or stays
//! silent past the time-to-first-token limit is failed over without the client noticing. After
//! the first byte a broken stream is never ended as if complete: the client gets an in-band error
//! frame (and no `[DONE]`), and the log records `stream_cut`.
//!
//! **An acknowledgement means committed** (DESIGN.md section 2): in `strict` mode, and for every
//! request of a session with a budget guard in any mode (its spend must survive a crash), nothing
//! is answered (status, body, or a stream's final `[DONE]`) until every event of the request is
//! committed; if one failed, the client gets 503 `event_log_unavailable` (in-band for a stream).
//!
//! **Cancellation-safe:** the flow runs in its own task, so a client that goes away cannot cut it
//! short. The attempt under way finishes (its tokens and cost are recorded: that work is paid
//! for), no further attempt is made, and the request completes as 499 `client_closed` with the
//! budget reservation settled and Health's in-flight count and probe released.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use omniroute_core::config::{Config, Durability};
use omniroute_core::event::{
    AttemptError, AttemptFinished, AttemptStarted, BudgetExceeded, Cost, ErrorClass, Event,
    FallbackTriggered, FinalError, Hash32, RequestCompleted, RequestId, RequestReceived, Tokens,
};
use omniroute_core::flow::{self, Facts, Guard, Routed, Verdict, step};
use omniroute_core::pricing;
use omniroute_core::router::{AttemptOutcome, CircuitTransition, RouteError, event_target};
use serde_json::{Value, json};

use super::outcome::{self, Asked, Unserved};
use super::{Engine, Sink, privacy};
use crate::error::ApiError;
use crate::providers::{self, Call, Chunk, ChunkStream, Failure, Reply};

/// A validated chat request.
pub struct ChatInput {
    pub body: Value,
    /// The body as received, for its hash (and storage when `log.store_bodies`).
    pub raw: Bytes,
    pub requested: String,
    pub stream: bool,
    pub wants_usage: bool,
    pub est_prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    pub required: u8,
    pub min_tier: Option<u8>,
    pub task: Option<String>,
    pub session: Option<String>,
    pub key_id: Option<Hash32>,
}

pub enum ChatReply {
    /// A JSON body, passed through as the upstream (or the translation) produced it.
    Json(Bytes),
    /// SSE frames, sent as they arrive.
    Stream(FrameStream),
}

pub struct ChatOutput {
    pub request_id: RequestId,
    /// `provider/model` that served, and the number of attempts.
    pub route: Option<(String, u16)>,
    pub budget_alert: bool,
    pub result: Result<ChatReply, ApiError>,
}

/// Everything one request carries from step to step.
struct Ctx {
    engine: Arc<Engine>,
    cfg: Arc<Config>,
    cv: Hash32,
    rid: RequestId,
    input: ChatInput,
    started: Instant,
    attempts: u16,
    tokens: Tokens,
    cost_micros: u64,
    unpriced: bool,
    ttft_us: Option<u64>,
    /// Whether the answer must wait for this request's events to commit (`strict` mode, or a
    /// guarded session).
    must_commit: bool,
    /// Commit handles of this request's events, awaited before answering when `must_commit`.
    sink: Sink,
    /// Set when the client went away (its connection closed); checked between attempts.
    client_gone: Arc<AtomicBool>,
}

/// The final error of a request whose client went away before it was answered.
fn client_closed() -> FinalError {
    FinalError {
        code: "client_closed".into(),
        class: None,
        message: "the client closed the connection before the answer was complete".into(),
    }
}

/// A future that, dropped before it completes, is not cut short but finishes in the background:
/// a request stays cancellation-safe (DESIGN.md: nothing is lost) without a task per request on
/// the happy path. A spawned task per request cost a cross-thread wake-up each (tokio wakes an
/// idle worker to steal it), measured as a visible share of a streamed request.
struct Detach<T: Send + 'static> {
    fut: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    /// Set when the future is detached: tells it that nobody waits for its answer any more.
    gone: Option<Arc<AtomicBool>>,
}

impl<T: Send + 'static> Detach<T> {
    fn new(fut: impl Future<Output = T> + Send + 'static, gone: Option<Arc<AtomicBool>>) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
            gone,
        }
    }
}

impl<T: Send + 'static> Future for Detach<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(fut) = self.fut.as_mut() else {
            // Polled again after completing: never by `.await`.
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.fut = None;
        Poll::Ready(out)
    }
}

impl<T: Send + 'static> Drop for Detach<T> {
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else { return };
        if let Some(flag) = &self.gone {
            flag.store(true, Ordering::Release);
        }
        // Outside a runtime (the process is exiting) there is nothing left to finish it on.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            drop(rt.spawn(async move {
                drop(fut.await);
            }));
        }
    }
}

fn add_tokens(a: &mut Tokens, b: &Tokens) {
    a.input += b.input;
    a.cached_read += b.cached_read;
    a.cache_write += b.cache_write;
    a.reasoning += b.reasoning;
    a.output += b.output;
}

fn total(t: &Tokens) -> u64 {
    t.input + t.cached_read + t.cache_write + t.reasoning + t.output
}

fn micros(c: &Cost) -> u64 {
    match c {
        Cost::Micros(m) => *m,
        Cost::Unpriced => 0,
    }
}

impl Ctx {
    fn cost(&self) -> Cost {
        if self.unpriced {
            Cost::Unpriced
        } else {
            Cost::Micros(self.cost_micros)
        }
    }

    fn target_name(&self, m: usize) -> String {
        self.cfg
            .model(m)
            .map(|model| {
                let t = event_target(&self.cfg, model);
                format!("{}/{}", t.provider, t.model)
            })
            .unwrap_or_default()
    }

    /// Appends one of this request's events, keeping its commit handle.
    fn record(&mut self, event: Event) {
        self.engine.record_into(&mut self.sink, event);
    }

    /// Records `RequestCompleted` (settling the budget). Returns whether the answer may be sent:
    /// when the request must be committed first, only once every one of its events is.
    #[must_use]
    async fn finish(
        &mut self,
        status: u16,
        target: Option<usize>,
        error: Option<FinalError>,
    ) -> bool {
        let actual = if self.unpriced { 0 } else { self.cost_micros };
        let target = target
            .and_then(|m| self.cfg.model(m))
            .map(|m| event_target(&self.cfg, m));
        let rid = self.rid;
        let event = Event::RequestCompleted(Box::new(RequestCompleted {
            request_id: self.rid,
            config_version: self.cv,
            status,
            target,
            error,
            total_latency_us: self.started.elapsed().as_micros() as u64,
            ttft_us: self.ttft_us,
            tokens: self.tokens,
            cost: self.cost(),
            attempts: self.attempts,
        }));
        // The reservation is replaced by the actual cost in the step that records it.
        self.engine
            .sequenced(&mut self.sink, Some(event), |state, _| {
                state.budgets.settle(rid, actual);
                ((), [None, None])
            });
        let sink = std::mem::take(&mut self.sink);
        if !self.must_commit {
            return true;
        }
        Engine::committed(sink).await.is_ok()
    }

    /// Ends the request with an error answer (503 `event_log_unavailable` instead if the request
    /// had to be committed and was not).
    async fn fail(&mut self, e: ApiError, class: Option<ErrorClass>) -> ApiError {
        let message = e.message();
        self.fail_stored(e, class, message).await
    }

    /// [`Ctx::fail`], storing `stored` as the error's message instead of the client's one (which
    /// may quote an upstream's error text, see `privacy`).
    async fn fail_stored(
        &mut self,
        e: ApiError,
        class: Option<ErrorClass>,
        stored: String,
    ) -> ApiError {
        let (status, _, code) = e.parts();
        let error = FinalError {
            code: code.to_string(),
            class,
            // Upstream text (and anything else quoted) is cut: the log never shrinks.
            message: crate::limits::clip(&stored, crate::limits::MAX_STORED_TEXT_BYTES),
        };
        if self.finish(status, None, Some(error)).await {
            e
        } else {
            ApiError::NotRecorded
        }
    }

    /// Ends a request whose client went away: 499 `client_closed`, with what was spent so far.
    async fn client_closed(&mut self, target: Option<usize>) -> ApiError {
        let _ = self.finish(499, target, Some(client_closed())).await;
        ApiError::ClientClosed
    }

    fn client_gone(&self) -> bool {
        self.client_gone.load(Ordering::Acquire)
    }

    /// Records one attempt's end and folds it into health. Returns when the target's cooldown
    /// (after a rate limit, say) ends, if it is cooling down now.
    fn attempt_finished(
        &mut self,
        attempt: u16,
        m: usize,
        latency_us: u64,
        tokens: Tokens,
        failure: Option<&Failure>,
        status: Option<u16>,
    ) -> Option<u64> {
        let price = self.cfg.model(m).and_then(|model| model.price.as_ref());
        let cost = pricing::cost(price, &tokens);
        if price.is_none() && total(&tokens) > 0 {
            self.unpriced = true;
        }
        self.cost_micros += micros(&cost);
        add_tokens(&mut self.tokens, &tokens);
        let target = self
            .cfg
            .model(m)
            .map(|model| event_target(&self.cfg, model))
            .unwrap_or_default();
        let event = Event::AttemptFinished(Box::new(AttemptFinished {
            request_id: self.rid,
            config_version: self.cv,
            attempt,
            target,
            status,
            latency_us,
            ttft_us: self.ttft_us,
            tokens,
            cost,
            error: failure.map(|f| AttemptError {
                class: f.class,
                retry_after_ms: f.retry_after_ms,
                message: self.stored(f),
            }),
        }));
        let (cfg, rid) = (&self.cfg, self.rid);
        let id = cfg
            .model(m)
            .map(|model| model.id.as_str())
            .unwrap_or_default();
        let outcome = |model| AttemptOutcome {
            model,
            latency_us,
            error: failure.map(|f| f.class),
            retry_after_ms: failure.and_then(|f| f.retry_after_ms),
        };
        // Folded into Health at the time it is recorded, in the step that records it.
        self.engine
            .sequenced(&mut self.sink, Some(event), |state, now| {
                let i = state.health.resolve(m, id);
                let change = i
                    .and_then(|i| state.health.observe(&outcome(i), now))
                    .map(|t| CircuitTransition { model: m, ..t });
                let cooling = i
                    .and_then(|i| state.health.target(i))
                    .map(|t| t.cooldown_until_ms)
                    .filter(|&until| until > now);
                (
                    cooling,
                    [Engine::circuit_event(cfg, change, Some(rid)), None],
                )
            })
    }

    /// Whether `f`'s message is the upstream's text and must not be stored.
    fn withholds(&self, f: &Failure) -> bool {
        f.upstream_kind.is_some() && !self.cfg.log.store_bodies
    }

    /// A failure's message as it may be stored (the upstream's text only with `store_bodies`).
    fn stored(&self, f: &Failure) -> String {
        // The audit key is read (or made) only when a text is to be withheld.
        let key = if self.withholds(f) {
            self.engine.audit_key()
        } else {
            [0; 32]
        };
        privacy::stored_message(f, self.cfg.log.store_bodies, &key)
    }

    fn budget_exceeded(&self, g: &Guard, outcome: String) -> Event {
        let session_id = self.input.session.clone().unwrap_or_default();
        Event::BudgetExceeded(Box::new(BudgetExceeded {
            request_id: self.rid,
            config_version: self.cv,
            session_id,
            limit: Cost::Micros(g.limit_micros),
            spent: Cost::Micros(g.spent_micros),
            reserved: Cost::Micros(g.reserved_micros),
            action: g.action,
            outcome,
        }))
    }
}

/// Waits for the first frame of a stream, within the time-to-first-token limit. A stream that
/// breaks before its first frame is a network failure (nothing reached the client).
async fn first_frame(
    s: &mut ChunkStream,
    deadline: tokio::time::Instant,
    usage: &mut Tokens,
) -> Result<Bytes, Failure> {
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => {
                return Err(Failure::new(
                    ErrorClass::Timeout,
                    None,
                    "no first token within the time-to-first-token limit",
                ));
            }
            Ok(None) | Ok(Some(Ok(Chunk::Done))) => {
                return Err(Failure::new(
                    ErrorClass::Network,
                    None,
                    "stream ended before any data",
                ));
            }
            Ok(Some(Err(f))) if f.class == ErrorClass::StreamCut => {
                return Err(Failure {
                    class: ErrorClass::Network,
                    ..f
                });
            }
            Ok(Some(Err(f))) => return Err(f),
            Ok(Some(Ok(Chunk::Usage(u)))) => *usage = u,
            Ok(Some(Ok(Chunk::Frame(b)))) => return Ok(b),
        }
    }
}

fn in_band_error(message: &str, code: &str) -> Bytes {
    let v = json!({ "error": {
        "message": message, "type": "api_error", "param": null, "code": code } });
    Bytes::from(format!("data: {v}\n\n"))
}

impl Engine {
    /// Serves one chat completion. See the module docs for the flow. The flow runs in a task of
    /// its own, so dropping this future (the client went away) never cuts a request short.
    pub async fn chat(self: &Arc<Self>, input: ChatInput) -> ChatOutput {
        let (rid, seed) = self.new_request();
        let gone = Arc::new(AtomicBool::new(false));
        let flow = Arc::clone(self).chat_task(input, rid, seed, Arc::clone(&gone));
        Detach::new(flow, Some(gone)).await
    }

    async fn chat_task(
        self: Arc<Self>,
        input: ChatInput,
        rid: RequestId,
        seed: u64,
        client_gone: Arc<AtomicBool>,
    ) -> ChatOutput {
        let mut out = ChatOutput {
            request_id: rid,
            route: None,
            budget_alert: false,
            result: Err(ApiError::LogUnavailable),
        };
        if self.refusing() {
            return out;
        }
        let cfg = self.config();
        let body_hash = Hash32::of(&input.raw);
        let body_stored = cfg.log.store_bodies && self.log.put_blob(input.raw.to_vec()).is_ok();
        let received = Event::RequestReceived(Box::new(RequestReceived {
            request_id: rid,
            config_version: cfg.version(),
            session_id: input.session.clone(),
            api_key_id: input.key_id,
            endpoint: "/v1/chat/completions".into(),
            requested: input.requested.clone(),
            stream: input.stream,
            est_prompt_tokens: input.est_prompt_tokens,
            max_tokens: input.max_tokens,
            body_hash,
            body_stored,
            task_hint: input.task.clone(),
            min_tier: input.min_tier,
        }));
        let mut ctx = Ctx {
            engine: Arc::clone(&self),
            cv: cfg.version(),
            must_commit: cfg.log.durability == Durability::Strict,
            cfg,
            rid,
            input,
            started: Instant::now(),
            attempts: 0,
            tokens: Tokens::default(),
            cost_micros: 0,
            unpriced: false,
            ttft_us: None,
            sink: Sink::default(),
            client_gone,
        };
        ctx.record(received);
        out.result = run(&mut ctx, seed, &mut out.route, &mut out.budget_alert).await;
        out
    }
}

async fn run(
    ctx: &mut Ctx,
    seed: u64,
    route: &mut Option<(String, u16)>,
    alert: &mut bool,
) -> Result<ChatReply, ApiError> {
    let (targets, mut unserved) = ctx.route(seed, alert).await?;
    let res = ctx.cfg.resilience;
    let mut jitter = step::jitter_rng(seed);
    // What the client is told, and what is stored (`privacy`).
    let mut failures: Vec<String> = Vec::new();
    let mut stored: Vec<String> = Vec::new();
    let mut last_class = None;
    for (ti, &m) in targets.iter().enumerate() {
        let mut retries = 0;
        let mut last;
        loop {
            ctx.attempts += 1;
            let attempt = ctx.attempts;
            let t0 = Instant::now();
            let f = match ctx.attempt(m, attempt).await {
                Ok((reply, first, usage)) => {
                    *route = Some((ctx.target_name(m), attempt));
                    return ctx.answer(reply, first, usage, t0, m, attempt).await;
                }
                Err(f) => f,
            };
            let latency = t0.elapsed().as_micros() as u64;
            let until =
                ctx.attempt_finished(attempt, m, latency, Tokens::default(), Some(&f), f.status);
            // The last failure of a target is what it stands for in the final status.
            last = Some(Unserved::Failed {
                model: m,
                class: f.class,
                until_ms: until,
            });
            if ctx.client_gone() {
                // Nobody waits for the answer: no further attempt is worth paying for.
                return Err(ctx.client_closed(None).await);
            }
            last_class = Some(f.class);
            let line = |message: &str| {
                format!(
                    "attempt {attempt} {}: {:?}{} {}",
                    ctx.target_name(m),
                    f.class,
                    f.status.map(|s| format!(" ({s})")).unwrap_or_default(),
                    message.chars().take(120).collect::<String>()
                )
            };
            failures.push(line(&f.message));
            stored.push(if ctx.withholds(&f) {
                // Not cut at 120: the kind and hash are all that is kept of the text.
                let name = ctx.target_name(m);
                format!("attempt {attempt} {name}: {:?} {}", f.class, ctx.stored(&f))
            } else {
                line(&f.message)
            });
            let next = targets.get(ti + 1);
            match step::next(f.class, retries, next.is_some(), &res, &mut jitter) {
                step::Next::Retry { after_ms } => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                }
                step::Next::Refuse => {
                    let refused = |message: &str| {
                        format!("{} refused the request: {message}", ctx.target_name(m))
                    };
                    let kept = refused(&ctx.stored(&f));
                    let e = ApiError::Upstream {
                        status: f.status.filter(|s| (400..500).contains(s)).unwrap_or(502),
                        message: refused(&f.message),
                    };
                    return Err(ctx.fail_stored(e, Some(f.class), kept).await);
                }
                step::Next::FallBack => {
                    if let Some(&to) = next {
                        ctx.fallback(attempt, m, to, f.class);
                    }
                    break;
                }
                step::Next::Exhausted => break,
            }
        }
        unserved.extend(last);
    }
    // The client's answer quotes the attempts' errors; what is stored withholds upstream text.
    let kept = ctx.unserved(&unserved, true, stored).message();
    let e = ctx.unserved(&unserved, true, failures);
    Err(ctx.fail_stored(e, last_class, kept).await)
}

impl Ctx {
    /// The routing step: budget verdict, `RouteInput` assembly and decision, made and recorded in
    /// one critical section (`flow::route`), so the reservation and Health it saw are the ones
    /// the log implies. Returns the planned targets and the excluded ones, or the refusal.
    async fn route(
        &mut self,
        seed: u64,
        alert: &mut bool,
    ) -> Result<(Vec<usize>, Vec<Unserved>), ApiError> {
        let facts = Facts {
            requested: &self.input.requested,
            est_prompt_tokens: self.input.est_prompt_tokens,
            max_tokens: self.input.max_tokens,
            min_tier: self.input.min_tier,
            session: self.input.session.as_deref(),
            required: self.input.required,
        };
        let (rid, cfg) = (self.rid, Arc::clone(&self.cfg));
        let mut sink = std::mem::take(&mut self.sink);
        // The decision's event moves into the log; what the request needs of it comes back.
        let (routed, verdict, cap) = self.engine.sequenced(&mut sink, None, |state, now| {
            match flow::route_and_apply(&facts, rid, seed, now, state, &cfg) {
                Routed::Decided {
                    decision,
                    event,
                    verdict,
                } => {
                    let exceeded = match verdict {
                        Verdict::Degrade { tier, guard, .. } => {
                            Some(self.budget_exceeded(&guard, format!("degraded to tier {tier}")))
                        }
                        Verdict::Alert { guard, .. } => {
                            Some(self.budget_exceeded(&guard, "served with alert".into()))
                        }
                        _ => None,
                    };
                    let cap = event.input.max_tokens;
                    (
                        (Ok(decision), verdict, cap),
                        [exceeded, Some(Event::RouteDecidedV2(event))],
                    )
                }
                Routed::Blocked { guard, worst } => (
                    (
                        Err(Routed::Blocked { guard, worst }),
                        Verdict::Blocked(guard),
                        None,
                    ),
                    [Some(self.budget_exceeded(&guard, "blocked".into())), None],
                ),
                Routed::Unroutable { error, verdict } => (
                    (Err(Routed::Unroutable { error, verdict }), verdict, None),
                    [None, None],
                ),
            }
        });
        self.sink = sink;
        // A guarded session's spend is rebuilt from the log after a restart: its answers wait
        // until what they spent is committed, so a crash can never forget spend a client saw.
        self.must_commit |= verdict != Verdict::Unguarded;
        let decision = match routed {
            Ok(decision) => {
                *alert = matches!(verdict, Verdict::Alert { .. });
                // A guard capped an unbounded request: the upstream must be held to it too.
                if cap != self.input.max_tokens
                    && let Some(cap) = cap
                {
                    self.input.body["max_tokens"] = json!(cap);
                    self.input.max_tokens = Some(cap);
                }
                decision
            }
            Err(Routed::Blocked { guard: g, worst }) => {
                let message = format!(
                    "session budget exceeded: ${:.6} spent and ${:.6} reserved of ${:.6}; this request could cost up to ${:.6}",
                    g.spent_micros as f64 / 1e6,
                    g.reserved_micros as f64 / 1e6,
                    g.limit_micros as f64 / 1e6,
                    worst as f64 / 1e6
                );
                return Err(self.fail(ApiError::BudgetExceeded { message }, None).await);
            }
            Err(Routed::Unroutable {
                error: RouteError::Unknown(m),
                ..
            }) => return Err(self.fail(ApiError::UnknownModel(m), None).await),
            Err(Routed::Unroutable {
                error: RouteError::Inactive(c),
                ..
            }) => return Err(self.fail(ApiError::ComboInactive(c), None).await),
            Err(Routed::Decided { .. }) => {
                return Err(self
                    .fail(ApiError::Internal("routing step out of order".into()), None)
                    .await);
            }
        };
        let targets: Vec<usize> = decision.targets().collect();
        let excluded: Vec<Unserved> = decision
            .candidates
            .iter()
            .filter_map(|c| {
                let e = c.excluded?;
                Some(Unserved::Excluded {
                    model: c.model,
                    reason: e.reason,
                    until_ms: e.until_ms,
                })
            })
            .collect();
        if targets.is_empty() {
            let reasons = decision
                .candidates
                .iter()
                .filter_map(|c| {
                    let e = c.excluded?;
                    Some(format!(
                        "{}: {:?} ({})",
                        self.target_name(c.model),
                        e.reason,
                        e.detail
                    ))
                })
                .collect();
            let e = self.unserved(&excluded, false, reasons);
            return Err(self.fail(e, None).await);
        }
        Ok((targets, excluded))
    }

    /// The answer when no target served: the status table of [`outcome::unserved`], at the
    /// engine's time now (cooldown ends are on the same clock).
    fn unserved(&self, targets: &[Unserved], attempted: bool, detail: Vec<String>) -> ApiError {
        let asked = Asked {
            requested: &self.input.requested,
            est_prompt_tokens: self.input.est_prompt_tokens,
            max_tokens: self.input.max_tokens,
            required: self.input.required,
            min_tier: self.input.min_tier,
        };
        let now = self.engine.now_ms();
        outcome::unserved(targets, &asked, &self.cfg, now, attempted, detail)
    }

    /// One attempt on target `m`: `AttemptStarted`, the provider call and, for a stream, its first
    /// frame within the time-to-first-token limit.
    async fn attempt(
        &mut self,
        m: usize,
        attempt: u16,
    ) -> Result<(Reply, Option<Bytes>, Tokens), Failure> {
        let cfg = Arc::clone(&self.cfg);
        let (Some(model), Some(provider)) =
            (cfg.model(m), cfg.model(m).and_then(|x| cfg.provider_of(x)))
        else {
            return Err(Failure::new(
                ErrorClass::ServerError,
                None,
                "target missing from config",
            ));
        };
        let event = Event::AttemptStarted(Box::new(AttemptStarted {
            request_id: self.rid,
            config_version: self.cv,
            attempt,
            target: event_target(&cfg, model),
            upstream_model: model.upstream.clone(),
            timeout_ms: provider.timeout_ms,
        }));
        // In flight from the step that records it (a half-open breaker lets its probe through).
        let rid = self.rid;
        self.engine
            .sequenced(&mut self.sink, Some(event), |state, now| {
                let probe = state
                    .health
                    .resolve(m, &model.id)
                    .and_then(|i| state.health.start(i, now))
                    .map(|t| CircuitTransition { model: m, ..t });
                ((), [Engine::circuit_event(&cfg, probe, Some(rid)), None])
            });
        let id = format!("chatcmpl-{}", self.rid);
        let call = Call {
            http: &self.engine.http,
            endpoints: &self.engine.endpoints,
            provider,
            model,
            body: &self.input.body,
            stream: self.input.stream,
            client_wants_usage: self.input.wants_usage,
            id: &id,
            created: self.engine.clock.now_ms() / 1000,
            timeout: Duration::from_millis(provider.timeout_ms),
            requested: &self.input.requested,
        };
        let ttft =
            tokio::time::Instant::now() + Duration::from_millis(cfg.resilience.ttft_timeout_ms);
        let mut usage = Tokens::default();
        match providers::call(&call).await? {
            reply @ Reply::Full { .. } if !self.input.stream => Ok((reply, None, usage)),
            Reply::Stream(mut s) if self.input.stream => {
                let first = first_frame(&mut s, ttft, &mut usage).await?;
                Ok((Reply::Stream(s), Some(first), usage))
            }
            _ => Err(Failure::new(
                ErrorClass::ServerError,
                None,
                "provider answered in the wrong mode",
            )),
        }
    }

    /// Answers with a successful attempt: a whole body now, or a stream pumped as it arrives.
    async fn answer(
        &mut self,
        reply: Reply,
        first: Option<Bytes>,
        usage: Tokens,
        t0: Instant,
        m: usize,
        attempt: u16,
    ) -> Result<ChatReply, ApiError> {
        match reply {
            Reply::Full { body, tokens } => {
                let latency = t0.elapsed().as_micros() as u64;
                self.attempt_finished(attempt, m, latency, tokens, None, Some(200));
                if self.client_gone() {
                    return Err(self.client_closed(Some(m)).await);
                }
                if !self.finish(200, Some(m), None).await {
                    return Err(ApiError::NotRecorded);
                }
                Ok(ChatReply::Json(body))
            }
            Reply::Stream(s) => {
                self.ttft_us = Some(t0.elapsed().as_micros() as u64);
                let first = first.unwrap_or_default();
                Ok(ChatReply::Stream(relay(Relay {
                    ctx: Some(self.take()),
                    s,
                    first: Some(first),
                    attempt,
                    m,
                    t0,
                    usage,
                })))
            }
        }
    }

    fn fallback(&mut self, attempt: u16, from: usize, to: usize, reason: ErrorClass) {
        let (Some(from), Some(to)) = (self.cfg.model(from), self.cfg.model(to)) else {
            return;
        };
        let event = FallbackTriggered {
            request_id: self.rid,
            config_version: self.cv,
            attempt,
            from: event_target(&self.cfg, from),
            to: event_target(&self.cfg, to),
            reason,
        };
        self.record(Event::FallbackTriggered(Box::new(event)));
    }
}

impl Ctx {
    /// Moves the request state out (into the stream pump), leaving an inert copy behind.
    fn take(&mut self) -> Ctx {
        Ctx {
            engine: Arc::clone(&self.engine),
            cfg: Arc::clone(&self.cfg),
            cv: self.cv,
            rid: self.rid,
            input: ChatInput {
                body: Value::Null,
                raw: Bytes::new(),
                requested: self.input.requested.clone(),
                stream: self.input.stream,
                wants_usage: self.input.wants_usage,
                est_prompt_tokens: self.input.est_prompt_tokens,
                max_tokens: self.input.max_tokens,
                required: self.input.required,
                min_tier: self.input.min_tier,
                task: None,
                session: self.input.session.clone(),
                key_id: self.input.key_id,
            },
            started: self.started,
            attempts: self.attempts,
            tokens: self.tokens,
            cost_micros: self.cost_micros,
            unpriced: self.unpriced,
            ttft_us: self.ttft_us,
            must_commit: self.must_commit,
            sink: std::mem::take(&mut self.sink),
            client_gone: Arc::clone(&self.client_gone),
        }
    }
}

/// The body of a streamed answer: SSE frames as they arrive from the upstream.
pub type FrameStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>>;

/// A stream being relayed to the client, and the request it ends.
struct Relay {
    /// `None` once the request's end is recorded.
    ctx: Option<Ctx>,
    s: ChunkStream,
    first: Option<Bytes>,
    attempt: u16,
    m: usize,
    t0: Instant,
    usage: Tokens,
}

impl Relay {
    /// Records the attempt's and the request's end; made even if the client leaves meanwhile
    /// (a [`Detach`]); resolves to whether the answer may be acknowledged.
    fn end(
        &mut self,
        status: u16,
        failure: Option<Failure>,
        error: Option<FinalError>,
    ) -> Detach<bool> {
        let (attempt, m, usage) = (self.attempt, self.m, self.usage);
        let latency = self.t0.elapsed().as_micros() as u64;
        let ctx = self.ctx.take();
        Detach::new(
            async move {
                let Some(mut ctx) = ctx else { return false };
                ctx.attempt_finished(attempt, m, latency, usage, failure.as_ref(), Some(200));
                ctx.finish(status, Some(m), error).await
            },
            None,
        )
    }
}

/// A client that goes away drops the body, and with it this relay: the upstream stream is
/// dropped (no more tokens paid for) and the request completes as `client_closed` with the usage
/// known so far.
impl Drop for Relay {
    fn drop(&mut self) {
        if self.ctx.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            drop(self.end(499, None, Some(client_closed())));
        }
    }
}

/// Relays a stream to the client as it arrives, polled by the client's connection itself (no
/// task or channel in between, so a piece costs no extra wake-up), and records its end. A broken
/// stream ends with an in-band error frame (no `[DONE]`); `[DONE]` is sent once the request is
/// recorded, or an in-band `event_log_unavailable` error if it had to be and was not.
fn relay(r: Relay) -> FrameStream {
    let idle = r
        .ctx
        .as_ref()
        .and_then(|ctx| {
            ctx.cfg
                .model(r.m)
                .and_then(|model| ctx.cfg.provider_of(model))
        })
        .map(|p| Duration::from_millis(p.timeout_ms))
        .unwrap_or(Duration::from_secs(60));
    Box::pin(futures_util::stream::unfold(r, move |mut r| async move {
        if let Some(b) = r.first.take() {
            return Some((b, r));
        }
        r.ctx.as_ref()?;
        let cut = |m: &str| Failure::new(ErrorClass::StreamCut, None, m);
        let failure = loop {
            match tokio::time::timeout(idle, r.s.next()).await {
                Err(_) => break cut("upstream stream stalled"),
                Ok(None) => break cut("upstream stream ended early"),
                Ok(Some(Ok(Chunk::Frame(b)))) => return Some((b, r)),
                Ok(Some(Ok(Chunk::Usage(u)))) => r.usage = u,
                Ok(Some(Ok(Chunk::Done))) => {
                    let committed = r.end(200, None, None).await;
                    let last = if committed {
                        Bytes::from_static(b"data: [DONE]\n\n")
                    } else {
                        let e = ApiError::NotRecorded;
                        in_band_error(&e.message(), e.parts().2)
                    };
                    return Some((last, r));
                }
                Ok(Some(Err(f))) => {
                    break Failure {
                        class: ErrorClass::StreamCut,
                        ..f
                    };
                }
            }
        };
        let broke = |m: &str| format!("the upstream stream broke after it started: {m}");
        let message = broke(&failure.message);
        let kept = r
            .ctx
            .as_ref()
            .map(|c| c.stored(&failure))
            .unwrap_or_default();
        let error = FinalError {
            code: "stream_cut".into(),
            class: Some(ErrorClass::StreamCut),
            message: crate::limits::clip(&broke(&kept), crate::limits::MAX_STORED_TEXT_BYTES),
        };
        drop(r.end(200, Some(failure), Some(error)));
        Some((in_band_error(&message, "stream_cut"), r))
    }))
}
