//! The hand-off of upload results to the fs, lossless by construction: every subscriber has
//! its own unbounded channel (an event is never dropped for lag), and the queue remembers each
//! landing (`completed`) until the fs says it has pointed the node at it (`applied`), so a
//! caller that finds no job for a key finds its result here or already on its node, and remote
//! changes can wait until every landing is applied (`all_applied`).

use super::*;

impl UploadQueue {
    /// Every upload outcome from now on, in order per key; nothing is ever dropped.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<UploadEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.events.lock().push(tx);
        rx
    }

    /// Send `event` to every subscriber still listening.
    pub(super) fn send(&self, event: UploadEvent) {
        self.events
            .lock()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// The fs has pointed `key`'s node at `file_id`: the queue need not remember that landing
    /// (a newer landing stays until its own event is applied).
    pub fn applied(&self, key: u64, file_id: &str) {
        let mut completed = self.completed.lock();
        if completed.get(&key).is_some_and(|id| id == file_id) {
            completed.remove(&key);
            if completed.is_empty() {
                self.applied_all.notify_waiters();
            }
        }
    }

    /// Landings not yet applied by the fs (bounded by the events in flight).
    pub fn unapplied(&self) -> usize {
        self.completed.lock().len()
    }

    /// Waits (at most `timeout`) until the fs has applied every landing so far. True if so.
    pub async fn all_applied(&self, timeout: Duration) -> bool {
        let deadline = Some(Instant::now() + timeout);
        wait_until(&self.applied_all, deadline, || self.unapplied() == 0).await
    }

    /// The file_id of the last completed upload for `key`, if any.
    pub fn uploaded_file_id(&self, key: u64) -> Option<String> {
        self.completed.lock().get(&key).cloned()
    }
}
