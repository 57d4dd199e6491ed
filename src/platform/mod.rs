//! Every difference between Linux and macOS in one place; the rest of the crate calls these
//! and has no `cfg(target_os)` of its own.
//!
//! | concern | Linux | macOS (macFUSE) |
//! |---|---|---|
//! | rename flags | `RENAME_NOREPLACE`, `RENAME_EXCHANGE` (renameat2) | `RENAME_EXCL`, `RENAME_SWAP` (renamex_np) |
//! | hole punching | `fallocate(PUNCH_HOLE \| KEEP_SIZE)` | `fcntl(F_PUNCHHOLE)` |
//! | early writeback of cache blocks | `sync_file_range(WRITE)` | none (the periodic sync does it) |
//! | kernel passthrough | Linux 6.9+, as root | none |
//! | sd_notify abstract socket | `@name` | none (only path sockets) |
//! | is it mounted | `/proc/self/mountinfo` | device differs from the parent's |
//! | FUSE request threads | 4, each on a cloned `/dev/fuse` fd | 1 |
//! | soft limit of open files raised to | the hard limit | the hard limit, at most OPEN_MAX (10,240) |
//! | free heap pages back to the kernel | `malloc_trim(0)` (glibc) | none (the allocator does it) |
//! | unmount | umount2 as root (MNT_DETACH lazily), else `fusermount3 -u` (`-z`) | `umount` (`-f`) |
//!
//! Only the Linux side is built and tested here; the macOS side is written against the `libc`
//! crate's Apple definitions but has not been compiled (no Apple target on this machine).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::*;

/// What a FUSE rename request asks beyond a plain rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameFlags {
    /// Swap the two names (renameat2 RENAME_EXCHANGE, renamex_np RENAME_SWAP).
    pub exchange: bool,
    /// Fail with EEXIST when the target exists (RENAME_NOREPLACE, RENAME_EXCL).
    pub no_replace: bool,
}

/// Runs an unmount command; whether it succeeded.
fn run(cmd: &mut std::process::Command) -> bool {
    cmd.status().is_ok_and(|s| s.success())
}

/// Raises the soft limit of open files to the hard one (on macOS at most `FD_LIMIT_CAP`, the
/// kernel's per-process maximum), as Go programs such as rclone do at start: every file written
/// and waiting for its upload holds its staged file open, and a soft limit of 1,024 (the usual
/// default) would fail a copy of a few thousand files with EMFILE. Returns the limit now in
/// force, or the error of the call that failed.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let want = FD_LIMIT_CAP.map_or(lim.rlim_max, |cap| lim.rlim_max.min(cap));
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(want)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_of_open_files_is_raised_to_the_hard_one() {
        let now = super::raise_fd_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, now);
        assert_eq!(
            now,
            super::FD_LIMIT_CAP.map_or(lim.rlim_max, |cap| lim.rlim_max.min(cap))
        );
    }
}
