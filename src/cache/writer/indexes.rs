//! The cache writer's open index files: a bounded set, reopened on demand.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;

use crate::cache::store::{self, Index};

/// Index files open for appending: at most `MAX_OPEN_INDEXES`, the oldest closed first and
/// opened again when next written (a descriptor per cached file would not scale).
pub(super) struct Indexes {
    open: HashMap<Arc<str>, Index>,
    order: VecDeque<Arc<str>>,
}

const MAX_OPEN_INDEXES: usize = 64;

impl Indexes {
    pub(super) fn new() -> Indexes {
        Indexes {
            open: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn insert(&mut self, key: Arc<str>, idx: Index) {
        if self.open.insert(key.clone(), idx).is_none() {
            self.order.push_back(key);
        }
        while self.open.len() > MAX_OPEN_INDEXES {
            match self.order.pop_front() {
                Some(old) => {
                    self.open.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The index of `key` (in `dir`), opened again if it was closed.
    pub(super) fn get(&mut self, dir: &std::path::Path, key: &Arc<str>) -> io::Result<&mut Index> {
        if !self.open.contains_key(key) {
            let idx = Index::open(&store::idx_path(dir, key))?;
            self.insert(key.clone(), idx);
        }
        self.open
            .get_mut(key)
            .ok_or_else(|| io::Error::other("index closed at once"))
    }

    pub(super) fn remove(&mut self, key: &Arc<str>) {
        if self.open.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}
