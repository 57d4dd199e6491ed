//! One ranged download, done right: a global download slot, a valid URL, renewal on expiry,
//! backoff on the server's concurrency cap and on transient errors, and giving the slot up to
//! a waiting read when the scheduler preempts a read-ahead download.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub(crate) use super::slots::Priority;
use super::slots::{Slot, Slots};
use super::urls::UrlCache;
use crate::drive::Drive;
use crate::error::{Error, Result};

/// Renewals of an expired URL within one fetch before giving up.
const MAX_RENEWALS: u32 = 3;
/// Retries of transient errors (network, 5xx, 429) within one fetch.
const MAX_TRANSIENT_RETRIES: u32 = 4;
/// Retries when another app of the user holds the download slots.
const MAX_BUSY_RETRIES: u32 = 8;

#[cfg(not(test))]
const BACKOFF_BASE: Duration = Duration::from_millis(250);
#[cfg(test)]
const BACKOFF_BASE: Duration = Duration::from_millis(2);
#[cfg(not(test))]
const BUSY_BACKOFF_BASE: Duration = Duration::from_secs(1);
#[cfg(test)]
const BUSY_BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A slot taken from a preempted download: the server may still count the dropped connection
/// until it next writes to it (a few ms, up to ~100 ms on a throttled connection), so its
/// "busy" answer is retried soon, keeping the slot, for up to ~400 ms.
const MAX_HANDOVER_RETRIES: u32 = 10;
#[cfg(not(test))]
const HANDOVER_BACKOFF: Duration = Duration::from_millis(40);
#[cfg(test)]
const HANDOVER_BACKOFF: Duration = Duration::from_millis(2);

pub(crate) struct Fetcher {
    drive: Arc<dyn Drive>,
    pub urls: UrlCache,
    /// The per-user cap on data connections, demand first.
    pub(super) slots: Arc<Slots>,
}

/// The crate's one backoff (`retry::jittered`) after `retries_so_far` failed retries.
fn backoff(base: Duration, retries_so_far: u32) -> Duration {
    crate::api::retry::jittered(base, BACKOFF_MAX, retries_so_far + 1)
}

/// How long to wait before retrying after `err`, if it is worth another try.
fn transient_wait(err: &Error, retries_so_far: u32) -> Option<Duration> {
    if !err.is_transient()
        || matches!(err, Error::UrlExpired | Error::ExceedMaxConcurrency)
        || retries_so_far >= MAX_TRANSIENT_RETRIES
    {
        return None;
    }
    Some(match err {
        Error::RateLimited {
            retry_after: Some(r),
        } => (*r).min(BACKOFF_MAX),
        _ => backoff(BACKOFF_BASE, retries_so_far),
    })
}

impl Fetcher {
    pub fn new(drive: Arc<dyn Drive>, max_concurrent: usize, url_margin: Duration) -> Self {
        let n = max_concurrent.max(1);
        Fetcher {
            urls: UrlCache::new(drive.clone(), url_margin),
            drive,
            slots: Slots::new(n),
        }
    }

    /// `len` bytes at `offset` of `file_id` (fewer only at end of file). `started`, if given,
    /// is set once a download request is under way (a slot is held and the request sent).
    pub async fn fetch(
        &self,
        file_id: &str,
        offset: u64,
        len: u64,
        prio: Priority,
        started: Option<&AtomicBool>,
    ) -> Result<Bytes> {
        let (mut renewals, mut transient, mut busy, mut handover) = (0u32, 0u32, 0u32, 0u32);
        let mut fresh_tried = false;
        let mut url = None;
        // A slot kept across a quick retry.
        let mut kept: Option<Slot> = None;
        loop {
            let u = match url.take() {
                Some(u) => u,
                None => match self.urls.get(file_id).await {
                    Ok(u) => u,
                    Err(e) => match transient_wait(&e, transient) {
                        Some(d) => {
                            transient += 1;
                            tracing::debug!(file_id, error = %e, ?d, "no download URL, retrying");
                            tokio::time::sleep(d).await;
                            continue;
                        }
                        None => {
                            tracing::debug!(file_id, error = %e, "no download URL");
                            return Err(e);
                        }
                    },
                },
            };
            let mut slot = match kept.take() {
                Some(s) => s,
                None => self.slots.acquire(prio).await,
            };
            if let Some(flag) = started {
                flag.store(true, Ordering::Relaxed);
            }
            // On preemption the download (and its connection) is dropped here, before the
            // slot is given back below.
            let got = tokio::select! {
                biased;
                r = self.drive.download_range(&u, offset, len) => Some(r),
                _ = slot.preempted() => None,
            };
            let Some(got) = got else {
                // A waiting read took the slot: not an error, start again once a slot frees.
                tracing::debug!(file_id, offset, len, "read-ahead preempted by a read");
                drop(slot);
                url = Some(u);
                continue;
            };
            let err = match got {
                Ok(bytes) => return Ok(bytes),
                Err(Error::ExceedMaxConcurrency)
                    if slot.handed_over() && handover < MAX_HANDOVER_RETRIES =>
                {
                    // The preempted download's connection is still counted for a moment.
                    handover += 1;
                    tokio::time::sleep(HANDOVER_BACKOFF).await;
                    kept = Some(slot);
                    url = Some(u);
                    continue;
                }
                Err(e) => {
                    drop(slot);
                    e
                }
            };
            let err = match err {
                Error::UrlExpired if renewals < MAX_RENEWALS => {
                    renewals += 1;
                    tracing::debug!(file_id, offset, len, "download URL expired, renewing");
                    match self.urls.renew(file_id, &u).await {
                        Ok(fresh) => {
                            url = Some(fresh);
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Error::ExceedMaxConcurrency if busy < MAX_BUSY_RETRIES => {
                    // Another app of the same user holds the server's slots: wait for them.
                    url = Some(u);
                    let d = backoff(BUSY_BACKOFF_BASE, busy);
                    busy += 1;
                    tracing::debug!(
                        file_id,
                        offset,
                        len,
                        ?d,
                        "server download cap reached, waiting"
                    );
                    tokio::time::sleep(d).await;
                    continue;
                }
                e if !e.is_transient() && !fresh_tried => {
                    // The URL may be a listing's hint that this data host refuses: one proper
                    // getDownloadUrl before the error counts.
                    fresh_tried = true;
                    tracing::debug!(file_id, offset, len, error = %e, "download refused, trying a fresh URL");
                    match self.urls.renew(file_id, &u).await {
                        Ok(fresh) => {
                            url = Some(fresh);
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                e => e,
            };
            if let Some(d) = transient_wait(&err, transient) {
                transient += 1;
                url = Some(u);
                tracing::debug!(file_id, offset, len, error = %err, ?d, "transient download error, retrying");
                tokio::time::sleep(d).await;
                continue;
            }
            tracing::debug!(file_id, offset, len, error = %err, "download failed");
            return Err(err);
        }
    }
}
