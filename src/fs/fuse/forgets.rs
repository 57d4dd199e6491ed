//! FORGETs, applied by one task at a time. The kernel forgets inodes in bursts (tens of
//! thousands at once when it drops its dentry cache under memory pressure); a task per FORGET
//! made that burst cost a tokio task each, about 770 bytes, all alive at once, queued on the
//! same inode-table lock: 23 MB for 30,000 inodes, kept by the allocator afterwards. Here a
//! FORGET costs 16 bytes in a queue, and one drain task applies them in order.
//!
//! Locks: `Forgets::queue` at `Level::LEAF`, never held across an await.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::fs::core::FsCore;
use crate::sync::{Level, Mutex};

#[derive(Default)]
struct Queue {
    pending: Vec<(u64, u64)>,
    /// A drain task is running (it takes everything queued before it ends).
    draining: bool,
}

pub struct Forgets {
    queue: Mutex<Queue>,
}

impl Default for Forgets {
    fn default() -> Self {
        Forgets {
            queue: Mutex::new(Level::LEAF, "fuse.forgets", Queue::default()),
        }
    }
}

impl Forgets {
    /// Queues `nlookup` forgotten lookups of `ino`; starts the drain task if none runs.
    pub fn push(
        self: &Arc<Self>,
        core: &Arc<FsCore>,
        rt: &tokio::runtime::Handle,
        ino: u64,
        nlookup: u64,
    ) {
        {
            let mut q = self.queue.lock();
            q.pending.push((ino, nlookup));
            if q.draining {
                return;
            }
            q.draining = true;
        }
        let (me, core) = (self.clone(), core.clone());
        rt.spawn(async move { me.drain(&core).await });
    }

    async fn drain(&self, core: &FsCore) {
        loop {
            let batch = {
                let mut q = self.queue.lock();
                if q.pending.is_empty() {
                    q.draining = false;
                    // A burst's queue goes back to the allocator, and its free pages to
                    // the kernel.
                    q.pending = Vec::new();
                    drop(q);
                    crate::memory::release_after_burst();
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            for (ino, nlookup) in batch {
                // A panic (logged by the hook) costs this FORGET, not every later one.
                let _ = AssertUnwindSafe(core.forget(ino, nlookup))
                    .catch_unwind()
                    .await;
            }
        }
    }
}
