//! The persistent block cache of file data, under `<cache-dir>/data/<namespace>/`.
//!
//! One namespace per drive (user id + drive id), locked with `flock` by the mount that uses
//! it: a second mount of the same drive on the same cache dir runs without the disk cache.
//! A cached file version (file_id + content identity, `store::key_of`) is a sparse data file
//! of whole 1 MiB blocks plus an index of the blocks present (`store`). Space is charged
//! before a block is written and the least recently used blocks are evicted to make room
//! (`lru`).
//!
//! Readers (`CachedFile::read`) are served from the page cache/disk with no lock held during
//! I/O; every block is checked against its CRC-32 the first time this mount reads it. Fetched
//! bytes are handed to `CachedFile::store`, which never waits: one writer thread does all disk
//! changes (writes, evictions, drops) in order, so accounting has a single writer.
//!
//! Durability, and why this much fsync: a kill -9 loses nothing the kernel already has, so
//! ordering alone would do; a power loss may not. A block's record is appended only after its
//! data is `fdatasync`ed (one sync per batch of blocks, not per block), so a recorded block is
//! whole on disk, which is what passthrough relies on (the kernel reads the file without our
//! checksums). A removal record is `fsync`ed before its hole is punched, so a hole is never
//! taken for a recorded block. Records of added blocks are not synced: a lost one costs only
//! a refetch.

pub mod lru;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::{debug, info, warn};

use lru::Lru;
pub use store::BLOCK;
use store::{block_cost, block_len, blocks_of, BlockRec, Header, Index, FILE_COST};

/// Bytes of fetched data waiting for the writer at most (one larger store alone may exceed it);
/// more is not cached, or waited for by read-ahead (`store_waiting`).
const MAX_PENDING: u64 = 32 << 20;
/// How long read-ahead waits for the writer to take its bytes before giving up on caching them.
const ROOM_WAIT: Duration = Duration::from_secs(10);
/// How often the writer saves the hit counters for `alipanfs about`.
const STATS_EVERY: Duration = Duration::from_secs(5);

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

/// What the status command and `about` show.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheStatus {
    pub dir: String,
    pub limit: u64,
    pub used: u64,
    pub files: u64,
    pub blocks: u64,
    pub hit_blocks: u64,
    pub miss_blocks: u64,
    pub passthrough_opens: u64,
}

impl CacheStatus {
    /// Hits over all block reads, if any.
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.hit_blocks + self.miss_blocks;
        (all > 0).then(|| self.hit_blocks as f64 / all as f64)
    }
}

/// Lifetime counters of a namespace, saved beside it for `alipanfs about`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SavedStats {
    pub hit_blocks: u64,
    pub miss_blocks: u64,
    pub passthrough_opens: u64,
}

impl SavedStats {
    pub fn load(ns_dir: &Path) -> SavedStats {
        std::fs::read(ns_dir.join("stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Bytes on disk under `dir` (allocated blocks, as du counts them).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let Ok(m) = e.metadata() else { return 0 };
            if m.is_dir() {
                disk_usage(&e.path())
            } else {
                m.blocks() * 512
            }
        })
        .sum()
}

#[derive(Debug, Clone, Copy)]
struct BlockState {
    rec: BlockRec,
    tick: u64,
    /// Its checksum was checked (or it was written) by this mount.
    verified: bool,
}

struct Entry {
    header: Header,
    blocks: BTreeMap<u64, BlockState>,
    /// Open for reading and writing while the pair exists on disk.
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
            blocks: BTreeMap::new(),
            data: None,
            pins: 0,
            doomed: false,
            gen: 0,
        }
    }

    fn complete(&self) -> bool {
        self.data.is_some()
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
}

enum Job {
    Store {
        key: Arc<str>,
        header: Header,
        offset: u64,
        data: Bytes,
    },
    Seed {
        key: Arc<str>,
        header: Header,
        file: File,
        done: tokio::sync::oneshot::Sender<()>,
    },
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
    /// Woken whenever the writer has taken bytes off `pending`.
    room: tokio::sync::Notify,
    /// A read-ahead gave up waiting for the writer: later ones do not wait until it moves again.
    stalled: AtomicBool,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// Held for the cache's life: the namespace's flock.
    _lock: File,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, job: Job) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = jobs.as_ref() {
            let _ = tx.send(job);
        }
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
        let indexes = load(&dir, &mut state)?;
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
            state: Mutex::new(state),
            pending: AtomicU64::new(0),
            room: tokio::sync::Notify::new(),
            stalled: AtomicBool::new(false),
            jobs: Mutex::new(Some(tx)),
            _lock: lock,
        });
        let mut writer = Writer {
            inner: inner.clone(),
            indexes,
            saved: SavedStats::load(&inner.dir),
            last_counts: crate::metrics::cache_counts(),
        };
        // A limit lowered since the last mount: make room at once.
        writer.make_room(0);
        let handle = std::thread::Builder::new()
            .name("cache-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Some(Arc::new(DataCache {
            inner,
            writer: Some(handle),
        })))
    }

    /// The cache of `file_id` at `identity` (`size` bytes). A file_id seen before with another
    /// identity has changed on the drive: its old blocks are dropped (once no passthrough
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
    /// mount, once the drive has it). Resolves when done (or skipped).
    pub fn seed(
        &self,
        file_id: &str,
        identity: &str,
        size: u64,
        file: File,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let f = self.file(file_id, identity, size);
        let (done, rx) = tokio::sync::oneshot::channel();
        self.inner.send(Job::Seed {
            key: f.key.clone(),
            header: f.header.clone(),
            file,
            done,
        });
        rx
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
            files: st.files.values().filter(|e| e.data.is_some()).count() as u64,
            blocks: st.files.values().map(|e| e.blocks.len() as u64).sum(),
            hit_blocks: hits,
            miss_blocks: misses,
            passthrough_opens: pt,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for DataCache {
    fn drop(&mut self) {
        // Closing the channel ends the writer after the jobs already queued.
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// One cached file version, as a read handle uses it.
pub struct CachedFile {
    inner: Arc<Inner>,
    key: Arc<str>,
    header: Header,
}

/// Keeps a cached file from being evicted or dropped while a passthrough handle reads it.
pub struct Pin {
    inner: Arc<Inner>,
    key: Arc<str>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(e) = st.files.get_mut(&self.key) {
            e.pins = e.pins.saturating_sub(1);
            if e.pins == 0 && e.doomed {
                self.inner.send(Job::Drop {
                    key: self.key.clone(),
                });
            }
        }
    }
}

impl CachedFile {
    pub fn size(&self) -> u64 {
        self.header.size
    }

    /// The key naming this version's files (one backing file per key).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// For each block overlapping `[start, end)`: its bytes within that range when cached and
    /// intact, else `None`. Blocking (disk reads): call from a blocking thread.
    pub fn read(&self, start: u64, end: u64) -> Vec<(u64, Option<Bytes>)> {
        let end = end.min(self.header.size);
        if start >= end {
            return Vec::new();
        }
        let (first, last) = (start / BLOCK, (end - 1) / BLOCK);
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        for b in first..=last {
            let bytes = self.read_block(b, start, end);
            crate::metrics::cache_blocks(bytes.is_some());
            out.push((b, bytes));
        }
        out
    }

    fn read_block(&self, b: u64, start: u64, end: u64) -> Option<Bytes> {
        let (data, state, gen) = {
            let mut st = self.inner.lock();
            let st = &mut *st;
            let e = st.files.get_mut(&self.key).filter(|e| !e.doomed)?;
            let s = e.blocks.get_mut(&b)?;
            s.tick = st.lru.touch(Some(s.tick), (self.key.clone(), b));
            (e.data.clone()?, *s, e.gen)
        };
        let bstart = b * BLOCK;
        let (lo, hi) = (start.max(bstart), end.min(bstart + state.rec.len as u64));
        let bytes = if state.verified {
            store::read_exact_at(&data, lo, (hi - lo) as usize).ok()?
        } else {
            let whole = store::read_exact_at(&data, bstart, state.rec.len as usize).ok()?;
            if whole.len() != state.rec.len as usize || store::crc(&whole) != state.rec.crc {
                warn!(file_id = %self.header.file_id, block = b, "cached block fails its checksum; fetching it again");
                self.inner.send(Job::DropBlock {
                    key: self.key.clone(),
                    block: b,
                    gen,
                });
                return None;
            }
            whole[(lo - bstart) as usize..(hi - bstart) as usize].to_vec()
        };
        // Still there, unchanged, after the read: no eviction punched it meanwhile.
        let mut st = self.inner.lock();
        let e = st.files.get_mut(&self.key)?;
        if e.gen != gen || !e.blocks.contains_key(&b) {
            return None;
        }
        if let Some(s) = e.blocks.get_mut(&b) {
            s.verified = true;
        }
        (bytes.len() as u64 == hi - lo).then(|| Bytes::from(bytes))
    }

    /// Hands fetched bytes at `offset` to the writer; the whole blocks among them are cached.
    /// Never waits: past `MAX_PENDING` queued bytes, they are not cached (a read waits for no disk).
    pub fn store(&self, offset: u64, data: Bytes) {
        if let Some(len) = self.cacheable(offset, &data) {
            if self.reserve(len) {
                self.send_store(offset, data);
            } else {
                debug!(file_id = %self.header.file_id, offset, "cache writer busy: not caching these bytes");
            }
        }
    }

    /// As `store`, but waits (up to `ROOM_WAIT`) for the writer to have room: read-ahead is
    /// slowed to the disk's pace rather than fetched for nothing.
    pub async fn store_waiting(&self, offset: u64, data: Bytes) {
        let Some(len) = self.cacheable(offset, &data) else {
            return;
        };
        if self.inner.stalled.load(Ordering::Relaxed) {
            return self.store(offset, data);
        }
        let waited = tokio::time::timeout(ROOM_WAIT, async {
            loop {
                let room = self.inner.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if self.reserve(len) {
                    return;
                }
                room.await;
            }
        })
        .await;
        match waited {
            Ok(()) => self.send_store(offset, data),
            Err(_) => {
                self.inner.stalled.store(true, Ordering::Relaxed);
                warn!(file_id = %self.header.file_id, offset, "the cache writer has not moved for {ROOM_WAIT:?} (slow or stuck disk under the cache dir?): read-ahead no longer waits for it")
            }
        }
    }

    /// The length to queue for `data` at `offset`, if it holds a whole block.
    fn cacheable(&self, offset: u64, data: &Bytes) -> Option<u64> {
        let len = data.len() as u64;
        let first_whole = offset.div_ceil(BLOCK) * BLOCK;
        let end = offset + len;
        let whole_end = if end >= self.header.size {
            end
        } else {
            end / BLOCK * BLOCK
        };
        (first_whole < whole_end).then_some(len)
    }

    /// Counts `len` queued bytes, if that stays within `MAX_PENDING` (or the queue is empty).
    fn reserve(&self, len: u64) -> bool {
        let pending = &self.inner.pending;
        let before = pending.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > MAX_PENDING {
            pending.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn send_store(&self, offset: u64, data: Bytes) {
        self.inner.send(Job::Store {
            key: self.key.clone(),
            header: self.header.clone(),
            offset,
            data,
        });
    }

    /// When every block is cached: the data file opened for reading and a pin that keeps it
    /// (no eviction, no rewrite) until dropped.
    pub fn pin_complete(&self) -> Option<(File, Pin)> {
        let mut st = self.inner.lock();
        let e = st.files.get_mut(&self.key).filter(|e| !e.doomed)?;
        if !e.complete() {
            return None;
        }
        let file = File::open(store::data_path(&self.inner.dir, &self.key)).ok()?;
        e.pins += 1;
        Some((
            file,
            Pin {
                inner: self.inner.clone(),
                key: self.key.clone(),
            },
        ))
    }

    /// Every block of this version is cached (it may still be evicted a moment later).
    pub fn is_complete(&self) -> bool {
        let st = self.inner.lock();
        st.files
            .get(&self.key)
            .is_some_and(|e| !e.doomed && e.complete())
    }

    /// Cached blocks of this version.
    pub fn cached_blocks(&self) -> u64 {
        let st = self.inner.lock();
        st.files.get(&self.key).map_or(0, |e| e.blocks.len() as u64)
    }
}

/// Reads every index of the namespace into `state`; removes what is broken or orphaned.
fn load(dir: &Path, state: &mut State) -> io::Result<HashMap<Arc<str>, Index>> {
    let mut indexes = HashMap::new();
    let mut found: Vec<(SystemTime, Arc<str>, store::Loaded)> = Vec::new();
    for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(key) = name.strip_suffix(".idx") else {
            if name.ends_with(".idx.tmp") {
                let _ = std::fs::remove_file(&path);
            }
            if let Some(key) = name.strip_suffix(".data") {
                if !store::idx_path(dir, key).exists() {
                    let _ = std::fs::remove_file(&path);
                }
            }
            continue;
        };
        let loaded = Index::load(&path).ok().flatten();
        match loaded {
            Some(l) if store::key_of(&l.header.file_id, &l.header.identity) == key => {
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, key.into(), l));
            }
            _ => {
                warn!(index = %path.display(), "unreadable cache index: dropping that file's cached blocks");
                let _ = std::fs::remove_file(store::data_path(dir, key));
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    // Oldest files first: their blocks come first in the eviction order.
    found.sort_by_key(|f| f.0);
    for (_, key, loaded) in found {
        let store::Loaded {
            index: mut idx,
            header,
            blocks,
            records,
        } = loaded;
        let data = match store::open_data(&store::data_path(dir, &key), header.size) {
            Ok(f) => f,
            Err(e) => {
                warn!(key = %key, "cannot open a cached data file: {e}");
                continue;
            }
        };
        if records > blocks.len() as u64 + 64 {
            // Mostly removals: rewrite it short.
            if let Ok(c) = Index::compact(&store::idx_path(dir, &key), &header, &blocks) {
                idx = c;
            }
        }
        if let Some(older) = state.current.insert(header.file_id.clone(), key.clone()) {
            // Two versions of one file on disk: the newer wins.
            if let Some(mut e) = state.files.remove(&older) {
                for s in e.blocks.values() {
                    state.lru.forget(s.tick);
                    state.lru.credit(block_cost(s.rec.len as u64));
                }
                state.lru.credit(FILE_COST);
                e.data = None;
                indexes.remove(&older);
                remove_pair(dir, &older);
            }
        }
        let mut e = Entry::new(header);
        state.lru.charge(FILE_COST);
        for (b, rec) in blocks {
            state.lru.charge(block_cost(rec.len as u64));
            let tick = state.lru.touch(None, (key.clone(), b));
            e.blocks.insert(
                b,
                BlockState {
                    rec,
                    tick,
                    verified: false,
                },
            );
        }
        e.data = Some(Arc::new(data));
        state.files.insert(key.clone(), e);
        indexes.insert(key, idx);
    }
    Ok(indexes)
}

fn remove_pair(dir: &Path, key: &str) {
    // The index first: a data file without one is an orphan removed at next load.
    let _ = std::fs::remove_file(store::idx_path(dir, key));
    let _ = std::fs::remove_file(store::data_path(dir, key));
}

/// The one thread that changes the cache on disk.
struct Writer {
    inner: Arc<Inner>,
    indexes: HashMap<Arc<str>, Index>,
    saved: SavedStats,
    last_counts: (u64, u64, u64),
}

/// A block written in this batch, recorded once its data file is synced.
struct Written {
    key: Arc<str>,
    block: u64,
    rec: BlockRec,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let job = match rx.recv_timeout(STATS_EVERY) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.save_stats();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // A batch: this job and whatever is already queued, synced once.
            let mut batch = vec![job];
            while batch.len() < 64 {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        self.save_stats();
    }

    fn run_batch(&mut self, batch: Vec<Job>) {
        let mut written: Vec<Written> = Vec::new();
        let mut flushes = Vec::new();
        let mut seeded = Vec::new();
        for job in batch {
            match job {
                Job::Store {
                    key,
                    header,
                    offset,
                    data,
                } => {
                    let len = data.len() as u64;
                    self.store(&key, &header, offset, &data, &mut written);
                    self.inner.pending.fetch_sub(len, Ordering::AcqRel);
                    self.inner.stalled.store(false, Ordering::Relaxed);
                    self.inner.room.notify_waiters();
                }
                Job::Seed {
                    key,
                    header,
                    file,
                    done,
                } => {
                    for b in 0..blocks_of(header.size) {
                        let want = block_len(header.size, b) as usize;
                        match store::read_exact_at(&file, b * BLOCK, want) {
                            Ok(d) if d.len() == want => {
                                self.store(&key, &header, b * BLOCK, &d, &mut written)
                            }
                            _ => break,
                        }
                    }
                    seeded.push(done);
                }
                Job::Drop { key } => {
                    self.record(std::mem::take(&mut written));
                    self.drop_file(&key);
                }
                Job::DropBlock { key, block, gen } => {
                    self.record(std::mem::take(&mut written));
                    let ok = {
                        let st = self.inner.lock();
                        st.files.get(&key).is_some_and(|e| e.gen == gen)
                    };
                    if ok {
                        self.evict(vec![(key, block)]);
                    }
                }
                Job::Flush(tx) => flushes.push(tx),
            }
        }
        self.record(written);
        for tx in flushes {
            let _ = tx.send(());
        }
        for done in seeded {
            let _ = done.send(());
        }
    }

    /// Writes the whole, absent blocks among `data` (at `offset`) into the data file.
    fn store(
        &mut self,
        key: &Arc<str>,
        header: &Header,
        offset: u64,
        data: &[u8],
        written: &mut Vec<Written>,
    ) {
        let end = offset + data.len() as u64;
        let mut b = offset.div_ceil(BLOCK);
        while b * BLOCK < end {
            let blen = block_len(header.size, b);
            let bstart = b * BLOCK;
            if blen == 0 || bstart + blen > end {
                break;
            }
            let bytes = &data[(bstart - offset) as usize..(bstart - offset + blen) as usize];
            self.store_block(key, header, b, bytes, written);
            b += 1;
        }
    }

    fn store_block(
        &mut self,
        key: &Arc<str>,
        header: &Header,
        b: u64,
        bytes: &[u8],
        written: &mut Vec<Written>,
    ) {
        // Still wanted, and not already there (blocks are never rewritten: a pinned file's
        // bytes stay as the kernel reads them).
        let need_file = {
            let mut st = self.inner.lock();
            let current = st.current.get(&header.file_id) == Some(key);
            let e = st
                .files
                .entry(key.clone())
                .or_insert_with(|| Entry::new(header.clone()));
            if !current || e.doomed || e.header.size != header.size || e.blocks.contains_key(&b) {
                return;
            }
            if written.iter().any(|w| w.key == *key && w.block == b) {
                return;
            }
            e.data.is_none()
        };
        let cost = block_cost(bytes.len() as u64) + if need_file { FILE_COST } else { 0 };
        if !self.make_room(cost) {
            debug!(key = %key, block = b, "cache full of pinned files: block not cached");
            return;
        }
        let data = if need_file {
            match self.create_pair(key, header) {
                Ok(d) => d,
                Err(e) => {
                    warn!(dir = %self.inner.dir.display(), "cannot create a cache file: {e}");
                    self.inner.lock().lru.credit(cost);
                    return;
                }
            }
        } else {
            let data = self
                .inner
                .lock()
                .files
                .get(key)
                .and_then(|e| e.data.clone());
            match data {
                Some(d) => d,
                None => {
                    self.inner.lock().lru.credit(cost);
                    return;
                }
            }
        };
        use std::os::unix::fs::FileExt;
        if let Err(e) = data.write_all_at(bytes, b * BLOCK) {
            warn!(dir = %self.inner.dir.display(), "cannot write a cached block: {e}");
            self.inner.lock().lru.credit(block_cost(bytes.len() as u64));
            return;
        }
        written.push(Written {
            key: key.clone(),
            block: b,
            rec: BlockRec {
                len: bytes.len() as u32,
                crc: store::crc(bytes),
            },
        });
    }

    fn create_pair(&mut self, key: &Arc<str>, header: &Header) -> io::Result<Arc<File>> {
        let dir = &self.inner.dir;
        let data = Arc::new(store::open_data(&store::data_path(dir, key), header.size)?);
        let idx = Index::create(&store::idx_path(dir, key), header)?;
        self.indexes.insert(key.clone(), idx);
        let mut st = self.inner.lock();
        if let Some(e) = st.files.get_mut(key) {
            e.data = Some(data.clone());
        }
        Ok(data)
    }

    /// Syncs the data of the blocks written, then records them: only then are they served.
    fn record(&mut self, written: Vec<Written>) {
        if written.is_empty() {
            return;
        }
        let mut by_key: BTreeMap<Arc<str>, Vec<(u64, BlockRec)>> = BTreeMap::new();
        for w in written {
            by_key.entry(w.key).or_default().push((w.block, w.rec));
        }
        for (key, blocks) in by_key {
            let data = self
                .inner
                .lock()
                .files
                .get(&key)
                .and_then(|e| e.data.clone());
            let synced = data.as_ref().is_some_and(|d| d.sync_data().is_ok());
            let recorded = synced
                && self
                    .indexes
                    .get_mut(&key)
                    .is_some_and(|idx| idx.add(&blocks).is_ok());
            let mut st = self.inner.lock();
            let st = &mut *st;
            let Some(e) = st.files.get_mut(&key).filter(|_| recorded) else {
                for (_, rec) in &blocks {
                    st.lru.credit(block_cost(rec.len as u64));
                }
                continue;
            };
            for (b, rec) in blocks {
                let tick = st.lru.touch(None, (key.clone(), b));
                e.blocks.insert(
                    b,
                    BlockState {
                        rec,
                        tick,
                        verified: true,
                    },
                );
            }
        }
    }

    /// Evicts least recently used blocks of unpinned files until `cost` more bytes fit, and
    /// charges them. False if they cannot fit.
    fn make_room(&mut self, cost: u64) -> bool {
        loop {
            let victims: Vec<(Arc<str>, u64)> = {
                let mut st = self.inner.lock();
                if st.lru.reserve(cost) {
                    return true;
                }
                if cost > st.lru.limit() {
                    return false;
                }
                let over = (st.lru.used() + cost).saturating_sub(st.lru.limit());
                let files = &st.files;
                let mut freed = 0;
                let mut v = Vec::new();
                for (_, (key, b)) in st
                    .lru
                    .oldest(|(k, _)| files.get(k).is_some_and(|e| e.pins > 0))
                {
                    if freed >= over {
                        break;
                    }
                    let len = files
                        .get(key)
                        .and_then(|e| e.blocks.get(b))
                        .map_or(0, |s| s.rec.len as u64);
                    freed += block_cost(len);
                    v.push((key.clone(), *b));
                }
                v
            };
            if victims.is_empty() {
                return false;
            }
            self.evict(victims);
        }
    }

    /// Removes blocks: from memory (readers stop using them), then a synced removal record,
    /// then the hole. A file left with no block loses its files.
    fn evict(&mut self, victims: Vec<(Arc<str>, u64)>) {
        let mut by_key: BTreeMap<Arc<str>, Vec<u64>> = BTreeMap::new();
        for (k, b) in victims {
            by_key.entry(k).or_default().push(b);
        }
        for (key, blocks) in by_key {
            let (data, emptied) = {
                let mut st = self.inner.lock();
                let st = &mut *st;
                let Some(e) = st.files.get_mut(&key) else {
                    continue;
                };
                e.gen += 1;
                for b in &blocks {
                    if let Some(s) = e.blocks.remove(b) {
                        st.lru.forget(s.tick);
                    }
                }
                let emptied = e.blocks.is_empty() && e.pins == 0;
                let data = if emptied {
                    e.data.take()
                } else {
                    e.data.clone()
                };
                (data, emptied)
            };
            let size = self
                .inner
                .lock()
                .files
                .get(&key)
                .map_or(0, |e| e.header.size);
            let costs: u64 = blocks.iter().map(|b| block_cost(block_len(size, *b))).sum();
            if emptied {
                self.indexes.remove(&key);
                remove_pair(&self.inner.dir, &key);
                self.inner.lock().lru.credit(costs + FILE_COST);
                continue;
            }
            let recorded = self
                .indexes
                .get_mut(&key)
                .is_some_and(|idx| idx.remove(&blocks).is_ok());
            if let (true, Some(d)) = (recorded, data) {
                for b in &blocks {
                    if let Err(e) = store::punch_hole(&d, b * BLOCK, BLOCK) {
                        debug!("cannot punch a hole in a cache file: {e}");
                    }
                }
            }
            self.inner.lock().lru.credit(costs);
        }
    }

    /// Removes a version entirely (its file changed on the drive).
    fn drop_file(&mut self, key: &Arc<str>) {
        let removed = {
            let mut st = self.inner.lock();
            let st = &mut *st;
            match st.files.get(key) {
                Some(e) if e.pins == 0 && e.doomed => {}
                _ => return,
            }
            let Some(e) = st.files.remove(key) else {
                return;
            };
            let mut cost = 0;
            for s in e.blocks.values() {
                st.lru.forget(s.tick);
                cost += block_cost(s.rec.len as u64);
            }
            if e.data.is_some() {
                cost += FILE_COST;
            }
            st.lru.credit(cost);
            e.data.is_some()
        };
        self.indexes.remove(key);
        if removed {
            remove_pair(&self.inner.dir, key);
        }
    }

    fn save_stats(&mut self) {
        let now = crate::metrics::cache_counts();
        if now == self.last_counts {
            return;
        }
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.saved.hit_blocks += d(now.0, self.last_counts.0);
        self.saved.miss_blocks += d(now.1, self.last_counts.1);
        self.saved.passthrough_opens += d(now.2, self.last_counts.2);
        self.last_counts = now;
        let path = self.inner.dir.join("stats.json");
        if let Ok(json) = serde_json::to_vec(&self.saved) {
            let _ =
                crate::atomic_file::replace(&path, &json, crate::atomic_file::Durability::Process);
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
