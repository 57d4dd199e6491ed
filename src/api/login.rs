//! QR sign-in over HTTP (`alipanfs login`): ask for a QR code, poll its status, exchange the
//! authorization code for tokens, and ask who signed in. Two flows (reference section 1.4/1.5):
//! - with app credentials, the Open API's own: `POST {api}/oauth/authorize/qrcode`,
//!   `GET {api}/oauth/qrcode/{sid}/status`, `POST {api}/oauth/access_token`
//!   (`grant_type: authorization_code`);
//! - without, the online token service's: `POST {service}/qr` (`{}`), the same status URL on the
//!   API host (alist's sign-in page polls the Open API there; the service's sid is an Open API
//!   sid), and `POST {service}/code`, where `{service}` is `--token-url` without its last
//!   segment (`.../alist/ali_open/token` → `.../alist/ali_open`).
//!
//! No retries here: the command is interactive, and a network error ends it with one line.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::errors::parse_error_body;
use super::wire::{decode, TokenResp};
use crate::error::{Error, Result};

/// Which sign-in flow, and where.
#[derive(Debug, Clone)]
pub enum QrFlow {
    OpenApi {
        api_url: String,
        client_id: String,
        client_secret: String,
    },
    Service {
        api_url: String,
        token_url: String,
    },
}

/// A QR code to show: the URL it encodes and the session id to poll.
#[derive(Debug, Clone, Deserialize)]
pub struct QrCode {
    #[serde(rename = "qrCodeUrl")]
    pub url: String,
    pub sid: String,
}

/// Where a QR sign-in stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrStatus {
    WaitLogin,
    Scanned,
    /// Confirmed in the app: the authorization code.
    Confirmed(String),
    Expired,
    /// A status the documentation does not list (a refusal in the app, say): the sign-in is over.
    Ended(String),
}

/// Who signed in (`/oauth/users/info`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SignedIn {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

pub struct QrLogin {
    http: reqwest::Client,
    flow: QrFlow,
}

impl QrFlow {
    fn api_url(&self) -> &str {
        match self {
            QrFlow::OpenApi { api_url, .. } | QrFlow::Service { api_url, .. } => {
                api_url.trim_end_matches('/')
            }
        }
    }

    /// The token service's base: `--token-url` without its last path segment.
    fn service_base(token_url: &str) -> &str {
        let t = token_url.trim_end_matches('/');
        match t.rfind('/') {
            Some(i) if i > t.find("://").map_or(0, |j| j + 2) => &t[..i],
            _ => t,
        }
    }
}

impl QrLogin {
    pub fn new(flow: QrFlow, timeout: Duration) -> Result<QrLogin> {
        let http = reqwest::Client::builder()
            .user_agent(format!("alipanfs/{}", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(QrLogin { http, flow })
    }

    /// Asks for a QR code.
    pub async fn start(&self) -> Result<QrCode> {
        let (url, body) = match &self.flow {
            QrFlow::OpenApi {
                client_id,
                client_secret,
                ..
            } => (
                format!("{}/oauth/authorize/qrcode", self.flow.api_url()),
                json!({"client_id": client_id, "client_secret": client_secret,
                       "scopes": ["user:base", "file:all:read", "file:all:write"],
                       "width": 430, "height": 430}),
            ),
            QrFlow::Service { token_url, .. } => {
                (format!("{}/qr", QrFlow::service_base(token_url)), json!({}))
            }
        };
        let bytes = self
            .call("authorize/qrcode", self.http.post(&url).json(&body))
            .await?;
        let code: QrCode = decode("authorize/qrcode", &bytes)?;
        if code.url.is_empty() || code.sid.is_empty() {
            return Err(Error::BadResponse(
                "the sign-in service gave no QR code".into(),
            ));
        }
        Ok(code)
    }

    /// The QR code's status now.
    pub async fn status(&self, sid: &str) -> Result<QrStatus> {
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default)]
            status: String,
            #[serde(default, rename = "authCode")]
            auth_code: Option<String>,
        }
        let url = format!("{}/oauth/qrcode/{sid}/status", self.flow.api_url());
        let bytes = self.call("qrcode/status", self.http.get(&url)).await?;
        let r: Resp = decode("qrcode/status", &bytes)?;
        Ok(match (r.status.as_str(), r.auth_code) {
            ("WaitLogin", _) => QrStatus::WaitLogin,
            ("ScanSuccess", _) => QrStatus::Scanned,
            ("LoginSuccess", Some(code)) if !code.is_empty() => QrStatus::Confirmed(code),
            ("LoginSuccess", _) => {
                return Err(Error::BadResponse(
                    "the sign-in was confirmed but no authorization code came with it".into(),
                ))
            }
            ("QRCodeExpired", _) => QrStatus::Expired,
            (other, _) => QrStatus::Ended(other.to_string()),
        })
    }

    /// Exchanges the authorization code for tokens.
    pub async fn exchange(&self, code: &str) -> Result<TokenResp> {
        let (url, body) = match &self.flow {
            QrFlow::OpenApi {
                client_id,
                client_secret,
                ..
            } => (
                format!("{}/oauth/access_token", self.flow.api_url()),
                json!({"client_id": client_id, "client_secret": client_secret,
                       "grant_type": "authorization_code", "code": code}),
            ),
            QrFlow::Service { token_url, .. } => (
                format!("{}/code", QrFlow::service_base(token_url)),
                json!({"client_id": "", "client_secret": "",
                       "grant_type": "authorization_code", "code": code}),
            ),
        };
        let bytes = self
            .call("access_token", self.http.post(&url).json(&body))
            .await?;
        let t: TokenResp = decode("access_token", &bytes)?;
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&t.refresh_token) || blank(&t.access_token) {
            return Err(Error::BadResponse(
                "the sign-in service gave no refresh token".into(),
            ));
        }
        Ok(t)
    }

    /// Who the access token belongs to.
    pub async fn who(&self, access_token: &str) -> Result<SignedIn> {
        let url = format!("{}/oauth/users/info", self.flow.api_url());
        let bytes = self
            .call("users/info", self.http.get(&url).bearer_auth(access_token))
            .await?;
        decode("users/info", &bytes)
    }

    /// One call: network trouble is `Error::Network`, a non-2xx answer `Error::SignIn` naming
    /// the service's code and message (never the body: it may hold tokens).
    async fn call(&self, what: &str, req: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Network(format!("{what}: {}", e.without_url())))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Network(format!("{what}: {}", e.without_url())))?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let e = parse_error_body(&bytes);
        let detail = match (e.code.as_str(), e.message.as_str()) {
            ("", "") => format!("HTTP {status}"),
            ("", m) | (m, "") => format!("{m} (HTTP {status})"),
            (c, m) => format!("{c}: {m} (HTTP {status})"),
        };
        Err(Error::SignIn(format!("{what} refused: {detail}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_base_drops_the_last_segment() {
        assert_eq!(
            QrFlow::service_base("https://api.nn.ci/alist/ali_open/token"),
            "https://api.nn.ci/alist/ali_open"
        );
        assert_eq!(
            QrFlow::service_base("http://127.0.0.1:8/alist/ali_open/token/"),
            "http://127.0.0.1:8/alist/ali_open"
        );
        assert_eq!(
            QrFlow::service_base("http://127.0.0.1:8"),
            "http://127.0.0.1:8"
        );
    }
}
