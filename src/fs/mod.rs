//! The filesystem: `core` holds the semantics (inodes, listings, handles, local content),
//! `fuse` adapts it to fuser, `mount` puts it on a mount point.

pub mod core;
pub mod fuse;
pub mod inode;
mod keyed;
pub mod local;
pub mod names;
pub mod passthrough;

pub use self::core::{Attr, FsConfig, FsCore, LivpMode, OrderBy, OrderDirection};

/// Lock a mutex whatever happened to its last holder. A panic in one operation is caught and
/// answered with EIO (see `fuse.rs`); the data these locks guard is kept consistent by each
/// critical section being short and non-panicking, so a poisoned lock must not fail every later
/// operation of the mount.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
