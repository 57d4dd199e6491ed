//! Upload sessions that outlive the daemon: a multipart session opened for a staged file is
//! remembered beside it (`<staged>.session.json`), so the next attempt, in this run or after a
//! crash and a remount, asks the drive which parts it holds (`listUploadedParts`) and sends
//! only the rest, instead of starting a 300 MiB upload from part 1 again.
//!
//! The record is a hint, not a promise: it is written atomically but without fsync (losing it
//! costs a fresh session, never data), and anything that does not add up (another target, a
//! session the drive no longer knows, a part of the wrong size, a failed complete or check)
//! drops it and the caller uploads afresh. The content itself is checked as always: the
//! completed file's SHA-1 must match the staged file's before it replaces anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parts::{first_missing, retry_transient};
use super::upload::UploadTarget;
use crate::drive::Drive;

pub const SESSION_SUFFIX: &str = ".session.json";

/// An open upload session of one staged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub file_id: String,
    pub upload_id: String,
    /// Every part but the last has this size.
    pub part_size: u64,
    /// Where the session puts the file: a session for another name or folder is not resumed.
    pub parent_file_id: String,
    pub name: String,
}

impl SessionRecord {
    pub fn targets(&self, target: &UploadTarget) -> bool {
        self.parent_file_id == target.parent_file_id && self.name == target.name
    }
}

pub fn session_path(staged: &Path) -> PathBuf {
    let mut s = staged.as_os_str().to_owned();
    s.push(SESSION_SUFFIX);
    PathBuf::from(s)
}

/// Remember `record` as the session of `staged` (replacing any earlier one).
pub fn remember(staged: &Path, record: &SessionRecord) {
    let path = session_path(staged);
    let written = serde_json::to_vec(record)
        .map_err(std::io::Error::other)
        .and_then(|json| {
            crate::atomic_file::replace(&path, &json, crate::atomic_file::Durability::Process)
        });
    if let Err(e) = written {
        // Only a resume is lost: the upload itself goes on.
        tracing::debug!(path = %path.display(), "could not record the upload session: {e}");
    }
}

/// The session remembered for `staged`, if any and readable.
pub fn recall(staged: &Path) -> Option<SessionRecord> {
    let bytes = std::fs::read(session_path(staged)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn forget(staged: &Path) {
    let _ = std::fs::remove_file(session_path(staged));
}

/// The first part still to send in the remembered session of `staged` for `target`, with the
/// record; None (and the record dropped) when there is nothing to resume.
pub async fn resumable(
    drive: &dyn Drive,
    staged: &Path,
    target: &UploadTarget,
    size: u64,
) -> Option<(SessionRecord, u32)> {
    let record = recall(staged)?;
    let usable = record.targets(target) && record.part_size > 0;
    let parts = if usable {
        retry_transient("listUploadedParts", || {
            drive.uploaded_parts(&record.file_id, &record.upload_id)
        })
        .await
        .map_err(|e| e.to_string())
    } else {
        Err("it was opened for another name or folder".into())
    };
    let expected = |n: u32| {
        let start = (n as u64 - 1).saturating_mul(record.part_size);
        record.part_size.min(size.saturating_sub(start))
    };
    let next = parts.and_then(|parts| {
        first_missing(&parts, expected)
            .map_err(|bad| format!("part {bad} is stored with another size"))
    });
    match next {
        Ok(next) => Some((record, next)),
        Err(why) => {
            tracing::info!(name = %target.name, "not resuming the previous upload session ({why}); starting afresh");
            forget(staged);
            None
        }
    }
}
