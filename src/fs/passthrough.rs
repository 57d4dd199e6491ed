//! Kernel passthrough of fully cached files: whether this kernel and these privileges allow
//! it, and the backing files registered with the kernel.
//!
//! The kernel allows one backing file per inode at a time, and refuses a non-passthrough open
//! of an inode that has one (EIO): so every passthrough open of an inode shares one
//! `BackingId`, held by each of its handles and closed with the last one.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use fuser::BackingId;

use crate::cli::options::Passthrough;

/// Whether passthrough may be tried on this mount: `auto` with a kernel of 6.9 or later and
/// root (the kernel asks CAP_SYS_ADMIN to register a backing file). Says why not in one INFO
/// line when `auto` cannot.
pub fn allowed(mode: Passthrough) -> bool {
    if mode == Passthrough::Off || !crate::platform::PASSTHROUGH {
        return false;
    }
    let release = kernel_release();
    let new_enough = parse_version(&release).is_some_and(|v| v >= (6, 9));
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !new_enough {
        tracing::info!(kernel = %release, "kernel passthrough needs Linux 6.9 or later: cached files are read through the daemon");
    } else if !root {
        tracing::info!("kernel passthrough needs root (CAP_SYS_ADMIN): cached files are read through the daemon");
    }
    new_enough && root
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: uname NUL-terminates its fields.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// `6.18.0-1-amd64` -> (6, 18).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Backing files registered with the kernel: per handle (kept alive while it is open) and per
/// inode (shared by that inode's handles).
#[derive(Default)]
pub struct Backings {
    by_fh: HashMap<u64, Arc<BackingId>>,
    by_ino: HashMap<u64, (String, Weak<BackingId>)>,
}

impl Backings {
    /// The cache key of inode `ino`'s live backing file, if it has one.
    pub fn live(&self, ino: u64) -> Option<&str> {
        self.by_ino
            .get(&ino)
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|(k, _)| k.as_str())
    }

    /// Inode `ino`'s backing for cache file `key`: the live one, or a new one from `open`.
    /// Fails when the inode's live backing is another file (the drive file changed while a
    /// passthrough handle was open).
    pub fn get_or_open(
        &mut self,
        ino: u64,
        key: &str,
        open: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        if let Some((k, w)) = self.by_ino.get(&ino) {
            if let Some(id) = w.upgrade() {
                if k == key {
                    return Ok(id);
                }
                return Err(std::io::Error::other(
                    "the inode's passthrough handles read an older version",
                ));
            }
        }
        let id = Arc::new(open()?);
        self.by_ino
            .insert(ino, (key.to_string(), Arc::downgrade(&id)));
        Ok(id)
    }

    pub fn hold(&mut self, fh: u64, id: Arc<BackingId>) {
        self.by_fh.insert(fh, id);
    }

    /// The handle is released: its reference goes (the last one closes the backing file).
    pub fn release(&mut self, fh: u64, ino: u64) {
        self.by_fh.remove(&fh);
        if self.live(ino).is_none() {
            self.by_ino.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_version("6.9"), Some((6, 9)));
        assert_eq!(parse_version("5.15.0-91-generic"), Some((5, 15)));
        assert!(parse_version("6.8.12") < Some((6, 9)));
        assert_eq!(parse_version(""), None);
    }
}
