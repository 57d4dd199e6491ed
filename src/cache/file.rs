//! One cached file version as a read handle uses it: block reads, handing fetched bytes to the
//! writer (never waiting), and the pin that keeps a complete file for passthrough.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use super::store::{self, Header, BLOCK};
use super::{Inner, Job, MAX_PENDING};

/// One cached file version, as a read handle uses it.
pub struct CachedFile {
    pub(super) inner: Arc<Inner>,
    pub(super) key: Arc<str>,
    pub(super) header: Header,
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        self.inner.lock().prune(&self.key);
    }
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
        let (state, gen) = {
            let mut st = self.inner.lock();
            let st = &mut *st;
            let e = st.files.get_mut(&self.key).filter(|e| !e.doomed)?;
            let s = e.blocks.get_mut(&b)?;
            s.tick = st.lru.touch(Some(s.tick), (self.key.clone(), b));
            s.used_s = self.inner.now_s();
            (*s, e.gen)
        };
        let data = self.inner.data_fd(&self.key)?;
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
    /// Never waits: past `MAX_PENDING` queued bytes, or with no room in the memory budget,
    /// they are not cached (a read waits for no disk; a later read fills these blocks).
    pub fn store(&self, offset: u64, data: Bytes) {
        let Some(len) = self.cacheable(offset, &data) else {
            return;
        };
        // Queued bytes hold the memory budget; with none free, they are queued only when the
        // queue is empty (one job over the limit at most), so a small budget still caches.
        let budget = self.inner.budget.get();
        let permit = budget.and_then(|b| {
            let permits = len.min(u32::MAX as u64) as u32;
            b.clone().try_acquire_many_owned(permits).ok()
        });
        if !self.reserve(len, budget.is_some() && permit.is_none()) {
            self.inner.skipped.fetch_add(len, Ordering::Relaxed);
            crate::metrics::cache_skipped_bytes(len);
            debug!(file_id = %self.header.file_id, offset, "cache writer busy: not caching these bytes");
            return;
        }
        self.inner.send(Job::Store {
            key: self.key.clone(),
            header: self.header.clone(),
            offset,
            data,
            _permit: permit,
        });
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

    /// Counts `len` queued bytes, if that stays within `MAX_PENDING` (or the queue is empty);
    /// with `only_if_empty`, only into an empty queue.
    fn reserve(&self, len: u64, only_if_empty: bool) -> bool {
        let pending = &self.inner.pending;
        let before = pending.fetch_add(len, Ordering::AcqRel);
        if before > 0 && (only_if_empty || before + len > MAX_PENDING) {
            pending.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
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
