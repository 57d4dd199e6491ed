//! One axum fallback handler that routes every request itself, so that counting, faults,
//! latency, auth and rate limits apply uniformly and unknown paths get the Spring-style 404.

use super::errors::{self, json_response, spring, ApiErr, Resp};
use super::files;
use super::limits::{roll, Fault};
use super::state::Shared;
use super::util::{self, parse_query};
use super::{admin, changes, data, listing, search, transcode, upload};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::Extension;
use axum::Router;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// API bodies are small JSON documents.
const MAX_API_BODY: usize = 8 << 20;
/// How often API calls look for expired upload sessions.
const UPLOAD_SWEEP_MS: i64 = 1000;

pub fn router(sh: Arc<Shared>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(Extension(Listener::Public))
        .with_state(sh)
}

/// The same service on the second listener of `EmulatorConfig::internal_endpoint` (alist's
/// internal upload host): requests arriving there are counted as `internal/<endpoint>`.
pub fn internal_router(sh: Arc<Shared>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(Extension(Listener::Internal))
        .with_state(sh)
}

/// Which listener a request arrived on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    Public,
    Internal,
}

/// The call-count key of a request (`openFile/list`, `oauth/access_token`, `data/get`, ...).
fn endpoint_key(method: &Method, path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/adrive/v1.0/") {
        return rest.trim_end_matches('/').to_string();
    }
    if path.starts_with("/data/") {
        return "data/get".into();
    }
    if path.starts_with("/upload/") && method == Method::PUT {
        return "data/put".into();
    }
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

async fn dispatch(
    State(sh): State<Arc<Shared>>,
    Extension(listener): Extension<Listener>,
    req: Request,
) -> Resp {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    if let Some(rest) = path.strip_prefix("/__emulator/") {
        return admin::handle(sh, &method, rest, body).await;
    }
    let key = endpoint_key(&method, &path);
    let (latency, fault) = {
        let mut st = sh.lock();
        let counted = match listener {
            Listener::Public => key.clone(),
            Listener::Internal => format!("internal/{key}"),
        };
        *st.calls.entry(counted).or_insert(0) += 1;
        let f = &st.knobs.faults;
        (f.latency, roll(f.failure_rate, f.xml_error_rate))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let headers = parts.headers;
    let is_get = method == Method::GET || method == Method::HEAD;
    if path.starts_with("/data/") {
        if !is_get {
            return errors::oss_error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                "0003-00000002",
                &[],
            );
        }
        return data::get(sh, &method, &path, &query, &headers, fault).await;
    }
    if path.starts_with("/upload/") {
        if method != Method::PUT {
            return errors::oss_error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                "0003-00000002",
                &[],
            );
        }
        return data::put(sh, &path, &query, &headers, body, fault).await;
    }
    // API faults happen before the request is looked at, as a gateway's would.
    match fault {
        Fault::None => {}
        Fault::Json500 => {
            return ApiErr::new(
                500,
                "InternalError",
                "Internal server error, please try again later.",
            )
            .into_response()
        }
        Fault::Html500 => return errors::gateway(500, false),
        Fault::Gateway { xml } => return errors::gateway(502, xml),
        Fault::Drop => {
            return data::drop_response(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected fault",
            ))
        }
    }
    match (method.clone(), path.as_str()) {
        (Method::POST, "/oauth/access_token") | (Method::POST, "/alist/ali_open/token") => {
            let ctype = headers
                .get("content-type")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            let v = match read_body(body, &ctype, true).await {
                Ok(v) => v,
                Err(e) => return e.into_response(),
            };
            let helper = path.starts_with("/alist/");
            let r = sh.lock().token_endpoint(&v, helper);
            // A rotated refresh token must be on disk before the client holds it.
            committed(&sh, r).await
        }
        (Method::POST, "/oauth/authorize/qrcode")
        | (Method::POST, "/alist/ali_open/qr")
        | (Method::POST, "/alist/ali_open/code") => {
            let ctype = headers
                .get("content-type")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            let v = match read_body(body, &ctype, true).await {
                Ok(v) => v,
                Err(e) => return e.into_response(),
            };
            let r = match path.as_str() {
                "/alist/ali_open/code" => sh.lock().token_endpoint(&v, true),
                p => sh
                    .lock()
                    .qr_create(&v, p.starts_with("/alist/"), &sh.base_url),
            };
            committed(&sh, r).await
        }
        (Method::GET, p) if p.starts_with("/oauth/qrcode/") && p.ends_with("/status") => {
            let sid = &p["/oauth/qrcode/".len()..p.len() - "/status".len()];
            sh.lock().qr_status(sid)
        }
        (Method::GET, "/oauth/authorize") => {
            let r = sh.lock().authorize(&parse_query(&query));
            committed(&sh, r).await
        }
        (Method::GET, "/oauth/users/info") | (Method::GET, "/oauth/users/scopes") => {
            let st = sh.lock();
            match st.check_access(&headers) {
                Ok(_) if path.ends_with("info") => json_response(200, &st.users_info()),
                Ok(_) => json_response(200, &st.users_scopes()),
                Err(e) => e.into_response(),
            }
        }
        (m, p) if p.starts_with("/adrive/v1.0/") && is_api_endpoint(&key) => {
            if m != Method::POST {
                return spring(405, &path);
            }
            let v = match read_body(body, "", false).await {
                Ok(v) => v,
                Err(e) => return e.into_response(),
            };
            match api(&sh, &key, &headers, &v) {
                Ok(v) if changes_state(&key) => committed(&sh, json_response(200, &v)).await,
                Ok(v) => json_response(200, &v),
                Err(e) => e.into_response(),
            }
        }
        (_, "/oauth/access_token") | (_, "/alist/ali_open/token") => spring(405, &path),
        _ => spring(404, &path),
    }
}

/// Every Open API endpoint the emulator serves, and whether its success changes the drive (the
/// others only read it; a change is saved before it is answered, see `committed`).
const ENDPOINTS: &[(&str, bool)] = &[
    ("user/getDriveInfo", false),
    ("user/getSpaceInfo", false),
    ("user/getVipInfo", false),
    ("openFile/list", false),
    ("openFile/get", false),
    ("openFile/get_by_path", false),
    ("openFile/batch/get", false),
    ("openFile/getDownloadUrl", false),
    ("openFile/create", true),
    ("openFile/getUploadUrl", false),
    ("openFile/listUploadedParts", false),
    ("openFile/complete", true),
    ("openFile/update", true),
    ("openFile/move", true),
    ("openFile/copy", true),
    ("openFile/recyclebin/trash", true),
    ("openFile/delete", true),
    ("openFile/async_task/get", false),
    ("openFile/search", false),
    ("openFile/list_delta", false),
    ("openFile/get_last_cursor", false),
    // The first call for a video starts its full transcode (kept with the drive).
    ("openFile/getVideoPreviewPlayInfo", true),
];

fn endpoint(key: &str) -> Option<bool> {
    ENDPOINTS
        .iter()
        .find(|(name, _)| *name == key)
        .map(|&(_, changes)| changes)
}

fn is_api_endpoint(key: &str) -> bool {
    endpoint(key).is_some()
}

fn changes_state(key: &str) -> bool {
    endpoint(key) == Some(true)
}

/// `r` once the change it reports is saved (with persistence), else a 500: a client must never
/// see a success that a restart would undo.
async fn committed(sh: &Arc<Shared>, r: Resp) -> Resp {
    if !r.status().is_success() && !r.status().is_redirection() {
        return r;
    }
    match sh.commit().await {
        Ok(()) => r,
        Err(msg) => ApiErr::new(500, "InternalError", msg).into_response(),
    }
}

/// Lenient body reading: empty body is `{}`, `null` is `{}`, unknown fields are ignored.
/// Token endpoints also take form bodies.
async fn read_body(body: Body, ctype: &str, allow_form: bool) -> Result<Value, ApiErr> {
    let bytes = axum::body::to_bytes(body, MAX_API_BODY)
        .await
        .map_err(|_| {
            ApiErr::new(
                400,
                "InvalidParameter",
                "The request body could not be read.",
            )
        })?;
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    if allow_form && (ctype.contains("x-www-form-urlencoded") || !trimmed.starts_with('{')) {
        let m: Map<String, Value> = parse_query(trimmed)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return Ok(Value::Object(m));
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Null) => Ok(Value::Object(Map::new())),
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiErr::new(
            400,
            "InvalidParameter",
            "The request body is not a valid JSON object.",
        )),
    }
}

fn api(sh: &Shared, key: &str, headers: &HeaderMap, v: &Value) -> Result<Value, ApiErr> {
    let mut guard = sh.lock();
    let st = &mut *guard;
    let ctx = st.check_access(headers)?;
    st.take_token(&ctx.user_id, &ctx.client_id, key)?;
    if util::now_ms().saturating_sub(st.last_sweep_ms) >= UPLOAD_SWEEP_MS {
        upload::expire(sh, st);
    }
    match key {
        "user/getDriveInfo" => Ok(files::drive_info(st)),
        "user/getSpaceInfo" => Ok(files::space_info(st)),
        "user/getVipInfo" => Ok(json!({"identity": "member", "level": "", "expire": null})),
        "openFile/list" => listing::list(sh, st, v),
        "openFile/get" => files::get(sh, st, v),
        "openFile/get_by_path" => files::get_by_path(sh, st, v),
        "openFile/batch/get" => files::batch_get(sh, st, v),
        "openFile/getDownloadUrl" => files::download_url(sh, st, v),
        "openFile/create" => upload::create(sh, st, &ctx, v),
        "openFile/getUploadUrl" => upload::get_upload_url(sh, st, v),
        "openFile/listUploadedParts" => upload::list_uploaded_parts(st, v),
        "openFile/complete" => upload::complete(sh, st, v),
        "openFile/update" => files::update(sh, st, v),
        "openFile/move" => files::move_file(st, v),
        "openFile/copy" => files::copy(st, v),
        "openFile/recyclebin/trash" => files::trash(st, v),
        "openFile/delete" => files::delete(sh, st, v),
        "openFile/async_task/get" => files::async_task(st, v),
        "openFile/search" => search::search(sh, st, v),
        "openFile/list_delta" => changes::list_delta(sh, st, v),
        "openFile/get_last_cursor" => changes::last_cursor(st, v),
        "openFile/getVideoPreviewPlayInfo" => transcode::play_info(sh, st, v),
        _ => Err(ApiErr::new(404, "NotFound", "Unknown endpoint.")),
    }
}
