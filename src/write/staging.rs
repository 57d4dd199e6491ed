//! The local staging area under `--cache-dir`: one plain file per written version, plus a small
//! JSON sidecar per queued upload so a later start can replay what was not uploaded yet.
//!
//! Layout (all in one flat folder, mode 0700):
//! - `stage-<pid>-<seq>-<random>`: the bytes of one version of one file, written by the fs.
//! - `stage-...job.json`: written by the upload queue when that version is submitted, removed (with the
//!   staged file) once it is uploaded or superseded. Its presence means "close() promised this upload".
//!
//! Replay after a crash: `Staging::journaled_jobs()` lists every sidecar whose staged file still exists,
//! with the target it names; the fs submits each of them to a fresh `UploadQueue` (new keys). Staged
//! files without a sidecar were never closed (or were superseded while the process died) and carry no
//! promise; they are left for the user to inspect rather than silently deleted.
//! Known gap: a crash between a successful upload and the sidecar's removal replays an upload
//! that already happened; it then lands as a rapid upload beside the first (a visible duplicate
//! with the same content), never as lost data.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::write::upload::UploadTarget;

const SIDECAR_SUFFIX: &str = ".job.json";

/// The staging folder.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
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
        Ok(Staging {
            dir,
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

    /// Every journaled (submitted, not yet uploaded) job whose staged file still exists.
    /// Unreadable sidecars are skipped with a warning, never fatal.
    pub fn journaled_jobs(&self) -> Result<Vec<(UploadTarget, PathBuf)>> {
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(staged_name) = name.strip_suffix(SIDECAR_SUFFIX) else {
                continue;
            };
            let staged = self.dir.join(staged_name);
            if !staged.exists() {
                continue;
            }
            match read_sidecar(&path) {
                Ok(job) => jobs.push((job.into_target(), staged)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "skipping unreadable upload journal entry: {e}")
                }
            }
        }
        jobs.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(jobs)
    }
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
}

impl JobRecord {
    pub fn new(target: &UploadTarget, size: u64) -> JobRecord {
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

/// Write the sidecar atomically (temp file, fsync, rename) so a crash never leaves half a record.
pub fn write_sidecar(staged: &Path, target: &UploadTarget) -> Result<()> {
    let size = std::fs::metadata(staged).map(|m| m.len()).unwrap_or(0);
    let record = JobRecord::new(target, size);
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let path = sidecar_path(staged);
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
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

pub fn read_sidecar(path: &Path) -> Result<JobRecord> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse(format!("journal entry: {e}")))
}

/// Remove a staged file and its sidecar; already-missing files are fine.
pub fn remove_staged(staged: &Path) {
    for p in [sidecar_path(staged), staged.to_path_buf()] {
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
    fn sidecars_round_trip_and_are_replayable() {
        let tmp = tempfile::tempdir().unwrap();
        let st = Staging::new(tmp.path().to_path_buf()).unwrap();
        let mut f = st.create().unwrap();
        f.file.write_all(b"abc").unwrap();
        let target = UploadTarget {
            parent_file_id: "root".into(),
            name: "x.txt".into(),
            mtime: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            replaces: Some("old".into()),
        };
        write_sidecar(&f.path, &target).unwrap();
        let rec = read_sidecar(&sidecar_path(&f.path)).unwrap();
        assert_eq!(rec.size, 3);
        // A sidecar without staged file, and a garbage one, are ignored.
        std::fs::write(tmp.path().join("gone.job.json"), b"{}").unwrap();
        let g = st.create().unwrap();
        std::fs::write(sidecar_path(&g.path), b"not json").unwrap();
        let _ = st.create().unwrap(); // never submitted: no sidecar, not replayed

        let jobs = st.journaled_jobs().unwrap();
        assert_eq!(jobs, vec![(target, f.path.clone())]);

        remove_staged(&f.path);
        assert!(!f.path.exists());
        assert!(!sidecar_path(&f.path).exists());
        remove_staged(&f.path); // idempotent
    }
}
