//! The TXT record of a hub's advertisement: what a hub publishes and what a browser reads back.
//!
//! The original TypeScript hub publishes `version=1.0` and `protocol=http`; this implementation
//! adds `name` (a human name for the hub) and `rooms` (how many rooms it holds). Browsers must keep
//! working with hubs that publish only the original two keys, so every field here is optional on
//! the reading side. Pure data: no I/O.

/// The `version` key every hub publishes (the wire contract's version, not the program's).
pub const TXT_VERSION: &str = "1.0";
/// The `protocol` key every hub publishes: how to talk to the advertised port.
pub const TXT_PROTOCOL: &str = "http";

/// A TXT item is one length byte plus `key=value`, so it cannot exceed 255 bytes (RFC 6763 §6.1).
const MAX_TXT_ITEM: usize = 255;

/// The keys of a hub's TXT record, as published or as read back from the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubTxt {
    pub version: Option<String>,
    pub protocol: Option<String>,
    /// The hub's human name (extension; absent on the original hub).
    pub name: Option<String>,
    /// How many rooms the hub holds (extension; absent on the original hub).
    pub rooms: Option<usize>,
}

impl HubTxt {
    /// What a hub named `name` holding `rooms` rooms publishes. A name too long for one TXT item
    /// is cut at a character boundary rather than refused: the name is only a label.
    pub fn for_hub(name: &str, rooms: usize) -> HubTxt {
        HubTxt {
            version: Some(TXT_VERSION.into()),
            protocol: Some(TXT_PROTOCOL.into()),
            name: Some(truncate_utf8(name.trim(), MAX_TXT_ITEM - "name=".len()).to_string()),
            rooms: Some(rooms),
        }
    }

    /// The key/value pairs to publish, in a stable order (the original keys first).
    pub fn to_properties(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(4);
        if let Some(v) = &self.version {
            out.push(("version".to_string(), v.clone()));
        }
        if let Some(p) = &self.protocol {
            out.push(("protocol".to_string(), p.clone()));
        }
        if let Some(n) = &self.name {
            out.push(("name".to_string(), n.clone()));
        }
        if let Some(r) = self.rooms {
            out.push(("rooms".to_string(), r.to_string()));
        }
        out
    }

    /// Reads the keys from a TXT record's items. Keys compare case-insensitively and the first
    /// occurrence wins (RFC 6763 §6.4); a key without a value, an empty value or an unparsable
    /// room count reads as absent, since a peer we do not control may publish anything.
    pub fn parse<'a, I>(items: I) -> HubTxt
    where
        I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        let mut txt = HubTxt::default();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in items {
            let key = key.to_ascii_lowercase();
            if seen.contains(&key) {
                continue;
            }
            seen.push(key.clone());
            let Some(value) = value else { continue };
            let value = String::from_utf8_lossy(value).trim().to_string();
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "version" => txt.version = Some(value),
                "protocol" => txt.protocol = Some(value),
                "name" => txt.name = Some(value),
                "rooms" => txt.rooms = value.parse().ok(),
                _ => {}
            }
        }
        txt
    }

    /// The URL scheme to reach the hub with: `http` when the protocol is absent (the key is only a
    /// hint) or `http`, `https` when it says so, and `None` for anything else: such a service is
    /// not something this client can talk to.
    pub fn scheme(&self) -> Option<&'static str> {
        match self.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("http") => Some("http"),
            Some("https") => Some("https"),
            Some(_) => None,
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items<'a>(pairs: &'a [(&'a str, Option<&'a str>)]) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> {
        pairs.iter().map(|(k, v)| (*k, v.map(str::as_bytes)))
    }

    #[test]
    fn a_hub_publishes_the_original_keys_then_the_extensions() {
        let props = HubTxt::for_hub(" Lab ", 2).to_properties();
        let keys: Vec<_> = props.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(keys, ["version=1.0", "protocol=http", "name=Lab", "rooms=2"]);
    }

    #[test]
    fn a_long_name_is_cut_to_fit_one_txt_item_on_a_character_boundary() {
        let name = "é".repeat(200);
        let txt = HubTxt::for_hub(&name, 0);
        let kept = txt.name.unwrap();
        assert!("name=".len() + kept.len() <= 255);
        assert!(kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn parsing_reads_what_was_published() {
        let published = HubTxt::for_hub("Lab", 3);
        let props = published.to_properties();
        let parsed = HubTxt::parse(props.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))));
        assert_eq!(parsed, published);
    }

    #[test]
    fn the_original_hubs_record_parses_without_the_extensions() {
        let txt = HubTxt::parse(items(&[("version", Some("1.0")), ("protocol", Some("http"))]));
        assert_eq!(txt.version.as_deref(), Some("1.0"));
        assert_eq!(txt.name, None);
        assert_eq!(txt.rooms, None);
        assert_eq!(txt.scheme(), Some("http"));
    }

    #[test]
    fn keys_are_case_insensitive_and_the_first_one_wins() {
        let txt = HubTxt::parse(items(&[("NAME", Some("first")), ("name", Some("second")), ("Rooms", Some("4"))]));
        assert_eq!(txt.name.as_deref(), Some("first"));
        assert_eq!(txt.rooms, Some(4));
    }

    #[test]
    fn garbage_values_read_as_absent() {
        let txt = HubTxt::parse(items(&[("rooms", Some("many")), ("name", None), ("version", Some("  "))]));
        assert_eq!(txt, HubTxt::default());
    }

    #[test]
    fn only_http_and_https_are_usable_protocols() {
        let with = |p: &str| HubTxt { protocol: Some(p.into()), ..HubTxt::default() };
        assert_eq!(with("HTTPS").scheme(), Some("https"));
        assert_eq!(with("ws").scheme(), None);
        assert_eq!(HubTxt::default().scheme(), Some("http"));
    }
}
