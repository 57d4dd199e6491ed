//! The read path: shared download URLs, a per-handle prefetcher, one global memory budget.
//!
//! `Reader` (one per mount) owns what all handles share: the URL cache, the download slots
//! (the server's per-user cap, reads before read-ahead: `slots`) and the memory budget for
//! read-ahead. `ReadHandle` (one per open file handle) plans its reads with `window::Window`
//! and keeps the fetched chunks.
//!
//! For the fs layer: `ReadHandle::read` must run inside the tokio runtime (it spawns the
//! downloads); drop the handle on release (cancels its downloads, frees its memory; with the data
//! cache, downloads already on the wire finish into the cache instead); call
//! `Reader::forget_file` when a file's content is replaced or deleted.
//!
//! With a data cache (`crate::cache`), every range a handle needs (read or read-ahead) is
//! served block by block from the cache where it can be, and only the missing blocks are
//! fetched (whole blocks, so they can be cached), then handed to the cache's writer.
//!
//! Locks (`crate::sync`): URL slots `read.urls` (`Level::READ_URLS`), a handle's state
//! `read.handle` (`Level::READ_HANDLE`), download slots `read.slots` (`Level::READ_SLOTS`), the
//! handle registry `read.handles` and a failed chunk's error `read.chunk_error`
//! (`Level::READ_MISC`, never held together).

mod fetch;
mod handle;
mod slots;
mod urls;
pub mod window;

#[cfg(test)]
mod testdrive;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Semaphore;

use crate::cache::{CachedFile, DataCache, Pin};
use crate::drive::Drive;
use crate::sync::{Level, Mutex};
use fetch::Fetcher;
pub use handle::ReadHandle;
use handle::Shared;
pub use urls::{is_synthetic, UrlSource};

const MIB: u64 = 1024 * 1024;

/// A handle not read for this long gives up its read-ahead when another handle needs budget.
#[cfg(not(test))]
const IDLE_AFTER: Duration = Duration::from_secs(10);
#[cfg(test)]
const IDLE_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadConfig {
    /// First read-ahead once a reader is seen to be sequential.
    pub initial_window: u64,
    /// Cap of the sequential read-ahead window.
    pub max_read_ahead: u64,
    /// ONE global budget for all prefetched bytes of the mount.
    pub memory_limit: u64,
    /// Per-user server cap on data connections: never exceeded.
    pub max_concurrent_downloads: usize,
    /// Size of one ranged GET; parallel requests fill a window.
    pub request_size: u64,
    /// Renew a download URL this long before its `x-oss-expires`.
    pub url_renew_margin: Duration,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            initial_window: MIB,
            max_read_ahead: 64 * MIB,
            memory_limit: 256 * MIB,
            max_concurrent_downloads: 3,
            request_size: 8 * MIB,
            url_renew_margin: Duration::from_secs(60),
        }
    }
}

/// The read engine of one mount.
pub struct Reader {
    cfg: ReadConfig,
    fetcher: Fetcher,
    /// Byte-counting semaphore: one permit per buffered byte.
    budget: Arc<Semaphore>,
    budget_total: u64,
    epoch: Instant,
    /// Every open handle, so an idle one's read-ahead can be reclaimed.
    handles: Mutex<Vec<Weak<Shared>>>,
    /// The data cache on disk, if on.
    cache: Option<Arc<DataCache>>,
}

impl Reader {
    pub fn new(drive: Arc<dyn Drive>, cfg: ReadConfig) -> Arc<Reader> {
        Self::with_cache(drive, cfg, None)
    }

    /// A reader that serves and fills the data cache `cache`.
    pub fn with_cache(
        drive: Arc<dyn Drive>,
        cfg: ReadConfig,
        cache: Option<Arc<DataCache>>,
    ) -> Arc<Reader> {
        let budget_total = cfg.memory_limit.min(Semaphore::MAX_PERMITS as u64);
        let budget = Arc::new(Semaphore::new(budget_total as usize));
        if let Some(c) = &cache {
            // Bytes queued for the cache's writer count against the same limit.
            c.share_budget(budget.clone());
        }
        Arc::new(Reader {
            fetcher: Fetcher::new(drive, cfg.max_concurrent_downloads, cfg.url_renew_margin),
            budget,
            budget_total,
            epoch: Instant::now(),
            handles: Mutex::new(Level::READ_MISC, "read.handles", Vec::new()),
            cache,
            cfg,
        })
    }

    /// A handle for reading `size` bytes of `file_id`, whose content is `identity`
    /// (`cache::identity_of`; `None` for content the cache must not hold). No network until
    /// the first read; cached blocks are read from disk.
    pub fn open(self: &Arc<Self>, file_id: &str, size: u64, identity: Option<&str>) -> ReadHandle {
        ReadHandle::new(
            self.clone(),
            file_id,
            size,
            self.cached(file_id, size, identity),
        )
    }

    fn cached(&self, file_id: &str, size: u64, identity: Option<&str>) -> Option<Arc<CachedFile>> {
        Some(self.cache.as_ref()?.file(file_id, identity?, size))
    }

    /// When every block of this file version is cached: the cache file, opened for reading,
    /// and the pin that keeps it as it is while the kernel reads it (passthrough).
    pub fn cached_file(
        &self,
        file_id: &str,
        size: u64,
        identity: Option<&str>,
    ) -> Option<(std::fs::File, Pin, String)> {
        let f = self.cached(file_id, size, identity)?;
        let (file, pin) = f.pin_complete()?;
        Some((file, pin, f.key().to_string()))
    }

    pub fn cache(&self) -> Option<&Arc<DataCache>> {
        self.cache.as_ref()
    }

    /// The file's content changed or it was deleted: its cached download URL is dropped.
    pub fn forget_file(&self, file_id: &str) {
        self.fetcher.urls.forget(file_id);
    }

    /// Who renews the URLs of synthetic keys (transcode segments, `.livp` streams): the fs core.
    pub fn set_url_source(&self, source: Arc<dyn UrlSource>) {
        self.fetcher.urls.set_source(source);
    }

    /// Runs `request` (one other request on the data host: a playlist, a segment's size) in a
    /// download slot, as a read waiting for bytes would, so the per-user cap is never exceeded.
    pub async fn with_download_slot<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        let _slot = self.fetcher.slots.acquire(fetch::Priority::Demand).await;
        request.await
    }

    /// A download URL learnt from a listing (small files carry one): saves a getDownloadUrl.
    pub fn offer_url(&self, file_id: &str, url: crate::drive::DownloadUrl) {
        self.fetcher.urls.offer(file_id, url);
    }

    /// `f` hears of every URL fetched with getDownloadUrl from now on (set once).
    pub fn observe_urls(
        &self,
        f: impl Fn(&str, &crate::drive::DownloadUrl) + Send + Sync + 'static,
    ) {
        self.fetcher.urls.observe(Box::new(f));
    }

    /// How long before its expiry a URL is renewed.
    pub fn url_renew_margin(&self) -> Duration {
        self.cfg.url_renew_margin
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn register(&self, h: &Arc<Shared>) {
        let mut hs = self.handles.lock();
        hs.retain(|w| w.strong_count() > 0);
        hs.push(Arc::downgrade(h));
    }

    /// The budget is full: frees the read-ahead of handles idle for a while (an open but
    /// forgotten file must not starve the readers that are active). True if any was freed.
    fn reclaim_idle(&self, me: &Arc<Shared>) -> bool {
        let Some(before) = self.now_ms().checked_sub(IDLE_AFTER.as_millis() as u64) else {
            return false;
        };
        let others: Vec<Arc<Shared>> = {
            let hs = self.handles.lock();
            hs.iter().filter_map(Weak::upgrade).collect()
        };
        let mut freed = false;
        for h in others.iter().filter(|h| !Arc::ptr_eq(h, me)) {
            freed |= h.release_if_idle(before);
        }
        if freed {
            tracing::debug!("reclaimed read-ahead of idle handles");
        }
        freed
    }

    /// Bytes of read-ahead currently held or in flight, over all handles.
    pub fn memory_in_use(&self) -> u64 {
        self.budget_total
            .saturating_sub(self.budget.available_permits() as u64)
    }
}
