//! The HTTP surface (axum). `app` maps paths to handlers; each handler extracts what it needs and
//! calls one function of the engine. `serve` takes a bound listener and a shutdown future, so tests
//! run the gateway in-process on port 0.

pub(crate) mod request;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router, middleware};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use omniroute_replay::ReplayRequest;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use axum::body::Bytes;
use omniroute_core::flow::fold::DecisionReport;
use omniroute_projections::audit::AuditView;
use omniroute_projections::cost::Report as CostReport;
use omniroute_projections::explain::Explain;
use omniroute_projections::providers::ProviderView;
use omniroute_projections::sessions::SessionView;
use omniroute_replay::ReplayReport;

use crate::admin::{self, CostParams, TailParams};
use crate::engine::{ChatReply, Engine};
use crate::error::ApiError;
use crate::mcp::OmniMcp;
use crate::ops::auth::{self, Caller, Scope};
use crate::ops::{control, execute, log, read};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after() {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        r
    }
}

type AppState = Arc<Engine>;

pub fn app(engine: Arc<Engine>) -> Router {
    app_with(engine, CancellationToken::new())
}

/// The router, with MCP sessions (`/mcp`) that end when `mcp_stop` is cancelled (their open
/// event streams would otherwise hold a graceful shutdown).
pub fn app_with(engine: Arc<Engine>, mcp_stop: CancellationToken) -> Router {
    let e = Arc::clone(&engine);
    let mcp = StreamableHttpService::new(
        move || Ok(OmniMcp::new(Arc::clone(&e), None)),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .with_cancellation_token(mcp_stop),
    );
    let mcp = Router::new()
        .route_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&engine),
            mcp_caller,
        ));
    use crate::ops::routes as r;
    Router::new()
        .merge(mcp)
        .route(r::CHAT.path, post(chat))
        .route(r::MODELS.path, get(models))
        .route(r::HEALTH.path, get(health))
        .route(r::LIVE.path, get(live))
        .route(r::READY.path, get(ready))
        .route(r::MODEL_CATALOG.path, get(catalog))
        .route(r::SET_BUDGET.path, post(set_budget))
        .route(r::SESSION.path, get(session))
        .route(r::EXPLAIN.path, get(explain))
        .route(r::COST.path, get(cost))
        .route(r::REPRICE.path, post(reprice))
        .route(r::PROVIDERS.path, get(providers))
        .route(r::COMBOS.path, get(combos))
        .route(r::PATCH_COMBO.path, patch(patch_combo))
        .route(r::COMBO_ROUTING.path, axum::routing::put(combo_routing))
        .route(r::TEST_COMBO.path, post(test_combo))
        .route(r::BEST_COMBO.path, get(best_combo))
        .route(r::PROVIDER_METRICS.path, get(provider_metrics))
        .route(r::QUOTA.path, get(quota))
        .route(r::RESILIENCE.path, axum::routing::put(resilience))
        .route(r::SIMULATE.path, post(simulate))
        .route(r::AUDIT.path, get(audit))
        .route(r::LOG_STATS.path, get(log_stats))
        .route(r::LOG_VERIFY.path, get(log_verify))
        .route(r::LOG_DECISIONS.path, get(log_decisions))
        .route(r::LOG_TAIL.path, get(log_tail))
        .route(r::REPLAY.path, post(replay))
        .route(r::KEYS.path, get(keys))
        .route(r::CREATE_KEY.path, post(create_key))
        .route(r::REVOKE_KEY.path, axum::routing::delete(revoke_key))
        .fallback(not_found)
        .with_state(engine)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
///
/// Connections are served here rather than by `axum::serve`, which reads headers without a
/// deadline (a client dripping one byte at a time held its connection forever, issue 15):
/// - headers must arrive within `server.header_read_timeout_ms` (HTTP/1; hyper closes the
///   connection otherwise), and a silent connection is closed after the same time;
/// - at most `server.max_connections` connections are served at once. At the limit the server
///   stops accepting: further connections wait in the kernel's accept queue (and are refused by
///   the kernel once it is full) until a served one ends, so a flood holds at most that many
///   descriptors and every slot frees itself within the read timeouts;
/// - the body read timeout is the chat handler's (`server.body_read_timeout_ms`, a 408).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let heartbeat = tokio::spawn(heartbeat());
    let server = engine.config().server.clone();
    let mcp_stop = CancellationToken::new();
    let mut make =
        app_with(engine, mcp_stop.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout());
    // As axum::serve: the CONNECT protocol, for HTTP/2 WebSockets.
    builder.http2().enable_connect_protocol();
    let header_timeout = server.header_read_timeout();
    let max = server.max_connections();
    let slots = Arc::new(Semaphore::new(max));
    let draining = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        no_delay(&stream);
        let Ok(svc) = make.call(remote).await;
        let svc = TowerToHyperService::new(svc);
        let builder = builder.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            // HTTP/1's header timer starts once the protocol is known; auto-detection first
            // waits for a byte, so a connection that sends nothing is cut here after the same
            // time.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return drop(permit),
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = draining.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    // MCP sessions' open event streams would otherwise hold the drain.
    mcp_stop.cancel();
    draining.cancel();
    // Every connection holds a slot until it ends: all slots back means all connections done.
    let _ = slots.acquire_many(max.min(u32::MAX as usize) as u32).await;
    heartbeat.abort();
    Ok(())
}

/// An `accept` that failed. Errors of one connection (reset before it was accepted) are
/// skipped; others (out of descriptors) are waited out briefly, as axum::serve does, so the
/// loop does not spin while the process is at its descriptor limit.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Sets `TCP_NODELAY` on every accepted connection. A streamed answer is many small writes (one
/// per SSE frame, then the chunked-encoding terminator); with Nagle's algorithm on, each small
/// write behind unacknowledged data waits for the client's delayed ACK, so every streamed answer
/// on a keep-alive connection ended ~40 ms late with the CPU idle (issue 10). Every frame is worth
/// sending at once: the writes are already as large as the data that has arrived.
fn no_delay(s: &tokio::net::TcpStream) {
    // Fails only on a socket that is already broken; the connection then fails on its own.
    let _ = s.set_nodelay(true);
}

/// Keeps one short timer always pending in the runtime. tokio wakes a worker parked in the I/O
/// driver whenever a timer is set earlier than the driver's next wake-up, and with no timer
/// pending that is every timer: each request's attempt timeout then cost a cross-thread wake-up
/// (an eventfd write and a context switch, ~2 per request under strace). With this tick pending,
/// the per-request timeouts (seconds away) never move the wake-up earlier.
async fn heartbeat() {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Who is calling (`ops::auth`): the owner token, a key, or loopback while no key exists.
fn caller(engine: &Engine, headers: &HeaderMap, remote: SocketAddr) -> Result<Caller, ApiError> {
    auth::authenticate(
        &engine.keys,
        engine.owner_token.get().map(String::as_str),
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        remote.ip().is_loopback(),
    )
}

/// Authenticates every `/mcp` request before rmcp sees it (401/403 in the OpenAI error shape)
/// and hands the caller to the tools in the request's extensions: each tool checks its own
/// scope, and a revoked key fails on its next request.
async fn mcp_caller(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let c = match caller(&engine, req.headers(), remote) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // A caller without a bearer token is the loopback owner (no key exists yet). A web page can
    // reach loopback through a name that resolves to it (DNS rebinding) but cannot add a bearer
    // token, so only that caller must name a loopback host. rmcp's own Host allowlist is off:
    // it would refuse every key-holding client that reaches the gateway by its real name.
    let authz = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth::bearer(authz).is_none() && !loopback_host(&req) {
        return ApiError::Forbidden(
            "without an API key, /mcp answers only requests addressed to a loopback host \
             (localhost, 127.0.0.1, [::1])"
                .into(),
        )
        .into_response();
    }
    req.extensions_mut().insert(c);
    next.run(req).await
}

/// Whether the request names a loopback host (`Host`, or the URI's authority in HTTP/2).
fn loopback_host(req: &axum::extract::Request) -> bool {
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The caller, when its scopes grant `scope`.
fn allow(
    engine: &Engine,
    headers: &HeaderMap,
    remote: SocketAddr,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let c = caller(engine, headers, remote)?;
    auth::authorize(&c, scope)?;
    Ok(c)
}

fn header(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok()
}

async fn chat(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key_id = match allow(&engine, &headers, remote, Scope::ExecuteCompletions) {
        Ok(c) => c.key,
        Err(e) => return e.into_response(),
    };
    let server = &engine.config().server;
    let limit = server.max_body_bytes;
    let wait = server.body_read_timeout();
    // A client that stops mid-body would otherwise hold the connection (and its slot) forever.
    let raw = match tokio::time::timeout(wait, axum::body::to_bytes(body, limit as usize)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return ApiError::PayloadTooLarge { limit }.into_response(),
        Err(_) => {
            let limit_ms = wait.as_millis() as u64;
            return ApiError::RequestTimeout { limit_ms }.into_response();
        }
    };
    let mut input = match request::parse(raw, &headers) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    input.key_id = key_id;
    let out = engine.chat(input).await;
    let mut resp = match out.result {
        Ok(ChatReply::Json(bytes)) => (
            [("content-type", HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Ok(ChatReply::Stream(frames)) => {
            use futures_util::StreamExt;
            let mut r = Body::from_stream(frames.map(Ok::<_, Infallible>)).into_response();
            let h = r.headers_mut();
            h.insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert("cache-control", HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    if let Some(v) = header(&out.request_id.to_string()) {
        h.insert("x-omniroute-request-id", v);
    }
    if let Some(v) = out
        .route
        .and_then(|(target, attempts)| header(&format!("{target}; attempts={attempts}")))
    {
        h.insert("x-omniroute-route", v);
    }
    if out.budget_alert {
        h.insert("x-omniroute-budget", HeaderValue::from_static("exceeded"));
    }
    resp
}

async fn models(op: Op) -> Result<Json<Value>, ApiError> {
    read::models(&op.engine, &op.caller).map(Json)
}

async fn catalog(
    op: Op,
    q: Result<Query<read::CatalogArgs>, QueryRejection>,
) -> Result<Json<read::CatalogOut>, ApiError> {
    read::catalog(&op.engine, &op.caller, &query(q)?).map(Json)
}

/// 200 while the log is written, 503 (same body) while it cannot be: `"failing"` when requests
/// are refused meanwhile (`log.on_failure = "refuse"`), `"degraded"` when they are served
/// unrecorded (`"serve"`). Load balancers and monitors only need the status code.
async fn health(op: Op) -> Result<Response, ApiError> {
    let h = read::health(&op.engine, &op.caller)?;
    let code = if h.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, Json(h)).into_response())
}

/// Liveness: answering at all is the answer (no auth, a tiny body).
async fn live() -> &'static str {
    "ok\n"
}

/// Readiness: 200 `ok`, or 503 with the reason in a few words (no auth: nothing in it is private).
async fn ready(axum::extract::State(engine): axum::extract::State<Arc<Engine>>) -> Response {
    match read::not_ready(&engine) {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// The body of `POST /api/sessions/{id}/budget` (the session is in the path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    max_cost_usd: f64,
    action: control::BudgetActionName,
    degrade_to_tier: Option<u8>,
}

async fn set_budget(
    op: Op,
    Path(session_id): Path<String>,
    b: Bytes,
) -> Result<Json<control::BudgetGuardOut>, ApiError> {
    crate::limits::session_id(&session_id, "id")?;
    let b: BudgetBody = body(&b, "budget body")?;
    let args = control::SetBudgetGuardArgs {
        session_id,
        max_cost_usd: b.max_cost_usd,
        action: b.action,
        degrade_to_tier: b.degrade_to_tier,
    };
    control::set_budget_guard(&op.engine, &op.caller, args)
        .await
        .map(Json)
}

// ---- read models (DESIGN.md section 5) and the log (`omniroute log stats | verify | tail`,
// `keys` while serving): each handler is one call into the operations layer (`crate::ops`),
// which checks the caller's scope; the CLI calls the same functions on a data dir no server
// owns ----

/// The engine and the authenticated caller of an admin request (`ops::auth`: the owner token,
/// a key, or loopback while no key exists). Each operation checks the scopes it needs.
struct Op {
    engine: AppState,
    caller: Caller,
}

impl axum::extract::FromRequestParts<AppState> for Op {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Op, ApiError> {
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(|| ApiError::Internal("no peer address".into()))?;
        Ok(Op {
            engine: Arc::clone(state),
            caller: caller(state, &parts.headers, remote)?,
        })
    }
}

/// A query string, or a 400 naming what is wrong with it.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text()), None))
}

/// A JSON body, or a 400 naming what is wrong with it (`what` says what it should be).
fn body<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::bad(format!("invalid {what}: {e}"), None))
}

async fn explain(op: Op, Path(id): Path<String>) -> Result<Json<Explain>, ApiError> {
    read::explain(&op.engine, &op.caller, &id).await.map(Json)
}

async fn session(op: Op, Path(id): Path<String>) -> Result<Json<SessionView>, ApiError> {
    crate::limits::session_id(&id, "id")?;
    read::session(&op.engine, &op.caller, &id).await.map(Json)
}

async fn cost(
    op: Op,
    q: Result<Query<CostParams>, QueryRejection>,
) -> Result<Json<CostReport>, ApiError> {
    read::cost(&op.engine, &op.caller, &query(q)?)
        .await
        .map(Json)
}

async fn reprice(op: Op, b: Bytes) -> Result<Json<CostReport>, ApiError> {
    let p = body(&b, "re-pricing body")?;
    read::reprice(&op.engine, &op.caller, p).await.map(Json)
}

async fn providers(op: Op) -> Result<Json<Vec<ProviderView>>, ApiError> {
    read::providers(&op.engine, &op.caller).await.map(Json)
}

async fn audit(op: Op) -> Result<Json<AuditView>, ApiError> {
    read::audit(&op.engine, &op.caller).await.map(Json)
}

async fn combos(op: Op) -> Result<Json<Vec<admin::ComboView>>, ApiError> {
    read::combos(&op.engine, &op.caller).await.map(Json)
}

async fn patch_combo(
    op: Op,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<control::ComboChangeOut>, ApiError> {
    let p = body(
        &b,
        "combo patch (send {\"active\": bool, \"strategy\": \"priority\"|\"weighted\"|...})",
    )?;
    control::patch_combo(&op.engine, &op.caller, &id, p)
        .await
        .map(Json)
}

/// The body of `PUT /api/combos/{id}/routing`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingBody {
    strategy: control::StrategyName,
    weights: Option<std::collections::BTreeMap<String, u32>>,
}

async fn combo_routing(
    op: Op,
    Path(combo_id): Path<String>,
    b: Bytes,
) -> Result<Json<control::ComboChangeOut>, ApiError> {
    let b: RoutingBody = body(
        &b,
        "routing body (send {\"strategy\": \"weighted\", \"weights\": {\"model\": 3}})",
    )?;
    let args = control::SetRoutingStrategyArgs {
        combo_id,
        strategy: b.strategy,
        weights: b.weights,
    };
    control::set_routing_strategy(&op.engine, &op.caller, args)
        .await
        .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestBody {
    test_prompt: String,
}

async fn test_combo(
    op: Op,
    Path(combo_id): Path<String>,
    b: Bytes,
) -> Result<Json<execute::TestComboOut>, ApiError> {
    let b: TestBody = body(&b, "test body (send {\"testPrompt\": \"...\"})")?;
    let args = execute::TestComboArgs {
        combo_id,
        test_prompt: b.test_prompt,
    };
    execute::test_combo(&op.engine, &op.caller, args)
        .await
        .map(Json)
}

async fn best_combo(
    op: Op,
    q: Result<Query<execute::BestComboArgs>, QueryRejection>,
) -> Result<Json<execute::BestComboOut>, ApiError> {
    execute::best_combo_for_task(&op.engine, &op.caller, query(q)?)
        .await
        .map(Json)
}

async fn provider_metrics(
    op: Op,
    Path(provider): Path<String>,
) -> Result<Json<execute::ProviderMetricsOut>, ApiError> {
    let args = execute::ProviderMetricsArgs { provider };
    execute::provider_metrics(&op.engine, &op.caller, args)
        .await
        .map(Json)
}

async fn quota(
    op: Op,
    q: Result<Query<control::CheckQuotaArgs>, QueryRejection>,
) -> Result<Json<control::QuotaOut>, ApiError> {
    control::check_quota(&op.engine, &op.caller, query(q)?)
        .await
        .map(Json)
}

async fn resilience(op: Op, b: Bytes) -> Result<Json<control::ResilienceOut>, ApiError> {
    let args = body(&b, "resilience body (send {\"profile\": \"balanced\"})")?;
    control::set_resilience_profile(&op.engine, &op.caller, args)
        .await
        .map(Json)
}

async fn simulate(op: Op, b: Bytes) -> Result<Json<execute::SimulateOut>, ApiError> {
    let args: execute::SimulateArgs = body(&b, "simulation body")?;
    execute::simulate_route(&op.engine, &op.caller, &args).map(Json)
}

async fn log_stats(op: Op) -> Result<Json<admin::LogStatsView>, ApiError> {
    log::stats(&op.engine, &op.caller).await.map(Json)
}

async fn log_verify(op: Op) -> Result<Json<admin::LogVerifyView>, ApiError> {
    log::verify(&op.engine, &op.caller).await.map(Json)
}

/// Every recorded decision derived again from the log alone (`log verify --decisions`).
async fn log_decisions(op: Op) -> Result<Json<DecisionReport>, ApiError> {
    log::decisions(&op.engine, &op.caller).await.map(Json)
}

/// `?n=N` (the last N), or `?after=SEQ[&limit=L][&wait_ms=W]` to follow: with `wait_ms`, an
/// answer with nothing after SEQ waits (up to 10 s) for the next commit.
async fn log_tail(
    op: Op,
    q: Result<Query<TailParams>, QueryRejection>,
) -> Result<Json<admin::TailView>, ApiError> {
    let p = query(q)?;
    log::tail(&op.engine, &op.caller, p).await.map(Json)
}

/// A what-if replay of the log under another routing plan (body: `ReplayRequest`).
async fn replay(op: Op, b: Bytes) -> Result<Json<ReplayReport>, ApiError> {
    let req: ReplayRequest = body(&b, "replay body")?;
    log::replay(&op.engine, &op.caller, req).await.map(Json)
}

async fn keys(op: Op) -> Result<Json<Vec<admin::KeyView>>, ApiError> {
    log::keys(&op.engine, &op.caller).await.map(Json)
}

/// Creates a key (owner only); the answer holds the key, shown this once.
async fn create_key(op: Op, b: Bytes) -> Result<Json<admin::CreatedKey>, ApiError> {
    let new = body(
        &b,
        "key body (send {\"name\": \"...\", \"scopes\": [\"read:*\"]})",
    )?;
    log::create_key(&op.engine, &op.caller, new).await.map(Json)
}

/// Revokes the key whose id starts with `id` (owner only): it stops working at once.
async fn revoke_key(op: Op, Path(id): Path<String>) -> Result<Json<admin::KeyView>, ApiError> {
    log::revoke_key(&op.engine, &op.caller, &id).await.map(Json)
}
