//! Client configuration and its defaults (the real service's published limits).

use std::path::PathBuf;
use std::time::Duration;

use crate::drive::DriveChoice;

/// Requests per second allowed per endpoint class (0 = unlimited). Defaults are the
/// documented per-user-per-app limits (reference 6.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub list_per_sec: f64,
    pub download_url_per_sec: f64,
    pub other_per_sec: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            list_per_sec: 4.0,
            download_url_per_sec: 1.0,
            other_per_sec: 15.0,
        }
    }
}

/// Bounded retries: at most `max_attempts` tries of one request and no new try once `budget`
/// has elapsed since the first. Backoff doubles from `base_delay` up to `max_delay`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub budget: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            budget: Duration::from_secs(60),
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub api_url: String,
    /// alist-shaped token helper, used when `client_id` is blank.
    pub token_url: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Bootstrap only: used when the token store holds no refresh token.
    pub refresh_token: Option<String>,
    pub token_store: PathBuf,
    pub drive: DriveChoice,
    pub limits: RateLimits,
    pub retry: RetryPolicy,
    /// Asked for; the real expiry is always read from the URL's `x-oss-expires`.
    pub download_url_expire_sec: u64,
    /// Whole-request timeout of API calls; for data transfers, the longest silence tolerated.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub user_agent: String,
    /// `--internal-upload`: part uploads go to this origin (scheme://host[:port]), keeping the
    /// upload URL's path and query.
    pub upload_origin: Option<String>,
    /// `--bwlimit-download` and `--bwlimit-upload`, bytes per second (0 = no limit).
    pub bwlimit_download: u64,
    pub bwlimit_upload: u64,
}

impl ClientConfig {
    pub const DEFAULT_API_URL: &'static str = "https://openapi.alipan.com";
    pub const DEFAULT_TOKEN_URL: &'static str = "https://api.nn.ci/alist/ali_open/token";

    /// Defaults for everything but where the tokens live.
    pub fn new(token_store: PathBuf) -> Self {
        ClientConfig {
            api_url: Self::DEFAULT_API_URL.to_string(),
            token_url: Self::DEFAULT_TOKEN_URL.to_string(),
            client_id: None,
            client_secret: None,
            refresh_token: None,
            token_store,
            drive: DriveChoice::Default,
            limits: RateLimits::default(),
            retry: RetryPolicy::default(),
            download_url_expire_sec: 14400,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            user_agent: format!("alipanfs/{}", env!("CARGO_PKG_VERSION")),
            upload_origin: None,
            bwlimit_download: 0,
            bwlimit_upload: 0,
        }
    }

    /// Client id and secret, when both are given and non-blank (else the token helper is used).
    pub(crate) fn app_credentials(&self) -> Option<(String, String)> {
        let id = self.client_id.as_deref().map(str::trim).unwrap_or("");
        if id.is_empty() {
            return None;
        }
        let secret = self.client_secret.as_deref().map(str::trim).unwrap_or("");
        Some((id.to_string(), secret.to_string()))
    }
}
