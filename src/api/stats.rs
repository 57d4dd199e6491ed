//! Counters of API calls per endpoint, for `alipanfs status`: calls, waits on the client-side
//! rate limiter, 429s and errors, plus the 429s and errors of the last minute; and, for the
//! Prometheus metrics (`crate::metrics`), the requests by HTTP status.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub calls: u64,
    /// Calls that waited for the client-side rate limiter, and how long in all.
    pub limiter_waits: u64,
    pub limiter_wait: Duration,
    /// 429 answers (each retried or returned).
    pub throttled: u64,
    /// Calls that ended in an error (after retries).
    pub errors: u64,
    /// Requests by the HTTP status of their answer (0: no answer, a network error), for the
    /// metrics; each request sent is counted once here, each retry included.
    pub statuses: BTreeMap<u16, u64>,
}

#[derive(Debug, Default)]
pub struct ApiStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: BTreeMap<&'static str, EndpointStats>,
    /// (when, is a 429) of recent 429s and errors, for the last-minute counts.
    recent: VecDeque<(Instant, bool)>,
}

const RECENT: Duration = Duration::from_secs(60);
/// Bound on the recent-event memory, so a storm of errors cannot grow it without end.
const RECENT_MAX: usize = 100_000;

impl ApiStats {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn call(&self, endpoint: &'static str, waited: Duration) {
        self.with(|i| {
            let e = i.endpoints.entry(endpoint).or_default();
            e.calls += 1;
            if !waited.is_zero() {
                e.limiter_waits += 1;
                e.limiter_wait += waited;
            }
        });
    }

    /// A request's answer: its HTTP status, or None when none came (network error).
    pub fn answered(&self, endpoint: &'static str, status: Option<u16>) {
        self.with(|i| {
            let e = i.endpoints.entry(endpoint).or_default();
            *e.statuses.entry(status.unwrap_or(0)).or_default() += 1;
        });
    }

    pub fn throttled(&self, endpoint: &'static str) {
        self.with(|i| {
            i.endpoints.entry(endpoint).or_default().throttled += 1;
            i.note(true);
        });
    }

    pub fn error(&self, endpoint: &'static str) {
        self.with(|i| {
            i.endpoints.entry(endpoint).or_default().errors += 1;
            i.note(false);
        });
    }

    /// Per endpoint, and (429s, errors) in the last minute.
    pub fn snapshot(&self) -> (Vec<(&'static str, EndpointStats)>, (u64, u64)) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.prune();
        let throttled = i.recent.iter().filter(|(_, t)| *t).count() as u64;
        let errors = i.recent.len() as u64 - throttled;
        let all = i.endpoints.iter().map(|(k, v)| (*k, v.clone())).collect();
        (all, (throttled, errors))
    }
}

impl Inner {
    fn note(&mut self, throttled: bool) {
        self.recent.push_back((Instant::now(), throttled));
        self.prune();
        while self.recent.len() > RECENT_MAX {
            self.recent.pop_front();
        }
    }

    fn prune(&mut self) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| t.elapsed() > RECENT)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_counted_by_status_beside_the_calls() {
        let s = ApiStats::default();
        for status in [Some(429), Some(200), None] {
            s.call("openFile/list", Duration::ZERO);
            s.answered("openFile/list", status);
        }
        s.throttled("openFile/list");
        let (all, (throttled, errors)) = s.snapshot();
        let (name, e) = &all[0];
        assert_eq!(*name, "openFile/list");
        assert_eq!(e.calls, 3);
        assert_eq!(
            e.statuses,
            BTreeMap::from([(0, 1), (200, 1), (429, 1)]),
            "0: no answer"
        );
        assert_eq!((e.throttled, throttled, errors), (1, 1, 0));
    }
}
