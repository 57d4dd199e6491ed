//! One Open API call: rate limiter, bearer token, bounded retries, one token replay, logging.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::auth::Auth;
use super::config::{RateLimits, RetryPolicy};
use super::errors::{is_token_error, map_api_error, parse_error_body};
use super::limiter::{Class, RateLimiter};
use super::retry::{parse_retry_after_ms, retry_after_wait, Retrier};
use super::stats::ApiStats;
use super::wire::decode;
use crate::error::{Error, Result};

/// Which failures may be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The call is idempotent (reads, and writes whose replay lands in the same state).
    Always,
    /// The call is not idempotent (creating a file): replay only when the server surely did
    /// not act, i.e. the connection was refused, or it answered 5xx/429. A timeout or a reset
    /// after sending may have created the item, and a blind replay would duplicate it.
    UnsentOnly,
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub auth: Auth,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub stats: ApiStats,
    list: RateLimiter,
    download_url: RateLimiter,
    other: RateLimiter,
}

impl Api {
    pub fn new(
        http: reqwest::Client,
        base: String,
        auth: Auth,
        retry: RetryPolicy,
        timeout: Duration,
        limits: RateLimits,
    ) -> Self {
        Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
            retry,
            timeout,
            stats: ApiStats::default(),
            list: RateLimiter::new(limits.list_per_sec),
            download_url: RateLimiter::new(limits.download_url_per_sec),
            other: RateLimiter::new(limits.other_per_sec),
        }
    }

    fn limiter(&self, class: Class) -> &RateLimiter {
        match class {
            Class::List => &self.list,
            Class::DownloadUrl => &self.download_url,
            Class::Other => &self.other,
        }
    }

    /// POSTs `/adrive/v1.0/{endpoint}` with a JSON body built for the access token that will
    /// carry it (`body(token)`: proof_code depends on the token, so a replay after a refresh
    /// rebuilds it).
    pub async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        class: Class,
        replay: Replay,
        body: impl Fn(&str) -> Result<serde_json::Value>,
    ) -> Result<T> {
        let result = self.call_counted(endpoint, class, replay, body).await;
        // A matched pre-hash probe is an answer, not a failure.
        if result
            .as_ref()
            .is_err_and(|e| !matches!(e, Error::PreHashMatched))
        {
            self.stats.error(endpoint);
        }
        result
    }

    async fn call_counted<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        class: Class,
        replay: Replay,
        body: impl Fn(&str) -> Result<serde_json::Value>,
    ) -> Result<T> {
        let url = format!("{}/adrive/v1.0/{endpoint}", self.base);
        let mut retrier = Retrier::new(self.retry);
        let mut token_replayed = false;
        let (mut token, mut gen) = self.auth.access_token().await?;
        // A retry after a 429 has waited as the server asked: it takes the refused call's slot.
        let mut throttled_retry = false;
        loop {
            let waited = if std::mem::take(&mut throttled_retry) {
                Duration::ZERO
            } else {
                self.limiter(class).acquire().await
            };
            self.stats.call(endpoint, waited);
            retrier.attempts += 1;
            let json = body(&token)?;
            let started = tokio::time::Instant::now();
            let sent = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .timeout(self.timeout)
                .json(&json)
                .send()
                .await;
            self.stats
                .answered(endpoint, sent.as_ref().ok().map(|r| r.status().as_u16()));
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let replayable = replay == Replay::Always || e.is_connect();
                    let e = network(endpoint, e);
                    let wait = retrier.backoff();
                    tracing::debug!(endpoint, attempt = retrier.attempts, "send failed: {e}");
                    if replayable && retrier.may_retry_after(wait) {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(e);
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("x-retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after_ms);
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    let wait = retrier.backoff();
                    if replay == Replay::Always && retrier.may_retry_after(wait) {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(network(endpoint, e));
                }
            };
            tracing::debug!(
                endpoint,
                status,
                ms = started.elapsed().as_millis() as u64,
                attempt = retrier.attempts,
                "api call"
            );
            if (200..300).contains(&status) {
                return decode(endpoint, &bytes);
            }
            let err = parse_error_body(&bytes);
            if is_token_error(status, &err.code) {
                if token_replayed {
                    return Err(Error::Unauthorized(format!(
                        "{endpoint}: {} {} even after a token refresh",
                        err.code, err.message
                    )));
                }
                token_replayed = true;
                (token, gen) = self.auth.token_rejected(gen).await?;
                continue;
            }
            if status == 429 || err.code == "TooManyRequests" {
                self.stats.throttled(endpoint);
                let wait = match retry_after {
                    Some(ms) => retry_after_wait(ms),
                    None => retrier.backoff(),
                };
                if retrier.may_retry_after(wait) {
                    tracing::debug!(endpoint, wait_ms = wait.as_millis() as u64, "throttled");
                    self.limiter(class).refused(wait);
                    throttled_retry = true;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(Error::RateLimited {
                    retry_after: retry_after.map(Duration::from_millis),
                });
            }
            if status >= 500 || status == 408 {
                let wait = retrier.backoff();
                if retrier.may_retry_after(wait) {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Err(map_api_error(status, err));
        }
    }
}

fn network(endpoint: &str, e: reqwest::Error) -> Error {
    // Timeouts are network trouble too (`Error::TimedOut` is for local cancellation).
    Error::Network(format!("{endpoint}: {}", e.without_url()))
}
