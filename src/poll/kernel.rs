//! The kernel's caches follow remote changes: FUSE notifications (`inval_entry` for names,
//! `inval_inode` for attributes and cached pages) for everything a batch changed. They are sent
//! from a blocking thread, never under an fs lock nor from a FUSE request, since the kernel may
//! wait on the mount's own answers while it handles one.

use std::ffi::OsStr;
use std::sync::OnceLock;

use fuser::{INodeNo, Notifier};
use tracing::debug;

use crate::fs::core::Applied;

/// The mount's notifier, set once the FUSE session exists.
#[derive(Default)]
pub struct Kernel {
    notifier: OnceLock<Notifier>,
}

impl Kernel {
    pub fn set(&self, notifier: Notifier) {
        let _ = self.notifier.set(notifier);
    }

    /// Sends the invalidations of `applied`; returns how many the kernel took (one for a name
    /// or inode it does not cache is refused, which is fine).
    pub async fn invalidate(&self, applied: &Applied) -> u64 {
        let Some(notifier) = self.notifier.get().cloned() else {
            return 0;
        };
        let entries: Vec<(u64, String)> = applied.entries.iter().cloned().collect();
        let inodes: Vec<u64> = applied
            .inodes
            .iter()
            .chain(applied.folders.iter())
            .copied()
            .collect();
        if entries.is_empty() && inodes.is_empty() {
            return 0;
        }
        tokio::task::spawn_blocking(move || send(&notifier, &entries, &inodes))
            .await
            .unwrap_or(0)
    }
}

fn send(notifier: &Notifier, entries: &[(u64, String)], inodes: &[u64]) -> u64 {
    let mut sent = 0;
    for (dir, name) in entries {
        match notifier.inval_entry(INodeNo(*dir), OsStr::new(name)) {
            Ok(()) => sent += 1,
            Err(e) => debug!(dir, %name, "inval_entry: {e}"),
        }
    }
    for ino in inodes {
        match notifier.inval_inode(INodeNo(*ino), 0, 0) {
            Ok(()) => sent += 1,
            Err(e) => debug!(ino, "inval_inode: {e}"),
        }
    }
    sent
}
