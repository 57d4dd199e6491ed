//! The emulator's state: drives, the item tree, the content-addressed blob store, upload
//! sessions, tokens, counters. One mutex guards all of it (see `Shared::lock`). The item
//! tree's operations are in `tree`, seeding in `seed`.

use super::util;
use super::{EmulatorConfig, Faults};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

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
}

const REFRESH_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

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

    /// Forget a task after it reported success twice; keeps the map small.
    pub fn new_task(&mut self) -> String {
        let id = util::rand_hex(32, false);
        self.tasks.insert(id.clone(), 0);
        id
    }
}
