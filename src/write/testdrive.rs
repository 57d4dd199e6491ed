//! A small in-memory Drive for the write path's unit tests: upload sessions with strictly
//! sequential parts, expiring part URLs, rapid upload by content hash, trash, and one-shot fault
//! injection. Everything the write path does not use answers `NotSupported`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::drive::*;
use crate::error::{Error, Result};
use crate::hashing;

struct Session {
    file_id: String,
    parent: String,
    name: String,
    mtime: Option<SystemTime>,
    parts: BTreeMap<u32, Vec<u8>>,
}

/// An operation name and the error its next call returns.
type Fault = (&'static str, fn() -> Error);

#[derive(Default)]
pub struct MockState {
    pub files: HashMap<String, (RemoteItem, Vec<u8>)>,
    pub trashed: HashSet<String>,
    sessions: HashMap<String, Session>,
    next: u64,
    pub calls: HashMap<&'static str, usize>,
    /// One-shot failures: the next call of `op` returns the error.
    faults: VecDeque<Fault>,
    pub url_ttl: Option<Duration>,
    /// PUT of this part stores only half the body, then reports a network error (a broken upload
    /// the server committed as a truncated part).
    pub truncate_part_once: Option<u32>,
    /// PUT of this part is stored but the answer is "lost" (network error).
    pub lose_put_answer_once: Option<u32>,
    /// complete records wrong content (to exercise verification).
    pub corrupt_complete: bool,
    pub quota: Option<u64>,
}

pub struct MockDrive {
    pub st: Mutex<MockState>,
    /// While true, create_file waits (to hold an upload "running").
    hold: tokio::sync::watch::Sender<bool>,
    /// While true, complete_upload commits the file and then holds its answer (an answer still
    /// on the wire when the client gives up).
    hold_answer: tokio::sync::watch::Sender<bool>,
}

impl MockDrive {
    pub fn new() -> MockDrive {
        MockDrive {
            st: Mutex::new(MockState::default()),
            hold: tokio::sync::watch::channel(false).0,
            hold_answer: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, MockState> {
        self.st.lock().unwrap()
    }

    pub fn fail_next(&self, op: &'static str, e: fn() -> Error) {
        self.state().faults.push_back((op, e));
    }

    pub fn calls(&self, op: &str) -> usize {
        self.state().calls.get(op).copied().unwrap_or(0)
    }

    /// A create_file call is parked on the hold.
    pub fn waiting_in_create(&self) -> bool {
        self.create_waiters() > 0
    }

    /// How many create_file calls are parked on the hold.
    pub fn create_waiters(&self) -> usize {
        self.hold.receiver_count()
    }

    pub fn set_hold_complete_answer(&self, on: bool) {
        self.hold_answer.send_replace(on);
    }

    pub fn set_hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    /// Visible (untrashed) files named `name` under `parent`: (file_id, content).
    pub fn visible(&self, parent: &str, name: &str) -> Vec<(String, Vec<u8>)> {
        let st = self.state();
        let mut v: Vec<_> = st
            .files
            .iter()
            .filter(|(id, (it, _))| {
                it.parent_file_id == parent && it.name == name && !st.trashed.contains(*id)
            })
            .map(|(id, (_, c))| (id.clone(), c.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn seed(&self, parent: &str, name: &str, content: &[u8]) -> String {
        let mut st = self.state();
        let id = st.new_id("f");
        let item = st.item(&id, parent, name, content, None);
        st.files.insert(id.clone(), (item, content.to_vec()));
        id
    }

    fn enter(&self, op: &'static str) -> Result<()> {
        let mut st = self.state();
        *st.calls.entry(op).or_default() += 1;
        if let Some(i) = st.faults.iter().position(|(o, _)| *o == op) {
            let (_, f) = st.faults.remove(i).unwrap();
            return Err(f());
        }
        Ok(())
    }
}

impl MockState {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn item(
        &self,
        id: &str,
        parent: &str,
        name: &str,
        content: &[u8],
        mtime: Option<SystemTime>,
    ) -> RemoteItem {
        let now = SystemTime::now();
        RemoteItem {
            file_id: id.into(),
            parent_file_id: parent.into(),
            name: name.into(),
            kind: ItemKind::File,
            size: content.len() as u64,
            content_hash: Some(hashing::sha1_hex(content)),
            created_at: now,
            updated_at: now,
            local_modified_at: mtime,
            download_url: None,
            streams: Vec::new(),
        }
    }

    fn url(&self, upload_id: &str, n: u32) -> PartUrl {
        PartUrl {
            part_number: n,
            upload_url: format!("mock://{upload_id}/{n}"),
            expires_at: Some(SystemTime::now() + self.url_ttl.unwrap_or(Duration::from_secs(3600))),
        }
    }

    fn used(&self) -> u64 {
        self.files.values().map(|(i, _)| i.size).sum()
    }
}

fn parse_url(u: &str) -> Option<(String, u32)> {
    let rest = u.strip_prefix("mock://")?;
    let (id, n) = rest.split_once('/')?;
    Some((id.to_string(), n.parse().ok()?))
}

fn unsupported<T>(what: &str) -> Result<T> {
    Err(Error::NotSupported(format!("mock drive: {what}")))
}

#[async_trait]
impl Drive for MockDrive {
    async fn drive_info(&self) -> Result<DriveInfo> {
        unsupported("drive_info")
    }
    async fn space_info(&self) -> Result<SpaceInfo> {
        self.enter("space_info")?;
        let st = self.state();
        Ok(SpaceInfo {
            used_bytes: st.used(),
            total_bytes: st.quota.unwrap_or(1 << 40),
        })
    }
    async fn list_folder(&self, parent: &str) -> Result<Vec<RemoteItem>> {
        self.enter("list_folder")?;
        let st = self.state();
        let mut v: Vec<RemoteItem> = st
            .files
            .iter()
            .filter(|(id, (it, _))| it.parent_file_id == parent && !st.trashed.contains(*id))
            .map(|(_, (it, _))| it.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.file_id.cmp(&b.file_id)));
        Ok(v)
    }
    async fn get(&self, file_id: &str) -> Result<RemoteItem> {
        self.enter("get")?;
        let st = self.state();
        match st.files.get(file_id) {
            Some((it, _)) if !st.trashed.contains(file_id) => Ok(it.clone()),
            _ => Err(Error::NotFound(file_id.into())),
        }
    }
    async fn get_by_path(&self, _: &str) -> Result<RemoteItem> {
        unsupported("get_by_path")
    }
    async fn download_url(&self, file_id: &str) -> Result<DownloadUrl> {
        self.enter("download_url")?;
        let st = self.state();
        match st.files.get(file_id) {
            Some((it, _)) if !st.trashed.contains(file_id) && it.kind == ItemKind::File => {
                Ok(DownloadUrl {
                    url: format!("mock-dl://{file_id}"),
                    expires_at: SystemTime::now() + Duration::from_secs(3600),
                })
            }
            _ => Err(Error::NotFound(file_id.into())),
        }
    }
    async fn download_range(&self, url: &DownloadUrl, offset: u64, len: u64) -> Result<Bytes> {
        self.enter("download_range")?;
        let id = url
            .url
            .strip_prefix("mock-dl://")
            .ok_or_else(|| Error::BadResponse("bad url".into()))?;
        let st = self.state();
        let (_, content) = st.files.get(id).ok_or_else(|| Error::NotFound(id.into()))?;
        let start = (offset as usize).min(content.len());
        let end = (offset.saturating_add(len) as usize).min(content.len());
        Ok(Bytes::copy_from_slice(&content[start..end]))
    }
    async fn create_folder(
        &self,
        parent: &str,
        name: &str,
        mode: CheckNameMode,
    ) -> Result<CreatedFolder> {
        self.enter("create_folder")?;
        let mut st = self.state();
        if mode == CheckNameMode::Refuse {
            let existing = st.files.iter().find(|(id, (it, _))| {
                it.parent_file_id == parent && it.name == name && !st.trashed.contains(*id)
            });
            if let Some((id, _)) = existing {
                return Ok(CreatedFolder {
                    file_id: id.clone(),
                    name: name.into(),
                    exist: true,
                });
            }
        }
        let id = st.new_id("d");
        let mut item = st.item(&id, parent, name, &[], None);
        item.kind = ItemKind::Folder;
        item.content_hash = None;
        st.files.insert(id.clone(), (item, Vec::new()));
        Ok(CreatedFolder {
            file_id: id,
            name: name.into(),
            exist: false,
        })
    }

    async fn create_file(&self, req: &NewFile) -> Result<UploadSession> {
        let mut hold = self.hold.subscribe();
        let _ = hold.wait_for(|h| !*h).await;
        self.enter("create_file")?;
        let mut st = self.state();
        if let Some(q) = st.quota {
            if st.used() + req.size.unwrap_or(0) > q {
                return Err(Error::QuotaExhausted("mock drive full".into()));
            }
        }
        let stored_with = |pred: &dyn Fn(&[u8]) -> bool| {
            st.files
                .values()
                .find(|(_, c)| Some(c.len() as u64) == req.size && pred(c))
                .map(|(_, c)| c.clone())
        };
        match &req.hashes {
            UploadHashes::PreHash(h) => {
                if stored_with(&|c| hashing::pre_hash(c).eq_ignore_ascii_case(h)).is_some() {
                    return Err(Error::PreHashMatched);
                }
            }
            UploadHashes::Full { content_hash, .. } => {
                if let Some(c) =
                    stored_with(&|c| hashing::sha1_hex(c).eq_ignore_ascii_case(content_hash))
                {
                    let id = st.new_id("f");
                    let item = st.item(
                        &id,
                        &req.parent_file_id,
                        &req.name,
                        &c,
                        req.local_modified_at,
                    );
                    st.files.insert(id.clone(), (item, c));
                    return Ok(UploadSession {
                        file_id: id,
                        file_name: req.name.clone(),
                        upload_id: None,
                        rapid_upload: true,
                        exist: false,
                        parts: vec![],
                    });
                }
            }
            UploadHashes::None => {}
        }
        let file_id = st.new_id("f");
        let upload_id = st.new_id("u");
        st.sessions.insert(
            upload_id.clone(),
            Session {
                file_id: file_id.clone(),
                parent: req.parent_file_id.clone(),
                name: req.name.clone(),
                mtime: req.local_modified_at,
                parts: BTreeMap::new(),
            },
        );
        let parts = (1..=req.part_count)
            .map(|n| st.url(&upload_id, n))
            .collect();
        Ok(UploadSession {
            file_id,
            file_name: req.name.clone(),
            upload_id: Some(upload_id),
            rapid_upload: false,
            exist: false,
            parts,
        })
    }

    async fn upload_urls(
        &self,
        _file_id: &str,
        upload_id: &str,
        nums: &[u32],
    ) -> Result<Vec<PartUrl>> {
        self.enter("upload_urls")?;
        let st = self.state();
        if !st.sessions.contains_key(upload_id) {
            return Err(Error::NoSuchUpload(upload_id.into()));
        }
        Ok(nums.iter().map(|n| st.url(upload_id, *n)).collect())
    }

    async fn upload_part(&self, part: &PartUrl, body: Bytes) -> Result<Option<String>> {
        self.enter("upload_part")?;
        let mut st = self.state();
        if part.expires_at.is_some_and(|e| e <= SystemTime::now()) {
            return Err(Error::UrlExpired);
        }
        let (upload_id, n) =
            parse_url(&part.upload_url).ok_or_else(|| Error::BadResponse("bad url".into()))?;
        let truncate = st.truncate_part_once == Some(n);
        let lose = st.lose_put_answer_once == Some(n);
        let s = st
            .sessions
            .get_mut(&upload_id)
            .ok_or_else(|| Error::NoSuchUpload(upload_id.clone()))?;
        if s.parts.contains_key(&n) {
            return Err(Error::PartAlreadyExist);
        }
        if n != s.parts.len() as u32 + 1 {
            return Err(Error::PartNotSequential);
        }
        if truncate {
            s.parts.insert(n, body[..body.len() / 2].to_vec());
            st.truncate_part_once = None;
            return Err(Error::Network("connection reset (mock)".into()));
        }
        s.parts.insert(n, body.to_vec());
        if lose {
            st.lose_put_answer_once = None;
            return Err(Error::Network("answer lost (mock)".into()));
        }
        Ok(Some(format!("\"etag{n}\"")))
    }

    async fn uploaded_parts(&self, _file_id: &str, upload_id: &str) -> Result<Vec<UploadedPart>> {
        self.enter("uploaded_parts")?;
        let st = self.state();
        let s = st
            .sessions
            .get(upload_id)
            .ok_or_else(|| Error::NoSuchUpload(upload_id.into()))?;
        Ok(s.parts
            .iter()
            .map(|(n, b)| UploadedPart {
                part_number: *n,
                part_size: b.len() as u64,
                etag: None,
            })
            .collect())
    }

    async fn complete_upload(&self, file_id: &str, upload_id: &str) -> Result<RemoteItem> {
        self.enter("complete_upload")?;
        let item = {
            let mut st = self.state();
            let s = st
                .sessions
                .remove(upload_id)
                .ok_or_else(|| Error::NoSuchUpload(upload_id.into()))?;
            assert_eq!(s.file_id, file_id);
            let mut content: Vec<u8> = s.parts.into_values().flatten().collect();
            if st.corrupt_complete {
                content.push(b'!');
            }
            let item = st.item(file_id, &s.parent, &s.name, &content, s.mtime);
            st.files.insert(file_id.into(), (item.clone(), content));
            item
        };
        let mut hold = self.hold_answer.subscribe();
        let _ = hold.wait_for(|h| !*h).await;
        Ok(item)
    }

    async fn rename(&self, file_id: &str, new_name: &str) -> Result<RemoteItem> {
        self.enter("rename")?;
        let mut st = self.state();
        let (it, _) = st
            .files
            .get_mut(file_id)
            .ok_or_else(|| Error::NotFound(file_id.into()))?;
        it.name = new_name.into();
        Ok(it.clone())
    }
    async fn move_item(&self, file_id: &str, to: &str, new_name: Option<&str>) -> Result<OpResult> {
        self.enter("move_item")?;
        let mut st = self.state();
        let (it, _) = st
            .files
            .get_mut(file_id)
            .ok_or_else(|| Error::NotFound(file_id.into()))?;
        it.parent_file_id = to.into();
        if let Some(n) = new_name {
            it.name = n.into();
        }
        Ok(OpResult {
            file_id: file_id.into(),
            exist: false,
            async_task_id: None,
        })
    }
    async fn copy_item(&self, _: &str, _: &str, _: bool) -> Result<OpResult> {
        unsupported("copy_item")
    }
    async fn trash(&self, file_id: &str) -> Result<OpResult> {
        self.enter("trash")?;
        let mut st = self.state();
        if !st.files.contains_key(file_id) || !st.trashed.insert(file_id.into()) {
            return Err(Error::NotFound(file_id.into()));
        }
        Ok(OpResult {
            file_id: file_id.into(),
            exist: false,
            async_task_id: None,
        })
    }
    async fn delete(&self, file_id: &str) -> Result<OpResult> {
        self.enter("delete")?;
        let mut st = self.state();
        st.files
            .remove(file_id)
            .ok_or_else(|| Error::NotFound(file_id.into()))?;
        Ok(OpResult {
            file_id: file_id.into(),
            exist: false,
            async_task_id: None,
        })
    }
    async fn task_state(&self, _: &str) -> Result<TaskState> {
        unsupported("task_state")
    }
    async fn video_play_info(&self, _: &str) -> Result<VideoPlayInfo> {
        unsupported("video_play_info")
    }
}
