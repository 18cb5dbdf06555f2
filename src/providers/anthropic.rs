//! Anthropic Messages API: requests translated from OpenAI's shape, answers (streaming included)
//! translated back, cache token fields mapped to the disjoint buckets. The translation itself lives
//! in `anthropic_translate`; this module does the HTTP.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::StreamExt;
use omniroute_core::event::ErrorClass;

use super::anthropic_translate::{StreamTranslator, from_anthropic_response, to_anthropic_request};
use super::openai::{api_key, send};
use super::sse::SseParser;
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
        let v: serde_json::Value = resp.json().await.map_err(|e| {
            Failure::new(
                ErrorClass::ServerError,
                None,
                format!("unreadable response: {e}"),
            )
        })?;
        let (body, tokens) = from_anthropic_response(&v, c.id, c.created, c.requested)
            .map_err(|e| Failure::new(ErrorClass::ServerError, None, e.to_string()))?;
        return Ok(Reply::Full { body, tokens });
    }
    let translator = StreamTranslator::new(c.id, c.created, c.requested, c.client_wants_usage);
    Ok(Reply::Stream(frames(resp, translator)))
}

struct State {
    bytes: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    tr: StreamTranslator,
    ready: VecDeque<Result<Chunk, Failure>>,
    ended: bool,
}

fn frames(resp: reqwest::Response, tr: StreamTranslator) -> ChunkStream {
    let state = State {
        bytes: resp.bytes_stream().boxed(),
        parser: SseParser::default(),
        tr,
        ready: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.ready.pop_front() {
                return Some((item, s));
            }
            if s.ended {
                return None;
            }
            match s.bytes.next().await {
                Some(Ok(b)) => {
                    for ev in s.parser.push(&b) {
                        let name = ev.event.as_deref().unwrap_or("message");
                        match s.tr.push(name, &ev.data) {
                            Ok(out) => {
                                for f in out {
                                    if f.starts_with("data: [DONE]") {
                                        continue;
                                    }
                                    s.ready.push_back(Ok(Chunk::Frame(Bytes::from(f))));
                                }
                            }
                            Err(e) => {
                                s.ended = true;
                                s.ready.push_back(Err(Failure::new(
                                    ErrorClass::StreamCut,
                                    None,
                                    e.to_string(),
                                )));
                            }
                        }
                        if s.tr.finished() && !s.ended {
                            s.ended = true;
                            s.ready.push_back(Ok(Chunk::Usage(s.tr.usage())));
                            s.ready.push_back(Ok(Chunk::Done));
                        }
                    }
                }
                Some(Err(e)) => {
                    s.ended = true;
                    s.ready.push_back(Err(Failure::new(
                        ErrorClass::StreamCut,
                        None,
                        format!("upstream stream broke: {e}"),
                    )));
                }
                None => {
                    s.ended = true;
                    s.ready.push_back(Err(Failure::new(
                        ErrorClass::StreamCut,
                        None,
                        "upstream stream ended before message_stop",
                    )));
                }
            }
        }
    }))
}
