//! The OSS-like data host: signed download URLs (`GET /data/<file_id>/<sha1>`) with Range,
//! expiry and a per-user concurrency cap, and signed part uploads (`PUT /upload/<file_id>/<upload_id>`)
//! that are strictly sequential and streamed to disk while hashing. Bodies never sit in memory whole.
//! The part uploads are in `put`.

mod put;
pub use put::put;

use super::errors::{self, oss_error, oss_expired, oss_signature, Resp};
use super::limits::Fault;
use super::mapped;
use super::state::Shared;
use super::util::{self, hmac_sha1, parse_query};

/// The call-count key of downloads refused for exceeding the per-user connection cap.
pub const DENIED_CONCURRENCY: &str = "data/get denied: ExceedMaxConcurrency";
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Response};
use bytes::Bytes;
use sha1::Digest;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Download bodies go out in mapped chunks of this size (the first one smaller).
const CHUNK: usize = 4 << 20;
const FIRST_CHUNK: usize = 256 << 10;

impl Shared {
    fn sign(&self, input: &str) -> String {
        hex::encode(hmac_sha1(&self.url_key, input.as_bytes()))
    }

    /// Reserves `bytes` of the emulated link (`rate` bytes/s, shared by every download, first
    /// come first served) and returns once they have crossed it.
    async fn cross_link(&self, rate: u64, bytes: u64) {
        // Link time left idle within the last LINK_BUFFER is still usable, as a real line's
        // buffers let one connection keep it busy across the gaps between its chunks.
        const LINK_BUFFER: Duration = Duration::from_millis(20);
        let due = {
            let mut free = self.link_free_at.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*free).max(now.checked_sub(LINK_BUFFER).unwrap_or(now));
            *free = start + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
            *free
        };
        tokio::time::sleep_until(due.into()).await;
    }

    pub fn download_url(&self, sha1: &str, file_id: &str, expires: u64) -> String {
        self.signed_get_url(&format!("/data/{file_id}/{sha1}"), expires)
    }

    /// Any object of the data host (`/data/...`): file bodies, livp streams, transcodes.
    pub fn signed_get_url(&self, path: &str, expires: u64) -> String {
        let sig = self.sign(&format!("GET\n{path}\n{expires}"));
        format!(
            "{}{path}?x-oss-access-key-id=LTAI5tEmulatorKey&x-oss-expires={expires}&x-oss-signature={sig}&x-oss-signature-version=OSS2",
            self.base_url
        )
    }

    pub fn upload_url(&self, file_id: &str, upload_id: &str, part: u32, expires: u64) -> String {
        let path = format!("/upload/{file_id}/{upload_id}");
        let sig = self.sign(&format!("PUT\n{path}\n{part}\n{upload_id}\n{expires}"));
        format!(
            "{}{path}?partNumber={part}&uploadId={upload_id}&x-oss-access-key-id=LTAI5tEmulatorKey&x-oss-expires={expires}&x-oss-signature={sig}&x-oss-signature-version=OSS2",
            self.base_url
        )
    }
}

fn expires_of(q: &HashMap<String, String>) -> Option<u64> {
    q.get("x-oss-expires")?.parse().ok()
}

/// Signature first (a tampered expiry is a bad signature), then the expiry itself.
#[allow(clippy::result_large_err)]
fn check_signed(
    sh: &Shared,
    q: &HashMap<String, String>,
    input: impl FnOnce(u64) -> String,
) -> Result<(), Resp> {
    let exp = expires_of(q).ok_or_else(oss_signature)?;
    let given = q.get("x-oss-signature").map(String::as_str).unwrap_or("");
    if given != sh.sign(&input(exp)) {
        return Err(oss_signature());
    }
    if util::now_secs() > exp {
        return Err(oss_expired(exp));
    }
    Ok(())
}

/// Decrements the user's streaming-download count when the body ends or is dropped.
struct StreamGuard(Arc<Shared>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_downloads.fetch_sub(1, Ordering::SeqCst);
    }
}

enum RangeOutcome {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// OSS semantics: without `x-oss-range-behavior: standard` an invalid range yields the whole
/// object (200); with it, an end past the object is clamped and a start past it is 416.
fn range_of(headers: &HeaderMap, size: u64) -> RangeOutcome {
    let Some(raw) = headers.get("range").and_then(|h| h.to_str().ok()) else {
        return RangeOutcome::Full;
    };
    let standard = headers
        .get("x-oss-range-behavior")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("standard"));
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full; // multi-range is not supported: whole object
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeOutcome::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // Suffix range: the last n bytes.
        match b.parse::<u64>() {
            Ok(0) | Err(_) => return RangeOutcome::Full,
            Ok(n) if n > size && !standard => return RangeOutcome::Full,
            Ok(n) => (size.saturating_sub(n), size.saturating_sub(1)),
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeOutcome::Full;
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e,
                _ => return RangeOutcome::Full,
            }
        };
        (start, end)
    };
    if start >= size {
        return if standard {
            RangeOutcome::Unsatisfiable
        } else {
            RangeOutcome::Full
        };
    }
    if end >= size {
        return if standard {
            RangeOutcome::Partial(start, size - 1)
        } else {
            RangeOutcome::Full
        };
    }
    RangeOutcome::Partial(start, end)
}

/// OSS's 404 for an object that does not exist.
fn no_such_key() -> Resp {
    oss_error(
        404,
        "NoSuchKey",
        "The specified key does not exist.",
        "0026-00000001",
        &[],
    )
}
/// What a data-host GET serves.
pub enum Object {
    /// A stored blob (file bodies, livp streams, segments, subtitles), streamed from disk.
    Blob {
        sha1: String,
        content_type: &'static str,
    },
    /// A small body made for the request (a playlist).
    Bytes {
        bytes: Bytes,
        content_type: &'static str,
    },
}

/// The object at a signed `/data/<file_id>/...` path: `<sha1>` is a blob, anything longer one
/// of the video's transcodes (`transcode::resolve`).
fn resolve(sh: &Shared, st: &super::state::State, path: &str, expires: u64) -> Option<Object> {
    let segs: Vec<&str> = path.trim_start_matches("/data/").split('/').collect();
    match segs.as_slice() {
        [_file_id, sha] => Some(Object::Blob {
            sha1: sha.to_string(),
            content_type: "application/octet-stream",
        }),
        [file_id, rest @ ..] if !rest.is_empty() => {
            super::transcode::resolve(sh, st, file_id, rest, expires)
        }
        _ => None,
    }
}

pub async fn get(
    sh: Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    fault: Fault,
) -> Resp {
    let q = parse_query(query);
    let p = path.to_string();
    if let Err(r) = check_signed(&sh, &q, |exp| format!("GET\n{p}\n{exp}")) {
        return r;
    }
    let expires = expires_of(&q).unwrap_or(0);
    let (object, size, pacing, cap) = {
        let st = sh.lock();
        let Some(object) = resolve(&sh, &st, path, expires) else {
            return no_such_key();
        };
        let size = match &object {
            Object::Blob { sha1, .. } => match st.blobs.get(sha1) {
                Some(b) => b.size,
                None => return no_such_key(),
            },
            Object::Bytes { bytes, .. } => bytes.len() as u64,
        };
        let f = &st.knobs.faults;
        let pacing = Pacing {
            per_conn: f.bandwidth_per_conn.filter(|b| *b > 0),
            link: f.link_bandwidth.filter(|b| *b > 0).map(|b| (sh.clone(), b)),
        };
        (object, size, pacing, st.knobs.max_concurrent_downloads)
    };
    if let Some(failed) = injected_failure(fault) {
        return failed;
    }
    let (status, start, len) = match range_of(headers, size) {
        RangeOutcome::Full => (200u16, 0, size),
        RangeOutcome::Partial(a, b) => (206, a, b - a + 1),
        RangeOutcome::Unsatisfiable => {
            return oss_error(
                416,
                "InvalidRange",
                "The requested range cannot be satisfied.",
                "0003-00000001",
                &[],
            );
        }
    };
    let is_head = method == Method::HEAD;
    let guard = if is_head {
        None
    } else {
        let prev = sh.active_downloads.fetch_add(1, Ordering::SeqCst);
        let guard = StreamGuard(sh.clone());
        if cap > 0 && prev >= cap {
            drop(guard);
            // Counted apart, so a test can tell a client kept within the cap.
            *sh.lock()
                .calls
                .entry(DENIED_CONCURRENCY.to_string())
                .or_insert(0) += 1;
            return oss_error(
                403,
                "RequestDeniedByCallback",
                "Callback deny this request reason: ExceedMaxConcurrency",
                "0007-00000209",
                &[],
            );
        }
        Some(guard)
    };
    let body = if is_head || len == 0 {
        Body::empty()
    } else {
        // A dropped connection mid-body: serve half, then fail the stream.
        let cut = if fault == Fault::Drop {
            Some(len / 2)
        } else {
            None
        };
        match &object {
            Object::Blob { sha1, .. } => {
                stream_file(sh.blob_path(sha1), start, len, pacing, cut, guard)
            }
            Object::Bytes { bytes, .. } => {
                let part = bytes.slice(start as usize..(start + len) as usize);
                memory_body(part, cut, guard)
            }
        }
    };
    let (etag, content_type) = match &object {
        Object::Blob { sha1, content_type } => (sha1.clone(), *content_type),
        Object::Bytes {
            bytes,
            content_type,
        } => (hex::encode_upper(sha1::Sha1::digest(bytes)), *content_type),
    };
    let mut r = Response::new(body);
    *r.status_mut() = errors::status(status);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        h.insert("content-length", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert("etag", v);
    }
    if let Ok(v) = HeaderValue::from_str(&util::rand_hex(24, true)) {
        h.insert("x-oss-request-id", v);
    }
    if status == 206 {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1)) {
            h.insert("content-range", v);
        }
    }
    r
}

/// A body made in memory; the download slot (`guard`) is held until it has been sent, and an
/// injected dropped connection (`cut`) sends half of it, then fails.
fn memory_body(bytes: Bytes, cut: Option<u64>, guard: Option<StreamGuard>) -> Body {
    let (head, fail) = match cut {
        Some(c) => (bytes.slice(..c as usize), true),
        None => (bytes, false),
    };
    let stream = futures_util::stream::unfold(
        (Some(head), fail, guard),
        |(next, fail, guard)| async move {
            match next {
                Some(b) => Some((Ok(b), (None, fail, guard))),
                None if fail => {
                    let e =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected fault");
                    Some((Err(e), (None, false, guard)))
                }
                None => None,
            }
        },
    );
    Body::from_stream(stream)
}

/// Bandwidth caps on one download body.
struct Pacing {
    /// Bytes/s of this body alone.
    per_conn: Option<u64>,
    /// Bytes/s of the link it shares with every other body.
    link: Option<(Arc<Shared>, u64)>,
}

fn stream_file(
    path: std::path::PathBuf,
    start: u64,
    len: u64,
    pacing: Pacing,
    cut: Option<u64>,
    guard: Option<StreamGuard>,
) -> Body {
    struct S {
        file: Option<Arc<std::fs::File>>,
        path: std::path::PathBuf,
        pos: u64,
        sent: u64,
        len: u64,
        pacing: Pacing,
        cut: Option<u64>,
        began: Instant,
        _guard: Option<StreamGuard>,
    }
    let st = S {
        file: None,
        path,
        pos: start,
        sent: 0,
        len,
        pacing,
        cut,
        began: Instant::now(),
        _guard: guard,
    };
    let stream = futures_util::stream::unfold(st, |mut s| async move {
        if s.sent >= s.len {
            return None;
        }
        if s.cut.is_some_and(|c| s.sent >= c) {
            let e = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected fault");
            s.len = 0;
            return Some((Err(e), s));
        }
        // A small first chunk so the first byte leaves quickly, then large ones.
        let chunk = if s.sent == 0 { FIRST_CHUNK } else { CHUNK };
        let mut want = (s.len - s.sent).min(chunk as u64) as usize;
        // Small chunks under a bandwidth cap so pacing stays smooth: 100 ms of a connection's
        // cap, 10 ms of the link's (so that bodies sharing it take turns often).
        if let Some(bw) = s.pacing.per_conn {
            want = want.min((bw / 10).max(1) as usize);
        }
        if let Some((_, link)) = &s.pacing.link {
            want = want.min((link / 100).max(1) as usize);
        }
        if let Some(c) = s.cut {
            want = want.min((c - s.sent).max(1) as usize);
        }
        let (file, pos) = (s.file.clone(), s.pos);
        let path = s.path.clone();
        // Opening and pre-faulting may touch the disk: off the runtime's workers.
        let mapped = tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => f,
                None => Arc::new(std::fs::File::open(&path)?),
            };
            let bytes = mapped::map_region(&file, pos, want)?;
            Ok::<_, std::io::Error>((file, bytes))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match mapped {
            Ok((file, bytes)) => {
                s.file = Some(file);
                s.sent += want as u64;
                s.pos += want as u64;
                if let Some((sh, link)) = &s.pacing.link {
                    sh.cross_link(*link, want as u64).await;
                }
                if let Some(bw) = s.pacing.per_conn {
                    let due = s.began + Duration::from_secs_f64(s.sent as f64 / bw as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                Some((Ok(bytes), s))
            }
            Err(e) => {
                s.len = 0;
                Some((Err(e), s))
            }
        }
    });
    Body::from_stream(stream)
}
/// A response whose body fails at once: hyper drops the connection.
pub fn drop_response(e: std::io::Error) -> Resp {
    let stream = futures_util::stream::once(async move { Err::<Bytes, _>(e) });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-length", HeaderValue::from_static("1024"));
    r
}

/// The answer of an injected server-side failure on the data host (a dropped connection is
/// handled while streaming instead).
fn injected_failure(fault: Fault) -> Option<Resp> {
    match fault {
        Fault::Json500 => Some(oss_error(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
            "0001-00000001",
            &[],
        )),
        Fault::Html500 => Some(errors::gateway(500, false)),
        Fault::Gateway { xml } => Some(errors::gateway(502, xml)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(range: &str, standard: bool, size: u64) -> String {
        let mut h = HeaderMap::new();
        h.insert("range", HeaderValue::from_str(range).unwrap());
        if standard {
            h.insert("x-oss-range-behavior", HeaderValue::from_static("standard"));
        }
        match range_of(&h, size) {
            RangeOutcome::Full => "full".into(),
            RangeOutcome::Partial(a, b) => format!("{a}-{b}"),
            RangeOutcome::Unsatisfiable => "416".into(),
        }
    }

    #[test]
    fn oss_range_rules() {
        assert_eq!(outcome("bytes=0-0", false, 10), "0-0");
        assert_eq!(outcome("bytes=3-", false, 10), "3-9");
        assert_eq!(outcome("bytes=-3", false, 10), "7-9");
        assert_eq!(outcome("bytes=-30", false, 10), "full");
        assert_eq!(outcome("bytes=-30", true, 10), "0-9");
        assert_eq!(outcome("bytes=5-20", false, 10), "full");
        assert_eq!(outcome("bytes=5-20", true, 10), "5-9");
        assert_eq!(outcome("bytes=10-", true, 10), "416");
        assert_eq!(outcome("bytes=10-", false, 10), "full");
        assert_eq!(outcome("bytes=0-0", true, 0), "416");
        assert_eq!(outcome("bytes=x-1", true, 10), "full");
        assert_eq!(outcome("bytes=-0", true, 10), "full");
    }
}
