//! Folder listings on disk: `dirs/<folder>.json`, one file per folder, written whole.
//!
//! A stored listing must never show a state older than what the mount itself did: the fs core
//! drops a folder's file on every change it makes there (`drop_folder`), and a list call whose
//! answer is to be stored takes a `Ticket` first: if the folder is dropped after the ticket
//! (the change may have reached the drive after the list call saw it), the answer is not
//! stored. The check and the rename into place happen under one lock, so a drop is never
//! undone by a save that was already under way.

use crate::sync::{Level, Mutex};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::drive::{DownloadUrl, ItemKind, RemoteItem};
use crate::fs::lock;

/// The folder of listing files, inside a drive's store.
pub(super) const DIRS: &str = "dirs";
/// Bumped when the file format changes: other versions are ignored (and replaced).
const VERSION: u32 = 1;

/// The moment a list call began, in drop order (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

pub(super) struct Listings {
    dir: PathBuf,
    drops: Mutex<Drops>,
}

#[derive(Default)]
struct Drops {
    /// Counts tickets and drops.
    clock: u64,
    /// Folder id -> the clock at its last drop, for at most `DROPS_REMEMBERED` folders.
    last_drop: HashMap<String, u64>,
    /// Drops at or before this clock were forgotten: a ticket older than it stores nothing.
    forgotten_before: u64,
}

/// Folders whose last drop is remembered; past that, all are forgotten at once and tickets
/// taken before then store nothing (a listing not stored costs a list call later, no more).
const DROPS_REMEMBERED: usize = 4096;

impl Drops {
    /// Did `folder_id` change after `ticket` was taken (or may it have, as far as we remember)?
    fn changed_since(&self, folder_id: &str, ticket: Ticket) -> bool {
        ticket.0 < self.forgotten_before
            || self
                .last_drop
                .get(folder_id)
                .is_some_and(|&at| at > ticket.0)
    }

    fn record(&mut self, folder_id: &str) {
        self.clock += 1;
        if self.last_drop.len() >= DROPS_REMEMBERED {
            self.last_drop.clear();
            self.forgotten_before = self.clock;
        }
        self.last_drop.insert(folder_id.to_string(), self.clock);
    }
}

#[derive(Serialize, Deserialize)]
struct StoredListing {
    version: u32,
    folder_id: String,
    /// Wall clock, so the TTL holds across remounts.
    fetched_at: SystemTime,
    items: Vec<StoredItem>,
}

/// A `RemoteItem` as stored (the drive's types carry no serde).
#[derive(Serialize, Deserialize)]
struct StoredItem {
    file_id: String,
    parent_file_id: String,
    name: String,
    folder: bool,
    size: u64,
    content_hash: Option<String>,
    created_at: SystemTime,
    updated_at: SystemTime,
    local_modified_at: Option<SystemTime>,
    /// The short-lived URL a listing carries for small files, with its expiry.
    url: Option<(String, SystemTime)>,
    /// `.livp` stream sizes by name.
    #[serde(default)]
    streams: Vec<(String, u64)>,
}

impl From<&RemoteItem> for StoredItem {
    fn from(i: &RemoteItem) -> Self {
        StoredItem {
            file_id: i.file_id.clone(),
            parent_file_id: i.parent_file_id.clone(),
            name: i.name.clone(),
            folder: i.kind == ItemKind::Folder,
            size: i.size,
            content_hash: i.content_hash.clone(),
            created_at: i.created_at,
            updated_at: i.updated_at,
            local_modified_at: i.local_modified_at,
            url: i
                .download_url
                .as_ref()
                .map(|u| (u.url.clone(), u.expires_at)),
            streams: i.streams.clone(),
        }
    }
}

impl From<StoredItem> for RemoteItem {
    fn from(i: StoredItem) -> Self {
        RemoteItem {
            file_id: i.file_id,
            parent_file_id: i.parent_file_id,
            name: i.name,
            kind: if i.folder {
                ItemKind::Folder
            } else {
                ItemKind::File
            },
            size: i.size,
            content_hash: i.content_hash,
            created_at: i.created_at,
            updated_at: i.updated_at,
            local_modified_at: i.local_modified_at,
            download_url: i
                .url
                .map(|(url, expires_at)| DownloadUrl { url, expires_at }),
            streams: i.streams,
        }
    }
}

impl Listings {
    /// Listings older than `ttl` are removed (judged by the file's mtime, the time it was
    /// written, just after its fetch), so the folder does not grow with every folder ever seen.
    pub(super) fn open(dir: PathBuf, ttl: Duration) -> Listings {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= ttl)
                .unwrap_or(true);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        debug!(dir = %dir.display(), removed, "opened the stored listings");
        Listings {
            dir,
            drops: Mutex::new(Level::META_LISTINGS, "listing drops", Drops::default()),
        }
    }

    fn path_of(&self, folder_id: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", super::file_name_of(folder_id)))
    }

    pub(super) fn load(
        &self,
        folder_id: &str,
        ttl: Duration,
    ) -> Option<(Vec<RemoteItem>, Duration)> {
        let path = self.path_of(folder_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read a stored listing; listing the folder again");
                return None;
            }
        };
        let stored = match serde_json::from_slice::<StoredListing>(&bytes) {
            Ok(s) if s.version == VERSION && s.folder_id == folder_id => s,
            Ok(_) => {
                debug!(file = %path.display(), "stored listing of another version; ignored");
                let _ = std::fs::remove_file(&path);
                return None;
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "corrupt stored listing removed; listing the folder again");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        // A fetch time in the future (the clock went back) is not trusted.
        let age = SystemTime::now().duration_since(stored.fetched_at).ok()?;
        let fresh_for = ttl.checked_sub(age).filter(|d| !d.is_zero())?;
        Some((
            stored.items.into_iter().map(RemoteItem::from).collect(),
            fresh_for,
        ))
    }

    pub(super) fn ticket(&self) -> Ticket {
        let mut d = lock(&self.drops);
        d.clock += 1;
        Ticket(d.clock)
    }

    pub(super) fn save(&self, ticket: Ticket, folder_id: &str, items: &[RemoteItem]) {
        let stored = StoredListing {
            version: VERSION,
            folder_id: folder_id.to_string(),
            // Just after the list call, as the in-memory listing's TTL starts then too.
            fetched_at: SystemTime::now(),
            items: items.iter().map(StoredItem::from).collect(),
        };
        let path = self.path_of(folder_id);
        let result = serde_json::to_vec(&stored)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                // Written beside, renamed under the lock only if no drop came since the ticket.
                let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
                std::io::Write::write_all(&mut tmp, &json)?;
                tmp.as_file().sync_all()?;
                let drops = lock(&self.drops);
                if drops.changed_since(folder_id, ticket) {
                    debug!(folder_id, "folder changed during its listing; not stored");
                    return Ok(());
                }
                tmp.persist(&path).map_err(|e| e.error)?;
                drop(drops);
                std::fs::File::open(&self.dir)?.sync_all()
            });
        if let Err(e) = result {
            debug!(folder_id, error = %e, "could not store a listing");
        }
    }

    pub(super) fn drop_folder(&self, folder_id: &str) {
        let mut d = lock(&self.drops);
        d.record(folder_id);
        match std::fs::remove_file(self.path_of(folder_id)) {
            Ok(()) => debug!(folder_id, "stored listing dropped"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(folder_id, error = %e, "cannot remove a stored listing"),
        }
    }
}

impl Listings {
    /// Every stored listing goes (what changed on the drive is not known): the files, and any
    /// answer under way is not stored either.
    pub(super) fn drop_all(&self) {
        let mut d = lock(&self.drops);
        d.clock += 1;
        d.last_drop.clear();
        d.forgotten_before = d.clock;
        let files = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        let mut dropped = 0;
        for f in files.filter(|f| f.path().extension().is_some_and(|x| x == "json")) {
            if std::fs::remove_file(f.path()).is_ok() {
                dropped += 1;
            }
        }
        debug!(dropped, "all stored listings dropped");
    }
}

/// Listing files in `dir` (for `about`).
pub(super) fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    pub(in crate::meta) fn item(id: &str, name: &str) -> RemoteItem {
        RemoteItem {
            file_id: id.into(),
            parent_file_id: "root".into(),
            name: name.into(),
            kind: ItemKind::File,
            size: 3,
            content_hash: Some("AB".into()),
            created_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            updated_at: UNIX_EPOCH + Duration::from_secs(1_700_000_100),
            local_modified_at: None,
            download_url: Some(DownloadUrl {
                url: "http://h/x?sig=1".into(),
                expires_at: UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            }),
            streams: vec![("jpeg".into(), 1)],
        }
    }

    fn open(dir: &Path) -> Listings {
        Listings::open(dir.to_path_buf(), Duration::from_secs(60))
    }

    #[test]
    fn a_saved_listing_comes_back_whole_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path());
        let items = vec![item("a", "x.txt"), item("b", "y.txt")];
        l.save(l.ticket(), "root", &items);
        let (back, fresh_for) = l.load("root", Duration::from_secs(60)).unwrap();
        assert_eq!(back, items);
        assert!(fresh_for > Duration::from_secs(55) && fresh_for <= Duration::from_secs(60));
        // Another store over the same folder (a remount) sees it too.
        assert_eq!(
            open(dir.path())
                .load("root", Duration::from_secs(60))
                .unwrap()
                .0,
            items
        );
        assert!(l.load("other", Duration::from_secs(60)).is_none());
        assert!(
            l.load("root", Duration::ZERO).is_none(),
            "stale under a TTL of 0"
        );
    }

    #[test]
    fn a_drop_after_the_ticket_wins_over_the_save() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path());
        let ticket = l.ticket();
        l.drop_folder("root");
        l.save(ticket, "root", &[item("a", "x")]);
        assert!(l.load("root", Duration::from_secs(60)).is_none());
        // A ticket taken after the drop stores; a later drop removes it.
        l.save(l.ticket(), "root", &[item("a", "x")]);
        assert!(l.load("root", Duration::from_secs(60)).is_some());
        l.drop_folder("root");
        assert!(l.load("root", Duration::from_secs(60)).is_none());
        // Drops of another folder do not matter.
        let ticket = l.ticket();
        l.drop_folder("elsewhere");
        l.save(ticket, "root", &[item("a", "x")]);
        assert!(l.load("root", Duration::from_secs(60)).is_some());
    }

    #[test]
    fn dropping_all_removes_every_listing_and_what_is_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path());
        l.save(l.ticket(), "a", &[item("1", "x")]);
        l.save(l.ticket(), "b", &[item("2", "y")]);
        let under_way = l.ticket();
        l.drop_all();
        assert!(l.load("a", Duration::from_secs(60)).is_none());
        assert!(l.load("b", Duration::from_secs(60)).is_none());
        assert_eq!(count(dir.path()), 0);
        l.save(under_way, "a", &[item("1", "x")]);
        assert!(l.load("a", Duration::from_secs(60)).is_none());
        l.save(l.ticket(), "a", &[item("1", "x")]);
        assert!(l.load("a", Duration::from_secs(60)).is_some());
    }

    #[test]
    fn remembered_drops_stay_bounded_and_old_tickets_then_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path());
        let old = l.ticket();
        for i in 0..DROPS_REMEMBERED + 10 {
            l.drop_folder(&format!("folder{i}"));
        }
        assert!(lock(&l.drops).last_drop.len() <= DROPS_REMEMBERED);
        // `root` was never dropped, but its drop may have been forgotten: not stored.
        l.save(old, "root", &[item("a", "x")]);
        assert!(l.load("root", Duration::from_secs(60)).is_none());
        // A ticket taken after the forgetting stores as usual.
        l.save(l.ticket(), "root", &[item("a", "x")]);
        assert!(l.load("root", Duration::from_secs(60)).is_some());
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path());
        let path = l.path_of("root");
        std::fs::write(&path, b"{\"version\":1,\"folder_id\":\"ro").unwrap();
        assert!(l.load("root", Duration::from_secs(60)).is_none());
        assert!(!path.exists());
        l.save(l.ticket(), "other", &[item("a", "x")]);
        std::fs::copy(l.path_of("other"), &path).unwrap();
        assert!(
            l.load("root", Duration::from_secs(60)).is_none(),
            "names another folder"
        );
    }

    #[test]
    fn opening_removes_listings_older_than_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path());
        l.save(l.ticket(), "root", &[item("a", "x")]);
        assert_eq!(count(dir.path()), 1);
        Listings::open(dir.path().to_path_buf(), Duration::ZERO);
        assert_eq!(count(dir.path()), 0);
    }
}
