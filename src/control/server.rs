//! The daemon side of the control socket. Every connection is checked against the peer's
//! credentials (SO_PEERCRED: the mounting user or root), then serves one request. Nothing a
//! client sends can stop the daemon: a bad line gets an `Error` response.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::paths::{self, IndexEntry};
use super::proto::{Download, Endpoint, FileError, Request, Response, Status, SyncResult, Upload};
use crate::api::Client;
use crate::fs::FsCore;
use crate::poll::Poller;
use crate::write::{JobProgress, Outcome};

/// A request line longer than this is refused (no request needs more).
const MAX_REQUEST: u64 = 1 << 20;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sync waits for the kernel's RELEASE of a file closed just before the call.
const RELEASE_GRACE: Duration = Duration::from_secs(2);

struct Shared {
    core: Arc<FsCore>,
    client: Arc<Client>,
    poller: Arc<Poller>,
    mountpoint: PathBuf,
    webdav: Option<String>,
}

/// The listening socket; dropping it stops serving and removes the socket and its index file.
pub struct ControlSocket {
    socket: PathBuf,
    index: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.index);
    }
}

/// Listen for `mountpoint`'s control clients. Must run inside the tokio runtime. A failure is
/// the caller's to log: the mount works without its control socket.
pub fn start(
    core: Arc<FsCore>,
    client: Arc<Client>,
    poller: Arc<Poller>,
    mountpoint: &Path,
    webdav: Option<String>,
) -> std::io::Result<ControlSocket> {
    let dir = paths::runtime_dir();
    if !dir.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let (socket, index) = paths::socket_paths(&dir, mountpoint);
    // The mount point was checked to be unmounted, so a socket there is a dead daemon's.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let entry = IndexEntry {
        mountpoint: mountpoint.to_path_buf(),
        pid: std::process::id(),
        socket: socket.clone(),
    };
    let tmp = index.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&entry).map_err(std::io::Error::other)?,
    )?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &index)?;
    info!(socket = %socket.display(), "control socket listening");
    let shared = Arc::new(Shared {
        core,
        client,
        poller,
        mountpoint: mountpoint.to_path_buf(),
        webdav,
    });
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(shared.clone(), stream));
                }
                Err(e) => {
                    warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(ControlSocket {
        socket,
        index,
        task,
    })
}

async fn send(stream: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

async fn serve(shared: Arc<Shared>, mut stream: UnixStream) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
        Ok(cred) => {
            warn!(
                uid = cred.uid(),
                "control socket: refused a connection from another user"
            );
            let _ = send(
                &mut stream,
                &error(format!(
                    "permission denied: this mount belongs to uid {me}; uid {} may not control it",
                    cred.uid()
                )),
            )
            .await;
            return;
        }
        Err(e) => {
            warn!("control socket: cannot read the peer's credentials: {e}");
            return;
        }
    }
    let mut line = String::new();
    let read = {
        let mut reader = BufReader::new((&mut stream).take(MAX_REQUEST));
        tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await
    };
    let request = match read {
        Ok(Ok(0)) => return,
        Ok(Ok(_)) => serde_json::from_str::<Request>(line.trim()),
        Ok(Err(e)) => {
            debug!("control socket: read failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let response = match request {
        Err(e) => error(format!("bad request: {e}")),
        Ok(Request::Status) => Response::Status(Box::new(status(&shared))),
        Ok(Request::Sync {
            paths,
            timeout_secs,
        }) => {
            let timeout = timeout_secs
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(|t| Duration::from_secs_f64(t.min(1e9)));
            Response::SyncDone(sync(&shared, &mut stream, paths, timeout).await)
        }
        Ok(Request::Set { key, value }) => match apply_setting(&shared, &key, &value) {
            Ok((key, value)) => {
                info!("set {key}={value} (by alipanfs set)");
                Response::Set { key, value }
            }
            Err(message) => error(message),
        },
        Ok(Request::Refresh { paths }) => match shared.poller.refresh(&paths).await {
            Ok(changes) => {
                info!(changes, ?paths, "refreshed (by alipanfs refresh)");
                Response::Refreshed { changes }
            }
            Err(message) => error(message),
        },
    };
    if let Err(e) = send(&mut stream, &response).await {
        debug!("control socket: client went away: {e}");
    }
}

/// What `alipanfs set` may change, with the names it accepts.
pub const SETTINGS: &str = "bwlimit-download, bwlimit-upload, log-level";

/// Applies one `key=value`; returns the canonical key and the value now in force.
fn apply_setting(shared: &Shared, key: &str, value: &str) -> Result<(String, String), String> {
    let bw = shared.client.bandwidth();
    let (limit, name) = match key.trim().replace('_', "-").as_str() {
        "bwlimit-download" => (&bw.download, "bwlimit-download"),
        "bwlimit-upload" => (&bw.upload, "bwlimit-upload"),
        "log-level" => {
            crate::control::loglevel::set(value.trim())?;
            return Ok(("log-level".into(), crate::control::loglevel::current()));
        }
        other => return Err(format!("unknown setting {other:?}; settable: {SETTINGS}")),
    };
    let rate = crate::api::bwlimit::parse_rate(value)?;
    limit.set_rate(rate);
    Ok((name.into(), crate::api::bwlimit::format_rate(rate)))
}

fn status(shared: &Shared) -> Status {
    let uploads = shared
        .core
        .pending_uploads()
        .into_iter()
        .map(|u| {
            let p = &u.job.progress;
            let state = if !u.job.running {
                "waiting"
            } else if p.is_blocked().is_some() {
                "blocked"
            } else if p.is_backing_off() {
                "retrying"
            } else {
                "uploading"
            };
            Upload {
                path: u.path,
                size: u.job.size,
                sent: p.sent().min(u.job.size),
                state: state.into(),
                attempts: p.attempts(),
                last_error: p.last_error().map(|(e, _)| e),
            }
        })
        .collect::<Vec<_>>();
    let mut uploads = uploads;
    // Files still being written whose upload already began: what their stream has sent.
    uploads.extend(
        shared
            .core
            .streaming_writes()
            .into_iter()
            .map(|(path, written, sent)| Upload {
                path,
                size: written,
                sent: sent.min(written),
                state: "streaming".into(),
                attempts: 1,
                last_error: None,
            }),
    );
    uploads.sort_by(|a, b| a.path.cmp(&b.path));
    let open = shared.core.open_read_files();
    shared
        .client
        .keep_received(&open.iter().map(|(_, _, id)| id.as_str()).collect());
    let downloads = open
        .iter()
        .map(|(path, size, id)| Download {
            path: path.clone(),
            size: *size,
            received: shared.client.received_bytes(id),
        })
        .collect();
    let bw = shared.client.bandwidth();
    let (endpoints, (throttled, errors)) = shared.client.api_stats().snapshot();
    let token = shared.client.token_status();
    let rotated = token.last_rotation.or_else(|| {
        std::fs::metadata(&token.store_path)
            .and_then(|m| m.modified())
            .ok()
    });
    Status {
        mountpoint: shared.mountpoint.display().to_string(),
        pid: std::process::id(),
        uploads,
        writing: shared
            .core
            .unqueued_writes()
            .into_iter()
            .map(|(_, p)| p)
            .collect(),
        downloads,
        api: endpoints
            .into_iter()
            .map(|(name, e)| Endpoint {
                endpoint: name.to_string(),
                calls: e.calls,
                limiter_waits: e.limiter_waits,
                limiter_wait_ms: e.limiter_wait.as_millis() as u64,
                throttled: e.throttled,
                errors: e.errors,
            })
            .collect(),
        throttled_last_minute: throttled,
        errors_last_minute: errors,
        token_age_secs: rotated
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs()),
        cache: shared.core.data_cache().map(|c| c.status()),
        bwlimit_download: bw.download.rate(),
        bwlimit_upload: bw.upload.rate(),
        log_level: crate::control::loglevel::current(),
        poll: Some(shared.poller.status()),
        webdav: shared.webdav.clone(),
    }
}

/// Whether `path` (relative to the root) is `wanted` or below it.
fn under(path: &str, wanted: &[String]) -> bool {
    wanted.iter().any(|w| {
        w.is_empty()
            || path == w
            || path
                .strip_prefix(w.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// One watched job: the file's path and inode (key), and its progress record.
struct Watched {
    path: String,
    key: u64,
    progress: Arc<JobProgress>,
}

async fn sync(
    shared: &Shared,
    stream: &mut UnixStream,
    wanted: Vec<String>,
    timeout: Option<Duration>,
) -> SyncResult {
    let core = &shared.core;
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let wanted: Vec<String> = wanted
        .into_iter()
        .map(|w| w.trim_matches('/').to_string())
        .collect();
    // A file closed just before the call may still wait for the kernel's RELEASE, which
    // queues its upload: give it a moment. Whatever is still open after that is a writer's.
    let (jobs, open) = loop {
        let (jobs, open) = core.uploads_snapshot();
        let open = open
            .into_iter()
            .filter(|(_, p)| under(p, &wanted))
            .collect::<Vec<_>>();
        if open.is_empty() || started.elapsed() >= RELEASE_GRACE {
            break (jobs, open);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut watched: Vec<Watched> = jobs
        .into_iter()
        .filter(|u| under(&u.path, &wanted))
        .map(|u| Watched {
            path: u.path,
            key: u.job.key,
            progress: u.job.progress,
        })
        .collect();
    debug!(
        ?wanted,
        watched = watched.len(),
        open = open.len(),
        "sync: waiting"
    );
    let mut failed = Vec::new();
    let mut last_progress = Instant::now();
    loop {
        let mut next = Vec::new();
        for w in watched.drain(..) {
            match w.progress.outcome() {
                Outcome::Uploaded | Outcome::Cancelled => {}
                Outcome::Abandoned => failed.push(FileError {
                    path: w.path,
                    error: w
                        .progress
                        .last_error()
                        .map_or_else(|| "upload abandoned".into(), |(e, _)| e),
                }),
                // A newer version took its place: wait for that one instead.
                Outcome::Superseded => next.extend(
                    core.pending_uploads()
                        .into_iter()
                        .filter(|u| u.job.key == w.key)
                        .map(|u| Watched {
                            path: u.path,
                            key: u.job.key,
                            progress: u.job.progress,
                        }),
                ),
                Outcome::Pending => match w.progress.is_blocked() {
                    Some(e) => failed.push(FileError {
                        path: w.path,
                        error: e,
                    }),
                    None => next.push(w),
                },
            }
        }
        watched = next;
        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        if watched.is_empty() || timed_out {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let pending = watched.iter().map(|w| w.path.clone()).collect();
            if send(stream, &Response::SyncProgress { pending })
                .await
                .is_err()
            {
                // The client gave up (Ctrl-C): stop watching for it.
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut pending: Vec<String> = watched.into_iter().map(|w| w.path).collect();
    pending.sort();
    pending.dedup();
    failed.sort_by(|a, b| a.path.cmp(&b.path));
    SyncResult {
        failed,
        pending,
        open: open.into_iter().map(|(_, p)| p).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn paths_match_themselves_and_what_is_below_them() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(under("a/b.txt", &w(&[""])));
        assert!(under("a/b.txt", &w(&["a"])));
        assert!(under("a/b.txt", &w(&["a/b.txt"])));
        assert!(!under("ab/c", &w(&["a"])));
        assert!(!under("a", &w(&["a/b"])));
    }
}
