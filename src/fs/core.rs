//! The filesystem's semantics, free of FUSE types: every operation is an async method that
//! returns `Result`, and `fuse.rs` only translates. State: the inode table, the listing cache
//! (moka, one entry per folder), open handles, and the upload queue's view of local content.
//!
//! Listings are the only source of attributes: lookup, getattr, readdir and readdirplus after a
//! listing make no API call. A folder of N entries costs ceil(N/100) list calls per
//! `dir_cache_ttl`. Changes made through the mount edit the cached listings in place (no
//! re-listing after every create), so `tar -x` of 500 files costs one listing, not 500.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::future::Cache;
use tracing::{debug, error, info, warn};

use crate::drive::{Drive, ItemKind, RemoteItem, SpaceInfo};
use crate::error::{Error, Result};
use crate::fs::inode::{InodeTable, Node, ROOT_INO};
use crate::fs::local::LocalContent;
use crate::fs::names;
use crate::read::{ReadHandle, Reader};
use crate::write::{Staging, StreamTarget, UploadEvent, UploadQueue, UploadTarget};

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
    /// At most this many folder listings are cached.
    pub max_cached_dirs: u64,
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
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: ItemKind,
}

/// A folder's children by display name. Edited in place by changes made through the mount.
#[derive(Debug, Default)]
pub struct Listing {
    entries: Mutex<BTreeMap<String, u64>>,
}

impl Listing {
    fn get(&self, name: &str) -> Option<u64> {
        self.entries.lock().unwrap().get(name).copied()
    }
    fn insert(&self, name: &str, ino: u64) {
        self.entries.lock().unwrap().insert(name.to_string(), ino);
    }
    fn remove(&self, name: &str) {
        self.entries.lock().unwrap().remove(name);
    }
    fn inos(&self) -> Vec<u64> {
        self.entries.lock().unwrap().values().copied().collect()
    }
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

enum Handle {
    Dir(Arc<Vec<DirEntry>>),
    Remote {
        ino: u64,
        reader: Arc<ReadHandle>,
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
    staging: Staging,
    uploads: Arc<UploadQueue>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    space: Cache<(), SpaceInfo>,
    /// Serialises the preparation of local content (download for read-modify-write, copies).
    prepare_lock: tokio::sync::Mutex<()>,
    /// Makes "queue an upload under the node's current name" and "rename the node and its
    /// queued upload" atomic with respect to each other (release and rename run concurrently).
    upload_gate: Mutex<()>,
    /// Nodes whose local content is a clean copy of their drive item, oldest first.
    clean_copies: Mutex<std::collections::VecDeque<u64>>,
    /// Free bytes on the drive at the last look (u64::MAX until known), so a write that cannot
    /// fit fails with ENOSPC at once instead of an upload failing later.
    free_bytes: AtomicU64,
}

/// Upload-queue keys of resumed uploads (inode numbers never get this high).
const RESUMED_KEY_BASE: u64 = u64::MAX - 1;

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
        let table = Arc::new(Mutex::new(InodeTable::new(
            &cfg.root_file_id,
            SystemTime::now(),
        )));
        let evict_table = table.clone();
        let listings = Cache::builder()
            .max_capacity(cfg.max_cached_dirs)
            .time_to_live(cfg.dir_cache_ttl)
            .eviction_listener(move |_dir, listing: Arc<Listing>, cause| {
                // A listing that is replaced by a fresh one keeps its children; an expired or
                // evicted one frees those the kernel does not hold.
                if cause != moka::notification::RemovalCause::Replaced {
                    let mut table = evict_table.lock().unwrap();
                    for ino in listing.inos() {
                        table.free_if_unreferenced(ino);
                    }
                }
            })
            .build();
        let core = Arc::new(FsCore {
            drive,
            cfg,
            table,
            listings,
            reader,
            staging,
            uploads,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            space: Cache::builder()
                .max_capacity(1)
                .time_to_live(Duration::from_secs(10))
                .build(),
            prepare_lock: tokio::sync::Mutex::new(()),
            upload_gate: Mutex::new(()),
            clean_copies: Mutex::new(std::collections::VecDeque::new()),
            free_bytes: AtomicU64::new(u64::MAX),
        });
        tokio::spawn(Self::watch_space(Arc::downgrade(&core)));
        core.resume_journaled_uploads();
        let events = core.uploads.subscribe();
        tokio::spawn(Self::follow_uploads(Arc::downgrade(&core), events));
        core
    }

    /// Uploads a previous run queued and could not finish (stopped, crashed, network gone) are
    /// in the staging folder with their journal: queue them again. They show up in the mount
    /// once uploaded.
    fn resume_journaled_uploads(&self) {
        match self.staging.journaled_jobs() {
            Ok(jobs) => {
                for (i, (target, staged)) in jobs.into_iter().enumerate() {
                    warn!(name = %target.name, staged = %staged.display(), "resuming an upload left by a previous run");
                    self.uploads
                        .submit(RESUMED_KEY_BASE - i as u64, target, staged);
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

    // ----- attributes and names -------------------------------------------------------------

    fn attr_of(&self, node: &Node) -> Attr {
        let base = if node.is_dir() { 0o777 } else { 0o666 };
        Attr {
            ino: node.ino,
            kind: node.kind,
            size: if node.is_dir() { 0 } else { node.size },
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.crtime,
            perm: (base & !self.cfg.umask) as u16,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn node(&self, ino: u64) -> Result<Node> {
        self.table
            .lock()
            .unwrap()
            .get(ino)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    fn folder(&self, ino: u64) -> Result<Node> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory(node.name));
        }
        Ok(node)
    }

    fn writable(&self) -> Result<()> {
        if self.cfg.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// The cached listing of a folder, listing it (single-flight) when absent or expired.
    async fn listing(&self, dir: u64) -> Result<Arc<Listing>> {
        self.listings
            .try_get_with(dir, self.load_listing(dir))
            .await
            .map_err(Error::unshare)
    }

    async fn load_listing(&self, dir: u64) -> Result<Arc<Listing>> {
        let folder = self.folder(dir)?;
        if folder.is_local_only() {
            return Ok(Arc::new(Listing::default()));
        }
        let items = self.drive.list_folder(&folder.file_id).await?;
        let display = names::display_names(&items);
        let listing = Listing::default();
        let mut table = self.table.lock().unwrap();
        // Files written through the mount and not uploaded yet are shown with their local
        // content; a remote item of the same name (the old copy, or the new one whose upload is
        // finishing) is hidden behind them.
        let local: HashMap<String, u64> = table
            .local_children(dir)
            .into_iter()
            .filter_map(|ino| table.get(ino).map(|n| (n.name.clone(), ino)))
            .collect();
        for (item, name) in items.iter().zip(display) {
            if local
                .get(&name)
                .is_some_and(|&ino| table.get(ino).is_some_and(|n| n.file_id != item.file_id))
            {
                continue;
            }
            let ino = table.upsert_remote(item, dir, &name);
            listing.insert(&name, ino);
            if let Some(url) = &item.download_url {
                self.reader.offer_url(&item.file_id, url.clone());
            }
        }
        for (name, ino) in local {
            listing.insert(&name, ino);
        }
        debug!(dir, file_id = %folder.file_id, entries = listing.len(), "listed folder");
        Ok(Arc::new(listing))
    }

    async fn child(&self, parent: u64, name: &str) -> Result<Node> {
        self.folder(parent)?;
        let listing = self.listing(parent).await?;
        let ino = listing
            .get(name)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        self.node(ino)
    }

    // ----- lookup, attributes, directories --------------------------------------------------

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        let node = self.child(parent, name).await?;
        let mut table = self.table.lock().unwrap();
        let node = table
            .get_mut(node.ino)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        node.lookups += 1;
        let node = node.clone();
        drop(table);
        Ok(self.attr_of(&node))
    }

    pub async fn forget(&self, ino: u64, n: u64) {
        let (parent, name) = {
            let mut table = self.table.lock().unwrap();
            if !table.forget(ino, n) {
                return;
            }
            match table.get(ino) {
                Some(node) => (node.parent, node.name.clone()),
                None => return,
            }
        };
        // Keep the node while its parent's cached listing names it (readdir gave it out).
        let listed = self
            .listings
            .get(&parent)
            .await
            .is_some_and(|l| l.get(&name) == Some(ino));
        if !listed {
            self.table.lock().unwrap().free_if_unreferenced(ino);
        }
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        Ok(self.attr_of(&node))
    }

    /// Open a folder: its entries are fixed for the life of the handle, so readdir offsets are stable.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        let listing = self.listing(ino).await?;
        let table = self.table.lock().unwrap();
        let mut entries: Vec<DirEntry> = listing
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(name, &child)| {
                table.get(child).map(|n| DirEntry {
                    ino: child,
                    name: name.clone(),
                    kind: n.kind,
                })
            })
            .collect();
        let parent = table.get(ino).map(|n| n.parent).unwrap_or(ROOT_INO);
        drop(table);
        entries.insert(
            0,
            DirEntry {
                ino: parent,
                name: "..".into(),
                kind: ItemKind::Folder,
            },
        );
        entries.insert(
            0,
            DirEntry {
                ino,
                name: ".".into(),
                kind: ItemKind::Folder,
            },
        );
        Ok(self.add_handle(Handle::Dir(Arc::new(entries))))
    }

    /// Entries of an open folder from `offset` on, with their attributes when `plus` (readdirplus
    /// counts as a lookup of each entry but `.` and `..`).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
    ) -> Result<Vec<(DirEntry, Option<Attr>)>> {
        let entries = match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Dir(entries)) => entries.clone(),
            _ => return Err(Error::NotADirectory(format!("handle {fh}"))),
        };
        let mut out = Vec::new();
        for entry in entries.iter().skip(offset as usize) {
            let attr = if plus && entry.name != "." && entry.name != ".." {
                let mut table = self.table.lock().unwrap();
                match table.get_mut(entry.ino) {
                    Some(node) => Some(self.attr_of(node)),
                    None => continue,
                }
            } else {
                None
            };
            out.push((entry.clone(), attr));
        }
        Ok(out)
    }

    /// The adapter tells which readdirplus entries reached the kernel: those count as lookups.
    pub fn count_lookup(&self, ino: u64) {
        if let Some(node) = self.table.lock().unwrap().get_mut(ino) {
            node.lookups += 1;
        }
    }

    pub fn plus_attr(&self, ino: u64) -> Option<Attr> {
        self.table.lock().unwrap().get(ino).map(|n| self.attr_of(n))
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().unwrap().remove(&fh);
    }

    pub async fn statfs(&self) -> Result<SpaceInfo> {
        let drive = self.drive.clone();
        let space = self
            .space
            .try_get_with((), async move { drive.space_info().await })
            .await
            .map_err(Error::unshare)?;
        self.free_bytes.store(
            space.total_bytes.saturating_sub(space.used_bytes),
            Ordering::Relaxed,
        );
        Ok(space)
    }

    async fn watch_space(core: std::sync::Weak<FsCore>) {
        loop {
            let Some(strong) = core.upgrade() else { return };
            if let Err(e) = strong.statfs().await {
                debug!(error = %e, "could not refresh the drive's free space");
            }
            drop(strong);
            tokio::time::sleep(SPACE_REFRESH).await;
        }
    }

    // ----- open, read, write, release ------------------------------------------------------

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, handle);
        fh
    }

    fn track_open(&self, ino: u64, delta: i32) {
        if let Some(node) = self.table.lock().unwrap().get_mut(ino) {
            node.open_handles = node.open_handles.saturating_add_signed(delta);
        }
    }

    /// Open a file. `write` for O_WRONLY/O_RDWR, `truncate` for O_TRUNC.
    pub async fn open(&self, ino: u64, write: bool, truncate: bool) -> Result<u64> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Error::IsADirectory(node.name));
        }
        let handle = if write || truncate {
            self.writable()?;
            let content = self.local_for_writing(ino, truncate).await?;
            Handle::Local {
                ino,
                content,
                writable: true,
            }
        } else if let Some(content) = node.local.clone() {
            Handle::Local {
                ino,
                content,
                writable: false,
            }
        } else {
            Handle::Remote {
                ino,
                reader: Arc::new(self.reader.open(&node.file_id, node.size)),
            }
        };
        self.track_open(ino, 1);
        Ok(self.add_handle(handle))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        enum Source {
            Remote(Arc<ReadHandle>),
            Local(Arc<LocalContent>),
        }
        let source = match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Remote { reader, .. }) => Source::Remote(reader.clone()),
            Some(Handle::Local { content, .. }) => Source::Local(content.clone()),
            _ => return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EBADF))),
        };
        match source {
            Source::Remote(reader) => reader.read(offset, size).await,
            Source::Local(content) => Ok(Bytes::from(content.read_at(offset, size as usize)?)),
        }
    }

    fn writable_handle(&self, fh: u64) -> Result<(u64, Arc<LocalContent>)> {
        match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Local {
                ino,
                content,
                writable: true,
            }) => Ok((*ino, content.clone())),
            _ => Err(Error::Io(std::io::Error::from_raw_os_error(libc::EBADF))),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let (ino, content) = self.writable_handle(fh)?;
        let end = offset + data.len() as u64;
        let size = self.table.lock().unwrap().get(ino).map_or(0, |n| n.size);
        // The new copy is uploaded beside the old one, so the whole new size must be free.
        let free = self.free_bytes.load(Ordering::Relaxed);
        if end > size && end > free {
            return Err(Error::QuotaExhausted(format!(
                "a file of {end} bytes does not fit in the drive's {free} free bytes"
            )));
        }
        content.write_at(offset, data)?;
        if let Some(node) = self.table.lock().unwrap().get_mut(ino) {
            node.size = node.size.max(end);
            node.mtime = SystemTime::now();
        }
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64) -> Result<()> {
        if let Ok((_, content)) = self.writable_handle(fh) {
            content.sync()?;
        }
        Ok(())
    }

    /// Close a handle. The last writer of dirty content seals it and queues the upload; the
    /// file keeps showing the new content until the drive has it.
    pub fn release(&self, fh: u64) -> Result<()> {
        let Some(handle) = self.handles.lock().unwrap().remove(&fh) else {
            return Ok(());
        };
        match handle {
            Handle::Dir(_) => {}
            Handle::Remote { ino, .. } => self.track_open(ino, -1),
            Handle::Local {
                ino,
                content,
                writable,
            } => {
                self.track_open(ino, -1);
                if writable
                    && content.remove_writer() == 0
                    && content.is_dirty()
                    && !content.is_sealed()
                {
                    self.submit_upload(ino, &content)?;
                }
            }
        }
        Ok(())
    }

    fn submit_upload(&self, ino: u64, content: &Arc<LocalContent>) -> Result<()> {
        content.seal();
        let _gate = self.upload_gate.lock().unwrap();
        let target = {
            let table = self.table.lock().unwrap();
            let Some(node) = table.get(ino) else {
                return Ok(()); // deleted while open: nothing to upload
            };
            let Some(parent) = table.get(node.parent).filter(|_| node.parent != 0) else {
                return Ok(());
            };
            UploadTarget {
                parent_file_id: parent.file_id.clone(),
                name: node.remote_name.clone(),
                mtime: Some(node.mtime),
                replaces: (!node.is_local_only()).then(|| node.file_id.clone()),
            }
        };
        info!(ino, name = %target.name, "queued upload");
        let stream = content.stream().cloned();
        if let (Some(stream), Ok(len)) = (&stream, content.len()) {
            // The stream sends the last part now, not when the queue gets to this job.
            stream.close(len);
        }
        self.uploads
            .submit_streamed(ino, target, content.path.clone(), stream);
        Ok(())
    }

    /// Local content a writer may change: the node's unsealed content, or a new staging file
    /// filled with the current content (copied from a sealed one, downloaded from the drive, or
    /// empty when truncating).
    async fn local_for_writing(&self, ino: u64, truncate: bool) -> Result<Arc<LocalContent>> {
        let _guard = self.prepare_lock.lock().await;
        let node = self.node(ino)?;
        if let Some(content) = node.local.as_ref().filter(|c| !c.is_sealed()) {
            if truncate {
                content.set_len(0)?;
                self.set_size(ino, 0);
            }
            content.add_writer();
            return Ok(content.clone());
        }
        let staged = self.staging.create()?;
        let content = Arc::new(if truncate {
            let stream = self
                .stream_target(node.parent, &node.remote_name)
                .and_then(|t| self.uploads.follow(&staged.path, t));
            LocalContent::streamed(staged.path.clone(), staged.file, stream)
        } else {
            LocalContent::new(staged.path.clone(), staged.file)
        });
        if truncate {
            content.mark_dirty();
        } else if let Some(sealed) = node.local.as_ref() {
            let (src, dst) = (sealed.clone(), content.clone());
            tokio::task::spawn_blocking(move || src.copy_into(&dst_file(&dst)?))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        } else if node.size > 0 {
            self.download_into(&node, &content).await?;
        }
        content.add_writer();
        let mut table = self.table.lock().unwrap();
        table.set_local(ino, Some(content.clone()));
        if truncate {
            if let Some(n) = table.get_mut(ino) {
                n.size = 0;
            }
        }
        Ok(content)
    }

    /// Fetch a remote file's content into a staging file (read-modify-write of an existing file).
    async fn download_into(&self, node: &Node, content: &LocalContent) -> Result<()> {
        let reader = self.reader.open(&node.file_id, node.size);
        let mut offset = 0u64;
        while offset < node.size {
            let chunk = reader.read(offset, 4 << 20).await?;
            if chunk.is_empty() {
                return Err(Error::BadResponse(format!(
                    "{} ended at {offset} of {}",
                    node.name, node.size
                )));
            }
            content.write_at(offset, &chunk)?;
            offset += chunk.len() as u64;
        }
        Ok(())
    }

    /// Where a file named `name` in folder `parent` uploads to, for uploading while writing.
    fn stream_target(&self, parent: u64, name: &str) -> Option<StreamTarget> {
        let table = self.table.lock().unwrap();
        let folder = table.get(parent).filter(|_| parent != 0)?;
        Some(StreamTarget {
            parent_file_id: folder.file_id.clone(),
            name: name.to_string(),
        })
    }

    fn set_size(&self, ino: u64, size: u64) {
        if let Some(n) = self.table.lock().unwrap().get_mut(ino) {
            n.size = size;
            n.mtime = SystemTime::now();
        }
    }

    /// Create and open a new file.
    pub async fn create(&self, parent: u64, name: &str) -> Result<(Attr, u64)> {
        self.writable()?;
        names::validate(name)?;
        let listing = self.listing(parent).await?;
        if listing.get(name).is_some() {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let staged = self.staging.create()?;
        let stream = self
            .stream_target(parent, name)
            .and_then(|t| self.uploads.follow(&staged.path, t));
        let content = Arc::new(LocalContent::streamed(
            staged.path.clone(),
            staged.file,
            stream,
        ));
        content.mark_dirty();
        content.add_writer();
        let node = {
            let mut table = self.table.lock().unwrap();
            let ino = table.insert_local_file(parent, name, content.clone(), SystemTime::now());
            let node = table.get_mut(ino).expect("just inserted");
            node.lookups += 1;
            node.open_handles += 1;
            node.clone()
        };
        listing.insert(name, node.ino);
        let fh = self.add_handle(Handle::Local {
            ino: node.ino,
            content,
            writable: true,
        });
        Ok((self.attr_of(&node), fh))
    }

    /// setattr: size (truncate), mtime; mode/uid/gid only to the values they already have.
    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        mtime: Option<SystemTime>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Attr> {
        let node = self.node(ino)?;
        let current = self.attr_of(&node);
        if let Some(mode) = mode {
            if (mode & 0o7777) as u16 != current.perm {
                return Err(Error::NotSupported(
                    "chmod: the drive stores no permissions".into(),
                ));
            }
        }
        if uid.is_some_and(|u| u != current.uid) || gid.is_some_and(|g| g != current.gid) {
            return Err(Error::NotSupported(
                "chown: the drive stores no owners".into(),
            ));
        }
        if let Some(size) = size {
            self.writable()?;
            if node.is_dir() {
                return Err(Error::IsADirectory(node.name));
            }
            let content = self.local_for_writing(ino, size == 0).await?;
            content.set_len(size)?;
            self.set_size(ino, size);
            // A truncate by path (no open writer besides ours) is a complete change: upload it.
            if content.remove_writer() == 0 {
                self.submit_upload(ino, &content)?;
            }
        }
        if let Some(mtime) = mtime {
            // Kept with local content and sent as local_modified_at by its upload; for a file with
            // no local content the drive has no call to change it, so it lasts until re-listing.
            if let Some(n) = self.table.lock().unwrap().get_mut(ino) {
                n.mtime = mtime;
                // The streamed session was created with the mtime of its start.
                if let Some(stream) = n.local.as_ref().and_then(|c| c.stream()) {
                    stream.abandon("mtime set explicitly");
                }
            }
        }
        self.getattr(ino).await
    }

    // ----- namespace changes ---------------------------------------------------------------

    pub async fn mkdir(&self, parent: u64, name: &str) -> Result<Attr> {
        self.writable()?;
        names::validate(name)?;
        let folder = self.folder(parent)?;
        let listing = self.listing(parent).await?;
        if listing.get(name).is_some() {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let created = self
            .drive
            .create_folder(&folder.file_id, name, crate::drive::CheckNameMode::Refuse)
            .await?;
        if created.exist {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let now = SystemTime::now();
        let item = RemoteItem {
            file_id: created.file_id,
            parent_file_id: folder.file_id,
            name: created.name,
            kind: ItemKind::Folder,
            size: 0,
            content_hash: None,
            created_at: now,
            updated_at: now,
            local_modified_at: None,
            download_url: None,
        };
        let node = {
            let mut table = self.table.lock().unwrap();
            let ino = table.upsert_remote(&item, parent, name);
            let node = table.get_mut(ino).expect("just inserted");
            node.lookups += 1;
            node.clone()
        };
        listing.insert(name, node.ino);
        // The new folder is empty: cache that instead of listing it.
        self.listings
            .insert(node.ino, Arc::new(Listing::default()))
            .await;
        Ok(self.attr_of(&node))
    }

    /// Remove a drive item: to the recycle bin, or permanently with --delete-permanently.
    async fn remove_remote(&self, file_id: &str) -> Result<()> {
        let result = if self.cfg.delete_permanently {
            self.drive.delete(file_id).await
        } else {
            self.drive.trash(file_id).await
        };
        match result {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.writable()?;
        let node = self.child(parent, name).await?;
        if node.is_dir() {
            return Err(Error::IsADirectory(name.to_string()));
        }
        {
            let _gate = self.upload_gate.lock().unwrap();
            self.uploads.cancel(node.ino);
            if let Some(n) = self.table.lock().unwrap().get_mut(node.ino) {
                n.parent = 0; // a release racing with us must not queue it again
            }
        }
        // An upload that completed just before the cancel left a drive item: remove that one.
        let node = self.adopt_upload(node.ino)?;
        if !node.is_local_only() {
            self.remove_remote(&node.file_id).await?;
        }
        self.forget_removed(parent, name, &node).await;
        Ok(())
    }

    /// Point a node at the result of its last completed upload, if the upload event has not
    /// been applied yet (renames and deletes must act on the newest drive item).
    fn adopt_upload(&self, ino: u64) -> Result<Node> {
        if let Some(file_id) = self.uploads.uploaded_file_id(ino) {
            let mut table = self.table.lock().unwrap();
            if table.get(ino).is_some_and(|n| n.file_id != file_id) {
                table.rekey(ino, &file_id);
            }
        }
        self.node(ino)
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        self.writable()?;
        let node = self.child(parent, name).await?;
        if !node.is_dir() {
            return Err(Error::NotADirectory(name.to_string()));
        }
        if self.listing(node.ino).await?.len() > 0 {
            return Err(Error::NotEmpty(name.to_string()));
        }
        self.remove_remote(&node.file_id).await?;
        self.forget_removed(parent, name, &node).await;
        Ok(())
    }

    async fn forget_removed(&self, parent: u64, name: &str, node: &Node) {
        if let Some(listing) = self.listings.get(&parent).await {
            listing.remove(name);
        }
        self.listings.invalidate(&node.ino).await;
        self.reader.forget_file(&node.file_id);
        let mut table = self.table.lock().unwrap();
        table.set_local(node.ino, None);
        if node.lookups == 0 && node.open_handles == 0 {
            table.remove(node.ino);
        } else if let Some(n) = table.get_mut(node.ino) {
            // The kernel still holds it: keep the number, detach it from the tree.
            n.parent = 0;
        }
    }

    /// rename(2): replaces an existing target as POSIX says. Order: the target goes to the
    /// recycle bin first (its content stays recoverable there), then the source takes the name;
    /// if the second step fails, the source is untouched under its old name.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        self.writable()?;
        names::validate(new_name)?;
        let node = self.child(parent, name).await?;
        let target_folder = self.folder(new_parent)?;
        let target_listing = self.listing(new_parent).await?;
        if let Some(target_ino) = target_listing.get(new_name) {
            if target_ino == node.ino {
                return Ok(());
            }
            if no_replace {
                return Err(Error::AlreadyExists(new_name.to_string()));
            }
            let target = self.node(target_ino)?;
            match (node.is_dir(), target.is_dir()) {
                (false, true) => return Err(Error::IsADirectory(new_name.to_string())),
                (true, false) => return Err(Error::NotADirectory(new_name.to_string())),
                (true, true) if self.listing(target_ino).await?.len() > 0 => {
                    return Err(Error::NotEmpty(new_name.to_string()))
                }
                _ => {}
            }
            self.uploads.cancel(target_ino);
            let target = self.adopt_upload(target_ino)?;
            if !target.is_local_only() {
                self.remove_remote(&target.file_id).await?;
            }
            self.forget_removed(new_parent, new_name, &target).await;
        }
        if node.is_dir() && self.is_ancestor(node.ino, new_parent) {
            return Err(Error::InvalidName(format!(
                "cannot move {name} into itself"
            )));
        }
        // The newest drive item of the node (its upload may have landed a moment ago).
        let node = self.adopt_upload(node.ino)?;
        let old_remote_name = node.remote_name.clone();
        let mut renamed_remote = false;
        if !node.is_local_only() {
            let to = (&target_folder.file_id, new_parent, new_name);
            self.rename_remote(&node.file_id, &old_remote_name, parent, to)
                .await?;
            renamed_remote = true;
        }
        let queued = {
            let _gate = self.upload_gate.lock().unwrap();
            let folder_id = target_folder.file_id.clone();
            let new_name_owned = new_name.to_string();
            let queued = self.uploads.set_target(node.ino, move |t| {
                t.parent_file_id = folder_id;
                t.name = new_name_owned;
            });
            if let Some(n) = self.table.lock().unwrap().get_mut(node.ino) {
                n.parent = new_parent;
                n.name = new_name.to_string();
                n.remote_name = new_name.to_string();
                n.ctime = SystemTime::now();
            }
            queued
        };
        debug!(
            ino = node.ino,
            from = name,
            to = new_name,
            queued,
            renamed_remote,
            "renamed"
        );
        if !queued && !renamed_remote {
            // A first upload that landed between our two looks is renamed like any drive item.
            let landed = self.adopt_upload(node.ino)?;
            if !landed.is_local_only() {
                let to = (&target_folder.file_id, new_parent, new_name);
                self.rename_remote(&landed.file_id, &old_remote_name, parent, to)
                    .await?;
            }
        }
        if let Some(listing) = self.listings.get(&parent).await {
            listing.remove(name);
        }
        target_listing.insert(new_name, node.ino);
        Ok(())
    }

    /// Rename and/or move a drive item.
    /// `to` is (folder file_id, folder inode, name).
    async fn rename_remote(
        &self,
        file_id: &str,
        remote_name: &str,
        parent: u64,
        to: (&String, u64, &str),
    ) -> Result<()> {
        let (folder_id, new_parent, new_name) = to;
        if parent == new_parent {
            if remote_name != new_name {
                self.drive.rename(file_id, new_name).await?;
            }
            return Ok(());
        }
        let renamed = (remote_name != new_name).then_some(new_name);
        let result = self.drive.move_item(file_id, folder_id, renamed).await?;
        if result.exist {
            return Err(Error::AlreadyExists(new_name.to_string()));
        }
        // Sources disagree on whether move's `new_name` always applies or only on a clash:
        // check, and rename when it did not.
        if renamed.is_some() && self.drive.get(file_id).await?.name != new_name {
            self.drive.rename(file_id, new_name).await?;
        }
        Ok(())
    }

    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        let table = self.table.lock().unwrap();
        loop {
            if ino == ancestor {
                return true;
            }
            match table.get(ino) {
                Some(n) if n.ino != ROOT_INO && n.parent != 0 => ino = n.parent,
                _ => return false,
            }
        }
    }

    // ----- upload results ------------------------------------------------------------------

    /// Swap a node to its uploaded drive item once the queue reports success.
    async fn follow_uploads(
        core: std::sync::Weak<FsCore>,
        mut events: tokio::sync::broadcast::Receiver<UploadEvent>,
    ) {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "upload events lagged");
                    continue;
                }
                Err(_) => return,
            };
            let Some(core) = core.upgrade() else { return };
            match event.outcome {
                Ok(item) if core.table.lock().unwrap().get(event.key).is_none() => {
                    // A resumed upload (or a file deleted meanwhile): show it on next listing.
                    let dir = core.table.lock().unwrap().ino_of(&item.parent_file_id);
                    if let Some(dir) = dir {
                        core.listings.invalidate(&dir).await;
                    }
                }
                Ok(item) => {
                    let mut table = core.table.lock().unwrap();
                    let old_id = table.get(event.key).map(|n| n.file_id.clone());
                    table.rekey(event.key, &item.file_id);
                    let current = table.get(event.key).and_then(|n| n.local.clone());
                    let landed_current = current.as_ref().is_some_and(|c| c.path == event.staged);
                    if landed_current {
                        // The staged bytes are now exactly the drive item's (file_ids are
                        // immutable): keep them as a clean local copy, so reading back what
                        // was just written costs no getDownloadUrl (about 1 call/s allowed).
                        if let Some(n) = table.get_mut(event.key) {
                            n.size = item.size;
                            n.mtime = item.mtime();
                            n.ctime = item.updated_at;
                        }
                    }
                    drop(table);
                    if landed_current {
                        core.keep_clean_copy(event.key, item.size);
                    }
                    if let Some(old) = old_id {
                        core.reader.forget_file(&old);
                    }
                    if let Some(url) = &item.download_url {
                        core.reader.offer_url(&item.file_id, url.clone());
                    }
                    debug!(ino = event.key, file_id = %item.file_id, "upload landed");
                }
                Err(message) => {
                    error!(ino = event.key, %message, "upload failed; it stays queued for retry")
                }
            }
        }
    }
}

/// At most this many uploaded files keep their staged bytes as a clean local copy...
const MAX_CLEAN_COPIES: usize = 256;
/// ...and only those up to this size (the rest are read from the drive like any file).
const MAX_CLEAN_COPY_SIZE: u64 = 8 << 20;

impl FsCore {
    /// Keep a just-uploaded node's local content as a clean copy, within the bounds above; the
    /// oldest clean copies go back to being read from the drive.
    fn keep_clean_copy(&self, ino: u64, size: u64) {
        let mut table = self.table.lock().unwrap();
        if size > MAX_CLEAN_COPY_SIZE {
            table.set_local(ino, None);
            return;
        }
        let mut clean = self.clean_copies.lock().unwrap();
        clean.push_back(ino);
        while clean.len() > MAX_CLEAN_COPIES {
            let Some(old) = clean.pop_front() else { break };
            let still_clean = table
                .get(old)
                .and_then(|n| n.local.as_ref())
                .is_some_and(|c| c.is_sealed() && !self.uploads.is_pending(old));
            if still_clean {
                table.set_local(old, None);
            }
        }
    }
}

fn dst_file(content: &LocalContent) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).open(&content.path)
}
