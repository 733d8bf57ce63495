//! What the hub reads of a whole (non-streamed) answer it relays as it is: its `usage` counts,
//! Ollama's `prompt_eval_count` and `eval_count`, and its `id` (a Responses answer's, kept for its
//! `{id}` routes). The answer is read in one pass that checks it is JSON (a success that is not
//! JSON is never relayed) without building a tree of it: every other field is skipped as it is
//! parsed ([`serde::de::IgnoredAny`]), so the answer's text costs no allocation.
//!
//! What is read is exactly what a look at the parsed `serde_json::Value` would give:
//! `value["usage"]["prompt_tokens"].as_u64()` and so on (a count that is not a non-negative
//! integer is absent; a `usage` that is not an object has no counts; an answer that is not an
//! object has none of these; of a repeated key the last counts), and `value["id"].as_str()`. One
//! difference: a tree refuses JSON nested deeper than 128 levels, skipping checks it to any depth.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The counts of an answer's `usage` object, each as `as_u64` reads it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageCounts {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// The fields of an answer the hub reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Head {
    /// `usage`, when it is an object.
    pub usage: Option<UsageCounts>,
    pub prompt_eval_count: Option<u64>,
    pub eval_count: Option<u64>,
    /// `id`, when it is a string.
    pub id: Option<String>,
}

/// The answer's [`Head`]; `None` when the text is not one JSON document.
pub fn read(body: &[u8]) -> Option<Head> {
    serde_json::from_slice(body).ok()
}

/// Skips what a visitor was given in place of the value it looks for (a container is parsed
/// through, so the text is still checked).
macro_rules! skip_other {
    ($out:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($out)
        }
    };
}

/// A value read as `Value::as_u64` would: a non-negative integer, else nothing.
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            skip_other!(Count(None));
        }
        deserializer.deserialize_any(V)
    }
}

/// A value read as `Value::as_str` would: a string, else nothing.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            skip_other!(Text(None));
        }
        deserializer.deserialize_any(V)
    }
}

/// A key, named if it is one the hub reads (escapes decoded, as a `Value`'s keys are).
enum Key {
    Usage,
    PromptEvalCount,
    EvalCount,
    Id,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
    InputTokens,
    OutputTokens,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "usage" => Key::Usage,
                    "prompt_eval_count" => Key::PromptEvalCount,
                    "eval_count" => Key::EvalCount,
                    "id" => Key::Id,
                    "prompt_tokens" => Key::PromptTokens,
                    "completion_tokens" => Key::CompletionTokens,
                    "total_tokens" => Key::TotalTokens,
                    "input_tokens" => Key::InputTokens,
                    "output_tokens" => Key::OutputTokens,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// `usage`: its counts when it is an object.
struct Usage(Option<UsageCounts>);

impl<'de> Deserialize<'de> for Usage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Usage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Usage, A::Error> {
                let mut counts = UsageCounts::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::PromptTokens => &mut counts.prompt_tokens,
                        Key::CompletionTokens => &mut counts.completion_tokens,
                        Key::TotalTokens => &mut counts.total_tokens,
                        Key::InputTokens => &mut counts.input_tokens,
                        Key::OutputTokens => &mut counts.output_tokens,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Count>()?.0;
                }
                Ok(Usage(Some(counts)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Usage, E> {
                Ok(Usage(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Usage, E> {
                Ok(Usage(None))
            }
            skip_other!(Usage(None));
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut head = Head::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Usage => head.usage = map.next_value::<Usage>()?.0,
                        Key::PromptEvalCount => head.prompt_eval_count = map.next_value::<Count>()?.0,
                        Key::EvalCount => head.eval_count = map.next_value::<Count>()?.0,
                        Key::Id => head.id = map.next_value::<Text>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Head, E> {
                Ok(Head::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Head, E> {
                Ok(Head::default())
            }
            skip_other!(Head::default());
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What the hub read from the parsed tree before: the reference.
    fn from_tree(text: &str) -> Option<Head> {
        let value: Value = serde_json::from_str(text).ok()?;
        let n = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_u64);
        let usage = value.get("usage").filter(|u| u.is_object());
        Some(Head {
            usage: usage.map(|_| UsageCounts {
                prompt_tokens: n(usage, "prompt_tokens"),
                completion_tokens: n(usage, "completion_tokens"),
                total_tokens: n(usage, "total_tokens"),
                input_tokens: n(usage, "input_tokens"),
                output_tokens: n(usage, "output_tokens"),
            }),
            prompt_eval_count: n(Some(&value), "prompt_eval_count"),
            eval_count: n(Some(&value), "eval_count"),
            id: value.get("id").and_then(Value::as_str).map(str::to_string),
        })
    }

    #[test]
    fn reads_what_the_tree_would_give_for_every_shape() {
        let answers = [
            r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            r#"{"usage":{"input_tokens":10,"output_tokens":1},"id":"resp_1","output":[{"content":[{"text":"x"}]}]}"#,
            r#"{"data":[{"embedding":[0.1,-2e3,3]}],"usage":{"prompt_tokens":8,"total_tokens":8}}"#,
            r#"{"model":"llama3","done":true,"prompt_eval_count":26,"eval_count":290}"#,
            r#"{"usage":null,"id":5}"#,
            r#"{"usage":"many","id":null}"#,
            r#"{"usage":[1,2],"id":["a"]}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":2.0,"total_tokens":"3","input_tokens":{"a":1},"output_tokens":[4]}}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}"#,
            r#"{"us\u0061ge":{"prompt_tok\u0065ns":9},"i\u0064":"r\u00e9p"}"#,
            r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551616}}"#,
            r#"{"nested":{"usage":{"prompt_tokens":1},"id":"no"},"eval_count":true}"#,
            r#"{}"#,
            r#"[1,{"usage":{"prompt_tokens":1}}]"#,
            r#""text""#,
            "42",
            "-1",
            "1.5",
            "true",
            "null",
            " \n{\"id\":\"x\"}\n ",
        ];
        for text in answers {
            assert_eq!(read(text.as_bytes()), from_tree(text), "{text}");
            assert!(read(text.as_bytes()).is_some(), "{text}");
        }
    }

    #[test]
    fn what_is_not_one_json_document_is_refused_as_the_tree_refused_it() {
        let deep_ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in [
            "",
            "<html>hi</html>",
            "{\"id\":\"x\"",
            "{\"id\":\"x\"} trailing",
            "{\"id\":\"x\"}{}",
            "{\"usage\":{\"prompt_tokens\":1,}}",
            "{\"a\":[1,2}",
            "{\"a\":\"\\q\"}",
            "{\"a\":nul}",
            deep_ok.as_str(),
        ] {
            assert_eq!(read(text.as_bytes()).is_some(), from_tree(text).is_some(), "{text}");
        }
        assert!(read(b"\xff\xfe").is_none());
        assert!(read(deep_ok.as_bytes()).is_some());
        // The one difference: a tree stops at 128 levels, what is skipped is checked to any depth,
        // so an answer nested deeper is relayed (it is JSON) where it was a 502.
        assert!(from_tree(&too_deep).is_none());
        assert!(read(too_deep.as_bytes()).is_some());
        assert!(read(format!("{}{}", "[".repeat(200), "]".repeat(199)).as_bytes()).is_none());
    }
}
