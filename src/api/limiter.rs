//! Client-side rate limiting: one token bucket of depth 1 per endpoint class, so the drive's
//! own limiter (4/s list, 1/s getDownloadUrl, 15/s others) rarely has to answer 429.
//!
//! Depth 1 means calls are spaced by 1/rate: a burst would only buy a 429 from the server,
//! whose bucket depth is unknown. The spacing is 2% above 1/rate, so that calls spaced exactly
//! but delayed unevenly on the way do not reach the server's bucket a little early. Waiters are served in arrival order because each
//! reserves its slot under the lock before sleeping.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Which limit an endpoint counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    List,
    DownloadUrl,
    Other,
}

#[derive(Debug)]
pub struct RateLimiter {
    interval: Option<Duration>,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_sec <= 0` (or not finite) means unlimited.
    pub fn new(per_sec: f64) -> Self {
        let interval =
            (per_sec.is_finite() && per_sec > 0.0).then(|| Duration::from_secs_f64(1.02 / per_sec));
        RateLimiter {
            interval,
            next_free: Mutex::new(None),
        }
    }

    /// Reserves the next slot and returns how long to wait for it.
    fn reserve(&self) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match *next {
            Some(t) if t > now => t,
            _ => now,
        };
        *next = Some(slot + interval);
        slot - now
    }

    /// The server refused the call made in the last slot and asked for `wait`: the retry,
    /// made after that wait, takes the refused call's place, so the next slot moves by it
    /// (rather than the retry queuing for a slot of its own, a whole interval later).
    pub fn refused(&self, wait: Duration) {
        if self.interval.is_none() {
            return;
        }
        let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = next.as_mut() {
            *t += wait;
        }
    }

    /// Waits for the next slot; returns how long that was (for the status counters).
    pub async fn acquire(&self) -> Duration {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (tokio's paused clock needs a feature this crate does not enable): fast rates,
    // and bounds loose enough for a busy machine but tight enough to catch a missing wait.

    #[tokio::test]
    async fn spaces_calls_by_the_interval() {
        let l = RateLimiter::new(50.0);
        let t0 = Instant::now();
        for _ in 0..6 {
            l.acquire().await;
        }
        // First is free, then 5 more at 20 ms each.
        let e = t0.elapsed();
        assert!(e >= Duration::from_millis(100), "{e:?}");
        assert!(e < Duration::from_millis(400), "{e:?}");
    }

    #[test]
    fn reservations_are_spaced_and_idle_time_does_not_accumulate_a_burst() {
        let l = RateLimiter::new(10.0);
        assert_eq!(l.reserve(), Duration::ZERO);
        let w = l.reserve();
        assert!(
            w > Duration::from_millis(92) && w <= Duration::from_millis(102),
            "{w:?}"
        );
        let w3 = l.reserve();
        assert!(
            w3 > Duration::from_millis(194) && w3 <= Duration::from_millis(204),
            "{w3:?}"
        );
        // After idling past every reservation, only one call is free again.
        std::thread::sleep(Duration::from_millis(320));
        assert_eq!(l.reserve(), Duration::ZERO);
        assert!(l.reserve() > Duration::from_millis(90));
    }

    #[tokio::test]
    async fn concurrent_waiters_get_distinct_slots() {
        let l = std::sync::Arc::new(RateLimiter::new(100.0));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    l.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap() - t0);
        }
        times.sort();
        // Ten calls at 100/s span at least 90 ms.
        assert!(
            times[9] - times[0] >= Duration::from_millis(85),
            "{times:?}"
        );
    }

    #[test]
    fn a_refused_call_moves_the_next_slot_by_the_servers_wait() {
        let l = RateLimiter::new(10.0);
        assert_eq!(l.reserve(), Duration::ZERO);
        l.refused(Duration::from_millis(30));
        let w = l.reserve();
        assert!(
            w > Duration::from_millis(122) && w <= Duration::from_millis(132),
            "{w:?}"
        );
    }

    #[tokio::test]
    async fn zero_means_unlimited() {
        let l = RateLimiter::new(0.0);
        let t0 = Instant::now();
        for _ in 0..100 {
            l.acquire().await;
        }
        assert!(t0.elapsed() < Duration::from_millis(50));
    }
}
