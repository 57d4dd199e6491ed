//! Local content of a file: the staging file that holds what was written through the mount.
//!
//! Every write goes to a staging file on local disk (under --cache-dir), so any write pattern
//! works (random writes, truncate, append) and memory does not grow with file size. While a node
//! has local content, reads and sizes come from it. When the last writer closes, the content is
//! *sealed* and handed to the upload queue; a later writer copies it to a fresh staging file
//! instead of changing bytes that are being uploaded.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::write::WriteStream;

#[derive(Debug)]
pub struct LocalContent {
    pub path: PathBuf,
    file: File,
    sealed: AtomicBool,
    writers: AtomicU32,
    dirty: AtomicBool,
    /// Changed since the last FLUSH/fsync recorded it as closed in the journal.
    unflushed: AtomicBool,
    /// Uploading while written (a file written from empty); told of every change.
    stream: Option<Arc<WriteStream>>,
}

impl LocalContent {
    pub fn new(path: PathBuf, file: File) -> Self {
        LocalContent {
            path,
            file,
            sealed: AtomicBool::new(false),
            writers: AtomicU32::new(0),
            dirty: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            stream: None,
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

    pub fn seal(&self) {
        self.sealed.store(true, Ordering::SeqCst);
    }

    pub fn add_writer(&self) {
        self.writers.fetch_add(1, Ordering::SeqCst);
    }

    /// One writer closed; returns how many remain.
    pub fn remove_writer(&self) -> u32 {
        self.writers
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1)
    }
}
