//! The change poller of a mount: every `--poll-interval` it asks the `Detector` what changed on
//! the drive, applies it through the fs core (`FsCore::apply_remote_*`), sends the kernel its
//! invalidations and runs the `--on-change` hook. With the search feed, which cannot see trash
//! and deletes, it also recounts folders in use (their listing is cached): a few per poll, in
//! turn, one `search` call each, and lists afresh those whose count moved. `refresh` does the
//! same on demand for named folders, polling on or off.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use super::detect::{Detector, FeedKind};
use super::kernel::Kernel;
use crate::control::proto::PollStatus;
use crate::drive::Drive;
use crate::error::{Error, Result};
use crate::fs::core::Applied;
use crate::fs::FsCore;
use crate::sync::{Level, Mutex};

/// What the poller is told at mount.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Zero: no polling (`refresh` still works).
    pub interval: Duration,
    pub on_change: Option<String>,
    pub mountpoint: PathBuf,
    /// Where the detector's position is kept across mounts (none: never kept).
    pub position_file: Option<PathBuf>,
    /// A saved position younger than this is gone on from; an older one is ignored (the
    /// listings stored with it have expired).
    pub resume_within: Duration,
}

pub struct Poller {
    core: Arc<FsCore>,
    drive: Arc<dyn Drive>,
    kernel: Kernel,
    cfg: PollConfig,
    detector: tokio::sync::Mutex<Option<Detector>>,
    status: Mutex<PollStatus>,
    /// Where the next round of folder recounts starts.
    next_folder: AtomicUsize,
}

/// How long the start of a mount waits for the first poll (which catches up with what changed
/// since the last mount); past it, the poll goes on in the background.
const START_WAIT: Duration = Duration::from_secs(15);

impl Poller {
    /// The mount's poller. With polling on, the detector starts (or goes on from the last
    /// mount's position, applying what changed since) before this returns, so the mount never
    /// serves a stored listing older than the drive's state; then it polls every interval.
    pub async fn start(core: Arc<FsCore>, drive: Arc<dyn Drive>, cfg: PollConfig) -> Arc<Poller> {
        let on = !cfg.interval.is_zero();
        let status = PollStatus {
            interval_secs: cfg.interval.as_secs_f64(),
            feed: if on { "starting" } else { "off" }.into(),
            ..PollStatus::default()
        };
        let poller = Arc::new(Poller {
            core,
            drive,
            kernel: Kernel::default(),
            cfg,
            detector: tokio::sync::Mutex::new(None),
            status: Mutex::new(Level::LEAF, "poll status", status),
            next_folder: AtomicUsize::new(0),
        });
        if on {
            let first = tokio::time::timeout(START_WAIT, poller.poll_once()).await;
            let go_on = match first {
                Ok(result) => poller.carry_on(result),
                Err(_) => {
                    warn!(
                        "looking for changes on the drive takes long; going on in the background"
                    );
                    true
                }
            };
            if go_on {
                tokio::spawn(poller.clone().run());
            }
        }
        poller
    }

    /// Where kernel invalidations go, once the FUSE session exists.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub fn status(&self) -> PollStatus {
        let mut s = self.status.lock().clone();
        (s.polls, s.changes_applied, s.invalidations) = crate::metrics::poll_counts();
        s
    }

    async fn run(self: Arc<Self>) {
        let start = tokio::time::Instant::now() + self.cfg.interval;
        let mut tick = tokio::time::interval_at(start, self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = self.poll_once().await;
            if !self.carry_on(result) {
                return;
            }
        }
    }

    /// Notes a poll's failure; false when polling cannot work on this drive at all.
    fn carry_on(&self, result: Result<()>) -> bool {
        match result {
            Ok(()) => true,
            Err(e @ Error::NotSupported(_)) => {
                warn!("this drive cannot be asked what changed ({e}): no polling; alipanfs refresh re-reads folders");
                let mut s = self.status.lock();
                s.feed = "unavailable".into();
                s.last_error = Some(e.to_string());
                false
            }
            Err(e) => {
                warn!("looking for changes on the drive failed: {e}");
                self.status.lock().last_error = Some(e.to_string());
                true
            }
        }
    }

    /// Starts the detector: from the last mount's position if one is saved and young enough.
    /// True when resumed (its first poll reports what changed since).
    async fn start_detector(&self) -> Result<(Detector, bool)> {
        let saved = self
            .cfg
            .position_file
            .as_deref()
            .and_then(|f| super::saved::load(f, self.cfg.resume_within));
        let (detector, resumed) = match saved {
            Some(pos) => Detector::resume(self.drive.clone(), pos).await?,
            None => (Detector::start(self.drive.clone()).await?, false),
        };
        let feed = feed_name(detector.kind());
        info!(feed, interval = ?self.cfg.interval, resumed, "looking for changes made on the drive elsewhere");
        self.status.lock().feed = feed.into();
        Ok((detector, resumed))
    }

    /// One poll (the first one starts the detector, and polls only when it goes on from a
    /// saved position).
    async fn poll_once(&self) -> Result<()> {
        let mut guard = self.detector.lock().await;
        let detector = match guard.take() {
            Some(detector) => guard.insert(detector),
            None => {
                let (detector, resumed) = self.start_detector().await?;
                let detector = guard.insert(detector);
                if !resumed {
                    self.save_position(detector);
                    return Ok(());
                }
                detector
            }
        };
        let found = detector.poll().await?;
        let mut calls = found.calls;
        let mut applied = self.core.apply_remote_items(&found.items).await;
        let gone = self
            .core
            .apply_remote_removals(&found.gone, &found.gone_from);
        applied.merge(gone.await);
        if found.overflow {
            self.core.drop_all_stored_listings();
        }
        if detector.kind() == FeedKind::Search || found.overflow {
            calls += self
                .revalidate(detector, found.overflow, &mut applied)
                .await;
        }
        self.save_position(detector);
        drop(guard);
        let invalidations = self.publish(&mut applied).await;
        crate::metrics::poll(applied.changes, invalidations);
        let mut s = self.status.lock();
        s.last_poll_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        s.last_calls = calls;
        s.last_found = (found.items.len() + found.gone.len()) as u64;
        s.last_error = None;
        Ok(())
    }

    fn save_position(&self, detector: &Detector) {
        if let (Some(file), Some(pos)) = (&self.cfg.position_file, detector.position()) {
            super::saved::save(file, &pos);
        }
    }

    /// Folders recounted per poll at most: about a quarter of the other-calls budget over an
    /// interval, at least two.
    fn recount_budget(&self) -> usize {
        (self.cfg.interval.as_secs_f64() * 4.0).clamp(2.0, 100.0) as usize
    }

    /// Recounts folders in use, in turn, and lists afresh those whose count on the drive moved
    /// (after an overflow: lists all of them afresh). Returns the recount calls made.
    async fn revalidate(&self, detector: &Detector, all: bool, out: &mut Applied) -> u32 {
        let folders = self.core.cached_folders();
        if folders.is_empty() {
            return 0;
        }
        let n = if all {
            folders.len()
        } else {
            self.recount_budget().min(folders.len())
        };
        let start = self.next_folder.fetch_add(n, Ordering::Relaxed) % folders.len();
        let mut calls = 0;
        for (dir, id, listed) in folders.iter().cycle().skip(start).take(n) {
            // After an overflow every folder in use is read again, and so is one the mount
            // edited since its listing (its count cannot tell).
            if let (false, Some(listed)) = (all, listed) {
                calls += 1;
                match detector.folder_count(id).await {
                    Ok(count) if count == *listed as u64 => continue,
                    Ok(_) | Err(Error::NotSupported(_)) => {}
                    Err(e) => {
                        debug!(dir, error = %e, "cannot recount a folder");
                        continue;
                    }
                }
            }
            match self.core.relist_folder(*dir).await {
                Ok(applied) => out.merge(applied),
                Err(e) => debug!(dir, error = %e, "cannot list a recounted folder"),
            }
        }
        calls
    }

    /// Settles conflicts and rescues files of folders deleted elsewhere, then tells the kernel
    /// and the hook what `applied` changed; returns the invalidations sent.
    async fn publish(&self, applied: &mut Applied) -> u64 {
        self.core.settle_remote(applied).await;
        if applied.is_empty() {
            return 0;
        }
        let sent = self.kernel.invalidate(applied).await;
        let folders = self.core.paths_of(&applied.folders);
        debug!(
            changes = applied.changes,
            invalidations = sent,
            ?folders,
            "applied changes made elsewhere"
        );
        if let (Some(cmd), false) = (&self.cfg.on_change, folders.is_empty()) {
            super::hook::spawn(cmd, &self.cfg.mountpoint, folders);
        }
        sent
    }

    /// `alipanfs refresh`: lists the folders at `paths` (relative to the root) afresh now;
    /// once this returns, the new state is visible. Returns the changes found.
    pub async fn refresh(&self, paths: &[String]) -> std::result::Result<u64, String> {
        let mut applied = Applied::default();
        let whole = [String::new()];
        let paths = if paths.is_empty() { &whole[..] } else { paths };
        for path in paths {
            let dir = self
                .core
                .folder_at(path)
                .await
                .map_err(|e| format!("{}: {e}", shown(path)))?;
            let done = self
                .core
                .relist_folder(dir)
                .await
                .map_err(|e| format!("{}: {e}", shown(path)))?;
            applied.merge(done);
        }
        let changes = applied.changes;
        let sent = self.publish(&mut applied).await;
        crate::metrics::remote_changes(changes, sent);
        Ok(changes)
    }
}

fn feed_name(kind: FeedKind) -> &'static str {
    match kind {
        FeedKind::Delta => "delta",
        FeedKind::Search => "search+revalidation",
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "the mount root"
    } else {
        path
    }
}
