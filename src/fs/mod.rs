//! The filesystem: `core` holds the semantics (inodes, listings, handles, local content),
//! `fuse` adapts it to fuser, `mount` puts it on a mount point.

pub mod core;
pub mod fuse;
pub mod inode;
mod keyed;
pub mod local;
pub mod names;
pub mod passthrough;
pub mod recent;

pub use self::core::{Attr, FsConfig, FsCore, LivpMode, OrderBy, OrderDirection};

/// Lock a mutex whatever happened to its last holder. A panic in one operation is caught and
/// answered with EIO (see `fuse.rs`); the data these locks guard is kept consistent by each
/// critical section being short and non-panicking, so a poisoned lock must not fail every later
/// operation of the mount.
pub(crate) fn lock<L: Lockable + ?Sized>(m: &L) -> L::Guard<'_> {
    m.take()
}

/// A mutex `lock` can take: a level-checked `crate::sync::Mutex` (every lock of `fs`, `write`
/// and `meta`) or a plain std one (layers not moved yet).
pub(crate) trait Lockable {
    type Guard<'a>
    where
        Self: 'a;
    fn take(&self) -> Self::Guard<'_>;
}

impl<T: ?Sized> Lockable for std::sync::Mutex<T> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn take(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T: ?Sized> Lockable for crate::sync::Mutex<T> {
    type Guard<'a>
        = crate::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn take(&self) -> Self::Guard<'_> {
        self.lock()
    }
}

impl<L: Lockable + ?Sized> Lockable for std::sync::Arc<L> {
    type Guard<'a>
        = L::Guard<'a>
    where
        Self: 'a;
    fn take(&self) -> Self::Guard<'_> {
        (**self).take()
    }
}
