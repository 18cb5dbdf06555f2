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
use axum::serve::{ListenerExt, TapIo};
use axum::{Json, Router, middleware};
use omniroute_core::event::{BudgetAction, Strategy};
use omniroute_replay::ReplayRequest;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, CostParams, TailParams};
use crate::engine::{ChatReply, Engine};
use crate::error::ApiError;
use crate::mcp::OmniMcp;
use crate::ops::auth::{self, Caller, Scope};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
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
    Router::new()
        .merge(mcp)
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/api/health", get(health))
        .route("/api/sessions/{id}/budget", post(set_budget))
        .route("/api/sessions/{id}", get(session))
        .route("/api/requests/{id}/explain", get(explain))
        .route("/api/usage/cost", get(cost))
        .route("/api/usage/cost/reprice", post(reprice))
        .route("/api/providers/metrics", get(providers))
        .route("/api/combos", get(combos))
        .route("/api/combos/{id}", patch(patch_combo))
        .route("/api/audit/stats", get(audit))
        .route("/api/log/stats", get(log_stats))
        .route("/api/log/verify", get(log_verify))
        .route("/api/log/decisions", get(log_decisions))
        .route("/api/log/tail", get(log_tail))
        .route("/api/replay", post(replay))
        .route("/api/keys", get(keys).post(create_key))
        .route("/api/keys/{id}", axum::routing::delete(revoke_key))
        .fallback(not_found)
        .with_state(engine)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let heartbeat = tokio::spawn(heartbeat());
    let mcp_stop = CancellationToken::new();
    let stop = mcp_stop.clone();
    let r = axum::serve(
        no_delay(listener),
        app_with(engine, mcp_stop).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        stop.cancel();
    })
    .await;
    heartbeat.abort();
    r
}

/// Sets `TCP_NODELAY` on every accepted connection. A streamed answer is many small writes (one
/// per SSE frame, then the chunked-encoding terminator); with Nagle's algorithm on, each small
/// write behind unacknowledged data waits for the client's delayed ACK, so every streamed answer
/// on a keep-alive connection ended ~40 ms late with the CPU idle (issue 10). Every frame is worth
/// sending at once: the writes are already as large as the data that has arrived.
fn no_delay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    fn set(s: &mut TcpStream) {
        // Fails only on a socket that is already broken; the connection then fails on its own.
        let _ = s.set_nodelay(true);
    }
    listener.tap_io(set)
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
    let limit = engine.config().server.max_body_bytes;
    let raw = match axum::body::to_bytes(body, limit as usize).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge { limit }.into_response(),
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

async fn models(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    allow(&engine, &headers, remote, Scope::ReadModels)?;
    let cfg = engine.config();
    let mut data: Vec<Value> = cfg
        .models
        .iter()
        .filter(|m| m.enabled)
        .map(|m| {
            let owner = cfg.provider_of(m).map(|p| p.id.as_str()).unwrap_or("");
            json!({ "id": m.id, "object": "model", "created": 0, "owned_by": owner, "tier": m.tier })
        })
        .collect();
    data.extend(cfg.combos.iter().filter(|c| c.active).map(|c| {
        json!({ "id": c.id, "object": "model", "created": 0, "owned_by": "omniroute", "combo": true, "strategy": c.strategy })
    }));
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// 200 while the log is written, 503 (same body) while it cannot be: `"failing"` when requests
/// are refused meanwhile (`log.on_failure = "refuse"`), `"degraded"` when they are served
/// unrecorded (`"serve"`). Load balancers and monitors only need the status code.
async fn health(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    allow(&engine, &headers, remote, Scope::ReadHealth)?;
    let h = admin::health(&engine);
    let code = if h.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, Json(h)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    max_cost_usd: f64,
    action: BudgetAction,
    degrade_to_tier: Option<u8>,
}

async fn set_budget(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = allow(&engine, &headers, remote, Scope::WriteBudget)?.actor();
    let b: BudgetBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("invalid budget body: {e}"), None))?;
    if b.degrade_to_tier.is_some_and(|t| t > 3) {
        return Err(ApiError::bad(
            "degrade_to_tier must be 0 to 3",
            Some("degrade_to_tier"),
        ));
    }
    let g = engine
        .set_budget(
            &session,
            b.max_cost_usd,
            b.action,
            b.degrade_to_tier,
            &actor,
        )
        .await?;
    Ok(Json(json!({ "session": session, "guard": g })))
}

// ---- read models (DESIGN.md section 5): loopback or `manage` key; each read first waits until
// everything recorded so far is folded in, so a request that has finished is always visible ----

async fn admin_read(
    engine: &AppState,
    headers: &HeaderMap,
    remote: SocketAddr,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let caller = allow(engine, headers, remote, scope)?;
    engine.settled().await?;
    Ok(caller)
}

fn reader(engine: &Engine) -> Result<omniroute_core::log::Reader, ApiError> {
    engine
        .log()
        .reader()
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn explain(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin_read(&engine, &headers, remote, Scope::ReadUsage).await?;
    let x = admin::explain(&reader(&engine)?, &id)?;
    Ok(Json(json!(x)))
}

async fn session(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin_read(&engine, &headers, remote, Scope::ReadUsage).await?;
    let reserved = engine.guard(&id).map_or(0, |g| g.reserved_micros);
    let v = engine
        .projections
        .read(|p| admin::session(p, &id, reserved))?;
    Ok(Json(json!(v)))
}

fn params(q: Result<Query<CostParams>, QueryRejection>) -> Result<CostParams, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text()), None))
}

async fn cost(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<CostParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q)?;
    admin_read(&engine, &headers, remote, Scope::ReadUsage).await?;
    let now = omniroute_core::log::now_ms();
    let r = engine.projections.read(|s| admin::cost(s, &p, now))?;
    Ok(Json(json!(r)))
}

async fn reprice(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let p: CostParams = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("invalid re-pricing body: {e}"), None))?;
    admin_read(&engine, &headers, remote, Scope::ReadUsage).await?;
    let now = omniroute_core::log::now_ms();
    let e = Arc::clone(&engine);
    // A whole-log fold: off the runtime.
    let r = tokio::task::spawn_blocking(move || admin::reprice(&reader(&e)?, &p, now))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!(r)))
}

async fn providers(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin_read(&engine, &headers, remote, Scope::ReadHealth).await?;
    Ok(Json(json!(engine.projections.read(admin::providers))))
}

async fn audit(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin_read(&engine, &headers, remote, Scope::ReadUsage).await?;
    Ok(Json(json!(engine.projections.read(admin::audit))))
}

async fn combos(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin_read(&engine, &headers, remote, Scope::ReadCombos).await?;
    let cfg = engine.config();
    Ok(Json(json!(
        engine.projections.read(|p| admin::combos(p, &cfg))
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComboPatch {
    active: Option<bool>,
    strategy: Option<Strategy>,
}

async fn patch_combo(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = allow(&engine, &headers, remote, Scope::WriteCombos)?.actor();
    let b: ComboPatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(
            format!("invalid combo patch: {e}; send {{\"active\": bool, \"strategy\": \"priority\"|\"weighted\"|...}}"),
            None,
        )
    })?;
    engine
        .patch_combo(&id, b.active, b.strategy, &actor)
        .await?;
    engine.settled().await?;
    let cfg = engine.config();
    let view = engine
        .projections
        .read(|p| admin::combos(p, &cfg))
        .into_iter()
        .find(|c| c.id == id);
    Ok(Json(json!(view)))
}

// ---- the log itself (`omniroute log stats | verify | tail`, `keys list` while serving): the
// same functions the CLI calls on a data dir no server owns ----

/// Runs a whole-log read off the runtime, on a fresh snapshot.
async fn read_log<T: serde::Serialize + Send + 'static>(
    engine: &AppState,
    f: impl FnOnce(&omniroute_core::log::Reader) -> Result<T, ApiError> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let e = Arc::clone(engine);
    let v = tokio::task::spawn_blocking(move || f(&reader(&e)?))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!(v)))
}

async fn log_stats(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    allow(&engine, &headers, remote, Scope::ReadHealth)?;
    read_log(&engine, admin::log_stats).await
}

async fn log_verify(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    allow(&engine, &headers, remote, Scope::ReadHealth)?;
    read_log(&engine, admin::log_verify).await
}

/// Every recorded decision derived again from the log alone (`log verify --decisions`).
async fn log_decisions(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    allow(&engine, &headers, remote, Scope::ReadHealth)?;
    read_log(&engine, |r| admin::log_verify_decisions(r, &mut |_, _| {})).await
}

/// `?n=N` (the last N), or `?after=SEQ[&limit=L][&wait_ms=W]` to follow: with `wait_ms`, an
/// answer with nothing after SEQ waits (up to 10 s) for the next commit.
async fn log_tail(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<TailParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = q
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text()), None))?;
    allow(&engine, &headers, remote, Scope::ReadUsage)?;
    if let (Some(after), Some(wait)) = (p.after, p.wait_ms)
        && engine.log().committed_seq() <= after
    {
        let mut sub = engine.log().subscribe(after);
        let wait = std::time::Duration::from_millis(wait.min(admin::TAIL_WAIT_MAX_MS));
        // Either something was committed after `after`, or the wait is over: answer either way.
        let _ = tokio::time::timeout(wait, sub.next_range()).await;
    }
    read_log(&engine, move |r| admin::log_tail(r, &p)).await
}

/// A what-if replay of the log under another routing plan (body: `ReplayRequest`). A
/// simulation over the whole log: it runs on a blocking thread like the other log reads.
async fn replay(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    allow(&engine, &headers, remote, Scope::ReadUsage)?;
    let req: ReplayRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("invalid replay body: {e}"), None))?;
    // A replay keeps a core busy for seconds: one at a time, so admin reads and the request path
    // keep the other (a second one is told to come back rather than queued behind).
    static REPLAYS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    // Held by the blocking job itself, so a client that goes away does not free it early.
    let running = REPLAYS.try_acquire().map_err(|_| {
        ApiError::Busy(
            "a replay is already running on this server; retry when it has finished".into(),
        )
    })?;
    read_log(&engine, move |r| {
        let _running = running;
        admin::replay(r, &req, &mut |_, _| {})
    })
    .await
}

async fn keys(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    allow(&engine, &headers, remote, Scope::Owner)?;
    read_log(&engine, admin::keys).await
}

/// Creates a key (owner only); the answer holds the key, shown this once.
async fn create_key(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    allow(&engine, &headers, remote, Scope::Owner)?;
    let b: admin::NewKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(
            format!("invalid key body: {e}; send {{\"name\": \"...\", \"scopes\": [\"read:*\"]}}"),
            None,
        )
    })?;
    let (key, entry) = engine.create_key(&b.name, b.scopes).await?;
    Ok(Json(json!(admin::CreatedKey {
        key,
        view: entry.into(),
    })))
}

/// Revokes the key whose id starts with `id` (owner only): it stops working at once.
async fn revoke_key(
    State(engine): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let actor = allow(&engine, &headers, remote, Scope::Owner)?.actor();
    let k = engine.revoke_key(&id, &actor).await?;
    Ok(Json(json!(admin::KeyView::from(k))))
}
