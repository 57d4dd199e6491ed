//! Bytes received per file, for `alipanfs status` ("downloads show bytes received per open
//! file"). Download calls name a signed URL, not a file, so the URLs `getDownloadUrl` handed out
//! are remembered with their file. A URL the client did not fetch itself (one kept across a
//! remount by the metadata store) counts from the next URL of that file on.
//!
//! Locks: `Received::inner` at `Level::API_STATS` (never held with the call statistics' lock,
//! nor across an await).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::sync::{Level, Mutex};

/// Remembered URLs (and counted files) beyond this are dropped (their files count again from
/// their next URL).
const MAX_URLS: usize = 4096;

#[derive(Default)]
struct Inner {
    file_of_url: HashMap<String, String>,
    by_file: HashMap<String, Arc<AtomicU64>>,
}

pub struct Received {
    inner: Mutex<Inner>,
}

impl Default for Received {
    fn default() -> Self {
        Received {
            inner: Mutex::new(Level::API_STATS, "received", Inner::default()),
        }
    }
}

impl Received {
    /// `url` downloads `file_id`.
    pub fn url_for(&self, url: &str, file_id: &str) {
        let mut inner = self.inner.lock();
        if inner.file_of_url.len() >= MAX_URLS {
            inner.file_of_url.clear();
        }
        // Without a `status` call to prune them, counts of files long closed would pile up.
        if inner.by_file.len() >= MAX_URLS {
            inner.by_file.clear();
        }
        inner
            .file_of_url
            .insert(url.to_string(), file_id.to_string());
    }

    /// The counter bytes fetched from `url` go to.
    pub fn counter(&self, url: &str) -> Option<Arc<AtomicU64>> {
        let mut inner = self.inner.lock();
        let file = inner.file_of_url.get(url)?.clone();
        Some(inner.by_file.entry(file).or_default().clone())
    }

    /// Bytes received for `file_id` so far.
    pub fn of(&self, file_id: &str) -> u64 {
        self.inner
            .lock()
            .by_file
            .get(file_id)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Forgets the counts of files not in `open` (a file opened again counts from zero).
    pub fn keep_only(&self, open: &HashSet<&str>) {
        self.inner
            .lock()
            .by_file
            .retain(|id, _| open.contains(id.as_str()));
    }
}
