//! Directory listings: readdir and readdirplus answers, filled from the handle's entries.

use fuser::{FileHandle, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::answer::done;
use super::{file_attr, file_type, FuseAdapter};
use crate::fs::core::DirSlot;

impl FuseAdapter {
    /// readdir's answer: the handle's entries from `offset`, as many as fit the reply.
    pub(super) fn readdir_reply(&self, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match done("readdir", self.core.readdir(fh.0, offset, false)) {
            Ok(entries) => {
                for DirSlot {
                    next_offset, entry, ..
                } in &entries
                {
                    if reply.add(
                        INodeNo(entry.ino),
                        *next_offset,
                        file_type(entry.kind),
                        &entry.name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    /// readdirplus's answer: entries with their attributes; each entry sent is a lookup the
    /// kernel now holds.
    pub(super) fn readdirplus_reply(
        &self,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match done("readdirplus", self.core.readdir(fh.0, offset, true)) {
            Ok(entries) => {
                for DirSlot {
                    next_offset,
                    entry,
                    attr,
                    fresh_for,
                } in &entries
                {
                    let attr = match attr {
                        Some(a) => *a,
                        None => match self.core.plus_attr(entry.ino) {
                            Some(a) => a,
                            None => continue,
                        },
                    };
                    if reply.add(
                        INodeNo(entry.ino),
                        *next_offset,
                        &entry.name,
                        &super::timeout(self.ttl, *fresh_for),
                        &file_attr(&attr),
                        Generation(0),
                    ) {
                        break;
                    }
                    // The kernel now holds a lookup on this entry (but not on . and ..).
                    if entry.name != "." && entry.name != ".." {
                        self.core.count_lookup(entry.ino);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }
}
