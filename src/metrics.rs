//! Prometheus metrics, served as text at `/metrics` when `--metrics-listen ADDR` is given.
//!
//! Counters the mount keeps anyway are read at scrape time, so each number has one source: the
//! API calls, limiter waits, 429s and errors come from `api::ApiStats` (the same counters as
//! `alipanfs status`), the upload queue depth from `UploadQueue::pending`. What nothing else
//! counts (FUSE operations, bytes on the data plane, data cache blocks, passthrough opens) is counted here, in
//! process-wide counters that cost an atomic add whether or not the listener runs.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::Client;
use crate::error::{Error, Result};
use crate::write::UploadQueue;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
    errno: i32,
}

#[derive(Default)]
struct Process {
    fuse_ops: Family<OpLabels, Counter>,
    download_bytes: Counter,
    upload_bytes: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    passthrough_opens: Counter,
    cache_skipped_bytes: Counter,
    polls: Counter,
    remote_changes: Counter,
    invalidations: Counter,
}

static PROCESS: LazyLock<Process> = LazyLock::new(Process::default);

/// One FUSE operation answered, with its errno (0 for success).
pub fn fuse_op(op: &'static str, errno: i32) {
    PROCESS
        .fuse_ops
        .get_or_create(&OpLabels { op, errno })
        .inc();
}

/// Body bytes received from download URLs.
pub fn download_bytes(n: u64) {
    PROCESS.download_bytes.inc_by(n);
}

/// Part bytes sent to upload URLs (and accepted).
pub fn upload_bytes(n: u64) {
    PROCESS.upload_bytes.inc_by(n);
}

/// One 1 MiB block a read asked the data cache for: found there (a hit) or fetched from the
/// drive (a miss). Counted in blocks.
pub fn cache_blocks(hit: bool) {
    if hit {
        PROCESS.cache_hits.inc();
    } else {
        PROCESS.cache_misses.inc();
    }
}

/// Bytes `[start, start+len)` fetched from the drive with no data cache: every 1 MiB block
/// they touch is a miss.
pub fn cache_blocks_missed(start: u64, len: u64) {
    if len > 0 {
        let b = crate::cache::BLOCK;
        PROCESS
            .cache_misses
            .inc_by((start + len).div_ceil(b) - start / b);
    }
}

/// Bytes fetched from the drive that the data cache did not keep because its writer was
/// behind (a read never waits for the cache's disk; a later read fills those blocks).
pub fn cache_skipped_bytes(n: u64) {
    PROCESS.cache_skipped_bytes.inc_by(n);
}

/// An open answered with kernel passthrough on a cache file.
pub fn passthrough_open() {
    PROCESS.passthrough_opens.inc();
}

/// One look for changes made on the drive elsewhere, with the changes it applied and the
/// kernel invalidations it sent.
pub fn poll(changes: u64, invalidations: u64) {
    PROCESS.polls.inc();
    remote_changes(changes, invalidations);
}

/// Changes made elsewhere applied outside a poll (`alipanfs refresh`).
pub fn remote_changes(changes: u64, invalidations: u64) {
    PROCESS.remote_changes.inc_by(changes);
    PROCESS.invalidations.inc_by(invalidations);
}

/// (polls, remote changes applied, kernel invalidations sent) since the process started.
pub fn poll_counts() -> (u64, u64, u64) {
    (
        PROCESS.polls.get(),
        PROCESS.remote_changes.get(),
        PROCESS.invalidations.get(),
    )
}

/// (block hits, block misses, passthrough opens) since the process started.
pub fn cache_counts() -> (u64, u64, u64) {
    (
        PROCESS.cache_hits.get(),
        PROCESS.cache_misses.get(),
        PROCESS.passthrough_opens.get(),
    )
}

/// One number of an endpoint's stats.
type PerEndpoint = fn(&crate::api::EndpointStats) -> f64;

/// What is read at scrape time from the mount's own counters.
struct Live {
    client: Arc<Client>,
    uploads: Arc<UploadQueue>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let (endpoints, _) = self.client.api_stats().snapshot();
        let mut m = encoder.encode_descriptor(
            "api_calls",
            "Open API requests sent, by endpoint and HTTP status (\"network\": no answer).",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, e) in &endpoints {
            for (status, n) in &e.statuses {
                let status = match status {
                    0 => "network".to_string(),
                    s => s.to_string(),
                };
                let labels = [("endpoint", endpoint.to_string()), ("status", status)];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        let per_endpoint: [(&str, &str, PerEndpoint); 4] = [
            (
                "api_rate_limit_waits",
                "Open API requests that waited for the client-side rate limiter.",
                |e| e.limiter_waits as f64,
            ),
            (
                "api_rate_limit_wait_seconds",
                "Time Open API requests spent waiting for the client-side rate limiter.",
                |e| e.limiter_wait.as_secs_f64(),
            ),
            (
                "api_throttled",
                "429 TooManyRequests answers (each retried or returned).",
                |e| e.throttled as f64,
            ),
            (
                "api_errors",
                "Open API calls that ended in an error after their retries.",
                |e| e.errors as f64,
            ),
        ];
        for (name, help, value) in per_endpoint {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (endpoint, e) in &endpoints {
                let labels = [("endpoint", endpoint.to_string())];
                ConstCounter::new(value(e)).encode(m.encode_family(&labels)?)?;
            }
        }
        let depth = ConstGauge::new(self.uploads.pending() as i64);
        depth.encode(encoder.encode_descriptor(
            "upload_queue_depth",
            "Files waiting for or in upload.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// The registry of every metric, named `alipanfs_*`.
fn registry(client: Arc<Client>, uploads: Arc<UploadQueue>) -> Registry {
    let p = &*PROCESS;
    let mut r = Registry::with_prefix("alipanfs");
    r.register(
        "fuse_ops",
        "FUSE operations answered, by operation and errno (0: success).",
        p.fuse_ops.clone(),
    );
    r.register(
        "download_bytes",
        "Bytes received from the drive's download URLs.",
        p.download_bytes.clone(),
    );
    r.register(
        "upload_bytes",
        "Bytes of upload parts the drive accepted.",
        p.upload_bytes.clone(),
    );
    r.register(
        "cache_hits",
        "1 MiB blocks reads found in the data cache.",
        p.cache_hits.clone(),
    );
    r.register(
        "cache_misses",
        "1 MiB blocks reads fetched from the drive (not in the data cache, or it is off).",
        p.cache_misses.clone(),
    );
    r.register(
        "cache_skipped_bytes",
        "Bytes read from the drive that the data cache did not keep because its writer was behind (reads never wait for the cache's disk; a later read fills them).",
        p.cache_skipped_bytes.clone(),
    );
    r.register(
        "passthrough_opens",
        "Opens answered with kernel passthrough on a fully cached file (reads bypass the daemon).",
        p.passthrough_opens.clone(),
    );
    r.register(
        "polls",
        "Looks for changes made on the drive elsewhere (--poll-interval).",
        p.polls.clone(),
    );
    r.register(
        "remote_changes_applied",
        "Changes made on the drive elsewhere applied to the mount (by polls and refresh).",
        p.remote_changes.clone(),
    );
    r.register(
        "kernel_invalidations",
        "Kernel cache invalidations sent for changes made elsewhere.",
        p.invalidations.clone(),
    );
    r.register_collector(Box::new(Live { client, uploads }));
    r
}

/// The exposition text of every metric.
fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::warn!("metrics encoding failed: {e}");
    }
    text
}

/// Listen on `addr` and serve `/metrics` from the tokio runtime this is called on. A bind
/// failure is a configuration error naming the address; the bound address is returned (and
/// logged), so port 0 works.
pub async fn serve(
    addr: &str,
    client: Arc<Client>,
    uploads: Arc<UploadQueue>,
) -> Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("--metrics-listen {addr}: cannot listen: {e}")))?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry(client, uploads));
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&registry),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("metrics listener stopped: {e}");
        }
    });
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}
