//! Where control sockets live. One socket per mount, `<hash>.sock`, where the hash is of the
//! canonical mount point, beside `<hash>.json` naming the mount point and the daemon's pid, so a
//! client lists the mounts by reading the index files and finds a path's mount by prefix.
//!
//! The daemon's directory: `$RUNTIME_DIRECTORY` (systemd's RuntimeDirectory=), else
//! `$XDG_RUNTIME_DIR/alipanfs`, else `/run/alipanfs` for root, else `/tmp/alipanfs-<uid>`.
//! Clients look there and in `/run/alipanfs` and its subfolders (system units' instances).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// The index file beside a socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    pub mountpoint: PathBuf,
    pub pid: u32,
    pub socket: PathBuf,
}

/// The directory this process's mounts put their sockets in.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd passes a colon-separated list when the unit names several.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("alipanfs");
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        PathBuf::from("/run/alipanfs")
    } else {
        std::env::temp_dir().join(format!("alipanfs-{uid}"))
    }
}

/// The directories a client searches, most specific first, without duplicates.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![runtime_dir()];
    let system = PathBuf::from("/run/alipanfs");
    dirs.push(system.clone());
    if let Ok(entries) = std::fs::read_dir(&system) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The socket's file name stem for a canonical mount point.
pub fn stem(mountpoint: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha1::digest(mountpoint.as_os_str().as_bytes());
    hex::encode(&digest[..8])
}

/// Paths of the socket and its index file in `dir`.
pub fn socket_paths(dir: &Path, mountpoint: &Path) -> (PathBuf, PathBuf) {
    let stem = stem(mountpoint);
    (
        dir.join(format!("{stem}.sock")),
        dir.join(format!("{stem}.json")),
    )
}

/// The mounts found in the search directories, and the directories that could not be read
/// for lack of permission (so "not found" can say why).
pub fn discover() -> (Vec<IndexEntry>, Vec<PathBuf>) {
    let mut found = Vec::new();
    let mut denied = Vec::new();
    for dir in search_dirs() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied.push(dir);
                continue;
            }
            Err(_) => continue,
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        if let Ok(entry) = serde_json::from_slice::<IndexEntry>(&bytes) {
                            if process_is_gone(entry.pid) {
                                // A daemon that was killed left them: clean up, say nothing.
                                let _ = std::fs::remove_file(&entry.socket);
                                let _ = std::fs::remove_file(&path);
                                continue;
                            }
                            found.push(entry);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied.push(path),
                    Err(_) => {}
                }
            }
        }
    }
    found.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    found.dedup_by(|a, b| a.mountpoint == b.mountpoint);
    (found, denied)
}

/// No process has this pid any more (a killed daemon's index is stale).
fn process_is_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// `path` made absolute and resolved, as far as this user may resolve it (a mount of another
/// user may not be searchable: then lexically).
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The mount holding `path` (the longest mount point that is a prefix of it) and the path
/// relative to its root ("" for the root).
pub fn mount_of<'a>(mounts: &'a [IndexEntry], path: &Path) -> Option<(&'a IndexEntry, String)> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.as_os_str().len())
        .map(|m| {
            let rel = path
                .strip_prefix(&m.mountpoint)
                .unwrap_or(Path::new(""))
                .to_string_lossy()
                .into_owned();
            (m, rel)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_belongs_to_the_longest_mount_point_above_it() {
        let m = |p: &str| IndexEntry {
            mountpoint: p.into(),
            pid: 1,
            socket: "/x".into(),
        };
        let mounts = vec![m("/mnt/a"), m("/mnt/a/b"), m("/mnt/ab")];
        let (found, rel) = mount_of(&mounts, Path::new("/mnt/a/b/c/d.txt")).unwrap();
        assert_eq!(found.mountpoint, Path::new("/mnt/a/b"));
        assert_eq!(rel, "c/d.txt");
        let (found, rel) = mount_of(&mounts, Path::new("/mnt/a")).unwrap();
        assert_eq!(found.mountpoint, Path::new("/mnt/a"));
        assert_eq!(rel, "");
        assert!(mount_of(&mounts, Path::new("/mnt/abc")).is_none());
        assert_ne!(stem(Path::new("/mnt/a")), stem(Path::new("/mnt/b")));
    }
}
