//! The upload queue's job runner: one task per busy key runs its jobs in turn; each job is
//! attempted until it lands, is superseded, or is cancelled.

use super::*;

impl UploadQueue {
    /// The key's task: run waiting jobs until none is left, then retire the slot.
    ///
    /// The task queues for an upload slot before it takes its job (which stays `waiting`
    /// meanwhile, so a newer version still replaces it), and only then allocates the upload's
    /// own state, several KiB: a burst of 10,000 closed files costs 10,000 small waiting tasks,
    /// not 10,000 large ones.
    pub(super) async fn run_key(self: Arc<Self>, key: u64) {
        loop {
            match self.next_job(key, false) {
                Next::Settling(wait) => {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Next::Gone => return self.retired(),
                Next::Ready(_) => {}
            }
            let Ok(permit) = self.permits.acquire().await else {
                return;
            };
            let job = match self.next_job(key, true) {
                Next::Ready(Some(job)) => job,
                Next::Ready(None) => continue,
                Next::Settling(wait) => {
                    // A newer version arrived while this one queued for the slot.
                    drop(permit);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Next::Gone => return self.retired(),
            };
            Box::pin(self.run_job(key, job, permit)).await;
            self.changed.notify_waiters();
        }
    }

    /// What `key`'s task does next; with `take`, a settled job moves from waiting to running.
    /// With none waiting, the slot is retired.
    fn next_job(&self, key: u64, take: bool) -> Next {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&key) else {
            return Next::Gone;
        };
        let Some(job) = slot.waiting.as_ref() else {
            slots.remove(&key);
            return Next::Gone;
        };
        let young = SETTLE.saturating_sub(job.queued_at.elapsed());
        if !young.is_zero() {
            return Next::Settling(young);
        }
        if !take {
            return Next::Ready(None);
        }
        let job = slot.waiting.take();
        slot.running = job.clone();
        slot.abort = Arc::new(Notify::new());
        Next::Ready(job)
    }

    /// The key's task ends: waiters see it, and when no upload is left the memory the burst
    /// used goes back to the system.
    fn retired(&self) {
        self.changed.notify_waiters();
        let mut slots = self.lock();
        if slots.is_empty() {
            // A burst's slots (a few hundred bytes each) leave their table's capacity behind.
            slots.shrink_to(64);
            drop(slots);
            crate::memory::release_after_burst();
        }
    }

    /// Upload one job until it lands, a newer job supersedes it, or a delete cancels it.
    async fn run_job(&self, key: u64, job: Job, permit: SemaphorePermit<'_>) {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        let mut stream = job.stream.clone();
        let mut permit = Some(permit);
        loop {
            attempt += 1;
            let Some(abort) = self.lock().get(&key).map(|s| s.abort.clone()) else {
                return;
            };
            job.progress.begin_attempt();
            let first = stream.take();
            let upload = self.attempt(key, &job, attempt, first.as_deref(), permit.take());
            let result = tokio::select! {
                result = progress::scope(job.progress.clone(), upload) => result,
                () = abort.notified() => return self.stopped(key, &job, first.as_deref()).await,
            };
            match result {
                None => {
                    job.progress.end(Outcome::Superseded);
                    tracing::info!(key, path = %job.staged.display(), "older version skipped: a newer version is queued");
                    self.drop_job(key, &job);
                    return;
                }
                Some(Ok((item, uploaded))) => return self.landed(key, &job, item, uploaded).await,
                Some(Err(e)) => {
                    if self.failed(key, &job, e, attempt, &mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// One attempt: None when a newer version arrived while it waited for an upload slot.
    async fn attempt(
        &self,
        key: u64,
        job: &Job,
        attempt: u32,
        first: Option<&WriteStream>,
        permit: Option<SemaphorePermit<'_>>,
    ) -> Option<crate::error::Result<(RemoteItem, UploadTarget)>> {
        // The first attempt runs on the slot its task queued for; a retry queues again.
        let _permit = match permit {
            Some(permit) => Ok(permit),
            None => self.permits.acquire().await,
        };
        // A newer version may have arrived while we queued for a slot: skip straight to it.
        if self.is_superseded(key) {
            return None;
        }
        let target = self
            .running_target(key)
            .unwrap_or_else(|| job.target.clone());
        if job.resumed && attempt == 1 {
            if let Some(item) = self.landed_before_restart(key, job, &target).await {
                return Some(Ok((item, target)));
            }
        }
        let result = upload_file(&*self.drive, &self.cfg, &target, &job.staged, first).await;
        Some(result.map(|item| (item, target)))
    }

    /// A replayed job's version, if it landed before the crash (then it is not sent again).
    async fn landed_before_restart(
        &self,
        key: u64,
        job: &Job,
        target: &UploadTarget,
    ) -> Option<RemoteItem> {
        let landed = match self.replay_folder(&target.parent_file_id).await {
            Ok(siblings) => {
                adopt_landed(&*self.drive, &self.cfg, target, &job.staged, &siblings).await
            }
            Err(e) => Err(e),
        };
        landed.unwrap_or_else(|e| {
            tracing::debug!(
                key,
                "could not check for an upload landed before the restart: {e}"
            );
            None
        })
    }

    /// The running attempt was stopped by a delete (the job ends) or a rename/new mtime (it
    /// waits again under its new target).
    async fn stopped(&self, key: u64, job: &Job, first: Option<&WriteStream>) {
        if let Some(s) = first {
            s.abandon("stopped by a rename or delete");
        }
        // A session stopped as it completed may have landed: remove what this
        // attempt created, so nothing appears under the old name or after a delete.
        self.remove_sessions(key, &job.progress.take_sessions())
            .await;
        crate::write::resume::forget(&job.staged);
        if self.is_cancelled(key) {
            job.progress.end(Outcome::Cancelled);
            tracing::info!(key, path = %job.staged.display(), "upload stopped: the file was deleted");
            self.clear_cancelled(key);
            return;
        }
        tracing::debug!(
            key,
            "upload stopped for its new name or mtime; queued again"
        );
        self.requeue(key, job);
    }

    /// The version landed: follow renames made meanwhile, then record and report it (or remove
    /// it, if the file was deleted meanwhile).
    async fn landed(&self, key: u64, job: &Job, mut item: RemoteItem, uploaded: UploadTarget) {
        // Apply renames/moves made meanwhile, until `finish` sees no newer one: a
        // rename or delete arriving at any moment is either applied here or finds
        // no job and the result in `uploaded_file_id`.
        let mut applied = uploaded.clone();
        let outcome = loop {
            let (moved, now) = self.follow_target(key, &applied, item).await;
            item = moved;
            applied = now;
            match self.finish(key, job, &uploaded, &applied, &item) {
                Finish::Retarget => continue,
                done => break done,
            }
        };
        if outcome == Finish::Cancelled {
            job.progress.end(Outcome::Cancelled);
            tracing::info!(key, file_id = %item.file_id, "file deleted while uploading; removing the upload");
            let removed = if self.cfg.delete_permanently {
                self.drive.delete(&item.file_id).await
            } else {
                self.drive.trash(&item.file_id).await
            };
            if let Err(e) = removed {
                tracing::error!(key, file_id = %item.file_id, "could not remove the upload of a deleted file: {e}");
            }
            self.clear_cancelled(key);
            return;
        }
        self.send(UploadEvent {
            key,
            staged: job.staged.clone(),
            outcome: Ok(item),
        });
    }

    /// An attempt failed: report it, then wait for the retry. True when the job ends (its
    /// staged file vanished, or a newer version arrived meanwhile).
    async fn failed(
        &self,
        key: u64,
        job: &Job,
        e: Error,
        attempt: u32,
        backoff: &mut Duration,
    ) -> bool {
        let vanished = match &e {
            Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound && !job.staged.exists() => {
                Some(format!("staged file vanished: {io}"))
            }
            _ => None,
        };
        if let Some(why) = vanished {
            // Nothing left to upload: retrying would fail forever.
            tracing::error!(key, path = %job.staged.display(), "staged file vanished; upload abandoned");
            job.progress.failed(why.clone(), true);
            job.progress.end(Outcome::Abandoned);
            self.send(UploadEvent {
                key,
                staged: job.staged.clone(),
                outcome: Err(why),
            });
            self.drop_job(key, job);
            return true;
        }
        let quota = matches!(e, Error::QuotaExhausted(_));
        job.progress
            .failed(e.to_string(), quota || !e.is_transient());
        if quota {
            *backoff = (*backoff).max(QUOTA_BACKOFF);
        }
        let wait = jitter(*backoff);
        if quota {
            tracing::error!(key, path = %job.staged.display(), attempt,
                "UPLOAD BLOCKED: the drive is full; free space on the drive. Retrying in {wait:?}: {e}");
        } else {
            tracing::error!(key, path = %job.staged.display(), attempt,
                "upload failed, retrying in {wait:?}: {e}");
        }
        self.send(UploadEvent {
            key,
            staged: job.staged.clone(),
            outcome: Err(e.to_string()),
        });
        if self.wait_or_superseded(key, wait).await {
            job.progress.end(Outcome::Superseded);
            tracing::info!(key, path = %job.staged.display(), "failed older version dropped: a newer version is queued");
            self.drop_job(key, job);
            return true;
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        false
    }

    /// A retargeted job goes back to waiting (with the settle delay again, so that a burst of
    /// renames costs one upload), unless a newer version already waits.
    fn requeue(&self, key: u64, job: &Job) {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&key) else {
            return;
        };
        let Some(running) = slot.running.take() else {
            return;
        };
        if slot.waiting.is_none() {
            slot.waiting = Some(Job {
                queued_at: Instant::now(),
                stream: None,
                ..running
            });
        } else if slot.waiting.as_ref().is_none_or(|w| w.staged != job.staged) {
            job.progress.end(Outcome::Superseded);
            drop(slots);
            remove_staged(&job.staged);
        }
    }

    async fn remove_sessions(&self, key: u64, file_ids: &[String]) {
        for file_id in file_ids {
            let removed = if self.cfg.delete_permanently {
                self.drive.delete(file_id).await
            } else {
                self.drive.trash(file_id).await
            };
            match removed {
                Ok(_) => tracing::debug!(key, file_id, "removed what a stopped upload created"),
                Err(Error::NotFound(_) | Error::InRecycleBin(_)) => {}
                Err(e) => tracing::warn!(
                    key,
                    file_id,
                    "could not remove what a stopped upload created: {e}"
                ),
            }
        }
    }

    fn is_cancelled(&self, key: u64) -> bool {
        self.lock().get(&key).is_some_and(|s| s.cancelled)
    }

    fn is_superseded(&self, key: u64) -> bool {
        self.lock()
            .get(&key)
            .is_some_and(|s| s.waiting.is_some() || s.cancelled)
    }

    fn running_target(&self, key: u64) -> Option<UploadTarget> {
        self.lock()
            .get(&key)
            .and_then(|s| s.running.as_ref())
            .map(|j| j.target.clone())
    }

    /// Sleep `backoff`, waking early if a newer job arrives. True when superseded.
    async fn wait_or_superseded(&self, key: u64, backoff: Duration) -> bool {
        let deadline = Instant::now() + backoff;
        let Some(wake) = self.lock().get(&key).map(|s| s.wake.clone()) else {
            return false;
        };
        loop {
            if self.is_superseded(key) {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = wake.notified() => {}
            }
        }
    }

    /// The running job stopped because of a cancel: its staged file is the canceller's.
    fn clear_cancelled(&self, key: u64) {
        if let Some(slot) = self.lock().get_mut(&key) {
            slot.running = None;
            if slot.waiting.is_none() {
                slot.cancelled = false;
            }
        }
    }

    /// Forget a job that will not be uploaded (superseded or unreadable), with its staged file.
    fn drop_job(&self, key: u64, job: &Job) {
        job.drop_stream();
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(&key) {
            slot.running = None;
            // After a cancel, the staged file is the canceller's (see `cancel`).
            let keep = slot.cancelled
                || slot
                    .waiting
                    .as_ref()
                    .is_some_and(|w| w.staged == job.staged);
            if slot.waiting.is_none() {
                slot.cancelled = false;
            }
            drop(slots);
            if !keep {
                remove_staged(&job.staged);
            }
        }
    }

    /// Success bookkeeping, atomic with respect to `set_target` and `cancel`: unless a newer
    /// target or a cancel arrived, the waiting job (if any) now replaces the file we just made,
    /// the result is recorded, the staged file goes and the slot's running job clears.
    fn finish(
        &self,
        key: u64,
        job: &Job,
        uploaded: &UploadTarget,
        applied: &UploadTarget,
        item: &RemoteItem,
    ) -> Finish {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&key) else {
            return Finish::Done;
        };
        if slot.cancelled {
            // The staged file is the canceller's (see `cancel`). The job stays running until
            // its result is removed from the drive, so `settle` waits for that.
            return Finish::Cancelled;
        }
        if let Some(want) = slot.running.as_ref().map(|j| &j.target) {
            if want.parent_file_id != applied.parent_file_id || want.name != applied.name {
                return Finish::Retarget;
            }
        }
        if let Some(old) = &uploaded.replaces {
            self.lock_replaced()
                .record(old.clone(), item.file_id.clone());
        }
        self.completed.lock().insert(key, item.file_id.clone());
        job.progress.end(Outcome::Uploaded);
        slot.running = None;
        let mut reused = false;
        let mut journal = None;
        if let Some(w) = slot.waiting.as_mut() {
            reused = w.staged == job.staged;
            // The newer version meant to replace "the current copy"; that is ours now.
            if w.target.replaces == uploaded.replaces {
                w.target.replaces = Some(item.file_id.clone());
                journal = Some(w.staged.clone());
            }
        }
        drop(slots);
        if let Some(staged) = journal {
            self.journal(&staged);
        }
        if !reused {
            remove_staged(&job.staged);
        }
        Finish::Done
    }

    /// If the fs renamed/moved the file while it was uploading, apply that now.
    async fn follow_target(
        &self,
        key: u64,
        uploaded: &UploadTarget,
        item: RemoteItem,
    ) -> (RemoteItem, UploadTarget) {
        let Some(want) = self.running_target(key) else {
            return (item, uploaded.clone());
        };
        if want.parent_file_id == uploaded.parent_file_id && want.name == uploaded.name {
            return (item, uploaded.clone());
        }
        let result = if want.parent_file_id != uploaded.parent_file_id {
            let new_name = (want.name != item.name).then_some(want.name.as_str());
            match self
                .drive
                .move_item(&item.file_id, &want.parent_file_id, new_name)
                .await
            {
                Ok(r) if r.exist => Err(Error::AlreadyExists(want.name.clone())),
                Ok(_) => self.drive.get(&item.file_id).await,
                Err(e) => Err(e),
            }
        } else {
            self.drive.rename(&item.file_id, &want.name).await
        };
        match result {
            Ok(moved) => (moved, want),
            Err(e) => {
                // Not retried: the item keeps its uploaded name, visible in the log and listing.
                tracing::error!(key, file_id = %item.file_id, from = %uploaded.name, to = %want.name,
                    "uploaded, but could not apply the rename/move made meanwhile: {e}");
                (item, want)
            }
        }
    }
}

/// How a successful upload ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Done,
    /// A rename/move arrived after the last one was applied: apply it first.
    Retarget,
    /// The file was deleted meanwhile: remove the upload.
    Cancelled,
}

/// What a key's task does next (`UploadQueue::next_job`).
enum Next {
    /// The waiting job is younger than `SETTLE`: wait this long.
    Settling(Duration),
    /// A job is ready (taken, when asked to).
    Ready(Option<Job>),
    /// No job is left; the slot is retired.
    Gone,
}
