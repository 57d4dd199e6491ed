//! One open file handle: its window, its chunks (fetched or in flight), and serving reads.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::fetch::Priority;
use super::window::{Window, WindowConfig};
use super::Reader;
use crate::cache::{CachedFile, BLOCK};
use crate::error::{Error, Result};
use crate::sync::{Level, Mutex, MutexGuard};

/// Forward jumps up to this are absorbed without resetting the window.
const MAX_FORWARD_SKIP: u64 = 1024 * 1024;
/// Bytes kept behind the current read for short backward seeks.
const BEHIND: u64 = 1024 * 1024;
/// When the budget cannot hold a whole read-ahead piece, a smaller one is worth it only above this.
const MIN_SHRUNK_PIECE: u64 = 128 * 1024;

#[derive(Clone)]
enum ChunkState {
    Pending,
    Ready(Bytes),
    /// The download's error, for the first read that waits on it (`Error` is not `Clone`);
    /// later readers fetch their bytes again.
    Failed(Arc<Mutex<Option<Error>>>),
}

/// A range of the file, fetched by its own task, holding its share of the memory budget.
struct Chunk {
    range: Range<u64>,
    state: watch::Receiver<ChunkState>,
    task: AbortHandle,
    /// Set once the task's download request is under way and its bytes go to the data cache.
    caching: Option<Arc<AtomicBool>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // Bytes the server is already sending to the data cache are worth their few ms: a
        // later open (a scan's next pass, a remount) reads them from disk instead of asking
        // again. Anything else nobody will read: stop it and free its slot at once.
        if self
            .caching
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return;
        }
        self.task.abort();
    }
}

struct State {
    window: Window,
    /// Sorted, contiguous, covering `window.buffered()`.
    chunks: VecDeque<Chunk>,
}

/// The part of a handle the reader can reach, to reclaim the read-ahead of idle handles.
pub(super) struct Shared {
    state: Mutex<State>,
    /// Milliseconds since the reader's epoch at the last read.
    last_read_ms: AtomicU64,
    /// Reads in progress: a handle waiting on a slow download is not idle.
    active_reads: AtomicUsize,
}

/// Counts a read in progress for as long as it lives (also when its future is dropped).
struct ActiveRead<'a>(&'a AtomicUsize);

impl Drop for ActiveRead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Drops this handle's buffered bytes if it has not been read since `before_ms`.
    /// Never waits: a handle busy planning a read is not idle.
    pub(super) fn release_if_idle(&self, before_ms: u64) -> bool {
        if self.last_read_ms.load(Ordering::Relaxed) >= before_ms
            || self.active_reads.load(Ordering::Relaxed) > 0
        {
            return false;
        }
        let Some(mut st) = self.state.try_lock() else {
            return false;
        };
        if st.chunks.is_empty() {
            return false;
        }
        st.chunks.clear();
        let start = st.window.buffered().start;
        st.window.truncate(start);
        true
    }
}

pub struct ReadHandle {
    reader: Arc<Reader>,
    file_id: Arc<str>,
    size: u64,
    shared: Arc<Shared>,
    cache: Option<Arc<CachedFile>>,
}

/// Where one piece of a read's bytes comes from.
enum Source {
    /// `part` of the chunk starting at `chunk_start`.
    Chunk {
        chunk_start: u64,
        part: Range<u64>,
        state: watch::Receiver<ChunkState>,
    },
    Direct(Range<u64>),
}

impl ReadHandle {
    pub(super) fn new(
        reader: Arc<Reader>,
        file_id: &str,
        size: u64,
        cache: Option<Arc<CachedFile>>,
    ) -> Self {
        let cfg = &reader.cfg;
        let wcfg = WindowConfig {
            initial_window: cfg.initial_window,
            max_read_ahead: cfg.max_read_ahead,
            max_forward_skip: MAX_FORWARD_SKIP,
            behind: BEHIND,
            extend_step: cfg.request_size,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(
                Level::READ_HANDLE,
                "read.handle",
                State {
                    window: Window::new(wcfg, size),
                    chunks: VecDeque::new(),
                },
            ),
            last_read_ms: AtomicU64::new(reader.now_ms()),
            active_reads: AtomicUsize::new(0),
        });
        reader.register(&shared);
        ReadHandle {
            shared,
            reader,
            file_id: file_id.into(),
            size,
            cache,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Bytes [offset, offset+len) clamped to the file size; empty at/after EOF.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes> {
        let end = offset.saturating_add(len as u64).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.shared.active_reads.fetch_add(1, Ordering::Relaxed);
        let _active = ActiveRead(&self.shared.active_reads);
        self.shared
            .last_read_ms
            .store(self.reader.now_ms(), Ordering::Relaxed);
        let span = tracing::debug_span!("read", file_id = %self.file_id, offset, len);
        tracing::trace!(file_id = %self.file_id, offset, len, "read");
        if let Some(bytes) = self.read_complete(offset, end).await {
            return Ok(bytes);
        }
        self.read_range(offset, end).instrument(span).await
    }

    /// A file whose every block is cached (read through the daemon: no passthrough here) is
    /// read straight from the cache file, without read-ahead: the disk is fast enough, and
    /// buffering local bytes in memory would only cost copies. `None` if a block went missing.
    async fn read_complete(&self, offset: u64, end: u64) -> Option<Bytes> {
        let cache = self.cache.as_ref().filter(|c| c.is_complete())?;
        let c = cache.clone();
        let blocks = tokio::task::spawn_blocking(move || c.read(offset, end))
            .await
            .ok()?;
        let parts: Option<Vec<Bytes>> = blocks.into_iter().map(|(_, b)| b).collect();
        Some(concat(parts?))
    }

    async fn read_range(&self, offset: u64, end: u64) -> Result<Bytes> {
        let sources = self.plan(offset, end);
        let mut parts = Vec::with_capacity(sources.len());
        for src in sources {
            let (range, data) = match src {
                Source::Chunk {
                    chunk_start,
                    part,
                    mut state,
                } => {
                    let outcome = match state.wait_for(|s| !matches!(s, ChunkState::Pending)).await
                    {
                        Ok(s) => match &*s {
                            ChunkState::Ready(b) => Ok(b.clone()),
                            ChunkState::Failed(e) => Err(e.lock().take()),
                            ChunkState::Pending => Err(None),
                        },
                        // Its task was cancelled (the chunk was evicted meanwhile).
                        Err(_) => Err(None),
                    };
                    match outcome {
                        Ok(b) => (part, Some((chunk_start, b))),
                        Err(err) => {
                            // Drop it (and what follows) so later reads plan afresh.
                            self.drop_from(chunk_start);
                            if let Some(e) = err {
                                return Err(e);
                            }
                            (part, None)
                        }
                    }
                }
                Source::Direct(range) => (range, None),
            };
            let bytes = match data {
                Some((chunk_start, b)) => slice(&b, chunk_start, &range),
                None => {
                    fetch_range(
                        &self.reader,
                        self.cache.as_ref(),
                        &self.file_id,
                        range.start..range.end,
                        Priority::Demand,
                        None,
                    )
                    .await?
                }
            };
            let short = (bytes.len() as u64) < range.end - range.start;
            parts.push(bytes);
            if short {
                // The file ended early (changed remotely): what we have is all there is.
                break;
            }
        }
        Ok(concat(parts))
    }

    /// Runs the window for this read, starts the downloads it asks for, and says where each
    /// byte of `[offset, end)` will come from. Nothing here waits.
    fn plan(&self, offset: u64, end: u64) -> Vec<Source> {
        let mut st = self.lock();
        let plan = st.window.read(offset, end - offset);
        if plan.reset {
            st.chunks.clear();
        }
        while st
            .chunks
            .front()
            .is_some_and(|c| c.range.end <= plan.drop_before)
        {
            st.chunks.pop_front();
        }
        if !plan.fetch.is_empty() {
            tracing::debug!(
                file_id = %self.file_id,
                from = plan.fetch.start,
                to = plan.fetch.end,
                demand_end = plan.demand_end,
                reset = plan.reset,
                "fetch planned"
            );
            self.start_fetches(&mut st, plan.fetch.clone(), plan.demand_end);
        }

        let mut sources = Vec::new();
        let mut pos = offset;
        for c in st.chunks.iter() {
            if pos >= end {
                break;
            }
            if c.range.end <= pos {
                continue;
            }
            if c.range.start > pos {
                let stop = c.range.start.min(end);
                sources.push(Source::Direct(pos..stop));
                pos = stop;
                if pos >= end {
                    break;
                }
            }
            let stop = c.range.end.min(end);
            sources.push(Source::Chunk {
                chunk_start: c.range.start,
                part: pos..stop,
                state: c.state.clone(),
            });
            pos = stop;
        }
        if pos < end {
            sources.push(Source::Direct(pos..end));
        }
        sources
    }

    /// Spawns the downloads for `fetch` in request-size pieces, each holding budget for its bytes.
    /// Stops (and truncates the window) where the budget runs out.
    fn start_fetches(&self, st: &mut State, fetch: Range<u64>, demand_end: u64) {
        // Bounded so one piece's budget fits a semaphore acquisition.
        let request = self.reader.cfg.request_size.clamp(64 * 1024, 1 << 30);
        let mut pieces = split(fetch.start..demand_end, request, Priority::Demand);
        pieces.extend(split(demand_end..fetch.end, request, Priority::Prefetch));
        for (range, prio) in pieces {
            let want = range.end - range.start;
            let budget = &self.reader.budget;
            let mut got = budget.clone().try_acquire_many_owned(permits(want));
            if got.is_err() && self.reader.reclaim_idle(&self.shared) {
                got = budget.clone().try_acquire_many_owned(permits(want));
            }
            let (range, permit) = match got {
                Ok(p) => (range, p),
                Err(_) => {
                    // Budget full: read-ahead shrinks to what fits (or stops); a demand read
                    // fetches its bytes directly, outside the buffer.
                    let avail = budget.available_permits() as u64;
                    let shrunk = avail.min(want);
                    let fits = if prio == Priority::Prefetch && shrunk >= MIN_SHRUNK_PIECE {
                        budget
                            .clone()
                            .try_acquire_many_owned(permits(shrunk))
                            .ok()
                            .map(|p| (range.start..range.start + shrunk, p))
                    } else {
                        None
                    };
                    match fits {
                        Some((r, p)) => {
                            let stop = r.end;
                            self.spawn_chunk(st, r, prio, p);
                            st.window.truncate(stop);
                        }
                        None => st.window.truncate(range.start),
                    }
                    tracing::debug!(file_id = %self.file_id, offset = range.start, "read-ahead budget full");
                    return;
                }
            };
            self.spawn_chunk(st, range, prio, permit);
        }
    }

    fn spawn_chunk(
        &self,
        st: &mut State,
        range: Range<u64>,
        prio: Priority,
        permit: OwnedSemaphorePermit,
    ) {
        let (tx, rx) = watch::channel(ChunkState::Pending);
        let reader = self.reader.clone();
        let file_id = self.file_id.clone();
        let cache = self.cache.clone();
        let caching = cache.as_ref().map(|_| Arc::new(AtomicBool::new(false)));
        let started = caching.clone();
        let (start, len) = (range.start, range.end - range.start);
        let task = tokio::spawn(async move {
            let fetched = fetch_range(&reader, cache.as_ref(), &file_id, start..start + len, prio, started.as_deref()).await;
            let state = match fetched {
                Ok(b) => ChunkState::Ready(b),
                Err(e) => {
                    tracing::debug!(file_id = %file_id, offset = start, len, error = %e, "chunk download failed");
                    ChunkState::Failed(Arc::new(Mutex::new(Level::READ_MISC, "read.chunk_error", Some(e))))
                }
            };
            tx.send_replace(state);
        }
        .instrument(tracing::debug_span!("fetch", file_id = %self.file_id, offset = start, len, ?prio)));
        st.chunks.push_back(Chunk {
            range,
            state: rx,
            task: task.abort_handle(),
            caching,
            _permit: permit,
        });
    }

    /// Forgets the chunk starting at `start` and everything after it.
    fn drop_from(&self, start: u64) {
        let mut st = self.lock();
        if let Some(i) = st.chunks.iter().position(|c| c.range.start == start) {
            st.chunks.truncate(i);
            st.window.truncate(start);
        }
    }
}

impl Drop for ReadHandle {
    fn drop(&mut self) {
        // Chunks abort their tasks and release their budget as they drop.
        self.lock().chunks.clear();
    }
}

/// The bytes of `range`: from the data cache where its blocks are, the missing blocks fetched
/// whole from the drive and handed to the cache. Neither a read nor read-ahead waits for the
/// cache's writer: bytes it has no room for are not cached (a later read fills those blocks).
/// `started` is set once a download request for the missing blocks is under way.
async fn fetch_range(
    reader: &Reader,
    cache: Option<&Arc<CachedFile>>,
    file_id: &str,
    range: Range<u64>,
    prio: Priority,
    started: Option<&AtomicBool>,
) -> Result<Bytes> {
    let (start, len) = (range.start, range.end - range.start);
    let Some(cache) = cache else {
        let got = reader
            .fetcher
            .fetch(file_id, start, len, prio, None)
            .await?;
        crate::metrics::cache_blocks_missed(start, len);
        return Ok(got);
    };
    let end = range.end.min(cache.size());
    let blocks = {
        let c = cache.clone();
        tokio::task::spawn_blocking(move || c.read(start, end))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
    };
    let mut parts: Vec<Bytes> = Vec::with_capacity(blocks.len());
    let mut i = 0;
    while i < blocks.len() {
        if let (_, Some(b)) = &blocks[i] {
            parts.push(b.clone());
            i += 1;
            continue;
        }
        // A run of missing blocks: one request for all of them, whole.
        let first = blocks[i].0;
        let mut j = i;
        while j < blocks.len() && blocks[j].1.is_none() {
            j += 1;
        }
        let last = blocks[j - 1].0;
        let from = first * BLOCK;
        let to = ((last + 1) * BLOCK).min(cache.size());
        let got = reader
            .fetcher
            .fetch(file_id, from, to - from, prio, started)
            .await?;
        let whole = got.len() as u64 == to - from;
        if whole {
            // Best effort, never waiting: a busy cache disk must not slow a first read.
            cache.store(from, got.clone());
        }
        let lo = start.max(from) - from;
        let hi = (end.min(to) - from).min(got.len() as u64).max(lo);
        parts.push(got.slice(lo as usize..hi as usize));
        if !whole {
            // The file ended early (changed remotely): what we have is all there is.
            break;
        }
        i = j;
    }
    Ok(concat(parts))
}

fn permits(n: u64) -> u32 {
    n.min(u32::MAX as u64) as u32
}

/// Piece boundaries fall on multiples of this when pieces are large enough, so that aligned
/// reads (1 MiB, 128 KiB, ...) never straddle two pieces and are served without a copy.
const PIECE_ALIGN: u64 = 1024 * 1024;

/// `range` cut into pieces of at most `max`, of about equal size, inner cuts aligned.
fn split(range: Range<u64>, max: u64, prio: Priority) -> Vec<(Range<u64>, Priority)> {
    let len = range.end.saturating_sub(range.start);
    if len == 0 {
        return Vec::new();
    }
    let first_cut = range.start.div_ceil(PIECE_ALIGN) * PIECE_ALIGN;
    let last_cut = range.end / PIECE_ALIGN * PIECE_ALIGN;
    if max < 2 * PIECE_ALIGN || first_cut >= last_cut {
        // Pieces too small to align, or no aligned offset inside: equal pieces.
        let n = len.div_ceil(max);
        let piece = len.div_ceil(n);
        return (0..n)
            .map(|i| {
                let s = range.start + i * piece;
                (s..(s + piece).min(range.end), prio)
            })
            .filter(|(r, _)| !r.is_empty())
            .collect();
    }
    // Whole aligned units shared out evenly; the unaligned head and tail ride on the first
    // and last pieces, which therefore get the smaller shares.
    let units = (last_cut - first_cut) / PIECE_ALIGN;
    let (head, tail) = (first_cut - range.start, range.end - last_cut);
    let mut n = len.div_ceil(max / PIECE_ALIGN * PIECE_ALIGN).max(1);
    loop {
        let mut shares = vec![units / n; n as usize];
        // The middle pieces first, then the last, then the first.
        let order = (1..n.saturating_sub(1)).chain([n - 1, 0]);
        for i in order.take((units % n) as usize) {
            shares[i as usize] += 1;
        }
        let mut pieces = Vec::with_capacity(n as usize);
        let mut start = range.start;
        for (i, share) in shares.iter().enumerate() {
            let mut end = start + share * PIECE_ALIGN;
            if i == 0 {
                end += head;
            }
            if i + 1 == shares.len() {
                end += tail;
            }
            if end > start {
                pieces.push((start..end, prio));
            }
            start = end;
        }
        // Each piece holds at least one unit, so this ends by n = units + 2.
        if pieces.iter().all(|(r, _)| r.end - r.start <= max) {
            return pieces;
        }
        n += 1;
    }
}

/// The part `want` of a chunk's bytes that start at `chunk_start` (shorter if the data is).
fn slice(data: &Bytes, chunk_start: u64, want: &Range<u64>) -> Bytes {
    let len = data.len() as u64;
    let a = want.start.saturating_sub(chunk_start).min(len);
    let b = want.end.saturating_sub(chunk_start).min(len).max(a);
    data.slice(a as usize..b as usize)
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let total = parts.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(total);
    for p in parts {
        out.extend_from_slice(&p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pieces_cover_the_range_within_max_and_aligned(
            start in 0..(1u64 << 34),
            len in 0..(1u64 << 30),
            max in prop_oneof![64 * 1024..4u64 << 20, Just(8u64 << 20), Just(1u64 << 20)],
        ) {
            let pieces = split(start..start + len, max, Priority::Prefetch);
            let mut pos = start;
            for (r, _) in &pieces {
                prop_assert_eq!(r.start, pos);
                prop_assert!(r.end > r.start && r.end - r.start <= max, "{:?} > {}", r, max);
                pos = r.end;
            }
            prop_assert_eq!(pos, start + len);
            if max >= 2 * PIECE_ALIGN {
                for (r, _) in pieces.iter().skip(1) {
                    prop_assert_eq!(r.start % PIECE_ALIGN, 0);
                }
            }
            // Not needlessly many requests: at most one more than the fewest whole-unit pieces.
            let unit_max = if max >= 2 * PIECE_ALIGN { max / PIECE_ALIGN * PIECE_ALIGN } else { max };
            prop_assert!(pieces.len() as u64 <= len.div_ceil(unit_max) + 1);
        }
    }
}
