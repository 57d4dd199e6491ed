//! TEMPORARY stub of the write path so the fs core compiles; replaced by the real module.
use crate::drive::{Drive, RemoteItem};
use crate::error::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Staging {
    dir: PathBuf,
}
pub struct StagedFile {
    pub path: PathBuf,
    pub file: std::fs::File,
}
impl Staging {
    pub fn new(dir: PathBuf) -> Result<Staging> {
        std::fs::create_dir_all(&dir)?;
        Ok(Staging { dir })
    }
    pub fn create(&self) -> Result<StagedFile> {
        let (file, path) = tempfile::NamedTempFile::new_in(&self.dir)?.keep().map_err(|e| e.error)?;
        Ok(StagedFile { path, file })
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
#[derive(Debug, Clone, Default)]
pub struct UploadConfig {
    pub part_size: Option<u64>,
    pub pre_hash_min_size: u64,
    pub rapid_upload: bool,
    pub delete_permanently: bool,
}
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub parent_file_id: String,
    pub name: String,
    pub mtime: Option<SystemTime>,
    pub replaces: Option<String>,
}
#[derive(Debug, Clone)]
pub struct UploadEvent {
    pub key: u64,
    pub staged: PathBuf,
    pub outcome: std::result::Result<RemoteItem, String>,
}
pub struct UploadQueue {
    tx: tokio::sync::broadcast::Sender<UploadEvent>,
    _drive: Arc<dyn Drive>,
}
impl UploadQueue {
    pub fn new(drive: Arc<dyn Drive>, _cfg: UploadConfig) -> Arc<UploadQueue> {
        Arc::new(UploadQueue { tx: tokio::sync::broadcast::channel(64).0, _drive: drive })
    }
    pub fn submit(&self, _key: u64, _target: UploadTarget, _staged: PathBuf) {}
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<UploadEvent> {
        self.tx.subscribe()
    }
    pub fn pending(&self) -> usize {
        0
    }
    pub fn is_pending(&self, _key: u64) -> bool {
        false
    }
    pub async fn drain(&self, _timeout: Duration) -> usize {
        0
    }
    pub fn set_target(&self, _key: u64, _f: impl FnOnce(&mut UploadTarget)) {}
    pub fn cancel(&self, _key: u64) {}
}
