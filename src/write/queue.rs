//! Background uploads: one job per key (the fs passes the inode number), retried until they succeed.
//!
//! - `submit` journals the job (sidecar next to the staged file, see `staging`) and returns at once.
//! - One tokio task per busy key runs its jobs one after another; a semaphore caps how many uploads
//!   run at once across keys (`MAX_CONCURRENT`).
//! - A newer job for a key replaces an older one that is still waiting (its staged file is removed):
//!   the staged file always holds a whole version, so only the newest one matters. A running upload
//!   is never cancelled; it finishes, then the newer one runs, replacing what the first produced.
//!   A failed upload with a newer job waiting is dropped instead of retried. Every job carries
//!   its version's creation order (`version`): a version handed over late (its RELEASE was slow
//!   while a newer one was written and closed) never replaces a newer one; it is dropped.
//! - Failures are logged at ERROR with the staged path and the reason, and retried with exponential
//!   backoff (capped at 5 minutes) forever; a full drive is retried slowly and loudly. The staged file
//!   is removed only after success.
//! - Every attempt's outcome is sent to each subscriber (`UploadEvent`), so the fs can point the
//!   inode at the new file_id. A superseded job sends no event; the job that replaced it will.
//!   The channels are unbounded: an event is never dropped (a lagging fs would otherwise leave a
//!   node on its placeholder id); the fs consumes them at once, so they hold only a burst.
//! - `completed` (key → its last landed file_id) holds only landings the fs has not applied yet:
//!   the fs calls `applied` once its node follows the event, which removes the entry; remote
//!   changes wait on `all_applied` (see `handoff`).
//! - `replaces` ids are kept current: a job still waiting when an earlier one completes, and any
//!   later job naming a copy this queue already replaced, are redirected to the newest copy. The
//!   one case left to the fs: a never-uploaded file (`replaces: None`) submitted again after its
//!   first upload finished but before the fs applied that event would leave a duplicate; the fs
//!   passes that upload's file_id (`uploaded_file_id`) as `replaces`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::sync::{Level, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::api::retry::jitter;
use crate::drive::{Drive, RemoteItem};
use crate::error::Error;
use crate::write::parts;
use crate::write::progress::{self, JobProgress, Outcome};
use crate::write::staging::{remove_staged, write_sidecar, write_sidecar_of, Closed};
use crate::write::stream::{StreamTarget, Streams, WriteStream};
use crate::write::upload::{adopt_landed, upload_file, UploadConfig, UploadTarget};

mod handoff;
mod runner;

/// Uploads running at once (each is sequential inside; two keep one slow file from blocking all).
pub const MAX_CONCURRENT: usize = 2;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const QUOTA_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A new job waits this long before it starts, so the utimensat and rename that tools make
/// right after close (rsync's temporary files, `cp -p`, `tar -x`) reach a job that is still
/// waiting, instead of aborting an upload under way. The journal makes the wait crash-safe.
const SETTLE: Duration = Duration::from_millis(200);

/// The outcome of one upload attempt of `staged` for `key`.
#[derive(Debug, Clone)]
pub struct UploadEvent {
    pub key: u64,
    pub staged: PathBuf,
    /// The new file, or why this attempt failed (a retry follows).
    pub outcome: Result<RemoteItem, String>,
}

#[derive(Debug, Clone)]
struct Job {
    target: UploadTarget,
    staged: PathBuf,
    /// Bytes to upload (counted as used space until the drive has them).
    size: u64,
    queued_at: Instant,
    /// Replayed from the journal at start: it may have landed before the crash.
    resumed: bool,
    /// The upload begun while the file was written, if any: used by the first attempt only.
    stream: Option<Arc<WriteStream>>,
    /// Attempts, bytes sent and outcome, for `status` and `sync`.
    progress: Arc<JobProgress>,
    /// The version's creation order (0: replayed, older than any made by this run).
    version: u64,
}

/// A job as `status` and `sync` see it.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub key: u64,
    pub parent_file_id: String,
    pub name: String,
    pub size: u64,
    pub running: bool,
    pub progress: Arc<JobProgress>,
}

impl Job {
    /// This version will not be uploaded: its stream need not go on.
    fn drop_stream(&self) {
        if let Some(s) = &self.stream {
            s.abandon("superseded");
        }
    }
}

/// Per-key state. The slot exists while its task runs.
struct Slot {
    waiting: Option<Job>,
    /// The job being uploaded, with the target the fs wants *now* (set_target updates it).
    running: Option<Job>,
    /// Wakes the key's task from a retry backoff when a newer job arrives.
    wake: Arc<Notify>,
    /// Stops the running attempt at once (a cancel, or a retarget the attempt cannot follow).
    /// New for each running job, so a stale signal never stops the next one.
    abort: Arc<Notify>,
    /// The file was deleted through the mount: drop what waits, and remove what a running
    /// upload produces.
    cancelled: bool,
}

pub struct UploadQueue {
    me: Weak<UploadQueue>,
    drive: Arc<dyn Drive>,
    cfg: UploadConfig,
    slots: Mutex<HashMap<u64, Slot>>,
    permits: Semaphore,
    /// One unbounded sender per subscriber: sending never fails for lag.
    events: Mutex<Vec<mpsc::UnboundedSender<UploadEvent>>>,
    /// Notified on every job completion or removal (for `drain`).
    changed: Notify,
    /// Recently replaced file_ids and their successors.
    replaced: Mutex<ReplacedIds>,
    /// key → file_id of its last completed upload, until the fs has applied it (`applied`).
    /// Written under the slots lock as the running job clears, so a caller that finds no job
    /// for a key finds its result here or already on its node.
    completed: Mutex<HashMap<u64, String>>,
    /// Notified when `completed` empties (for `all_applied`).
    applied_all: Notify,
    streams: Arc<Streams>,
    runtime: tokio::runtime::Handle,
    /// Folders of replayed jobs as listed before this run uploaded into them (see
    /// `adopt_landed`), listed once each.
    replay_folders: tokio::sync::Mutex<HashMap<String, Arc<Vec<RemoteItem>>>>,
}

impl UploadQueue {
    /// Must be called inside a tokio runtime; the queue's tasks run on it.
    pub fn new(drive: Arc<dyn Drive>, cfg: UploadConfig) -> Arc<UploadQueue> {
        let streams = Streams::new(
            drive.clone(),
            cfg.upload_while_writing,
            parts::part_size(0, cfg.part_size).unwrap_or(parts::DEFAULT_PART_SIZE),
        );
        Arc::new_cyclic(|me| UploadQueue {
            me: me.clone(),
            drive,
            cfg,
            slots: Mutex::new(Level::WRITE_QUEUE, "upload slots", HashMap::new()),
            permits: Semaphore::new(MAX_CONCURRENT),
            events: Mutex::new(Level::WRITE_EVENTS, "upload events", Vec::new()),
            changed: Notify::new(),
            replaced: Mutex::new(
                Level::WRITE_REPLACED,
                "replaced ids",
                ReplacedIds::default(),
            ),
            completed: Mutex::new(Level::WRITE_COMPLETED, "completed uploads", HashMap::new()),
            applied_all: Notify::new(),
            streams,
            runtime: tokio::runtime::Handle::current(),
            replay_folders: Default::default(),
        })
    }

    fn lock_replaced(&self) -> MutexGuard<'_, ReplacedIds> {
        self.replaced.lock()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // more than losing the queue; keep going.
        self.slots.lock()
    }

    /// Queue `staged` for upload. A newer job for the same key supersedes an older one still
    /// waiting (the older staging file is then removed); a running one finishes first. Returns at
    /// once; the job is journaled before this returns.
    pub fn submit(&self, key: u64, target: UploadTarget, staged: PathBuf) {
        self.submit_streamed(key, target, staged, None, Closed::Now);
    }

    /// `submit` of a version a previous run journaled and did not finish: before sending it,
    /// the queue checks whether it landed before the crash (`adopt_landed`). Replayed jobs
    /// must all be submitted before this run uploads anything else into their folders.
    pub fn submit_replayed(&self, key: u64, target: UploadTarget, staged: PathBuf) {
        self.submit(key, target, staged);
        if let Some(job) = self.lock().get_mut(&key).and_then(|s| s.waiting.as_mut()) {
            job.resumed = true;
        }
    }

    /// The listing of a replayed job's folder, as it was before this run uploaded into it.
    async fn replay_folder(&self, folder: &str) -> crate::error::Result<Arc<Vec<RemoteItem>>> {
        let mut folders = self.replay_folders.lock().await;
        if let Some(items) = folders.get(folder) {
            return Ok(items.clone());
        }
        let items = Arc::new(self.drive.list_folder(folder).await?);
        folders.insert(folder.to_string(), items.clone());
        Ok(items)
    }

    /// A writer for a file that starts empty at `staged`: follow it, uploading as it writes
    /// (None when that is off). Pass the stream to `submit_streamed` at close.
    pub fn follow(&self, staged: &Path, target: StreamTarget) -> Option<Arc<WriteStream>> {
        self.streams.follow(staged, target)
    }

    /// `submit`, for a file that was uploading while it was written. `journal` is how its
    /// entry is written: `Closed::Synced` when a FLUSH already made it durable.
    pub fn submit_streamed(
        &self,
        key: u64,
        mut target: UploadTarget,
        staged: PathBuf,
        stream: Option<Arc<WriteStream>>,
        journal: Closed,
    ) {
        self.resolve_replaces(&mut target);
        if let Err(e) = write_sidecar(&staged, &target, journal) {
            tracing::warn!(path = %staged.display(), "could not journal upload job (it will still run): {e}");
        }
        if let Some(old) = self.enqueue(key, target, staged, stream, 0) {
            remove_staged(&old);
        }
    }

    /// The fs may not have applied our last event yet and still name a copy we replaced.
    fn resolve_replaces(&self, target: &mut UploadTarget) {
        if let Some(old) = target.replaces.take() {
            target.replaces = Some(self.lock_replaced().resolve(old));
        }
    }

    /// `submit_streamed` without the journal: for a caller that holds a lock the lookup path
    /// takes (the fs's upload gate), which journals before (`write_sidecar_of`) and calls
    /// `rejournal` once the lock is dropped, so the entry names the job's final target.
    /// No disk I/O but a stat. Returns the staged file of a waiting version this one
    /// superseded, or of this one if a newer `version` is already queued: the caller removes
    /// it (`remove_staged`) once it holds no such lock.
    #[must_use = "a superseded staged file must be removed"]
    pub fn enqueue(
        &self,
        key: u64,
        mut target: UploadTarget,
        staged: PathBuf,
        stream: Option<Arc<WriteStream>>,
        version: u64,
    ) -> Option<PathBuf> {
        self.resolve_replaces(&mut target);
        let size = std::fs::metadata(&staged).map_or(0, |m| m.len());
        let job = Job {
            target,
            staged,
            size,
            queued_at: Instant::now(),
            resumed: false,
            stream,
            progress: JobProgress::new(),
            version,
        };
        let mut slots = self.lock();
        let spawn = !slots.contains_key(&key);
        let slot = slots.entry(key).or_insert_with(|| Slot {
            waiting: None,
            running: None,
            wake: Arc::new(Notify::new()),
            abort: Arc::new(Notify::new()),
            cancelled: false,
        });
        let newest = [&slot.waiting, &slot.running]
            .into_iter()
            .flatten()
            .map(|j| j.version)
            .max();
        if newest.is_some_and(|v| v > version) {
            // Handed over after a newer version of the same file: it must not replace that.
            tracing::debug!(key, staged = %job.staged.display(), "older version dropped: a newer one is queued");
            job.drop_stream();
            job.progress.end(Outcome::Superseded);
            return Some(job.staged);
        }
        slot.cancelled = false;
        let mut superseded = None;
        if let Some(old) = slot.waiting.replace(job.clone()) {
            old.drop_stream();
            old.progress.end(Outcome::Superseded);
            if old.staged != job.staged && !is_running(slot, &old.staged) {
                tracing::debug!(key, old = %old.staged.display(), "superseded by a newer version");
                superseded = Some(old.staged);
            }
        }
        slot.wake.notify_one();
        drop(slots);
        if spawn {
            if let Some(me) = self.me.upgrade() {
                self.runtime.spawn(async move { me.run_key(key).await });
            }
        }
        superseded
    }

    /// Jobs not yet uploaded (running or waiting).
    pub fn pending(&self) -> usize {
        self.lock()
            .values()
            .map(|s| usize::from(s.waiting.is_some()) + usize::from(s.running.is_some()))
            .sum()
    }

    /// Bytes of the jobs not uploaded yet: `statfs` counts them as used.
    pub fn pending_bytes(&self) -> u64 {
        self.lock()
            .values()
            .flat_map(|s| s.waiting.iter().chain(s.running.iter()))
            .map(|j| j.size)
            .sum()
    }

    /// Every job waiting or running, with its progress record.
    pub fn jobs(&self) -> Vec<JobInfo> {
        let slots = self.lock();
        let mut out = Vec::new();
        for (key, slot) in slots.iter() {
            for (job, running) in [(&slot.running, true), (&slot.waiting, false)] {
                if let Some(j) = job {
                    out.push(JobInfo {
                        key: *key,
                        parent_file_id: j.target.parent_file_id.clone(),
                        name: j.target.name.clone(),
                        size: j.size,
                        running,
                        progress: j.progress.clone(),
                    });
                }
            }
        }
        out
    }

    pub fn is_pending(&self, key: u64) -> bool {
        self.lock()
            .get(&key)
            .is_some_and(|s| s.waiting.is_some() || s.running.is_some())
    }

    /// Wait until every job is uploaded or `timeout` passes; returns how many are still pending
    /// (their staged files and journal entries stay for a later replay).
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = Some(Instant::now() + timeout);
        if wait_until(&self.changed, deadline, || self.pending() == 0).await {
            0
        } else {
            self.pending()
        }
    }

    /// The file is being deleted through the mount: the waiting job is dropped and a running
    /// attempt stopped at once (an upload that completed at that moment is removed from the
    /// drive, without an event). The versions taken out are returned with their staged files
    /// and journal entries still on disk: the caller discards them once the deletion is done
    /// on the drive, or submits them again if it failed, so a failed unlink loses nothing.
    pub fn cancel(&self, key: u64) -> Vec<(UploadTarget, PathBuf)> {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&key) else {
            return Vec::new();
        };
        let mut taken: Vec<(UploadTarget, PathBuf)> = Vec::new();
        // Oldest first: submitted again in this order, the newest ends up waiting.
        for job in [slot.running.clone(), slot.waiting.take()]
            .into_iter()
            .flatten()
        {
            job.drop_stream();
            job.progress.end(Outcome::Cancelled);
            if !taken.iter().any(|(_, staged)| *staged == job.staged) {
                taken.push((job.target, job.staged));
            }
        }
        slot.cancelled = true;
        slot.wake.notify_one();
        slot.abort.notify_one();
        drop(slots);
        self.changed.notify_waiters();
        taken
    }

    /// Wait until no upload of `key` is under way. After `cancel`, the running attempt stops at
    /// once (an upload whose completion raced the cancel is removed from the drive before this
    /// returns), so nothing of a deleted file lands on the drive afterwards.
    pub async fn settle(&self, key: u64) {
        let stopped = || self.lock().get(&key).is_none_or(|s| s.running.is_none());
        wait_until(&self.changed, None, stopped).await;
    }

    /// Rewrite the journal entry of queued version `staged` from its job's target, if it says
    /// something else (`Closed::Synced`: the bytes are durable) or was written to since
    /// (`Closed::Now`). Nothing when the version is no longer queued.
    pub fn rejournal(&self, staged: &Path, closed: Closed) {
        if let Err(e) = write_sidecar_of(staged, closed, || self.job_target(staged)) {
            tracing::warn!(path = %staged.display(), "could not update upload journal: {e}");
        }
    }

    /// `retarget`, then its journal entries written at once.
    pub fn set_target(&self, key: u64, f: impl FnOnce(&mut UploadTarget)) -> bool {
        self.retarget(key, f).write(self)
    }

    /// Change where a queued job goes (rename/move, or a new mtime, while queued). A waiting job
    /// is updated (its journal entry is rewritten by `Rejournal::write`, which the caller runs
    /// once it holds no lock of the lookup path); a running attempt is stopped and started again with the new
    /// target, so the old name is never created on the drive after the rename returned (an
    /// upload that had already landed is renamed right after it completes).
    /// `queued` is false when the key has no job: the change is then the caller's to make.
    pub fn retarget(&self, key: u64, f: impl FnOnce(&mut UploadTarget)) -> Rejournal {
        let none = Rejournal {
            queued: false,
            staged: Vec::new(),
        };
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&key) else {
            return none;
        };
        let mut target = match (&slot.waiting, &slot.running) {
            (Some(j), _) | (None, Some(j)) => j.target.clone(),
            (None, None) => return none,
        };
        let base_replaces = target.replaces.clone();
        f(&mut target);
        let mut journal = Vec::new();
        if let Some(j) = slot.waiting.as_mut() {
            j.target = target.clone();
            journal.push(j.staged.clone());
        }
        if let Some(j) = slot.running.as_mut() {
            let before = (&j.target.parent_file_id, &j.target.name, j.target.mtime);
            if before != (&target.parent_file_id, &target.name, target.mtime) {
                slot.abort.notify_one();
            }
            // Keep the running job's `replaces` (it must retire what it was started against),
            // unless the change names a new one (a rename onto an existing file).
            let named = (target.replaces != base_replaces).then(|| target.replaces.clone());
            let replaces = named.unwrap_or_else(|| j.target.replaces.clone());
            if replaces != j.target.replaces {
                slot.abort.notify_one();
            }
            j.target = UploadTarget { replaces, ..target };
            if !journal.contains(&j.staged) {
                journal.push(j.staged.clone());
            }
        }
        Rejournal {
            queued: true,
            staged: journal,
        }
    }

    /// The target of the queued job of version `staged`, as it is now.
    fn job_target(&self, staged: &Path) -> Option<UploadTarget> {
        self.lock().values().find_map(|s| {
            [&s.waiting, &s.running]
                .into_iter()
                .flatten()
                .find(|j| j.staged == staged)
                .map(|j| j.target.clone())
        })
    }

    /// Rewrite the journal entry of a queued version from its job's target as it is when the
    /// entry is written (not when it was changed), so concurrent changes cannot leave an older
    /// target in the journal. Lock order: the journal's, then the slots'.
    fn journal(&self, staged: &Path) {
        if let Err(e) = write_sidecar_of(staged, Closed::Keep, || self.job_target(staged)) {
            tracing::warn!(path = %staged.display(), "could not update upload journal: {e}");
        }
    }
}

/// Journal entries a retarget changed, to write once the caller holds no lock of the lookup
/// path (the journal fsyncs). Written under each entry's own lock from the job's target as it
/// is then, so writers racing on one entry leave the newest target.
#[must_use = "the journal entries must be written (Rejournal::write)"]
pub struct Rejournal {
    /// The key had a job (false: the caller makes the change itself).
    pub queued: bool,
    staged: Vec<PathBuf>,
}

impl Rejournal {
    /// Write the entries; returns `queued`.
    pub fn write(self, queue: &UploadQueue) -> bool {
        for staged in &self.staged {
            queue.journal(staged);
        }
        self.queued
    }
}

/// file_id → the file_id that replaced it, for the last `REPLACED_MEMORY` replacements.
#[derive(Default)]
struct ReplacedIds {
    next: HashMap<String, String>,
    order: VecDeque<String>,
}

const REPLACED_MEMORY: usize = 4096;

impl ReplacedIds {
    fn record(&mut self, old: String, new: String) {
        if self.next.insert(old.clone(), new).is_none() {
            self.order.push_back(old);
        }
        while self.order.len() > REPLACED_MEMORY {
            if let Some(gone) = self.order.pop_front() {
                self.next.remove(&gone);
            }
        }
    }

    /// The newest successor of `id` (bounded walk: ids never cycle, but be safe).
    fn resolve(&self, mut id: String) -> String {
        for _ in 0..64 {
            match self.next.get(&id) {
                Some(n) if *n != id => id = n.clone(),
                _ => break,
            }
        }
        id
    }
}

/// Waits until `done` holds, checking again each time `notify` fires, until `deadline` (None:
/// no limit). Whether it holds. The waiter registers before each check, so no wake-up is lost.
async fn wait_until(notify: &Notify, deadline: Option<Instant>, done: impl Fn() -> bool) -> bool {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return true;
        }
        match deadline {
            Some(deadline) => {
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return done();
                }
            }
            None => notified.await,
        }
    }
}

fn is_running(slot: &Slot, staged: &std::path::Path) -> bool {
    slot.running.as_ref().is_some_and(|r| r.staged == staged)
}
