//! Real completions (`omniroute_route_request`, `omniroute_test_combo`): through the path
//! `/v1/chat/completions` takes, under the caller's key, then read back from their recorded events.

use std::sync::Arc;

use omniroute_core::config::Config;
use omniroute_core::event::{Event, RequestCompleted, RequestId};
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cost_usd;
use crate::engine::{ChatReply, Engine};
use crate::error::ApiError;
use crate::gateway::request;
use crate::ops::auth::{Caller, Scope};
use crate::ops::read::blocking;

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
