//! Access tokens: lifetime, single-flight refresh, rotation persisted before use.
//!
//! The refresh token is single-use: every refresh returns a new one and kills the old, so two
//! concurrent refreshes would lock the user out. All refreshes therefore go through one tokio
//! mutex, and a generation counter lets a caller that saw a rejected token know whether someone
//! else already replaced it (then it just takes the new one instead of refreshing again).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::config::RetryPolicy;
use super::errors::parse_error_body;
use super::retry::{parse_retry_after_ms, retry_after_wait, Retrier};
use super::token::{jwt_sub, unix_now, unix_to_system, TokenStatus, TokenStore};
use super::wire::{decode, TokenResp};
use crate::error::{Error, Result};

/// Refresh ahead of expiry by this much at most (aliyundrive-webdav uses 200 s)...
const MAX_MARGIN: Duration = Duration::from_secs(200);
/// ...and by a tenth of the lifetime for short-lived tokens.
const MARGIN_FRACTION: f64 = 0.1;
/// Lifetime assumed when the token endpoint gives no `expires_in`.
const DEFAULT_EXPIRES_IN: u64 = 7200;

const SIGN_IN_HINT: &str =
    "sign in again with `alipanfs login` (or store a new refresh token with `alipanfs token set`)";

#[derive(Debug, Clone)]
struct Access {
    token: String,
    expires_at: SystemTime,
    /// When to refresh proactively.
    refresh_at: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    refresh_token: Option<String>,
    access: Option<Access>,
    user_id: Option<String>,
    updated_at: Option<u64>,
    generation: u64,
    /// A refresh token the endpoint refused, and why: not presented again (it will not start
    /// working), until the store gives a new one.
    refused: Option<(String, String)>,
}

/// Where and how to refresh.
pub struct TokenEndpoint {
    pub url: String,
    /// Blank for the alist-shaped helper, which supplies its own app credentials.
    pub client_id: String,
    pub client_secret: String,
}

pub struct Auth {
    http: reqwest::Client,
    endpoint: TokenEndpoint,
    retry: RetryPolicy,
    timeout: Duration,
    store_path: PathBuf,
    state: Mutex<State>,
    refresh_lock: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
}

fn margin_for(lifetime: Duration) -> Duration {
    lifetime.mul_f64(MARGIN_FRACTION).min(MAX_MARGIN)
}

impl Auth {
    /// Loads the store; `bootstrap` (the configured refresh token) is used only when the store
    /// has none. A stored access token still in date is reused.
    pub fn new(
        http: reqwest::Client,
        endpoint: TokenEndpoint,
        retry: RetryPolicy,
        timeout: Duration,
        store_path: PathBuf,
        bootstrap: Option<String>,
    ) -> Result<Auth> {
        let store = TokenStore::load(&store_path)?;
        let mut state = State {
            user_id: store.user_id.clone(),
            updated_at: store.updated_at,
            ..State::default()
        };
        match store.refresh_token {
            Some(rt) => {
                state.refresh_token = Some(rt);
                if let (Some(token), Some(exp)) = (store.access_token, store.access_expires_at) {
                    let expires_at = unix_to_system(exp);
                    // The rotation time is when this access token was issued.
                    let issued = store.updated_at.map(unix_to_system).unwrap_or(expires_at);
                    let lifetime = expires_at.duration_since(issued).unwrap_or_default();
                    state.access = Some(Access {
                        token,
                        expires_at,
                        refresh_at: expires_at - margin_for(lifetime),
                    });
                }
            }
            None => {
                let rt = bootstrap
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                if state.user_id.is_none() {
                    state.user_id = rt.as_deref().and_then(jwt_sub);
                }
                state.refresh_token = rt;
            }
        }
        Ok(Auth {
            http,
            endpoint,
            retry,
            timeout,
            store_path,
            state: Mutex::new(state),
            refresh_lock: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store_path(&self) -> &Path {
        &self.store_path
    }

    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> TokenStatus {
        let st = self.lock();
        TokenStatus {
            user_id: st
                .access
                .as_ref()
                .and_then(|a| jwt_sub(&a.token))
                .or_else(|| st.user_id.clone()),
            store_path: self.store_path.clone(),
            has_refresh_token: st.refresh_token.is_some(),
            last_rotation: st.updated_at.map(unix_to_system),
            access_expires_at: st.access.as_ref().map(|a| a.expires_at),
        }
    }

    /// A usable access token and its generation (hand the generation back to
    /// `token_rejected` if the server refuses the token).
    pub async fn access_token(&self) -> Result<(String, u64)> {
        let (gen, stale) = {
            let st = self.lock();
            let now = SystemTime::now();
            match &st.access {
                Some(a) if now < a.refresh_at => return Ok((a.token.clone(), st.generation)),
                Some(a) if now < a.expires_at => (st.generation, Some(a.token.clone())),
                _ => (st.generation, None),
            }
        };
        match self.refresh(gen).await {
            Ok(t) => Ok(t),
            // A proactive refresh that failed for a passing reason: the old token still works.
            // An early refresh that failed: the current token still works for a while. Keep
            // using it, and retry the refresh later rather than on every call.
            Err(e) if stale.is_some() => {
                tracing::warn!("early access-token refresh failed, using current token: {e}");
                self.postpone_refresh(gen);
                Ok((stale.unwrap_or_default(), gen))
            }
            Err(e) => Err(e),
        }
    }

    fn postpone_refresh(&self, gen: u64) {
        let mut st = self.lock();
        if st.generation != gen {
            return;
        }
        if let Some(a) = st.access.as_mut() {
            let now = SystemTime::now();
            let left = a.expires_at.duration_since(now).unwrap_or_default();
            a.refresh_at = now + (left / 2).min(Duration::from_secs(30));
        }
    }

    /// The server refused the token of generation `gen`: refresh unless that already happened.
    pub async fn token_rejected(&self, gen: u64) -> Result<(String, u64)> {
        self.refresh(gen).await
    }

    async fn refresh(&self, seen_gen: u64) -> Result<(String, u64)> {
        let _single_flight = self.refresh_lock.lock().await;
        self.adopt_newer_store();
        let (refresh_token, old_sub) = {
            let st = self.lock();
            if st.generation != seen_gen {
                if let Some(a) = &st.access {
                    return Ok((a.token.clone(), st.generation));
                }
            }
            let rt = st.refresh_token.clone().ok_or_else(|| {
                Error::SignIn(format!(
                    "no refresh token in {}; {SIGN_IN_HINT}",
                    self.store_path.display()
                ))
            })?;
            if let Some((dead, why)) = &st.refused {
                if *dead == rt {
                    return Err(Error::SignIn(why.clone()));
                }
            }
            let old_sub = st.user_id.clone().or_else(|| jwt_sub(&rt));
            (rt, old_sub)
        };
        let resp = match self.call_endpoint(&refresh_token).await {
            Ok(r) => r,
            Err(Error::SignIn(why)) => {
                self.lock().refused = Some((refresh_token, why.clone()));
                return Err(Error::SignIn(why));
            }
            Err(e) => return Err(e),
        };
        let access = resp
            .access_token
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| Error::BadResponse("token endpoint gave no access_token".into()))?;
        // A helper that does not rotate leaves the old refresh token valid.
        let new_refresh = resp
            .refresh_token
            .filter(|t| !t.trim().is_empty())
            .unwrap_or(refresh_token);
        let new_sub = jwt_sub(&access).or_else(|| jwt_sub(&new_refresh));
        if let (Some(old), Some(new)) = (&old_sub, &new_sub) {
            if old != new {
                // alist saw a helper hand out another user's tokens: never switch users.
                return Err(Error::SignIn(format!(
                    "the token endpoint returned tokens of another user ({new} instead of {old}); \
                     refused, keeping the current tokens"
                )));
            }
        }
        let lifetime = Duration::from_secs(resp.expires_in.unwrap_or(DEFAULT_EXPIRES_IN));
        let now = SystemTime::now();
        let expires_at = now + lifetime;
        let updated_at = unix_now();
        let user_id = new_sub.or(old_sub);
        let store = TokenStore {
            refresh_token: Some(new_refresh.clone()),
            access_token: Some(access.clone()),
            access_expires_at: Some(unix_now() + lifetime.as_secs()),
            user_id: user_id.clone(),
            updated_at: Some(updated_at),
        };
        // Persist before use: the old refresh token is dead now.
        let saved = store.save(&self.store_path);
        let gen = {
            let mut st = self.lock();
            st.refresh_token = Some(new_refresh);
            st.access = Some(Access {
                token: access.clone(),
                expires_at,
                refresh_at: expires_at - margin_for(lifetime),
            });
            st.user_id = user_id;
            st.updated_at = Some(updated_at);
            st.generation += 1;
            st.generation
        };
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "access token refreshed (valid {} s), rotation saved to {}",
            lifetime.as_secs(),
            self.store_path.display()
        );
        if let Err(e) = saved {
            // Keep the new tokens in memory (the old ones are dead) but say it loudly: a restart
            // now would need a new sign-in.
            tracing::error!("could not save the rotated refresh token: {e}");
            return Err(e);
        }
        Ok((access, gen))
    }

    /// Picks up a refresh token written to the store after ours (`alipanfs token set` while
    /// mounted, typically after a sign-in failure), so the user need not restart. A store that
    /// is older than our state (a failed save) is ignored.
    fn adopt_newer_store(&self) {
        let Ok(store) = TokenStore::load(&self.store_path) else {
            return;
        };
        let Some(rt) = store.refresh_token else {
            return;
        };
        let mut st = self.lock();
        let newer = match (store.updated_at, st.updated_at) {
            (Some(disk), Some(mem)) => disk >= mem,
            (Some(_), None) => true,
            _ => false,
        };
        if newer && st.refresh_token.as_deref() != Some(rt.as_str()) {
            tracing::info!(
                "using the refresh token newly saved in {}",
                self.store_path.display()
            );
            st.user_id = store.user_id.or_else(|| jwt_sub(&rt));
            st.refresh_token = Some(rt);
            st.updated_at = store.updated_at;
        }
    }

    /// One refresh call, retried on network trouble, 5xx and 429 within the budget.
    async fn call_endpoint(&self, refresh_token: &str) -> Result<TokenResp> {
        let body = serde_json::json!({
            "client_id": self.endpoint.client_id,
            "client_secret": self.endpoint.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        });
        let url = &self.endpoint.url;
        let mut retrier = Retrier::new(self.retry);
        loop {
            retrier.attempts += 1;
            let started = tokio::time::Instant::now();
            let sent = self
                .http
                .post(url)
                .timeout(self.timeout)
                .json(&body)
                .send()
                .await;
            let (status, retry_after, bytes) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("x-retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after_ms);
                    match resp.bytes().await {
                        Ok(b) => (status, retry_after, b),
                        Err(e) => {
                            let wait = retrier.backoff();
                            if retrier.may_retry_after(wait) {
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            return Err(Error::Network(format!(
                                "token endpoint: {}",
                                e.without_url()
                            )));
                        }
                    }
                }
                Err(e) => {
                    let wait = retrier.backoff();
                    if retrier.may_retry_after(wait) {
                        tracing::debug!(
                            "token endpoint unreachable, retrying: {}",
                            e.without_url()
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(Error::Network(format!(
                        "token endpoint: {}",
                        e.without_url()
                    )));
                }
            };
            tracing::debug!(
                endpoint = "oauth/access_token",
                status,
                ms = started.elapsed().as_millis() as u64,
                "token endpoint answered"
            );
            if (200..300).contains(&status) {
                let resp: TokenResp = decode("oauth/access_token", &bytes)?;
                if resp
                    .access_token
                    .as_deref()
                    .is_none_or(|t| t.trim().is_empty())
                {
                    let err = parse_error_body(&bytes);
                    if !err.code.is_empty() || !err.message.is_empty() {
                        return Err(refusal(status, &err.code, &err.message));
                    }
                }
                return Ok(resp);
            }
            if status == 429 || status == 408 || status >= 500 {
                let wait = match (status, retry_after) {
                    (429, Some(ms)) => retry_after_wait(ms),
                    _ => retrier.backoff(),
                };
                if retrier.may_retry_after(wait) {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let err = parse_error_body(&bytes);
                if status == 429 {
                    return Err(Error::RateLimited {
                        retry_after: retry_after.map(Duration::from_millis),
                    });
                }
                return Err(Error::Api {
                    status,
                    code: err.code,
                    message: format!("token endpoint: {}", err.message),
                });
            }
            let err = parse_error_body(&bytes);
            return Err(refusal(status, &err.code, &err.message));
        }
    }
}

/// A 4xx from the token endpoint: the user must act, and the message says how.
fn refusal(status: u16, code: &str, message: &str) -> Error {
    let what = match (code, message) {
        ("", "") => format!("HTTP {status}"),
        ("", m) => format!("HTTP {status}: {m}"),
        (c, "") => format!("{c} (HTTP {status})"),
        (c, m) => format!("{c}: {m} (HTTP {status})"),
    };
    match code {
        "InvalidClientId" | "InvalidClientSecret" | "AppNotExists" | "InvalidGrantType" => {
            Error::SignIn(format!(
                "the token endpoint refused the app credentials ({what}); check client_id and client_secret"
            ))
        }
        _ => Error::SignIn(format!("the refresh token was refused ({what}); {SIGN_IN_HINT}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with_store(store: &TokenStore, bootstrap: Option<&str>) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        store.save(&path).unwrap();
        let auth = Auth::new(
            reqwest::Client::new(),
            TokenEndpoint {
                // Nothing listens here: any refresh attempt fails fast.
                url: "http://127.0.0.1:9/oauth/access_token".into(),
                client_id: String::new(),
                client_secret: String::new(),
            },
            RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            Duration::from_secs(2),
            path,
            bootstrap.map(String::from),
        )
        .unwrap();
        (dir, auth)
    }

    #[tokio::test]
    async fn stored_unexpired_access_token_is_reused_without_refresh() {
        let now = unix_now();
        let store = TokenStore {
            refresh_token: Some("r".into()),
            access_token: Some("stored-access".into()),
            access_expires_at: Some(now + 7000),
            user_id: Some("u".into()),
            updated_at: Some(now - 200),
        };
        let (_d, auth) = auth_with_store(&store, Some("configured"));
        let (tok, _) = auth.access_token().await.unwrap();
        assert_eq!(tok, "stored-access");
        assert_eq!(auth.refresh_count(), 0);
        let st = auth.status();
        assert_eq!(st.user_id.as_deref(), Some("u"));
        assert!(st.has_refresh_token);
    }

    #[tokio::test]
    async fn failed_early_refresh_keeps_the_valid_token_and_backs_off() {
        let now = unix_now();
        let store = TokenStore {
            refresh_token: Some("r".into()),
            access_token: Some("still-valid".into()),
            // Lifetime 105 s, 5 s left: inside the refresh margin.
            access_expires_at: Some(now + 5),
            user_id: None,
            updated_at: Some(now - 100),
        };
        let (_d, auth) = auth_with_store(&store, None);
        let (tok, _) = auth.access_token().await.unwrap();
        assert_eq!(tok, "still-valid");
        let refresh_at = auth.lock().access.as_ref().unwrap().refresh_at;
        assert!(refresh_at > SystemTime::now(), "next attempt postponed");
    }

    #[tokio::test]
    async fn store_wins_over_configured_refresh_token() {
        let store = TokenStore {
            refresh_token: Some("from-store".into()),
            ..Default::default()
        };
        let (_d, auth) = auth_with_store(&store, Some("configured"));
        assert_eq!(auth.lock().refresh_token.as_deref(), Some("from-store"));
        let (_d, auth) = auth_with_store(&TokenStore::default(), Some(" configured "));
        assert_eq!(auth.lock().refresh_token.as_deref(), Some("configured"));
    }

    #[tokio::test]
    async fn no_refresh_token_is_a_sign_in_error() {
        let (_d, auth) = auth_with_store(&TokenStore::default(), None);
        match auth.access_token().await {
            Err(Error::SignIn(m)) => assert!(m.contains("alipanfs token set")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn token_set_while_running_is_picked_up_by_the_next_refresh() {
        let (_d, auth) = auth_with_store(&TokenStore::default(), Some("old"));
        super::super::token::store_refresh_token(auth.store_path(), "new-token").unwrap();
        // The refresh fails (nothing listens) but it was attempted with the new token.
        assert!(auth.access_token().await.is_err());
        assert_eq!(auth.lock().refresh_token.as_deref(), Some("new-token"));
        // An older store is not adopted over newer memory.
        auth.lock().updated_at = Some(unix_now() + 100);
        TokenStore {
            refresh_token: Some("stale".into()),
            updated_at: Some(unix_now()),
            ..Default::default()
        }
        .save(auth.store_path())
        .unwrap();
        auth.adopt_newer_store();
        assert_eq!(auth.lock().refresh_token.as_deref(), Some("new-token"));
    }

    #[test]
    fn refusal_messages_guide_the_user() {
        let e = refusal(400, "AccessDenied", "invalid token").to_string();
        assert!(e.contains("alipanfs token set") && e.contains("AccessDenied"));
        let e = refusal(401, "InvalidClientSecret", "bad").to_string();
        assert!(e.contains("client_secret"));
    }

    #[test]
    fn margins() {
        assert_eq!(margin_for(Duration::from_secs(7200)), MAX_MARGIN);
        assert_eq!(margin_for(Duration::from_secs(10)), Duration::from_secs(1));
    }
}
