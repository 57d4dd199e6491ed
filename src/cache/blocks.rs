//! The recorded blocks of one cached file, by block number: a vector kept sorted. Most cached
//! files are small (one block), and a `BTreeMap` allocates a whole node of eleven slots for
//! its first entry: about 370 bytes a file, against 40 here. Big files gain blocks mostly in
//! order (appended); an insert in the middle moves at most 32 bytes a block, next to the
//! 1 MiB block it records.

/// Sorted by block number, no duplicates.
#[derive(Debug, Default)]
pub(super) struct BlockMap<V> {
    entries: Vec<(u64, V)>,
}

impl<V> BlockMap<V> {
    pub fn new() -> Self {
        BlockMap {
            entries: Vec::new(),
        }
    }

    fn find(&self, block: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&block, |(b, _)| *b)
    }

    pub fn get(&self, block: &u64) -> Option<&V> {
        self.find(*block).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, block: &u64) -> Option<&mut V> {
        match self.find(*block) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    pub fn contains_key(&self, block: &u64) -> bool {
        self.find(*block).is_ok()
    }

    /// Sets `block`'s value; returns the one it replaced.
    pub fn insert(&mut self, block: u64, value: V) -> Option<V> {
        match self.find(block) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                if self.entries.capacity() == 0 {
                    // The common one-block file: no room reserved beyond it.
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(i, (block, value));
                None
            }
        }
    }

    pub fn remove(&mut self, block: &u64) -> Option<V> {
        let i = self.find(*block).ok()?;
        let (_, value) = self.entries.remove(i);
        if self.entries.len() * 4 < self.entries.capacity() {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Values in block order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::BlockMap;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Any sequence of inserts and removes leaves the same content as a `BTreeMap`.
        #[test]
        fn behaves_as_a_btreemap(ops in proptest::collection::vec((any::<bool>(), 0u64..64, any::<u32>()), 0..300)) {
            let (mut ours, mut model) = (BlockMap::new(), BTreeMap::new());
            for (insert, block, value) in ops {
                if insert {
                    prop_assert_eq!(ours.insert(block, value), model.insert(block, value));
                } else {
                    prop_assert_eq!(ours.remove(&block), model.remove(&block));
                }
                prop_assert_eq!(ours.len(), model.len());
                prop_assert_eq!(ours.get(&block), model.get(&block));
                prop_assert_eq!(ours.contains_key(&block), model.contains_key(&block));
            }
            prop_assert!(ours.values().eq(model.values()));
            prop_assert_eq!(ours.is_empty(), model.is_empty());
        }
    }
}
