//! OpenAI chat-completions <-> Anthropic Messages translation: owns turning an OpenAI chat
//! request into an Anthropic Messages request, an Anthropic response back into a
//! `chat.completion`, and an Anthropic event stream into `chat.completion.chunk` SSE frames,
//! plus mapping Anthropic usage onto the gateway's disjoint [`Tokens`] buckets.

use omniroute_core::event::Tokens;

use std::collections::HashMap;
use std::fmt::Display;

use serde_json::{Map, Value, json};

/// Used when the client gives neither `max_completion_tokens` nor `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TranslateError {
    /// The input JSON cannot be translated; the message starts with the offending field,
    /// e.g. `messages[2].content: ...`.
    #[error("{0}")]
    Invalid(String),
    /// Anthropic reported an error (an `error` stream event or an error response body).
    #[error("upstream error ({kind}): {message}")]
    Upstream { kind: String, message: String },
}

fn invalid(path: impl Display, msg: impl Display) -> TranslateError {
    TranslateError::Invalid(format!("{path}: {msg}"))
}

type Obj = Map<String, Value>;

/// The value of `key`, treating JSON `null` like an absent field.
fn present<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn req_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a str, TranslateError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{path}.{key}"), "expected a string"))
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat -> Anthropic Messages
// ---------------------------------------------------------------------------------------------

/// OpenAI chat request JSON -> Anthropic Messages request JSON. `upstream_model` replaces `model`.
///
/// System/developer messages are hoisted (wherever they occur) into the top-level `system`
/// string, joined by blank lines. Consecutive same-role turns are merged, and in a merged user
/// turn `tool_result` blocks are moved before other blocks, as Anthropic requires. Messages
/// whose content ends up empty are dropped. `tool_choice`/`parallel_tool_calls` are only sent
/// when there are tools. `n` other than 1 is an error; other unsupported fields are ignored.
pub fn to_anthropic_request(openai: &Value, upstream_model: &str) -> Result<Value, TranslateError> {
    let req = openai
        .as_object()
        .ok_or_else(|| invalid("request", "expected a JSON object"))?;
    check_n(req)?;
    let (system, messages) = convert_messages(present(req, "messages"))?;
    let mut out = Obj::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("max_tokens".into(), max_tokens(req)?.into());
    out.insert("messages".into(), messages);
    if !system.is_empty() {
        out.insert("system".into(), system.into());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = number_field(req, key)? {
            out.insert(key.into(), v);
        }
    }
    if let Some(stop) = stop_sequences(req)? {
        out.insert("stop_sequences".into(), stop);
    }
    if let Some(stream) = present(req, "stream") {
        let stream = stream
            .as_bool()
            .ok_or_else(|| invalid("stream", "expected a boolean"))?;
        out.insert("stream".into(), stream.into());
    }
    insert_tools(req, &mut out)?;
    if let Some(user) = present(req, "user") {
        let user = user
            .as_str()
            .ok_or_else(|| invalid("user", "expected a string"))?;
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    Ok(Value::Object(out))
}

fn check_n(req: &Obj) -> Result<(), TranslateError> {
    match present(req, "n") {
        None => Ok(()),
        Some(n) if n.as_u64() == Some(1) => Ok(()),
        Some(n) => Err(invalid("n", format!("only n=1 is supported, got {n}"))),
    }
}

fn max_tokens(req: &Obj) -> Result<u64, TranslateError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = present(req, key) {
            return v
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| invalid(key, "expected a positive integer"));
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

fn number_field(req: &Obj, key: &str) -> Result<Option<Value>, TranslateError> {
    match present(req, key) {
        None => Ok(None),
        Some(v) if v.is_number() => Ok(Some(v.clone())),
        Some(_) => Err(invalid(key, "expected a number")),
    }
}

fn stop_sequences(req: &Obj) -> Result<Option<Value>, TranslateError> {
    let seqs = match present(req, "stop") {
        None => return Ok(None),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    return Err(invalid(format!("stop[{i}]"), "expected a string"));
                }
            }
            items.clone()
        }
        Some(_) => return Err(invalid("stop", "expected a string or an array of strings")),
    };
    Ok((!seqs.is_empty()).then_some(Value::Array(seqs)))
}

// --- messages ---------------------------------------------------------------------------------

struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// Returns the joined system prompt and the alternating Anthropic `messages` array.
fn convert_messages(messages: Option<&Value>) -> Result<(String, Value), TranslateError> {
    let messages = messages
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "expected an array"))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let (role, blocks) = match req_str(msg, "role", &path)? {
            "system" | "developer" => {
                system.push(text_content(msg.get("content"), &path)?);
                continue;
            }
            "user" => ("user", content_blocks(msg.get("content"), &path, true)?),
            "assistant" => ("assistant", assistant_blocks(msg, &path)?),
            "tool" => ("user", vec![tool_result(msg, &path)?]),
            other => {
                return Err(invalid(
                    format!("{path}.role"),
                    format!("unsupported role {other:?}"),
                ));
            }
        };
        push_turn(&mut turns, role, blocks);
    }
    if turns.is_empty() {
        return Err(invalid(
            "messages",
            "at least one non-empty user or assistant message is required",
        ));
    }
    system.retain(|s| !s.is_empty());
    let messages = turns.into_iter().map(turn_json).collect();
    Ok((system.join("\n\n"), Value::Array(messages)))
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

fn turn_json(turn: Turn) -> Value {
    let is_tool_result = |b: &Value| b.get("type").and_then(Value::as_str) == Some("tool_result");
    let (mut blocks, rest): (Vec<Value>, Vec<Value>) =
        turn.blocks.into_iter().partition(is_tool_result);
    blocks.extend(rest);
    json!({ "role": turn.role, "content": blocks })
}

/// Content that must be plain text (system/developer messages): parts are joined by newlines.
fn text_content(content: Option<&Value>, path: &str) -> Result<String, TranslateError> {
    let blocks = content_blocks(content, path, false)?;
    let texts: Vec<&str> = blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    Ok(texts.join("\n"))
}

/// OpenAI message content (string or parts) -> Anthropic content blocks, empty text dropped.
fn content_blocks(
    content: Option<&Value>,
    path: &str,
    allow_images: bool,
) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let part_path = format!("{path}.content[{j}]");
                blocks.extend(content_part(part, &part_path, allow_images)?);
            }
            Ok(blocks)
        }
        Some(_) => Err(invalid(
            format!("{path}.content"),
            "expected a string or an array of content parts",
        )),
    }
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "type": "text", "text": text }))
}

fn content_part(
    part: &Value,
    path: &str,
    allow_images: bool,
) -> Result<Option<Value>, TranslateError> {
    match req_str(part, "type", path)? {
        "text" => Ok(text_block(req_str(part, "text", path)?)),
        "refusal" => Ok(text_block(req_str(part, "refusal", path)?)),
        "image_url" if allow_images => image_block(part, path).map(Some),
        "image_url" => Err(invalid(
            format!("{path}.type"),
            "image parts are only supported in user and tool messages",
        )),
        other => Err(invalid(
            format!("{path}.type"),
            format!("unsupported content part type {other:?}"),
        )),
    }
}

fn image_block(part: &Value, path: &str) -> Result<Value, TranslateError> {
    let url_path = format!("{path}.image_url.url");
    let url = match part.get("image_url") {
        Some(Value::String(url)) => Some(url.as_str()),
        Some(obj) => obj.get("url").and_then(Value::as_str),
        None => None,
    }
    .ok_or_else(|| invalid(&url_path, "expected a string"))?;
    let source = if let Some(data_url) = url.strip_prefix("data:") {
        base64_source(data_url, &url_path)?
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({ "type": "url", "url": url })
    } else {
        return Err(invalid(
            url_path,
            "expected a data:, http:// or https:// URL",
        ));
    };
    Ok(json!({ "type": "image", "source": source }))
}

/// `data:` URL body (after the scheme) -> Anthropic base64 image source.
fn base64_source(data_url: &str, path: &str) -> Result<Value, TranslateError> {
    let (meta, data) = data_url
        .split_once(',')
        .ok_or_else(|| invalid(path, "malformed data URL (no ',')"))?;
    let meta = meta
        .strip_suffix(";base64")
        .ok_or_else(|| invalid(path, "only base64 data URLs are supported"))?;
    let media_type = meta.split(';').next().unwrap_or_default();
    if media_type.is_empty() || data.is_empty() {
        return Err(invalid(path, "data URL needs a media type and data"));
    }
    Ok(json!({ "type": "base64", "media_type": media_type, "data": data }))
}

fn assistant_blocks(msg: &Value, path: &str) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = content_blocks(msg.get("content"), path, false)?;
    match msg.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                blocks.push(tool_use_block(call, &format!("{path}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => return Err(invalid(format!("{path}.tool_calls"), "expected an array")),
    }
    Ok(blocks)
}

fn tool_use_block(call: &Value, path: &str) -> Result<Value, TranslateError> {
    if let Some(kind) = call
        .get("type")
        .and_then(Value::as_str)
        .filter(|k| *k != "function")
    {
        return Err(invalid(
            format!("{path}.type"),
            format!("unsupported tool call type {kind:?}"),
        ));
    }
    let id = req_str(call, "id", path)?;
    let function = call
        .get("function")
        .ok_or_else(|| invalid(format!("{path}.function"), "expected an object"))?;
    let fn_path = format!("{path}.function");
    let name = req_str(function, "name", &fn_path)?;
    let input = parse_arguments(function.get("arguments"), &format!("{fn_path}.arguments"))?;
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

/// The JSON-encoded arguments string of a tool call -> a JSON object (empty string -> `{}`).
fn parse_arguments(arguments: Option<&Value>, path: &str) -> Result<Value, TranslateError> {
    let text = match arguments {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(Value::String(text)) => text,
        Some(_) => return Err(invalid(path, "expected a JSON-encoded string")),
    };
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(invalid(path, "expected a JSON object")),
        Err(e) => Err(invalid(path, format!("invalid JSON: {e}"))),
    }
}

fn tool_result(msg: &Value, path: &str) -> Result<Value, TranslateError> {
    let id = req_str(msg, "tool_call_id", path)?;
    let mut block = json!({ "type": "tool_result", "tool_use_id": id });
    let content = match msg.get("content") {
        Some(Value::String(text)) => (!text.is_empty()).then(|| Value::String(text.clone())),
        other => {
            let blocks = content_blocks(other, path, true)?;
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
    };
    if let (Some(content), Some(obj)) = (content, block.as_object_mut()) {
        obj.insert("content".into(), content);
    }
    Ok(block)
}

// --- tools --------------------------------------------------------------------------------------

fn insert_tools(req: &Obj, out: &mut Obj) -> Result<(), TranslateError> {
    let tools = match present(req, "tools") {
        None => return Ok(()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "expected an array")),
    };
    if tools.is_empty() {
        return Ok(());
    }
    let converted = tools
        .iter()
        .enumerate()
        .map(|(i, tool)| tool_definition(tool, &format!("tools[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    out.insert("tools".into(), Value::Array(converted));
    if let Some(choice) = tool_choice(req)? {
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}

fn tool_definition(tool: &Value, path: &str) -> Result<Value, TranslateError> {
    let kind = req_str(tool, "type", path)?;
    if kind != "function" {
        return Err(invalid(
            format!("{path}.type"),
            format!("unsupported tool type {kind:?}"),
        ));
    }
    let fn_path = format!("{path}.function");
    let function = tool
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| invalid(&fn_path, "expected an object"))?;
    let mut def = Obj::new();
    def.insert("name".into(), req_str(function, "name", &fn_path)?.into());
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        def.insert("description".into(), description.into());
    }
    let schema = match function.get("parameters") {
        None | Some(Value::Null) => json!({ "type": "object", "properties": {} }),
        Some(schema) if schema.is_object() => schema.clone(),
        Some(_) => {
            return Err(invalid(
                format!("{fn_path}.parameters"),
                "expected an object",
            ));
        }
    };
    def.insert("input_schema".into(), schema);
    Ok(Value::Object(def))
}

/// `tool_choice` plus `parallel_tool_calls: false` -> Anthropic `tool_choice`.
fn tool_choice(req: &Obj) -> Result<Option<Value>, TranslateError> {
    let mut choice = match present(req, "tool_choice") {
        None => json!({ "type": "auto" }),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({ "type": "auto" }),
            "required" => json!({ "type": "any" }),
            "none" => return Ok(Some(json!({ "type": "none" }))),
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("unsupported value {other:?}"),
                ));
            }
        },
        Some(obj) => json!({ "type": "tool", "name": forced_tool_name(obj)? }),
    };
    let serial = present(req, "parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    if serial {
        if let Some(obj) = choice.as_object_mut() {
            obj.insert("disable_parallel_tool_use".into(), true.into());
        }
    } else if present(req, "tool_choice").is_none() {
        return Ok(None);
    }
    Ok(Some(choice))
}

fn forced_tool_name(choice: &Value) -> Result<&str, TranslateError> {
    if choice.get("type").and_then(Value::as_str) != Some("function") {
        return Err(invalid("tool_choice.type", "expected \"function\""));
    }
    let function = choice
        .get("function")
        .ok_or_else(|| invalid("tool_choice.function", "expected an object"))?;
    req_str(function, "name", "tool_choice.function")
}

// ---------------------------------------------------------------------------------------------
// Response: Anthropic Messages -> OpenAI chat.completion
// ---------------------------------------------------------------------------------------------

/// Anthropic (non-streaming) Messages response JSON -> OpenAI `chat.completion` JSON plus token usage.
///
/// Text blocks are concatenated into `message.content` (`null` when there is no text but there
/// are tool calls); `tool_use` blocks become `message.tool_calls`; thinking and other block
/// types are dropped. An Anthropic error body (`"type": "error"`) yields
/// [`TranslateError::Upstream`].
pub fn from_anthropic_response(
    anth: &Value,
    id: &str,
    created: u64,
    model: &str,
) -> Result<(Value, Tokens), TranslateError> {
    if anth.get("type").and_then(Value::as_str) == Some("error") {
        return Err(upstream_error(anth));
    }
    let blocks = anth
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("content", "expected an array"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let path = format!("content[{i}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(req_str(block, "text", &path)?),
            Some("tool_use") => tool_calls.push(tool_call_json(block, &path)?),
            _ => {}
        }
    }
    let tokens = read_usage(anth.get("usage"), Tokens::default());
    let stop_reason = anth.get("stop_reason").and_then(Value::as_str);
    let response = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message_json(text, tool_calls),
            "logprobs": null,
            "finish_reason": stop_reason.map(finish_reason),
        }],
        "usage": usage_json(&tokens),
    });
    Ok((response, tokens))
}

fn message_json(text: String, tool_calls: Vec<Value>) -> Value {
    let mut message = Obj::new();
    message.insert("role".into(), "assistant".into());
    if tool_calls.is_empty() {
        message.insert("content".into(), text.into());
    } else {
        let content = if text.is_empty() {
            Value::Null
        } else {
            text.into()
        };
        message.insert("content".into(), content);
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Value::Object(message)
}

fn tool_call_json(block: &Value, path: &str) -> Result<Value, TranslateError> {
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({
        "id": req_str(block, "id", path)?,
        "type": "function",
        "function": { "name": req_str(block, "name", path)?, "arguments": input.to_string() },
    }))
}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`; unknown reasons map to `"stop"`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Updates `tokens` with whichever Anthropic usage counters are present (they are cumulative).
fn read_usage(usage: Option<&Value>, mut tokens: Tokens) -> Tokens {
    let Some(usage) = usage else {
        return tokens;
    };
    let fields: [(&str, &mut u64); 4] = [
        ("input_tokens", &mut tokens.input),
        ("cache_read_input_tokens", &mut tokens.cached_read),
        ("cache_creation_input_tokens", &mut tokens.cache_write),
        ("output_tokens", &mut tokens.output),
    ];
    for (key, slot) in fields {
        if let Some(n) = usage.get(key).and_then(Value::as_u64) {
            *slot = n;
        }
    }
    tokens
}

fn usage_json(tokens: &Tokens) -> Value {
    let prompt = tokens.input + tokens.cached_read + tokens.cache_write;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": tokens.output,
        "total_tokens": prompt + tokens.output,
        "prompt_tokens_details": { "cached_tokens": tokens.cached_read },
    })
}

/// `{"type":"error","error":{"type":..,"message":..}}` -> [`TranslateError::Upstream`].
fn upstream_error(body: &Value) -> TranslateError {
    let error = body.get("error");
    let field = |key: &str| error.and_then(|e| e.get(key)).and_then(Value::as_str);
    TranslateError::Upstream {
        kind: field("type").unwrap_or("error").to_owned(),
        message: field("message").map_or_else(|| body.to_string(), str::to_owned),
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming: Anthropic SSE events -> OpenAI chat.completion.chunk frames
// ---------------------------------------------------------------------------------------------

/// Translates an Anthropic streaming response (its SSE events, in order) into OpenAI `chat.completion.chunk` SSE frames.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    tokens: Tokens,
    /// Anthropic content-block index -> OpenAI tool-call index.
    tool_indexes: HashMap<u64, usize>,
    started: bool,
    finished: bool,
}

impl StreamTranslator {
    /// `include_usage`: when true, emit a final chunk with empty `choices` and the `usage` object
    /// before `[DONE]` (OpenAI's stream_options.include_usage behaviour); other chunks then
    /// carry `"usage": null`, as OpenAI's do.
    pub fn new(id: &str, created: u64, model: &str, include_usage: bool) -> Self {
        Self {
            id: id.to_owned(),
            created,
            model: model.to_owned(),
            include_usage,
            tokens: Tokens::default(),
            tool_indexes: HashMap::new(),
            started: false,
            finished: false,
        }
    }

    /// One Anthropic SSE event (event name + data JSON text). Returns complete OpenAI SSE frames
    /// to send, each exactly `"data: {json}\n\n"`, and at the end `"data: [DONE]\n\n"`.
    ///
    /// An empty `event` name falls back to the data's `type`. Unknown events, `ping`,
    /// `content_block_stop`, thinking/signature/citation deltas and anything after
    /// `message_stop` produce no frames. An `error` event yields [`TranslateError::Upstream`].
    pub fn push(&mut self, event: &str, data: &str) -> Result<Vec<String>, TranslateError> {
        if self.finished || event == "ping" {
            return Ok(Vec::new());
        }
        let payload: Value = serde_json::from_str(data)
            .map_err(|e| invalid(format!("{event} event data"), format!("invalid JSON: {e}")))?;
        let kind = match event {
            "" => payload
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            name => name,
        };
        let frames = match kind {
            "message_start" => self.on_message_start(&payload),
            "content_block_start" => self.on_block_start(&payload)?,
            "content_block_delta" => self.on_block_delta(&payload)?,
            "message_delta" => self.on_message_delta(&payload),
            "message_stop" => self.on_message_stop(),
            "error" => return Err(upstream_error(&payload)),
            _ => Vec::new(),
        };
        self.started |= !frames.is_empty();
        Ok(frames)
    }

    pub fn usage(&self) -> Tokens {
        self.tokens
    }

    /// True once message_stop was seen (the stream completed normally).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// True once at least one frame has been produced.
    pub fn started(&self) -> bool {
        self.started
    }

    fn on_message_start(&mut self, payload: &Value) -> Vec<String> {
        let usage = payload.get("message").and_then(|m| m.get("usage"));
        self.tokens = read_usage(usage, self.tokens);
        vec![self.chunk(json!({ "role": "assistant", "content": "" }), None)]
    }

    fn on_block_start(&mut self, payload: &Value) -> Result<Vec<String>, TranslateError> {
        let block = payload
            .get("content_block")
            .ok_or_else(|| invalid("content_block_start.content_block", "expected an object"))?;
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => self.start_tool_call(payload, block).map(|f| vec![f]),
            Some("text") => Ok(self.text_frame(block.get("text"))),
            _ => Ok(Vec::new()),
        }
    }

    fn start_tool_call(
        &mut self,
        payload: &Value,
        block: &Value,
    ) -> Result<String, TranslateError> {
        let path = "content_block_start.content_block";
        let (id, name) = (req_str(block, "id", path)?, req_str(block, "name", path)?);
        let block_index = block_index(payload, "content_block_start")?;
        let tool_index = self.tool_indexes.len();
        self.tool_indexes.insert(block_index, tool_index);
        let call = json!({
            "index": tool_index,
            "id": id,
            "type": "function",
            "function": { "name": name, "arguments": "" },
        });
        Ok(self.chunk(json!({ "tool_calls": [call] }), None))
    }

    fn on_block_delta(&mut self, payload: &Value) -> Result<Vec<String>, TranslateError> {
        let delta = payload
            .get("delta")
            .ok_or_else(|| invalid("content_block_delta.delta", "expected an object"))?;
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => Ok(self.text_frame(delta.get("text"))),
            Some("input_json_delta") => self.arguments_frame(payload, delta),
            _ => Ok(Vec::new()),
        }
    }

    fn text_frame(&self, text: Option<&Value>) -> Vec<String> {
        match text.and_then(Value::as_str) {
            Some(text) if !text.is_empty() => vec![self.chunk(json!({ "content": text }), None)],
            _ => Vec::new(),
        }
    }

    fn arguments_frame(
        &self,
        payload: &Value,
        delta: &Value,
    ) -> Result<Vec<String>, TranslateError> {
        let partial = req_str(delta, "partial_json", "content_block_delta.delta")?;
        let block_index = block_index(payload, "content_block_delta")?;
        let tool_index = self.tool_indexes.get(&block_index).ok_or_else(|| {
            invalid(
                "content_block_delta.index",
                format!("block {block_index} is not a tool_use block"),
            )
        })?;
        if partial.is_empty() {
            return Ok(Vec::new());
        }
        let call = json!({ "index": tool_index, "function": { "arguments": partial } });
        Ok(vec![self.chunk(json!({ "tool_calls": [call] }), None)])
    }

    fn on_message_delta(&mut self, payload: &Value) -> Vec<String> {
        self.tokens = read_usage(payload.get("usage"), self.tokens);
        let stop_reason = payload
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str);
        let finish = stop_reason.map_or("stop", finish_reason);
        vec![self.chunk(json!({}), Some(finish))]
    }

    fn on_message_stop(&mut self) -> Vec<String> {
        self.finished = true;
        let mut frames = Vec::new();
        if self.include_usage {
            frames.push(self.frame(json!([]), usage_json(&self.tokens)));
        }
        frames.push("data: [DONE]\n\n".to_owned());
        frames
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let choice =
            json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason });
        self.frame(json!([choice]), Value::Null)
    }

    fn frame(&self, choices: Value, usage: Value) -> String {
        let mut chunk = Obj::new();
        chunk.insert("id".into(), self.id.as_str().into());
        chunk.insert("object".into(), "chat.completion.chunk".into());
        chunk.insert("created".into(), self.created.into());
        chunk.insert("model".into(), self.model.as_str().into());
        chunk.insert("choices".into(), choices);
        if self.include_usage {
            chunk.insert("usage".into(), usage);
        }
        format!("data: {}\n\n", Value::Object(chunk))
    }
}

fn block_index(payload: &Value, event: &str) -> Result<u64, TranslateError> {
    payload
        .get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("{event}.index"), "expected a non-negative integer"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn translate(req: Value) -> Value {
        to_anthropic_request(&req, "claude-up").unwrap()
    }

    fn translate_err(req: Value) -> String {
        match to_anthropic_request(&req, "claude-up") {
            Err(TranslateError::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    fn text(t: &str) -> Value {
        json!({ "type": "text", "text": t })
    }

    // --- request ------------------------------------------------------------------------------

    #[test]
    fn minimal_request_gets_defaults() {
        let out = translate(json!({ "model": "gpt-4o", "messages": [user("hi")] }));
        assert_eq!(
            out,
            json!({
                "model": "claude-up",
                "max_tokens": 4096,
                "messages": [{ "role": "user", "content": [text("hi")] }],
            })
        );
    }

    #[test]
    fn system_and_developer_messages_are_joined() {
        let out = translate(json!({ "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "developer", "content": [text("Use French."), text("No emoji.")] },
            user("hi"),
            { "role": "system", "content": "Late rule." },
            { "role": "system", "content": "" },
        ]}));
        assert_eq!(
            out["system"],
            "Be brief.\n\nUse French.\nNo emoji.\n\nLate rule."
        );
        assert_eq!(
            out["messages"],
            json!([{ "role": "user", "content": [text("hi")] }])
        );
    }

    #[test]
    fn consecutive_same_role_messages_are_merged() {
        let out = translate(json!({ "messages": [
            user("a"),
            { "role": "user", "content": [text("b")] },
            { "role": "assistant", "content": "c" },
            { "role": "assistant", "content": "d" },
            { "role": "assistant", "content": "" },
            user("e"),
        ]}));
        assert_eq!(
            out["messages"],
            json!([
                { "role": "user", "content": [text("a"), text("b")] },
                { "role": "assistant", "content": [text("c"), text("d")] },
                { "role": "user", "content": [text("e")] },
            ])
        );
    }

    #[test]
    fn empty_message_between_same_roles_does_not_break_merge() {
        let out = translate(json!({ "messages": [
            user("a"),
            { "role": "assistant", "content": null },
            user("b"),
        ]}));
        assert_eq!(
            out["messages"],
            json!([{ "role": "user", "content": [text("a"), text("b")] }])
        );
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let out = translate(
            json!({ "messages": [user("x")], "max_tokens": 10, "max_completion_tokens": 20 }),
        );
        assert_eq!(out["max_tokens"], 20);
        let out = translate(json!({ "messages": [user("x")], "max_tokens": 10 }));
        assert_eq!(out["max_tokens"], 10);
        let out = translate(json!({ "messages": [user("x")], "max_tokens": null }));
        assert_eq!(out["max_tokens"], 4096);
    }

    #[test]
    fn invalid_max_tokens_is_an_error() {
        for bad in [json!(0), json!(-5), json!("100"), json!(1.5)] {
            let msg = translate_err(json!({ "messages": [user("x")], "max_tokens": bad }));
            assert!(msg.starts_with("max_tokens: "), "{msg}");
        }
        let msg = translate_err(json!({ "messages": [user("x")], "max_completion_tokens": 0 }));
        assert!(msg.starts_with("max_completion_tokens: "), "{msg}");
    }

    #[test]
    fn sampling_stream_and_user_fields_are_mapped() {
        let out = translate(json!({
            "messages": [user("x")],
            "temperature": 0.2, "top_p": 0.9, "stream": true, "user": "u-42",
            "logprobs": true, "presence_penalty": 1, "stream_options": { "include_usage": true },
        }));
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["top_p"], 0.9);
        assert_eq!(out["stream"], true);
        assert_eq!(out["metadata"], json!({ "user_id": "u-42" }));
        for ignored in ["logprobs", "presence_penalty", "stream_options", "user"] {
            assert!(out.get(ignored).is_none(), "{ignored} leaked");
        }
    }

    #[test]
    fn wrongly_typed_scalars_are_errors() {
        let cases = [
            ("temperature", json!("hot")),
            ("stream", json!("yes")),
            ("user", json!(7)),
        ];
        for (key, value) in cases {
            let mut req = json!({ "messages": [user("x")] });
            req[key] = value;
            assert!(translate_err(req).starts_with(&format!("{key}: ")));
        }
    }

    #[test]
    fn stop_string_and_array_become_stop_sequences() {
        let out = translate(json!({ "messages": [user("x")], "stop": "END" }));
        assert_eq!(out["stop_sequences"], json!(["END"]));
        let out = translate(json!({ "messages": [user("x")], "stop": ["a", "b"] }));
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));
        let out = translate(json!({ "messages": [user("x")], "stop": [] }));
        assert!(out.get("stop_sequences").is_none());
        let msg = translate_err(json!({ "messages": [user("x")], "stop": ["a", 3] }));
        assert!(msg.starts_with("stop[1]: "), "{msg}");
    }

    #[test]
    fn n_greater_than_one_is_an_error() {
        let msg = translate_err(json!({ "messages": [user("x")], "n": 2 }));
        assert!(msg.starts_with("n: only n=1"), "{msg}");
        let out = translate(json!({ "messages": [user("x")], "n": 1 }));
        assert!(out.get("n").is_none());
    }

    #[test]
    fn tools_are_converted() {
        let out = translate(json!({
            "messages": [user("x")],
            "tools": [
                { "type": "function", "function": {
                    "name": "get_weather", "description": "Weather by city",
                    "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] },
                }},
                { "type": "function", "function": { "name": "now" } },
            ],
        }));
        assert_eq!(
            out["tools"],
            json!([
                { "name": "get_weather", "description": "Weather by city",
                  "input_schema": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } },
                { "name": "now", "input_schema": { "type": "object", "properties": {} } },
            ])
        );
        assert!(out.get("tool_choice").is_none());
    }

    #[test]
    fn tool_choice_variants_are_mapped() {
        let tools = json!([{ "type": "function", "function": { "name": "f" } }]);
        let cases = [
            (json!("auto"), json!({ "type": "auto" })),
            (json!("required"), json!({ "type": "any" })),
            (json!("none"), json!({ "type": "none" })),
            (
                json!({ "type": "function", "function": { "name": "f" } }),
                json!({ "type": "tool", "name": "f" }),
            ),
        ];
        for (choice, expected) in cases {
            let out = translate(
                json!({ "messages": [user("x")], "tools": tools, "tool_choice": choice }),
            );
            assert_eq!(out["tool_choice"], expected);
        }
        let msg = translate_err(
            json!({ "messages": [user("x")], "tools": tools, "tool_choice": "sometimes" }),
        );
        assert!(msg.starts_with("tool_choice: "), "{msg}");
    }

    #[test]
    fn parallel_tool_calls_false_disables_parallel_use() {
        let tools = json!([{ "type": "function", "function": { "name": "f" } }]);
        let out = translate(
            json!({ "messages": [user("x")], "tools": tools, "parallel_tool_calls": false }),
        );
        assert_eq!(
            out["tool_choice"],
            json!({ "type": "auto", "disable_parallel_tool_use": true })
        );
        let out = translate(json!({
            "messages": [user("x")], "tools": tools, "tool_choice": "required", "parallel_tool_calls": false,
        }));
        assert_eq!(
            out["tool_choice"],
            json!({ "type": "any", "disable_parallel_tool_use": true })
        );
    }

    #[test]
    fn tool_choice_without_tools_is_dropped() {
        let out = translate(json!({ "messages": [user("x")], "tool_choice": "required" }));
        assert!(out.get("tool_choice").is_none());
        assert!(out.get("tools").is_none());
    }

    #[test]
    fn unsupported_tool_type_names_the_field() {
        let msg = translate_err(json!({
            "messages": [user("x")],
            "tools": [{ "type": "function", "function": { "name": "f" } }, { "type": "custom", "custom": {} }],
        }));
        assert!(msg.starts_with("tools[1].type: "), "{msg}");
    }

    fn tool_conversation() -> Value {
        json!({ "messages": [
            user("weather in Paris and time?"),
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" } },
                { "id": "call_2", "type": "function", "function": { "name": "now", "arguments": "" } },
            ]},
            { "role": "tool", "tool_call_id": "call_1", "content": "18C" },
            { "role": "tool", "tool_call_id": "call_2", "content": [text("12:00")] },
            user("thanks"),
        ]})
    }

    #[test]
    fn tool_calls_and_results_are_converted_and_merged() {
        let out = translate(tool_conversation());
        assert_eq!(
            out["messages"],
            json!([
                { "role": "user", "content": [text("weather in Paris and time?")] },
                { "role": "assistant", "content": [
                    { "type": "tool_use", "id": "call_1", "name": "get_weather", "input": { "city": "Paris" } },
                    { "type": "tool_use", "id": "call_2", "name": "now", "input": {} },
                ]},
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "call_1", "content": "18C" },
                    { "type": "tool_result", "tool_use_id": "call_2", "content": [text("12:00")] },
                    text("thanks"),
                ]},
            ])
        );
    }

    #[test]
    fn assistant_text_precedes_its_tool_use() {
        let out = translate(json!({ "messages": [
            user("q"),
            { "role": "assistant", "content": "Let me check.", "tool_calls": [
                { "id": "c", "type": "function", "function": { "name": "f", "arguments": "{}" } },
            ]},
        ]}));
        assert_eq!(
            out["messages"][1]["content"],
            json!([text("Let me check."), { "type": "tool_use", "id": "c", "name": "f", "input": {} }])
        );
    }

    #[test]
    fn tool_results_are_moved_before_text_in_a_user_turn() {
        let out = translate(json!({ "messages": [
            user("q"),
            { "role": "assistant", "tool_calls": [
                { "id": "c", "type": "function", "function": { "name": "f", "arguments": "{}" } },
            ]},
            user("note first"),
            { "role": "tool", "tool_call_id": "c", "content": "" },
        ]}));
        assert_eq!(
            out["messages"][2]["content"],
            json!([{ "type": "tool_result", "tool_use_id": "c" }, text("note first")])
        );
    }

    #[test]
    fn bad_tool_arguments_name_the_field() {
        let mut req = tool_conversation();
        req["messages"][1]["tool_calls"][1]["function"]["arguments"] = json!("{not json");
        let msg = translate_err(req);
        assert!(
            msg.starts_with("messages[1].tool_calls[1].function.arguments: invalid JSON"),
            "{msg}"
        );
        let mut req = tool_conversation();
        req["messages"][1]["tool_calls"][0]["function"]["arguments"] = json!("[1,2]");
        let msg = translate_err(req);
        assert_eq!(
            msg,
            "messages[1].tool_calls[0].function.arguments: expected a JSON object"
        );
    }

    #[test]
    fn tool_message_without_id_is_an_error() {
        let mut req = tool_conversation();
        req["messages"][2]
            .as_object_mut()
            .unwrap()
            .remove("tool_call_id");
        assert_eq!(
            translate_err(req),
            "messages[2].tool_call_id: expected a string"
        );
    }

    #[test]
    fn images_become_base64_or_url_sources() {
        let out = translate(json!({ "messages": [{ "role": "user", "content": [
            text("what is this?"),
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
            { "type": "image_url", "image_url": { "url": "https://example.com/cat.jpg", "detail": "high" } },
        ]}]}));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                text("what is this?"),
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
                { "type": "image", "source": { "type": "url", "url": "https://example.com/cat.jpg" } },
            ])
        );
    }

    #[test]
    fn bad_images_name_the_field() {
        let cases = [
            (
                "ftp://example.com/a.png",
                "expected a data:, http:// or https:// URL",
            ),
            (
                "data:image/png,rawbytes",
                "only base64 data URLs are supported",
            ),
            ("data:image/png;base64", "malformed data URL (no ',')"),
        ];
        for (url, why) in cases {
            let msg = translate_err(json!({ "messages": [{ "role": "user", "content": [
                text("x"), { "type": "image_url", "image_url": { "url": url } },
            ]}]}));
            assert_eq!(msg, format!("messages[0].content[1].image_url.url: {why}"));
        }
    }

    #[test]
    fn image_in_assistant_message_is_an_error() {
        let msg = translate_err(json!({ "messages": [
            user("x"),
            { "role": "assistant", "content": [{ "type": "image_url", "image_url": { "url": "https://e.com/a.png" } }] },
        ]}));
        assert!(msg.starts_with("messages[1].content[0].type: "), "{msg}");
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            translate_err(json!({ "model": "m" })),
            "messages: expected an array"
        );
        let msg =
            translate_err(json!({ "messages": [{ "role": "system", "content": "only system" }] }));
        assert!(msg.starts_with("messages: at least one"), "{msg}");
        let msg = translate_err(
            json!({ "messages": [user("x"), { "role": "wizard", "content": "hi" }] }),
        );
        assert_eq!(msg, "messages[1].role: unsupported role \"wizard\"");
        let msg = translate_err(
            json!({ "messages": [{ "role": "user", "content": [{ "type": "input_audio" }] }] }),
        );
        assert_eq!(
            msg,
            "messages[0].content[0].type: unsupported content part type \"input_audio\""
        );
        let msg = translate_err(json!({ "messages": [{ "role": "user", "content": 5 }] }));
        assert!(msg.starts_with("messages[0].content: "), "{msg}");
        assert_eq!(translate_err(json!([1])), "request: expected a JSON object");
    }

    // --- response -----------------------------------------------------------------------------

    fn anth_response(content: Value, stop_reason: &str) -> Value {
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-up",
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": { "input_tokens": 12, "cache_creation_input_tokens": 30,
                       "cache_read_input_tokens": 200, "output_tokens": 7 },
        })
    }

    #[test]
    fn text_response_is_translated_with_usage() {
        let anth = anth_response(
            json!([
                { "type": "thinking", "thinking": "hmm", "signature": "sig" },
                text("Hello, "),
                text("world"),
            ]),
            "end_turn",
        );
        let (out, tokens) =
            from_anthropic_response(&anth, "chatcmpl-1", 1_700_000_000, "gpt-4o").unwrap();
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64, "model": "gpt-4o",
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": "Hello, world" },
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": { "prompt_tokens": 242, "completion_tokens": 7, "total_tokens": 249,
                           "prompt_tokens_details": { "cached_tokens": 200 } },
            })
        );
        assert_eq!(
            tokens,
            Tokens {
                input: 12,
                cached_read: 200,
                cache_write: 30,
                reasoning: 0,
                output: 7
            }
        );
    }

    #[test]
    fn tool_use_response_becomes_tool_calls() {
        let anth = anth_response(
            json!([
                text("Checking."),
                { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Paris", "days": 2 } },
                { "type": "tool_use", "id": "toolu_2", "name": "now", "input": {} },
            ]),
            "tool_use",
        );
        let (out, _) = from_anthropic_response(&anth, "id", 1, "m").unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(
            choice["message"],
            json!({
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    { "id": "toolu_1", "type": "function",
                      "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":2}" } },
                    { "id": "toolu_2", "type": "function", "function": { "name": "now", "arguments": "{}" } },
                ],
            })
        );
    }

    #[test]
    fn tool_only_response_has_null_content() {
        let anth = anth_response(
            json!([{ "type": "tool_use", "id": "t", "name": "f", "input": {} }]),
            "tool_use",
        );
        let (out, _) = from_anthropic_response(&anth, "id", 1, "m").unwrap();
        assert!(out["choices"][0]["message"]["content"].is_null());
        assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["id"], "t");
    }

    #[test]
    fn stop_reasons_are_mapped() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ];
        for (stop, finish) in cases {
            let (out, _) =
                from_anthropic_response(&anth_response(json!([text("x")]), stop), "i", 1, "m")
                    .unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
        }
    }

    #[test]
    fn usage_without_cache_fields_counts_zero_cache() {
        let anth = json!({ "content": [text("x")], "stop_reason": "end_turn",
                           "usage": { "input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": null } });
        let (out, tokens) = from_anthropic_response(&anth, "i", 1, "m").unwrap();
        assert_eq!(
            tokens,
            Tokens {
                input: 5,
                output: 3,
                ..Tokens::default()
            }
        );
        assert_eq!(out["usage"]["prompt_tokens"], 5);
        assert_eq!(out["usage"]["total_tokens"], 8);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }

    #[test]
    fn malformed_or_error_responses_are_errors() {
        let err = from_anthropic_response(&json!({ "type": "message" }), "i", 1, "m").unwrap_err();
        assert_eq!(
            err,
            TranslateError::Invalid("content: expected an array".into())
        );
        let err = from_anthropic_response(&json!({ "content": [{ "type": "text" }] }), "i", 1, "m")
            .unwrap_err();
        assert_eq!(
            err,
            TranslateError::Invalid("content[0].text: expected a string".into())
        );
        let body = json!({ "type": "error", "error": { "type": "invalid_request_error", "message": "bad" } });
        let err = from_anthropic_response(&body, "i", 1, "m").unwrap_err();
        assert_eq!(
            err,
            TranslateError::Upstream {
                kind: "invalid_request_error".into(),
                message: "bad".into()
            }
        );
    }

    // --- streaming ----------------------------------------------------------------------------

    const TRANSCRIPT: &[(&str, &str)] = &[
        (
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-up","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        ),
        ("ping", r#"{"type": "ping"}"#),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}"#,
        ),
        ("ping", r#"{"type": "ping"}"#),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":", wor"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"ld \u00e9"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":2}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_2","name":"now","input":{}}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":3}"#,
        ),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}"#,
        ),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ];

    fn run(translator: &mut StreamTranslator, events: &[(&str, &str)]) -> Vec<String> {
        let mut frames = Vec::new();
        for (event, data) in events {
            frames.extend(translator.push(event, data).unwrap());
        }
        frames
    }

    fn frame_json(frame: &str) -> Value {
        let body = frame
            .strip_prefix("data: ")
            .and_then(|f| f.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("bad frame {frame:?}"));
        assert!(
            !body.contains('\n'),
            "frame body must be one line: {frame:?}"
        );
        serde_json::from_str(body).unwrap()
    }

    fn expected_chunk(delta: Value, finish: Value, with_usage: bool) -> Value {
        let mut chunk = json!({
            "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_001u64,
            "model": "gpt-4o",
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if with_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn expected_transcript_chunks(with_usage: bool) -> Vec<Value> {
        let c = |delta: Value, finish: Value| expected_chunk(delta, finish, with_usage);
        vec![
            c(json!({ "role": "assistant", "content": "" }), Value::Null),
            c(json!({ "content": "Hello" }), Value::Null),
            c(json!({ "content": ", wor" }), Value::Null),
            c(json!({ "content": "ld \u{e9}" }), Value::Null),
            c(
                json!({ "tool_calls": [{ "index": 0, "id": "toolu_1", "type": "function",
                                          "function": { "name": "get_weather", "arguments": "" } }] }),
                Value::Null,
            ),
            c(
                json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"city\": " } }] }),
                Value::Null,
            ),
            c(
                json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "\"Paris\"}" } }] }),
                Value::Null,
            ),
            c(
                json!({ "tool_calls": [{ "index": 1, "id": "toolu_2", "type": "function",
                                          "function": { "name": "now", "arguments": "" } }] }),
                Value::Null,
            ),
            c(
                json!({ "tool_calls": [{ "index": 1, "function": { "arguments": "{}" } }] }),
                Value::Null,
            ),
            c(json!({}), json!("tool_calls")),
        ]
    }

    #[test]
    fn full_transcript_with_usage_is_translated_chunk_by_chunk() {
        let mut tr = StreamTranslator::new("chatcmpl-9", 1_700_000_001, "gpt-4o", true);
        assert!(!tr.started());
        let frames = run(&mut tr, TRANSCRIPT);
        let mut expected = expected_transcript_chunks(true);
        expected.push(json!({
            "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_001u64,
            "model": "gpt-4o", "choices": [],
            "usage": { "prompt_tokens": 135, "completion_tokens": 42, "total_tokens": 177,
                       "prompt_tokens_details": { "cached_tokens": 100 } },
        }));
        assert_eq!(frames.len(), expected.len() + 1, "{frames:#?}");
        for (i, (frame, want)) in frames.iter().zip(&expected).enumerate() {
            assert_eq!(frame_json(frame), *want, "frame {i}");
        }
        assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
        assert_eq!(
            tr.usage(),
            Tokens {
                input: 25,
                cached_read: 100,
                cache_write: 10,
                reasoning: 0,
                output: 42
            }
        );
        assert!(tr.started());
        assert!(tr.finished());
    }

    #[test]
    fn transcript_without_include_usage_has_no_usage() {
        let mut tr = StreamTranslator::new("chatcmpl-9", 1_700_000_001, "gpt-4o", false);
        let frames = run(&mut tr, TRANSCRIPT);
        let expected = expected_transcript_chunks(false);
        assert_eq!(frames.len(), expected.len() + 1);
        for (i, (frame, want)) in frames.iter().zip(&expected).enumerate() {
            assert_eq!(frame_json(frame), *want, "frame {i}");
        }
        assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
        assert_eq!(tr.usage().output, 42);
    }

    #[test]
    fn usage_is_recorded_before_message_stop() {
        let mut tr = StreamTranslator::new("i", 1, "m", false);
        run(&mut tr, &TRANSCRIPT[..1]);
        assert_eq!(
            tr.usage(),
            Tokens {
                input: 25,
                cached_read: 100,
                cache_write: 10,
                reasoning: 0,
                output: 1
            }
        );
        assert!(tr.started());
        assert!(!tr.finished());
    }

    #[test]
    fn message_delta_with_input_usage_updates_it() {
        let mut tr = StreamTranslator::new("i", 1, "m", false);
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":30,"output_tokens":9}}"#;
        let frames = tr.push("message_delta", delta).unwrap();
        assert_eq!(
            frame_json(&frames[0])["choices"][0]["finish_reason"],
            "length"
        );
        assert_eq!(
            tr.usage(),
            Tokens {
                input: 30,
                output: 9,
                ..Tokens::default()
            }
        );
    }

    #[test]
    fn error_event_is_an_upstream_error() {
        let mut tr = StreamTranslator::new("i", 1, "m", true);
        run(&mut tr, &TRANSCRIPT[..8]);
        let err = tr
            .push(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .unwrap_err();
        assert_eq!(
            err,
            TranslateError::Upstream {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "upstream error (overloaded_error): Overloaded"
        );
        assert!(tr.started());
        assert!(!tr.finished());
    }

    #[test]
    fn empty_event_name_falls_back_to_data_type() {
        let mut tr = StreamTranslator::new("i", 1, "m", false);
        let frames = tr
            .push("", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#)
            .unwrap();
        assert_eq!(
            frame_json(&frames[0])["choices"][0]["delta"],
            json!({ "content": "hi" })
        );
        let err = tr.push(
            "",
            r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
        );
        assert!(matches!(err, Err(TranslateError::Upstream { .. })));
    }

    #[test]
    fn events_after_message_stop_are_ignored() {
        let mut tr = StreamTranslator::new("i", 1, "m", false);
        assert_eq!(
            tr.push("message_stop", "{}").unwrap(),
            vec!["data: [DONE]\n\n".to_owned()]
        );
        assert!(tr.finished());
        let late = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"late"}}"#;
        assert!(tr.push("content_block_delta", late).unwrap().is_empty());
    }

    #[test]
    fn unknown_events_and_pings_produce_nothing() {
        let mut tr = StreamTranslator::new("i", 1, "m", false);
        assert!(tr.push("ping", "").unwrap().is_empty());
        assert!(
            tr.push("some_future_event", r#"{"type":"some_future_event"}"#)
                .unwrap()
                .is_empty()
        );
        assert!(!tr.started());
    }

    #[test]
    fn malformed_stream_events_are_errors() {
        let mut tr = StreamTranslator::new("i", 1, "m", false);
        let err = tr.push("message_start", "{not json").unwrap_err();
        assert!(
            matches!(&err, TranslateError::Invalid(m) if m.starts_with("message_start event data: invalid JSON"))
        );
        let stray = r#"{"type":"content_block_delta","index":4,"delta":{"type":"input_json_delta","partial_json":"{"}}"#;
        let err = tr.push("content_block_delta", stray).unwrap_err();
        assert_eq!(
            err,
            TranslateError::Invalid(
                "content_block_delta.index: block 4 is not a tool_use block".into()
            )
        );
        let no_id = r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","name":"f"}}"#;
        let err = tr.push("content_block_start", no_id).unwrap_err();
        assert_eq!(
            err,
            TranslateError::Invalid(
                "content_block_start.content_block.id: expected a string".into()
            )
        );
    }
}
