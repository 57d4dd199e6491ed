//! How long the kernel may keep what a listing says. An entry or attributes served from a
//! fresh listing stay true until that listing expires (`dir_cache_ttl` after its fetch): the
//! poller invalidates the kernel's copy of anything that changes elsewhere before then
//! (`crate::poll::kernel`), and changes made through the mount reach the kernel with them. So
//! such answers carry the listing's remaining freshness as their timeout, and a warm `ls -l`
//! followed by `stat`s of its entries costs no LOOKUP or GETATTR until the listing expires.
//! Nodes the mount is changing (written, waiting for their upload, not on the drive yet, in
//! the synthetic transcodes tree, or shown under a name other than the listing's) get none:
//! the adapter's `--attr-timeout` applies to them as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use super::*;

/// Instants are kept as nanoseconds since this one (0: none).
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When a listing stops being fresh: set by the listing cache's expiry policy, cleared when
/// the cache lets the listing go (expired, invalidated by a change, replaced).
#[derive(Debug, Default)]
pub(super) struct Deadline(AtomicU64);

impl Deadline {
    pub(super) fn set(&self, at: Instant) {
        let nanos = at.saturating_duration_since(*BASE).as_nanos();
        self.0
            .store(nanos.clamp(1, u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub(super) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// How long until the deadline, if one is set and still ahead.
    pub(super) fn left(&self) -> Option<Duration> {
        let nanos = self.0.load(Ordering::Relaxed);
        if nanos == 0 {
            return None;
        }
        let at = *BASE + Duration::from_nanos(nanos);
        let left = at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

impl FsCore {
    /// True when what `listing` says of `node`, listed in folder `dir` under `name`, stays true
    /// until the listing expires (see the module docs). Called under the table lock.
    pub(super) fn listed_as_on_drive(&self, node: &Node, dir: u64, name: &str) -> bool {
        node.parent == dir
            && node.name == name
            && !node.is_local_only()
            && node.local.is_none()
            && !synthetic::is_synthetic(node)
            && !self.uploads.is_pending(node.ino)
    }

    /// How long the kernel may keep node `ino`'s entry and attributes: the rest of its
    /// folder's listing's freshness when it is shown as that listing has it; None otherwise
    /// (the adapter's own timeout applies).
    pub async fn fresh_for(&self, ino: u64) -> Option<Duration> {
        let (parent, name) = {
            let table = lock(&self.table);
            let node = table.get(ino)?;
            (node.parent, node.name.clone())
        };
        if parent == 0 {
            return None;
        }
        let listing = self.listings.get(&parent).await?;
        if listing.get(&name) != Some(ino) {
            return None;
        }
        let left = listing.deadline.left()?;
        let table = lock(&self.table);
        let node = table.get(ino)?;
        self.listed_as_on_drive(node, parent, &name).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::Deadline;
    use std::time::{Duration, Instant};

    #[test]
    fn a_deadline_tells_what_is_left_until_cleared() {
        let d = Deadline::default();
        assert_eq!(d.left(), None);
        d.set(Instant::now() + Duration::from_secs(30));
        let left = d.left().unwrap();
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30));
        d.set(Instant::now());
        assert_eq!(d.left(), None, "a deadline reached leaves nothing");
        d.set(Instant::now() + Duration::from_secs(30));
        d.clear();
        assert_eq!(d.left(), None);
    }
}
