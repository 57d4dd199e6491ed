//! Whole blocks written around the page cache (O_DIRECT), from one aligned buffer.

use std::fs::File;
use std::io;

use crate::cache::store::BLOCK;

/// A block-sized buffer aligned for O_DIRECT.
pub(super) struct Direct {
    storage: Vec<u8>,
    lead: usize,
}

/// O_DIRECT wants buffers and offsets aligned to the logical block size; a page covers it.
const DIRECT_ALIGN: usize = 4096;

impl Direct {
    pub(super) fn new() -> Direct {
        let storage = vec![0u8; BLOCK as usize + DIRECT_ALIGN];
        let lead = storage.as_ptr().align_offset(DIRECT_ALIGN);
        Direct { storage, lead }
    }

    /// Writes `bytes` (one whole block) at `offset` of `file` around the page cache.
    pub(super) fn write(&mut self, file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let buf = &mut self.storage[self.lead..self.lead + bytes.len()];
        buf.copy_from_slice(bytes);
        crate::platform::open_direct(file)?.write_all_at(buf, offset)
    }
}
