//! The one retry policy: backoff with jitter, the retry budgets, and how often each layer
//! retries. Every retry loop in the crate takes its waits from here (`Retrier` for API calls,
//! `Backoff` for the loops above them: part PUTs, idempotent calls repeated by the writer, the
//! upload queue, the read path, startup), so there is one formula to reason about.
//!
//! Layers do not multiply: a data PUT (`data::upload_part`) is sent once per call, and only the
//! part sender retries it, at most [`PART_SEND_ATTEMPTS`] times per part and session.

use std::time::Duration;

use rand::Rng;

use super::config::RetryPolicy;

/// Times one part is PUT within one upload session before that upload attempt gives up (the
/// upload queue then retries the whole file later, with its own backoff). Counts every PUT of the
/// part, the first included: transient errors (5xx, dropped connections, 429) use them up; a PUT
/// answered "URL expired" is renewed and resent without counting (bounded separately). The
/// data layer itself never retries a PUT, so this is the whole budget. README says this number.
pub const PART_SEND_ATTEMPTS: u32 = 6;

/// Exponential backoff with jitter: with d = base·2^(attempt-1) capped at `max`, the wait is
/// uniformly in [d/2, d] (`unit` in [0, 1) is the jitter draw). `attempt` counts tries made
/// (≥ 1). Jitter keeps many clients (or tasks) that failed together from retrying together.
pub fn backoff(base: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exp).min(max);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// [`backoff`] with a fresh jitter draw.
pub fn jittered(base: Duration, max: Duration, attempt: u32) -> Duration {
    backoff(base, max, attempt, rand::thread_rng().gen::<f64>())
}

/// `d` with jitter: uniformly in [d/2, d] (for a loop that grows its own wait, like the upload
/// queue's, whose quota case jumps straight to a long wait).
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * rand::thread_rng().gen::<f64>())
}

/// A backoff sequence for a loop that keeps its own count of tries: each `next` is the
/// [`jittered`] wait after one more failed try.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// Failed tries so far.
    pub failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    /// The wait before the next try, counting one more failure.
    pub fn next_wait(&mut self) -> Duration {
        self.failures += 1;
        jittered(self.base, self.max, self.failures)
    }
}

/// Tracks one request's retries against the policy's attempt count and time budget.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    started: tokio::time::Instant,
    /// Tries made so far (the first try counts).
    pub attempts: u32,
}

impl Retrier {
    pub fn new(policy: RetryPolicy) -> Self {
        Retrier {
            policy,
            started: tokio::time::Instant::now(),
            attempts: 0,
        }
    }

    /// The policy's [`backoff`] after `attempts` tries.
    pub fn backoff(&self) -> Duration {
        backoff_for(&self.policy, self.attempts, rand::thread_rng().gen::<f64>())
    }

    /// Whether another try may start after waiting `wait`: attempts left and the wait ends
    /// inside the budget.
    pub fn may_retry_after(&self, wait: Duration) -> bool {
        self.attempts < self.policy.max_attempts
            && self.started.elapsed() + wait <= self.policy.budget
    }
}

/// `attempt` is the number of tries already made (≥ 1); `unit` in [0, 1) is the jitter draw.
pub fn backoff_for(policy: &RetryPolicy, attempt: u32, unit: f64) -> Duration {
    backoff(policy.base_delay, policy.max_delay, attempt, unit)
}

/// The wait a 429 asks for: its `x-retry-after` (milliseconds) plus a little jitter, so a
/// storm is ridden out at the server's pace rather than ours.
pub fn retry_after_wait(ms: u64) -> Duration {
    let jitter = rand::thread_rng().gen_range(0..=ms / 10 + 5);
    Duration::from_millis(ms + jitter)
}

/// Parses `x-retry-after` (milliseconds; tolerate a fractional value).
pub fn parse_retry_after_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(|f| f.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            budget: Duration::from_secs(10),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn doubles_and_caps_with_jitter_bounds() {
        let p = policy();
        assert_eq!(backoff_for(&p, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_for(&p, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff_for(&p, 2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff_for(&p, 4, 1.0), Duration::from_millis(800));
        assert_eq!(backoff_for(&p, 5, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_for(&p, 60, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_for(&p, 60, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn backoff_bounds_jitter_and_cap() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(10));
        for attempt in 1..=40u32 {
            let full = base.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            // Bounds: the jitter keeps every wait in [full/2, full].
            assert_eq!(backoff(base, max, attempt, 0.0), full / 2);
            assert_eq!(backoff(base, max, attempt, 1.0), full);
            for _ in 0..20 {
                let w = jittered(base, max, attempt);
                assert!(w >= full / 2 && w <= full, "attempt {attempt}: {w:?}");
            }
        }
        // Cap: never above max, however many tries (no overflow at huge counts either).
        assert_eq!(backoff(base, max, u32::MAX, 1.0), max);
        assert_eq!(backoff(base, max, 0, 1.0), base);
        // Out-of-range draws are clamped.
        assert_eq!(backoff(base, max, 1, 7.0), base);
        assert_eq!(backoff(base, max, 1, -1.0), base / 2);
        // Jitter: draws differ (200 identical draws from a uniform would be a broken rng).
        let draws: std::collections::HashSet<Duration> =
            (0..200).map(|_| jittered(base, max, 5)).collect();
        assert!(draws.len() > 10, "jitter spreads the waits");
        // The sequence doubles up to the cap.
        let mut b = Backoff::new(base, max);
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert_eq!(b.failures, 10);
        assert!(waits[0] <= base && waits[9] >= max / 2 && waits.iter().all(|w| *w <= max));
    }

    #[tokio::test]
    async fn budget_and_attempts_bound_retries() {
        let mut r = Retrier::new(RetryPolicy {
            budget: Duration::from_millis(300),
            ..policy()
        });
        r.attempts = 1;
        assert!(r.may_retry_after(Duration::from_millis(200)));
        assert!(!r.may_retry_after(Duration::from_millis(400)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!r.may_retry_after(Duration::from_millis(150)));
        r.attempts = 5;
        assert!(!r.may_retry_after(Duration::ZERO));
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after_ms("1500"), Some(1500));
        assert_eq!(parse_retry_after_ms(" 12.2 "), Some(13));
        assert_eq!(parse_retry_after_ms("soon"), None);
        assert_eq!(parse_retry_after_ms("-3"), None);
        let w = retry_after_wait(100);
        assert!(w >= Duration::from_millis(100) && w <= Duration::from_millis(115));
    }
}
