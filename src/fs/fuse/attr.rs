//! The attributes the kernel is given: `fs::core`'s `Attr` as fuser's `FileAttr`.

use fuser::{FileAttr, FileType, INodeNo};

use crate::drive::ItemKind;
use crate::fs::core::Attr;

/// Block size reported to statfs and as stat's block unit.
pub(super) const BLOCK_SIZE: u32 = 4096;

/// stat's st_blksize, the preferred I/O size: cp, cat and friends size their buffers by it, and
/// every request is a round trip through the daemon, so 1 MiB (the largest FUSE request) rather
/// than 4 KiB (coreutils would use 128 KiB).
const PREFERRED_IO_SIZE: u32 = 1 << 20;

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: PREFERRED_IO_SIZE,
        flags: 0,
    }
}

pub(super) fn file_type(kind: ItemKind) -> FileType {
    match kind {
        ItemKind::Folder => FileType::Directory,
        ItemKind::File => FileType::RegularFile,
    }
}
