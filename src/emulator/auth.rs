//! OAuth: `/oauth/access_token`, the alist-shaped helper `/alist/ali_open/token`, `/oauth/authorize`,
//! `/oauth/users/{info,scopes}`, and the bearer-token check of every API call.
//!
//! Tokens are JWT-shaped (header.payload.signature, base64url) with `sub` = user_id, `aud` =
//! client_id, `iat`, `exp`, `jti`. The server never trusts a token's claims: it looks the whole
//! string up in its tables, so tampering is detected without verifying the signature (which is an
//! HMAC-SHA1 under a per-process key, although the header says HS256 like the real tokens).

use super::errors::{json_response, ApiErr, Resp};
use super::state::{AccessTok, RefreshTok, State};
use super::util::{self, b64url, hmac_sha1, s};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

const REFRESH_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
const CODE_TTL: Duration = Duration::from_secs(600);

/// Who is calling: resolved from the bearer token.
pub struct Ctx {
    pub user_id: String,
    pub client_id: String,
    /// The raw access token (proof_code is computed against it).
    pub token: String,
}

/// OAuth errors: the API envelope (section 0: `requestId` on every error, as in the real
/// `AccessDenied` body of WD#771) plus the extra `error` field seen in xiaoya-alist#341.
pub fn oauth_err(status: u16, code: &str, message: &str) -> Resp {
    json_response(
        status,
        &json!({"code": code, "message": message, "error": format!("{code}: {message}"),
                "requestId": util::request_id()}),
    )
}

impl State {
    fn jwt(&self, client_id: &str, ttl: Duration, kind: &str) -> String {
        let now = util::now_secs();
        let header = b64url(br#"{"kid":"emu","typ":"JWT","alg":"HS256"}"#);
        let payload = json!({
            "sub": self.user_id, "aud": client_id, "s": "cda",
            "d": self.drives.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join(","),
            "iss": "alipan", "exp": now + ttl.as_secs().max(1), "l": 2, "iat": now,
            "jti": util::rand_hex(32, false), "typ": kind,
        });
        let payload = b64url(payload.to_string().as_bytes());
        let signing_input = format!("{header}.{payload}");
        let sig = b64url(&hmac_sha1(&self.jwt_key, signing_input.as_bytes()));
        format!("{signing_input}.{sig}")
    }

    /// Mints and registers a refresh token for the configured app (`chain` None = new chain).
    pub fn mint_refresh_token(&mut self, chain: Option<u64>) -> String {
        let chain = chain.unwrap_or_else(|| self.new_chain());
        let client_id = self.knobs.client_id.clone();
        let tok = self.jwt(&client_id, REFRESH_TTL, "refresh");
        self.tokens.refresh.insert(
            tok.clone(),
            RefreshTok {
                client_id,
                chain,
                exp: SystemTime::now() + REFRESH_TTL,
                used: false,
            },
        );
        self.tokens.current_refresh = tok.clone();
        tok
    }

    fn mint_access_token(&mut self, chain: u64) -> String {
        let client_id = self.knobs.client_id.clone();
        let ttl = self.knobs.access_token_ttl;
        let tok = self.jwt(&client_id, ttl, "access");
        self.tokens.access.insert(
            tok.clone(),
            AccessTok {
                client_id,
                chain,
                exp: SystemTime::now() + ttl,
                revoke_at: None,
            },
        );
        tok
    }

    pub fn issue_code(&mut self) -> String {
        let code = util::rand_hex(32, false);
        self.tokens.codes.insert(
            code.clone(),
            (
                self.knobs.client_id.clone(),
                SystemTime::now() + CODE_TTL,
                false,
            ),
        );
        code
    }

    /// A new access + refresh pair in `chain`; earlier access tokens of the chain get the grace period.
    fn issue_pair(&mut self, chain: u64) -> Value {
        let now = SystemTime::now();
        let grace = self.knobs.access_token_grace;
        for t in self.tokens.access.values_mut() {
            if t.chain == chain && t.revoke_at.is_none() {
                t.revoke_at = Some(now + grace);
            }
        }
        // Forget tokens dead for an hour (so the tables stay small in long runs); until then
        // they still answer AccessTokenExpired rather than AccessTokenInvalid.
        let keep = Duration::from_secs(3600);
        self.tokens.access.retain(|_, t| {
            let end = t.revoke_at.map_or(t.exp, |r| r.min(t.exp));
            end + keep > now
        });
        // A used refresh token answers exactly as an unknown one does: no need to keep it.
        self.tokens.refresh.retain(|_, t| !t.used);
        let access = self.mint_access_token(chain);
        let refresh = self.mint_refresh_token(Some(chain));
        json!({"token_type": "Bearer", "access_token": access, "refresh_token": refresh,
               "expires_in": self.knobs.access_token_ttl.as_secs()})
    }

    /// `/oauth/access_token` (`helper = false`) and `/alist/ali_open/token` (`helper = true`).
    pub fn token_endpoint(&mut self, v: &Value, helper: bool) -> Resp {
        let grant = s(v, "grant_type").unwrap_or("");
        if !helper {
            let cid = s(v, "client_id").unwrap_or("");
            if cid.is_empty() || cid != self.knobs.client_id {
                return oauth_err(400, "InvalidClientId", "invalid client_id");
            }
            let secret = s(v, "client_secret").unwrap_or("");
            if secret != self.knobs.client_secret {
                return oauth_err(400, "InvalidClientSecret", "invalid client_secret");
            }
        }
        match grant {
            "refresh_token" => self.grant_refresh(s(v, "refresh_token").unwrap_or("")),
            "authorization_code" => self.grant_code(s(v, "code").unwrap_or("")),
            _ => oauth_err(400, "InvalidGrantType", "invalid grant_type"),
        }
    }

    fn grant_refresh(&mut self, token: &str) -> Resp {
        if token.is_empty() {
            return oauth_err(400, "RefreshTokenInvalid", "refresh_token is empty");
        }
        let now = SystemTime::now();
        let client_id = self.knobs.client_id.clone();
        let chain = match self.tokens.refresh.get_mut(token) {
            None if token.split('.').count() != 3 => {
                return oauth_err(
                    400,
                    "RefreshTokenInvalid",
                    "refresh_token is invalid, wrong format",
                )
            }
            None => return oauth_err(400, "AccessDenied", "invalid token"),
            // Single use: a rotated token is refused like any unknown one (messense/aliyundrive-webdav#771).
            Some(t) if t.used => return oauth_err(400, "AccessDenied", "invalid token"),
            Some(t) if t.exp <= now => {
                return oauth_err(401, "RefreshTokenExpired", "refresh token is expired")
            }
            Some(t) if t.client_id != client_id => {
                return oauth_err(
                    401,
                    "AccessDenied",
                    "refresh token does not belong to this app",
                )
            }
            Some(t) => {
                t.used = true;
                t.chain
            }
        };
        json_response(200, &self.issue_pair(chain))
    }

    fn grant_code(&mut self, code: &str) -> Resp {
        if code.is_empty() {
            return oauth_err(400, "InvalidCode", "code is empty");
        }
        let now = SystemTime::now();
        match self.tokens.codes.get_mut(code) {
            Some((cid, exp, used)) if !*used && *exp > now && *cid == self.knobs.client_id => {
                *used = true;
            }
            _ => return oauth_err(400, "InvalidCode", "code is invalid or expired"),
        }
        let chain = self.new_chain();
        json_response(200, &self.issue_pair(chain))
    }

    /// Resolves the bearer token of an API call.
    pub fn check_access(&self, headers: &HeaderMap) -> Result<Ctx, ApiErr> {
        let invalid = || {
            ApiErr::new(
                401,
                "AccessTokenInvalid",
                "AccessToken is invalid. ErrValidateTemporaryTokenFailed",
            )
        };
        let raw = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .trim();
        let token = match raw.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(invalid()),
        };
        let t = self.tokens.access.get(token).ok_or_else(invalid)?;
        let now = SystemTime::now();
        let dead = t.exp <= now || t.revoke_at.is_some_and(|r| r <= now);
        if dead {
            return Err(ApiErr::new(
                401,
                "AccessTokenExpired",
                "AccessToken is invalid. expired",
            ));
        }
        Ok(Ctx {
            user_id: self.user_id.clone(),
            client_id: t.client_id.clone(),
            token: token.to_string(),
        })
    }

    pub fn users_info(&self) -> Value {
        json!({"id": self.user_id, "name": self.user_name,
               "avatar": "https://img.alicdn.com/imgextra/i1/O1CN01emulator.png", "phone": null})
    }

    pub fn users_scopes(&self) -> Value {
        json!({"id": self.user_id, "scopes": [
            {"scope": "user:base"}, {"scope": "file:all:read"}, {"scope": "file:all:write"}]})
    }

    /// `GET /oauth/authorize`: auto-approves and redirects with a code (or returns it as JSON).
    pub fn authorize(&mut self, q: &std::collections::HashMap<String, String>) -> Resp {
        if q.get("client_id").map(String::as_str) != Some(self.knobs.client_id.as_str()) {
            return oauth_err(400, "InvalidClientId", "invalid client_id");
        }
        let code = self.issue_code();
        match q.get("redirect_uri").filter(|r| !r.is_empty()) {
            Some(uri) => {
                let sep = if uri.contains('?') { '&' } else { '?' };
                let mut loc = format!("{uri}{sep}code={code}");
                if let Some(st) = q.get("state") {
                    loc.push_str(&format!("&state={}", util::percent_encode(st)));
                }
                let mut r = json_response(302, &json!({}));
                if let Ok(v) = axum::http::HeaderValue::from_str(&loc) {
                    r.headers_mut().insert("location", v);
                }
                r
            }
            None => json_response(200, &json!({"code": code})),
        }
    }
}

/// The payload of a JWT-shaped token (unverified: the server only ever looks tokens up).
pub fn claims(token: &str) -> Option<Value> {
    let mut segs = token.split('.');
    let (Some(_), Some(p), Some(_), None) = (segs.next(), segs.next(), segs.next(), segs.next())
    else {
        return None;
    };
    serde_json::from_slice(&util::b64url_decode(p)?).ok()
}

/// The user a bootstrap refresh token names: its non-empty string `sub` claim.
pub fn token_sub(token: &str) -> Option<String> {
    claims(token)?
        .get("sub")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::state::Shared;
    use crate::emulator::EmulatorConfig;

    #[test]
    fn tokens_are_jwt_shaped_with_the_user_and_app() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmulatorConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let sh = Shared::new(cfg, ([127, 0, 0, 1], 1).into()).unwrap();
        let mut st = sh.lock();
        let rt = st.tokens.current_refresh.clone();
        assert_eq!(rt.split('.').count(), 3);
        let c = claims(&rt).unwrap();
        assert_eq!(c["sub"], st.user_id.as_str());
        assert_eq!(c["aud"], "alipanfs-emulator-app");
        assert!(c["exp"].as_u64().unwrap() > c["iat"].as_u64().unwrap());
        assert_eq!(c["jti"].as_str().unwrap().len(), 32);
        let code = st.issue_code();
        let r = st.token_endpoint(
            &json!({"client_id": "alipanfs-emulator-app", "client_secret": "alipanfs-emulator-secret",
                    "grant_type": "authorization_code", "code": code}),
            false,
        );
        assert_eq!(r.status(), 200);
        // A code is single use.
        let r = st.token_endpoint(
            &json!({"client_id": "alipanfs-emulator-app", "client_secret": "alipanfs-emulator-secret",
                    "grant_type": "authorization_code", "code": code}),
            false,
        );
        assert_eq!(r.status(), 400);
    }
}
