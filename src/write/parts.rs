//! Multipart sending: part sizing (section 5.7) and the strictly sequential PUT loop (5.6, 5.8, 5.9).
//!
//! The server hashes parts as they arrive, so parts go one at a time, in order. Each part is read
//! from disk into one `Bytes` just before it is sent (memory: one part). Part URLs expire (about an
//! hour on the real service): a URL close to its `x-oss-expires` is renewed before the PUT, and a
//! PUT answered "expired" renews and resends the same part. A 409 `PartAlreadyExist` is checked
//! against `listUploadedParts`: a part recorded whole is progress, a truncated one cannot be replaced
//! in this session, so the caller starts a fresh session.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::api::retry::{Backoff, PART_SEND_ATTEMPTS};
use crate::drive::{Drive, PartUrl, UploadedPart};
use crate::error::{Error, Result};
use crate::write::local;

pub const MIN_PART_SIZE: u64 = 100 * 1024;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// Part URLs asked for at once when one is missing or stale (one API call instead of one per part).
const URL_BATCH: u32 = 32;
/// Backoff between PUTs of one part (`retry::Backoff`: doubling with jitter, capped).
const PART_BACKOFF_BASE: Duration = Duration::from_millis(200);
const PART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Idempotent calls the writer repeats (create, complete, getUploadUrl, ...): tries and budget.
const CALL_ATTEMPTS: u32 = 5;
const CALL_BUDGET: Duration = Duration::from_secs(120);
/// Long uploads log their progress this often, at INFO.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Renewals of one part's URL before giving up (a badly skewed clock would otherwise loop).
const URL_RENEWALS: u32 = 5;
/// Resyncs (PartNotSequential / PartAlreadyExist) in a row without progress before restarting.
const RESYNCS: u32 = 3;
/// Parts up to this size are read ahead (two in memory) while the previous one is sent.
const MAX_READ_AHEAD_PART: u64 = 64 << 20;
/// Longest renewal margin: a URL valid for less than this is renewed before use.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// The part size for a file of `size` bytes: the forced or default size, at least 100 KiB, raised
/// (to a whole MiB) so that no more than 10,000 parts are needed.
pub fn part_size(size: u64, forced: Option<u64>) -> Result<u64> {
    let base = forced.unwrap_or(DEFAULT_PART_SIZE).max(MIN_PART_SIZE);
    let needed = size.div_ceil(MAX_PARTS);
    let chosen = if needed > base {
        needed.div_ceil(1 << 20) * (1 << 20)
    } else {
        base
    };
    if chosen > MAX_PART_SIZE {
        return Err(Error::NotSupported(format!(
            "file of {size} bytes exceeds the drive's 10,000 parts of 5 GiB"
        )));
    }
    Ok(chosen)
}

/// Parts declared for a file: at least one, even when empty.
pub fn part_count(size: u64, part_size: u64) -> u32 {
    size.div_ceil(part_size.max(1)).clamp(1, u32::MAX as u64) as u32
}

/// Why sending parts stopped.
#[derive(Debug)]
pub enum PartsError {
    /// This session is spoiled (truncated part, session gone): a fresh session may succeed.
    Restart(Error),
    /// Anything else: give up this upload attempt.
    Fail(Error),
}

/// A URL and when we received it (to size the renewal margin from its own lifetime).
struct HeldUrl {
    url: PartUrl,
    received: SystemTime,
}

impl HeldUrl {
    /// Stale when less than a tenth of its lifetime (at most 60 s) remains. Relative, so short
    /// test TTLs and the real hour-long TTL both behave.
    fn is_stale(&self, now: SystemTime) -> bool {
        let Some(expires) = self.url.expires_at else {
            return false;
        };
        let life = expires
            .duration_since(self.received)
            .unwrap_or(Duration::ZERO);
        let margin = (life / 10).min(MAX_EXPIRY_MARGIN);
        match expires.duration_since(now) {
            Ok(left) => left <= margin,
            Err(_) => true,
        }
    }
}

/// One session's sequential sender.
pub struct PartSender<'a> {
    pub drive: &'a dyn Drive,
    pub local: &'a Path,
    pub file_id: &'a str,
    pub upload_id: &'a str,
    pub size: u64,
    pub part_size: u64,
    urls: HashMap<u32, HeldUrl>,
    progress: Progress,
}

/// Bytes acknowledged by the server and when the last progress line was logged.
struct Progress {
    started: Instant,
    logged: Instant,
}

impl<'a> PartSender<'a> {
    pub fn new(
        drive: &'a dyn Drive,
        local: &'a Path,
        file_id: &'a str,
        upload_id: &'a str,
        size: u64,
        part_size: u64,
        initial: Vec<PartUrl>,
    ) -> Self {
        let now = SystemTime::now();
        let urls = initial
            .into_iter()
            .map(|u| {
                (
                    u.part_number,
                    HeldUrl {
                        url: u,
                        received: now,
                    },
                )
            })
            .collect();
        PartSender {
            drive,
            local,
            file_id,
            upload_id,
            size,
            part_size,
            urls,
            progress: Progress {
                started: Instant::now(),
                logged: Instant::now(),
            },
        }
    }

    /// A sender for an upload whose length is not known yet (a stream following a writer):
    /// every part is `part_size`; set `size` once the length is known, before the last part.
    pub fn open_ended(
        drive: &'a dyn Drive,
        local: &'a Path,
        file_id: &'a str,
        upload_id: &'a str,
        part_size: u64,
        initial: Vec<PartUrl>,
    ) -> Self {
        Self::new(
            drive,
            local,
            file_id,
            upload_id,
            u64::MAX,
            part_size,
            initial,
        )
    }

    fn count(&self) -> u32 {
        part_count(self.size, self.part_size)
    }

    fn expected_len(&self, n: u32) -> u64 {
        let start = self.part_offset(n);
        self.part_size.min(self.size.saturating_sub(start))
    }

    /// Send every part, in order. An empty file sends none (complete makes it empty).
    pub async fn send_all(&mut self) -> Result<(), PartsError> {
        self.send_from(1).await
    }

    /// Send the parts from `first` on, in order (the earlier ones are on the drive already).
    pub async fn send_from(&mut self, first: u32) -> Result<(), PartsError> {
        if self.size == 0 {
            return Ok(());
        }
        let count = self.count();
        let mut next = first.max(1);
        let mut resyncs = 0u32;
        // The following part, read from disk while the current one is on the wire.
        let mut ready: Option<(u32, Bytes)> = None;
        while next <= count {
            let body = match ready.take() {
                Some((n, body)) if n == next => body,
                _ => self.read_part(next).await?,
            };
            let following = next + 1;
            let start = self.part_offset(following);
            let after = (following <= count).then(|| start..start + self.expected_len(following));
            let (sent, read) = self.send_reading_next(next, body, after).await;
            match sent? {
                Sent::Done => {
                    next += 1;
                    resyncs = 0;
                    if let Some(read) = read {
                        ready = Some((following, read.map_err(PartsError::Fail)?));
                    }
                }
                Sent::Resync(why) => {
                    resyncs += 1;
                    if resyncs > RESYNCS {
                        return Err(PartsError::Restart(Error::BadResponse(format!(
                            "part {next}: {why}; still out of step after {RESYNCS} resyncs"
                        ))));
                    }
                    let resumed = self.resync(why).await?;
                    if resumed > next {
                        resyncs = 0;
                    }
                    next = resumed;
                }
            }
        }
        Ok(())
    }

    /// Ask the server which parts it holds; returns the first part still to send. Any recorded
    /// part of the wrong size spoils the session (it cannot be overwritten).
    async fn resync(&self, why: &str) -> Result<u32, PartsError> {
        let parts = retry_transient("listUploadedParts", || {
            self.drive.uploaded_parts(self.file_id, self.upload_id)
        })
        .await
        .map_err(session_error)?;
        let next = first_missing(&parts, |n| self.expected_len(n)).map_err(|bad| {
            PartsError::Restart(Error::BadResponse(format!(
                "part {bad} is stored with the wrong size (truncated upload); starting a fresh session"
            )))
        })?;
        tracing::debug!(file_id = self.file_id, why, next, "resynced upload parts");
        super::progress::sent_so_far(self.part_offset(next).min(self.size));
        Ok(next)
    }

    /// Sends part `n` and meanwhile reads `next` (a byte range of the local file), so that the
    /// following part's body is ready when this one is sent. Not for parts over
    /// `MAX_READ_AHEAD_PART`: two of them would sit in memory.
    pub async fn send_reading_next(
        &mut self,
        n: u32,
        body: Bytes,
        next: Option<Range<u64>>,
    ) -> (Result<Sent, PartsError>, Option<Result<Bytes>>) {
        let local = self.local;
        let next = next.filter(|_| self.part_size <= MAX_READ_AHEAD_PART);
        tokio::join!(self.send_body(n, body), async move {
            match next {
                Some(r) => Some(local::read_range(local, r.start, r.end - r.start).await),
                None => None,
            }
        })
    }

    fn part_offset(&self, n: u32) -> u64 {
        u64::from(n - 1) * self.part_size
    }

    async fn read_part(&self, n: u32) -> Result<Bytes, PartsError> {
        local::read_range(self.local, self.part_offset(n), self.expected_len(n))
            .await
            .map_err(PartsError::Fail)
    }

    /// PUT `body` as part `n`: renews its URL when stale or expired, and retries transient errors
    /// (honouring a 429's `x-retry-after`) up to `PART_SEND_ATTEMPTS` PUTs in all.
    pub async fn send_body(&mut self, n: u32, body: Bytes) -> Result<Sent, PartsError> {
        let mut puts = 0u32;
        let mut renewals = 0u32;
        let mut backoff = Backoff::new(PART_BACKOFF_BASE, PART_BACKOFF_MAX);
        loop {
            let url = self.url_for(n).await?;
            let len = body.len() as u64;
            let result = self.drive.upload_part(&url, body.clone()).await;
            match result {
                Ok(_etag) => {
                    super::progress::part_done(self.part_offset(n) + len);
                    // Sent parts never need their URL again; keep the map small on huge files.
                    self.urls.remove(&n);
                    self.log_progress(self.part_offset(n) + len);
                    return Ok(Sent::Done);
                }
                Err(Error::UrlExpired) => {
                    renewals += 1;
                    self.urls.remove(&n);
                    if renewals > URL_RENEWALS {
                        return Err(PartsError::Fail(Error::UrlExpired));
                    }
                    tracing::debug!(
                        file_id = self.file_id,
                        part = n,
                        "part URL expired, renewing"
                    );
                }
                Err(Error::PartAlreadyExist) => return Ok(Sent::Resync("PartAlreadyExist")),
                Err(Error::PartNotSequential) => return Ok(Sent::Resync("PartNotSequential")),
                Err(e @ Error::NoSuchUpload(_)) => return Err(PartsError::Restart(e)),
                Err(e) if e.is_transient() && puts + 1 < PART_SEND_ATTEMPTS => {
                    puts += 1;
                    let delay = match &e {
                        Error::RateLimited {
                            retry_after: Some(r),
                        } => (*r).min(PART_BACKOFF_MAX),
                        _ => backoff.next_wait(),
                    };
                    tracing::warn!(
                        file_id = self.file_id,
                        part = n,
                        attempt = puts,
                        "part upload failed, retrying in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(PartsError::Fail(e)),
            }
        }
    }

    /// Logs bytes sent / size and the rate, at most every `PROGRESS_EVERY`.
    fn log_progress(&mut self, sent: u64) {
        let now = Instant::now();
        if now.duration_since(self.progress.logged) < PROGRESS_EVERY {
            return;
        }
        self.progress.logged = now;
        let secs = now
            .duration_since(self.progress.started)
            .as_secs_f64()
            .max(0.001);
        let rate = format!("{}/s", crate::units::bytes(((sent as f64) / secs) as u64));
        if self.size == u64::MAX {
            tracing::info!(
                file_id = self.file_id,
                sent,
                rate,
                "upload progress: {} sent",
                crate::units::bytes(sent)
            );
        } else {
            tracing::info!(
                file_id = self.file_id,
                sent,
                size = self.size,
                rate,
                "upload progress: {} of {} ({:.0}%)",
                crate::units::bytes(sent),
                crate::units::bytes(self.size),
                100.0 * sent as f64 / self.size.max(1) as f64
            );
        }
    }

    /// A fresh URL for part `n`, renewing a batch of URLs from `n` on when it is missing or stale.
    async fn url_for(&mut self, n: u32) -> Result<PartUrl, PartsError> {
        let now = SystemTime::now();
        if let Some(h) = self.urls.get(&n) {
            if !h.is_stale(now) {
                return Ok(h.url.clone());
            }
        }
        let last = n.saturating_add(URL_BATCH - 1).min(self.count());
        let numbers: Vec<u32> = (n..=last).collect();
        let fresh = retry_transient("getUploadUrl", || {
            self.drive
                .upload_urls(self.file_id, self.upload_id, &numbers)
        })
        .await
        .map_err(session_error)?;
        let received = SystemTime::now();
        for u in fresh {
            self.urls
                .insert(u.part_number, HeldUrl { url: u, received });
        }
        // Use the renewed URL even if it already looks stale: the PUT tells us for sure.
        self.urls.get(&n).map(|h| h.url.clone()).ok_or_else(|| {
            PartsError::Fail(Error::BadResponse(format!(
                "getUploadUrl returned no URL for part {n}"
            )))
        })
    }
}

pub enum Sent {
    Done,
    /// The server's parts and ours disagree (`PartAlreadyExist`, `PartNotSequential`).
    Resync(&'static str),
}

fn session_error(e: Error) -> PartsError {
    match e {
        Error::NoSuchUpload(_) => PartsError::Restart(e),
        other => PartsError::Fail(other),
    }
}

/// The first part number not yet stored, given the parts the server lists. Parts must form a
/// whole prefix 1..k with the expected sizes; `Err(n)` names a stored part of the wrong size.
pub fn first_missing(parts: &[UploadedPart], expected: impl Fn(u32) -> u64) -> Result<u32, u32> {
    let mut sizes: HashMap<u32, u64> = HashMap::new();
    for p in parts {
        sizes.insert(p.part_number, p.part_size);
    }
    let mut n = 1u32;
    while let Some(&got) = sizes.get(&n) {
        if got != expected(n) {
            return Err(n);
        }
        n += 1;
    }
    Ok(n)
}

/// Retry an idempotent call a few times on transient errors (the Drive already retried; this
/// covers longer hiccups without throwing away a half-sent upload): `CALL_ATTEMPTS` tries within
/// `CALL_BUDGET`, waiting `retry::Backoff`.
pub async fn retry_transient<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new(PART_BACKOFF_BASE, PART_BACKOFF_MAX);
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match f().await {
            Err(e)
                if e.is_transient()
                    && attempt < CALL_ATTEMPTS
                    && started.elapsed() < CALL_BUDGET =>
            {
                let delay = backoff.next_wait();
                tracing::warn!(attempt, "{what} failed, retrying in {delay:?}: {e}");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn part_sizes() {
        assert_eq!(part_size(0, None).unwrap(), 16 * MIB);
        assert_eq!(part_size(100 * MIB, None).unwrap(), 16 * MIB);
        // 10,000 parts of 16 MiB cover 160,000 MiB; above that the part grows.
        assert_eq!(part_size(160_000 * MIB, None).unwrap(), 16 * MIB);
        let big = 160_000 * MIB + 1;
        let ps = part_size(big, None).unwrap();
        assert!(ps > 16 * MIB && ps % MIB == 0);
        assert!(part_count(big, ps) as u64 <= MAX_PARTS);
        // Forced sizes are honoured, but never below 100 KiB.
        assert_eq!(part_size(MIB, Some(200 * 1024)).unwrap(), 200 * 1024);
        assert_eq!(part_size(MIB, Some(1)).unwrap(), MIN_PART_SIZE);
        assert_eq!(part_size(MIB, Some(0)).unwrap(), MIN_PART_SIZE);
        // A forced small size is raised for a big file.
        let ps = part_size(10_000 * MIB, Some(MIN_PART_SIZE)).unwrap();
        assert!(part_count(10_000 * MIB, ps) as u64 <= MAX_PARTS);
        assert!(part_size(MAX_PARTS * MAX_PART_SIZE + 1, None).is_err());
    }

    #[test]
    fn part_counts() {
        assert_eq!(part_count(0, 100), 1);
        assert_eq!(part_count(1, 100), 1);
        assert_eq!(part_count(100, 100), 1);
        assert_eq!(part_count(101, 100), 2);
        assert_eq!(part_count(300, 100), 3);
    }

    fn up(n: u32, size: u64) -> UploadedPart {
        UploadedPart {
            part_number: n,
            part_size: size,
            etag: None,
        }
    }

    #[test]
    fn first_missing_part() {
        let exp = |n: u32| if n < 3 { 10 } else { 4 };
        assert_eq!(first_missing(&[], exp), Ok(1));
        assert_eq!(first_missing(&[up(2, 10), up(1, 10)], exp), Ok(3));
        assert_eq!(first_missing(&[up(1, 10), up(2, 7)], exp), Err(2));
        assert_eq!(first_missing(&[up(1, 10), up(3, 4)], exp), Ok(2));
    }

    #[test]
    fn staleness_is_relative_to_lifetime() {
        let now = SystemTime::now();
        let held = |life: u64, left: i64| HeldUrl {
            url: PartUrl {
                part_number: 1,
                upload_url: "u".into(),
                expires_at: Some(if left >= 0 {
                    now + Duration::from_secs(left as u64)
                } else {
                    now - Duration::from_secs((-left) as u64)
                }),
            },
            received: now + Duration::from_secs(left.max(0) as u64) - Duration::from_secs(life),
        };
        assert!(!held(3600, 600).is_stale(now));
        assert!(held(3600, 30).is_stale(now));
        assert!(held(3600, -1).is_stale(now));
        assert!(!held(20, 10).is_stale(now));
        assert!(held(20, 1).is_stale(now));
        let no_expiry = HeldUrl {
            url: PartUrl {
                part_number: 1,
                upload_url: "u".into(),
                expires_at: None,
            },
            received: now,
        };
        assert!(!no_expiry.is_stale(now));
    }
}
