//! `Op::Device`: another device changes the drive (the phone app, the web), and the mount
//! applies the change as its poller does (`apply_remote_items` or `apply_remote_removals`, then
//! `settle_remote`); the model applies it too. A change is made only where its outcome is
//! certain: after the uploads drained, and never to a file an open handle holds (a version
//! being written makes a conflict copy whose name carries a time; `tests/fuse_remote.rs` checks
//! those). Everything else (renames, writes, faults, crashes) interleaves freely.

use proptest::prelude::*;

use super::*;
use crate::drive::RemoteItem;

#[derive(Debug, Clone)]
pub(super) enum Change {
    /// Write `data` at (folder, name): a new file, or a new revision of the file there.
    Write(usize, usize, Vec<u8>),
    /// Rename the file at (folder, name) to another name in that folder.
    Rename(usize, usize, usize),
    /// Trash the file or folder at (folder, name).
    Trash(usize, usize),
}

pub(super) fn strategy() -> impl Strategy<Value = Change> {
    let d = 0..DIRS.len();
    let n = 0..NAMES.len();
    let data = prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        (d.clone(), n.clone(), data).prop_map(|(d, n, b)| Change::Write(d, n, b)),
        (d.clone(), n.clone(), n.clone()).prop_map(|(d, n, m)| Change::Rename(d, n, m)),
        (d, n).prop_map(|(d, n)| Change::Trash(d, n)),
    ]
}

/// What the drive holds at a path: nothing, one item, or more (the model cannot tell then).
enum AtPath {
    Nothing,
    One(Box<RemoteItem>),
    Unclear,
}

impl World {
    pub(super) fn device(&mut self, change: &Change) {
        let (d, n) = match change {
            Change::Write(d, n, _) | Change::Rename(d, n, _) | Change::Trash(d, n) => (*d, *n),
        };
        let path = join(self.ns.dirs[d], self.ns.names[n]);
        if self.model.parent_ok(self.ns.dirs[d]).is_err() || self.held(&path) {
            return;
        }
        let core = self.core();
        let wait = self.device_drain;
        if self.block_on(async { core.uploads().drain(wait).await }) != 0 {
            return;
        }
        let Some(folder) = self.drive_folder(self.ns.dirs[d]) else {
            return;
        };
        let existing = self.model.entries.get(&path).copied();
        let found = match (existing, self.drive_item(&folder, self.ns.names[n])) {
            (None, AtPath::Nothing) => None,
            (Some(_), AtPath::One(item)) => Some(*item),
            // The drive does not hold what the model says: the final check will tell.
            _ => return,
        };
        match (change, existing, found) {
            (Change::Write(_, _, data), None, None) => self.device_create(&folder, &path, data),
            (Change::Write(_, _, data), Some(Entry::File(ino)), Some(item)) => {
                self.device_overwrite(item, ino, data)
            }
            (Change::Rename(_, _, to), Some(Entry::File(_)), Some(item)) => {
                self.device_rename(&folder, item, &path, self.ns.dirs[d], self.ns.names[*to])
            }
            (Change::Trash(..), Some(_), Some(item)) => self.device_trash(item, &path),
            _ => {}
        }
    }

    /// Whether an open handle holds the file at `path`, or one below it.
    fn held(&self, path: &str) -> bool {
        let below = format!("{path}/");
        self.handles.iter().any(|(_, ino)| {
            self.model
                .entries
                .iter()
                .any(|(p, e)| *e == Entry::File(*ino) && (p == path || p.starts_with(&below)))
        })
    }

    fn drive_folder(&self, dir: &str) -> Option<String> {
        if dir.is_empty() {
            return Some("root".into());
        }
        match self.drive_item("root", dir) {
            AtPath::One(item) if item.kind == ItemKind::Folder => Some(item.file_id),
            _ => None,
        }
    }

    fn drive_item(&self, folder: &str, name: &str) -> AtPath {
        let st = self.drive.inner().state();
        let mut found = st
            .files
            .iter()
            .filter(|(id, (it, _))| {
                it.parent_file_id == folder && it.name == name && !st.trashed.contains(*id)
            })
            .map(|(_, (it, _))| it.clone());
        match (found.next(), found.next()) {
            (None, _) => AtPath::Nothing,
            (Some(item), None) => AtPath::One(Box::new(item)),
            _ => AtPath::Unclear,
        }
    }

    /// The mount hears of changed items and trashed ids, as from a poll.
    fn apply(&self, items: Vec<RemoteItem>, gone: Vec<String>, from: Vec<String>) {
        let core = self.core();
        self.block_on(async move {
            let mut applied = core.apply_remote_items(&items).await;
            applied.merge(core.apply_remote_removals(&gone, &from).await);
            core.settle_remote(&mut applied).await;
        });
    }

    fn device_create(&mut self, folder: &str, path: &str, data: &[u8]) {
        let name = path.rsplit('/').next().unwrap_or(path);
        let id = self.drive.inner().seed(folder, name, data);
        let item = self.drive.inner().state().files[&id].0.clone();
        self.apply(vec![item], vec![], vec![]);
        let m = &mut self.model;
        m.next += 1;
        let file = MFile {
            data: data.to_vec(),
            durable: Some(data.to_vec()),
            alt: None,
        };
        m.files.insert(m.next, file);
        m.entries.insert(path.to_string(), Entry::File(m.next));
    }

    fn device_overwrite(&mut self, item: RemoteItem, ino: u64, data: &[u8]) {
        let item = {
            let mut st = self.drive.inner().state();
            let Some((it, content)) = st.files.get_mut(&item.file_id) else {
                return;
            };
            *content = data.to_vec();
            it.size = data.len() as u64;
            it.content_hash = Some(crate::hashing::sha1_hex(data));
            it.updated_at = std::time::SystemTime::now();
            it.clone()
        };
        self.apply(vec![item], vec![], vec![]);
        if let Some(f) = self.model.files.get_mut(&ino) {
            f.data = data.to_vec();
            f.durable = Some(data.to_vec());
            f.alt = None;
        }
    }

    fn device_rename(&mut self, folder: &str, item: RemoteItem, path: &str, dir: &str, to: &str) {
        let target = join(dir, to);
        let free = !self.model.entries.contains_key(&target);
        if target == path || !free || !matches!(self.drive_item(folder, to), AtPath::Nothing) {
            return;
        }
        let item = {
            let mut st = self.drive.inner().state();
            let Some((it, _)) = st.files.get_mut(&item.file_id) else {
                return;
            };
            it.name = to.to_string();
            it.updated_at = std::time::SystemTime::now();
            it.clone()
        };
        self.apply(vec![item], vec![], vec![]);
        if let Some(e) = self.model.entries.remove(path) {
            self.model.entries.insert(target, e);
        }
    }

    fn device_trash(&mut self, item: RemoteItem, path: &str) {
        self.drive
            .inner()
            .state()
            .trashed
            .insert(item.file_id.clone());
        self.apply(vec![], vec![item.file_id], vec![item.parent_file_id]);
        self.model.remove_tree(path);
    }
}
