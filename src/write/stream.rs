//! Uploading a file while it is still being written.
//!
//! A file written from its start and in order (cp, downloads, recorders) begins its multipart
//! upload once it reaches `upload_while_writing` bytes instead of after close, so at close most of
//! its parts are already on the drive. Two tasks follow the writer:
//! - a hasher, which computes the whole-file SHA-1 (and pre_hash) as the bytes arrive, so close
//!   does not read the file again and can try a rapid upload at once;
//! - a sender, which opens one session (no size: it is not known yet) and PUTs each part as soon
//!   as the writer has gone past it, strictly in order as the service requires.
//!
//! A stream is only ever a head start; the staged file stays the truth. A write or truncate below
//! what was hashed or sent, a write that skips ahead, a part that fails, a rename, an explicit
//! mtime: each abandons the stream, and the upload after close then runs as if there had been
//! none. The session of an abandoned stream is never completed, so it never becomes visible (the
//! service discards unfinished uploads). How close hands over is in `upload::upload_file`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sync::{Level, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::drive::{CheckNameMode, Drive, NewFile, UploadHashes};
use crate::write::local::{self, ContentHasher, LocalInfo};
use crate::write::parts::{self, PartSender, PartsError, Sent, MAX_PARTS};

/// Bytes hashed per step (read back from the page cache the writer has just filled).
const HASH_STEP: u64 = 4 << 20;
/// Files streaming at once; more writers simply upload after close.
const MAX_STREAMS: usize = 2;

/// Where a stream's session was opened. A different place at close means it cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    pub parent_file_id: String,
    pub name: String,
}

#[derive(Default)]
struct State {
    /// Bytes written contiguously from offset 0.
    frontier: u64,
    /// The hasher has read (or is reading) everything below this.
    hash_claim: u64,
    /// The sender has read (or is reading) everything below this.
    send_claim: u64,
    /// The final length, once the last writer closed.
    size: Option<u64>,
    /// Set once the stream stops following the writer: why.
    stopped: Option<String>,
    started: bool,
    /// The hashes of the whole content, once hashed to `size`.
    info: Option<LocalInfo>,
    /// (file_id, upload_id) of the streamed session.
    session: Option<(String, String)>,
    /// Every part up to `size` is on the drive.
    sent_all: bool,
}

impl State {
    /// Writes below this would change bytes already hashed or sent.
    fn locked(&self) -> u64 {
        self.hash_claim.max(self.send_claim)
    }
}

struct Inner {
    state: Mutex<State>,
    changed: Notify,
    /// Bytes of this stream's parts on the wire or on the drive (`alipanfs status`).
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.notify_waiters();
        out
    }

    /// Waits until `f` returns Some (it runs under the lock, after every change).
    async fn wait_for<T>(&self, mut f: impl FnMut(&mut State) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(out) = f(&mut self.lock()) {
                self.changed.notify_waiters();
                return out;
            }
            notified.await;
        }
    }

    fn stop(&self, why: &str) {
        self.update(|st| {
            if st.stopped.is_none() {
                if st.started {
                    tracing::debug!(why, "upload-while-writing stopped");
                }
                st.stopped = Some(why.to_string());
            }
        });
    }
}

/// What every stream of a mount shares.
pub struct Streams {
    drive: Arc<dyn Drive>,
    /// Streaming starts at this many bytes; None: never.
    start_after: Option<u64>,
    part_size: u64,
    permits: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
}

impl Streams {
    /// Must be called inside a tokio runtime; the streams' tasks run on it.
    pub fn new(drive: Arc<dyn Drive>, start_after: Option<u64>, part_size: u64) -> Arc<Streams> {
        Arc::new(Streams {
            drive,
            start_after,
            part_size,
            permits: Arc::new(Semaphore::new(MAX_STREAMS)),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// A stream for a file being written from empty into `path`, bound for `target`; None when
    /// uploading while writing is off.
    pub fn follow(self: &Arc<Self>, path: &Path, target: StreamTarget) -> Option<Arc<WriteStream>> {
        self.start_after?;
        Some(Arc::new(WriteStream {
            inner: Arc::new(Inner {
                state: Mutex::new(Level::WRITE_STREAM, "write stream", State::default()),
                changed: Notify::new(),
                sent: Arc::default(),
            }),
            streams: self.clone(),
            path: path.to_path_buf(),
            target,
        }))
    }
}

/// Follows one file's writer. Dropping the last handle stops it.
pub struct WriteStream {
    inner: Arc<Inner>,
    streams: Arc<Streams>,
    path: PathBuf,
    target: StreamTarget,
}

impl std::fmt::Debug for WriteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteStream")
            .field("path", &self.path)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for WriteStream {
    fn drop(&mut self) {
        self.inner.stop("dropped");
    }
}

impl WriteStream {
    /// `len` bytes were written at `offset` (call after the bytes are in the staged file).
    pub fn on_write(&self, offset: u64, len: u64) {
        let start = {
            let mut st = self.inner.lock();
            if st.stopped.is_some() || st.size.is_some() {
                return;
            }
            if offset < st.locked() {
                drop(st);
                return self.inner.stop("bytes already uploaded were rewritten");
            }
            if offset > st.frontier {
                drop(st);
                return self.inner.stop("the file is not written in order");
            }
            st.frontier = st.frontier.max(offset.saturating_add(len));
            let start = !st.started
                && self
                    .streams
                    .start_after
                    .is_some_and(|after| st.frontier >= after);
            st.started |= start;
            start
        };
        self.inner.changed.notify_waiters();
        if start {
            self.start();
        }
    }

    /// The staged file was truncated or extended to `len`.
    pub fn on_truncate(&self, len: u64) {
        let mut st = self.inner.lock();
        if st.stopped.is_some() || st.size.is_some() {
            return;
        }
        if len < st.locked() {
            drop(st);
            return self
                .inner
                .stop("the file was truncated below what was uploaded");
        }
        st.frontier = st.frontier.min(len);
    }

    /// The last writer closed at `size` bytes: the stream sends the rest (the last part included).
    pub fn close(&self, size: u64) {
        let changed = self.inner.update(|st| match st.size {
            None => {
                st.size = Some(size);
                false
            }
            Some(s) => s != size,
        });
        if changed {
            self.inner.stop("the file changed after close");
        }
    }

    /// Stop following the writer (the result will not be used).
    pub fn abandon(&self, why: &str) {
        self.inner.stop(why);
    }

    pub fn target(&self) -> &StreamTarget {
        &self.target
    }

    /// Whether the upload began while the file was written.
    /// Bytes its parts have put on the wire so far (for `alipanfs status`).
    pub fn sent_bytes(&self) -> u64 {
        self.inner.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_started(&self) -> bool {
        let st = self.inner.lock();
        st.started && st.stopped.is_none()
    }

    /// The hashes of the whole content, once closed and hashed; None if the stream stopped.
    pub async fn hashed(&self) -> Option<LocalInfo> {
        self.inner
            .wait_for(|st| match (&st.info, &st.stopped) {
                (Some(info), _) => Some(Some(info.clone())),
                (None, Some(_)) => Some(None),
                (None, None) => None,
            })
            .await
    }

    /// (file_id, upload_id) once every part is on the drive; None if the stream stopped.
    pub async fn sent(&self) -> Option<(String, String)> {
        self.inner
            .wait_for(|st| {
                if st.stopped.is_some() {
                    Some(None)
                } else if st.sent_all {
                    Some(st.session.clone())
                } else {
                    None
                }
            })
            .await
    }

    fn start(&self) {
        let Ok(permit) = self.streams.permits.clone().try_acquire_owned() else {
            // Other files are streaming: this one uploads after close (or starts later).
            self.inner.lock().started = false;
            return;
        };
        let file = match File::open(&self.path) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                return self
                    .inner
                    .stop(&format!("cannot read the staged file: {e}"))
            }
        };
        tracing::debug!(path = %self.path.display(), name = %self.target.name, "uploading while writing");
        let rt = &self.streams.runtime;
        rt.spawn(hash_task(self.inner.clone(), file));
        rt.spawn(send_task(
            self.inner.clone(),
            self.streams.clone(),
            self.path.clone(),
            self.target.clone(),
            permit,
        ));
    }
}

enum Step {
    Next(u64),
    Done,
    Stop,
}

/// Hashes the content in order as the writer extends it, until the final size.
async fn hash_task(inner: Arc<Inner>, file: Arc<File>) {
    let mut hasher = ContentHasher::default();
    let mut buf = Vec::new();
    loop {
        let pos = hasher.size();
        let step = inner
            .wait_for(|st| {
                if st.stopped.is_some() {
                    return Some(Step::Stop);
                }
                let avail = st.size.unwrap_or(st.frontier);
                if avail > pos {
                    let end = avail.min(pos + HASH_STEP);
                    st.hash_claim = st.hash_claim.max(end);
                    Some(Step::Next(end))
                } else if st.size == Some(pos) {
                    Some(Step::Done)
                } else {
                    None
                }
            })
            .await;
        let end = match step {
            Step::Next(end) => end,
            Step::Done => {
                let info = hasher.finish();
                inner.update(|st| st.info = Some(info));
                return;
            }
            Step::Stop => return,
        };
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || {
            buf.resize((end - pos) as usize, 0);
            f.read_exact_at(&mut buf, pos)?;
            hasher.update(&buf);
            Ok::<_, std::io::Error>((hasher, buf))
        })
        .await;
        match read {
            Ok(Ok((h, b))) => (hasher, buf) = (h, b),
            Ok(Err(e)) => return inner.stop(&format!("cannot read the staged file: {e}")),
            Err(e) => return inner.stop(&format!("hashing task failed: {e}")),
        }
    }
}

async fn send_task(
    inner: Arc<Inner>,
    streams: Arc<Streams>,
    path: PathBuf,
    target: StreamTarget,
    _permit: OwnedSemaphorePermit,
) {
    let sending = send_parts(&inner, &*streams.drive, &path, &target, streams.part_size);
    if let Err(why) = super::progress::stream_scope(inner.sent.clone(), sending).await {
        tracing::debug!(name = %target.name, "upload while writing gave up: {why}");
        inner.stop(&why);
    }
}

/// What the sender does next from `pos`: the end of the next part once the writer is past it
/// (or the last part once closed), claimed so the writer may no longer change it; Done once
/// closed and all is sent.
fn next_part(st: &mut State, pos: u64, part_size: u64) -> Option<Step> {
    if st.stopped.is_some() {
        return Some(Step::Stop);
    }
    let end = match st.size {
        Some(size) if pos >= size => return Some(Step::Done),
        Some(size) => (pos + part_size).min(size),
        None if st.frontier >= pos + part_size => pos + part_size,
        None => return None,
    };
    st.send_claim = st.send_claim.max(end);
    Some(Step::Next(end))
}

async fn read_part(path: &Path, start: u64, end: u64, number: u32) -> Result<Bytes, String> {
    local::read_range(path, start, end - start)
        .await
        .map_err(|e| format!("reading part {number}: {e}"))
}

/// Opens the session, then sends each part once the writer is past it, the last one after close.
async fn send_parts(
    inner: &Inner,
    drive: &dyn Drive,
    path: &Path,
    target: &StreamTarget,
    part_size: u64,
) -> Result<(), String> {
    let req = NewFile {
        parent_file_id: target.parent_file_id.clone(),
        name: target.name.clone(),
        size: None,
        check_name_mode: CheckNameMode::Ignore,
        part_count: 1,
        local_modified_at: Some(SystemTime::now()),
        hashes: UploadHashes::None,
    };
    let session = parts::retry_transient("create", || drive.create_file(&req))
        .await
        .map_err(|e| format!("create: {e}"))?;
    let upload_id = match session.upload_id.as_deref() {
        Some(id) if !id.is_empty() && !session.rapid_upload && !session.exist => id.to_string(),
        _ => return Err("create returned no upload session".into()),
    };
    let file_id = session.file_id.clone();
    // A crash before close() loses the file (never closed), but one after it resumes here.
    super::resume::remember(
        path,
        &super::resume::SessionRecord {
            file_id: file_id.clone(),
            upload_id: upload_id.clone(),
            part_size,
            parent_file_id: target.parent_file_id.clone(),
            name: target.name.clone(),
        },
    );
    inner.update(|st| st.session = Some((file_id.clone(), upload_id.clone())));
    let mut sender =
        PartSender::open_ended(drive, path, &file_id, &upload_id, part_size, session.parts);
    let (mut number, mut pos) = (1u32, 0u64);
    // The following part, read from disk while the current one is on the wire.
    let mut ready: Option<(u64, Bytes)> = None;
    loop {
        let (end, body) = match ready.take() {
            Some(_) if inner.lock().stopped.is_some() => return Ok(()),
            Some(read) => read,
            None => match inner.wait_for(|st| next_part(st, pos, part_size)).await {
                Step::Next(end) => (end, read_part(path, pos, end, number).await?),
                Step::Done => {
                    inner.update(|st| st.sent_all = true);
                    return Ok(());
                }
                Step::Stop => return Ok(()),
            },
        };
        if u64::from(number) > MAX_PARTS {
            return Err("more than 10,000 parts".into());
        }
        // Claimed now only if the writer is already past it: never waits.
        let following = match next_part(&mut inner.lock(), end, part_size) {
            Some(Step::Next(next_end)) => Some(end..next_end),
            _ => None,
        };
        let (sent, read) = sender
            .send_reading_next(number, body, following.clone())
            .await;
        match sent {
            Ok(Sent::Done) => {}
            Ok(Sent::Resync(why)) => return Err(format!("part {number}: {why}")),
            Err(PartsError::Restart(e) | PartsError::Fail(e)) => {
                return Err(format!("part {number}: {e}"))
            }
        }
        pos = end;
        number += 1;
        if let (Some(next), Some(read)) = (following, read) {
            let body = read.map_err(|e| format!("reading part {number}: {e}"))?;
            ready = Some((next.end, body));
        }
    }
}
