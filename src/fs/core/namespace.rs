//! Namespace changes: mkdir, unlink, rmdir, rename.
//!
//! Ordering: operations on one name happen on the drive in the order the user made them. The
//! mount's listing decides whether a name is free, and each call finishes its part on the drive,
//! or makes it impossible, before it returns, per inode:
//! - unlink (and a rename that replaces a file) first detaches the inode's pending versions
//!   (`detach_pending`): the queued upload is cancelled and a running one stopped and waited
//!   for (`UploadQueue::settle`; one that completed at that moment is removed by the queue),
//!   then the drive item is removed; only then are the staged versions discarded. So once the
//!   call returns, nothing of the file can land on the drive, even after a crash, and if the
//!   removal fails the versions are queued again (`reattach`) and nothing is lost.
//! - rename of a file with a pending upload retargets the job (`UploadQueue::set_target`): a
//!   waiting job just takes the new name; a running one is stopped and queued again under it,
//!   and the call waits until it has stopped, so the old name is free on the drive at once.
//! - rename of a pending file onto a drive file makes the upload replace it (`displaces`):
//!   the old copy stays on the drive until the new one is verified. Deleting that file, or
//!   renaming it away, removes the hidden copy at once (`Node::drive_copy`).
//! - rename of a drive file whose newer version lands meanwhile renames the newest copy too.
//! - mkdir, rmdir and renames of drive items are plain drive calls made before returning.
//!
//! An attempt stopped just as its final `complete` was answered removes the drive files it
//! created (`JobProgress::take_sessions`) before `settle` returns.

use super::*;

impl FsCore {
    // ----- namespace changes ---------------------------------------------------------------

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32) -> Result<Attr> {
        self.writable()?;
        let _folder = self.lock_folders(parent, parent).await;
        self.refuse_synthetic_at(parent, name)?;
        names::validate(name)?;
        let folder = self.folder(parent)?;
        let listing = self.listing(parent).await?;
        if listing.get(name).is_some() {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let created = self
            .drive
            .create_folder(&folder.file_id, name, crate::drive::CheckNameMode::Refuse)
            .await?;
        if created.exist {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let now = SystemTime::now();
        let item = RemoteItem {
            file_id: created.file_id,
            parent_file_id: folder.file_id,
            name: created.name,
            kind: ItemKind::Folder,
            size: 0,
            content_hash: None,
            created_at: now,
            updated_at: now,
            local_modified_at: None,
            download_url: None,
            streams: Vec::new(),
        };
        let (node, seen) = {
            let mut table = lock(&self.table);
            let ino = table.upsert_remote(&item, parent, name);
            table.mark_changed(ino);
            let node = table.get_mut(ino).expect("just inserted");
            node.lookups += 1;
            node.perms = self.perms_for_new(ItemKind::Folder, mode);
            (node.clone(), table.change_seq())
        };
        listing.insert(name, node.ino);
        self.touch_dir(parent);
        // The new folder is empty: cache that instead of listing it.
        self.listings
            .insert(node.ino, Arc::new(Listing::empty_at(seen)))
            .await;
        Ok(self.attr_of(&node))
    }

    /// Remove a drive item: to the recycle bin, or permanently with --delete-permanently.
    pub(super) async fn remove_remote(&self, file_id: &str) -> Result<()> {
        let result = if self.cfg.delete_permanently {
            self.drive.delete(file_id).await
        } else {
            self.drive.trash(file_id).await
        };
        match result {
            Ok(_) | Err(Error::NotFound(_)) => {
                lock(&self.table).mark_removed(file_id);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.writable()?;
        let _folder = self.lock_folders(parent, parent).await;
        self.refuse_synthetic_at(parent, name)?;
        let node = self.child(parent, name).await?;
        self.refuse_synthetic(&node)?;
        if node.is_dir() {
            return Err(Error::IsADirectory(name.to_string()));
        }
        let detached = self.detach_pending(node.ino).await;
        // An upload that completed just before the cancel left a drive item: remove that one.
        // A file not uploaded yet may hide the drive item it was renamed onto: that one goes.
        let node = self.adopt_upload(node.ino)?;
        if let Some(id) = node.drive_copy() {
            if let Err(e) = self.remove_remote(id).await {
                self.reattach(detached);
                return Err(e);
            }
        }
        detached.discard();
        self.forget_removed(parent, name, &node).await;
        Ok(())
    }

    /// A file is about to be deleted (unlink, or replaced by a rename): nothing of it may reach
    /// the drive once the call returns. Its queued upload is cancelled and a running one stopped
    /// (waited for: an upload that completed meanwhile is removed by the queue); it leaves the
    /// tree, so a writer still open uploads nothing at close. Its staged versions stay on disk
    /// until the caller knows the deletion is done on the drive (`Detached::discard`, so a crash
    /// does not bring the file back) or failed (`reattach`, so a failed unlink loses nothing).
    pub(super) async fn detach_pending(&self, ino: u64) -> Detached {
        let detached = {
            let _gate = lock(&self.upload_gate);
            let queued = self.uploads.cancel(ino);
            let mut table = lock(&self.table);
            let (parent, local) = table
                .get_mut(ino)
                .map(|n| (std::mem::replace(&mut n.parent, 0), n.local.clone()))
                .unwrap_or_default();
            table.mark_changed(ino);
            Detached {
                ino,
                parent,
                queued,
                unsealed: local.filter(|c| !c.is_sealed()),
            }
        };
        self.uploads.settle(ino).await;
        detached
    }

    /// The deletion failed on the drive: the file is back in its folder with every pending
    /// version queued again, as if nothing had happened.
    pub(super) fn reattach(&self, detached: Detached) {
        let superseded: Vec<PathBuf> = {
            let _gate = lock(&self.upload_gate);
            let mut table = lock(&self.table);
            if let Some(n) = table.get_mut(detached.ino) {
                n.parent = detached.parent;
            }
            table.mark_changed(detached.ino);
            drop(table);
            detached
                .queued
                .iter()
                .filter_map(|(target, staged)| {
                    self.uploads
                        .enqueue(detached.ino, target.clone(), staged.clone(), None, 0)
                })
                .collect()
        };
        for old in superseded {
            remove_staged(&old);
        }
        // Their entries were closed when first queued; the gate is dropped before the fsyncs.
        for (_, staged) in &detached.queued {
            self.uploads.rejournal(staged, Closed::Synced);
        }
    }

    /// Point a node at the result of its last completed upload, if the upload event has not
    /// been applied yet (renames and deletes must act on the newest drive item).
    pub(super) fn adopt_upload(&self, ino: u64) -> Result<Node> {
        if let Some(file_id) = self.uploads.uploaded_file_id(ino) {
            let mut table = lock(&self.table);
            if table.get(ino).is_some_and(|n| n.file_id != file_id) {
                table.rekey(ino, &file_id);
            }
        }
        self.node(ino)
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        let _folder = self.lock_folders(parent, parent).await;
        self.writable()?;
        self.refuse_synthetic_at(parent, name)?;
        let node = self.child(parent, name).await?;
        self.refuse_synthetic(&node)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory(name.to_string()));
        }
        if self.listing(node.ino).await?.len() > 0 {
            return Err(Error::NotEmpty(name.to_string()));
        }
        self.remove_remote(&node.file_id).await?;
        self.forget_removed(parent, name, &node).await;
        Ok(())
    }

    pub(super) async fn forget_removed(&self, parent: u64, name: &str, node: &Node) {
        if let Some(listing) = self.listings.get(&parent).await {
            listing.remove(name);
        }
        self.listings.invalidate(&node.ino).await;
        self.reader.forget_file(&node.file_id);
        self.touch_dir(parent);
        let mut table = lock(&self.table);
        table.set_local(node.ino, None);
        if !node.is_local_only() {
            table.mark_removed(&node.file_id);
        }
        match table.get_mut(node.ino) {
            Some(n) if n.lookups == 0 && n.open_handles == 0 => {
                table.remove(node.ino);
            }
            // The kernel still holds it: keep the number, detach it from the tree.
            Some(n) => n.parent = 0,
            None => {}
        }
    }

    /// rename(2): replaces an existing target as POSIX says. Order: the target goes to the
    /// recycle bin first (its content stays recoverable there), then the source takes the name;
    /// if the second step fails, the source is untouched under its old name.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        let _folders = self.lock_folders(parent, new_parent).await;
        let result = self
            .rename_steps(parent, name, new_parent, new_name, no_replace)
            .await;
        // Whatever step failed, the drive may have changed in both folders by then.
        if result.is_err() {
            let ids: Vec<String> = {
                let table = lock(&self.table);
                [parent, new_parent]
                    .iter()
                    .filter_map(|d| table.get(*d).map(|n| n.file_id.clone()))
                    .collect()
            };
            for id in ids {
                self.drop_stored_listing(&id);
            }
        }
        result
    }

    async fn rename_steps(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        self.writable()?;
        self.refuse_synthetic_at(parent, name)?;
        self.refuse_synthetic_at(new_parent, new_name)?;
        names::validate(new_name)?;
        let node = self.child(parent, name).await?;
        self.refuse_synthetic(&node)?;
        let target_folder = self.folder(new_parent)?;
        let target_listing = self.listing(new_parent).await?;
        if node.is_dir() && self.is_ancestor(node.ino, new_parent) {
            return Err(Error::InvalidName(format!(
                "cannot move {name} into itself"
            )));
        }
        // The drive item a pending source takes the place of (retired by its upload).
        let mut displaced: Option<String> = None;
        if let Some(target_ino) = target_listing.get(new_name) {
            if target_ino == node.ino {
                return Ok(());
            }
            self.check_replaceable(&node, target_ino, new_name, no_replace)
                .await?;
            displaced = self
                .replace_target(&node, new_parent, new_name, target_ino)
                .await?;
        }
        // The newest drive item of the node (its upload may have landed a moment ago).
        let node = self.adopt_upload(node.ino)?;
        let leaves_displaced = self.retire_hidden_copies(&node, &mut displaced).await?;
        let to = (target_folder.file_id.as_str(), new_parent, new_name);
        let renamed_remote = self.rename_drive_copy(&node, parent, to).await?;
        let queued = self.retarget_pending(&node, to, &displaced, leaves_displaced)?;
        if queued {
            // An upload under way under the old name is stopped (and queued again under the
            // new one) before we return, so the old name is free on the drive at once.
            self.uploads.settle(node.ino).await;
        }
        debug!(
            ino = node.ino,
            from = name,
            to = new_name,
            queued,
            renamed_remote,
            "renamed"
        );
        if !queued {
            self.rename_late_landing(&node, parent, to, renamed_remote, &displaced)
                .await?;
        }
        if let Some(listing) = self.listings.get(&parent).await {
            listing.remove(name);
        }
        target_listing.insert(new_name, node.ino);
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        Ok(())
    }

    /// May `node` take the place of `target_ino` (`new_name`)? As rename(2) says.
    async fn check_replaceable(
        &self,
        node: &Node,
        target_ino: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        if no_replace {
            return Err(Error::AlreadyExists(new_name.to_string()));
        }
        let target = self.node(target_ino)?;
        match (node.is_dir(), target.is_dir()) {
            (false, true) => Err(Error::IsADirectory(new_name.to_string())),
            (true, false) => Err(Error::NotADirectory(new_name.to_string())),
            (true, true) if self.listing(target_ino).await?.len() > 0 => {
                Err(Error::NotEmpty(new_name.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// The rename's target goes: its pending upload is cancelled, its drive copy removed, or,
    /// when a pending source replaces it, kept until that source's upload retires it (returned:
    /// the source's `displaced`), so no moment, crash included, leaves the name without one
    /// good copy.
    async fn replace_target(
        &self,
        node: &Node,
        new_parent: u64,
        new_name: &str,
        target_ino: u64,
    ) -> Result<Option<String>> {
        let target = self.node(target_ino)?;
        let detached = if target.is_dir() {
            None
        } else {
            Some(self.detach_pending(target_ino).await)
        };
        let target = self.adopt_upload(target_ino)?;
        let source_pending = !node.is_dir() && self.adopt_upload(node.ino)?.is_local_only();
        let mut displaced = None;
        match target.drive_copy() {
            Some(id) if source_pending => displaced = Some(id.to_string()),
            Some(id) => {
                if let Err(e) = self.remove_remote(id).await {
                    if let Some(detached) = detached {
                        self.reattach(detached);
                    }
                    return Err(e);
                }
            }
            None => {}
        }
        if let Some(detached) = detached {
            detached.discard();
        }
        self.forget_removed(new_parent, new_name, &target).await;
        Ok(displaced)
    }

    /// Drive copies the moved name must no longer hide: the one a pending file hid at the name
    /// it leaves (returns true: the name is then free on the drive too, and its upload retires
    /// nothing there), and the one it was to retire at the new name if its first upload landed
    /// meanwhile (then it is replaced like any drive item).
    async fn retire_hidden_copies(
        &self,
        node: &Node,
        displaced: &mut Option<String>,
    ) -> Result<bool> {
        let leaves_displaced = node.is_local_only() && node.displaces.is_some();
        if let Some(old) = node.displaces.as_deref().filter(|_| leaves_displaced) {
            self.remove_remote(old).await?;
        }
        if displaced.is_some() && !node.is_local_only() {
            if let Some(old) = displaced.take() {
                self.remove_remote(&old).await?;
            }
        }
        Ok(leaves_displaced)
    }

    /// Rename/move `node`'s drive copy, if it has one; true when done.
    async fn rename_drive_copy(
        &self,
        node: &Node,
        parent: u64,
        to: (&str, u64, &str),
    ) -> Result<bool> {
        if node.is_local_only() {
            return Ok(false);
        }
        match self
            .rename_remote(&node.file_id, &node.remote_name, parent, to)
            .await
        {
            Ok(()) => Ok(true),
            // A newer version landed meanwhile and retired this copy: the newer one is
            // renamed below, once its job can no longer change.
            Err(Error::NotFound(_) | Error::InRecycleBin(_))
                if self.adopt_upload(node.ino)?.file_id != node.file_id =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The node takes its new name, and its queued upload (if any) the new target, at one
    /// instant under the upload gate; the journal entries follow with the gate dropped. True
    /// when an upload was queued.
    fn retarget_pending(
        &self,
        node: &Node,
        to: (&str, u64, &str),
        displaced: &Option<String>,
        leaves_displaced: bool,
    ) -> Result<bool> {
        let (folder_id, new_parent, new_name) = to;
        let rejournal = {
            let _gate = lock(&self.upload_gate);
            let folder_id = folder_id.to_string();
            let new_name_owned = new_name.to_string();
            let replaces = displaced.clone();
            let rejournal = self.uploads.retarget(node.ino, move |t| {
                t.parent_file_id = folder_id;
                t.name = new_name_owned;
                if replaces.is_some() || leaves_displaced {
                    t.replaces = replaces;
                }
            });
            let mut table = lock(&self.table);
            if let Some(n) = table.get_mut(node.ino) {
                n.parent = new_parent;
                n.name = new_name.to_string();
                n.remote_name = new_name.to_string();
                n.ctime = SystemTime::now();
                if displaced.is_some() || leaves_displaced {
                    n.displaces = displaced.clone();
                }
            }
            table.mark_changed(node.ino);
            drop(table);
            rejournal
        };
        let queued = rejournal.write(&self.uploads);
        // A version still being written goes under the new name after a crash too.
        if let Some(content) = node.local.as_ref().filter(|c| !c.is_sealed()) {
            self.journal(node.ino, content, Closed::Keep)?;
        }
        Ok(queued)
    }

    /// An upload that landed between our two looks (a first one, or a newer version that
    /// retired the copy renamed above) is renamed like any drive item.
    async fn rename_late_landing(
        &self,
        node: &Node,
        parent: u64,
        to: (&str, u64, &str),
        renamed_remote: bool,
        displaced: &Option<String>,
    ) -> Result<()> {
        let landed = self.adopt_upload(node.ino)?;
        let moved = renamed_remote && landed.file_id == node.file_id;
        if landed.is_local_only() || moved {
            return Ok(());
        }
        if let Some(old) = displaced {
            self.remove_remote(old).await?;
        }
        self.rename_remote(&landed.file_id, &node.remote_name, parent, to)
            .await
    }

    /// Rename and/or move a drive item.
    /// `to` is (folder file_id, folder inode, name).
    pub(super) async fn rename_remote(
        &self,
        file_id: &str,
        remote_name: &str,
        parent: u64,
        to: (&str, u64, &str),
    ) -> Result<()> {
        let (folder_id, new_parent, new_name) = to;
        if parent == new_parent {
            if remote_name != new_name {
                self.drive.rename(file_id, new_name).await?;
            }
            return Ok(());
        }
        let renamed = (remote_name != new_name).then_some(new_name);
        let result = self.drive.move_item(file_id, folder_id, renamed).await?;
        if result.exist {
            return Err(Error::AlreadyExists(new_name.to_string()));
        }
        // Sources disagree on whether move's `new_name` always applies or only on a clash:
        // check, and rename when it did not. The item has moved: a failed check must not fail
        // the call with the move half done, so it renames anyway (a rename to the name an
        // item has is a no-op). Found by the multi-threaded reference-model test.
        if renamed.is_some() {
            let applied = match self.drive.get(file_id).await {
                Ok(item) => item.name == new_name,
                Err(e) => {
                    debug!(file_id, error = %e, "cannot check the name a move gave; renaming");
                    false
                }
            };
            if !applied {
                self.drive.rename(file_id, new_name).await?;
            }
        }
        Ok(())
    }

    pub(super) fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        let table = lock(&self.table);
        loop {
            if ino == ancestor {
                return true;
            }
            match table.get(ino) {
                Some(n) if n.ino != ROOT_INO && n.parent != 0 => ino = n.parent,
                _ => return false,
            }
        }
    }
}

/// The pending versions of a file being deleted, kept until the deletion is settled.
pub(super) struct Detached {
    ino: u64,
    /// The folder it was in (0 when it was already detached).
    parent: u64,
    queued: Vec<(UploadTarget, PathBuf)>,
    /// The version still open for writing, if any.
    unsealed: Option<Arc<LocalContent>>,
}

impl Detached {
    /// The deletion is done on the drive: the staged versions and their journal entries go
    /// (open handles keep reading theirs through the descriptor).
    pub(super) fn discard(self) {
        for (_, staged) in &self.queued {
            remove_staged(staged);
        }
        if let Some(content) = &self.unsealed {
            remove_staged(&content.path);
        }
    }
}
