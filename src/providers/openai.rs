//! Any OpenAI-compatible API (OpenAI, OpenRouter, Groq, vLLM, Ollama, ...). Non-streaming answers
//! pass through as they are; streams pass through frame by frame as they arrive, with usage
//! captured (`stream_options.include_usage` is always requested; the usage-only chunk is dropped
//! when the client did not ask for it).

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use super::{Call, Chunk, Failure, Reply, http_failure, openai_usage, transport_failure};
use omniroute_core::event::ErrorClass;

/// Most bytes of an error body read for classification and messages.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

pub(crate) fn api_key(c: &Call<'_>) -> Result<Option<String>, Failure> {
    match &c.provider.api_key_env {
        None => Ok(None),
        Some(var) => std::env::var(var).map(Some).map_err(|_| {
            Failure::new(
                ErrorClass::Auth,
                None,
                format!(
                    "provider {}: environment variable {var} is not set",
                    c.provider.id
                ),
            )
        }),
    }
}

/// Reads at most `ERROR_BODY_LIMIT` bytes of an error body.
pub(crate) async fn error_body(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(Ok(b)) = s.next().await {
        out.extend_from_slice(&b);
        if out.len() >= ERROR_BODY_LIMIT {
            out.truncate(ERROR_BODY_LIMIT);
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) async fn send(
    c: &Call<'_>,
    url: String,
    body: &impl serde::Serialize,
    headers: &[(&str, String)],
) -> Result<reqwest::Response, Failure> {
    let mut req = c.http.post(c.endpoints.get(url)?).json(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    // One timer per attempt: each new tokio timer can wake a parked worker, so a whole answer is
    // bounded by reqwest's own timeout, and a stream's response head by `tokio::time::timeout`
    // (the engine bounds the rest: time to first token, then an idle limit between pieces).
    let resp = if c.stream {
        tokio::time::timeout(c.timeout, req.send())
            .await
            .map_err(|_| {
                Failure::new(ErrorClass::Timeout, None, "no response within the timeout")
            })?
    } else {
        req.timeout(c.timeout).send().await
    }
    .map_err(|e| transport_failure(&e))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = error_body(resp).await;
    Err(http_failure(status, retry_after.as_deref(), &text))
}

pub async fn call(c: &Call<'_>) -> Result<Reply, Failure> {
    let streamed;
    let body = if c.stream {
        let mut b = c.body.clone();
        b["stream"] = Value::Bool(true);
        b["stream_options"]["include_usage"] = Value::Bool(true);
        streamed = b;
        &streamed
    } else {
        c.body
    };
    let body = WithModel {
        body,
        model: &c.model.upstream,
    };
    let mut headers = Vec::new();
    if let Some(key) = api_key(c)? {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    let url = format!(
        "{}/chat/completions",
        c.provider.base_url.trim_end_matches('/')
    );
    let resp = send(c, url, &body, &headers).await?;
    if !c.stream {
        // Pass the answer through as it came; read only its usage (no full JSON tree).
        #[derive(serde::Deserialize)]
        struct UsageOnly {
            #[serde(default)]
            usage: Value,
        }
        let body = resp.bytes().await.map_err(|e| super::body_failure(&e))?;
        let u: UsageOnly = serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                ErrorClass::ServerError,
                None,
                format!("unreadable response: {e}"),
            )
        })?;
        return Ok(Reply::Full {
            tokens: openai_usage(&u.usage),
            body,
        });
    }
    Ok(Reply::Stream(frames(resp, c.client_wants_usage)))
}

/// The client's body with `model` set to the upstream's name, serialized straight from the
/// parsed request: cloning the whole tree to change one field was a visible share of a request.
struct WithModel<'a> {
    body: &'a Value,
    model: &'a str,
}

impl serde::Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(fields) = self.body.as_object() else {
            return self.body.serialize(s);
        };
        let others = fields.keys().filter(|k| *k != "model").count();
        let mut m = s.serialize_map(Some(others + 1))?;
        m.serialize_entry("model", self.model)?;
        for (k, v) in fields.iter().filter(|(k, _)| *k != "model") {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn frames(resp: reqwest::Response, wants_usage: bool) -> super::ChunkStream {
    super::sse_chunks(
        resp,
        move |ev, out| translate(&ev.data, wants_usage, out),
        "upstream stream ended before [DONE]",
    )
}

/// Maps one SSE event of an OpenAI stream; true at `[DONE]` (or an error event).
fn translate(data: &str, wants_usage: bool, out: &mut VecDeque<Result<Chunk, Failure>>) -> bool {
    if data.trim() == "[DONE]" {
        out.push_back(Ok(Chunk::Done));
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        out.push_back(Ok(Chunk::Frame(Bytes::from(format!("data: {data}\n\n")))));
        return false;
    };
    if let Some(err) = v.get("error") {
        let msg = err["message"]
            .as_str()
            .unwrap_or("upstream error in stream");
        out.push_back(Err(Failure::new(ErrorClass::StreamCut, None, msg)));
        return true;
    }
    let has_usage = v["usage"].is_object();
    if has_usage {
        out.push_back(Ok(Chunk::Usage(openai_usage(&v["usage"]))));
    }
    let usage_only = v["choices"].as_array().is_some_and(|c| c.is_empty()) && has_usage;
    if !usage_only || wants_usage {
        out.push_back(Ok(Chunk::Frame(Bytes::from(format!("data: {data}\n\n")))));
    }
    false
}
