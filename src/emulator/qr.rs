//! QR sign-in, both flows `alipanfs login` uses:
//! - the Open API's own: `POST /oauth/authorize/qrcode` (app credentials) → `{qrCodeUrl, sid}`,
//!   then `GET /oauth/qrcode/{sid}/status` → `{status, authCode}`, then `/oauth/access_token`
//!   with `grant_type: authorization_code`;
//! - the online token service's (alist): `POST /alist/ali_open/qr` (`{}`: the service holds the
//!   app) → `{qrCodeUrl, sid}`, the same status URL on the API host, then
//!   `POST /alist/ali_open/code` `{code, grant_type: "authorization_code"}` → token JSON.
//!
//! Statuses are the documented `WaitLogin`, `ScanSuccess`, `LoginSuccess` (with `authCode`) and
//! `QRCodeExpired`. A refusal in the app has no documented status: the emulator answers
//! `LoginFailed`, and the client treats any status it does not know as the end of the sign-in.
//! Nobody scans in a test, so `/__emulator/qr` plays the phone: `{"action": "scan" | "confirm" |
//! "deny" | "expire", "sid": optional (default: the newest code)}`.

use super::auth::oauth_err;
use super::errors::{json_response, Resp};
use super::state::State;
use super::util::{self, s};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// How long a QR code can be scanned (the real service shows about three minutes).
const QR_TTL: Duration = Duration::from_secs(180);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QrSession {
    pub status: String,
    /// The authorization code, once confirmed.
    pub code: Option<String>,
    pub expires: SystemTime,
    /// Creation order (the admin's "newest").
    pub seq: u64,
}

impl State {
    /// `/oauth/authorize/qrcode` (`helper = false`, credentials checked) and
    /// `/alist/ali_open/qr` (`helper = true`).
    pub fn qr_create(&mut self, v: &Value, helper: bool, base_url: &str) -> Resp {
        if !helper {
            let cid = s(v, "client_id").unwrap_or("");
            if cid.is_empty() || cid != self.knobs.client_id {
                return oauth_err(400, "InvalidClientId", "invalid client_id");
            }
            if s(v, "client_secret").unwrap_or("") != self.knobs.client_secret {
                return oauth_err(400, "InvalidClientSecret", "invalid client_secret");
            }
        }
        let now = SystemTime::now();
        self.tokens.qr.retain(|_, q| q.expires + QR_TTL > now);
        let sid = util::rand_hex(32, false);
        let seq = self.tokens.qr.values().map(|q| q.seq).max().unwrap_or(0) + 1;
        self.tokens.qr.insert(
            sid.clone(),
            QrSession {
                status: "WaitLogin".into(),
                code: None,
                expires: now + QR_TTL,
                seq,
            },
        );
        let url = format!("{base_url}/o/oauth/authorize?sid={sid}");
        json_response(200, &json!({"qrCodeUrl": url, "sid": sid}))
    }

    /// `GET /oauth/qrcode/{sid}/status`.
    pub fn qr_status(&mut self, sid: &str) -> Resp {
        let now = SystemTime::now();
        let Some(q) = self.tokens.qr.get(sid) else {
            return json_response(200, &json!({"status": "QRCodeExpired"}));
        };
        if q.expires <= now && q.status != "LoginSuccess" {
            return json_response(200, &json!({"status": "QRCodeExpired"}));
        }
        match &q.code {
            Some(code) => json_response(200, &json!({"status": q.status, "authCode": code})),
            None => json_response(200, &json!({"status": q.status})),
        }
    }

    /// `/__emulator/qr`: what the phone would do.
    pub fn qr_admin(&mut self, v: &Value) -> Resp {
        let sid = match s(v, "sid") {
            Some(sid) => sid.to_string(),
            None => match self.tokens.qr.iter().max_by_key(|(_, q)| q.seq) {
                Some((sid, _)) => sid.clone(),
                None => return oauth_err(404, "NotFound", "no QR code was created"),
            },
        };
        let code = match s(v, "action") {
            Some("confirm") => Some(self.issue_code()),
            _ => None,
        };
        let Some(q) = self.tokens.qr.get_mut(&sid) else {
            return oauth_err(404, "NotFound", "no such QR code");
        };
        match s(v, "action").unwrap_or("") {
            "scan" => q.status = "ScanSuccess".into(),
            "confirm" => {
                q.status = "LoginSuccess".into();
                q.code = code;
            }
            "deny" => q.status = "LoginFailed".into(),
            "expire" => q.expires = SystemTime::now(),
            other => {
                return oauth_err(
                    400,
                    "InvalidParameter",
                    &format!("action {other:?}: use scan, confirm, deny or expire"),
                )
            }
        }
        json_response(200, &json!({"sid": sid, "status": q.status}))
    }
}
