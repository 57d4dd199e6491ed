//! An in-memory `Drive` for the read path's tests: pattern bytes, call counters, URL expiry,
//! a server-side concurrency cap and injected failures.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::drive::*;
use crate::error::{Error, Result};

/// The byte at `i` of file `id`.
pub fn byte(id: &str, i: u64) -> u8 {
    let seed = id
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    (i.wrapping_mul(131) ^ (i >> 11) ^ seed) as u8
}

pub fn expected(id: &str, offset: u64, len: u64, size: u64) -> Vec<u8> {
    let end = offset.saturating_add(len).min(size);
    (offset.min(end)..end).map(|i| byte(id, i)).collect()
}

#[derive(Debug, Clone, Copy)]
pub enum Inject {
    Network,
    Busy,
    Expired,
    NotFound,
}

pub struct TestDrive {
    files: Mutex<HashMap<String, u64>>,
    pub url_ttl: Duration,
    /// Server-side cap on simultaneous downloads; above it `ExceedMaxConcurrency`.
    pub cap: usize,
    pub latency: Duration,
    /// Extra time per MiB of a request: the server's per-connection bandwidth cap.
    pub per_mib: Duration,
    generation: AtomicU64,
    inject: Mutex<VecDeque<Inject>>,
    pub url_calls: AtomicUsize,
    pub range_calls: AtomicUsize,
    pub bytes_served: AtomicU64,
    pub expired_errors: AtomicUsize,
    pub busy_errors: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub requests: Mutex<Vec<(u64, u64)>>,
}

struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl TestDrive {
    pub fn new(files: &[(&str, u64)]) -> Self {
        TestDrive {
            files: Mutex::new(files.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
            url_ttl: Duration::from_secs(900),
            cap: 3,
            latency: Duration::ZERO,
            per_mib: Duration::ZERO,
            generation: AtomicU64::new(0),
            inject: Mutex::new(VecDeque::new()),
            url_calls: AtomicUsize::new(0),
            range_calls: AtomicUsize::new(0),
            bytes_served: AtomicU64::new(0),
            expired_errors: AtomicUsize::new(0),
            busy_errors: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Every URL handed out so far stops working.
    pub fn expire_all(&self) {
        self.generation.fetch_add(1, SeqCst);
    }

    /// The next download_range calls fail with these, in order.
    pub fn inject(&self, errs: &[Inject]) {
        self.inject.lock().unwrap().extend(errs.iter().copied());
    }

    fn nope<T>() -> Result<T> {
        Err(Error::NotSupported("test drive".into()))
    }
}

#[async_trait]
impl Drive for TestDrive {
    async fn drive_info(&self) -> Result<DriveInfo> {
        Self::nope()
    }
    async fn space_info(&self) -> Result<SpaceInfo> {
        Self::nope()
    }
    async fn list_folder(&self, _: &str) -> Result<Vec<RemoteItem>> {
        Self::nope()
    }
    async fn get(&self, _: &str) -> Result<RemoteItem> {
        Self::nope()
    }
    async fn get_by_path(&self, _: &str) -> Result<RemoteItem> {
        Self::nope()
    }

    async fn download_url(&self, file_id: &str) -> Result<DownloadUrl> {
        self.url_calls.fetch_add(1, SeqCst);
        if !self.files.lock().unwrap().contains_key(file_id) {
            return Err(Error::NotFound(file_id.into()));
        }
        let g = self.generation.load(SeqCst);
        Ok(DownloadUrl {
            url: format!("http://test/{file_id}?gen={g}&x-oss-signature=secret"),
            expires_at: SystemTime::now() + self.url_ttl,
        })
    }

    async fn download_range(&self, url: &DownloadUrl, offset: u64, len: u64) -> Result<Bytes> {
        self.range_calls.fetch_add(1, SeqCst);
        let n = self.in_flight.fetch_add(1, SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        if n > self.cap {
            self.busy_errors.fetch_add(1, SeqCst);
            return Err(Error::ExceedMaxConcurrency);
        }
        self.max_in_flight.fetch_max(n, SeqCst);
        let (path, query) = url.url.split_once('?').ok_or(Error::UrlExpired)?;
        let gen: u64 = query
            .strip_prefix("gen=")
            .and_then(|q| q.split('&').next())
            .and_then(|g| g.parse().ok())
            .ok_or(Error::UrlExpired)?;
        if gen < self.generation.load(SeqCst) || SystemTime::now() >= url.expires_at {
            self.expired_errors.fetch_add(1, SeqCst);
            return Err(Error::UrlExpired);
        }
        let injected = self.inject.lock().unwrap().pop_front();
        match injected {
            Some(Inject::Network) => return Err(Error::Network("injected reset".into())),
            Some(Inject::Busy) => return Err(Error::ExceedMaxConcurrency),
            Some(Inject::Expired) => return Err(Error::UrlExpired),
            Some(Inject::NotFound) => return Err(Error::NotFound("injected".into())),
            None => {}
        }
        let id = path.trim_start_matches("http://test/");
        let size = *self
            .files
            .lock()
            .unwrap()
            .get(id)
            .ok_or_else(|| Error::NotFound(id.into()))?;
        let transfer = self.per_mib.mul_f64(len as f64 / (1024.0 * 1024.0));
        if !(self.latency + transfer).is_zero() {
            tokio::time::sleep(self.latency + transfer).await;
        } else {
            tokio::task::yield_now().await;
        }
        self.requests.lock().unwrap().push((offset, len));
        let data = expected(id, offset, len, size);
        self.bytes_served.fetch_add(data.len() as u64, SeqCst);
        Ok(Bytes::from(data))
    }

    async fn create_folder(&self, _: &str, _: &str, _: CheckNameMode) -> Result<CreatedFolder> {
        Self::nope()
    }
    async fn create_file(&self, _: &NewFile) -> Result<UploadSession> {
        Self::nope()
    }
    async fn upload_urls(&self, _: &str, _: &str, _: &[u32]) -> Result<Vec<PartUrl>> {
        Self::nope()
    }
    async fn upload_part(&self, _: &PartUrl, _: Bytes) -> Result<Option<String>> {
        Self::nope()
    }
    async fn uploaded_parts(&self, _: &str, _: &str) -> Result<Vec<UploadedPart>> {
        Self::nope()
    }
    async fn complete_upload(&self, _: &str, _: &str) -> Result<RemoteItem> {
        Self::nope()
    }
    async fn rename(&self, _: &str, _: &str) -> Result<RemoteItem> {
        Self::nope()
    }
    async fn move_item(&self, _: &str, _: &str, _: Option<&str>) -> Result<OpResult> {
        Self::nope()
    }
    async fn copy_item(&self, _: &str, _: &str, _: bool) -> Result<OpResult> {
        Self::nope()
    }
    async fn trash(&self, _: &str) -> Result<OpResult> {
        Self::nope()
    }
    async fn delete(&self, _: &str) -> Result<OpResult> {
        Self::nope()
    }
    async fn task_state(&self, _: &str) -> Result<TaskState> {
        Self::nope()
    }
    async fn video_play_info(&self, _: &str) -> Result<VideoPlayInfo> {
        Self::nope()
    }
}
