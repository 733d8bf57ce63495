//! JSON bodies whose objects repeat a key are refused. serde_json keeps the last of two equal keys,
//! so `{"password": "x", "password": ""}` read as a room without a password while a proxy or a log
//! in front of the hub would see one: two readers of one body must never disagree. The check walks
//! the document once without building it (only one object's keys are held at a time per level).
//! The same walk measures the document ([`Shape`]), so the hub knows what parsing it will cost
//! before it builds it.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// How much a document holds: values (of any kind), object keys, and bytes of strings and keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub values: usize,
    pub keys: usize,
    pub text_bytes: usize,
}

impl Shape {
    /// About how many bytes the document takes once parsed into a `serde_json::Value`: a slot per
    /// value (with a vector's spare room), a map entry per key, and the text itself.
    pub fn parsed_bytes(&self) -> usize {
        self.values.saturating_mul(64).saturating_add(self.keys.saturating_mul(64)).saturating_add(self.text_bytes)
    }
}

/// `Err` names the first key found twice (or says why the text is not JSON).
pub fn check(bytes: &[u8]) -> Result<(), String> {
    measure(bytes).map(|_| ())
}

/// Like [`check`], and says how much the document holds.
pub fn measure(bytes: &[u8]) -> Result<Shape, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut shape = Shape::default();
    // Deep documents are refused by serde_json's own recursion limit (128), as when parsing.
    Unique(&mut shape).deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(shape)
}

struct Unique<'a>(&'a mut Shape);

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.0.values += 1;
        deserializer.deserialize_any(UniqueVisitor(self.0))
    }
}

struct UniqueVisitor<'a>(&'a mut Shape);

impl<'de> Visitor<'de> for UniqueVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        self.0.text_bytes += text.len();
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let shape = self.0;
        while seq.next_element_seed(Unique(&mut *shape))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let shape = self.0;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format_args!("the key \"{}\" appears twice in one object", key)));
            }
            shape.keys += 1;
            shape.text_bytes += key.len();
            map.next_value_seed(Unique(&mut *shape))?;
            seen.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{check, measure};

    #[test]
    fn the_walk_measures_what_parsing_will_hold() {
        let shape = measure(br#"{"model": "m", "pad": [0, 0, 0]}"#).unwrap();
        assert_eq!(shape, super::Shape { values: 6, keys: 2, text_bytes: 9 });
        // A body of zeros is small as text and large as a tree: the estimate says so.
        let zeros = format!("[{}0]", "0,".repeat(100_000));
        let shape = measure(zeros.as_bytes()).unwrap();
        assert!(shape.parsed_bytes() > 30 * zeros.len(), "{shape:?}");
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert!(check(br#"{"password": "x", "name": "a"}"#).is_ok());
        assert!(check(br#"[{"a": 1}, {"a": 2}, [], {}, null, "s", 1.5, -3, true]"#).is_ok());
        let err = check(br#"{"password": "x", "password": ""}"#).unwrap_err();
        assert!(err.contains("\"password\" appears twice"), "{err}");
        assert!(check(br#"{"a": {"b": 1, "b": 2}}"#).is_err());
        assert!(check(br#"{"a": [{"b": 1, "b": 2}]}"#).is_err());
        // Escapes are compared as the strings they spell.
        assert!(check(br#"{"name": 1, "n\u0061me": 2}"#).is_err());
        // The same key in sibling objects is fine.
        assert!(check(br#"{"a": {"k": 1}, "b": {"k": 2}}"#).is_ok());
        assert!(check(b"{").is_err());
        assert!(check(b"{} trailing").is_err());
    }
}
