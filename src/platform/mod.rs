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
