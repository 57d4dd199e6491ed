//! The persistent block cache of file data, under `<cache-dir>/data/<namespace>/`.
//!
//! One namespace per drive (user id + drive id), locked with `flock` by the mount that uses
//! it: a second mount of the same drive on the same cache dir runs without the disk cache.
//! A cached file version (file_id + content identity, `store::key_of`) is a sparse data file
//! of whole 1 MiB blocks plus an index of the blocks present (`store`). Space is charged
//! before a block is written and the least recently used blocks are evicted to make room
//! (`lru`).
//!
//! Readers (`CachedFile::read`, in `file`) are served from the page cache/disk with no lock
//! held during I/O; every block is checked against its CRC-32 the first time this mount reads
//! it. Fetched bytes are handed to `CachedFile::store`, which never waits: one writer thread
//! (`writer`) does all disk changes (writes, evictions, drops) in order, so accounting has a
//! single writer. Filling is best effort: when the writer's queue is full (the disk is slower
//! than the link) or the mount's memory budget has no room for it, the bytes are simply not
//! cached and a later read fills those blocks. No read ever waits for the cache's disk.
//!
//! Durability, and why this much fsync: a kill -9 loses nothing the kernel already has, so
//! ordering alone would do; a power loss may not. A block's record is appended only after its
//! data is `fdatasync`ed, so a recorded block is whole on disk, which is what passthrough
//! relies on (the kernel reads the file without our checksums). The sync is periodic (every
//! `writer::SYNC_EVERY` or `writer::SYNC_BYTES`, whichever first) with writeback started as
//! each block is written, so it costs the writer little and the reader nothing; a block
//! written but not yet recorded is simply not served yet. A removal record is `fsync`ed before
//! its hole is punched, so a hole is never taken for a recorded block. Records of added blocks
//! are not synced: a lost one costs only a refetch.
//!
//! Memory: an entry per file version with blocks, or with a live `CachedFile`; an empty one is
//! pruned when its last `CachedFile` goes (or its last block is evicted). Bytes queued for the
//! writer hold permits of the mount's read memory budget (`DataCache::share_budget`) until
//! written, so they count against `--memory-limit`.
//!
//! Locks (`crate::sync`): `state` (`Level::CACHE_INDEX`), the job sender `jobs`
//! (`Level::CACHE_WRITER`, taken inside `state`). No disk I/O under either.

mod blocks;
mod file;
mod load;
pub mod lru;
mod stats;
pub mod store;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::sync::{Level, Mutex, MutexGuard};
pub use file::{CachedFile, Pin};
use lru::Lru;
pub use stats::{disk_usage, CacheStatus, SavedStats};
pub use store::BLOCK;
use store::{blocks_of, BlockRec, Header};

/// Bytes of fetched data waiting for the writer at most (one larger store alone may exceed it);
/// more is not cached (a read never waits for the disk; a later read fills the gap).
const MAX_PENDING: u64 = 32 << 20;
/// Seeding after an upload only for files up to this fraction of the cache's limit: a big copy
/// must not flush the read cache.
const SEED_FRACTION: u64 = 4;
/// Seeding never evicts a block read (or written) this recently.
/// Seeding tasks queued at once; past this an upload is not seeded (best effort, as for reads:
/// a later read fills it). Each holds its staged file open and its content in the fs until
/// its turn: a burst of 10,000 small files closed at once held 3,000 descriptors.
const MAX_QUEUED_SEEDS: usize = 64;

const SEED_SPARES: Duration = Duration::from_secs(300);

/// The content identity of a drive item: its SHA-1, or its size and last change where the
/// drive gives no hash. A new identity is a new cache file.
pub fn identity_of(item: &crate::drive::RemoteItem) -> String {
    match &item.content_hash {
        Some(h) if !h.is_empty() => format!("sha1:{}", h.to_ascii_uppercase()),
        _ => {
            let ms = item
                .updated_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("size:{}:updated:{ms}", item.size)
        }
    }
}

/// The folder of one drive's cache: `<data>/<user id>-<drive id>` (only safe characters).
pub fn namespace(user_id: &str, drive_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}-{}", clean(user_id), clean(drive_id))
}

#[derive(Debug, Clone, Copy)]
struct BlockState {
    rec: BlockRec,
    tick: u64,
    /// Its checksum was checked (or it was written) by this mount.
    verified: bool,
    /// Last read or written, in seconds since the cache opened (0: not since).
    used_s: u32,
}

struct Entry {
    header: Header,
    blocks: blocks::BlockMap<BlockState>,
    /// Its pair of files (data and index) exists on disk.
    on_disk: bool,
    /// The data file, open for reading and writing: held for at most `MAX_OPEN_DATA` files at
    /// once (`Inner::data_fd` opens it again when needed), so a cache of a hundred thousand
    /// small files does not hold a hundred thousand descriptors.
    data: Option<Arc<File>>,
    pins: u32,
    /// A newer identity of the file was seen: dropped once unpinned.
    doomed: bool,
    /// Bumped by every removal, so a reader can tell a block vanished while it read.
    gen: u64,
}

impl Entry {
    fn new(header: Header) -> Entry {
        Entry {
            header,
            blocks: blocks::BlockMap::new(),
            on_disk: false,
            data: None,
            pins: 0,
            doomed: false,
            gen: 0,
        }
    }

    fn complete(&self) -> bool {
        self.on_disk
            && self.header.size > 0
            && self.blocks.len() as u64 == blocks_of(self.header.size)
    }
}

#[derive(Default)]
struct State {
    files: HashMap<Arc<str>, Entry>,
    /// The current identity's key of each file_id.
    current: HashMap<String, Arc<str>>,
    lru: Lru,
    /// Keys whose data file was opened, oldest first (at most `MAX_OPEN_DATA`).
    open: VecDeque<Arc<str>>,
}

/// Data files held open at once; the others are opened again when read or written.
const MAX_OPEN_DATA: usize = 128;

impl State {
    /// `key`'s data file was just opened: the oldest beyond `MAX_OPEN_DATA` are closed (a
    /// reader that holds one keeps it until its read ends).
    fn hold_open(&mut self, key: Arc<str>) {
        self.open.push_back(key);
        while self.open.len() > MAX_OPEN_DATA {
            if let Some(old) = self.open.pop_front() {
                if let Some(e) = self.files.get_mut(&old) {
                    e.data = None;
                }
            }
        }
    }

    /// Forgets the entry of `key` if it holds nothing (no file, no block, no pin), so entries
    /// do not grow with every file ever opened.
    fn prune(&mut self, key: &Arc<str>) {
        let empty = self
            .files
            .get(key)
            .is_some_and(|e| !e.on_disk && e.blocks.is_empty() && e.pins == 0);
        if !empty {
            return;
        }
        if let Some(e) = self.files.remove(key) {
            if self.current.get(&*e.header.file_id) == Some(key) {
                self.current.remove(&*e.header.file_id);
            }
        }
    }
}

enum Job {
    Store {
        key: Arc<str>,
        header: Header,
        offset: u64,
        data: Bytes,
        /// The memory budget this queued data holds, given back once written.
        _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Seed(writer::SeedTask),
    /// Remove a version's files (identity changed, or its last pin went).
    Drop {
        key: Arc<str>,
    },
    /// A block failed its checksum.
    DropBlock {
        key: Arc<str>,
        block: u64,
        gen: u64,
    },
    Flush(mpsc::Sender<()>),
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    pending: AtomicU64,
    /// Seeding tasks queued for the writer (at most `MAX_QUEUED_SEEDS`).
    seeds_queued: AtomicUsize,
    /// Bytes handed to `store` and not cached (writer behind, or no memory budget).
    skipped: AtomicU64,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// The mount's read memory budget, which queued bytes are charged to (set by the reader).
    budget: OnceLock<Arc<tokio::sync::Semaphore>>,
    epoch: Instant,
    /// Held for the cache's life: the namespace's flock.
    _lock: File,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn send(&self, job: Job) {
        let jobs = self.jobs.lock();
        if let Some(tx) = jobs.as_ref() {
            let _ = tx.send(job);
        }
    }

    /// Seconds since the cache opened, plus one (0 means "not used by this mount"), for
    /// `BlockState::used_s`.
    fn now_s(&self) -> u32 {
        (self.epoch.elapsed().as_secs() + 1).min(u32::MAX as u64) as u32
    }

    /// The open data file of `key` while its pair is on disk, opened again (outside the state
    /// lock) if it was closed to stay within `MAX_OPEN_DATA`.
    fn data_fd(&self, key: &Arc<str>) -> Option<Arc<File>> {
        {
            let st = self.lock();
            let e = st.files.get(key).filter(|e| e.on_disk)?;
            if let Some(data) = &e.data {
                return Some(data.clone());
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(store::data_path(&self.dir, key))
            .ok()?;
        let mut st = self.lock();
        let st = &mut *st;
        // Removed while it was opened: that file is gone (or another pair took its name).
        let e = st.files.get_mut(key).filter(|e| e.on_disk)?;
        if let Some(data) = &e.data {
            return Some(data.clone());
        }
        let data = Arc::new(file);
        e.data = Some(data.clone());
        st.hold_open(key.clone());
        Some(data)
    }
}

/// The data cache of one mount (one drive).
pub struct DataCache {
    inner: Arc<Inner>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for DataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataCache({})", self.inner.dir.display())
    }
}

impl DataCache {
    /// Opens (creating) the cache of namespace `ns` under `data_dir`, limited to `limit` bytes.
    /// `Ok(None)` when another mount holds the namespace (logged once, as a WARN).
    pub fn open(data_dir: &Path, ns: &str, limit: u64) -> io::Result<Option<Arc<DataCache>>> {
        let dir = data_dir.join(ns);
        std::fs::create_dir_all(&dir)?;
        let lock = File::create(dir.join("lock"))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            warn!(dir = %dir.display(), "another mount uses this drive's data cache; this mount runs without the disk cache");
            return Ok(None);
        }
        let mut state = State {
            lru: Lru::new(limit),
            ..State::default()
        };
        load::load(&dir, &mut state)?;
        info!(
            dir = %dir.display(),
            limit,
            used = state.lru.used(),
            files = state.files.len(),
            "data cache"
        );
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            dir,
            state: Mutex::new(Level::CACHE_INDEX, "cache.state", state),
            pending: AtomicU64::new(0),
            seeds_queued: AtomicUsize::new(0),
            skipped: AtomicU64::new(0),
            jobs: Mutex::new(Level::CACHE_WRITER, "cache.jobs", Some(tx)),
            budget: OnceLock::new(),
            epoch: Instant::now(),
            _lock: lock,
        });
        let handle = writer::Writer::start(inner.clone(), rx)?;
        Ok(Some(Arc::new(DataCache {
            inner,
            writer: Some(handle),
        })))
    }

    /// Charges bytes queued for the writer to `budget` (the reader's memory budget): when it
    /// has no room, they are not cached. Set once.
    pub fn share_budget(&self, budget: Arc<tokio::sync::Semaphore>) {
        let _ = self.inner.budget.set(budget);
    }

    /// handle holds them) and never served again.
    pub fn file(&self, file_id: &str, identity: &str, size: u64) -> Arc<CachedFile> {
        let key: Arc<str> = store::key_of(file_id, identity).into();
        let header = Header {
            file_id: file_id.into(),
            identity: identity.into(),
            size,
        };
        let mut st = self.inner.lock();
        let old = st.current.insert(file_id.to_string(), key.clone());
        if let Some(old) = old.filter(|o| *o != key) {
            if let Some(e) = st.files.get_mut(&old) {
                debug!(
                    file_id,
                    "file changed on the drive: dropping its cached blocks"
                );
                e.doomed = true;
                if e.pins == 0 {
                    self.inner.send(Job::Drop { key: old });
                }
            }
        }
        st.files
            .entry(key.clone())
            .or_insert_with(|| Entry::new(header.clone()));
        Arc::new(CachedFile {
            inner: self.inner.clone(),
            key,
            header,
        })
    }

    /// Seeds the cache with a file's whole content from `file` (a file written through the
    /// mount, once the drive has it). Only a file up to a quarter of the cache's limit is
    /// seeded, a block at a time when no read's bytes wait for the writer, and never by
    /// evicting blocks used in the last `SEED_SPARES`. Returns None when the file is not
    /// seeded (too big, or the writer is behind), else what resolves once it is done.
    pub fn seed(
        &self,
        file_id: &str,
        identity: &str,
        size: u64,
        file: File,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let limit = self.inner.lock().lru.limit();
        if size == 0 || size > limit / SEED_FRACTION {
            debug!(
                file_id,
                size, limit, "not seeding the data cache: file too big for it"
            );
            return None;
        }
        if self.inner.seeds_queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_SEEDS {
            self.inner.seeds_queued.fetch_sub(1, Ordering::AcqRel);
            debug!(file_id, "not seeding the data cache: the writer is behind");
            return None;
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        let f = self.file(file_id, identity, size);
        self.inner.send(Job::Seed(writer::SeedTask::new(
            f.key.clone(),
            f.header.clone(),
            file,
            done,
        )));
        Some(rx)
    }

    /// Waits until every job sent so far is done (tests, benchmarks).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.inner.send(Job::Flush(tx));
        let _ = rx.recv_timeout(Duration::from_secs(60));
    }

    pub fn status(&self) -> CacheStatus {
        let (hits, misses, pt) = crate::metrics::cache_counts();
        let st = self.inner.lock();
        CacheStatus {
            dir: self.inner.dir.display().to_string(),
            limit: st.lru.limit(),
            used: st.lru.used(),
            files: st.files.values().filter(|e| e.on_disk).count() as u64,
            blocks: st.files.values().map(|e| e.blocks.len() as u64).sum(),
            hit_blocks: hits,
            miss_blocks: misses,
            passthrough_opens: pt,
            skipped_bytes: self.skipped_bytes(),
        }
    }

    /// Bytes handed to the cache and not cached because the writer was behind (or the memory
    /// budget full) since the mount started: the price of never slowing a read.
    pub fn skipped_bytes(&self) -> u64 {
        self.inner
            .skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for DataCache {
    fn drop(&mut self) {
        // Closing the channel ends the writer after the jobs already queued.
        self.inner.jobs.lock().take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Blocks covering `range` of a file (for callers that align their fetches).
pub fn block_span(range: &Range<u64>, size: u64) -> Range<u64> {
    let start = range.start / BLOCK * BLOCK;
    let end = (range.end.div_ceil(BLOCK) * BLOCK).min(size);
    start..end.max(start)
}

#[cfg(test)]
mod tests;
