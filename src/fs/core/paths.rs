//! The core by path, for front ends that have no kernel (WebDAV): resolve a path to a node,
//! list a folder with attributes, create without a kernel reference, copy on the drive.
//!
//! A kernel lookup count pins a node until FORGET; these calls take none, so a node a WebDAV
//! client touched lives as long as its folder's cached listing or an open handle, like any
//! node the kernel has forgotten. `create` and `mkdir` count one lookup (their FUSE replies
//! are entries); `create_by_path` / `mkdir_by_path` give it back at once.

use super::*;

impl FsCore {
    /// The node at `components` (no `.`/`..`; empty = the root).
    pub async fn resolve(&self, components: &[&str]) -> Result<Attr> {
        let mut ino = ROOT_INO;
        for name in components {
            ino = self.child(ino, name).await?.ino;
        }
        self.getattr(ino).await
    }

    /// The folder's entries with their attributes, in readdir order, without `.` and `..`.
    pub async fn list(&self, ino: u64) -> Result<Vec<(String, Attr)>> {
        let fh = self.opendir(ino).await?;
        let slots = self.readdir(fh, 2, true);
        self.releasedir(fh);
        Ok(slots?
            .into_iter()
            .filter_map(|slot| Some((slot.entry.name, slot.attr?)))
            .collect())
    }

    /// A strong validator of a node's content: the drive's content identity, or for content
    /// written here and not landed yet, its version and size.
    pub fn etag(&self, ino: u64) -> Option<String> {
        let table = lock(&self.table);
        let node = table.get(ino)?;
        if node.is_dir() {
            return None;
        }
        match (&node.local, &node.identity) {
            (Some(local), _) => Some(format!("local-{}-{}", local.version(), node.size)),
            (None, Some(identity)) => Some(identity.clone()),
            (None, None) => None,
        }
    }

    /// `create` for a caller that holds no kernel reference: the new file stays pinned by
    /// its open handle and its folder's listing only.
    pub async fn create_by_path(&self, parent: u64, name: &str, mode: u32) -> Result<(Attr, u64)> {
        let (attr, fh) = self.create(parent, name, mode).await?;
        self.forget(attr.ino, 1).await;
        Ok((attr, fh))
    }

    /// `mkdir` for a caller that holds no kernel reference.
    pub async fn mkdir_by_path(&self, parent: u64, name: &str, mode: u32) -> Result<Attr> {
        let attr = self.mkdir(parent, name, mode).await?;
        self.forget(attr.ino, 1).await;
        Ok(attr)
    }

    /// Copy file `ino` to `name` in folder `new_parent` (which must not hold that name): by the
    /// drive's own copy when the file is on the drive (no bytes through here), else, for
    /// content written here and not landed yet, through a new local file uploaded as on close.
    pub async fn copy_file(&self, ino: u64, new_parent: u64, name: &str) -> Result<Attr> {
        self.writable()?;
        self.refuse_synthetic_at(new_parent, name)?;
        names::validate(name)?;
        let source = self.node(ino)?;
        if source.is_dir() {
            return Err(Error::IsADirectory(source.name));
        }
        self.refuse_synthetic(&source)?;
        let folder = self.folder(new_parent)?;
        if source.local.is_some() || source.is_local_only() {
            // `create` refuses a name that is taken.
            return self.copy_through_here(&source, new_parent, name).await;
        }
        let _folder = self.lock_folders(new_parent, new_parent).await;
        let listing = self.listing(new_parent).await?;
        if listing.get(name).is_some() {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        // `auto_rename`: the copy never clashes (a same-folder copy needs it), and takes its
        // name in a second call when that differs.
        let copied = self
            .drive
            .copy_item(&source.file_id, &folder.file_id, true)
            .await?;
        let mut item = match self.drive.get(&copied.file_id).await {
            Ok(item) => item,
            Err(e) => {
                self.drop_listing(new_parent).await;
                return Err(e);
            }
        };
        if item.name != name {
            item = match self.drive.rename(&copied.file_id, name).await {
                Ok(item) => item,
                Err(e) => {
                    // The copy stays under its automatic name; the next listing shows it.
                    self.drop_listing(new_parent).await;
                    return Err(e);
                }
            };
        }
        let node = {
            let mut table = lock(&self.table);
            let ino = table.upsert_remote(&item, new_parent, name);
            table.mark_changed(ino);
            table.get(ino).cloned().expect("just inserted")
        };
        listing.insert(name, node.ino);
        self.touch_dir(new_parent);
        Ok(self.attr_of(&node))
    }

    async fn copy_through_here(&self, source: &Node, new_parent: u64, name: &str) -> Result<Attr> {
        let from = self.open(source.ino, false, false).await?;
        let result = async {
            let (attr, to) = self.create_by_path(new_parent, name, 0o666).await?;
            let copied = async {
                let mut offset = 0u64;
                loop {
                    let chunk = self.read(from, offset, 4 << 20).await?;
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    self.write(to, offset, &chunk)?;
                    offset += chunk.len() as u64;
                }
            }
            .await;
            let closed = self.release(to);
            copied.and(closed)?;
            self.getattr(attr.ino).await
        }
        .await;
        let _ = self.release(from);
        result
    }

    /// Forget folder `ino`'s cached listing: the next access lists it from the drive.
    pub(super) async fn drop_listing(&self, ino: u64) {
        self.listings.invalidate(&ino).await;
        if let Some(id) = lock(&self.table).get(ino).map(|n| n.file_id.clone()) {
            self.drop_stored_listing(&id);
        }
    }
}
