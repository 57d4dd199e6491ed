//! The filesystem's semantics, free of FUSE types: every operation is an async method that
//! returns `Result`, and `fuse.rs` only translates. State: the inode table, the listing cache
//! (moka, one entry per folder), open handles, and the upload queue's view of local content.
//!
//! Listings are the only source of attributes: lookup, getattr, readdir and readdirplus after a
//! listing make no API call. A folder of N entries costs ceil(N/100) list calls per
//! `dir_cache_ttl`. Changes made through the mount edit the cached listings in place (no
//! re-listing after every create), so `tar -x` of 500 files costs one listing, not 500.
//!
//! # Locks (`crate::sync`, taken in increasing level only)
//!
//! | level | lock | guards | slow work under it |
//! |---|---|---|---|
//! | 100 `JOURNAL_ENTRY` | one staged file's journal entry (`write::staging`) | that entry's read-modify-write | the entry's own small fsyncs; taken by nothing on the lookup path |
//! | 110 `FS_GATE` | `upload_gate` | "seal and queue" vs rename, setattr, listing tickets, snapshots | none: no journal write, no fsync (journaling is done before or after it) |
//! | 120 `FS_INODES` | `table` | the inode table | none |
//! | 130 `FS_HANDLES` | `handles` | open file handles | none |
//! | 140 `FS_KEYED` | `prepare_locks` map | the per-inode async locks (held across downloads, as async locks, not this one) | none |
//! | 150 `FS_SYNTHETIC` | `SyntheticUrls::streams` | transcoded stream URLs | none |
//! | 160 `FS_LISTING` | `Listing::entries` | one folder's children | none |
//! | 190 `FS_MISC` | `resumed` | uploads resumed at start, not shown yet | none |
//!
//! The write layer's locks (200-299, see `write`) and meta's (300-399) come after these.

mod conflict;
mod control;
mod fresh;
mod handles;
mod listing;
mod livp;
mod merge;
mod namespace;
mod orphans;
mod paths;
#[cfg(test)]
mod reftest;
mod remote;
mod synthetic;
mod transcoded;
mod uploads;

pub use control::PendingUpload;
pub use remote::Applied;

pub use listing::{Listing, OrderBy, OrderDirection};
pub use livp::LivpMode;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::sync::{Level, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::future::Cache;
use tracing::{debug, error, info, warn};

use crate::drive::{Drive, ItemKind, RemoteItem, SpaceInfo};
use crate::error::{Error, Result};
use crate::fs::inode::{InodeTable, Node, Perms, ROOT_INO};
use crate::fs::keyed::KeyedLocks;
use crate::fs::local::LocalContent;
use crate::fs::lock;
use crate::fs::names;
use crate::read::{ReadHandle, Reader};
use crate::write::staging::{remove_staged, write_sidecar_of, Closed};
use crate::write::{Staging, StreamTarget, UploadEvent, UploadQueue, UploadTarget};

/// The cache file a passthrough open hands to the kernel, and the key naming it (one backing
/// file per key and inode).
pub struct Backing {
    pub file: std::fs::File,
    pub key: String,
}

/// What the fs core needs to know about the mount.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub root_file_id: String,
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
    pub dir_cache_ttl: Duration,
    /// Unlink/rmdir/replace delete permanently instead of moving to the recycle bin.
    pub delete_permanently: bool,
    /// chmod/chown to other values than shown are refused (ENOTSUP) instead of kept.
    pub strict_permissions: bool,
    /// Cached folder listings hold at most about this many entries in all (each listing weighs
    /// the items the drive listed, plus one), so memory follows entries, not folders: ten
    /// folders of 100,000 files weigh as much as a million folders of one.
    pub max_cached_entries: u64,
    /// The order of readdir's entries (after `.` and `..`).
    pub order_by: OrderBy,
    pub order_direction: OrderDirection,
    /// Listings kept on disk across remounts (none: every mount lists afresh).
    pub meta: Option<Arc<crate::meta::MetaStore>>,
    /// The name of the virtual tree of transcodes in the root; None: no such tree.
    pub transcodes_dir: Option<String>,
    /// Which halves of `.livp` live photos folders show.
    pub livp: LivpMode,
}

/// A node's attributes, as the adapter turns them into a `FileAttr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: ItemKind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// 0 for a file unlinked while open, 2 for folders, else 1.
    pub nlink: u32,
}

/// One readdir answer: an entry, the offset that resumes after it, and its attributes for
/// readdirplus.
#[derive(Debug, Clone)]
pub struct DirSlot {
    pub next_offset: u64,
    pub entry: DirEntry,
    pub attr: Option<Attr>,
    /// How long the kernel may keep this entry and its attributes (the rest of the listing's
    /// freshness, see `fresh`); None: the adapter's own timeout.
    pub fresh_for: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: ItemKind,
}

enum Handle {
    /// The entries at opendir, and the listing they came from.
    Dir(Arc<Vec<DirEntry>>, Arc<Listing>),
    Remote {
        ino: u64,
        reader: Arc<ReadHandle>,
        /// Read with direct I/O whatever the kernel supports (a size it may not know).
        direct: bool,
        /// A passthrough handle keeps its cache file as it is until released.
        _pin: Option<crate::cache::Pin>,
    },
    /// A whole small synthetic file (a playlist, a subtitle) held in memory.
    Memory {
        ino: u64,
        bytes: Bytes,
        direct: bool,
    },
    Local {
        ino: u64,
        content: Arc<LocalContent>,
        writable: bool,
    },
}

pub struct FsCore {
    drive: Arc<dyn Drive>,
    cfg: FsConfig,
    table: Arc<Mutex<InodeTable>>,
    listings: Cache<u64, Arc<Listing>>,
    reader: Arc<Reader>,
    transcodes: Arc<crate::transcode::Transcodes>,
    staging: Staging,
    uploads: Arc<UploadQueue>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    space: Cache<(), SpaceInfo>,
    /// Serialises the preparation of one inode's local content (download for read-modify-write,
    /// copies), per inode.
    prepare_locks: KeyedLocks,
    /// Namespace changes (create, mkdir, unlink, rmdir, rename, copy) in one folder run one
    /// at a time, per folder inode. Through FUSE the kernel's lock on the folder already orders
    /// them; a front end without a kernel (WebDAV) and the mount reach the core concurrently,
    /// and the steps of one change (detach, remove on the drive, forget the name) must not
    /// interleave with another change of the same names.
    namespace_locks: KeyedLocks,
    /// Makes "queue an upload under the node's current name" and "rename the node and its
    /// queued upload" atomic with respect to each other (release and rename run concurrently).
    upload_gate: Mutex<()>,
    /// Free bytes on the drive at the last look (u64::MAX until known), so a write that cannot
    /// fit fails with ENOSPC at once instead of an upload failing later.
    free_bytes: AtomicU64,
    /// Uploads resumed at start-up whose folder has not been listed yet: each becomes a pending
    /// file in the mount (under the inode number it was queued with) when it is.
    resumed: Mutex<Vec<Resumed>>,
    /// For work a FUSE thread hands off (it runs outside the runtime).
    runtime: tokio::runtime::Handle,
}

/// An upload a previous run left, queued under `ino` at start-up.
struct Resumed {
    ino: u64,
    target: UploadTarget,
    staged: PathBuf,
}

/// How often the free space estimate is refreshed.
const SPACE_REFRESH: Duration = Duration::from_secs(30);

impl FsCore {
    /// Build the core and start listening to upload results. Must run inside a tokio runtime.
    pub fn new(
        drive: Arc<dyn Drive>,
        cfg: FsConfig,
        reader: Arc<Reader>,
        staging: Staging,
        uploads: Arc<UploadQueue>,
    ) -> Arc<FsCore> {
        let table = Arc::new(Mutex::new(
            Level::FS_INODES,
            "inode table",
            InodeTable::new(&cfg.root_file_id, SystemTime::now()),
        ));
        let evict_table = table.clone();
        let listings = Cache::builder()
            .max_capacity(cfg.max_cached_entries)
            .weigher(|_dir, listing: &Arc<Listing>| listing.weight())
            .expire_after(listing::Freshness {
                ttl: cfg.dir_cache_ttl,
            })
            .eviction_listener(move |_dir, listing: Arc<Listing>, cause| {
                // A listing that is replaced by a fresh one keeps its children; an expired or
                // evicted one frees those the kernel does not hold.
                // The kernel keeps its entries no longer (`fresh`).
                listing.deadline.clear();
                if cause != moka::notification::RemovalCause::Replaced {
                    let mut table = lock(&evict_table);
                    for ino in listing.inos() {
                        table.free_if_unreferenced(ino);
                    }
                }
            })
            .build();
        let transcodes = Arc::new(crate::transcode::Transcodes::new(
            drive.clone(),
            reader.clone(),
            transcoded::REFRESH_RUNNING,
        ));
        reader.set_url_source(Arc::new(synthetic::SyntheticUrls {
            drive: drive.clone(),
            transcodes: transcodes.clone(),
            streams: Mutex::new(Level::FS_SYNTHETIC, "synthetic streams", HashMap::new()),
        }));
        let core = Arc::new(FsCore {
            drive,
            cfg,
            table,
            listings,
            reader,
            transcodes,
            staging,
            uploads,
            handles: Mutex::new(Level::FS_HANDLES, "handles", HashMap::new()),
            next_fh: AtomicU64::new(1),
            space: Cache::builder()
                .max_capacity(1)
                .time_to_live(Duration::from_secs(10))
                .build(),
            prepare_locks: KeyedLocks::default(),
            namespace_locks: KeyedLocks::default(),
            upload_gate: Mutex::new(Level::FS_GATE, "upload gate", ()),
            free_bytes: AtomicU64::new(u64::MAX),
            resumed: Mutex::new(Level::FS_MISC, "resumed uploads", Vec::new()),
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(Self::watch_space(Arc::downgrade(&core)));
        core.resume_journaled_uploads();
        let events = core.uploads.subscribe();
        tokio::spawn(Self::follow_uploads(Arc::downgrade(&core), events));
        core
    }

    /// Uploads a previous run queued and could not finish (stopped, crashed, network gone) are
    /// in the staging folder with their journal: queue them again, each under an inode number
    /// of its own. When its folder is listed, it shows there as a pending file (`attach_resumed`).
    pub(super) fn resume_journaled_uploads(&self) {
        match self.staging.recover() {
            Ok(jobs) => {
                for (target, staged) in jobs {
                    warn!(name = %target.name, staged = %staged.display(), "resuming an upload left by a previous run");
                    // Its folder's stored listing predates it: list that folder afresh.
                    self.drop_stored_listing(&target.parent_file_id);
                    let ino = lock(&self.table).reserve_ino();
                    self.uploads
                        .submit_replayed(ino, target.clone(), staged.clone());
                    lock(&self.resumed).push(Resumed {
                        ino,
                        target,
                        staged,
                    });
                }
            }
            Err(e) => {
                error!(dir = %self.staging.dir().display(), error = %e, "cannot read the upload journal")
            }
        }
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn uploads(&self) -> &Arc<UploadQueue> {
        &self.uploads
    }

    /// The data cache on disk, if this mount has one.
    pub fn data_cache(&self) -> Option<&Arc<crate::cache::DataCache>> {
        self.reader.cache()
    }

    // ----- attributes and names -------------------------------------------------------------

    pub(super) fn attr_of(&self, node: &Node) -> Attr {
        let perms = node.perms.unwrap_or_else(|| self.default_perms(node.kind));
        Attr {
            ino: node.ino,
            kind: node.kind,
            size: if node.is_dir() { 0 } else { node.size },
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.crtime,
            perm: perms.mode,
            uid: perms.uid,
            gid: perms.gid,
            nlink: match node.kind {
                ItemKind::Folder => 2,
                _ if node.is_detached() => 0,
                _ => 1,
            },
        }
    }

    /// Permissions of a node created through the mount with `mode` (None when they are the
    /// defaults, so the node need not be kept for them).
    pub(super) fn perms_for_new(&self, kind: ItemKind, mode: u32) -> Option<Perms> {
        let defaults = self.default_perms(kind);
        let wanted = Perms {
            mode: (mode & 0o7777) as u16,
            ..defaults
        };
        (wanted != defaults).then_some(wanted)
    }

    /// What a node shows until something is set through the mount: `--uid/--gid/--umask`.
    pub(super) fn default_perms(&self, kind: ItemKind) -> Perms {
        let base = if kind == ItemKind::Folder {
            0o777
        } else {
            0o666
        };
        Perms {
            mode: (base & !self.cfg.umask) as u16,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    /// An entry was created, removed or renamed in folder `dir` through the mount: its mtime and
    /// ctime move, as POSIX says (until the next listing brings the drive's own times).
    pub(super) fn touch_dir(&self, dir: u64) {
        let folder_id = lock(&self.table).get_mut(dir).map(|n| {
            let now = SystemTime::now();
            n.mtime = now;
            n.ctime = now;
            n.file_id.clone()
        });
        if let Some(id) = folder_id {
            self.drop_stored_listing(&id);
        }
    }

    pub(super) fn node(&self, ino: u64) -> Result<Node> {
        self.table
            .lock()
            .get(ino)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    pub(super) fn folder(&self, ino: u64) -> Result<Node> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory(node.name));
        }
        Ok(node)
    }

    /// Hold the namespace locks of folders `a` and `b` (one when they are the same), taken in
    /// inode order so two renames between the same folders never wait for each other.
    pub(super) async fn lock_folders(
        &self,
        a: u64,
        b: u64,
    ) -> (
        crate::fs::keyed::KeyGuard<'_>,
        Option<crate::fs::keyed::KeyGuard<'_>>,
    ) {
        let (low, high) = (a.min(b), a.max(b));
        let first = self.namespace_locks.lock(low).await;
        let second = if high != low {
            Some(self.namespace_locks.lock(high).await)
        } else {
            None
        };
        (first, second)
    }

    pub(super) fn writable(&self) -> Result<()> {
        if self.cfg.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }
}
