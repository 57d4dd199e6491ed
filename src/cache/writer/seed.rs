//! An upload's content waiting to be copied into the cache (`Writer::seed_step`).

use std::fs::File;
use std::sync::Arc;

use crate::cache::store::Header;

/// An upload's content being copied into the cache, block by block.
pub(in crate::cache) struct SeedTask {
    pub(super) key: Arc<str>,
    pub(super) header: Header,
    pub(super) file: File,
    pub(super) next: u64,
    pub(super) done: tokio::sync::oneshot::Sender<()>,
}

impl SeedTask {
    pub(in crate::cache) fn new(
        key: Arc<str>,
        header: Header,
        file: File,
        done: tokio::sync::oneshot::Sender<()>,
    ) -> SeedTask {
        SeedTask {
            key,
            header,
            file,
            next: 0,
            done,
        }
    }
}
