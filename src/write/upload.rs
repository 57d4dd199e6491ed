//! One upload of a local file to the drive (section 5 of the API reference).
//!
//! Order of operations, and why replacing a file never loses it:
//! 1. Hash the staged file (streaming, on the blocking pool).
//! 2. Create the new file under its *final* name with `check_name_mode: ignore`: rapid upload
//!    (pre-hash probe for big files, then content_hash + proof) or a normal multipart session.
//!    For a moment two siblings share the name; the old one is untouched.
//! 3. Send parts, `complete`, and check the result's size and SHA-1 against the local file. A
//!    mismatch deletes the bad new copy (never the old one) and fails.
//! 4. Only now trash (or delete) the copy named by `replaces`. "Not found" there is fine.
//!
//! Whatever fails, at every instant the drive holds at least one complete good copy: the old one
//! until step 4, the verified new one after it. A failure in steps 1–3 leaves the old file as it
//! was (and the staged file on disk for a retry); a failure in step 4 leaves a visible duplicate,
//! logged at ERROR, rather than a retry that would upload yet another copy.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::api::retry::Backoff;
use crate::drive::{
    CheckNameMode, Drive, ItemKind, NewFile, RemoteItem, UploadHashes, UploadSession,
};
use crate::error::{Error, Result};
use crate::write::local::{self, LocalInfo};
use crate::write::parts::{self, PartSender, PartsError};
use crate::write::resume::{self, SessionRecord};
use crate::write::stream::WriteStream;

/// Fresh sessions tried within one call when a session gets spoiled (truncated part, lost id).
const SESSIONS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    /// Forced part size (tests force small); default 16 MiB, raised so parts ≤ 10,000.
    pub part_size: Option<u64>,
    /// Files of at least this size probe with pre_hash first; smaller ones send content_hash+proof at once.
    pub pre_hash_min_size: u64,
    /// Try rapid upload (秒传) at all.
    pub rapid_upload: bool,
    /// Replaced/old copies: trash (false) or delete permanently (true).
    pub delete_permanently: bool,
    /// A file written in order starts uploading once it has this many bytes (see `stream`);
    /// None: uploads start at close.
    pub upload_while_writing: Option<u64>,
}

/// Default start of uploading while writing. Below it, uploading after close costs little, and
/// the content stays free to be a rapid upload without sending any part.
pub const DEFAULT_UPLOAD_WHILE_WRITING: u64 = 128 << 20;

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            part_size: None,
            pre_hash_min_size: 1 << 20,
            rapid_upload: true,
            delete_permanently: false,
            upload_while_writing: Some(DEFAULT_UPLOAD_WHILE_WRITING),
        }
    }
}

/// Where the new content goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    pub parent_file_id: String,
    pub name: String,
    /// Sent as `local_modified_at`.
    pub mtime: Option<SystemTime>,
    /// file_id of the copy this one replaces, removed only after the new one is complete and verified.
    pub replaces: Option<String>,
}

/// Upload `local` as `target.name` in `target.parent_file_id`, then retire `target.replaces`.
/// `stream`, when the file was uploading while it was written, is used if it can be (see
/// `finish_stream`). Returns the new file as the drive describes it.
pub async fn upload_file(
    drive: &dyn Drive,
    cfg: &UploadConfig,
    target: &UploadTarget,
    local: &Path,
    stream: Option<&WriteStream>,
) -> Result<RemoteItem> {
    let mut known = None;
    if let Some(stream) = stream {
        let finishing = finish_stream(drive, cfg, target, local, stream);
        let streamed = super::progress::mirror_while(|| stream.sent_bytes(), finishing).await;
        // Landed, or stopped for a reason: either way its session is not to be continued.
        resume::forget(local);
        match streamed {
            Streamed::Uploaded(item) => {
                retire_replaced(drive, cfg, target, &item).await;
                return Ok(item);
            }
            Streamed::Fallback(info) => known = info,
        }
    }
    let info = match known {
        Some(info) => info,
        None => local::hash_file(local).await?,
    };
    let item = upload_content(drive, cfg, target, local, &info).await?;
    retire_replaced(drive, cfg, target, &item).await;
    Ok(item)
}

enum Streamed {
    Uploaded(RemoteItem),
    /// Upload the usual way (with the hashes, when the stream got that far).
    Fallback(Option<LocalInfo>),
}

/// Close of a file that was uploading while written. Its hashes are ready, so a rapid upload is
/// tried first: content the drive has already is done without the streamed session (left
/// unfinished, never visible; the probe's own session likewise when it misses). Otherwise the
/// stream sends the last parts and its session is completed and verified. Anything amiss (the
/// stream stopped, the file was renamed, complete or the check failed) falls back to the usual
/// upload, which starts from the staged file: the stream never decides what the drive gets.
async fn finish_stream(
    drive: &dyn Drive,
    cfg: &UploadConfig,
    target: &UploadTarget,
    local: &Path,
    stream: &WriteStream,
) -> Streamed {
    // The fs closed the stream at release already; closing again is a no-op then, and a stream
    // never closed would keep `hashed` waiting forever.
    match tokio::fs::metadata(local).await {
        Ok(meta) => stream.close(meta.len()),
        Err(e) => stream.abandon(&format!("staged file unreadable: {e}")),
    }
    if !stream.is_started() {
        stream.abandon("not started");
        return Streamed::Fallback(None);
    }
    let at = stream.target();
    if at.parent_file_id != target.parent_file_id || at.name != target.name {
        stream.abandon("renamed or moved while written");
        return Streamed::Fallback(None);
    }
    let Some(info) = stream.hashed().await else {
        return Streamed::Fallback(None);
    };
    if cfg.rapid_upload {
        match create(drive, target, &info, 1, full_hashes(&info, local)).await {
            Ok(session) if session.rapid_upload => {
                stream.abandon("rapid upload");
                tracing::info!(name = %target.name, file_id = %session.file_id, "rapid upload: content already on the drive");
                let item = finish_rapid(drive, target, &info, &session).await;
                return match verify(drive, &item, &info).await {
                    Ok(()) => Streamed::Uploaded(item),
                    Err(_) => Streamed::Fallback(Some(info)),
                };
            }
            Ok(_) => {
                tracing::debug!(name = %target.name, "not on the drive yet: finishing the upload begun while writing")
            }
            Err(e) => {
                tracing::debug!(name = %target.name, "rapid-upload probe failed, finishing the streamed upload: {e}")
            }
        }
    }
    let Some((file_id, upload_id)) = stream.sent().await else {
        return Streamed::Fallback(Some(info));
    };
    stream.abandon("handed over");
    let item = match complete(drive, &file_id, &upload_id).await {
        Ok(item) => item,
        Err(e) => {
            tracing::warn!(name = %target.name, "completing the upload begun while writing failed, uploading again: {e}");
            return Streamed::Fallback(Some(info));
        }
    };
    match verify(drive, &item, &info).await {
        Ok(()) => {
            tracing::info!(name = %target.name, file_id = %item.file_id, size = item.size, "upload complete (begun while writing)");
            Streamed::Uploaded(item)
        }
        Err(_) => Streamed::Fallback(Some(info)),
    }
}

async fn upload_content(
    drive: &dyn Drive,
    cfg: &UploadConfig,
    target: &UploadTarget,
    local: &Path,
    info: &LocalInfo,
) -> Result<RemoteItem> {
    if let Some(item) = resume_session(drive, target, local, info).await {
        return Ok(item);
    }
    let part_size = parts::part_size(info.size, cfg.part_size)?;
    let part_count = parts::part_count(info.size, part_size);
    let mut session_no = 0;
    loop {
        session_no += 1;
        resume::forget(local);
        let session = open_session(drive, cfg, target, local, info, part_count).await?;
        if session.exist {
            // Only `refuse` reports a clash, and we never send it; a server that does is odd.
            return Err(Error::AlreadyExists(target.name.clone()));
        }
        if session.rapid_upload {
            tracing::info!(name = %target.name, file_id = %session.file_id, "rapid upload: content already on the drive");
            let item = finish_rapid(drive, target, info, &session).await;
            verify(drive, &item, info).await?;
            return Ok(item);
        }
        let upload_id = match session.upload_id.as_deref() {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => {
                return Err(Error::BadResponse(
                    "create returned no upload_id for a normal upload".into(),
                ))
            }
        };
        resume::remember(
            local,
            &SessionRecord {
                file_id: session.file_id.clone(),
                upload_id: upload_id.clone(),
                part_size,
                parent_file_id: target.parent_file_id.clone(),
                name: target.name.clone(),
            },
        );
        crate::write::progress::sent_so_far(0);
        let mut sender = PartSender::new(
            drive,
            local,
            &session.file_id,
            &upload_id,
            info.size,
            part_size,
            session.parts.clone(),
        );
        match sender.send_all().await {
            Ok(()) => {}
            Err(PartsError::Restart(e)) if session_no < SESSIONS => {
                tracing::warn!(name = %target.name, "upload session spoiled, starting a fresh one: {e}");
                continue;
            }
            Err(PartsError::Restart(e)) | Err(PartsError::Fail(e)) => return Err(e),
        }
        let item = complete(drive, &session.file_id, &upload_id).await?;
        resume::forget(local);
        verify(drive, &item, info).await?;
        tracing::info!(name = %target.name, file_id = %item.file_id, size = item.size, "upload complete");
        return Ok(item);
    }
}

/// Continue the session a previous attempt or run opened for `local` (see `resume`): send the
/// parts the drive lacks, complete, check. None when there is none or it did not work out; the
/// caller then uploads afresh.
async fn resume_session(
    drive: &dyn Drive,
    target: &UploadTarget,
    local: &Path,
    info: &LocalInfo,
) -> Option<RemoteItem> {
    let (record, next) = resume::resumable(drive, local, target, info.size).await?;
    // Registered as this attempt's, so a stopped attempt removes it like a new one.
    crate::write::progress::session_opened(&record.file_id);
    let total = parts::part_count(info.size, record.part_size);
    tracing::info!(name = %target.name, file_id = %record.file_id, "resuming the upload session of an earlier attempt at part {next} of {total}");
    crate::write::progress::sent_so_far(
        (next as u64 - 1)
            .saturating_mul(record.part_size)
            .min(info.size),
    );
    let mut sender = PartSender::new(
        drive,
        local,
        &record.file_id,
        &record.upload_id,
        info.size,
        record.part_size,
        Vec::new(),
    );
    let completed = match sender.send_from(next).await {
        Ok(()) => complete(drive, &record.file_id, &record.upload_id).await,
        Err(PartsError::Restart(e)) | Err(PartsError::Fail(e)) => Err(e),
    };
    resume::forget(local);
    let item = match completed {
        Ok(item) => item,
        Err(e) => {
            tracing::info!(name = %target.name, "the resumed session did not complete ({e}); starting afresh");
            return None;
        }
    };
    // A mismatch (parts sent before the content changed) deletes the bad copy.
    verify(drive, &item, info).await.ok()?;
    tracing::info!(name = %target.name, file_id = %item.file_id, size = item.size, "upload complete (resumed)");
    Some(item)
}

/// The create call(s): pre-hash probe for big files, full hash + proof for small ones (or after a
/// probe match), plain session when rapid upload is off.
async fn open_session(
    drive: &dyn Drive,
    cfg: &UploadConfig,
    target: &UploadTarget,
    local: &Path,
    info: &LocalInfo,
    part_count: u32,
) -> Result<UploadSession> {
    let create = |hashes: UploadHashes| create(drive, target, info, part_count, hashes);
    if !cfg.rapid_upload {
        return create(UploadHashes::None).await;
    }
    if info.size >= cfg.pre_hash_min_size {
        match create(UploadHashes::PreHash(info.pre_hash.clone())).await {
            Err(Error::PreHashMatched) => create(full_hashes(info, local)).await,
            // No match: the probe itself opened a normal session; use it.
            other => other,
        }
    } else {
        create(full_hashes(info, local)).await
    }
}

/// The create call for `target` (beside any same-named sibling), with the content's size.
/// The client does not replay a create whose request went out (it is not idempotent); we do, on
/// transient errors: a lost session is invisible and expires. A lost answer to a *rapid* create
/// can leave a duplicate sibling with the same content, the lesser evil next to failing the
/// upload (the queue would retry it anyway).
async fn create(
    drive: &dyn Drive,
    target: &UploadTarget,
    info: &LocalInfo,
    part_count: u32,
    hashes: UploadHashes,
) -> Result<UploadSession> {
    let req = NewFile {
        parent_file_id: target.parent_file_id.clone(),
        name: target.name.clone(),
        size: Some(info.size),
        check_name_mode: CheckNameMode::Ignore,
        part_count,
        local_modified_at: target.mtime,
        hashes,
    };
    let session = parts::retry_transient("create", || drive.create_file(&req)).await?;
    crate::write::progress::session_opened(&session.file_id);
    Ok(session)
}

/// Content hash and proof: a rapid upload when the drive has the content.
fn full_hashes(info: &LocalInfo, local: &Path) -> UploadHashes {
    UploadHashes::Full {
        content_hash: info.sha1.clone(),
        local_file: local.to_path_buf(),
    }
}

/// After a rapid upload the file exists already. `complete` is optional (and may fail harmlessly);
/// the file object comes from it, else from `get`, else from what we know.
async fn finish_rapid(
    drive: &dyn Drive,
    target: &UploadTarget,
    info: &LocalInfo,
    session: &UploadSession,
) -> RemoteItem {
    if let Some(upload_id) = session.upload_id.as_deref().filter(|s| !s.is_empty()) {
        match drive.complete_upload(&session.file_id, upload_id).await {
            Ok(item) => return item,
            Err(e) => {
                tracing::debug!(file_id = %session.file_id, "complete after rapid upload failed (harmless): {e}")
            }
        }
    }
    match drive.get(&session.file_id).await {
        Ok(item) => item,
        Err(e) => {
            tracing::debug!(file_id = %session.file_id, "get after rapid upload failed, using what we know: {e}");
            let now = SystemTime::now();
            RemoteItem {
                file_id: session.file_id.clone(),
                parent_file_id: target.parent_file_id.clone(),
                name: if session.file_name.is_empty() {
                    target.name.clone()
                } else {
                    session.file_name.clone()
                },
                kind: ItemKind::File,
                size: info.size,
                content_hash: Some(info.sha1.clone()),
                created_at: now,
                updated_at: now,
                local_modified_at: target.mtime,
                download_url: None,
                streams: Vec::new(),
            }
        }
    }
}

/// `complete`, retried on transient errors. If an earlier attempt's answer was lost, the session
/// is gone (`NoSuchUpload`) though the file exists: then `get` it and let `verify` judge.
async fn complete(drive: &dyn Drive, file_id: &str, upload_id: &str) -> Result<RemoteItem> {
    // Also a streamed session, created on the stream's own task.
    crate::write::progress::session_opened(file_id);
    let mut tried = false;
    parts::retry_transient("complete", || {
        let first = !tried;
        tried = true;
        async move {
            match drive.complete_upload(file_id, upload_id).await {
                Err(Error::NoSuchUpload(m)) if !first => {
                    tracing::debug!(
                        file_id,
                        "complete: session already gone ({m}), checking the file"
                    );
                    drive.get(file_id).await
                }
                other => other,
            }
        }
    })
    .await
}

/// The drive's file must have our size and SHA-1. A mismatch means the content changed under us or
/// was corrupted in transit: remove the bad new copy (permanently: it is garbage, not user data).
async fn verify(drive: &dyn Drive, item: &RemoteItem, info: &LocalInfo) -> Result<()> {
    let hash_ok = match &item.content_hash {
        Some(h) => h.eq_ignore_ascii_case(&info.sha1),
        None => {
            tracing::warn!(file_id = %item.file_id, "drive gave no content_hash; checked size only");
            true
        }
    };
    if item.size == info.size && hash_ok && item.kind == ItemKind::File {
        return Ok(());
    }
    let why = format!(
        "uploaded file {} does not match the local content (remote size {} hash {:?}, local size {} hash {})",
        item.file_id, item.size, item.content_hash, info.size, info.sha1
    );
    tracing::error!("{why}; deleting the bad copy");
    if let Err(e) = drive.delete(&item.file_id).await {
        if !matches!(e, Error::NotFound(_)) {
            tracing::error!(file_id = %item.file_id, "could not delete the bad copy: {e}");
        }
    }
    Err(Error::BadResponse(why))
}

/// Step 4: remove the replaced copy. Its failure is logged, not returned: the new content is safe,
/// and failing the upload would only make the queue upload another copy.
/// A version replayed after a crash may have landed before the crash let us record it. Its
/// folder (`siblings`, listed before this run uploaded anything there) then holds a file with its
/// name, size and SHA-1 that is not the copy it replaces: that is our upload. Adopt it (and
/// retire the replaced copy) instead of uploading a duplicate.
pub async fn adopt_landed(
    drive: &dyn Drive,
    cfg: &UploadConfig,
    target: &UploadTarget,
    local: &Path,
    siblings: &[RemoteItem],
) -> Result<Option<RemoteItem>> {
    let info = local::hash_file(local).await?;
    let landed = siblings
        .iter()
        .find(|i| {
            !i.is_dir()
                && i.name == target.name
                && i.size == info.size
                && i.content_hash
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(&info.sha1))
                && target.replaces.as_deref() != Some(i.file_id.as_str())
        })
        .cloned();
    if let Some(item) = &landed {
        tracing::info!(name = %target.name, file_id = %item.file_id, "a replayed upload had landed before the restart: adopted, not sent again");
        retire_replaced(drive, cfg, target, item).await;
    }
    Ok(landed)
}

async fn retire_replaced(
    drive: &dyn Drive,
    cfg: &UploadConfig,
    target: &UploadTarget,
    item: &RemoteItem,
) {
    let Some(old) = target.replaces.as_deref() else {
        return;
    };
    if old == item.file_id {
        return;
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    for attempt in 1..=5 {
        let r = if cfg.delete_permanently {
            drive.delete(old).await
        } else {
            drive.trash(old).await
        };
        match r {
            Ok(_) | Err(Error::NotFound(_)) | Err(Error::InRecycleBin(_)) => {
                tracing::debug!(old, new = %item.file_id, "replaced copy removed");
                return;
            }
            Err(e) if e.is_transient() && attempt < 5 => {
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) => {
                tracing::error!(
                    old,
                    new = %item.file_id,
                    name = %target.name,
                    "new version uploaded, but the old copy could not be removed; a duplicate remains: {e}"
                );
                return;
            }
        }
    }
}
