//! The reads served from folder listings: a child by name (`child`, `lookup`), `forget`,
//! `getattr`, `opendir`/`readdir`/`releasedir` in the configured order, and the drive's space
//! (`statfs`). Separate from `listing`, which holds the listing cache itself: how a listing is
//! built, stored on disk and kept up to date with the mount's own changes.

use super::*;

impl FsCore {
    pub(in crate::fs::core) async fn child(&self, parent: u64, name: &str) -> Result<Node> {
        if name.len() > names::MAX_NAME_BYTES {
            // No such name can exist on the drive: say so before any listing call.
            return Err(Error::InvalidName(name.to_string()));
        }
        let folder = self.folder(parent)?;
        if let Some(node) = self.transcodes_root(parent, name) {
            return Ok(node);
        }
        let mut listing = self.listing(parent).await?;
        if listing.get(name).is_none() && self.relist_growing(&folder).await {
            listing = self.listing(parent).await?;
        }
        let ino = listing
            .get(name)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        self.size_synthetic(self.node(ino)?).await
    }

    // ----- lookup, attributes, directories --------------------------------------------------

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        let node = self.child(parent, name).await?;
        let mut table = lock(&self.table);
        let node = table
            .get_mut(node.ino)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        node.lookups += 1;
        let node = node.clone();
        drop(table);
        Ok(self.attr_of(&node))
    }

    pub async fn forget(&self, ino: u64, n: u64) {
        let (parent, name) = {
            let mut table = lock(&self.table);
            if !table.forget(ino, n) {
                return;
            }
            match table.get(ino) {
                Some(node) => (node.parent, node.name.clone()),
                None => return,
            }
        };
        // Keep the node while its parent's cached listing names it (readdir gave it out).
        let listed = self
            .listings
            .get(&parent)
            .await
            .is_some_and(|l| l.get(&name) == Some(ino));
        if !listed {
            lock(&self.table).free_if_unreferenced(ino);
        }
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        Ok(self.attr_of(&node))
    }

    /// Open a folder: its entries are fixed for the life of the handle, so readdir offsets are stable.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        let listing = self.listing(ino).await?;
        let table = lock(&self.table);
        let mut entries: Vec<DirEntry> = listing
            .entries
            .lock()
            .by_name
            .iter()
            .filter_map(|(name, &child)| {
                table.get(child).map(|n| DirEntry {
                    ino: child,
                    name: name.clone(),
                    kind: n.kind,
                })
            })
            .collect();
        // The listing is by name: a stable sort keeps ties in name order.
        let key = |e: &DirEntry| {
            table.get(e.ino).map(|n| match self.cfg.order_by {
                OrderBy::Name => (0, SystemTime::UNIX_EPOCH),
                OrderBy::Size => (n.size, SystemTime::UNIX_EPOCH),
                OrderBy::UpdatedAt => (0, n.ctime),
                OrderBy::CreatedAt => (0, n.crtime),
            })
        };
        match (self.cfg.order_by, self.cfg.order_direction) {
            (OrderBy::Name, OrderDirection::Asc) => {}
            (OrderBy::Name, OrderDirection::Desc) => entries.reverse(),
            (_, OrderDirection::Asc) => entries.sort_by_key(|e| key(e)),
            (_, OrderDirection::Desc) => entries.sort_by_key(|e| std::cmp::Reverse(key(e))),
        }
        let parent = table.get(ino).map(|n| n.parent).unwrap_or(ROOT_INO);
        drop(table);
        entries.insert(
            0,
            DirEntry {
                ino: parent,
                name: "..".into(),
                kind: ItemKind::Folder,
            },
        );
        entries.insert(
            0,
            DirEntry {
                ino,
                name: ".".into(),
                kind: ItemKind::Folder,
            },
        );
        Ok(self.add_handle(Handle::Dir(Arc::new(entries), listing)))
    }

    /// Entries of an open folder from `offset` on (each with the offset of the one after it, so
    /// an entry skipped because it vanished meanwhile never shifts the offsets of the rest), with their attributes when `plus` (readdirplus
    /// counts as a lookup of each entry but `.` and `..`).
    pub fn readdir(&self, fh: u64, offset: u64, plus: bool) -> Result<Vec<DirSlot>> {
        let (entries, listing) = match lock(&self.handles).get(&fh) {
            Some(Handle::Dir(entries, listing)) => (entries.clone(), listing.clone()),
            _ => return Err(Error::NotADirectory(format!("handle {fh}"))),
        };
        let left = listing.deadline.left();
        let dir = entries.first().map_or(0, |e| e.ino);
        let mut out = Vec::new();
        for (index, entry) in entries.iter().enumerate().skip(offset as usize) {
            let (attr, fresh_for) = if plus && entry.name != "." && entry.name != ".." {
                let table = lock(&self.table);
                match table.get(entry.ino) {
                    Some(node) => (
                        Some(self.attr_of(node)),
                        left.filter(|_| self.listed_as_on_drive(node, dir, &entry.name)),
                    ),
                    None => continue,
                }
            } else {
                (None, None)
            };
            out.push(DirSlot {
                next_offset: index as u64 + 1,
                entry: entry.clone(),
                attr,
                fresh_for,
            });
        }
        Ok(out)
    }

    /// The adapter tells which readdirplus entries reached the kernel: those count as lookups.
    pub fn count_lookup(&self, ino: u64) {
        if let Some(node) = lock(&self.table).get_mut(ino) {
            node.lookups += 1;
        }
    }

    pub fn plus_attr(&self, ino: u64) -> Option<Attr> {
        lock(&self.table).get(ino).map(|n| self.attr_of(n))
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    pub async fn statfs(&self) -> Result<SpaceInfo> {
        let drive = self.drive.clone();
        let space = self
            .space
            .try_get_with((), async move { drive.space_info().await })
            .await
            .map_err(Error::unshare)?;
        self.free_bytes.store(
            space.total_bytes.saturating_sub(space.used_bytes),
            Ordering::Relaxed,
        );
        // What was written through the mount counts at once, not when its upload lands (the
        // drive's figure is asked again after each landing, see `follow_uploads`).
        let pending = self.uploads.pending_bytes();
        Ok(SpaceInfo {
            used_bytes: space.used_bytes.saturating_add(pending),
            ..space
        })
    }

    pub(in crate::fs::core) async fn watch_space(core: std::sync::Weak<FsCore>) {
        loop {
            let Some(strong) = core.upgrade() else { return };
            if let Err(e) = strong.statfs().await {
                debug!(error = %e, "could not refresh the drive's free space");
            }
            drop(strong);
            tokio::time::sleep(SPACE_REFRESH).await;
        }
    }
}
