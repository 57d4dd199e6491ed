//! `PUT /upload/<file_id>/<upload_id>`: signed part uploads, strictly sequential, streamed to
//! disk while hashing. Separate from the download side of the data host (`data`), with which
//! it shares only the URL signature check and the injected failures.

use super::{check_signed, drop_response, injected_failure};
use crate::emulator::errors::{oss_error, oss_signature, Resp};
use crate::emulator::limits::Fault;
use crate::emulator::state::Shared;
use crate::emulator::util::{self, parse_query};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response};
use futures_util::StreamExt;
use md5::Md5;
use sha1::Digest;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// OSS's 404 for a multipart upload that does not exist (or was completed or aborted).
fn no_such_upload() -> Resp {
    oss_error(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        "0042-00000002",
        &[],
    )
}
/// Clears `in_progress` if the PUT ends without committing (error or client gone).
struct PartGuard {
    sh: Arc<Shared>,
    upload_id: String,
    offset: u64,
    armed: bool,
}

impl Drop for PartGuard {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.sh.lock();
            if let Some(u) = st.uploads.get_mut(&self.upload_id) {
                u.in_progress = None;
            }
            drop(st);
            // Discard whatever of the failed part reached the disk.
            if let Ok(f) = std::fs::OpenOptions::new()
                .write(true)
                .open(self.sh.upload_path(&self.upload_id))
            {
                let _ = f.set_len(self.offset);
            }
        }
    }
}

pub async fn put(
    sh: Arc<Shared>,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Body,
    fault: Fault,
) -> Resp {
    let q = parse_query(query);
    let mut segs = path.trim_start_matches("/upload/").split('/');
    let (Some(_file_id), Some(upload_id), None) = (segs.next(), segs.next(), segs.next()) else {
        return no_such_upload();
    };
    let part: u32 = match q.get("partNumber").and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => return oss_signature(),
    };
    let p = path.to_string();
    let qid = q.get("uploadId").cloned().unwrap_or_default();
    if let Err(r) = check_signed(&sh, &q, |exp| format!("PUT\n{p}\n{part}\n{qid}\n{exp}")) {
        return r;
    }
    if qid != upload_id {
        return oss_signature();
    }
    let fault = {
        let mut st = sh.lock();
        *st.part_puts
            .entry((upload_id.to_string(), part))
            .or_insert(0) += 1;
        match (fault, st.knobs.faults.put_failure_rate) {
            (Fault::None, r) if r > 0.0 => crate::emulator::limits::roll(r, 0.0),
            (f, _) => f,
        }
    };
    let (strict, rate) = {
        let st = sh.lock();
        (
            st.knobs.strict_content_type,
            st.knobs.faults.upload_bandwidth,
        )
    };
    let has_ctype = headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if strict && has_ctype {
        return oss_signature();
    }
    if let Some(failed) = injected_failure(fault) {
        return failed;
    }
    let (offset, mut sha) = {
        let mut st = sh.lock();
        let Some(u) = st.uploads.get_mut(upload_id).filter(|u| !u.done) else {
            return no_such_upload();
        };
        let committed = u.parts.len() as u32;
        if part <= committed {
            return oss_error(
                409,
                "PartAlreadyExist",
                "Part already exist.",
                "0042-00000305",
                &[],
            );
        }
        if part != committed + 1 || u.in_progress.is_some() {
            return oss_error(400, "PartNotSequential", "For sequential multipart upload, you must upload or complete parts with sequential part number.", "0042-00000303", &[]);
        }
        u.in_progress = Some(part);
        (u.committed_len, u.hasher.clone())
    };
    let mut guard = PartGuard {
        sh: sh.clone(),
        upload_id: upload_id.to_string(),
        offset,
        armed: true,
    };
    let mut md5 = Md5::new();
    let written = async {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(sh.upload_path(upload_id))
            .await?;
        f.set_len(offset).await?;
        f.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut n = 0u64;
        let start = Instant::now();
        let mut stream = body.into_data_stream();
        let mut dropped = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            if fault == Fault::Drop && n > 0 {
                dropped = true;
                break;
            }
            f.write_all(&chunk).await?;
            sha.update(&chunk);
            md5.update(&chunk);
            n += chunk.len() as u64;
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
            }
        }
        if dropped || fault == Fault::Drop {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected fault",
            ));
        }
        f.flush().await?;
        if sh.persist.is_some() {
            // The snapshot about to name this part must not outlive its bytes.
            f.sync_data().await?;
        }
        Ok::<u64, std::io::Error>(n)
    }
    .await;
    let n = match written {
        Ok(n) => n,
        Err(e) if fault == Fault::Drop => return drop_response(e),
        Err(e) => {
            return oss_error(
                400,
                "IncompleteBody",
                &format!("The request body is incomplete: {e}"),
                "0016-00000004",
                &[],
            );
        }
    };
    let etag = format!("\"{}\"", hex::encode_upper(md5.finalize()));
    {
        let mut st = sh.lock();
        let Some(u) = st.uploads.get_mut(upload_id).filter(|u| !u.done) else {
            return no_such_upload();
        };
        u.parts.push(crate::emulator::state::PartRec {
            number: part,
            size: n,
            etag: etag.clone(),
        });
        u.committed_len += n;
        u.hasher = sha;
        u.in_progress = None;
        guard.armed = false;
    }
    if let Err(msg) = sh.commit().await {
        return oss_error(500, "InternalError", &msg, "0000-00000001", &[]);
    }
    let mut r = Response::new(Body::empty());
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert("etag", v);
    }
    if let Ok(v) = HeaderValue::from_str(&util::rand_hex(24, true)) {
        r.headers_mut().insert("x-oss-request-id", v);
    }
    r
}
