//! The data plane: ranged GETs on download URLs and part PUTs on upload URLs. These are signed
//! OSS URLs: no Authorization, no rate limiter, errors in OSS XML, and the query string is a
//! credential (logged only through `crate::redact::url`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use std::sync::Arc;

use super::bufpool::BufferPool;

use super::config::RetryPolicy;
use super::errors::{map_data_error, parse_error_body};
use super::retry::{parse_retry_after_ms, Retrier};
use crate::drive::{DownloadUrl, PartUrl};
use crate::error::{Error, Result};
use crate::redact;

/// The instant a signed URL stops working: its `x-oss-expires` (unix seconds), or the OSS v1
/// `Expires` parameter.
pub fn oss_expires(url: &str) -> Option<SystemTime> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or("");
    let mut v1 = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let secs = || v.trim().parse::<u64>().ok();
        if k.eq_ignore_ascii_case("x-oss-expires") {
            if let Some(s) = secs() {
                return Some(UNIX_EPOCH + Duration::from_secs(s));
            }
        } else if k == "Expires" {
            v1 = secs().map(|s| UNIX_EPOCH + Duration::from_secs(s));
        }
    }
    v1
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = b.trim().parse().ok()?;
    (end >= start).then_some(())?;
    Some((start, end, total.trim().parse().ok()))
}

/// Why a download attempt did not produce bytes.
enum Attempt {
    Done(Bytes),
    Retry(Error),
    Fail(Error),
}

pub async fn download_range(
    http: &reqwest::Client,
    pool: &Arc<BufferPool>,
    retry: RetryPolicy,
    url: &DownloadUrl,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let mut retrier = Retrier::new(retry);
    loop {
        retrier.attempts += 1;
        let err = match download_once(http, pool, url, offset, len).await {
            Attempt::Done(b) => return Ok(b),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry(e) => e,
        };
        let wait = retrier.backoff();
        if !retrier.may_retry_after(wait) {
            return Err(err);
        }
        tracing::debug!(url = %redact::url(&url.url), offset, "download retry: {err}");
        tokio::time::sleep(wait).await;
    }
}

/// Error bodies are a few hundred bytes of XML; more is not worth reading.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The body, up to `limit` bytes, copied once as it arrives into one buffer sized from
/// Content-Length (each network read is copied while still in cache, rather than gathering
/// the frames and copying them all at the end). A longer body is cut off: dropping the
/// response closes the connection, which also frees the server's download slot.
async fn read_body(
    mut resp: reqwest::Response,
    limit: u64,
    pool: &Arc<BufferPool>,
) -> reqwest::Result<Bytes> {
    let hint = resp.content_length().unwrap_or(0).min(limit);
    let mut buf = pool.get(usize::try_from(hint).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await? {
        let room = usize::try_from(limit - buf.len() as u64).unwrap_or(usize::MAX);
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(pool.freeze(buf))
}

async fn download_once(
    http: &reqwest::Client,
    pool: &Arc<BufferPool>,
    url: &DownloadUrl,
    offset: u64,
    len: u64,
) -> Attempt {
    let end = offset.saturating_add(len - 1);
    let started = tokio::time::Instant::now();
    let resp = match http
        .get(&url.url)
        .header(reqwest::header::RANGE, format!("bytes={offset}-{end}"))
        // Without it OSS answers an invalid range with 200 and the whole object.
        .header("x-oss-range-behavior", "standard")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(Error::Network(format!("download: {}", e.without_url()))),
    };
    let status = resp.status().as_u16();
    let content_range = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Never more than asked for (a 200 carries the whole object); an error body is short.
    let limit = match status {
        200 | 206 => len,
        _ => MAX_ERROR_BODY,
    };
    let body = match read_body(resp, limit, pool).await {
        Ok(b) => {
            if matches!(status, 200 | 206) {
                crate::metrics::download_bytes(b.len() as u64);
            }
            b
        }
        Err(e) => {
            return Attempt::Retry(Error::Network(format!(
                "download body: {}",
                e.without_url()
            )))
        }
    };
    tracing::debug!(
        url = %redact::url(&url.url),
        status,
        offset,
        len,
        got = body.len(),
        ms = started.elapsed().as_millis() as u64,
        "data get"
    );
    match status {
        206 => {
            let Some((start, last, total)) = content_range.as_deref().and_then(parse_content_range)
            else {
                return Attempt::Fail(Error::BadResponse(format!(
                    "206 without a usable Content-Range ({content_range:?})"
                )));
            };
            if start != offset {
                return Attempt::Fail(Error::BadResponse(format!(
                    "asked for bytes from {offset}, got a range starting at {start}"
                )));
            }
            // More than asked for is cut off while reading.
            let promised = (last - start + 1).min(len);
            if (body.len() as u64) < promised {
                // The connection ended early: fetch again.
                return Attempt::Retry(Error::Network(format!(
                    "download body truncated: {} of {promised} bytes",
                    body.len()
                )));
            }
            let got = promised.min(len);
            if got < len && total.is_some_and(|t| last + 1 < t) {
                return Attempt::Fail(Error::BadResponse(format!(
                    "server returned {got} of {len} bytes before end of file"
                )));
            }
            Attempt::Done(body.slice(..got as usize))
        }
        200 if offset == 0 => {
            // The whole object: keep what was asked.
            let got = (body.len() as u64).min(len) as usize;
            Attempt::Done(body.slice(..got))
        }
        200 => Attempt::Fail(Error::BadResponse(
            "server ignored the Range header (200 for a range not at offset 0)".into(),
        )),
        // At or after end of file.
        416 => Attempt::Done(Bytes::new()),
        s if s >= 500 || s == 408 || s == 429 => {
            let e = parse_error_body(&body);
            Attempt::Retry(Error::Api {
                status: s,
                code: e.code,
                message: e.message,
            })
        }
        s => Attempt::Fail(map_data_error(s, parse_error_body(&body))),
    }
}

/// PUTs one part with Content-Length and no Content-Type (the signature covers it), once: the
/// part sender owns the retries (`retry::PART_SEND_ATTEMPTS`), so the layers do not multiply.
/// A 5xx is an `Error::Api` and a dropped connection an `Error::Network`, both transient; a
/// replay after a lost answer meets 409 PartAlreadyExist, which the sender checks against
/// `listUploadedParts`.
pub async fn upload_part(
    http: &reqwest::Client,
    part: &PartUrl,
    body: Bytes,
) -> Result<Option<String>> {
    let started = tokio::time::Instant::now();
    let sent = http
        .put(&part.upload_url)
        .header(reqwest::header::CONTENT_LENGTH, body.len())
        .body(body.clone())
        .send()
        .await;
    let resp = sent.map_err(|e| Error::Network(format!("upload part: {}", e.without_url())))?;
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let retry_after = resp
        .headers()
        .get("x-retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after_ms);
    let bytes = resp.bytes().await.unwrap_or_default();
    tracing::debug!(
        url = %redact::url(&part.upload_url),
        part = part.part_number,
        status,
        size = body.len(),
        ms = started.elapsed().as_millis() as u64,
        "data put"
    );
    if (200..300).contains(&status) {
        crate::metrics::upload_bytes(body.len() as u64);
        return Ok(etag);
    }
    let e = parse_error_body(&bytes);
    if status == 429 {
        return Err(Error::RateLimited {
            retry_after: retry_after.map(Duration::from_millis),
        });
    }
    if status < 500 {
        return Err(map_data_error(status, e));
    }
    Err(Error::Api {
        status,
        code: e.code,
        message: e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_oss_expires() {
        let u = "https://h/k?x-oss-access-key-id=a&x-oss-expires=1717000000&x-oss-signature=s";
        assert_eq!(
            oss_expires(u),
            Some(UNIX_EPOCH + Duration::from_secs(1_717_000_000))
        );
        assert_eq!(
            oss_expires("https://h/k?Expires=12&Signature=x"),
            Some(UNIX_EPOCH + Duration::from_secs(12))
        );
        assert_eq!(oss_expires("https://h/k"), None);
        assert_eq!(oss_expires("https://h/k?x-oss-expires=soon"), None);
        assert_eq!(oss_expires("https://h/k?x-oss-expires"), None);
        assert_eq!(
            oss_expires("https://h/k?a=1&x-oss-expires=5#frag"),
            Some(UNIX_EPOCH + Duration::from_secs(5))
        );
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 99, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes */1000"), None);
    }
}
