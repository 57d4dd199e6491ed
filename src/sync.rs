//! Locks with a level: the one written lock order of alipanfs, checked in debug builds.
//!
//! Every `std::sync::Mutex` of the daemon (outside the emulator) is a [`Mutex`] from here, made
//! with a [`Level`]. A thread may take a lock only while every lock it already holds has a
//! *lower* level; two locks of the same level are never held together. Debug builds (and the
//! tests' debug runs) panic at the acquire that breaks the order, naming both locks, so an order
//! violation fails a test on the first interleaving that takes the two locks, not on the rare
//! one that deadlocks. Release builds keep only the poison policy.
//!
//! Rules that go with the order (DESIGN.md, "One owner per file state"):
//! - no fsync, network call, or wait on another task while holding a lock that lookup, readdir,
//!   getattr or release takes (levels below [`Level::IO_FREE_ABOVE`] are such locks);
//! - every critical section is short and does not panic, so a lock poisoned by a panic
//!   elsewhere is taken as it is (the panic was answered with EIO, see `fs::fuse`).
//!
//! # The lock table
//!
//! Levels go from the outside in: a lock of a higher level may be taken while holding one of a
//! lower level, never the other way round. Bands, one per layer (each layer's module doc lists
//! its locks with their exact level):
//!
//! | band | layer | what it guards |
//! |---|---|---|
//! | 0-99 | front ends | WebDAV's dead properties (taken alone, never across a core call) |
//! | 100-199 | `fs` | inode table, handles, per-name gates, synthetic trees |
//! | 200-299 | `write` | per-file upload state, the queue's jobs, journal, streams, progress |
//! | 300-399 | `meta` | stored listings and download URLs |
//! | 400-499 | `read`, `transcode` | URL sources, read handles, download slots, play info |
//! | 500-599 | `cache` | data cache index, writer queue, per-file block maps |
//! | 600-699 | `api` | token state, rate limiters, buffer pool, call statistics |
//! | 900-999 | leaves | fault plans, metrics, counters: take no other lock inside |
//!
//! The levels in use are the constants of [`Level`]; add one there (with its row in the owning
//! module's doc) rather than reuse a number.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// A lock's place in the order. Construct with a named constant so the table stays in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub u16);

impl Level {
    /// Locks below this level are taken by lookup, readdir, getattr or release: nothing slow
    /// (fsync, network, waiting on a task) may happen while one is held.
    pub const IO_FREE_ABOVE: Level = Level(300);

    /// One staged file's journal entry (`write::staging`): the outermost lock, since the fs and
    /// the queue read the entry's target (inode table, job slots) under it. Only writers of that
    /// same entry take it.
    pub const JOURNAL_ENTRY: Level = Level(100);
    /// WebDAV's dead properties (`webdav::props`): taken alone, released before any core call.
    pub const WEBDAV_PROPS: Level = Level(10);
    // fs (100-199)
    pub const FS_GATE: Level = Level(110);
    pub const FS_INODES: Level = Level(120);
    pub const FS_HANDLES: Level = Level(130);
    pub const FS_KEYED: Level = Level(140);
    pub const FS_SYNTHETIC: Level = Level(150);
    pub const FS_LISTING: Level = Level(160);
    pub const FS_MISC: Level = Level(190);
    // write (200-299)
    pub const WRITE_QUEUE: Level = Level(210);
    pub const WRITE_REPLACED: Level = Level(220);
    pub const WRITE_COMPLETED: Level = Level(230);
    pub const WRITE_STREAM: Level = Level(240);
    pub const WRITE_JOURNAL: Level = Level(250);
    pub const WRITE_EVENTS: Level = Level(280);
    pub const WRITE_PROGRESS: Level = Level(290);
    // meta (300-399)
    pub const META_LISTINGS: Level = Level(310);
    pub const META_URLS: Level = Level(320);
    // read, transcode (400-499)
    pub const TRANSCODE: Level = Level(410);
    pub const TRANSCODE_SIZES: Level = Level(415);
    pub const READ_URLS: Level = Level(420);
    pub const READ_HANDLE: Level = Level(430);
    pub const READ_SLOTS: Level = Level(440);
    pub const READ_MISC: Level = Level(490);
    // cache (500-599)
    pub const CACHE_INDEX: Level = Level(510);
    pub const CACHE_FILE: Level = Level(520);
    pub const CACHE_WRITER: Level = Level(530);
    pub const CACHE_STATS: Level = Level(590);
    // api (600-699)
    pub const API_AUTH: Level = Level(610);
    pub const API_LIMITER: Level = Level(620);
    pub const API_BUFPOOL: Level = Level(630);
    pub const API_STATS: Level = Level(690);
    // leaves (900-999)
    pub const LEAF: Level = Level(900);
    /// The log's kept-back lines (`crate::logging`): taken while logging, so above every other.
    pub const LOG: Level = Level(999);
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

thread_local! {
    /// Locks this thread holds now, in acquire order (debug builds only).
    static HELD: RefCell<Vec<(Level, &'static str)>> = const { RefCell::new(Vec::new()) };
}

/// Checks `level` against the locks this thread holds and records it. Panics on a violation.
#[cfg(debug_assertions)]
fn enter(level: Level, name: &'static str) {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if let Some(&(top, top_name)) = held.iter().max_by_key(|(l, _)| *l) {
            if top >= level {
                let stack: Vec<String> = held.iter().map(|(l, n)| format!("{n}@{l}")).collect();
                drop(held);
                panic!(
                    "lock order violated: taking {name} (level {level}) while holding {top_name} (level {top}); held: {}",
                    stack.join(", ")
                );
            }
        }
        held.push((level, name));
    });
}

#[cfg(debug_assertions)]
fn leave(level: Level, name: &'static str) {
    let _ = HELD.try_with(|held| {
        let mut held = held.borrow_mut();
        if let Some(i) = held.iter().rposition(|&(l, n)| l == level && n == name) {
            held.remove(i);
        }
    });
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn enter(_level: Level, _name: &'static str) {}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn leave(_level: Level, _name: &'static str) {}

/// The levels of the locks the calling thread holds (debug builds; empty in release). For
/// assertions such as "nothing below `IO_FREE_ABOVE` is held around this fsync".
pub fn held_levels() -> Vec<Level> {
    HELD.with(|held| held.borrow().iter().map(|(l, _)| *l).collect())
}

/// Asserts (debug builds) that the caller holds no lock that lookup, readdir, getattr or release
/// takes: call before an fsync, a network call or a wait on another task.
#[track_caller]
pub fn assert_io_allowed(what: &str) {
    if cfg!(debug_assertions) {
        let blocking: Vec<String> = HELD.with(|held| {
            held.borrow()
                .iter()
                .filter(|(l, _)| *l < Level::IO_FREE_ABOVE)
                .map(|(l, n)| format!("{n}@{l}"))
                .collect()
        });
        assert!(
            blocking.is_empty(),
            "{what} while holding a lock the lookup path takes: {}",
            blocking.join(", ")
        );
    }
}

/// A mutex with a place in the lock order. `lock` never fails: a lock poisoned by a panic
/// elsewhere is taken as it is (see the module doc).
pub struct Mutex<T: ?Sized> {
    level: Level,
    name: &'static str,
    inner: std::sync::Mutex<T>,
}

pub struct MutexGuard<'a, T: ?Sized> {
    level: Level,
    name: &'static str,
    guard: std::sync::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    pub const fn new(level: Level, name: &'static str, value: T) -> Self {
        Mutex {
            level,
            name,
            inner: std::sync::Mutex::new(value),
        }
    }

    pub fn into_inner(self) -> T {
        self.inner.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: ?Sized> Mutex<T> {
    pub fn lock(&self) -> MutexGuard<'_, T> {
        enter(self.level, self.name);
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        MutexGuard {
            level: self.level,
            name: self.name,
            guard,
        }
    }

    /// Takes the lock if it is free now; never blocks, so it may be tried out of order (it is
    /// still recorded, so locks taken inside it are checked).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let guard = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        #[cfg(debug_assertions)]
        HELD.with(|held| held.borrow_mut().push((self.level, self.name)));
        Some(MutexGuard {
            level: self.level,
            name: self.name,
            guard,
        })
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    pub fn level(&self) -> Level {
        self.level
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("name", &self.name)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        leave(self.level, self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_levels_may_be_taken_inside_outer_ones() {
        let outer = Mutex::new(Level::FS_INODES, "outer", 1);
        let inner = Mutex::new(Level::API_STATS, "inner", 2);
        let a = outer.lock();
        let b = inner.lock();
        assert_eq!(*a + *b, 3);
        drop(b);
        drop(a);
        assert!(held_levels().is_empty());
    }

    #[test]
    fn guards_dropped_out_of_order_leave_the_right_record() {
        let a = Mutex::new(Level::FS_GATE, "a", ());
        let b = Mutex::new(Level::FS_INODES, "b", ());
        let ga = a.lock();
        let gb = b.lock();
        drop(ga);
        assert_eq!(
            held_levels(),
            if cfg!(debug_assertions) {
                vec![Level::FS_INODES]
            } else {
                vec![]
            }
        );
        drop(gb);
        assert!(held_levels().is_empty());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order violated")]
    fn an_outer_level_taken_inside_an_inner_one_panics() {
        let outer = Mutex::new(Level::FS_INODES, "outer", ());
        let inner = Mutex::new(Level::API_STATS, "inner", ());
        let _b = inner.lock();
        let _a = outer.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order violated")]
    fn two_locks_of_one_level_are_never_held_together() {
        let a = Mutex::new(Level::WRITE_JOURNAL, "journal a", ());
        let b = Mutex::new(Level::WRITE_JOURNAL, "journal b", ());
        let _a = a.lock();
        let _b = b.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "while holding a lock the lookup path takes")]
    fn io_under_a_lookup_lock_is_refused() {
        let gate = Mutex::new(Level::FS_GATE, "gate", ());
        let _g = gate.lock();
        assert_io_allowed("fsync");
    }

    #[test]
    fn a_poisoned_lock_is_taken_as_it_is() {
        let m = std::sync::Arc::new(Mutex::new(Level::LEAF, "leaf", 5));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("poison it");
        })
        .join();
        assert_eq!(*m.lock(), 5);
    }
}
