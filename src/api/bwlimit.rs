//! Bandwidth limits (`--bwlimit-download`, `--bwlimit-upload`, changed live by `alipanfs set`):
//! one byte bucket per direction, shared by every connection of the mount.
//!
//! Each bucket is a GCRA ("virtual scheduling"): it keeps the theoretical time at which the bytes
//! taken so far would have gone out at the configured rate, and a caller waits until that time
//! is no more than `BURST` ahead of now. Downloads take the bytes of each chunk after it was read
//! (the socket then fills and TCP slows the sender); uploads take each 64 KiB slice of a part
//! before handing it to the connection. A rate of 0 is no limit.
//!
//! Also here: the bytes-on-the-wire counter of an upload. The part PUT's body is a stream that
//! counts each slice as it goes into the connection (the connection is driven on another task,
//! so the counter is picked up from the task-local `SENT` when the PUT begins).
//!
//! Locks: `Bandwidth::tat` at `Level::API_LIMITER` (a leaf inside the api band: nothing is taken
//! under it and it is never held across an await).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::sync::{Level, Mutex};

/// How far ahead of the rate a bucket may run: small, so a measured rate stays within a few
/// percent of the limit over seconds, and large enough that each chunk need not wait.
const BURST: Duration = Duration::from_millis(50);
/// Upload bodies go out in slices of this size (each waits for its share of the bucket).
const UPLOAD_SLICE: usize = 64 << 10;

/// One direction's limit.
#[derive(Debug)]
pub struct Bandwidth {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    /// Theoretical arrival time of the next byte (None: idle).
    tat: Mutex<Option<Instant>>,
}

impl Bandwidth {
    pub fn new(rate: u64) -> Bandwidth {
        Bandwidth {
            rate: AtomicU64::new(rate),
            tat: Mutex::new(Level::API_LIMITER, "bwlimit.tat", None),
        }
    }

    /// Bytes per second in force (0 = unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate; bytes already scheduled keep their slots.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
        if rate == 0 {
            *self.tat.lock() = None;
        }
    }

    /// Schedules `n` bytes and returns how long the caller must wait before (or after) moving them.
    fn reserve(&self, n: u64) -> Duration {
        let rate = self.rate();
        if rate == 0 || n == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut tat = self.tat.lock();
        let start = match *tat {
            Some(t) if t > now => t,
            _ => now,
        };
        let done = start + Duration::from_secs_f64(n as f64 / rate as f64);
        *tat = Some(done);
        done.saturating_duration_since(now + BURST)
    }

    /// Waits for `n` bytes' share of the limit.
    pub async fn take(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Both directions' limits of one mount.
#[derive(Debug)]
pub struct BwLimits {
    pub download: Bandwidth,
    pub upload: Bandwidth,
}

impl BwLimits {
    pub fn new(download: u64, upload: u64) -> Arc<BwLimits> {
        Arc::new(BwLimits {
            download: Bandwidth::new(download),
            upload: Bandwidth::new(upload),
        })
    }
}

tokio::task_local! {
    static SENT: Arc<AtomicU64>;
}

/// Runs `f` with `counter` as the count of upload bytes put on the wire by its part PUTs.
pub async fn counting_sent<F: std::future::Future>(counter: Arc<AtomicU64>, f: F) -> F::Output {
    SENT.scope(counter, f).await
}

/// The counter of the current task's `counting_sent`, if any.
pub fn sent_counter() -> Option<Arc<AtomicU64>> {
    SENT.try_with(Arc::clone).ok()
}

/// The body of one part PUT: `body` in slices, each waiting for its share of the upload limit
/// and counted into `counter` as it is handed to the connection. Returns the body and a handle
/// that reads how many bytes went out (to take them back if the PUT fails).
pub fn metered_body(
    body: Bytes,
    limits: Arc<BwLimits>,
    counter: Option<Arc<AtomicU64>>,
) -> (reqwest::Body, Arc<AtomicU64>) {
    let out = Arc::new(AtomicU64::new(0));
    let state = (body, 0usize, limits, counter, out.clone());
    let stream =
        futures_util::stream::unfold(state, |(body, pos, limits, counter, out)| async move {
            if pos >= body.len() {
                return None;
            }
            let end = (pos + UPLOAD_SLICE).min(body.len());
            let slice = body.slice(pos..end);
            let n = slice.len() as u64;
            limits.upload.take(n).await;
            out.fetch_add(n, Ordering::Relaxed);
            if let Some(c) = &counter {
                c.fetch_add(n, Ordering::Relaxed);
            }
            Some((
                Ok::<Bytes, std::io::Error>(slice),
                (body, end, limits, counter, out),
            ))
        });
    (reqwest::Body::wrap_stream(stream), out)
}

/// Parses a rate: `10M` = 10 MiB/s (suffixes K, M, G, T as powers of 1024, optional `/s`,
/// `B` or `iB`), a plain number is bytes per second, `0` or `off` is no limit.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    crate::cli::options::parse_size(t)
        .map_err(|e| format!("bad rate {s:?}: {e} (e.g. 10M for 10 MiB/s, 0 or off for no limit)"))
}

/// `rate` as shown by `status`: `off` or `20 MiB/s`.
pub fn format_rate(rate: u64) -> String {
    if rate == 0 {
        return "off".into();
    }
    const UNITS: [(&str, u64); 4] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    for (unit, size) in UNITS {
        if rate >= size {
            let v = rate as f64 / size as f64;
            return if (v * 10.0).round() % 10.0 == 0.0 {
                format!("{v:.0} {unit}/s")
            } else {
                format!("{v:.1} {unit}/s")
            };
        }
    }
    format!("{rate} B/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_format() {
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert_eq!(parse_rate("10M/s").unwrap(), 10 << 20);
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert_eq!(parse_rate("off").unwrap(), 0);
        assert_eq!(parse_rate("512K").unwrap(), 512 << 10);
        assert!(parse_rate("fast").is_err());
        assert_eq!(format_rate(0), "off");
        assert_eq!(format_rate(20 << 20), "20 MiB/s");
        assert_eq!(format_rate(512 << 10), "512 KiB/s");
        assert_eq!(format_rate(1 << 30), "1 GiB/s");
    }

    #[tokio::test]
    async fn the_bucket_holds_the_rate_across_callers() {
        let bw = Arc::new(Bandwidth::new(16 << 20));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let bw = bw.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..16 {
                    bw.take(64 << 10).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 4 MiB at 16 MiB/s: 250 ms less the burst allowance (and scheduling slack above).
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) - BURST, "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn zero_is_unlimited_and_a_change_applies_at_once() {
        let bw = Bandwidth::new(0);
        let started = Instant::now();
        bw.take(1 << 30).await;
        assert!(started.elapsed() < Duration::from_millis(50));
        bw.set_rate(8 << 20);
        bw.take(2 << 20).await;
        assert!(started.elapsed() >= Duration::from_millis(250) - BURST);
        bw.set_rate(0);
        let before = Instant::now();
        bw.take(1 << 30).await;
        assert!(before.elapsed() < Duration::from_millis(50));
    }
}
