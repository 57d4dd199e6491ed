//! Loading a namespace at mount: every index read back into memory, what is broken or orphaned
//! removed, two versions of one file resolved to the newer.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::warn;

use super::store::{self, block_cost, Index, FILE_COST};
use super::{BlockState, Entry, State};

/// Reads every index of the namespace into `state`; removes what is broken or orphaned. No
/// file stays open: the writer and readers open them when needed.
pub(super) fn load(dir: &Path, state: &mut State) -> io::Result<()> {
    let mut found: Vec<(SystemTime, Arc<str>, store::Loaded)> = Vec::new();
    for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(key) = name.strip_suffix(".idx") else {
            if name.ends_with(".idx.tmp") {
                let _ = std::fs::remove_file(&path);
            }
            if let Some(key) = name.strip_suffix(".data") {
                if !store::idx_path(dir, key).exists() {
                    let _ = std::fs::remove_file(&path);
                }
            }
            continue;
        };
        let loaded = Index::load(&path).ok().flatten();
        match loaded {
            Some(l) if store::key_of(&l.header.file_id, &l.header.identity) == key => {
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, key.into(), l));
            }
            _ => {
                warn!(index = %path.display(), "unreadable cache index: dropping that file's cached blocks");
                let _ = std::fs::remove_file(store::data_path(dir, key));
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    // Oldest files first: their blocks come first in the eviction order.
    found.sort_by_key(|f| f.0);
    for (_, key, loaded) in found {
        let store::Loaded {
            header,
            blocks,
            records,
            ..
        } = loaded;
        // Opened once to check it exists and has the drive file's length, then closed.
        if let Err(e) = store::open_data(&store::data_path(dir, &key), header.size) {
            warn!(key = %key, "cannot open a cached data file: {e}");
            continue;
        }
        if records > blocks.len() as u64 + 64 {
            // Mostly removals: rewrite it short.
            let _ = Index::compact(&store::idx_path(dir, &key), &header, &blocks);
        }
        if let Some(older) = state.current.insert(header.file_id.clone(), key.clone()) {
            // Two versions of one file on disk: the newer wins.
            if let Some(mut e) = state.files.remove(&older) {
                for s in e.blocks.values() {
                    state.lru.forget(s.tick);
                    state.lru.credit(block_cost(s.rec.len as u64));
                }
                state.lru.credit(FILE_COST);
                e.data = None;
                remove_pair(dir, &older);
            }
        }
        let mut e = Entry::new(header);
        state.lru.charge(FILE_COST);
        for (b, rec) in blocks {
            state.lru.charge(block_cost(rec.len as u64));
            let tick = state.lru.touch(None, (key.clone(), b));
            e.blocks.insert(
                b,
                BlockState {
                    rec,
                    tick,
                    verified: false,
                    // Not read by this mount yet: as old as can be for seeding's eviction rule.
                    used_s: 0,
                },
            );
        }
        e.on_disk = true;
        state.files.insert(key, e);
    }
    Ok(())
}

pub(super) fn remove_pair(dir: &Path, key: &str) {
    // The index first: a data file without one is an orphan removed at next load.
    let _ = std::fs::remove_file(store::idx_path(dir, key));
    let _ = std::fs::remove_file(store::data_path(dir, key));
}
