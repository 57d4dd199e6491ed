//! Listings stored off the listing path. Storing one is a write and two fsyncs, and an fsync
//! waits for the disk: while a large file is being flushed (a 2 GiB `dd` closing), it took up
//! to 0.6 s, and `ls` of a folder never listed before waited for it. One thread now stores
//! them from a bounded queue; the `ls` only queues. A full queue drops the save (a listing not
//! stored costs one list call later, never a wrong answer), and the drop-versus-save check
//! still happens at the rename (see `listings`), so a folder changed while its save waited is
//! not stored either.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

use super::listings::{Listings, Ticket};
use crate::drive::RemoteItem;

/// Saves waiting for the thread. Lists are paced by the drive (a few a second), so the queue
/// only fills when the disk stalls for long; then a walk's later folders are not stored.
const QUEUED_SAVES: usize = 256;

enum Job {
    Save(Ticket, String, Vec<RemoteItem>),
    /// Answered once every job queued before it is done.
    Flush(mpsc::Sender<()>),
}

pub(super) struct Saver {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    pub(super) fn start(listings: Arc<Listings>) -> Saver {
        let (jobs, queue) = mpsc::sync_channel(QUEUED_SAVES);
        let thread = std::thread::Builder::new()
            .name("alipanfs-meta".into())
            .spawn(move || run(&listings, queue));
        match thread {
            Ok(thread) => Saver {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            Err(e) => {
                warn!(error = %e, "cannot start the listing store's thread; listings will not outlive this mount");
                Saver {
                    jobs: None,
                    thread: None,
                }
            }
        }
    }

    /// Queue a listing to store; never waits.
    pub(super) fn save(&self, ticket: Ticket, folder_id: &str, items: Vec<RemoteItem>) {
        let Some(jobs) = &self.jobs else { return };
        match jobs.try_send(Job::Save(ticket, folder_id.to_string(), items)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                debug!(folder_id, "listing store busy; this listing is not stored")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits (at most `timeout`) until every listing queued so far is stored. True if so.
    pub(super) fn flush(&self, timeout: Duration) -> bool {
        let Some(jobs) = &self.jobs else { return true };
        let (done, wait) = mpsc::channel();
        if jobs.send(Job::Flush(done)).is_err() {
            return true;
        }
        wait.recv_timeout(timeout).is_ok()
    }
}

impl Drop for Saver {
    /// The queued listings are stored before the store goes, so a store opened after this one
    /// (a remount in the same process) never sees a late save from it.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(listings: &Listings, queue: Receiver<Job>) {
    for job in queue {
        match job {
            Job::Save(ticket, folder_id, items) => {
                // A panic in one save must not end the thread (and every later save with it).
                let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    listings.save(ticket, &folder_id, &items)
                }));
                if saved.is_err() {
                    warn!(folder_id, "storing a listing panicked; not stored");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::listings::tests::item;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn queued_saves_are_stored_by_the_flush_and_by_the_drop_and_a_later_drop_wins() {
        let dir = tempfile::tempdir().unwrap();
        let listings = Arc::new(Listings::open(dir.path().to_path_buf(), TTL));
        let saver = Saver::start(listings.clone());
        saver.save(listings.ticket(), "kept", vec![item("a", "x")]);
        let ticket = listings.ticket();
        saver.save(ticket, "changed", vec![item("b", "y")]);
        // The folder changes after its list call, whether or not its save ran yet.
        listings.drop_folder("changed");
        assert!(saver.flush(Duration::from_secs(5)));
        assert_eq!(listings.load("kept", TTL).unwrap().0, vec![item("a", "x")]);
        assert!(listings.load("changed", TTL).is_none());
        // Dropping the saver stores what is still queued.
        saver.save(listings.ticket(), "late", vec![item("c", "z")]);
        drop(saver);
        assert!(listings.load("late", TTL).is_some());
    }
}
