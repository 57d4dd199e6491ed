//! The metadata store: what a mount learnt from the drive and may reuse after a remount.
//! Folder listings (with every child's attributes) and download URLs (with their expiry) live
//! under `<cache-dir>/meta/<user_id>.<drive_id>/`, so two drives sharing a cache dir never mix:
//!
//! - `dirs/<folder>.json`: one folder's listing as the drive gave it, with the wall-clock time
//!   it was fetched. Served without a list call while younger than `--dir-cache-ttl`, across
//!   remounts (`listings`). Keyed by the folder's file_id, so the mount's root folder id only
//!   decides where the walk starts. Written by one thread from a bounded queue (`saver`), so an
//!   `ls` never waits for the store's fsyncs; the queue is flushed at unmount.
//! - `urls.log`: the download URLs asked with getDownloadUrl, one line each, loaded at start
//!   while still valid beyond the renewal margin (`urls`).
//!
//! Locks: `listings::Listings::drops` (`META_LISTINGS`, 310: drop clock, bounded to 4,096
//! remembered folders) and `urls::UrlLog::state` (`META_URLS`, 320); both may be held across a
//! local file write (they are above `IO_FREE_ABOVE`: the lookup path holds none of its own).
//!
//! Why plain files and not an embedded database (redb, sled): the data is two simple shapes,
//! a folder snapshot always written and read whole, and an append-only log of URLs. A snapshot
//! written to a temporary file, fsynced and renamed can never be seen torn, dropping a folder
//! is one unlink, and a damaged file costs one folder (or the URLs), never the store. A
//! database would add a dependency for no query we need, and redb or sled also lock their file
//! for one process, where two mounts may share a cache dir.
//!
//! The store holds signed URLs: its folders are 0700 and its files 0600. Nothing here logs a
//! URL. Anything unreadable is dropped with one WARN and fetched again; the store never fails
//! a mount.

mod listings;
mod saver;
mod urls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

pub use listings::Ticket;

use crate::drive::{DownloadUrl, RemoteItem};

/// The on-disk metadata of one drive (see the module doc).
pub struct MetaStore {
    dir: PathBuf,
    listings: Arc<listings::Listings>,
    saver: saver::Saver,
    urls: urls::UrlLog,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore").field("dir", &self.dir).finish()
    }
}

/// What `alipanfs about` prints of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub dir: PathBuf,
    pub folders: usize,
    pub urls: usize,
}

impl MetaStore {
    /// Open (creating it) the store of drive `drive_id` of user `user_id` under `cache_dir`.
    /// Listings older than `dir_cache_ttl` are removed; URLs that would be renewed within
    /// `url_margin` are left out. None, after one WARN, when the folder cannot be made.
    pub fn open(
        cache_dir: &Path,
        user_id: &str,
        drive_id: &str,
        dir_cache_ttl: Duration,
        url_margin: Duration,
    ) -> Option<Arc<MetaStore>> {
        let dir = Self::dir_of(cache_dir, user_id, drive_id);
        let made = private_dir(&cache_dir.join("meta"))
            .and_then(|_| private_dir(&dir))
            .and_then(|_| private_dir(&dir.join(listings::DIRS)));
        if let Err(e) = made {
            warn!(dir = %dir.display(), error = %e, "no metadata store: listings and download URLs will not outlive this mount");
            return None;
        }
        let listings = Arc::new(listings::Listings::open(
            dir.join(listings::DIRS),
            dir_cache_ttl,
        ));
        Some(Arc::new(MetaStore {
            saver: saver::Saver::start(listings.clone()),
            listings,
            urls: urls::UrlLog::open(dir.join(urls::FILE), url_margin),
            dir,
        }))
    }

    /// Where the store of a drive lives.
    pub fn dir_of(cache_dir: &Path, user_id: &str, drive_id: &str) -> PathBuf {
        cache_dir.join("meta").join(format!(
            "{}.{}",
            file_name_of(user_id),
            file_name_of(drive_id)
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counts of what the store of a drive holds, read without changing anything (for
    /// `alipanfs about`, while a mount may be running).
    pub fn summary(cache_dir: &Path, user_id: &str, drive_id: &str) -> Summary {
        let dir = Self::dir_of(cache_dir, user_id, drive_id);
        Summary {
            folders: listings::count(&dir.join(listings::DIRS)),
            urls: urls::count_valid(&dir.join(urls::FILE)),
            dir,
        }
    }

    // ----- listings ----------------------------------------------------------------------------

    /// The stored listing of a folder and how long it stays fresh, if younger than `ttl`.
    /// Blocking (reads a file).
    pub fn listing(&self, folder_id: &str, ttl: Duration) -> Option<(Vec<RemoteItem>, Duration)> {
        self.listings.load(folder_id, ttl)
    }

    /// Taken before a list call whose answer may be stored: a folder dropped after this
    /// moment is not stored from that answer.
    pub fn ticket(&self) -> Ticket {
        self.listings.ticket()
    }

    /// Store a folder's listing as fetched (unless the folder was dropped since `ticket`), on
    /// the store's own thread: never waits (see `saver`).
    pub fn save_listing(&self, ticket: Ticket, folder_id: &str, items: Vec<RemoteItem>) {
        self.saver.save(ticket, folder_id, items)
    }

    /// Waits (at most `timeout`) until the listings queued so far are stored (at unmount).
    /// True if they are.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.saver.flush(timeout)
    }

    /// The mount changed the folder (or is about to, by an upload): its stored listing goes.
    pub fn drop_listing(&self, folder_id: &str) {
        self.listings.drop_folder(folder_id)
    }

    /// Every stored listing goes (changes made elsewhere are not all known). Blocking.
    pub fn drop_all_listings(&self) {
        self.listings.drop_all()
    }

    /// Where the change poller keeps its position across mounts.
    pub fn poll_position_file(&self) -> PathBuf {
        self.dir().join("poll.json")
    }

    // ----- download URLs -----------------------------------------------------------------------

    /// The URLs still valid beyond the renewal margin at open, to seed the URL cache. Once.
    pub fn take_urls(&self) -> Vec<(String, DownloadUrl)> {
        self.urls.take_loaded()
    }

    /// A URL just asked with getDownloadUrl.
    pub fn remember_url(&self, file_id: &str, url: &DownloadUrl) {
        self.urls.append(file_id, url)
    }
}

/// A file name for an id: the id itself when it is short and plain (the API's ids are hex
/// strings, and `root`), else a SHA-1 of it, so no id can name a path outside the store.
fn file_name_of(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        id.to_string()
    } else {
        format!("h{}", crate::hashing::sha1_hex(id.as_bytes()))
    }
}

/// Create `dir` with mode 0700, or bring an existing one to 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ids_become_plain_file_names() {
        assert_eq!(file_name_of("root"), "root");
        assert_eq!(file_name_of("6520a1b2c3d4"), "6520a1b2c3d4");
        for odd in ["../x", "a/b", "", &"x".repeat(65), "é"] {
            let name = file_name_of(odd);
            assert!(
                name.starts_with('h') && name.len() == 41,
                "{odd:?} -> {name}"
            );
        }
        assert_ne!(file_name_of("a/b"), file_name_of("a/c"));
    }

    #[test]
    fn two_drives_of_one_cache_dir_have_their_own_folders() {
        let cache = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let a = MetaStore::open(cache.path(), "u1", "d1", ttl, Duration::ZERO).unwrap();
        let b = MetaStore::open(cache.path(), "u1", "d2", ttl, Duration::ZERO).unwrap();
        assert_ne!(a.dir(), b.dir());
        for dir in [cache.path().join("meta"), a.dir().to_path_buf()] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }
}
