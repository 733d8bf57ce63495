//! `--state PATH`: rooms (never participants) survive a restart with the same codes, passwords and
//! host tokens. The file is rewritten whole after each change, atomically (temp file in the same
//! folder, fsync, rename), so a crash mid-write leaves the old file, never half a new one.
//!
//! One hub per file: a hub holds an exclusive lock on `PATH.lock` from start to stop, so a second
//! hub on the same file refuses to start instead of silently writing over the first one's rooms.
//! Having the lock, a hub also removes the temp files a killed writer of this file left behind.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, Write};
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
    #[error("cannot lock the state file {path} (through {}): {source}", lock_path(.path).display())]
    Lock { path: PathBuf, source: std::io::Error },
    #[error(
        "the state file {path} is in use by another Gambi hub{}; stop that hub or pick another --state path",
        .pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { path: PathBuf, pid: Option<u32> },
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

fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The name `write_atomic` gives its temp files is `.NAME.PID.tmp`; this is the `NAME`. The writer
/// and the clean-up at start both use it, so they cannot disagree about which files are whose.
fn temp_stem(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
}

/// Whether `file_name` is a temp file `write_atomic` makes for a file whose stem is `stem`, by any
/// process: `.STEM.DIGITS.tmp`, and nothing else.
fn is_temp_of(stem: &str, file_name: &str) -> bool {
    file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(stem))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Opens (creating) a file that may hold a password hash or the lock's pid: owner-only on Unix.
fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Password hashes and host-token digests: readable by the owner only.
        options.mode(0o600);
    }
    options
}

/// Writes `bytes` to `path` through a temp file in the same folder (owner-only on Unix), fsync and
/// rename; also what `discovery::known` saves with.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", temp_stem(path), std::process::id()));
    {
        let mut file = private_options().write(true).create(true).truncate(true).open(&tmp)?;
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

/// Where the lock of the state file `path` is kept: `PATH.lock`, beside it.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// The exclusive lock on a state file, held for as long as this value lives; the operating system
/// drops it when the file closes, so a hub that is killed frees it too.
///
/// The lock file is never removed, not even on a clean stop: removing it would let a hub that had
/// opened the old file and one that creates a new one each hold "the" lock at once. A lock file
/// left behind holds nothing but a pid, and an unlocked one means no hub is using the state file.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock of the state file `path` without waiting, and writes this process's id into
    /// the lock file for the message another hub shows. A state file in use refuses with
    /// [`StateError::InUse`], naming the holder's pid when the lock file says it; nothing is
    /// written then.
    pub fn acquire(path: &Path) -> Result<StateLock, StateError> {
        let failed = |source: std::io::Error| StateError::Lock { path: path.into(), source };
        if path.is_dir() {
            let source = std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a folder");
            return Err(StateError::Read { path: path.into(), source });
        }
        std::fs::create_dir_all(folder_of(path)).map_err(failed)?;
        // Not truncated on open: until the lock is ours the pid in it is the holder's.
        let mut file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path(path))
            .map_err(failed)?;
        // Called through the trait: std's inherent `File::try_lock` is newer than our rust-version.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Best effort: Windows keeps a locked file's bytes from other processes.
                let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(StateError::InUse { path: path.into(), pid });
            }
            Err(fs4::TryLockError::Error(source)) => return Err(failed(source)),
        }
        file.set_len(0).map_err(failed)?;
        file.rewind().map_err(failed)?;
        writeln!(file, "{}", std::process::id()).map_err(failed)?;
        Ok(StateLock { _file: file })
    }
}

/// Removes the temp files `write_atomic` left beside the state file `path` when a writer was killed
/// mid-write (they may hold password hashes). Only call it while holding the file's [`StateLock`]:
/// then no other writer of this file is running. Other files are never touched, nor temp files of
/// other files in the folder. Returns the names removed.
pub fn remove_stale_temp_files(path: &Path) -> Vec<PathBuf> {
    let dir = folder_of(path);
    let stem = temp_stem(path);
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // A regular file only, not followed through a link.
        if !is_temp_of(stem, name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let stale = entry.path();
        match std::fs::remove_file(&stale) {
            Ok(()) => removed.push(stale),
            Err(e) => tracing::warn!(file = %stale.display(), error = %e, "a stale temp file of the state file stays"),
        }
    }
    removed
}

/// Writes the registry's rooms to its file, one write at a time and always the latest snapshot.
#[derive(Clone)]
pub struct StateFile {
    path: Arc<PathBuf>,
    /// Held for writing, so writes land one at a time. `None` once the hub has stopped and let the
    /// file go (see [`StateFile::release`]): another hub may own it now, so nothing more is written.
    /// An `Arc`, so a write already under way keeps the lock until it has finished.
    lock: Arc<tokio::sync::Mutex<Option<Arc<StateLock>>>>,
}

impl StateFile {
    /// Takes the file's lock, removes the temp files a killed writer left, and reads the rooms kept
    /// in it. Fails when another hub has the file, and then writes nothing.
    pub fn open(path: PathBuf) -> Result<(Self, Vec<StoredRoom>), StateError> {
        let lock = StateLock::acquire(&path)?;
        for stale in remove_stale_temp_files(&path) {
            tracing::info!(file = %stale.display(), "removed a temp file a stopped writer left");
        }
        let rooms = load(&path)?;
        let file = StateFile { path: Arc::new(path), lock: Arc::new(tokio::sync::Mutex::new(Some(Arc::new(lock)))) };
        Ok((file, rooms))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets the file go: waits for a write under way, then frees the lock, so a new hub can start on
    /// the file while handles on this one still live. Later saves write nothing.
    pub async fn release(&self) {
        self.lock.lock().await.take();
    }

    /// Saves the current rooms. The snapshot is taken after the write lock is held, so writes land
    /// in order and the last one is always the newest state.
    pub async fn save(&self, registry: &Registry) -> Result<(), StateError> {
        let guard = self.lock.lock().await;
        let Some(held) = guard.as_ref().map(Arc::clone) else {
            tracing::debug!("the hub has stopped: its rooms are not saved again");
            return Ok(());
        };
        let file = FileV1 { version: VERSION, rooms: registry.stored_rooms() };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| StateError::Write { path: (*self.path).clone(), source: std::io::Error::other(e) })?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let _held = held;
            write_atomic(&path, &bytes)
        })
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

    #[test]
    fn temp_names_are_matched_exactly() {
        assert!(is_temp_of("rooms.json", ".rooms.json.123.tmp"));
        assert!(is_temp_of("rooms.json", ".rooms.json.4294967295.tmp"));
        for other in [
            "rooms.json",
            "rooms.json.lock",
            ".rooms.json.tmp",
            ".rooms.json..tmp",
            ".rooms.json.12a.tmp",
            ".rooms.json.123.tmp.bak",
            "rooms.json.123.tmp",
            ".other.json.123.tmp",
            ".rooms.json.old.123.tmp",
            ".xrooms.json.123.tmp",
        ] {
            assert!(!is_temp_of("rooms.json", other), "{other}");
        }
    }

    #[test]
    fn the_name_the_writer_gives_is_the_name_the_clean_up_matches() {
        let path = Path::new("some/folder/hub-rooms.json");
        let written = format!(".{}.{}.tmp", temp_stem(path), std::process::id());
        assert!(is_temp_of(temp_stem(path), &written), "{written}");
    }

    #[test]
    fn only_this_files_stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("rooms.json");
        let keep = ["rooms.json", "rooms.json.lock", ".other.json.77.tmp", ".rooms.json.tmp", "notes.txt"];
        for name in keep.iter().chain(&[".rooms.json.77.tmp", ".rooms.json.4242.tmp"]) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        // A folder with a temp file's name is not a temp file.
        std::fs::create_dir(dir.path().join(".rooms.json.99.tmp")).unwrap();
        let mut removed: Vec<_> = remove_stale_temp_files(&state)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(removed, [".rooms.json.4242.tmp", ".rooms.json.77.tmp"]);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want: Vec<_> = keep.iter().map(|s| s.to_string()).chain([".rooms.json.99.tmp".to_string()]).collect();
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn lock_path_is_beside_the_file() {
        assert_eq!(lock_path(Path::new("a/b/rooms.json")), Path::new("a/b/rooms.json.lock"));
    }

    #[test]
    fn a_second_lock_on_one_file_is_refused_with_the_holders_pid_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("rooms.json");
        let first = StateLock::acquire(&state).unwrap();
        assert_eq!(std::fs::read_to_string(lock_path(&state)).unwrap().trim(), std::process::id().to_string());
        // flock locks belong to the open file, so a second open in the same process conflicts too.
        match StateLock::acquire(&state) {
            Err(e @ StateError::InUse { pid: Some(pid), .. }) => {
                assert_eq!(pid, std::process::id());
                let message = e.to_string();
                assert!(message.contains(&state.display().to_string()), "{message}");
                assert!(message.contains(&format!("pid {pid}")), "{message}");
            }
            other => panic!("expected InUse with a pid, got {other:?}"),
        }
        assert!(!state.exists(), "the refused lock wrote nothing");
        drop(first);
        let again = StateLock::acquire(&state).unwrap();
        drop(again);
    }

    #[test]
    fn a_folder_is_not_a_state_file_and_gets_no_lock_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("rooms");
        std::fs::create_dir(&folder).unwrap();
        assert!(matches!(StateLock::acquire(&folder), Err(StateError::Read { .. })));
        assert!(!lock_path(&folder).exists());
    }

    #[tokio::test]
    async fn a_released_state_file_is_free_for_another_and_written_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("rooms.json");
        let (file, rooms) = StateFile::open(state.clone()).unwrap();
        assert!(rooms.is_empty());
        assert!(matches!(StateFile::open(state.clone()), Err(StateError::InUse { .. })));
        file.release().await;
        let (_other, _) = StateFile::open(state.clone()).unwrap();
        let registry = Registry::new(
            crate::hub::EventBus::new(16, 16),
            crate::hub::HealthRules {
                participant_timeout: std::time::Duration::from_secs(30),
                offline_retention: std::time::Duration::from_secs(60),
                room_ttl: None,
            },
            Vec::new(),
        );
        file.save(&registry).await.unwrap();
        assert!(!state.exists(), "a hub that let its file go writes nothing more");
    }
}
