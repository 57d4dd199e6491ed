//! `FaultyDrive`: wraps any `Drive` and injects failures and latency, for fs/read/write tests.
//!
//! Three knobs, changeable while in use: a probability that any call fails (with
//! `Error::Network`, the typical transient failure), scripted failures ("fail the next N
//! `upload_part` calls with this error"), and latency added before every call. Operation names
//! are the trait's method names (`"list_folder"`, `"download_range"`, `"upload_part"`, ...).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::drive::{
    CheckNameMode, CreatedFolder, DeltaPage, DownloadUrl, Drive, DriveInfo, NewFile, OpResult,
    PartUrl, RemoteItem, SearchPage, SearchQuery, SpaceInfo, TaskState, UploadSession,
    UploadedPart, VideoPlayInfo,
};
use crate::error::{Error, Result};

/// Makes the error a scripted failure returns (`Error` is not `Clone`).
pub type ErrorFactory = Arc<dyn Fn() -> Error + Send + Sync>;

/// The random part of the plan.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Probability in [0, 1] that a call fails with `Error::Network` before reaching the drive.
    pub failure_rate: f64,
    /// Slept before every call.
    pub latency: Duration,
    /// Seed of the failure draws, for reproducible tests (None = from entropy).
    pub seed: Option<u64>,
}

struct Scripted {
    remaining: u32,
    error: ErrorFactory,
}

struct State {
    plan: FaultPlan,
    rng: StdRng,
    scripted: HashMap<String, Vec<Scripted>>,
    calls: HashMap<String, u64>,
    injected: u64,
}

pub struct FaultyDrive<D: Drive> {
    inner: D,
    state: Mutex<State>,
}

impl<D: Drive> FaultyDrive<D> {
    pub fn new(inner: D) -> Self {
        Self::with_plan(inner, FaultPlan::default())
    }

    pub fn with_plan(inner: D, plan: FaultPlan) -> Self {
        let rng = match plan.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        FaultyDrive {
            inner,
            state: Mutex::new(State {
                plan,
                rng,
                scripted: HashMap::new(),
                calls: HashMap::new(),
                injected: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        let mut st = self.lock();
        if let Some(s) = plan.seed {
            st.rng = StdRng::seed_from_u64(s);
        }
        st.plan = plan;
    }

    pub fn set_failure_rate(&self, p: f64) {
        self.lock().plan.failure_rate = p;
    }

    pub fn set_latency(&self, d: Duration) {
        self.lock().plan.latency = d;
    }

    /// The next `n` calls of `op` fail with `error()` (queued after earlier scripts for `op`).
    pub fn fail_next(&self, op: &str, n: u32, error: impl Fn() -> Error + Send + Sync + 'static) {
        if n == 0 {
            return;
        }
        self.lock()
            .scripted
            .entry(op.to_string())
            .or_default()
            .push(Scripted {
                remaining: n,
                error: Arc::new(error),
            });
    }

    /// Drops every scripted failure and the random plan.
    pub fn clear(&self) {
        let mut st = self.lock();
        st.scripted.clear();
        st.plan.failure_rate = 0.0;
        st.plan.latency = Duration::ZERO;
    }

    /// Calls of `op` seen (including failed ones).
    pub fn call_count(&self, op: &str) -> u64 {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// Failures injected so far.
    pub fn injected_count(&self) -> u64 {
        self.lock().injected
    }

    /// Counts the call, then decides: `Err` to fail it, after the configured latency.
    async fn enter(&self, op: &str) -> Result<()> {
        let (latency, failure) = {
            let mut st = self.lock();
            *st.calls.entry(op.to_string()).or_default() += 1;
            let mut failure = None;
            if let Some(queue) = st.scripted.get_mut(op) {
                if let Some(first) = queue.first_mut() {
                    first.remaining -= 1;
                    let error = first.error.clone();
                    if first.remaining == 0 {
                        queue.remove(0);
                    }
                    failure = Some(error());
                }
            }
            if failure.is_none() {
                let p = st.plan.failure_rate.clamp(0.0, 1.0);
                if p > 0.0 && st.rng.gen_bool(p) {
                    failure = Some(Error::Network(format!("injected fault in {op}")));
                }
            }
            if failure.is_some() {
                st.injected += 1;
            }
            (st.plan.latency, failure)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl<D: Drive> Drive for FaultyDrive<D> {
    async fn drive_info(&self) -> Result<DriveInfo> {
        self.enter("drive_info").await?;
        self.inner.drive_info().await
    }
    async fn space_info(&self) -> Result<SpaceInfo> {
        self.enter("space_info").await?;
        self.inner.space_info().await
    }
    async fn list_folder(&self, parent_file_id: &str) -> Result<Vec<RemoteItem>> {
        self.enter("list_folder").await?;
        self.inner.list_folder(parent_file_id).await
    }
    async fn get(&self, file_id: &str) -> Result<RemoteItem> {
        self.enter("get").await?;
        self.inner.get(file_id).await
    }
    async fn get_by_path(&self, path: &str) -> Result<RemoteItem> {
        self.enter("get_by_path").await?;
        self.inner.get_by_path(path).await
    }
    async fn download_url(&self, file_id: &str) -> Result<DownloadUrl> {
        self.enter("download_url").await?;
        self.inner.download_url(file_id).await
    }
    async fn download_range(&self, url: &DownloadUrl, offset: u64, len: u64) -> Result<Bytes> {
        self.enter("download_range").await?;
        self.inner.download_range(url, offset, len).await
    }
    async fn create_folder(
        &self,
        parent_file_id: &str,
        name: &str,
        mode: CheckNameMode,
    ) -> Result<CreatedFolder> {
        self.enter("create_folder").await?;
        self.inner.create_folder(parent_file_id, name, mode).await
    }
    async fn create_file(&self, req: &NewFile) -> Result<UploadSession> {
        self.enter("create_file").await?;
        self.inner.create_file(req).await
    }
    async fn upload_urls(
        &self,
        file_id: &str,
        upload_id: &str,
        part_numbers: &[u32],
    ) -> Result<Vec<PartUrl>> {
        self.enter("upload_urls").await?;
        self.inner
            .upload_urls(file_id, upload_id, part_numbers)
            .await
    }
    async fn upload_part(&self, part: &PartUrl, body: Bytes) -> Result<Option<String>> {
        self.enter("upload_part").await?;
        self.inner.upload_part(part, body).await
    }
    async fn uploaded_parts(&self, file_id: &str, upload_id: &str) -> Result<Vec<UploadedPart>> {
        self.enter("uploaded_parts").await?;
        self.inner.uploaded_parts(file_id, upload_id).await
    }
    async fn complete_upload(&self, file_id: &str, upload_id: &str) -> Result<RemoteItem> {
        self.enter("complete_upload").await?;
        self.inner.complete_upload(file_id, upload_id).await
    }
    async fn rename(&self, file_id: &str, new_name: &str) -> Result<RemoteItem> {
        self.enter("rename").await?;
        self.inner.rename(file_id, new_name).await
    }
    async fn move_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        new_name: Option<&str>,
    ) -> Result<OpResult> {
        self.enter("move_item").await?;
        self.inner
            .move_item(file_id, to_parent_file_id, new_name)
            .await
    }
    async fn copy_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        auto_rename: bool,
    ) -> Result<OpResult> {
        self.enter("copy_item").await?;
        self.inner
            .copy_item(file_id, to_parent_file_id, auto_rename)
            .await
    }
    async fn trash(&self, file_id: &str) -> Result<OpResult> {
        self.enter("trash").await?;
        self.inner.trash(file_id).await
    }
    async fn delete(&self, file_id: &str) -> Result<OpResult> {
        self.enter("delete").await?;
        self.inner.delete(file_id).await
    }
    async fn task_state(&self, async_task_id: &str) -> Result<TaskState> {
        self.enter("task_state").await?;
        self.inner.task_state(async_task_id).await
    }
    async fn video_play_info(&self, file_id: &str) -> Result<VideoPlayInfo> {
        self.enter("video_play_info").await?;
        self.inner.video_play_info(file_id).await
    }
    async fn fetch_object(&self, url: &DownloadUrl, max_len: u64) -> Result<Bytes> {
        self.enter("fetch_object").await?;
        self.inner.fetch_object(url, max_len).await
    }
    async fn object_size(&self, url: &DownloadUrl) -> Result<u64> {
        self.enter("object_size").await?;
        self.inner.object_size(url).await
    }
    async fn stream_urls(&self, file_id: &str) -> Result<Vec<(String, DownloadUrl)>> {
        self.enter("stream_urls").await?;
        self.inner.stream_urls(file_id).await
    }
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        self.enter("search").await?;
        self.inner.search(query).await
    }
    async fn last_cursor(&self) -> Result<String> {
        self.enter("last_cursor").await?;
        self.inner.last_cursor().await
    }
    async fn list_delta(&self, cursor: &str) -> Result<DeltaPage> {
        self.enter("list_delta").await?;
        self.inner.list_delta(cursor).await
    }
}

/// Names the FUSE operations whose first call panics, comma-separated (`write,readdir`): a test
/// hook for the adapter's panic guard (tests/fuse_panic.rs). Unset in normal use.
pub const PANIC_ENV: &str = "ALIPANFS_FAULT_PANIC";

/// Panics if `op` is named in [`PANIC_ENV`] and has not panicked yet (each named op panics once).
/// The environment is read once; without the variable this is one atomic load.
pub fn panic_point(op: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    static ARMED: OnceLock<Vec<(String, AtomicBool)>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var(PANIC_ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| (s.to_string(), AtomicBool::new(true)))
            .collect()
    });
    for (name, on) in armed {
        if name == op && on.swap(false, Ordering::SeqCst) {
            panic!("fault injected by {PANIC_ENV}: {op} panics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::ROOT_ID;

    /// A drive that answers `space_info` and fails nothing.
    struct Ok_;

    #[async_trait]
    impl Drive for Ok_ {
        async fn drive_info(&self) -> Result<DriveInfo> {
            Err(Error::NotSupported("x".into()))
        }
        async fn space_info(&self) -> Result<SpaceInfo> {
            Ok(SpaceInfo {
                used_bytes: 1,
                total_bytes: 2,
            })
        }
        async fn list_folder(&self, _: &str) -> Result<Vec<RemoteItem>> {
            Ok(vec![])
        }
        async fn get(&self, id: &str) -> Result<RemoteItem> {
            Err(Error::NotFound(id.into()))
        }
        async fn get_by_path(&self, p: &str) -> Result<RemoteItem> {
            Err(Error::NotFound(p.into()))
        }
        async fn download_url(&self, _: &str) -> Result<DownloadUrl> {
            Err(Error::NotSupported("x".into()))
        }
        async fn download_range(&self, _: &DownloadUrl, _: u64, _: u64) -> Result<Bytes> {
            Ok(Bytes::new())
        }
        async fn create_folder(&self, _: &str, _: &str, _: CheckNameMode) -> Result<CreatedFolder> {
            Err(Error::NotSupported("x".into()))
        }
        async fn create_file(&self, _: &NewFile) -> Result<UploadSession> {
            Err(Error::NotSupported("x".into()))
        }
        async fn upload_urls(&self, _: &str, _: &str, _: &[u32]) -> Result<Vec<PartUrl>> {
            Ok(vec![])
        }
        async fn upload_part(&self, _: &PartUrl, _: Bytes) -> Result<Option<String>> {
            Ok(Some("etag".into()))
        }
        async fn uploaded_parts(&self, _: &str, _: &str) -> Result<Vec<UploadedPart>> {
            Ok(vec![])
        }
        async fn complete_upload(&self, id: &str, _: &str) -> Result<RemoteItem> {
            Err(Error::NotFound(id.into()))
        }
        async fn rename(&self, id: &str, _: &str) -> Result<RemoteItem> {
            Err(Error::NotFound(id.into()))
        }
        async fn move_item(&self, id: &str, _: &str, _: Option<&str>) -> Result<OpResult> {
            Err(Error::NotFound(id.into()))
        }
        async fn copy_item(&self, id: &str, _: &str, _: bool) -> Result<OpResult> {
            Err(Error::NotFound(id.into()))
        }
        async fn trash(&self, id: &str) -> Result<OpResult> {
            Err(Error::NotFound(id.into()))
        }
        async fn delete(&self, id: &str) -> Result<OpResult> {
            Err(Error::NotFound(id.into()))
        }
        async fn task_state(&self, _: &str) -> Result<TaskState> {
            Ok(TaskState::Succeed)
        }
        async fn video_play_info(&self, id: &str) -> Result<VideoPlayInfo> {
            Err(Error::NotFound(id.into()))
        }
    }

    #[tokio::test]
    async fn scripted_failures_hit_only_the_named_op_n_times() {
        let d = FaultyDrive::new(Ok_);
        d.fail_next("upload_part", 2, || Error::UrlExpired);
        let part = PartUrl {
            part_number: 1,
            upload_url: "u".into(),
            expires_at: None,
        };
        assert!(matches!(
            d.upload_part(&part, Bytes::new()).await,
            Err(Error::UrlExpired)
        ));
        assert!(d.list_folder(ROOT_ID).await.is_ok());
        assert!(matches!(
            d.upload_part(&part, Bytes::new()).await,
            Err(Error::UrlExpired)
        ));
        assert_eq!(
            d.upload_part(&part, Bytes::new()).await.unwrap().as_deref(),
            Some("etag")
        );
        assert_eq!(d.call_count("upload_part"), 3);
        assert_eq!(d.injected_count(), 2);
    }

    #[tokio::test]
    async fn failure_rate_is_roughly_honoured_and_reproducible() {
        let run = || async {
            let d = FaultyDrive::with_plan(
                Ok_,
                FaultPlan {
                    failure_rate: 0.3,
                    seed: Some(7),
                    ..Default::default()
                },
            );
            let mut fails = Vec::new();
            for _ in 0..1000 {
                fails.push(d.space_info().await.is_err());
            }
            fails
        };
        let a = run().await;
        let n = a.iter().filter(|f| **f).count();
        assert!((200..400).contains(&n), "{n}");
        assert_eq!(a, run().await);
    }

    #[tokio::test]
    async fn latency_is_added_and_clear_resets() {
        let d = FaultyDrive::new(Ok_);
        d.set_latency(Duration::from_millis(100));
        d.set_failure_rate(1.0);
        let t0 = tokio::time::Instant::now();
        assert!(matches!(d.space_info().await, Err(Error::Network(_))));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        d.clear();
        assert!(d.space_info().await.is_ok());
    }
}
