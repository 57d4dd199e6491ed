//! Space accounting and least-recently-used order of the cached blocks.
//!
//! Every byte the cache puts on disk is charged here *before* it is written (`reserve`), and
//! credited once it is gone, so the bytes on disk never exceed the limit by more than the
//! block being written, however many readers fill the cache at once. The order is a map from
//! a use counter to the block last used at that count: the smallest entries are evicted first.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A block of a cached file: (file key, block number).
pub type BlockId = (Arc<str>, u64);

#[derive(Debug, Default)]
pub struct Lru {
    limit: u64,
    used: u64,
    clock: u64,
    order: BTreeMap<u64, BlockId>,
}

impl Lru {
    pub fn new(limit: u64) -> Lru {
        Lru {
            limit,
            ..Lru::default()
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged: on disk, or about to be written.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Whether `cost` more bytes fit under the limit.
    pub fn fits(&self, cost: u64) -> bool {
        self.used.saturating_add(cost) <= self.limit
    }

    /// Charges `cost` bytes if they fit; false (nothing charged) if they do not.
    pub fn reserve(&mut self, cost: u64) -> bool {
        if !self.fits(cost) {
            return false;
        }
        self.used += cost;
        true
    }

    /// Charges bytes already on disk (found at load), whatever the limit.
    pub fn charge(&mut self, cost: u64) {
        self.used += cost;
    }

    pub fn credit(&mut self, cost: u64) {
        self.used = self.used.saturating_sub(cost);
    }

    /// Marks `block` used now; returns its new tick (forget `old` first).
    pub fn touch(&mut self, old: Option<u64>, block: BlockId) -> u64 {
        if let Some(t) = old {
            self.order.remove(&t);
        }
        self.clock += 1;
        self.order.insert(self.clock, block);
        self.clock
    }

    pub fn forget(&mut self, tick: u64) {
        self.order.remove(&tick);
    }

    /// Blocks from the least recently used on, skipping those `keep` says to keep.
    pub fn oldest<'a>(
        &'a self,
        keep: impl Fn(&BlockId) -> bool + 'a,
    ) -> impl Iterator<Item = (u64, &'a BlockId)> + 'a {
        self.order
            .iter()
            .filter(move |(_, b)| !keep(b))
            .map(|(t, b)| (*t, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_never_goes_over_the_limit() {
        let mut l = Lru::new(10);
        assert!(l.reserve(6));
        assert!(!l.reserve(5));
        assert_eq!(l.used(), 6);
        l.credit(6);
        assert!(l.reserve(10));
        assert!(!l.reserve(1));
    }

    #[test]
    fn oldest_first_and_touch_moves_to_the_back() {
        let mut l = Lru::new(100);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let ta = l.touch(None, (a.clone(), 0));
        let _tb = l.touch(None, (b.clone(), 0));
        let _ta2 = l.touch(Some(ta), (a.clone(), 0));
        let first: Vec<_> = l.oldest(|_| false).map(|(_, b)| b.0.clone()).collect();
        assert_eq!(first, vec![b.clone(), a.clone()]);
        let kept: Vec<_> = l
            .oldest(|blk| &*blk.0 == "b")
            .map(|(_, b)| b.0.clone())
            .collect();
        assert_eq!(kept, vec![a]);
    }
}
