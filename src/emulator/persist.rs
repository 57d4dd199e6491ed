//! Opt-in persistence (`EmulatorConfig::persist`, on for `alipanfs emulator --data DIR`): the whole
//! drive state (tree, trash, quota, tokens, unfinished uploads, URL and token keys) as one JSON
//! snapshot `DIR/state.json`, so an emulator started again on DIR serves the same drive.
//!
//! A snapshot is written (temp file, fsync, rename, fsync of the folder) before any request that
//! changed the state answers, so a client never sees a success the disk does not hold; requests
//! arriving together share one write. An emulator killed at any moment therefore comes back with
//! the older or the newer state, never half of one. Files the last snapshot may still need (a
//! deleted item's blob, a completed upload's part file) are unlinked only after the next snapshot.
//! File bodies already live in DIR (`blobs/`, `uploads/`); on load, files no state refers to are
//! removed and each unfinished upload is cut back to its committed parts and re-hashed.

use super::state::{Blob, Node, PartRec, Shared, State, Tokens, Upload};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const STATE_FILE: &str = "state.json";
const VERSION: u32 = 1;

/// The writer of `state.json`.
pub struct Persist {
    file: PathBuf,
    /// Bumped after every change that must reach the disk.
    changed: AtomicU64,
    /// Serialises writers; holds the `changed` value the file on disk reflects.
    saved: Mutex<u64>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct Snapshot {
    version: u32,
    user_id: String,
    user_name: String,
    drives: Vec<(String, String)>,
    quota_bytes: Option<u64>,
    nodes: Vec<Node>,
    /// Videos' transcodes by file_id; their blobs are referenced like items'.
    videos: BTreeMap<String, super::transcode::Video>,
    /// sha1 -> (size, pre_hash); references are recounted from `nodes` and `videos` on load.
    blobs: BTreeMap<String, (u64, String)>,
    uploads: BTreeMap<String, UploadRec>,
    tokens: Tokens,
    tasks: HashMap<String, u32>,
    /// Hex keys, so URLs and tokens handed out before a restart stay valid after it.
    jwt_key: String,
    url_key: String,
}

/// An upload session without its running hash (rebuilt from the part file on load).
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct UploadRec {
    file_id: String,
    drive_id: String,
    parts: Vec<PartRec>,
    committed_len: u64,
    done: bool,
    rapid: bool,
    declared_size: Option<u64>,
    part_sizes: BTreeMap<u32, u64>,
    created_ms: i64,
}

impl Persist {
    pub fn new(data_dir: &Path) -> Persist {
        Persist {
            file: data_dir.join(STATE_FILE),
            changed: AtomicU64::new(0),
            saved: Mutex::new(0),
        }
    }
}

fn key_hex(hex_key: &str) -> Option<[u8; 32]> {
    hex::decode(hex_key).ok()?.try_into().ok()
}

fn snapshot(st: &State, url_key: &[u8; 32]) -> Snapshot {
    Snapshot {
        version: VERSION,
        user_id: st.user_id.clone(),
        user_name: st.user_name.clone(),
        drives: st.drives.clone(),
        quota_bytes: Some(st.knobs.quota_bytes),
        nodes: st.nodes.values().cloned().collect(),
        videos: st
            .videos
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        blobs: st
            .blobs
            .iter()
            .map(|(k, b)| (k.clone(), (b.size, b.pre_hash.clone())))
            .collect(),
        uploads: st
            .uploads
            .iter()
            .map(|(id, u)| {
                let rec = UploadRec {
                    file_id: u.file_id.clone(),
                    drive_id: u.drive_id.clone(),
                    parts: u.parts.clone(),
                    committed_len: u.committed_len,
                    done: u.done,
                    rapid: u.rapid,
                    declared_size: u.declared_size,
                    part_sizes: u.part_sizes.clone(),
                    created_ms: u.created_ms,
                };
                (id.clone(), rec)
            })
            .collect(),
        tokens: st.tokens.clone(),
        tasks: st.tasks.clone(),
        jwt_key: hex::encode(st.jwt_key),
        url_key: hex::encode(url_key),
    }
}

/// Writes `bytes` to `file` so that a crash leaves either the old or the new content.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Shared {
    /// Records a change of the state (no-op without persistence).
    pub fn touch(&self) {
        if let Some(p) = &self.persist {
            p.changed.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Blocks until a snapshot holding every change made so far is on disk.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(p) = &self.persist else {
            return Ok(());
        };
        let mut saved = p.saved.lock().unwrap_or_else(|e| e.into_inner());
        if *saved >= p.changed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (bytes, generation, blobs, files) = {
            let mut st = self.lock();
            let generation = p.changed.load(Ordering::SeqCst);
            let bytes = serde_json::to_vec(&snapshot(&st, &self.url_key))?;
            (
                bytes,
                generation,
                std::mem::take(&mut st.doomed_blobs),
                std::mem::take(&mut st.doomed_files),
            )
        };
        if let Err(e) = write_atomically(&p.file, &bytes) {
            // The old snapshot may still need these files.
            let mut st = self.lock();
            st.doomed_blobs.extend(blobs);
            st.doomed_files.extend(files);
            return Err(e);
        }
        *saved = generation;
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        if !blobs.is_empty() {
            // A blob adopted again since it was released must stay.
            let st = self.lock();
            for sha in blobs.iter().filter(|s| !st.blobs.contains_key(*s)) {
                let _ = std::fs::remove_file(self.blob_path(sha));
            }
        }
        Ok(())
    }

    /// `touch` then `save` off the async runtime; `Err` carries a message for a 500 answer.
    pub async fn commit(self: &std::sync::Arc<Self>) -> std::result::Result<(), String> {
        if self.persist.is_none() {
            return Ok(());
        }
        self.touch();
        let sh = self.clone();
        match tokio::task::spawn_blocking(move || sh.save()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("saving the drive state failed: {e}")),
            Err(e) => Err(format!("saving the drive state failed: {e}")),
        }
    }

    /// `touch` + `save` for synchronous callers (seeding, control endpoints): a failure is
    /// logged, as nobody waits for an answer.
    pub fn save_now(&self) {
        self.touch();
        if let Err(e) = self.save() {
            tracing::warn!("emulator: saving the drive state failed: {e}");
        }
    }

    /// A file to unlink: now, or after the next snapshot when the last one may still need it.
    pub fn discard_file(&self, st: &mut State, path: PathBuf) {
        if self.persist.is_some() {
            st.doomed_files.push(path);
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// A blob nothing refers to any more (see `discard_file`).
    pub fn discard_blob(&self, st: &mut State, sha1: &str) {
        if self.persist.is_some() {
            st.doomed_blobs.push(sha1.to_string());
        } else {
            let _ = std::fs::remove_file(self.blob_path(sha1));
        }
    }
}

/// What `load` found besides the state itself.
pub struct Loaded {
    /// The key that signed the data URLs handed out before the restart.
    pub url_key: Option<[u8; 32]>,
}

/// Loads `data_dir/state.json` into `st` (a fresh state); `None` when there is no state file yet.
pub fn load(st: &mut State, data_dir: &Path) -> Result<Option<Loaded>> {
    let file = data_dir.join(STATE_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Config(format!(
            "the emulator state {} is unreadable ({e}); move it away to start an empty drive",
            file.display()
        ))
    })?;
    if !snap.user_id.is_empty() {
        st.user_id = snap.user_id;
    }
    if !snap.user_name.is_empty() {
        st.user_name = snap.user_name;
    }
    if !snap.drives.is_empty() {
        st.drives = snap.drives;
    }
    if let Some(q) = snap.quota_bytes {
        st.knobs.quota_bytes = q;
    }
    if let Some(k) = key_hex(&snap.jwt_key) {
        st.jwt_key = k;
    }
    st.tokens = snap.tokens;
    st.tasks = snap.tasks;
    for n in snap.nodes {
        st.link(n);
    }
    for (sha, (size, pre_hash)) in snap.blobs {
        st.blobs.insert(
            sha,
            Blob {
                size,
                pre_hash,
                refs: 0,
            },
        );
    }
    st.videos = snap.videos.into_iter().collect();
    let refs: Vec<String> = st
        .nodes
        .values()
        .filter(|n| !n.is_dir && !n.pending)
        .flat_map(|n| n.blobs())
        .chain(st.videos.values().flat_map(|v| v.blobs()))
        .map(str::to_string)
        .collect();
    for h in refs {
        if let Some(b) = st.blobs.get_mut(&h) {
            b.refs += 1;
        }
    }
    for (id, rec) in snap.uploads {
        // A session whose part file lost committed bytes cannot go on: it is left out, and its
        // pending item with it (below).
        if let Some(u) = restore_upload(&data_dir.join("uploads").join(&id), rec) {
            st.uploads.insert(id, u);
        }
    }
    // Pending items whose session is gone cannot be completed: drop them.
    let live: std::collections::HashSet<&str> = st
        .uploads
        .values()
        .filter(|u| !u.done)
        .map(|u| u.file_id.as_str())
        .collect();
    let orphans: Vec<String> = st
        .nodes
        .values()
        .filter(|n| n.pending && !live.contains(n.file_id.as_str()))
        .map(|n| n.file_id.clone())
        .collect();
    for id in orphans {
        st.unlink(&id);
    }
    remove_unreferenced(data_dir, st);
    Ok(Some(Loaded {
        url_key: key_hex(&snap.url_key),
    }))
}

/// The session of `rec`, its part file cut back to the committed parts and re-hashed; `None`
/// when the file lost committed bytes.
fn restore_upload(path: &Path, rec: UploadRec) -> Option<Upload> {
    let mut hasher = Sha1::new();
    if !rec.done {
        match std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(path)
        {
            Ok(f) => {
                if f.metadata().ok()?.len() < rec.committed_len {
                    return None;
                }
                // Bytes of a part that was still arriving when the emulator stopped.
                f.set_len(rec.committed_len).ok()?;
                let mut r = std::io::BufReader::with_capacity(1 << 20, f);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = r.read(&mut buf).ok()?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
            // No part arrived yet.
            Err(_) if rec.committed_len == 0 => {}
            Err(_) => return None,
        }
    }
    Some(Upload {
        file_id: rec.file_id,
        drive_id: rec.drive_id,
        parts: rec.parts,
        committed_len: rec.committed_len,
        hasher,
        in_progress: None,
        done: rec.done,
        rapid: rec.rapid,
        declared_size: rec.declared_size,
        part_sizes: rec.part_sizes,
        created_ms: rec.created_ms,
    })
}

/// Files left by a stop between a change and its snapshot: blobs and part files no state names.
fn remove_unreferenced(data_dir: &Path, st: &State) {
    let sweep = |dir: &str, keep: &dyn Fn(&str) -> bool| {
        if let Ok(rd) = std::fs::read_dir(data_dir.join(dir)) {
            for e in rd.flatten() {
                let name = e.file_name();
                if !keep(&name.to_string_lossy()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    };
    sweep("blobs", &|name| st.blobs.contains_key(name));
    sweep("uploads", &|name| {
        st.uploads.get(name).is_some_and(|u| !u.done)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::util;
    use crate::emulator::EmulatorConfig;
    use std::time::Duration;

    fn shared(dir: &Path) -> Shared {
        let cfg = EmulatorConfig {
            data_dir: dir.to_path_buf(),
            persist: true,
            ..Default::default()
        };
        Shared::new(cfg, ([127, 0, 0, 1], 1).into()).unwrap()
    }

    #[test]
    fn a_saved_drive_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (user, token, folder, file) = {
            let sh = shared(dir.path());
            let folder = sh.seed_folder("root", "docs");
            let file = sh.seed_bytes(&folder, "a.txt", b"hello");
            sh.touch();
            sh.save().unwrap();
            let st = sh.lock();
            (
                st.user_id.clone(),
                st.tokens.current_refresh.clone(),
                folder,
                file,
            )
        };
        let sh = shared(dir.path());
        let st = sh.lock();
        assert_eq!(st.user_id, user);
        assert_eq!(st.tokens.current_refresh, token);
        assert_eq!(st.path_of(&file), "/docs/a.txt");
        assert_eq!(st.nodes[&folder].name, "docs");
        let sha = st.nodes[&file].sha1.clone().unwrap();
        assert_eq!(st.blobs[&sha].refs, 1);
        assert!(sh.blob_path(&sha).exists());
    }

    /// Also the cost measurement quoted in the README (`--nocapture` prints it).
    #[test]
    fn ten_thousand_items_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        let blob = sh.seed_bytes("root", "seed.txt", b"shared content");
        {
            let mut st = sh.lock();
            let sha = st.nodes[&blob].sha1.clone().unwrap();
            for d in 0..100 {
                let folder = st.insert_folder("9600002", "root", &format!("dir{d:03}"));
                for f in 0..99 {
                    let name = format!("file{f:03}.txt");
                    st.insert_file("9600002", &folder, &name, 14, &sha, None, None);
                }
            }
        }
        let t = std::time::Instant::now();
        sh.touch();
        sh.save().unwrap();
        let saved = t.elapsed();
        let bytes = std::fs::metadata(dir.path().join(STATE_FILE))
            .unwrap()
            .len();
        let before = sh.lock().tree();
        drop(sh);
        let t = std::time::Instant::now();
        let sh = shared(dir.path());
        let loaded = t.elapsed();
        assert_eq!(sh.lock().tree(), before);
        assert_eq!(before.len(), 10_001);
        let sha = sh.lock().nodes[&blob].sha1.clone().unwrap();
        assert_eq!(sh.lock().blobs[&sha].refs, 9_901);
        eprintln!("10,001 items: snapshot {bytes} bytes, saved in {saved:?}, loaded in {loaded:?}");
    }

    #[test]
    fn a_deleted_blob_outlives_the_snapshot_that_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        let id = sh.seed_bytes("root", "a.txt", b"content");
        sh.touch();
        sh.save().unwrap();
        let sha = sh.lock().nodes[&id].sha1.clone().unwrap();
        {
            let mut st = sh.lock();
            st.unlink(&id);
            sh.release_blob(&mut st, &sha);
        }
        // Not saved yet: the snapshot on disk still names the blob, so it stays.
        assert!(sh.blob_path(&sha).exists());
        sh.touch();
        sh.save().unwrap();
        assert!(!sh.blob_path(&sha).exists());
    }

    #[test]
    fn torn_parts_are_cut_back_and_sessions_expire() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        let uid = "0123456789ABCDEF0123456789ABCDEF".to_string();
        {
            let mut st = sh.lock();
            st.knobs.upload_ttl = Duration::from_secs(3600);
            let mut node = State::new_node("9600002", "root", "big.bin", false);
            node.pending = true;
            let fid = node.file_id.clone();
            st.link(node);
            std::fs::write(sh.upload_path(&uid), b"part one plus a torn tail").unwrap();
            st.uploads.insert(
                uid.clone(),
                Upload {
                    file_id: fid,
                    drive_id: "9600002".into(),
                    parts: vec![PartRec {
                        number: 1,
                        size: 8,
                        etag: "\"E\"".into(),
                    }],
                    committed_len: 8,
                    hasher: Sha1::new(),
                    in_progress: None,
                    done: false,
                    rapid: false,
                    declared_size: None,
                    part_sizes: BTreeMap::new(),
                    created_ms: util::now_ms() - 7_200_000,
                },
            );
        }
        sh.touch();
        sh.save().unwrap();
        drop(sh);
        // Reloaded: the torn tail is cut off and the hash covers the committed part only.
        let sh = shared(dir.path());
        {
            let st = sh.lock();
            let u = &st.uploads[&uid];
            assert_eq!(std::fs::read(sh.upload_path(&uid)).unwrap(), b"part one");
            assert_eq!(u.hasher.clone().finalize(), Sha1::digest(b"part one"));
        }
        let mut st = sh.lock();
        st.knobs.upload_ttl = Duration::from_secs(3600);
        crate::emulator::upload::expire(&sh, &mut st);
        assert!(st.uploads.is_empty());
        assert!(st.nodes.is_empty());
        drop(st);
        sh.touch();
        sh.save().unwrap();
        assert!(!sh.upload_path(&uid).exists());
    }
}
