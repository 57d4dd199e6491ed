//! The drive: the operations the filesystem needs, in the filesystem's own types.
//!
//! `api::Client` is the real implementation (HTTP to the Open API); `fault::FaultyDrive` wraps any
//! drive and injects failures for tests. The fs core, read path and write path see only this trait,
//! never HTTP or wire JSON. All ids are Open API `file_id`s; the drive_id is chosen once by the
//! implementation (default/resource/backup) and is not passed around.

use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

pub mod multi;

/// The literal id of a drive's top folder.
pub const ROOT_ID: &str = "root";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    File,
    Folder,
}

/// One file or folder as the drive describes it (the 3.1 file object, normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteItem {
    pub file_id: String,
    pub parent_file_id: String,
    pub name: String,
    pub kind: ItemKind,
    /// Bytes; 0 for folders (the API omits it for them).
    pub size: u64,
    /// Uppercase hex SHA-1 of the content; None for folders and where the server gave none.
    pub content_hash: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// What the uploader sent as `local_modified_at`, if anything. Shown as mtime when present.
    pub local_modified_at: Option<SystemTime>,
    /// A short-lived download URL that listings carry for small files (under 5 MB). A hint:
    /// readers try it first and fall back to `download_url` when it does not work.
    pub download_url: Option<DownloadUrl>,
    /// `.livp` live photos: the sizes of their streams by name (`jpeg`, `mov`), from the file
    /// object's `streams_info`; empty for every other file. Such a file has no single download
    /// URL: each stream is read through `Drive::stream_urls`.
    pub streams: Vec<(String, u64)>,
}

impl RemoteItem {
    pub fn is_dir(&self) -> bool {
        self.kind == ItemKind::Folder
    }

    /// The modification time a filesystem shows: the uploader's local mtime when it was given.
    pub fn mtime(&self) -> SystemTime {
        self.local_modified_at.unwrap_or(self.updated_at)
    }
}

/// Which of the user's drives to mount.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DriveChoice {
    #[default]
    Default,
    Resource,
    Backup,
    /// Every drive of the account, each a folder of the mount's root.
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveInfo {
    pub user_id: String,
    pub user_name: String,
    /// The drive actually in use (the requested one, or the default drive when that one is not granted).
    pub drive_id: String,
    pub default_drive_id: String,
    pub resource_drive_id: Option<String>,
    pub backup_drive_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceInfo {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// A signed download URL and the instant it stops working (from its `x-oss-expires`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadUrl {
    pub url: String,
    pub expires_at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckNameMode {
    Refuse,
    AutoRename,
    Ignore,
}

impl CheckNameMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckNameMode::Refuse => "refuse",
            CheckNameMode::AutoRename => "auto_rename",
            CheckNameMode::Ignore => "ignore",
        }
    }
}

/// Result of creating a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedFolder {
    pub file_id: String,
    pub name: String,
    /// True when `refuse` met an existing item of that name: `file_id` is the existing one's.
    pub exist: bool,
}

/// How a new file declares its content for rapid upload (秒传).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadHashes {
    /// A plain upload session.
    None,
    /// The pre-hash probe: uppercase/lowercase hex SHA-1 of the first 1024 bytes.
    /// A match gives `Error::PreHashMatched`; no match gives a normal session.
    PreHash(String),
    /// Full hash and proof: the implementation computes `proof_code` (section 5.4) with the very
    /// access token that authorises the create call, reading 8 bytes of `local_file`.
    Full {
        content_hash: String,
        local_file: PathBuf,
    },
}

/// Request to create a file (an upload session, or a rapid upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub parent_file_id: String,
    pub name: String,
    /// None for an upload that starts before its length is known (sent as no `size`; the
    /// service takes the length from the parts). Rapid upload and pre-hash need it.
    pub size: Option<u64>,
    pub check_name_mode: CheckNameMode,
    /// Parts 1..=part_count are declared (at least 1).
    pub part_count: u32,
    pub local_modified_at: Option<SystemTime>,
    pub hashes: UploadHashes,
}

/// A pre-signed part URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartUrl {
    pub part_number: u32,
    pub upload_url: String,
    /// From the URL's `x-oss-expires`, when it has one.
    pub expires_at: Option<SystemTime>,
}

/// Answer to `create` for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub file_id: String,
    pub file_name: String,
    /// None when `exist` or (sometimes) after a rapid upload.
    pub upload_id: Option<String>,
    /// The content was already on the drive: the file exists now, no part needs sending.
    pub rapid_upload: bool,
    /// `refuse` met an existing name: nothing was created, `file_id` is the existing item's.
    pub exist: bool,
    pub parts: Vec<PartUrl>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub part_number: u32,
    pub part_size: u64,
    pub etag: Option<String>,
}

/// Answer to move/copy/trash/delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpResult {
    pub file_id: String,
    /// `refuse` met a clash on move: nothing moved.
    pub exist: bool,
    /// Set when the server finishes the operation in the background.
    pub async_task_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Succeed,
    Failed,
    PartialSucceed,
}

/// One transcoded stream of a video (section 3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoStream {
    /// LD, SD, HD, FHD, QHD.
    pub template_id: String,
    pub width: u32,
    pub height: u32,
    /// `finished`, `running` or `failed`.
    pub status: String,
    /// HLS playlist URL when finished.
    pub url: Option<String>,
}

/// One subtitle track of a video (`live_transcoding_subtitle_task_list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSubtitle {
    /// The language code the drive gives (`chi`, `eng`, ...).
    pub language: String,
    /// `finished`, `running` or `failed`.
    pub status: String,
    /// WebVTT URL when finished.
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoPlayInfo {
    pub duration_secs: f64,
    pub width: u32,
    pub height: u32,
    pub streams: Vec<VideoStream>,
    pub subtitles: Vec<VideoSubtitle>,
}

/// The drive operations alipanfs needs. Implementations retry transient failures themselves
/// (rate limits, 5xx, dropped connections, expired access tokens) inside a bounded budget and
/// return typed errors (`crate::error::Error`) for everything else.
#[async_trait]
pub trait Drive: Send + Sync + 'static {
    /// `getDriveInfo`, with the drive choice applied.
    async fn drive_info(&self) -> Result<DriveInfo>;
    /// `getSpaceInfo`.
    async fn space_info(&self) -> Result<SpaceInfo>;
    /// Every child of a folder: `list` page after page (limit 100) until `next_marker` is empty.
    async fn list_folder(&self, parent_file_id: &str) -> Result<Vec<RemoteItem>>;
    /// `get`; `Error::NotFound` for unknown ids.
    async fn get(&self, file_id: &str) -> Result<RemoteItem>;
    /// `get_by_path` (absolute, '/'-separated); `Error::NotFound` when absent.
    async fn get_by_path(&self, path: &str) -> Result<RemoteItem>;
    /// `getDownloadUrl`; expiry from the URL's `x-oss-expires`.
    async fn download_url(&self, file_id: &str) -> Result<DownloadUrl>;
    /// Ranged GET of `len` bytes at `offset` on a download URL. Returns exactly the bytes asked
    /// for (fewer only at end of file), after checking status 206 and `Content-Range`.
    /// `Error::UrlExpired` / `Error::ExceedMaxConcurrency` are returned, not retried: the caller
    /// renews the URL or waits for a download slot.
    async fn download_range(&self, url: &DownloadUrl, offset: u64, len: u64) -> Result<Bytes>;
    /// `create` with `type: folder`.
    async fn create_folder(
        &self,
        parent_file_id: &str,
        name: &str,
        mode: CheckNameMode,
    ) -> Result<CreatedFolder>;
    /// `create` with `type: file`.
    async fn create_file(&self, req: &NewFile) -> Result<UploadSession>;
    /// `getUploadUrl` for the given part numbers.
    async fn upload_urls(
        &self,
        file_id: &str,
        upload_id: &str,
        part_numbers: &[u32],
    ) -> Result<Vec<PartUrl>>;
    /// PUT one part's bytes (no Content-Type). `Error::UrlExpired`, `PartAlreadyExist`,
    /// `PartNotSequential`, `NoSuchUpload` are returned for the caller to handle. Returns the ETag.
    async fn upload_part(&self, part: &PartUrl, body: Bytes) -> Result<Option<String>>;
    /// `listUploadedParts` (every page).
    async fn uploaded_parts(&self, file_id: &str, upload_id: &str) -> Result<Vec<UploadedPart>>;
    /// `complete`: the final file object.
    async fn complete_upload(&self, file_id: &str, upload_id: &str) -> Result<RemoteItem>;
    /// `update` with a new name and `check_name_mode: refuse`; `Error::AlreadyExists` on a clash.
    async fn rename(&self, file_id: &str, new_name: &str) -> Result<RemoteItem>;
    /// `move` into another folder (optionally under a new name), `check_name_mode: refuse`.
    async fn move_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        new_name: Option<&str>,
    ) -> Result<OpResult>;
    /// `copy` into another folder.
    async fn copy_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        auto_rename: bool,
    ) -> Result<OpResult>;
    /// `recyclebin/trash`.
    async fn trash(&self, file_id: &str) -> Result<OpResult>;
    /// `delete` (permanent).
    async fn delete(&self, file_id: &str) -> Result<OpResult>;
    /// `async_task/get`.
    async fn task_state(&self, async_task_id: &str) -> Result<TaskState>;
    /// `getVideoPreviewPlayInfo` (live_transcoding, all templates, with subtitles).
    async fn video_play_info(&self, file_id: &str) -> Result<VideoPlayInfo>;
    /// A whole small object (an HLS playlist, a WebVTT subtitle) at a signed URL: one GET
    /// without Range. `Error::UrlExpired` on an expired URL; more than `max_len` bytes is an error.
    async fn fetch_object(&self, url: &DownloadUrl, max_len: u64) -> Result<Bytes> {
        let _ = (url, max_len);
        Err(crate::error::Error::NotSupported("fetch_object".into()))
    }
    /// The size of the object at a signed URL (a GET of its first byte, read from
    /// `Content-Range`), for segments whose size no listing gives.
    async fn object_size(&self, url: &DownloadUrl) -> Result<u64> {
        let _ = url;
        Err(crate::error::Error::NotSupported("object_size".into()))
    }
    /// A folder whose entries cannot change (`--drive all`'s root, which shows the drives):
    /// the fs refuses changes in it with EROFS before staging anything.
    fn fixed_folder(&self, file_id: &str) -> bool {
        let _ = file_id;
        false
    }
    /// `getDownloadUrl` of a `.livp`: one URL per stream (`streamsUrl`), by stream name.
    async fn stream_urls(&self, file_id: &str) -> Result<Vec<(String, DownloadUrl)>> {
        let _ = file_id;
        Err(crate::error::Error::NotSupported("stream_urls".into()))
    }
    /// One page of `search` (the API's query grammar); items in the recycle bin are left out.
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        let _ = query;
        Err(crate::error::Error::NotSupported("search".into()))
    }
    /// `get_last_cursor` of the delta feed, which the Open API may not have: any error means
    /// "no feed here".
    async fn last_cursor(&self) -> Result<String> {
        Err(crate::error::Error::NotSupported("get_last_cursor".into()))
    }
    /// One page of `list_delta` after `cursor`.
    async fn list_delta(&self, cursor: &str) -> Result<DeltaPage> {
        let _ = cursor;
        Err(crate::error::Error::NotSupported("list_delta".into()))
    }
}

/// A `search` request: `query` in the API's grammar (`updated_at > '2024-05-01T10:00:00'`,
/// `parent_file_id = 'X'`, ...), `order_by` such as `updated_at DESC`, at most 100 a page.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub query: String,
    pub order_by: String,
    pub limit: u32,
    pub marker: String,
    pub return_total_count: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub items: Vec<RemoteItem>,
    /// Empty or absent on the last page.
    pub next_marker: Option<String>,
    pub total_count: Option<u64>,
}

/// What the delta feed says happened to an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOp {
    Create,
    Update,
    Move,
    Trash,
    Delete,
    /// An op this client does not know: treated as "something changed" (the item is re-read).
    Other(String),
}

impl DeltaOp {
    pub fn parse(op: &str) -> DeltaOp {
        match op {
            "create" => DeltaOp::Create,
            "update" | "overwrite" | "rename" => DeltaOp::Update,
            "move" => DeltaOp::Move,
            "trash" => DeltaOp::Trash,
            "delete" => DeltaOp::Delete,
            other => DeltaOp::Other(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeltaItem {
    pub op: DeltaOp,
    pub file_id: String,
    /// The item as it is now; absent once it is deleted.
    pub item: Option<RemoteItem>,
}

#[derive(Debug, Clone, Default)]
pub struct DeltaPage {
    pub items: Vec<DeltaItem>,
    /// Where the next `list_delta` starts.
    pub cursor: String,
    pub has_more: bool,
}
