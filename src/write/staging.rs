//! The local staging area under `--cache-dir`: one plain file per written version, plus a small
//! JSON journal entry (sidecar) per version, so a later start can upload what a crash left.
//!
//! Layout (`<cache-dir>/staging`, mode 0700):
//! - `stage-<pid>-<seq>-<random>`: the bytes of one version of one file, written by the fs.
//! - `stage-...job.json`: the journal entry of that version: where it goes (parent file_id, name,
//!   the file it replaces, mtime) and whether its content is *closed*. The fs writes it when the
//!   staging file is created (closed: false), rewrites it when the file is renamed, and marks it
//!   closed, durably (data fsync, then the entry written to a temp file, fsynced, renamed, and the
//!   folder fsynced), at every FLUSH and fsync: close() waits for FLUSH, so once close() has
//!   returned the version survives a crash or a power cut. The upload queue rewrites it when a
//!   queued job is retargeted, and removes it with the staged file once the upload is verified.
//!
//! Locks: each staged file's entry has its own lock (`JournalEntry`, level
//! `Level::JOURNAL_ENTRY`, the outermost of the daemon), taken around the read of the target and
//! the write of that one entry, so a rename and a FLUSH of the same version write in the order
//! they read; `JOURNAL_LOCKS` (level `WRITE_JOURNAL`) only finds or drops those locks, briefly,
//! with nothing else held. The fdatasync of the staged bytes comes before any lock; only the
//! entry's own small write and fsyncs happen under its lock, which nothing but writers of that
//! same entry take (never lookup, readdir, getattr, nor the release of another file).
//!
//! Recovery at start (`Staging::recover`): every closed entry whose staged file exists is queued
//! again under its current name (a file still open at the crash is uploaded as of its last
//! flush). A staged file with no entry, an unreadable one, or one never closed carries no
//! promise but may be someone's data: it is moved to `<cache-dir>/lost+found/` with one WARN
//! line, never deleted silently.
//! A crash between a successful upload and the entry's removal replays an upload that already
//! happened: the queue then finds it in its folder (same name, size and SHA-1) and adopts it
//! instead of uploading a duplicate (`upload::adopt_landed`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sync::{Level, Mutex};
use crate::write::upload::UploadTarget;

const SIDECAR_SUFFIX: &str = ".job.json";

/// The staging folder.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    /// Where staged files that carry no upload promise are moved at start.
    lost_found: PathBuf,
    seq: AtomicU64,
}

/// A new, empty staging file, opened read+write.
#[derive(Debug)]
pub struct StagedFile {
    pub path: PathBuf,
    pub file: File,
}

impl Staging {
    /// Create (if needed) and check the staging folder. It holds unsent user data, so it is
    /// private to the user (0700). A folder we cannot create or write into is a configuration
    /// error naming the folder, reported at mount time rather than at the first write.
    pub fn new(dir: PathBuf) -> Result<Staging> {
        let unusable = |what: &str, e: std::io::Error| {
            Error::Config(format!(
                "staging folder {} is unusable ({what}): {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(&dir).map_err(|e| unusable("cannot create it", e))?;
        let meta = std::fs::metadata(&dir).map_err(|e| unusable("cannot stat it", e))?;
        if !meta.is_dir() {
            return Err(Error::Config(format!(
                "staging folder {} is not a directory",
                dir.display()
            )));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| unusable("cannot set mode 0700", e))?;
        // Probe that we can really create files there (read-only mounts, foreign owner, ...).
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(|e| unusable("cannot create files in it", e))?;
        let _ = std::fs::remove_file(&probe);
        let lost_found = dir
            .parent()
            .map_or_else(|| dir.join("lost+found"), |p| p.join("lost+found"));
        Ok(Staging {
            dir,
            lost_found,
            seq: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new empty staging file with a name unique across processes and restarts.
    pub fn create(&self) -> Result<StagedFile> {
        for _ in 0..8 {
            let name = format!(
                "stage-{}-{}-{:016x}",
                std::process::id(),
                self.seq.fetch_add(1, Ordering::Relaxed),
                rand::random::<u64>()
            );
            let path = self.dir.join(name);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => return Ok(StagedFile { path, file }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Err(Error::Io(std::io::Error::other(
            "could not find a free staging file name",
        )))
    }

    pub fn lost_found(&self) -> &Path {
        &self.lost_found
    }

    /// What a previous run left: the closed versions to upload (sorted by staged path, which
    /// is creation order within one run). Staged files without a closed journal entry go to
    /// lost+found (one WARN each); orphan entries and temp files are removed.
    pub fn recover(&self) -> Result<Vec<(UploadTarget, PathBuf)>> {
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if let Some(staged_name) = name
                .strip_suffix(SIDECAR_SUFFIX)
                .or_else(|| name.strip_suffix(super::resume::SESSION_SUFFIX))
            {
                if !self.dir.join(staged_name).exists() {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if !name.starts_with("stage-") {
                continue;
            }
            match read_sidecar(&sidecar_path(&path)) {
                Ok(job) if job.closed => jobs.push((job.into_target(), path)),
                Ok(job) => self.keep_lost(
                    &path,
                    &format!(
                        "{} was never closed before the previous run stopped",
                        job.name
                    ),
                ),
                Err(e) => self.keep_lost(&path, &format!("no readable journal entry ({e})")),
            }
        }
        Ok(newest_per_name(jobs))
    }

    /// Move a staged file that carries no upload promise to lost+found, saying so once.
    fn keep_lost(&self, staged: &Path, why: &str) {
        let moved = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700) // someone's unsent data, as private as the staging folder
            .create(&self.lost_found)
            .and_then(|()| {
                let to = self.lost_found.join(staged.file_name().unwrap_or_default());
                std::fs::rename(staged, &to).map(|()| to)
            });
        match moved {
            Ok(to) => {
                let _ = std::fs::remove_file(sidecar_path(staged));
                super::resume::forget(staged);
                tracing::warn!(kept = %to.display(), "a staged file was not uploaded: {why}; it is kept for you to inspect")
            }
            Err(e) => {
                tracing::warn!(staged = %staged.display(), "a staged file was not uploaded ({why}) and could not be moved to lost+found: {e}")
            }
        }
    }
}

/// Two closed versions of one file (an older one still queued when a newer one was closed):
/// only the newest is uploaded, as the queue would have done; the older staged files go.
fn newest_per_name(mut jobs: Vec<(UploadTarget, PathBuf)>) -> Vec<(UploadTarget, PathBuf)> {
    let written = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    jobs.sort_by_cached_key(|(_, staged)| (written(staged), staged.clone()));
    let mut newest: std::collections::HashMap<(String, String), usize> = Default::default();
    for (i, (target, _)) in jobs.iter().enumerate() {
        newest.insert((target.parent_file_id.clone(), target.name.clone()), i);
    }
    let mut kept = Vec::new();
    for (i, (target, staged)) in jobs.into_iter().enumerate() {
        if newest[&(target.parent_file_id.clone(), target.name.clone())] == i {
            kept.push((target, staged));
        } else {
            tracing::info!(name = %target.name, staged = %staged.display(), "an older version superseded by a newer closed one is not uploaded");
            remove_staged(&staged);
        }
    }
    kept
}

/// What a sidecar holds: enough to redo the upload without the fs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub parent_file_id: String,
    pub name: String,
    #[serde(default)]
    pub replaces: Option<String>,
    /// Unix milliseconds.
    #[serde(default)]
    pub mtime: Option<u64>,
    #[serde(default)]
    pub size: u64,
    /// The content was complete at a FLUSH or fsync (entries written before this field existed
    /// were written at submit, so closed).
    #[serde(default = "closed_by_default")]
    pub closed: bool,
}

fn closed_by_default() -> bool {
    true
}

impl JobRecord {
    pub fn new(target: &UploadTarget, size: u64, closed: bool) -> JobRecord {
        JobRecord {
            parent_file_id: target.parent_file_id.clone(),
            name: target.name.clone(),
            replaces: target.replaces.clone(),
            mtime: target.mtime.and_then(|t| {
                t.duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64)
            }),
            size,
            closed,
        }
    }

    pub fn into_target(self) -> UploadTarget {
        UploadTarget {
            parent_file_id: self.parent_file_id,
            name: self.name,
            mtime: self.mtime.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            replaces: self.replaces,
        }
    }
}

/// `<staged>.job.json`.
pub fn sidecar_path(staged: &Path) -> PathBuf {
    let mut s = staged.as_os_str().to_owned();
    s.push(SIDECAR_SUFFIX);
    PathBuf::from(s)
}

/// The lock of each staged file's journal entry with a writer now (see the module doc).
static JOURNAL_LOCKS: Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>> =
    Mutex::new(Level::WRITE_JOURNAL, "journal entry locks", BTreeMap::new());

/// The lock of one staged file's journal entry: serialises the read-modify-write of that entry
/// (a rename and a FLUSH of the same version), and its removal. Dropped from `JOURNAL_LOCKS`
/// when its last user is done, so the map holds only entries being written.
struct JournalEntry {
    staged: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl JournalEntry {
    fn of(staged: &Path) -> JournalEntry {
        let lock = JOURNAL_LOCKS
            .lock()
            .entry(staged.to_path_buf())
            .or_insert_with(|| Arc::new(Mutex::new(Level::JOURNAL_ENTRY, "journal entry", ())))
            .clone();
        JournalEntry {
            staged: staged.to_path_buf(),
            lock,
        }
    }
}

impl Drop for JournalEntry {
    fn drop(&mut self) {
        let mut all = JOURNAL_LOCKS.lock();
        // Only the map and this user hold it: nobody else writes or waits for this entry.
        if Arc::strong_count(&self.lock) == 2 {
            all.remove(&self.staged);
        }
    }
}

/// How a journal entry is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Closed content: the data is fsynced and the entry made durable before this returns.
    Now,
    /// Still being written: the entry says where it goes, without fsync.
    NotYet,
    /// Keep what the entry says (a retarget); durable only if it was closed.
    Keep,
    /// Closed, and the bytes were made durable by an earlier `Now` with nothing written since
    /// (RELEASE after the FLUSH of close()): the entry is rewritten, durably, only if it would
    /// say something else, so a closed file costs its fsyncs once, not twice.
    Synced,
}

/// Write the journal entry of `staged` atomically (temp file, rename): a crash never leaves
/// half an entry.
pub fn write_sidecar(staged: &Path, target: &UploadTarget, closed: Closed) -> Result<()> {
    write_sidecar_of(staged, closed, || Some(target.clone()))
}

/// `write_sidecar` with the target read under the journal's lock (None: write nothing), so two
/// writers that read the target from shared state (a FLUSH and a rename of the same file) can
/// only write in the order they read it: the last entry written is the newest target.
pub fn write_sidecar_of(
    staged: &Path,
    closed: Closed,
    target: impl FnOnce() -> Option<UploadTarget>,
) -> Result<()> {
    crate::sync::assert_io_allowed("journal fsync");
    // The bytes first, before any lock: an entry must never promise content the disk does
    // not hold, and a big file's fdatasync must keep no other writer waiting. Its error counts
    // only if there is an entry to write (a file deleted meanwhile has none).
    let synced = match closed {
        Closed::Now => File::open(staged).and_then(|f| f.sync_data()),
        _ => Ok(()),
    };
    let entry = JournalEntry::of(staged);
    let _serial = entry.lock.lock();
    let Some(target) = target() else {
        return Ok(());
    };
    synced?;
    let target = &target;
    let path = sidecar_path(staged);
    if closed == Closed::Synced {
        let size = std::fs::metadata(staged)?.len();
        if read_sidecar(&path).is_ok_and(|r| r == JobRecord::new(target, size, true)) {
            return Ok(());
        }
    }
    let closed_as = closed;
    let closed = match closed {
        Closed::Now | Closed::Synced => true,
        Closed::NotYet => false,
        Closed::Keep => read_sidecar(&path).is_ok_and(|r| r.closed),
    };
    if closed && !matches!(closed_as, Closed::Now) {
        // Synced or Keep of a closed entry: the bytes are durable already, this costs nothing
        // unless something was written since.
        File::open(staged)?.sync_data()?;
    }
    let size = std::fs::metadata(staged).map(|m| m.len()).unwrap_or(0);
    let record = JobRecord::new(target, size, closed);
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&json)?;
        if closed {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, &path)?;
    if closed {
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

pub fn read_sidecar(path: &Path) -> Result<JobRecord> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse(format!("journal entry: {e}")))
}

/// Remove a staged file and its sidecar; already-missing files are fine. Open handles keep
/// reading the bytes through their descriptors.
pub fn remove_staged(staged: &Path) {
    let entry = JournalEntry::of(staged);
    let _serial = entry.lock.lock();
    let session = super::resume::session_path(staged);
    for p in [sidecar_path(staged), session, staged.to_path_buf()] {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), "could not remove staging file: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    /// The journal's fsyncs never run under a lock the lookup path takes (debug builds check).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "journal fsync while holding a lock the lookup path takes")]
    fn journaling_under_a_lookup_lock_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let st = Staging::new(tmp.path().join("staging")).unwrap();
        let f = st.create().unwrap();
        let gate = crate::sync::Mutex::new(Level::FS_GATE, "test gate", ());
        let _held = gate.lock();
        let target = UploadTarget {
            parent_file_id: "root".into(),
            name: "x".into(),
            mtime: None,
            replaces: None,
        };
        let _ = write_sidecar(&f.path, &target, Closed::Now);
    }

    /// Entry locks live only while their entry is written.
    #[test]
    fn journal_entry_locks_are_dropped_after_use() {
        let tmp = tempfile::tempdir().unwrap();
        let st = Staging::new(tmp.path().join("staging")).unwrap();
        let f = st.create().unwrap();
        let target = UploadTarget {
            parent_file_id: "root".into(),
            name: "x".into(),
            mtime: None,
            replaces: None,
        };
        write_sidecar(&f.path, &target, Closed::Now).unwrap();
        remove_staged(&f.path);
        assert!(!JOURNAL_LOCKS.lock().contains_key(&f.path));
    }

    #[test]
    fn creates_private_dir_and_unique_read_write_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/staging");
        let st = Staging::new(dir.clone()).unwrap();
        assert_eq!(st.dir(), dir);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let mut a = st.create().unwrap();
        let b = st.create().unwrap();
        assert_ne!(a.path, b.path);
        a.file.write_all(b"hello").unwrap();
        a.file.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        a.file.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let fmode = std::fs::metadata(&a.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(fmode, 0o600);
    }

    #[test]
    fn unusable_dir_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = Staging::new(file.clone()).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        let err = Staging::new(file.join("sub")).unwrap_err().to_string();
        assert!(err.contains("staging folder"), "{err}");
    }

    #[test]
    fn a_synced_entry_is_rewritten_only_when_it_would_change() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let st = Staging::new(tmp.path().join("staging")).unwrap();
        let mut f = st.create().unwrap();
        f.file.write_all(b"abc").unwrap();
        let target = UploadTarget {
            parent_file_id: "root".into(),
            name: "x.txt".into(),
            mtime: None,
            replaces: None,
        };
        let entry = sidecar_path(&f.path);
        let inode = || std::fs::metadata(&entry).unwrap().ino();
        write_sidecar(&f.path, &target, Closed::NotYet).unwrap();
        // Not closed yet: Synced cannot trust it and writes a closed entry.
        let before = inode();
        write_sidecar(&f.path, &target, Closed::Synced).unwrap();
        assert!(read_sidecar(&entry).unwrap().closed);
        assert_ne!(inode(), before, "rewritten (temp file + rename)");
        // Closed and the same: left as it is.
        let before = inode();
        write_sidecar(&f.path, &target, Closed::Synced).unwrap();
        assert_eq!(
            inode(),
            before,
            "an identical closed entry is not written again"
        );
        // A new name (a rename after the FLUSH) is written.
        let renamed = UploadTarget {
            name: "y.txt".into(),
            ..target.clone()
        };
        write_sidecar(&f.path, &renamed, Closed::Synced).unwrap();
        assert_ne!(inode(), before);
        assert_eq!(read_sidecar(&entry).unwrap().name, "y.txt");
    }

    #[test]
    fn closed_entries_are_replayed_and_the_rest_goes_to_lost_and_found() {
        let tmp = tempfile::tempdir().unwrap();
        let st = Staging::new(tmp.path().join("staging")).unwrap();
        let mut f = st.create().unwrap();
        f.file.write_all(b"abc").unwrap();
        let target = UploadTarget {
            parent_file_id: "root".into(),
            name: "x.txt".into(),
            mtime: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            replaces: Some("old".into()),
        };
        write_sidecar(&f.path, &target, Closed::NotYet).unwrap();
        assert!(!read_sidecar(&sidecar_path(&f.path)).unwrap().closed);
        write_sidecar(&f.path, &target, Closed::Now).unwrap();
        // A retarget keeps the entry closed.
        let renamed = UploadTarget {
            name: "y.txt".into(),
            ..target.clone()
        };
        write_sidecar(&f.path, &renamed, Closed::Keep).unwrap();
        let rec = read_sidecar(&sidecar_path(&f.path)).unwrap();
        assert_eq!(
            (rec.size, rec.closed, rec.name.as_str()),
            (3, true, "y.txt")
        );

        // An entry without staged file is removed; a garbage one, one never closed, and a
        // staged file without entry go to lost+found.
        let orphan = st.dir().join("gone.job.json");
        std::fs::write(&orphan, b"{}").unwrap();
        let garbage = st.create().unwrap();
        std::fs::write(sidecar_path(&garbage.path), b"not json").unwrap();
        let open = st.create().unwrap();
        write_sidecar(&open.path, &target, Closed::NotYet).unwrap();
        let bare = st.create().unwrap();

        let jobs = st.recover().unwrap();
        assert_eq!(jobs, vec![(renamed, f.path.clone())]);
        assert!(!orphan.exists());
        for lost in [&garbage.path, &open.path, &bare.path] {
            assert!(!lost.exists() && !sidecar_path(lost).exists());
            assert!(st.lost_found().join(lost.file_name().unwrap()).exists());
        }
        assert_eq!(st.lost_found(), tmp.path().join("lost+found"));

        remove_staged(&f.path);
        assert!(!f.path.exists());
        assert!(!sidecar_path(&f.path).exists());
        remove_staged(&f.path); // idempotent
    }
}
