//! Backoff arithmetic for retries (the loop itself lives in `http` and `data`).

use std::time::Duration;

use rand::Rng;

use super::config::RetryPolicy;

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

    /// Exponential backoff with jitter: uniformly in [d/2, d] where d = base·2^(n-1) capped at
    /// max. Jitter keeps many clients (or tasks) that failed together from retrying together.
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
    let exp = attempt.saturating_sub(1).min(20);
    let full = policy
        .base_delay
        .saturating_mul(1u32 << exp)
        .min(policy.max_delay);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
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
