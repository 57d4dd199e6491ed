//! TEMPORARY stub of the read path so the fs core compiles; replaced by the real module.
use crate::drive::Drive;
use crate::error::Result;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub initial_window: u64,
    pub max_read_ahead: u64,
    pub memory_limit: u64,
    pub max_concurrent_downloads: usize,
    pub request_size: u64,
    pub url_renew_margin: Duration,
}
impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            initial_window: 1 << 20,
            max_read_ahead: 64 << 20,
            memory_limit: 256 << 20,
            max_concurrent_downloads: 3,
            request_size: 8 << 20,
            url_renew_margin: Duration::from_secs(60),
        }
    }
}
pub struct Reader {
    drive: Arc<dyn Drive>,
}
impl Reader {
    pub fn new(drive: Arc<dyn Drive>, _cfg: ReadConfig) -> Arc<Reader> {
        Arc::new(Reader { drive })
    }
    pub fn open(self: &Arc<Self>, file_id: &str, size: u64) -> ReadHandle {
        ReadHandle { reader: self.clone(), file_id: file_id.to_string(), size }
    }
    pub fn forget_file(&self, _file_id: &str) {}
    pub fn memory_in_use(&self) -> u64 {
        0
    }
}
pub struct ReadHandle {
    reader: Arc<Reader>,
    file_id: String,
    size: u64,
}
impl ReadHandle {
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes> {
        if offset >= self.size {
            return Ok(Bytes::new());
        }
        let len = (len as u64).min(self.size - offset);
        let url = self.reader.drive.download_url(&self.file_id).await?;
        self.reader.drive.download_range(&url, offset, len).await
    }
}
