//! Parsing and validating a chat-completions request before it reaches the engine: UTF-8, JSON,
//! known keys only, types and ranges, each failure a 400 naming the parameter.

use axum::http::HeaderMap;
use bytes::Bytes;
use omniroute_core::config::Capability;
use serde_json::{Map, Value};

use crate::engine::ChatInput;
use crate::error::ApiError;
use crate::limits::{self, MAX_HEADER_VALUE_BYTES, MAX_MESSAGES, MAX_MODEL_BYTES};

/// Parameters of OpenAI's chat-completions API that are accepted (and passed upstream).
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "service_tier",
    "store",
    "metadata",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
];

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn bad(message: String, param: &str) -> ApiError {
    ApiError::bad(message, Some(param))
}

fn text_len(content: &Value) -> usize {
    match content {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| p["text"].as_str().map(str::len).unwrap_or(0))
            .sum(),
        _ => 0,
    }
}

fn check_messages(messages: &Value, required: &mut u8) -> Result<usize, ApiError> {
    let Some(list) = messages.as_array() else {
        return Err(bad(
            "`messages` must be an array of messages".into(),
            "messages",
        ));
    };
    if list.is_empty() {
        return Err(bad("`messages` must not be empty".into(), "messages"));
    }
    if list.len() > MAX_MESSAGES {
        return Err(bad(
            format!(
                "`messages` has {} messages; at most {MAX_MESSAGES} are accepted",
                list.len()
            ),
            "messages",
        ));
    }
    let mut chars = 0;
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(obj) = m.as_object() else {
            return Err(bad(format!("{at} must be an object"), &at));
        };
        match obj.get("role").and_then(Value::as_str) {
            Some(r) if ROLES.contains(&r) => {}
            Some(r) => {
                return Err(bad(
                    format!("{at}.role `{r}` is not a known role"),
                    &format!("{at}.role"),
                ));
            }
            None => {
                return Err(bad(
                    format!("{at}.role must be a string"),
                    &format!("{at}.role"),
                ));
            }
        }
        match obj.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    let kind = p.get("type").and_then(Value::as_str);
                    if kind.is_none() {
                        let param = format!("{at}.content[{j}].type");
                        return Err(bad(format!("{param} must be a string"), &param));
                    }
                    if kind == Some("image_url") {
                        *required |= Capability::Vision.bit();
                    }
                }
            }
            Some(_) => {
                let param = format!("{at}.content");
                return Err(bad(
                    format!("{param} must be a string or an array of parts"),
                    &param,
                ));
            }
        }
        chars += text_len(obj.get("content").unwrap_or(&Value::Null)) + 16;
    }
    Ok(chars)
}

fn opt_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1 && *n <= u64::from(u32::MAX))
            .map(|n| Some(n as u32))
            .ok_or_else(|| bad(format!("`{key}` must be a positive integer"), key)),
    }
}

fn opt_range(obj: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<(), ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            _ => Err(bad(
                format!("`{key}` must be a number from {lo} to {hi}"),
                key,
            )),
        },
    }
}

/// An omniroute header's value: visible ASCII of at most [`MAX_HEADER_VALUE_BYTES`].
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    if v.len() > MAX_HEADER_VALUE_BYTES {
        return Err(bad(
            format!(
                "header {name} is {} bytes; at most {MAX_HEADER_VALUE_BYTES} are accepted",
                v.len()
            ),
            name,
        ));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| bad(format!("header {name} must be visible ASCII"), name))
}

/// Validates a request body and the omniroute headers into a [`ChatInput`].
pub fn parse(raw: Bytes, headers: &HeaderMap) -> Result<ChatInput, ApiError> {
    let text = std::str::from_utf8(&raw)
        .map_err(|e| ApiError::bad(format!("the request body is not valid UTF-8: {e}"), None))?;
    let body: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}"), None))?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad(
            "the request body must be a JSON object",
            None,
        ));
    };
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(format!("unknown parameter `{k}`"), k));
    }
    let requested = match obj.get("model") {
        Some(Value::String(m)) if m.len() > MAX_MODEL_BYTES => {
            // Refused before anything is recorded: the name would be stored in the log.
            return Err(bad(
                format!(
                    "`model` is {} bytes; model and combo ids are at most {MAX_MODEL_BYTES} \
                     bytes (see GET /v1/models)",
                    m.len()
                ),
                "model",
            ));
        }
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(bad("`model` must be a non-empty string".into(), "model")),
        None => return Err(bad("missing required parameter `model`".into(), "model")),
    };
    let mut required = 0u8;
    let chars = match obj.get("messages") {
        Some(m) => check_messages(m, &mut required)?,
        None => {
            return Err(bad(
                "missing required parameter `messages`".into(),
                "messages",
            ));
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`stream` must be a boolean".into(), "stream")),
    };
    let wants_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                let p = "stream_options.include_usage";
                return Err(bad(format!("`{p}` must be a boolean"), p));
            }
        },
        Some(_) => {
            return Err(bad(
                "`stream_options` must be an object".into(),
                "stream_options",
            ));
        }
    };
    let max_tokens = match opt_u32(obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u32(obj, "max_tokens")?,
    };
    opt_u32(obj, "n")?;
    opt_range(obj, "temperature", 0.0, 2.0)?;
    opt_range(obj, "top_p", 0.0, 1.0)?;
    match obj.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(t)) => {
            if !t.is_empty() {
                required |= Capability::Tools.bit();
            }
        }
        Some(_) => return Err(bad("`tools` must be an array".into(), "tools")),
    }
    let tool_chars = obj.get("tools").map(|t| t.to_string().len()).unwrap_or(0);
    if obj
        .get("response_format")
        .and_then(|r| r["type"].as_str())
        .is_some_and(|t| t.starts_with("json"))
    {
        required |= Capability::Json.bit();
    }
    let session = header(headers, "x-omniroute-session")?
        .map(|s| limits::session_id(s, "x-omniroute-session").map(|()| s.to_string()))
        .transpose()?;
    let min_tier = header(headers, "x-omniroute-min-tier")?
        .map(|s| {
            s.parse::<u8>().ok().filter(|t| *t <= 3).ok_or_else(|| {
                bad(
                    "x-omniroute-min-tier must be 0 to 3".into(),
                    "x-omniroute-min-tier",
                )
            })
        })
        .transpose()?;
    let task = header(headers, "x-omniroute-task")?.map(|s| s.chars().take(64).collect());
    Ok(ChatInput {
        est_prompt_tokens: ((chars + tool_chars) / 4).min(u32::MAX as usize) as u32,
        body,
        raw,
        requested,
        stream,
        wants_usage,
        max_tokens,
        required,
        min_tier,
        task,
        session,
        key_id: None,
    })
}

/// The input of a non-streaming completion asked for by a tool (`omniroute_route_request`,
/// `omniroute_test_combo`): the body and the session header are built as a client would send
/// them and go through [`parse`], so a tool's request is validated exactly like an HTTP one.
/// `limit` is the server's body limit (`server.max_body_bytes`), applied as the HTTP path does.
pub fn for_tool(
    model: &str,
    messages: Value,
    session: Option<&str>,
    limit: u64,
) -> Result<ChatInput, ApiError> {
    let body = serde_json::json!({ "model": model, "messages": messages });
    let raw = Bytes::from(body.to_string());
    if raw.len() as u64 > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut headers = HeaderMap::new();
    if let Some(s) = session {
        limits::session_id(s, "session")?;
        let v = axum::http::HeaderValue::from_str(s).map_err(|_| {
            bad(
                "session must be 1 to 128 visible ASCII characters".into(),
                "session",
            )
        })?;
        headers.insert("x-omniroute-session", v);
    }
    parse(raw, &headers)
}
