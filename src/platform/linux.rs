//! The Linux side of `platform`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

use super::{run, RenameFlags};

/// Kernel passthrough (Linux 6.9+) exists on this OS.
pub const PASSTHROUGH: bool = true;

/// The hard limit of open files is used as it is (`crate::platform::raise_fd_limit`).
pub const FD_LIMIT_CAP: Option<u64> = None;

/// The flags of a FUSE rename request (renameat2's).
pub fn rename_flags(bits: u32) -> RenameFlags {
    RenameFlags {
        exchange: bits & libc::RENAME_EXCHANGE != 0,
        no_replace: bits & libc::RENAME_NOREPLACE != 0,
    }
}

/// Frees the disk blocks of `[offset, offset+len)`, keeping the file's size.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on an fd we own, with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts writeback of a written range without waiting for it (a hint: errors are ignored).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: a hint on an fd we own; its result changes nothing we rely on.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// A second write handle on `file`'s inode that bypasses the page cache (O_DIRECT): writes
/// from an aligned buffer at aligned offsets go to the disk with no copy into cached pages.
pub fn open_direct(file: &File) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Through /proc: the same inode whatever its path is now.
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Sends `state` to systemd's abstract notify socket `@name`.
pub fn send_abstract(socket: &UnixDatagram, name: &[u8], state: &str) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(state.as_bytes(), &addr)
}

/// mmap flag that pre-faults the pages in the call itself: one batch instead of a fault per page.
pub const MAP_POPULATE: libc::c_int = libc::MAP_POPULATE;

/// Why FUSE cannot be used here, if it cannot.
pub fn fuse_unavailable() -> Option<String> {
    (!Path::new("/dev/fuse").exists()).then(|| {
        "FUSE is not available (/dev/fuse is missing): install fuse3 (apt-get install fuse3) and load the fuse module (modprobe fuse)".into()
    })
}

/// Threads reading FUSE requests, each on its own cloned /dev/fuse fd.
pub const FUSE_THREADS: usize = 4;

/// The command that unmounts a FUSE mount as its (non-root) owner, for messages.
pub const UNMOUNT_COMMAND: &str = "fusermount3 -u";

/// Whether `path` is the mount point of a mounted filesystem.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .any(|line| line.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&*wanted))
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => out.push_str(&code),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unmounts: umount(2) as root, else `fusermount3 -u`. Whether it worked.
pub fn unmount(mountpoint: &Path) -> bool {
    umount2(mountpoint, 0) || run(Command::new("fusermount3").arg("-u").arg(mountpoint))
}

/// Detaches the mount even while it is busy: umount(2) with MNT_DETACH as root, else
/// `fusermount3 -u -z`. Whether it worked.
pub fn lazy_unmount(mountpoint: &Path) -> bool {
    umount2(mountpoint, libc::MNT_DETACH)
        || run(Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(mountpoint))
}

/// umount2(2), which only root may call; whether it worked.
fn umount2(mountpoint: &Path, flags: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
    unsafe { libc::umount2(path.as_ptr(), flags) == 0 }
}

/// Hands the allocator's free pages back to the kernel. glibc returns only the top of its
/// heap by itself; after a burst (10,000 files closed at once, each an upload task) the freed
/// memory in the middle stays in the process's RSS, and the next burst's survivors scatter
/// over it. `malloc_trim(0)` releases every whole free page. A no-op with other C libraries.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the allocator's own locks; it frees no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_flags_are_read_from_renameat2_bits() {
        assert_eq!(rename_flags(0), RenameFlags::default());
        let f = rename_flags(libc::RENAME_NOREPLACE);
        assert!(f.no_replace && !f.exchange);
        let f = rename_flags(libc::RENAME_EXCHANGE);
        assert!(f.exchange && !f.no_replace);
    }

    #[test]
    fn punch_hole_frees_blocks_and_keeps_size_and_other_bytes() {
        use std::io::Write;
        use std::os::unix::fs::{FileExt, MetadataExt};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 4 << 20]).unwrap();
        f.sync_all().unwrap();
        let before = f.metadata().unwrap().blocks();
        punch_hole(&f, 1 << 20, 2 << 20).unwrap();
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), 4 << 20);
        assert!(meta.blocks() < before, "{} -> {}", before, meta.blocks());
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, (1 << 20) - 1).unwrap();
        assert_eq!(b, [7, 0]);
        f.read_exact_at(&mut b, (3 << 20) - 1).unwrap();
        assert_eq!(b, [0, 7]);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
        assert!(is_mounted(Path::new("/")) || !Path::new("/proc/self/mountinfo").exists());
    }
}
