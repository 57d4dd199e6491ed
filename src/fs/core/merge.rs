//! Merging a folder listing fetched from the drive with what the mount knows better.
//!
//! The drive's answer is the truth for everything the mount did not touch while the call was
//! under way. For the rest the inode table wins (see `crate::fs::recent`): nodes changed through
//! the mount since the call began (renamed, moved, created, uploaded, let go of their local
//! content) and nodes holding local content are placed where the table has them; a drive item
//! deleted through the mount meanwhile is left out; and a drive item under the plain name of
//! such a node is hidden behind it (the copy an upload is retiring, or the upload finishing).
//! So a listing can never make a file vanish, come back, revert a rename or show a twin.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::*;
use crate::fs::recent::Since;

/// The entries of folder `dir`: `items` (the drive's answer, livp and hidden names applied)
/// merged with the table as described above. `since`: what changed through the mount after
/// the call began.
pub(super) fn merge_listing(
    table: &mut InodeTable,
    dir: u64,
    items: Vec<RemoteItem>,
    since: &Since,
) -> Vec<(String, u64, Option<RemoteItem>)> {
    let answered: HashSet<&str> = items.iter().map(|i| i.file_id.as_str()).collect();
    // Placed by the table: moved or renamed here meanwhile, holding local content, or bound
    // to a file_id the answer does not name (a first upload that landed after the call).
    let placed: BTreeSet<u64> = since
        .nodes
        .iter()
        .copied()
        .chain(table.local_children(dir))
        .chain(since.bound.iter().copied().filter(|&ino| {
            table
                .get(ino)
                .is_some_and(|n| !answered.contains(n.file_id.as_str()))
        }))
        .filter(|&ino| ino != dir && table.get(ino).is_some_and(|n| n.parent == dir))
        .collect();
    // Plain names the placed nodes hold (a node shown as a disambiguated twin holds none).
    let held: HashMap<String, u64> = placed
        .iter()
        .filter_map(|&ino| table.get(ino))
        .filter(|n| n.name == n.remote_name)
        .map(|n| (n.remote_name.clone(), n.ino))
        .collect();
    let kept: Vec<RemoteItem> = items
        .into_iter()
        .filter(|item| {
            let node = table.ino_of(&item.file_id);
            let moved_here = node.is_some_and(|ino| since.nodes.contains(&ino));
            // Another item under a name a placed node holds: the copy its upload retires, or
            // the upload finishing.
            let hidden = held
                .get(&item.name)
                .is_some_and(|holder| node != Some(*holder));
            !moved_here && !hidden && !since.removed.contains(&item.file_id)
        })
        .collect();
    // Names placed nodes take that no kept item gives them (a set: under the table lock, a
    // folder of thousands of pending files must not cost placed x kept comparisons).
    let kept_ids: HashSet<&str> = kept.iter().map(|i| i.file_id.as_str()).collect();
    let taken: HashSet<String> = placed
        .iter()
        .filter_map(|&ino| table.get(ino))
        .filter(|n| !kept_ids.contains(n.file_id.as_str()))
        .map(|n| n.name.clone())
        .collect();
    let display = names::display_names(&kept);
    let mut entries = Vec::with_capacity(kept.len() + placed.len());
    let mut listed = HashSet::new();
    for (item, mut name) in kept.into_iter().zip(display) {
        if taken.contains(&name) {
            name = names::disambiguated(&item.name, &item.file_id);
        }
        let ino = table.upsert_remote(&item, dir, &name);
        listed.insert(ino);
        entries.push((name, ino, Some(item)));
    }
    for ino in placed.into_iter().filter(|ino| !listed.contains(ino)) {
        if let Some(n) = table.get(ino).filter(|n| n.parent == dir) {
            entries.push((n.name.clone(), ino, None));
        }
    }
    entries
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// A one-byte file of the root folder (also used by `listing`'s tests).
    pub(in crate::fs::core) fn item(id: &str, name: &str) -> RemoteItem {
        RemoteItem {
            file_id: id.into(),
            parent_file_id: "root".into(),
            name: name.into(),
            kind: ItemKind::File,
            size: 1,
            content_hash: None,
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
            local_modified_at: None,
            download_url: None,
            streams: Vec::new(),
        }
    }

    fn names(entries: &[(String, u64, Option<RemoteItem>)]) -> Vec<(String, u64)> {
        let mut v: Vec<_> = entries.iter().map(|(n, i, _)| (n.clone(), *i)).collect();
        v.sort();
        v
    }

    fn table() -> InodeTable {
        InodeTable::new("root", UNIX_EPOCH)
    }

    #[test]
    fn a_rename_made_during_the_call_is_not_undone() {
        let mut t = table();
        let a = t.upsert_remote(&item("f1", "a"), ROOT_INO, "a");
        let seq = t.change_seq();
        // Renamed through the mount while the listing was on the wire.
        let n = t.get_mut(a).unwrap();
        n.name = "b".into();
        n.remote_name = "b".into();
        t.mark_changed(a);
        let since = t.changed_since(seq).unwrap();
        let got = merge_listing(&mut t, ROOT_INO, vec![item("f1", "a")], &since);
        assert_eq!(names(&got), [("b".to_string(), a)]);
        assert_eq!(t.get(a).unwrap().name, "b");
    }

    #[test]
    fn a_file_deleted_during_the_call_does_not_come_back() {
        let mut t = table();
        let seq = t.change_seq();
        t.mark_removed("gone");
        let since = t.changed_since(seq).unwrap();
        let got = merge_listing(
            &mut t,
            ROOT_INO,
            vec![item("gone", "x"), item("k", "y")],
            &since,
        );
        assert_eq!(names(&got).len(), 1);
        assert_eq!(names(&got)[0].0, "y");
        assert!(t.ino_of("gone").is_none());
    }

    #[test]
    fn a_first_upload_landing_during_the_call_keeps_its_file_listed() {
        let mut t = table();
        let dir = ROOT_INO;
        let staged = tempfile::NamedTempFile::new().unwrap();
        let content = Arc::new(LocalContent::new(
            staged.path().to_path_buf(),
            staged.reopen().unwrap(),
        ));
        let f = t.insert_local_file(dir, "new", content, UNIX_EPOCH);
        let seq = t.change_seq();
        // Landed and let go of its local content while the (older) answer was on the wire.
        t.rekey(f, "landed");
        t.set_local(f, None);
        let since = t.changed_since(seq).unwrap();
        let got = merge_listing(&mut t, dir, vec![item("other", "o")], &since);
        assert!(names(&got).contains(&("new".to_string(), f)));
    }

    /// Found by the reference-model test (under CPU load, 1 case in 3): a file trashed
    /// elsewhere right after its upload landed, before the data cache took its staged bytes,
    /// stayed in the mount: its local content (kept for reads) still placed it as a file the
    /// drive does not list yet.
    fn t_content(staged: &tempfile::NamedTempFile) -> Arc<LocalContent> {
        Arc::new(LocalContent::new(
            staged.path().to_path_buf(),
            staged.reopen().unwrap(),
        ))
    }

    #[test]
    fn a_landed_file_the_drive_no_longer_lists_goes_though_it_keeps_its_bytes_for_reads() {
        let mut t = table();
        let staged = tempfile::NamedTempFile::new().unwrap();
        let f = t.insert_local_file(ROOT_INO, "x", t_content(&staged), UNIX_EPOCH);
        t.rekey(f, "landed");
        t.mark_landed(f);
        let seq = t.change_seq();
        let since = t.changed_since(seq).unwrap();
        let got = merge_listing(&mut t, ROOT_INO, vec![item("other", "o")], &since);
        assert_eq!(names(&got), [("o".to_string(), t.ino_of("other").unwrap())]);
        assert!(t.get(f).unwrap().local.is_some(), "kept for reads");
        // The data cache takes its bytes while a listing's call is under way: that changes
        // nothing the listing could miss (before, it placed the node again).
        let seq = t.change_seq();
        t.set_local(f, None);
        let since_call = t.changed_since(seq).unwrap();
        let got = merge_listing(&mut t, ROOT_INO, vec![item("other", "o")], &since_call);
        assert_eq!(names(&got).len(), 1, "{got:?}");
        t.set_local(f, Some(t_content(&staged)));
        // Content still waiting for its upload keeps the node listed.
        let got = merge_listing(&mut t, ROOT_INO, vec![item("other", "o")], &since);
        assert!(names(&got).contains(&("x".to_string(), f)));
    }

    #[test]
    fn a_landed_file_renamed_by_another_device_shows_under_the_drives_name() {
        let mut t = table();
        let staged = tempfile::NamedTempFile::new().unwrap();
        let content = Arc::new(LocalContent::new(
            staged.path().to_path_buf(),
            staged.reopen().unwrap(),
        ));
        let f = t.insert_local_file(ROOT_INO, "f", content, UNIX_EPOCH);
        let seq = t.change_seq();
        // Its upload's event is applied while the answer (which already has the rename made
        // elsewhere) is on the wire.
        t.rekey(f, "landed");
        t.set_local(f, None);
        let since = t.changed_since(seq).unwrap();
        let got = merge_listing(&mut t, ROOT_INO, vec![item("landed", "y")], &since);
        assert_eq!(names(&got), [("y".to_string(), f)]);
        assert_eq!(t.get(f).unwrap().name, "y");
    }

    #[test]
    fn the_copy_an_upload_is_retiring_shows_no_twin() {
        let mut t = table();
        let old = t.upsert_remote(&item("old", "f"), ROOT_INO, "f");
        let staged = tempfile::NamedTempFile::new().unwrap();
        let content = Arc::new(LocalContent::new(
            staged.path().to_path_buf(),
            staged.reopen().unwrap(),
        ));
        t.set_local(old, Some(content));
        let since = t.changed_since(t.change_seq()).unwrap();
        // The drive shows the old copy and the new one whose upload is finishing.
        let got = merge_listing(
            &mut t,
            ROOT_INO,
            vec![item("old", "f"), item("new", "f")],
            &since,
        );
        assert_eq!(names(&got), [("f".to_string(), old)]);
    }

    #[test]
    fn a_drive_item_under_a_placed_nodes_name_gets_another_name_only_if_the_node_is_a_twin() {
        let mut t = table();
        let twin = t.upsert_remote(&item("t", "f"), ROOT_INO, "f (t)");
        let staged = tempfile::NamedTempFile::new().unwrap();
        let content = Arc::new(LocalContent::new(
            staged.path().to_path_buf(),
            staged.reopen().unwrap(),
        ));
        t.set_local(twin, Some(content));
        let since = t.changed_since(t.change_seq()).unwrap();
        let got = merge_listing(
            &mut t,
            ROOT_INO,
            vec![item("o", "f"), item("t", "f")],
            &since,
        );
        let got = names(&got);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().any(|(n, i)| n == "f (t)" && *i == twin));
        assert!(got.iter().any(|(n, _)| n == "f"));
    }
}
