//! `Client`: the Open API behind the `Drive` trait.
//!
//! The file-tree endpoints are in `files`, the upload session endpoints in `upload`; the
//! `Drive` impl here delegates to them.

mod files;
mod upload;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::OnceCell;

use super::auth::{Auth, TokenEndpoint};
use super::bufpool::BufferPool;
use super::bwlimit::BwLimits;
use super::config::ClientConfig;
use super::data;
use super::http::{Api, Replay};
use super::limiter::Class;
use super::received::Received;
use super::token::TokenStatus;
use super::wire::{
    DownloadUrlResp, DriveInfoResp, SpaceInfoResp, SubtitleTask, TaskResp, VideoResp, VideoTask,
};
use crate::drive::{
    CheckNameMode, CreatedFolder, DeltaPage, DownloadUrl, Drive, DriveChoice, DriveInfo, NewFile,
    OpResult, PartUrl, RemoteItem, SearchPage, SearchQuery, SpaceInfo, TaskState, UploadSession,
    UploadedPart, VideoPlayInfo,
};
use crate::error::{Error, Result};

/// Download URL lifetime assumed when neither `x-oss-expires` nor `expiration` says.
const FALLBACK_URL_TTL: Duration = Duration::from_secs(900);
/// Guard against a server that never ends paging.
const MAX_PAGES: usize = 100_000;

/// Idle download buffers kept for reuse (four 8 MiB read-ahead pieces).
const IDLE_BUFFERS: usize = 32 << 20;

pub struct Client {
    /// Shared by the per-drive views of `on_drive` (one sign-in, one set of rate limits).
    api: Arc<Api>,
    cfg: ClientConfig,
    info: OnceCell<DriveInfo>,
    /// Download bodies' buffers, reused (read-ahead fetches one multi-MiB range after another).
    buffers: Arc<BufferPool>,
    /// The bandwidth limits (changed live by `alipanfs set`).
    bandwidth: Arc<BwLimits>,
    received: Received,
}

impl Client {
    /// Builds the client and reads the token store; no network.
    pub fn new(cfg: ClientConfig) -> Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.connect_timeout)
            // Data transfers may take long: bound the silence, not the total.
            .read_timeout(cfg.request_timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let api_url = cfg.api_url.trim_end_matches('/').to_string();
        let endpoint = match cfg.app_credentials() {
            Some((client_id, client_secret)) => TokenEndpoint {
                url: format!("{api_url}/oauth/access_token"),
                client_id,
                client_secret,
            },
            None => TokenEndpoint {
                url: cfg.token_url.clone(),
                client_id: String::new(),
                client_secret: String::new(),
            },
        };
        let auth = Auth::new(
            http.clone(),
            endpoint,
            cfg.retry,
            cfg.request_timeout,
            cfg.token_store.clone(),
            cfg.refresh_token.clone(),
        )?;
        let api = Api::new(
            http,
            api_url,
            auth,
            cfg.retry,
            cfg.request_timeout,
            cfg.limits,
        );
        Ok(Client {
            api: Arc::new(api),
            info: OnceCell::new(),
            buffers: BufferPool::new(IDLE_BUFFERS),
            bandwidth: BwLimits::new(cfg.bwlimit_download, cfg.bwlimit_upload),
            received: Received::default(),
            cfg,
        })
    }

    /// `getDriveInfo`, and picks the drive to use (the requested one, else the default).
    /// File operations call it lazily if it has not been called.
    pub async fn init(&self) -> Result<DriveInfo> {
        self.info
            .get_or_try_init(|| self.fetch_drive_info())
            .await
            .cloned()
    }

    /// A view of the same account on drive `drive_id`: same sign-in, rate limits and counters
    /// (`--drive all` builds one per drive). Call after `init`.
    pub fn on_drive(&self, drive_id: &str) -> Result<Client> {
        let info = self
            .info
            .get()
            .ok_or_else(|| Error::Config("on_drive before sign-in".into()))?;
        let view = Client {
            api: self.api.clone(),
            cfg: self.cfg.clone(),
            info: OnceCell::new_with(Some(DriveInfo {
                drive_id: drive_id.to_string(),
                ..info.clone()
            })),
            buffers: self.buffers.clone(),
            // One byte bucket each way for the account, whichever drive the bytes are for.
            bandwidth: self.bandwidth.clone(),
            // Keyed by this view's file ids, not the qualified ones `status` asks about: bytes
            // received per open file are not shown under `--drive all`.
            received: Received::default(),
        };
        Ok(view)
    }

    pub fn drive_id(&self) -> Option<String> {
        self.info.get().map(|i| i.drive_id.clone())
    }

    /// The signed-in user's id (once `init` has run).
    pub fn user_id(&self) -> Option<String> {
        self.info.get().map(|i| i.user_id.clone())
    }

    pub fn token_store_path(&self) -> &Path {
        self.api.auth.store_path()
    }

    /// The bandwidth limits in force, shared by every transfer (and changed by `alipanfs set`).
    pub fn bandwidth(&self) -> &Arc<BwLimits> {
        &self.bandwidth
    }

    /// Bytes received for `file_id` since it was opened (see `received`).
    pub fn received_bytes(&self, file_id: &str) -> u64 {
        self.received.of(file_id)
    }

    /// Forgets the received counts of files not open.
    pub fn keep_received(&self, open: &std::collections::HashSet<&str>) {
        self.received.keep_only(open)
    }

    pub fn token_status(&self) -> TokenStatus {
        self.api.auth.status()
    }

    /// API call counters (see `stats`).
    pub fn api_stats(&self) -> &super::ApiStats {
        &self.api.stats
    }

    pub fn refresh_count(&self) -> u64 {
        self.api.auth.refresh_count()
    }

    pub async fn access_token(&self) -> Result<String> {
        Ok(self.api.auth.access_token().await?.0)
    }

    async fn drive(&self) -> Result<String> {
        Ok(self.init().await?.drive_id)
    }

    async fn fetch_drive_info(&self) -> Result<DriveInfo> {
        let r: DriveInfoResp = self
            .api
            .call("user/getDriveInfo", Class::Other, Replay::Always, |_| {
                Ok(json!({}))
            })
            .await?;
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let default_drive_id = nonempty(r.default_drive_id)
            .ok_or_else(|| Error::BadResponse("getDriveInfo gave no default_drive_id".into()))?;
        let resource = nonempty(r.resource_drive_id);
        let backup = nonempty(r.backup_drive_id);
        let wanted = match self.cfg.drive {
            // `all`: this client stays on the default drive; `on_drive` makes the others.
            DriveChoice::Default | DriveChoice::All => None,
            DriveChoice::Resource => resource.clone(),
            DriveChoice::Backup => backup.clone(),
        };
        if wanted.is_none() && !matches!(self.cfg.drive, DriveChoice::Default | DriveChoice::All) {
            tracing::warn!(
                "the {:?} drive is not granted to this app; using the default drive",
                self.cfg.drive
            );
        }
        Ok(DriveInfo {
            user_id: r.user_id.unwrap_or_default(),
            user_name: nonempty(r.name).or(r.nick_name).unwrap_or_default(),
            drive_id: wanted.unwrap_or_else(|| default_drive_id.clone()),
            default_drive_id,
            resource_drive_id: resource,
            backup_drive_id: backup,
        })
    }

    pub(super) async fn call_drive<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        class: Class,
        replay: Replay,
        mut body: serde_json::Value,
    ) -> Result<T> {
        body["drive_id"] = json!(self.drive().await?);
        self.api
            .call(endpoint, class, replay, |_| Ok(body.clone()))
            .await
    }

    /// `getDownloadUrl` as the drive answers it: one URL, or a live photo's stream URLs.
    async fn get_download_url(&self, file_id: &str) -> Result<DownloadUrlResp> {
        self.call_drive(
            "openFile/getDownloadUrl",
            Class::DownloadUrl,
            Replay::Always,
            json!({ "file_id": file_id, "expire_sec": self.cfg.download_url_expire_sec }),
        )
        .await
    }

    fn download_url_from(&self, r: DownloadUrlResp) -> Result<DownloadUrl> {
        let url = r.url.filter(|u| !u.trim().is_empty()).ok_or_else(|| {
            Error::NotSupported("the drive gave no single download URL for this file".into())
        })?;
        Ok(signed_url(url, r.expiration.as_deref()))
    }
}

/// A signed URL and when it stops working: its `x-oss-expires`, else the answer's
/// `expiration`, else a short default.
fn signed_url(url: String, expiration: Option<&str>) -> DownloadUrl {
    let expires_at = data::oss_expires(&url)
        .or_else(|| expiration.and_then(crate::timefmt::parse))
        .unwrap_or_else(|| SystemTime::now() + FALLBACK_URL_TTL);
    DownloadUrl { url, expires_at }
}

#[async_trait]
impl Drive for Client {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        self.search_page(query).await
    }

    async fn last_cursor(&self) -> Result<String> {
        self.delta_cursor().await
    }

    async fn list_delta(&self, cursor: &str) -> Result<DeltaPage> {
        self.delta_page(cursor).await
    }

    async fn drive_info(&self) -> Result<DriveInfo> {
        let info = self.fetch_drive_info().await?;
        // Keep the drive chosen at init; report it.
        Ok(match self.info.get() {
            Some(chosen) => DriveInfo {
                drive_id: chosen.drive_id.clone(),
                ..info
            },
            None => {
                let _ = self.info.set(info.clone());
                info
            }
        })
    }

    async fn space_info(&self) -> Result<SpaceInfo> {
        let r: SpaceInfoResp = self
            .api
            .call("user/getSpaceInfo", Class::Other, Replay::Always, |_| {
                Ok(json!({}))
            })
            .await?;
        let s = r
            .personal_space_info
            .ok_or_else(|| Error::BadResponse("getSpaceInfo without personal_space_info".into()))?;
        Ok(SpaceInfo {
            used_bytes: s.used_size.unwrap_or(0),
            total_bytes: s.total_size.unwrap_or(0),
        })
    }

    async fn list_folder(&self, parent_file_id: &str) -> Result<Vec<RemoteItem>> {
        self.folder_items(parent_file_id).await
    }

    async fn get(&self, file_id: &str) -> Result<RemoteItem> {
        self.get_item(file_id).await
    }

    async fn get_by_path(&self, path: &str) -> Result<RemoteItem> {
        self.item_by_path(path).await
    }

    async fn download_url(&self, file_id: &str) -> Result<DownloadUrl> {
        let r = self.get_download_url(file_id).await?;
        let url = self.download_url_from(r)?;
        self.received.url_for(&url.url, file_id);
        Ok(url)
    }

    async fn download_range(&self, url: &DownloadUrl, offset: u64, len: u64) -> Result<Bytes> {
        data::download_range(
            &self.api.http,
            &self.buffers,
            self.cfg.retry,
            url,
            offset,
            len,
            data::Meter {
                limit: Some(&self.bandwidth.download),
                received: self.received.counter(&url.url).as_deref(),
            },
        )
        .await
    }

    async fn create_folder(
        &self,
        parent_file_id: &str,
        name: &str,
        mode: CheckNameMode,
    ) -> Result<CreatedFolder> {
        self.make_folder(parent_file_id, name, mode).await
    }

    async fn create_file(&self, req: &NewFile) -> Result<UploadSession> {
        self.create_upload(req).await
    }

    async fn upload_urls(
        &self,
        file_id: &str,
        upload_id: &str,
        part_numbers: &[u32],
    ) -> Result<Vec<PartUrl>> {
        self.part_upload_urls(file_id, upload_id, part_numbers)
            .await
    }

    async fn upload_part(&self, part: &PartUrl, body: Bytes) -> Result<Option<String>> {
        self.put_part(part, body).await
    }

    async fn uploaded_parts(&self, file_id: &str, upload_id: &str) -> Result<Vec<UploadedPart>> {
        self.list_uploaded_parts(file_id, upload_id).await
    }

    async fn complete_upload(&self, file_id: &str, upload_id: &str) -> Result<RemoteItem> {
        self.complete_session(file_id, upload_id).await
    }

    async fn rename(&self, file_id: &str, new_name: &str) -> Result<RemoteItem> {
        self.rename_item(file_id, new_name).await
    }

    async fn move_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        new_name: Option<&str>,
    ) -> Result<OpResult> {
        self.move_to(file_id, to_parent_file_id, new_name).await
    }

    async fn copy_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        auto_rename: bool,
    ) -> Result<OpResult> {
        self.copy_to(file_id, to_parent_file_id, auto_rename).await
    }

    async fn trash(&self, file_id: &str) -> Result<OpResult> {
        self.remove("openFile/recyclebin/trash", file_id).await
    }

    async fn delete(&self, file_id: &str) -> Result<OpResult> {
        self.remove("openFile/delete", file_id).await
    }

    async fn task_state(&self, async_task_id: &str) -> Result<TaskState> {
        let r: TaskResp = self
            .api
            .call(
                "openFile/async_task/get",
                Class::Other,
                Replay::Always,
                |_| Ok(json!({ "async_task_id": async_task_id })),
            )
            .await?;
        r.state()
    }

    async fn video_play_info(&self, file_id: &str) -> Result<VideoPlayInfo> {
        let r: VideoResp = self
            .call_drive(
                "openFile/getVideoPreviewPlayInfo",
                Class::Other,
                Replay::Always,
                json!({
                    "file_id": file_id,
                    "category": "live_transcoding",
                    "template_id": "",
                    "get_subtitle_info": true,
                    "url_expire_sec": self.cfg.download_url_expire_sec.min(14400),
                }),
            )
            .await?;
        let info = r.video_preview_play_info.ok_or_else(|| {
            Error::BadResponse("getVideoPreviewPlayInfo without video_preview_play_info".into())
        })?;
        let meta = info.meta.unwrap_or_default();
        let dim = |v: Option<u64>| v.map(|n| n.min(u32::MAX as u64) as u32).unwrap_or(0);
        Ok(VideoPlayInfo {
            duration_secs: meta.duration.unwrap_or(0.0),
            width: dim(meta.width),
            height: dim(meta.height),
            streams: info
                .live_transcoding_task_list
                .unwrap_or_default()
                .into_iter()
                .map(VideoTask::into_stream)
                .collect(),
            subtitles: info
                .live_transcoding_subtitle_task_list
                .unwrap_or_default()
                .into_iter()
                .map(SubtitleTask::into_subtitle)
                .collect(),
        })
    }

    async fn fetch_object(&self, url: &DownloadUrl, max_len: u64) -> Result<Bytes> {
        let meter = data::Meter {
            limit: Some(&self.bandwidth.download),
            received: None,
        };
        data::fetch_object(
            &self.api.http,
            &self.buffers,
            self.cfg.retry,
            url,
            max_len,
            meter,
        )
        .await
    }

    async fn object_size(&self, url: &DownloadUrl) -> Result<u64> {
        data::object_size(&self.api.http, &self.buffers, self.cfg.retry, url).await
    }

    async fn stream_urls(&self, file_id: &str) -> Result<Vec<(String, DownloadUrl)>> {
        let r = self.get_download_url(file_id).await?;
        if r.streams_url.is_empty() {
            return Err(Error::NotSupported(format!(
                "file {file_id} has no stream URLs (not a live photo)"
            )));
        }
        let expiration = r.expiration.clone();
        Ok(r.streams_url
            .into_iter()
            .map(|(name, url)| (name, signed_url(url, expiration.as_deref())))
            .collect())
    }
}
