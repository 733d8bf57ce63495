//! Known hubs: the name and address of each hub `gambi participant join` found on the LAN and used,
//! kept in `known-hubs.json`, so that a later join that finds a hub of the same name at another
//! address says so instead of going there silently.
//!
//! mDNS is unauthenticated: any machine on the LAN can advertise a hub under any name. This file
//! does not make a name trustworthy; it turns "the hub moved" (or "something else took its name")
//! from invisible into a warning. Which folder the file lives in is the command line's business
//! (`cli::config_dir`); nothing here prints. The rules ([`KnownHubs::check`],
//! [`KnownHubs::record`]) are pure; [`load`] and [`save`] are the only I/O.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name inside the command line's config folder.
pub const FILE_NAME: &str = "known-hubs.json";
/// The file's format; a file with another version is treated as damaged and replaced.
const VERSION: u32 = 1;
/// At most this many hubs are remembered; the least recently used go first. A hostile LAN can
/// advertise thousands of names, and the file must stay small.
const MAX_HUBS: usize = 256;

/// One hub as it was last used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownHub {
    /// The hub's human name, as advertised (TXT `name`, or the instance name).
    pub name: String,
    /// `http://<address>:<port>`: where the hub answered when it was last used.
    pub url: String,
    /// Milliseconds since the Unix epoch.
    pub first_seen: u64,
    pub last_used: u64,
}

/// Every hub remembered, one per name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownHubs {
    version: u32,
    hubs: Vec<KnownHub>,
}

impl Default for KnownHubs {
    fn default() -> Self {
        KnownHubs { version: VERSION, hubs: Vec::new() }
    }
}

/// What a hub found now means against what was remembered of its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    /// No hub of this name was used before.
    New,
    /// The name answers where it did last time.
    Same,
    /// The name was last used at `was` and now answers elsewhere: the hub moved, or another
    /// machine is using its name.
    Moved { was: String },
}

impl KnownHubs {
    /// The hub remembered under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&KnownHub> {
        self.hubs.iter().find(|h| h.name == name)
    }

    pub fn hubs(&self) -> &[KnownHub] {
        &self.hubs
    }

    /// What finding hub `name` at `url` means, without remembering it.
    pub fn check(&self, name: &str, url: &str) -> Sighting {
        match self.get(name) {
            None => Sighting::New,
            Some(known) if same_url(&known.url, url) => Sighting::Same,
            Some(known) => Sighting::Moved { was: known.url.clone() },
        }
    }

    /// Remembers that hub `name` was used at `url` at `now` (ms since the epoch), and says what
    /// that meant against what was known. A moved hub is remembered at its new address: the
    /// warning is for the first join that sees the move, and the address the person went on
    /// with is the one to compare with next time.
    pub fn record(&mut self, name: &str, url: &str, now: u64) -> Sighting {
        let sighting = self.check(name, url);
        match self.hubs.iter_mut().find(|h| h.name == name) {
            Some(known) => {
                known.url = url.to_string();
                known.last_used = now;
            }
            None => self.hubs.push(KnownHub {
                name: name.to_string(),
                url: url.to_string(),
                first_seen: now,
                last_used: now,
            }),
        }
        if self.hubs.len() > MAX_HUBS {
            self.hubs.sort_by_key(|h| std::cmp::Reverse(h.last_used));
            self.hubs.truncate(MAX_HUBS);
        }
        sighting
    }

    /// Reads the file's text. `Err` says why it is not a known-hubs file.
    pub fn parse(text: &str) -> Result<KnownHubs, String> {
        let known: KnownHubs = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if known.version != VERSION {
            return Err(format!("unknown version {}", known.version));
        }
        Ok(known)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// URLs as `HubClient` writes them; the host part is compared without regard to case.
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// What reading or writing the file can fail with.
#[derive(Debug, thiserror::Error)]
pub enum KnownHubsError {
    #[error("cannot read the list of known hubs {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the list of known hubs {path} is damaged ({cause})")]
    Damaged { path: PathBuf, cause: String },
    #[error("cannot save the list of known hubs {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Reads the hubs remembered in `path`; a missing file is an empty list. A damaged file is an
/// error the caller warns about and then replaces, never a reason to stop.
pub fn load(path: &Path) -> Result<KnownHubs, KnownHubsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KnownHubs::default()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(KnownHubsError::Damaged { path: path.into(), cause: "not UTF-8 text".into() })
        }
        Err(source) => return Err(KnownHubsError::Read { path: path.into(), source }),
    };
    KnownHubs::parse(&text).map_err(|cause| KnownHubsError::Damaged { path: path.into(), cause })
}

/// Writes the list to `path` atomically (a temp file in the same folder, then a rename), creating
/// the folder if needed: an interrupted write leaves the old file, never half a new one.
pub fn save(path: &Path, known: &KnownHubs) -> Result<(), KnownHubsError> {
    crate::hub::state_file::write_atomic(path, known.to_json().as_bytes())
        .map_err(|source| KnownHubsError::Write { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_use_of_a_name_is_recorded_and_then_known() {
        let mut known = KnownHubs::default();
        assert_eq!(known.check("Lab Hub", "http://10.0.0.1:3000"), Sighting::New);
        assert_eq!(known.record("Lab Hub", "http://10.0.0.1:3000", 5), Sighting::New);
        let hub = known.get("Lab Hub").unwrap();
        assert_eq!((hub.url.as_str(), hub.first_seen, hub.last_used), ("http://10.0.0.1:3000", 5, 5));
        assert_eq!(known.record("Lab Hub", "http://10.0.0.1:3000", 9), Sighting::Same);
        let hub = known.get("Lab Hub").unwrap();
        assert_eq!((hub.first_seen, hub.last_used), (5, 9));
        assert_eq!(known.hubs().len(), 1);
        // Names are told apart exactly: another name is another hub.
        assert_eq!(known.check("lab hub", "http://10.0.0.1:3000"), Sighting::New);
    }

    #[test]
    fn a_name_at_another_address_is_a_move_and_the_new_address_is_kept() {
        let mut known = KnownHubs::default();
        known.record("Lab Hub", "http://10.0.0.1:3000", 1);
        let moved = Sighting::Moved { was: "http://10.0.0.1:3000".into() };
        assert_eq!(known.check("Lab Hub", "http://10.0.0.2:3000"), moved);
        // Another port is another address too.
        assert_eq!(known.check("Lab Hub", "http://10.0.0.1:3001"), moved);
        // Checking remembers nothing.
        assert_eq!(known.get("Lab Hub").unwrap().url, "http://10.0.0.1:3000");
        assert_eq!(known.record("Lab Hub", "http://10.0.0.2:3000", 2), moved);
        assert_eq!(known.get("Lab Hub").unwrap().url, "http://10.0.0.2:3000");
        assert_eq!(known.get("Lab Hub").unwrap().first_seen, 1);
        assert_eq!(known.check("Lab Hub", "HTTP://10.0.0.2:3000/"), Sighting::Same);
    }

    #[test]
    fn the_list_is_bounded_and_keeps_the_most_recently_used() {
        let mut known = KnownHubs::default();
        for i in 0..(MAX_HUBS as u64 + 10) {
            known.record(&format!("hub {i}"), "http://10.0.0.1:3000", i);
        }
        assert_eq!(known.hubs().len(), MAX_HUBS);
        assert!(known.get("hub 0").is_none());
        assert!(known.get(&format!("hub {}", MAX_HUBS + 9)).is_some());
    }

    #[test]
    fn the_file_round_trips_and_a_damaged_one_is_reported_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join(FILE_NAME);
        assert_eq!(load(&path).unwrap(), KnownHubs::default(), "a missing file is an empty list");
        let mut known = KnownHubs::default();
        known.record("Lab Hub", "http://10.0.0.1:3000", 7);
        save(&path, &known).unwrap();
        assert_eq!(load(&path).unwrap(), known);
        // No temp file is left beside it.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        for damaged in [&b"{not json"[..], b"[]", br#"{"version": 9, "hubs": []}"#, b"\xff\xfe"] {
            std::fs::write(&path, damaged).unwrap();
            let error = load(&path).unwrap_err();
            assert!(matches!(error, KnownHubsError::Damaged { .. }), "{error}");
            assert!(error.to_string().contains("damaged"), "{error}");
        }
        save(&path, &known).unwrap();
        assert_eq!(load(&path).unwrap(), known);
    }

    #[test]
    fn the_file_is_plain_json_people_can_read() {
        let mut known = KnownHubs::default();
        known.record("Ana's \"hub\"", "http://10.0.0.1:3000", 3);
        let json: serde_json::Value = serde_json::from_str(&known.to_json()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["hubs"][0]["name"], "Ana's \"hub\"");
        assert_eq!(json["hubs"][0]["url"], "http://10.0.0.1:3000");
        assert_eq!(json["hubs"][0]["firstSeen"], 3);
        assert_eq!(json["hubs"][0]["lastUsed"], 3);
    }
}
