//! The macOS (macFUSE) side of `platform`. Written against the `libc` crate's Apple
//! definitions; not compiled on the Linux machine this was written on (no Apple target).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

use super::{run, RenameFlags};

/// macOS has no kernel passthrough for FUSE.
pub const PASSTHROUGH: bool = false;

/// OPEN_MAX: macOS refuses a soft limit of open files above it even when the hard one is
/// unlimited (`crate::platform::raise_fd_limit`).
pub const FD_LIMIT_CAP: Option<u64> = Some(10_240);

/// The flags of a FUSE rename request: macFUSE passes renamex_np's.
pub fn rename_flags(bits: u32) -> RenameFlags {
    RenameFlags {
        exchange: bits & libc::RENAME_SWAP != 0,
        no_replace: bits & libc::RENAME_EXCL != 0,
    }
}

/// Frees the disk blocks of `[offset, offset+len)`, keeping the file's size (APFS: F_PUNCHHOLE).
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let arg = libc::fpunchhole_t {
        fp_flags: 0,
        reserved: 0,
        fp_offset: offset as libc::off_t,
        fp_length: len as libc::off_t,
    };
    // SAFETY: fcntl on an fd we own, with a pointer to a live, initialised fpunchhole_t.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PUNCHHOLE, &arg) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// No sync_file_range on macOS: the periodic sync writes the range back.
pub fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// No O_DIRECT here: cache blocks are written through the page cache.
pub fn open_direct(_file: &File) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Abstract sockets are Linux-only; systemd does not run here.
pub fn send_abstract(_socket: &UnixDatagram, _name: &[u8], _state: &str) -> io::Result<usize> {
    Err(io::Error::other("abstract sockets are Linux-only"))
}

/// No pre-faulting mmap flag: pages fault in on first touch.
pub const MAP_POPULATE: libc::c_int = 0;

/// Why FUSE cannot be used here, if it cannot (macFUSE checks itself at mount time).
pub fn fuse_unavailable() -> Option<String> {
    None
}

/// Threads reading FUSE requests: macFUSE has no cloned device fds, so one.
pub const FUSE_THREADS: usize = 1;

/// The command that unmounts a FUSE mount as its owner, for messages.
pub const UNMOUNT_COMMAND: &str = "umount";

/// Whether `path` is the mount point of a mounted filesystem (its device differs from its parent's).
pub fn is_mounted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// Unmounts with `umount`. Whether it worked.
pub fn unmount(mountpoint: &Path) -> bool {
    run(Command::new("umount").arg(mountpoint))
}

/// Forces the unmount even while it is busy (`umount -f`). Whether it worked.
pub fn lazy_unmount(mountpoint: &Path) -> bool {
    run(Command::new("umount").arg("-f").arg(mountpoint))
}

/// The macOS allocator returns free pages by itself (its magazines are madvised on free).
pub fn release_free_memory() {}
