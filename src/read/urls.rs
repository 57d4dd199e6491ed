//! Download URLs shared per file_id across all handles of a mount.
//!
//! getDownloadUrl is limited to about one call per second per user, so a URL is fetched once
//! (single-flight: concurrent askers wait for the one call in progress) and reused by every
//! handle until shortly before its `x-oss-expires`.
//!
//! A key is a file_id, or a synthetic key (one holding a '/', which no file_id does) of a source
//! the fs core serves (a transcode segment, a `.livp` stream): those are renewed by the mount's
//! `UrlSource` instead of getDownloadUrl.

use std::collections::HashMap;
use std::sync::Arc;

use crate::sync::{Level, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::drive::{DownloadUrl, Drive};
use crate::error::Result;

/// Beyond this many entries, entries nobody is using and whose URL is stale are pruned.
const PRUNE_ABOVE: usize = 1024;
/// Beyond this many, URLs nobody is using go too, fresh or not (a listing offers one per small
/// file: a folder of 100k of them must not keep 100k URLs).
const MAX_SLOTS: usize = 32 * 1024;

#[derive(Clone)]
struct Cached {
    url: DownloadUrl,
    /// When to stop handing it out: expiry minus the renewal margin, on the monotonic clock.
    renew_at: Instant,
}

/// One file's URL; the async mutex makes fetching single-flight.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Told of every URL fetched with getDownloadUrl (the metadata store keeps them).
pub(crate) type UrlObserver = Box<dyn Fn(&str, &DownloadUrl) + Send + Sync>;

/// Where the URLs of synthetic keys come from.
#[async_trait::async_trait]
pub trait UrlSource: Send + Sync + 'static {
    /// A URL for `key`; `stale` is one the data host refused as expired (give a newer one).
    async fn url(&self, key: &str, stale: Option<&DownloadUrl>) -> Result<DownloadUrl>;
}

/// True for keys that are not file_ids (see the module comment).
pub fn is_synthetic(key: &str) -> bool {
    key.contains('/')
}

pub(crate) struct UrlCache {
    drive: Arc<dyn Drive>,
    margin: Duration,
    slots: Mutex<Slots>,
    observer: std::sync::OnceLock<UrlObserver>,
    source: std::sync::OnceLock<Arc<dyn UrlSource>>,
}

struct Slots {
    by_file: HashMap<String, Slot>,
    /// Prune when the map reaches this size; set to twice what a prune leaves, so that a map of
    /// fresh URLs is not swept again at every insertion (quadratic: listing a folder of 10k
    /// small files, each offering a URL, cost 50 million entry visits).
    prune_at: usize,
    /// Sweeps so far (tests check they stay logarithmic).
    prunes: usize,
}

impl UrlCache {
    pub fn new(drive: Arc<dyn Drive>, margin: Duration) -> Self {
        UrlCache {
            drive,
            margin,
            slots: Mutex::new(
                Level::READ_URLS,
                "read.urls",
                Slots {
                    by_file: HashMap::new(),
                    prune_at: PRUNE_ABOVE,
                    prunes: 0,
                },
            ),
            observer: std::sync::OnceLock::new(),
            source: std::sync::OnceLock::new(),
        }
    }

    /// Set once: `f` hears of each URL fetched from now on.
    pub fn observe(&self, f: UrlObserver) {
        let _ = self.observer.set(f);
    }

    /// Set once, when the fs core starts.
    pub fn set_source(&self, source: Arc<dyn UrlSource>) {
        let _ = self.source.set(source);
    }

    fn lock_slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock()
    }

    fn slot(&self, file_id: &str) -> Slot {
        let mut slots = self.lock_slots();
        if let Some(s) = slots.by_file.get(file_id) {
            return s.clone();
        }
        if slots.by_file.len() >= slots.prune_at {
            slots.prune();
        }
        let s = Slot::default();
        slots.by_file.insert(file_id.to_string(), s.clone());
        s
    }

    /// A URL valid for at least the renewal margin (or half its lifetime, for short-lived URLs).
    pub async fn get(&self, file_id: &str) -> Result<DownloadUrl> {
        let slot = self.slot(file_id);
        let mut cur = slot.lock().await;
        if let Some(c) = cur.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.url.clone());
            }
        }
        let fresh = self.fetch(file_id, None).await?;
        let url = fresh.url.clone();
        *cur = Some(fresh);
        Ok(url)
    }

    /// `stale` was refused as expired: replace it, unless another caller already did.
    pub async fn renew(&self, file_id: &str, stale: &DownloadUrl) -> Result<DownloadUrl> {
        let slot = self.slot(file_id);
        let mut cur = slot.lock().await;
        if let Some(c) = cur.as_ref() {
            if c.url.url != stale.url && Instant::now() < c.renew_at {
                return Ok(c.url.clone());
            }
        }
        let fresh = self.fetch(file_id, Some(stale)).await?;
        let url = fresh.url.clone();
        *cur = Some(fresh);
        Ok(url)
    }

    /// A URL learnt elsewhere (a listing's `url` for small files): used when no fresh URL is
    /// cached, so small files cost no getDownloadUrl call. Marked as a hint: if the data host
    /// refuses it, `renew` fetches a proper one.
    pub fn offer(&self, file_id: &str, url: DownloadUrl) {
        let slot = self.slot(file_id);
        let Ok(mut cur) = slot.try_lock() else { return };
        if cur.as_ref().is_some_and(|c| Instant::now() < c.renew_at) {
            return;
        }
        let lifetime = url
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let margin = self.margin.min(lifetime / 2);
        if lifetime > margin {
            *cur = Some(Cached {
                url,
                renew_at: Instant::now() + (lifetime - margin),
            });
        }
    }

    /// Drops the cached URL: the next read asks the drive again.
    pub fn forget(&self, file_id: &str) {
        self.lock_slots().by_file.remove(file_id);
    }

    /// Entries held and sweeps made so far.
    #[cfg(test)]
    pub fn stats(&self) -> (usize, usize) {
        let slots = self.lock_slots();
        (slots.by_file.len(), slots.prunes)
    }

    async fn fetch(&self, file_id: &str, stale: Option<&DownloadUrl>) -> Result<Cached> {
        let url = match self.source.get().filter(|_| is_synthetic(file_id)) {
            Some(source) => source.url(file_id, stale).await?,
            None => {
                tracing::debug!(file_id, "getDownloadUrl");
                let url = self.drive.download_url(file_id).await?;
                if let Some(observe) = self.observer.get() {
                    observe(file_id, &url);
                }
                url
            }
        };
        let now = Instant::now();
        let lifetime = url
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            // Bounded so a nonsense expiry from the server cannot overflow the clock.
            .min(Duration::from_secs(24 * 3600));
        // A URL living less than twice the margin would be stale at once: renew it at half-life
        // instead, so short-lived URLs are still reused.
        let margin = self.margin.min(lifetime / 2);
        Ok(Cached {
            url,
            renew_at: now + (lifetime - margin),
        })
    }
}

impl Slots {
    /// Drops stale entries nobody is using, then, if still too many, every entry nobody is using.
    fn prune(&mut self) {
        let now = Instant::now();
        let in_use = |s: &Slot| Arc::strong_count(s) > 1;
        self.by_file.retain(|_, s| {
            in_use(s)
                || s.try_lock()
                    .map(|c| c.as_ref().is_some_and(|c| c.renew_at > now))
                    .unwrap_or(true)
        });
        if self.by_file.len() >= MAX_SLOTS {
            self.by_file.retain(|_, s| in_use(s));
        }
        self.prune_at = (self.by_file.len() * 2).clamp(PRUNE_ABOVE, MAX_SLOTS);
        self.prunes += 1;
    }
}
