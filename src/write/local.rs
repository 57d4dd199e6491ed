//! Reading the staged file: one streaming hashing pass, and one part at a time into `Bytes`.
//! Both run on the blocking pool so the async workers never wait on the disk, and both keep memory
//! bounded (a 1 MiB buffer for hashing, one part for sending) whatever the file size.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::hashing::PRE_HASH_BYTES;

/// What the uploader needs to know about the local content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInfo {
    pub size: u64,
    /// Uppercase hex SHA-1 of the whole content.
    pub sha1: String,
    /// Uppercase hex SHA-1 of the first 1024 bytes.
    pub pre_hash: String,
}

/// Hash `path` in one pass. The size is what was read, not `metadata().len()`, so hash and size
/// always describe the same bytes.
pub async fn hash_file(path: &Path) -> Result<LocalInfo> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_file_blocking(&path))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(format!("hashing task failed: {e}"))))?
}

fn hash_file_blocking(path: &Path) -> Result<LocalInfo> {
    let mut file = File::open(path)?;
    let mut hasher = ContentHasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io(e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// The hashes an upload needs, fed the content in order (by a whole-file pass, or by a stream
/// following a writer).
#[derive(Clone, Default)]
pub struct ContentHasher {
    whole: Sha1,
    head: Sha1,
    head_len: usize,
    size: u64,
}

impl ContentHasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.whole.update(chunk);
        if self.head_len < PRE_HASH_BYTES {
            let take = (PRE_HASH_BYTES - self.head_len).min(chunk.len());
            self.head.update(&chunk[..take]);
            self.head_len += take;
        }
        self.size += chunk.len() as u64;
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> LocalInfo {
        LocalInfo {
            size: self.size,
            sha1: hex::encode_upper(self.whole.finalize()),
            pre_hash: hex::encode_upper(self.head.finalize()),
        }
    }
}

/// Read `len` bytes at `offset`. A short read means the staged file shrank under us: an error,
/// because sending fewer bytes than declared would corrupt the upload.
pub async fn read_range(path: &Path, offset: u64, len: u64) -> Result<Bytes> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Bytes> {
        let mut file = File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let len = usize::try_from(len)
            .map_err(|_| Error::Io(std::io::Error::other("part too large for memory")))?;
        // Not zero-filled first: a part is up to hundreds of MiB, read once.
        let mut buf = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut buf)?;
        if buf.len() < len {
            return Err(Error::Io(std::io::Error::other(format!(
                "staged file {} shrank during upload",
                path.display()
            ))));
        }
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(format!("read task failed: {e}"))))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing;

    #[tokio::test]
    async fn hashes_match_the_reference_functions() {
        let tmp = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 1023, 1024, 1025, (1 << 20) + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = tmp.path().join(format!("f{len}"));
            std::fs::write(&p, &data).unwrap();
            let info = hash_file(&p).await.unwrap();
            assert_eq!(info.size, len as u64);
            assert_eq!(info.sha1, hashing::sha1_hex(&data));
            assert_eq!(info.pre_hash, hashing::pre_hash(&data));
        }
    }

    #[tokio::test]
    async fn reads_ranges_and_refuses_short_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(&read_range(&p, 3, 4).await.unwrap()[..], b"3456");
        assert_eq!(read_range(&p, 10, 0).await.unwrap().len(), 0);
        assert!(read_range(&p, 8, 4).await.is_err());
        assert!(read_range(&tmp.path().join("missing"), 0, 1).await.is_err());
    }
}
