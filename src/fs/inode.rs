//! The inode table: inode numbers <-> drive file_ids, and each node's attributes.
//!
//! Inodes are keyed by file_id, never by name: renames keep the inode, and two siblings with the
//! same name are two inodes. Numbers are handed out once and never reused during a mount. A node
//! lives while the kernel holds a lookup on it, a cached listing names it, a handle is open on it,
//! or it has local content not yet uploaded; `forget` and listing eviction free the others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::drive::{ItemKind, RemoteItem};
use crate::fs::local::LocalContent;
use crate::fs::recent::{RecentChanges, Since};

pub const ROOT_INO: u64 = 1;

/// Prefix of the placeholder id of a file created through the mount and not yet uploaded.
pub const LOCAL_ID_PREFIX: &str = "local:";

#[derive(Debug, Clone)]
pub struct Node {
    pub ino: u64,
    /// The drive's file_id, or `local:<ino>` until the first upload completes.
    pub file_id: String,
    pub parent: u64,
    /// The name shown in the mount (see `names` for duplicates).
    pub name: String,
    /// The name on the drive.
    pub remote_name: String,
    pub kind: ItemKind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
    /// Kernel lookup count.
    pub lookups: u64,
    /// Open handles.
    pub open_handles: u32,
    /// Content written through the mount that is newer than the drive's copy.
    pub local: Option<Arc<LocalContent>>,
    /// Permissions set through the mount (create mode, chmod, chown). The drive stores none, so
    /// they live as long as the mount; `None` shows the `--uid/--gid/--umask` defaults.
    pub perms: Option<Perms>,
    /// A drive item this local-only file was renamed onto: its first upload retires it (until
    /// then the old copy stays on the drive, hidden by this node).
    pub displaces: Option<String>,
    /// The drive content's identity (`cache::identity_of`) as last listed; keys the data cache.
    pub identity: Option<String>,
}

/// Mode bits and owner given to a node through the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == ItemKind::Folder
    }

    /// Unlinked (or never attached): no folder names it any more, though handles may be open.
    pub fn is_detached(&self) -> bool {
        self.parent == 0
    }

    pub fn is_local_only(&self) -> bool {
        self.file_id.starts_with(LOCAL_ID_PREFIX)
    }

    /// The drive item that holds this node's name on the drive now: its own, or, for a file
    /// not uploaded yet, the one it was renamed onto (until its upload retires that one).
    pub fn drive_copy(&self) -> Option<&str> {
        if self.is_local_only() {
            self.displaces.as_deref()
        } else {
            Some(&self.file_id)
        }
    }

    /// True when nothing but a cached listing refers to the node. A node with permissions set
    /// through the mount is kept, so they last as long as the mount.
    fn is_unreferenced(&self) -> bool {
        self.ino != ROOT_INO
            && self.lookups == 0
            && self.open_handles == 0
            && self.local.is_none()
            && self.perms.is_none()
    }
}

#[derive(Debug, Default)]
pub struct InodeTable {
    /// Boxed: a node is about 260 bytes, and a map of inline nodes doubles all of them at
    /// each growth (15 MB at 30,000 nodes, half of it slack).
    nodes: HashMap<u64, Box<Node>>,
    by_file_id: HashMap<String, u64>,
    /// Nodes with local content, so re-listing a folder can keep showing not-yet-uploaded files.
    with_local: HashSet<u64>,
    next_ino: u64,
    /// Namespace changes made through the mount lately (see `recent`).
    recent: RecentChanges,
}

impl InodeTable {
    pub fn new(root_file_id: &str, mount_time: SystemTime) -> Self {
        let mut table = InodeTable {
            next_ino: ROOT_INO + 1,
            ..Default::default()
        };
        let root = Node {
            ino: ROOT_INO,
            file_id: root_file_id.to_string(),
            parent: ROOT_INO,
            name: String::new(),
            remote_name: String::new(),
            kind: ItemKind::Folder,
            size: 0,
            mtime: mount_time,
            ctime: mount_time,
            crtime: mount_time,
            lookups: 1,
            open_handles: 0,
            local: None,
            perms: None,
            displaces: None,
            identity: None,
        };
        table.by_file_id.insert(root.file_id.clone(), ROOT_INO);
        table.nodes.insert(ROOT_INO, Box::new(root));
        table
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino).map(|n| &**n)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino).map(|n| &mut **n)
    }

    pub fn ino_of(&self, file_id: &str) -> Option<u64> {
        self.by_file_id.get(file_id).copied()
    }

    /// Node `ino`'s path below the mount root ("" for the root), by display names; None for
    /// an unknown or unlinked node.
    pub fn path_of(&self, ino: u64) -> Option<String> {
        let mut names = Vec::new();
        let mut at = ino;
        // Bounded walk: parents never cycle, but a bug must not hang the control socket.
        for _ in 0..4096 {
            if at == ROOT_INO {
                names.reverse();
                return Some(names.join("/"));
            }
            let node = self.nodes.get(&at).filter(|n| !n.is_detached())?;
            names.push(node.name.as_str());
            at = node.parent;
        }
        None
    }

    /// The number of the last namespace change: a listing notes it before its call.
    pub fn change_seq(&self) -> u64 {
        self.recent.seq()
    }

    /// Node `ino`'s name, folder, file_id or local content changed through the mount: a
    /// listing fetched before now must not undo that.
    pub fn mark_changed(&mut self, ino: u64) {
        self.recent.mark(ino);
    }

    /// Drive item `file_id` was deleted through the mount.
    pub fn mark_removed(&mut self, file_id: &str) {
        self.recent.mark_removed(file_id);
    }

    /// What changed after change number `seq` (None: too long ago to tell; list again).
    pub fn changed_since(&self, seq: u64) -> Option<Since> {
        self.recent.since(seq)
    }

    /// Nodes holding local content (written through the mount, not on the drive yet).
    pub fn with_local(&self) -> impl Iterator<Item = u64> + '_ {
        self.with_local.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Insert or refresh the node of a remote item, under `parent` with display name `name`.
    /// A node with local content keeps its local size and mtime: they are newer.
    pub fn upsert_remote(&mut self, item: &RemoteItem, parent: u64, name: &str) -> u64 {
        if let Some(&ino) = self.by_file_id.get(&item.file_id) {
            let node = self.nodes.get_mut(&ino).expect("index and nodes agree");
            node.parent = parent;
            node.name = name.to_string();
            node.remote_name = item.name.clone();
            node.kind = item.kind;
            node.crtime = item.created_at;
            if node.local.is_none() {
                node.size = item.size;
                node.mtime = item.mtime();
                node.ctime = item.updated_at;
                node.identity = (!item.is_dir()).then(|| crate::cache::identity_of(item));
            }
            return ino;
        }
        let ino = self.allocate();
        let node = Node {
            ino,
            file_id: item.file_id.clone(),
            parent,
            name: name.to_string(),
            remote_name: item.name.clone(),
            kind: item.kind,
            size: item.size,
            mtime: item.mtime(),
            ctime: item.updated_at,
            crtime: item.created_at,
            lookups: 0,
            open_handles: 0,
            local: None,
            perms: None,
            displaces: None,
            identity: (!item.is_dir()).then(|| crate::cache::identity_of(item)),
        };
        self.by_file_id.insert(node.file_id.clone(), ino);
        self.nodes.insert(ino, Box::new(node));
        ino
    }

    /// A new file created through the mount: it has a placeholder id until uploaded.
    pub fn insert_local_file(
        &mut self,
        parent: u64,
        name: &str,
        local: Arc<LocalContent>,
        now: SystemTime,
    ) -> u64 {
        let ino = self.allocate();
        self.insert_local_file_at(ino, parent, name, local, now)
    }

    /// A number for a node made later (`insert_local_file_at`): an upload resumed at start-up
    /// is queued under it before its folder is known.
    pub fn reserve_ino(&mut self) -> u64 {
        self.allocate()
    }

    /// `insert_local_file` under a number from `reserve_ino`.
    pub fn insert_local_file_at(
        &mut self,
        ino: u64,
        parent: u64,
        name: &str,
        local: Arc<LocalContent>,
        now: SystemTime,
    ) -> u64 {
        let node = Node {
            ino,
            file_id: format!("{LOCAL_ID_PREFIX}{ino}"),
            parent,
            name: name.to_string(),
            remote_name: name.to_string(),
            kind: ItemKind::File,
            size: 0,
            mtime: now,
            ctime: now,
            crtime: now,
            lookups: 0,
            open_handles: 0,
            local: Some(local),
            perms: None,
            displaces: None,
            identity: None,
        };
        self.by_file_id.insert(node.file_id.clone(), ino);
        self.with_local.insert(ino);
        self.nodes.insert(ino, Box::new(node));
        self.recent.mark(ino);
        ino
    }

    /// Give a node a new file_id (after an upload replaced its content with a new drive item).
    pub fn rekey(&mut self, ino: u64, new_file_id: &str) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            if node.file_id != new_file_id {
                self.by_file_id.remove(&node.file_id);
                node.file_id = new_file_id.to_string();
                self.by_file_id.insert(new_file_id.to_string(), ino);
                self.recent.mark_bound(ino);
            }
        }
    }

    pub fn set_local(&mut self, ino: u64, local: Option<Arc<LocalContent>>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            let placed_before = if local.is_some() {
                !self.with_local.insert(ino)
            } else {
                self.with_local.remove(&ino)
            };
            node.local = local;
            // A listing under way must not drop a node its local content no longer places;
            // a landed node's content placed it no more (`mark_landed`), so letting go of it
            // changes nothing a listing could miss.
            if placed_before || node.local.is_some() {
                self.recent.mark_bound(ino);
            }
        }
    }

    /// Node `ino`'s local content is exactly its drive item's now (its upload landed and no
    /// newer version waits): it no longer makes the node a file the drive does not list yet
    /// (listings, orphans, status), and stays on the node for reads until the data cache holds
    /// it. A re-listing that no longer names the item (trashed elsewhere meanwhile) then drops
    /// it, as any drive file.
    pub fn mark_landed(&mut self, ino: u64) {
        if self.with_local.remove(&ino) {
            self.recent.mark_bound(ino);
        }
    }

    /// Nodes under `parent` that have local content (shown even if the drive does not list them yet).
    pub fn local_children(&self, parent: u64) -> Vec<u64> {
        self.with_local
            .iter()
            .filter(|ino| self.nodes.get(ino).is_some_and(|n| n.parent == parent))
            .copied()
            .collect()
    }

    /// Drop a node now (after unlink/rmdir through the mount).
    pub fn remove(&mut self, ino: u64) -> Option<Node> {
        if ino == ROOT_INO {
            return None;
        }
        let node = self.nodes.remove(&ino)?;
        if self.by_file_id.get(&node.file_id) == Some(&ino) {
            self.by_file_id.remove(&node.file_id);
        }
        self.with_local.remove(&ino);
        self.shrink_after_forgets();
        Some(*node)
    }

    /// The kernel forgot `n` lookups. Returns true when the node may be freed if no listing names it.
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.is_unreferenced()
            }
            None => false,
        }
    }

    /// Free a node if nothing refers to it any more (the caller knows no cached listing names it).
    pub fn free_if_unreferenced(&mut self, ino: u64) -> bool {
        if self.get(ino).is_some_and(Node::is_unreferenced) {
            self.remove(ino);
            return true;
        }
        false
    }

    /// Maps keep their capacity when entries go: after the kernel forgets a burst of inodes
    /// (its dentry cache dropped under memory pressure), give back what is mostly empty.
    fn shrink_after_forgets(&mut self) {
        const MIN_CAPACITY: usize = 4096;
        if self.nodes.capacity() > MIN_CAPACITY && self.nodes.len() < self.nodes.capacity() / 4 {
            self.nodes.shrink_to(self.nodes.len() * 2);
            self.by_file_id.shrink_to(self.by_file_id.len() * 2);
        }
    }

    fn allocate(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn item(id: &str, name: &str) -> RemoteItem {
        RemoteItem {
            file_id: id.into(),
            parent_file_id: "root".into(),
            name: name.into(),
            kind: ItemKind::File,
            size: 3,
            content_hash: None,
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
            local_modified_at: None,
            download_url: None,
            streams: Vec::new(),
        }
    }

    #[test]
    fn same_file_id_same_inode_across_renames() {
        let mut t = InodeTable::new("root", UNIX_EPOCH);
        let a = t.upsert_remote(&item("f1", "a"), ROOT_INO, "a");
        let b = t.upsert_remote(&item("f1", "renamed"), ROOT_INO, "renamed");
        assert_eq!(a, b);
        assert_eq!(t.get(a).unwrap().name, "renamed");
        let c = t.upsert_remote(&item("f2", "a"), ROOT_INO, "a");
        assert_ne!(a, c);
    }

    #[test]
    fn forget_frees_only_unreferenced_nodes() {
        let mut t = InodeTable::new("root", UNIX_EPOCH);
        let a = t.upsert_remote(&item("f1", "a"), ROOT_INO, "a");
        t.get_mut(a).unwrap().lookups = 2;
        assert!(!t.forget(a, 1));
        assert!(t.forget(a, 1));
        assert!(t.free_if_unreferenced(a));
        assert!(t.get(a).is_none());
        assert!(t.ino_of("f1").is_none());
        // A new lookup of the same file_id gets a fresh, never reused number.
        let a2 = t.upsert_remote(&item("f1", "a"), ROOT_INO, "a");
        assert!(a2 > a);
        assert!(!t.free_if_unreferenced(ROOT_INO));
    }

    proptest! {
        /// Whatever sequence of upserts, renames and removals: inode numbers are unique, the
        /// file_id index always points at the node holding that id, and live ids keep their inode.
        #[test]
        fn index_stays_consistent(ops in proptest::collection::vec((0u8..4, 0u8..12, 0u8..5), 1..200)) {
            let mut t = InodeTable::new("root", UNIX_EPOCH);
            let mut seen: HashMap<String, u64> = HashMap::new();
            for (op, id, name) in ops {
                let fid = format!("f{id}");
                match op {
                    0 | 1 => {
                        let ino = t.upsert_remote(&item(&fid, &format!("n{name}")), ROOT_INO, &format!("n{name}"));
                        if let Some(&old) = seen.get(&fid) { prop_assert_eq!(old, ino); }
                        seen.insert(fid, ino);
                    }
                    2 => {
                        if let Some(ino) = t.ino_of(&fid) { t.remove(ino); seen.remove(&fid); }
                    }
                    _ => {
                        if let Some(ino) = t.ino_of(&fid) {
                            let new_id = format!("g{id}{name}");
                            if t.ino_of(&new_id).is_none() {
                                t.rekey(ino, &new_id);
                                seen.remove(&fid);
                                seen.insert(new_id, ino);
                            }
                        }
                    }
                }
                for (fid, ino) in &seen {
                    prop_assert_eq!(t.ino_of(fid), Some(*ino));
                    prop_assert_eq!(&t.get(*ino).unwrap().file_id, fid);
                }
                prop_assert_eq!(t.len(), seen.len() + 1);
            }
        }
    }
}
