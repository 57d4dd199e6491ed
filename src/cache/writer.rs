//! The one thread that changes the cache on disk: writes fetched and seeded blocks, records
//! them once synced, evicts, drops changed files, saves the hit counters.
//!
//! Blocks are written as they come and recorded in batches after
//! one `fdatasync` per file, every `SYNC_EVERY` or `SYNC_BYTES` written, whichever comes first,
//! and before anything that removes blocks or answers a flush. Seeding after an upload runs a
//! block at a time, only while no job waits: reads' bytes always go first.
//!
//! Whole blocks are written with O_DIRECT from one aligned buffer (`Direct`): filling the page
//! cache with them cost more CPU than the read that fetched them (on this project's VM a
//! buffered 1 GiB write took 0.25-3.9 s of system time, a direct one 0.1-0.3 s), and a first
//! read shares the CPU with its cache. A block the kernel refuses that way (a file system
//! without O_DIRECT) is written buffered, with writeback started at once, and so are the rest.
//! The periodic `fdatasync` covers both kinds: a block is recorded only after it.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::load::remove_pair;
use super::stats::SavedStats;
use super::store::{self, block_cost, block_len, blocks_of, BlockRec, Header, Index, FILE_COST};
use super::{BlockState, Entry, Inner, Job, BLOCK, SEED_SPARES};

mod direct;
mod indexes;
mod seed;

use direct::Direct;
use indexes::Indexes;
pub(super) use seed::SeedTask;

/// Written blocks are synced and recorded at least this often...
pub(super) const SYNC_EVERY: Duration = Duration::from_secs(1);
/// ...or once this many bytes wait for their sync.
pub(super) const SYNC_BYTES: u64 = 64 << 20;
/// How often the writer saves the hit counters for `alipanfs about`.
const STATS_EVERY: Duration = Duration::from_secs(5);

/// A block written, recorded once its data file is synced.
struct Written {
    key: Arc<str>,
    block: u64,
    rec: BlockRec,
}

pub(super) struct Writer {
    inner: Arc<Inner>,
    indexes: Indexes,
    saved: SavedStats,
    last_counts: (u64, u64, u64),
    last_saved: Instant,
    /// Written, not yet synced nor recorded (not served yet).
    unsynced: Vec<Written>,
    unsynced_bytes: u64,
    oldest_unsynced: Option<Instant>,
    seeds: VecDeque<SeedTask>,
    /// Seeds copied whole, told done at the next `record`.
    seeded: Vec<tokio::sync::oneshot::Sender<()>>,
    /// A full disk is told once, not once per block.
    told_disk_full: bool,
    /// Direct writes of whole blocks; None once the file system refused them.
    direct: Option<Direct>,
}

impl Writer {
    /// Starts the writer thread of `inner`.
    pub(super) fn start(
        inner: Arc<Inner>,
        rx: mpsc::Receiver<Job>,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let mut writer = Writer {
            saved: SavedStats::load(&inner.dir),
            inner,
            indexes: Indexes::new(),
            last_counts: crate::metrics::cache_counts(),
            last_saved: Instant::now(),
            unsynced: Vec::new(),
            unsynced_bytes: 0,
            oldest_unsynced: None,
            seeds: VecDeque::new(),
            seeded: Vec::new(),
            told_disk_full: false,
            direct: Some(Direct::new()),
        };
        // A limit lowered since the last mount: make room at once.
        writer.make_room(0, false);
        std::thread::Builder::new()
            .name("cache-writer".into())
            .spawn(move || writer.run(rx))
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let wait = if !self.seeds.is_empty() {
                Duration::ZERO
            } else if let Some(t) = self.oldest_unsynced {
                SYNC_EVERY.saturating_sub(t.elapsed())
            } else {
                STATS_EVERY
            };
            match rx.recv_timeout(wait) {
                Ok(job) => self.handle(job),
                Err(mpsc::RecvTimeoutError::Timeout) => self.seed_step(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let due = self
                .oldest_unsynced
                .is_some_and(|t| t.elapsed() >= SYNC_EVERY);
            if due || self.unsynced_bytes >= SYNC_BYTES {
                self.record();
            }
            if self.last_saved.elapsed() >= STATS_EVERY {
                self.save_stats();
            }
        }
        self.record();
        self.save_stats();
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Store {
                key,
                header,
                offset,
                data,
                _permit,
            } => {
                self.store(&key, &header, offset, &data);
                self.inner
                    .pending
                    .fetch_sub(data.len() as u64, Ordering::AcqRel);
            }
            Job::Seed(task) => self.seeds.push_back(task),
            Job::Drop { key } => {
                self.record();
                self.drop_file(&key);
            }
            Job::DropBlock { key, block, gen } => {
                self.record();
                let ok = {
                    let st = self.inner.lock();
                    st.files.get(&key).is_some_and(|e| e.gen == gen)
                };
                if ok {
                    self.evict(vec![(key, block)]);
                }
            }
            Job::Flush(tx) => {
                self.record();
                let _ = tx.send(());
            }
        }
    }

    /// Copies the next block of the first seeding task; a task ends at its file's end, at a
    /// short read, or when its block finds no room (seeding never evicts recent blocks).
    fn seed_step(&mut self) {
        let Some(t) = self.seeds.front_mut() else {
            return;
        };
        let (key, header, b) = (t.key.clone(), t.header.clone(), t.next);
        let want = block_len(header.size, b) as usize;
        let more = b < blocks_of(header.size)
            && match store::read_exact_at(&t.file, b * BLOCK, want) {
                Ok(d) if d.len() == want => self.store_block(&key, &header, b, &d, true),
                _ => false,
            };
        if more {
            if let Some(t) = self.seeds.front_mut() {
                t.next += 1;
            }
            return;
        }
        // Recorded (synced) once the seeds queued run out, or at the periodic sync, and told
        // done then (`record`): a sync per seeded file made a burst of small uploads queue
        // behind the disk.
        if let Some(t) = self.seeds.pop_front() {
            self.inner.seeds_queued.fetch_sub(1, Ordering::AcqRel);
            self.seeded.push(t.done);
            if self.seeds.is_empty() {
                self.record();
            }
        }
    }

    /// Writes the whole, absent blocks among `data` (at `offset`) into the data file.
    fn store(&mut self, key: &Arc<str>, header: &Header, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let mut b = offset.div_ceil(BLOCK);
        while b * BLOCK < end {
            let blen = block_len(header.size, b);
            let bstart = b * BLOCK;
            if blen == 0 || bstart + blen > end {
                break;
            }
            let bytes = &data[(bstart - offset) as usize..(bstart - offset + blen) as usize];
            self.store_block(key, header, b, bytes, false);
            b += 1;
        }
    }

    /// Writes block `b`; false if it found no room or could not be written. `seeding` spares
    /// recently used blocks from eviction.
    fn store_block(
        &mut self,
        key: &Arc<str>,
        header: &Header,
        b: u64,
        bytes: &[u8],
        seeding: bool,
    ) -> bool {
        // Still wanted, and not already there (blocks are never rewritten: a pinned file's
        // bytes stay as the kernel reads them).
        let need_file = {
            let mut st = self.inner.lock();
            let current = match st.current.get(&*header.file_id) {
                Some(k) => k == key,
                // Its entry was pruned while these bytes were queued: it is current again.
                None => {
                    st.current.insert(header.file_id.to_string(), key.clone());
                    true
                }
            };
            let e = st
                .files
                .entry(key.clone())
                .or_insert_with(|| Entry::new(header.clone()));
            if !current || e.doomed || e.header.size != header.size || e.blocks.contains_key(&b) {
                return true;
            }
            if self.unsynced.iter().any(|w| w.key == *key && w.block == b) {
                return true;
            }
            !e.on_disk
        };
        let cost = block_cost(bytes.len() as u64) + if need_file { FILE_COST } else { 0 };
        if !self.make_room(cost, seeding) {
            debug!(key = %key, block = b, "no room in the cache: block not cached");
            return false;
        }
        let data = match self.data_file(key, header, need_file) {
            Ok(d) => d,
            Err(e) => {
                self.io_failed("cannot create a cache file", &e);
                self.inner.lock().lru.credit(cost);
                return false;
            }
        };
        if let Err(e) = self.write_block(&data, b * BLOCK, bytes) {
            self.io_failed("cannot write a cached block", &e);
            self.inner.lock().lru.credit(block_cost(bytes.len() as u64));
            return false;
        }
        self.unsynced.push(Written {
            key: key.clone(),
            block: b,
            rec: BlockRec {
                len: bytes.len() as u32,
                crc: store::crc(bytes),
            },
        });
        self.unsynced_bytes += bytes.len() as u64;
        self.oldest_unsynced.get_or_insert_with(Instant::now);
        true
    }

    /// Writes a block's bytes at `offset` of `data`: directly when whole, else buffered.
    fn write_block(&mut self, data: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if bytes.len() as u64 == BLOCK {
            if let Some(direct) = &mut self.direct {
                match direct.write(data, offset, bytes) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Err(e),
                    Err(e) => {
                        debug!(dir = %self.inner.dir.display(), "no direct writes here ({e}): cache blocks go through the page cache");
                        self.direct = None;
                    }
                }
            }
        }
        data.write_all_at(bytes, offset)?;
        start_writeback(data, offset, bytes.len() as u64);
        Ok(())
    }

    /// The data file of `key`, created with its index when `create`.
    fn data_file(
        &mut self,
        key: &Arc<str>,
        header: &Header,
        create: bool,
    ) -> io::Result<Arc<File>> {
        if create {
            return self.create_pair(key, header);
        }
        self.inner
            .data_fd(key)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "cache file removed"))
    }

    fn create_pair(&mut self, key: &Arc<str>, header: &Header) -> io::Result<Arc<File>> {
        let dir = &self.inner.dir;
        let data = Arc::new(store::open_data(&store::data_path(dir, key), header.size)?);
        let idx = Index::create(&store::idx_path(dir, key), header)?;
        self.indexes.insert(key.clone(), idx);
        // The entry may have been pruned since `store_block` made it (its last reader closed
        // meanwhile: a short segment is opened, read and closed at once). Make it again, or
        // the blocks written now could never be recorded.
        let mut st = self.inner.lock();
        let st = &mut *st;
        let current = st
            .current
            .entry(header.file_id.to_string())
            .or_insert_with(|| key.clone());
        if *current == *key {
            let e = st
                .files
                .entry(key.clone())
                .or_insert_with(|| Entry::new(header.clone()));
            e.on_disk = true;
            e.data = Some(data.clone());
            st.hold_open(key.clone());
        }
        Ok(data)
    }

    /// Syncs the data of the blocks written, then records them: only then are they served.
    /// Records the blocks written since the last call (`record_blocks`), then tells the seeds
    /// finished meanwhile that they are done: their files' blocks are in the cache now.
    fn record(&mut self) {
        self.record_blocks();
        for done in self.seeded.drain(..) {
            let _ = done.send(());
        }
    }

    fn record_blocks(&mut self) {
        let written = std::mem::take(&mut self.unsynced);
        self.unsynced_bytes = 0;
        self.oldest_unsynced = None;
        if written.is_empty() {
            return;
        }
        let mut by_key: BTreeMap<Arc<str>, Vec<(u64, BlockRec)>> = BTreeMap::new();
        for w in written {
            by_key.entry(w.key).or_default().push((w.block, w.rec));
        }
        for (key, blocks) in by_key {
            let data = self.inner.data_fd(&key);
            let recorded = match data.map(|d| d.sync_data()) {
                Some(Ok(())) => match self
                    .indexes
                    .get(&self.inner.dir, &key)
                    .and_then(|idx| idx.add(&blocks))
                {
                    Ok(()) => true,
                    // Its pair was removed meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => {
                        self.io_failed("cannot record cached blocks", &e);
                        false
                    }
                },
                Some(Err(e)) => {
                    self.io_failed("cannot sync a cache file", &e);
                    false
                }
                None => false,
            };
            let now_s = self.inner.now_s();
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
                        used_s: now_s,
                    },
                );
            }
        }
    }

    /// Evicts least recently used blocks of unpinned files until `cost` more bytes fit, and
    /// charges them. False if they cannot fit. `spare_recent`: blocks used within
    /// `SEED_SPARES` are not evicted either.
    fn make_room(&mut self, cost: u64, spare_recent: bool) -> bool {
        let now_s = self.inner.now_s();
        let spared = SEED_SPARES.as_secs() as u32;
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
                let keep = |(k, b): &(Arc<str>, u64)| {
                    files.get(k).is_some_and(|e| {
                        e.pins > 0
                            || (spare_recent
                                && e.blocks.get(b).is_some_and(|s| {
                                    s.used_s != 0 && s.used_s.saturating_add(spared) > now_s
                                }))
                    })
                };
                let mut freed = 0;
                let mut v = Vec::new();
                for (_, (key, b)) in st.lru.oldest(keep) {
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
            let emptied = {
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
                if emptied {
                    e.on_disk = false;
                    e.data = None;
                }
                emptied
            };
            let data = if emptied {
                None
            } else {
                self.inner.data_fd(&key)
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
                let mut st = self.inner.lock();
                st.lru.credit(costs + FILE_COST);
                st.prune(&key);
                continue;
            }
            let dir = self.inner.dir.clone();
            let recorded = self
                .indexes
                .get(&dir, &key)
                .is_ok_and(|idx| idx.remove(&blocks).is_ok());
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
            if e.on_disk {
                cost += FILE_COST;
            }
            st.lru.credit(cost);
            e.on_disk
        };
        self.indexes.remove(key);
        if removed {
            remove_pair(&self.inner.dir, key);
        }
    }

    fn save_stats(&mut self) {
        self.last_saved = Instant::now();
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

    /// Logs a failed disk operation: a full disk once (the cache is best effort and the mount
    /// goes on without caching), anything else each time.
    fn io_failed(&mut self, what: &str, e: &io::Error) {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            if !self.told_disk_full {
                self.told_disk_full = true;
                warn!(dir = %self.inner.dir.display(), "{what}: the local disk is full; the data cache skips blocks until space frees");
            } else {
                debug!("{what}: {e}");
            }
            return;
        }
        warn!(dir = %self.inner.dir.display(), "{what}: {e}");
    }
}

/// Starts writeback of a block just written, without waiting: the periodic sync then finds
/// most of it on disk already.
fn start_writeback(file: &File, offset: u64, len: u64) {
    crate::platform::start_writeback(file, offset, len)
}
