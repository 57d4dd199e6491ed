//! A folder deleted or trashed elsewhere while files in it wait for their upload: nothing is
//! lost. Each such file goes to `lost+found` in the mount's root (made when first needed), under
//! its own name (a conflict name if that is taken), its upload retargeted there, with one WARN
//! line. A folder that only moved out of sight is no loss (one `get` tells): its files still
//! upload into it.

use std::collections::BTreeMap;

use super::conflict::conflict_name;
use super::*;
use crate::fs::core::Applied;

/// The folder in the mount's root that rescued files go to.
pub const LOST_AND_FOUND: &str = "lost+found";

impl FsCore {
    /// Rescues the files waiting for their upload below folders `gone` (inode, file_id) that
    /// are no longer on the drive.
    pub async fn rescue_orphans(&self, gone: &BTreeMap<u64, String>) -> Applied {
        let mut out = Applied::default();
        let orphans = self.orphans_below(gone);
        let mut gone_for_sure: HashMap<String, bool> = HashMap::new();
        for (node, folder_id) in orphans {
            let is_gone = match gone_for_sure.get(&folder_id) {
                Some(known) => *known,
                None => {
                    let known = self.is_gone(&folder_id).await;
                    gone_for_sure.insert(folder_id.clone(), known);
                    known
                }
            };
            if is_gone {
                if let Err(e) = self.rescue(&node, &mut out).await {
                    error!(ino = node.ino, name = %node.name, error = %e, "a file waiting for its upload is in a folder deleted elsewhere and cannot be moved to lost+found now; its staged copy is kept");
                }
            }
        }
        out
    }

    /// Nodes with content waiting for its upload below one of `gone`, with that folder's id.
    fn orphans_below(&self, gone: &BTreeMap<u64, String>) -> Vec<(Node, String)> {
        if gone.is_empty() {
            return Vec::new();
        }
        let table = lock(&self.table);
        let with_local: Vec<u64> = table.with_local().collect();
        with_local
            .into_iter()
            .filter_map(|ino| {
                let node = table.get(ino)?;
                if !self.holds_unsaved_version(node) {
                    return None;
                }
                let mut at = node.parent;
                // Bounded walk: parents never cycle, but a bug must not hang the poller.
                for _ in 0..4096 {
                    if let Some(id) = gone.get(&at) {
                        return Some((node.clone(), id.clone()));
                    }
                    if at == ROOT_INO || at == 0 {
                        return None;
                    }
                    at = table.get(at)?.parent;
                }
                None
            })
            .collect()
    }

    /// Whether folder `folder_id` is gone from the drive (deleted or in the recycle bin).
    async fn is_gone(&self, folder_id: &str) -> bool {
        match self.drive.get(folder_id).await {
            Err(Error::NotFound(_) | Error::InRecycleBin(_)) => true,
            Ok(_) => false,
            Err(e) => {
                debug!(folder_id, error = %e, "cannot tell whether a folder is gone");
                false
            }
        }
    }

    /// Moves one waiting file to `lost+found`.
    async fn rescue(&self, node: &Node, out: &mut Applied) -> Result<()> {
        let found = self.lost_and_found().await?;
        let listing = self.listing(found).await?;
        let name = match listing.get(&node.name) {
            Some(_) => conflict_name(&node.name, node.mtime),
            None => node.name.clone(),
        };
        self.unbind_pending(node, Some((found, &name)))?;
        listing.insert(&name, node.ino);
        if let Ok(folder) = self.folder(found) {
            self.drop_stored_listing(&folder.file_id);
        }
        warn!(
            "{:?} was in a folder deleted elsewhere while it waited for its upload; it is kept as {LOST_AND_FOUND}/{name}",
            node.name
        );
        out.entries.insert((node.parent, node.name.clone()));
        out.entries.insert((found, name));
        out.folders.insert(found);
        out.inodes.insert(node.ino);
        out.changes += 1;
        Ok(())
    }

    /// The `lost+found` folder of the mount's root, made if missing.
    async fn lost_and_found(&self) -> Result<u64> {
        match self.child(ROOT_INO, LOST_AND_FOUND).await {
            Ok(n) if n.is_dir() => Ok(n.ino),
            Ok(_) => Err(Error::AlreadyExists(format!(
                "{LOST_AND_FOUND} in the root is a file"
            ))),
            Err(Error::NotFound(_)) => Ok(self.mkdir(ROOT_INO, LOST_AND_FOUND, 0o755).await?.ino),
            Err(e) => Err(e),
        }
    }
}
