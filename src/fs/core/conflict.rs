//! A file whose content changed on the drive while a version written through the mount waits
//! for its upload: nothing is lost. The later of the two keeps the name; the other is kept
//! beside it as `NAME (conflict YYYY-MM-DD HHMMSS).EXT` (the time of that version, local time),
//! with one WARN line:
//! - the drive's change is later: the local version becomes a new file of the conflict name
//!   (its upload no longer replaces the drive's item), and the drive's item shows under NAME;
//! - the local version is later: the drive's item is renamed to the conflict name on the drive,
//!   and the local version uploads as a new file under NAME.
//!
//! Either way the pending node stops standing for the drive item (it becomes local-only, as a
//! new file is), so listings show the two side by side. A rename or move of the drive item alone
//! is no conflict: the upload still replaces it.

use std::collections::BTreeSet;

use super::*;
use crate::fs::core::Applied;
use crate::fs::inode::LOCAL_ID_PREFIX;
use crate::write::staging::Closed;

/// `NAME (conflict YYYY-MM-DD HHMMSS).EXT` for a version of `name` made at `at`.
pub fn conflict_name(name: &str, at: SystemTime) -> String {
    let stamp = chrono::DateTime::<chrono::Local>::from(at).format("%Y-%m-%d %H%M%S");
    match name.rfind('.').filter(|&i| i > 0) {
        Some(i) => format!("{} (conflict {stamp}){}", &name[..i], &name[i..]),
        None => format!("{name} (conflict {stamp})"),
    }
}

impl FsCore {
    /// Settles each file the drive changed while its local version waited (`Applied::kept_local`).
    pub async fn resolve_conflicts(&self, kept: &[(u64, RemoteItem)]) -> Applied {
        let mut out = Applied::default();
        let mut dirty = BTreeSet::new();
        for (ino, item) in kept {
            match self.resolve_conflict(*ino, item, &mut out).await {
                Ok(Some(dir)) => {
                    dirty.insert(dir);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(ino, name = %item.name, error = %e, "changed on the drive while a local version waits for its upload, and the two cannot be kept apart now; the local version is kept");
                }
            }
        }
        self.relist_dirty(dirty, &mut out).await;
        out
    }

    /// One conflict; returns the folder whose listing changed.
    async fn resolve_conflict(
        &self,
        ino: u64,
        item: &RemoteItem,
        out: &mut Applied,
    ) -> Result<Option<u64>> {
        let node = self.node(ino)?;
        let new_content = node.identity.as_deref() != Some(&crate::cache::identity_of(item));
        // A copy opened for writing and not written is no version of its own.
        let unsaved = self.holds_unsaved_version(&node);
        if node.file_id == item.file_id && new_content && !unsaved {
            // Open for writing, not written yet: what is written next is based on the old
            // content, so it will be kept beside the drive's change (`set_aside_stale`).
            if let Some(open) = node.local.as_ref().filter(|c| !c.is_sealed()) {
                open.mark_stale_base();
                debug!(ino, name = %node.name, "changed on the drive while open for writing here");
            }
        }
        if node.file_id != item.file_id || !unsaved || !new_content {
            return Ok(None);
        }
        let drive_later = item.updated_at >= node.mtime;
        let aside = if drive_later {
            conflict_name(&node.name, node.mtime)
        } else {
            let aside = conflict_name(&item.name, item.updated_at);
            self.drive.rename(&item.file_id, &aside).await?;
            aside
        };
        let to = drive_later.then_some((node.parent, aside.as_str()));
        self.unbind_pending(&node, to)?;
        let (kept, moved) = if drive_later {
            ("the drive's version", "the local version")
        } else {
            ("the local version", "the drive's version")
        };
        warn!(
            "conflict: {} changed on the drive while a local version waited for its upload; {kept} keeps the name, {moved} is kept as {aside:?}",
            node.name
        );
        self.drop_stored_listing(&item.parent_file_id);
        out.entries.insert((node.parent, node.name.clone()));
        out.entries.insert((node.parent, aside));
        out.inodes.insert(ino);
        out.changes += 1;
        Ok(Some(node.parent))
    }

    /// A version written on a copy the drive changed meanwhile (the file was open for writing
    /// here when another device changed it): the drive's change keeps the name, and this
    /// version goes beside it as a conflict copy, with one WARN line. Nothing is replaced.
    pub(super) fn set_aside_stale(&self, ino: u64) -> Result<()> {
        let node = self.node(ino)?;
        if node.is_detached() || node.is_local_only() {
            return Ok(());
        }
        let aside = conflict_name(&node.name, SystemTime::now());
        self.unbind_pending(&node, Some((node.parent, &aside)))?;
        warn!(
            "conflict: {} changed on the drive while it was open for writing here; the drive's version keeps the name, the version written here is kept as {aside:?}",
            node.name
        );
        if let Some(folder) = lock(&self.table).get(node.parent) {
            self.drop_stored_listing(&folder.file_id);
        }
        // The folder is listed afresh at its next use: the drive's copy under the name, this
        // node under the conflict name.
        let listings = self.listings.clone();
        self.runtime
            .spawn(async move { listings.invalidate(&node.parent).await });
        Ok(())
    }

    /// The pending node stops standing for its drive item: it becomes a new local file (in
    /// folder `to.0` as `to.1`, if given), and its upload (or its journal entry, while still
    /// written) replaces nothing.
    pub(super) fn unbind_pending(&self, node: &Node, to: Option<(u64, &str)>) -> Result<()> {
        let ino = node.ino;
        let to = match to {
            Some((dir, name)) => Some((dir, self.folder(dir)?.file_id, name.to_string())),
            None => None,
        };
        let rejournal = {
            let _gate = lock(&self.upload_gate);
            let target = to.clone();
            let rejournal = self.uploads.retarget(ino, move |t| {
                t.replaces = None;
                if let Some((_, folder_id, name)) = target {
                    t.parent_file_id = folder_id;
                    t.name = name;
                }
            });
            let mut table = lock(&self.table);
            table.rekey(ino, &format!("{LOCAL_ID_PREFIX}{ino}"));
            if let Some(n) = table.get_mut(ino) {
                n.displaces = None;
                n.identity = None;
                if let Some((dir, _, name)) = to {
                    n.parent = dir;
                    n.name = name.clone();
                    n.remote_name = name;
                }
            }
            rejournal
        };
        rejournal.write(&self.uploads);
        if let Some(content) = node.local.as_ref().filter(|c| !c.is_sealed()) {
            self.journal(ino, content, Closed::Keep)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_600);
        let stamp = chrono::DateTime::<chrono::Local>::from(at)
            .format("%Y-%m-%d %H%M%S")
            .to_string();
        assert_eq!(
            conflict_name("report.final.txt", at),
            format!("report.final (conflict {stamp}).txt")
        );
        assert_eq!(
            conflict_name("README", at),
            format!("README (conflict {stamp})")
        );
        assert_eq!(
            conflict_name(".bashrc", at),
            format!(".bashrc (conflict {stamp})")
        );
    }
}
