//! The namespace changes made through the mount lately, in order, so that a folder listing
//! fetched from the drive *before* one of them does not undo it.
//!
//! Listing a folder is a network call made with no lock held; meanwhile the mount may rename,
//! create, unlink or finish uploading a file in that folder. The listing that comes back then
//! shows the old state: the file under its old name, a deleted file, the copy an upload just
//! retired, or no sign of a file whose first upload landed and whose local content was let go.
//! Taken as it is, it made files vanish from `ls` for a moment, brought deleted ones back and
//! left same-name twins. So every such change is numbered here (`mark`, `mark_removed`), the
//! listing notes the number before its call (`seq`), and when it is merged, the nodes changed
//! since are placed as the table says, not as the drive said (`since`).
//!
//! Bounded: the last `KEEP` changes. A listing older than that (a very slow call beside a
//! very busy mount) is fetched again (`since` answers None).

use std::collections::{HashSet, VecDeque};

const KEEP: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// The node's name or folder changed (renamed, moved, created, unlinked).
    Node(u64),
    /// The node's file_id or local content changed (an upload landed, local content came
    /// or went): its place is the drive's to say if the answer names its file_id.
    Bound(u64),
    /// A drive item was deleted through the mount.
    Removed(String),
}

/// What changed after a listing's call began.
#[derive(Debug, Default)]
pub struct Since {
    /// Nodes whose place the table knows better than the listing.
    pub nodes: HashSet<u64>,
    /// Nodes bound to another file_id or local content meanwhile: placed by the table only
    /// if the answer does not name their file_id (it was taken before they landed).
    pub bound: HashSet<u64>,
    /// Drive items deleted through the mount (a listing may still show them).
    pub removed: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct RecentChanges {
    /// Number of the last change made.
    seq: u64,
    /// (number, change), oldest first.
    log: VecDeque<(u64, Change)>,
}

impl RecentChanges {
    /// The number of the last change: a listing notes it before its call.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn mark(&mut self, ino: u64) {
        self.push(Change::Node(ino));
    }

    pub fn mark_bound(&mut self, ino: u64) {
        self.push(Change::Bound(ino));
    }

    pub fn mark_removed(&mut self, file_id: &str) {
        self.push(Change::Removed(file_id.to_string()));
    }

    fn push(&mut self, change: Change) {
        self.seq += 1;
        self.log.push_back((self.seq, change));
        while self.log.len() > KEEP {
            self.log.pop_front();
        }
    }

    /// The changes made after change number `seq`; None when some of them are no longer
    /// kept (the caller lists again).
    pub fn since(&self, seq: u64) -> Option<Since> {
        let oldest_kept = self.log.front().map_or(self.seq + 1, |(n, _)| *n);
        if seq + 1 < oldest_kept {
            return None;
        }
        let mut since = Since::default();
        for (_, change) in self.log.iter().rev().take_while(|(n, _)| *n > seq) {
            match change {
                Change::Node(ino) => {
                    since.nodes.insert(*ino);
                }
                Change::Bound(ino) => {
                    since.bound.insert(*ino);
                }
                Change::Removed(id) => {
                    since.removed.insert(id.clone());
                }
            }
        }
        Some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_what_changed_after_a_number_and_nothing_before() {
        let mut r = RecentChanges::default();
        r.mark(5);
        let at = r.seq();
        r.mark(7);
        r.mark_removed("gone");
        let since = r.since(at).unwrap();
        assert_eq!(since.nodes, HashSet::from([7]));
        assert_eq!(since.removed, HashSet::from(["gone".to_string()]));
        let now = r.since(r.seq()).unwrap();
        assert!(now.nodes.is_empty() && now.removed.is_empty());
    }

    #[test]
    fn a_listing_older_than_what_is_kept_is_told_to_list_again() {
        let mut r = RecentChanges::default();
        let at = r.seq();
        for i in 0..(KEEP as u64 + 1) {
            r.mark(i);
        }
        assert!(r.since(at).is_none());
        assert!(r.since(r.seq() - 10).is_some());
        assert_eq!(r.log.len(), KEEP);
    }
}
