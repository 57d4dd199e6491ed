//! Local content of a file: the staging file that holds what was written through the mount.
//!
//! Every write goes to a staging file on local disk (under --cache-dir), so any write pattern
//! works (random writes, truncate, append) and memory does not grow with file size. While a node
//! has local content, reads and sizes come from it. When the last writer closes, the content is
//! *sealed* and handed to the upload queue; a later writer copies it to a fresh staging file
//! instead of changing bytes that are being uploaded.
//!
//! Writers join and leave in one atomic step each (`try_join`, `leave`): once the last writer
//! has left, the content is *closed* and no writer can join it any more, even before the
//! closer has sealed and queued it. Without that, an open racing the previous handle's RELEASE
//! (the kernel sends RELEASE after close() returned) joined a version that was being queued,
//! and its writes landed in bytes already hashed for upload, or in no upload at all.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::write::WriteStream;

/// Set in `LocalContent::writers` once the last writer has left.
const CLOSED: u64 = 1 << 63;

/// Versions are numbered from 1: 0 is older than any (a job replayed from the journal).
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub struct LocalContent {
    pub path: PathBuf,
    file: File,
    sealed: AtomicBool,
    /// Writers (low 32 bits) and `CLOSED`: see `try_join` and `leave`.
    writers: AtomicU64,
    /// Creation order: a version made later is newer (the upload queue never lets an older
    /// version replace a newer one).
    version: u64,
    dirty: AtomicBool,
    /// Changed since the last FLUSH/fsync recorded it as closed in the journal.
    unflushed: AtomicBool,
    /// Uploading while written (a file written from empty); told of every change.
    stream: Option<Arc<WriteStream>>,
    /// The drive's copy changed after this one was taken from it (another device wrote the
    /// file while it was open here): written, it is a conflict, not a newer version.
    stale_base: AtomicBool,
}

impl LocalContent {
    pub fn new(path: PathBuf, file: File) -> Self {
        LocalContent {
            path,
            file,
            sealed: AtomicBool::new(false),
            writers: AtomicU64::new(0),
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            dirty: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            stream: None,
            stale_base: AtomicBool::new(false),
        }
    }

    /// Content that starts empty and may upload while it is written.
    pub fn streamed(path: PathBuf, file: File, stream: Option<Arc<WriteStream>>) -> Self {
        LocalContent {
            stream,
            ..LocalContent::new(path, file)
        }
    }

    /// The staged file (still readable after the staging folder let go of its name).
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn stream(&self) -> Option<&Arc<WriteStream>> {
        self.stream.as_ref()
    }

    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Up to `len` bytes at `offset` (fewer at end of file).
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let n = self
                .file
                .read_at(&mut buf[filled..], offset + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(buf)
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.mark_dirty();
        let written = self.file.write_all_at(data, offset);
        if let Some(s) = &self.stream {
            match &written {
                Ok(()) => s.on_write(offset, data.len() as u64),
                // Some bytes may have landed: what was streamed cannot be trusted.
                Err(_) => s.abandon("a write to the staged file failed"),
            }
        }
        written
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.mark_dirty();
        let done = self.file.set_len(len);
        if let Some(s) = &self.stream {
            match &done {
                Ok(()) => s.on_truncate(len),
                Err(_) => s.abandon("a truncate of the staged file failed"),
            }
        }
        done
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Copy the whole content into `dst` (a new staging file).
    pub fn copy_into(&self, dst: &File) -> io::Result<u64> {
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = self.file.read_at(&mut buf, offset)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&buf[..n], offset)?;
            offset += n as u64;
        }
        dst.set_len(offset)?;
        Ok(offset)
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.unflushed.store(true, Ordering::SeqCst);
    }

    /// True (once) when the content changed since the last call: a FLUSH has something to
    /// record. Put back with `mark_unflushed` when recording failed.
    pub fn take_unflushed(&self) -> bool {
        self.unflushed.swap(false, Ordering::SeqCst)
    }

    pub fn mark_unflushed(&self) {
        self.unflushed.store(true, Ordering::SeqCst);
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::SeqCst)
    }

    /// Queued for upload (or kept as a read-only copy): its bytes never change again.
    pub fn seal(&self) {
        self.writers.fetch_or(CLOSED, Ordering::SeqCst);
        self.sealed.store(true, Ordering::SeqCst);
    }

    /// The last writer has left (or it was sealed): no writer can join.
    pub fn is_closed(&self) -> bool {
        self.writers.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// The drive's copy changed after this content was taken from it.
    pub fn mark_stale_base(&self) {
        self.stale_base.store(true, Ordering::SeqCst);
    }

    pub fn is_stale_base(&self) -> bool {
        self.stale_base.load(Ordering::SeqCst)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// A new writer joins, unless the content is closed (then the caller makes a new version).
    pub fn try_join(&self) -> bool {
        self.writers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w & CLOSED == 0).then_some(w + 1)
            })
            .is_ok()
    }

    /// A writer leaves. True for the last one: the content is closed in the same step, and the
    /// caller must seal it (queue its upload, or keep it as a copy).
    pub fn leave(&self) -> bool {
        let before = self
            .writers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                let writers = (w & !CLOSED).saturating_sub(1);
                Some(if writers == 0 {
                    CLOSED
                } else {
                    writers | (w & CLOSED)
                })
            })
            .unwrap_or(CLOSED);
        before & CLOSED == 0 && before & !CLOSED <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> LocalContent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        let file = File::create(&path).unwrap();
        LocalContent::new(path, file)
    }

    #[test]
    fn the_last_writer_closes_the_content_and_no_writer_joins_it_after() {
        let c = content();
        assert!(c.try_join() && c.try_join());
        assert!(!c.leave(), "one writer remains");
        assert!(!c.is_closed());
        assert!(c.leave(), "the last writer closes it");
        assert!(c.is_closed() && !c.is_sealed());
        assert!(!c.try_join(), "a closed version takes no writer");
        assert!(!c.leave(), "closing happens once");
        c.seal();
        assert!(c.is_sealed() && !c.try_join());
    }

    #[test]
    fn joins_racing_the_last_leave_either_keep_it_open_or_find_it_closed() {
        for _ in 0..200 {
            let c = Arc::new(content());
            assert!(c.try_join());
            let joiner = {
                let c = c.clone();
                std::thread::spawn(move || c.try_join())
            };
            let closed_by_leave = c.leave();
            let joined = joiner.join().unwrap();
            // Exactly one of: the join came first (the leave was not the last), or the leave
            // closed it (the join was refused).
            assert_ne!(joined, closed_by_leave);
            if joined {
                assert!(c.leave(), "the joiner is now the last writer");
            }
        }
    }

    #[test]
    fn later_versions_are_newer() {
        let (a, b) = (content(), content());
        assert!(b.version() > a.version() && a.version() > 0);
    }
}
