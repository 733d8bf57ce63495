//! The Responses API fallback: translation between OpenAI's Responses API and Chat Completions for
//! participants whose provider only serves `/v1/chat/completions` (most Ollama and LM Studio
//! versions).
//!
//! Pure functions over `serde_json::Value`, no I/O: [`request_to_chat`] turns a Responses create
//! body into a chat body, [`chat_to_response`] turns a chat completion into a Responses object, and
//! [`StreamTranslator`] turns a stream of chat chunks into Responses stream events. Deciding *when*
//! to fall back (probe result, a 404/405/501 answer), reading the provider's bytes
//! ([`super::sse_parse`]) and writing the client's stream belong to the proxy.
//!
//! Covered: text, function tools (definitions, calls, their outputs), usage, and `length` /
//! `content_filter` endings. Anything that needs state on the provider (`previous_response_id`,
//! `conversation`, `store`, `background`) or content a chat body cannot carry here (images, files,
//! hosted tools) is refused with a [`CompatError`] naming it, rather than silently dropped.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::sse_parse;

/// Why a Responses request cannot be translated. Both variants are the client's to fix, so the
/// proxy answers 400 `invalid_request_error` with [`CompatError::param`] as the OpenAI `param`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    /// A field or item the chat-completions fallback cannot honour.
    #[error("`{param}` is not supported when the participant only serves chat completions: {detail}")]
    Unsupported { param: String, detail: String },
    /// A field of the wrong shape.
    #[error("invalid `{param}`: {reason}")]
    Invalid { param: String, reason: String },
}

impl CompatError {
    /// The request parameter at fault, for the `param` of an OpenAI error body.
    pub fn param(&self) -> &str {
        match self {
            Self::Unsupported { param, .. } | Self::Invalid { param, .. } => param,
        }
    }
}

fn unsupported(param: &str, detail: impl Into<String>) -> CompatError {
    CompatError::Unsupported { param: param.to_owned(), detail: detail.into() }
}

fn invalid(param: &str, reason: impl Into<String>) -> CompatError {
    CompatError::Invalid { param: param.to_owned(), reason: reason.into() }
}

/// A fresh Responses id (`resp_` and 32 hex digits), for a response the hub makes up itself.
pub fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Request: Responses -> chat completions
// ---------------------------------------------------------------------------------------------

/// Translates a Responses create body into a chat completions body.
///
/// `model` is copied as is (the proxy rewrites it to the participant's model). A streaming request
/// asks for `stream_options.include_usage` so the provider's final chunk carries the token counts
/// the hub's metrics need.
pub fn request_to_chat(body: &Value) -> Result<Value, CompatError> {
    let body = body.as_object().ok_or_else(|| invalid("body", "the request body must be a JSON object"))?;
    request_parts_to_chat(body, body.get("input"))
}

/// [`request_to_chat`] with the `input` given apart from the other fields of the body (any `input`
/// among them is ignored), so a caller that adapts the settings need not copy an input of many
/// megabytes to do it.
pub fn request_parts_to_chat(body: &Map<String, Value>, input: Option<&Value>) -> Result<Value, CompatError> {
    refuse_stateful_fields(body)?;
    let mut messages: Vec<Value> = Vec::new();
    push_instructions(&mut messages, body)?;
    match input {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for item in items {
                push_input_item(&mut messages, item, "input")?;
            }
        }
        Some(_) => return Err(invalid("input", "expected a string or an array of input items")),
    }
    if messages.is_empty() {
        return Err(nothing_to_send());
    }
    let mut chat = Map::new();
    if let Some(model) = body.get("model") {
        chat.insert("model".into(), model.clone());
    }
    chat.insert("messages".into(), Value::Array(messages));
    chat_settings(body, &mut chat)?;
    Ok(Value::Object(chat))
}

/// [`request_parts_to_chat`] with the input as the JSON text it came as, and the chat body
/// written as JSON text: the input is translated item by item, each item parsed on its own and
/// each chat message written out as soon as no later item can change it (a function call joins
/// the assistant message before it). No tree of the whole input, nor of all the messages, is ever
/// built: a conversation of 400,000 small items costs its text, not the gigabytes its tree would.
pub fn request_parts_to_chat_text(body: &Map<String, Value>, input: Option<&str>) -> Result<Vec<u8>, CompatError> {
    refuse_stateful_fields(body)?;
    let mut sink = MessageText::default();
    push_instructions(&mut sink.pending, body)?;
    sink.write_settled();
    let bad_input = || invalid("input", "expected a string or an array of input items");
    match input.map(str::trim_start) {
        None | Some("null") => {}
        Some(text) if text.starts_with('"') => {
            let text: String = serde_json::from_str(text).map_err(|_| bad_input())?;
            sink.pending.push(json!({"role": "user", "content": text}));
        }
        Some(text) if text.starts_with('[') => {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(|_| bad_input())?;
            for raw in items {
                let item: Value = serde_json::from_str(raw.get()).map_err(|_| bad_input())?;
                push_input_item(&mut sink.pending, &item, "input")?;
                sink.write_settled();
            }
        }
        Some(_) => return Err(bad_input()),
    }
    let messages = sink.finish().ok_or_else(nothing_to_send)?;
    let mut chat = Map::new();
    chat_settings(body, &mut chat)?;
    let mut out = Vec::with_capacity(messages.len() + 256);
    out.push(b'{');
    if let Some(model) = body.get("model") {
        out.extend_from_slice(b"\"model\":");
        // A value always serializes.
        let _ = serde_json::to_writer(&mut out, model);
        out.push(b',');
    }
    out.extend_from_slice(b"\"messages\":");
    out.extend_from_slice(&messages);
    for (key, value) in &chat {
        out.push(b',');
        let _ = serde_json::to_writer(&mut out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, value);
    }
    out.push(b'}');
    Ok(out)
}

/// Chat messages written as a JSON array, as they are settled.
#[derive(Default)]
struct MessageText {
    out: Vec<u8>,
    written: usize,
    /// Messages a later item may still change: only the last one, once written out.
    pending: Vec<Value>,
}

impl MessageText {
    fn write(&mut self, message: &Value) {
        self.out.push(if self.written == 0 { b'[' } else { b',' });
        let _ = serde_json::to_writer(&mut self.out, message);
        self.written += 1;
    }

    /// Writes every pending message but the last (only the last is ever extended).
    fn write_settled(&mut self) {
        if self.pending.len() > 1 {
            let settled: Vec<Value> = self.pending.drain(..self.pending.len() - 1).collect();
            for message in &settled {
                self.write(message);
            }
        }
    }

    /// The array's text; `None` when it holds no message.
    fn finish(mut self) -> Option<Vec<u8>> {
        for message in std::mem::take(&mut self.pending) {
            self.write(&message);
        }
        if self.written == 0 {
            return None;
        }
        self.out.push(b']');
        Some(self.out)
    }
}

fn nothing_to_send() -> CompatError {
    invalid("input", "the request has neither input nor instructions to send to the model")
}

/// `instructions` as leading messages (a string: one system message; items: translated).
fn push_instructions(messages: &mut Vec<Value>, body: &Map<String, Value>) -> Result<(), CompatError> {
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !text.is_empty() {
                messages.push(json!({"role": "system", "content": text}));
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                push_input_item(messages, item, "instructions")?;
            }
        }
        Some(_) => return Err(invalid("instructions", "expected a string or an array of input items")),
    }
    Ok(())
}

/// The chat fields other than `model` and `messages`, translated from the Responses settings.
fn chat_settings(body: &Map<String, Value>, chat: &mut Map<String, Value>) -> Result<(), CompatError> {
    let tools = translate_tools(body.get("tools"))?;
    let has_tools = !tools.is_empty();
    if has_tools {
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = translate_tool_choice(body.get("tool_choice"))? {
        // OpenAI itself rejects a chat `tool_choice` without `tools`, and so do some providers.
        if has_tools {
            chat.insert("tool_choice".into(), choice);
        }
    }
    if let Some(parallel) = body.get("parallel_tool_calls").filter(|v| v.is_boolean()) {
        if has_tools {
            chat.insert("parallel_tool_calls".into(), parallel.clone());
        }
    }

    match body.get("stream") {
        Some(Value::Bool(true)) => {
            chat.insert("stream".into(), Value::Bool(true));
            chat.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(Value::Bool(false)) => {
            chat.insert("stream".into(), Value::Bool(false));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(invalid("stream", "expected a boolean")),
    }

    match body.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(tokens) if tokens.is_u64() => {
            chat.insert("max_tokens".into(), tokens.clone());
        }
        Some(_) => return Err(invalid("max_output_tokens", "expected a non-negative integer")),
    }
    // Sampling fields: the Responses API has `temperature` and `top_p`; the others are not part
    // of it but arrive through room defaults and participant config, which the proxy merges into
    // the request before translating, so they are carried over too.
    for field in ["temperature", "top_p", "frequency_penalty", "presence_penalty", "seed"] {
        if let Some(value) = body.get(field).filter(|v| v.is_number()) {
            chat.insert(field.into(), value.clone());
        }
    }
    if let Some(stop) =
        body.get("stop").or_else(|| body.get("stop_sequences")).filter(|v| v.is_string() || v.is_array())
    {
        chat.insert("stop".into(), stop.clone());
    }
    if let Some(format) = translate_text_format(body.get("text"))? {
        chat.insert("response_format".into(), format);
    }
    // Deliberately dropped, because they are hints the answer stays valid without: `reasoning`
    // (several providers refuse a reasoning effort for models that do not think), `truncation`,
    // `include`, `top_logprobs`, `metadata` (echoed back in the response), `user`,
    // `safety_identifier`, `prompt_cache_key`, `service_tier`.
    Ok(())
}

/// Fields whose meaning depends on state kept by a real Responses server. Refused, because
/// ignoring them would silently change the answer (a follow-up without its history) or break a
/// later call (fetching a response that was never stored).
fn refuse_stateful_fields(body: &Map<String, Value>) -> Result<(), CompatError> {
    let present = |field: &str| body.get(field).is_some_and(|v| !v.is_null());
    if present("previous_response_id") {
        return Err(unsupported(
            "previous_response_id",
            "the hub keeps no conversation history for this participant; send the whole \
             conversation in `input` instead",
        ));
    }
    if present("conversation") {
        return Err(unsupported(
            "conversation",
            "conversations are stored by a Responses server; send the whole conversation in \
             `input` instead",
        ));
    }
    if body.get("background") == Some(&Value::Bool(true)) {
        return Err(unsupported("background", "background responses need a provider that serves /v1/responses"));
    }
    if body.get("store") == Some(&Value::Bool(true)) {
        return Err(unsupported("store", "the response cannot be stored for later retrieval; send `store: false`"));
    }
    if present("prompt") {
        return Err(unsupported(
            "prompt",
            "prompt templates are stored by a Responses server; send the text in `input`",
        ));
    }
    if present("max_tool_calls") {
        return Err(unsupported("max_tool_calls", "chat completions cannot cap the number of tool calls"));
    }
    Ok(())
}

/// Appends the chat message(s) for one Responses input item.
fn push_input_item(messages: &mut Vec<Value>, item: &Value, param: &str) -> Result<(), CompatError> {
    let item = item.as_object().ok_or_else(|| invalid(param, "every input item must be an object"))?;
    let kind = match item.get("type") {
        None | Some(Value::Null) => "message",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(invalid(param, "an input item's `type` must be a string")),
    };
    match kind {
        "message" => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("developer" | "system") => "system",
                Some("user") => "user",
                Some("assistant") => "assistant",
                Some(other) => return Err(invalid(param, format!("unknown message role `{other}`"))),
                None => return Err(invalid(param, "a message item needs a `role`")),
            };
            let content = message_text(item.get("content"), param)?;
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call_id = required_str(item, "call_id", param, "function_call")?;
            let name = required_str(item, "name", param, "function_call")?;
            let arguments = match item.get("arguments") {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(Value::String(arguments)) => arguments.clone(),
                Some(other) => other.to_string(),
            };
            let call = json!({
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            });
            // One assistant turn in chat form carries its text and all its tool calls: a
            // response's output fed back as input (message, then function_call items) becomes one
            // assistant message again, as chat templates that require alternating roles expect.
            if let Some(last) = messages
                .last_mut()
                .and_then(Value::as_object_mut)
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
            {
                match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    Some(calls) => calls.push(call),
                    None => {
                        last.insert("tool_calls".into(), Value::Array(vec![call]));
                    }
                }
            } else {
                messages.push(json!({"role": "assistant", "content": "", "tool_calls": [call]}));
            }
        }
        "function_call_output" => {
            let call_id = required_str(item, "call_id", param, "function_call_output")?;
            let output = match item.get("output") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(output)) => output.clone(),
                Some(Value::Array(parts)) => parts_text(parts, param)?,
                Some(other) => other.to_string(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // Reasoning items come back when a client replays a previous output; they are the model's
        // private scratchpad, which a chat body has no place for and the answer does not need.
        "reasoning" => {}
        "item_reference" => {
            return Err(unsupported(param, "`item_reference` items point at items stored by a Responses server"))
        }
        other => {
            return Err(unsupported(
                param,
                format!("input items of type `{other}` cannot be expressed as chat messages"),
            ))
        }
    }
    Ok(())
}

fn required_str<'a>(
    item: &'a Map<String, Value>,
    field: &str,
    param: &str,
    kind: &str,
) -> Result<&'a str, CompatError> {
    item.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(param, format!("a `{kind}` item needs a string `{field}`")))
}

/// The text of a message's `content`: a string, or text parts joined by newlines (chat providers
/// accept a plain string for every role, which is not true of part arrays).
fn message_text(content: Option<&Value>, param: &str) -> Result<String, CompatError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => parts_text(parts, param),
        Some(_) => Err(invalid(param, "a message's `content` must be a string or an array of content parts")),
    }
}

fn parts_text(parts: &[Value], param: &str) -> Result<String, CompatError> {
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("text");
        match kind {
            "input_text" | "output_text" | "text" => {
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(param, format!("a `{kind}` part needs a string `text`")))?;
                texts.push(text);
            }
            "refusal" => {
                if let Some(text) = part.get("refusal").and_then(Value::as_str) {
                    texts.push(text);
                }
            }
            other => {
                return Err(unsupported(param, format!("`{other}` content: only text can be sent to this participant")))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// Responses function tools are flat (`{type, name, parameters}`); chat tools nest the function
/// (`{type, function: {name, parameters}}`).
fn translate_tools(tools: Option<&Value>) -> Result<Vec<Value>, CompatError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "expected an array of tools")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for tool in tools {
        let tool = tool.as_object().ok_or_else(|| invalid("tools", "every tool must be an object"))?;
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(unsupported("tools", format!("`{other}` tools: only function tools can be translated")))
            }
            None => return Err(invalid("tools", "every tool needs a `type`")),
        }
        // Leniency for clients that send the chat shape to the Responses endpoint.
        if let Some(function) = tool.get("function").filter(|f| f.is_object()) {
            if !tool.contains_key("name") {
                out.push(json!({"type": "function", "function": function}));
                continue;
            }
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("tools", "a function tool needs a string `name`"))?;
        let mut function = Map::new();
        function.insert("name".into(), Value::String(name.to_owned()));
        for field in ["description", "parameters", "strict"] {
            if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
                function.insert(field.into(), value.clone());
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

fn translate_tool_choice(choice: Option<&Value>) -> Result<Option<Value>, CompatError> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" | "none" | "required" => Ok(Some(Value::String(mode.clone()))),
            other => Err(invalid("tool_choice", format!("unknown mode `{other}`: expected auto, none or required"))),
        },
        Some(Value::Object(choice)) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = choice
                    .get("name")
                    .or_else(|| choice.get("function").and_then(|f| f.get("name")))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice", "a function choice needs a `name`"))?;
                Ok(Some(json!({"type": "function", "function": {"name": name}})))
            }
            Some(other) => Err(unsupported("tool_choice", format!("`{other}` choices: only a function can be forced"))),
            None => Err(invalid("tool_choice", "a tool choice object needs a `type`")),
        },
        Some(_) => Err(invalid("tool_choice", "expected a string or an object")),
    }
}

/// `text.format` (flat in the Responses API) to a chat `response_format` (nested `json_schema`).
/// `text.verbosity` has no chat equivalent and is dropped.
fn translate_text_format(text: Option<&Value>) -> Result<Option<Value>, CompatError> {
    let format = match text.and_then(|t| t.get("format")) {
        None | Some(Value::Null) => return Ok(None),
        Some(format) => format,
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| invalid("text.format", "a json_schema format needs a `schema` object"))?;
            let name = format.get("name").and_then(Value::as_str).unwrap_or("response");
            let mut json_schema = Map::new();
            json_schema.insert("name".into(), Value::String(name.to_owned()));
            json_schema.insert("schema".into(), schema.clone());
            for field in ["description", "strict"] {
                if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                    json_schema.insert(field.into(), value.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": json_schema})))
        }
        Some(other) => Err(unsupported("text.format", format!("`{other}` output format"))),
        None => Err(invalid("text.format", "a format needs a `type`")),
    }
}

// ---------------------------------------------------------------------------------------------
// Answer: chat completion -> Responses object
// ---------------------------------------------------------------------------------------------

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    input: u64,
    output: u64,
    total: u64,
    cached: u64,
    reasoning: u64,
}

impl Usage {
    fn from_chat(usage: &Value) -> Option<Self> {
        let usage = usage.as_object()?;
        let count = |field: &str| usage.get(field).and_then(Value::as_u64);
        let input = count("prompt_tokens");
        let output = count("completion_tokens");
        if input.is_none() && output.is_none() {
            return None;
        }
        let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
        let detail =
            |outer: &str, inner: &str| usage.get(outer).and_then(|d| d.get(inner)).and_then(Value::as_u64).unwrap_or(0);
        Some(Self {
            input,
            output,
            total: count("total_tokens").unwrap_or(input + output),
            cached: detail("prompt_tokens_details", "cached_tokens"),
            reasoning: detail("completion_tokens_details", "reasoning_tokens"),
        })
    }

    fn to_json(self) -> Value {
        json!({
            "input_tokens": self.input,
            "input_tokens_details": {"cached_tokens": self.cached, "cache_write_tokens": 0},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.total,
        })
    }
}

/// How a response ended, which decides `status`, `incomplete_details` and the items' status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    InProgress,
    Completed,
    /// The `incomplete_details.reason`.
    Incomplete(&'static str),
    Failed,
}

impl Outcome {
    fn from_finish_reason(reason: Option<&str>) -> Self {
        match reason {
            Some("length") => Self::Incomplete("max_output_tokens"),
            Some("content_filter") => Self::Incomplete("content_filter"),
            _ => Self::Completed,
        }
    }

    fn status(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Incomplete(_) => "incomplete",
            Self::Failed => "failed",
        }
    }

    fn item_status(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Incomplete(_) | Self::Failed => "incomplete",
        }
    }

    fn incomplete_details(self) -> Value {
        match self {
            Self::Incomplete(reason) => json!({"reason": reason}),
            _ => Value::Null,
        }
    }
}

/// Item ids derived from the response id, so one response's ids are unique together and the
/// translation stays deterministic (testable) without a random source.
#[derive(Debug, Clone)]
struct ItemIds {
    suffix: String,
}

impl ItemIds {
    fn new(response_id: &str) -> Self {
        let suffix = response_id.strip_prefix("resp_").unwrap_or(response_id);
        Self { suffix: suffix.to_owned() }
    }

    fn message(&self) -> String {
        format!("msg_{}", self.suffix)
    }

    fn function_call(&self, n: usize) -> String {
        format!("fc_{}_{n}", self.suffix)
    }

    /// Used only when the provider gave a tool call no id: the client needs one to answer it.
    fn call(&self, n: usize) -> String {
        format!("call_{}_{n}", self.suffix)
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

fn function_call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// The parts of a response object that change; everything else echoes the request.
struct ResponseParts<'a> {
    id: &'a str,
    created_at: u64,
    model: &'a str,
    outcome: Outcome,
    output: Vec<Value>,
    output_text: String,
    usage: Value,
    error: Value,
}

/// A full Responses object, with every field the official SDKs require, echoing the request's
/// settings as a real Responses server does.
fn response_object(request: &Value, parts: ResponseParts<'_>) -> Value {
    let echo = |field: &str| request.get(field).cloned().unwrap_or(Value::Null);
    let number = |field: &str| request.get(field).filter(|v| v.is_number()).cloned().unwrap_or(Value::Null);
    let text_format = request
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| f.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "text"}));
    let verbosity = request
        .get("text")
        .and_then(|t| t.get("verbosity"))
        .filter(|v| v.is_string())
        .cloned()
        .unwrap_or_else(|| json!("medium"));
    let instructions =
        request.get("instructions").filter(|v| v.is_string() || v.is_array()).cloned().unwrap_or(Value::Null);
    let tools = request.get("tools").filter(|v| v.is_array()).cloned().unwrap_or_else(|| json!([]));
    let tool_choice =
        request.get("tool_choice").filter(|v| v.is_string() || v.is_object()).cloned().unwrap_or_else(|| json!("auto"));
    let metadata = request.get("metadata").filter(|v| v.is_object()).cloned().unwrap_or_else(|| json!({}));
    let truncation = request.get("truncation").filter(|v| v.is_string()).cloned().unwrap_or_else(|| json!("disabled"));
    json!({
        "id": parts.id,
        "object": "response",
        "created_at": parts.created_at,
        "status": parts.outcome.status(),
        "background": false,
        "error": parts.error,
        "incomplete_details": parts.outcome.incomplete_details(),
        "instructions": instructions,
        "max_output_tokens": number("max_output_tokens"),
        "max_tool_calls": Value::Null,
        "model": parts.model,
        "output": parts.output,
        "output_text": parts.output_text,
        "parallel_tool_calls": request
            .get("parallel_tool_calls")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        "previous_response_id": Value::Null,
        "prompt_cache_key": Value::Null,
        "reasoning": {"effort": Value::Null, "summary": Value::Null},
        "safety_identifier": Value::Null,
        "service_tier": "default",
        // Nothing is stored: GET on this id cannot be served by a chat-only participant.
        "store": false,
        "temperature": number("temperature"),
        "text": {"format": text_format, "verbosity": verbosity},
        "tool_choice": tool_choice,
        "tools": tools,
        "top_logprobs": 0,
        "top_p": number("top_p"),
        "truncation": truncation,
        "usage": parts.usage,
        "user": echo("user"),
        "metadata": metadata,
    })
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Text of a chat `content`: a string, or text parts concatenated (a part array is one message
/// split in pieces, so no separator is added).
pub(super) fn chat_content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str())).collect()
        }
        _ => String::new(),
    }
}

fn arguments_text(arguments: Option<&Value>) -> String {
    match arguments {
        Some(Value::String(arguments)) => arguments.clone(),
        None | Some(Value::Null) => String::new(),
        // Some providers hand back the parsed object; the Responses API wants the JSON text.
        Some(other) => other.to_string(),
    }
}

/// The choice a single-answer translation reads: index 0, or the first one listed.
fn first_choice(choices: Option<&Value>) -> Option<&Value> {
    let choices = choices?.as_array()?;
    choices.iter().find(|c| c.get("index").and_then(Value::as_u64) == Some(0)).or_else(|| choices.first())
}

/// Translates a non-streamed chat completion into a complete Responses object.
///
/// `request` is the client's Responses body (its settings are echoed back); `response_id` is the
/// id the hub gives the response (see [`new_response_id`]). Output: the assistant text as one
/// message item, then one `function_call` item per tool call.
pub fn chat_to_response(chat: &Value, request: &Value, response_id: &str) -> Value {
    let ids = ItemIds::new(response_id);
    let choice = first_choice(chat.get("choices"));
    let message = choice.and_then(|c| c.get("message"));
    let outcome = Outcome::from_finish_reason(choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str));
    let item_status = outcome.item_status();

    let text = chat_content_text(message.and_then(|m| m.get("content")));
    let mut calls = Vec::new();
    if let Some(tool_calls) = message.and_then(|m| m.get("tool_calls")).and_then(Value::as_array) {
        for call in tool_calls {
            if call.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
                continue;
            }
            calls.push(call);
        }
    }
    // The pre-tools `function_call` field, still produced by some providers.
    let legacy_call = message.and_then(|m| m.get("function_call")).filter(|f| f.is_object());

    let mut output = Vec::new();
    let has_calls = !calls.is_empty() || legacy_call.is_some();
    // An empty answer is still an (empty) message, as a real Responses server returns it.
    if !text.is_empty() || !has_calls {
        output.push(message_item(&ids.message(), &text, item_status));
    }
    for (n, call) in calls.iter().enumerate() {
        let function = call.get("function");
        let call_id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map_or_else(|| ids.call(n), str::to_owned);
        output.push(function_call_item(
            &ids.function_call(n),
            &call_id,
            function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default(),
            &arguments_text(function.and_then(|f| f.get("arguments"))),
            item_status,
        ));
    }
    if let Some(function) = legacy_call {
        let n = calls.len();
        output.push(function_call_item(
            &ids.function_call(n),
            &ids.call(n),
            function.get("name").and_then(Value::as_str).unwrap_or_default(),
            &arguments_text(function.get("arguments")),
            item_status,
        ));
    }

    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .or_else(|| request.get("model").and_then(Value::as_str))
        .unwrap_or_default();
    // A response always reports usage to SDK users; zeros when the provider reported none.
    let usage = chat.get("usage").and_then(Usage::from_chat).unwrap_or_default();
    response_object(
        request,
        ResponseParts {
            id: response_id,
            created_at: chat.get("created").and_then(Value::as_u64).unwrap_or_else(now_secs),
            model,
            outcome,
            output,
            output_text: text,
            usage: usage.to_json(),
            error: Value::Null,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Streaming: chat chunks -> Responses events
// ---------------------------------------------------------------------------------------------

/// One Responses stream event. `data` is the whole JSON payload, `type` and `sequence_number`
/// included, as it goes on the wire after `data:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseEvent {
    pub event_type: String,
    pub data: Value,
}

impl ResponseEvent {
    /// The SSE frame for this event (`event: <type>`, then the JSON), as OpenAI sends it.
    pub fn to_sse(&self) -> Bytes {
        sse_parse::encode(Some(&self.event_type), &self.data.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Streaming,
    Done,
}

/// An output item that has been announced to the client (`response.output_item.added`). Its
/// position in `StreamTranslator::items` is its `output_index`.
#[derive(Debug)]
enum StreamItem {
    Message { id: String, text: String },
    FunctionCall { id: String, call_id: String, name: String, arguments: String },
}

/// A chat tool call being streamed. It becomes an output item only once its name is known,
/// because `output_item.added` must carry the name; arguments that arrive before are held.
#[derive(Debug)]
struct ToolSlot {
    /// The chat `index` of the call, the key its later deltas use.
    index: Option<u64>,
    call_id: Option<String>,
    name: Option<String>,
    pending_arguments: String,
    /// Position in `items` once announced.
    item: Option<usize>,
}

/// Turns a chat completion stream into the Responses stream events a client expects.
///
/// Call [`start`](Self::start) when the provider answered, [`push`](Self::push) with each parsed
/// chunk, then [`finish`](Self::finish) at `[DONE]` or the end of the body, or
/// [`fail`](Self::fail) if the provider failed mid-stream. Each call returns the events to send, in
/// order; sequence numbers increase by one from 0 across all of them. Items stay open until
/// `finish`, which closes them in output order, so a provider that interleaves text and tool calls
/// is still translated faithfully.
#[derive(Debug)]
pub struct StreamTranslator {
    /// The client's Responses body, echoed in every response object.
    request: Value,
    response_id: String,
    created_at: u64,
    ids: ItemIds,
    /// The request's model until a chunk names the provider's.
    model: String,
    sequence: u64,
    phase: Phase,
    items: Vec<StreamItem>,
    /// Position in `items` of the one message item, once text has arrived.
    message: Option<usize>,
    tools: Vec<ToolSlot>,
    /// How many function call items exist, for their ids.
    function_calls: usize,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

impl StreamTranslator {
    pub fn new(request: &Value, response_id: String, created_at: u64) -> Self {
        let ids = ItemIds::new(&response_id);
        Self {
            request: request.clone(),
            model: request.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
            response_id,
            created_at,
            ids,
            sequence: 0,
            phase: Phase::NotStarted,
            items: Vec::new(),
            message: None,
            tools: Vec::new(),
            function_calls: 0,
            usage: None,
            finish_reason: None,
        }
    }

    /// The id of the response being streamed.
    pub fn response_id(&self) -> &str {
        &self.response_id
    }

    /// Whether `finish` or `fail` has run: no event follows.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The provider's token counts `(input, output, total)`, once its usage chunk arrived.
    pub fn usage(&self) -> Option<(u64, u64, u64)> {
        self.usage.map(|u| (u.input, u.output, u.total))
    }

    /// `response.created` and `response.in_progress`. Called implicitly by the other methods if
    /// not called first; a second call returns nothing.
    pub fn start(&mut self) -> Vec<ResponseEvent> {
        if self.phase != Phase::NotStarted {
            return Vec::new();
        }
        self.phase = Phase::Streaming;
        let mut events = Vec::with_capacity(2);
        let response = self.response(Outcome::InProgress, Value::Null, Value::Null);
        self.emit(&mut events, "response.created", json!({"response": response}));
        let response = self.response(Outcome::InProgress, Value::Null, Value::Null);
        self.emit(&mut events, "response.in_progress", json!({"response": response}));
        events
    }

    /// Translates one parsed `chat.completion.chunk`. A chunk carrying an `error` (some
    /// providers report failures in-band) ends the stream as [`fail`](Self::fail) does.
    pub fn push(&mut self, chunk: &Value) -> Vec<ResponseEvent> {
        if self.phase == Phase::Done {
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
        if let Some(model) = chunk.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            if model != self.model {
                self.model = model.to_owned();
            }
        }
        if let Some(usage) = chunk.get("usage").and_then(Usage::from_chat) {
            self.usage = Some(usage);
        }
        let Some(choice) = first_choice(chunk.get("choices")) else {
            return events;
        };
        if let Some(delta) = choice.get("delta") {
            let text = chat_content_text(delta.get("content"));
            if !text.is_empty() {
                self.text_delta(&text, &mut events);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    self.tool_delta(call, &mut events);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        events
    }

    /// Closes every item and ends with `response.completed` (or `response.incomplete` when the
    /// provider stopped at its token limit or a content filter), carrying the final response
    /// object, of the same shape [`chat_to_response`] returns.
    pub fn finish(&mut self) -> Vec<ResponseEvent> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let mut events = self.start();
        // Tool calls whose name never came are still handed to the client rather than lost.
        for slot in 0..self.tools.len() {
            self.announce_tool(slot, &mut events);
        }
        if self.items.is_empty() {
            // An empty answer is an empty message, as in `chat_to_response`.
            self.open_message(&mut events);
        }
        let outcome = Outcome::from_finish_reason(self.finish_reason.as_deref());
        for output_index in 0..self.items.len() {
            let Some(item) = self.items.get(output_index) else {
                continue;
            };
            match item {
                StreamItem::Message { id, text } => {
                    let (id, text) = (id.clone(), text.clone());
                    self.emit(
                        &mut events,
                        "response.output_text.done",
                        json!({
                            "item_id": id,
                            "output_index": output_index,
                            "content_index": 0,
                            "text": text,
                            "logprobs": [],
                        }),
                    );
                    self.emit(
                        &mut events,
                        "response.content_part.done",
                        json!({
                            "item_id": id,
                            "output_index": output_index,
                            "content_index": 0,
                            "part": {"type": "output_text", "text": text, "annotations": []},
                        }),
                    );
                }
                StreamItem::FunctionCall { id, name, arguments, .. } => {
                    let data = json!({
                        "item_id": id,
                        "output_index": output_index,
                        "name": name,
                        "arguments": arguments,
                    });
                    self.emit(&mut events, "response.function_call_arguments.done", data);
                }
            }
            let item = self.item_json(output_index, outcome);
            self.emit(&mut events, "response.output_item.done", json!({"output_index": output_index, "item": item}));
        }
        let response = self.response(outcome, self.usage.unwrap_or_default().to_json(), Value::Null);
        let terminal = match outcome {
            Outcome::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        self.emit(&mut events, terminal, json!({"response": response}));
        self.phase = Phase::Done;
        events
    }

    /// Ends the stream after a provider failure: an `error` event (what clients watch for), then
    /// `response.failed` with what was produced so far. Nothing follows.
    pub fn fail(&mut self, message: &str) -> Vec<ResponseEvent> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let mut events = self.start();
        self.emit(&mut events, "error", json!({"code": "server_error", "message": message, "param": Value::Null}));
        let usage = self.usage.map_or(Value::Null, Usage::to_json);
        let response = self.response(Outcome::Failed, usage, json!({"code": "server_error", "message": message}));
        self.emit(&mut events, "response.failed", json!({"response": response}));
        self.phase = Phase::Done;
        events
    }

    fn emit(&mut self, events: &mut Vec<ResponseEvent>, event_type: &str, mut data: Value) {
        if let Some(fields) = data.as_object_mut() {
            fields.insert("type".into(), Value::String(event_type.to_owned()));
            fields.insert("sequence_number".into(), Value::from(self.sequence));
        }
        self.sequence += 1;
        events.push(ResponseEvent { event_type: event_type.to_owned(), data });
    }

    fn open_message(&mut self, events: &mut Vec<ResponseEvent>) -> usize {
        if let Some(index) = self.message {
            return index;
        }
        let id = self.ids.message();
        let output_index = self.items.len();
        self.items.push(StreamItem::Message { id: id.clone(), text: String::new() });
        self.message = Some(output_index);
        self.emit(
            events,
            "response.output_item.added",
            json!({
                "output_index": output_index,
                "item": {
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            }),
        );
        self.emit(
            events,
            "response.content_part.added",
            json!({
                "item_id": id,
                "output_index": output_index,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            }),
        );
        output_index
    }

    fn text_delta(&mut self, delta: &str, events: &mut Vec<ResponseEvent>) {
        let output_index = self.open_message(events);
        let Some(StreamItem::Message { id, text }) = self.items.get_mut(output_index) else {
            return;
        };
        text.push_str(delta);
        let id = id.clone();
        self.emit(
            events,
            "response.output_text.delta",
            json!({
                "item_id": id,
                "output_index": output_index,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            }),
        );
    }

    fn tool_delta(&mut self, call: &Value, events: &mut Vec<ResponseEvent>) {
        let index = call.get("index").and_then(Value::as_u64);
        let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty());
        let piece = arguments_text(function.and_then(|f| f.get("arguments")));

        // Which call this delta continues. OpenAI keys deltas by `index` and sends `id` only in a
        // call's first delta; some providers omit `index`, or reuse index 0 with a new id for
        // every call. A new id therefore always starts a new call; the newest slot wins a tie.
        let existing = self.tools.iter().rposition(|slot| {
            let same_index = match (index, slot.index) {
                (Some(a), Some(b)) => a == b,
                (None, _) => true,
                (Some(_), None) => false,
            };
            let same_id = match (id, slot.call_id.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            same_index && same_id
        });
        let slot = match existing {
            Some(slot) => slot,
            None => {
                self.tools.push(ToolSlot {
                    index,
                    call_id: None,
                    name: None,
                    pending_arguments: String::new(),
                    item: None,
                });
                self.tools.len() - 1
            }
        };
        let Some(state) = self.tools.get_mut(slot) else {
            return;
        };
        if state.call_id.is_none() {
            state.call_id = id.map(str::to_owned);
        }
        if state.name.is_none() {
            state.name = name.map(str::to_owned);
        }
        match state.item {
            None => {
                state.pending_arguments.push_str(&piece);
                if state.name.is_some() {
                    self.announce_tool(slot, events);
                }
            }
            Some(output_index) => self.arguments_delta(output_index, &piece, events),
        }
    }

    /// Makes a tool call an output item (`response.output_item.added`), then forwards the
    /// arguments that arrived before its name.
    fn announce_tool(&mut self, slot: usize, events: &mut Vec<ResponseEvent>) {
        let n = self.function_calls;
        let Some(state) = self.tools.get_mut(slot) else {
            return;
        };
        if state.item.is_some() {
            return;
        }
        let output_index = self.items.len();
        state.item = Some(output_index);
        let pending = std::mem::take(&mut state.pending_arguments);
        let id = self.ids.function_call(n);
        let call_id = state.call_id.clone().unwrap_or_else(|| self.ids.call(n));
        let name = state.name.clone().unwrap_or_default();
        self.function_calls += 1;
        self.items.push(StreamItem::FunctionCall {
            id: id.clone(),
            call_id: call_id.clone(),
            name: name.clone(),
            arguments: String::new(),
        });
        let item = function_call_item(&id, &call_id, &name, "", "in_progress");
        self.emit(events, "response.output_item.added", json!({"output_index": output_index, "item": item}));
        self.arguments_delta(output_index, &pending, events);
    }

    fn arguments_delta(&mut self, output_index: usize, piece: &str, events: &mut Vec<ResponseEvent>) {
        if piece.is_empty() {
            return;
        }
        let Some(StreamItem::FunctionCall { id, arguments, .. }) = self.items.get_mut(output_index) else {
            return;
        };
        arguments.push_str(piece);
        let id = id.clone();
        self.emit(
            events,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": output_index, "delta": piece}),
        );
    }

    fn item_json(&self, output_index: usize, outcome: Outcome) -> Value {
        let status = outcome.item_status();
        match self.items.get(output_index) {
            Some(StreamItem::Message { id, text }) => message_item(id, text, status),
            Some(StreamItem::FunctionCall { id, call_id, name, arguments }) => {
                function_call_item(id, call_id, name, arguments, status)
            }
            None => Value::Null,
        }
    }

    fn response(&self, outcome: Outcome, usage: Value, error: Value) -> Value {
        let (output, output_text) = if outcome == Outcome::InProgress {
            (Vec::new(), String::new())
        } else {
            let output = (0..self.items.len()).map(|i| self.item_json(i, outcome)).collect();
            let text = match self.message.and_then(|i| self.items.get(i)) {
                Some(StreamItem::Message { text, .. }) => text.clone(),
                _ => String::new(),
            };
            (output, text)
        };
        response_object(
            &self.request,
            ResponseParts {
                id: &self.response_id,
                created_at: self.created_at,
                model: &self.model,
                outcome,
                output,
                output_text,
                usage,
                error,
            },
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_input_translated_item_by_item_is_the_same_chat_body() {
        let cases = [
            json!({"model": "m", "input": "hi", "instructions": "Be brief.", "temperature": 0.2}),
            json!({"model": "m", "input": [
                {"type": "message", "role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "get", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
                {"role": "user", "content": [{"type": "input_text", "text": "thanks"}]}
            ], "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}}], "stream": true}),
            json!({"input": [], "instructions": [{"role": "developer", "content": "x"}]}),
        ];
        for case in cases {
            let body = case.as_object().unwrap();
            let tree = request_parts_to_chat(body, body.get("input")).unwrap();
            let input = body.get("input").map(|i| i.to_string());
            let text = request_parts_to_chat_text(body, input.as_deref()).unwrap();
            let parsed: Value = serde_json::from_slice(&text).unwrap();
            assert_eq!(parsed, tree, "{case}");
        }
        let body = json!({"model": "m"});
        let body = body.as_object().unwrap();
        for (input, param) in [(Some("[]"), "input"), (None, "input"), (Some("3"), "input"), (Some("[1]"), "input")] {
            let e = request_parts_to_chat_text(body, input).unwrap_err();
            assert_eq!(e.param(), param, "{input:?}");
        }
    }
    use super::*;

    // ---- helpers ---------------------------------------------------------------------------

    fn unsupported_param(body: Value) -> String {
        match request_to_chat(&body) {
            Err(CompatError::Unsupported { param, .. }) => param,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    fn invalid_param(body: Value) -> String {
        match request_to_chat(&body) {
            Err(CompatError::Invalid { param, .. }) => param,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn types(events: &[ResponseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    fn chunk(delta: Value) -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama3",
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
        })
    }

    fn finish_chunk(reason: &str) -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama3",
            "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
        })
    }

    fn usage_chunk() -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama3",
            "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        })
    }

    /// Runs a whole stream and checks the invariants every stream must keep.
    fn run_stream(request: &Value, chunks: &[Value]) -> Vec<ResponseEvent> {
        let mut translator = StreamTranslator::new(request, "resp_test".into(), 1_700_000_000);
        let mut events = translator.start();
        for c in chunks {
            events.extend(translator.push(c));
        }
        events.extend(translator.finish());
        assert!(translator.is_finished());
        assert_stream_invariants(&events);
        events
    }

    fn assert_stream_invariants(events: &[ResponseEvent]) {
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event.data["type"], event.event_type.as_str());
            assert_eq!(event.data["sequence_number"], n as u64, "{event:?}");
        }
        assert_eq!(types(events).first(), Some(&"response.created"));
        assert_eq!(types(events).get(1), Some(&"response.in_progress"));
    }

    /// Rebuilds the output from the deltas the way a client does, to compare with the final
    /// response.
    fn replay(events: &[ResponseEvent]) -> Vec<Value> {
        let mut items: Vec<Value> = Vec::new();
        for event in events {
            let data = &event.data;
            let index = data["output_index"].as_u64().map(|i| i as usize);
            match event.event_type.as_str() {
                "response.output_item.added" => {
                    assert_eq!(index, Some(items.len()), "items are added in output order");
                    items.push(data["item"].clone());
                }
                "response.content_part.added" => {
                    let item = &mut items[index.unwrap()];
                    assert_eq!(item["id"], data["item_id"]);
                    item["content"].as_array_mut().unwrap().push(data["part"].clone());
                }
                "response.output_text.delta" => {
                    let item = &mut items[index.unwrap()];
                    assert_eq!(item["id"], data["item_id"]);
                    let part = &mut item["content"][data["content_index"].as_u64().unwrap() as usize];
                    let text = format!("{}{}", part["text"].as_str().unwrap(), data["delta"].as_str().unwrap());
                    part["text"] = json!(text);
                }
                "response.function_call_arguments.delta" => {
                    let item = &mut items[index.unwrap()];
                    assert_eq!(item["id"], data["item_id"]);
                    let args = format!("{}{}", item["arguments"].as_str().unwrap(), data["delta"].as_str().unwrap());
                    item["arguments"] = json!(args);
                }
                "response.output_text.done" => {
                    let item = &items[index.unwrap()];
                    assert_eq!(item["content"][0]["text"], data["text"]);
                }
                "response.function_call_arguments.done" => {
                    let item = &items[index.unwrap()];
                    assert_eq!(item["arguments"], data["arguments"]);
                    assert_eq!(item["name"], data["name"]);
                }
                "response.output_item.done" => {
                    let item = &mut items[index.unwrap()];
                    item["status"] = data["item"]["status"].clone();
                    assert_eq!(*item, data["item"], "done item equals the accumulated one");
                }
                _ => {}
            }
        }
        items
    }

    fn last_response(events: &[ResponseEvent]) -> &Value {
        &events.last().unwrap().data["response"]
    }

    fn assert_response_shape(response: &Value) {
        for field in [
            "id",
            "object",
            "created_at",
            "status",
            "error",
            "incomplete_details",
            "instructions",
            "model",
            "output",
            "parallel_tool_calls",
            "tool_choice",
            "tools",
            "temperature",
            "top_p",
            "max_output_tokens",
            "metadata",
            "text",
            "truncation",
            "usage",
            "output_text",
        ] {
            assert!(response.get(field).is_some(), "missing {field} in {response}");
        }
        assert_eq!(response["object"], "response");
        assert!(response["id"].is_string());
        assert!(response["created_at"].is_u64());
        assert!(response["output"].is_array());
        assert!(response["tools"].is_array());
        assert!(response["parallel_tool_calls"].is_boolean());
        assert!(response["metadata"].is_object());
        assert_eq!(response["text"]["format"]["type"], "text");
    }

    // ---- request_to_chat -------------------------------------------------------------------

    #[test]
    fn request_string_input_becomes_user_message() {
        let chat = request_to_chat(&json!({"model": "m", "input": "Hello"})).unwrap();
        assert_eq!(chat, json!({"model": "m", "messages": [{"role": "user", "content": "Hello"}]}));
    }

    #[test]
    fn the_input_given_apart_is_the_one_translated() {
        let whole = json!({"model": "m", "instructions": "Be brief.", "input": [{"role": "user", "content": "Hi"}]});
        let mut settings = whole.as_object().unwrap().clone();
        let input = settings.remove("input");
        assert_eq!(request_parts_to_chat(&settings, input.as_ref()).unwrap(), request_to_chat(&whole).unwrap());
        // An `input` left among the settings is not read.
        let chat = request_parts_to_chat(whole.as_object().unwrap(), Some(&json!("Other"))).unwrap();
        assert_eq!(chat["messages"][1], json!({"role": "user", "content": "Other"}));
    }

    #[test]
    fn request_instructions_and_developer_role_become_system_messages() {
        let chat = request_to_chat(&json!({
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "No emoji."}]},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "Part one."},
                    {"type": "text", "text": "Part two."}
                ]},
            ],
        }))
        .unwrap();
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "Answer in French."},
                {"role": "system", "content": "No emoji."},
                {"role": "user", "content": "Part one.\nPart two."},
            ])
        );
    }

    #[test]
    fn request_instructions_as_items_are_accepted() {
        let chat = request_to_chat(&json!({
            "model": "m",
            "instructions": [{"role": "developer", "content": "Rules."}],
            "input": "Hi",
        }))
        .unwrap();
        assert_eq!(chat["messages"][0], json!({"role": "system", "content": "Rules."}));
        assert_eq!(chat["messages"][1], json!({"role": "user", "content": "Hi"}));
    }

    #[test]
    fn request_function_call_round_trip_merges_into_one_assistant_turn() {
        // What a client sends after running the tools of a previous response: its output items
        // fed back, then the outputs.
        let chat = request_to_chat(&json!({
            "model": "m",
            "input": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "weather",
                 "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                {"type": "function_call", "call_id": "call_b", "name": "weather",
                 "arguments": "{\"city\":\"Rome\"}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_b",
                 "output": [{"type": "input_text", "text": "rainy"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
        }))
        .unwrap();
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_b", "content": "rainy"},
            ])
        );
    }

    #[test]
    fn request_function_call_after_user_opens_an_assistant_message() {
        let chat = request_to_chat(&json!({
            "model": "m",
            "input": [
                {"role": "user", "content": "Go"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": {"x": 1}},
                {"type": "function_call_output", "call_id": "c1", "output": {"ok": true}},
            ],
        }))
        .unwrap();
        assert_eq!(
            chat["messages"][1],
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}
            ]})
        );
        assert_eq!(chat["messages"][2], json!({"role": "tool", "tool_call_id": "c1", "content": "{\"ok\":true}"}));
    }

    #[test]
    fn request_flat_function_tools_become_nested() {
        let chat = request_to_chat(&json!({
            "model": "m",
            "input": "x",
            "tools": [
                {"type": "function", "name": "weather", "description": "Get weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                 "strict": true},
                {"type": "function", "name": "bare"},
            ],
            "tool_choice": {"type": "function", "name": "weather"},
            "parallel_tool_calls": false,
        }))
        .unwrap();
        assert_eq!(
            chat["tools"],
            json!([
                {"type": "function", "function": {
                    "name": "weather", "description": "Get weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "strict": true}},
                {"type": "function", "function": {"name": "bare"}},
            ])
        );
        assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "weather"}}));
        assert_eq!(chat["parallel_tool_calls"], false);
    }

    #[test]
    fn request_chat_shaped_tools_are_tolerated() {
        let tool = json!({"type": "function", "function": {"name": "f", "parameters": {}}});
        let chat = request_to_chat(&json!({"model": "m", "input": "x", "tools": [tool]})).unwrap();
        assert_eq!(chat["tools"], json!([tool]));
    }

    #[test]
    fn request_tool_choice_modes_pass_through() {
        for mode in ["auto", "none", "required"] {
            let chat = request_to_chat(&json!({
                "model": "m", "input": "x", "tool_choice": mode,
                "tools": [{"type": "function", "name": "f"}],
            }))
            .unwrap();
            assert_eq!(chat["tool_choice"], mode);
        }
    }

    #[test]
    fn request_tool_choice_is_dropped_without_tools() {
        let chat = request_to_chat(&json!({
            "model": "m", "input": "x", "tool_choice": "auto", "tools": [], "parallel_tool_calls": true,
        }))
        .unwrap();
        assert!(chat.get("tools").is_none());
        assert!(chat.get("tool_choice").is_none());
        assert!(chat.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn request_sampling_fields_and_max_tokens() {
        let chat = request_to_chat(&json!({
            "model": "m", "input": "x", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64,
            "seed": 7, "stop_sequences": ["END"], "store": false, "background": false,
            "truncation": "auto", "reasoning": {"effort": "low"}, "metadata": {"k": "v"},
            "previous_response_id": null, "user": "u",
        }))
        .unwrap();
        assert_eq!(
            chat,
            json!({
                "model": "m", "messages": [{"role": "user", "content": "x"}],
                "temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "seed": 7, "stop": ["END"],
            })
        );
    }

    #[test]
    fn request_stream_asks_for_usage() {
        let chat = request_to_chat(&json!({"model": "m", "input": "x", "stream": true})).unwrap();
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        let chat = request_to_chat(&json!({"model": "m", "input": "x", "stream": false})).unwrap();
        assert_eq!(chat["stream"], false);
        assert!(chat.get("stream_options").is_none());
    }

    #[test]
    fn request_text_format_translation() {
        let chat = request_to_chat(&json!({
            "model": "m", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "person", "strict": true,
                                "schema": {"type": "object"}}},
        }))
        .unwrap();
        assert_eq!(
            chat["response_format"],
            json!({"type": "json_schema", "json_schema": {
                "name": "person", "strict": true, "schema": {"type": "object"}}})
        );
        let chat = request_to_chat(&json!({
            "model": "m", "input": "x", "text": {"format": {"type": "json_object"}},
        }))
        .unwrap();
        assert_eq!(chat["response_format"], json!({"type": "json_object"}));
        let chat = request_to_chat(&json!({
            "model": "m", "input": "x", "text": {"format": {"type": "text"}, "verbosity": "low"},
        }))
        .unwrap();
        assert!(chat.get("response_format").is_none());
        let chat = request_to_chat(&json!({"model": "m", "input": "x", "text": {"verbosity": "high"}})).unwrap();
        assert!(chat.get("response_format").is_none());
    }

    #[test]
    fn error_stateful_fields_are_refused() {
        let base = |field: &str, value: Value| {
            let mut body = json!({"model": "m", "input": "x"});
            body[field] = value;
            body
        };
        assert_eq!(unsupported_param(base("previous_response_id", json!("resp_1"))), "previous_response_id");
        assert_eq!(unsupported_param(base("conversation", json!("conv_1"))), "conversation");
        assert_eq!(unsupported_param(base("background", json!(true))), "background");
        assert_eq!(unsupported_param(base("store", json!(true))), "store");
        assert_eq!(unsupported_param(base("prompt", json!({"id": "pmpt_1"}))), "prompt");
        assert_eq!(unsupported_param(base("max_tool_calls", json!(2))), "max_tool_calls");
    }

    #[test]
    fn error_images_and_files_are_refused() {
        let image = json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/a.png"},
        ]}]});
        assert_eq!(unsupported_param(image.clone()), "input");
        let message = request_to_chat(&image).unwrap_err().to_string();
        assert!(message.contains("input_image"), "{message}");
        let file = json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_file", "file_id": "file_1"}]}]});
        assert!(request_to_chat(&file).unwrap_err().to_string().contains("input_file"));
        let image_output = json!({"model": "m", "input": [{"type": "function_call_output",
            "call_id": "c", "output": [{"type": "input_image", "image_url": "x"}]}]});
        assert_eq!(unsupported_param(image_output), "input");
    }

    #[test]
    fn error_unsupported_items_are_refused() {
        let reference = json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]});
        assert!(request_to_chat(&reference).unwrap_err().to_string().contains("item_reference"));
        let search = json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]});
        assert!(request_to_chat(&search).unwrap_err().to_string().contains("web_search_call"));
    }

    #[test]
    fn error_hosted_tools_and_choices_are_refused() {
        let tools = json!({"model": "m", "input": "x", "tools": [
            {"type": "function", "name": "f"}, {"type": "web_search"}]});
        assert_eq!(unsupported_param(tools.clone()), "tools");
        assert!(request_to_chat(&tools).unwrap_err().to_string().contains("web_search"));
        let choice = json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
            "tool_choice": {"type": "file_search"}});
        assert_eq!(unsupported_param(choice), "tool_choice");
        let allowed = json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
            "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}});
        assert_eq!(unsupported_param(allowed), "tool_choice");
        let format = json!({"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}});
        assert_eq!(unsupported_param(format), "text.format");
    }

    #[test]
    fn error_malformed_requests_are_invalid() {
        assert_eq!(invalid_param(json!("not an object")), "body");
        assert_eq!(invalid_param(json!({"model": "m"})), "input");
        assert_eq!(invalid_param(json!({"model": "m", "input": []})), "input");
        assert_eq!(invalid_param(json!({"model": "m", "input": 3})), "input");
        assert_eq!(invalid_param(json!({"model": "m", "input": "x", "instructions": 3})), "instructions");
        assert_eq!(invalid_param(json!({"model": "m", "input": [{"role": "tool", "content": "x"}]})), "input");
        assert_eq!(invalid_param(json!({"model": "m", "input": [{"content": "no role"}]})), "input");
        assert_eq!(invalid_param(json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]})), "input");
        assert_eq!(
            invalid_param(json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]})),
            "input"
        );
        assert_eq!(invalid_param(json!({"model": "m", "input": "x", "tools": [{"type": "function"}]})), "tools");
        assert_eq!(invalid_param(json!({"model": "m", "input": "x", "tool_choice": "always"})), "tool_choice");
        assert_eq!(invalid_param(json!({"model": "m", "input": "x", "max_output_tokens": -1})), "max_output_tokens");
        assert_eq!(invalid_param(json!({"model": "m", "input": "x", "stream": "yes"})), "stream");
        assert_eq!(
            invalid_param(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}})),
            "text.format"
        );
    }

    #[test]
    fn error_messages_name_the_unsupported_thing() {
        let err = request_to_chat(&json!({"model": "m", "input": "x", "previous_response_id": "r"})).unwrap_err();
        assert_eq!(err.param(), "previous_response_id");
        assert!(err.to_string().starts_with("`previous_response_id` is not supported"), "{err}");
    }

    // ---- chat_to_response ------------------------------------------------------------------

    #[test]
    fn response_text_only() {
        let chat = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "llama3:8b",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        });
        let request = json!({"model": "llama3:8b", "input": "Hello", "instructions": "Be kind."});
        let response = chat_to_response(&chat, &request, "resp_abc");
        assert_response_shape(&response);
        assert_eq!(response["id"], "resp_abc");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["created_at"], 1_700_000_000);
        assert_eq!(response["model"], "llama3:8b");
        assert_eq!(response["instructions"], "Be kind.");
        assert_eq!(response["incomplete_details"], Value::Null);
        assert_eq!(response["error"], Value::Null);
        assert_eq!(response["output_text"], "Hi there");
        assert_eq!(
            response["output"],
            json!([{"id": "msg_abc", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Hi there", "annotations": []}]}])
        );
        assert_eq!(
            response["usage"],
            json!({"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
                   "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                   "output_tokens_details": {"reasoning_tokens": 0}})
        );
    }

    #[test]
    fn response_tool_calls_non_stream() {
        let chat = json!({
            "created": 1, "model": "qwen",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"type": "function", "function": {"name": "time", "arguments": {"tz": "CET"}}},
                ]}}],
        });
        let request = json!({"model": "qwen", "input": "x",
            "tools": [{"type": "function", "name": "weather"}, {"type": "function", "name": "time"}],
            "tool_choice": "required"});
        let response = chat_to_response(&chat, &request, "resp_t");
        assert_response_shape(&response);
        assert_eq!(response["output_text"], "");
        assert_eq!(
            response["output"],
            json!([
                {"id": "fc_t_0", "type": "function_call", "call_id": "call_1", "name": "weather",
                 "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                {"id": "fc_t_1", "type": "function_call", "call_id": "call_t_1", "name": "time",
                 "arguments": "{\"tz\":\"CET\"}", "status": "completed"},
            ])
        );
        assert_eq!(response["tools"], request["tools"]);
        assert_eq!(response["tool_choice"], "required");
    }

    #[test]
    fn response_mixed_text_and_tool_call() {
        let chat = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]});
        let response = chat_to_response(&chat, &json!({"model": "m", "input": "x"}), "resp_m");
        let output = response["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["type"], "message");
        assert_eq!(output[1]["type"], "function_call");
        assert_eq!(response["output_text"], "Let me check.");
        // No provider model: the request's.
        assert_eq!(response["model"], "m");
        // No provider usage: zeros, never a missing field.
        assert_eq!(response["usage"]["total_tokens"], 0);
    }

    #[test]
    fn response_finish_reason_length_is_incomplete() {
        let chat = json!({"choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "Once upon a"}}]});
        let request = json!({"model": "m", "input": "x", "max_output_tokens": 3});
        let response = chat_to_response(&chat, &request, "resp_l");
        assert_eq!(response["status"], "incomplete");
        assert_eq!(response["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(response["output"][0]["status"], "incomplete");
        assert_eq!(response["max_output_tokens"], 3);
        let filtered = json!({"choices": [{"index": 0, "finish_reason": "content_filter",
            "message": {"role": "assistant", "content": ""}}]});
        let response = chat_to_response(&filtered, &request, "resp_f");
        assert_eq!(response["incomplete_details"], json!({"reason": "content_filter"}));
    }

    #[test]
    fn response_usage_details_are_carried() {
        let chat = json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20,
                      "prompt_tokens_details": {"cached_tokens": 64},
                      "completion_tokens_details": {"reasoning_tokens": 12}}});
        let response = chat_to_response(&chat, &json!({"model": "m"}), "resp_u");
        assert_eq!(response["usage"]["input_tokens"], 100);
        assert_eq!(response["usage"]["output_tokens"], 20);
        assert_eq!(response["usage"]["total_tokens"], 120);
        assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 64);
        assert_eq!(response["usage"]["output_tokens_details"]["reasoning_tokens"], 12);
    }

    #[test]
    fn response_echoes_request_settings() {
        let request = json!({"model": "m", "input": "x", "temperature": 0.5, "top_p": 0.8,
            "parallel_tool_calls": false, "metadata": {"a": "b"},
            "text": {"format": {"type": "json_object"}, "verbosity": "low"}});
        let chat = json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "{}"}}]});
        let response = chat_to_response(&chat, &request, "resp_e");
        assert_eq!(response["temperature"], 0.5);
        assert_eq!(response["top_p"], 0.8);
        assert_eq!(response["parallel_tool_calls"], false);
        assert_eq!(response["metadata"], json!({"a": "b"}));
        assert_eq!(response["text"], json!({"format": {"type": "json_object"}, "verbosity": "low"}));
        assert_eq!(response["store"], false);
        assert_eq!(response["tool_choice"], "auto");
        assert_eq!(response["tools"], json!([]));
        assert_eq!(response["instructions"], Value::Null);
    }

    #[test]
    fn response_empty_answer_is_an_empty_message() {
        let chat = json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": null}}]});
        let response = chat_to_response(&chat, &json!({"model": "m"}), "resp_z");
        assert_eq!(response["output"][0]["content"][0]["text"], "");
        let response = chat_to_response(&json!({}), &json!({"model": "m"}), "resp_z");
        assert_eq!(response["output"].as_array().unwrap().len(), 1);
    }

    // ---- StreamTranslator ------------------------------------------------------------------

    #[test]
    fn stream_text_only() {
        let request = json!({"model": "m", "input": "x", "stream": true});
        let events = run_stream(
            &request,
            &[
                chunk(json!({"role": "assistant", "content": ""})),
                chunk(json!({"content": "Hel"})),
                chunk(json!({"content": "lo"})),
                finish_chunk("stop"),
                usage_chunk(),
            ],
        );
        assert_eq!(
            types(&events),
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[0].data["response"]["status"], "in_progress");
        assert_eq!(events[0].data["response"]["output"], json!([]));
        assert_eq!(events[2].data["item"]["status"], "in_progress");
        assert_eq!(events[2].data["item"]["content"], json!([]));
        assert_eq!(events[4].data["item_id"], "msg_test");
        assert_eq!(events[4].data["output_index"], 0);
        assert_eq!(events[4].data["content_index"], 0);
        assert_eq!(events[6].data["text"], "Hello");
        let response = last_response(&events);
        assert_response_shape(response);
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output_text"], "Hello");
        assert_eq!(response["model"], "llama3");
        assert_eq!(response["usage"]["input_tokens"], 11);
        assert_eq!(response["usage"]["total_tokens"], 18);
        assert_eq!(replay(&events), response["output"].as_array().unwrap().clone());
    }

    #[test]
    fn stream_two_parallel_tool_calls_in_pieces() {
        let request = json!({"model": "m", "input": "x", "stream": true,
            "tools": [{"type": "function", "name": "weather"}]});
        let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
            let mut function = json!({"arguments": args});
            if let Some(name) = name {
                function["name"] = json!(name);
            }
            let mut call = json!({"index": index, "type": "function", "function": function});
            if let Some(id) = id {
                call["id"] = json!(id);
            }
            chunk(json!({"tool_calls": [call]}))
        };
        let events = run_stream(
            &request,
            &[
                chunk(json!({"role": "assistant", "content": null})),
                call(0, Some("call_p"), Some("weather"), ""),
                call(0, None, None, "{\"ci"),
                call(1, Some("call_r"), Some("weather"), "{\"city\""),
                call(0, None, None, "ty\":\"Paris\"}"),
                call(1, None, None, ":\"Rome\"}"),
                finish_chunk("tool_calls"),
                usage_chunk(),
            ],
        );
        assert_eq!(
            types(&events),
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(
            events[2].data["item"],
            json!({"id": "fc_test_0", "type": "function_call", "call_id": "call_p",
                   "name": "weather", "arguments": "", "status": "in_progress"})
        );
        assert_eq!(events[5].data["output_index"], 1);
        assert_eq!(events[5].data["item_id"], "fc_test_1");
        let response = last_response(&events);
        assert_eq!(
            response["output"],
            json!([
                {"id": "fc_test_0", "type": "function_call", "call_id": "call_p", "name": "weather",
                 "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                {"id": "fc_test_1", "type": "function_call", "call_id": "call_r", "name": "weather",
                 "arguments": "{\"city\":\"Rome\"}", "status": "completed"},
            ])
        );
        assert_eq!(events[8].data["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(events[8].data["name"], "weather");
        assert_eq!(replay(&events), response["output"].as_array().unwrap().clone());
    }

    #[test]
    fn stream_mixed_text_and_tool_call() {
        let events = run_stream(
            &json!({"model": "m", "input": "x"}),
            &[
                chunk(json!({"content": "Checking"})),
                chunk(json!({"content": "..."})),
                chunk(json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]})),
                finish_chunk("tool_calls"),
            ],
        );
        assert_eq!(
            types(&events),
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let response = last_response(&events);
        assert_eq!(response["output_text"], "Checking...");
        assert_eq!(response["output"][0]["type"], "message");
        assert_eq!(response["output"][1]["call_id"], "c1");
        assert_eq!(replay(&events), response["output"].as_array().unwrap().clone());
        // No usage chunk: zeros in the response, nothing for metrics.
        assert_eq!(response["usage"]["total_tokens"], 0);
    }

    #[test]
    fn stream_final_response_equals_the_non_stream_translation() {
        let request = json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}]});
        let events = run_stream(
            &request,
            &[
                chunk(json!({"content": "A"})),
                chunk(json!({"content": "B"})),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]}),
                ),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]})),
                finish_chunk("tool_calls"),
                usage_chunk(),
            ],
        );
        let chat = json!({"created": 1_700_000_000, "model": "llama3",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "AB",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}});
        assert_eq!(*last_response(&events), chat_to_response(&chat, &request, "resp_test"));
    }

    #[test]
    fn stream_usage_is_remembered_for_metrics() {
        let mut translator = StreamTranslator::new(&json!({"model": "m"}), "resp_u".into(), 0);
        translator.start();
        translator.push(&chunk(json!({"content": "x"})));
        assert_eq!(translator.usage(), None);
        translator.push(&finish_chunk("stop"));
        // The usage-only chunk has no choices and produces no event.
        assert!(translator.push(&usage_chunk()).is_empty());
        assert_eq!(translator.usage(), Some((11, 7, 18)));
    }

    #[test]
    fn stream_finish_reason_length_ends_incomplete() {
        let events = run_stream(
            &json!({"model": "m", "max_output_tokens": 2}),
            &[chunk(json!({"content": "Once upon"})), finish_chunk("length")],
        );
        let last = events.last().unwrap();
        assert_eq!(last.event_type, "response.incomplete");
        assert_eq!(last.data["response"]["status"], "incomplete");
        assert_eq!(last.data["response"]["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(last.data["response"]["output"][0]["status"], "incomplete");
    }

    #[test]
    fn stream_empty_answer_still_has_a_message() {
        let events = run_stream(&json!({"model": "m"}), &[finish_chunk("stop")]);
        assert_eq!(
            types(&events),
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(replay(&events), last_response(&events)["output"].as_array().unwrap().clone());
    }

    #[test]
    fn stream_tool_name_arriving_after_arguments() {
        let events = run_stream(
            &json!({"model": "m"}),
            &[
                chunk(json!({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": "{\"x\":"}}]})),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "1}"}}]})),
                finish_chunk("tool_calls"),
            ],
        );
        let added = events.iter().find(|e| e.event_type == "response.output_item.added").unwrap();
        assert_eq!(added.data["item"]["name"], "f");
        let response = last_response(&events);
        assert_eq!(response["output"][0]["arguments"], "{\"x\":1}");
        assert_eq!(replay(&events), response["output"].as_array().unwrap().clone());
    }

    #[test]
    fn stream_nameless_tool_call_is_still_delivered() {
        let events = run_stream(
            &json!({"model": "m"}),
            &[chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))],
        );
        let response = last_response(&events);
        assert_eq!(response["output"][0]["type"], "function_call");
        assert_eq!(response["output"][0]["call_id"], "call_test_0");
        assert_eq!(replay(&events), response["output"].as_array().unwrap().clone());
    }

    #[test]
    fn stream_provider_reusing_index_with_new_ids() {
        // Some providers send each complete call in its own chunk, all at index 0 (or with no
        // index at all): a new id is a new call.
        let events = run_stream(
            &json!({"model": "m"}),
            &[
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{\"n\":1}"}}]}),
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "f", "arguments": "{\"n\":2}"}}]}),
                ),
                chunk(json!({"tool_calls": [{"id": "c", "function": {"name": "g", "arguments": "{}"}}]})),
                finish_chunk("tool_calls"),
            ],
        );
        let response = last_response(&events);
        let calls: Vec<(&str, &str)> = response["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["call_id"].as_str().unwrap(), i["arguments"].as_str().unwrap()))
            .collect();
        assert_eq!(calls, vec![("a", "{\"n\":1}"), ("b", "{\"n\":2}"), ("c", "{}")]);
        assert_eq!(replay(&events), response["output"].as_array().unwrap().clone());
    }

    #[test]
    fn stream_fail_mid_stream() {
        let mut translator = StreamTranslator::new(&json!({"model": "m"}), "resp_f".into(), 5);
        let mut events = translator.start();
        events.extend(translator.push(&chunk(json!({"content": "partial"}))));
        events.extend(translator.fail("provider connection reset"));
        assert_stream_invariants(&events);
        let n = events.len();
        assert_eq!(events[n - 2].event_type, "error");
        assert_eq!(events[n - 2].data["message"], "provider connection reset");
        assert_eq!(events[n - 2].data["code"], "server_error");
        let failed = &events[n - 1];
        assert_eq!(failed.event_type, "response.failed");
        assert_eq!(failed.data["response"]["status"], "failed");
        assert_eq!(
            failed.data["response"]["error"],
            json!({"code": "server_error", "message": "provider connection reset"})
        );
        assert_eq!(failed.data["response"]["output"][0]["content"][0]["text"], "partial");
        assert_eq!(failed.data["response"]["output"][0]["status"], "incomplete");
        assert!(translator.is_finished());
        assert!(translator.push(&chunk(json!({"content": "late"}))).is_empty());
        assert!(translator.finish().is_empty());
        assert!(translator.fail("again").is_empty());
    }

    #[test]
    fn stream_in_band_provider_error_fails_the_stream() {
        let mut translator = StreamTranslator::new(&json!({"model": "m"}), "resp_e".into(), 5);
        let events = translator.push(&json!({"error": {"message": "model not loaded"}}));
        assert_stream_invariants(&events);
        assert_eq!(types(&events), vec!["response.created", "response.in_progress", "error", "response.failed"]);
        assert_eq!(events[2].data["message"], "model not loaded");
        assert!(translator.is_finished());
    }

    #[test]
    fn stream_start_is_implicit_and_happens_once() {
        let mut translator = StreamTranslator::new(&json!({"model": "m"}), "resp_s".into(), 5);
        let events = translator.push(&chunk(json!({"content": "x"})));
        assert_eq!(types(&events)[..2], ["response.created", "response.in_progress"]);
        assert!(translator.start().is_empty());
        assert_eq!(translator.response_id(), "resp_s");
    }

    #[test]
    fn stream_sequence_numbers_strictly_increase_across_calls() {
        let mut translator = StreamTranslator::new(&json!({"model": "m"}), "resp_q".into(), 5);
        let mut all = translator.start();
        for piece in ["a", "b", "c"] {
            all.extend(translator.push(&chunk(json!({"content": piece}))));
        }
        all.extend(translator.push(&chunk(json!({"tool_calls": [
            {"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}},
            {"index": 1, "id": "y", "function": {"name": "g", "arguments": "{}"}},
        ]}))));
        all.extend(translator.finish());
        let numbers: Vec<u64> = all.iter().map(|e| e.data["sequence_number"].as_u64().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(numbers[0], 0);
    }

    #[test]
    fn stream_events_encode_as_sse_frames() {
        let events = run_stream(&json!({"model": "m"}), &[chunk(json!({"content": "line\nbreak"}))]);
        let mut parser = sse_parse::SseParser::new();
        let mut frames = Vec::new();
        for event in &events {
            frames.extend(parser.push(&event.to_sse()));
        }
        assert_eq!(frames.len(), events.len());
        for (frame, event) in frames.iter().zip(&events) {
            assert_eq!(frame.event.as_deref(), Some(event.event_type.as_str()));
            let data: Value = serde_json::from_str(&frame.data).unwrap();
            assert_eq!(data, event.data);
        }
    }

    #[test]
    fn new_response_ids_are_distinct() {
        let (a, b) = (new_response_id(), new_response_id());
        assert!(a.starts_with("resp_") && a.len() == 37, "{a}");
        assert_ne!(a, b);
    }
}
