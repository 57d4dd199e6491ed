//! The cache's files on disk, one pair per cached file version under `data/<namespace>/`:
//!
//! - `<key>.data`: a sparse file as long as the drive file, holding whole 1 MiB aligned blocks
//!   (the last one shorter) at their own offsets; absent blocks are holes.
//! - `<key>.idx`: a header (file_id, content identity, size) and then fixed-size records, each
//!   adding a block (with its length and CRC-32) or removing one. Appended only; a torn record
//!   at the end (kill -9, power loss) fails its own checksum and is cut off at load.
//!
//! `<key>` is the SHA-1 of file_id and identity, so a new version of a file is a new pair.
//! Ordering that makes a recorded block trustworthy: its data is written and `fdatasync`ed
//! before its record is appended (see `mod.rs`), and a removal record is `fsync`ed before the
//! hole is punched.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

/// Block size: the unit of presence, eviction and checksums.
pub const BLOCK: u64 = 1 << 20;

const MAGIC: &[u8; 6] = b"ALPC1\n";
const RECORD: usize = 20;
const ADD: u8 = b'A';
const REMOVE: u8 = b'R';

/// What identifies one version of one drive file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub file_id: String,
    pub identity: String,
    pub size: u64,
}

/// A block recorded as whole: its length and CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRec {
    pub len: u32,
    pub crc: u32,
}

/// The file-name key of a file version.
pub fn key_of(file_id: &str, identity: &str) -> String {
    let mut h = Sha1::new();
    h.update(file_id.as_bytes());
    h.update([0]);
    h.update(identity.as_bytes());
    hex::encode(h.finalize())
}

pub fn data_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.data"))
}

pub fn idx_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.idx"))
}

/// Number of blocks of a file of `size` bytes.
pub fn blocks_of(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

/// Length of block `b` of a file of `size` bytes.
pub fn block_len(size: u64, b: u64) -> u64 {
    (size - (b * BLOCK).min(size)).min(BLOCK)
}

pub fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn encode_record(kind: u8, block: u64, rec: BlockRec) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0] = kind;
    r[4..8].copy_from_slice(&(block as u32).to_le_bytes());
    r[8..12].copy_from_slice(&rec.len.to_le_bytes());
    r[12..16].copy_from_slice(&rec.crc.to_le_bytes());
    let c = crc(&r[..16]);
    r[16..20].copy_from_slice(&c.to_le_bytes());
    r
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// An index as read from disk.
pub struct Loaded {
    pub index: Index,
    pub header: Header,
    /// The blocks recorded as present.
    pub blocks: BTreeMap<u64, BlockRec>,
    /// Records read (adds and removals).
    pub records: u64,
}

/// An index file, open for appending records.
pub struct Index {
    file: File,
    pub len: u64,
}

impl Index {
    /// A new index holding only `header` (replacing any file of that name), written and synced.
    pub fn create(path: &Path, header: &Header) -> io::Result<Index> {
        let json = serde_json::to_vec(header).map_err(io::Error::other)?;
        let mut buf = Vec::with_capacity(json.len() + 14);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        buf.extend_from_slice(&json);
        buf.extend_from_slice(&crc(&json).to_le_bytes());
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        file.write_all(&buf)?;
        file.sync_data()?;
        Ok(Index {
            file,
            len: buf.len() as u64,
        })
    }

    /// An existing index, opened again for appending (after `load` cut any torn tail).
    pub fn open(path: &Path) -> io::Result<Index> {
        let file = OpenOptions::new().write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Index { file, len })
    }

    /// Parses an index: its header and the blocks it records as present. The file is cut back
    /// to its last whole record, so later appends follow valid ones. `None` if the header is
    /// unreadable (the pair is then discarded).
    pub fn load(path: &Path) -> io::Result<Option<Loaded>> {
        let bytes = std::fs::read(path)?;
        let Some(header_end) = header_end(&bytes) else {
            return Ok(None);
        };
        let json = &bytes[10..header_end - 4];
        if crc(json) != u32_at(&bytes, header_end - 4) {
            return Ok(None);
        }
        let Ok(header) = serde_json::from_slice::<Header>(json) else {
            return Ok(None);
        };
        let mut blocks = BTreeMap::new();
        let mut pos = header_end;
        let mut records = 0u64;
        while pos + RECORD <= bytes.len() {
            let r = &bytes[pos..pos + RECORD];
            if crc(&r[..16]) != u32_at(r, 16) {
                break;
            }
            let block = u32_at(r, 4) as u64;
            let rec = BlockRec {
                len: u32_at(r, 8),
                crc: u32_at(r, 12),
            };
            match r[0] {
                ADD if rec.len as u64 == block_len(header.size, block) && rec.len > 0 => {
                    blocks.insert(block, rec);
                }
                REMOVE => {
                    blocks.remove(&block);
                }
                _ => break,
            }
            records += 1;
            pos += RECORD;
        }
        let file = OpenOptions::new().write(true).open(path)?;
        if (pos as u64) < bytes.len() as u64 {
            // A torn tail: cut it so appended records follow whole ones.
            file.set_len(pos as u64)?;
        }
        Ok(Some(Loaded {
            index: Index {
                file,
                len: pos as u64,
            },
            header,
            blocks,
            records,
        }))
    }

    /// Appends "block is present" records (not synced: a lost record only costs a refetch).
    pub fn add(&mut self, blocks: &[(u64, BlockRec)]) -> io::Result<()> {
        let buf: Vec<u8> = blocks
            .iter()
            .flat_map(|(b, r)| encode_record(ADD, *b, *r))
            .collect();
        self.append(&buf)
    }

    /// Appends "block is gone" records and syncs them, before the caller punches the holes: a
    /// hole must never be read as a recorded block after a power loss.
    pub fn remove(&mut self, blocks: &[u64]) -> io::Result<()> {
        let buf: Vec<u8> = blocks
            .iter()
            .flat_map(|b| encode_record(REMOVE, *b, BlockRec { len: 0, crc: 0 }))
            .collect();
        self.append(&buf)?;
        self.file.sync_data()
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, self.len)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Rewrites the index with just `header` and `blocks` (temp file, fsync, rename).
    pub fn compact(
        path: &Path,
        header: &Header,
        blocks: &BTreeMap<u64, BlockRec>,
    ) -> io::Result<Index> {
        let tmp = path.with_extension("idx.tmp");
        let mut idx = Index::create(&tmp, header)?;
        let list: Vec<(u64, BlockRec)> = blocks.iter().map(|(b, r)| (*b, *r)).collect();
        idx.add(&list)?;
        idx.file.sync_data()?;
        std::fs::rename(&tmp, path)?;
        Ok(idx)
    }
}

fn header_end(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return None;
    }
    let n = u32_at(bytes, 6) as usize;
    let end = 10usize.checked_add(n)?.checked_add(4)?;
    (end <= bytes.len()).then_some(end)
}

/// Opens (creating, sparse, as long as the drive file) a data file for writing blocks.
pub fn open_data(path: &Path, size: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    // Passthrough reads see EOF where the drive file ends.
    if f.metadata()?.len() != size {
        f.set_len(size)?;
    }
    Ok(f)
}

/// Frees the disk blocks of `[offset, offset+len)`, keeping the file's size.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    crate::platform::punch_hole(file, offset, len)
}

/// Reads exactly `len` bytes at `offset` (short only at end of file).
pub fn read_exact_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Bytes a block costs on disk, as counted against the limit: its data rounded to the
/// filesystem's 4 KiB allocation, plus its add and remove records.
pub fn block_cost(len: u64) -> u64 {
    len.div_ceil(4096) * 4096 + 2 * RECORD as u64
}

/// Bytes a cached file costs besides its blocks: the index's first page and the data file's
/// extent tree.
pub const FILE_COST: u64 = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.idx");
        let h = Header {
            file_id: "f".into(),
            identity: "sha1:AB".into(),
            size: 3 * BLOCK + 5,
        };
        let mut idx = Index::create(&p, &h).unwrap();
        let rec = BlockRec {
            len: BLOCK as u32,
            crc: 7,
        };
        idx.add(&[(0, rec), (1, rec)]).unwrap();
        idx.remove(&[0]).unwrap();
        idx.add(&[(3, BlockRec { len: 5, crc: 9 })]).unwrap();
        // A torn record: half of one more.
        let whole = idx.len;
        idx.append(&encode_record(ADD, 2, rec)[..11]).unwrap();
        drop(idx);
        let Loaded {
            index: idx,
            header: got,
            blocks,
            records,
        } = Index::load(&p).unwrap().unwrap();
        assert_eq!(got, h);
        assert_eq!(records, 4);
        assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(idx.len, whole);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), whole);
    }

    #[test]
    fn a_record_with_the_wrong_length_is_not_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.idx");
        let h = Header {
            file_id: "f".into(),
            identity: "x".into(),
            size: BLOCK + 10,
        };
        let mut idx = Index::create(&p, &h).unwrap();
        idx.add(&[(1, BlockRec { len: 11, crc: 0 })]).unwrap();
        let blocks = Index::load(&p).unwrap().unwrap().blocks;
        assert!(blocks.is_empty());
    }

    #[test]
    fn a_broken_header_discards_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.idx");
        std::fs::write(&p, b"ALPC1\n\x05\x00\x00\x00{}").unwrap();
        assert!(Index::load(&p).unwrap().is_none());
    }
}
