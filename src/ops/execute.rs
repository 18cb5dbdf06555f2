//! Execution operations: real and simulated completions through the engine, and the metrics and
//! recommendations an agent picks a route with. Every answer comes from the real request flow,
//! the configured prices and the log (issue 14): a completion goes through the path
//! `/v1/chat/completions` takes and is read back from its recorded events; a simulation runs the
//! router's own decision on a copy of the live Health; metrics and recommendations read the
//! providers and combos read models.

use std::collections::BTreeMap;
use std::sync::Arc;

use omniroute_core::config::{Capability, Config, Model};
use omniroute_core::event::{CircuitState, Cost, Event, RequestCompleted, RequestId};
use omniroute_core::flow::{self, Facts, Routed};
use omniroute_core::router::RouteError;
use omniroute_projections::hist::Percentiles;
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{ChatReply, Engine};
use crate::error::ApiError;
use crate::gateway::request;
use crate::ops::auth::{Caller, Scope};
use crate::ops::read::blocking;

/// A capability a request (or a task) needs: `chat`, `tools` (function calls), `vision` (image
/// inputs), `json` (JSON output) or `reasoning`. (Variants carry no docs of their own, so the
/// schema stays a plain `enum` of the valid values.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    Chat,
    Tools,
    Vision,
    Json,
    Reasoning,
}

impl Need {
    fn capability(self) -> Capability {
        match self {
            Need::Chat => Capability::Chat,
            Need::Tools => Capability::Tools,
            Need::Vision => Capability::Vision,
            Need::Json => Capability::Json,
            Need::Reasoning => Capability::Reasoning,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Need::Chat => "chat",
            Need::Tools => "tools",
            Need::Vision => "vision",
            Need::Json => "json",
            Need::Reasoning => "reasoning",
        }
    }
}

/// USD of `micros` micro-dollars.
fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// A recorded cost in USD; `None` when unpriced.
fn cost_usd(c: &Cost) -> Option<f64> {
    match c {
        Cost::Micros(m) => Some(usd(*m)),
        Cost::Unpriced => None,
    }
}

/// Estimated cost in USD of `input` prompt and `output` completion tokens at a model's configured
/// price (exact pico-dollar arithmetic, as `pricing` does); `None` when the model is unpriced.
fn estimate_usd(m: &Model, input: u32, output: u32) -> Option<f64> {
    m.price.map(|p| {
        let pico =
            u128::from(input) * u128::from(p.input) + u128::from(output) * u128::from(p.output);
        pico as f64 / 1e12
    })
}

fn circuit_name(c: CircuitState) -> String {
    match c {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
    .to_string()
}

// ---- route_request and test_combo: real completions ----

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRequestArgs {
    /// A model id or a combo id (as the `model` of `/v1/chat/completions`).
    pub model: String,
    /// The chat messages, as `/v1/chat/completions` takes them: `[{"role": "user", "content":
    /// "..."}]`.
    pub messages: Value,
    /// A combo id; overrides `model` when given.
    pub combo: Option<String>,
    /// The session id (as the `x-omniroute-session` header sets it): the request is attributed
    /// to the session and held to its budget guard.
    pub session: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteRequestOut {
    /// The request id (the `x-omniroute-request-id` of the HTTP path): `omniroute_explain_route`
    /// explains it.
    pub request_id: String,
    /// The assistant's text (`null` when it answered with tool calls only).
    pub content: Option<String>,
    /// `stop`, `length`, `tool_calls`, ... as the upstream said.
    pub finish_reason: Option<String>,
    /// Token usage the upstream reported.
    pub usage: UsageOut,
    /// The recorded cost in USD; `null` when the serving model has no price configured (or the
    /// log could not be read).
    pub cost_usd: Option<f64>,
    /// Where it went.
    pub route: RouteOut,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct UsageOut {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteOut {
    /// The provider id that served.
    pub provider: String,
    /// The model id that served.
    pub model: String,
    /// Attempts made (retries and fallbacks included).
    pub attempts: u16,
    /// Fallbacks to another target.
    pub fallbacks: u32,
}

/// One completion through the engine, and what the log recorded of it.
struct Ran {
    request_id: String,
    reply: Result<Value, ApiError>,
    /// `provider/model` that served and the attempts, as the engine answered.
    route: Option<(String, u16)>,
    /// Its `RequestCompleted` and fallback count, once readable from the log (`None` when the
    /// log cannot be read: with `log.on_failure = "serve"` the answer still stands).
    recorded: Option<(RequestCompleted, u32)>,
}

/// Runs a non-streaming completion exactly as `/v1/chat/completions` does (same parse, same
/// engine call, recorded the same way) under the caller's key, then reads its recorded end.
async fn complete(
    engine: &Arc<Engine>,
    caller: &Caller,
    model: &str,
    messages: Value,
    session: Option<&str>,
) -> Result<Ran, ApiError> {
    let limit = engine.config().server.max_body_bytes;
    let mut input = request::for_tool(model, messages, session, limit)?;
    input.key_id = caller.key;
    let out = engine.chat(input).await;
    let rid = out.request_id;
    let reply = match out.result {
        Ok(ChatReply::Json(bytes)) => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| ApiError::Internal(format!("the upstream's answer is not JSON: {e}"))),
        Ok(ChatReply::Stream(_)) => Err(ApiError::Internal(
            "a non-streaming request was answered with a stream".into(),
        )),
        Err(e) => Err(e),
    };
    Ok(Ran {
        request_id: rid.to_string(),
        reply,
        route: out.route,
        recorded: recorded(engine, rid).await.ok().flatten(),
    })
}

/// A request's `RequestCompleted` and its number of fallbacks, read from the log.
async fn recorded(
    engine: &Arc<Engine>,
    rid: RequestId,
) -> Result<Option<(RequestCompleted, u32)>, ApiError> {
    // The request's events were enqueued before `chat` returned; once settled they are readable.
    engine.settled().await?;
    blocking(engine, move |reader| {
        let unreadable = |e: String| ApiError::LogUnreadable(e);
        let mut completed = None;
        let mut fallbacks = 0;
        for s in reader.request(rid).map_err(|e| unreadable(e.to_string()))? {
            let record = s.record().map_err(|e| unreadable(e.to_string()))?;
            match record
                .event
                .to_owned_event()
                .map_err(|e| unreadable(e.to_string()))?
            {
                Event::RequestCompleted(c) => completed = Some(*c),
                Event::FallbackTriggered(_) => fallbacks += 1,
                _ => {}
            }
        }
        Ok(completed.map(|c| (c, fallbacks)))
    })
    .await
}

/// The error of a failed completion, naming its request id (which `omniroute_explain_route`
/// explains).
fn failed(rid: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::AllFailed { mut attempts } => {
            attempts.push(format!("request {rid}"));
            ApiError::AllFailed { attempts }
        }
        ApiError::NoTarget { mut reasons } => {
            reasons.push(format!("request {rid}"));
            ApiError::NoTarget { reasons }
        }
        ApiError::Upstream { status, message } => ApiError::Upstream {
            status,
            message: format!("{message} (request {rid})"),
        },
        other => other,
    }
}

/// `omniroute_route_request`: a real completion, attributed to the caller's key.
pub async fn route_request(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: RouteRequestArgs,
) -> Result<RouteRequestOut, ApiError> {
    caller.require(&[Scope::ExecuteCompletions])?;
    let model = args.combo.as_deref().unwrap_or(&args.model);
    let ran = complete(
        engine,
        caller,
        model,
        args.messages,
        args.session.as_deref(),
    )
    .await?;
    let body = ran.reply.map_err(|e| failed(&ran.request_id, e))?;
    let choice = &body["choices"][0];
    let tokens = |k: &str| body["usage"][k].as_u64().unwrap_or(0);
    let route = match (&ran.recorded, ran.route) {
        (Some((c, fallbacks)), _) => {
            let t = c.target.clone().unwrap_or_default();
            RouteOut {
                provider: t.provider,
                model: t.model,
                attempts: c.attempts,
                fallbacks: *fallbacks,
            }
        }
        // Not readable from the log: what the engine answered (fallbacks unknown).
        (None, route) => {
            let (target, attempts) = route.unwrap_or_default();
            let (provider, model) = target.split_once('/').unwrap_or(("", &target));
            RouteOut {
                provider: provider.to_string(),
                model: model.to_string(),
                attempts,
                fallbacks: 0,
            }
        }
    };
    Ok(RouteRequestOut {
        content: choice["message"]["content"].as_str().map(str::to_string),
        finish_reason: choice["finish_reason"].as_str().map(str::to_string),
        usage: UsageOut {
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
        },
        cost_usd: ran.recorded.as_ref().and_then(|(c, _)| cost_usd(&c.cost)),
        route,
        request_id: ran.request_id,
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestComboArgs {
    /// The combo whose targets are each called once.
    pub combo_id: String,
    /// The user message sent to every target.
    pub test_prompt: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TestComboOut {
    /// The combo tested.
    pub combo: String,
    /// One real call per target, in the combo's order.
    pub results: Vec<TargetTest>,
    /// The model id of the fastest successful call (`null` if none succeeded).
    pub fastest: Option<String>,
    /// The model id of the cheapest successful priced call (`null` if none).
    pub cheapest: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TargetTest {
    /// The model id called.
    pub model: String,
    /// Its provider id.
    pub provider: String,
    /// Whether the call succeeded.
    pub ok: bool,
    /// End-to-end latency the gateway recorded for the request, in milliseconds.
    pub latency_ms: Option<f64>,
    /// The recorded cost in USD (`null` when unpriced or not recorded).
    pub cost_usd: Option<f64>,
    /// Why the call failed.
    pub error: Option<String>,
    /// The request id, for `omniroute_explain_route`.
    pub request_id: Option<String>,
}

/// `omniroute_test_combo`: one real, recorded call to each target of a combo, by model id.
pub async fn test_combo(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: TestComboArgs,
) -> Result<TestComboOut, ApiError> {
    caller.require(&[Scope::ExecuteCompletions, Scope::ReadCombos])?;
    let cfg = engine.config();
    let combo = cfg
        .combo_index(&args.combo_id)
        .and_then(|i| cfg.combos.get(i))
        .ok_or_else(|| unknown_combo(&cfg, &args.combo_id, "comboId"))?;
    let messages = serde_json::json!([{ "role": "user", "content": args.test_prompt }]);
    let mut results = Vec::with_capacity(combo.targets.len());
    // One after another: concurrent calls would share the targets' Health and skew latencies.
    for t in &combo.targets {
        let Some(m) = cfg.model(t.model) else {
            continue;
        };
        let provider = cfg.provider_of(m).map(|p| p.id.clone()).unwrap_or_default();
        let ran = complete(engine, caller, &m.id, messages.clone(), None).await;
        results.push(match ran {
            Ok(ran) => {
                let c = ran.recorded.as_ref().map(|(c, _)| c);
                TargetTest {
                    model: m.id.clone(),
                    provider,
                    ok: ran.reply.is_ok(),
                    latency_ms: c.map(|c| c.total_latency_us as f64 / 1000.0),
                    cost_usd: c.and_then(|c| cost_usd(&c.cost)),
                    error: ran.reply.err().map(|e| e.message()),
                    request_id: Some(ran.request_id),
                }
            }
            // Refused before it became a request (validation): no request id.
            Err(e) => TargetTest {
                model: m.id.clone(),
                provider,
                ok: false,
                latency_ms: None,
                cost_usd: None,
                error: Some(e.message()),
                request_id: None,
            },
        });
    }
    let best = |key: fn(&TargetTest) -> Option<f64>| {
        results
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| key(r).map(|k| (k, r.model.clone())))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, m)| m)
    };
    Ok(TestComboOut {
        combo: combo.id.clone(),
        fastest: best(|r| r.latency_ms),
        cheapest: best(|r| r.cost_usd),
        results,
    })
}

fn unknown_combo(cfg: &Config, id: &str, field: &str) -> ApiError {
    let ids: Vec<&str> = cfg.combos.iter().map(|c| c.id.as_str()).collect();
    ApiError::bad(
        format!("unknown combo {id:?}; valid combo ids: {}", ids.join(", ")),
        Some(field),
    )
}

// ---- simulate_route: the real decision on a copy of the live state ----

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulateArgs {
    /// A model id or combo id to route (give this or `combo`).
    pub model: Option<String>,
    /// A combo id to route; overrides `model`.
    pub combo: Option<String>,
    /// Input tokens of the simulated request.
    pub prompt_token_estimate: u32,
    /// Output tokens of the simulated request (default: the config's
    /// `router.default_output_tokens`).
    pub max_tokens: Option<u32>,
    /// Capabilities the request needs.
    #[serde(default)]
    pub capabilities: Vec<Need>,
    /// Seed of the decision (a `weighted` strategy draws its first target with it; default 0).
    pub seed: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SimulateOut {
    /// The combo (or the model requested directly).
    pub requested: String,
    /// `priority`, `weighted`, `round-robin`, `least-latency`, `cost`, `least-busy`, `auto` or
    /// `tiered`.
    pub strategy: String,
    /// The flow's time the decision was made at (unix ms).
    pub now_ms: u64,
    /// The targets in the order they would be tried.
    pub plan: Vec<PlanStep>,
    /// Targets left out, and why.
    pub exclusions: Vec<ExclusionOut>,
    /// Probability with which the strategy picked the first step.
    pub propensity: f64,
    /// Estimated cost when the first step succeeds (`null`: no plan, or it is unpriced).
    pub best_case_usd: Option<f64>,
    /// Estimated cost if every step is tried and each returns its full answer (`null` when a step
    /// is unpriced or there is no plan).
    pub worst_case_usd: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PlanStep {
    /// The provider id.
    pub provider: String,
    /// The model id.
    pub model: String,
    /// Its tier (0 cheapest to 3 strongest).
    pub tier: u8,
    /// `promptTokenEstimate` input and `maxTokens` output tokens at the model's price; `null`
    /// when the model has no price.
    pub est_cost_usd: Option<f64>,
    /// The strategy's score (higher is tried first).
    pub score: f64,
    /// The score's inputs.
    pub factors: Vec<FactorOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct FactorOut {
    /// The factor's name (`cost`, `latency`, `position`, ...).
    pub name: String,
    /// Its value (normalised to 0..=1 for `auto`).
    pub value: f64,
    /// Its weight in the score.
    pub weight: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExclusionOut {
    /// The provider id.
    pub provider: String,
    /// The model id.
    pub model: String,
    /// `circuit_open`, `cooling_down`, `budget`, `quota`, `capability`, `context_window`,
    /// `inactive` or `disabled`.
    pub reason: String,
    /// The router's explanation.
    pub detail: String,
    /// When the exclusion ends (unix ms), when it is timed.
    pub until_ms: Option<u64>,
}

/// `omniroute_simulate_route`: the router's real decision for a synthetic request, on a copy of
/// the current Health. Calls no provider, records nothing, changes no state.
pub fn simulate_route(
    engine: &Engine,
    caller: &Caller,
    args: &SimulateArgs,
) -> Result<SimulateOut, ApiError> {
    caller.require(&[Scope::ReadHealth, Scope::ReadCombos])?;
    let requested = args
        .combo
        .as_deref()
        .or(args.model.as_deref())
        .ok_or_else(|| {
            ApiError::bad(
                "give `model` (a model or combo id) or `combo`",
                Some("model"),
            )
        })?;
    let cfg = engine.config();
    let (state, now) = engine.routing_snapshot();
    simulate_on(&cfg, &state, now, requested, args)
}

fn simulate_on(
    cfg: &Config,
    state: &flow::State,
    now: u64,
    requested: &str,
    args: &SimulateArgs,
) -> Result<SimulateOut, ApiError> {
    let field = if args.combo.is_some() {
        "combo"
    } else {
        "model"
    };
    let required = args
        .capabilities
        .iter()
        .fold(0u8, |acc, n| acc | n.capability().bit());
    let output = args.max_tokens.unwrap_or(cfg.router.default_output_tokens);
    let facts = Facts {
        requested,
        est_prompt_tokens: args.prompt_token_estimate,
        max_tokens: Some(output),
        min_tier: None,
        session: None,
        required,
    };
    // No session: no guard is read or reserved; the digest is not needed for a dry run.
    let derived = match flow::derive_with(&facts, args.seed.unwrap_or(0), now, state, cfg, false) {
        Ok(d) => d,
        Err(Routed::Unroutable {
            error: RouteError::Unknown(m),
            ..
        }) => {
            let ids: Vec<&str> = cfg
                .combos
                .iter()
                .map(|c| c.id.as_str())
                .chain(cfg.models.iter().map(|m| m.id.as_str()))
                .collect();
            return Err(ApiError::bad(
                format!(
                    "unknown model or combo {m:?}; valid ids: {}",
                    ids.join(", ")
                ),
                Some(field),
            ));
        }
        Err(Routed::Unroutable {
            error: RouteError::Inactive(c),
            ..
        }) => return Err(ApiError::ComboInactive(c)),
        Err(_) => return Err(ApiError::Internal("a dry run met a budget guard".into())),
    };
    let d = &derived.decision;
    let target = |m: usize| {
        cfg.model(m)
            .map(|model| omniroute_core::router::event_target(cfg, model))
            .unwrap_or_default()
    };
    let plan: Vec<PlanStep> = d
        .plan
        .iter()
        .filter_map(|&i| d.candidates.get(usize::from(i)))
        .map(|c| {
            let t = target(c.model);
            let m = cfg.model(c.model);
            PlanStep {
                provider: t.provider,
                model: t.model,
                tier: m.map_or(0, |m| m.tier),
                est_cost_usd: m.and_then(|m| estimate_usd(m, args.prompt_token_estimate, output)),
                score: c.score,
                factors: c
                    .factors
                    .as_slice()
                    .iter()
                    .map(|f| FactorOut {
                        name: f.name.to_string(),
                        value: f.value,
                        weight: f.weight,
                    })
                    .collect(),
            }
        })
        .collect();
    let exclusions = d
        .candidates
        .iter()
        .filter_map(|c| {
            let e = c.excluded?;
            let t = target(c.model);
            Some(ExclusionOut {
                provider: t.provider,
                model: t.model,
                reason: serde_json::to_value(e.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                detail: e.detail.to_string(),
                until_ms: e.until_ms,
            })
        })
        .collect();
    let costs: Option<Vec<f64>> = plan.iter().map(|s| s.est_cost_usd).collect();
    Ok(SimulateOut {
        requested: requested.to_string(),
        strategy: serde_json::to_value(d.strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        now_ms: now,
        best_case_usd: plan.first().and_then(|s| s.est_cost_usd),
        worst_case_usd: costs.filter(|c| !c.is_empty()).map(|c| c.iter().sum()),
        propensity: d.propensity,
        plan,
        exclusions,
    })
}

// ---- get_provider_metrics ----

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderMetricsArgs {
    /// A provider id of the config.
    pub provider: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ProviderMetricsOut {
    /// The provider id.
    pub provider: String,
    /// Every attempt on the provider, all its models together.
    pub totals: MetricsOut,
    /// Per model, with each model's live circuit state.
    pub models: Vec<ModelMetricsOut>,
    /// Circuit transitions the log recorded for the provider's models, oldest first (at most
    /// 50; each model keeps its last 20).
    pub circuit_history: Vec<TransitionOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct MetricsOut {
    /// Attempts recorded.
    pub attempts: u64,
    /// Attempts that succeeded.
    pub ok: u64,
    /// `null` without attempts.
    pub success_rate: Option<f64>,
    /// Failed attempts by error class (`rate_limited`, `server_error`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Streams cut after they started.
    pub stream_cuts: u64,
    /// Attempt latency percentiles (`null` without attempts).
    pub latency: Option<QuantilesOut>,
    /// Time-to-first-token percentiles of streams (`null` without streamed attempts).
    pub ttft: Option<QuantilesOut>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct QuantilesOut {
    /// Samples.
    pub count: u64,
    /// The 50th percentile.
    pub p50_ms: f64,
    /// The 95th percentile.
    pub p95_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The slowest sample.
    pub max_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelMetricsOut {
    /// The model id.
    pub model: String,
    /// The live circuit state: `closed`, `open` or `half_open`.
    pub circuit: String,
    /// Its recorded metrics.
    pub metrics: MetricsOut,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TransitionOut {
    /// When the log recorded it (unix ms).
    pub ts_ms: u64,
    /// The model whose circuit changed (`null`: the provider's as a whole).
    pub model: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub from: String,
    /// `closed`, `open` or `half_open`.
    pub to: String,
    /// Why (as the breaker recorded it).
    pub reason: String,
}

fn quantiles(p: Percentiles) -> Option<QuantilesOut> {
    let ms = |us: u64| us as f64 / 1000.0;
    (p.count > 0).then(|| QuantilesOut {
        count: p.count,
        p50_ms: ms(p.p50_us),
        p95_ms: ms(p.p95_us),
        p99_ms: ms(p.p99_us),
        max_ms: ms(p.max_us),
    })
}

fn metrics(s: &omniroute_projections::providers::Stats) -> MetricsOut {
    let v = s.view("");
    MetricsOut {
        attempts: v.attempts,
        ok: v.ok,
        success_rate: v.success_rate,
        errors: v.errors,
        stream_cuts: v.stream_cuts,
        latency: quantiles(v.latency),
        ttft: quantiles(v.ttft),
    }
}

/// How many circuit transitions a provider's answer carries.
const HISTORY: usize = 50;

/// `omniroute_get_provider_metrics`: latency and TTFT quantiles, error classes, live circuits and
/// their recorded history, from the providers read model.
pub async fn provider_metrics(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: ProviderMetricsArgs,
) -> Result<ProviderMetricsOut, ApiError> {
    caller.require(&[Scope::ReadHealth])?;
    let cfg = engine.config();
    if !cfg.providers.iter().any(|p| p.id == args.provider) {
        let ids: Vec<&str> = cfg.providers.iter().map(|p| p.id.as_str()).collect();
        return Err(ApiError::bad(
            format!(
                "unknown provider {:?}; valid provider ids: {}",
                args.provider,
                ids.join(", ")
            ),
            Some("provider"),
        ));
    }
    engine.settled().await?;
    let recorded = engine
        .projections
        .read(|p| p.providers.providers.get(&args.provider).cloned())
        .unwrap_or_default();
    let live: Vec<(String, CircuitState)> = engine
        .circuits()
        .into_iter()
        .filter(|(p, _, _)| *p == args.provider)
        .map(|(_, m, s)| (m, s))
        .collect();
    let empty = omniroute_projections::providers::Stats::default();
    let models = live
        .iter()
        .map(|(m, s)| ModelMetricsOut {
            model: m.clone(),
            circuit: circuit_name(*s),
            metrics: metrics(recorded.models.get(m).unwrap_or(&empty)),
        })
        .collect();
    let transitions = |model: Option<&String>, s: &omniroute_projections::providers::Stats| {
        s.circuit_history
            .iter()
            .map(|t| TransitionOut {
                ts_ms: t.ts_ms,
                model: model.cloned(),
                from: circuit_name(t.from),
                to: circuit_name(t.to),
                reason: t.reason.clone(),
            })
            .collect::<Vec<_>>()
    };
    // The provider's own transitions (recorded without a model) and each model's.
    let mut history: Vec<TransitionOut> = std::iter::once(transitions(None, &recorded.stats))
        .chain(recorded.models.iter().map(|(m, s)| transitions(Some(m), s)))
        .flatten()
        .collect();
    // Newest last; a stable sort keeps each model's own order within one millisecond.
    history.sort_by_key(|t| t.ts_ms);
    let drop = history.len().saturating_sub(HISTORY);
    history.drain(..drop);
    Ok(ProviderMetricsOut {
        provider: args.provider,
        totals: metrics(&recorded.stats),
        models,
        circuit_history: history,
    })
}

// ---- best_combo_for_task ----

/// Prompt tokens of the typical request a combo without traffic is priced for.
pub const TYPICAL_PROMPT_TOKENS: u32 = 1000;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestComboArgs {
    /// The capability the task needs.
    pub task_type: Need,
    /// The most USD a request may cost.
    pub budget_constraint: Option<f64>,
    /// The most p95 end-to-end latency, in milliseconds.
    pub latency_constraint: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BestComboOut {
    /// The combo recommended, with its figures (`null` when none meets the constraints).
    pub recommendation: Option<ComboAssessment>,
    /// Why, in words.
    pub reason: String,
    /// Every other combo, in config order, and why it lost or failed a constraint.
    pub alternatives: Vec<ComboAssessment>,
}

/// Where a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From the combo's recorded requests.
    Measured,
    /// From the configured prices of the target the router would try first, for a typical
    /// request (`TYPICAL_PROMPT_TOKENS` in, `router.default_output_tokens` out).
    Estimated,
    /// Not known (no traffic, or unpriced).
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ComboAssessment {
    /// The combo id.
    pub combo: String,
    /// Expected USD per request.
    pub cost_usd: Option<f64>,
    /// Where `cost_usd` comes from.
    pub cost_source: Source,
    /// Measured p95 end-to-end latency in ms (`null` without traffic).
    pub p95_latency_ms: Option<f64>,
    /// Measured share of requests that succeeded (`null` without traffic).
    pub success_rate: Option<f64>,
    /// Requests the combo has served.
    pub requests: u64,
    /// Whether it can serve the task and meets both constraints.
    pub qualifies: bool,
    /// Why it qualifies, or what it fails.
    pub verdict: String,
}

/// `omniroute_best_combo_for_task`: the cheapest combo that can serve the task and meets both
/// constraints (ties by p95 latency), from measured metrics and prices.
pub async fn best_combo_for_task(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: BestComboArgs,
) -> Result<BestComboOut, ApiError> {
    caller.require(&[Scope::ReadCombos, Scope::ReadHealth])?;
    for (v, field) in [
        (args.budget_constraint, "budgetConstraint"),
        (args.latency_constraint, "latencyConstraint"),
    ] {
        if v.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
            return Err(ApiError::bad(
                format!("`{field}` must be a number, 0 or more"),
                Some(field),
            ));
        }
    }
    engine.settled().await?;
    let cfg = engine.config();
    let metrics: Vec<_> = engine
        .projections
        .read(|p| cfg.combos.iter().map(|c| p.combos.view(&c.id)).collect());
    let (state, now) = engine.routing_snapshot();
    let assessed: Vec<ComboAssessment> = cfg
        .combos
        .iter()
        .zip(metrics)
        .map(|(c, m)| assess(&cfg, &state, now, c, &m, &args))
        .collect();
    Ok(recommend(assessed, &args))
}

fn assess(
    cfg: &Config,
    state: &flow::State,
    now: u64,
    combo: &omniroute_core::config::Combo,
    m: &omniroute_projections::combos::ComboMetrics,
    args: &BestComboArgs,
) -> ComboAssessment {
    let priced = m.requests.saturating_sub(m.unpriced_requests);
    let (mut cost_usd, mut cost_source) = if priced > 0 {
        (Some(usd(m.cost_micros) / priced as f64), Source::Measured)
    } else {
        (None, Source::Unknown)
    };
    let p95 = (m.latency.count > 0).then(|| m.latency.p95_us as f64 / 1000.0);
    let mut out = ComboAssessment {
        combo: combo.id.clone(),
        cost_usd,
        cost_source,
        p95_latency_ms: p95,
        success_rate: m.success_rate,
        requests: m.requests,
        qualifies: false,
        verdict: String::new(),
    };
    if !combo.active {
        out.verdict = "inactive".into();
        return out;
    }
    // The router's own decision for a typical request of this task, on the live Health: which
    // targets can serve it now, and which one it would try first.
    let sim = SimulateArgs {
        model: None,
        combo: Some(combo.id.clone()),
        prompt_token_estimate: TYPICAL_PROMPT_TOKENS,
        max_tokens: None,
        capabilities: vec![args.task_type],
        seed: None,
    };
    let plan = match simulate_on(cfg, state, now, &combo.id, &sim) {
        Ok(s) => s,
        Err(e) => {
            out.verdict = format!("cannot be routed: {}", e.message());
            return out;
        }
    };
    let Some(first) = plan.plan.first() else {
        let why: Vec<String> = plan
            .exclusions
            .iter()
            .map(|e| format!("{}: {}", e.model, e.detail))
            .collect();
        out.verdict = format!(
            "no target can serve a {} task now ({})",
            args.task_type.name(),
            why.join("; ")
        );
        return out;
    };
    if cost_source == Source::Unknown && first.est_cost_usd.is_some() {
        cost_usd = first.est_cost_usd;
        cost_source = Source::Estimated;
        out.cost_usd = cost_usd;
        out.cost_source = cost_source;
    }
    let mut fails = Vec::new();
    if let Some(b) = args.budget_constraint {
        match cost_usd {
            Some(c) if c <= b => {}
            Some(c) => fails.push(format!(
                "costs ${c:.6} per request, over the ${b:.6} budget"
            )),
            None => fails.push(
                "its cost is unknown (unpriced), so it cannot be shown to meet the budget".into(),
            ),
        }
    }
    if let Some(l) = args.latency_constraint {
        match p95 {
            Some(p) if p <= l => {}
            Some(p) => fails.push(format!("p95 latency {p:.1} ms is over {l} ms")),
            None => fails.push(
                "no traffic yet, so its p95 latency is unknown and cannot be shown to meet the latency constraint"
                    .into(),
            ),
        }
    }
    out.qualifies = fails.is_empty();
    out.verdict = if fails.is_empty() {
        "meets the constraints".into()
    } else {
        fails.join("; ")
    };
    out
}

/// The rule: among the combos that qualify, the cheapest; ties by p95 latency (unknown last).
fn recommend(assessed: Vec<ComboAssessment>, args: &BestComboArgs) -> BestComboOut {
    let key = |a: &ComboAssessment| {
        (
            a.cost_usd.unwrap_or(f64::INFINITY),
            a.p95_latency_ms.unwrap_or(f64::INFINITY),
        )
    };
    let best = assessed
        .iter()
        .filter(|a| a.qualifies)
        .min_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        })
        .cloned();
    let constraints = match (args.budget_constraint, args.latency_constraint) {
        (None, None) => "no constraints".to_string(),
        (Some(b), None) => format!("a budget of ${b} per request"),
        (None, Some(l)) => format!("a p95 latency of at most {l} ms"),
        (Some(b), Some(l)) => {
            format!("a budget of ${b} per request and a p95 latency of at most {l} ms")
        }
    };
    let source = |s: Source| match s {
        Source::Measured => "measured",
        Source::Estimated => "estimated from prices",
        Source::Unknown => "unknown",
    };
    let alternatives = assessed
        .into_iter()
        .filter(|a| best.as_ref().is_none_or(|b| b.combo != a.combo))
        .map(|mut a| {
            if let (true, Some(b)) = (a.qualifies, &best) {
                a.verdict = format!(
                    "meets the constraints but lost to {}: {}",
                    b.combo,
                    if a.cost_usd.is_none() {
                        "its cost is unknown (unpriced)"
                    } else if key(&a).0 > key(b).0 {
                        "it costs more"
                    } else {
                        "same cost, slower (or unknown) p95"
                    }
                );
            }
            a
        })
        .collect();
    let reason = match &best {
        Some(b) => format!(
            "{} is the cheapest combo that can serve a {} task within {constraints}: ${:.6} per \
             request ({}), p95 {}, success rate {}",
            b.combo,
            args.task_type.name(),
            b.cost_usd.unwrap_or(0.0),
            source(b.cost_source),
            b.p95_latency_ms
                .map_or("unknown (no traffic)".into(), |p| format!("{p:.1} ms")),
            b.success_rate
                .map_or("unknown".into(), |s| format!("{:.1}%", s * 100.0)),
        ),
        None => format!(
            "no combo can serve a {} task within {constraints}; see each alternative's verdict",
            args.task_type.name()
        ),
    };
    BestComboOut {
        recommendation: best,
        reason,
        alternatives,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn combo(id: &str, cost: Option<f64>, p95: Option<f64>, qualifies: bool) -> ComboAssessment {
        ComboAssessment {
            combo: id.into(),
            cost_usd: cost,
            cost_source: if cost.is_some() {
                Source::Measured
            } else {
                Source::Unknown
            },
            p95_latency_ms: p95,
            success_rate: None,
            requests: 1,
            qualifies,
            verdict: if qualifies { "meets" } else { "fails" }.into(),
        }
    }

    fn args() -> BestComboArgs {
        BestComboArgs {
            task_type: Need::Chat,
            budget_constraint: None,
            latency_constraint: None,
        }
    }

    #[test]
    fn execute_recommends_the_cheapest_qualifier_ties_by_latency() {
        let out = recommend(
            vec![
                combo("dear", Some(0.2), Some(10.0), true),
                combo("slow", Some(0.1), Some(900.0), true),
                combo("fast", Some(0.1), Some(50.0), true),
                combo("unknown", None, Some(1.0), true),
                combo("cheapest_but_fails", Some(0.01), Some(1.0), false),
            ],
            &args(),
        );
        assert_eq!(out.recommendation.unwrap().combo, "fast");
        let verdict = |id: &str| {
            out.alternatives
                .iter()
                .find(|a| a.combo == id)
                .unwrap()
                .verdict
                .clone()
        };
        assert!(
            verdict("slow").contains("same cost, slower"),
            "{}",
            verdict("slow")
        );
        assert!(verdict("dear").contains("costs more"));
        assert!(verdict("unknown").contains("cost is unknown"));
        assert_eq!(verdict("cheapest_but_fails"), "fails");
        let none = recommend(vec![combo("x", Some(0.1), None, false)], &args());
        assert!(none.recommendation.is_none());
        assert!(none.reason.starts_with("no combo"), "{}", none.reason);
    }
}
