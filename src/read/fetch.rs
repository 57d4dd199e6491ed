//! One ranged download, done right: a global download slot, a valid URL, renewal on expiry,
//! backoff on the server's concurrency cap and on transient errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Bytes a read is waiting for.
    Demand,
    /// Read-ahead.
    Prefetch,
}

pub(crate) struct Fetcher {
    drive: Arc<dyn Drive>,
    pub urls: UrlCache,
    /// The per-user cap on data connections.
    slots: Arc<Semaphore>,
    /// Read-ahead may hold at most all slots but one, so a demand read never waits behind a
    /// full set of read-ahead downloads.
    prefetch_slots: Arc<Semaphore>,
}

/// Exponential backoff with jitter, capped.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    exp.mul_f64(jitter)
}

impl Fetcher {
    pub fn new(drive: Arc<dyn Drive>, max_concurrent: usize, url_margin: Duration) -> Self {
        let n = max_concurrent.max(1);
        Fetcher {
            urls: UrlCache::new(drive.clone(), url_margin),
            drive,
            slots: Arc::new(Semaphore::new(n)),
            prefetch_slots: Arc::new(Semaphore::new((n - 1).max(1))),
        }
    }

    /// `len` bytes at `offset` of `file_id` (fewer only at end of file).
    pub async fn fetch(
        &self,
        file_id: &str,
        offset: u64,
        len: u64,
        prio: Priority,
    ) -> Result<Bytes> {
        let (mut renewals, mut transient, mut busy) = (0u32, 0u32, 0u32);
        let mut fresh_tried = false;
        let mut url = None;
        loop {
            let attempt = async {
                let u = match url.take() {
                    Some(u) => u,
                    None => self.urls.get(file_id).await?,
                };
                let _pf = match prio {
                    Priority::Prefetch => Some(self.prefetch_slots.acquire().await),
                    Priority::Demand => None,
                };
                let _slot = self.slots.acquire().await;
                let r = self.drive.download_range(&u, offset, len).await;
                Ok::<_, Error>((u, r))
            };
            let err = match attempt.await {
                Ok((_, Ok(bytes))) => return Ok(bytes),
                Ok((u, Err(Error::UrlExpired))) if renewals < MAX_RENEWALS => {
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
                Ok((u, Err(Error::ExceedMaxConcurrency))) if busy < MAX_BUSY_RETRIES => {
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
                Ok((u, Err(e))) if !e.is_transient() && !fresh_tried => {
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
                Ok((_, Err(e))) | Err(e) => e,
            };
            if err.is_transient()
                && !matches!(err, Error::UrlExpired | Error::ExceedMaxConcurrency)
                && transient < MAX_TRANSIENT_RETRIES
            {
                let d = match &err {
                    Error::RateLimited {
                        retry_after: Some(r),
                    } => (*r).min(BACKOFF_MAX),
                    _ => backoff(BACKOFF_BASE, transient),
                };
                transient += 1;
                tracing::debug!(file_id, offset, len, error = %err, ?d, "transient download error, retrying");
                tokio::time::sleep(d).await;
                continue;
            }
            tracing::debug!(file_id, offset, len, error = %err, "download failed");
            return Err(err);
        }
    }
}
