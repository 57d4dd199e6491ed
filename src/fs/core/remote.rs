//! Changes made on the drive elsewhere (found by `crate::poll`), applied through the paths the
//! mount's own changes take: a known node follows its drive item (`InodeTable::upsert_remote`,
//! as a listing does), a folder an item left or joined is listed afresh (`load_listing`) when
//! its listing is cached, and the stored listings of both are dropped, so neither this mount nor
//! the next one shows the old state. A new revision gets a new content identity, so data-cache
//! blocks of the old one are never served. Files with local content not yet uploaded are left
//! alone (`Applied::kept_local`). What changed is reported for the kernel's caches and the
//! `--on-change` hook.

use std::collections::BTreeSet;

use super::*;

/// At most this many cached folders are listed afresh per batch of changes; the others are
/// dropped from the cache and listed when next used.
const MAX_RELISTS: usize = 32;

/// A listing the mount edited in place is listed again by the revalidation (its count cannot
/// tell) only up to this many entries.
const MAX_EDITED_RELIST: usize = 1000;

/// What applying a batch of remote changes did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Folders whose entries changed (inode numbers).
    pub folders: BTreeSet<u64>,
    /// Names the kernel may hold a stale entry (or a stale absence) for: (folder, name).
    pub entries: BTreeSet<(u64, String)>,
    /// Nodes whose attributes or content changed.
    pub inodes: BTreeSet<u64>,
    /// Changes applied to what the mount shows.
    pub changes: u64,
    /// Files with local content pending upload that the drive changed too: (inode, the
    /// drive's item). Not applied.
    pub kept_local: Vec<(u64, RemoteItem)>,
    /// Folders that left their folder's listing: gone from the drive, or moved out of sight
    /// (files waiting for their upload in a gone one are rescued, `rescue_orphans`): inode and
    /// file_id.
    pub gone_dirs: BTreeMap<u64, String>,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.changes == 0 && self.entries.is_empty() && self.inodes.is_empty()
    }

    pub fn merge(&mut self, other: Applied) {
        self.folders.extend(other.folders);
        self.entries.extend(other.entries);
        self.inodes.extend(other.inodes);
        self.changes += other.changes;
        self.kept_local.extend(other.kept_local);
        self.gone_dirs.extend(other.gone_dirs);
    }
}

/// Whether node `node` already shows `item` (the mount's own change coming back in the feed).
fn shows(node: &Node, item: &RemoteItem, parent: Option<u64>) -> bool {
    parent == Some(node.parent)
        && node.remote_name == item.name
        && node.kind == item.kind
        && (item.is_dir()
            || (node.size == item.size
                && node.identity.as_deref() == Some(crate::cache::identity_of(item).as_str())))
}

/// The longest a batch of remote changes waits for landed uploads to be applied.
const LANDINGS_WAIT: Duration = Duration::from_secs(2);

/// A node's attributes that a new revision changes.
type Shown = (u64, SystemTime, Option<String>);

impl FsCore {
    /// Items created, changed, renamed or moved on the drive, as the drive has them now.
    pub async fn apply_remote_items(&self, items: &[RemoteItem]) -> Applied {
        self.landings_applied().await;
        let mut out = Applied::default();
        let mut dirty = BTreeSet::new();
        for item in items {
            self.apply_item(item, &mut out, &mut dirty);
        }
        self.relist_dirty(dirty, &mut out).await;
        out
    }

    /// Items trashed or deleted on the drive (by file_id), from folders `from` (those the feed
    /// named: their stored listings go even if the mount never saw the items).
    pub async fn apply_remote_removals(&self, ids: &[String], from: &[String]) -> Applied {
        self.landings_applied().await;
        for folder_id in from {
            self.drop_stored_listing(folder_id);
        }
        let mut out = Applied::default();
        let mut dirty = BTreeSet::new();
        for id in ids {
            let (ino, parent, parent_id, is_dir) = {
                let table = lock(&self.table);
                let Some(node) = table.ino_of(id).and_then(|ino| table.get(ino)) else {
                    continue;
                };
                if node.is_detached() || self.has_pending_content(node) {
                    continue;
                }
                let parent_id = table.get(node.parent).map(|p| p.file_id.clone());
                out.entries.insert((node.parent, node.name.clone()));
                (node.ino, node.parent, parent_id, node.is_dir())
            };
            if let Some(parent_id) = parent_id {
                self.drop_stored_listing(&parent_id);
            }
            if is_dir {
                self.drop_stored_listing(id);
                self.listings.invalidate(&ino).await;
                out.gone_dirs.insert(ino, id.clone());
            }
            dirty.insert(parent);
            out.changes += 1;
        }
        self.relist_dirty(dirty, &mut out).await;
        out
    }

    /// Waits (at most `LANDINGS_WAIT`) until every upload that landed has been applied to its
    /// node: a change the drive reports about a file just uploaded must find the node under
    /// its new file_id. Before, a trash made elsewhere right after a landing found no node,
    /// and the file stayed in the mount (found by the reference-model test).
    async fn landings_applied(&self) {
        if !self.uploads.all_applied(LANDINGS_WAIT).await {
            debug!("landed uploads still unapplied; applying the remote changes anyway");
        }
    }

    /// Settles what a batch of changes left (`Applied::kept_local`, `Applied::gone_dirs`):
    /// conflicts with versions waiting for their upload (`conflict`), and files waiting in
    /// folders deleted elsewhere (`orphans`).
    pub async fn settle_remote(&self, applied: &mut Applied) {
        if !applied.kept_local.is_empty() {
            let kept = std::mem::take(&mut applied.kept_local);
            applied.merge(self.resolve_conflicts(&kept).await);
        }
        if !applied.gone_dirs.is_empty() {
            let gone = std::mem::take(&mut applied.gone_dirs);
            applied.merge(self.rescue_orphans(&gone).await);
        }
    }

    /// True when `node` has content open for writing, or written and waiting for its upload:
    /// a change the drive reports must not replace it.
    pub(super) fn has_pending_content(&self, node: &Node) -> bool {
        node.local.as_ref().is_some_and(|c| !c.is_sealed()) || self.uploads.is_pending(node.ino)
    }

    /// True when `node` holds a version of its own that the drive does not have yet (written,
    /// not only opened for writing).
    pub(super) fn holds_unsaved_version(&self, node: &Node) -> bool {
        let written = node.local.as_ref().is_some_and(|c| c.is_dirty());
        written && self.has_pending_content(node)
    }

    /// One changed item: its node follows it, and the folders it left and joined are noted.
    fn apply_item(&self, item: &RemoteItem, out: &mut Applied, dirty: &mut BTreeSet<u64>) {
        let mut table = lock(&self.table);
        let parent = table.ino_of(&item.parent_file_id);
        let node = table
            .ino_of(&item.file_id)
            .and_then(|ino| table.get(ino))
            .cloned();
        match &node {
            Some(node) if shows(node, item, parent) => return,
            Some(node) if self.has_pending_content(node) => {
                out.kept_local.push((node.ino, item.clone()));
                return;
            }
            Some(node) => {
                // A node changed after this state of the item (by the mount itself, while the
                // poll was under way) keeps its state; the listings read below tell the truth.
                if node.ctime <= item.updated_at {
                    // Local content the drive has (an upload that landed): the drive's is newer.
                    table.set_local(node.ino, None);
                    let stay = parent == Some(node.parent) && node.remote_name == item.name;
                    let name = if stay { &node.name } else { &item.name };
                    table.upsert_remote(item, parent.unwrap_or(node.parent), name);
                }
                out.inodes.insert(node.ino);
                if !node.is_detached() {
                    out.entries.insert((node.parent, node.name.clone()));
                    dirty.insert(node.parent);
                }
            }
            None => {}
        }
        let left = node
            .filter(|n| !n.is_detached())
            .and_then(|n| table.get(n.parent).map(|p| p.file_id.clone()));
        drop(table);
        if let Some(left) = left {
            self.drop_stored_listing(&left);
        }
        self.drop_stored_listing(&item.parent_file_id);
        if !item.is_dir() {
            // A new revision has new download URLs.
            self.reader.forget_file(&item.file_id);
        }
        if let Some(parent) = parent {
            out.entries.insert((parent, item.name.clone()));
            dirty.insert(parent);
        }
        out.changes += 1;
    }

    /// Folders whose entries changed: those with a cached listing are listed afresh now (the
    /// first `MAX_RELISTS`; the rest when next used).
    pub(super) async fn relist_dirty(&self, dirty: BTreeSet<u64>, out: &mut Applied) {
        let mut relisted = 0;
        for dir in dirty {
            out.folders.insert(dir);
            if !self.listings.contains_key(&dir) {
                continue;
            }
            if relisted < MAX_RELISTS {
                relisted += 1;
                if let Err(e) = self.relist(dir, out).await {
                    debug!(dir, error = %e, "cannot list a changed folder now; listed when next used");
                    self.listings.invalidate(&dir).await;
                }
            } else {
                self.listings.invalidate(&dir).await;
            }
        }
    }

    /// Lists folder `dir` afresh now (not from the stored listing) and brings the drive's
    /// changes into its cached listing, keeping edits the mount makes meanwhile (an operation
    /// under way keeps its hold on the same listing); the names and nodes that differ go to
    /// `out`.
    pub(super) async fn relist(&self, dir: u64, out: &mut Applied) -> Result<()> {
        let folder = self.folder(dir)?;
        self.drop_stored_listing(&folder.file_id);
        let mut cached = self.listings.get(&dir).await;
        // Up to date with the mount's own changes first: the merge below then brings only the
        // drive's, and the listing's change number moves past the mount's (a later catch-up
        // must not put back, from the table, a folder the drive just reported gone).
        if let Some(listing) = &cached {
            if !listing.catch_up(dir, &lock(&self.table)) {
                self.listings.invalidate(&dir).await;
                cached = None;
            }
        }
        let (before, edits_then) = match &cached {
            Some(listing) => (listing.snapshot(), listing.edits()),
            None => (BTreeMap::new(), 0),
        };
        let shown_before = self.shown(before.values());
        let fresh = self.load_listing(dir).await?;
        let after = match cached {
            Some(listing) => {
                listing.merge(&before, &fresh, edits_then);
                listing.snapshot()
            }
            None => {
                self.listings.insert(dir, fresh.clone()).await;
                fresh.snapshot()
            }
        };
        let shown_after = self.shown(after.values());
        let mut changed = 0;
        for (name, ino) in before.iter().chain(after.iter()) {
            if before.get(name) != Some(ino) || after.get(name) != Some(ino) {
                out.entries.insert((dir, name.clone()));
                changed += 1;
            }
        }
        for (ino, shown) in &shown_after {
            if shown_before.get(ino).is_some_and(|b| b != shown) {
                out.inodes.insert(*ino);
                changed += 1;
            }
        }
        if changed > 0 {
            out.folders.insert(dir);
        }
        self.free_gone(dir, &before, &after, &mut out.gone_dirs);
        Ok(())
    }

    /// The attributes a new revision changes, of nodes `inos`.
    fn shown<'a>(&self, inos: impl Iterator<Item = &'a u64>) -> HashMap<u64, Shown> {
        let table = lock(&self.table);
        inos.filter_map(|&ino| {
            let n = table.get(ino)?;
            Some((ino, (n.size, n.mtime, n.identity.clone())))
        })
        .collect()
    }

    /// Nodes folder `dir` listed before and no longer does: freed unless something holds them
    /// (or they moved to another folder meanwhile).
    /// Folders among them go to `gone_dirs`.
    fn free_gone(
        &self,
        dir: u64,
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        gone_dirs: &mut BTreeMap<u64, String>,
    ) {
        let kept: HashSet<u64> = after.values().copied().collect();
        let mut table = lock(&self.table);
        for ino in before.values().filter(|i| !kept.contains(i)) {
            let Some(n) = table.get(*ino).filter(|n| n.parent == dir) else {
                continue;
            };
            if n.is_dir() {
                gone_dirs.insert(*ino, n.file_id.clone());
            }
            table.free_if_unreferenced(*ino);
        }
    }

    /// Lists folder `dir` afresh now (`alipanfs refresh`, or its count on the drive moved).
    pub async fn relist_folder(&self, dir: u64) -> Result<Applied> {
        let mut out = Applied::default();
        self.relist(dir, &mut out).await?;
        out.changes = (out.entries.len() + out.inodes.len()) as u64;
        Ok(out)
    }

    /// Changes were missed (the feed overflowed): no stored listing can be trusted.
    pub fn drop_all_stored_listings(&self) {
        if let Some(meta) = &self.cfg.meta {
            meta.drop_all_listings();
        }
    }

    /// Folders whose listing is cached (in use lately) and come from the drive: inode, file_id
    /// and how many items the drive listed (None: the mount edited the listing since, so the
    /// count cannot tell), by inode. An edited listing of more than `MAX_EDITED_RELIST`
    /// entries is left out: listing it again at every poll while the mount writes into it
    /// would cost too much (it is listed again at its TTL).
    pub fn cached_folders(&self) -> Vec<(u64, String, Option<usize>)> {
        let cached: Vec<(u64, Option<usize>)> = self
            .listings
            .iter()
            .map(|(dir, l)| (*dir, l.drive_count(), l.len()))
            .filter(|(_, count, len)| count.is_some() || *len <= MAX_EDITED_RELIST)
            .map(|(dir, count, _)| (dir, count))
            .collect();
        let table = lock(&self.table);
        let mut out: Vec<(u64, String, Option<usize>)> = cached
            .into_iter()
            .filter_map(|(dir, count)| {
                let n = table.get(dir)?;
                let drive = !n.is_local_only() && !synthetic::is_synthetic(n);
                drive.then(|| (dir, n.file_id.clone(), count))
            })
            .collect();
        out.sort();
        out
    }

    /// The folder at `path` (relative to the root, "" for the root; a file: its folder), looked
    /// up through listings; a name not in a cached listing lists that folder afresh once.
    pub async fn folder_at(&self, path: &str) -> Result<u64> {
        let mut dir = ROOT_INO;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            let node = match self.child(dir, part).await {
                Err(Error::NotFound(_)) => {
                    self.relist(dir, &mut Applied::default()).await?;
                    self.child(dir, part).await?
                }
                other => other?,
            };
            if !node.is_dir() {
                if i + 1 == parts.len() {
                    return Ok(dir);
                }
                return Err(Error::NotADirectory(part.to_string()));
            }
            dir = node.ino;
        }
        Ok(dir)
    }

    /// Paths of folders `dirs` relative to the root ("" for the root), those still shown.
    pub fn paths_of(&self, dirs: &BTreeSet<u64>) -> Vec<String> {
        let table = lock(&self.table);
        dirs.iter().filter_map(|&d| table.path_of(d)).collect()
    }
}
