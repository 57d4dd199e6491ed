//! Shared helpers for the emulator tests (included with `#[path]`; its own target has no tests).
#![allow(dead_code)]

use alipanfs::emulator::{Emulator, EmulatorConfig};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct H {
    pub emu: Emulator,
    pub c: reqwest::Client,
    pub token: String,
    pub refresh: String,
    pub drive: String,
    pub dir: tempfile::TempDir,
}

pub const APP: &str = "alipanfs-emulator-app";
pub const SECRET: &str = "alipanfs-emulator-secret";

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

/// An emulator without rate limits (tests that need them turn them on), and a fresh token.
pub async fn start(tweak: impl FnOnce(&mut EmulatorConfig)) -> H {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmulatorConfig {
        data_dir: dir.path().to_path_buf(),
        rate_list_per_sec: 0.0,
        rate_download_url_per_sec: 0.0,
        rate_other_per_sec: 0.0,
        ..Default::default()
    };
    tweak(&mut cfg);
    let emu = Emulator::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap();
    let c = reqwest::Client::builder()
        .user_agent("alipanfs-tests")
        .build()
        .unwrap();
    let drive = emu.drive_id("default").unwrap();
    let mut h = H {
        emu,
        c,
        token: String::new(),
        refresh: String::new(),
        drive,
        dir,
    };
    let r = h.refresh_with(&h.emu.refresh_token()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.token = r.body["access_token"].as_str().unwrap().to_string();
    h.refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    h
}

impl H {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.api_url())
    }

    pub async fn refresh_with(&self, rt: &str) -> Reply {
        let body = json!({"client_id": APP, "client_secret": SECRET, "grant_type": "refresh_token", "refresh_token": rt});
        let r = self
            .c
            .post(self.url("/oauth/access_token"))
            .json(&body)
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    pub async fn call_tok(&self, ep: &str, tok: &str, body: Value) -> Reply {
        let r = self
            .c
            .post(self.url(&format!("/adrive/v1.0/{ep}")))
            .bearer_auth(tok)
            .json(&body)
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    pub async fn call(&self, ep: &str, body: Value) -> Reply {
        self.call_tok(ep, &self.token, body).await
    }

    /// Call that must succeed; returns the body.
    pub async fn ok(&self, ep: &str, body: Value) -> Value {
        let r = self.call(ep, body).await;
        assert_eq!(r.status, 200, "{ep}: {}", r.body);
        r.body
    }

    pub async fn mkdir(&self, parent: &str, name: &str) -> String {
        let b = self
            .ok("openFile/create", json!({"drive_id": self.drive, "parent_file_id": parent, "name": name, "type": "folder", "check_name_mode": "refuse"}))
            .await;
        b["file_id"].as_str().unwrap().to_string()
    }

    /// All names of a folder, through every page.
    pub async fn list_all(&self, parent: &str, extra: Value) -> Vec<Value> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let mut body = json!({"drive_id": self.drive, "parent_file_id": parent, "limit": 100, "marker": marker});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            let r = self.ok("openFile/list", body).await;
            out.extend(r["items"].as_array().unwrap().iter().cloned());
            marker = r["next_marker"].as_str().unwrap().to_string();
            if marker.is_empty() {
                return out;
            }
        }
    }

    /// Uploads `content` through a normal session with parts of `part` bytes; returns the file object.
    pub async fn upload(&self, parent: &str, name: &str, content: &[u8], part: usize) -> Value {
        let n = content.len().div_ceil(part).max(1);
        let parts: Vec<Value> = (1..=n).map(|i| json!({"part_number": i})).collect();
        let b = self
            .ok("openFile/create", json!({"drive_id": self.drive, "parent_file_id": parent, "name": name, "type": "file",
                "check_name_mode": "ignore", "size": content.len(), "part_info_list": parts}))
            .await;
        let fid = b["file_id"].as_str().unwrap().to_string();
        let uid = b["upload_id"].as_str().unwrap().to_string();
        for (i, p) in b["part_info_list"].as_array().unwrap().iter().enumerate() {
            let chunk = content.chunks(part).nth(i).unwrap_or(&[]).to_vec();
            let r = self
                .c
                .put(p["upload_url"].as_str().unwrap())
                .body(chunk)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        self.ok(
            "openFile/complete",
            json!({"drive_id": self.drive, "file_id": fid, "upload_id": uid}),
        )
        .await
    }
}

pub async fn reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        body,
        headers,
    }
}

/// Asserts the API error envelope.
pub fn assert_err(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["code"], code, "{}", r.body);
    assert!(r.body["message"].is_string(), "{}", r.body);
}

pub fn assert_envelope(r: &Reply, status: u16, code: &str) {
    assert_err(r, status, code);
    assert_eq!(
        r.body["requestId"].as_str().map(str::len),
        Some(36),
        "{}",
        r.body
    );
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn wait_until<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
