//! `--state PATH`: rooms (never participants) survive a restart with the same codes, passwords and
//! host tokens. The file is rewritten whole after each change, atomically (temp file in the same
//! folder, fsync, rename), so a crash mid-write leaves the old file, never half a new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::registry::{Registry, StoredRoom};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct FileV1 {
    version: u32,
    rooms: Vec<StoredRoom>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the state file {path} is not a Gambi state file ({cause}); move it away or pick another --state path")]
    Parse { path: PathBuf, cause: String },
    #[error("cannot write the state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Reads the rooms kept in `path`; a missing file is an empty hub.
pub fn load(path: &Path) -> Result<Vec<StoredRoom>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateError::Read { path: path.into(), source }),
    };
    let file: FileV1 =
        serde_json::from_str(&text).map_err(|e| StateError::Parse { path: path.into(), cause: e.to_string() })?;
    if file.version != VERSION {
        return Err(StateError::Parse { path: path.into(), cause: format!("unknown version {}", file.version) });
    }
    Ok(file.rooms)
}

/// Writes `bytes` to `path` through a temp file in the same folder (owner-only on Unix), fsync and
/// rename; also what `discovery::known` saves with.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Password hashes and host-token digests: readable by the owner only.
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Makes the rename itself durable; not every platform allows it, hence best effort.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the registry's rooms to its file, one write at a time and always the latest snapshot.
#[derive(Clone)]
pub struct StateFile {
    path: Arc<PathBuf>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        StateFile { path: Arc::new(path), lock: Arc::new(tokio::sync::Mutex::new(())) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves the current rooms. The snapshot is taken after the write lock is held, so writes land
    /// in order and the last one is always the newest state.
    pub async fn save(&self, registry: &Registry) -> Result<(), StateError> {
        let _guard = self.lock.lock().await;
        let file = FileV1 { version: VERSION, rooms: registry.stored_rooms() };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| StateError::Write { path: (*self.path).clone(), source: std::io::Error::other(e) })?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| StateError::Write { path: (*self.path).clone(), source: std::io::Error::other(e) })?
            .map_err(|source| StateError::Write { path: (*self.path).clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none.json")).unwrap().is_empty());
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "not json").unwrap();
        assert!(matches!(load(&bad), Err(StateError::Parse { .. })));
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
    }
}
