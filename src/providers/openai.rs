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
    let body = WithModel {
        body: c.body,
        model: &c.model.upstream,
        stream: c.stream,
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

/// The client's body with `model` set to the upstream's name (and, for a stream, `stream: true`
/// and `stream_options.include_usage: true`, so usage is always captured), serialized straight
/// from the parsed request: cloning the whole tree to change a field was a visible share of a
/// request.
struct WithModel<'a> {
    body: &'a Value,
    model: &'a str,
    stream: bool,
}

/// The client's `stream_options` with `include_usage` forced on.
struct WithUsage<'a>(Option<&'a serde_json::Map<String, Value>>);

impl serde::Serialize for WithUsage<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0.iter().flat_map(|o| o.iter()) {
            if k != "include_usage" {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("include_usage", &true)?;
        m.end()
    }
}

impl serde::Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(fields) = self.body.as_object() else {
            return self.body.serialize(s);
        };
        let replaced =
            |k: &str| k == "model" || (self.stream && matches!(k, "stream" | "stream_options"));
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("model", self.model)?;
        for (k, v) in fields.iter().filter(|(k, _)| !replaced(k)) {
            m.serialize_entry(k, v)?;
        }
        if self.stream {
            m.serialize_entry("stream", &true)?;
            let options = fields.get("stream_options").and_then(Value::as_object);
            m.serialize_entry("stream_options", &WithUsage(options))?;
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
    /// What the gateway needs of a chunk. The choices (the bulk of it) are counted, never built:
    /// every piece of every stream passes through here.
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        error: Option<Value>,
        #[serde(default)]
        usage: Option<Value>,
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
    }
    let Ok(v) = serde_json::from_str::<Peek>(data) else {
        out.push_back(Ok(Chunk::Frame(Bytes::from(format!("data: {data}\n\n")))));
        return false;
    };
    if let Some(err) = v.error.filter(|e| !e.is_null()) {
        let msg = err["message"]
            .as_str()
            .unwrap_or("upstream error in stream");
        out.push_back(Err(Failure::quoting(
            ErrorClass::StreamCut,
            None,
            msg,
            Some(&err),
        )));
        return true;
    }
    let usage = v.usage.filter(Value::is_object);
    if let Some(u) = &usage {
        out.push_back(Ok(Chunk::Usage(openai_usage(u))));
    }
    let usage_only = v.choices.is_some_and(|c| c.is_empty()) && usage.is_some();
    if !usage_only || wants_usage {
        out.push_back(Ok(Chunk::Frame(Bytes::from(format!("data: {data}\n\n")))));
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn a_streamed_body_asks_for_usage_and_keeps_the_clients_options() {
        let body = json!({ "model": "combo", "stream": true, "messages": [{ "role": "user", "content": "hi" }],
            "stream_options": { "include_usage": false, "include_obfuscation": true }, "temperature": 0.5 });
        let sent = serde_json::to_value(WithModel {
            body: &body,
            model: "up-model",
            stream: true,
        })
        .unwrap();
        assert_eq!(
            sent,
            json!({ "model": "up-model", "stream": true, "messages": body["messages"], "temperature": 0.5,
                "stream_options": { "include_usage": true, "include_obfuscation": true } })
        );
        let plain = json!({ "model": "combo", "messages": [] });
        let sent = serde_json::to_value(WithModel {
            body: &plain,
            model: "up-model",
            stream: false,
        })
        .unwrap();
        assert_eq!(sent, json!({ "model": "up-model", "messages": [] }));
    }

    fn run(data: &str, wants_usage: bool) -> (bool, Vec<Result<Chunk, Failure>>) {
        let mut out = VecDeque::new();
        let end = translate(data, wants_usage, &mut out);
        (end, out.into_iter().collect())
    }

    #[test]
    fn chunks_pass_through_and_usage_is_captured() {
        let piece = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
        let (end, out) = run(piece, false);
        assert!(!end);
        assert_eq!(
            out,
            vec![Ok(Chunk::Frame(Bytes::from(format!("data: {piece}\n\n"))))]
        );

        let usage = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let (_, out) = run(usage, false);
        let tokens = openai_usage(&json!({ "prompt_tokens": 3, "completion_tokens": 2 }));
        assert_eq!(
            out,
            vec![Ok(Chunk::Usage(tokens))],
            "usage-only chunk not passed on"
        );
        let (_, out) = run(usage, true);
        assert_eq!(out.len(), 2, "passed on when the client asked for usage");

        let (end, out) = run(r#"{"error":{"message":"overloaded"}}"#, false);
        assert!(end);
        assert!(
            matches!(&out[..], [Err(f)] if f.class == ErrorClass::StreamCut && f.message == "overloaded")
        );
        let (end, _) = run(" [DONE] ", false);
        assert!(end);
        let (_, out) = run("not json", false);
        assert_eq!(
            out,
            vec![Ok(Chunk::Frame(Bytes::from("data: not json\n\n")))]
        );
    }
}
