//! JSON bodies whose objects repeat a key are refused. serde_json keeps the last of two equal keys,
//! so `{"password": "x", "password": ""}` read as a room without a password while a proxy or a log
//! in front of the hub would see one: two readers of one body must never disagree. The check walks
//! the document once without building it (only one object's keys are held at a time per level).

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// `Err` names the first key found twice (or says why the text is not JSON).
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Deep documents are refused by serde_json's own recursion limit (128), as when parsing.
    Unique.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
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
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Unique)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format_args!("the key \"{}\" appears twice in one object", key)));
            }
            map.next_value_seed(Unique)?;
            seen.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check;

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
