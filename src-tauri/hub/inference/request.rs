//! An inference request as the hub holds it: each top-level field kept as the JSON text the client
//! sent, and only the few the hub reads (`model`, `stream`, `stream_options`, roles of `messages`)
//! parsed, typed. Nothing builds a tree of the whole body: a 32 MiB array of numbers parsed into
//! `serde_json::Value`s takes about 35 times its bytes, kept as text it takes its bytes.
//!
//! The body sent to a participant is written from the same text, with the fields the hub sets
//! (the participant's model, the room's defaults) put in place or added at the end.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A field's JSON text: where it lies in the body the client sent, or set by the hub.
#[derive(Debug, Clone)]
enum Field {
    Sent(Range<usize>),
    Set(Arc<str>),
}

/// A JSON object kept field by field as text. The client's body is kept once, as it came (cloning
/// the object shares it); each field is a span of it, or text the hub set in its place.
#[derive(Debug, Clone, Default)]
pub struct RawObject {
    text: Bytes,
    fields: IndexMap<String, Field>,
}

impl RawObject {
    /// Reads a JSON object. `Err` says why the text is not one.
    pub fn parse(text: Bytes) -> Result<RawObject, String> {
        let first = text.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err("the request body must be a JSON object".into());
        }
        let spans = {
            let borrowed: IndexMap<String, &RawValue> = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
            let base = text.as_ptr() as usize;
            borrowed
                .into_iter()
                .map(|(k, raw)| {
                    let at = (raw.get().as_ptr() as usize).saturating_sub(base);
                    (k, Field::Sent(at..at + raw.get().len()))
                })
                .collect()
        };
        Ok(RawObject { text, fields: spans })
    }

    /// Reads one field as an object (for a nested object the hub changes, like `stream_options`).
    pub fn field_object(&self, key: &str) -> Option<RawObject> {
        let text = match self.fields.get(key)? {
            Field::Sent(span) => self.text.slice(span.clone()),
            Field::Set(text) => Bytes::copy_from_slice(text.as_bytes()),
        };
        RawObject::parse(text).ok()
    }

    fn text_of<'a>(&'a self, field: &'a Field) -> &'a str {
        match field {
            // The span is a JSON value serde_json read out of this text, so it is UTF-8.
            Field::Sent(span) => {
                self.text.get(span.clone()).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("null")
            }
            Field::Set(text) => text,
        }
    }

    /// A field's JSON text.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|f| self.text_of(f))
    }

    /// The field is missing or `null`.
    pub fn absent(&self, key: &str) -> bool {
        self.raw(key).is_none_or(|r| r == "null")
    }

    pub fn is_array(&self, key: &str) -> bool {
        self.raw(key).is_some_and(|r| r.starts_with('['))
    }

    /// One field, typed: `None` when missing, `Some(Err)` when it is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<Result<T, serde_json::Error>> {
        self.raw(key).map(serde_json::from_str)
    }

    /// One field as a value tree (for small fields only, or where the tree is paid for).
    pub fn value(&self, key: &str) -> Option<Value> {
        self.get::<Value>(key).and_then(Result::ok)
    }

    /// Sets a field to `value` (in place if it exists, at the end if not).
    pub fn set(&mut self, key: &str, value: &Value) {
        self.set_raw(key, value.to_string());
    }

    /// Sets a field to a JSON text the caller made.
    fn set_raw(&mut self, key: &str, json: String) {
        let field = Field::Set(Arc::from(json));
        match self.fields.get_mut(key) {
            Some(slot) => *slot = field,
            None => {
                self.fields.insert(key.to_string(), field);
            }
        }
    }

    /// Sets the field `key` to the object `object`.
    pub fn set_object(&mut self, key: &str, object: &RawObject) {
        let text = String::from_utf8(object.encode().to_vec()).unwrap_or_else(|_| "{}".into());
        self.set_raw(key, text);
    }

    /// Sets a field only where the request is silent (missing or `null`).
    pub fn set_default(&mut self, key: &str, value: Option<Value>) {
        if let Some(v) = value {
            if self.absent(key) {
                self.set(key, &v);
            }
        }
    }

    /// Puts `message` first in the `messages` array, written around the array's own text.
    pub fn prepend_message(&mut self, message: &Value) {
        let Some(messages) = self.raw("messages").filter(|r| r.starts_with('[')) else { return };
        let rest = messages[1..].trim_start();
        let text = if rest.starts_with(']') { format!("[{message}]") } else { format!("[{message},{rest}") };
        self.set_raw("messages", text);
    }

    /// The roles of the `messages` array, without reading the messages' content.
    pub fn message_roles(&self) -> Vec<Option<String>> {
        #[derive(Deserialize)]
        struct Role {
            #[serde(default)]
            role: Option<Value>,
        }
        let Some(text) = self.raw("messages") else { return Vec::new() };
        let Ok(messages) = serde_json::from_str::<Vec<&RawValue>>(text) else { return Vec::new() };
        messages
            .iter()
            .map(|m| {
                serde_json::from_str::<Role>(m.get())
                    .ok()
                    .and_then(|r| r.role)
                    .and_then(|r| r.as_str().map(str::to_string))
            })
            .collect()
    }

    /// Every field but `except`, parsed (the settings of a request, without its input).
    pub fn values_except(&self, except: &str) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|(k, _)| k.as_str() != except)
            .filter_map(|(k, f)| serde_json::from_str(self.text_of(f)).ok().map(|v| (k.clone(), v)))
            .collect()
    }

    /// Every field, parsed (for a translation that needs the whole request as a tree).
    pub fn values(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .filter_map(|(k, f)| serde_json::from_str(self.text_of(f)).ok().map(|v| (k.clone(), v)))
            .collect()
    }

    /// The object without the field `except`, as JSON text.
    pub fn text_except(&self, except: &str) -> Bytes {
        self.write(Some(except))
    }

    /// Bytes the object holds: the body as it came, and the text set in its place.
    pub fn held_bytes(&self) -> usize {
        let set: usize =
            self.fields.iter().map(|(k, f)| k.len() + 64 + if let Field::Set(t) = f { t.len() } else { 0 }).sum();
        self.text.len().saturating_add(set)
    }

    /// The object as JSON text, the fields in their order.
    pub fn encode(&self) -> Bytes {
        self.write(None)
    }

    fn write(&self, except: Option<&str>) -> Bytes {
        let fields: Vec<_> = self.fields.iter().filter(|(k, _)| Some(k.as_str()) != except).collect();
        let size: usize = fields.iter().map(|(k, f)| k.len() + 4 + self.text_of(f).len()).sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        for (i, (key, field)) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // A string always serializes.
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            out.extend_from_slice(self.text_of(field).as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> RawObject {
        RawObject::parse(Bytes::copy_from_slice(text.as_bytes())).expect("an object")
    }

    #[test]
    fn fields_keep_their_text_and_order() {
        let r = parse(r#"{"model": "m", "messages": [ {"role":"user","content":"hi"} ], "x": 1.50}"#);
        assert_eq!(r.get::<String>("model").map(Result::ok), Some(Some("m".into())));
        assert!(r.is_array("messages"));
        assert_eq!(r.raw("x"), Some("1.50"), "numbers are not rewritten");
        assert_eq!(&r.encode()[..], br#"{"model":"m","messages":[ {"role":"user","content":"hi"} ],"x":1.50}"#);
    }

    #[test]
    fn only_objects_are_requests() {
        for bad in ["[1]", "\"x\"", "1", "", "{", "{\"a\":}"] {
            assert!(RawObject::parse(Bytes::from_static(bad.as_bytes())).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_replaces_in_place_and_appends_new_fields() {
        let mut r = parse(r#"{"model":"*","stream":true,"seed":null}"#);
        r.set("model", &json!("llama3"));
        r.set_default("seed", Some(json!(7)));
        r.set_default("stream", Some(json!(false)));
        r.set_default("top_p", Some(json!(0.5)));
        r.set_default("temperature", None);
        assert_eq!(&r.encode()[..], br#"{"model":"llama3","stream":true,"seed":7,"top_p":0.5}"#);
    }

    #[test]
    fn escaped_keys_and_nested_spans_are_kept_exactly() {
        let r = parse(r#"{"a\"b": {"x": "\u00e9"}, "n": -0.0e1}"#);
        assert_eq!(r.raw("a\"b"), Some(r#"{"x": "\u00e9"}"#));
        let v: Value = serde_json::from_slice(&r.encode()).expect("JSON");
        assert_eq!(v, json!({"a\"b": {"x": "é"}, "n": -0.0}));
    }

    #[test]
    fn a_message_is_prepended_to_the_array_text() {
        let mut r = parse(r#"{"messages": [ {"role":"user","content":"hi"}]}"#);
        r.prepend_message(&json!({"role": "system", "content": "Be brief."}));
        let v: Value = serde_json::from_slice(&r.encode()).expect("JSON");
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][1]["content"], "hi");
        let mut empty = parse(r#"{"messages": [  ]}"#);
        empty.prepend_message(&json!({"role": "system"}));
        assert_eq!(empty.raw("messages"), Some(r#"[{"role":"system"}]"#));
        let mut none = parse(r#"{"messages": "no"}"#);
        none.prepend_message(&json!({"role": "system"}));
        assert_eq!(none.raw("messages"), Some(r#""no""#), "not an array: left alone");
    }

    #[test]
    fn roles_are_read_without_the_content() {
        let r = parse(r#"{"messages":[{"role":"system","content":[1,2]},{"content":"x"},"odd",{"role":3}]}"#);
        assert_eq!(r.message_roles(), vec![Some("system".into()), None, None, None]);
    }

    #[test]
    fn settings_leave_out_the_input() {
        let r = parse(r#"{"model":"m","input":[{"type":"message"}],"temperature":0.2}"#);
        let s = r.values_except("input");
        assert_eq!(Value::Object(s), json!({"model": "m", "temperature": 0.2}));
        assert_eq!(&r.text_except("input")[..], br#"{"model":"m","temperature":0.2}"#);
    }

    #[test]
    fn a_nested_object_can_be_changed_the_same_way() {
        let r = parse(r#"{"stream_options":{"include_usage":false,"other":[1]}}"#);
        let mut o = r.field_object("stream_options").expect("object");
        o.set("include_usage", &json!(true));
        assert_eq!(&o.encode()[..], br#"{"include_usage":true,"other":[1]}"#);
        let mut outer = r.clone();
        outer.set_object("stream_options", &o);
        assert_eq!(&outer.encode()[..], br#"{"stream_options":{"include_usage":true,"other":[1]}}"#);
        assert_eq!(
            &r.encode()[..],
            br#"{"stream_options":{"include_usage":false,"other":[1]}}"#,
            "clones share, not change"
        );
    }

    #[test]
    fn the_held_text_is_a_small_multiple_of_the_bytes() {
        let zeros = vec!["0"; 1_000_000].join(",");
        let text = format!(r#"{{"model":"m","messages":[],"junk":[{zeros}]}}"#);
        let len = text.len();
        let r = RawObject::parse(Bytes::from(text)).expect("object");
        assert!(r.held_bytes() < len + 1024, "{} for {len}", r.held_bytes());
    }
}
