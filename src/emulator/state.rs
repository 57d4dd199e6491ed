//! The emulator's state: drives, the item tree, the content-addressed blob store, upload
//! sessions, tokens, counters. One mutex guards all of it (see `Shared::lock`).

use super::util::{self, new_file_id};
use super::{EmulatorConfig, Faults};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// One item as `Emulator::tree` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// `/a/b/c` from the drive's root.
    pub path: String,
    pub file_id: String,
    pub parent_file_id: String,
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    /// Uppercase SHA-1; `None` for folders.
    pub sha1: Option<String>,
    pub trashed: bool,
    pub drive_id: String,
}

/// The adjustable settings (the `EmulatorConfig` minus `data_dir`).
pub struct Knobs {
    pub client_id: String,
    pub client_secret: String,
    pub access_token_ttl: Duration,
    pub access_token_grace: Duration,
    pub download_url_ttl_cap: Duration,
    pub upload_url_ttl: Duration,
    /// Unfinished upload sessions are dropped (with their parts) this long after create.
    pub upload_ttl: Duration,
    pub rate_list: f64,
    pub rate_download_url: f64,
    pub rate_other: f64,
    pub max_concurrent_downloads: usize,
    pub quota_bytes: u64,
    pub faults: Faults,
    pub strict_content_type: bool,
    /// How long a video's full transcode takes after its first play-info request.
    pub transcode_time: Duration,
    /// Serve the delta feed (`changes.rs`); off, its endpoints answer 404.
    pub delta_feed: bool,
}

// Persisted as is (`persist.rs`); defaults let an older state file load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    pub file_id: String,
    pub drive_id: String,
    pub parent: String,
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub sha1: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Trashed itself (descendants of a trashed folder are hidden via `in_bin`).
    pub trashed: bool,
    pub trashed_ms: Option<i64>,
    pub starred: bool,
    pub local_created_at: Option<String>,
    pub local_modified_at: Option<String>,
    /// An upload not yet completed: invisible everywhere but the upload endpoints.
    pub pending: bool,
    /// A `.livp` live photo's streams (name, blob SHA-1, size): its `streams_info` and
    /// `streamsUrl`; empty for every other file.
    pub streams: Vec<LivpStream>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LivpStream {
    pub name: String,
    pub sha1: String,
    pub size: u64,
}

impl Node {
    /// Every blob the item holds a reference to: its content and a live photo's streams.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        self.sha1
            .as_deref()
            .into_iter()
            .chain(self.streams.iter().map(|s| s.sha1.as_str()))
    }
}

pub struct Blob {
    pub size: u64,
    pub pre_hash: String,
    pub refs: u64,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PartRec {
    pub number: u32,
    pub size: u64,
    pub etag: String,
}

pub struct Upload {
    pub file_id: String,
    pub drive_id: String,
    pub parts: Vec<PartRec>,
    pub committed_len: u64,
    /// SHA-1 of the committed parts so far (parts are strictly sequential).
    pub hasher: Sha1,
    /// Part number whose body is being received right now.
    pub in_progress: Option<u32>,
    /// Completed (or rapid): PUTs get NoSuchUpload, a second complete NotFound.UploadId.
    pub done: bool,
    pub rapid: bool,
    pub declared_size: Option<u64>,
    pub part_sizes: BTreeMap<u32, u64>,
    /// Sessions expire `Knobs::upload_ttl` after this.
    pub created_ms: i64,
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

#[derive(Clone, Serialize, Deserialize)]
pub struct AccessTok {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub chain: u64,
    #[serde(default = "epoch")]
    pub exp: SystemTime,
    #[serde(default)]
    /// Set when a later refresh superseded this token: valid until then (the grace period).
    pub revoke_at: Option<SystemTime>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct RefreshTok {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub chain: u64,
    #[serde(default = "epoch")]
    pub exp: SystemTime,
    #[serde(default)]
    pub used: bool,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tokens {
    pub access: HashMap<String, AccessTok>,
    pub refresh: HashMap<String, RefreshTok>,
    /// code -> (client_id, expiry, used)
    pub codes: HashMap<String, (String, SystemTime, bool)>,
    pub current_refresh: String,
    pub next_chain: u64,
    /// QR sign-ins by sid (`qr`).
    pub qr: HashMap<String, super::qr::QrSession>,
}

pub struct Bucket {
    pub tokens: f64,
    pub last: Instant,
}

pub struct State {
    pub knobs: Knobs,
    pub user_id: String,
    pub user_name: String,
    /// (kind, drive_id): default, resource, backup.
    pub drives: Vec<(String, String)>,
    pub nodes: HashMap<String, Node>,
    /// "drive:parent" -> child file ids (including trashed and pending ones).
    pub children: HashMap<String, BTreeSet<String>>,
    pub blobs: HashMap<String, Blob>,
    /// Videos' transcodes by file_id (`transcode.rs`).
    pub videos: HashMap<String, super::transcode::Video>,
    pub uploads: HashMap<String, Upload>,
    pub tokens: Tokens,
    /// async_task_id -> polls seen.
    pub tasks: HashMap<String, u32>,
    pub buckets: HashMap<(String, String, u8), Bucket>,
    pub force_429: u32,
    pub calls: BTreeMap<String, u64>,
    /// (upload_id, part number) -> PUTs seen (signed ones), for retry-budget tests.
    pub part_puts: BTreeMap<(String, u32), u64>,
    pub jwt_key: [u8; 32],
    /// When `upload::expire` last ran.
    pub last_sweep_ms: i64,
    /// Released blobs and finished part files the last snapshot may still name: unlinked after
    /// the next one (`persist.rs`; always empty without persistence).
    pub doomed_blobs: Vec<String>,
    pub doomed_files: Vec<PathBuf>,
    /// Every change to the tree, for the delta feed (not persisted: a restart starts a new log).
    pub changes: super::changes::ChangeLog,
}

pub struct Shared {
    pub st: Mutex<State>,
    pub active_downloads: AtomicUsize,
    /// When the emulated link (`Faults::link_bandwidth`) is next free.
    pub link_free_at: Mutex<Instant>,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub base_url: String,
    /// The second listener's origin (`EmulatorConfig::internal_endpoint`).
    pub internal_url: Option<String>,
    /// Signs data URLs.
    pub url_key: [u8; 32],
    /// The default temporary data_dir, created here: removed when the emulator goes away.
    owns_dir: bool,
    /// Set when the state is kept in `data_dir/state.json`.
    pub persist: Option<super::persist::Persist>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

impl Shared {
    pub fn new(cfg: EmulatorConfig, addr: SocketAddr) -> Result<Shared> {
        let owns_dir = !cfg.data_dir.exists()
            && cfg.data_dir.parent() == Some(std::env::temp_dir().as_path())
            && cfg
                .data_dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("alipanfs-emulator-"));
        std::fs::create_dir_all(cfg.data_dir.join("blobs"))?;
        std::fs::create_dir_all(cfg.data_dir.join("uploads"))?;
        let mut st = State {
            knobs: Knobs {
                client_id: cfg.client_id,
                client_secret: cfg.client_secret,
                access_token_ttl: cfg.access_token_ttl,
                access_token_grace: cfg.access_token_grace,
                download_url_ttl_cap: cfg.download_url_ttl_cap,
                upload_url_ttl: cfg.upload_url_ttl,
                upload_ttl: cfg.upload_ttl,
                rate_list: cfg.rate_list_per_sec,
                rate_download_url: cfg.rate_download_url_per_sec,
                rate_other: cfg.rate_other_per_sec,
                max_concurrent_downloads: cfg.max_concurrent_downloads,
                quota_bytes: cfg.quota_bytes,
                faults: cfg.faults,
                strict_content_type: cfg.strict_content_type,
                transcode_time: cfg.transcode_time,
                delta_feed: cfg.delta_feed,
            },
            // A JWT bootstrap token names the user: every token issued later carries its `sub`,
            // as clients (alist, alipanfs) refuse a refresh that changes it.
            user_id: cfg
                .refresh_token
                .as_deref()
                .and_then(super::auth::token_sub)
                .unwrap_or_else(|| util::rand_hex(32, false)),
            user_name: "emulator-user".into(),
            drives: vec![
                ("default".into(), "9600002".into()),
                ("resource".into(), "9600003".into()),
                ("backup".into(), "9600002".into()),
            ],
            nodes: HashMap::new(),
            children: HashMap::new(),
            blobs: HashMap::new(),
            videos: HashMap::new(),
            uploads: HashMap::new(),
            tokens: Tokens::default(),
            tasks: HashMap::new(),
            buckets: HashMap::new(),
            force_429: 0,
            calls: BTreeMap::new(),
            part_puts: BTreeMap::new(),
            jwt_key: rand::random(),
            last_sweep_ms: 0,
            doomed_blobs: Vec::new(),
            doomed_files: Vec::new(),
            changes: Default::default(),
        };
        let persist = cfg
            .persist
            .then(|| super::persist::Persist::new(&cfg.data_dir));
        // A saved drive is served as it was, its current refresh token included (the bootstrap
        // token of the config was spent by the first run).
        let loaded = match persist {
            Some(_) => super::persist::load(&mut st, &cfg.data_dir)?,
            None => None,
        };
        let initial = match cfg.refresh_token {
            _ if loaded.is_some() && !st.tokens.current_refresh.is_empty() => {
                st.tokens.current_refresh.clone()
            }
            Some(t) => t,
            None => st.mint_refresh_token(None),
        };
        if !st.tokens.refresh.contains_key(&initial) {
            let chain = st.new_chain();
            let client_id = st.knobs.client_id.clone();
            st.tokens.refresh.insert(
                initial.clone(),
                RefreshTok {
                    client_id,
                    chain,
                    exp: SystemTime::now() + REFRESH_TTL,
                    used: false,
                },
            );
        }
        st.tokens.current_refresh = initial;
        let sh = Shared {
            st: Mutex::new(st),
            active_downloads: AtomicUsize::new(0),
            link_free_at: Mutex::new(Instant::now()),
            data_dir: cfg.data_dir,
            addr,
            base_url: format!("http://{addr}"),
            internal_url: None,
            url_key: loaded.and_then(|l| l.url_key).unwrap_or_else(rand::random),
            owns_dir,
            persist,
        };
        {
            let mut st = sh.lock();
            super::upload::expire(&sh, &mut st);
        }
        // The first snapshot holds the bootstrap token before anyone can use it.
        sh.touch();
        sh.save()?;
        Ok(sh)
    }

    /// Poison-tolerant: a panicking test thread must not wedge the server.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn blob_path(&self, sha1: &str) -> PathBuf {
        self.data_dir.join("blobs").join(sha1)
    }

    pub fn upload_path(&self, upload_id: &str) -> PathBuf {
        self.data_dir.join("uploads").join(upload_id)
    }

    /// Registers a finished file written at `tmp` (content `sha1`, `size`, `pre_hash`) as a blob.
    pub fn adopt_blob(&self, st: &mut State, tmp: &Path, sha1: &str, size: u64, pre_hash: &str) {
        let dest = self.blob_path(sha1);
        if st.blobs.contains_key(sha1) {
            self.discard_file(st, tmp.to_path_buf());
        } else {
            if self.persist.is_some() {
                // The last snapshot may still name `tmp` (an unfinished upload): keep it until
                // the next. A blob file already there (released, not yet unlinked) has the
                // same content.
                if !dest.exists() && std::fs::hard_link(tmp, &dest).is_err() {
                    let _ = std::fs::copy(tmp, &dest);
                }
                self.discard_file(st, tmp.to_path_buf());
            } else {
                let _ = std::fs::rename(tmp, &dest);
            }
            st.blobs.insert(
                sha1.to_string(),
                Blob {
                    size,
                    pre_hash: pre_hash.to_string(),
                    refs: 0,
                },
            );
        }
    }

    /// Drops one reference; the file goes when nothing refers to it.
    pub fn release_blob(&self, st: &mut State, sha1: &str) {
        let gone = match st.blobs.get_mut(sha1) {
            Some(b) => {
                b.refs = b.refs.saturating_sub(1);
                b.refs == 0
            }
            None => false,
        };
        if gone {
            st.blobs.remove(sha1);
            self.discard_blob(st, sha1);
        }
    }

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

const REFRESH_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

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

pub fn parent_key(drive: &str, parent: &str) -> String {
    format!("{drive}:{parent}")
}

impl State {
    pub fn drive_of_kind(&self, kind: &str) -> Option<String> {
        self.drives
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, d)| d.clone())
    }

    pub fn drive_exists(&self, drive: &str) -> bool {
        self.drives.iter().any(|(_, d)| d == drive)
    }

    pub fn new_chain(&mut self) -> u64 {
        self.tokens.next_chain += 1;
        self.tokens.next_chain
    }

    /// Bytes of all stored files, trashed ones included (pending uploads excluded).
    pub fn used_bytes(&self) -> u64 {
        self.nodes
            .values()
            .filter(|n| !n.is_dir && !n.pending)
            .map(|n| n.size)
            .sum()
    }

    /// Trashed itself or below a trashed folder.
    pub fn in_bin(&self, id: &str) -> bool {
        let mut cur = self.nodes.get(id);
        let mut depth = 0;
        while let Some(n) = cur {
            if n.trashed {
                return true;
            }
            depth += 1;
            if depth > 10_000 {
                break;
            }
            cur = self.nodes.get(&n.parent);
        }
        false
    }

    /// Visible (not pending, not in the bin) children of a folder.
    pub fn live_children(&self, drive: &str, parent: &str) -> Vec<&Node> {
        self.children
            .get(&parent_key(drive, parent))
            .map(|set| {
                set.iter()
                    .filter_map(|id| self.nodes.get(id))
                    .filter(|n| !n.pending && !n.trashed)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn link(&mut self, node: Node) {
        self.children
            .entry(parent_key(&node.drive_id, &node.parent))
            .or_default()
            .insert(node.file_id.clone());
        self.nodes.insert(node.file_id.clone(), node);
    }

    pub fn unlink(&mut self, id: &str) -> Option<Node> {
        let node = self.nodes.remove(id)?;
        if let Some(set) = self
            .children
            .get_mut(&parent_key(&node.drive_id, &node.parent))
        {
            set.remove(id);
        }
        Some(node)
    }

    pub fn reparent(&mut self, id: &str, new_parent: &str) {
        if let Some(mut node) = self.unlink(id) {
            node.parent = new_parent.to_string();
            self.link(node);
        }
    }

    pub fn new_node(drive: &str, parent: &str, name: &str, is_dir: bool) -> Node {
        let now = util::now_ms();
        Node {
            file_id: new_file_id(),
            drive_id: drive.to_string(),
            parent: parent.to_string(),
            name: name.to_string(),
            is_dir,
            size: 0,
            sha1: None,
            created_ms: now,
            updated_ms: now,
            trashed: false,
            trashed_ms: None,
            starred: false,
            local_created_at: None,
            local_modified_at: None,
            pending: false,
            streams: Vec::new(),
        }
    }

    pub fn insert_folder(&mut self, drive: &str, parent: &str, name: &str) -> String {
        let node = Self::new_node(drive, parent, name, true);
        let id = node.file_id.clone();
        self.link(node);
        self.changed(super::changes::Op::Create, &id);
        id
    }

    /// A completed file on an existing blob (takes a blob reference).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_file(
        &mut self,
        drive: &str,
        parent: &str,
        name: &str,
        size: u64,
        sha1: &str,
        local_created_at: Option<String>,
        local_modified_at: Option<String>,
    ) -> String {
        let mut node = Self::new_node(drive, parent, name, false);
        node.size = size;
        node.sha1 = Some(sha1.to_string());
        node.local_created_at = local_created_at;
        node.local_modified_at = local_modified_at;
        if let Some(b) = self.blobs.get_mut(sha1) {
            b.refs += 1;
        }
        let id = node.file_id.clone();
        self.link(node);
        self.changed(super::changes::Op::Create, &id);
        id
    }

    /// All ids in the subtree of `id` (itself first), pending ones included.
    pub fn subtree(&self, id: &str) -> Vec<String> {
        let mut out = vec![id.to_string()];
        let mut i = 0;
        while i < out.len() {
            if let Some(n) = self.nodes.get(&out[i]) {
                if n.is_dir {
                    if let Some(set) = self.children.get(&parent_key(&n.drive_id, &n.file_id)) {
                        out.extend(set.iter().cloned());
                    }
                }
            }
            i += 1;
        }
        out
    }

    pub fn path_of(&self, id: &str) -> String {
        let mut parts = Vec::new();
        let mut cur = self.nodes.get(id);
        while let Some(n) = cur {
            parts.push(n.name.clone());
            if parts.len() > 10_000 {
                break;
            }
            cur = self.nodes.get(&n.parent);
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    pub fn tree(&self) -> Vec<TreeEntry> {
        let mut out: Vec<TreeEntry> = self
            .nodes
            .values()
            .filter(|n| !n.pending)
            .map(|n| self.entry(n))
            .collect();
        out.sort_by(|a, b| {
            (&a.drive_id, &a.path, &a.file_id).cmp(&(&b.drive_id, &b.path, &b.file_id))
        });
        out
    }

    /// The entries at `path` (duplicates and trashed ones included), without building the
    /// whole tree: cheap enough to poll.
    pub fn entries_at(&self, path: &str) -> Vec<TreeEntry> {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.nodes
            .values()
            .filter(|n| !n.pending && n.name == name)
            .map(|n| self.entry(n))
            .filter(|e| e.path == path)
            .collect()
    }

    fn entry(&self, n: &Node) -> TreeEntry {
        TreeEntry {
            path: self.path_of(&n.file_id),
            file_id: n.file_id.clone(),
            parent_file_id: n.parent.clone(),
            name: n.name.clone(),
            is_dir: n.is_dir,
            size: n.size,
            sha1: n.sha1.clone(),
            trashed: n.trashed,
            drive_id: n.drive_id.clone(),
        }
    }

    /// Forget a task after it reported success twice; keeps the map small.
    pub fn new_task(&mut self) -> String {
        let id = util::rand_hex(32, false);
        self.tasks.insert(id.clone(), 0);
        id
    }
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
