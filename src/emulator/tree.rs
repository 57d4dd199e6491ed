//! The item tree held in `State`: the parent -> children index (`link`, `unlink`,
//! `reparent`), new folders and files, what is visible (`in_bin`, `live_children`), subtrees,
//! paths, and the `TreeEntry` view `Emulator::tree` reports. Separate from `state`, which
//! holds the state's types and its construction.

use super::state::{Node, State};
use super::util::{self, new_file_id};

/// One item as `Emulator::tree` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// `/a/b/c` from the drive's root.
    pub path: String,
    pub file_id: String,
    pub parent_file_id: String,
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    /// Uppercase SHA-1; `None` for folders.
    pub sha1: Option<String>,
    pub trashed: bool,
    pub drive_id: String,
}

pub fn parent_key(drive: &str, parent: &str) -> String {
    format!("{drive}:{parent}")
}

impl State {
    /// Bytes of all stored files, trashed ones included (pending uploads excluded).
    pub fn used_bytes(&self) -> u64 {
        self.nodes
            .values()
            .filter(|n| !n.is_dir && !n.pending)
            .map(|n| n.size)
            .sum()
    }

    /// Trashed itself or below a trashed folder.
    pub fn in_bin(&self, id: &str) -> bool {
        let mut cur = self.nodes.get(id);
        let mut depth = 0;
        while let Some(n) = cur {
            if n.trashed {
                return true;
            }
            depth += 1;
            if depth > 10_000 {
                break;
            }
            cur = self.nodes.get(&n.parent);
        }
        false
    }

    /// Visible (not pending, not in the bin) children of a folder.
    pub fn live_children(&self, drive: &str, parent: &str) -> Vec<&Node> {
        self.children
            .get(&parent_key(drive, parent))
            .map(|set| {
                set.iter()
                    .filter_map(|id| self.nodes.get(id))
                    .filter(|n| !n.pending && !n.trashed)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn link(&mut self, node: Node) {
        self.children
            .entry(parent_key(&node.drive_id, &node.parent))
            .or_default()
            .insert(node.file_id.clone());
        self.nodes.insert(node.file_id.clone(), node);
    }

    pub fn unlink(&mut self, id: &str) -> Option<Node> {
        let node = self.nodes.remove(id)?;
        if let Some(set) = self
            .children
            .get_mut(&parent_key(&node.drive_id, &node.parent))
        {
            set.remove(id);
        }
        Some(node)
    }

    pub fn reparent(&mut self, id: &str, new_parent: &str) {
        if let Some(mut node) = self.unlink(id) {
            node.parent = new_parent.to_string();
            self.link(node);
        }
    }

    pub fn new_node(drive: &str, parent: &str, name: &str, is_dir: bool) -> Node {
        let now = util::now_ms();
        Node {
            file_id: new_file_id(),
            drive_id: drive.to_string(),
            parent: parent.to_string(),
            name: name.to_string(),
            is_dir,
            size: 0,
            sha1: None,
            created_ms: now,
            updated_ms: now,
            trashed: false,
            trashed_ms: None,
            starred: false,
            local_created_at: None,
            local_modified_at: None,
            pending: false,
            streams: Vec::new(),
        }
    }

    pub fn insert_folder(&mut self, drive: &str, parent: &str, name: &str) -> String {
        let node = Self::new_node(drive, parent, name, true);
        let id = node.file_id.clone();
        self.link(node);
        self.changed(super::changes::Op::Create, &id);
        id
    }

    /// A completed file on an existing blob (takes a blob reference).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_file(
        &mut self,
        drive: &str,
        parent: &str,
        name: &str,
        size: u64,
        sha1: &str,
        local_created_at: Option<String>,
        local_modified_at: Option<String>,
    ) -> String {
        let mut node = Self::new_node(drive, parent, name, false);
        node.size = size;
        node.sha1 = Some(sha1.to_string());
        node.local_created_at = local_created_at;
        node.local_modified_at = local_modified_at;
        if let Some(b) = self.blobs.get_mut(sha1) {
            b.refs += 1;
        }
        let id = node.file_id.clone();
        self.link(node);
        self.changed(super::changes::Op::Create, &id);
        id
    }

    /// All ids in the subtree of `id` (itself first), pending ones included.
    pub fn subtree(&self, id: &str) -> Vec<String> {
        let mut out = vec![id.to_string()];
        let mut i = 0;
        while i < out.len() {
            if let Some(n) = self.nodes.get(&out[i]) {
                if n.is_dir {
                    if let Some(set) = self.children.get(&parent_key(&n.drive_id, &n.file_id)) {
                        out.extend(set.iter().cloned());
                    }
                }
            }
            i += 1;
        }
        out
    }

    pub fn path_of(&self, id: &str) -> String {
        let mut parts = Vec::new();
        let mut cur = self.nodes.get(id);
        while let Some(n) = cur {
            parts.push(n.name.clone());
            if parts.len() > 10_000 {
                break;
            }
            cur = self.nodes.get(&n.parent);
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    pub fn tree(&self) -> Vec<TreeEntry> {
        let mut out: Vec<TreeEntry> = self
            .nodes
            .values()
            .filter(|n| !n.pending)
            .map(|n| self.entry(n))
            .collect();
        out.sort_by(|a, b| {
            (&a.drive_id, &a.path, &a.file_id).cmp(&(&b.drive_id, &b.path, &b.file_id))
        });
        out
    }

    /// The entries at `path` (duplicates and trashed ones included), without building the
    /// whole tree: cheap enough to poll.
    pub fn entries_at(&self, path: &str) -> Vec<TreeEntry> {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.nodes
            .values()
            .filter(|n| !n.pending && n.name == name)
            .map(|n| self.entry(n))
            .filter(|e| e.path == path)
            .collect()
    }

    fn entry(&self, n: &Node) -> TreeEntry {
        TreeEntry {
            path: self.path_of(&n.file_id),
            file_id: n.file_id.clone(),
            parent_file_id: n.parent.clone(),
            name: n.name.clone(),
            is_dir: n.is_dir,
            size: n.size,
            sha1: n.sha1.clone(),
            trashed: n.trashed,
            drive_id: n.drive_id.clone(),
        }
    }
}
