//! Reusable buffers for download bodies.
//!
//! A sequential read fetches its read-ahead in multi-MiB ranges, one fresh buffer each. The kernel
//! hands a fresh allocation out page by page, faulting and zeroing every 4 KiB: about a tenth of
//! the daemon's CPU in a profile of a 1 GiB read. A pooled buffer comes back when the last slice of
//! its `Bytes` is dropped and serves the next download of a similar size. The pool keeps at most
//! `max_bytes` idle, and only buffers of at least `MIN_POOLED` (small reads are not worth it).

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Smaller buffers are allocated and freed as usual.
pub const MIN_POOLED: usize = 1 << 20;

pub struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max_bytes: usize,
}

/// A pooled buffer behind a `Bytes`: returns to the pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Weak<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(std::mem::take(&mut self.buf));
        }
    }
}

impl BufferPool {
    pub fn new(max_bytes: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            idle: Mutex::new(Vec::new()),
            max_bytes,
        })
    }

    /// An empty buffer with room for `capacity` bytes: an idle one that fits (and is not more
    /// than twice as big), or a new one.
    pub fn get(&self, capacity: usize) -> Vec<u8> {
        if capacity >= MIN_POOLED {
            let mut idle = self.lock();
            let fits = idle
                .iter()
                .position(|b| b.capacity() >= capacity && b.capacity() / 2 <= capacity);
            if let Some(i) = fits {
                return idle.swap_remove(i);
            }
        }
        Vec::with_capacity(capacity)
    }

    /// The filled buffer as `Bytes`; a poolable one comes back here once all its slices are gone.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < MIN_POOLED {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(self),
        })
    }

    fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut idle = self.lock();
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= self.max_bytes {
            idle.push(buf);
        }
    }

    /// Bytes held by idle buffers.
    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        self.lock().iter().map(Vec::capacity).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn buffers_come_back_when_the_last_slice_goes() {
        let pool = BufferPool::new(32 * MIB);
        let mut buf = pool.get(8 * MIB);
        buf.extend_from_slice(&vec![7u8; 8 * MIB]);
        let ptr = buf.as_ptr();
        let bytes = pool.freeze(buf);
        let slice = bytes.slice(MIB..2 * MIB);
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 0, "a slice still holds it");
        assert_eq!(slice[0], 7);
        drop(slice);
        assert_eq!(pool.idle_bytes(), 8 * MIB);
        let again = pool.get(8 * MIB);
        assert_eq!(again.as_ptr(), ptr, "the same memory, reused");
        assert!(again.is_empty());
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[test]
    fn small_and_mismatched_sizes_are_not_pooled_and_the_pool_is_bounded() {
        let pool = BufferPool::new(16 * MIB);
        let small = pool.freeze(vec![1u8; 4096]);
        drop(small);
        assert_eq!(pool.idle_bytes(), 0);
        let bufs: Vec<Bytes> = (0..3)
            .map(|_| {
                let mut b = pool.get(8 * MIB);
                b.resize(8 * MIB, 0);
                pool.freeze(b)
            })
            .collect();
        drop(bufs);
        assert_eq!(pool.idle_bytes(), 16 * MIB, "two kept, the third freed");
        // A 1 MiB request does not take an 8 MiB buffer.
        assert_eq!(pool.get(MIB).capacity(), MIB);
        assert_eq!(pool.idle_bytes(), 16 * MIB);
    }

    #[test]
    fn a_dropped_pool_lets_buffers_go() {
        let pool = BufferPool::new(16 * MIB);
        let mut b = pool.get(2 * MIB);
        b.resize(2 * MIB, 3);
        let bytes = pool.freeze(b);
        drop(pool);
        assert_eq!(bytes.len(), 2 * MIB);
        drop(bytes);
    }
}
