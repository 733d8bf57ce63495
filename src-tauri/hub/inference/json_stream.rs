//! A provider that answers a `stream: true` request with one JSON document (content type
//! `application/json`, not SSE) still owes the client a stream. These pure functions write the
//! stream that document stands for, in the shape of the endpoint it came from: a chat completion as
//! `chat.completion.chunk`s and `[DONE]`, a legacy completion as `text_completion` chunks and
//! `[DONE]`, a Responses object as its `response.*` events, a Messages answer as Anthropic's
//! events ([`super::messages_compat::message_events`]). The relay then reads that stream as if
//! the provider had sent it, so translation, usage and metrics work the same way.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use crate::protocol::Endpoint;

use super::messages_compat;
use super::sse_parse;

/// The stream `answer` stands for, as SSE bytes, for an answer of `endpoint`'s shape; `None` when
/// the endpoint does not stream (embeddings).
pub fn replay(endpoint: Endpoint, answer: &Value) -> Option<Bytes> {
    let frames = match endpoint {
        Endpoint::ChatCompletions => with_done(chat_chunks(answer)),
        Endpoint::Completions => with_done(completion_chunks(answer)),
        Endpoint::Responses => response_events(answer),
        Endpoint::Messages => messages_compat::message_events(answer).iter().map(|e| e.to_sse()).collect(),
        Endpoint::Embeddings | Endpoint::Ollama => return None,
    };
    let mut out = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for frame in frames {
        out.extend_from_slice(&frame);
    }
    Some(out.freeze())
}

fn with_done(chunks: Vec<Value>) -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = chunks.iter().map(|c| sse_parse::encode(None, &c.to_string())).collect();
    frames.push(sse_parse::encode(None, "[DONE]"));
    frames
}

/// The fields every chunk repeats (`id`, `created`, `model`, `system_fingerprint`), with `object`.
fn chunk_head(answer: &Value, object: &str) -> serde_json::Map<String, Value> {
    let mut head = serde_json::Map::new();
    for key in ["id", "created", "model", "system_fingerprint"] {
        if let Some(v) = answer.get(key) {
            head.insert(key.into(), v.clone());
        }
    }
    head.insert("object".into(), json!(object));
    head
}

fn chunk(head: &serde_json::Map<String, Value>, choices: Value) -> Value {
    let mut chunk = head.clone();
    chunk.insert("choices".into(), choices);
    Value::Object(chunk)
}

fn usage_chunk(head: &serde_json::Map<String, Value>, answer: &Value) -> Option<Value> {
    let usage = answer.get("usage").filter(|u| u.is_object())?;
    let mut chunk = chunk(head, json!([]));
    if let Some(o) = chunk.as_object_mut() {
        o.insert("usage".into(), usage.clone());
    }
    Some(chunk)
}

fn choices(answer: &Value) -> impl Iterator<Item = (usize, &Value)> {
    answer.get("choices").and_then(Value::as_array).into_iter().flatten().enumerate()
}

/// A chat completion as chunks: per choice its role, its text, each tool call whole, then its
/// finish reason; then the usage chunk.
pub fn chat_chunks(completion: &Value) -> Vec<Value> {
    let head = chunk_head(completion, "chat.completion.chunk");
    let mut out = Vec::new();
    for (position, choice) in choices(completion) {
        let index = choice.get("index").cloned().unwrap_or_else(|| json!(position));
        let message = choice.get("message").cloned().unwrap_or_else(|| json!({}));
        let one = |delta: Value, finish: Value| {
            chunk(&head, json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]))
        };
        let role = message.get("role").cloned().unwrap_or_else(|| json!("assistant"));
        out.push(one(json!({"role": role, "content": ""}), Value::Null));
        for key in ["reasoning_content", "content", "refusal"] {
            if let Some(text) = message.get(key).filter(|t| t.as_str().is_some_and(|s| !s.is_empty())) {
                out.push(one(json!({ key: text }), Value::Null));
            }
        }
        let calls = message.get("tool_calls").and_then(Value::as_array);
        for (i, call) in calls.into_iter().flatten().enumerate() {
            let mut call = call.clone();
            if let Some(o) = call.as_object_mut() {
                o.insert("index".into(), json!(i));
            }
            out.push(one(json!({"tool_calls": [call]}), Value::Null));
        }
        let finish = choice.get("finish_reason").cloned().unwrap_or_else(|| json!("stop"));
        out.push(one(json!({}), finish));
    }
    out.extend(usage_chunk(&head, completion));
    out
}

/// A legacy completion as chunks: per choice its text and finish reason in one chunk; then usage.
pub fn completion_chunks(completion: &Value) -> Vec<Value> {
    let head = chunk_head(completion, "text_completion");
    let mut out = Vec::new();
    for (position, choice) in choices(completion) {
        out.push(chunk(
            &head,
            json!([{
                "index": choice.get("index").cloned().unwrap_or_else(|| json!(position)),
                "text": choice.get("text").cloned().unwrap_or_else(|| json!("")),
                "logprobs": choice.get("logprobs").cloned().unwrap_or(Value::Null),
                "finish_reason": choice.get("finish_reason").cloned().unwrap_or_else(|| json!("stop")),
            }]),
        ));
    }
    out.extend(usage_chunk(&head, completion));
    out
}

/// Numbers the events of a Responses stream as it writes them.
struct Events {
    frames: Vec<Bytes>,
    sequence: u64,
}

impl Events {
    fn emit(&mut self, event_type: &str, mut data: Value) {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(event_type));
            o.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        self.frames.push(sse_parse::encode(Some(event_type), &data.to_string()));
    }
}

/// An item as `output_item.added` shows it: in progress, with no content or arguments yet.
fn opened_item(item: &Value) -> Value {
    let mut opened = item.clone();
    if let Some(o) = opened.as_object_mut() {
        o.insert("status".into(), json!("in_progress"));
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                o.insert("content".into(), json!([]));
            }
            Some("function_call") => {
                o.insert("arguments".into(), json!(""));
            }
            _ => {}
        }
    }
    opened
}

/// A Responses object as its stream: `response.created` and `response.in_progress`, each output
/// item opened, filled (text deltas, argument deltas) and closed, then the terminal event
/// (`response.completed`, `.incomplete` or `.failed`, as its `status` says) with the object.
pub fn response_events(response: &Value) -> Vec<Bytes> {
    let mut events = Events { frames: Vec::new(), sequence: 0 };
    let mut opening = response.clone();
    if let Some(o) = opening.as_object_mut() {
        o.insert("status".into(), json!("in_progress"));
        o.insert("output".into(), json!([]));
        o.insert("usage".into(), Value::Null);
    }
    events.emit("response.created", json!({"response": opening}));
    events.emit("response.in_progress", json!({"response": opening}));
    let items = response.get("output").and_then(Value::as_array);
    for (output_index, item) in items.into_iter().flatten().enumerate() {
        let id = item.get("id").cloned().unwrap_or(Value::Null);
        events.emit("response.output_item.added", json!({"output_index": output_index, "item": opened_item(item)}));
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let parts = item.get("content").and_then(Value::as_array);
                for (content_index, part) in parts.into_iter().flatten().enumerate() {
                    let at = json!({"item_id": id, "output_index": output_index, "content_index": content_index});
                    let with = |extra: Value| {
                        let mut data = at.clone();
                        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
                            d.extend(e.clone());
                        }
                        data
                    };
                    let text = part.get("text").cloned().unwrap_or_else(|| json!(""));
                    let mut empty = part.clone();
                    if let Some(o) = empty.as_object_mut() {
                        if o.contains_key("text") {
                            o.insert("text".into(), json!(""));
                        }
                    }
                    events.emit("response.content_part.added", with(json!({"part": empty})));
                    if part.get("type").and_then(Value::as_str) == Some("output_text") {
                        events.emit("response.output_text.delta", with(json!({"delta": text, "logprobs": []})));
                        events.emit("response.output_text.done", with(json!({"text": text, "logprobs": []})));
                    }
                    events.emit("response.content_part.done", with(json!({"part": part})));
                }
            }
            Some("function_call") => {
                let arguments = item.get("arguments").cloned().unwrap_or_else(|| json!(""));
                let at = json!({"item_id": id, "output_index": output_index});
                let mut delta = at.clone();
                let mut done = at;
                if let (Some(d), Some(n)) = (delta.as_object_mut(), done.as_object_mut()) {
                    d.insert("delta".into(), arguments.clone());
                    n.insert("arguments".into(), arguments);
                    if let Some(name) = item.get("name") {
                        n.insert("name".into(), name.clone());
                    }
                }
                events.emit("response.function_call_arguments.delta", delta);
                events.emit("response.function_call_arguments.done", done);
            }
            _ => {}
        }
        events.emit("response.output_item.done", json!({"output_index": output_index, "item": item}));
    }
    let terminal = match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    events.emit(terminal, json!({"response": response}));
    events.frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::inference::sse_parse::SseParser;

    fn frames(bytes: &Bytes) -> Vec<(Option<String>, String)> {
        let mut parser = SseParser::new();
        let mut out: Vec<_> = parser.push(bytes).into_iter().map(|f| (f.event, f.data)).collect();
        out.extend(parser.finish().into_iter().map(|f| (f.event, f.data)));
        out
    }

    fn data(frames: &[(Option<String>, String)]) -> Vec<Value> {
        frames.iter().filter(|(_, d)| d != "[DONE]").map(|(_, d)| serde_json::from_str(d).unwrap()).collect()
    }

    #[test]
    fn a_chat_completion_replays_as_chunks_then_done() {
        let completion = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "llama3",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Hi there",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            }}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        });
        let bytes = replay(Endpoint::ChatCompletions, &completion).unwrap();
        let frames = frames(&bytes);
        assert_eq!(frames.last().unwrap().1, "[DONE]");
        let chunks = data(&frames);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "chatcmpl-1"));
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Hi there");
        let call = chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"][0].as_object().cloned()).unwrap();
        assert_eq!(call["index"], 0);
        assert_eq!(call["function"]["name"], "f");
        let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str()).unwrap();
        assert_eq!(finish, "tool_calls");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 5);
    }

    #[test]
    fn a_legacy_completion_replays_as_text_completion_chunks() {
        let completion = json!({
            "id": "cmpl-1", "object": "text_completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "text": "once upon", "finish_reason": "length", "logprobs": null}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        });
        let frames = frames(&replay(Endpoint::Completions, &completion).unwrap());
        let chunks = data(&frames);
        assert_eq!(chunks[0]["object"], "text_completion");
        assert_eq!(chunks[0]["choices"][0]["text"], "once upon");
        assert_eq!(chunks[0]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks[1]["usage"]["total_tokens"], 3);
        assert_eq!(frames.last().unwrap().1, "[DONE]");
        assert!(replay(Endpoint::Embeddings, &completion).is_none());
    }

    #[test]
    fn a_responses_object_replays_as_its_events() {
        let response = json!({
            "id": "resp_1", "object": "response", "status": "completed", "model": "m",
            "output": [
                {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
                {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}", "status": "completed"},
            ],
            "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        });
        let frames = frames(&replay(Endpoint::Responses, &response).unwrap());
        let names: Vec<&str> = frames.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let events = data(&frames);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i, "{e}");
            assert_eq!(e["type"], names[i]);
        }
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert_eq!(events[0]["response"]["output"], json!([]));
        assert_eq!(events[2]["item"]["content"], json!([]));
        assert_eq!(events[3]["part"]["text"], "");
        assert_eq!(events[4]["delta"], "Hello");
        assert_eq!(events[8]["item"]["arguments"], "");
        assert_eq!(events[9]["delta"], "{\"a\":1}");
        assert_eq!(events[12]["response"], response);
        let incomplete = json!({"id": "resp_2", "status": "incomplete", "output": []});
        let frames = super::response_events(&incomplete);
        assert!(String::from_utf8_lossy(frames.last().unwrap()).starts_with("event: response.incomplete"));
    }

    #[test]
    fn a_messages_answer_replays_as_anthropic_events() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}});
        let frames = frames(&replay(Endpoint::Messages, &message).unwrap());
        assert_eq!(frames.first().unwrap().0.as_deref(), Some("message_start"));
        assert_eq!(frames.last().unwrap().0.as_deref(), Some("message_stop"));
    }
}
