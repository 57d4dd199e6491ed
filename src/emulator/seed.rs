//! Seeding: putting content into the drive without the API, for tests and the demo tree
//! (`Emulator::seed_*`, transcodes' and live photos' blobs), and `pattern_bytes`, the
//! deterministic content seeded files carry. Separate from `state` because none of it is
//! part of what the emulated service does.

use super::state::Shared;
use super::util;
use sha1::{Digest, Sha1};
use std::io::Write;

impl Shared {
    /// A blob of `size` bytes written by `fill`, with one reference taken (for seeds that are
    /// not items of their own: transcodes, live-photo streams).
    pub fn store_blob(&self, content: &[u8]) -> String {
        let sha1 = self.write_blob(content.len() as u64, |w| w.write_all(content));
        let mut st = self.lock();
        if let Some(b) = st.blobs.get_mut(&sha1) {
            b.refs += 1;
        }
        sha1
    }

    /// Writes a seed's content into the blob store (no reference taken); returns its SHA-1.
    fn write_blob(
        &self,
        size: u64,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> String {
        let tmp = self
            .data_dir
            .join("uploads")
            .join(format!("seed-{}", util::rand_hex(16, false)));
        let res = (|| -> std::io::Result<(String, String)> {
            let f = std::fs::File::create(&tmp)?;
            let mut w = HashingWriter {
                inner: std::io::BufWriter::with_capacity(1 << 20, f),
                sha: Sha1::new(),
                head: Vec::new(),
            };
            fill(&mut w)?;
            w.inner.flush()?;
            Ok((
                hex::encode_upper(w.sha.finalize()),
                crate::hashing::pre_hash(&w.head),
            ))
        })();
        let (sha1, pre) = match res {
            Ok(x) => x,
            // Seeding is a test/demo helper: a full disk here is a broken test setup.
            Err(e) => panic!("emulator seed write failed: {e}"),
        };
        let mut st = self.lock();
        self.adopt_blob(&mut st, &tmp, &sha1, size, &pre);
        sha1
    }

    fn seed_from_writer(
        &self,
        kind: &str,
        parent: &str,
        name: &str,
        size: u64,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> String {
        let sha1 = self.write_blob(size, fill);
        let id = {
            let mut st = self.lock();
            let drive = st.drive_of_kind(kind).unwrap_or_default();
            st.insert_file(&drive, parent, name, size, &sha1, None, None)
        };
        self.save_now();
        id
    }

    pub fn seed_bytes(&self, parent: &str, name: &str, content: &[u8]) -> String {
        self.seed_bytes_in("default", parent, name, content)
    }

    /// A file in the drive of `kind` (default, resource, backup).
    pub fn seed_bytes_in(&self, kind: &str, parent: &str, name: &str, content: &[u8]) -> String {
        let size = content.len() as u64;
        self.seed_from_writer(kind, parent, name, size, |w| w.write_all(content))
    }

    /// Test hook: `file_id` now holds `content` (same file_id; new hash, size and updated_at),
    /// as if the drive had changed it behind a client's back.
    pub fn replace_bytes(&self, file_id: &str, content: &[u8]) {
        let sha1 = crate::hashing::sha1_hex(content);
        let tmp = self
            .data_dir
            .join("uploads")
            .join(format!("seed-{}", util::rand_hex(16, false)));
        if let Err(e) = std::fs::write(&tmp, content) {
            panic!("emulator seed write failed: {e}");
        }
        {
            let mut st = self.lock();
            let pre = crate::hashing::pre_hash(content);
            self.adopt_blob(&mut st, &tmp, &sha1, content.len() as u64, &pre);
            if let Some(b) = st.blobs.get_mut(&sha1) {
                b.refs += 1;
            }
            let node = st.nodes.get_mut(file_id).expect("seeded item");
            let old = node.sha1.replace(sha1);
            node.size = content.len() as u64;
            node.updated_ms = util::now_ms().max(node.updated_ms + 1);
            if let Some(old) = old {
                self.release_blob(&mut st, &old);
            }
            st.changed(super::changes::Op::Update, file_id);
        }
        self.save_now();
    }

    pub fn seed_pattern(&self, parent: &str, name: &str, size: u64, seed: u64) -> String {
        self.seed_from_writer("default", parent, name, size, |w| {
            let mut off = 0u64;
            while off < size {
                let n = (size - off).min(1 << 20) as usize;
                w.write_all(&pattern_bytes(seed, off, n))?;
                off += n as u64;
            }
            Ok(())
        })
    }

    pub fn seed_folder(&self, parent: &str, name: &str) -> String {
        self.seed_folder_in("default", parent, name)
    }

    /// A folder in the drive of `kind` (default, resource, backup).
    pub fn seed_folder_in(&self, kind: &str, parent: &str, name: &str) -> String {
        let id = {
            let mut st = self.lock();
            let drive = st.drive_of_kind(kind).unwrap_or_default();
            st.insert_folder(&drive, parent, name)
        };
        self.save_now();
        id
    }

    pub fn seed_demo_tree(&self) {
        let docs = self.seed_folder("root", "Documents");
        let pics = self.seed_folder("root", "Pictures");
        let videos = self.seed_folder("root", "Videos");
        let _empty = self.seed_folder("root", "Empty folder");
        self.seed_bytes(
            "root",
            "README.txt",
            b"This drive is served by the alipanfs emulator.\nNothing here leaves your machine.\n",
        );
        self.seed_bytes(
            &docs,
            "notes.md",
            b"# Notes\n\n- emulated drive\n- try editing me\n",
        );
        self.seed_bytes(&docs, "hello.txt", b"Hello World!");
        let reports = self.seed_folder(&docs, "Reports 2024");
        self.seed_bytes(&reports, "q1.csv", b"month,amount\njan,10\nfeb,12\nmar,9\n");
        self.seed_pattern(&pics, "photo.jpg", 300 * 1024, 7);
        self.seed_pattern("root", "big-64MiB.bin", 64 << 20, 42);
        self.seed_demo_video(&videos, "sample.mp4");
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha1,
    head: Vec<u8>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        if self.head.len() < crate::hashing::PRE_HASH_BYTES {
            let take = (crate::hashing::PRE_HASH_BYTES - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The deterministic content of `seed_pattern_file`: any slice can be computed on its own.
pub fn pattern_bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut pos = offset;
    let end = offset + len as u64;
    while pos < end {
        let word = splitmix(seed ^ (pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes();
        let from = (pos % 8) as usize;
        let take = (8 - from).min((end - pos) as usize);
        out.extend_from_slice(&word[from..from + take]);
        pos += take as u64;
    }
    out
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_slices_agree_with_the_whole() {
        let whole = pattern_bytes(5, 0, 1000);
        assert_eq!(pattern_bytes(5, 13, 100), whole[13..113].to_vec());
        assert_eq!(pattern_bytes(5, 999, 1), whole[999..].to_vec());
        assert_ne!(pattern_bytes(6, 0, 64), whole[..64].to_vec());
        assert!(pattern_bytes(5, 7, 0).is_empty());
    }
}
