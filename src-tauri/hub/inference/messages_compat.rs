//! Anthropic's Messages API over chat completions, for participants whose provider has no
//! `/v1/messages` (most Ollama and LM Studio versions, vLLM). Pure functions over
//! `serde_json::Value`, no I/O, like the Responses fallback beside it:
//!
//! - [`request_to_chat`]: a Messages body (system, messages of text / image / tool_use /
//!   tool_result blocks, tools, tool_choice, max_tokens, stop_sequences, temperature, top_p,
//!   stream) → a chat completions body;
//! - [`chat_to_message`]: a chat completion → a Messages answer (content blocks, `stop_reason`,
//!   usage);
//! - [`MessagesStream`]: chat chunks → Anthropic's event sequence (`message_start`,
//!   `content_block_start`, `content_block_delta`, `content_block_stop`, `message_delta`,
//!   `message_stop`);
//! - [`message_events`]: a whole Messages answer as that event sequence (a provider that answered
//!   a stream request with one JSON document);
//! - [`error_body`]: the hub's errors in Anthropic's shape, `{"type": "error", "error": {..}}`.
//!
//! What a chat body cannot carry (documents, server tools, MCP servers, containers) is refused
//! with a [`CompatError`] naming it, not dropped. Thinking blocks an assistant turn carries are
//! left out (a chat provider cannot take them back), and a `thinking` setting is not passed on:
//! the answer simply has no thinking blocks. When and whether to translate, and the bytes on the
//! wire, belong to the proxy.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::responses_compat::{chat_content_text, CompatError};
use super::sse_parse;

fn unsupported(param: &str, detail: impl Into<String>) -> CompatError {
    CompatError::Unsupported { param: param.to_owned(), detail: detail.into() }
}

fn invalid(param: &str, reason: impl Into<String>) -> CompatError {
    CompatError::Invalid { param: param.to_owned(), reason: reason.into() }
}

/// A fresh Messages id (`msg_` and 32 hex digits), for an answer the hub makes up itself.
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

fn new_tool_use_id() -> String {
    format!("toolu_{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Errors in Anthropic's shape
// ---------------------------------------------------------------------------------------------

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 409 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}}`, what Anthropic answers and its clients parse.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// A provider's error answer (OpenAI-shaped, or anything) in Anthropic's shape: its message is
/// kept, the rest is not (its shape would mean nothing to an Anthropic client).
pub fn error_from_provider(status: u16, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(v) = &parsed {
        if v.get("type").and_then(Value::as_str) == Some("error") && v.get("error").is_some_and(Value::is_object) {
            return v.clone();
        }
    }
    let message = parsed
        .as_ref()
        .and_then(|v| {
            let error = v.get("error")?;
            error.get("message").and_then(Value::as_str).or_else(|| error.as_str()).map(str::to_owned)
        })
        .unwrap_or_else(|| format!("The participant's model server answered HTTP {status}."));
    error_body(status, &message)
}

// ---------------------------------------------------------------------------------------------
// Request: Messages -> chat completions
// ---------------------------------------------------------------------------------------------

/// Translates a Messages body into a chat completions body. `model` is copied as is (the proxy
/// rewrites it). A streaming request asks for `stream_options.include_usage`, so the last chunk
/// carries the token counts `message_delta` reports.
pub fn request_to_chat(body: &Map<String, Value>) -> Result<Value, CompatError> {
    for refused in ["mcp_servers", "container"] {
        if body.get(refused).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(refused, "a chat completions server has nothing to run it on"));
        }
    }
    let mut messages = Vec::new();
    if let Some(system) = body.get("system").filter(|v| !v.is_null()) {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be an array of {role, content} messages"))?;
    for (i, message) in list.iter().enumerate() {
        push_message(&mut messages, message, &format!("messages[{i}]"))?;
    }
    let mut chat = Map::new();
    chat.insert("model".into(), body.get("model").cloned().unwrap_or(Value::Null));
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(n) = body.get("max_tokens").filter(|v| !v.is_null()) {
        if n.as_u64().is_none_or(|n| n == 0) {
            return Err(invalid("max_tokens", "must be a whole number of at least 1"));
        }
        chat.insert("max_tokens".into(), n.clone());
    }
    for key in ["temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(invalid(key, "must be a number"));
            }
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(stops) = body.get("stop_sequences").filter(|v| !v.is_null()) {
        let ok = stops.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(invalid("stop_sequences", "must be an array of strings"));
        }
        chat.insert("stop".into(), stops.clone());
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "must be true or false")),
    };
    if stream {
        chat.insert("stream".into(), Value::Bool(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = body.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        chat.insert("user".into(), Value::String(user.to_owned()));
    }
    let tools = translate_tools(body.get("tools"))?;
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = translate_tool_choice(choice)?;
        chat.insert("tool_choice".into(), choice);
        if parallel == Some(false) {
            chat.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(Value::Object(chat))
}

/// `system`: a string, or text blocks (joined by blank lines).
fn system_text(system: &Value) -> Result<String, CompatError> {
    match system {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let param = format!("system[{i}]");
                match block_type(block, &param)? {
                    "text" => texts.push(block_str(block, "text", &param)?.to_owned()),
                    other => return Err(unsupported(&param, format!("a '{other}' block in the system prompt"))),
                }
            }
            Ok(texts.join("\n\n"))
        }
        _ => Err(invalid("system", "must be a string or an array of text blocks")),
    }
}

fn block_type<'a>(block: &'a Value, param: &str) -> Result<&'a str, CompatError> {
    block.get("type").and_then(Value::as_str).ok_or_else(|| invalid(param, "a content block needs a string 'type'"))
}

fn block_str<'a>(block: &'a Value, key: &str, param: &str) -> Result<&'a str, CompatError> {
    block.get(key).and_then(Value::as_str).ok_or_else(|| invalid(&format!("{param}.{key}"), "must be a string"))
}

/// One Messages turn as chat messages: an assistant turn is one message (text and tool calls); a
/// user turn is a `tool` message per tool result, then one user message with the rest.
fn push_message(messages: &mut Vec<Value>, message: &Value, param: &str) -> Result<(), CompatError> {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{param}.role"), "must be 'user' or 'assistant'"))?;
    if role != "user" && role != "assistant" {
        return Err(invalid(&format!("{param}.role"), format!("must be 'user' or 'assistant', not '{role}'")));
    }
    let content = message.get("content").ok_or_else(|| invalid(&format!("{param}.content"), "is required"))?;
    let blocks = match content {
        Value::String(text) => {
            messages.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(&format!("{param}.content"), "must be a string or an array of content blocks")),
    };
    if role == "assistant" {
        messages.push(assistant_message(blocks, param)?);
        return Ok(());
    }
    let mut parts = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let param = format!("{param}.content[{i}]");
        match block_type(block, &param)? {
            "text" => parts.push(json!({"type": "text", "text": block_str(block, "text", &param)?})),
            "image" => parts.push(image_part(block, &param)?),
            "tool_result" => {
                let id = block_str(block, "tool_use_id", &param)?;
                let text = tool_result_text(block.get("content"), &param)?;
                let text = if block.get("is_error").and_then(Value::as_bool) == Some(true) && !text.is_empty() {
                    format!("Error: {text}")
                } else {
                    text
                };
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            other => return Err(unsupported(&param, format!("a '{other}' block"))),
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    // Text alone goes as a plain string, which every chat server reads; images need the parts.
    let only_text = parts.iter().all(|p| p["type"] == "text");
    let content = if only_text {
        Value::String(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
    } else {
        Value::Array(parts)
    };
    messages.push(json!({"role": "user", "content": content}));
    Ok(())
}

fn assistant_message(blocks: &[Value], param: &str) -> Result<Value, CompatError> {
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let param = format!("{param}.content[{i}]");
        match block_type(block, &param)? {
            "text" => text.push(block_str(block, "text", &param)?.to_owned()),
            "tool_use" => {
                let id = block_str(block, "id", &param)?;
                let name = block_str(block, "name", &param)?;
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // The model's own reasoning from an earlier turn: nothing a chat server takes back.
            "thinking" | "redacted_thinking" => {}
            other => return Err(unsupported(&param, format!("a '{other}' block in an assistant turn"))),
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), if text.is_empty() { Value::Null } else { Value::String(text.join("\n")) });
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Value::Object(message))
}

/// An image block as a chat `image_url` part (base64 as a data URL, or the URL itself).
fn image_part(block: &Value, param: &str) -> Result<Value, CompatError> {
    let source = block.get("source").ok_or_else(|| invalid(&format!("{param}.source"), "is required"))?;
    let param = format!("{param}.source");
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = block_str(source, "media_type", &param)?;
            let data = block_str(source, "data", &param)?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => block_str(source, "url", &param)?.to_owned(),
        Some(other) => return Err(unsupported(&param, format!("an image source of type '{other}'"))),
        None => return Err(invalid(&param, "needs a 'type' ('base64' or 'url')")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result's content as text: a string, or its text blocks joined.
fn tool_result_text(content: Option<&Value>, param: &str) -> Result<String, CompatError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let param = format!("{param}.content[{i}]");
                match block_type(block, &param)? {
                    "text" => texts.push(block_str(block, "text", &param)?.to_owned()),
                    other => {
                        return Err(unsupported(&param, format!("a '{other}' block in a tool result (text only)")))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(invalid(&format!("{param}.content"), "must be a string or an array of text blocks")),
    }
}

/// Client tools become function tools; Anthropic's server tools (web search, code execution,
/// bash, ...) need Anthropic and are refused.
fn translate_tools(tools: Option<&Value>) -> Result<Vec<Value>, CompatError> {
    let Some(tools) = tools.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let tools = tools.as_array().ok_or_else(|| invalid("tools", "must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        match tool.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(other) => return Err(unsupported(&param, format!("the server tool '{other}'"))),
        }
        let name = block_str(tool, "name", &param)?;
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        if let Some(description) = tool.get("description").and_then(Value::as_str) {
            function.insert("description".into(), json!(description));
        }
        let schema = tool
            .get("input_schema")
            .filter(|s| s.is_object())
            .ok_or_else(|| invalid(&format!("{param}.input_schema"), "must be a JSON Schema object"))?;
        function.insert("parameters".into(), schema.clone());
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` as chat's, and whether parallel calls are allowed (`disable_parallel_tool_use`).
fn translate_tool_choice(choice: &Value) -> Result<(Value, Option<bool>), CompatError> {
    let kind = choice
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tool_choice", "must be an object with a 'type' ('auto', 'any', 'tool' or 'none')"))?;
    let parallel = choice.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|d| !d);
    let translated = match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = block_str(choice, "name", "tool_choice")?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => return Err(invalid("tool_choice.type", format!("'{other}' is not 'auto', 'any', 'tool' or 'none'"))),
    };
    Ok((translated, parallel))
}

// ---------------------------------------------------------------------------------------------
// Answer: chat completion -> Messages
// ---------------------------------------------------------------------------------------------

/// Anthropic's `stop_reason` for a chat `finish_reason` (`tool_use` whenever tools were called).
pub fn stop_reason(finish_reason: Option<&str>, called_tools: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls") | Some("function_call") => "tool_use",
        _ if called_tools => "tool_use",
        _ => "end_turn",
    }
}

fn first_choice(chat: &Value) -> Option<&Value> {
    let choices = chat.get("choices")?.as_array()?;
    choices.iter().find(|c| c.get("index").and_then(Value::as_u64) == Some(0)).or_else(|| choices.first())
}

/// A tool call's arguments as the object Anthropic's `input` is. Arguments that are not a JSON
/// object (a model that wrote something else) are kept as text under `arguments`, not lost.
fn tool_input(arguments: Option<&Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(text)) if text.trim().is_empty() => json!({}),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => Value::Object(o),
            _ => json!({"arguments": text}),
        },
        Some(other) => json!({"arguments": other.to_string()}),
    }
}

/// Token counts `(input, output)` from a chat `usage`.
fn chat_usage(usage: Option<&Value>) -> Option<(u64, u64)> {
    let usage = usage?.as_object()?;
    let input = usage.get("prompt_tokens").and_then(Value::as_u64);
    let output = usage.get("completion_tokens").and_then(Value::as_u64);
    (input.is_some() || output.is_some()).then(|| (input.unwrap_or(0), output.unwrap_or(0)))
}

fn usage_json(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// Translates a non-streamed chat completion into a Messages answer with id `id`; `model` names
/// the model when the completion does not.
pub fn chat_to_message(chat: &Value, model: &str, id: &str) -> Value {
    let choice = first_choice(chat);
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    let text = chat_content_text(message.and_then(|m| m.get("content")));
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = message.and_then(|m| m.get("tool_calls")).and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(new_tool_use_id, str::to_owned);
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
        content.push(json!({
            "type": "tool_use",
            "id": id,
            "name": name,
            "input": tool_input(function.and_then(|f| f.get("arguments"))),
        }));
    }
    let called = calls.is_some_and(|c| !c.is_empty());
    let finish = choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str);
    let (input, output) = chat_usage(chat.get("usage")).unwrap_or((0, 0));
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": chat.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(model),
        "content": content,
        "stop_reason": stop_reason(finish, called),
        "stop_sequence": null,
        "usage": usage_json(input, output),
    })
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// One event of a Messages stream: `event: <type>`, and `data` with the same `type` inside.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEvent {
    pub event_type: &'static str,
    pub data: Value,
}

impl MessageEvent {
    fn new(event_type: &'static str, mut data: Value) -> Self {
        if let Some(fields) = data.as_object_mut() {
            fields.insert("type".into(), Value::String(event_type.to_owned()));
        }
        MessageEvent { event_type, data }
    }

    pub fn to_sse(&self) -> Bytes {
        sse_parse::encode(Some(self.event_type), &self.data.to_string())
    }
}

/// The `error` event that ends a Messages stream which failed after it started.
pub fn error_event(message: &str) -> MessageEvent {
    MessageEvent::new("error", error_body(500, message))
}

fn message_start(id: &str, model: &str, input_tokens: u64) -> MessageEvent {
    MessageEvent::new(
        "message_start",
        json!({"message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_json(input_tokens, 0),
        }}),
    )
}

fn block_start(index: usize, block: Value) -> MessageEvent {
    MessageEvent::new("content_block_start", json!({"index": index, "content_block": block}))
}

fn block_delta(index: usize, delta: Value) -> MessageEvent {
    MessageEvent::new("content_block_delta", json!({"index": index, "delta": delta}))
}

fn block_stop(index: usize) -> MessageEvent {
    MessageEvent::new("content_block_stop", json!({"index": index}))
}

fn message_delta(stop_reason: &Value, stop_sequence: &Value, input: u64, output: u64) -> MessageEvent {
    MessageEvent::new(
        "message_delta",
        json!({
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"input_tokens": input, "output_tokens": output},
        }),
    )
}

/// A block of the stream, as it was opened.
#[derive(Debug, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call, by the chat `index` its deltas carry.
    Tool(u64),
}

/// Turns a chat completion stream into the Messages events an Anthropic client expects.
///
/// [`start`](Self::start) when the provider answered, [`push`](Self::push) each parsed chunk,
/// [`finish`](Self::finish) at `[DONE]` or the end of the body, [`fail`](Self::fail) when the
/// provider failed mid-stream; each returns the events to send, in order. Blocks are numbered
/// from 0 in the order they open, and one is open at a time (text, then each tool call as its
/// first delta arrives), as Anthropic streams them. No Anthropic event reopens a closed block,
/// so a late piece of a tool call whose block has closed (a provider interleaving the deltas of
/// parallel calls, which no known provider does) cannot be sent and is dropped.
#[derive(Debug)]
pub struct MessagesStream {
    id: String,
    model: String,
    started: bool,
    done: bool,
    blocks: Vec<Block>,
    /// Index in `blocks` of the open block.
    open: Option<usize>,
    finish_reason: Option<String>,
    called_tools: bool,
    usage: Option<(u64, u64)>,
}

impl MessagesStream {
    pub fn new(id: String, model: String) -> Self {
        MessagesStream {
            id,
            model,
            started: false,
            done: false,
            blocks: Vec::new(),
            open: None,
            finish_reason: None,
            called_tools: false,
            usage: None,
        }
    }

    /// The provider's token counts `(input, output)`, once its usage chunk arrived.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.usage
    }

    /// `message_start` (and a `ping`, as Anthropic sends); a second call returns nothing.
    pub fn start(&mut self) -> Vec<MessageEvent> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        vec![message_start(&self.id, &self.model, 0), MessageEvent::new("ping", json!({}))]
    }

    fn close(&mut self, events: &mut Vec<MessageEvent>) {
        if let Some(index) = self.open.take() {
            events.push(block_stop(index));
        }
    }

    fn open(&mut self, block: Block, content_block: Value, events: &mut Vec<MessageEvent>) -> usize {
        self.close(events);
        let index = self.blocks.len();
        self.blocks.push(block);
        self.open = Some(index);
        events.push(block_start(index, content_block));
        index
    }

    /// Translates one parsed `chat.completion.chunk`. A chunk carrying an `error` ends the stream
    /// as [`fail`](Self::fail) does.
    pub fn push(&mut self, chunk: &Value) -> Vec<MessageEvent> {
        if self.done {
            return Vec::new();
        }
        let mut events = self.start();
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| error.as_str())
                .unwrap_or("the provider reported an error");
            events.extend(self.fail(message));
            return events;
        }
        if let Some(usage) = chat_usage(chunk.get("usage")) {
            self.usage = Some(usage);
        }
        let Some(choice) = first_choice(chunk) else { return events };
        if let Some(delta) = choice.get("delta") {
            let text = chat_content_text(delta.get("content"));
            if !text.is_empty() {
                let index = match self.open {
                    Some(i) if self.blocks.get(i) == Some(&Block::Text) => i,
                    _ => self.open(Block::Text, json!({"type": "text", "text": ""}), &mut events),
                };
                events.push(block_delta(index, json!({"type": "text_delta", "text": text})));
            }
            for (position, call) in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate()
            {
                self.tool_delta(call, position as u64, &mut events);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        events
    }

    fn tool_delta(&mut self, call: &Value, position: u64, events: &mut Vec<MessageEvent>) {
        let key = call.get("index").and_then(Value::as_u64).unwrap_or(position);
        let function = call.get("function");
        let arguments = function.and_then(|f| f.get("arguments"));
        let arguments = match arguments {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(other) => other.to_string(),
        };
        let index = match self.open {
            Some(i) if self.blocks.get(i) == Some(&Block::Tool(key)) => i,
            _ if self.blocks.contains(&Block::Tool(key)) => return,
            _ => {
                self.called_tools = true;
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map_or_else(new_tool_use_id, str::to_owned);
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                self.open(Block::Tool(key), block, events)
            }
        };
        if !arguments.is_empty() {
            events.push(block_delta(index, json!({"type": "input_json_delta", "partial_json": arguments})));
        }
    }

    /// Closes the open block, then `message_delta` (stop reason, usage) and `message_stop`.
    pub fn finish(&mut self) -> Vec<MessageEvent> {
        if self.done {
            return Vec::new();
        }
        let mut events = self.start();
        self.close(&mut events);
        let reason = stop_reason(self.finish_reason.as_deref(), self.called_tools);
        let (input, output) = self.usage.unwrap_or((0, 0));
        events.push(message_delta(&json!(reason), &Value::Null, input, output));
        events.push(MessageEvent::new("message_stop", json!({})));
        self.done = true;
        events
    }

    /// Ends the stream after a provider failure with an `error` event; nothing follows.
    pub fn fail(&mut self, message: &str) -> Vec<MessageEvent> {
        if self.done {
            return Vec::new();
        }
        let mut events = self.start();
        events.push(error_event(message));
        self.done = true;
        events
    }
}

/// A whole Messages answer as the events a stream of it would have carried, for a provider that
/// answered a stream request with one JSON document.
pub fn message_events(message: &Value) -> Vec<MessageEvent> {
    let id = message.get("id").and_then(Value::as_str).map_or_else(new_message_id, str::to_owned);
    let model = message.get("model").and_then(Value::as_str).unwrap_or_default();
    let usage = message.get("usage");
    let count = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64).unwrap_or(0);
    let mut start = message_start(&id, model, count("input_tokens"));
    if let (Some(fields), Some(usage)) = (start.data.get_mut("message").and_then(Value::as_object_mut), usage) {
        let mut usage = usage.clone();
        if let Some(u) = usage.as_object_mut() {
            u.insert("output_tokens".into(), json!(0));
        }
        fields.insert("usage".into(), usage);
    }
    let mut events = vec![start];
    let blocks = message.get("content").and_then(Value::as_array);
    for (index, block) in blocks.into_iter().flatten().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                events.push(block_start(index, json!({"type": "text", "text": ""})));
                let text = block.get("text").and_then(Value::as_str).unwrap_or_default();
                if !text.is_empty() {
                    events.push(block_delta(index, json!({"type": "text_delta", "text": text})));
                }
            }
            Some("tool_use") => {
                let mut opened = block.clone();
                if let Some(o) = opened.as_object_mut() {
                    o.insert("input".into(), json!({}));
                }
                events.push(block_start(index, opened));
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                events.push(block_delta(index, json!({"type": "input_json_delta", "partial_json": input.to_string()})));
            }
            Some("thinking") => {
                events.push(block_start(index, json!({"type": "thinking", "thinking": "", "signature": ""})));
                let thinking = block.get("thinking").and_then(Value::as_str).unwrap_or_default();
                events.push(block_delta(index, json!({"type": "thinking_delta", "thinking": thinking})));
                if let Some(signature) = block.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    events.push(block_delta(index, json!({"type": "signature_delta", "signature": signature})));
                }
            }
            // Anything else (redacted thinking, server tool blocks) arrives whole in its start.
            _ => events.push(block_start(index, block.clone())),
        }
        events.push(block_stop(index));
    }
    let stop_reason = message.get("stop_reason").cloned().unwrap_or_else(|| json!("end_turn"));
    let stop_sequence = message.get("stop_sequence").cloned().unwrap_or(Value::Null);
    events.push(message_delta(&stop_reason, &stop_sequence, count("input_tokens"), count("output_tokens")));
    events.push(MessageEvent::new("message_stop", json!({})));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn types(events: &[MessageEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type).collect()
    }

    #[test]
    fn a_request_with_system_blocks_images_tools_and_settings_becomes_a_chat_body() {
        let body = obj(json!({
            "model": "claude-x",
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "max_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["END"],
            "stream": true,
            "metadata": {"user_id": "u1"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "png"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}]},
                    {"type": "text", "text": "So?"},
                ]},
                {"role": "assistant", "content": "A cat."},
            ],
            "tools": [{"name": "lookup", "description": "Looks up", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        }));
        let chat = request_to_chat(&body).unwrap();
        assert_eq!(chat["model"], "claude-x");
        assert_eq!(chat["max_tokens"], 64);
        assert_eq!(chat["temperature"], 0.2);
        assert_eq!(chat["top_p"], 0.9);
        assert_eq!(chat["top_k"], 40);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert_eq!(chat["user"], "u1");
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief.\n\nBe kind."}));
        assert_eq!(m[1]["role"], "user");
        assert_eq!(m[1]["content"][0], json!({"type": "text", "text": "What is this?"}));
        assert_eq!(
            m[1]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
        );
        assert_eq!(m[2]["content"], "Let me look.", "thinking is left out");
        assert_eq!(m[2]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "lookup");
        assert_eq!(
            serde_json::from_str::<Value>(m[2]["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"q": "png"})
        );
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"}));
        assert_eq!(m[4], json!({"role": "user", "content": "So?"}));
        assert_eq!(m[5], json!({"role": "assistant", "content": "A cat."}));
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {"name": "lookup", "description": "Looks up", "parameters": {"type": "object"}}}])
        );
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
    }

    #[test]
    fn tool_choices_map_to_chat_s() {
        let choice = |c: Value| {
            request_to_chat(&obj(json!({"messages": [], "tool_choice": c}))).map(|chat| chat["tool_choice"].clone())
        };
        assert_eq!(choice(json!({"type": "auto"})).unwrap(), "auto");
        assert_eq!(choice(json!({"type": "none"})).unwrap(), "none");
        assert_eq!(
            choice(json!({"type": "tool", "name": "f"})).unwrap(),
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert!(choice(json!({"type": "sometimes"})).is_err());
        assert!(choice(json!("auto")).is_err());
    }

    #[test]
    fn what_a_chat_body_cannot_carry_is_refused_by_name() {
        let refused = |body: Value| request_to_chat(&obj(body)).unwrap_err().param().to_owned();
        assert_eq!(
            refused(json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]})),
            "messages[0].content[0]"
        );
        assert_eq!(
            refused(json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]})),
            "tools[0]"
        );
        assert_eq!(refused(json!({"messages": [], "mcp_servers": [{}]})), "mcp_servers");
        assert_eq!(refused(json!({"messages": "hi"})), "messages");
        assert_eq!(refused(json!({"messages": [{"role": "system", "content": "x"}]})), "messages[0].role");
        assert_eq!(refused(json!({"messages": [], "max_tokens": 0})), "max_tokens");
        assert_eq!(refused(json!({"messages": [], "stop_sequences": "END"})), "stop_sequences");
        assert_eq!(refused(json!({"messages": [], "tools": [{"name": "f"}]})), "tools[0].input_schema");
        let streams = request_to_chat(&obj(json!({"messages": [], "stream": false}))).unwrap();
        assert!(streams.get("stream").is_none() && streams.get("stream_options").is_none());
    }

    #[test]
    fn a_chat_completion_becomes_a_message_with_blocks_stop_reason_and_usage() {
        let chat = json!({
            "id": "chatcmpl-1", "model": "llama3",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
            }}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        });
        let m = chat_to_message(&chat, "fallback", "msg_1");
        assert_eq!(m["id"], "msg_1");
        assert_eq!(m["type"], "message");
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["model"], "llama3");
        assert_eq!(m["content"][0], json!({"type": "text", "text": "Checking."}));
        assert_eq!(
            m["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["stop_sequence"], Value::Null);
        assert_eq!(m["usage"]["input_tokens"], 7);
        assert_eq!(m["usage"]["output_tokens"], 3);
        for (finish, tools, reason) in [
            (Some("stop"), false, "end_turn"),
            (None, false, "end_turn"),
            (Some("length"), false, "max_tokens"),
            (Some("content_filter"), false, "refusal"),
            (Some("stop"), true, "tool_use"),
        ] {
            assert_eq!(stop_reason(finish, tools), reason, "{finish:?}");
        }
        let odd =
            json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "not json"}}]}}]});
        let m = chat_to_message(&odd, "m", "msg_2");
        assert_eq!(m["model"], "m");
        assert_eq!(m["content"][0]["input"], json!({"arguments": "not json"}));
        assert!(m["content"][0]["id"].as_str().unwrap().starts_with("toolu_"));
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"object": "chat.completion.chunk", "model": "llama3", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    #[test]
    fn a_text_stream_becomes_anthropic_s_event_sequence() {
        let mut s = MessagesStream::new("msg_1".into(), "llama3".into());
        let mut events = s.start();
        events.extend(s.push(&chunk(json!({"role": "assistant", "content": ""}), Value::Null)));
        events.extend(s.push(&chunk(json!({"content": "Hel"}), Value::Null)));
        events.extend(s.push(&chunk(json!({"content": "lo"}), Value::Null)));
        events.extend(s.push(&chunk(json!({}), json!("stop"))));
        events.extend(s.push(&json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})));
        events.extend(s.finish());
        assert!(s.finish().is_empty() && s.push(&chunk(json!({"content": "x"}), Value::Null)).is_empty());
        assert_eq!(
            types(&events),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].data["message"]["id"], "msg_1");
        assert_eq!(events[0].data["type"], "message_start");
        assert_eq!(
            events[2].data,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(events[3].data["delta"], json!({"type": "text_delta", "text": "Hel"}));
        assert_eq!(events[6].data["delta"]["stop_reason"], "end_turn");
        assert_eq!(events[6].data["usage"], json!({"input_tokens": 4, "output_tokens": 2}));
        assert_eq!(s.usage(), Some((4, 2)));
        assert!(events[7].to_sse().starts_with(b"event: message_stop\ndata: {"));
    }

    #[test]
    fn tool_calls_stream_as_tool_use_blocks_with_input_json_deltas() {
        let mut s = MessagesStream::new("msg_1".into(), "llama3".into());
        let mut events = s.push(&chunk(json!({"content": "Let me check."}), Value::Null));
        events.extend(s.push(&chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            Value::Null,
        )));
        events.extend(
            s.push(&chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null)),
        );
        events.extend(
            s.push(&chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null)),
        );
        events.extend(s.push(&chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "time", "arguments": "{}"}}]}),
            Value::Null,
        )));
        events.extend(s.push(&chunk(json!({}), json!("tool_calls"))));
        events.extend(s.finish());
        assert_eq!(
            types(&events),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(events[5].data["index"], 1);
        assert_eq!(
            events[5].data["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
        );
        let json: String = events[6..8].iter().map(|e| e.data["delta"]["partial_json"].as_str().unwrap()).collect();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"city": "Paris"}));
        assert_eq!(events[9].data["index"], 2);
        assert_eq!(events[12].data["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn a_failure_mid_stream_ends_with_an_anthropic_error_event() {
        let mut s = MessagesStream::new("msg_1".into(), "m".into());
        let mut events = s.push(&chunk(json!({"content": "par"}), Value::Null));
        events.extend(s.fail("the tunnel closed"));
        assert_eq!(events.last().unwrap().event_type, "error");
        assert_eq!(
            events.last().unwrap().data,
            json!({"type": "error", "error": {"type": "api_error", "message": "the tunnel closed"}})
        );
        assert!(s.finish().is_empty());
        let mut inband = MessagesStream::new("msg_2".into(), "m".into());
        let events = inband.push(&json!({"error": {"message": "boom"}}));
        assert_eq!(types(&events), ["message_start", "ping", "error"]);
    }

    #[test]
    fn a_whole_message_replays_as_its_stream() {
        let message = json!({
            "id": "msg_9", "type": "message", "role": "assistant", "model": "m",
            "content": [
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 6},
        });
        let events = message_events(&message);
        assert_eq!(
            types(&events),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(events[0].data["message"]["id"], "msg_9");
        assert_eq!(events[0].data["message"]["content"], json!([]));
        assert_eq!(events[0].data["message"]["usage"]["input_tokens"], 5);
        assert_eq!(events[4].data["content_block"]["input"], json!({}));
        assert_eq!(events[5].data["delta"]["partial_json"], "{\"a\":1}");
        assert_eq!(events[7].data["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[7].data["usage"]["output_tokens"], 6);
    }

    #[test]
    fn errors_take_anthropic_s_shape() {
        assert_eq!(
            error_body(401, "Send the room password."),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "Send the room password."}})
        );
        assert_eq!(error_type(404), "not_found_error");
        assert_eq!(error_type(413), "request_too_large");
        assert_eq!(error_type(503), "overloaded_error");
        assert_eq!(error_type(502), "api_error");
        let from_openai =
            error_from_provider(400, br#"{"error": {"message": "bad things", "type": "invalid_request_error"}}"#);
        assert_eq!(
            from_openai,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad things"}})
        );
        let native = json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}});
        assert_eq!(error_from_provider(529, native.to_string().as_bytes()), native);
        assert_eq!(error_from_provider(500, b"<html>")["error"]["type"], "api_error");
    }
}
