//! The data plane: ranged GETs on download URLs and part PUTs on upload URLs. These are signed
//! OSS URLs: no Authorization, no rate limiter, errors in OSS XML, and the query string is a
//! credential (logged only through `crate::redact::url`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::bufpool::BufferPool;
use super::bwlimit::{self, Bandwidth, BwLimits};

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

/// Why an attempt on a signed URL did not produce its result.
enum Attempt<T> {
    Done(T),
    Retry(Error),
    Fail(Error),
}

/// Runs `once` until it succeeds, fails for good, or the retry policy gives up: the one retry
/// loop of the GETs on signed URLs (ranges, whole objects, sizes).
async fn with_retries<T, F, Fut>(retry: RetryPolicy, url: &DownloadUrl, mut once: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut retrier = Retrier::new(retry);
    loop {
        retrier.attempts += 1;
        let err = match once().await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry(e) => e,
        };
        let wait = retrier.backoff();
        if !retrier.may_retry_after(wait) {
            return Err(err);
        }
        tracing::debug!(url = %redact::url(&url.url), "data get retry: {err}");
        tokio::time::sleep(wait).await;
    }
}

pub async fn download_range(
    http: &reqwest::Client,
    pool: &Arc<BufferPool>,
    retry: RetryPolicy,
    url: &DownloadUrl,
    offset: u64,
    len: u64,
    meter: Meter<'_>,
) -> Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    with_retries(retry, url, || {
        download_once(http, pool, url, offset, len, meter)
    })
    .await
}

/// A whole small object (a playlist, a subtitle): one GET without Range, at most `max_len`
/// bytes (a longer object is an error, not a truncation).
pub async fn fetch_object(
    http: &reqwest::Client,
    pool: &Arc<BufferPool>,
    retry: RetryPolicy,
    url: &DownloadUrl,
    max_len: u64,
    meter: Meter<'_>,
) -> Result<Bytes> {
    with_retries(retry, url, || async {
        let got = match get_once(http, pool, url, None, max_len.saturating_add(1), meter).await {
            Ok(g) => g,
            Err(a) => return a,
        };
        match got.status {
            200 if got.body.len() as u64 > max_len => Attempt::Fail(Error::BadResponse(format!(
                "object larger than the {max_len} bytes expected"
            ))),
            200 => match got.content_length {
                // The connection ended early: fetch again.
                Some(n) if n > got.body.len() as u64 => Attempt::Retry(Error::Network(format!(
                    "object body truncated: {} of {n} bytes",
                    got.body.len()
                ))),
                _ => Attempt::Done(got.body),
            },
            s => failed(s, &got.body),
        }
    })
    .await
}

/// The size of the object at a signed URL: a GET of its first byte, the total taken from the
/// 206's `Content-Range` (a 416 means an empty object; a 200, a server ignoring Range, gives
/// its Content-Length). The body is never read as the object.
pub async fn object_size(
    http: &reqwest::Client,
    pool: &Arc<BufferPool>,
    retry: RetryPolicy,
    url: &DownloadUrl,
) -> Result<u64> {
    with_retries(retry, url, || async {
        let got = match get_once(http, pool, url, Some((0, 1)), 1, Meter::NONE).await {
            Ok(g) => g,
            Err(a) => return a,
        };
        match got.status {
            206 => match got.content_range.as_deref().and_then(parse_content_range) {
                Some((0, _, Some(total))) => Attempt::Done(total),
                _ => Attempt::Fail(Error::BadResponse(format!(
                    "206 without a usable Content-Range ({:?})",
                    got.content_range
                ))),
            },
            200 => match got.content_length {
                Some(n) => Attempt::Done(n),
                None => Attempt::Fail(Error::BadResponse(
                    "200 without Content-Length for a size probe".into(),
                )),
            },
            416 => Attempt::Done(0),
            s => failed(s, &got.body),
        }
    })
    .await
}

/// What a download's bytes count against as they arrive: the download limit, and the count of
/// bytes received for the file being read (shown by `alipanfs status`).
#[derive(Clone, Copy)]
pub struct Meter<'a> {
    pub limit: Option<&'a Bandwidth>,
    pub received: Option<&'a AtomicU64>,
}

impl Meter<'_> {
    pub const NONE: Meter<'static> = Meter {
        limit: None,
        received: None,
    };

    async fn received(&self, n: u64) {
        if let Some(r) = self.received {
            r.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(bw) = self.limit {
            bw.take(n).await;
        }
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
    meter: Meter<'_>,
) -> reqwest::Result<Bytes> {
    let hint = resp.content_length().unwrap_or(0).min(limit);
    let mut buf = pool.get(usize::try_from(hint).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await? {
        meter.received(chunk.len() as u64).await;
        let room = usize::try_from(limit - buf.len() as u64).unwrap_or(usize::MAX);
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(pool.freeze(buf))
}

/// What one GET on a signed URL answered.
struct Got {
    status: u16,
    content_range: Option<String>,
    content_length: Option<u64>,
    /// At most the success limit for 200/206, a short error body otherwise.
    body: Bytes,
}

/// One GET, for `range` = (offset, len) or the whole object; a 2xx body is read up to `limit`
/// bytes. A failure to connect or to read the body is a transient `Retry`.
async fn get_once<T>(
    http: &reqwest::Client,
    pool: &Arc<BufferPool>,
    url: &DownloadUrl,
    range: Option<(u64, u64)>,
    limit: u64,
    meter: Meter<'_>,
) -> std::result::Result<Got, Attempt<T>> {
    let started = tokio::time::Instant::now();
    let mut req = http.get(&url.url);
    if let Some((offset, len)) = range {
        let end = offset.saturating_add(len.max(1) - 1);
        req = req
            .header(reqwest::header::RANGE, format!("bytes={offset}-{end}"))
            // Without it OSS answers an invalid range with 200 and the whole object.
            .header("x-oss-range-behavior", "standard");
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Err(Attempt::Retry(Error::Network(format!(
                "download: {}",
                e.without_url()
            ))))
        }
    };
    let status = resp.status().as_u16();
    let content_range = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_length = resp.content_length();
    // Never more than asked for (a 200 carries the whole object); an error body is short.
    let limit = match status {
        200 | 206 => limit,
        _ => MAX_ERROR_BODY,
    };
    let body = match read_body(resp, limit, pool, meter).await {
        Ok(b) => {
            if matches!(status, 200 | 206) {
                crate::metrics::download_bytes(b.len() as u64);
            }
            b
        }
        Err(e) => {
            return Err(Attempt::Retry(Error::Network(format!(
                "download body: {}",
                e.without_url()
            ))))
        }
    };
    tracing::debug!(
        url = %redact::url(&url.url),
        status,
        range = ?range,
        got = body.len(),
        ms = started.elapsed().as_millis() as u64,
        "data get"
    );
    Ok(Got {
        status,
        content_range,
        content_length,
        body,
    })
}

/// An error status: transient ones (5xx, 408, 429) are retried, the rest typed once
/// (403 "Request has expired" is `Error::UrlExpired`).
fn failed<T>(status: u16, body: &[u8]) -> Attempt<T> {
    let e = parse_error_body(body);
    if status >= 500 || status == 408 || status == 429 {
        return Attempt::Retry(Error::Api {
            status,
            code: e.code,
            message: e.message,
        });
    }
    Attempt::Fail(map_data_error(status, e))
}

async fn download_once(
    http: &reqwest::Client,
    pool: &Arc<BufferPool>,
    url: &DownloadUrl,
    offset: u64,
    len: u64,
    meter: Meter<'_>,
) -> Attempt<Bytes> {
    let Got {
        status,
        content_range,
        body,
        ..
    } = match get_once(http, pool, url, Some((offset, len)), len, meter).await {
        Ok(g) => g,
        Err(a) => return a,
    };
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
        s => failed(s, &body),
    }
}

/// `url` with its origin (scheme, host, port) replaced by `origin`, path and query kept: how
/// alist sends parts through the internal upload host (reference 5.6).
pub fn with_origin(url: &str, origin: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let path_and_query = url[after_scheme..]
        .find(['/', '?'])
        .map_or("/", |i| &url[after_scheme + i..]);
    let sep = if path_and_query.starts_with('/') {
        ""
    } else {
        "/"
    };
    format!("{}{sep}{path_and_query}", origin.trim_end_matches('/'))
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
    limits: &Arc<BwLimits>,
) -> Result<Option<String>> {
    let started = tokio::time::Instant::now();
    // Counted as it goes out (the PUT's body is polled by the connection's own task, so the
    // counter is taken from this task now); a failed PUT takes its bytes back.
    let counter = bwlimit::sent_counter();
    let (metered, went_out) = bwlimit::metered_body(body.clone(), limits.clone(), counter.clone());
    let take_back = || {
        if let Some(c) = &counter {
            let n = went_out.load(Ordering::Relaxed);
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        }
    };
    let sent = http
        .put(&part.upload_url)
        .header(reqwest::header::CONTENT_LENGTH, body.len())
        .body(metered)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            take_back();
            return Err(Error::Network(format!("upload part: {}", e.without_url())));
        }
    };
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
    take_back();
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
    fn origin_rewrite_keeps_path_and_query() {
        let o = "http://ccp-bj29-bj-1592982087.oss-cn-beijing-internal.aliyuncs.com";
        assert_eq!(
            with_origin(
                "https://cn-beijing-data.aliyundrive.net/a/b?partNumber=1&x=y",
                o
            ),
            format!("{o}/a/b?partNumber=1&x=y")
        );
        assert_eq!(
            with_origin("http://127.0.0.1:5/upload/f/U?q=1", "http://127.0.0.1:9/"),
            "http://127.0.0.1:9/upload/f/U?q=1"
        );
        assert_eq!(with_origin("https://h?q", "http://i"), "http://i/?q");
        assert_eq!(with_origin("https://h", "http://i"), "http://i/");
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
