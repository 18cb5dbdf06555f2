//! The built-in deterministic `mock` provider, so the gateway works with zero setup. Behaviour is
//! chosen by the model's upstream name:
//!
//! | name contains | behaviour |
//! | --- | --- |
//! | `slow` | answers after 300 ms |
//! | `flaky` | every second call fails with a 500 |
//! | `429` | rate limited, Retry-After 1 s |
//! | `500` | server error |
//! | `cut-stream` | streams two pieces, then the stream breaks |
//! | anything else | answers at once |
//!
//! The provider's `latency_ms` is added to every answer; `failure_rate` makes that share of calls
//! fail with a 500, decided by a per-model call counter (deterministic, no randomness).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use omniroute_core::event::{ErrorClass, Tokens};
use serde_json::{Value, json};

use super::{Call, Chunk, Failure, Reply};

static CALLS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// The 1-based call number for this model, counted since the process started.
fn next_call(model: &str) -> u64 {
    let mut guard = CALLS.lock().unwrap_or_else(|e| e.into_inner());
    let n = guard
        .get_or_insert_with(HashMap::new)
        .entry(model.to_string())
        .or_insert(0);
    *n += 1;
    *n
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn failure_for(name: &str, n: u64, failure_rate: f64) -> Option<Failure> {
    if name.contains("429") {
        return Some(Failure {
            retry_after_ms: Some(1_000),
            ..Failure::new(ErrorClass::RateLimited, Some(429), "mock: rate limited")
        });
    }
    if name.contains("500") || (name.contains("flaky") && n.is_multiple_of(2)) {
        return Some(Failure::new(
            ErrorClass::ServerError,
            Some(500),
            "mock: server error",
        ));
    }
    // Spread failures evenly: call n fails when the rate's running total crosses an integer.
    let total = |k: u64| (k as f64 * failure_rate).floor();
    if failure_rate > 0.0 && total(n) > total(n - 1) {
        return Some(Failure::new(
            ErrorClass::ServerError,
            Some(500),
            "mock: injected failure",
        ));
    }
    None
}

pub async fn call(c: &Call<'_>) -> Result<Reply, Failure> {
    let name = c.model.upstream.as_str();
    let n = next_call(name);
    let mut delay = c.provider.latency_ms;
    if name.contains("slow") {
        delay += 300;
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(f) = failure_for(name, n, c.provider.failure_rate) {
        return Err(f);
    }
    let prompt = last_user_text(c.body);
    let text = format!(
        "Mock reply from {}: {}",
        c.model.id,
        prompt.chars().take(80).collect::<String>()
    );
    let tokens = Tokens {
        input: (prompt.len() as u64 / 4).max(1),
        output: text.split_whitespace().count() as u64,
        ..Tokens::default()
    };
    let usage = json!({
        "prompt_tokens": tokens.input,
        "completion_tokens": tokens.output,
        "total_tokens": tokens.input + tokens.output,
    });
    if !c.stream {
        let body = json!({
            "id": c.id,
            "object": "chat.completion",
            "created": c.created,
            "model": c.requested,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "finish_reason": "stop",
            }],
            "usage": usage,
        });
        return Ok(super::full(&body, tokens));
    }
    let chunk = |delta: Value, finish: Value| {
        let v = json!({
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.requested,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        Ok(Chunk::Frame(Bytes::from(format!("data: {v}\n\n"))))
    };
    let mut items = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for piece in words.chunks(3) {
        items.push(chunk(json!({ "content": piece.concat() }), Value::Null));
    }
    if name.contains("cut-stream") {
        items.truncate(3);
        items.push(Err(Failure::new(
            ErrorClass::StreamCut,
            None,
            "mock: stream cut",
        )));
    } else {
        items.push(chunk(json!({}), json!("stop")));
        items.push(Ok(Chunk::Usage(tokens)));
        if c.client_wants_usage {
            let v = json!({
                "id": c.id,
                "object": "chat.completion.chunk",
                "created": c.created,
                "model": c.requested,
                "choices": [],
                "usage": usage,
            });
            items.push(Ok(Chunk::Frame(Bytes::from(format!("data: {v}\n\n")))));
        }
        items.push(Ok(Chunk::Done));
    }
    Ok(Reply::Stream(Box::pin(futures_util::stream::iter(items))))
}
