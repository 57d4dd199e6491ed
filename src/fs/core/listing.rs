//! Folder listings (the only source of attributes); lookup, getattr and readdir over them are
//! in `lookup`.
//!
//! With a metadata store (`crate::meta`), a listing fetched from the drive is also kept on disk
//! and served from there, after a remount too, until `dir_cache_ttl` after its fetch. The disk
//! copy is the drive's answer, never an edited one: every change the mount makes in a folder
//! drops that folder's copy (`drop_stored_listing`, from `touch_dir` and the write path), and a
//! folder with writes not yet on the drive is not stored (`listing_ticket`), so after a remount
//! the disk shows nothing older than what the mount itself did.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use super::*;

mod lookup;

/// What readdir sorts a folder's entries by (ties: by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum OrderBy {
    #[default]
    Name,
    Size,
    /// The drive's `updated_at` (the time shown as ctime).
    UpdatedAt,
    /// The drive's `created_at` (the time shown as crtime).
    CreatedAt,
}

/// Which way readdir's order runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OrderDirection {
    #[default]
    Asc,
    Desc,
}

/// A folder's children by display name, with each child's name by inode (to find the entry of
/// a node that moved without knowing its old name).
#[derive(Debug, Default)]
struct Entries {
    by_name: BTreeMap<String, u64>,
    name_of: HashMap<u64, String>,
}

impl Entries {
    fn insert(&mut self, name: &str, ino: u64) {
        if let Some(prev) = self.by_name.insert(name.to_string(), ino) {
            if prev != ino && self.name_of.get(&prev).is_some_and(|n| n == name) {
                self.name_of.remove(&prev);
            }
        }
        self.name_of.insert(ino, name.to_string());
    }

    fn remove(&mut self, name: &str) {
        if let Some(ino) = self.by_name.remove(name) {
            if self.name_of.get(&ino).is_some_and(|n| n == name) {
                self.name_of.remove(&ino);
            }
        }
    }
}

/// A folder's children by display name. Edited in place by changes made through the mount, and
/// caught up with the inode table at each use (`FsCore::catch_up`): an operation may edit a
/// listing the cache has replaced meanwhile (it expired, or a poll listed the folder afresh),
/// and that edit must not be lost.
#[derive(Debug)]
pub struct Listing {
    entries: crate::sync::Mutex<Entries>,
    /// The table's change number this listing reflects (`InodeTable::change_seq`): the changes
    /// made after it are applied at its next use.
    seen: AtomicU64,
    /// How long it stays fresh if less than the TTL (read from the disk, fetched a while ago).
    fresh_for: Option<Duration>,
    /// How many items the drive listed (before `.livp` halves, hidden names and local files):
    /// a folder whose count on the drive differs has changed (`FsCore::revalidate`).
    drive_count: AtomicUsize,
    /// Edits the mount made in place, counted, and their count when the entries last were the
    /// drive's answer: after an edit, `drive_count` no longer says what the drive should hold.
    edits: AtomicU64,
    clean_at: AtomicU64,
    /// When it stops being fresh (what the kernel may keep of its entries, `fresh`).
    pub(super) deadline: super::fresh::Deadline,
}

/// The cache's expiry of a listing: `ttl` after its fetch.
pub(super) struct Freshness {
    pub ttl: Duration,
}

impl moka::Expiry<u64, Arc<Listing>> for Freshness {
    fn expire_after_create(
        &self,
        _dir: &u64,
        listing: &Arc<Listing>,
        at: std::time::Instant,
    ) -> Option<Duration> {
        let fresh = listing.fresh_for.unwrap_or(self.ttl).min(self.ttl);
        listing.deadline.set(at + fresh);
        Some(fresh)
    }

    fn expire_after_update(
        &self,
        dir: &u64,
        listing: &Arc<Listing>,
        at: std::time::Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(dir, listing, at)
    }
}

impl Default for Listing {
    fn default() -> Self {
        Listing {
            entries: crate::sync::Mutex::new(
                crate::sync::Level::FS_LISTING,
                "listing entries",
                Entries::default(),
            ),
            seen: AtomicU64::new(0),
            fresh_for: None,
            drive_count: AtomicUsize::new(0),
            edits: AtomicU64::new(0),
            clean_at: AtomicU64::new(0),
            deadline: Default::default(),
        }
    }
}

impl Listing {
    /// An empty listing that reflects the table up to change number `seen` (a folder just
    /// made, or one only this mount knows).
    pub(super) fn empty_at(seen: u64) -> Self {
        let listing = Listing::default();
        listing.seen.store(seen, Ordering::SeqCst);
        listing
    }

    pub(super) fn get(&self, name: &str) -> Option<u64> {
        lock(&self.entries).by_name.get(name).copied()
    }
    /// An entry as listed (while the listing is built).
    pub(super) fn fill(&self, name: &str, ino: u64) {
        lock(&self.entries).insert(name, ino);
    }
    /// An entry the mount adds in place.
    pub(super) fn insert(&self, name: &str, ino: u64) {
        self.fill(name, ino);
        self.edits.fetch_add(1, Ordering::SeqCst);
    }
    pub(super) fn remove(&self, name: &str) {
        lock(&self.entries).remove(name);
        self.edits.fetch_add(1, Ordering::SeqCst);
    }
    pub(super) fn edits(&self) -> u64 {
        self.edits.load(Ordering::SeqCst)
    }
    /// How many items the drive listed, unless the mount edited the entries since (then the
    /// count cannot tell whether the drive changed).
    /// Its weight in the listing cache: the items the drive listed, plus one (read without a
    /// lock: moka calls this while inserting).
    pub(super) fn weight(&self) -> u32 {
        u32::try_from(self.drive_count.load(Ordering::Relaxed))
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    pub(super) fn drive_count(&self) -> Option<usize> {
        (self.edits() == self.clean_at.load(Ordering::SeqCst))
            .then(|| self.drive_count.load(Ordering::SeqCst))
    }
    /// Brings in what the drive changed between `base` (the entries when a list call began,
    /// after `edits_then` edits) and `fresh` (its answer), keeping the edits the mount made
    /// meanwhile (whether the list call saw their drive side or not).
    pub(super) fn merge(&self, base: &BTreeMap<String, u64>, fresh: &Listing, edits_then: u64) {
        let fresh_entries = fresh.snapshot();
        {
            let mut entries = lock(&self.entries);
            for (name, ino) in base {
                if fresh_entries.get(name) != Some(ino) && entries.by_name.get(name) == Some(ino) {
                    entries.remove(name);
                }
            }
            for (name, ino) in &fresh_entries {
                if base.get(name) != Some(ino) {
                    entries.insert(name, *ino);
                }
            }
        }
        // Each reflects the table up to its own number: the merge, up to the older one (catching
        // up again with a change already applied changes nothing).
        self.seen
            .fetch_min(fresh.seen.load(Ordering::SeqCst), Ordering::SeqCst);
        let count = fresh.drive_count.load(Ordering::SeqCst);
        self.drive_count.store(count, Ordering::SeqCst);
        if self.edits() == edits_then {
            self.clean_at.store(edits_then, Ordering::SeqCst);
        }
    }
    pub(super) fn inos(&self) -> Vec<u64> {
        lock(&self.entries).by_name.values().copied().collect()
    }
    pub(super) fn len(&self) -> usize {
        lock(&self.entries).by_name.len()
    }
    /// Every entry, by display name.
    pub(super) fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.entries).by_name.clone()
    }

    /// Applies the changes made through the mount after this listing's number: each node that
    /// changed takes the place the table gives it (in folder `dir` under its name, or out of
    /// it). The table is the truth for such nodes, as in a merge (`merge::merge_listing`); an
    /// operation's own edit of the listing then finds the entry already right. False when the
    /// table no longer keeps those changes (the caller lists the folder again).
    pub(super) fn catch_up(&self, dir: u64, table: &InodeTable) -> bool {
        let now = table.change_seq();
        let seen = self.seen.load(Ordering::SeqCst);
        if now <= seen {
            return true;
        }
        let Some(since) = table.changed_since(seen) else {
            return false;
        };
        let mut entries = lock(&self.entries);
        for &ino in since.nodes.iter().chain(since.bound.iter()) {
            if ino == dir {
                continue;
            }
            let place = table
                .get(ino)
                .filter(|n| n.parent == dir)
                .map(|n| n.name.clone());
            let shown = entries
                .name_of
                .get(&ino)
                .filter(|name| entries.by_name.get(*name) == Some(&ino))
                .cloned();
            if place == shown {
                continue;
            }
            if let Some(old) = shown {
                entries.remove(&old);
            }
            if let Some(name) = place {
                entries.insert(&name, ino);
            }
            // An edit like the operation's own: the drive's count no longer tells.
            self.edits.fetch_add(1, Ordering::SeqCst);
        }
        self.seen.fetch_max(now, Ordering::SeqCst);
        true
    }
}

impl FsCore {
    /// The cached listing of a folder, listing it (single-flight) when absent or expired.
    pub(super) async fn listing(&self, dir: u64) -> Result<Arc<Listing>> {
        loop {
            let listing = self
                .listings
                .try_get_with(dir, self.load_listing(dir))
                .await
                .map_err(Error::unshare)?;
            if listing.catch_up(dir, &lock(&self.table)) {
                return Ok(listing);
            }
            // Older than the changes the table keeps (very rare): listed again.
            if self
                .listings
                .get(&dir)
                .await
                .is_some_and(|cached| Arc::ptr_eq(&cached, &listing))
            {
                self.listings.invalidate(&dir).await;
            }
        }
    }

    pub(super) async fn load_listing(&self, dir: u64) -> Result<Arc<Listing>> {
        let folder = self.folder(dir)?;
        if folder.is_local_only() {
            let seen = lock(&self.table).change_seq();
            return Ok(Arc::new(Listing::empty_at(seen)));
        }
        if synthetic::is_synthetic(&folder) {
            return self.load_synthetic_listing(&folder).await;
        }
        // A listing older than the changes the table keeps is fetched again (rare: a very slow
        // call beside a very busy mount); the last try merges local content only.
        let mut tries = 0;
        loop {
            tries += 1;
            let seq = lock(&self.table).change_seq();
            let (items, fresh_for, drive_count) = self.fetch_items(dir, &folder.file_id).await?;
            let resumed = self.take_resumed(&folder.file_id);
            let mut table = lock(&self.table);
            for (r, file) in resumed {
                self.attach_resumed(&mut table, dir, r, file);
            }
            let since = match table.changed_since(seq) {
                Some(since) => since,
                None if tries < 3 => continue,
                None => Default::default(),
            };
            let listing = Listing {
                fresh_for,
                drive_count: AtomicUsize::new(drive_count),
                ..Listing::default()
            };
            listing.seen.store(table.change_seq(), Ordering::SeqCst);
            for (name, ino, item) in merge::merge_listing(&mut table, dir, items, &since) {
                listing.fill(&name, ino);
                if let Some(item) = item {
                    if let Some(url) = item.download_url {
                        self.reader.offer_url(&item.file_id, url);
                    }
                }
            }
            debug!(dir, file_id = %folder.file_id, entries = listing.len(), "listed folder");
            return Ok(Arc::new(listing));
        }
    }

    /// Folder `dir`'s items, from the metadata store while fresh there (with how long they stay
    /// so), else from the drive (stored when allowed); livp expanded, hidden names left out;
    /// with how many items the drive listed.
    async fn fetch_items(
        &self,
        dir: u64,
        folder_id: &str,
    ) -> Result<(Vec<RemoteItem>, Option<Duration>, usize)> {
        let (items, fresh_for) = match self.stored_listing(folder_id).await {
            Some((items, fresh_for)) => {
                debug!(dir, file_id = %folder_id, ?fresh_for, "listing from the metadata store");
                (items, Some(fresh_for))
            }
            None => {
                let ticket = self.listing_ticket(dir, folder_id);
                let items = self.drive.list_folder(folder_id).await?;
                if let (Some(ticket), Some(meta)) = (ticket, &self.cfg.meta) {
                    // Queued: the `ls` does not wait for the store's fsyncs.
                    meta.save_listing(ticket, folder_id, items.clone());
                }
                (items, None)
            }
        };
        let drive_count = items.len();
        let mut items = livp::expand(items, self.cfg.livp);
        if dir == ROOT_INO {
            // The transcodes tree takes its name: a drive item of that name is not shown.
            if let Some(hidden) = self.cfg.transcodes_dir.as_deref() {
                items.retain(|i| i.name != hidden);
            }
        }
        Ok((items, fresh_for, drive_count))
    }

    /// The stored listing of a folder, if still fresh (and how long it stays so).
    async fn stored_listing(&self, folder_id: &str) -> Option<(Vec<RemoteItem>, Duration)> {
        let meta = self.cfg.meta.clone()?;
        let (id, ttl) = (folder_id.to_string(), self.cfg.dir_cache_ttl);
        tokio::task::spawn_blocking(move || meta.listing(&id, ttl))
            .await
            .ok()
            .flatten()
    }

    /// May the answer of a list call of folder `dir` starting now be stored? Not while a file
    /// in it is being written or waits for its upload: the drive does not show it yet, and its
    /// landing may come after this mount has ended. The ticket is taken first, so a change
    /// starting after these checks drops the answer instead (see `meta::listings`).
    fn listing_ticket(&self, dir: u64, folder_id: &str) -> Option<crate::meta::Ticket> {
        let meta = self.cfg.meta.as_ref()?;
        if self.cfg.dir_cache_ttl.is_zero() {
            return None;
        }
        let ticket = meta.ticket();
        // Under the gate, a closing file is either still unsealed or already queued.
        let _gate = lock(&self.upload_gate);
        let writing = {
            let table = lock(&self.table);
            table.local_children(dir).into_iter().any(|ino| {
                table.get(ino).is_some_and(|n| {
                    n.is_local_only()
                        || n.local.as_ref().is_some_and(|c| !c.is_sealed())
                        || self.uploads.is_pending(ino)
                })
            })
        };
        let uploading = || {
            self.uploads
                .jobs()
                .iter()
                .any(|j| j.parent_file_id == folder_id)
        };
        (!writing && !uploading()).then_some(ticket)
    }

    /// The mount changes folder `folder_id` (or a file in it): its stored listing goes.
    pub(super) fn drop_stored_listing(&self, folder_id: &str) {
        if let Some(meta) = &self.cfg.meta {
            meta.drop_listing(folder_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&str, u64)], count: usize) -> Listing {
        let l = Listing {
            drive_count: AtomicUsize::new(count),
            ..Listing::default()
        };
        for (name, ino) in entries {
            l.fill(name, *ino);
        }
        l
    }

    #[test]
    fn a_merge_brings_the_drives_changes_and_keeps_the_mounts_edits_made_meanwhile() {
        let cached = listing(&[("a", 2), ("b", 3), ("c", 4)], 3);
        let base = cached.snapshot();
        let edits = cached.edits();
        // While the list call runs, the mount renames c to d and creates e.
        cached.remove("c");
        cached.insert("d", 4);
        cached.insert("e", 5);
        // The drive's answer: b renamed to b2, f new, and c not yet renamed.
        let fresh = listing(&[("a", 2), ("b2", 3), ("c", 4), ("f", 6)], 4);
        cached.merge(&base, &fresh, edits);
        let want: BTreeMap<String, u64> = [("a", 2), ("b2", 3), ("d", 4), ("e", 5), ("f", 6)]
            .into_iter()
            .map(|(n, i)| (n.to_string(), i))
            .collect();
        assert_eq!(cached.snapshot(), want);
        // Edited meanwhile: its count cannot tell until a merge with no edit under way.
        assert_eq!(cached.drive_count(), None);
        let (base, edits) = (cached.snapshot(), cached.edits());
        cached.merge(&base, &listing(&[("a", 2)], 1), edits);
        assert_eq!(cached.drive_count(), Some(1));
        assert_eq!(cached.snapshot().len(), 1);
    }

    use super::merge::tests::item as remote;

    /// An operation that edited a listing the cache had replaced meanwhile: the listing now
    /// cached still shows what the table says of every node changed after it was built.
    #[test]
    fn a_listing_catches_up_with_the_changes_made_after_it_was_built() {
        let mut t = InodeTable::new("root", SystemTime::UNIX_EPOCH);
        let a = t.upsert_remote(&remote("fa", "a"), ROOT_INO, "a");
        let b = t.upsert_remote(&remote("fb", "b"), ROOT_INO, "b");
        let c = t.upsert_remote(&remote("fc", "c"), ROOT_INO, "c");
        let other = t.upsert_remote(&remote("fo", "o"), 99, "o");
        let cached = Listing::empty_at(t.change_seq());
        for (name, ino) in [("a", a), ("b", b), ("c", c)] {
            cached.fill(name, ino);
        }
        // Made through the mount, edits sent to another (replaced) listing object: a renamed
        // to a2, b moved away, c unlinked and freed, a new local file, and a node of another
        // folder renamed.
        let n = t.get_mut(a).unwrap();
        n.name = "a2".into();
        t.mark_changed(a);
        t.get_mut(b).unwrap().parent = 99;
        t.mark_changed(b);
        t.mark_changed(c);
        t.remove(c);
        let staged = tempfile::NamedTempFile::new().unwrap();
        let content = Arc::new(LocalContent::new(
            staged.path().to_path_buf(),
            staged.reopen().unwrap(),
        ));
        let d = t.insert_local_file(ROOT_INO, "d", content, SystemTime::UNIX_EPOCH);
        t.mark_changed(other);
        assert!(cached.catch_up(ROOT_INO, &t));
        let want: BTreeMap<String, u64> = [("a2", a), ("d", d)]
            .into_iter()
            .map(|(n, i)| (n.to_string(), i))
            .collect();
        assert_eq!(cached.snapshot(), want);
        assert_eq!(
            cached.drive_count(),
            None,
            "caught-up changes count as edits"
        );
        // The operation's own edit, arriving late, changes nothing.
        cached.insert("d", d);
        assert_eq!(cached.snapshot(), want);
        // Nothing new: nothing to do.
        assert!(cached.catch_up(ROOT_INO, &t));
        assert_eq!(cached.snapshot(), want);
    }

    #[test]
    fn a_listing_older_than_the_changes_kept_is_listed_again() {
        let mut t = InodeTable::new("root", SystemTime::UNIX_EPOCH);
        let cached = Listing::empty_at(t.change_seq());
        for i in 0..20_000 {
            t.mark_changed(1000 + i);
        }
        assert!(!cached.catch_up(ROOT_INO, &t));
    }
}
