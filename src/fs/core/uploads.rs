//! Upload results: a node follows its uploaded drive item; its staged bytes seed the data cache.
//! Uploads resumed at start-up join their folder as pending files when it is first listed.

use super::*;

impl FsCore {
    // ----- upload results ------------------------------------------------------------------

    /// Swap a node to its uploaded drive item once the queue reports success.
    pub(super) async fn follow_uploads(
        core: std::sync::Weak<FsCore>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<UploadEvent>,
    ) {
        // The channel cannot drop an event: every landing reaches its node.
        while let Some(event) = events.recv().await {
            let Some(core) = core.upgrade() else { return };
            if let Ok(item) = &event.outcome {
                core.drop_stored_listing(&item.parent_file_id);
            }
            match event.outcome {
                Ok(item) if lock(&core.table).get(event.key).is_none() => {
                    // A resumed upload (or a file deleted meanwhile): show it on next listing.
                    let dir = lock(&core.table).ino_of(&item.parent_file_id);
                    core.uploads.applied(event.key, &item.file_id);
                    if let Some(dir) = dir {
                        core.listings.invalidate(&dir).await;
                    }
                }
                Ok(item) => {
                    let (old_id, landed_current) = {
                        let mut table = lock(&core.table);
                        let old_id = table.get(event.key).map(|n| n.file_id.clone());
                        table.rekey(event.key, &item.file_id);
                        // The node stands for this drive item now, even if a newer version
                        // waits: its content identity goes with its file_id, or the poller
                        // would take this very upload, seen in the feed, for a change made
                        // elsewhere, and set the waiting version aside as a conflict.
                        if let Some(n) = table.get_mut(event.key) {
                            n.identity = Some(crate::cache::identity_of(&item));
                        }
                        let current = table
                            .get(event.key)
                            .and_then(|n| n.local.clone())
                            .filter(|c| c.path == event.staged);
                        if let Some(content) = &current {
                            // The staged bytes are now exactly the drive item's.
                            if let Some(n) = table.get_mut(event.key) {
                                n.size = item.size;
                                n.mtime = item.mtime();
                                n.ctime = item.updated_at;
                            }
                            // Sealed content never changes (a new writer copies it), so it
                            // stays the drive item's; unless the same staged file waits again.
                            if content.is_sealed() && !core.uploads.is_pending(event.key) {
                                table.mark_landed(event.key);
                            }
                        }
                        (old_id, current)
                    };
                    // After the rekey: a reader of `uploaded_file_id` finds the id on the node.
                    core.uploads.applied(event.key, &item.file_id);
                    if let Some(old) = old_id {
                        core.reader.forget_file(&old);
                    }
                    match landed_current {
                        Some(content) => {
                            tokio::spawn(core.clone().seed_cache(event.key, item.clone(), content));
                        }
                        None => core.offer_url_of(&item),
                    }
                    core.space.invalidate(&()).await;
                    debug!(ino = event.key, file_id = %item.file_id, "upload landed");
                }
                Err(message) => {
                    error!(ino = event.key, %message, "upload failed; it stays queued for retry")
                }
            }
        }
    }
}

impl FsCore {
    /// A just-uploaded node's staged bytes are exactly its drive item's (file_ids are
    /// immutable): they seed the data cache, so reading back what was just written costs no
    /// getDownloadUrl (about 1 call/s allowed) nor download; then the node drops its local
    /// content and reads like any drive file, from the cache.
    pub(super) async fn seed_cache(
        self: Arc<Self>,
        ino: u64,
        item: RemoteItem,
        content: Arc<LocalContent>,
    ) {
        let seeding = match (self.reader.cache(), content.file().try_clone()) {
            (Some(cache), Ok(file)) => {
                let identity = crate::cache::identity_of(&item);
                cache.seed(&item.file_id, &identity, item.size, file)
            }
            (Some(_), Err(e)) => {
                debug!(ino, "cannot seed the data cache: {e}");
                None
            }
            (None, _) => None,
        };
        match seeding {
            Some(done) => {
                let _ = done.await;
            }
            // Read back from the drive, then: its URL saves a getDownloadUrl (about one a
            // second allowed). A seeded file is read from the cache; its URL would sit unused
            // (about 370 bytes a file in the URL cache).
            None => self.offer_url_of(&item),
        }
        let mut table = lock(&self.table);
        let unchanged = table
            .get(ino)
            .and_then(|n| n.local.as_ref())
            .is_some_and(|c| Arc::ptr_eq(c, &content) && c.is_sealed());
        if unchanged && !self.uploads.is_pending(ino) {
            table.set_local(ino, None);
        }
    }
}

impl FsCore {
    /// Offers the download URL the upload's answer carried, if any, to the URL cache.
    fn offer_url_of(&self, item: &RemoteItem) {
        if let Some(url) = &item.download_url {
            self.reader.offer_url(&item.file_id, url.clone());
        }
    }

    /// The uploads resumed at start-up into folder `folder_id` that wait to be shown, taken off
    /// that list, with their staged files opened (before the table is locked: disk I/O).
    pub(super) fn take_resumed(&self, folder_id: &str) -> Vec<(Resumed, std::fs::File)> {
        let mine: Vec<Resumed> = {
            let mut all = lock(&self.resumed);
            if all.is_empty() {
                return Vec::new();
            }
            let (mine, rest) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|r| r.target.parent_file_id == folder_id);
            *all = rest;
            mine
        };
        mine.into_iter()
            .filter_map(|r| {
                let file = std::fs::File::open(&r.staged).ok()?;
                Some((r, file))
            })
            .collect()
    }

    /// Shows a resumed upload that has not landed yet as a pending file of folder `dir`, under
    /// the inode number it is queued with: it reads from its staged bytes, hides the drive copy
    /// it replaces, and unlink, rename and rewrite act on its upload as on any pending file.
    /// Its landing then finds the node as for any upload (the queue records a landing before
    /// it reports it, so one that landed already is skipped here and listed from the drive).
    pub(super) fn attach_resumed(
        &self,
        table: &mut InodeTable,
        dir: u64,
        r: Resumed,
        file: std::fs::File,
    ) {
        if !self.uploads.is_pending(r.ino) || self.uploads.uploaded_file_id(r.ino).is_some() {
            return;
        }
        let size = file.metadata().map_or(0, |m| m.len());
        let content = Arc::new(LocalContent::new(r.staged.clone(), file));
        content.seal();
        let mtime = r.target.mtime.unwrap_or_else(SystemTime::now);
        table.insert_local_file_at(r.ino, dir, &r.target.name, content, mtime);
        if let Some(n) = table.get_mut(r.ino) {
            n.size = size;
            n.displaces = r.target.replaces.clone();
        }
        debug!(ino = r.ino, name = %r.target.name, "resumed upload shown as a pending file");
    }
}
