//! Ollama requests as OpenAI bodies: `/api/chat` and `/api/generate` as chat completions (a raw
//! `/api/generate` as a legacy completion), `/api/embed` and `/api/embeddings` as embeddings.

use std::collections::VecDeque;

use serde_json::{json, Map, Value};

use super::{invalid, unsupported, CompatError};

fn object(body: &Value) -> Result<&Map<String, Value>, CompatError> {
    body.as_object().ok_or_else(|| invalid("request", "the body must be a JSON object"))
}

/// The model a request names (`model`, or the older `name`), trimmed. Any routing form the room
/// knows works: a model name (`llama3` is `llama3:latest`), `model:<name>`, a participant id, `*`.
pub fn model_of(body: &Value) -> Result<String, CompatError> {
    let body = object(body)?;
    for key in ["model", "name"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) if !m.trim().is_empty() => return Ok(m.trim().to_owned()),
            Some(Value::String(_)) => {}
            Some(_) => return Err(invalid(key, "must be a string")),
        }
    }
    Err(invalid("model", "a model name is required"))
}

/// `stream`; Ollama streams unless told not to.
pub fn stream_of(body: &Value) -> Result<bool, CompatError> {
    match object(body)?.get("stream") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid("stream", "must be true or false")),
    }
}

/// True when `keep_alive` asks for the model to be unloaded now (`0`, `"0"`, `"0s"`, ...).
pub fn unloads(body: &Value) -> bool {
    match body.get("keep_alive") {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => {
            let digits = s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
            digits.parse::<f64>().is_ok_and(|n| n == 0.0)
        }
        _ => false,
    }
}

/// A chat completions body for an Ollama `/api/chat` request, or `None` when it has no messages
/// (Ollama's way to load a model: answered without a participant).
pub fn chat_request(body: &Value, model: &str, stream: bool) -> Result<Option<Value>, CompatError> {
    let fields = object(body)?;
    refuse_nonempty(fields, "template", "the member's model server applies its own chat template")?;
    let messages = match fields.get("messages") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(m)) if m.is_empty() => return Ok(None),
        Some(Value::Array(m)) => chat_messages(m)?,
        Some(_) => return Err(invalid("messages", "must be an array of messages")),
    };
    let mut chat = base_body(model, stream, messages);
    if let Some(tools) = tools(fields.get("tools"))? {
        chat.insert("tools".into(), tools);
    }
    settings(fields, &mut chat)?;
    Ok(Some(Value::Object(chat)))
}

/// Where an Ollama `/api/generate` request runs, and its body there.
#[derive(Debug, Clone, PartialEq)]
pub enum Generate {
    /// A chat completion: the prompt as the user's message, after `system` (the model server
    /// applies its chat template, as Ollama applies the model's).
    Chat(Value),
    /// A legacy completion (`raw: true`): the prompt as it is, no template applied.
    Completion(Value),
}

impl Generate {
    /// The body, wherever it runs.
    pub fn into_body(self) -> Value {
        match self {
            Generate::Chat(body) | Generate::Completion(body) => body,
        }
    }
}

/// The OpenAI body for an Ollama `/api/generate` request, or `None` when there is no prompt (a
/// load request).
pub fn generate_request(body: &Value, model: &str, stream: bool) -> Result<Option<Generate>, CompatError> {
    let fields = object(body)?;
    refuse_nonempty(fields, "suffix", "fill-in-the-middle is not carried by the OpenAI endpoints the room calls")?;
    refuse_nonempty(fields, "context", "the room answers from the prompt, not from a token context")?;
    match fields.get("raw") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => return raw_request(fields, model, stream),
        Some(_) => return Err(invalid("raw", "must be true or false")),
    }
    refuse_nonempty(fields, "template", "the member's model server applies its own prompt template")?;
    let prompt = optional_str(fields, "prompt")?.unwrap_or_default();
    let images = images(fields.get("images"), "images")?;
    if prompt.is_empty() && images.is_empty() {
        return Ok(None);
    }
    let mut messages = Vec::new();
    if let Some(system) = optional_str(fields, "system")?.filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": content(prompt, images)}));
    let mut chat = base_body(model, stream, messages);
    settings(fields, &mut chat)?;
    Ok(Some(Generate::Chat(Value::Object(chat))))
}

/// A raw `/api/generate` request as a legacy completion: the prompt is already templated, so it
/// goes to `/v1/completions` as it is. What only a template or the chat endpoint would carry is
/// refused by name.
fn raw_request(fields: &Map<String, Value>, model: &str, stream: bool) -> Result<Option<Generate>, CompatError> {
    let why = "a raw prompt is sent as it is to the model server's completions endpoint";
    refuse_nonempty(fields, "template", why)?;
    refuse_nonempty(fields, "system", &format!("{why}; put the system text in the prompt"))?;
    refuse_nonempty(fields, "images", &format!("{why}, which takes no images; leave `raw` off"))?;
    if response_format(fields.get("format"))?.is_some() {
        return Err(unsupported("format", format!("{why}, which has no structured output; leave `raw` off")));
    }
    if matches!(fields.get("think"), Some(Value::String(_))) {
        return Err(unsupported("think", format!("{why}, which has no reasoning effort; leave `raw` off")));
    }
    if fields.get("logprobs") == Some(&Value::Bool(true)) {
        return Err(unsupported("logprobs", "the room does not carry log probabilities yet"));
    }
    let prompt = optional_str(fields, "prompt")?.unwrap_or_default();
    if prompt.is_empty() {
        return Ok(None);
    }
    let mut completion = Map::new();
    completion.insert("model".into(), json!(model));
    completion.insert("prompt".into(), json!(prompt));
    completion.insert("stream".into(), json!(stream));
    if stream {
        completion.insert("stream_options".into(), json!({"include_usage": true}));
    }
    options(fields.get("options"), &mut completion)?;
    Ok(Some(Generate::Completion(Value::Object(completion))))
}

/// An embeddings body for `/api/embed` (`input`: a string or strings), or `None` when there is
/// nothing to embed.
pub fn embed_request(body: &Value, model: &str) -> Result<Option<Value>, CompatError> {
    let fields = object(body)?;
    let input = match fields.get("input") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => json!(s),
        Some(Value::Array(items)) if items.is_empty() => return Ok(None),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Value::Array(items.clone()),
        Some(_) => return Err(invalid("input", "must be a string or an array of strings")),
    };
    let mut out = json!({"model": model, "input": input, "encoding_format": "float"});
    match fields.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(d) if d.as_u64().is_some_and(|d| d > 0) => out["dimensions"] = d.clone(),
        Some(_) => return Err(invalid("dimensions", "must be a positive integer")),
    }
    Ok(Some(out))
}

/// An embeddings body for the older `/api/embeddings` (`prompt`: one string), or `None` when the
/// prompt is empty (Ollama answers an empty embedding).
pub fn embeddings_request(body: &Value, model: &str) -> Result<Option<Value>, CompatError> {
    let prompt = optional_str(object(body)?, "prompt")?.unwrap_or_default();
    if prompt.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({"model": model, "input": prompt, "encoding_format": "float"})))
}

fn base_body(model: &str, stream: bool, messages: Vec<Value>) -> Map<String, Value> {
    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    chat.insert("messages".into(), Value::Array(messages));
    chat.insert("stream".into(), json!(stream));
    if stream {
        // The final line's token counts come from the usage chunk.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    chat
}

fn optional_str<'a>(fields: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CompatError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

/// Refuses a field that is present with a value (an empty string or array counts as absent: the
/// official clients send `suffix: ""`).
fn refuse_nonempty(fields: &Map<String, Value>, key: &str, why: &str) -> Result<(), CompatError> {
    let set = match fields.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    if set {
        return Err(unsupported(key, why));
    }
    Ok(())
}

/// `format`, `options` and `think`, as OpenAI fields.
fn settings(fields: &Map<String, Value>, chat: &mut Map<String, Value>) -> Result<(), CompatError> {
    if let Some(format) = response_format(fields.get("format"))? {
        chat.insert("response_format".into(), format);
    }
    options(fields.get("options"), chat)?;
    match fields.get("think") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(Value::String(level)) if matches!(level.as_str(), "low" | "medium" | "high") => {
            chat.insert("reasoning_effort".into(), json!(level));
        }
        Some(_) => return Err(invalid("think", "must be true, false, \"low\", \"medium\" or \"high\"")),
    }
    if fields.get("logprobs") == Some(&Value::Bool(true)) {
        return Err(unsupported("logprobs", "the room does not carry log probabilities yet"));
    }
    Ok(())
}

/// `format`: `"json"` is a JSON object answer, an object is the JSON schema the answer follows.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, CompatError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(json!({"type": "json_object"}))),
        Some(Value::Object(schema)) => {
            Ok(Some(json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}})))
        }
        Some(_) => Err(invalid("format", "must be \"json\" or a JSON schema object")),
    }
}

/// Ollama's sampling `options` under their OpenAI names (`num_predict` is `max_tokens`; `top_k`,
/// `min_p`, `typical_p` and `repeat_penalty` keep their names, which llama.cpp, LM Studio and Ollama
/// read). Load-time options belong to the member's server and are not sent.
fn options(options: Option<&Value>, chat: &mut Map<String, Value>) -> Result<(), CompatError> {
    let options = match options {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid("options", "must be an object")),
    };
    let present = |key: &str| options.get(key).filter(|v| !v.is_null());
    for key in ["temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty"]
    {
        if let Some(v) = present(key) {
            if !v.is_number() {
                return Err(invalid(&format!("options.{key}"), "must be a number"));
            }
            chat.insert(key.into(), v.clone());
        }
    }
    for key in ["top_k", "seed"] {
        if let Some(v) = present(key) {
            if !(v.is_i64() || v.is_u64()) {
                return Err(invalid(&format!("options.{key}"), "must be an integer"));
            }
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = present("num_predict") {
        let n = v.as_i64().ok_or_else(|| invalid("options.num_predict", "must be an integer"))?;
        // -1 (until done) and -2 (fill the context) are the server's default: no cap.
        if n > 0 {
            chat.insert("max_tokens".into(), json!(n));
        }
    }
    match present("stop") {
        None => {}
        Some(Value::String(s)) => {
            chat.insert("stop".into(), json!([s]));
        }
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            chat.insert("stop".into(), Value::Array(stops.clone()));
        }
        Some(_) => return Err(invalid("options.stop", "must be a string or an array of strings")),
    }
    Ok(())
}

/// `tools` as chat tools: Ollama's are already in OpenAI's `{type: "function", function}` shape.
fn tools(tools: Option<&Value>) -> Result<Option<Value>, CompatError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(t)) if t.is_empty() => return Ok(None),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools", "must be an array of tools")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let mut tool = tool.as_object().cloned().ok_or_else(|| invalid(&format!("tools[{i}]"), "must be an object"))?;
        if !tool.get("function").is_some_and(Value::is_object) {
            return Err(invalid(&format!("tools[{i}].function"), "must be an object with a name"));
        }
        tool.entry("type").or_insert_with(|| json!("function"));
        out.push(Value::Object(tool));
    }
    Ok(Some(Value::Array(out)))
}

/// Ollama messages as chat messages: images become image parts, tool calls get ids (OpenAI ties
/// each tool result to its call by id; Ollama by the tool's name).
fn chat_messages(messages: &[Value]) -> Result<Vec<Value>, CompatError> {
    let mut out = Vec::with_capacity(messages.len());
    // Calls of earlier assistant messages not yet answered by a tool message: (id, name).
    let mut open_calls: VecDeque<(String, String)> = VecDeque::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let fields = message.as_object().ok_or_else(|| invalid(&format!("messages[{i}]"), "must be an object"))?;
        let role = match fields.get("role") {
            Some(Value::String(r)) if !r.is_empty() => r.to_ascii_lowercase(),
            _ => return Err(invalid(&at("role"), "must be a non-empty string")),
        };
        let text = optional_str(fields, "content").map_err(|_| invalid(&at("content"), "must be a string"))?;
        let pictures = images(fields.get("images"), &at("images"))?;
        let mut chat = Map::new();
        chat.insert("role".into(), json!(role));
        let calls = match fields.get("tool_calls") {
            Some(Value::Array(calls)) if role == "assistant" && !calls.is_empty() => {
                Some(tool_calls_out(calls, i, &mut open_calls)?)
            }
            _ => None,
        };
        let text = text.unwrap_or_default();
        let body = if calls.is_some() && text.is_empty() && pictures.is_empty() {
            Value::Null
        } else {
            content(text, pictures)
        };
        chat.insert("content".into(), body);
        if let Some(calls) = calls {
            chat.insert("tool_calls".into(), Value::Array(calls));
        }
        if role == "tool" {
            let name = optional_str(fields, "tool_name").ok().flatten().or(optional_str(fields, "name").ok().flatten());
            let id = match optional_str(fields, "tool_call_id").ok().flatten() {
                Some(id) if !id.is_empty() => {
                    open_calls.retain(|(open, _)| open != id);
                    id.to_owned()
                }
                _ => {
                    let by_name = name.and_then(|n| open_calls.iter().position(|(_, open)| open == n));
                    match by_name.or(if open_calls.is_empty() { None } else { Some(0) }) {
                        Some(at) => open_calls.remove(at).map(|(id, _)| id).unwrap_or_default(),
                        None => format!("call_{i}"),
                    }
                }
            };
            chat.insert("tool_call_id".into(), json!(id));
        }
        out.push(Value::Object(chat));
    }
    Ok(out)
}

/// An assistant message's Ollama tool calls (`arguments` an object) as chat tool calls
/// (`arguments` a JSON string), each with an id, remembered in `open_calls`.
fn tool_calls_out(
    calls: &[Value],
    message: usize,
    open_calls: &mut VecDeque<(String, String)>,
) -> Result<Vec<Value>, CompatError> {
    let mut out = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let at = format!("messages[{message}].tool_calls[{j}]");
        let function = call.get("function").ok_or_else(|| invalid(&at, "must have a function"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&format!("{at}.function.name"), "must be a string"))?;
        let arguments = match function.get("arguments") {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let id = match call.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("call_{message}_{j}"),
        };
        open_calls.push_back((id.clone(), name.to_owned()));
        out.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
    }
    Ok(out)
}

/// Message content: the text alone, or text and image parts.
fn content(text: &str, images: Vec<String>) -> Value {
    if images.is_empty() {
        return json!(text);
    }
    let mut parts = Vec::with_capacity(images.len() + 1);
    if !text.is_empty() {
        parts.push(json!({"type": "text", "text": text}));
    }
    for url in images {
        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
    }
    Value::Array(parts)
}

/// `images`: base64 strings (Ollama's form) as data URLs, their type read from their first bytes.
fn images(images: Option<&Value>, field: &str) -> Result<Vec<String>, CompatError> {
    let images = match images {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(i)) => i,
        Some(_) => return Err(invalid(field, "must be an array of base64 strings")),
    };
    let mut out = Vec::with_capacity(images.len());
    for (i, image) in images.iter().enumerate() {
        match image.as_str() {
            Some(s) if s.starts_with("data:") => out.push(s.to_owned()),
            Some(s) if !s.is_empty() => out.push(format!("data:{};base64,{s}", image_type(s))),
            _ => return Err(invalid(&format!("{field}[{i}]"), "must be a non-empty base64 string")),
        }
    }
    Ok(out)
}

/// The media type of a base64 image, from the encoding of its magic bytes.
fn image_type(base64: &str) -> &'static str {
    match base64.as_bytes() {
        [b'/', b'9', b'j', ..] => "image/jpeg",
        [b'R', b'0', b'l', b'G', ..] => "image/gif",
        [b'U', b'k', b'l', b'G', ..] => "image/webp",
        _ => "image/png",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Value {
        let model = model_of(&body).expect("a model");
        let stream = stream_of(&body).expect("a stream flag");
        chat_request(&body, &model, stream).expect("translated").expect("something to run")
    }

    #[test]
    fn a_chat_request_becomes_a_chat_completion_streamed_by_default() {
        let out = chat(json!({
            "model": "llama3",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "USER", "content": "hi"}],
            "keep_alive": "5m",
        }));
        assert_eq!(out["model"], "llama3");
        assert_eq!(out["stream"], true, "Ollama streams unless told not to");
        assert_eq!(out["stream_options"], json!({"include_usage": true}), "counts for the last line");
        assert_eq!(
            out["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        );
        assert!(out.get("keep_alive").is_none(), "the OpenAI endpoints have no keep_alive");
        let quiet = chat(json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(quiet["stream"], false);
        assert!(quiet.get("stream_options").is_none());
    }

    #[test]
    fn options_map_to_their_openai_fields() {
        let out = chat(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "options": {
                "temperature": 0.2, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "num_predict": 128,
                "stop": ["\n\n", "END"], "repeat_penalty": 1.1, "presence_penalty": 0.5,
                "frequency_penalty": 0.25, "num_ctx": 8192, "num_gpu": 99,
            },
        }));
        for (key, value) in [
            ("temperature", json!(0.2)),
            ("top_p", json!(0.9)),
            ("top_k", json!(40)),
            ("min_p", json!(0.05)),
            ("seed", json!(7)),
            ("max_tokens", json!(128)),
            ("stop", json!(["\n\n", "END"])),
            ("repeat_penalty", json!(1.1)),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(0.25)),
        ] {
            assert_eq!(out[key], value, "{key}");
        }
        assert!(out.get("num_ctx").is_none() && out.get("num_gpu").is_none(), "load-time options stay home");
        let one = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "options": {"stop": "END", "num_predict": -1}}));
        assert_eq!(one["stop"], json!(["END"]));
        assert!(one.get("max_tokens").is_none(), "-1 is no cap");
    }

    #[test]
    fn format_is_a_response_format() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let with = |format: Value| {
            let mut body = base.clone();
            body["format"] = format;
            body
        };
        assert_eq!(chat(with(json!("json")))["response_format"], json!({"type": "json_object"}));
        let schema = json!({"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]});
        assert_eq!(
            chat(with(schema.clone()))["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}})
        );
        assert!(chat(with(json!(""))).get("response_format").is_none());
        let err = chat_request(&with(json!("yaml")), "m", false).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
    }

    #[test]
    fn images_become_image_parts_with_their_type() {
        let out = chat(json!({"model": "m", "messages": [
            {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo=", "/9j/4AAQ", "data:image/gif;base64,R0lG"]},
        ]}));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
            ])
        );
        let err = chat_request(&json!({"model": "m", "messages": [{"role": "user", "images": [3]}]}), "m", false);
        assert!(err.unwrap_err().to_string().contains("messages[0].images[0]"));
    }

    #[test]
    fn tool_calls_get_ids_and_tool_results_find_their_call_by_name() {
        let tool = json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}});
        let out = chat(json!({"model": "m", "tools": [tool], "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_time", "arguments": {}}},
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            ]},
            {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
            {"role": "tool", "content": "noon"},
        ]}));
        assert_eq!(out["tools"][0]["function"]["name"], "get_weather");
        let assistant = &out["messages"][1];
        assert_eq!(assistant["content"], Value::Null, "a message of calls alone has no content");
        assert_eq!(
            assistant["tool_calls"],
            json!([
                {"id": "call_1_0", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                {"id": "call_1_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            ])
        );
        assert_eq!(out["messages"][2], json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1_1"}));
        assert_eq!(out["messages"][3]["tool_call_id"], "call_1_0", "an unnamed result takes the next open call");
        let bad =
            json!({"model": "m", "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]});
        assert!(chat_request(&bad, "m", true).unwrap_err().to_string().contains("tools[0].function"));
    }

    #[test]
    fn a_generate_request_is_a_chat_with_the_prompt_as_the_user_message() {
        let body = json!({"model": "m", "prompt": "Why is the sky blue?", "system": "Be brief.", "suffix": "",
            "images": [], "options": {"temperature": 0}, "format": "json", "stream": false, "raw": false});
        let Some(Generate::Chat(out)) = generate_request(&body, "m", false).expect("translated") else {
            panic!("a chat completion")
        };
        assert_eq!(
            out["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}])
        );
        assert_eq!(out["temperature"], 0);
        assert_eq!(out["response_format"], json!({"type": "json_object"}));
        assert_eq!(generate_request(&json!({"model": "m"}), "m", true), Ok(None), "no prompt: a load request");
        for (field, value) in
            [("suffix", json!("return x")), ("template", json!("{{ .Prompt }}")), ("context", json!([1, 2, 3]))]
        {
            let mut body = json!({"model": "m", "prompt": "def f():"});
            body[field] = value;
            let err = generate_request(&body, "m", true).unwrap_err();
            assert!(matches!(&err, CompatError::Unsupported { field: f, .. } if f == field), "{err}");
        }
        let err = generate_request(&json!({"model": "m", "prompt": "x", "raw": "yes"}), "m", true).unwrap_err();
        assert!(err.to_string().contains("raw"), "{err}");
    }

    #[test]
    fn a_raw_generate_request_is_a_legacy_completion_of_the_prompt_as_it_is() {
        let prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
        let body = json!({"model": "m", "prompt": prompt, "raw": true, "system": "", "images": [],
            "options": {"temperature": 0.3, "num_predict": 16, "stop": "<|im_end|>", "num_ctx": 4096}});
        let Some(Generate::Completion(out)) = generate_request(&body, "m", true).expect("translated") else {
            panic!("a legacy completion")
        };
        assert_eq!(
            out,
            json!({"model": "m", "prompt": prompt, "stream": true, "stream_options": {"include_usage": true},
                "temperature": 0.3, "max_tokens": 16, "stop": ["<|im_end|>"]})
        );
        let quiet = json!({"model": "m", "prompt": "x", "raw": true, "stream": false});
        let Some(Generate::Completion(out)) = generate_request(&quiet, "m", false).unwrap() else { panic!() };
        assert!(out.get("stream_options").is_none() && out.get("messages").is_none(), "{out}");
        assert_eq!(generate_request(&json!({"model": "m", "raw": true}), "m", true), Ok(None), "a load request");
        for (field, value) in [
            ("system", json!("Be brief.")),
            ("images", json!(["iVBORw0KGgo="])),
            ("format", json!("json")),
            ("template", json!("{{ .Prompt }}")),
            ("think", json!("high")),
            ("suffix", json!("return x")),
        ] {
            let mut body = json!({"model": "m", "prompt": "def f():", "raw": true});
            body[field] = value;
            let err = generate_request(&body, "m", true).unwrap_err();
            assert!(matches!(&err, CompatError::Unsupported { field: f, .. } if f == field), "{field}: {err}");
        }
    }

    #[test]
    fn empty_chats_and_bad_shapes() {
        assert_eq!(chat_request(&json!({"model": "m", "messages": []}), "m", true), Ok(None));
        assert_eq!(chat_request(&json!({"model": "m"}), "m", true), Ok(None));
        for (body, field) in [
            (json!({"model": "m", "messages": "hi"}), "messages"),
            (json!({"model": "m", "messages": [{"content": "x"}]}), "messages[0].role"),
            (json!({"model": "m", "messages": [{"role": "user", "content": 3}]}), "messages[0].content"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "options": []}), "options"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}}),
                "options.temperature",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"top_k": 1.5}}),
                "options.top_k",
            ),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "think": 3}), "think"),
        ] {
            let err = chat_request(&body, "m", true).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        assert_eq!(
            stream_of(&json!({"stream": "yes"})).unwrap_err().to_string(),
            "invalid stream: must be true or false"
        );
    }

    #[test]
    fn the_model_is_model_or_the_older_name() {
        assert_eq!(model_of(&json!({"model": " llama3 "})), Ok("llama3".into()));
        assert_eq!(model_of(&json!({"name": "llama3"})), Ok("llama3".into()));
        assert!(model_of(&json!({"model": ""})).is_err());
        assert!(model_of(&json!({"model": 3})).is_err());
        assert!(model_of(&json!([])).is_err());
    }

    #[test]
    fn keep_alive_zero_unloads() {
        for unload in [json!(0), json!(0.0), json!("0"), json!("0s"), json!("0m")] {
            assert!(unloads(&json!({"keep_alive": unload})), "{unload}");
        }
        for keep in [json!(300), json!("5m"), json!(-1), json!(null)] {
            assert!(!unloads(&json!({"keep_alive": keep})), "{keep}");
        }
        assert!(!unloads(&json!({})));
    }

    #[test]
    fn embed_inputs_become_embeddings_requests() {
        let one = embed_request(&json!({"model": "e", "input": "hi", "truncate": true}), "e").unwrap().unwrap();
        assert_eq!(one, json!({"model": "e", "input": "hi", "encoding_format": "float"}));
        let many = embed_request(&json!({"model": "e", "input": ["a", "b"], "dimensions": 8}), "e").unwrap().unwrap();
        assert_eq!(many["input"], json!(["a", "b"]));
        assert_eq!(many["dimensions"], 8);
        assert_eq!(embed_request(&json!({"model": "e", "input": []}), "e"), Ok(None));
        assert!(embed_request(&json!({"model": "e", "input": [1]}), "e").is_err());
        assert!(embed_request(&json!({"model": "e", "input": "x", "dimensions": -1}), "e").is_err());
        let legacy = embeddings_request(&json!({"model": "e", "prompt": "hi"}), "e").unwrap().unwrap();
        assert_eq!(legacy["input"], "hi");
        assert_eq!(embeddings_request(&json!({"model": "e", "prompt": ""}), "e"), Ok(None));
        assert!(embeddings_request(&json!({"model": "e", "prompt": ["x"]}), "e").is_err());
    }
}
