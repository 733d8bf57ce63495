//! Whole OpenAI answers as Ollama answers: a chat completion as the `done: true` object of
//! `/api/chat` or `/api/generate`, embeddings as `/api/embed`'s and `/api/embeddings`' answers.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{nanos, ollama_name, rfc3339, Clock, Kind};

/// The model an answer names, in Ollama's form, else the one asked for.
fn answer_model(answer: &Value, asked: &str) -> String {
    match answer.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => ollama_name(m),
        _ => asked.to_owned(),
    }
}

/// Ollama's `done_reason` for an OpenAI `finish_reason`.
pub(super) fn done_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "length",
        _ => "stop",
    }
}

/// Token counts and timings of a finished answer. The provider's own timings (llama.cpp's
/// `timings`, in ms) win over the hub's clock; counts come from `usage` when it is there.
pub(super) fn metrics(out: &mut Map<String, Value>, clock: &Clock, usage: Option<&Value>, timings: Option<&Value>) {
    let ms = |key: &str| timings.and_then(|t| t.get(key)).and_then(Value::as_f64).filter(|v| *v >= 0.0);
    let from_ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    let prompt = ms("prompt_ms").map(from_ms).or(clock.first_token).unwrap_or_default();
    let eval = ms("predicted_ms")
        .map(from_ms)
        .unwrap_or_else(|| clock.total.saturating_sub(clock.first_token.unwrap_or_default()));
    out.insert("total_duration".into(), json!(nanos(clock.total)));
    out.insert("load_duration".into(), json!(0));
    let count = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
    if let Some(n) = count("prompt_tokens") {
        out.insert("prompt_eval_count".into(), json!(n));
    }
    out.insert("prompt_eval_duration".into(), json!(nanos(prompt)));
    if let Some(n) = count("completion_tokens") {
        out.insert("eval_count".into(), json!(n));
    }
    out.insert("eval_duration".into(), json!(nanos(eval)));
}

/// Ollama tool calls (`arguments` an object) from chat tool calls (`arguments` JSON text).
/// Arguments that are not a JSON object (a model's broken output) are kept as `{"value": ...}`
/// rather than dropped.
fn tool_calls_in(calls: &[(String, String, String)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (id, name, arguments))| {
            let arguments = match serde_json::from_str::<Value>(arguments) {
                Ok(Value::Object(o)) => Value::Object(o),
                _ if arguments.trim().is_empty() => json!({}),
                Ok(other) => json!({"value": other}),
                Err(_) => json!({"value": arguments}),
            };
            let mut call = json!({"function": {"index": i, "name": name, "arguments": arguments}});
            if !id.is_empty() {
                call["id"] = json!(id);
            }
            call
        })
        .collect();
    Value::Array(calls)
}

pub(super) fn assistant_message(text: &str, thinking: &str, calls: &[(String, String, String)]) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    if !thinking.is_empty() {
        message["thinking"] = json!(thinking);
    }
    if !calls.is_empty() {
        message["tool_calls"] = tool_calls_in(calls);
    }
    message
}

/// The thinking text of a chat message or delta, under the names providers use.
pub(super) fn reasoning(of: &Value) -> &str {
    of.get("reasoning_content").or_else(|| of.get("reasoning")).and_then(Value::as_str).unwrap_or_default()
}

/// The whole Ollama answer (`done: true`) for a chat completion, or for a legacy completion (its
/// choice's `text`, from a raw `/api/generate`). `Err` says why the completion is not one (a 502
/// for the client).
pub fn chat_answer(completion: &Value, kind: Kind, asked: &str, clock: &Clock) -> Result<Value, String> {
    let choice = completion
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or("the model server's answer has no choices")?;
    let legacy;
    let message = match (choice.get("message"), choice.get("text")) {
        (Some(message), _) => message,
        (None, Some(Value::String(text))) => {
            legacy = json!({"role": "assistant", "content": text});
            &legacy
        }
        (None, _) => return Err("the model server's answer has no message".into()),
    };
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    let calls: Vec<(String, String, String)> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let f = c.get("function");
                    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
                    let arguments = match f.and_then(|f| f.get("arguments")) {
                        Some(Value::String(a)) => a.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    (s(c.get("id")), s(f.and_then(|f| f.get("name"))), arguments)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert("model".into(), json!(answer_model(completion, asked)));
    out.insert("created_at".into(), json!(rfc3339(SystemTime::now())));
    match kind {
        Kind::Chat => {
            out.insert("message".into(), assistant_message(&text, reasoning(message), &calls));
        }
        Kind::Generate => {
            out.insert("response".into(), json!(text));
            let thinking = reasoning(message);
            if !thinking.is_empty() {
                out.insert("thinking".into(), json!(thinking));
            }
        }
    }
    out.insert("done".into(), json!(true));
    out.insert("done_reason".into(), json!(done_reason(choice.get("finish_reason").and_then(Value::as_str))));
    metrics(&mut out, clock, completion.get("usage"), completion.get("timings"));
    Ok(Value::Object(out))
}

/// The answer to a request with nothing to generate: Ollama's "the model is loaded".
pub fn loaded_answer(kind: Kind, model: &str) -> Value {
    let mut out = json!({"model": model, "created_at": rfc3339(SystemTime::now())});
    match kind {
        Kind::Chat => out["message"] = json!({"role": "assistant", "content": ""}),
        Kind::Generate => out["response"] = json!(""),
    }
    out["done"] = json!(true);
    out["done_reason"] = json!("load");
    out
}

/// An OpenAI embeddings answer, read without a tree of its numbers: each vector stays the text it
/// came as.
#[derive(Deserialize)]
struct Embeddings<'a> {
    #[serde(borrow)]
    data: Vec<Embedding<'a>>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct Embedding<'a> {
    #[serde(borrow)]
    embedding: &'a RawValue,
    #[serde(default)]
    index: usize,
}

fn read_embeddings(answer: &[u8]) -> Result<Embeddings<'_>, String> {
    let mut read: Embeddings<'_> =
        serde_json::from_slice(answer).map_err(|e| format!("the model server's embeddings answer is not one: {e}"))?;
    if read.data.iter().any(|e| !e.embedding.get().starts_with('[')) {
        return Err("the model server's embeddings are not arrays of numbers".into());
    }
    read.data.sort_by_key(|e| e.index);
    Ok(read)
}

/// `/api/embed`'s answer for an OpenAI embeddings answer, as JSON text.
pub fn embed_answer(answer: &[u8], asked: &str, clock: &Clock) -> Result<String, String> {
    let read = read_embeddings(answer)?;
    let model = read.model.as_deref().filter(|m| !m.is_empty()).map_or_else(|| asked.to_owned(), ollama_name);
    let mut out = String::with_capacity(answer.len() + 128);
    out.push_str("{\"model\":");
    out.push_str(&json!(model).to_string());
    out.push_str(",\"embeddings\":[");
    for (i, e) in read.data.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.embedding.get());
    }
    out.push(']');
    let mut tail = Map::new();
    tail.insert("total_duration".into(), json!(nanos(clock.total)));
    tail.insert("load_duration".into(), json!(0));
    if let Some(n) = read.usage.as_ref().and_then(|u| u.get("prompt_tokens")).and_then(Value::as_u64) {
        tail.insert("prompt_eval_count".into(), json!(n));
    }
    for (k, v) in tail {
        out.push(',');
        out.push_str(&json!(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    Ok(out)
}

/// `/api/embeddings`' answer (`{"embedding": [...]}`) for an OpenAI embeddings answer.
pub fn embeddings_answer(answer: &[u8]) -> Result<String, String> {
    let read = read_embeddings(answer)?;
    let first = read.data.first().ok_or("the model server answered no embedding")?;
    Ok(format!("{{\"embedding\":{}}}", first.embedding.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(total_ms: u64) -> Clock {
        Clock { total: Duration::from_millis(total_ms), first_token: None }
    }

    fn completion(message: Value, finish: &str) -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "llama3",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        })
    }

    #[test]
    fn a_chat_completion_is_the_done_answer_with_counts_in_nanoseconds() {
        let chat = completion(json!({"role": "assistant", "content": "Hello!"}), "length");
        let out = chat_answer(&chat, Kind::Chat, "llama3:latest", &clock(250)).unwrap();
        assert_eq!(out["model"], "llama3:latest", "the model in Ollama's form");
        assert_eq!(out["message"], json!({"role": "assistant", "content": "Hello!"}));
        assert_eq!(out["done"], true);
        assert_eq!(out["done_reason"], "length");
        assert_eq!(out["prompt_eval_count"], 12);
        assert_eq!(out["eval_count"], 5);
        assert_eq!(out["total_duration"], 250_000_000);
        assert_eq!(out["load_duration"], 0);
        assert_eq!(out["eval_duration"], 250_000_000, "no first token seen: all of it");
        let at = out["created_at"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
        let generated = chat_answer(&chat, Kind::Generate, "x", &clock(1)).unwrap();
        assert_eq!(generated["response"], "Hello!");
        assert!(generated.get("message").is_none());
    }

    #[test]
    fn tool_calls_come_back_with_object_arguments() {
        let chat = completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_10", "type": "function", "function": {"name": "broken", "arguments": "{not json"}},
            ]}),
            "tool_calls",
        );
        let out = chat_answer(&chat, Kind::Chat, "m", &clock(1)).unwrap();
        assert_eq!(out["done_reason"], "stop", "Ollama ends a tool call with stop");
        assert_eq!(out["message"]["content"], "");
        assert_eq!(
            out["message"]["tool_calls"],
            json!([
                {"id": "call_9", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
                {"id": "call_10", "function": {"index": 1, "name": "broken", "arguments": {"value": "{not json"}}},
            ])
        );
    }

    #[test]
    fn the_providers_own_timings_and_reasoning_are_used() {
        let mut chat = completion(json!({"role": "assistant", "content": "4", "reasoning_content": "2+2"}), "stop");
        chat["timings"] = json!({"prompt_ms": 12.5, "predicted_ms": 40.0});
        let out = chat_answer(&chat, Kind::Chat, "m", &Clock { total: Duration::from_millis(90), first_token: None })
            .unwrap();
        assert_eq!(out["prompt_eval_duration"], 12_500_000);
        assert_eq!(out["eval_duration"], 40_000_000);
        assert_eq!(out["total_duration"], 90_000_000);
        assert_eq!(out["message"]["thinking"], "2+2");
    }

    #[test]
    fn a_legacy_completion_is_a_generate_answer() {
        let completion = json!({
            "id": "cmpl-1", "object": "text_completion", "model": "llama3",
            "choices": [{"index": 0, "text": " blue.", "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        });
        let out = chat_answer(&completion, Kind::Generate, "llama3", &clock(20)).unwrap();
        assert_eq!(out["response"], " blue.");
        assert_eq!((out["done"].clone(), out["done_reason"].clone()), (json!(true), json!("length")));
        assert_eq!((out["prompt_eval_count"].clone(), out["eval_count"].clone()), (json!(7), json!(2)));
        assert!(chat_answer(&json!({"choices": [{"text": 3}]}), Kind::Generate, "m", &clock(1)).is_err());
    }

    #[test]
    fn an_answer_without_choices_is_refused() {
        assert!(chat_answer(&json!({"object": "chat.completion"}), Kind::Chat, "m", &clock(1)).is_err());
        assert!(chat_answer(&json!({"choices": [{}]}), Kind::Chat, "m", &clock(1)).is_err());
    }

    #[test]
    fn embeddings_keep_their_numbers_as_sent_and_in_order() {
        let answer = br#"{"object":"list","model":"nomic-embed-text","data":[
            {"object":"embedding","index":1,"embedding":[0.5,-1.25e-3]},
            {"object":"embedding","index":0,"embedding":[0.1000,2]}],
            "usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let out = embed_answer(answer, "asked", &clock(3)).unwrap();
        assert!(out.contains(r#""embeddings":[[0.1000,2],[0.5,-1.25e-3]]"#), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["model"], "nomic-embed-text:latest");
        assert_eq!(v["prompt_eval_count"], 4);
        assert_eq!(v["total_duration"], 3_000_000);
        assert_eq!(embeddings_answer(answer).unwrap(), r#"{"embedding":[0.1000,2]}"#);
        assert!(embed_answer(br#"{"data":[{"embedding":"AAAA","index":0}]}"#, "m", &clock(1)).is_err());
        assert!(embed_answer(b"[]", "m", &clock(1)).is_err());
        assert!(embeddings_answer(br#"{"data":[]}"#).is_err());
    }

    #[test]
    fn a_load_answer_is_done_with_nothing_said() {
        let chat = loaded_answer(Kind::Chat, "llama3:latest");
        assert_eq!(chat["done_reason"], "load");
        assert_eq!(chat["message"]["content"], "");
        assert_eq!(loaded_answer(Kind::Generate, "m")["response"], "");
    }
}
