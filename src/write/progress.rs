//! What `alipanfs status` and `alipanfs sync` see of an upload job: one small record per job,
//! shared (Arc) between the queue, which writes it, and the control socket, which reads it.
//!
//! Bytes sent rise while a part goes out: the part PUT's body counts each slice as the
//! connection takes it (`api::bwlimit::metered_body`, a failed PUT takes its bytes back), into
//! the counter of the task-local `api::bwlimit::counting_sent`, so the upload code needs no
//! extra parameter. The queue runs each attempt inside `scope`; a stream (upload while writing)
//! runs its sender inside `stream_scope` with the stream's own counter, which `status` shows
//! while the file is still being written. When the drive accepts a part, `part_done` makes the
//! count at least the part's end (for drives that do not count on the wire, such as tests').

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::sync::{Level, Mutex};

/// How a job ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Pending = 0,
    /// On the drive and verified.
    Uploaded = 1,
    /// A newer version of the file replaced this job.
    Superseded = 2,
    /// The file was deleted through the mount.
    Cancelled = 3,
    /// Given up (the staged file vanished).
    Abandoned = 4,
}

#[derive(Debug)]
pub struct JobProgress {
    sent: Arc<AtomicU64>,
    attempts: AtomicU32,
    outcome: AtomicU8,
    /// The last attempt failed and the next has not begun (backoff).
    failed_last: AtomicBool,
    /// The last attempt's error, and whether retrying cannot help by itself (a full drive, a
    /// refused name): `sync` reports such a job instead of waiting for it.
    last_error: Mutex<Option<(String, bool)>>,
    /// Drive files the current attempt created (upload sessions, rapid uploads): an attempt
    /// stopped mid-way removes them, since one may have completed as it was stopped.
    sessions: Mutex<Vec<String>>,
}

impl Default for JobProgress {
    fn default() -> Self {
        JobProgress {
            sent: Arc::new(AtomicU64::new(0)),
            attempts: AtomicU32::new(0),
            outcome: AtomicU8::new(0),
            failed_last: AtomicBool::new(false),
            last_error: Mutex::new(Level::WRITE_PROGRESS, "job last error", None),
            sessions: Mutex::new(Level::LEAF, "job sessions", Vec::new()),
        }
    }
}

impl JobProgress {
    pub fn new() -> Arc<JobProgress> {
        Arc::new(JobProgress::default())
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn outcome(&self) -> Outcome {
        match self.outcome.load(Ordering::Acquire) {
            1 => Outcome::Uploaded,
            2 => Outcome::Superseded,
            3 => Outcome::Cancelled,
            4 => Outcome::Abandoned,
            _ => Outcome::Pending,
        }
    }

    /// The last attempt's error and whether it needs the user (quota, refused name).
    pub fn last_error(&self) -> Option<(String, bool)> {
        self.last_error.lock().clone()
    }

    /// The last attempt failed and the job waits to retry.
    pub fn is_backing_off(&self) -> bool {
        self.failed_last.load(Ordering::Relaxed)
    }

    /// The last attempt failed with an error that retrying alone will not fix.
    pub fn is_blocked(&self) -> Option<String> {
        if !self.is_backing_off() {
            return None;
        }
        self.last_error().filter(|(_, user)| *user).map(|(e, _)| e)
    }

    /// The drive files the attempt created, emptied.
    pub(crate) fn take_sessions(&self) -> Vec<String> {
        std::mem::take(&mut *self.sessions.lock())
    }

    pub(crate) fn begin_attempt(&self) {
        self.take_sessions();
        self.failed_last.store(false, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.sent.store(0, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, error: String, needs_user: bool) {
        *self.last_error.lock() = Some((error, needs_user));
        self.failed_last.store(true, Ordering::Relaxed);
    }

    /// The first end wins: a job is superseded or uploaded once.
    pub(crate) fn end(&self, outcome: Outcome) {
        let _ = self.outcome.compare_exchange(
            Outcome::Pending as u8,
            outcome as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

tokio::task_local! {
    static CURRENT: Arc<JobProgress>;
}

/// Run an upload attempt with `progress` as the record its parts count into.
pub async fn scope<F: std::future::Future>(progress: Arc<JobProgress>, f: F) -> F::Output {
    let sent = progress.sent.clone();
    CURRENT
        .scope(progress, crate::api::bwlimit::counting_sent(sent, f))
        .await
}

/// Run a stream's sender with `sent` as the count of its bytes on the wire.
pub async fn stream_scope<F: std::future::Future>(sent: Arc<AtomicU64>, f: F) -> F::Output {
    crate::api::bwlimit::counting_sent(sent, f).await
}

/// Runs `f` (an attempt finishing a stream's upload) while copying `source` (the stream's bytes
/// sent) into the attempt's count every `MIRROR_EVERY`, so a job whose parts a stream sends
/// shows them rising too.
pub async fn mirror_while<F: std::future::Future>(source: impl Fn() -> u64, f: F) -> F::Output {
    let Some(dst) = crate::api::bwlimit::sent_counter() else {
        return f.await;
    };
    tokio::pin!(f);
    let mut tick = tokio::time::interval(MIRROR_EVERY);
    loop {
        tokio::select! {
            out = &mut f => return out,
            _ = tick.tick() => dst.store(source(), Ordering::Relaxed),
        }
    }
}

/// How often `mirror_while` copies the count.
const MIRROR_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The drive accepted the part that ends at byte `end`: everything below it is sent.
pub fn part_done(end: u64) {
    if let Some(sent) = crate::api::bwlimit::sent_counter() {
        sent.fetch_max(end, Ordering::Relaxed);
    }
}

/// The attempt created (or is about to complete) the drive file `file_id`.
pub fn session_opened(file_id: &str) {
    let _ = CURRENT.try_with(|p| {
        let mut sessions = p.sessions.lock();
        if !sessions.iter().any(|s| s == file_id) {
            sessions.push(file_id.to_string());
        }
    });
}

/// A fresh session, or a resync, restarts the count at `offset`.
pub fn sent_so_far(offset: u64) {
    if let Some(sent) = crate::api::bwlimit::sent_counter() {
        sent.store(offset, Ordering::Relaxed);
    }
}
