//! Introspection and control over HTTP for scripts: `/__emulator/{calls,tree,reset_calls,faults,
//! quota,force_429,seed,rate_limits,delta_feed,qr}` (`qr`: see `qr`), and `device/OP` for changes made
//! as another device (`device.rs`). Exempt from faults, counting and auth. Quota and seeds are
//! drive state: saved at once when the emulator persists.

use super::errors::{json_response, Resp};
use super::state::Shared;
use super::util::{int, s};
use super::Faults;
use axum::body::Body;
use axum::http::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn bad(msg: &str) -> Resp {
    json_response(400, &json!({"code": "InvalidParameter", "message": msg}))
}

fn ok() -> Resp {
    json_response(200, &json!({"ok": true}))
}

fn float(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

pub async fn handle(sh: Arc<Shared>, method: &Method, rest: &str, body: Body) -> Resp {
    let v: Value = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => json!({}),
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(v) => v,
            Err(e) => return bad(&format!("body is not JSON: {e}")),
        },
        Err(_) => return bad("unreadable body"),
    };
    match (method.as_str(), rest) {
        ("GET", "calls") => json_response(200, &json!(sh.lock().calls)),
        ("GET", "tree") => {
            let tree: Vec<Value> = sh
                .lock()
                .tree()
                .into_iter()
                .map(|e| {
                    json!({"path": e.path, "file_id": e.file_id, "parent_file_id": e.parent_file_id,
                           "name": e.name, "is_dir": e.is_dir, "size": e.size, "sha1": e.sha1,
                           "trashed": e.trashed, "drive_id": e.drive_id})
                })
                .collect();
            json_response(200, &json!(tree))
        }
        ("POST", "qr") => sh.lock().qr_admin(&v),
        ("POST", "reset_calls") => {
            sh.lock().calls.clear();
            ok()
        }
        ("POST", "faults") => {
            let f = Faults {
                failure_rate: float(&v, "failure_rate").unwrap_or(0.0),
                latency: Duration::from_millis(
                    int(&v, "latency_ms")
                        .or_else(|| int(&v, "latency"))
                        .unwrap_or(0)
                        .max(0) as u64,
                ),
                bandwidth_per_conn: int(&v, "bandwidth_per_conn")
                    .filter(|b| *b > 0)
                    .map(|b| b as u64),
                link_bandwidth: int(&v, "link_bandwidth")
                    .filter(|b| *b > 0)
                    .map(|b| b as u64),
                xml_error_rate: float(&v, "xml_error_rate").unwrap_or(0.0),
                upload_bandwidth: int(&v, "upload_bandwidth")
                    .filter(|b| *b > 0)
                    .map(|b| b as u64),
                put_failure_rate: float(&v, "put_failure_rate").unwrap_or(0.0),
            };
            sh.lock().knobs.faults = f;
            ok()
        }
        ("POST", "quota") => match int(&v, "total_bytes") {
            Some(q) if q >= 0 => {
                sh.lock().knobs.quota_bytes = q as u64;
                match sh.commit().await {
                    Ok(()) => ok(),
                    Err(msg) => {
                        json_response(500, &json!({"code": "InternalError", "message": msg}))
                    }
                }
            }
            _ => bad("total_bytes is required"),
        },
        ("POST", "force_429") => {
            sh.lock().force_429 = int(&v, "n").unwrap_or(1).max(0) as u32;
            ok()
        }
        ("POST", "rate_limits") => {
            let mut st = sh.lock();
            st.knobs.rate_list = float(&v, "list").unwrap_or(st.knobs.rate_list);
            st.knobs.rate_download_url =
                float(&v, "download_url").unwrap_or(st.knobs.rate_download_url);
            st.knobs.rate_other = float(&v, "other").unwrap_or(st.knobs.rate_other);
            st.buckets.clear();
            ok()
        }
        ("POST", "delta_feed") => {
            sh.lock().knobs.delta_feed = super::util::boolean(&v, "on").unwrap_or(true);
            ok()
        }
        ("POST", op) if op.starts_with("device/") => {
            let (sh2, op) = (sh.clone(), op["device/".len()..].to_string());
            match tokio::task::spawn_blocking(move || super::device::apply(&sh2, &op, &v)).await {
                Ok(Ok(out)) => json_response(200, &out),
                Ok(Err(msg)) => bad(&msg),
                Err(e) => json_response(
                    500,
                    &json!({"code": "InternalError", "message": e.to_string()}),
                ),
            }
        }
        ("POST", "seed") => {
            let (Some(parent), Some(name)) = (s(&v, "parent_file_id"), s(&v, "name")) else {
                return bad("parent_file_id and name are required");
            };
            let (parent, name) = (parent.to_string(), name.to_string());
            let size = int(&v, "size").unwrap_or(0).max(0) as u64;
            let seed = int(&v, "seed").unwrap_or(0) as u64;
            let sh2 = sh.clone();
            match tokio::task::spawn_blocking(move || sh2.seed_pattern(&parent, &name, size, seed))
                .await
            {
                Ok(id) => json_response(200, &json!({"file_id": id})),
                Err(e) => json_response(
                    500,
                    &json!({"code": "InternalError", "message": e.to_string()}),
                ),
            }
        }
        _ => json_response(
            404,
            &json!({"code": "NotFound", "message": "unknown emulator control endpoint"}),
        ),
    }
}
