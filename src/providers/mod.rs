//! Upstream providers: one pooled reqwest client, three kinds. Each call takes an OpenAI-shaped
//! request body and gives back either a whole OpenAI `chat.completion` or a stream of OpenAI SSE
//! frames, plus the tokens used, or a typed [`Failure`] classified by the one table in
//! `omniroute_core::router::classify`.

pub mod anthropic;
pub mod anthropic_translate;
pub mod mock;
pub mod openai;
pub mod sse;

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use omniroute_core::config::{Model, Provider, ProviderKind};
use omniroute_core::event::{ErrorClass, Tokens};
use serde_json::Value;

/// A failed attempt, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: ErrorClass,
    pub status: Option<u16>,
    pub retry_after_ms: Option<u64>,
    pub message: String,
    /// `Some` when `message` is the upstream's own text, which can quote the prompt: it is then
    /// stored only with `log.store_bodies` (`engine::privacy`). Holds the error's type and code
    /// as the upstream named them (`type/code`, identifiers only; empty when it named none).
    pub upstream_kind: Option<String>,
}

impl Failure {
    /// A failure in the gateway's own words (safe to store).
    pub fn new(class: ErrorClass, status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            class,
            status,
            retry_after_ms: None,
            message: message.into(),
            upstream_kind: None,
        }
    }

    /// A failure whose message is the upstream's text; `error` is the upstream's error object
    /// (`{"type", "code", "message"}`), read for its kind.
    pub fn quoting(
        class: ErrorClass,
        status: Option<u16>,
        message: impl Into<String>,
        error: Option<&Value>,
    ) -> Self {
        Self {
            upstream_kind: Some(error.map(error_kind).unwrap_or_default()),
            ..Self::new(class, status, message)
        }
    }
}

/// Longest part of an error kind kept (each of type and code).
const KIND_PART: usize = 40;

/// The kind of an upstream error object: its `type` and `code` joined by `/`, each kept only
/// when it looks like an identifier (letters, digits, `_ . : -`, at most 40 characters), since
/// this is stored even when the message is not and must not become a way around that.
pub fn error_kind(error: &Value) -> String {
    let ident = |v: &Value| {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let ok = !s.is_empty()
            && s.len() <= KIND_PART
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
        ok.then_some(s)
    };
    [&error["type"], &error["code"]]
        .into_iter()
        .filter_map(ident)
        .collect::<Vec<_>>()
        .join("/")
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// A complete OpenAI SSE frame (`data: {...}\n\n`) to pass to the client.
    Frame(Bytes),
    /// Token usage reported by the upstream (the last report wins).
    Usage(Tokens),
    /// The upstream finished the stream properly.
    Done,
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Failure>> + Send>>;

/// What a successful call returned.
pub enum Reply {
    /// A whole OpenAI `chat.completion`, as bytes to pass to the client untouched.
    Full {
        body: Bytes,
        tokens: Tokens,
    },
    Stream(ChunkStream),
}

/// Serializes a completion built here (mock, translated) for [`Reply::Full`].
pub fn full(body: &Value, tokens: Tokens) -> Reply {
    Reply::Full {
        body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        tokens,
    }
}

/// Upstream URLs parsed once: parsing one (host and IDNA processing included) cost several µs,
/// a visible share of a proxied request. Keyed by the full URL text, so a config change that
/// points a provider elsewhere simply adds an entry.
#[derive(Default)]
pub struct Endpoints(std::sync::RwLock<std::collections::HashMap<String, reqwest::Url>>);

impl Endpoints {
    pub fn get(&self, text: String) -> Result<reqwest::Url, Failure> {
        if let Some(u) = self.0.read().ok().and_then(|m| m.get(&text).cloned()) {
            return Ok(u);
        }
        let url = reqwest::Url::parse(&text).map_err(|e| {
            Failure::new(
                ErrorClass::Network,
                None,
                format!("invalid upstream URL {text}: {e}"),
            )
        })?;
        if let Ok(mut m) = self.0.write() {
            m.insert(text, url.clone());
        }
        Ok(url)
    }
}

/// Everything a provider call needs.
pub struct Call<'a> {
    pub http: &'a reqwest::Client,
    pub endpoints: &'a Endpoints,
    pub provider: &'a Provider,
    pub model: &'a Model,
    /// The client's request body (OpenAI shape), validated.
    pub body: &'a Value,
    pub stream: bool,
    /// Whether the client asked for a usage chunk (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// The request id, used as the completion id.
    pub id: &'a str,
    pub created: u64,
    pub timeout: Duration,
    /// The requested model name as the client wrote it (echoed in responses).
    pub requested: &'a str,
}

/// Turns an SSE response into a [`ChunkStream`]. `on_event` maps each SSE event to chunks and
/// returns true once the stream is complete; a body that breaks, or ends before that, yields a
/// `stream_cut` failure (`eof` says which end marker was missing).
pub(crate) fn sse_chunks<F>(resp: reqwest::Response, on_event: F, eof: &'static str) -> ChunkStream
where
    F: FnMut(&sse::SseEvent, &mut VecDeque<Result<Chunk, Failure>>) -> bool + Send + 'static,
{
    struct State<F> {
        bytes: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        parser: sse::SseParser,
        on_event: F,
        ready: VecDeque<Result<Chunk, Failure>>,
        ended: bool,
    }
    let state = State {
        bytes: resp.bytes_stream().boxed(),
        parser: sse::SseParser::default(),
        on_event,
        ready: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut s| async move {
            loop {
                if let Some(item) = s.ready.pop_front() {
                    return Some((item, s));
                }
                if s.ended {
                    return None;
                }
                let cut = |m: String| Err(Failure::new(ErrorClass::StreamCut, None, m));
                match s.bytes.next().await {
                    Some(Ok(b)) => {
                        for ev in s.parser.push(&b) {
                            if !s.ended && (s.on_event)(&ev, &mut s.ready) {
                                s.ended = true;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        s.ended = true;
                        s.ready
                            .push_back(cut(format!("upstream stream broke: {e}")));
                    }
                    None => {
                        s.ended = true;
                        s.ready.push_back(cut(eof.to_string()));
                    }
                }
            }
        },
    ))
}

pub async fn call(c: &Call<'_>) -> Result<Reply, Failure> {
    match c.provider.kind {
        ProviderKind::Openai => openai::call(c).await,
        ProviderKind::Anthropic => anthropic::call(c).await,
        ProviderKind::Mock => mock::call(c).await,
    }
}

/// Tokens from an OpenAI `usage` object, split into disjoint buckets.
pub fn openai_usage(u: &Value) -> Tokens {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let prompt = n(&u["prompt_tokens"]);
    let completion = n(&u["completion_tokens"]);
    let cached = n(&u["prompt_tokens_details"]["cached_tokens"]).min(prompt);
    let reasoning = n(&u["completion_tokens_details"]["reasoning_tokens"]).min(completion);
    Tokens {
        input: prompt - cached,
        cached_read: cached,
        cache_write: 0,
        reasoning,
        output: completion - reasoning,
    }
}

/// Classifies a non-2xx HTTP answer from its status, Retry-After and body.
pub fn http_failure(status: u16, retry_after: Option<&str>, body: &str) -> Failure {
    use omniroute_core::router::classify::{Upstream, classify, parse_retry_after};
    let class = classify(&Upstream {
        status: Some(status),
        transport: None,
        body,
    })
    .unwrap_or(ErrorClass::ServerError);
    let mut message: String = body.chars().take(300).collect();
    if message.is_empty() {
        message = format!("upstream answered {status}");
    }
    // OpenAI and Anthropic both answer `{"error": {"type", "code"?, "message"}}`.
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    Failure {
        retry_after_ms: retry_after.and_then(parse_retry_after),
        ..Failure::quoting(class, Some(status), message, error.as_ref())
    }
}

/// Classifies an error while reading a whole answer's body: the attempt's timeout running out
/// while the body arrives is a timeout, anything else an unreadable answer.
pub fn body_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        transport_failure(e)
    } else {
        Failure::new(
            ErrorClass::ServerError,
            None,
            format!("unreadable response: {e}"),
        )
    }
}

/// Classifies a reqwest error (no usable HTTP answer).
pub fn transport_failure(e: &reqwest::Error) -> Failure {
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Network
    };
    Failure::new(class, None, format!("{e}"))
}
