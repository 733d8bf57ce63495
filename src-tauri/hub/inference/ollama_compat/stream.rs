//! A streamed chat completion (or legacy completion) as Ollama's NDJSON lines, translated chunk by
//! chunk.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::answer::{assistant_message, done_reason, metrics, reasoning};
use super::{ollama_name, rfc3339, Clock, Kind};

/// One tool call being streamed, put together from its deltas.
#[derive(Debug, Default, Clone)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns the chat (or legacy completion) chunks of a streamed answer into Ollama's NDJSON lines, one line per chunk that
/// carries text, as they come: tool calls go out whole once their arguments are complete, and the
/// last line (`done: true`) carries the reason and the counts.
#[derive(Debug)]
pub struct NdjsonTranslator {
    kind: Kind,
    model: String,
    calls: Vec<PartialCall>,
    calls_sent: bool,
    finish_reason: Option<String>,
    usage: Option<Value>,
    timings: Option<Value>,
    first_token: Option<Duration>,
    finished: bool,
}

impl NdjsonTranslator {
    /// `model` is the name asked for, until a chunk names the one that answers.
    pub fn new(kind: Kind, model: &str) -> Self {
        NdjsonTranslator {
            kind,
            model: model.to_owned(),
            calls: Vec::new(),
            calls_sent: false,
            finish_reason: None,
            usage: None,
            timings: None,
            first_token: None,
            finished: false,
        }
    }

    /// The last line (or an error line) went out: later chunks are ignored.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// When the first token arrived, counted from the request's arrival.
    pub fn first_token(&self) -> Option<Duration> {
        self.first_token
    }

    fn line(&self, text: &str, thinking: &str, calls: &[(String, String, String)]) -> Value {
        let mut out = json!({"model": self.model, "created_at": rfc3339(SystemTime::now())});
        match self.kind {
            Kind::Chat => out["message"] = assistant_message(text, thinking, calls),
            Kind::Generate => {
                out["response"] = json!(text);
                if !thinking.is_empty() {
                    out["thinking"] = json!(thinking);
                }
            }
        }
        out["done"] = json!(false);
        out
    }

    /// The lines for one chat chunk; `elapsed` is the time since the request arrived.
    pub fn push(&mut self, chunk: &Value, elapsed: Duration) -> Vec<Value> {
        if self.finished {
            return Vec::new();
        }
        if let Some(m) = chunk.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            self.model = ollama_name(m);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        if let Some(t) = chunk.get("timings").filter(|t| t.is_object()) {
            self.timings = Some(t.clone());
        }
        let mut lines = Vec::new();
        let Some(choice) = chunk.get("choices").and_then(Value::as_array).and_then(|c| c.first()) else {
            return lines;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        // A legacy completion's chunk (a raw `/api/generate`) carries its piece as `text`.
        let text = delta.get("content").or_else(|| choice.get("text")).and_then(Value::as_str).unwrap_or_default();
        let thinking = reasoning(delta);
        if !text.is_empty() || !thinking.is_empty() {
            self.first_token.get_or_insert(elapsed);
            lines.push(self.line(text, thinking, &[]));
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            self.first_token.get_or_insert(elapsed);
            let index = call.get("index").and_then(Value::as_u64).map_or(self.calls.len(), |i| i as usize);
            // Indexes come from the provider: a gap is filled, never allocated past what arrived.
            let index = index.min(self.calls.len());
            if index == self.calls.len() {
                self.calls.push(PartialCall::default());
            }
            let partial = &mut self.calls[index];
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                partial.id = id.to_owned();
            }
            let function = call.get("function");
            if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
                partial.name.push_str(name);
            }
            if let Some(arguments) = function.and_then(|f| f.get("arguments")).and_then(Value::as_str) {
                partial.arguments.push_str(arguments);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
            lines.extend(self.calls_line());
        }
        lines
    }

    /// The tool calls, whole, once (chat only: a generate request has no tools).
    fn calls_line(&mut self) -> Option<Value> {
        if self.calls_sent || self.calls.is_empty() || self.kind != Kind::Chat {
            return None;
        }
        self.calls_sent = true;
        let calls: Vec<_> = self.calls.iter().map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone())).collect();
        Some(self.line("", "", &calls))
    }

    /// The last lines: tool calls not sent yet, then `done: true` with the reason and the counts.
    /// `total` is the time since the request arrived.
    pub fn finish(&mut self, total: Duration) -> Vec<Value> {
        if self.finished {
            return Vec::new();
        }
        let mut lines: Vec<Value> = self.calls_line().into_iter().collect();
        self.finished = true;
        let mut out = Map::new();
        out.insert("model".into(), json!(self.model));
        out.insert("created_at".into(), json!(rfc3339(SystemTime::now())));
        match self.kind {
            Kind::Chat => {
                out.insert("message".into(), json!({"role": "assistant", "content": ""}));
            }
            Kind::Generate => {
                out.insert("response".into(), json!(""));
            }
        }
        out.insert("done".into(), json!(true));
        out.insert("done_reason".into(), json!(done_reason(self.finish_reason.as_deref())));
        let clock = Clock { total, first_token: self.first_token };
        metrics(&mut out, &clock, self.usage.as_ref(), self.timings.as_ref());
        lines.push(Value::Object(out));
        lines
    }

    /// The line that ends a failed stream, as Ollama's clients read errors: `{"error": "..."}`.
    pub fn fail(&mut self, message: &str) -> Value {
        self.finished = true;
        json!({"error": message})
    }
}

/// Lines as NDJSON text, each ending in a newline.
pub fn ndjson(lines: &[Value]) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "llama3",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn each_chunk_with_text_is_one_line_and_the_last_line_has_the_counts() {
        let mut t = NdjsonTranslator::new(Kind::Chat, "llama3");
        assert!(t.push(&chunk(json!({"role": "assistant", "content": ""}), Value::Null), at(5)).is_empty());
        let first = t.push(&chunk(json!({"content": "Hel"}), Value::Null), at(100));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["message"], json!({"role": "assistant", "content": "Hel"}));
        assert_eq!(first[0]["done"], false);
        assert_eq!(first[0]["model"], "llama3:latest");
        assert_eq!(t.push(&chunk(json!({"content": "lo"}), Value::Null), at(150)).len(), 1);
        assert!(t.push(&chunk(json!({}), json!("stop")), at(160)).is_empty());
        let usage = json!({"model": "llama3", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}});
        assert!(t.push(&usage, at(161)).is_empty());
        let last = t.finish(at(170));
        assert_eq!(last.len(), 1);
        let done = &last[0];
        assert_eq!(done["done"], true);
        assert_eq!(done["done_reason"], "stop");
        assert_eq!(done["message"]["content"], "");
        assert_eq!(done["prompt_eval_count"], 3);
        assert_eq!(done["eval_count"], 2);
        assert_eq!(done["total_duration"], 170_000_000);
        assert_eq!(done["prompt_eval_duration"], 100_000_000, "until the first token");
        assert_eq!(done["eval_duration"], 70_000_000, "from the first token on");
        assert!(t.is_finished());
        assert!(t.push(&chunk(json!({"content": "late"}), Value::Null), at(200)).is_empty());
        assert!(t.finish(at(200)).is_empty(), "one last line");
    }

    #[test]
    fn tool_calls_go_out_whole_when_they_are_complete() {
        let mut t = NdjsonTranslator::new(Kind::Chat, "m");
        let call = |v: Value| chunk(json!({"tool_calls": [v]}), Value::Null);
        assert!(t
            .push(
                &call(json!({"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}})),
                at(1)
            )
            .is_empty());
        assert!(t.push(&call(json!({"index": 0, "function": {"arguments": "{\"city\":"}})), at(2)).is_empty());
        assert!(t.push(&call(json!({"index": 0, "function": {"arguments": "\"Paris\"}"}})), at(3)).is_empty());
        let lines = t.push(&chunk(json!({}), json!("tool_calls")), at(4));
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0]["message"]["tool_calls"],
            json!([{"id": "call_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}])
        );
        let last = t.finish(at(5));
        assert_eq!(last.len(), 1, "the calls are not repeated");
        assert_eq!(last[0]["done_reason"], "stop");
    }

    #[test]
    fn calls_not_finished_by_a_reason_go_out_before_the_last_line() {
        let mut t = NdjsonTranslator::new(Kind::Chat, "m");
        // An index far past what arrived is the next call, never a huge allocation.
        let far = chunk(
            json!({"tool_calls": [{"index": 1_000_000, "function": {"name": "f", "arguments": "{}"}}]}),
            Value::Null,
        );
        assert!(t.push(&far, at(1)).is_empty());
        let last = t.finish(at(2));
        assert_eq!(last.len(), 2);
        assert_eq!(last[0]["message"]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(last[1]["done"], true);
    }

    #[test]
    fn generate_lines_carry_the_response_and_thinking() {
        let mut t = NdjsonTranslator::new(Kind::Generate, "m");
        let lines = t.push(&chunk(json!({"reasoning_content": "hmm"}), Value::Null), at(1));
        assert_eq!(lines[0]["response"], "");
        assert_eq!(lines[0]["thinking"], "hmm");
        let lines = t.push(&chunk(json!({"content": "Blue."}), Value::Null), at(2));
        assert_eq!(lines[0]["response"], "Blue.");
        assert!(lines[0].get("message").is_none());
        let done = t.finish(at(3));
        assert_eq!(done[0]["response"], "");
        assert!(done[0].get("eval_count").is_none(), "no usage reported: no count made up");
    }

    #[test]
    fn legacy_completion_chunks_are_generate_lines() {
        let mut t = NdjsonTranslator::new(Kind::Generate, "m");
        let piece = |text: &str, finish: Value| {
            json!({"object": "text_completion", "model": "llama3",
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
        };
        let lines = t.push(&piece("Once", Value::Null), at(10));
        assert_eq!((lines.len(), lines[0]["response"].clone()), (1, json!("Once")));
        assert_eq!(t.push(&piece(" upon", Value::Null), at(20))[0]["response"], " upon");
        assert!(t.push(&piece("", json!("stop")), at(21)).is_empty());
        let usage = json!({"object": "text_completion", "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2}});
        assert!(t.push(&usage, at(22)).is_empty());
        let done = t.finish(at(30));
        assert_eq!((done[0]["done"].clone(), done[0]["eval_count"].clone()), (json!(true), json!(2)));
        assert_eq!(done[0]["prompt_eval_duration"], 10_000_000);
    }

    #[test]
    fn a_failure_is_an_error_line() {
        let mut t = NdjsonTranslator::new(Kind::Chat, "m");
        assert_eq!(t.fail("the tunnel closed"), json!({"error": "the tunnel closed"}));
        assert!(t.is_finished());
        assert_eq!(ndjson(&[json!({"a": 1}), json!({"b": 2})]), "{\"a\":1}\n{\"b\":2}\n");
    }
}
