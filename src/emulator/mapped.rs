//! Read-only memory maps of blob regions, handed to hyper as `Bytes` without a copy.
//!
//! The data host serves file bodies from these maps, so sending a body costs the kernel's one copy
//! into the socket and nothing in user space. Reading through `tokio::fs` instead cost a blocking
//! pool round trip, a zeroed buffer and two copies per 64 KiB: most of a core at localhost speed,
//! taken from the client the benchmarks measure (the real service's CPU is not on the user's machine).
//!
//! Safe because blobs are immutable: a blob is written under a temporary name and renamed into place
//! once complete, and it is only ever unlinked, never truncated or rewritten, so a mapped page can
//! neither change nor vanish (an unlinked file's pages live as long as the mapping).

use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// One `mmap`ed span of a file; unmapped when the last `Bytes` slice of it is dropped.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop` (see the module note).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Bytes `offset .. offset + len` of `file`, mapped (and pre-faulted) rather than read.
/// Fails with `UnexpectedEof` if the file is shorter: mapping past its end would fault on access.
pub fn map_region(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let end = offset
        .checked_add(len as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region overflows"))?;
    if file.metadata()?.len() < end {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob shorter than expected",
        ));
    }
    let page = page_size();
    let start = offset - offset % page;
    let lead = (offset - start) as usize;
    let map_len = lead + len;
    // SAFETY: a fresh private read-only mapping of an open file; checked for MAP_FAILED below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | crate::platform::MAP_POPULATE,
            file.as_raw_fd(),
            start as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mapping = Mapping { ptr, len: map_len };
    Ok(Bytes::from_owner(mapping).slice(lead..))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_unaligned_regions_and_refuses_past_the_end() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        for (off, len) in [
            (0u64, 1usize),
            (1, 4095),
            (4095, 2),
            (4096, 8192),
            (12_345, 7_655),
        ] {
            let b = map_region(&f, off, len).unwrap();
            assert_eq!(
                &b[..],
                &data[off as usize..off as usize + len],
                "{off}+{len}"
            );
        }
        assert!(map_region(&f, 0, 0).unwrap().is_empty());
        let err = map_region(&f, 19_999, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
