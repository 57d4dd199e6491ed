//! `Client`: the Open API behind the `Drive` trait.

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
    CreateResp, DownloadUrlResp, DriveInfoResp, ListResp, OpResp, PartsResp, SpaceInfoResp,
    SubtitleTask, TaskResp, UploadedPartsResp, VideoResp, VideoTask, WireFile,
};
use crate::drive::{
    CheckNameMode, CreatedFolder, DeltaPage, DownloadUrl, Drive, DriveChoice, DriveInfo, ItemKind,
    NewFile, OpResult, PartUrl, RemoteItem, SearchPage, SearchQuery, SpaceInfo, TaskState,
    UploadHashes, UploadSession, UploadedPart, VideoPlayInfo, ROOT_ID,
};
use crate::error::{Error, Result};
use crate::hashing;

/// Page size of `list` (the documented maximum).
const LIST_LIMIT: u32 = 100;
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

    fn parts_from(list: Option<Vec<super::wire::WirePart>>) -> Result<Vec<PartUrl>> {
        list.unwrap_or_default()
            .into_iter()
            .map(|p| p.into_part_url())
            .collect()
    }

    /// Trash/delete: "already gone" is success (reference 4.5).
    async fn remove(&self, endpoint: &'static str, file_id: &str) -> Result<OpResult> {
        let r: Result<OpResp> = self
            .call_drive(
                endpoint,
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id }),
            )
            .await;
        match r {
            Ok(r) => Ok(r.into_result(file_id)),
            Err(Error::NotFound(_)) | Err(Error::InRecycleBin(_)) => Ok(OpResult {
                file_id: file_id.to_string(),
                exist: false,
                async_task_id: None,
            }),
            Err(e) => Err(e),
        }
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

/// The create-file body for one access token (proof_code depends on it).
fn create_file_body(drive_id: &str, req: &NewFile, token: &str) -> Result<serde_json::Value> {
    let parts: Vec<_> = (1..=req.part_count.max(1))
        .map(|n| json!({ "part_number": n }))
        .collect();
    let mut body = json!({
        "drive_id": drive_id,
        "parent_file_id": req.parent_file_id,
        "name": req.name,
        "type": "file",
        "check_name_mode": req.check_name_mode.as_str(),
        "part_info_list": parts,
    });
    if let Some(size) = req.size {
        body["size"] = json!(size);
    }
    if let Some(t) = req.local_modified_at {
        body["local_modified_at"] = json!(crate::timefmt::format(t));
    }
    match &req.hashes {
        UploadHashes::None => {}
        UploadHashes::PreHash(h) => body["pre_hash"] = json!(h),
        UploadHashes::Full {
            content_hash,
            local_file,
        } => {
            // 8 bytes at most: a blocking read is cheaper than a thread hop.
            let size = req
                .size
                .ok_or_else(|| Error::Config("a rapid-upload create needs the file size".into()))?;
            let mut f = std::fs::File::open(local_file)?;
            let proof = hashing::proof_code_of_file(token, &mut f, size)?;
            body["content_hash"] = json!(content_hash);
            body["content_hash_name"] = json!("sha1");
            body["proof_code"] = json!(proof);
            body["proof_version"] = json!("v1");
        }
    }
    Ok(body)
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
        let drive_id = self.drive().await?;
        let mut items = Vec::new();
        let mut marker = String::new();
        for _ in 0..MAX_PAGES {
            let body = json!({
                "drive_id": drive_id,
                "parent_file_id": parent_file_id,
                "limit": LIST_LIMIT,
                "marker": marker,
                "order_by": "name",
                "order_direction": "ASC",
            });
            let page: ListResp = self
                .api
                .call("openFile/list", Class::List, Replay::Always, |_| {
                    Ok(body.clone())
                })
                .await?;
            for f in page.items.unwrap_or_default() {
                // Trashed items do not belong in a listing, whatever the server says.
                if f.trashed {
                    continue;
                }
                let mut item = f.into_item()?;
                if item.parent_file_id.is_empty() {
                    item.parent_file_id = parent_file_id.to_string();
                }
                items.push(item);
            }
            match page.next_marker.filter(|m| !m.is_empty()) {
                None => return Ok(items),
                Some(next) if next == marker => {
                    return Err(Error::BadResponse(format!(
                        "openFile/list repeated its marker for folder {parent_file_id}"
                    )))
                }
                Some(next) => marker = next,
            }
        }
        Err(Error::BadResponse(format!(
            "openFile/list did not end for folder {parent_file_id}"
        )))
    }

    async fn get(&self, file_id: &str) -> Result<RemoteItem> {
        let f: WireFile = self
            .call_drive(
                "openFile/get",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id }),
            )
            .await?;
        if f.trashed {
            return Err(Error::InRecycleBin(file_id.to_string()));
        }
        f.into_item()
    }

    async fn get_by_path(&self, path: &str) -> Result<RemoteItem> {
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            // Every client synthesises the root; its answer to "/" is not known (reference 3.4).
            return Ok(RemoteItem {
                file_id: ROOT_ID.to_string(),
                parent_file_id: String::new(),
                name: String::new(),
                kind: ItemKind::Folder,
                size: 0,
                content_hash: None,
                created_at: std::time::UNIX_EPOCH,
                updated_at: std::time::UNIX_EPOCH,
                local_modified_at: None,
                download_url: None,
                streams: Vec::new(),
            });
        }
        let abs = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        let f: WireFile = self
            .call_drive(
                "openFile/get_by_path",
                Class::Other,
                Replay::Always,
                json!({ "file_path": abs }),
            )
            .await?;
        if f.trashed {
            return Err(Error::NotFound(path.to_string()));
        }
        f.into_item()
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
        // Replaying a folder create is harmless under refuse (exist:true, same id); under
        // ignore/auto_rename it could make a twin, so only replay what surely did not land.
        let replay = match mode {
            CheckNameMode::Refuse => Replay::Always,
            _ => Replay::UnsentOnly,
        };
        let r: CreateResp = self
            .call_drive(
                "openFile/create",
                Class::Other,
                replay,
                json!({
                    "parent_file_id": parent_file_id,
                    "name": name,
                    "type": "folder",
                    "check_name_mode": mode.as_str(),
                }),
            )
            .await?;
        Ok(CreatedFolder {
            file_id: r.file_id()?,
            name: r.file_name.clone().unwrap_or_else(|| name.to_string()),
            exist: r.exist,
        })
    }

    async fn create_file(&self, req: &NewFile) -> Result<UploadSession> {
        let drive_id = self.drive().await?;
        // Not idempotent: a replay after a lost answer could create a second session or file.
        let r: CreateResp = self
            .api
            .call(
                "openFile/create",
                Class::Other,
                Replay::UnsentOnly,
                |token| create_file_body(&drive_id, req, token),
            )
            .await?;
        Ok(UploadSession {
            file_id: r.file_id()?,
            file_name: r.file_name.clone().unwrap_or_else(|| req.name.clone()),
            upload_id: r.upload_id(),
            rapid_upload: r.rapid_upload,
            exist: r.exist,
            parts: if r.exist || r.rapid_upload {
                Vec::new()
            } else {
                Self::parts_from(r.part_info_list)?
            },
        })
    }

    async fn upload_urls(
        &self,
        file_id: &str,
        upload_id: &str,
        part_numbers: &[u32],
    ) -> Result<Vec<PartUrl>> {
        let list: Vec<_> = part_numbers
            .iter()
            .map(|n| json!({ "part_number": n }))
            .collect();
        let r: PartsResp = self
            .call_drive(
                "openFile/getUploadUrl",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id, "upload_id": upload_id, "part_info_list": list }),
            )
            .await?;
        Self::parts_from(r.part_info_list)
    }

    async fn upload_part(&self, part: &PartUrl, body: Bytes) -> Result<Option<String>> {
        match &self.cfg.upload_origin {
            Some(origin) => {
                let internal = PartUrl {
                    upload_url: data::with_origin(&part.upload_url, origin),
                    ..part.clone()
                };
                data::upload_part(&self.api.http, &internal, body, &self.bandwidth).await
            }
            None => data::upload_part(&self.api.http, part, body, &self.bandwidth).await,
        }
    }

    async fn uploaded_parts(&self, file_id: &str, upload_id: &str) -> Result<Vec<UploadedPart>> {
        let mut parts = Vec::new();
        let mut marker = String::new();
        for _ in 0..MAX_PAGES {
            let r: UploadedPartsResp = self
                .call_drive(
                    "openFile/listUploadedParts",
                    Class::Other,
                    Replay::Always,
                    json!({
                        "file_id": file_id,
                        "upload_id": upload_id,
                        "part_number_marker": marker,
                    }),
                )
                .await?;
            for p in r.uploaded_parts.unwrap_or_default() {
                parts.push(p.into_uploaded()?);
            }
            match r
                .next_part_number_marker
                .filter(|m| !m.is_empty() && m != "0")
            {
                None => return Ok(parts),
                Some(next) if next == marker => {
                    return Err(Error::BadResponse(
                        "listUploadedParts repeated its marker".into(),
                    ))
                }
                Some(next) => marker = next,
            }
        }
        Err(Error::BadResponse("listUploadedParts did not end".into()))
    }

    async fn complete_upload(&self, file_id: &str, upload_id: &str) -> Result<RemoteItem> {
        let f: WireFile = self
            .call_drive(
                "openFile/complete",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id, "upload_id": upload_id }),
            )
            .await?;
        f.into_item()
    }

    async fn rename(&self, file_id: &str, new_name: &str) -> Result<RemoteItem> {
        let r: Result<WireFile> = self
            .call_drive(
                "openFile/update",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id, "name": new_name, "check_name_mode": "refuse" }),
            )
            .await;
        match r {
            Ok(f) => f.into_item(),
            // A replay of a rename that landed clashes with the item itself.
            Err(Error::AlreadyExists(msg)) => match self.get(file_id).await {
                Ok(item) if item.name == new_name => Ok(item),
                _ => Err(Error::AlreadyExists(msg)),
            },
            Err(e) => Err(e),
        }
    }

    async fn move_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        new_name: Option<&str>,
    ) -> Result<OpResult> {
        let mut body = json!({
            "file_id": file_id,
            "to_parent_file_id": to_parent_file_id,
            "check_name_mode": "refuse",
        });
        if let Some(n) = new_name {
            body["new_name"] = json!(n);
        }
        let r: OpResp = self
            .call_drive("openFile/move", Class::Other, Replay::Always, body)
            .await?;
        let mut result = r.into_result(file_id);
        if result.exist {
            // `exist` may also be a replayed move that already landed (the clash is with the
            // item itself): then it did move.
            if let Ok(item) = self.get(file_id).await {
                let wanted = new_name.map(str::to_string);
                if item.parent_file_id == to_parent_file_id && wanted.is_none_or(|n| n == item.name)
                {
                    result.exist = false;
                }
            }
        }
        Ok(result)
    }

    async fn copy_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        auto_rename: bool,
    ) -> Result<OpResult> {
        // A replayed copy could make two copies: replay only what surely did not land.
        let r: OpResp = self
            .call_drive(
                "openFile/copy",
                Class::Other,
                Replay::UnsentOnly,
                json!({
                    "file_id": file_id,
                    "to_parent_file_id": to_parent_file_id,
                    "auto_rename": auto_rename,
                }),
            )
            .await?;
        Ok(r.into_result(file_id))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn create_body_carries_proof_for_the_given_token() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"Hello World!").unwrap();
        let req = NewFile {
            parent_file_id: "root".into(),
            name: "h.txt".into(),
            size: Some(12),
            check_name_mode: CheckNameMode::Refuse,
            part_count: 2,
            local_modified_at: Some(
                std::time::UNIX_EPOCH + Duration::from_millis(1_687_946_420_022),
            ),
            hashes: UploadHashes::Full {
                content_hash: "2EF7BDE608CE5404E97D5F042F95F89F1C232871".into(),
                local_file: f.path().to_path_buf(),
            },
        };
        let b = create_file_body("d1", &req, "example-access-token").unwrap();
        assert_eq!(b["proof_code"], "bG8gV29ybGQ=");
        assert_eq!(b["proof_version"], "v1");
        assert_eq!(b["check_name_mode"], "refuse");
        assert_eq!(b["part_info_list"].as_array().unwrap().len(), 2);
        assert_eq!(b["local_modified_at"], "2023-06-28T10:00:20.022Z");
        let b2 = create_file_body("d1", &req, "another.access.token").unwrap();
        assert_ne!(b2["proof_code"], b["proof_code"]);

        let pre = NewFile {
            hashes: UploadHashes::PreHash("ABC".into()),
            part_count: 0,
            ..req
        };
        let b = create_file_body("d1", &pre, "t").unwrap();
        assert_eq!(b["pre_hash"], "ABC");
        assert!(b.get("proof_code").is_none());
        assert_eq!(b["part_info_list"].as_array().unwrap().len(), 1);
    }
}
