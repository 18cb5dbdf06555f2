//! Anthropic Messages API: requests translated from OpenAI's shape, answers (streaming included)
//! translated back, cache token fields mapped to the disjoint buckets. The translation itself lives
//! in `anthropic_translate`; this module does the HTTP.

use bytes::Bytes;
use omniroute_core::event::ErrorClass;

use super::anthropic_translate::{
    StreamTranslator, TranslateError, from_anthropic_response, to_anthropic_request,
};
use super::openai::{api_key, send};
use super::{Call, Chunk, ChunkStream, Failure, Reply};

const VERSION: &str = "2023-06-01";

pub async fn call(c: &Call<'_>) -> Result<Reply, Failure> {
    let mut body = to_anthropic_request(c.body, &c.model.upstream)
        .map_err(|e| Failure::new(ErrorClass::BadRequest, Some(400), e.to_string()))?;
    body["stream"] = serde_json::Value::Bool(c.stream);
    let mut headers = vec![("anthropic-version", VERSION.to_string())];
    if let Some(key) = api_key(c)? {
        headers.push(("x-api-key", key));
    }
    let url = format!("{}/messages", c.provider.base_url.trim_end_matches('/'));
    let resp = send(c, url, &body, &headers).await?;
    if !c.stream {
        let v: serde_json::Value = resp.json().await.map_err(|e| super::body_failure(&e))?;
        let (body, tokens) = from_anthropic_response(&v, c.id, c.created, c.requested)
            .map_err(|e| translate_failure(ErrorClass::ServerError, None, e))?;
        return Ok(super::full(&body, tokens));
    }
    let translator = StreamTranslator::new(c.id, c.created, c.requested, c.client_wants_usage);
    Ok(Reply::Stream(frames(resp, translator)))
}

fn frames(resp: reqwest::Response, mut tr: StreamTranslator) -> ChunkStream {
    super::sse_chunks(
        resp,
        move |ev, out| {
            let name = ev.event.as_deref().unwrap_or("message");
            match tr.push(name, &ev.data) {
                Ok(frames) => {
                    let frames = frames
                        .into_iter()
                        .filter(|f| !f.starts_with("data: [DONE]"));
                    out.extend(frames.map(|f| Ok(Chunk::Frame(Bytes::from(f)))));
                }
                Err(e) => {
                    out.push_back(Err(translate_failure(ErrorClass::StreamCut, None, e)));
                    return true;
                }
            }
            if tr.finished() {
                out.push_back(Ok(Chunk::Usage(tr.usage())));
                out.push_back(Ok(Chunk::Done));
                return true;
            }
            false
        },
        "upstream stream ended before message_stop",
    )
}

/// A translation error as a failure: Anthropic's own error text (which can quote the prompt) is
/// marked as the upstream's, with its kind; a translation problem is in the gateway's words.
fn translate_failure(class: ErrorClass, status: Option<u16>, e: TranslateError) -> Failure {
    match &e {
        TranslateError::Upstream { kind, .. } => {
            let kind = serde_json::json!({ "type": kind });
            Failure::quoting(class, status, e.to_string(), Some(&kind))
        }
        TranslateError::Invalid(_) => Failure::new(class, status, e.to_string()),
    }
}
